//! Synthetic Norwegian home-care (DHO) data, deterministic from a seed, at any scale.
//!
//! A data set has a few hospital trusts (HF, with organisation numbers), their practitioners
//! (HPR numbers), one weekly Questionnaire per monitoring programme, and per patient: the
//! Patient (a person number of the test series, an address in a real municipality), the home
//! devices the programme needs, a self-treatment CarePlan, months of home measurements at the
//! programme's times with the patient's adherence, weekly QuestionnaireResponses and monthly
//! follow-up Appointments. Every resource claims its profile (no-basis for people and
//! organisations, Fjord's DHO profiles for the rest) and conforms to it.
//!
//! Each patient's resources come from a generator of their own (seed and patient number), so a
//! patient is made without the others: in any order, in parallel, or only some of them.

mod clinical;
mod norway;
mod output;
mod rng;

use fjord_validation::IdentifierKind;
use serde_json::{json, Value};
use time::{Date, Duration, OffsetDateTime, Time};

pub use clinical::{Measurement, Programme};
pub use output::{write, Format, Written};

use clinical::{Baseline, Subject, Taken};
use rng::Rng;

const NO_BASIS: &str = "http://hl7.no/fhir/StructureDefinition/";
const DEVICE_SERIALS: &str = "https://fjord.example/fhir/sid/mtu-serienummer";
const PROFESSIONS: &str = "urn:oid:2.16.578.1.12.4.1.1.9060";

/// The hospital trusts of every data set (fictional).
const TRUSTS: [&str; 4] = ["Fjordvik HF", "Nordlia HF", "Vestmark HF", "Sørdal HF"];

/// How much data, from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub patients: usize,
    /// Months (30 days) of measurements, ending at `end`.
    pub months: u32,
    pub seed: u64,
    /// The day the period ends (a fixed day, not today: the data set stays the same).
    pub end: Date,
}

impl Default for Scale {
    fn default() -> Scale {
        Scale {
            patients: 100,
            months: 3,
            seed: 1,
            end: time::macros::date!(2026 - 11 - 01),
        }
    }
}

/// A data set: the shared resources, and each patient's on demand.
#[derive(Debug, Clone)]
pub struct Dataset {
    scale: Scale,
    practitioners: usize,
}

impl Dataset {
    pub fn new(scale: Scale) -> Dataset {
        Dataset {
            scale,
            practitioners: (scale.patients / 50).max(TRUSTS.len()),
        }
    }

    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// What every patient's resources refer to: the trusts, their practitioners and the
    /// questionnaires, in that order.
    pub fn shared(&self) -> Vec<Value> {
        let mut rng = Rng::derive(self.scale.seed, u64::MAX);
        let mut resources: Vec<Value> = TRUSTS
            .iter()
            .enumerate()
            .map(|(n, name)| {
                json!({
                    "resourceType": "Organization",
                    "id": self.id("hf", n),
                    "meta": { "profile": [format!("{NO_BASIS}no-basis-Organization")] },
                    "identifier": [{ "system": IdentifierKind::Organisasjonsnummer.system(), "value": norway::organisation_number(&mut rng) }],
                    "active": true,
                    "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov", "display": "Healthcare Provider" }] }],
                    "name": name,
                })
            })
            .collect();
        for n in 0..self.practitioners {
            let male = rng.chance(0.45);
            let (code, display) = match rng.chance(0.3) {
                true => ("LE", "Lege"),
                false => ("SP", "Sykepleier"),
            };
            resources.push(json!({
                "resourceType": "Practitioner",
                "id": self.id("prac", n),
                "meta": { "profile": [format!("{NO_BASIS}no-basis-Practitioner")] },
                "identifier": [{ "system": IdentifierKind::Hpr.system(), "value": norway::hpr_number(&mut rng) }],
                "active": true,
                "name": [norway::human_name(&mut rng, male)],
                "gender": if male { "male" } else { "female" },
                "qualification": [{ "code": { "coding": [{ "system": PROFESSIONS, "code": code, "display": display }] } }],
            }));
        }
        resources.extend(Programme::ALL.map(clinical::questionnaire));
        resources
    }

    /// Patient `n`'s resources, the Patient first and everything it refers to before the
    /// resources that refer to it.
    pub fn patient(&self, n: usize) -> Vec<Value> {
        let scale = self.scale;
        let mut rng = Rng::derive(scale.seed, n as u64);
        let programme = *rng.pick(&Programme::ALL);
        let male = rng.chance(0.5);
        let age = rng.between(35, 92);
        let birth = scale.end - Duration::days(age * 365 + rng.between(0, 364));
        let d_number = rng.chance(0.03);
        let number = norway::person_number(&mut rng, birth, male, d_number);
        let system = match d_number {
            true => IdentifierKind::DNummer.system(),
            false => IdentifierKind::Fodselsnummer.system(),
        };
        let name = norway::human_name(&mut rng, male);
        let display = format!(
            "{} {}",
            name["given"][0].as_str().unwrap_or_default(),
            name["family"].as_str().unwrap_or_default()
        );
        let patient_id = self.id("pat", n);
        let reference = format!("Patient/{patient_id}");
        let trust = format!("Organization/{}", self.id("hf", n % TRUSTS.len()));
        let practitioner = format!("Practitioner/{}", self.id("prac", n % self.practitioners));
        let mut resources = vec![json!({
            "resourceType": "Patient",
            "id": patient_id,
            "meta": { "profile": [format!("{NO_BASIS}no-basis-Patient")] },
            "identifier": [{ "system": system, "value": number }],
            "active": true,
            "name": [name],
            "telecom": [{ "system": "phone", "value": norway::mobile(&mut rng), "use": "mobile" }],
            "gender": if male { "male" } else { "female" },
            "birthDate": birth.to_string(),
            "address": [norway::home_address(&mut rng)],
            "generalPractitioner": [{ "reference": practitioner }],
            "managingOrganization": { "reference": trust },
        })];
        let subject = Subject {
            reference: &reference,
            identifier: (system, &number),
            display: &display,
        };

        // One device of each name the programme's measurements need.
        let mut devices: Vec<(&'static str, String)> = Vec::new();
        for (kind, _, _) in programme.schedule() {
            let name = kind.device();
            if devices.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let id = self.id(&format!("dev-{n}"), devices.len());
            resources.push(json!({
                "resourceType": "Device",
                "id": id,
                "identifier": [{ "system": DEVICE_SERIALS, "value": format!("{:X}", rng.next_u64() >> 24) }],
                "status": "active",
                "manufacturer": "Syntetisk Medisinsk AS",
                "deviceName": [{ "name": name, "type": "user-friendly-name" }],
                "type": { "text": name },
                "patient": { "reference": reference },
                "owner": { "reference": trust },
            }));
            devices.push((name, format!("Device/{id}")));
        }

        let start = scale.end - Duration::days(i64::from(scale.months) * 30);
        let at = |day: i64, hour: u32, rng: &mut Rng| {
            let minute = rng.between(-40, 40);
            OffsetDateTime::new_utc(start + Duration::days(day), Time::MIDNIGHT)
                + Duration::minutes(i64::from(hour) * 60 + minute)
        };
        resources.push(clinical::care_plan(
            &self.id(&format!("plan-{n}"), 0),
            programme,
            &subject,
            &practitioner,
            OffsetDateTime::new_utc(start, Time::MIDNIGHT),
        ));

        let baseline = Baseline::new(&mut rng, programme);
        let adherence = rng.normal(0.85, 0.08).clamp(0.5, 1.0);
        let days = i64::from(scale.months) * 30;
        let mut measurements = 0;
        for day in 0..days {
            for (kind, hours, chance) in programme.schedule() {
                if *chance < 1.0 && !rng.chance(*chance) {
                    continue;
                }
                for hour in *hours {
                    if !rng.chance(adherence) {
                        continue;
                    }
                    let device = devices
                        .iter()
                        .find(|(name, _)| *name == kind.device())
                        .map(|(_, reference)| reference.as_str())
                        .expect("the programme's devices were made above");
                    let when = at(day, *hour, &mut rng);
                    let id = self.id(&format!("obs-{n}"), measurements);
                    measurements += 1;
                    let taken = Taken {
                        device,
                        at: when,
                        day,
                    };
                    resources.push(clinical::observation(
                        &mut rng, &id, *kind, &baseline, &subject, &taken,
                    ));
                }
            }
            // The weekly questionnaire, on the patient's own weekday, most weeks.
            if day % 7 == (n % 7) as i64 && rng.chance(adherence) {
                let id = self.id(&format!("qr-{n}"), day as usize / 7);
                let when = at(day, 18, &mut rng);
                resources.push(clinical::questionnaire_response(
                    &mut rng, &id, programme, &subject, when,
                ));
            }
            // A follow-up every fourth week, and the next one booked after the period.
            if day % 28 == 27 || day == days - 1 {
                let id = self.id(&format!("appt-{n}"), day as usize / 28);
                let hour = *rng.pick(&[9, 10, 12, 13, 14]);
                let when = OffsetDateTime::new_utc(start + Duration::days(day + 1), Time::MIDNIGHT)
                    + Duration::hours(hour);
                let past = day < days - 1;
                resources.push(clinical::appointment(
                    &mut rng,
                    &id,
                    &subject,
                    &practitioner,
                    when,
                    past,
                ));
            }
        }
        resources
    }

    /// Every resource of the data set: the shared ones, then each patient's.
    pub fn resources(&self) -> impl Iterator<Item = Value> + '_ {
        self.shared()
            .into_iter()
            .chain((0..self.scale.patients).flat_map(|n| self.patient(n)))
    }

    /// An id of this data set: its seed in it, so data sets of different seeds can share a
    /// tenant.
    fn id(&self, kind: &str, n: usize) -> String {
        format!("s{}-{kind}-{n}", self.scale.seed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use fjord_validation::{check_identifier, IdentifierKind, IdentifierRules};
    use serde_json::Value;

    use super::{Dataset, Scale};

    fn small(seed: u64) -> Dataset {
        Dataset::new(Scale {
            patients: 40,
            months: 2,
            seed,
            ..Scale::default()
        })
    }

    #[test]
    fn a_seed_makes_the_same_data_and_another_seed_other_data() {
        let one: Vec<Value> = small(1).resources().collect();
        assert_eq!(one, small(1).resources().collect::<Vec<_>>());
        let other: Vec<Value> = small(2).resources().collect();
        assert_ne!(one[10..], other[10..]);
        // A patient alone is the patient as in the whole.
        let alone = small(1).patient(7);
        let first = alone[0]["id"].as_str().unwrap();
        let at = one.iter().position(|r| r["id"] == first).unwrap();
        assert_eq!(one[at..at + alone.len()], alone[..]);
    }

    #[test]
    fn ids_are_unique_references_resolve_and_identifiers_are_valid() {
        let resources: Vec<Value> = small(3).resources().collect();
        let mut seen = HashSet::new();
        for resource in &resources {
            let key = format!(
                "{}/{}",
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap()
            );
            // Each resource comes after everything it refers to.
            for reference in references(resource) {
                assert!(
                    seen.contains(&reference),
                    "{key} refers to {reference} before it"
                );
            }
            assert!(seen.insert(key.clone()), "{key} twice");
        }
        let rules = IdentifierRules {
            allow_test_data: true,
        };
        let strict = IdentifierRules {
            allow_test_data: false,
        };
        let mut checked = 0;
        for resource in &resources {
            for identifier in resource["identifier"].as_array().into_iter().flatten() {
                let system = identifier["system"].as_str().unwrap();
                let value = identifier["value"].as_str().unwrap();
                let Some(kind) = IdentifierKind::of_system(system) else {
                    continue;
                };
                assert_eq!(check_identifier(kind, value, rules), Ok(()), "{value}");
                if matches!(
                    kind,
                    IdentifierKind::Fodselsnummer | IdentifierKind::DNummer
                ) {
                    // Of the test series: never a real person's number.
                    assert!(check_identifier(kind, value, strict).is_err(), "{value}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 40 + 4, "{checked}");
    }

    #[test]
    fn volumes_follow_the_programmes() {
        let dataset = small(4);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for resource in dataset.resources() {
            *counts
                .entry(resource["resourceType"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(counts["Patient"], 40);
        assert_eq!(counts["CarePlan"], 40);
        assert_eq!(counts["Organization"], 4);
        assert_eq!(counts["Questionnaire"], 4);
        // Two to six measurements a day at 85% adherence, for 60 days.
        let per_patient_day = counts["Observation"] as f64 / 40.0 / 60.0;
        assert!((1.5..6.0).contains(&per_patient_day), "{per_patient_day}");
        // Weekly answers, a follow-up every four weeks and one booked after the period.
        assert!(
            (40 * 6..=40 * 9).contains(&counts["QuestionnaireResponse"]),
            "{counts:?}"
        );
        assert_eq!(counts["Appointment"], 40 * 3);
        let twice = Dataset::new(Scale {
            months: 4,
            ..small(4).scale()
        });
        let more = twice
            .resources()
            .filter(|r| r["resourceType"] == "Observation")
            .count();
        assert!(more > counts["Observation"] * 19 / 10, "{more}");
    }

    /// The local references (`Type/id`) a resource makes.
    fn references(value: &Value) -> Vec<String> {
        match value {
            Value::Object(map) => map
                .iter()
                .flat_map(|(key, value)| match (key.as_str(), value) {
                    ("reference", Value::String(r)) => vec![r.clone()],
                    _ => references(value),
                })
                .collect(),
            Value::Array(items) => items.iter().flat_map(references).collect(),
            _ => Vec::new(),
        }
    }
}
