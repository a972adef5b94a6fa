//! Page links: `previous` walks back over the same pages `next` walked, a page token serves
//! only the search (and tenant) that made it, and `_total=estimate`.

use fjord_tests::send;
use serde_json::{json, Value};

use crate::searching::{fixture, get_json};

pub(crate) fn link(page: &Value, relation: &str) -> Option<String> {
    page["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["url"].as_str().unwrap().to_owned())
}

fn ids(page: &Value) -> Vec<String> {
    page["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn previous_links_walk_back_and_tokens_serve_their_own_search() {
    let (server, base) = crate::server_with_tenant();
    fixture(&base);
    let first_url = format!("{base}/Observation?_sort=_id&_count=2");

    let mut pages = vec![get_json(&first_url)];
    while let Some(next) = link(pages.last().unwrap(), "next") {
        pages.push(get_json(&next));
    }
    let forward: Vec<Vec<String>> = pages.iter().map(ids).collect();
    assert_eq!(forward, [["o1", "o2"], ["o3", "o4"], ["o5", "o6"]]);
    assert_eq!(link(&pages[0], "previous"), None);
    assert_eq!(
        link(&pages[1], "previous").as_deref(),
        Some(first_url.as_str())
    );

    // Back from the last page, one previous link at a time.
    let mut page = pages[2].clone();
    let mut backward = Vec::new();
    while let Some(previous) = link(&page, "previous") {
        page = get_json(&previous);
        backward.push(ids(&page));
    }
    assert_eq!(backward, [["o3", "o4"], ["o1", "o2"]]);

    // A token belongs to its search: another sort, type, filter or tenant cannot use it.
    let token = link(&pages[1], "self").unwrap();
    let token = token.split("_cursor=").nth(1).unwrap();
    let other = crate::text_search::tenant(&server, "t2");
    for url in [
        format!("{base}/Observation?_sort=-_id&_count=2&_cursor={token}"),
        format!("{base}/Observation?_sort=_id&code=8867-4&_count=2&_cursor={token}"),
        format!("{base}/Patient?_sort=_id&_count=2&_cursor={token}"),
        format!("{other}/Observation?_sort=_id&_count=2&_cursor={token}"),
    ] {
        let reply = send("GET", &url, &[], None);
        assert_eq!(reply.status, 400, "{url}: {}", reply.body);
        assert!(
            reply.body.contains("another search"),
            "{url}: {}",
            reply.body
        );
    }
    // The page size may change between pages.
    let resized = get_json(&format!(
        "{base}/Observation?_sort=_id&_count=3&_cursor={token}"
    ));
    assert_eq!(ids(&resized), ["o3", "o4", "o5"]);
}

#[test]
fn totals_accurate_estimated_and_of_a_single_page() {
    let (_server, base) = crate::server_with_tenant();
    fixture(&base);
    let total = |query: &str| get_json(&format!("{base}/{query}"))["total"].clone();
    assert_eq!(total("Observation?_total=accurate&_count=2"), json!(6));
    assert_eq!(total("Observation?_total=none&_count=2"), Value::Null);
    assert_eq!(total("Observation"), Value::Null);
    // One page after no other: its size is exact whatever was asked.
    assert_eq!(total("Observation?_total=estimate"), json!(6));
    assert_eq!(total("Observation?code=8867-4&_total=estimate"), json!(2));
    // Several pages: the planner's estimate, a count it did not read.
    let estimate = total("Observation?_total=estimate&_count=2");
    assert!(estimate.as_u64().is_some(), "{estimate}");
    let bad = send(
        "GET",
        &format!("{base}/Observation?_total=roughly"),
        &[],
        None,
    );
    assert_eq!(bad.status, 400);
}
