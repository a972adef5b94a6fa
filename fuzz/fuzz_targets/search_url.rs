//! A search URL: `Type?query`, parsed against R4's search parameters, strictly and leniently.
#![no_main]

use std::sync::OnceLock;

use fjord_search::{Registry, Scope};
use libfuzzer_sys::fuzz_target;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::r4().expect("R4's search parameters"))
}

fuzz_target!(|url: &str| {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let params: Vec<(String, String)> = form_pairs(query);
    let scope = match path.split('/').collect::<Vec<_>>()[..] {
        ["" | "_search"] => Scope::System,
        [owner_type, owner_id, resource_type] => Scope::Compartment {
            owner_type,
            owner_id,
            resource_type: (resource_type != "*").then_some(resource_type),
        },
        _ => Scope::Type(path),
    };
    let _ = fjord_search::check_cost(&params);
    for strict in [false, true] {
        let _ = registry().parse_query(scope, &params, strict);
    }
});

/// `a=b&c=d`, percent-decoded as a server's query parser would.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
