//! The items FHIRPath collections hold: elements of the input (FHIR JSON with their R4 type) and
//! the system values (Boolean, Integer, Decimal, String, Date, DateTime, Time, Quantity).

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::temporal::{Temporal, TemporalKind};

/// One item of a collection.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    Node(Node<'a>),
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(String),
    Temporal(Temporal),
    Quantity(Decimal, String),
    /// What `type()` returns: a namespace (`System`, `FHIR`) and a name.
    TypeInfo(&'static str, String),
}

/// An element of the input: its JSON, its primitive companion (`_name`, holding `id` and
/// `extension`), and its FHIR type.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub json: Option<&'a Json>,
    pub companion: Option<&'a Json>,
    /// The FHIR type (`date`, `HumanName`, `Observation`, `BackboneElement`); empty when the
    /// definitions do not know the element.
    pub type_code: &'a str,
    /// Where the children are defined: a type name, or the path of an inline structure.
    pub structure: &'a str,
}

impl<'a> Node<'a> {
    /// A resource (top level or contained): typed by its `resourceType`.
    pub fn resource(json: &'a Json) -> Node<'a> {
        let type_code = json["resourceType"].as_str().unwrap_or("");
        Node {
            json: Some(json),
            companion: None,
            type_code,
            structure: type_code,
        }
    }

    pub fn is_primitive(&self) -> bool {
        !matches!(self.json, Some(Json::Object(_)))
    }
}

const INTEGER_TYPES: [&str; 3] = ["integer", "positiveInt", "unsignedInt"];

impl<'a> Value<'a> {
    /// The system value of a FHIR primitive or Quantity; other nodes stay nodes.
    pub fn system(&self) -> Value<'a> {
        let Value::Node(node) = self else {
            return self.clone();
        };
        match node.json {
            Some(Json::Bool(b)) => Value::Boolean(*b),
            Some(Json::Number(n)) => {
                let text = n.to_string();
                if INTEGER_TYPES.contains(&node.type_code)
                    || (node.type_code.is_empty() && !text.contains(['.', 'e', 'E']))
                {
                    text.parse()
                        .map(Value::Integer)
                        .unwrap_or_else(|_| self.clone())
                } else {
                    text.parse::<Decimal>()
                        .or_else(|_| Decimal::from_scientific(&text))
                        .map(Value::Decimal)
                        .unwrap_or_else(|_| self.clone())
                }
            }
            Some(Json::String(s)) => {
                let kind = match node.type_code {
                    "date" => Some(TemporalKind::Date),
                    "dateTime" | "instant" => Some(TemporalKind::DateTime),
                    "time" => Some(TemporalKind::Time),
                    _ => None,
                };
                match kind.and_then(|k| Temporal::parse(s, k)) {
                    Some(t) => Value::Temporal(t),
                    None => Value::String(s.clone()),
                }
            }
            Some(Json::Object(map))
                if fjord_definitions::is_subtype(node.type_code, "Quantity") =>
            {
                let value = map
                    .get("value")
                    .and_then(|v| v.as_number())
                    .and_then(|n| n.to_string().parse::<Decimal>().ok());
                let unit = map
                    .get("code")
                    .or_else(|| map.get("unit"))
                    .and_then(Json::as_str)
                    .unwrap_or("1");
                match value {
                    Some(v) => Value::Quantity(v, unit.to_owned()),
                    None => self.clone(),
                }
            }
            _ => self.clone(),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.system() {
            Value::Boolean(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_string(&self) -> Option<String> {
        match self.system() {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self.system() {
            Value::Integer(i) => Some(i),
            _ => None,
        }
    }

    /// The value as text, as `toString()` gives it.
    pub fn to_text(&self) -> Option<String> {
        Some(match self.system() {
            Value::Boolean(b) => b.to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Decimal(d) => d.to_string(),
            Value::String(s) => s,
            Value::Temporal(t) => t.to_string(),
            Value::Quantity(v, unit) => {
                if crate::parser::is_calendar_unit(&unit) {
                    format!("{v} {unit}")
                } else {
                    format!("{v} '{unit}'")
                }
            }
            Value::Node(_) | Value::TypeInfo(..) => return None,
        })
    }

    /// The name of the item's type (`FHIR.date`, `System.Integer`).
    pub fn type_name(&self) -> (&'static str, String) {
        match self {
            Value::Node(n) if n.type_code.starts_with("System.") => {
                ("System", n.type_code["System.".len()..].to_owned())
            }
            Value::Node(n) => ("FHIR", n.type_code.to_owned()),
            Value::TypeInfo(..) => ("System", "TypeInfo".into()),
            Value::Boolean(_) => ("System", "Boolean".into()),
            Value::Integer(_) => ("System", "Integer".into()),
            Value::Decimal(_) => ("System", "Decimal".into()),
            Value::String(_) => ("System", "String".into()),
            Value::Quantity(..) => ("System", "Quantity".into()),
            Value::Temporal(t) => (
                "System",
                match t.kind {
                    TemporalKind::Date => "Date",
                    TemporalKind::DateTime => "DateTime",
                    TemporalKind::Time => "Time",
                }
                .into(),
            ),
        }
    }
}

/// `=` on two items: `None` when the answer is unknown (dates of different precision).
pub fn equal(a: &Value, b: &Value) -> Option<bool> {
    match (a.system(), b.system()) {
        (Value::Node(x), Value::Node(y)) => Some(x.json == y.json),
        (Value::Integer(x), Value::Decimal(y)) | (Value::Decimal(y), Value::Integer(x)) => {
            Some(Decimal::from(x) == y)
        }
        // A calendar year or month is not UCUM's `a` or `mo` (365.25 days, a twelfth of that).
        (Value::Quantity(_, u), Value::Quantity(_, v))
            if crate::units::calendar_against_ucum(&u, &v) =>
        {
            None
        }
        (x, y) => match compare(&x, &y) {
            Some(order) => Some(order == Ordering::Equal),
            None => match (&x, &y) {
                (Value::Temporal(a), Value::Temporal(b))
                    if (a.kind == TemporalKind::Time) != (b.kind == TemporalKind::Time) =>
                {
                    Some(false)
                }
                (Value::Temporal(_), Value::Temporal(_)) => None,
                _ => Some(false),
            },
        },
    }
}

/// `~` on two items: case- and whitespace-insensitive strings, decimals at the lesser
/// precision, unequal for dates of different precision.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    match (a.system(), b.system()) {
        (Value::String(x), Value::String(y)) => normalize(&x) == normalize(&y),
        (Value::Decimal(x), Value::Decimal(y)) => {
            let scale = x.scale().min(y.scale());
            x.round_dp(scale) == y.round_dp(scale)
        }
        (Value::Integer(x), Value::Decimal(y)) | (Value::Decimal(y), Value::Integer(x)) => {
            Decimal::from(x) == y.round_dp(0)
        }
        (Value::Node(x), Value::Node(y)) => x.json == y.json,
        (Value::Quantity(x, u), Value::Quantity(y, v)) => {
            // At the precision of the less precise value, after conversion to one unit.
            let scale = x.scale().min(y.scale());
            let (x, u) = crate::units::canonical(x, &u);
            let (y, v) = crate::units::canonical(y, &v);
            u == v && x.round_dp(scale) == y.round_dp(scale)
        }
        (x, y) => equal(&x, &y).unwrap_or(false),
    }
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Ordering of two comparable items; `None` when they cannot be ordered.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a.system(), b.system()) {
        (Value::Integer(x), Value::Integer(y)) => Some(x.cmp(&y)),
        (Value::Decimal(x), Value::Decimal(y)) => Some(x.cmp(&y)),
        (Value::Integer(x), Value::Decimal(y)) => Some(Decimal::from(x).cmp(&y)),
        (Value::Decimal(x), Value::Integer(y)) => Some(x.cmp(&Decimal::from(y))),
        (Value::String(x), Value::String(y)) => Some(x.cmp(&y)),
        (Value::Boolean(x), Value::Boolean(y)) => Some(x.cmp(&y)),
        (Value::Temporal(x), Value::Temporal(y)) => {
            let comparable =
                x.kind == y.kind || (x.kind != TemporalKind::Time && y.kind != TemporalKind::Time);
            if comparable {
                x.compare(&y)
            } else {
                None
            }
        }
        (Value::Quantity(x, u), Value::Quantity(y, v)) => {
            let (x, u) = crate::units::canonical(x, &u);
            let (y, v) = crate::units::canonical(y, &v);
            (u == v).then(|| x.cmp(&y))
        }
        _ => None,
    }
}
