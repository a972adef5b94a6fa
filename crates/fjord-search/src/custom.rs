//! Custom `SearchParameter` resources: a tenant's own parameters on top of R4's. A parameter
//! replaces one of the same code on each of its base types; resources written before it have no
//! values for it until `$reindex`.

use fjord_definitions::{SearchParamType, TypeKind};
use fjord_fhirpath::{BinaryOp, Expr};
use serde_json::Value as Json;

use crate::registry::{parse, Targets};
use crate::{Registry, SearchError, SearchParam, Storage};

/// Codes Fjord answers itself: a custom parameter cannot take them.
const RESERVED: [&str; 20] = [
    "_id",
    "_lastUpdated",
    "_count",
    "_sort",
    "_total",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_contained",
    "_containedType",
    "_type",
    "_has",
    "_format",
    "_pretty",
    "_cursor",
    "_since",
    "_query",
    "_list",
    "_filter",
];

/// Whether a SearchParameter resource becomes a parameter of its tenant: when it is `active` and
/// not one of R4's own (which Fjord serves already). Others are stored as they are.
pub fn activates(definition: &Json) -> bool {
    definition["status"] == "active"
        && definition["url"]
            .as_str()
            .is_none_or(|url| fjord_definitions::search_parameter(url).is_none())
}

impl Registry {
    /// This registry with `definitions` (SearchParameter resources as JSON) added; only those
    /// that [`activates`] are. Fails on the first definition Fjord cannot use, naming it.
    pub fn with_custom(&self, definitions: &[Json]) -> Result<Registry, SearchError> {
        let mut parameters = Vec::new();
        for definition in definitions.iter().filter(|d| activates(d)) {
            parameters.extend(self.custom(definition)?);
        }
        Ok(self.with_parameters(parameters))
    }

    /// This registry with parameters made by [`Registry::custom`] added, each replacing one of
    /// the same code on its base type.
    pub fn with_parameters(
        &self,
        parameters: impl IntoIterator<Item = (String, SearchParam)>,
    ) -> Registry {
        let mut registry = self.clone();
        for (base, parameter) in parameters {
            let parameters = registry
                .by_type
                .get_mut(&base)
                .expect("bases are checked to be known types");
            parameters.retain(|p| p.code != parameter.code);
            parameters.push(parameter);
        }
        registry
    }

    /// A SearchParameter resource as Fjord would use it: the parameter on each base type (an
    /// expression like `Patient.x | Practitioner.y` keeps on each base what names it).
    pub fn custom(&self, definition: &Json) -> Result<Vec<(String, SearchParam)>, SearchError> {
        let fail = |message: String| {
            let url = definition["url"].as_str().unwrap_or("a SearchParameter");
            SearchError::Definition(format!("{url}: {message}"))
        };
        let text = |name: &str| definition[name].as_str();
        let code = text("code").ok_or_else(|| fail("no code".into()))?;
        let valid_code = !code.is_empty()
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_code || RESERVED.contains(&code) {
            return Err(fail(format!(
                "'{code}' is not a code a custom parameter can have (letters, digits, '-', '_'; \
                 not one of {})",
                RESERVED.join(" ")
            )));
        }
        let kind = kind(text("type").unwrap_or_default())
            .ok_or_else(|| fail(format!("type '{}' is unknown", text("type").unwrap_or(""))))?;
        let types = |name: &str| -> Result<Vec<String>, SearchError> {
            definition[name]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| match t.as_str() {
                    Some(t) if self.has_type(t) => Ok(t.to_owned()),
                    _ => Err(fail(format!("{name}: {t} is not a resource type"))),
                })
                .collect()
        };
        let bases = types("base")?;
        if bases.is_empty() {
            return Err(fail("no base resource type".into()));
        }
        let url = text("url").unwrap_or_default();
        let expression = text("expression").map(|e| parse(url, e)).transpose()?;
        let targets = types("target")?;
        let mut components = Vec::new();
        for component in definition["component"].as_array().into_iter().flatten() {
            let definition = component["definition"].as_str().unwrap_or_default();
            let part = fjord_definitions::search_parameter(definition).ok_or_else(|| {
                fail(format!(
                    "component {definition} is not an R4 search parameter"
                ))
            })?;
            let expression = component["expression"]
                .as_str()
                .ok_or_else(|| fail("a component without expression".into()))?;
            components.push((part.kind, parse(url, expression)?));
        }
        let parameter = SearchParam {
            code: code.to_owned(),
            url: url.to_owned(),
            kind,
            expression,
            targets: if targets.is_empty() {
                Targets::Any
            } else {
                Targets::Only(targets)
            },
            components,
            storage: Storage::Indexed,
        };
        if kind == SearchParamType::Composite && !parameter.is_searchable() {
            return Err(fail(
                "its components are of a shape Fjord does not search".into(),
            ));
        }
        Ok(bases
            .into_iter()
            .map(|base| {
                let mut own = parameter.clone();
                own.expression = parameter
                    .expression
                    .as_ref()
                    .and_then(|e| for_base(e, &base));
                (base, own)
            })
            .collect())
    }
}

/// The alternatives of a union that apply to `base`: those not starting at another resource
/// type. `None` when none is left.
fn for_base(expression: &Expr, base: &str) -> Option<Expr> {
    let mut alternatives = Vec::new();
    flatten_union(expression, &mut alternatives);
    alternatives
        .into_iter()
        .filter(|alternative| match root(alternative) {
            Some(name)
                if fjord_definitions::type_def(name)
                    .is_some_and(|t| t.kind == TypeKind::Resource) =>
            {
                fjord_definitions::is_subtype(base, name)
            }
            _ => true,
        })
        .cloned()
        .reduce(|left, right| Expr::Binary(BinaryOp::Union, Box::new(left), Box::new(right)))
}

fn flatten_union<'e>(expression: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expression {
        Expr::Binary(BinaryOp::Union, left, right) => {
            flatten_union(left, out);
            flatten_union(right, out);
        }
        other => out.push(other),
    }
}

/// The identifier a path starts at (`Patient` in `(Patient.x as Reference).y`).
fn root(expression: &Expr) -> Option<&str> {
    match expression {
        Expr::Identifier(name) => Some(name),
        Expr::Member(input, _)
        | Expr::Indexer(input, _)
        | Expr::Is(input, _)
        | Expr::As(input, _)
        | Expr::Call(Some(input), ..) => root(input),
        _ => None,
    }
}

fn kind(code: &str) -> Option<SearchParamType> {
    use SearchParamType::*;
    Some(match code {
        "number" => Number,
        "date" => Date,
        "string" => String,
        "token" => Token,
        "reference" => Reference,
        "composite" => Composite,
        "quantity" => Quantity,
        "uri" => Uri,
        "special" => Special,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{extract, Registry, Scope};

    #[test]
    fn custom_parameters_are_extracted_and_searched() {
        let r4 = Registry::r4().unwrap();
        let birth_place = json!({
            "resourceType": "SearchParameter", "url": "https://fjord.example/sp/birth-place",
            "status": "active", "code": "birth-place", "base": ["Patient"], "type": "string",
            "expression": "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-birthPlace').value.city"
        });
        let registry = r4.with_custom(std::slice::from_ref(&birth_place)).unwrap();
        let patient = json!({"resourceType": "Patient", "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
            "valueAddress": {"city": "Tromsø"}}]});
        let entries = extract(&registry, &patient).unwrap();
        assert!(entries.iter().any(|e| e.code == "birth-place"));
        assert!(extract(&r4, &patient)
            .unwrap()
            .iter()
            .all(|e| e.code != "birth-place"));
        let params = [("birth-place".to_owned(), "tromso".to_owned())];
        assert!(registry
            .parse_query(Scope::Type("Patient"), &params, true)
            .is_ok());
        assert!(r4
            .parse_query(Scope::Type("Patient"), &params, true)
            .is_err());

        // A union over several bases: each keeps its own part.
        let url = json!({"resourceType": "SearchParameter", "url": "https://x/sp/u", "code": "u",
            "status": "active", "type": "uri", "base": ["CodeSystem", "ValueSet"],
            "expression": "CodeSystem.url | ValueSet.url"});
        let both = r4.with_custom(std::slice::from_ref(&url)).unwrap();
        let value_set = json!({"resourceType": "ValueSet", "url": "http://x/vs"});
        let entries = extract(&both, &value_set).unwrap();
        assert!(entries.iter().any(|e| e.code == "u"));

        let mut retired = birth_place.clone();
        retired["status"] = json!("retired");
        assert!(!crate::activates(&retired));
        let built_in = json!({"resourceType": "SearchParameter", "status": "active",
            "url": "http://hl7.org/fhir/SearchParameter/Resource-id", "code": "_id"});
        assert!(!crate::activates(&built_in));
        let without = r4.with_custom(&[retired]).unwrap();
        assert!(without.parameter("Patient", "birth-place").is_none());
        for mut broken in [
            json!({"code": "x", "base": ["Nope"], "type": "string", "expression": "Patient.id"}),
            json!({"code": "x", "base": ["Patient"], "type": "size", "expression": "Patient.id"}),
            json!({"code": "x", "base": ["Patient"], "type": "string", "expression": "Patient.("}),
            json!({"code": "_id", "base": ["Patient"], "type": "string"}),
        ] {
            broken["status"] = json!("active");
            assert!(
                r4.with_custom(std::slice::from_ref(&broken)).is_err(),
                "{broken}"
            );
        }
    }
}
