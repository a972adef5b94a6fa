//! Full-text search (`_text`, `_content`, `:text`) through the text index: caught up with every
//! acknowledged write before a search answers, kept apart per tenant, and rebuilt from the
//! change log when its directory is lost.

use fjord_tests::{send, Server};
use serde_json::{json, Value};

use crate::searching::{assert_finds, assert_rejects, capability_of, ids, put, search_param_names};

fn note(id: &str, narrative: &str, display: &str, remark: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "text": {"status": "generated",
                 "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{narrative}</p></div>")},
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": display}]},
        "subject": {"reference": "Patient/p1"},
        "note": [{"text": remark}],
    })
}

pub(crate) fn tenant(server: &Server, id: &str) -> String {
    let created = send(
        "POST",
        &format!("{}/admin/tenants", server.origin),
        &[],
        Some(&json!({"id": id, "name": id}).to_string()),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    server.base(id)
}

#[test]
fn text_content_and_token_text() {
    let (server, base) = crate::server_with_tenant();
    put(
        &base,
        &json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Østergaard", "given": ["Åse"]}],
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Åse Østergaard, heimebuande</div>"}}),
    );
    put(
        &base,
        &note(
            "o1",
            "Blodtrykk &amp; puls målt",
            "Blood pressure panel",
            "etter trening",
        ),
    );
    put(
        &base,
        &note("o2", "Vekt målt", "Body weight", "før frokost"),
    );
    let other = tenant(&server, "t2");
    crate::a_patient(&other, "p1");
    put(
        &other,
        &note(
            "x1",
            "Blodtrykk målt",
            "Blood pressure panel",
            "etter trening",
        ),
    );

    let cases: &[(&str, &[&str])] = &[
        // _text: the narrative only; words folded to ASCII, every word must occur.
        ("Observation?_text=blodtrykk", &["o1"]),
        ("Observation?_text=MALT", &["o1", "o2"]),
        ("Observation?_text=målt puls", &["o1"]),
        ("Observation?_text=vekt puls", &[]),
        ("Observation?_text=trening", &[]),
        ("Observation?_text=vekt,puls", &["o1", "o2"]),
        // _content: every string of the resource.
        ("Observation?_content=trening", &["o1"]),
        ("Observation?_content=for frokost", &["o2"]),
        ("Observation?_content=panel", &["o1"]),
        // :text on a token: its displays and texts.
        ("Observation?code:text=pressure", &["o1"]),
        ("Observation?code:text=weight", &["o2"]),
        ("Observation?code:text=trening", &[]),
        // With other filters, in a chain, in a system search.
        ("Observation?_content=malt&code:text=weight", &["o2"]),
        ("Observation?subject._text=ostergaard", &["o1", "o2"]),
        ("Observation?subject._text=hansen", &[]),
        ("Patient?_has:Observation:subject:_text=vekt", &["p1"]),
        ("?_type=Patient,Observation&_content=ostergaard", &["p1"]),
    ];
    assert_finds(&base, cases);
    // The other tenant sees its own resource only.
    assert_eq!(ids(&other, "Observation?_text=blodtrykk"), ["x1"]);

    // An update replaces the words, a delete removes them: the next search knows.
    put(&base, &note("o1", "Puls målt", "Heart rate", "i ro"));
    assert!(ids(&base, "Observation?_text=blodtrykk").is_empty());
    assert_eq!(ids(&base, "Observation?code:text=heart"), ["o1"]);
    assert_eq!(
        send("DELETE", &format!("{base}/Observation/o2"), &[], None).status,
        200
    );
    assert!(ids(&base, "Observation?_text=vekt").is_empty());

    assert_rejects(
        &base,
        &[
            ("Observation?_text:exact=puls", "takes no modifier"),
            ("Observation?_content=,", "no words"),
            ("Observation?_content=.,-", "no words"),
        ],
    );

    let observation = capability_of(&base, "Observation");
    let names = search_param_names(&observation);
    assert!(names.iter().any(|n| n == "_text") && names.iter().any(|n| n == "_content"));
}

/// Each write is searched for the moment it is acknowledged: the search feeds the index what
/// the background follower (once a second) has not yet.
#[test]
fn a_search_sees_every_write_acknowledged_before_it() {
    let (_server, base) = crate::server_with_tenant();
    crate::a_patient(&base, "p1");
    for n in 0..40 {
        let word = format!("ord{n}x");
        put(&base, &note(&format!("n{n}"), &word, "Pulse", "–"));
        assert_eq!(
            ids(&base, &format!("Observation?_text={word}")),
            [format!("n{n}")],
            "write {n}"
        );
    }
}

/// The index is derived: without its directory the server rebuilds it from the change log.
#[test]
fn a_lost_text_index_is_rebuilt_from_the_change_log() {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let dir = std::env::temp_dir().join(format!("fjord-text-rebuild-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap();
    let args = ["--database-url", &database.url, "--text-dir", dir_arg];
    let server = Server::start(&args);
    let base = tenant(&server, "t1");
    crate::a_patient(&base, "p1");
    for n in 0..30 {
        put(
            &base,
            &note(
                &format!("r{n}"),
                "Blodtrykk målt",
                "Blood pressure panel",
                "–",
            ),
        );
    }
    assert_eq!(
        send("DELETE", &format!("{base}/Observation/r7"), &[], None).status,
        200
    );
    assert_eq!(ids(&base, "Observation?_text=blodtrykk").len(), 29);
    drop(server);

    std::fs::remove_dir_all(&dir).unwrap();
    let server = Server::start(&args);
    let found = ids(&base_of(&server), "Observation?_text=blodtrykk");
    assert_eq!(found.len(), 29);
    assert!(!found.contains(&"r7".to_owned()));
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn base_of(server: &Server) -> String {
    server.base("t1")
}
