//! Canonical units for the quantities home measurements use, so that `70 kg` and `70000 g`
//! index alike. Units not listed here are matched as written.

use rust_decimal::Decimal;

/// (UCUM code, canonical code, factor as mantissa and scale)
const CANONICAL: &[(&str, &str, i64, u32)] = &[
    ("g", "g", 1, 0),
    ("kg", "g", 1000, 0),
    ("mg", "g", 1, 3),
    ("[lb_av]", "g", 45_359_237, 5),
    ("mm[Hg]", "mm[Hg]", 1, 0),
    ("kPa", "mm[Hg]", 750_061_683, 8),
    ("Cel", "Cel", 1, 0),
    ("/min", "/min", 1, 0),
    ("{beats}/min", "/min", 1, 0),
    ("%", "%", 1, 0),
    ("mmol/L", "mmol/L", 1, 0),
    ("m", "m", 1, 0),
    ("cm", "m", 1, 2),
    ("[in_i]", "m", 254, 4),
];

/// The value in its canonical unit, when the unit is one Fjord knows.
pub fn canonical(value: Decimal, code: &str) -> Option<(Decimal, String)> {
    CANONICAL
        .iter()
        .find(|(from, ..)| *from == code)
        .map(|(_, to, mantissa, scale)| {
            (
                (value * Decimal::new(*mantissa, *scale)).normalize(),
                (*to).to_owned(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_pressures_convert() {
        assert_eq!(
            canonical(Decimal::new(70, 0), "kg"),
            Some((Decimal::new(70000, 0), "g".into()))
        );
        assert_eq!(
            canonical(Decimal::new(1, 0), "[lb_av]").unwrap().0,
            Decimal::new(45359237, 5)
        );
        assert_eq!(canonical(Decimal::new(1, 0), "furlong"), None);
    }
}
