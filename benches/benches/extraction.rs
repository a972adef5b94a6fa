//! What indexing costs per resource: every search parameter of its type extracted (FHIRPath over
//! the parsed resource), against parsing the same resource (the baseline every write pays). A
//! home blood-pressure Observation, and the AuditEvent a subscription notification leaves (the
//! shape `fjord-engine`'s audit trail writes, with more parameters than most resources).
//!
//! `cargo bench -p fjord-benches --bench extraction`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fjord_benches::fixtures::BLOOD_PRESSURE;
use fjord_search::Registry;
use serde_json::Value;

/// A notification's AuditEvent as the audit trail stores it.
const NOTIFICATION_AUDIT_EVENT: &str = r#"{"resourceType":"AuditEvent","id":"7d3c2f0e-6a55-4c41-9d0b-2b1f3c9d8e11","meta":{"versionId":"1","lastUpdated":"2026-12-05T02:00:00.123Z"},"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient","valueReference":{"reference":"Patient/p-17"}}],"type":{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110106","display":"Export"},"action":"R","recorded":"2026-12-05T02:00:00.123Z","outcome":"0","agent":[{"who":{"reference":"Practitioner/hpr-9144889"},"altId":"sub-17","requestor":true,"role":[{"text":"practitioner"}]},{"type":{"text":"client application"},"who":{"identifier":{"system":"urn:fjord:oauth-client","value":"dho-app"}},"requestor":false},{"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110152","display":"Destination Role ID"}]},"who":{"display":"the subscription's endpoint"},"requestor":false,"network":{"address":"http://127.0.0.1:40000","type":"5"}}],"source":{"site":"fjord","observer":{"display":"Fjord"},"type":[{"system":"http://terminology.hl7.org/CodeSystem/security-source-type","code":"4"}]},"entity":[{"what":{"reference":"Subscription/sub-p-17"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"2"},"role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"9"}},{"what":{"reference":"Observation/0b6c1d2e/_history/1"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"2"}},{"what":{"reference":"Patient/p-17"},"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"1"},"role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1"}}]}"#;

fn bench(c: &mut Criterion, registry: &Registry, name: &str, body: &str) {
    let value: Value = serde_json::from_str(body).unwrap();
    let entries = fjord_search::extract(registry, &value).unwrap();
    assert!(entries.len() > 5, "{name}: {entries:?}");
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse (baseline)", |b| {
        b.iter(|| serde_json::from_str::<Value>(body).unwrap())
    });
    group.bench_function("extract", |b| {
        b.iter(|| fjord_search::extract(registry, &value).unwrap())
    });
    group.finish();
}

fn extraction(c: &mut Criterion) {
    let registry = Registry::r4().unwrap();
    let observation = BLOOD_PRESSURE.replace(r#""resourceType":"Observation","#, r#""resourceType":"Observation","id":"o1","meta":{"versionId":"1","lastUpdated":"2026-12-05T02:00:00.123Z"},"#);
    bench(c, &registry, "index home observation", &observation);
    bench(
        c,
        &registry,
        "index notification audit event",
        NOTIFICATION_AUDIT_EVENT,
    );
}

criterion_group!(benches, extraction);
criterion_main!(benches);
