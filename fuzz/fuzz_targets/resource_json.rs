//! A resource body as JSON: parsed strictly, and what parses is written back and parses again.
#![no_main]

use fjord_model::{ParseLimits, Resource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: fjord_fuzz::ignore_caught_parser_panics(),
    |body: &[u8]| {
        let limits = ParseLimits::default();
        if let Ok(resource) = Resource::from_json(body, &limits) {
            let _ = resource.invariant_violations();
            let written = resource.to_json();
            Resource::from_json(written.as_bytes(), &limits).expect("Fjord's own JSON parses");
            let _ = resource.to_xml();
        }
    }
);
