//! Compiles in every topic of `topics/`: a new topic is a new file, no code.

use std::path::Path;

fn main() {
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("topics");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("topics/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    let entries: Vec<String> = names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            format!("({name:?}, include_str!({:?}))", path.display().to_string())
        })
        .collect();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("topics.rs");
    std::fs::write(out, format!("&[{}]", entries.join(",\n"))).expect("OUT_DIR is writable");
}
