//! `encode()`/`decode()` (base64, urlbase64, hex) and `escape()`/`unescape()` (html, json).

use base64::Engine;

/// The function `name` applied with `format`; `None` for an unknown format or undecodable input.
pub(crate) fn transform(name: &str, s: &str, format: &str) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    match (name, format) {
        ("encode", "base64") => Some(STANDARD.encode(s)),
        ("encode", "urlbase64") => Some(URL_SAFE.encode(s)),
        ("encode", "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        ("decode", "base64") => String::from_utf8(STANDARD.decode(s).ok()?).ok(),
        ("decode", "urlbase64") => String::from_utf8(URL_SAFE.decode(s).ok()?).ok(),
        ("decode", "hex") => {
            let bytes = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        }
        ("escape", "html") => Some(
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
        ),
        ("unescape", "html") => Some(
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        ),
        ("escape", "json") => {
            let quoted = serde_json::to_string(s).ok()?;
            Some(quoted[1..quoted.len() - 1].to_owned())
        }
        ("unescape", "json") => Some(unescape_json(s)),
        _ => None,
    }
}

fn unescape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
