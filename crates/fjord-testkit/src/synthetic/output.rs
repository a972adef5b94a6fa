//! A data set on disk: NDJSON, one file per resource type (the bulk-data layout `fjord import`
//! and `$import` read), or transaction Bundles of PUTs (ids kept), every resource after what it
//! refers to, so they load in file order with referential integrity on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::Dataset;

/// How a data set is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Type.ndjson`, one resource per line.
    Ndjson,
    /// `bundle-000001.json` …, transactions of at most `entries` entries.
    Bundles { entries: usize },
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Resources by type.
    pub counts: BTreeMap<String, usize>,
}

impl Written {
    pub fn resources(&self) -> usize {
        self.counts.values().sum()
    }
}

/// Writes `dataset` under `dir` (created if need be); `progress` hears of each patient done.
pub fn write(
    dataset: &Dataset,
    format: Format,
    dir: &Path,
    mut progress: impl FnMut(usize),
) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let mut written = Written::default();
    let mut sink: Box<dyn Sink> = match format {
        Format::Ndjson => Box::new(Ndjson {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
        }),
        Format::Bundles { entries } => Box::new(Bundles {
            dir: dir.to_owned(),
            entries: entries.max(1),
            pending: Vec::new(),
            files: Vec::new(),
        }),
    };
    let mut put = |sink: &mut Box<dyn Sink>, resource: Value| -> std::io::Result<()> {
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        *written.counts.entry(resource_type.to_owned()).or_default() += 1;
        sink.put(resource)
    };
    for resource in dataset.shared() {
        put(&mut sink, resource)?;
    }
    // The shared resources go in a bundle of their own: every patient's refer to them.
    sink.flush()?;
    for n in 0..dataset.scale().patients {
        for resource in dataset.patient(n) {
            put(&mut sink, resource)?;
        }
        progress(n + 1);
    }
    sink.flush()?;
    written.files = sink.finish()?;
    Ok(written)
}

trait Sink {
    fn put(&mut self, resource: Value) -> std::io::Result<()>;
    /// Ends the current unit (a bundle); no-op for NDJSON.
    fn flush(&mut self) -> std::io::Result<()>;
    fn finish(self: Box<Self>) -> std::io::Result<Vec<PathBuf>>;
}

struct Ndjson {
    dir: PathBuf,
    files: BTreeMap<String, BufWriter<File>>,
}

impl Sink for Ndjson {
    fn put(&mut self, resource: Value) -> std::io::Result<()> {
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        if !self.files.contains_key(resource_type) {
            let file = File::create(self.dir.join(format!("{resource_type}.ndjson")))?;
            self.files
                .insert(resource_type.to_owned(), BufWriter::new(file));
        }
        let file = self.files.get_mut(resource_type).expect("inserted above");
        serde_json::to_writer(&mut *file, &resource)?;
        file.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for (resource_type, mut file) in self.files {
            file.flush()?;
            paths.push(self.dir.join(format!("{resource_type}.ndjson")));
        }
        Ok(paths)
    }
}

struct Bundles {
    dir: PathBuf,
    entries: usize,
    pending: Vec<Value>,
    files: Vec<PathBuf>,
}

impl Sink for Bundles {
    fn put(&mut self, resource: Value) -> std::io::Result<()> {
        if self.pending.len() == self.entries {
            self.flush()?;
        }
        let url = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        self.pending.push(json!({
            "fullUrl": format!("https://fjord.example/fhir/{url}"),
            "resource": resource,
            "request": { "method": "PUT", "url": url },
        }));
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("bundle-{:06}.json", self.files.len() + 1));
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": std::mem::take(&mut self.pending),
        });
        let mut file = BufWriter::new(File::create(&path)?);
        serde_json::to_writer(&mut file, &bundle)?;
        file.flush()?;
        self.files.push(path);
        Ok(())
    }

    fn finish(self: Box<Self>) -> std::io::Result<Vec<PathBuf>> {
        Ok(self.files)
    }
}
