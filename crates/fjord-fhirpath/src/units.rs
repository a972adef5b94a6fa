//! Just enough UCUM to compare quantities in common units, including those of home measurements:
//! a value in a known unit becomes a value in that dimension's base unit; unknown units stay as
//! they are (and compare only to themselves). Search indexing uses the same table.

use rust_decimal::Decimal;

/// (unit, base unit, factor to the base unit)
const FACTORS: &[(&str, &str, i64, u32)] = &[
    // (unit, base, mantissa, scale): factor = mantissa / 10^scale
    ("g", "g", 1, 0),
    ("kg", "g", 1000, 0),
    ("mg", "g", 1, 3),
    ("ug", "g", 1, 6),
    ("m", "m", 1, 0),
    ("cm", "m", 1, 2),
    ("mm", "m", 1, 3),
    ("[lb_av]", "g", 45_359_237, 5),
    ("km", "m", 1000, 0),
    ("[in_i]", "m", 254, 4),
    ("L", "L", 1, 0),
    ("l", "L", 1, 0),
    ("dL", "L", 1, 1),
    ("mL", "L", 1, 3),
    ("ms", "s", 1, 3),
    ("s", "s", 1, 0),
    ("min", "s", 60, 0),
    ("h", "s", 3600, 0),
    ("d", "s", 86_400, 0),
    ("wk", "s", 604_800, 0),
    ("mmol/L", "mmol/L", 1, 0),
    ("mm[Hg]", "mm[Hg]", 1, 0),
    ("kPa", "mm[Hg]", 750_061_683, 8),
    ("Cel", "Cel", 1, 0),
    ("%", "%", 1, 0),
    ("/min", "/min", 1, 0),
    ("{beats}/min", "/min", 1, 0),
];

/// FHIRPath's calendar duration keywords that equal a UCUM unit (years and months do not: a
/// calendar year is not 365.25 days).
fn calendar_to_ucum(unit: &str) -> &str {
    match unit {
        "second" | "seconds" => "s",
        "millisecond" | "milliseconds" => "ms",
        "minute" | "minutes" => "min",
        "hour" | "hours" => "h",
        "day" | "days" => "d",
        "week" | "weeks" => "wk",
        "year" | "years" => "year",
        "month" | "months" => "month",
        other => other,
    }
}

/// Whether one unit is a calendar year or month and the other UCUM's year or month.
pub fn calendar_against_ucum(u: &str, v: &str) -> bool {
    let calendar = |u: &str| matches!(u, "year" | "years" | "month" | "months");
    let ucum = |u: &str| matches!(u, "a" | "mo");
    (calendar(u) && ucum(v)) || (ucum(u) && calendar(v))
}

/// A UCUM quantity in its dimension's base unit (`70 kg` → `70000 g`); `None` for a unit not in
/// the table. Beyond a decimal's range the value saturates.
pub fn ucum_canonical(value: Decimal, code: &str) -> Option<(Decimal, String)> {
    FACTORS
        .iter()
        .find(|(unit, ..)| *unit == code)
        .map(|(_, base, mantissa, scale)| {
            (
                value.saturating_mul(Decimal::new(*mantissa, *scale)),
                (*base).to_owned(),
            )
        })
}

/// The value in its dimension's base unit, with that unit; calendar keywords count as their
/// UCUM units, unknown units stay as they are.
pub fn canonical(value: Decimal, unit: &str) -> (Decimal, String) {
    let unit = calendar_to_ucum(unit);
    ucum_canonical(value, unit).unwrap_or_else(|| (value, unit.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_units_convert() {
        assert_eq!(
            canonical(Decimal::new(1, 0), "kg"),
            (Decimal::new(1000, 0), "g".into())
        );
        assert_eq!(
            canonical(Decimal::new(2, 0), "minutes"),
            (Decimal::new(120, 0), "s".into())
        );
        assert_eq!(canonical(Decimal::new(1, 0), "year").1, "year");
    }

    #[test]
    fn weights_and_pressures_convert() {
        assert_eq!(
            ucum_canonical(Decimal::new(70, 0), "kg"),
            Some((Decimal::new(70000, 0), "g".into()))
        );
        assert_eq!(
            ucum_canonical(Decimal::new(1, 0), "[lb_av]").unwrap().0,
            Decimal::new(45359237, 5)
        );
        assert_eq!(ucum_canonical(Decimal::new(1, 0), "furlong"), None);
    }
}
