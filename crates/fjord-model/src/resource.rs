use fhirbolt::model::r4::{
    types::{Id, Instant, Meta},
    Resource as R4Resource,
};
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

use crate::generated::{for_each_domain_resource_type, for_each_resource_type, RESOURCE_TYPES};
use crate::{locate, narrative, Format, ParseError};

/// Limits applied while parsing untrusted bodies.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Deepest nesting of JSON objects and arrays (or XML elements) accepted.
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_depth: 64 }
    }
}

const STRICT: DeserializationConfig = DeserializationConfig {
    mode: DeserializationMode::Strict,
};

/// A parsed, structurally valid FHIR R4 resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    inner: R4Resource,
}

/// The canonical spelling of an R4 resource type name, if `name` is one.
pub fn resource_type(name: &str) -> Option<&'static str> {
    RESOURCE_TYPES
        .binary_search(&name)
        .ok()
        .map(|i| RESOURCE_TYPES[i])
}

/// Whether `id` is a valid FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

macro_rules! dispatch {
    ($($name:ident),*) => {
        fn type_name(resource: &R4Resource) -> &'static str {
            match resource {
                $(R4Resource::$name(_) => stringify!($name),)*
                R4Resource::Invalid => "Invalid",
            }
        }

        fn id_and_meta(resource: &mut R4Resource) -> Option<(&mut Option<Id>, &mut Option<Box<Meta>>)> {
            match resource {
                $(R4Resource::$name(r) => Some((&mut r.id, &mut r.meta)),)*
                R4Resource::Invalid => None,
            }
        }
    };
}
for_each_resource_type!(dispatch);

macro_rules! dispatch_domain {
    ($($name:ident),*) => {
        /// The contained resources; Bundle, Binary and Parameters have none.
        fn contained_of(resource: &R4Resource) -> &[R4Resource] {
            match resource {
                $(R4Resource::$name(r) => &r.contained,)*
                _ => &[],
            }
        }
    };
}
for_each_domain_resource_type!(dispatch_domain);

/// The text with its XML declaration's encoding spelt `UTF-8`: encoding names are
/// case-insensitive (`utf-8` is common), fhirbolt accepts only the upper-case spelling, and a
/// body is UTF-8 once it has been read as a `str`.
fn utf8_declaration(text: &str) -> std::borrow::Cow<'_, str> {
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let Some(end) = start.strip_prefix("<?xml").and_then(|_| start.find("?>")) else {
        return text.into();
    };
    let declaration = &start[..end];
    let lower = declaration.to_ascii_lowercase();
    if !lower.contains("utf-8") || declaration.contains("UTF-8") {
        return text.into();
    }
    let at = lower.find("utf-8").unwrap_or_default();
    let offset = text.len() - start.len();
    let mut fixed = text.to_owned();
    fixed.replace_range(offset + at..offset + at + 5, "UTF-8");
    fixed.into()
}

impl Resource {
    /// Parses a body in `format`, rejecting unknown elements, wrong primitive types and nesting
    /// deeper than the limits allow.
    pub fn parse(
        body: &[u8],
        format: Format,
        limits: &ParseLimits,
    ) -> Result<Resource, ParseError> {
        match format {
            Format::Json => Resource::from_json(body, limits),
            Format::Xml => Resource::from_xml(body, limits),
        }
    }

    /// Parses FHIR JSON.
    pub fn from_json(body: &[u8], limits: &ParseLimits) -> Result<Resource, ParseError> {
        check_json_depth(body, limits.max_depth)?;
        match strict_json(body) {
            Ok(inner) => Resource::checked(inner),
            Err(message) => Err(locate::diagnose_json(body, &message)),
        }
    }

    /// Parses FHIR XML. The XHTML of narratives is carried over byte for byte.
    pub fn from_xml(body: &[u8], limits: &ParseLimits) -> Result<Resource, ParseError> {
        let text = std::str::from_utf8(body)
            .map_err(|e| ParseError::new(format!("body is not UTF-8: {e}")))?;
        let text = utf8_declaration(text);
        let (text, divs) = narrative::extract_xml_divs(&text, limits.max_depth)?;
        let inner = guarded(|| fhirbolt::serde::xml::from_str::<R4Resource>(&text, Some(STRICT)))
            .map_err(|e| ParseError::new(format!("invalid FHIR XML: {e}")))?;
        // fhirbolt's XML reader lets required elements be missing, and decimals that are no
        // numbers through, where its JSON reader does not: read back through JSON, so both
        // formats accept the same resources.
        let invalid = |e: &dyn std::fmt::Display| ParseError::new(format!("invalid FHIR XML: {e}"));
        let json = fhirbolt::serde::json::to_string(&inner, None).map_err(|e| invalid(&e))?;
        let mut value: serde_json::Value = serde_json::from_str(&json).map_err(|e| invalid(&e))?;
        narrative::restore_divs(&mut value, &divs);
        let inner = read_value(&value).map_err(|e| invalid(&e))?;
        Resource::checked(inner)
    }

    fn checked(inner: R4Resource) -> Result<Resource, ParseError> {
        let resource = Resource { inner };
        if let Some(id) = resource.id() {
            if !is_valid_id(id) {
                let path = format!("{}.id", resource.resource_type());
                return Err(ParseError::at(format!("invalid resource id '{id}'"), path));
            }
        }
        Ok(resource)
    }

    /// Violations of the base invariants on contained resources: dom-2 (no nested contained),
    /// dom-4 (no `meta.versionId`/`meta.lastUpdated`) and dom-5 (no `meta.security`).
    pub fn invariant_violations(&self) -> Vec<ParseError> {
        let mut violations = Vec::new();
        for (i, contained) in contained_of(&self.inner).iter().enumerate() {
            let path = format!("{}.contained[{i}]", self.resource_type());
            if !contained_of(contained).is_empty() {
                violations.push(ParseError::at(
                    "dom-2: a contained resource must not contain resources",
                    format!("{path}.contained"),
                ));
            }
            if let Some(meta) = contained.meta() {
                if meta.version_id.is_some() || meta.last_updated.is_some() {
                    let message = "dom-4: a contained resource must not have meta.versionId or meta.lastUpdated";
                    violations.push(ParseError::at(message, format!("{path}.meta")));
                }
                if !meta.security.is_empty() {
                    let message = "dom-5: a contained resource must not have security labels";
                    violations.push(ParseError::at(message, format!("{path}.meta.security")));
                }
            }
        }
        violations
    }

    /// The resource type name, e.g. `Observation`.
    pub fn resource_type(&self) -> &'static str {
        type_name(&self.inner)
    }

    /// The logical id, if the resource has one.
    pub fn id(&self) -> Option<&str> {
        self.inner.id().and_then(|id| id.value.as_deref())
    }

    /// Sets the logical id, or removes it.
    pub fn set_id(&mut self, id: Option<&str>) {
        if let Some((slot, _)) = id_and_meta(&mut self.inner) {
            *slot = id.map(|id| Id {
                value: Some(id.to_owned()),
                ..Default::default()
            });
        }
    }

    /// Writes the server-owned `meta.versionId` and `meta.lastUpdated`, keeping the rest of `meta`.
    pub fn set_version(&mut self, version_id: &str, last_updated: &str) {
        if let Some((_, meta)) = id_and_meta(&mut self.inner) {
            let meta = meta.get_or_insert_with(Default::default);
            meta.version_id = Some(Id {
                value: Some(version_id.to_owned()),
                ..Default::default()
            });
            meta.last_updated = Some(Instant {
                value: Some(last_updated.to_owned()),
                ..Default::default()
            });
        }
    }

    /// Canonical JSON: compact, elements in specification order.
    pub fn to_json(&self) -> String {
        // fhirbolt fails on a decimal that is not a number, which only its XML reader lets in
        // and `from_xml` refuses, and on writer I/O errors, which a String never raises.
        fhirbolt::serde::json::to_string(&self.inner, None).expect("serializing to a String")
    }

    /// Serializes to FHIR XML, narratives byte for byte as stored.
    pub fn to_xml(&self) -> String {
        let mut value = self.to_value();
        let divs = narrative::take_json_divs(&mut value);
        let xml = fhirbolt::serde::xml::to_string(&from_value(&value), None)
            .expect("serializing to a String");
        narrative::put_xml_divs(xml, &divs)
    }

    /// The resource as a JSON value (elements in specification order, decimals lexical).
    pub fn to_value(&self) -> serde_json::Value {
        self.to_json_and_value().1
    }

    /// [`Resource::to_json`] and [`Resource::to_value`] from one serialisation.
    pub fn to_json_and_value(&self) -> (String, serde_json::Value) {
        let json = self.to_json();
        let value = serde_json::from_str(&json).expect("fhirbolt writes valid JSON");
        (json, value)
    }
}

/// fhirbolt's strict JSON parse, its error as text.
pub(crate) fn strict_json(body: &[u8]) -> Result<R4Resource, String> {
    guarded(|| fhirbolt::serde::json::from_slice::<R4Resource>(body, Some(STRICT)))
}

/// Runs a fhirbolt deserialization, turning its panics on some malformed inputs into errors.
fn guarded<E: ToString>(
    parse: impl FnOnce() -> Result<R4Resource, E>,
) -> Result<R4Resource, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("malformed resource (the FHIR parser could not read it)".to_owned()),
    }
}

/// Reads back a value that was written from a valid resource and changed only in narrative divs.
/// Goes through bytes because fhirbolt's `from_json_value` panics on some inputs.
fn from_value(value: &serde_json::Value) -> R4Resource {
    let bytes = serde_json::to_vec(value).expect("serializing a value");
    fhirbolt::serde::json::from_slice(&bytes, None).expect("a resource fhirbolt wrote reads back")
}

/// A resource from its JSON value, strictly, as a JSON body would be read.
fn read_value(value: &serde_json::Value) -> Result<R4Resource, String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    guarded(|| fhirbolt::serde::json::from_slice::<R4Resource>(&bytes, Some(STRICT)))
}

/// Rejects JSON nested deeper than `max_depth` before any recursive parser sees it.
fn check_json_depth(body: &[u8], max_depth: usize) -> Result<(), ParseError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ParseError::new(format!(
                        "JSON nested deeper than {max_depth} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Resource, ParseError> {
        Resource::from_json(json.as_bytes(), &ParseLimits::default())
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("a-B.9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id(&"x".repeat(65)));
    }

    #[test]
    fn resource_types() {
        assert_eq!(resource_type("Observation"), Some("Observation"));
        assert_eq!(resource_type("observation"), None);
        assert_eq!(RESOURCE_TYPES.len(), 146);
    }

    #[test]
    fn sets_server_owned_meta_and_keeps_the_rest() {
        let mut r =
            parse(r#"{"resourceType":"Patient","meta":{"profile":["http://x/p"]},"active":true}"#)
                .unwrap();
        r.set_id(Some("p1"));
        r.set_version("3", "2026-01-02T03:04:05.123456Z");
        assert_eq!(
            r.to_json(),
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2026-01-02T03:04:05.123456Z","profile":["http://x/p"]},"active":true}"#
        );
    }

    #[test]
    fn rejects_bad_input_with_paths() {
        let check = |json: &str, path: &str| {
            let error = parse(json).unwrap_err();
            assert_eq!(error.path.as_deref(), Some(path), "{error}");
        };
        check(r#"{"resourceType":"Patient","foo":1}"#, "Patient.foo");
        check(
            r#"{"resourceType":"Patient","active":"yes"}"#,
            "Patient.active",
        );
        check(
            r#"{"resourceType":"Patient","name":[{"given":["a"]},{"given":["a",3]}]}"#,
            "Patient.name[1].given[1]",
        );
        check(
            r#"{"resourceType":"Patient","contact":[{"name":{"family":"x","bogus":true}}]}"#,
            "Patient.contact[0].name.bogus",
        );
        check(r#"{"resourceType":"Patient","id":"a b"}"#, "Patient.id");
        check(
            r#"{"resourceType":"Observation","code":{"text":"x"}}"#,
            "Observation.status",
        );
    }

    #[test]
    fn rejects_unknown_types_syntax_and_depth() {
        assert_eq!(
            parse(r#"{"resourceType":"Nope"}"#)
                .unwrap_err()
                .path
                .as_deref(),
            Some("resourceType")
        );
        assert!(parse(r#"{"resourceType":"Patient","#)
            .unwrap_err()
            .message
            .contains("line 1"));
        let deep = format!(
            r#"{{"resourceType":"Patient","extension":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn contained_resources_follow_the_dom_invariants() {
        let check = |contained: &str, expected: &[&str]| {
            let json = format!(r#"{{"resourceType":"Patient","contained":[{contained}]}}"#);
            let violations = parse(&json).unwrap().invariant_violations();
            let found: Vec<&str> = violations.iter().map(|v| &v.message[..5]).collect();
            assert_eq!(found, expected, "{contained}");
        };
        check(
            r#"{"resourceType":"Organization","id":"o","name":"x"}"#,
            &[],
        );
        check(
            r#"{"resourceType":"Organization","id":"o","contained":[{"resourceType":"Organization"}]}"#,
            &["dom-2"],
        );
        check(
            r#"{"resourceType":"Organization","id":"o","meta":{"versionId":"1"}}"#,
            &["dom-4"],
        );
        check(
            r#"{"resourceType":"Organization","id":"o","meta":{"security":[{"code":"R"}]}}"#,
            &["dom-5"],
        );
        assert!(parse(r#"{"resourceType":"Bundle","type":"collection"}"#)
            .unwrap()
            .invariant_violations()
            .is_empty());
    }

    #[test]
    fn an_xml_declaration_may_spell_utf_8_in_lower_case() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Patient xmlns=\"http://hl7.org/fhir\"><id value=\"p1\"/></Patient>";
        let patient = Resource::from_xml(xml.as_bytes(), &ParseLimits::default()).unwrap();
        assert_eq!(patient.id(), Some("p1"));
    }

    #[test]
    fn xml_round_trip_keeps_narrative_whitespace() {
        let json = r#"{"resourceType":"Patient","id":"x","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">\n  <b>A</b> (&quot;B&quot;) <!-- c --></div>"},"active":true}"#;
        let r = parse(json).unwrap();
        let xml = r.to_xml();
        let back = Resource::from_xml(xml.as_bytes(), &ParseLimits::default()).unwrap();
        assert_eq!(back.to_json(), json);
    }

    /// Found by the `resource_xml` fuzz target: with a narrative, the second read panicked.
    #[test]
    fn xml_missing_a_required_element_is_refused_as_json_is() {
        let div = r#"<text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml">x</div></text>"#;
        for narrative in ["", div] {
            let xml = format!(
                r#"<Observation xmlns="http://hl7.org/fhir">{narrative}<status vuale="final"/><code><text value="puls"/></code></Observation>"#
            );
            let refused = Resource::from_xml(xml.as_bytes(), &ParseLimits::default());
            assert!(
                refused.is_err(),
                "{narrative}: {:?}",
                refused.map(|r| r.to_json())
            );
        }
    }

    /// Found by the `resource_xml` fuzz target: fhirbolt's XML reader keeps any text as a
    /// decimal, and writing it out panicked.
    #[test]
    fn xml_decimal_that_is_no_number_is_refused() {
        let observation = |value: &str| {
            format!(
                r#"<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="vekt"/></code><valueQuantity><value value="{value}"/></valueQuantity></Observation>"#
            )
        };
        for bad in ["min", "", "1,5", "NaN", "0x10", "1.2.3"] {
            let refused = Resource::from_xml(observation(bad).as_bytes(), &ParseLimits::default());
            assert!(
                refused.is_err(),
                "{bad}: {:?}",
                refused.map(|r| r.to_json())
            );
        }
        for good in ["72.50", "-0.5", "0"] {
            let read = Resource::from_xml(observation(good).as_bytes(), &ParseLimits::default())
                .unwrap_or_else(|e| panic!("{good}: {e}"));
            assert!(
                read.to_json().contains(&format!(r#""value":{good}"#)),
                "{good}"
            );
            assert!(read
                .to_xml()
                .contains(&format!(r#"<value value="{good}"/>"#)));
        }
    }
}
