//! `warden schedule ...`: the client of `warden serve`'s schedule API, and `next`, which
//! previews an expression's fire times offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value, json};
use warden_server::api_tasks::TaskCreated;
use warden_server::client::{Client, DEFAULT_SERVER, encode_segment, full};
use warden_server::schedules::cron::{ACCEPTED_FORMS, CronSchedule, rfc3339_local};
use warden_server::schedules::scheduler::MISSED_HELP;
use warden_server::schedules::{MissedPolicy, Schedule};
use warden_server::tasks::model::Timestamp;

use crate::sandbox_cmd::{Failure, find_token, print_json, short, table, usage};

const SCHEDULE_HELP: &str = "\
A schedule files a task (the same fields as `warden task submit`) on a cron expression read in
a time zone. `warden serve` keeps schedules in its task database; every replica sharing it runs
the scheduler, and each run is filed once, with the idempotency key
schedule:NAME:FIRE-TIME-MS.

Expressions: 5 fields `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`, 6 with seconds first, or
@hourly, @daily, @weekly, @monthly, @yearly. Fields take *, lists (1,15), ranges (9-17), steps
(*/15), names (MON-FRI, JAN), L (last day of the month), nW (nearest weekday) and d#n (the nth
weekday of the month). An expression that never fires, such as `0 0 30 2 *`, is refused.

Time zones are IANA names (Europe/Berlin), default UTC. Daylight saving time: a time that does
not exist on the day clocks spring forward fires once, at the first instant after the gap (a
schedule stepping through the hours just has no fires in the missing hour); a time that
happens twice when clocks fall back fires once, at its first occurrence (a schedule stepping
through the hours keeps its interval through both passes).

Missed runs (--missed): runs missed while no warden serve replica was up (more than a minute
late): `skip` (the default) drops them and goes on with the next future run; `run-once` files
one task for them all, as of the latest missed fire time; `run-all` files one for each, oldest
first, the latest 10 at most. Then the schedule goes on. A paused schedule misses nothing:
resumed, it goes on from its next fire time.

A run that cannot file its task (its template was deleted) is shown as LAST ERROR and not
retried; the schedule goes on with its next run.

The server and token are found as for `warden task`: --server or WARDEN_SERVER, WARDEN_TOKEN or
the token file of --data. `warden schedule next` needs no server.

Exit status: 0 on success, 1 when the server refused, 64 for bad arguments, 69 when the server
is unreachable.

Examples:
  warden schedule create nightly --cron '0 3 * * MON-FRI' --tz Europe/Berlin \\
      --repo https://github.com/org/app.git --task 'Update the dependencies and fix what breaks'
  warden schedule create every-10s --cron '*/10 * * * * *' --missed run-once \\
      --repo https://github.com/org/app.git --task 'Check the build'
  warden schedule ls
  warden schedule get nightly -n 5
  warden schedule pause nightly
  warden schedule run nightly
  warden schedule next '30 2 * * *' --tz Europe/Berlin -n 3";

/// Cron schedules of a running `warden serve`: tasks filed on a cron expression.
#[derive(Debug, Args)]
#[command(after_long_help = SCHEDULE_HELP, after_help = "See `warden schedule --help` for expressions, time zones, missed runs and examples.")]
pub struct ScheduleArgs {
    /// The server's URL.
    #[arg(long, global = true, value_name = "URL", env = "WARDEN_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The server's data directory, to read its token file (unless WARDEN_TOKEN is set).
    #[arg(long, global = true, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Schedules with their next and last runs.
    Ls,
    /// One schedule, with its next fire times.
    Get {
        name: String,
        /// How many next fire times to list (1 to 100).
        #[arg(short = 'n', long = "next", value_name = "N", default_value_t = 5)]
        next: usize,
    },
    /// Create or replace a schedule.
    Create(Box<CreateArgs>),
    /// Delete a schedule (the tasks it filed stay).
    Rm { names: Vec<String> },
    /// Pause a schedule: no runs until it is resumed.
    Pause { name: String },
    /// Resume a paused schedule from its next fire time.
    Resume { name: String },
    /// File the schedule's task now; prints the task's id.
    Run { name: String },
    /// Preview an expression's next fire times (offline).
    Next(NextArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// A DNS label: lower-case letters, digits and `-`.
    name: String,
    #[arg(long, value_name = "EXPR", help = format!("The expression: {ACCEPTED_FORMS}"))]
    cron: String,
    /// The IANA time zone the expression is read in [UTC].
    #[arg(long = "tz", value_name = "ZONE")]
    timezone: Option<String>,
    #[arg(long, value_name = "POLICY", value_parser = parse_missed, help = format!("skip, run-once or run-all [skip]. {MISSED_HELP}"))]
    missed: Option<MissedPolicy>,
    /// Create it paused.
    #[arg(long)]
    paused: bool,
    /// The repository's https:// URL.
    #[arg(long, value_name = "URL")]
    repo: String,
    /// What each run's agent should do.
    #[arg(long, value_name = "TEXT")]
    task: String,
    #[command(flatten)]
    options: crate::task_cmd::TaskOptions,
}

#[derive(Debug, Args)]
struct NextArgs {
    /// The expression: 5 fields, 6 with seconds first, or @daily...
    cron: String,
    /// The IANA time zone [UTC].
    #[arg(long = "tz", value_name = "ZONE", default_value = "UTC")]
    timezone: String,
    /// How many fire times (1 to 100).
    #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 5)]
    count: usize,
}

fn parse_missed(s: &str) -> Result<MissedPolicy, String> {
    MissedPolicy::parse(s)
}

pub fn main(args: ScheduleArgs) -> ExitCode {
    crate::sandbox_cmd::run_client("schedule", run(args))
}

type Outcome = Result<ExitCode, Failure>;

fn schedule_path(name: &str) -> String {
    format!("/v1/schedules/{}", encode_segment(name))
}

async fn run(args: ScheduleArgs) -> Outcome {
    let json = args.json;
    if let ScheduleCommand::Next(n) = &args.command {
        return next(n, json);
    }
    let token = find_token(args.data.as_deref())?;
    let client = Client::new(&args.server, token).map_err(|e| usage(e.to_string()))?;
    match args.command {
        ScheduleCommand::Next(_) => Ok(ExitCode::SUCCESS),
        ScheduleCommand::Ls => ls(&client, json).await,
        ScheduleCommand::Get { name, next } => {
            if !(1..=100).contains(&next) {
                return Err(usage(format!(
                    "--next: {next} is out of range; use 1 to 100"
                )));
            }
            let s: Schedule = client
                .json(
                    Method::GET,
                    &format!("{}?next={next}", schedule_path(&name)),
                    None::<&()>,
                )
                .await?;
            if json {
                print_json(&s);
            } else {
                print_schedule(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Create(c) => create(&client, *c, json).await,
        ScheduleCommand::Rm { names } => {
            if names.is_empty() {
                return Err(usage("name the schedules to delete"));
            }
            let mut failed = None;
            for name in &names {
                match client
                    .json::<Value, ()>(Method::DELETE, &schedule_path(name), None)
                    .await
                {
                    Ok(_) if json => print_json(&json!({"name": name, "deleted": true})),
                    Ok(_) => println!("{name} deleted"),
                    Err(e) => {
                        let f = Failure::from(e);
                        say!("warden schedule: {}", f.message);
                        failed = Some(f.code);
                    }
                }
            }
            Ok(failed.map(ExitCode::from).unwrap_or(ExitCode::SUCCESS))
        }
        ScheduleCommand::Pause { name } => toggle(&client, &name, "pause", json).await,
        ScheduleCommand::Resume { name } => toggle(&client, &name, "resume", json).await,
        ScheduleCommand::Run { name } => {
            let created: TaskCreated = client
                .json(
                    Method::POST,
                    &format!("{}/run", schedule_path(&name)),
                    None::<&()>,
                )
                .await?;
            if json {
                print_json(&created);
            } else {
                println!("{}", created.id);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn next(n: &NextArgs, json: bool) -> Outcome {
    if !(1..=100).contains(&n.count) {
        return Err(usage(format!(
            "--count: {} is out of range; use 1 to 100",
            n.count
        )));
    }
    let now = Timestamp::now();
    let schedule = CronSchedule::new(&n.cron, &n.timezone, now).map_err(|errors| {
        let flag = |f: &str| if f == "timezone" { "--tz" } else { "CRON" };
        usage(
            errors
                .iter()
                .map(|e| format!("{}: {}", flag(&e.field), e.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let times: Vec<String> = schedule
        .upcoming(now, n.count)
        .iter()
        .map(rfc3339_local)
        .collect();
    if json {
        print_json(&times);
    } else {
        for t in times {
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(client: &Client, c: CreateArgs, json: bool) -> Outcome {
    let mut task = json!({"repo": c.repo, "task": c.task});
    c.options.apply(&mut task);
    let mut body = json!({"cron": c.cron, "enabled": !c.paused, "task": task});
    if let Some(tz) = c.timezone {
        body["timezone"] = Value::String(tz);
    }
    if let Some(m) = c.missed {
        body["missed"] = Value::String(m.as_str().to_string());
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| usage(e.to_string()))?;
    let resp = client
        .send(
            Method::PUT,
            &schedule_path(&c.name),
            Some("application/json"),
            full(bytes),
        )
        .await?;
    let created = resp.status().as_u16() == 201;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure {
            code: 1,
            message: format!("reading the answer: {e}"),
        })?
        .to_bytes();
    let s: Schedule = serde_json::from_slice(&bytes).map_err(|e| Failure {
        code: 1,
        message: format!("unexpected answer: {e}"),
    })?;
    if json {
        print_json(&s);
    } else {
        println!(
            "{} {}; next run {}",
            s.name,
            if created { "created" } else { "replaced" },
            next_run(&s)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn toggle(client: &Client, name: &str, action: &str, json: bool) -> Outcome {
    let s: Schedule = client
        .json(
            Method::POST,
            &format!("{}/{action}", schedule_path(name)),
            None::<&()>,
        )
        .await?;
    if json {
        print_json(&s);
    } else if s.enabled {
        println!("{name} resumed; next run {}", next_run(&s));
    } else {
        println!("{name} paused");
    }
    Ok(ExitCode::SUCCESS)
}

/// The next run in the schedule's zone and how far off it is, or `paused`.
fn next_run(s: &Schedule) -> String {
    match (s.next_run, &s.next_run_local) {
        (Some(t), Some(local)) => {
            let secs = ((t.millis() - Timestamp::now().millis()).max(0) / 1000) as u64;
            format!("{local} (in {})", short(secs))
        }
        (Some(t), None) => t.rfc3339(),
        _ => "paused".into(),
    }
}

async fn ls(client: &Client, json: bool) -> Outcome {
    let list: Value = client
        .json(Method::GET, "/v1/schedules", None::<&()>)
        .await?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let schedules: Vec<Schedule> =
        serde_json::from_value(list["schedules"].clone()).map_err(|e| Failure {
            code: 1,
            message: format!("unexpected answer: {e}"),
        })?;
    if schedules.is_empty() {
        println!("no schedules (create one with `warden schedule create`)");
        return Ok(ExitCode::SUCCESS);
    }
    table(
        &[
            "NAME",
            "CRON",
            "TZ",
            "NEXT RUN",
            "LAST RUN",
            "LAST TASK",
            "LAST ERROR",
        ],
        schedules
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.cron.clone(),
                    s.timezone.clone(),
                    next_run(s),
                    s.last_run.map_or_else(|| "-".into(), |t| t.rfc3339()),
                    s.last_task.clone().unwrap_or_else(|| "-".into()),
                    s.last_error
                        .as_deref()
                        .map_or_else(|| "-".into(), |e| e.chars().take(60).collect()),
                ]
            })
            .collect(),
    );
    Ok(ExitCode::SUCCESS)
}

fn print_schedule(s: &Schedule) {
    let mut rows: Vec<(&str, String)> = vec![
        ("name", s.name.clone()),
        ("cron", s.cron.clone()),
        ("timezone", s.timezone.clone()),
        ("missed", s.missed.to_string()),
        ("enabled", s.enabled.to_string()),
        ("next run", next_run(s)),
        (
            "last run",
            s.last_run.map_or_else(|| "-".into(), |t| t.rfc3339()),
        ),
        (
            "last task",
            s.last_task.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(e) = &s.last_error {
        rows.push(("last error", e.clone()));
    }
    rows.push(("repo", s.task.repo.clone()));
    rows.push(("task", s.task.task.clone()));
    if let Some(t) = &s.task.template {
        rows.push(("template", t.clone()));
    }
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    if let Some(up) = &s.upcoming {
        println!("upcoming:");
        for t in up {
            println!("  {t}");
        }
    }
}
