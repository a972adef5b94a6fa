//! The filter of one `name=value` pair: a parameter of the type, a chain through references
//! (`subject:Patient.name=…`, several levels) or a reverse chain (`_has:Observation:subject:code=…`,
//! nested).

use fjord_definitions::SearchParamType;

use super::values::{
    composite, date_value, number_test, quantity_test, reference, split_unescaped, token, unescape,
};
use super::{ConceptSet, Concepts, Filter, QueryError, StringMatch, TextField};
use crate::terms::keys;
use crate::{Registry, SearchParam, Storage};

/// How deep chains and reverse chains may nest.
pub const MAX_CHAIN_DEPTH: usize = 4;

impl Registry {
    /// The filter of `name=value` on `resource_type`; `None` when the name is no parameter Fjord
    /// serves for the type (left to the caller: ignored, or an error under strict handling).
    pub(super) fn parameter_filter(
        &self,
        resource_type: &str,
        name: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Filter>, QueryError> {
        if depth > MAX_CHAIN_DEPTH {
            return Err(QueryError(format!(
                "{name}: chains nest at most {MAX_CHAIN_DEPTH} levels deep"
            )));
        }
        if let Some(rest) = name.strip_prefix("_has:") {
            return self.reverse_chain(resource_type, rest, value, depth);
        }
        if let Some((head, rest)) = name.split_once('.') {
            return self.chain(resource_type, head, rest, value, depth);
        }
        let (code, modifier) = match name.split_once(':') {
            Some((code, modifier)) => (code, Some(modifier)),
            None => (name, None),
        };
        if let ("_text" | "_content", Some(_)) = (code, self.parameter(resource_type, code)) {
            return text_filter(resource_type, code, modifier, value).map(Some);
        }
        let Some(parameter) = self
            .parameter(resource_type, code)
            .filter(|p| p.is_searchable())
        else {
            return Ok(None);
        };
        self.filter(resource_type, parameter, modifier, value)
            .map(Some)
            .map_err(|QueryError(message)| QueryError(format!("{name}={value}: {message}")))
    }

    /// `head.rest=value`, `head` a reference parameter with an optional `:Type`: the references
    /// of `head` point at a resource of a target type on which `rest=value` holds.
    fn chain(
        &self,
        resource_type: &str,
        head: &str,
        rest: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Filter>, QueryError> {
        let (code, target) = match head.split_once(':') {
            Some((code, target)) => (code, Some(target)),
            None => (head, None),
        };
        let Some(parameter) = self.parameter(resource_type, code) else {
            return Ok(None);
        };
        if parameter.kind != SearchParamType::Reference {
            return Err(QueryError(format!(
                "{head}.{rest}: only reference parameters can be chained, and {code} is a {:?}",
                parameter.kind
            )));
        }
        let targets: Vec<&str> = match target {
            Some(target) if parameter.targets.allows(target) => vec![target],
            Some(target) => {
                return Err(QueryError(format!(
                    "{head}.{rest}: {code} does not refer to {target}"
                )))
            }
            None => self
                .resource_types()
                .filter(|t| parameter.targets.allows(t))
                .collect(),
        };
        let mut alternatives = Vec::new();
        for target_type in targets {
            let Some(inner) = self.parameter_filter(target_type, rest, value, depth + 1)? else {
                continue;
            };
            for link in self.reference_links(resource_type, code) {
                alternatives.push(Filter::Chain {
                    link,
                    target_type: target_type.to_owned(),
                    filter: Box::new(inner.clone()),
                });
            }
        }
        Ok(match alternatives.len() {
            0 => None,
            1 => alternatives.pop(),
            _ => Some(Filter::Any(alternatives)),
        })
    }

    /// `_has:Source:param:rest=value`: some resource of type `Source` refers to this one through
    /// its reference parameter `param`, and `rest=value` holds on it.
    fn reverse_chain(
        &self,
        resource_type: &str,
        spec: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Filter>, QueryError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(source_type), Some(code), Some(rest)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(QueryError(format!(
                "_has:{spec}: use _has:Type:reference-parameter:parameter=value"
            )));
        };
        if fjord_definitions::type_def(source_type).is_none() {
            return Err(QueryError(format!(
                "_has:{spec}: unknown resource type {source_type}"
            )));
        }
        let Some(parameter) = self.parameter(source_type, code) else {
            return Err(QueryError(format!(
                "_has:{spec}: {source_type} has no search parameter {code}"
            )));
        };
        if parameter.kind != SearchParamType::Reference || !parameter.targets.allows(resource_type)
        {
            return Err(QueryError(format!(
                "_has:{spec}: {source_type}.{code} does not refer to {resource_type}"
            )));
        }
        let Some(inner) = self.parameter_filter(source_type, rest, value, depth + 1)? else {
            return Ok(None);
        };
        let mut alternatives: Vec<Filter> = self
            .reference_links(source_type, code)
            .into_iter()
            .map(|link| Filter::Has {
                link,
                source_type: source_type.to_owned(),
                filter: Box::new(inner.clone()),
            })
            .collect();
        Ok(if alternatives.len() == 1 {
            alternatives.pop()
        } else {
            Some(Filter::Any(alternatives))
        })
    }

    /// The filter a terminology lookup's answer becomes: a token of `param` with one of the
    /// codes, or of one of the systems taken whole (nothing when the answer is empty).
    pub fn concepts_filter(&self, resource_type: &str, param: &str, concepts: &Concepts) -> Filter {
        let codes = concepts.codes.iter().map(|(system, code)| {
            Filter::Key(keys::token_system_code(resource_type, param, system, code))
        });
        let systems = concepts
            .systems
            .iter()
            .map(|system| Filter::Key(keys::token_system(resource_type, param, system)));
        Filter::Any(codes.chain(systems).collect())
    }

    /// The reference links ([`keys::link`]) a reference parameter is stored under: its own, or
    /// those of the parameters it is the union of.
    pub fn reference_links(&self, resource_type: &str, code: &str) -> Vec<i64> {
        match self.parameter(resource_type, code).map(|p| &p.storage) {
            Some(Storage::UnionOf(sources)) => sources
                .iter()
                .flat_map(|source| self.reference_links(resource_type, source))
                .collect(),
            _ => vec![keys::link(resource_type, code)],
        }
    }

    /// The filter of one `name=value` pair: the OR of its comma-separated values.
    pub(super) fn filter(
        &self,
        resource_type: &str,
        parameter: &SearchParam,
        modifier: Option<&str>,
        value: &str,
    ) -> Result<Filter, QueryError> {
        let code = parameter.code.as_str();
        if modifier == Some("missing") {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => return Err(QueryError("use :missing=true or :missing=false".into())),
            };
            let present = self.presence(resource_type, parameter)?;
            return Ok(if missing {
                Filter::Not(Box::new(present))
            } else {
                present
            });
        }
        if let Storage::UnionOf(sources) = &parameter.storage {
            let mut alternatives = Vec::new();
            for source in sources {
                let source = self
                    .parameter(resource_type, source)
                    .ok_or_else(|| QueryError(format!("{code}: unknown part {source}")))?;
                alternatives.push(self.filter(resource_type, source, modifier, value)?);
            }
            return Ok(Filter::Any(alternatives));
        }
        let values = split_unescaped(value, ',');
        if values.iter().any(String::is_empty) {
            return Err(QueryError("empty value".into()));
        }
        let (negate, modifier) = match modifier {
            Some("not") if parameter.kind == SearchParamType::Token => (true, None),
            Some("not-in") if parameter.kind == SearchParamType::Token => (true, Some("in")),
            other => (false, other),
        };
        let alternatives = values
            .iter()
            .map(|v| self.one_value(resource_type, parameter, modifier, v))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = if alternatives.len() == 1 {
            alternatives.into_iter().next().expect("one alternative")
        } else {
            Filter::Any(alternatives)
        };
        Ok(if negate {
            Filter::Not(Box::new(filter))
        } else {
            filter
        })
    }

    /// "Has a value": the presence key, or always for what every resource has.
    fn presence(&self, resource_type: &str, parameter: &SearchParam) -> Result<Filter, QueryError> {
        match &parameter.storage {
            // Every resource has an id and a last-updated time: NOT (nothing) holds for all.
            Storage::Resource => Ok(Filter::Not(Box::new(Filter::Any(Vec::new())))),
            Storage::Indexed => Ok(Filter::Key(keys::presence(resource_type, &parameter.code))),
            Storage::UnionOf(sources) => Ok(Filter::Any(
                sources
                    .iter()
                    .map(|source| Filter::Key(keys::presence(resource_type, source)))
                    .collect(),
            )),
        }
    }

    fn one_value(
        &self,
        resource_type: &str,
        parameter: &SearchParam,
        modifier: Option<&str>,
        value: &str,
    ) -> Result<Filter, QueryError> {
        let code = parameter.code.as_str();
        let unsupported = |modifier: &str| {
            Err(QueryError(format!(
                "the modifier :{modifier} is not supported on {code}"
            )))
        };
        match (code, parameter.kind) {
            ("_id", _) => {
                if let Some(m) = modifier {
                    return unsupported(m);
                }
                return Ok(Filter::Id(unescape(value)));
            }
            ("_lastUpdated", _) => {
                if let Some(m) = modifier {
                    return unsupported(m);
                }
                let (prefix, low, high) = date_value(value)?;
                return Ok(Filter::Date {
                    param_key: None,
                    prefix,
                    low,
                    high,
                });
            }
            _ => {}
        }
        let ordered = !matches!(
            parameter.kind,
            SearchParamType::Token
                | SearchParamType::Reference
                | SearchParamType::Uri
                | SearchParamType::String
        );
        if let (true, Some(m)) = (ordered, modifier) {
            return unsupported(m);
        }
        match parameter.kind {
            SearchParamType::Token => match modifier {
                None => Ok(token(resource_type, code, value)),
                Some("in") => Ok(Filter::Concepts {
                    resource_type: resource_type.to_owned(),
                    param: code.to_owned(),
                    set: ConceptSet::ValueSet(unescape(value)),
                }),
                Some(relation @ ("below" | "above")) => {
                    let (system, concept) = match split_unescaped(value, '|').as_slice() {
                        [system, concept] if !system.is_empty() && !concept.is_empty() => {
                            (system.clone(), concept.clone())
                        }
                        _ => {
                            return Err(QueryError(format!(
                                "use :{relation}=system|code: the hierarchy is the system's"
                            )))
                        }
                    };
                    Ok(Filter::Concepts {
                        resource_type: resource_type.to_owned(),
                        param: code.to_owned(),
                        set: if relation == "below" {
                            ConceptSet::Below {
                                system,
                                code: concept,
                            }
                        } else {
                            ConceptSet::Above {
                                system,
                                code: concept,
                            }
                        },
                    })
                }
                Some("of-type") => match split_unescaped(value, '|').as_slice() {
                    [system, type_code, value] if !type_code.is_empty() && !value.is_empty() => Ok(
                        Filter::Key(keys::of_type(resource_type, code, system, type_code, value)),
                    ),
                    _ => Err(QueryError(
                        "use :of-type=type-system|type-code|value (type-system may be empty)"
                            .into(),
                    )),
                },
                Some("text") => Ok(Filter::Text {
                    resource_type: resource_type.to_owned(),
                    field: TextField::Token(code.to_owned()),
                    text: unescape(value),
                }),
                Some(m) => unsupported(m),
            },
            SearchParamType::Reference => match modifier {
                None => Ok(reference(resource_type, code, None, value)),
                Some("identifier") => {
                    Ok(token(resource_type, &keys::identifier_param(code), value))
                }
                Some(target) if fjord_definitions::type_def(target).is_some() => {
                    Ok(reference(resource_type, code, Some(target), value))
                }
                Some(m) => unsupported(m),
            },
            SearchParamType::Uri => {
                let uri = unescape(value);
                match modifier {
                    None => Ok(Filter::Key(keys::uri(resource_type, code, &uri))),
                    // The URI or one below it, on path segments.
                    Some("below") => Ok(Filter::Key(keys::uri_below(
                        resource_type,
                        code,
                        uri.trim_end_matches('/'),
                    ))),
                    // The URI or one of its parents.
                    Some("above") => Ok(Filter::Any(
                        crate::terms::uri_parents(&uri)
                            .chain([uri.as_str()])
                            .map(|parent| Filter::Key(keys::uri(resource_type, code, parent)))
                            .collect(),
                    )),
                    Some(m) => unsupported(m),
                }
            }
            SearchParamType::String => {
                let text = unescape(value);
                let matching = match modifier {
                    None => StringMatch::Prefix(crate::normalize(&text)),
                    Some("exact") => StringMatch::Exact(text),
                    Some("contains") => StringMatch::Contains(crate::normalize(&text)),
                    Some(m) => return unsupported(m),
                };
                Ok(Filter::String {
                    param_key: keys::param(resource_type, code),
                    matching,
                })
            }
            SearchParamType::Date => {
                let (prefix, low, high) = date_value(value)?;
                Ok(Filter::Date {
                    param_key: Some(keys::param(resource_type, code)),
                    prefix,
                    low,
                    high,
                })
            }
            SearchParamType::Number => Ok(Filter::Value {
                param: code.to_owned(),
                test: number_test(value)?,
            }),
            SearchParamType::Quantity => Ok(Filter::Value {
                param: code.to_owned(),
                test: quantity_test(value)?,
            }),
            SearchParamType::Composite => composite(resource_type, parameter, value),
            SearchParamType::Special => Err(QueryError(format!("{code} is not supported"))),
        }
    }
}

/// `_text=words` (the narrative) or `_content=words` (all the text), each comma-separated value
/// an alternative.
fn text_filter(
    resource_type: &str,
    code: &str,
    modifier: Option<&str>,
    value: &str,
) -> Result<Filter, QueryError> {
    if let Some(modifier) = modifier {
        return Err(QueryError(format!(
            "{code}:{modifier}: {code} takes no modifier"
        )));
    }
    let field = if code == "_text" {
        TextField::Narrative
    } else {
        TextField::Content
    };
    let mut alternatives: Vec<Filter> = split_unescaped(value, ',')
        .into_iter()
        .filter(|text| !text.trim().is_empty())
        .map(|text| Filter::Text {
            resource_type: resource_type.to_owned(),
            field: field.clone(),
            text,
        })
        .collect();
    match alternatives.len() {
        0 => Err(QueryError(format!(
            "{code}={value}: no words to search for"
        ))),
        1 => Ok(alternatives.pop().expect("one")),
        _ => Ok(Filter::Any(alternatives)),
    }
}
