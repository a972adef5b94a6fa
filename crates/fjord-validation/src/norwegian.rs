//! The Norwegian national identifiers, by their `Identifier.system` (the OIDs of
//! `hl7.fhir.no.basis`), and the rules their values follow.
//!
//! Person numbers are eleven digits `DDMMYY` + individual number (three digits) + two check
//! digits, weighted modulo 11. Numbers issued from 2032 allow four values of the first check
//! digit (the weighted sum's remainder 0–3 instead of only 0; Skatteetaten, "Nytt fødselsnummer
//! fra 2032"), so both rules are accepted. A D-nummer adds 4 to the first digit of the day; a
//! felles hjelpenummer starts with 8 or 9. Synthetic test numbers add 40 (NAV's, and the
//! hospitals' local help numbers) or 80 (Skatteetaten's Tenor) to the month: accepted only
//! where test data is.

/// The first check digit's weights over the nine digits before it.
const K1_WEIGHTS: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
/// The second check digit's weights over the ten digits before it.
const K2_WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
/// An organisation number's check digit's weights over its first eight digits.
const ORGANISATION_WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];

/// A national identifier system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    Fodselsnummer,
    DNummer,
    FellesHjelpenummer,
    Hpr,
    Organisasjonsnummer,
    Resh,
}

impl IdentifierKind {
    /// Every kind, with its `Identifier.system`.
    pub const ALL: [(IdentifierKind, &'static str); 6] = [
        (
            IdentifierKind::Fodselsnummer,
            "urn:oid:2.16.578.1.12.4.1.4.1",
        ),
        (IdentifierKind::DNummer, "urn:oid:2.16.578.1.12.4.1.4.2"),
        (
            IdentifierKind::FellesHjelpenummer,
            "urn:oid:2.16.578.1.12.4.1.4.3",
        ),
        (IdentifierKind::Hpr, "urn:oid:2.16.578.1.12.4.1.4.4"),
        (
            IdentifierKind::Organisasjonsnummer,
            "urn:oid:2.16.578.1.12.4.1.4.101",
        ),
        (IdentifierKind::Resh, "urn:oid:2.16.578.1.12.4.1.4.102"),
    ];

    /// The kind an `Identifier.system` names, if it is a national one.
    pub fn of_system(system: &str) -> Option<IdentifierKind> {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == system)
            .map(|(k, _)| *k)
    }

    /// The `Identifier.system` of this kind.
    pub fn system(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, s)| *s)
            .expect("every kind has a system")
    }

    /// Its name as people know it.
    pub fn name(self) -> &'static str {
        match self {
            IdentifierKind::Fodselsnummer => "fødselsnummer",
            IdentifierKind::DNummer => "D-nummer",
            IdentifierKind::FellesHjelpenummer => "felles hjelpenummer",
            IdentifierKind::Hpr => "HPR-nummer",
            IdentifierKind::Organisasjonsnummer => "organisasjonsnummer",
            IdentifierKind::Resh => "RESH-id",
        }
    }
}

/// What the checks allow beyond the numbers issued to real people and organisations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentifierRules {
    /// Synthetic test numbers (month + 40 or + 80) are accepted.
    pub allow_test_data: bool,
}

/// Why a value is not a valid identifier of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("a {kind} is {expected} digits, not '{value}'")]
    Format {
        kind: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("'{value}' is not a {kind}: its check digits are wrong")]
    CheckDigits { kind: &'static str, value: String },
    #[error("'{value}' is not a {kind}: {reason}")]
    Date {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("'{value}' is a synthetic test {kind}, which this tenant does not accept")]
    TestNumber { kind: &'static str, value: String },
}

/// Checks `value` as an identifier of `kind`.
pub fn check_identifier(
    kind: IdentifierKind,
    value: &str,
    rules: IdentifierRules,
) -> Result<(), IdentifierError> {
    let format = |expected| IdentifierError::Format {
        kind: kind.name(),
        expected,
        value: value.to_owned(),
    };
    let digits: Vec<u32> = value.chars().map_while(|c| c.to_digit(10)).collect();
    let all_digits = !value.is_empty() && digits.len() == value.len();
    match kind {
        IdentifierKind::Fodselsnummer | IdentifierKind::DNummer => {
            if !all_digits || digits.len() != 11 {
                return Err(format("11"));
            }
            check_person_number(kind, value, &digits, rules)
        }
        IdentifierKind::FellesHjelpenummer => {
            if !all_digits || digits.len() != 11 || digits[0] < 8 {
                return Err(format("11, the first 8 or 9,"));
            }
            check_digits(kind, value, &digits)
        }
        IdentifierKind::Organisasjonsnummer => {
            if !all_digits || digits.len() != 9 {
                return Err(format("9"));
            }
            let sum: u32 = ORGANISATION_WEIGHTS
                .iter()
                .zip(&digits)
                .map(|(w, d)| w * d)
                .sum();
            if (sum + digits[8]).is_multiple_of(11) {
                Ok(())
            } else {
                Err(IdentifierError::CheckDigits {
                    kind: kind.name(),
                    value: value.to_owned(),
                })
            }
        }
        // Register numbers without check digits: only their form can be checked.
        IdentifierKind::Hpr | IdentifierKind::Resh => {
            if all_digits && digits.len() <= 9 && digits.iter().any(|d| *d != 0) {
                Ok(())
            } else {
                Err(format("1 to 9"))
            }
        }
    }
}

/// A fødselsnummer or D-nummer: its date part, test-number marks and check digits.
fn check_person_number(
    kind: IdentifierKind,
    value: &str,
    digits: &[u32],
    rules: IdentifierRules,
) -> Result<(), IdentifierError> {
    let date_error = |reason| IdentifierError::Date {
        kind: kind.name(),
        value: value.to_owned(),
        reason,
    };
    let mut day = digits[0] * 10 + digits[1];
    match kind {
        IdentifierKind::DNummer if day > 40 => day -= 40,
        IdentifierKind::DNummer => return Err(date_error("a D-nummer's day is 41–71")),
        _ if day > 40 => {
            return Err(date_error(
                "its day is over 40, as a D-nummer's (its system is another)",
            ))
        }
        _ => {}
    }
    let mut month = digits[2] * 10 + digits[3];
    if month > 40 {
        if !rules.allow_test_data {
            return Err(IdentifierError::TestNumber {
                kind: kind.name(),
                value: value.to_owned(),
            });
        }
        month -= if month > 80 { 80 } else { 40 };
    }
    // The century is not always known (from 2032 the individual number does not tell it): any
    // year may be a leap year.
    let longest = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => 29,
        _ => return Err(date_error("its month is not 01–12")),
    };
    if day == 0 || day > longest {
        return Err(date_error("its day is not in its month"));
    }
    check_digits(kind, value, digits)
}

/// The two check digits of an eleven-digit person number, by the current rule or the 2032 one.
fn check_digits(kind: IdentifierKind, value: &str, digits: &[u32]) -> Result<(), IdentifierError> {
    let weighted =
        |weights: &[u32]| -> u32 { weights.iter().zip(digits).map(|(w, d)| w * d).sum() };
    let first = (weighted(&K1_WEIGHTS) + digits[9]) % 11;
    let second = (weighted(&K2_WEIGHTS) + digits[10]) % 11;
    // Before 2032 the first remainder is 0; from 2032 it may be 0–3. The second is always 0.
    if first <= 3 && second == 0 {
        Ok(())
    } else {
        Err(IdentifierError::CheckDigits {
            kind: kind.name(),
            value: value.to_owned(),
        })
    }
}

/// A person number's eleven digits from its first nine (date and individual number), with the
/// check digits of the rule in force before 2032; `None` where that rule has no check digit
/// for them (that individual number is never issued on that date).
pub fn with_person_check_digits(nine: &str) -> Option<String> {
    let digits: Vec<u32> = nine
        .chars()
        .map(|c| c.to_digit(10))
        .collect::<Option<_>>()?;
    let k1 = modulo_11(&K1_WEIGHTS, &digits)?;
    let with_k1: Vec<u32> = digits.iter().copied().chain([k1]).collect();
    let k2 = modulo_11(&K2_WEIGHTS, &with_k1)?;
    Some(format!("{nine}{k1}{k2}"))
}

/// An organisation number's nine digits from its first eight; `None` where no check digit
/// exists (such numbers are not issued).
pub fn with_organisation_check_digit(eight: &str) -> Option<String> {
    let digits: Vec<u32> = eight
        .chars()
        .map(|c| c.to_digit(10))
        .collect::<Option<_>>()?;
    let check = modulo_11(&ORGANISATION_WEIGHTS, &digits)?;
    Some(format!("{eight}{check}"))
}

/// The modulo-11 check digit of `digits` under `weights`: 0 for a remainder of 0, none for 1.
fn modulo_11(weights: &[u32], digits: &[u32]) -> Option<u32> {
    let sum: u32 = weights.iter().zip(digits).map(|(w, d)| w * d).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        digit => Some(digit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: IdentifierRules = IdentifierRules {
        allow_test_data: false,
    };
    const TEST_DATA: IdentifierRules = IdentifierRules {
        allow_test_data: true,
    };

    fn check(kind: IdentifierKind, value: &str) -> Result<(), IdentifierError> {
        check_identifier(kind, value, REAL)
    }

    /// The check digits of the first nine digits by the current rule (`None`: the number is
    /// not issued), computed here the way Skatteetaten describes it, independently of the
    /// checker's remainder form.
    /// The first number the current rule issues on the date `DDMMYY` (its first digits).
    fn issued_on(date: &str) -> String {
        (100..1000)
            .find_map(|individual| with_person_check_digits(&format!("{date}{individual}")))
            .expect("some individual number is issued")
    }

    #[test]
    fn fodselsnummer_by_the_current_rule() {
        // Published examples: matematikk.org, Skatteetaten's calculation page.
        for valid in ["02016126007", "31129956715"] {
            assert_eq!(
                check(IdentifierKind::Fodselsnummer, valid),
                Ok(()),
                "{valid}"
            );
        }
        // Every date of a year with a few individual numbers: what the rule issues is valid,
        // and changing any one digit of it is caught.
        let mut issued = 0;
        for month in 1..=12 {
            for day in 1..=28 {
                for individual in [0, 123, 499, 500, 987] {
                    let nine = format!("{day:02}{month:02}85{individual:03}");
                    let Some(number) = with_person_check_digits(&nine) else {
                        continue;
                    };
                    issued += 1;
                    assert_eq!(
                        check(IdentifierKind::Fodselsnummer, &number),
                        Ok(()),
                        "{number}"
                    );
                    let mut wrong = number.clone().into_bytes();
                    wrong[10] = b'0' + (wrong[10] - b'0' + 1) % 10;
                    let wrong = String::from_utf8(wrong).unwrap();
                    assert!(
                        check(IdentifierKind::Fodselsnummer, &wrong).is_err(),
                        "{wrong}"
                    );
                }
            }
        }
        assert!(issued > 1000, "{issued}");
    }

    #[test]
    fn fodselsnummer_by_the_2032_rule() {
        // Skatteetaten's examples: the first check digit may leave a remainder of 0–3.
        for valid in ["02013299997", "30108299920", "30108299939"] {
            assert_eq!(
                check(IdentifierKind::Fodselsnummer, valid),
                Ok(()),
                "{valid}"
            );
        }
        // 301082999 has first check digits 2, 3, 4 and 5 (remainders 0–3); 6 is a remainder of 4.
        let second = |k1: u32| {
            let digits: Vec<u32> = format!("301082999{k1}")
                .chars()
                .map(|c| c.to_digit(10).unwrap())
                .collect();
            let sum: u32 = K2_WEIGHTS.iter().zip(&digits).map(|(w, d)| w * d).sum();
            (11 - sum % 11) % 11
        };
        for k1 in 2..=5 {
            let k2 = second(k1);
            if k2 < 10 {
                let number = format!("301082999{k1}{k2}");
                assert_eq!(
                    check(IdentifierKind::Fodselsnummer, &number),
                    Ok(()),
                    "{number}"
                );
            }
        }
        let k2 = second(6);
        assert!(check(IdentifierKind::Fodselsnummer, &format!("3010829996{k2}")).is_err());
    }

    #[test]
    fn forms_dates_and_kinds_are_checked() {
        let fnr = IdentifierKind::Fodselsnummer;
        for bad in [
            "",
            "0201612600",
            "020161260071",
            "0201612600x",
            " 2016126007",
        ] {
            assert!(
                matches!(check(fnr, bad), Err(IdentifierError::Format { .. })),
                "{bad:?}"
            );
        }
        // 31 February and month 13 are no dates, whatever the check digits say.
        for nine in ["310285123", "011385123", "000185123"] {
            let number = format!("{nine}00");
            assert!(
                matches!(check(fnr, &number), Err(IdentifierError::Date { .. })),
                "{number}"
            );
        }
        // A D-nummer is a fødselsnummer with 4 added to its first digit; each under its own system.
        let fodselsnummer = issued_on("150385");
        let d_nummer = issued_on("550385");
        assert_eq!(check(fnr, &fodselsnummer), Ok(()));
        assert_eq!(check(IdentifierKind::DNummer, &d_nummer), Ok(()));
        assert!(check(fnr, &d_nummer).is_err());
        assert!(check(IdentifierKind::DNummer, &fodselsnummer).is_err());
        // A felles hjelpenummer starts with 8 or 9 and has the same check digits.
        let hjelpenummer = issued_on("812345");
        assert_eq!(
            check(IdentifierKind::FellesHjelpenummer, &hjelpenummer),
            Ok(())
        );
        assert!(check(IdentifierKind::FellesHjelpenummer, &fodselsnummer).is_err());
    }

    #[test]
    fn synthetic_test_numbers_need_the_tenants_allowance() {
        // NAV's synthetic numbers (month + 40) and Tenor's (month + 80).
        for synthetic in [issued_on("154385"), issued_on("159085")] {
            assert!(
                matches!(
                    check(IdentifierKind::Fodselsnummer, &synthetic),
                    Err(IdentifierError::TestNumber { .. })
                ),
                "{synthetic}"
            );
            assert_eq!(
                check_identifier(IdentifierKind::Fodselsnummer, &synthetic, TEST_DATA),
                Ok(()),
                "{synthetic}"
            );
        }
        // Allowed test data still has valid dates and check digits.
        let bad_month = issued_on("155385");
        assert!(check_identifier(IdentifierKind::Fodselsnummer, &bad_month, TEST_DATA).is_err());
    }

    #[test]
    fn organisation_hpr_and_resh_numbers() {
        let org = IdentifierKind::Organisasjonsnummer;
        // Brønnøysundregistrene's own number, and the same with its check digit changed.
        assert_eq!(check(org, "974760673"), Ok(()));
        assert_eq!(
            with_organisation_check_digit("97476067").as_deref(),
            Some("974760673")
        );
        assert_eq!(
            with_organisation_check_digit("97460095").as_deref(),
            Some("974600951")
        );
        assert!(matches!(
            check(org, "974760674"),
            Err(IdentifierError::CheckDigits { .. })
        ));
        assert!(check(org, "97476067").is_err());
        for kind in [IdentifierKind::Hpr, IdentifierKind::Resh] {
            assert_eq!(check(kind, "9144889"), Ok(()));
            for bad in ["", "0", "12a", "1234567890"] {
                assert!(check(kind, bad).is_err(), "{bad:?}");
            }
        }
    }

    #[test]
    fn kinds_are_found_by_their_systems() {
        for (kind, system) in IdentifierKind::ALL {
            assert_eq!(IdentifierKind::of_system(system), Some(kind));
            assert_eq!(kind.system(), system);
        }
        assert_eq!(
            IdentifierKind::of_system("urn:oid:2.16.578.1.12.4.1.4.5"),
            None
        );
    }
}
