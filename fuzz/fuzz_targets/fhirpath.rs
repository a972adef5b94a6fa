//! A FHIRPath expression: parsed, and what parses evaluated over a resource.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn patient() -> &'static Value {
    static PATIENT: OnceLock<Value> = OnceLock::new();
    PATIENT.get_or_init(|| {
        serde_json::json!({
            "resourceType": "Patient", "id": "p1",
            "name": [{ "family": "Nordmann", "given": ["Kari", "Ola"] }],
            "birthDate": "1980-02-29",
            "identifier": [{ "system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "01018012345" }],
            "telecom": [{ "system": "phone", "value": "+47 12345678" }],
            "extension": [{ "url": "http://example.org/x", "valueQuantity": { "value": 1.5, "unit": "kg" } }],
            "active": true
        })
    })
}

fuzz_target!(|expression: &str| {
    if let Ok(expr) = fjord_fhirpath::parse(expression) {
        let _ = fjord_fhirpath::evaluate_resource(&expr, patient());
    }
});
