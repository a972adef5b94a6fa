//! The `toX()`/`convertsToX()` conversions between system types.

use rust_decimal::Decimal;

use crate::eval::{boolean, Collection};
use crate::temporal::{Temporal, TemporalKind};
use crate::value::Value;

pub(crate) fn converts<'a>(
    item: Option<Value<'a>>,
    f: impl Fn(Value<'a>) -> Option<Value<'a>>,
) -> Collection<'a> {
    match item {
        None => Vec::new(),
        Some(item) => boolean(f(item).is_some()),
    }
}

pub(crate) fn to_boolean<'a>(value: Value<'a>) -> Option<Value<'a>> {
    Some(Value::Boolean(match value.system() {
        Value::Boolean(b) => b,
        Value::Integer(1) => true,
        Value::Integer(0) => false,
        Value::Decimal(d) if d == Decimal::ONE => true,
        Value::Decimal(d) if d.is_zero() => false,
        Value::String(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => true,
            "false" | "f" | "no" | "n" | "0" | "0.0" => false,
            _ => return None,
        },
        _ => return None,
    }))
}

pub(crate) fn to_integer<'a>(value: Value<'a>) -> Option<Value<'a>> {
    match value.system() {
        Value::Integer(i) => Some(Value::Integer(i)),
        Value::Boolean(b) => Some(Value::Integer(i64::from(b))),
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok().map(Value::Integer))
                .flatten()
        }
        _ => None,
    }
}

pub(crate) fn to_decimal<'a>(value: Value<'a>) -> Option<Value<'a>> {
    match value.system() {
        Value::Integer(i) => Some(Value::Decimal(i.into())),
        Value::Decimal(d) => Some(Value::Decimal(d)),
        Value::Boolean(b) => Some(Value::Decimal(if b { Decimal::ONE } else { Decimal::ZERO })),
        Value::String(s) => {
            let body = s.strip_prefix(['+', '-']).unwrap_or(&s);
            let valid = !body.is_empty()
                && body.split('.').count() <= 2
                && body
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            valid.then(|| s.parse().ok().map(Value::Decimal)).flatten()
        }
        _ => None,
    }
}

pub(crate) fn to_temporal<'a>(value: Value<'a>, kind: TemporalKind) -> Option<Value<'a>> {
    match value.system() {
        Value::Temporal(t) if t.kind == kind => Some(Value::Temporal(t)),
        Value::Temporal(mut t) if t.kind != TemporalKind::Time && kind != TemporalKind::Time => {
            t.kind = kind;
            if kind == TemporalKind::Date {
                t.precision = t.precision.min(3);
                t.offset = None;
            }
            Some(Value::Temporal(t))
        }
        Value::String(s) => Temporal::parse(&s, kind).map(Value::Temporal),
        _ => None,
    }
}

pub(crate) fn to_quantity<'a>(value: Value<'a>) -> Option<Value<'a>> {
    match value.system() {
        q @ Value::Quantity(..) => Some(q),
        Value::Boolean(b) => Some(Value::Quantity(Decimal::from(u8::from(b)), "1".into())),
        Value::Integer(i) => Some(Value::Quantity(i.into(), "1".into())),
        Value::Decimal(d) => Some(Value::Quantity(d, "1".into())),
        Value::String(s) => {
            let (number, unit) = match s.split_once(' ') {
                Some((n, u)) => (n, u.trim()),
                None => (s.as_str(), "'1'"),
            };
            let value: Decimal = number.parse().ok()?;
            let unit = match unit.strip_prefix('\'').and_then(|u| u.strip_suffix('\'')) {
                Some(ucum) => ucum.to_owned(),
                None if crate::parser::is_calendar_unit(unit) => unit.to_owned(),
                None => return None,
            };
            Some(Value::Quantity(value, unit))
        }
        _ => None,
    }
}
