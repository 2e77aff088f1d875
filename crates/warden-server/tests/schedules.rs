//! Cron schedules at the library and HTTP level, with a driven clock: the scheduler's passes
//! (`Schedules::tick`) on SQLite and on a real PostgreSQL (`support/postgres.rs`), two
//! replicas on one database firing each due run once, the missed-run policies after
//! downtime, a run whose task cannot be filed, and the API with `oneshot` requests (every
//! validation error names its field; a refused schedule starts nothing). The runner is not
//! started, so filed tasks stay QUEUED; crates/warden/tests/schedules.rs runs them end to end.

#[path = "support/postgres.rs"]
mod postgres_cluster;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_agent::model::Usage;
use warden_agent::run::{RunOutcome, RunStatus};
use warden_sandbox::{Driver, Template};
use warden_server::schedules::scheduler::TickReport;
use warden_server::schedules::{Clock, MissedPolicy, ScheduleSpec, Schedules};
use warden_server::tasks::model::{TaskSubmission, Timestamp};
use warden_server::tasks::runner::{AgentRun, RunnerConfig, TaskAgent, Tasks};
use warden_server::tasks::store::TaskQuery;
use warden_server::tasks::store_sql::SqlTaskStore;
use warden_server::tasks::{Task, TaskStore};
use warden_server::testing::FakeDriver;
use warden_server::{AppState, Auth, Store, app};

use postgres_cluster::PgCluster;

const REPO: &str = "https://git.example/org/app.git";

/// Never runs: the runner is not started in these tests.
struct NoAgent;

#[async_trait]
impl TaskAgent for NoAgent {
    async fn run(&self, _run: AgentRun) -> RunOutcome {
        RunOutcome {
            status: RunStatus::Failed,
            result: String::new(),
            error: Some("not in these tests".into()),
            turns: 0,
            usage: Usage::default(),
            cost_usd: None,
        }
    }
}

/// A clock the test sets.
#[derive(Debug)]
struct TestClock(Mutex<Timestamp>);

impl TestClock {
    fn at(t: &str) -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(at(t))))
    }

    fn set(&self, t: &str) {
        *self.0.lock().unwrap() = at(t);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

fn at(t: &str) -> Timestamp {
    Timestamp::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"))
}

/// A database replicas open handles on.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres {
        _cluster: Arc<PgCluster>,
        url: String,
        data: tempfile::TempDir,
    },
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres(test: &str) -> Db {
        let cluster = postgres_cluster::cluster();
        let url = cluster.database(test).await;
        Db::Postgres {
            _cluster: cluster,
            url,
            data: tempfile::tempdir().unwrap(),
        }
    }

    async fn open(&self) -> SqlTaskStore {
        match self {
            Db::Sqlite(d) => SqlTaskStore::open(None, d.path()).await,
            Db::Postgres { url, data, .. } => SqlTaskStore::open(Some(url), data.path()).await,
        }
        .expect("open the task database")
    }
}

/// One `warden serve` replica: its own pool on the database, a fake driver with the
/// `default` template (which lets sandboxes reach git.example), its tasks and schedules.
struct Replica {
    schedules: Schedules,
    db: SqlTaskStore,
    driver: Arc<FakeDriver>,
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn replica(db: &Db, clock: Arc<TestClock>) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_memory().await.unwrap();
    let driver = Arc::new(FakeDriver::new(Some(Arc::new(store.clone()))));
    for name in ["default", "other"] {
        driver
            .put_template(Template {
                name: name.into(),
                policy: toml::from_str(
                    "[network]\nmode = \"proxy\"\nallow_domains = [\"git.example\"]\n",
                )
                .unwrap(),
                shutdown_after: None,
                idle_timeout: None,
                workspace_quota: None,
            })
            .await
            .unwrap();
    }
    let sql = db.open().await;
    let tasks = Tasks::new(
        Arc::new(sql.clone()),
        driver.clone(),
        Arc::new(NoAgent),
        RunnerConfig::new("test", dir.path().join("agent-runs")),
    );
    let schedules = Schedules::new(sql.clone(), tasks.clone(), clock);
    let d: Arc<dyn Driver> = driver.clone();
    let state = AppState::new(d, store, Auth::Token(token()))
        .with_tasks(tasks)
        .with_schedules(schedules.clone());
    Replica {
        schedules,
        db: sql,
        driver,
        state,
        _dir: dir,
    }
}

fn token() -> String {
    "5c".repeat(32)
}

fn spec(cron: &str, missed: MissedPolicy) -> ScheduleSpec {
    ScheduleSpec {
        name: None,
        cron: cron.into(),
        timezone: None,
        missed,
        enabled: true,
        task: TaskSubmission {
            repo: REPO.into(),
            task: "check the build".into(),
            ..TaskSubmission::default()
        },
    }
}

async fn tasks_of(db: &SqlTaskStore) -> Vec<Task> {
    db.list(&TaskQuery {
        limit: 500,
        ..TaskQuery::default()
    })
    .await
    .unwrap()
    .tasks
}

// ---------------------------------------------------------------------------------------
// Scenarios run on both backends.
// ---------------------------------------------------------------------------------------

/// A schedule fires at its time, once, files its task with the schedule's key, and
/// records it; a pass before the time does nothing.
async fn fires_on_time_and_records_the_run(db: &Db) {
    let clock = TestClock::at("2026-01-10T10:30:00Z");
    let r = replica(db, clock.clone()).await;
    let (s, created) = r
        .schedules
        .put("hourly", spec("0 * * * *", MissedPolicy::Skip))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(s.next_run, Some(at("2026-01-10T11:00:00Z")));
    assert_eq!(
        s.next_run_local.as_deref(),
        Some("2026-01-10T11:00:00+00:00")
    );

    clock.set("2026-01-10T10:59:59.999Z");
    let report = r.schedules.tick().await.unwrap();
    assert_eq!(report.filed, []);
    assert_eq!(report.next_due, Some(at("2026-01-10T11:00:00Z")));
    assert!(tasks_of(&r.db).await.is_empty());

    clock.set("2026-01-10T11:00:00.400Z");
    let report = r.schedules.tick().await.unwrap();
    let fire = at("2026-01-10T11:00:00Z");
    assert_eq!(report.filed.len(), 1, "{report:?}");
    let (name, fired, task_id) = &report.filed[0];
    assert_eq!((name.as_str(), *fired), ("hourly", fire));
    let tasks = tasks_of(&r.db).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(&tasks[0].id, task_id);
    assert_eq!(
        tasks[0].spec.idempotency_key.as_deref(),
        Some(format!("schedule:hourly:{}", fire.millis()).as_str())
    );
    assert_eq!(tasks[0].spec.task, "check the build");

    let s = r.schedules.get("hourly", Some(3)).await.unwrap().unwrap();
    assert_eq!(s.last_run, Some(fire));
    assert_eq!(s.last_task.as_ref(), Some(task_id));
    assert_eq!(s.last_error, None);
    assert_eq!(s.next_run, Some(at("2026-01-10T12:00:00Z")));
    assert_eq!(
        s.upcoming.unwrap(),
        [
            "2026-01-10T12:00:00+00:00",
            "2026-01-10T13:00:00+00:00",
            "2026-01-10T14:00:00+00:00"
        ]
    );

    // The same instant again: nothing is due any more.
    let report = r.schedules.tick().await.unwrap();
    assert_eq!(
        report,
        TickReport {
            next_due: Some(at("2026-01-10T12:00:00Z")),
            ..TickReport::default()
        }
    );
    assert_eq!(tasks_of(&r.db).await.len(), 1);

    // Replacing keeps the history and goes on from the new expression.
    let (s, created) = r
        .schedules
        .put("hourly", spec("30 * * * *", MissedPolicy::RunOnce))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(s.last_task.as_ref(), Some(task_id));
    assert_eq!(s.missed, MissedPolicy::RunOnce);
    assert_eq!(s.next_run, Some(at("2026-01-10T11:30:00Z")));
    assert_eq!(s.created_at, at("2026-01-10T10:30:00Z"));

    // Paused: not due; resumed: from the next fire time after now, nothing caught up.
    r.schedules.set_enabled("hourly", false).await.unwrap();
    clock.set("2026-01-10T14:45:00Z");
    assert_eq!(r.schedules.tick().await.unwrap().filed, []);
    let s = r
        .schedules
        .set_enabled("hourly", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.next_run, Some(at("2026-01-10T15:30:00Z")));
    assert_eq!(r.schedules.tick().await.unwrap().filed, []);
    assert_eq!(tasks_of(&r.db).await.len(), 1);

    assert!(r.schedules.delete("hourly").await.unwrap());
    assert!(!r.schedules.delete("hourly").await.unwrap());
    assert!(r.schedules.list().await.unwrap().is_empty());
}

/// Two replicas on one database, their schedulers passing at the same moment over twenty
/// due schedules: every run is filed exactly once.
async fn two_replicas_fire_each_run_once(db: &Db) {
    let clock = TestClock::at("2026-01-10T10:59:30Z");
    let a = replica(db, clock.clone()).await;
    let b = replica(db, clock.clone()).await;
    for i in 0..20 {
        a.schedules
            .put(&format!("s{i}"), spec("0 11 * * *", MissedPolicy::Skip))
            .await
            .unwrap();
    }
    clock.set("2026-01-10T11:00:01Z");
    let (ra, rb) = tokio::join!(a.schedules.tick(), b.schedules.tick());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.filed.len() + rb.filed.len(), 20, "a: {ra:?}\nb: {rb:?}");
    let tasks = tasks_of(&a.db).await;
    assert_eq!(tasks.len(), 20);
    let mut keys: Vec<String> = tasks
        .iter()
        .filter_map(|t| t.spec.idempotency_key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20, "one task per schedule");
    // A later pass on either replica finds nothing due.
    let (ra, rb) = tokio::join!(a.schedules.tick(), b.schedules.tick());
    assert!(ra.unwrap().filed.is_empty() && rb.unwrap().filed.is_empty());
}

/// A replica that filed a run's task and stopped before claiming the run (the order the
/// scheduler works in): the run is still due, and the next pass, on any replica, files it
/// again with the same key, which gives back the task already filed. Nothing is lost and
/// nothing runs twice.
async fn a_run_filed_by_a_stopped_replica_is_not_lost_or_doubled(db: &Db) {
    let clock = TestClock::at("2026-01-10T10:30:00Z");
    let r = replica(db, clock.clone()).await;
    r.schedules
        .put("hourly", spec("0 * * * *", MissedPolicy::Skip))
        .await
        .unwrap();
    let fire = at("2026-01-10T11:00:00Z");
    // What the stopped replica got done: the task, under the run's key.
    let mut submission = spec("0 * * * *", MissedPolicy::Skip).task;
    submission.idempotency_key = Some(format!("schedule:hourly:{}", fire.millis()));
    let (first, created) = r
        .state
        .tasks()
        .unwrap()
        .submit(submission, None)
        .await
        .unwrap();
    assert!(created);

    clock.set("2026-01-10T11:00:02Z");
    let report = r.schedules.tick().await.unwrap();
    assert_eq!(
        report.filed,
        [("hourly".to_string(), fire, first.id.clone())]
    );
    let tasks = tasks_of(&r.db).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let s = r.schedules.get("hourly", None).await.unwrap().unwrap();
    assert_eq!(s.last_task.as_ref(), Some(&first.id));
    assert_eq!(s.next_run, Some(at("2026-01-10T12:00:00Z")));
}

/// Downtime from 09:30 to 13:30 over an hourly schedule: `skip` files nothing and goes on at
/// 14:00; `run-once` files one task (for 13:00); `run-all` one for each of 10:00 to 13:00,
/// oldest first; a run less than a minute late is on time for all. A longer downtime gives
/// `run-all` its cap: the latest ten.
async fn missed_runs_after_downtime(db: &Db) {
    let clock = TestClock::at("2026-01-10T09:30:00Z");
    let r = replica(db, clock.clone()).await;
    for (name, policy) in [
        ("skipper", MissedPolicy::Skip),
        ("catcher", MissedPolicy::RunOnce),
        ("replayer", MissedPolicy::RunAll),
    ] {
        r.schedules
            .put(name, spec("0 * * * *", policy))
            .await
            .unwrap();
    }

    // The replica comes back at 13:30: runs at 10:00, 11:00, 12:00 and 13:00 were missed.
    clock.set("2026-01-10T13:30:00Z");
    let report = r.schedules.tick().await.unwrap();
    let thirteen = at("2026-01-10T13:00:00Z");
    assert_eq!(report.skipped, [("skipper".to_string(), thirteen)]);
    let filed = |name: &str, report: &TickReport| -> Vec<Timestamp> {
        report
            .filed
            .iter()
            .filter(|f| f.0 == name)
            .map(|f| f.1)
            .collect()
    };
    assert_eq!(filed("catcher", &report), [thirteen]);
    assert_eq!(
        filed("replayer", &report),
        ["10:00", "11:00", "12:00", "13:00"].map(|h| at(&format!("2026-01-10T{h}:00Z")))
    );
    assert_eq!(report.filed.len(), 5, "{report:?}");
    let get = |name: &'static str| {
        let schedules = r.schedules.clone();
        async move { schedules.get(name, None).await.unwrap().unwrap() }
    };
    let (skipper, catcher, replayer) = (
        get("skipper").await,
        get("catcher").await,
        get("replayer").await,
    );
    assert_eq!(skipper.last_run, None);
    assert_eq!(skipper.last_task, None);
    assert_eq!(catcher.last_run, Some(thirteen));
    assert_eq!(replayer.last_run, Some(thirteen));
    for s in [&skipper, &catcher, &replayer] {
        assert_eq!(s.next_run, Some(at("2026-01-10T14:00:00Z")), "{}", s.name);
    }
    let tasks = tasks_of(&r.db).await;
    assert_eq!(tasks.len(), 5);
    assert_eq!(
        replayer.last_task.as_deref(),
        Some(
            report
                .filed
                .iter()
                .find(|f| f.0 == "replayer" && f.1 == thirteen)
                .unwrap()
                .2
                .as_str()
        )
    );

    // Back on schedule: 14:00, seen 20 seconds late, fires once for each.
    clock.set("2026-01-10T14:00:20Z");
    let report = r.schedules.tick().await.unwrap();
    let mut names: Vec<&str> = report.filed.iter().map(|f| f.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["catcher", "replayer", "skipper"]);
    assert!(report.skipped.is_empty());
    assert_eq!(tasks_of(&r.db).await.len(), 8);

    // A restart re-reads the config file, putting the same schedules again while a run is
    // due: the due run is kept, and the policy applies to it.
    clock.set("2026-01-10T16:30:00Z");
    for (name, policy) in [
        ("skipper", MissedPolicy::Skip),
        ("catcher", MissedPolicy::RunOnce),
        ("replayer", MissedPolicy::RunAll),
    ] {
        let (s, created) = r
            .schedules
            .put(name, spec("0 * * * *", policy))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(s.next_run, Some(at("2026-01-10T15:00:00Z")), "{name}");
    }
    let report = r.schedules.tick().await.unwrap();
    assert_eq!(filed("catcher", &report), [at("2026-01-10T16:00:00Z")]);
    assert_eq!(
        filed("replayer", &report),
        [at("2026-01-10T15:00:00Z"), at("2026-01-10T16:00:00Z")]
    );
    assert_eq!(filed("skipper", &report), []);
    assert_eq!(tasks_of(&r.db).await.len(), 11);

    // Two days down: run-all files the latest ten (the 48 missed runs' last ten), no more.
    clock.set("2026-01-12T14:10:00Z");
    let report = r.schedules.tick().await.unwrap();
    let replayed = filed("replayer", &report);
    assert_eq!(
        replayed,
        (5..=14)
            .map(|h| at(&format!("2026-01-12T{h:02}:00:00Z")))
            .collect::<Vec<_>>()
    );
    assert_eq!(filed("catcher", &report), [at("2026-01-12T14:00:00Z")]);
    assert_eq!(filed("skipper", &report), []);
    assert_eq!(tasks_of(&r.db).await.len(), 11 + 10 + 1);
}

/// A run whose template was deleted files no task: the schedule records why, the pass goes
/// on, and the run is not retried; the next run fires once the template is back.
async fn a_failed_run_is_recorded_not_retried(db: &Db) {
    let clock = TestClock::at("2026-01-10T10:30:00Z");
    let r = replica(db, clock.clone()).await;
    let mut s = spec("0 * * * *", MissedPolicy::Skip);
    s.task.template = Some("other".into());
    r.schedules.put("fragile", s).await.unwrap();
    r.driver.delete_template("other").await.unwrap();

    clock.set("2026-01-10T11:00:02Z");
    let report = r.schedules.tick().await.unwrap();
    assert_eq!(report.filed, []);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let s = r.schedules.get("fragile", None).await.unwrap().unwrap();
    let error = s.last_error.expect("the reason is recorded");
    assert!(
        error.contains("template") && error.contains("other"),
        "{error}"
    );
    assert_eq!(s.next_run, Some(at("2026-01-10T12:00:00Z")));
    // Not retried.
    assert_eq!(r.schedules.tick().await.unwrap().failed, []);
    assert!(tasks_of(&r.db).await.is_empty());

    // `run` reports the same problem, naming the field.
    match r.schedules.run_now("fragile").await {
        Err(warden_server::schedules::scheduler::ScheduleError::Invalid(errors)) => {
            assert_eq!(errors[0].field, "task.template", "{errors:?}");
        }
        other => panic!("run_now should fail: {other:?}"),
    }

    r.driver
        .put_template(Template {
            name: "other".into(),
            policy: toml::from_str("[network]\nmode = \"host\"\n").unwrap(),
            shutdown_after: None,
            idle_timeout: None,
            workspace_quota: None,
        })
        .await
        .unwrap();
    clock.set("2026-01-10T12:00:01Z");
    let report = r.schedules.tick().await.unwrap();
    assert_eq!(report.filed.len(), 1);
    let s = r.schedules.get("fragile", None).await.unwrap().unwrap();
    assert_eq!(s.last_error, None);
    assert_eq!(s.last_task.as_deref(), Some(report.filed[0].2.as_str()));
}

/// Six fields: a schedule firing every 10 seconds files one task per fire time.
async fn seconds_and_time_zones(db: &Db) {
    let clock = TestClock::at("2026-03-28T12:00:05Z");
    let r = replica(db, clock.clone()).await;
    r.schedules
        .put("tens", spec("*/10 * * * * *", MissedPolicy::Skip))
        .await
        .unwrap();
    let mut berlin = spec("30 2 * * *", MissedPolicy::Skip);
    berlin.timezone = Some("Europe/Berlin".into());
    let (s, _) = r.schedules.put("berlin", berlin).await.unwrap();
    // 02:30 does not exist in Berlin on 2026-03-29: it fires at 03:00 CEST (01:00 UTC).
    assert_eq!(s.next_run, Some(at("2026-03-29T01:00:00Z")));
    assert_eq!(
        s.next_run_local.as_deref(),
        Some("2026-03-29T03:00:00+02:00")
    );
    for t in ["12:00:10", "12:00:20", "12:00:30"] {
        clock.set(&format!("2026-03-28T{t}.100Z"));
        let report = r.schedules.tick().await.unwrap();
        assert_eq!(report.filed.len(), 1, "{t}");
        assert_eq!(report.filed[0].1, at(&format!("2026-03-28T{t}Z")));
    }
    assert_eq!(tasks_of(&r.db).await.len(), 3);
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&super::Db::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::Db::postgres(stringify!($scenario)).await;
                    super::$scenario(&db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    fires_on_time_and_records_the_run,
    two_replicas_fire_each_run_once,
    a_run_filed_by_a_stopped_replica_is_not_lost_or_doubled,
    missed_runs_after_downtime,
    a_failed_run_is_recorded_not_retried,
    seconds_and_time_zones,
);

// ---------------------------------------------------------------------------------------
// The API.
// ---------------------------------------------------------------------------------------

async fn call(r: &Replica, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", token()));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp: Response = app(r.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test]
async fn api_refuses_bad_schedules_naming_the_field() {
    let db = Db::sqlite();
    let r = replica(&db, TestClock::at("2026-01-10T10:30:00Z")).await;
    let task = json!({"repo": REPO, "task": "check the build"});
    // (body, the field the message names, a part of the message)
    let cases = [
        (
            json!({"cron": "0 0 30 2 *", "task": task}),
            "cron:",
            "never fires",
        ),
        (
            json!({"cron": "0 0 31 4 *", "timezone": "Europe/Berlin", "task": task}),
            "cron:",
            "never fires",
        ),
        (
            json!({"cron": "every day", "task": task}),
            "cron:",
            "6 fields with seconds first",
        ),
        (
            json!({"cron": "99 * * * *", "task": task}),
            "cron:",
            "@daily",
        ),
        (
            json!({"cron": "0 3 * * *", "timezone": "Europe/Atlantis", "task": task}),
            "timezone:",
            "IANA",
        ),
        (
            json!({"cron": "0 3 * * *", "missed": "catch-up", "task": task}),
            "`missed`",
            "run-all",
        ),
        (
            json!({"cron": "0 3 * * *", "task": {"repo": "git@github.com:o/r", "task": "x"}}),
            "task.repo:",
            "https://",
        ),
        (
            json!({"cron": "0 3 * * *", "task": {"repo": REPO, "task": "x", "template": "nope"}}),
            "task.template:",
            "no template `nope`",
        ),
        (
            json!({"cron": "0 3 * * *", "task": {"repo": REPO, "task": "x", "idempotency_key": "k"}}),
            "task.idempotency_key:",
            "leave it out",
        ),
        (
            json!({"cron": "0 3 * * *", "task": task, "colour": "blue"}),
            "colour",
            "unknown field",
        ),
        (
            json!({"name": "other", "cron": "0 3 * * *", "task": task}),
            "name:",
            "differs",
        ),
        (json!({"task": task}), "cron", "missing field"),
    ];
    for (body, field, part) in cases {
        let (status, v) = call(&r, "PUT", "/v1/schedules/nightly", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "INVALID_ARGUMENT");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains(field) && m.contains(part), "{body}: {m}");
    }
    let (status, v) = call(
        &r,
        "PUT",
        "/v1/schedules/Bad_Name",
        Some(json!({"cron": "0 3 * * *", "task": task})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().starts_with("name:"), "{v}");
    // Nothing was created, nothing started.
    let (_, v) = call(&r, "GET", "/v1/schedules", None).await;
    assert_eq!(v, json!({"schedules": []}));
    assert!(tasks_of(&r.db).await.is_empty());
}

#[tokio::test]
async fn api_lifecycle() {
    let db = Db::sqlite();
    let r = replica(&db, TestClock::at("2026-01-10T10:30:00Z")).await;
    let body = json!({
        "cron": "0 9 * * MON-FRI",
        "timezone": "America/New_York",
        "missed": "run-once",
        "task": {"repo": REPO, "task": "triage new issues", "agent": "claude-code"}
    });
    let (status, s) = call(&r, "PUT", "/v1/schedules/triage", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    // 2026-01-10 is a Saturday: next Monday 09:00 EST.
    assert_eq!(s["next_run"], "2026-01-12T14:00:00.000Z");
    assert_eq!(s["next_run_local"], "2026-01-12T09:00:00-05:00");
    assert_eq!(s["missed"], "run-once");
    assert_eq!(s["enabled"], true);
    for field in ["last_run", "last_task", "last_error"] {
        assert_eq!(s[field], Value::Null, "{field}");
    }
    let (status, _) = call(&r, "PUT", "/v1/schedules/triage", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "replaced");

    let (status, list) = call(&r, "GET", "/v1/schedules", None).await;
    assert_eq!(status, StatusCode::OK);
    let first = &list["schedules"][0];
    for field in [
        "name",
        "cron",
        "timezone",
        "missed",
        "enabled",
        "next_run",
        "last_run",
        "last_task",
        "last_error",
        "task",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["task"]["agent"], "claude-code");

    let (status, s) = call(&r, "GET", "/v1/schedules/triage?next=3", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s["upcoming"],
        json!([
            "2026-01-12T09:00:00-05:00",
            "2026-01-13T09:00:00-05:00",
            "2026-01-14T09:00:00-05:00"
        ])
    );
    let (status, v) = call(&r, "GET", "/v1/schedules/triage?next=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().starts_with("next:"), "{v}");

    let (status, s) = call(&r, "POST", "/v1/schedules/triage/pause", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (s["enabled"].clone(), s["next_run"].clone()),
        (json!(false), Value::Null)
    );
    let (_, s) = call(&r, "POST", "/v1/schedules/triage/resume", None).await;
    assert_eq!(s["next_run"], "2026-01-12T14:00:00.000Z");

    let (status, created) = call(&r, "POST", "/v1/schedules/triage/run", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().unwrap();
    let tasks = tasks_of(&r.db).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, id);
    assert!(
        tasks[0]
            .spec
            .idempotency_key
            .as_deref()
            .unwrap()
            .starts_with("schedule:triage:run:")
    );
    let (_, s) = call(&r, "GET", "/v1/schedules/triage", None).await;
    assert_eq!(s["last_task"], id);

    let (status, _) = call(&r, "DELETE", "/v1/schedules/triage", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, path) in [
        ("GET", "/v1/schedules/triage"),
        ("DELETE", "/v1/schedules/triage"),
        ("POST", "/v1/schedules/triage/pause"),
        ("POST", "/v1/schedules/triage/run"),
    ] {
        let (status, _) = call(&r, method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }

    // Without the token: 401.
    let req = Request::get("/v1/schedules").body(Body::empty()).unwrap();
    let resp = app(r.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
