/// A wire format of FHIR resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// The FHIR media type of the format.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Json => "application/fhir+json",
            Format::Xml => "application/fhir+xml",
        }
    }

    /// The format named by a media type (parameters such as `charset` ignored) or by a `_format`
    /// value (`json`, `xml`, or a media type).
    pub fn from_mime(mime: &str) -> Option<Format> {
        let essence = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/fhir+json"
            | "application/json"
            | "application/json+fhir"
            | "json"
            | "text/json" => Some(Format::Json),
            "application/fhir+xml"
            | "application/xml"
            | "application/xml+fhir"
            | "xml"
            | "text/xml" => Some(Format::Xml),
            _ => None,
        }
    }
}
