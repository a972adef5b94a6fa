//! Bundles built from stored versions.

use actix_web::HttpRequest;
use fjord_engine::{HistoryPage, Op};
use serde_json::{json, Value};

use crate::negotiate::query_pairs;
use fjord_engine::format_instant;

/// A `history` Bundle of one page, with `self` and `next` links.
pub(crate) fn history(req: &HttpRequest, base: &str, page: &HistoryPage) -> Value {
    let entries: Vec<Value> = page
        .versions
        .iter()
        .map(|v| {
            let url = format!("{}/{}", v.resource_type, v.id);
            let (method, status) = match v.op {
                Op::Create => ("POST", "201 Created"),
                Op::Update => ("PUT", "200 OK"),
                Op::Delete => ("DELETE", "204 No Content"),
            };
            let request_url = if v.op == Op::Create {
                v.resource_type.clone()
            } else {
                url.clone()
            };
            let mut entry = json!({
                "fullUrl": format!("{base}/{url}"),
                "request": { "method": method, "url": request_url },
                "response": {
                    "status": status,
                    "etag": fjord_engine::etag_of(v.version),
                    "lastModified": format_instant(v.last_updated),
                },
            });
            if let Some(body) = &v.body {
                let resource: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                entry
                    .as_object_mut()
                    .expect("entry is an object")
                    .shift_insert(1, "resource".into(), resource);
            }
            entry
        })
        .collect();
    let own_url = |cursor: Option<i64>| {
        let mut pairs: Vec<(String, String)> = query_pairs(req)
            .into_iter()
            .filter(|(k, _)| k != "_cursor")
            .collect();
        if let Some(cursor) = cursor {
            pairs.push(("_cursor".into(), cursor.to_string()));
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let path = req
            .path()
            .split_once("/fhir/")
            .map(|(_, rest)| rest)
            .unwrap_or("");
        let path = path.split_once('/').map(|(_, rest)| rest).unwrap_or("");
        let mut url = format!("{base}/{path}");
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        url
    };
    let mut self_url = own_url(None);
    if !req.query_string().is_empty() {
        self_url = format!(
            "{}?{}",
            self_url.split('?').next().unwrap_or(""),
            req.query_string()
        );
    }
    let mut links = vec![json!({ "relation": "self", "url": self_url })];
    if let Some(cursor) = page.next_cursor {
        links.push(json!({ "relation": "next", "url": own_url(Some(cursor)) }));
    }
    json!({ "resourceType": "Bundle", "type": "history", "link": links, "entry": entries })
}

pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'|'
            | b','
            | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
