//! What validation costs per resource, against parsing the same resource (the baseline every
//! write pays): a home blood-pressure Observation, and a Synthea patient's transaction bundle
//! (validated whole, every entry's resource as a resource).
//!
//! `cargo bench -p fjord-benches --bench validation`

use std::io::Read;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fjord_benches::fixtures::BLOOD_PRESSURE;
use fjord_model::{ParseLimits, Resource};
use fjord_validation::{validate, IdentifierRules};

/// The first Synthea patient bundle of the shared data.
fn synthea_bundle() -> Vec<u8> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/synthea/blaze-120-patients-bz2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            // The hospital and practitioner files are batches of shared resources.
            name.ends_with(".json.bz2") && !name.contains("Information")
        })
        .collect();
    files.sort();
    let mut json = Vec::new();
    bzip2::read::BzDecoder::new(std::fs::File::open(&files[0]).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    json
}

fn bench(c: &mut Criterion, name: &str, body: &[u8]) {
    let limits = ParseLimits::default();
    let value = Resource::from_json(body, &limits).unwrap().to_value();
    let report = validate(&value, IdentifierRules::default());
    assert!(!report.has_errors(), "{name}: {:?}", report.issues);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse (baseline)", |b| {
        b.iter(|| Resource::from_json(body, &limits).unwrap().to_value())
    });
    group.bench_function("validate", |b| {
        b.iter(|| validate(&value, IdentifierRules::default()))
    });
    group.finish();
}

fn validation(c: &mut Criterion) {
    bench(c, "home observation", BLOOD_PRESSURE.as_bytes());
    bench(c, "synthea patient bundle", &synthea_bundle());
}

criterion_group!(benches, validation);
criterion_main!(benches);
