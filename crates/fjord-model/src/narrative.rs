//! Narrative XHTML carried byte for byte between JSON and XML.
//!
//! fhirbolt trims text nodes while reading and writing XML, which drops meaningful whitespace inside
//! `Narrative.div` (`<b>A</b> (B)` becomes `<b>A</b>(B)`). Fjord therefore moves every div past
//! fhirbolt as an opaque placeholder and puts the original markup back afterwards.

use serde_json::Value;

use crate::ParseError;

const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";
/// Private-use characters cannot occur by accident in a placeholder's neighbourhood.
const MARK: char = '\u{E000}';

fn placeholder_div(n: usize) -> String {
    format!(r#"<div xmlns="{XHTML_NS}">{MARK}{n}{MARK}</div>"#)
}

fn placeholder_index(text: &str) -> Option<usize> {
    let start = text.find(MARK)? + MARK.len_utf8();
    let len = text[start..].find(MARK)?;
    text[start..start + len].parse().ok()
}

/// Replaces every XHTML `div` element of an XML document by a placeholder and returns the
/// originals, checking element nesting against `max_depth` on the way.
pub(crate) fn extract_xml_divs(
    xml: &str,
    max_depth: usize,
) -> Result<(String, Vec<String>), ParseError> {
    let mut out = String::with_capacity(xml.len());
    let mut divs = Vec::new();
    let mut depth = 0usize;
    let mut cursor = 0;
    while let Some(offset) = xml[cursor..].find('<') {
        let start = cursor + offset;
        let end = tag_end(xml, start)?;
        let tag = &xml[start..end];
        if tag.starts_with("<div") && tag.contains(XHTML_NS) {
            let close = matching_div_end(xml, start, end)?;
            out.push_str(&xml[cursor..start]);
            out.push_str(&placeholder_div(divs.len()));
            divs.push(xml[start..close].to_owned());
            cursor = close;
            continue;
        }
        if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
        } else if !tag.starts_with("<?") && !tag.starts_with("<!") && !tag.ends_with("/>") {
            depth += 1;
            if depth > max_depth {
                return Err(ParseError::new(format!(
                    "XML nested deeper than {max_depth} levels"
                )));
            }
        }
        out.push_str(&xml[cursor..end]);
        cursor = end;
    }
    out.push_str(&xml[cursor..]);
    Ok((out, divs))
}

/// The index just past the `>` closing the markup that starts at `start`.
fn tag_end(xml: &str, start: usize) -> Result<usize, ParseError> {
    let rest = &xml[start..];
    let unterminated = || ParseError::new("invalid FHIR XML: unterminated markup");
    if rest.starts_with("<!--") {
        return rest
            .find("-->")
            .map(|i| start + i + 3)
            .ok_or_else(unterminated);
    }
    if rest.starts_with("<![CDATA[") {
        return rest
            .find("]]>")
            .map(|i| start + i + 3)
            .ok_or_else(unterminated);
    }
    let mut quote = None;
    for (i, c) in rest.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Ok(start + i + 1),
            _ => {}
        }
    }
    Err(unterminated())
}

/// The index just past the `</div>` that closes the div whose start tag spans `start..tag_end`.
fn matching_div_end(xml: &str, start: usize, tag_end_at: usize) -> Result<usize, ParseError> {
    if xml[start..tag_end_at].ends_with("/>") {
        return Ok(tag_end_at);
    }
    let mut depth = 1;
    let mut cursor = tag_end_at;
    while let Some(offset) = xml[cursor..].find('<') {
        let at = cursor + offset;
        let end = tag_end(xml, at)?;
        let tag = &xml[at..end];
        let is_div = |t: &str| t.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/');
        if let Some(rest) = tag.strip_prefix("</div") {
            if is_div(rest) {
                depth -= 1;
                if depth == 0 {
                    return Ok(end);
                }
            }
        } else if let Some(rest) = tag.strip_prefix("<div") {
            if is_div(rest) && !tag.ends_with("/>") {
                depth += 1;
            }
        }
        cursor = end;
    }
    Err(ParseError::new(
        "invalid FHIR XML: narrative div is not closed",
    ))
}

/// Puts the original divs back into a JSON value produced from placeholder XML.
pub(crate) fn restore_divs(value: &mut Value, divs: &[String]) {
    walk_divs(value, &mut |div| {
        if let Some(original) = placeholder_index(div).and_then(|n| divs.get(n)) {
            *div = original.clone();
        }
    });
}

/// Replaces every narrative div of a JSON value by a placeholder and returns the originals.
pub(crate) fn take_json_divs(value: &mut Value) -> Vec<String> {
    let mut divs = Vec::new();
    walk_divs(value, &mut |div| {
        let placeholder = placeholder_div(divs.len());
        divs.push(std::mem::replace(div, placeholder));
    });
    divs
}

/// Puts the original divs back into XML written from placeholders.
pub(crate) fn put_xml_divs(mut xml: String, divs: &[String]) -> String {
    for (n, original) in divs.iter().enumerate() {
        let mark = format!("{MARK}{n}{MARK}");
        let Some(at) = xml.find(&mark) else { continue };
        let (Some(open), Some(close)) = (xml[..at].rfind("<div"), xml[at..].find("</div>")) else {
            continue;
        };
        xml.replace_range(open..at + close + "</div>".len(), original);
    }
    xml
}

/// `Narrative.div` is the only element named `div` in R4.
fn walk_divs(value: &mut Value, f: &mut impl FnMut(&mut String)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(div) if key == "div" => f(div),
                    _ => walk_divs(child, f),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| walk_divs(item, f)),
        _ => {}
    }
}
