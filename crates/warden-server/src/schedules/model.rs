//! What a schedule is: the body of `PUT /v1/schedules/{name}`, the missed-run policy, the
//! stored schedule with its computed times, and what the scheduler does with a due run. Pure.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cron::{CronSchedule, DEFAULT_TIMEZONE};
use crate::tasks::model::{FieldError, TaskSubmission, Timestamp};

/// How late a run may start and still count as on time (a restart, a busy replica): past
/// this, it was missed while no replica was up, and the schedule's [`MissedPolicy`] decides.
pub const MISSED_AFTER: Duration = Duration::from_secs(60);

/// The most runs `run-all` files to catch up: the latest ones; older missed runs are dropped.
pub const RUN_ALL_CAP: usize = 10;

/// What happens to runs missed while no `warden serve` replica was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissedPolicy {
    /// Missed runs are dropped; the schedule goes on with its next future run.
    #[default]
    Skip,
    /// One catch-up run for all the missed ones (as of the latest), then back on schedule.
    RunOnce,
    /// One run for each missed one, oldest first, at most [`RUN_ALL_CAP`] (the latest).
    RunAll,
}

impl MissedPolicy {
    pub const NAMES: &'static str = "skip, run-once, run-all";

    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "skip",
            MissedPolicy::RunOnce => "run-once",
            MissedPolicy::RunAll => "run-all",
        }
    }

    pub fn parse(s: &str) -> Result<MissedPolicy, String> {
        match s {
            "skip" => Ok(MissedPolicy::Skip),
            "run-once" => Ok(MissedPolicy::RunOnce),
            "run-all" => Ok(MissedPolicy::RunAll),
            other => Err(format!(
                "`{other}` is not a missed-run policy; use one of {}",
                MissedPolicy::NAMES
            )),
        }
    }
}

impl fmt::Display for MissedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn yes() -> bool {
    true
}

/// The body of `PUT /v1/schedules/{name}`, and of a `[schedules.NAME]` config section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A DNS label; may be left out (the path's name); must equal it when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 5 fields (`MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`), 6 with seconds first, or
    /// @hourly, @daily, @weekly, @monthly, @yearly.
    #[schema(example = "0 3 * * MON-FRI")]
    pub cron: String,
    /// An IANA time zone the expression is read in [UTC].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// Runs missed while no replica was up: `skip` (default), `run-once` or `run-all`.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// Paused when false [true].
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The task each run files, as `POST /v1/tasks` takes it, without `idempotency_key` (each
    /// run's key is `schedule:<name>:<fire time in ms>`).
    pub task: TaskSubmission,
}

impl ScheduleSpec {
    /// The time zone, with the default applied.
    pub fn timezone(&self) -> &str {
        self.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE)
    }

    /// Checks what can be checked without the server: the name, the expression (it must fire),
    /// the time zone, and that the task carries no idempotency key. Each error names its field.
    pub fn check(&self, name: &str, now: Timestamp) -> Result<CronSchedule, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !warden_policy::is_dns_label(name) {
            errors.push(FieldError {
                field: "name".into(),
                message: format!(
                    "`{name}` is not a schedule name; use 1 to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit"
                ),
            });
        }
        if let Some(n) = &self.name
            && n != name
        {
            errors.push(FieldError {
                field: "name".into(),
                message: format!("`{n}` differs from the name in the path, `{name}`"),
            });
        }
        if self.task.idempotency_key.is_some() {
            errors.push(FieldError {
                field: "task.idempotency_key".into(),
                message: "is set by the schedule for each run (schedule:<name>:<fire time in ms>); leave it out".into(),
            });
        }
        let schedule = CronSchedule::new(&self.cron, self.timezone(), now);
        match schedule {
            Ok(s) if errors.is_empty() => Ok(s),
            Ok(_) => Err(errors),
            Err(mut e) => {
                errors.append(&mut e);
                Err(errors)
            }
        }
    }
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    pub missed: MissedPolicy,
    /// False while paused.
    pub enabled: bool,
    /// The task each run files.
    pub task: TaskSubmission,
    /// The next run (RFC 3339, UTC); null while paused.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run: Option<Timestamp>,
    /// The next run in the schedule's zone, with its offset (`2026-03-29T03:00:00+02:00`).
    pub next_run_local: Option<String>,
    /// Its last run: the fire time (for `run`, the time of the request), whether the run
    /// filed a task (`last_task`) or could not (`last_error`).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_run: Option<Timestamp>,
    /// The id of the task it last filed.
    pub last_task: Option<String>,
    /// Why its last run filed no task (such as a deleted template); null after a good run.
    pub last_error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// With `?next=N`: the next N fire times in the schedule's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcoming: Option<Vec<String>>,
}

/// What the scheduler does with a run that is due: the fire times that file a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePlan {
    /// The fire times to file tasks for, oldest first; empty: the runs were missed and are
    /// skipped.
    pub fires: Vec<Timestamp>,
    /// Some run was missed (not filed on time).
    pub missed: bool,
}

/// Decides a due run. `due` is the stored next run; `recent` the schedule's fire times from
/// `due` to `now`, newest first, at most [`RUN_ALL_CAP`] (`[due]` when no other passed). A
/// run at most [`MISSED_AFTER`] late is on time and fires. Anything older was missed: `skip`
/// drops it all, `run-once` files one task for the latest missed fire time, `run-all` one for
/// each of `recent`. Pure.
pub fn plan_due(
    policy: MissedPolicy,
    due: Timestamp,
    recent: &[Timestamp],
    now: Timestamp,
) -> DuePlan {
    let latest = recent.first().copied().unwrap_or(due).max(due);
    let grace = MISSED_AFTER.as_millis() as i64;
    let on_time = now.millis() - latest.millis() <= grace;
    let missed = latest > due || !on_time;
    let fires = match policy {
        MissedPolicy::Skip if on_time => vec![latest],
        MissedPolicy::Skip => Vec::new(),
        MissedPolicy::RunOnce => vec![latest],
        MissedPolicy::RunAll if recent.is_empty() => vec![latest],
        MissedPolicy::RunAll => {
            let mut all: Vec<Timestamp> = recent.iter().copied().take(RUN_ALL_CAP).collect();
            all.reverse();
            all
        }
    };
    DuePlan { fires, missed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn due_plans() {
        use MissedPolicy::*;
        // (policy, due, latest, now, fire, missed)
        let cases = [
            // On time, or a little late: fires, whatever the policy.
            (
                Skip,
                "10:00:00",
                "10:00:00",
                "10:00:00",
                Some("10:00:00"),
                false,
            ),
            (
                Skip,
                "10:00:00",
                "10:00:00",
                "10:00:59",
                Some("10:00:00"),
                false,
            ),
            (
                RunOnce,
                "10:00:00",
                "10:00:00",
                "10:00:30",
                Some("10:00:00"),
                false,
            ),
            // More than a minute late: missed.
            (Skip, "10:00:00", "10:00:00", "10:05:00", None, true),
            (
                RunOnce,
                "10:00:00",
                "10:00:00",
                "10:05:00",
                Some("10:00:00"),
                true,
            ),
            // Down for hours: skip drops them, run-once files one for the latest.
            (Skip, "10:00:00", "13:00:00", "13:30:00", None, true),
            (
                RunOnce,
                "10:00:00",
                "13:00:00",
                "13:30:00",
                Some("13:00:00"),
                true,
            ),
            // Several passed but the latest is on time: it fires; the older were missed.
            (
                Skip,
                "10:00:00",
                "13:00:00",
                "13:00:10",
                Some("13:00:00"),
                true,
            ),
        ];
        let day = |s: &str| t(&format!("2026-01-10T{s}Z"));
        for (policy, due, latest, now, fire, missed) in cases {
            let got = plan_due(policy, day(due), &[day(latest)], day(now));
            assert_eq!(
                got,
                DuePlan {
                    fires: fire.map(day).into_iter().collect(),
                    missed
                },
                "{policy} due {due} latest {latest} now {now}"
            );
        }
        // run-all: one task per missed run, oldest first; on time, just the one.
        let recent = [
            day("13:00:00"),
            day("12:00:00"),
            day("11:00:00"),
            day("10:00:00"),
        ];
        let got = plan_due(RunAll, day("10:00:00"), &recent, day("13:30:00"));
        assert_eq!(
            got.fires,
            [
                day("10:00:00"),
                day("11:00:00"),
                day("12:00:00"),
                day("13:00:00")
            ]
        );
        assert!(got.missed);
        let got = plan_due(RunAll, day("10:00:00"), &[day("10:00:00")], day("10:00:02"));
        assert_eq!(
            got,
            DuePlan {
                fires: vec![day("10:00:00")],
                missed: false
            }
        );
    }

    #[test]
    fn spec_errors_name_fields() {
        let now = t("2026-01-01T00:00:00Z");
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "other",
            "cron": "0 0 30 2",
            "timezone": "Nowhere/Else",
            "task": {"repo": "https://example.com/r.git", "task": "x", "idempotency_key": "k"}
        }))
        .unwrap();
        let errs = spec.check("Bad_Name", now).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "name", "task.idempotency_key", "cron", "timezone"],
            "{errs:?}"
        );
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "cron": "*/5 * * * * *",
            "task": {"repo": "https://example.com/r.git", "task": "x"}
        }))
        .unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.missed, MissedPolicy::Skip);
        assert_eq!(spec.timezone(), "UTC");
        assert!(spec.check("every-5s", now).is_ok());
        let e = serde_json::from_value::<ScheduleSpec>(serde_json::json!({
            "cron": "* * * * *", "missed": "every",
            "task": {"repo": "https://example.com/r.git", "task": "x"}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("run-once"), "{e}");
        assert_eq!(MissedPolicy::parse("run-once"), Ok(MissedPolicy::RunOnce));
        assert!(
            MissedPolicy::parse("all")
                .unwrap_err()
                .contains("skip, run-once")
        );
    }
}
