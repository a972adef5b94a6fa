//! The committed definition sources are what the generator makes from the specification today.

#[test]
fn generated_sources_are_up_to_date() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = fjord_gen::generate(&fjord_tests::shared_dir().join("fhir-r4")).unwrap();
    assert_eq!(generated.len(), 5);
    for file in generated {
        let committed = std::fs::read_to_string(workspace.join(&file.path)).unwrap();
        assert!(
            committed == file.text,
            "{} is stale: run `cargo run -p fjord-gen`",
            file.path.display()
        );
    }
}
