//! Partial dates, date-times and times with their precision, as FHIRPath compares and computes
//! them: a value known only to the month is neither before nor after another in the same month.

use std::cmp::Ordering;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// Which of the three temporal types a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    Date,
    DateTime,
    Time,
}

/// Components year, month, day, hour, minute, second, millisecond; `precision` of them are
/// known (for a time, counted from the hour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporal {
    pub kind: TemporalKind,
    pub parts: [i64; 7],
    pub precision: usize,
    /// Zone offset in minutes, when one was given.
    pub offset: Option<i64>,
}

const FIRST_TIME_PART: usize = 3;

impl Temporal {
    /// Parses FHIRPath/FHIR text: `2014`, `2014-01-25T14:30:14.559+01:00`, `14:30` (with `kind`
    /// Time). `None` when the text is not one.
    pub fn parse(text: &str, kind: TemporalKind) -> Option<Temporal> {
        let mut parts = [0i64, 1, 1, 0, 0, 0, 0];
        let mut precision = 0;
        let (date, time) = match kind {
            TemporalKind::Time => ("", Some(text)),
            _ => match text.split_once('T') {
                Some((d, t)) => (d, Some(t)),
                None => (text, None),
            },
        };
        if kind != TemporalKind::Time {
            for (i, piece) in date.split('-').enumerate() {
                let expected = if i == 0 { 4 } else { 2 };
                if i > 2 || piece.len() != expected || !piece.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                parts[i] = piece.parse().ok()?;
                precision = i + 1;
            }
        }
        let mut offset = None;
        if let Some(time) = time.filter(|t| !t.is_empty()) {
            if kind == TemporalKind::DateTime && precision < 3 {
                return None;
            }
            let (clock, zone) = split_zone(time)?;
            // A time of day has no zone.
            if kind == TemporalKind::Time && zone.is_some() {
                return None;
            }
            offset = zone;
            let pieces: Vec<&str> = clock.split(':').collect();
            if pieces.len() > 3 || pieces.is_empty() {
                return None;
            }
            for (i, piece) in pieces.iter().enumerate() {
                let (whole, fraction) = match piece.split_once('.') {
                    Some((w, f)) if i == 2 => (w, Some(f)),
                    Some(_) => return None,
                    None => (*piece, None),
                };
                if whole.len() != 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                parts[FIRST_TIME_PART + i] = whole.parse().ok()?;
                precision = FIRST_TIME_PART + i + 1;
                if let Some(fraction) = fraction {
                    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let millis: String = fraction.chars().chain("000".chars()).take(3).collect();
                    parts[6] = millis.parse().ok()?;
                    precision = 7;
                }
            }
        } else if kind == TemporalKind::Time {
            return None;
        }
        let valid = (1..=12).contains(&parts[1])
            && parts[2] >= 1
            && parts[2] <= days_in_month(parts[0], parts[1])
            && parts[3] < 24
            && parts[4] < 60
            && parts[5] < 60;
        valid.then_some(Temporal {
            kind,
            parts,
            precision,
            offset,
        })
    }

    /// The number of digits the value is known to (`precision()`): 4 for a year, 17 for a
    /// date-time to the millisecond, 9 for a time to the millisecond.
    pub fn digits(&self) -> i64 {
        const DIGITS: [i64; 7] = [4, 6, 8, 10, 12, 14, 17];
        let digits = DIGITS[self.precision.max(1) - 1];
        if self.kind == TemporalKind::Time {
            digits - 8
        } else {
            digits
        }
    }

    /// The parts from `known` on set to their least (or, `high`, greatest) possible values.
    fn filled(&self, known: usize, high: bool) -> [i64; 7] {
        let mut parts = self.parts;
        for i in known..7 {
            parts[i] = match (high, i) {
                (false, 1 | 2) => 1,
                (false, _) => 0,
                (true, 1) => 12,
                (true, 2) => days_in_month(parts[0], parts[1]),
                (true, 3) => 23,
                (true, 4 | 5) => 59,
                (true, _) => 999,
            };
        }
        parts
    }

    /// The earliest (`high` false) or latest moment the value stands for, to `digits` digits of
    /// precision (as `digits()` counts them; the finest by default). A date-time without a zone
    /// spans every zone: +14:00 is its earliest, -12:00 its latest.
    pub fn boundary(&self, digits: Option<i64>, high: bool) -> Option<Temporal> {
        let (table, offset): (&[i64], usize) = match self.kind {
            TemporalKind::Time => (&[2, 4, 6, 9], FIRST_TIME_PART),
            _ => (&[4, 6, 8, 10, 12, 14, 17], 0),
        };
        let digits = digits.unwrap_or(*table.last()?);
        let position = table.iter().position(|d| *d == digits)?;
        let precision = offset + position + 1;
        if self.kind == TemporalKind::Date && precision > 3 {
            return None;
        }
        let mut result = self.clone();
        // An hour alone is not a FHIR time; it is read as that hour's first minute.
        let known = if self.precision == 4 {
            5
        } else {
            self.precision
        };
        result.parts = self.filled(known, high);
        result.precision = precision;
        if self.kind == TemporalKind::DateTime && precision > 3 && result.offset.is_none() {
            result.offset = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        if precision <= 3 {
            result.offset = None;
        }
        Some(result)
    }

    /// The span of time a date or date-time stands for, as UTC milliseconds since 1970 (first
    /// and last millisecond, inclusive). No zone is read as UTC. `None` for a time of day.
    pub fn epoch_range(&self) -> Option<(i64, i64)> {
        if self.kind == TemporalKind::Time {
            return None;
        }
        let millis = |high: bool| {
            let p = self.filled(self.precision, high);
            days_from_civil(p[0], p[1], p[2]) * 86_400_000
                + p[3] * 3_600_000
                + p[4] * 60_000
                + p[5] * 1000
                + p[6]
                - self.offset.unwrap_or(0) * 60_000
        };
        Some((millis(false), millis(true)))
    }

    fn first_part(&self) -> usize {
        if self.kind == TemporalKind::Time {
            FIRST_TIME_PART
        } else {
            0
        }
    }

    /// The value in UTC when it has a zone and a time; unchanged otherwise.
    fn normalized(&self) -> Temporal {
        match self.offset {
            Some(offset) if offset != 0 && self.precision > 4 => {
                let mut utc = self.clone();
                utc.add_minutes(-offset);
                utc.offset = Some(0);
                utc
            }
            _ => self.clone(),
        }
    }

    /// Ordering at the precision both values have; `None` when they agree as far as both are
    /// known but one is known further (the order is then uncertain).
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        // With a time of day, a value with a zone and one without cannot be placed on one line.
        if self.offset.is_some() != other.offset.is_some()
            && self.precision > 3
            && other.precision > 3
        {
            return None;
        }
        let (a, b) = (self.normalized(), other.normalized());
        // Seconds and milliseconds count as one precision.
        let level = |p: usize| if p == 7 { 6 } else { p };
        let common = level(a.precision).min(level(b.precision));
        for i in a.first_part()..common.max(a.first_part()) {
            match a.parts[i].cmp(&b.parts[i]) {
                Ordering::Equal => {}
                unequal => return Some(unequal),
            }
        }
        if common == 6 {
            return Some(a.parts[6].cmp(&b.parts[6]));
        }
        (level(a.precision) == level(b.precision)).then_some(Ordering::Equal)
    }

    /// Whether `unit` is a calendar duration a temporal value can be moved by.
    pub fn is_calendar_duration(unit: &str) -> bool {
        calendar_step(unit).is_some()
    }

    /// Adds a calendar duration (`unit` as in FHIRPath: `year(s)`, `'mo'`, `day`, `'s'`…).
    /// `None` for a unit that is not a calendar duration, or a result outside the years a FHIR
    /// date can hold.
    pub fn add(&self, amount: Decimal, unit: &str) -> Option<Temporal> {
        /// More days than years 1 to 9999 hold: anything beyond cannot land in range.
        const SPAN_DAYS: i64 = 10_000 * 366;
        const DAY_MILLIS: i64 = 86_400_000;
        let (step, factor) = calendar_step(unit)?;
        let limit = match step {
            Step::Months => SPAN_DAYS / 28,
            Step::Days => SPAN_DAYS,
            Step::Millis => SPAN_DAYS * DAY_MILLIS,
        };
        let amount = (amount.trunc().to_i64())
            .and_then(|whole| whole.checked_mul(factor))
            .filter(|scaled| scaled.abs() <= limit)?;
        let mut result = self.clone();
        match step {
            Step::Months => result.add_months(amount),
            Step::Days => result.add_days(amount),
            Step::Millis => result.add_millis(amount),
        }
        (result.kind == TemporalKind::Time || (1..=9999).contains(&result.parts[0]))
            .then_some(result)
    }

    fn add_months(&mut self, months: i64) {
        let total = self.parts[0] * 12 + (self.parts[1] - 1) + months;
        self.parts[0] = total.div_euclid(12);
        self.parts[1] = total.rem_euclid(12) + 1;
        self.parts[2] = self.parts[2].min(days_in_month(self.parts[0], self.parts[1]));
    }

    fn add_days(&mut self, days: i64) {
        let (y, m, d) =
            civil_from_days(days_from_civil(self.parts[0], self.parts[1], self.parts[2]) + days);
        self.parts[0] = y;
        self.parts[1] = m;
        self.parts[2] = d;
    }

    fn add_minutes(&mut self, minutes: i64) {
        self.add_millis(minutes * 60_000);
    }

    fn add_millis(&mut self, millis: i64) {
        let day = 86_400_000;
        let of_day = self.parts[3] * 3_600_000
            + self.parts[4] * 60_000
            + self.parts[5] * 1000
            + self.parts[6]
            + millis;
        if self.kind != TemporalKind::Time {
            self.add_days(of_day.div_euclid(day));
        }
        let of_day = of_day.rem_euclid(day);
        self.parts[3] = of_day / 3_600_000;
        self.parts[4] = of_day / 60_000 % 60;
        self.parts[5] = of_day / 1000 % 60;
        self.parts[6] = of_day % 1000;
    }
}

/// What a calendar duration moves, and by how many of them per unit.
enum Step {
    Months,
    Days,
    Millis,
}

/// UCUM's `a` and `mo` are not calendar durations (a year of 365.25 days): `None`, as for any
/// unit that is not one.
fn calendar_step(unit: &str) -> Option<(Step, i64)> {
    Some(match unit {
        "year" | "years" => (Step::Months, 12),
        "month" | "months" => (Step::Months, 1),
        "week" | "weeks" | "wk" => (Step::Days, 7),
        "day" | "days" | "d" => (Step::Days, 1),
        "hour" | "hours" | "h" => (Step::Millis, 3_600_000),
        "minute" | "minutes" | "min" => (Step::Millis, 60_000),
        "second" | "seconds" | "s" => (Step::Millis, 1000),
        "millisecond" | "milliseconds" | "ms" => (Step::Millis, 1),
        _ => return None,
    })
}

impl std::fmt::Display for Temporal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.parts;
        if self.kind != TemporalKind::Time {
            write!(f, "{:04}", p[0])?;
            if self.precision > 1 {
                write!(f, "-{:02}", p[1])?;
            }
            if self.precision > 2 {
                write!(f, "-{:02}", p[2])?;
            }
            if self.kind == TemporalKind::DateTime && self.precision > 3 {
                f.write_str("T")?;
            }
        }
        if self.precision > 3 {
            write!(f, "{:02}", p[3])?;
        }
        if self.precision > 4 {
            write!(f, ":{:02}", p[4])?;
        }
        if self.precision > 5 {
            write!(f, ":{:02}", p[5])?;
        }
        if self.precision > 6 {
            write!(f, ".{:03}", p[6])?;
        }
        if let Some(offset) = self.offset.filter(|_| self.kind == TemporalKind::DateTime) {
            if offset == 0 {
                f.write_str("Z")?;
            } else {
                let sign = if offset < 0 { '-' } else { '+' };
                write!(f, "{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60)?;
            }
        }
        Ok(())
    }
}

fn split_zone(time: &str) -> Option<(&str, Option<i64>)> {
    if let Some(clock) = time.strip_suffix('Z') {
        return Some((clock, Some(0)));
    }
    match time.rfind(['+', '-']) {
        Some(at) => {
            let (clock, zone) = time.split_at(at);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            Some((
                clock,
                Some(sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)),
            ))
        }
        None => Some((time, None)),
    }
}

pub(crate) fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(text: &str) -> Temporal {
        Temporal::parse(text, TemporalKind::DateTime).unwrap()
    }

    #[test]
    fn precision_decides_comparisons() {
        assert_eq!(dt("2014-01").compare(&dt("2014-02")), Some(Ordering::Less));
        assert_eq!(dt("2014-01").compare(&dt("2014-01-05")), None);
        assert_eq!(
            dt("2014-01-01T10:00:00+01:00").compare(&dt("2014-01-01T09:00:00Z")),
            Some(Ordering::Equal)
        );
        assert_eq!(dt("2012-04-15T15:00:00").to_string(), "2012-04-15T15:00:00");
        assert!(Temporal::parse("2014-13", TemporalKind::Date).is_none());
    }

    #[test]
    fn epoch_ranges_honour_precision_and_zone() {
        let day = Temporal::parse("1970-01-02", TemporalKind::Date).unwrap();
        assert_eq!(day.epoch_range(), Some((86_400_000, 2 * 86_400_000 - 1)));
        let instant = dt("1970-01-01T01:00:00+01:00");
        assert_eq!(instant.epoch_range(), Some((0, 999)));
    }

    #[test]
    fn calendar_arithmetic() {
        let d = Temporal::parse("2012-02-29", TemporalKind::Date).unwrap();
        assert_eq!(d.add(1.into(), "year").unwrap().to_string(), "2013-02-28");
        assert_eq!(
            d.add((-30).into(), "days").unwrap().to_string(),
            "2012-01-30"
        );
        let t = Temporal::parse("23:30", TemporalKind::Time).unwrap();
        assert_eq!(t.add(45.into(), "minutes").unwrap().to_string(), "00:15");
    }
}
