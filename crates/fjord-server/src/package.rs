//! `fjord package install FILE.tgz|DIR`: reads an npm-format FHIR package (the `package/`
//! folder of a tarball or directory, examples left out) and hands its JSON resources to the
//! engine, which stores the conformance resources among them.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// The JSON resources directly in a package's `package/` folder (or in `path` itself, for a
/// directory of resources).
pub fn read_package(path: &Path) -> anyhow::Result<Vec<Value>> {
    if path.is_dir() {
        let folder = path.join("package");
        let folder = if folder.is_dir() {
            folder
        } else {
            path.to_owned()
        };
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .with_context(|| format!("reading {}", folder.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut resources = Vec::new();
        for file in files {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            resources.extend(resource_of(&bytes));
        }
        return Ok(resources);
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut resources = Vec::new();
    for entry in archive.entries().context("reading the package (a .tgz)")? {
        let mut entry = entry.context("reading the package")?;
        let name = entry.path()?.to_string_lossy().into_owned();
        // `package/X.json`, not `package/examples/…` or `package/other/…`.
        let direct = name
            .strip_prefix("package/")
            .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".json"));
        if !direct {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        resources.extend(resource_of(&bytes));
    }
    Ok(resources)
}

/// A file's JSON when it is a resource (`package.json` and indexes are not).
fn resource_of(bytes: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    value.get("resourceType")?.as_str()?;
    Some(value)
}
