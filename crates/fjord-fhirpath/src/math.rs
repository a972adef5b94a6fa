//! Numeric functions (`abs()` … `power()`, `lowBoundary()`/`highBoundary()` of decimals) and the
//! clock (`now()`, `today()`, `timeOfDay()`).

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, MathematicalOps, RoundingStrategy};

use crate::eval::Collection;
use crate::temporal::{Temporal, TemporalKind};
use crate::value::Value;
use crate::EvalError;

/// The least (`high` false) or greatest value a decimal stands for, given the precision it was
/// written with, to `digits` decimal places (8 by default; beyond 28, none).
pub(crate) fn decimal_boundary(value: Decimal, digits: Option<i64>, high: bool) -> Option<Decimal> {
    let digits = digits.unwrap_or(8);
    if !(0..=28).contains(&digits) {
        return None;
    }
    // A value written to all 28 places stands for itself.
    let half = Decimal::try_new(5, value.scale() + 1).unwrap_or(Decimal::ZERO);
    let bound = if high {
        value.checked_add(half)?
    } else {
        value.checked_sub(half)?
    };
    let digits = digits as u32;
    let mut result = if digits < bound.scale() {
        let strategy = if high {
            RoundingStrategy::ToPositiveInfinity
        } else {
            RoundingStrategy::ToNegativeInfinity
        };
        bound.round_dp_with_strategy(digits, strategy)
    } else {
        bound
    };
    result.rescale(digits);
    Some(result)
}

pub(crate) fn math<'a>(
    name: &str,
    item: Option<Value<'a>>,
    arg: impl Fn(usize) -> Result<Option<Value<'a>>, EvalError>,
) -> Result<Collection<'a>, EvalError> {
    let Some(item) = item.map(|v| v.system()) else {
        return Ok(Vec::new());
    };
    let value = match &item {
        Value::Integer(i) => Decimal::from(*i),
        Value::Decimal(d) => *d,
        Value::Quantity(d, _) => *d,
        _ => return Err(EvalError::Type(format!("{name}() needs a number"))),
    };
    let integer = |d: Decimal| d.to_i64().map(Value::Integer);
    let decimal = |d: Option<Decimal>| d.map(Value::Decimal);
    let result = match name {
        "abs" => match item {
            Value::Integer(i) => i.checked_abs().map(Value::Integer),
            Value::Quantity(d, u) => Some(Value::Quantity(d.abs(), u)),
            _ => Some(Value::Decimal(value.abs())),
        },
        "ceiling" => integer(value.ceil()),
        "floor" => integer(value.floor()),
        "truncate" => integer(value.trunc()),
        "sqrt" => decimal(value.sqrt()),
        "exp" => decimal(value.checked_exp()),
        "ln" => decimal(value.checked_ln()),
        "round" => {
            let digits = arg(0)
                .ok()
                .flatten()
                .and_then(|v| v.as_integer())
                .unwrap_or(0);
            Some(Value::Decimal(value.round_dp_with_strategy(
                digits.max(0) as u32,
                RoundingStrategy::MidpointAwayFromZero,
            )))
        }
        "log" => {
            let base = arg(0)?.and_then(|v| match v.system() {
                Value::Integer(i) => Some(Decimal::from(i)),
                Value::Decimal(d) => Some(d),
                _ => None,
            });
            base.and_then(|b| value.checked_ln()?.checked_div(b.checked_ln()?))
                .map(|d| Value::Decimal(d.round_dp(8).normalize()))
        }
        _ => {
            let exponent = arg(0)?.map(|v| v.system());
            match (&item, exponent) {
                (Value::Integer(i), Some(Value::Integer(e))) if e >= 0 => {
                    i.checked_pow(e as u32).map(Value::Integer)
                }
                (_, Some(Value::Integer(e))) => value.checked_powi(e).map(Value::Decimal),
                (_, Some(Value::Decimal(e))) => {
                    let result = value.to_f64().zip(e.to_f64()).map(|(b, e)| b.powf(e));
                    result
                        .filter(|r| r.is_finite())
                        .and_then(Decimal::from_f64)
                        .map(Value::Decimal)
                }
                _ => None,
            }
        }
    };
    Ok(result.into_iter().collect())
}

pub(crate) fn now(kind: TemporalKind) -> Temporal {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut t = Temporal {
        kind: TemporalKind::DateTime,
        parts: [1970, 1, 1, 0, 0, 0, 0],
        precision: 7,
        offset: Some(0),
    };
    t = t.add(Decimal::from(since_epoch), "ms").unwrap_or(t);
    match kind {
        TemporalKind::Date => Temporal {
            kind,
            precision: 3,
            offset: None,
            ..t
        },
        TemporalKind::Time => Temporal {
            kind,
            offset: None,
            ..t
        },
        TemporalKind::DateTime => t,
    }
}
