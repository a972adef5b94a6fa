//! `cargo run -p fjord-gen [-- FHIR_R4_DIR]`: regenerates the committed definition sources from the
//! specification files (default `../shared/fhir-r4`, relative to the workspace root).

use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fhir_r4 = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/fhir-r4"));
    for file in fjord_gen::generate(&fhir_r4)? {
        let path = workspace.join(&file.path);
        std::fs::write(&path, &file.text)?;
        println!("wrote {} ({} bytes)", file.path.display(), file.text.len());
    }
    Ok(())
}
