//! SMART scopes as a token carries them: v1 and v2 words, granular queries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|scopes: &str| {
    for word in scopes.split_whitespace() {
        let _ = fjord_smart::Scope::parse(word);
    }
    let _ = fjord_smart::scope::parse_scopes(scopes.split_whitespace());
});
