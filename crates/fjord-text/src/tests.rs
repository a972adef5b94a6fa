use serde_json::json;

use super::*;

fn registry() -> fjord_search::Registry {
    fjord_search::Registry::r4().unwrap()
}

fn put(resource: Json) -> TextUpdate {
    let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
    let id = resource["id"].as_str().unwrap().to_owned();
    TextUpdate::Put(document(&registry(), &resource_type, &id, &resource))
}

use serde_json::Value as Json;

fn observation(id: &str, display: &str, narrative: &str) -> Json {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{narrative}</p></div>")},
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": display}], "text": "Blodtrykk"},
        "note": [{"text": "målt hjemme"}],
    })
}

#[test]
fn narrative_markup_and_entities_become_text() {
    assert_eq!(
        narrative_text("<div><p>Blood&#160;pressure &lt;high&gt; &amp; <b>rising</b></p></div>")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Blood", "pressure", "<high>", "&", "rising"]
    );
    assert_eq!(narrative_text("a & b &unknown; c"), "a & b &unknown; c");
}

#[test]
fn fields_words_tenants_and_types_are_kept_apart() {
    let dir = std::env::temp_dir().join(format!("fjord-text-{}-fields", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = TextIndex::open(&dir, "db-1").unwrap();
    index
        .apply(
            1,
            vec![
                put(observation(
                    "o1",
                    "Blood pressure panel",
                    "Systolic 120 at Østergaard",
                )),
                put(observation("o2", "Body weight", "Weight 72 kg")),
            ],
            "p1".into(),
        )
        .unwrap();
    index
        .apply(
            2,
            vec![put(observation(
                "o3",
                "Blood pressure panel",
                "Systolic 130",
            ))],
            "q1".into(),
        )
        .unwrap();
    let search = |tenant, field: &TextField, text| {
        index
            .search(tenant, "Observation", field, text, 10)
            .unwrap()
    };
    assert_eq!(search(1, &TextField::Narrative, "systolic"), ["o1"]);
    assert_eq!(
        search(1, &TextField::Narrative, "ostergaard SYSTOLIC"),
        ["o1"]
    );
    assert!(search(1, &TextField::Narrative, "systolic weight").is_empty());
    assert_eq!(search(2, &TextField::Narrative, "systolic"), ["o3"]);
    assert_eq!(search(1, &TextField::Content, "malt hjemme"), ["o1", "o2"]);
    assert_eq!(search(1, &TextField::Content, "weight 72"), ["o2"]);
    assert!(search(1, &TextField::Narrative, "hjemme").is_empty());
    let code = TextField::Token("code".into());
    assert_eq!(search(1, &code, "pressure"), ["o1"]);
    assert_eq!(search(1, &code, "blodtrykk"), ["o1", "o2"]);
    assert!(search(1, &TextField::Token("category".into()), "pressure").is_empty());
    assert!(index
        .search(1, "Patient", &TextField::Content, "blood", 10)
        .unwrap()
        .is_empty());
    assert!(matches!(
        index.search(1, "Observation", &TextField::Content, "blodtrykk", 1),
        Err(TextError::TooManyMatches(1))
    ));
    assert!(matches!(
        index.search(1, "Observation", &TextField::Content, " ,. ", 1),
        Err(TextError::NoWords)
    ));

    // An update replaces the document; a removal drops it.
    index
        .apply(
            1,
            vec![
                put(observation("o1", "Heart rate", "Pulse 60")),
                TextUpdate::Remove {
                    resource_type: "Observation".into(),
                    id: "o2".into(),
                },
            ],
            "p2".into(),
        )
        .unwrap();
    assert!(search(1, &TextField::Narrative, "systolic").is_empty());
    assert_eq!(search(1, &TextField::Narrative, "pulse"), ["o1"]);
    assert!(search(1, &TextField::Content, "weight").is_empty());
    assert_eq!(index.position(1).as_deref(), Some("p2"));
    drop(index);

    // Reopened for the same database: documents and positions stay.
    let index = TextIndex::open(&dir, "db-1").unwrap();
    assert_eq!(index.position(1).as_deref(), Some("p2"));
    assert_eq!(index.position(2).as_deref(), Some("q1"));
    assert_eq!(index.len(), 2);
    drop(index);

    // For another database: empty, to be fed from the start.
    let index = TextIndex::open(&dir, "db-2").unwrap();
    assert_eq!(index.position(1), None);
    assert!(index.is_empty());
    drop(index);
    std::fs::remove_dir_all(&dir).unwrap();
}
