//! The resources the load drivers send.

/// A home blood-pressure measurement (LOINC panel with systolic and diastolic components), as a
/// PHG app posts it.
pub const BLOOD_PRESSURE: &str = r#"{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood pressure panel"}]},"subject":{"reference":"Patient/pasient-1"},"effectiveDateTime":"2026-11-01T08:00:00+01:00","device":{"reference":"Device/blodtrykksmaler-1"},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":128,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":82,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}"#;

/// What [`BLOOD_PRESSURE`] refers to, as (path under the tenant's base, body): references must
/// resolve, so a driver stores these first.
pub const REFERENCED: [(&str, &str); 2] = [
    (
        "Patient/pasient-1",
        r#"{"resourceType":"Patient","id":"pasient-1","name":[{"family":"Nordmann","given":["Kari"]}]}"#,
    ),
    (
        "Device/blodtrykksmaler-1",
        r#"{"resourceType":"Device","id":"blodtrykksmaler-1","deviceName":[{"name":"Blodtrykksmåler","type":"user-friendly-name"}]}"#,
    ),
];

/// The identifier system a PHG gives its measurements.
pub const MEASUREMENT_SYSTEM: &str = "urn:oid:2.16.578.1.12.4.1.7.1";

/// [`BLOOD_PRESSURE`] with the identifier `MEASUREMENT_SYSTEM|value`.
pub fn blood_pressure_with_identifier(value: &str) -> String {
    BLOOD_PRESSURE.replacen(
        r#"{"resourceType":"Observation","#,
        &format!(
            r#"{{"resourceType":"Observation","identifier":[{{"system":"{MEASUREMENT_SYSTEM}","value":"{value}"}}],"#
        ),
        1,
    )
}

/// A batch of `count` measurements, each a conditional create by its identifier
/// (`{prefix}-{i}`): what a PHG posts, and posts again when it did not see the answer.
pub fn measurement_batch(prefix: &str, count: usize) -> String {
    let entries: Vec<String> = (0..count)
        .map(|i| {
            let value = format!("{prefix}-{i}");
            format!(
                r#"{{"resource":{},"request":{{"method":"POST","url":"Observation","ifNoneExist":"identifier={MEASUREMENT_SYSTEM}|{value}"}}}}"#,
                blood_pressure_with_identifier(&value)
            )
        })
        .collect();
    format!(
        r#"{{"resourceType":"Bundle","type":"batch","entry":[{}]}}"#,
        entries.join(",")
    )
}
