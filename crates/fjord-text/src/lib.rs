//! The full-text index: what `_text` (the narrative), `_content` (all of a resource's text) and
//! `:text` on tokens (displays and `CodeableConcept.text`) search.
//!
//! A derived index, not a source of truth: one tantivy index per server, a document per current
//! resource, fed from the change log by the engine. With each commit it stores, per tenant, how
//! far it has read that log (an opaque position the feeder hands in) and which database it
//! belongs to; an index of another database, or of an older schema, is dropped and rebuilt from
//! the log. Searches answer with the ids of the resources that match, which the store's query
//! then takes as one more filter.
//!
//! Words are split on non-alphanumerics, lowercased and folded to ASCII (`blodtrykk` finds
//! `Blodtrykk`, `ostergaard` finds `Østergaard`); a search matches the resources that contain
//! every one of its words.

mod document;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::query::{BooleanQuery, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
    WhitespaceTokenizer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use document::{document, narrative_text, TextDocument};
pub use fjord_search::TextField;

/// A change to the index.
#[derive(Debug, Clone)]
pub enum TextUpdate {
    Put(TextDocument),
    Remove { resource_type: String, id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("text index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("text index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the text index directory is in use by another process")]
    Locked,
    #[error("the text search matches more than {0} resources; narrow it")]
    TooManyMatches(usize),
    #[error("the text search has no words")]
    NoWords,
}

/// Words: split on anything not alphanumeric, lowercased, folded to ASCII.
const WORDS: &str = "fjord_words";
/// Token texts arrive as `param:word` terms made with [`WORDS`]; they are only split on spaces.
const TERMS: &str = "fjord_terms";
/// Longer words are not indexed (base64 blobs, URLs without separators).
const MAX_WORD_BYTES: usize = 64;

/// The index, its writer and a reader that sees the last commit.
pub struct TextIndex {
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
    words: TextAnalyzer,
    state: Mutex<State>,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").finish_non_exhaustive()
    }
}

/// What each commit stores beside the documents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    instance: String,
    /// Per tenant key, how far the feeder has read the change log.
    positions: BTreeMap<i64, String>,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    /// `tenant/type/id`: what an update replaces.
    key: Field,
    tenant: Field,
    resource_type: Field,
    id: Field,
    narrative: Field,
    content: Field,
    tokens: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS)
            .set_index_option(IndexRecordOption::Basic),
    );
    let terms = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TERMS)
            .set_index_option(IndexRecordOption::Basic),
    );
    let fields = Fields {
        key: builder.add_text_field("key", STRING),
        tenant: builder.add_u64_field("tenant", INDEXED),
        resource_type: builder.add_text_field("type", STRING),
        id: builder.add_text_field("id", STRING | FAST),
        narrative: builder.add_text_field("narrative", words.clone()),
        content: builder.add_text_field("content", words),
        tokens: builder.add_text_field("tokens", terms),
    };
    (builder.build(), fields)
}

fn words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

impl TextIndex {
    /// Opens the index in `dir` for the database `instance`, or creates it empty (to be fed from
    /// the start of the change log) when there is none, or one of another database or schema.
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub fn open(dir: &Path, instance: &str) -> Result<TextIndex, TextError> {
        let (schema, fields) = schema();
        let existing = if dir.join("meta.json").exists() {
            match Index::open_in_dir(dir) {
                Ok(index) => {
                    let state = read_state(&index);
                    (index.schema() == schema && state.instance == instance)
                        .then_some((index, state))
                }
                Err(error) => {
                    tracing::warn!(%error, "unreadable text index; rebuilding it");
                    None
                }
            }
        } else {
            None
        };
        let (index, state) = match existing {
            Some(found) => found,
            None => {
                if dir.exists() {
                    tracing::info!("the text index belongs to another database; rebuilding it");
                    std::fs::remove_dir_all(dir)?;
                }
                std::fs::create_dir_all(dir)?;
                let state = State {
                    instance: instance.to_owned(),
                    positions: BTreeMap::new(),
                };
                (Index::create_in_dir(dir, schema)?, state)
            }
        };
        index.tokenizers().register(WORDS, words_analyzer());
        index.tokenizers().register(
            TERMS,
            TextAnalyzer::builder(WhitespaceTokenizer::default()).build(),
        );
        let writer =
            index
                .writer_with_num_threads(1, 32 * 1024 * 1024)
                .map_err(|error| match error {
                    tantivy::TantivyError::LockFailure(..) => TextError::Locked,
                    other => TextError::Index(other),
                })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(TextIndex {
            writer: Mutex::new(writer),
            reader,
            fields,
            words: words_analyzer(),
            state: Mutex::new(state),
        })
    }

    /// How far the index has read the tenant's change log, as the feeder last said.
    pub fn position(&self, tenant: i64) -> Option<String> {
        self.state
            .lock()
            .expect("text index state")
            .positions
            .get(&tenant)
            .cloned()
    }

    /// Applies `updates` (in order) for the tenant and records `position`, then makes them
    /// visible to searches. Without updates the position is only remembered (and stored with
    /// the next commit): re-reading a few changes after a restart is harmless.
    #[tracing::instrument(skip_all, fields(tenant = tenant, updates = updates.len()))]
    pub fn apply(
        &self,
        tenant: i64,
        updates: Vec<TextUpdate>,
        position: String,
    ) -> Result<(), TextError> {
        let mut writer = self.writer.lock().expect("text index writer");
        let payload = {
            let mut state = self.state.lock().expect("text index state");
            state.positions.insert(tenant, position);
            serde_json::to_string(&*state).expect("the state serializes")
        };
        if updates.is_empty() {
            return Ok(());
        }
        let mut words = self.words.clone();
        for update in updates {
            match update {
                TextUpdate::Remove { resource_type, id } => {
                    writer.delete_term(self.key_term(tenant, &resource_type, &id));
                }
                TextUpdate::Put(document) => {
                    writer.delete_term(self.key_term(
                        tenant,
                        &document.resource_type,
                        &document.id,
                    ));
                    writer.add_document(self.tantivy_document(tenant, document, &mut words))?;
                }
            }
        }
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&payload);
        commit.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The ids of the tenant's resources of `resource_type` whose `field` contains every word
    /// of `text`; more than `limit` is an error.
    #[tracing::instrument(skip(self, text))]
    pub fn search(
        &self,
        tenant: i64,
        resource_type: &str,
        field: &TextField,
        text: &str,
        limit: usize,
    ) -> Result<Vec<String>, TextError> {
        let words = self.words_of(text);
        if words.is_empty() {
            return Err(TextError::NoWords);
        }
        let term = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses: Vec<Box<dyn Query>> = vec![
            Box::new(TermQuery::new(
                Term::from_field_u64(self.fields.tenant, tenant as u64),
                IndexRecordOption::Basic,
            )),
            term(self.fields.resource_type, resource_type),
        ];
        for word in &words {
            clauses.push(match field {
                TextField::Narrative => term(self.fields.narrative, word),
                TextField::Content => term(self.fields.content, word),
                TextField::Token(param) => term(self.fields.tokens, &token_term(param, word)),
            });
        }
        let searcher = self.reader.searcher();
        let found = searcher.search(&BooleanQuery::intersection(clauses), &DocSetCollector)?;
        if found.len() > limit {
            return Err(TextError::TooManyMatches(limit));
        }
        let mut columns = HashMap::new();
        let mut ids = Vec::with_capacity(found.len());
        let mut id = String::new();
        for address in found {
            let column = match columns.entry(address.segment_ord) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                    searcher
                        .segment_reader(address.segment_ord)
                        .fast_fields()
                        .str("id")?,
                ),
            };
            let Some(column) = column else { continue };
            for ord in column.term_ords(address.doc_id) {
                id.clear();
                if column.ord_to_str(ord, &mut id)? {
                    ids.push(id.clone());
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// How many documents the index holds (all tenants).
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key_term(&self, tenant: i64, resource_type: &str, id: &str) -> Term {
        Term::from_field_text(self.fields.key, &format!("{tenant}/{resource_type}/{id}"))
    }

    fn words_of(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.words.clone();
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while stream.advance() {
            words.push(stream.token().text.clone());
        }
        words
    }

    fn tantivy_document(
        &self,
        tenant: i64,
        document: TextDocument,
        words: &mut TextAnalyzer,
    ) -> TantivyDocument {
        let fields = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(
            fields.key,
            format!("{tenant}/{}/{}", document.resource_type, document.id),
        );
        doc.add_u64(fields.tenant, tenant as u64);
        doc.add_text(fields.resource_type, &document.resource_type);
        doc.add_text(fields.id, &document.id);
        doc.add_text(fields.narrative, &document.narrative);
        doc.add_text(fields.content, &document.content);
        let mut terms = String::new();
        for (param, text) in &document.tokens {
            let mut stream = words.token_stream(text);
            while stream.advance() {
                terms.push_str(&token_term(param, &stream.token().text));
                terms.push(' ');
            }
        }
        doc.add_text(fields.tokens, terms);
        doc
    }
}

/// A word of a token parameter's text, as the `tokens` field holds it.
fn token_term(param: &str, word: &str) -> String {
    format!("{param}:{word}")
}

fn read_state(index: &Index) -> State {
    index
        .load_metas()
        .ok()
        .and_then(|metas| metas.payload)
        .and_then(|payload| serde_json::from_str(&payload).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
