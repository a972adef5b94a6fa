//! A resource body as JSON: parsed strictly, and what parses is written back and parses again.
#![no_main]

use fjord_model::{ParseLimits, Resource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // fjord-model catches fhirbolt's panics on malformed input and answers an error, as
        // the server does; only other panics are crashes.
        let aborting = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("fhirbolt")) {
                aborting(info);
            }
        }));
    },
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
