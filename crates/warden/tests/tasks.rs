//! Tasks end to end, through the real binaries: `warden serve` runs each task in its own
//! sandbox, clones a bare repository served by git's own `http-backend` through the sandbox's
//! egress proxy, runs warden's agent against a scripted model, commits and pushes; `warden
//! task` submits, follows, approves and cancels. Also: bad input, idempotency, a timeout,
//! cancellation, an approval, and a crash of the server with tasks queued and running.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Api, DataDir, Server, WARDEN, serve_env, wait_for};
use warden_agent::model::testing::{ScriptedLlm, Turn};
use warden_server::testing_git::{GitServer, branch_commit, host_git};

/// The server's config: the `default` template may reach the git server (localhost, its
/// port) and nothing else.
fn config(dir: &Path, git: &GitServer) -> std::path::PathBuf {
    let port = git.addr().port();
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[templates.default]\nshutdown_after = \"1h\"\n[templates.default.policy]\n\
             profile = \"default\"\n[templates.default.policy.network]\nmode = \"proxy\"\n\
             allow_domains = [\"localhost\"]\nallow_cidrs = [\"127.0.0.0/8\"]\n\
             allow_ports = [{port}]\n"
        ),
    )
    .unwrap();
    path
}

fn repo_url(git: &GitServer) -> String {
    format!("http://localhost:{}/app.git", git.addr().port())
}

struct World {
    data: DataDir,
    server: Option<Server>,
    api: Api,
    cfg: std::path::PathBuf,
    llm_url: String,
}

impl World {
    fn start(data: DataDir, cfg: std::path::PathBuf, llm: &ScriptedLlm, extra: &[&str]) -> World {
        let llm_url = llm.url();
        let server = start_server(&data, &cfg, &llm_url, extra);
        let api = Api::new(&server, Some(data.token()));
        World {
            data,
            server: Some(server),
            api,
            cfg,
            llm_url,
        }
    }

    fn restart(&mut self, extra: &[&str]) {
        let server = start_server(&self.data, &self.cfg, &self.llm_url, extra);
        self.api = Api::new(&server, Some(self.data.token()));
        self.server = Some(server);
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url.clone()
    }

    /// `warden task ARGS...` against this server.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(WARDEN)
            .arg("task")
            .args(args)
            .env("WARDEN_SERVER", self.url())
            .env("WARDEN_TOKEN", self.data.token())
            .output()
            .unwrap()
    }

    fn task(&self, id: &str) -> Value {
        let r = self.api.get(&format!("/v1/tasks/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn wait_status(&self, id: &str, want: &[&str], timeout: Duration) -> Value {
        let mut last = Value::Null;
        wait_for(&format!("task {id} to reach {want:?}"), timeout, || {
            last = self.task(id);
            want.contains(&last["status"].as_str().unwrap_or(""))
        });
        last
    }

    fn submit(&self, body: Value) -> String {
        let r = self.api.post_json("/v1/tasks", &body);
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    }

    fn events(&self, id: &str) -> Vec<Value> {
        let r = self.api.get(&format!("/v1/tasks/{id}/events"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().as_array().unwrap().clone()
    }
}

fn start_server(data: &DataDir, cfg: &Path, llm_url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    serve_env(
        data.path(),
        &args,
        &[
            ("WARDEN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_BASE_URL", llm_url),
            ("ANTHROPIC_API_KEY", "test-key"),
            ("WARDEN_LOG", "info"),
            ("WARDEN_LOG_FORMAT", "json"),
        ],
    )
}

fn steps(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "step")
        .map(|e| e["data"]["step"].as_str().unwrap().to_string())
        .collect()
}

fn no_sandboxes_left(w: &World) {
    wait_for("the task's sandbox to go", Duration::from_secs(30), || {
        w.api
            .get("/v1/sandboxes")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_clones_runs_the_agent_commits_and_pushes() {
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    let llm = ScriptedLlm::start(vec![
        Turn::tool_call(
            "toolu_1",
            "Bash",
            json!({"command": "printf 'written by the agent\\n' > NOTES.md && git status --short"}),
        )
        .with_usage(100, 20),
        Turn::text("Added NOTES.md with a note.").with_usage(150, 12),
    ])
    .await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git);
    let w = World::start(
        data,
        cfg,
        &llm,
        &["--git-author", "Task Bot <bot@example.com>"],
    );

    let out = w.cli(&[
        "submit",
        "--repo",
        &repo_url(&git),
        "--base",
        "main",
        "--follow",
        "Add a NOTES.md file",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let id = stdout.lines().next().unwrap().trim().to_string();
    assert!(id.starts_with("task-"), "{stdout}");
    // The followed log shows the steps and the end.
    for want in [
        "-- clone",
        "-- branch",
        "-- push",
        "== SUCCEEDED",
        "agent: Bash",
    ] {
        assert!(stdout.contains(want), "no `{want}` in:\n{stdout}");
    }

    let task = w.task(&id);
    assert_eq!(task["status"], "SUCCEEDED", "{task}");
    let branch = format!("warden/{id}");
    assert_eq!(task["new_branch"], branch.as_str());
    let bare = repos.path().join("app.git");
    let pushed = branch_commit(&bare, &branch)
        .unwrap_or_else(|| panic!("the branch was not pushed: {task}\n{:#?}", w.events(&id)));
    assert_eq!(task["commit"], pushed.as_str());
    assert_eq!(
        host_git(&bare, &["show", &format!("{pushed}:NOTES.md")]).unwrap(),
        "written by the agent\n"
    );
    let author = host_git(&bare, &["log", "-1", "--format=%an <%ae>|%s", &pushed]).unwrap();
    assert_eq!(
        author.trim(),
        "Task Bot <bot@example.com>|Add a NOTES.md file"
    );
    assert_eq!(task["summary"], "Added NOTES.md with a note.");
    assert_eq!(task["usage"]["input_tokens"], 250, "{task}");
    assert_eq!(task["usage"]["output_tokens"], 32, "{task}");
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());
    // main is untouched.
    assert_eq!(
        branch_commit(&bare, "main"),
        Some(
            host_git(&bare, &["rev-parse", "main"])
                .unwrap()
                .trim()
                .to_string()
        )
    );

    let events = w.events(&id);
    assert_eq!(
        steps(&events),
        [
            "sandbox",
            "sandbox_ready",
            "clone",
            "branch",
            "agent",
            "commit",
            "push",
            "release"
        ]
    );
    assert_eq!(
        support::statuses(&events),
        ["QUEUED", "RUNNING", "SUCCEEDED"]
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "log" && e["data"]["stream"] == "git:command"),
        "git's commands are in the log"
    );
    no_sandboxes_left(&w);

    // Listing, filtering, the CLI's views.
    let list = w.api.get("/v1/tasks?status=SUCCEEDED").json();
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    assert_eq!(
        w.api.get("/v1/tasks?status=FAILED").json()["tasks"],
        json!([])
    );
    let ls = w.cli(&["ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&id));
    let get = w.cli(&["get", &id]);
    assert!(String::from_utf8_lossy(&get.stdout).contains(&pushed));

    // The metrics count it.
    let metrics = w.api.get("/metrics").text();
    assert!(
        metrics.contains("warden_serve_tasks_finished_total{status=\"SUCCEEDED\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_serve_tasks{status=\"SUCCEEDED\"} 1"),
        "{metrics}"
    );

    // WARDEN_LOG_FORMAT=json: the server's log lines are JSON objects, the task's end among
    // them.
    let log = w.server.as_ref().unwrap().log.lock().unwrap().clone();
    let finished = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|j| j["message"] == "task finished" && j["task"] == id.as_str())
        .unwrap_or_else(|| panic!("no JSON `task finished` line in:\n{}", log.join("\n")));
    assert_eq!(finished["status"], "SUCCEEDED");
    assert_eq!(finished["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_naming_the_field() {
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    let llm = ScriptedLlm::start(vec![Turn::text("Nothing to change.")]).await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git);
    let w = World::start(data, cfg, &llm, &[]);

    let cases: &[(Value, &str)] = &[
        (
            json!({"repo": "ssh://git@x/r", "task": "t"}),
            "repo: scheme `ssh`",
        ),
        (
            json!({"repo": "https://u:p@x/r", "task": "t"}),
            "repo: contains credentials",
        ),
        (
            json!({"repo": repo_url(&git), "task": ""}),
            "task: is empty",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "timeout": "soon"}),
            "timeout: `soon` is not a duration",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "timeout": 0}),
            "timeout:",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "new_branch": "a..b"}),
            "new_branch:",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "agent": "gpt"}),
            "agent: `gpt` is not an agent; use one of warden, claude-code, codex",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "template": "nope"}),
            "template: no template `nope`; this server has: default",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "env": {"LD_PRELOAD": "x"}}),
            "env.LD_PRELOAD:",
        ),
        (
            json!({"repo": repo_url(&git), "task": "t", "colour": 1}),
            "colour",
        ),
        (
            json!({"repo": "http://example.org/app.git", "task": "t"}),
            "repo: example.org is not allowed by template `default`'s egress policy",
        ),
        (
            json!({"repo": "http://localhost:1/app.git", "task": "t"}),
            "repo: port 1 of localhost is not allowed",
        ),
    ];
    for (body, want) in cases {
        let r = w.api.post_json("/v1/tasks", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let j = r.json();
        assert_eq!(j["code"], "INVALID_ARGUMENT");
        assert!(j["message"].as_str().unwrap().contains(want), "{body}: {j}");
    }
    assert!(
        w.api.get("/v1/tasks").json()["tasks"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was queued"
    );
    // The CLI says the same, exit 1.
    let out = w.cli(&["submit", "--repo", "ftp://x/y", "do it"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("repo:"));
    // Unknown ids, bad queries.
    assert_eq!(w.api.get("/v1/tasks/task-doesnotexist").status, 404);
    assert_eq!(w.api.get("/v1/tasks/sbx-1").status, 400);
    let r = w.api.get("/v1/tasks?status=DONE");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("TIMED_OUT"), "{}", r.text());

    // Idempotency: the same key gives the first task back.
    let body = json!({"repo": repo_url(&git), "task": "Look around", "idempotency_key": "k-1"});
    let first = w.api.post_json("/v1/tasks", &body);
    assert_eq!(first.status, 202);
    let again = w.api.post_json("/v1/tasks", &body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.json()["created"], false);
    let id = first.json()["id"].as_str().unwrap().to_string();

    // A task whose agent changed nothing succeeds with "no changes" and pushes nothing.
    let t = w.wait_status(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120));
    assert_eq!(t["status"], "SUCCEEDED", "{t}");
    assert!(
        t["summary"].as_str().unwrap().starts_with("no changes"),
        "{t}"
    );
    assert_eq!(t.get("commit"), None);
    assert_eq!(
        branch_commit(&repos.path().join("app.git"), &format!("warden/{id}")),
        None
    );
    // Cancelling a finished task is a conflict.
    let r = w
        .api
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("has finished (SUCCEEDED)"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_their_log_and_reason() {
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    let llm = ScriptedLlm::start(vec![Turn::hang(), Turn::hang()]).await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git);
    let w = World::start(data, cfg, &llm, &[]);

    // An unknown base branch: FAILED, git's reason kept.
    let id = w.submit(json!({"repo": repo_url(&git), "task": "t", "base_branch": "nope"}));
    let t = w.wait_status(&id, &["FAILED"], Duration::from_secs(120));
    assert!(t["reason"].as_str().unwrap().contains("nope"), "{t}");
    assert!(!w.events(&id).is_empty());

    // A repository that does not exist.
    let missing = format!("http://localhost:{}/missing.git", git.addr().port());
    let id = w.submit(json!({"repo": missing, "task": "t"}));
    let t = w.wait_status(&id, &["FAILED"], Duration::from_secs(120));
    assert!(t["reason"].is_string(), "{t}");

    // A timeout: the model never answers.
    let id = w.submit(json!({"repo": repo_url(&git), "task": "t", "timeout": "3s"}));
    let t = w.wait_status(&id, &["TIMED_OUT"], Duration::from_secs(120));
    assert!(
        t["reason"].as_str().unwrap().contains("timeout of 3s"),
        "{t}"
    );
    assert!(steps(&w.events(&id)).contains(&"release".to_string()));

    // Cancel while running.
    let id = w.submit(json!({"repo": repo_url(&git), "task": "t"}));
    wait_for("the agent to start", Duration::from_secs(120), || {
        steps(&w.events(&id)).contains(&"agent".to_string())
    });
    let out = w.cli(&["cancel", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = w.wait_status(&id, &["CANCELED"], Duration::from_secs(60));
    assert_eq!(t["reason"], "canceled by a client");
    no_sandboxes_left(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_pauses_the_task_until_a_person_answers() {
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    let llm = ScriptedLlm::start(vec![
        Turn::tool_call("toolu_no", "Bash", json!({"command": "touch denied.txt"})),
        Turn::tool_call(
            "toolu_ask",
            "Bash",
            json!({"command": "touch approved.txt"}),
        ),
        Turn::text("Touched approved.txt."),
    ])
    .await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git);
    let w = World::start(data, cfg, &llm, &[]);

    let id = w.submit(json!({"repo": repo_url(&git), "task": "Touch approved.txt"}));
    // The first call is refused, with a reason the model gets.
    w.wait_status(&id, &["WAITING_APPROVAL"], Duration::from_secs(120));
    let out = w.cli(&["deny", &id, "toolu_no", "--reason", "not that one"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the second call to wait", Duration::from_secs(60), || {
        let r = w.api.get(&format!("/v1/tasks/{id}/approvals")).json();
        r.as_array()
            .unwrap()
            .iter()
            .any(|p| p["call_id"] == "toolu_ask")
    });
    let pending = w.cli(&["approvals", &id]);
    let listing = String::from_utf8_lossy(&pending.stdout);
    assert!(listing.contains("toolu_ask"), "{listing}");
    assert!(listing.contains("touch approved.txt"), "{listing}");
    let out = w.cli(&["approve", &id, "toolu_ask"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = w.wait_status(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120));
    assert_eq!(t["status"], "SUCCEEDED", "{t}");
    let pushed = branch_commit(&repos.path().join("app.git"), &format!("warden/{id}")).unwrap();
    let files = host_git(
        &repos.path().join("app.git"),
        &["show", "--name-only", "--format=", &pushed],
    )
    .unwrap();
    assert!(files.contains("approved.txt"), "{files}");
    assert!(!files.contains("denied.txt"), "{files}");
    let denied = llm
        .requests()
        .iter()
        .find_map(|r| {
            r.tool_results()
                .into_iter()
                .find(|(id, _)| id == "toolu_no")
        })
        .expect("the model was told");
    assert!(denied.1.contains("not that one"), "{denied:?}");
    assert_eq!(
        support::statuses(&w.events(&id)),
        [
            "QUEUED",
            "RUNNING",
            "WAITING_APPROVAL",
            "RUNNING",
            "WAITING_APPROVAL",
            "RUNNING",
            "SUCCEEDED"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_queued_tasks_run_and_the_running_one_fails_explicitly() {
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    // The first task's model call never returns; the others' agents change nothing.
    let llm = ScriptedLlm::start(vec![
        Turn::hang(),
        Turn::text("Nothing to do."),
        Turn::text("Nothing to do."),
    ])
    .await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git);
    let mut w = World::start(data, cfg, &llm, &["--task-concurrency", "1"]);

    let first = w.submit(json!({"repo": repo_url(&git), "task": "first"}));
    w.wait_status(&first, &["RUNNING"], Duration::from_secs(60));
    wait_for("the first agent to start", Duration::from_secs(120), || {
        steps(&w.events(&first)).contains(&"agent".to_string())
    });
    let second = w.submit(json!({"repo": repo_url(&git), "task": "second"}));
    let third = w.submit(json!({"repo": repo_url(&git), "task": "third"}));
    assert_eq!(w.task(&second)["status"], "QUEUED");

    w.server.take().unwrap().crash();
    w.restart(&["--task-concurrency", "1"]);

    let t = w.wait_status(&first, &["FAILED"], Duration::from_secs(60));
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("stopped while the task ran"),
        "{t}"
    );
    assert_eq!(t["attempts"], 1, "never run twice");
    for id in [&second, &third] {
        let t = w.wait_status(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120));
        assert_eq!(t["status"], "SUCCEEDED", "{t}");
        assert_eq!(t["attempts"], 1);
    }
    no_sandboxes_left(&w);
}
