//! Search for Fjord: the search parameter registry and the extraction of typed index values.
//!
//! On every write the engine asks [`extract`] for the values of every search parameter of the
//! resource's type (evaluated with `fjord-fhirpath`), and the store writes them, as the
//! [`IndexTerms`] of [`index_terms`], in the same transaction as the resource. On a search, the
//! [`Registry`] parses the URL's parameters into a [`SearchQuery`] over the same terms, which the
//! store runs. Pure: no I/O.

mod custom;
mod extract;
mod matcher;
mod query;
mod registry;
mod terms;

pub use custom::activates;
pub use extract::{extract, normalize, values_of, IndexEntry, IndexValue};
pub use fjord_definitions::SearchParamType;
pub use matcher::{admits, date_bounds, number_bounds};
pub use query::{
    check_cost, ConceptSet, Concepts, Filter, Include, Prefix, QueryError, Scope, SearchQuery,
    SortBy, SortKey, StringMatch, Summary, TextField, TooCostly, Total, UnitMatch, ValueTest,
    DEFAULT_COUNT, MAX_ALTERNATIVES, MAX_CHAIN_DEPTH, MAX_COUNT, MAX_INCLUDES,
    MAX_SEARCH_PARAMETERS,
};
pub use registry::{Registry, SearchParam, Storage, Targets};
pub use terms::{
    equality_keys, index_terms, keys, DateTerm, IndexTerms, StringTerm, SORT_LARGEST, SORT_SMALLEST,
};

/// What can go wrong in this layer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A built-in or custom SearchParameter cannot be used (bad expression, unknown component).
    #[error("search parameter definition: {0}")]
    Definition(String),
    /// A parameter's expression failed on a resource.
    #[error("index extraction: {0}")]
    Extraction(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(resource: &serde_json::Value, code: &str) -> Vec<IndexValue> {
        let registry = Registry::r4().unwrap();
        extract(&registry, resource)
            .unwrap()
            .into_iter()
            .filter(|e| e.code == code)
            .map(|e| e.value)
            .collect()
    }

    fn blood_pressure() -> serde_json::Value {
        json!({
            "resourceType": "Observation",
            "id": "bp",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}], "text": "Blodtrykk"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-11-01T08:00:00+01:00",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 82, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
            ]
        })
    }

    #[test]
    fn tokens_keep_system_code_and_text() {
        let codes = values(&blood_pressure(), "code");
        assert!(codes.contains(&IndexValue::Token {
            system: Some("http://loinc.org".into()),
            code: Some("85354-9".into()),
            text: Some("Blood pressure panel".into()),
        }));
        assert!(codes.contains(&IndexValue::Token {
            system: None,
            code: None,
            text: Some("Blodtrykk".into())
        }));
        assert_eq!(
            values(&blood_pressure(), "status"),
            [IndexValue::Token {
                system: None,
                code: Some("final".into()),
                text: None
            }]
        );
    }

    #[test]
    fn dates_are_ranges_in_utc() {
        let at = 1_793_516_400_000; // 2026-11-01T07:00:00Z
        assert_eq!(
            values(&blood_pressure(), "date"),
            [IndexValue::Date {
                low: at,
                high: at + 999
            }]
        );
        let patient = json!({"resourceType": "Patient", "birthDate": "1974-12"});
        let [IndexValue::Date { low, high }] = values(&patient, "birthdate")[..] else {
            panic!("one birthdate range");
        };
        assert_eq!(high - low + 1, 31 * 86_400_000);
    }

    #[test]
    fn references_and_composites() {
        assert_eq!(
            values(&blood_pressure(), "subject"),
            [IndexValue::Reference {
                resource_type: Some("Patient".into()),
                id: Some("p1".into()),
                url: None,
                identifier: None,
            }]
        );
        // `patient` is the subject when it is a Patient: resolve() knows the type from the
        // reference alone.
        assert_eq!(
            values(&blood_pressure(), "patient"),
            values(&blood_pressure(), "subject")
        );
        let of_group =
            serde_json::json!({"resourceType": "Observation", "subject": {"reference": "Group/g"}});
        assert!(values(&of_group, "patient").is_empty());
        let composites = values(&blood_pressure(), "component-code-value-quantity");
        assert_eq!(composites.len(), 2);
        let IndexValue::Composite(parts) = &composites[0] else {
            panic!("a composite");
        };
        assert!(
            matches!(&parts[1], IndexValue::Quantity { canonical: Some((v, u)), .. }
            if *v == rust_decimal::Decimal::from(128) && u == "mm[Hg]")
        );
    }

    #[test]
    fn strings_are_normalised_and_names_split() {
        let patient = json!({
            "resourceType": "Patient",
            "name": [{"family": "Ødegård", "given": ["Åse", "Marie"]}],
            "address": [{"city": "Tromsø", "postalCode": "9008"}],
            "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "13031353453"}],
            "active": true
        });
        let names = values(&patient, "name");
        assert_eq!(names.len(), 3);
        assert!(names.contains(&IndexValue::String {
            exact: "Åse".into(),
            normalized: "ase".into()
        }));
        assert!(names.contains(&IndexValue::String {
            exact: "Ødegård".into(),
            normalized: "odegard".into()
        }));
        assert_eq!(values(&patient, "address-city").len(), 1);
        assert_eq!(
            values(&patient, "identifier"),
            [IndexValue::Token {
                system: Some("urn:oid:2.16.578.1.12.4.1.4.1".into()),
                code: Some("13031353453".into()),
                text: None,
            }]
        );
        assert_eq!(
            values(&patient, "active"),
            [IndexValue::Token {
                system: None,
                code: Some("true".into()),
                text: None
            }]
        );
    }

    #[test]
    fn union_parameters_and_resource_columns_are_not_indexed_twice() {
        let registry = Registry::r4().unwrap();
        let combo = registry.parameter("Observation", "combo-code").unwrap();
        assert_eq!(
            combo.storage,
            Storage::UnionOf(vec!["code".into(), "component-code".into()])
        );
        assert_eq!(
            registry.parameter("Observation", "_id").unwrap().storage,
            Storage::Resource
        );
        assert_eq!(
            registry.parameter("Observation", "code").unwrap().storage,
            Storage::Indexed
        );
        assert!(values(&blood_pressure(), "combo-code").is_empty());
        assert!(values(&blood_pressure(), "_id").is_empty());
    }

    /// A stored decimal at the bounds of what a decimal holds is indexed, not a panic on write.
    #[test]
    fn decimals_at_the_bounds_index() {
        // Parsed from text: a Rust float literal would lose the places.
        let risk: serde_json::Value = serde_json::from_str(
            r#"{"resourceType": "RiskAssessment",
                "prediction": [{"probabilityDecimal": 0.4422222222222222221481701556}]}"#,
        )
        .unwrap();
        let [IndexValue::Number { low, high, .. }] = values(&risk, "probability")[..] else {
            panic!("one number");
        };
        assert_eq!(low, high);
        let heavy = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueQuantity": {"value": 79228162514264337593543950335u128,
                "system": "http://unitsofmeasure.org", "code": "kg"}});
        let [IndexValue::Quantity { canonical, .. }] = &values(&heavy, "value-quantity")[..] else {
            panic!("one quantity");
        };
        assert_eq!(
            canonical,
            &Some((rust_decimal::Decimal::MAX, "g".to_owned()))
        );
    }

    #[test]
    fn numbers_carry_their_precision() {
        let risk =
            json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.5}]});
        let [IndexValue::Number { low, high, .. }] = values(&risk, "probability")[..] else {
            panic!("one number");
        };
        assert_eq!(
            (low.to_string(), high.to_string()),
            ("0.45".into(), "0.55".into())
        );
    }
}
