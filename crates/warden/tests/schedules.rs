//! Cron schedules end to end, through the real binaries: `warden serve` with a schedule from
//! its config file, `warden schedule create` of a schedule firing every second (6 fields),
//! whose task clones a repository served by git's `http-backend`, runs warden's agent against
//! a scripted model and SUCCEEDS; `warden schedule ls/get/pause/next`, the metrics, and bad
//! input: an expression that never fires is refused (by the API, the CLI and at start) and
//! nothing is created or started. Missed runs after downtime are covered with a driven clock
//! in crates/warden-server/tests/schedules.rs.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{Api, DataDir, Server, WARDEN, serve_env, wait_for};
use warden_agent::model::testing::{ScriptedLlm, Turn};
use warden_server::testing_git::{GitServer, GitServerOptions, create_bare_repo};

async fn git_server(repos: &Path) -> GitServer {
    create_bare_repo(repos, "app.git", "main", &[("README.md", "hello\n")]).unwrap();
    GitServer::start(repos, GitServerOptions::default())
        .await
        .unwrap()
}

fn repo_url(git: &GitServer) -> String {
    format!("http://localhost:{}/app.git", git.addr().port())
}

/// The `default` template may reach the git server and nothing else; `schedules` is the
/// config file's schedules section.
fn config(dir: &Path, git: &GitServer, schedules: &str) -> PathBuf {
    let port = git.addr().port();
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[templates.default]\nshutdown_after = \"1h\"\n[templates.default.policy]\n\
             profile = \"default\"\n[templates.default.policy.network]\nmode = \"proxy\"\n\
             allow_domains = [\"localhost\"]\nallow_cidrs = [\"127.0.0.0/8\"]\n\
             allow_ports = [{port}]\n\n{schedules}"
        ),
    )
    .unwrap();
    path
}

fn serve(data: &DataDir, cfg: &Path, llm: &ScriptedLlm) -> Server {
    serve_env(
        data.path(),
        &["--config", cfg.to_str().unwrap(), "--task-concurrency", "1"],
        &[
            ("WARDEN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_BASE_URL", &llm.url()),
            ("ANTHROPIC_API_KEY", "test-key"),
            ("WARDEN_LOG", "info"),
        ],
    )
}

/// `warden schedule ARGS...` against `server`.
fn cli(server: &Server, data: &DataDir, args: &[&str]) -> Output {
    Command::new(WARDEN)
        .arg("schedule")
        .args(args)
        .env("WARDEN_SERVER", &server.url)
        .env("WARDEN_TOKEN", data.token())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_files_a_task_that_runs_to_completion() {
    let repos = tempfile::tempdir().unwrap();
    let git = git_server(repos.path()).await;
    // Each run's agent answers once; a few runs may be filed before the schedule is paused.
    let llm = ScriptedLlm::start(
        (0..20)
            .map(|_| Turn::text("The README is fine; nothing to change."))
            .collect(),
    )
    .await;
    let data = DataDir::new();
    let nightly = format!(
        "[schedules.nightly]\ncron = \"0 3 * * MON-FRI\"\ntimezone = \"Europe/Berlin\"\n\
         missed = \"run-once\"\n[schedules.nightly.task]\nrepo = \"{}\"\n\
         task = \"Update the dependencies\"\n",
        repo_url(&git)
    );
    let cfg = config(data.path(), &git, &nightly);
    let server = serve(&data, &cfg, &llm);
    let api = Api::new(&server, Some(data.token()));

    // The config file's schedule is there, with its next run in its zone.
    let nightly = api.get("/v1/schedules/nightly").json();
    assert_eq!(nightly["missed"], "run-once", "{nightly}");
    let local = nightly["next_run_local"].as_str().unwrap();
    assert!(
        local.ends_with("T03:00:00+01:00") || local.ends_with("T03:00:00+02:00"),
        "{nightly}"
    );

    // An expression that never fires: 400 naming `cron`, nothing created.
    let out = cli(
        &server,
        &data,
        &[
            "create",
            "never",
            "--cron",
            "0 0 30 2 *",
            "--repo",
            &repo_url(&git),
            "--task",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cron: `0 0 30 2 *` never fires"),
        "{}",
        stderr(&out)
    );
    assert_eq!(api.get("/v1/schedules/never").status, 404);
    // Over the API: 400 naming `cron`; nothing started.
    let r = api.put_json(
        "/v1/schedules/never",
        &serde_json::json!({"cron": "0 0 31 11 *", "task": {"repo": repo_url(&git), "task": "x"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"].as_str().unwrap().starts_with("cron: "),
        "{}",
        r.text()
    );
    assert_eq!(api.get("/v1/tasks").json()["tasks"], serde_json::json!([]));

    // Every second, with seconds as a sixth field.
    let out = cli(
        &server,
        &data,
        &[
            "create",
            "every-second",
            "--cron",
            "* * * * * *",
            "--repo",
            &repo_url(&git),
            "--task",
            "Look at the README",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("every-second created; next run"),
        "{}",
        stdout(&out)
    );
    let mut first_task = String::new();
    wait_for(
        "the schedule to file a task",
        Duration::from_secs(30),
        || {
            let s = api.get("/v1/schedules/every-second").json();
            first_task = s["last_task"].as_str().unwrap_or("").to_string();
            !first_task.is_empty()
        },
    );
    let out = cli(&server, &data, &["pause", "every-second"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "every-second paused");

    // The task it filed runs to completion.
    let mut task = Value::Null;
    wait_for(
        "the scheduled task to finish",
        Duration::from_secs(180),
        || {
            task = api.get(&format!("/v1/tasks/{first_task}")).json();
            task["status"] == "SUCCEEDED" || task["status"] == "FAILED"
        },
    );
    assert_eq!(task["status"], "SUCCEEDED", "{task}");
    let key = task["idempotency_key"].as_str().unwrap();
    assert!(key.starts_with("schedule:every-second:"), "{key}");
    assert_eq!(task["task"], "Look at the README");

    // `ls` shows each schedule's next run (the paused one: paused) and last task.
    let out = cli(&server, &data, &["ls"]);
    let ls = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ls.contains("NEXT RUN"), "{ls}");
    let nightly_line = ls.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(nightly_line.contains("T03:00:00+0"), "{ls}");
    let every_line = ls.lines().find(|l| l.starts_with("every-second")).unwrap();
    assert!(every_line.contains("paused"), "{ls}");
    assert!(every_line.contains("task-"), "{ls}");

    let out = cli(&server, &data, &["get", "nightly", "-n", "2"]);
    let get = stdout(&out);
    assert!(
        get.contains("upcoming:") && get.contains("timezone   Europe/Berlin"),
        "{get}"
    );

    // The JSON list has the shape the console reads.
    let out = cli(&server, &data, &["ls", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list["schedules"].as_array().unwrap().len(), 2, "{list}");

    let metrics = api.get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("warden_serve_schedule_runs_total{outcome=\"filed\"}")),
        "{metrics}"
    );

    let out = cli(&server, &data, &["rm", "every-second", "nightly"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        api.get("/v1/schedules").json()["schedules"],
        serde_json::json!([])
    );
}

#[test]
fn next_previews_fire_times_offline() {
    // No server: nothing is reachable at this address.
    let run = |args: &[&str]| {
        Command::new(WARDEN)
            .args(["schedule", "next"])
            .args(args)
            .env("WARDEN_SERVER", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let out = run(&["*/10 * * * * *", "-n", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert!(l.ends_with("0+00:00"), "every tenth second, in UTC: {l}");
    }
    let out = run(&["0 9 * * *", "--tz", "Asia/Tokyo", "-n", "1"]);
    assert!(
        stdout(&out).trim().ends_with("T09:00:00+09:00"),
        "{}",
        stdout(&out)
    );

    let out = run(&["0 0 30 2 *"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("never fires"), "{}", stderr(&out));
    let out = run(&["0 3 * * *", "--tz", "Moon/Base"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("--tz: `Moon/Base`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_config_schedule_that_never_fires_stops_the_start() {
    let data = DataDir::new();
    let cfg = data.path().join("serve.toml");
    std::fs::write(
        &cfg,
        "[schedules.never]\ncron = \"0 0 31 2 *\"\n[schedules.never.task]\n\
         repo = \"https://example.com/org/app.git\"\ntask = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[schedules.never]: cron: `0 0 31 2 *` never fires"),
        "{}",
        stderr(&out)
    );
}
