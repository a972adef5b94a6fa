//! What home monitoring records: the programmes patients follow (KOLS, heart failure, diabetes,
//! hypertension), the measurements each asks for and how often, their values around a patient's
//! own baseline, and the resources Fjord's DHO profiles describe (home Observations, the
//! self-treatment CarePlan, Questionnaires and their responses, Appointments).

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::rng::Rng;

const DHO: &str = "https://fjord.example/fhir/StructureDefinition/";
const QUESTIONNAIRES: &str = "https://fjord.example/fhir/Questionnaire/";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";

/// A home-monitoring programme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Programme {
    Kols,
    HeartFailure,
    Diabetes,
    Hypertension,
}

impl Programme {
    pub const ALL: [Programme; 4] = [
        Programme::Kols,
        Programme::HeartFailure,
        Programme::Diabetes,
        Programme::Hypertension,
    ];

    /// Its name on the plan.
    pub fn title(self) -> &'static str {
        match self {
            Programme::Kols => "KOLS",
            Programme::HeartFailure => "hjertesvikt",
            Programme::Diabetes => "diabetes type 2",
            Programme::Hypertension => "høyt blodtrykk",
        }
    }

    /// The name of its weekly questionnaire.
    pub fn questionnaire(self) -> &'static str {
        match self {
            Programme::Kols => "kols-symptomer",
            Programme::HeartFailure => "hjertesvikt-symptomer",
            Programme::Diabetes => "diabetes-oppfolging",
            Programme::Hypertension => "blodtrykk-oppfolging",
        }
    }

    /// Its yes/no questions (the questionnaire also asks for a 0–10 score of the day).
    fn questions(self) -> &'static [&'static str] {
        match self {
            Programme::Kols => &["Mer tungpust enn vanlig?", "Mer hoste eller slim?"],
            Programme::HeartFailure => &["Hovne ankler?", "Tyngre å puste når du ligger?"],
            Programme::Diabetes => &["Følinger på lavt blodsukker siste uke?"],
            Programme::Hypertension => &["Hodepine eller svimmelhet?"],
        }
    }

    /// What it measures: each kind with its times of day (hours) and the chance, each day,
    /// that the day is a measuring day at all.
    pub fn schedule(self) -> &'static [(Measurement, &'static [u32], f64)] {
        use Measurement::*;
        match self {
            Programme::Kols => &[
                (OxygenSaturation, &[8, 20], 1.0),
                (HeartRate, &[8, 20], 1.0),
                (BodyTemperature, &[8], 0.15),
            ],
            Programme::HeartFailure => &[
                (BodyWeight, &[7], 1.0),
                (BloodPressure, &[8], 1.0),
                (HeartRate, &[8], 1.0),
            ],
            Programme::Diabetes => &[(Glucose, &[7, 12, 18], 1.0), (BodyWeight, &[7], 1.0 / 7.0)],
            Programme::Hypertension => {
                &[(BloodPressure, &[8, 20], 1.0), (HeartRate, &[8, 20], 1.0)]
            }
        }
    }
}

/// A kind of home measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measurement {
    BloodPressure,
    HeartRate,
    OxygenSaturation,
    BodyWeight,
    BodyTemperature,
    Glucose,
}

impl Measurement {
    /// The DHO profile a measurement of this kind claims.
    fn profile(self) -> String {
        let name = match self {
            Measurement::BloodPressure => "dho-home-blood-pressure",
            Measurement::HeartRate => "dho-home-heart-rate",
            Measurement::OxygenSaturation => "dho-home-oxygen-saturation",
            Measurement::BodyWeight => "dho-home-body-weight",
            Measurement::BodyTemperature => "dho-home-body-temperature",
            Measurement::Glucose => "dho-home-observation",
        };
        format!("{DHO}{name}")
    }

    /// `Observation.code`, as the national vital-signs profiles code it.
    fn code(self) -> Value {
        let (loinc, display, snomed) = match self {
            Measurement::BloodPressure => ("85354-9", "Blood pressure panel", None),
            Measurement::HeartRate => (
                "8867-4",
                "Heart rate",
                Some(("364075005", "Heart rate (observable entity)")),
            ),
            Measurement::OxygenSaturation => (
                "2708-6",
                "Oxygen saturation in Arterial blood",
                Some((
                    "431314004",
                    "Peripheral oxygen saturation (observable entity)",
                )),
            ),
            Measurement::BodyWeight => ("29463-7", "Body weight", None),
            Measurement::BodyTemperature => (
                "8310-5",
                "Body temperature",
                Some(("276885007", "Core body temperature (observable entity)")),
            ),
            Measurement::Glucose => ("15074-8", "Glucose [Moles/volume] in Blood", None),
        };
        let mut coding = vec![json!({ "system": LOINC, "code": loinc, "display": display })];
        if let Some((code, display)) = snomed {
            coding.push(json!({ "system": SNOMED, "code": code, "display": display }));
        }
        json!({ "coding": coding })
    }

    /// Its Norwegian name.
    fn name(self) -> &'static str {
        match self {
            Measurement::BloodPressure => "blodtrykk",
            Measurement::HeartRate => "puls",
            Measurement::OxygenSaturation => "oksygenmetning",
            Measurement::BodyWeight => "vekt",
            Measurement::BodyTemperature => "temperatur",
            Measurement::Glucose => "blodsukker",
        }
    }

    /// The device that takes it, by its Norwegian name.
    pub fn device(self) -> &'static str {
        match self {
            Measurement::BloodPressure => "Blodtrykksmåler",
            Measurement::HeartRate => "Pulsoksymeter",
            Measurement::OxygenSaturation => "Pulsoksymeter",
            Measurement::BodyWeight => "Personvekt",
            Measurement::BodyTemperature => "Termometer",
            Measurement::Glucose => "Blodsukkermåler",
        }
    }
}

/// A patient's own normal values, around which the measurements vary.
#[derive(Debug, Clone)]
pub struct Baseline {
    systolic: f64,
    diastolic: f64,
    pulse: f64,
    saturation: f64,
    weight: f64,
    /// Kilograms a day (fluid in heart failure, slow loss elsewhere).
    weight_drift: f64,
    glucose: f64,
}

impl Baseline {
    pub fn new(rng: &mut Rng, programme: Programme) -> Baseline {
        Baseline {
            systolic: rng.normal(
                if programme == Programme::Hypertension {
                    152.0
                } else {
                    132.0
                },
                10.0,
            ),
            diastolic: rng.normal(84.0, 7.0),
            pulse: rng.normal(74.0, 8.0),
            saturation: if programme == Programme::Kols {
                rng.normal(93.0, 1.5)
            } else {
                rng.normal(97.0, 1.0)
            },
            weight: rng.normal(82.0, 14.0).clamp(45.0, 160.0),
            weight_drift: rng.normal(0.0, 0.01),
            glucose: if programme == Programme::Diabetes {
                rng.normal(7.5, 1.2)
            } else {
                rng.normal(5.4, 0.5)
            },
        }
    }
}

/// Who and what a patient's resources name.
pub struct Subject<'a> {
    /// `Patient/id`.
    pub reference: &'a str,
    /// The person number's system and value.
    pub identifier: (&'a str, &'a str),
    pub display: &'a str,
}

/// When and with what a measurement was taken.
pub struct Taken<'a> {
    /// `Device/id`.
    pub device: &'a str,
    pub at: OffsetDateTime,
    /// Days into the period.
    pub day: i64,
}

/// A home measurement of `kind`, as `taken`.
pub fn observation(
    rng: &mut Rng,
    id: &str,
    kind: Measurement,
    baseline: &Baseline,
    subject: &Subject<'_>,
    taken: &Taken<'_>,
) -> Value {
    let Taken { device, at, day } = *taken;
    let quantity = |value: f64, unit: &str, code: &str| json!({ "value": value, "unit": unit, "system": UCUM, "code": code });
    let mut observation = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": { "profile": [kind.profile()] },
        "status": "final",
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }] }],
        "code": kind.code(),
        "subject": {
            "reference": subject.reference,
            "identifier": { "system": subject.identifier.0, "value": subject.identifier.1 },
            "display": subject.display,
        },
        "effectiveDateTime": instant(at),
        "device": { "reference": device },
    });
    let hour = at.hour();
    match kind {
        Measurement::BloodPressure => {
            let systolic = rng
                .normal(baseline.systolic, 8.0)
                .clamp(85.0, 230.0)
                .round();
            let diastolic = rng
                .normal(baseline.diastolic, 6.0)
                .clamp(45.0, 130.0)
                .min(systolic - 20.0)
                .round();
            let component = |code: &str, display: &str, value: f64| {
                json!({
                    "code": { "coding": [{ "system": LOINC, "code": code, "display": display }] },
                    "valueQuantity": quantity(value, "mmHg", "mm[Hg]"),
                })
            };
            observation["component"] = json!([
                component("8480-6", "Systolic blood pressure", systolic),
                component("8462-4", "Diastolic blood pressure", diastolic),
            ]);
        }
        Measurement::HeartRate => {
            let pulse = rng.normal(baseline.pulse, 6.0).clamp(38.0, 170.0).round();
            observation["valueQuantity"] = quantity(pulse, "/min", "/min");
        }
        Measurement::OxygenSaturation => {
            let saturation = rng
                .normal(baseline.saturation, 1.2)
                .clamp(78.0, 100.0)
                .round();
            observation["valueQuantity"] = quantity(saturation, "%", "%");
        }
        Measurement::BodyWeight => {
            let weight = baseline.weight + baseline.weight_drift * day as f64;
            let weight = round1(rng.normal(weight, 0.4));
            observation["valueQuantity"] = quantity(weight, "kg", "kg");
        }
        Measurement::BodyTemperature => {
            let fever = rng.chance(0.03);
            let temperature = match fever {
                true => rng.normal(38.4, 0.4),
                false => rng.normal(36.8, 0.25),
            };
            observation["valueQuantity"] = quantity(round1(temperature), "Cel", "Cel");
        }
        Measurement::Glucose => {
            // Before breakfast fasting; later in the day after a meal.
            let after_meal = if hour >= 10 {
                rng.normal(2.0, 0.8)
            } else {
                0.0
            };
            let glucose = (rng.normal(baseline.glucose, 1.0) + after_meal).clamp(2.8, 25.0);
            observation["valueQuantity"] = quantity(round1(glucose), "mmol/L", "mmol/L");
        }
    }
    observation
}

/// The self-treatment plan of a programme, from `start`.
pub fn care_plan(
    id: &str,
    programme: Programme,
    subject: &Subject<'_>,
    author: &str,
    start: OffsetDateTime,
) -> Value {
    let mut activities: Vec<Value> = programme
        .schedule()
        .iter()
        .map(|(kind, hours, chance)| {
            let (frequency, period) = if *chance < 1.0 {
                (1, (1.0 / chance).round() as u32)
            } else {
                (hours.len() as u32, 1)
            };
            json!({ "detail": {
                "kind": "ServiceRequest",
                "code": { "coding": kind.code()["coding"].clone(), "text": format!("Mål {}", kind.name()) },
                "status": "in-progress",
                "scheduledTiming": { "repeat": { "frequency": frequency, "period": period, "periodUnit": "d" } },
            } })
        })
        .collect();
    activities.push(json!({ "detail": {
        "kind": "ServiceRequest",
        "instantiatesCanonical": [format!("{QUESTIONNAIRES}{}", programme.questionnaire())],
        "code": { "text": "Svar på ukentlig skjema" },
        "status": "in-progress",
        "scheduledTiming": { "repeat": { "frequency": 1, "period": 1, "periodUnit": "wk" } },
    } }));
    json!({
        "resourceType": "CarePlan",
        "id": id,
        "meta": { "profile": [format!("{DHO}dho-selftreatment-careplan")] },
        "status": "active",
        "intent": "plan",
        "category": [{ "text": format!("Egenbehandlingsplan {}", programme.title()) }],
        "title": format!("Egenbehandling ved {}", programme.title()),
        "subject": { "reference": subject.reference, "display": subject.display },
        "period": { "start": instant(start) },
        "author": { "reference": author },
        "activity": activities,
    })
}

/// A programme's weekly Questionnaire (shared by its patients).
pub fn questionnaire(programme: Programme) -> Value {
    let mut items: Vec<Value> = programme
        .questions()
        .iter()
        .enumerate()
        .map(|(n, text)| json!({ "linkId": format!("{}", n + 1), "text": text, "type": "boolean", "required": true }))
        .collect();
    items.push(json!({
        "linkId": format!("{}", items.len() + 1),
        "text": "Hvordan har du det i dag, fra 0 (svært dårlig) til 10 (svært godt)?",
        "type": "integer",
        "required": true,
    }));
    let name = programme.questionnaire();
    json!({
        "resourceType": "Questionnaire",
        "id": name,
        "url": format!("{QUESTIONNAIRES}{name}"),
        "version": "1",
        "name": name.replace('-', "_"),
        "title": format!("Ukentlig oppfølging, {}", programme.title()),
        "status": "active",
        "subjectType": ["Patient"],
        "item": items,
    })
}

/// A patient's answers to the programme's questionnaire, given at `at`.
pub fn questionnaire_response(
    rng: &mut Rng,
    id: &str,
    programme: Programme,
    subject: &Subject<'_>,
    at: OffsetDateTime,
) -> Value {
    let mut items: Vec<Value> = programme
        .questions()
        .iter()
        .enumerate()
        .map(|(n, text)| {
            json!({ "linkId": format!("{}", n + 1), "text": text, "answer": [{ "valueBoolean": rng.chance(0.2) }] })
        })
        .collect();
    items.push(json!({
        "linkId": format!("{}", items.len() + 1),
        "text": "Hvordan har du det i dag, fra 0 (svært dårlig) til 10 (svært godt)?",
        "answer": [{ "valueInteger": rng.normal(6.5, 1.8).clamp(0.0, 10.0).round() as i64 }],
    }));
    json!({
        "resourceType": "QuestionnaireResponse",
        "id": id,
        "meta": { "profile": [format!("{DHO}dho-questionnaireresponse")] },
        "questionnaire": format!("{QUESTIONNAIRES}{}", programme.questionnaire()),
        "status": "completed",
        "subject": { "reference": subject.reference, "display": subject.display },
        "authored": instant(at),
        "author": { "reference": subject.reference },
        "item": items,
    })
}

/// A follow-up appointment of half an hour from `start`; `past` ones are over (most fulfilled).
pub fn appointment(
    rng: &mut Rng,
    id: &str,
    subject: &Subject<'_>,
    practitioner: &str,
    start: OffsetDateTime,
    past: bool,
) -> Value {
    let status = match (past, rng.below(20)) {
        (false, _) => "booked",
        (true, 0) => "cancelled",
        (true, 1) => "noshow",
        (true, _) => "fulfilled",
    };
    let video = rng.chance(0.6);
    json!({
        "resourceType": "Appointment",
        "id": id,
        "meta": { "profile": [format!("{DHO}dho-appointment")] },
        "status": status,
        "serviceType": [{ "text": "Oppfølging av hjemmemålinger" }],
        "appointmentType": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0276",
            "code": "FOLLOWUP",
            "display": "A follow up visit from a previous appointment",
        }] },
        "description": if video { "Videokonsultasjon" } else { "Oppmøte på poliklinikken" },
        "start": instant(start),
        "end": instant(start + Duration::minutes(30)),
        "participant": [
            { "actor": { "reference": subject.reference, "display": subject.display }, "required": "required", "status": "accepted" },
            { "actor": { "reference": practitioner }, "required": "required", "status": "accepted" },
        ],
    })
}

/// An instant as FHIR writes it (UTC, whole seconds).
pub fn instant(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .expect("zero nanoseconds")
        .format(&Rfc3339)
        .expect("a date formats")
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
