//! A resource body as XML: parsed strictly, and what parses is written back and parses again.
#![no_main]

use fjord_model::{ParseLimits, Resource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: fjord_fuzz::ignore_caught_parser_panics(),
    |body: &[u8]| {
        let limits = ParseLimits::default();
        if let Ok(resource) = Resource::from_xml(body, &limits) {
            let written = resource.to_xml();
            Resource::from_xml(written.as_bytes(), &limits).expect("Fjord's own XML parses");
            let _ = resource.to_json();
        }
    }
);
