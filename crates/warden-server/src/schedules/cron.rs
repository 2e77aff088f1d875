//! Cron expressions in a time zone, and their fire times. Pure: no I/O, no clock.
//!
//! Parsing and the search for fire times are croner's (on jiff): 5 fields, or 6 with seconds
//! first, or a nickname (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`); croner's
//! extensions (`L`, `W`, `#`, `+`) come along. A year field is refused.
//!
//! Daylight saving time, as croner implements the OCPS rules:
//! * a wall-clock time that does not exist (in the spring-forward gap) fires once, at the
//!   first instant after the gap, for a schedule with a fixed hour (`30 2 * * *` fires at
//!   03:00 on the day clocks jump from 02:00 to 03:00); a schedule that steps through the hours
//!   (`*/15 * * * *`) just has no fires in the missing hour;
//! * a wall-clock time that happens twice (in the fall-back overlap) fires once, at its first
//!   occurrence, for a schedule with a fixed hour; a schedule that steps through the hours keeps
//!   its interval and fires in both passes of the repeated hour.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Zoned;
use jiff::tz::TimeZone;

use crate::tasks::model::{FieldError, Timestamp};

/// The forms `cron` accepts, for error messages and help.
pub const ACCEPTED_FORMS: &str = "5 fields `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK` (such as \
`0 3 * * *` or `*/15 9-17 * * MON-FRI`), 6 fields with seconds first (such as `*/30 * * * * *`), \
or one of @hourly, @daily, @weekly, @monthly, @yearly";

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// A cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: TimeZone,
}

fn field(field: &str, message: String) -> FieldError {
    FieldError {
        field: field.into(),
        message,
    }
}

/// Parses a cron expression; the error says what is wrong and lists the accepted forms.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err(format!("is empty; give {ACCEPTED_FORMS}"));
    }
    if expr.len() > 200 || expr.chars().any(char::is_control) {
        return Err(format!(
            "must be at most 200 printable characters; give {ACCEPTED_FORMS}"
        ));
    }
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{expr}` has {fields} field{}; give {ACCEPTED_FORMS}",
            if fields == 1 { "" } else { "s" }
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a cron expression ({e}); give {ACCEPTED_FORMS}"))
}

/// Looks up an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<TimeZone, String> {
    const HINT: &str = "give an IANA time zone name such as UTC, Europe/Berlin or America/New_York";
    if name.is_empty() {
        return Err(format!("is empty; {HINT}"));
    }
    if name.len() > 100 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`{name}` is not a time zone name; {HINT}"));
    }
    TimeZone::get(name).map_err(|_| format!("`{name}` is not a known time zone; {HINT}"))
}

fn zoned(t: Timestamp, zone: &TimeZone) -> Option<Zoned> {
    jiff::Timestamp::from_millisecond(t.millis())
        .ok()
        .map(|ts| ts.to_zoned(zone.clone()))
}

fn millis(z: &Zoned) -> Timestamp {
    Timestamp(z.timestamp().as_millisecond())
}

impl CronSchedule {
    /// The schedule of `cron` in `timezone`; each error names its field (`cron`, `timezone`).
    /// An expression that matches no time at all (`0 0 30 2 *`) is refused: it never fires.
    pub fn new(
        cron: &str,
        timezone: &str,
        now: Timestamp,
    ) -> Result<CronSchedule, Vec<FieldError>> {
        let mut errors = Vec::new();
        let parsed = parse_cron(cron)
            .map_err(|m| errors.push(field("cron", m)))
            .ok();
        let zone = parse_timezone(timezone)
            .map_err(|m| errors.push(field("timezone", m)))
            .ok();
        let (Some(cron_parsed), Some(zone)) = (parsed, zone) else {
            return Err(errors);
        };
        let schedule = CronSchedule {
            cron: cron_parsed,
            zone,
        };
        if schedule.next_after(now).is_none() {
            return Err(vec![field(
                "cron",
                format!(
                    "`{}` never fires: no date matches it (such as the 30th of February); give {ACCEPTED_FORMS}",
                    cron.trim()
                ),
            )]);
        }
        Ok(schedule)
    }

    /// The first fire time strictly after `t`, or `None` if there is none.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start = zoned(t, &self.zone)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|z| millis(&z))
    }

    /// The last fire time at or before `t`, or `None` if there is none.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let start = zoned(t, &self.zone)?;
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|z| millis(&z))
    }

    /// The fire times from `from` to `to` (both included), newest first, at most `cap`.
    pub fn recent(&self, from: Timestamp, to: Timestamp, cap: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = to;
        while out.len() < cap {
            match self.last_at_or_before(t) {
                Some(fire) if fire >= from => {
                    out.push(fire);
                    t = Timestamp(fire.millis() - 1);
                }
                _ => break,
            }
        }
        out
    }

    /// The next `n` fire times after `t`, in the schedule's zone.
    pub fn upcoming(&self, t: Timestamp, n: usize) -> Vec<Zoned> {
        let Some(start) = zoned(t, &self.zone) else {
            return Vec::new();
        };
        self.cron.iter_after(start).take(n).collect()
    }

    /// `t` as RFC 3339 with the zone's offset (`2026-03-29T03:00:00+02:00`).
    pub fn local(&self, t: Timestamp) -> Option<String> {
        zoned(t, &self.zone).map(|z| rfc3339_local(&z))
    }
}

/// A zoned time as RFC 3339 with its offset, to the second (cron has no finer unit).
pub fn rfc3339_local(z: &Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn next(cron: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let s = CronSchedule::new(cron, tz, at(after)).unwrap();
        s.upcoming(at(after), n).iter().map(rfc3339_local).collect()
    }

    #[test]
    fn fire_times() {
        // (cron, zone, after, expected next fire times in the zone)
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "0 3 * * *",
                "UTC",
                "2026-01-10T12:00:00Z",
                &["2026-01-11T03:00:00+00:00", "2026-01-12T03:00:00+00:00"],
            ),
            // Six fields: seconds first.
            (
                "*/20 * * * * *",
                "UTC",
                "2026-01-10T12:00:05Z",
                &[
                    "2026-01-10T12:00:20+00:00",
                    "2026-01-10T12:00:40+00:00",
                    "2026-01-10T12:01:00+00:00",
                ],
            ),
            (
                "*/15 9-17 * * MON-FRI",
                "UTC",
                "2026-01-09T17:50:00Z", // a Friday, after the last fire
                &["2026-01-12T09:00:00+00:00", "2026-01-12T09:15:00+00:00"],
            ),
            // The zone decides the day and hour.
            (
                "0 9 * * *",
                "Asia/Tokyo",
                "2026-01-10T01:00:00Z", // 10:00 in Tokyo
                &["2026-01-11T09:00:00+09:00"],
            ),
            (
                "0 9 * * *",
                "America/New_York",
                "2026-07-01T12:00:00Z", // 08:00 EDT
                &["2026-07-01T09:00:00-04:00", "2026-07-02T09:00:00-04:00"],
            ),
            // Leap day: only in leap years.
            (
                "0 0 29 2 *",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"],
            ),
            (
                "@hourly",
                "UTC",
                "2026-01-10T12:30:00Z",
                &["2026-01-10T13:00:00+00:00"],
            ),
            (
                "@daily",
                "Europe/Berlin",
                "2026-01-10T12:30:00Z",
                &["2026-01-11T00:00:00+01:00"],
            ),
            // Last day of the month.
            (
                "0 12 L * *",
                "UTC",
                "2026-02-01T00:00:00Z",
                &["2026-02-28T12:00:00+00:00"],
            ),
            // Spring forward in Berlin, 2026-03-29: 02:00 jumps to 03:00. A fixed time in the
            // gap fires once, at the first instant after it; the next day is normal.
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                &["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
            ),
            // A schedule stepping through the hours has no fires in the missing hour.
            (
                "0 * * * *",
                "Europe/Berlin",
                "2026-03-29T00:30:00Z", // 01:30 CET
                &["2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"],
            ),
            // Fall back in Berlin, 2026-10-25: 03:00 goes back to 02:00. A fixed time in the
            // repeated hour fires once, at its first occurrence.
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00Z",
                &["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
            ),
            // A stepping schedule keeps its interval through both passes of the hour.
            (
                "30 * * * *",
                "Europe/Berlin",
                "2026-10-24T23:00:00Z", // 01:00 CEST
                &[
                    "2026-10-25T01:30:00+02:00",
                    "2026-10-25T02:30:00+02:00",
                    "2026-10-25T02:30:00+01:00",
                    "2026-10-25T03:30:00+01:00",
                ],
            ),
        ];
        for (cron, tz, after, want) in cases {
            let got = next(cron, tz, after, want.len());
            assert_eq!(&got, want, "{cron} in {tz} after {after}");
        }
    }

    #[test]
    fn next_after_is_strict_and_last_is_inclusive() {
        let s = CronSchedule::new("0 * * * *", "UTC", at("2026-01-01T00:00:00Z")).unwrap();
        let ten = at("2026-01-10T10:00:00Z");
        assert_eq!(s.next_after(ten), Some(at("2026-01-10T11:00:00Z")));
        assert_eq!(
            s.next_after(Timestamp(ten.millis() - 1)),
            Some(ten),
            "a millisecond before"
        );
        assert_eq!(s.last_at_or_before(ten), Some(ten));
        assert_eq!(
            s.last_at_or_before(at("2026-01-10T13:59:59Z")),
            Some(at("2026-01-10T13:00:00Z"))
        );
        assert_eq!(
            s.recent(at("2026-01-10T08:00:00Z"), at("2026-01-10T10:30:00Z"), 5),
            [ten, at("2026-01-10T09:00:00Z"), at("2026-01-10T08:00:00Z")]
        );
        assert_eq!(
            s.recent(at("2026-01-10T08:00:00Z"), at("2026-01-10T10:30:00Z"), 2),
            [ten, at("2026-01-10T09:00:00Z")]
        );
        assert_eq!(
            s.recent(at("2026-01-10T10:00:01Z"), at("2026-01-10T10:30:00Z"), 2),
            []
        );
        assert_eq!(s.local(ten).as_deref(), Some("2026-01-10T10:00:00+00:00"));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let now = at("2026-01-01T00:00:00Z");
        let cases: &[(&str, &str, &str, &str)] = &[
            // (cron, zone, field, part of the message)
            ("", "UTC", "cron", "is empty"),
            ("* * * *", "UTC", "cron", "has 4 fields"),
            ("0 0 1 1 * 2030 x", "UTC", "cron", "has 7 fields"),
            ("61 * * * *", "UTC", "cron", "not a cron expression"),
            ("0 0 * * FUNDAY", "UTC", "cron", "not a cron expression"),
            ("@reboot", "UTC", "cron", "not a cron expression"),
            ("0 0 30 2 *", "UTC", "cron", "never fires"),
            ("0 0 31 4,6,9,11 *", "UTC", "cron", "never fires"),
            (
                "0 3 * * *",
                "Mars/Olympus",
                "timezone",
                "not a known time zone",
            ),
            ("0 3 * * *", "", "timezone", "is empty"),
            (
                "0 3 * * *",
                "../../etc/passwd",
                "timezone",
                "not a known time zone",
            ),
        ];
        for (cron, tz, field, part) in cases {
            let errs = CronSchedule::new(cron, tz, now).unwrap_err();
            let e = errs
                .iter()
                .find(|e| e.field == *field)
                .unwrap_or_else(|| panic!("{cron:?} {tz:?}: no error for {field}: {errs:?}"));
            assert!(e.message.contains(part), "{cron:?} {tz:?}: {e}");
            if *field == "cron" {
                assert!(e.message.contains("@daily"), "lists the forms: {e}");
            }
        }
        // Both wrong: both named.
        let errs = CronSchedule::new("x", "Nowhere/Else", now).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["cron", "timezone"]);
    }
}
