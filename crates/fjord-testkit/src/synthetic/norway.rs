//! Norwegian people, places and registers, synthetic: person numbers of Skatteetaten's test
//! series (month + 80, so no real person ever has one), D-numbers (day + 40) of the same series,
//! organisation numbers (their check digits made by `fjord-validation`, which checks them), HPR
//! numbers, names people have, and
//! addresses in real municipalities (their codes from Kartverket's register).

use fjord_validation::{with_organisation_check_digit, with_person_check_digits};
use serde_json::{json, Value};
use time::Date;

use super::rng::Rng;

const MUNICIPALITY_CODES: &str = "urn:oid:2.16.578.1.12.4.1.1.3402";
const MUNICIPALITY_EXTENSION: &str =
    "http://hl7.no/fhir/StructureDefinition/no-basis-municipalitycode";

const GIVEN_FEMALE: &[&str] = &[
    "Anne", "Inger", "Kari", "Marit", "Ingrid", "Liv", "Eva", "Berit", "Astrid", "Bjørg", "Hilde",
    "Anna", "Solveig", "Marianne", "Randi", "Ida", "Nina", "Elin", "Ragnhild", "Tone", "Sigrid",
    "Gunn", "Turid", "Heidi", "Grete",
];
const GIVEN_MALE: &[&str] = &[
    "Jan", "Per", "Bjørn", "Ole", "Lars", "Kjell", "Knut", "Arne", "Svein", "Hans", "Geir",
    "Thomas", "Tor", "Terje", "Odd", "Rune", "Morten", "Trond", "Erik", "Einar", "Nils", "Jon",
    "Harald", "Magnus", "Olav",
];
const FAMILY: &[&str] = &[
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Johannessen",
    "Andreassen",
    "Jacobsen",
    "Dahl",
    "Jørgensen",
    "Halvorsen",
    "Henriksen",
    "Lund",
    "Sørensen",
    "Moen",
    "Gundersen",
    "Iversen",
    "Strand",
    "Solberg",
    "Svendsen",
    "Eide",
    "Knutsen",
    "Martinsen",
    "Paulsen",
    "Bakken",
    "Mathisen",
    "Lie",
    "Aas",
    "Hauge",
];
const STREETS: &[&str] = &[
    "Storgata",
    "Kirkeveien",
    "Skolegata",
    "Fjordveien",
    "Bakkeveien",
    "Solbergveien",
    "Parkveien",
    "Strandgata",
    "Granveien",
    "Bjørkeveien",
    "Furuveien",
    "Elvegata",
    "Fjellveien",
    "Havnegata",
    "Lyngveien",
    "Kongens gate",
];

/// Municipalities: code (Kartverket's), name, and the postal codes of the centre.
const MUNICIPALITIES: &[(&str, &str, (u32, u32))] = &[
    ("0301", "Oslo", (150, 1295)),
    ("4601", "Bergen", (5003, 5099)),
    ("5001", "Trondheim", (7010, 7099)),
    ("1103", "Stavanger", (4005, 4099)),
    ("5501", "Tromsø", (9006, 9020)),
    ("3201", "Bærum", (1300, 1369)),
    ("4204", "Kristiansand", (4608, 4639)),
    ("1804", "Bodø", (8003, 8050)),
    ("3907", "Sandefjord", (3210, 3240)),
    ("3403", "Hamar", (2300, 2326)),
];

/// A person's number of the test series: a fødselsnummer, or a D-number (day + 40).
pub fn person_number(rng: &mut Rng, birth: Date, male: bool, d_number: bool) -> String {
    let year = birth.year();
    loop {
        // The individual number says the century; its last digit the sex (odd: male).
        let mut individual = match year {
            2000..=2039 => rng.between(500, 999),
            _ => rng.between(0, 499),
        };
        if (individual % 2 == 1) != male {
            individual ^= 1;
        }
        let day = u32::from(birth.day()) + if d_number { 40 } else { 0 };
        let month = u32::from(u8::from(birth.month())) + 80;
        let nine = format!("{day:02}{month:02}{:02}{individual:03}", year % 100);
        if let Some(number) = with_person_check_digits(&nine) {
            return number;
        }
    }
}

/// An organisation number (nine digits, the first 8 or 9).
pub fn organisation_number(rng: &mut Rng) -> String {
    loop {
        let eight = rng.between(80_000_000, 99_999_999).to_string();
        if let Some(number) = with_organisation_check_digit(&eight) {
            return number;
        }
    }
}

/// An HPR number: seven digits, no check digit.
pub fn hpr_number(rng: &mut Rng) -> String {
    rng.between(1_000_000, 9_999_999).to_string()
}

/// A `HumanName` of someone of this sex.
pub fn human_name(rng: &mut Rng, male: bool) -> Value {
    let given = if male { GIVEN_MALE } else { GIVEN_FEMALE };
    json!({
        "use": "official",
        "family": rng.pick(FAMILY),
        "given": [rng.pick(given)],
    })
}

/// A home address in one of the municipalities, with its code (`no-basis-municipalitycode`).
pub fn home_address(rng: &mut Rng) -> Value {
    let (code, name, postal) = *rng.pick(MUNICIPALITIES);
    let postal = rng.between(i64::from(postal.0), i64::from(postal.1));
    json!({
        "use": "home",
        "type": "physical",
        "line": [format!("{} {}", rng.pick(STREETS), rng.between(1, 120))],
        "city": name.to_uppercase(),
        "district": name,
        "_district": { "extension": [{
            "url": MUNICIPALITY_EXTENSION,
            "valueCoding": { "system": MUNICIPALITY_CODES, "code": code, "display": name },
        }] },
        "postalCode": format!("{postal:04}"),
        "country": "NO",
    })
}

/// A Norwegian mobile number.
pub fn mobile(rng: &mut Rng) -> String {
    let first = if rng.chance(0.5) { 4 } else { 9 };
    format!("+47{first}{:07}", rng.below(10_000_000))
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn person_numbers_are_of_the_test_series_with_date_and_sex() {
        let mut rng = Rng::new(3);
        let number = person_number(&mut rng, date!(1961 - 01 - 02), true, false);
        assert_eq!(&number[..6], "028161", "day, month + 80, year");
        assert_eq!(number[6..9].parse::<u32>().unwrap() % 2, 1, "a man");
        let d = person_number(&mut rng, date!(2003 - 11 - 30), false, true);
        assert_eq!(&d[..6], "709103");
        assert!(d[6..9].parse::<u32>().unwrap() >= 500, "born after 1999");
    }
}
