//! A2A end to end, through the real binaries and the official Python client: `warden serve`
//! with an `[a2a]` section runs tasks (its own sandboxes, a repository served by git's
//! `http-backend`, warden's agent against a scripted model) that `a2a-sdk` (PyPI, protocol
//! 1.0) submits, polls, streams, approves, subscribes to, cancels and lists
//! (`tests/a2a/client_flow.py`); `warden a2a card|send` against the same server.
//!
//! Needs what tests/tasks.rs needs, and python3 with `a2a-sdk` (.ci/run installs it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::{DataDir, Server, WARDEN, serve_env};
use warden_agent::model::testing::{ScriptedLlm, Turn};
use warden_server::testing_git::{GitServer, branch_commit};

/// The skill the card must list (from `[a2a] skills_dir`).
const SKILL: &str = "release-notes";

fn repo_url(git: &GitServer) -> String {
    format!("http://localhost:{}/app.git", git.addr().port())
}

/// A checkout with one skill, as `[a2a] skills_dir` reads it.
fn skills_checkout(dir: &Path) -> PathBuf {
    let root = dir.join("checkout");
    let skill = root.join(".claude/skills").join(SKILL);
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        format!("---\nname: {SKILL}\ndescription: Writes release notes from the git log.\n---\n\nRead the log.\n"),
    )
    .unwrap();
    root
}

/// The server's config: the `default` template reaches the git server only; `[a2a]` names
/// the card, the default repository and the skills; `extra` is appended.
fn config(dir: &Path, git: &GitServer, name: &str, extra: &str) -> PathBuf {
    let port = git.addr().port();
    let path = dir.join("serve.toml");
    let skills = skills_checkout(dir);
    std::fs::write(
        &path,
        format!(
            "[templates.default]\nshutdown_after = \"1h\"\n[templates.default.policy]\n\
             profile = \"default\"\n[templates.default.policy.network]\nmode = \"proxy\"\n\
             allow_domains = [\"localhost\"]\nallow_cidrs = [\"127.0.0.0/8\"]\n\
             allow_ports = [{port}]\n\
             [a2a]\nname = \"{name}\"\nrepo = \"{}\"\nskills_dir = \"{}\"\nsend_wait = \"150s\"\n{extra}",
            repo_url(git),
            skills.display()
        ),
    )
    .unwrap();
    path
}

fn start(data: &DataDir, cfg: &Path, llm: &ScriptedLlm) -> Server {
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

/// python3 with a2a-sdk 1.x, or a panic that says how to get it (CI installs it).
fn python_with_sdk() -> &'static str {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import a2a.client, a2a.types; from importlib.metadata import version; \
             assert int(version('a2a-sdk').split('.')[0]) >= 1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with a2a-sdk 1.x is needed: python3 -m pip install 'a2a-sdk==1.3.0' (.ci/run does)"
    );
    "python3"
}

/// The `STEP name {json}` lines of the script's output.
fn steps(out: &str) -> std::collections::BTreeMap<String, Value> {
    out.lines()
        .filter_map(|l| l.strip_prefix("STEP "))
        .map(|l| {
            let (name, json) = l.split_once(' ').unwrap();
            (name.to_string(), serde_json::from_str(json).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_drives_tasks_through_a2a() {
    let python = python_with_sdk();
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    // One turn script for the tasks in the order the client makes them (one runs at a time).
    let llm = ScriptedLlm::start(vec![
        Turn::text("Summary A."),
        Turn::text("Summary B."),
        Turn::tool_call(
            "toolu_ask",
            "Bash",
            json!({"command": "touch approved.txt"}),
        ),
        Turn::text("Touched approved.txt."),
        Turn::hang(),
    ])
    .await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git, "warden-a2a-test", "");
    let server = start(&data, &cfg, &llm);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/a2a/client_flow.py");
    let (url, token) = (server.url.clone(), data.token());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&url, &token, SKILL])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "client_flow.py failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log.lock().unwrap().join("\n")
    );
    eprintln!("{stdout}");
    let s = steps(&stdout);
    assert_eq!(s["card"]["url"], format!("{}/a2a", server.url));
    // The approved call ran in the task's sandbox and was pushed.
    let approval_task = s["approval"]["id"].as_str().unwrap();
    let pushed = branch_commit(
        &repos.path().join("app.git"),
        &format!("warden/{approval_task}"),
    );
    assert!(pushed.is_some(), "the approved task pushed its branch");
    // The A2A task id is the warden task id: the REST API shows the same tasks.
    let api = support::Api::new(&server, Some(data.token()));
    let t = api.get(&format!("/v1/tasks/{approval_task}")).json();
    assert_eq!(t["status"], "SUCCEEDED", "{t}");
    let canceled = api
        .get(&format!(
            "/v1/tasks/{}",
            s["cancel"]["id"].as_str().unwrap()
        ))
        .json();
    assert_eq!(canceled["status"], "CANCELED", "{canceled}");
    // Malformed requests got JSON-RPC's codes.
    let e = &s["errors"];
    assert_eq!(e["parse"], -32700);
    assert_eq!(e["request"], -32600);
    assert_eq!(e["method"], -32601);
    assert_eq!(e["params"], -32602);
    for k in ["unknown_task", "no_text", "bad_repo", "push"] {
        assert!(e.get(k).is_some(), "no {k} error in {e}");
    }
    assert_eq!(s["list"]["total"], 4);
}

/// `warden a2a ARGS...`.
fn a2a_cli(args: &[&str]) -> std::process::Output {
    Command::new(WARDEN)
        .arg("a2a")
        .args(args)
        .env_remove("WARDEN_A2A_TOKEN")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Server A's task delegates a sub-task to server B (a peer in A's `[a2a.peers]`) through
/// the `Delegate` tool: B runs it as an A2A task of its own, and its result comes back to A's
/// agent as the tool's output. A's task is started with `warden a2a send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_delegates_a_sub_task_to_a_peer_agent() {
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    let llm_b = ScriptedLlm::start(vec![Turn::text("Notes written by B.")]).await;
    let data_b = DataDir::new();
    let cfg_b = config(data_b.path(), &git, "helper-b", "");
    let b = start(&data_b, &cfg_b, &llm_b);

    let llm_a = ScriptedLlm::start(vec![
        Turn::tool_call(
            "toolu_delegate",
            "Delegate",
            json!({"agent": "helper", "message": "Write the release notes"}),
        ),
        Turn::text("B did it."),
    ])
    .await;
    let data_a = DataDir::new();
    let token_b = warden_server::auth::token_path(data_b.path());
    let cfg_a = config(
        data_a.path(),
        &git,
        "delegator-a",
        &format!(
            "[a2a.peers.helper]\nurl = \"{}\"\ntoken_file = \"{}\"\ndescription = \"Writes notes\"\n",
            b.url,
            token_b.display()
        ),
    );
    let a = start(&data_a, &cfg_a, &llm_a);

    // The CLI: the card, then a bad token, then the task.
    let out = a2a_cli(&["card", &a.url]);
    assert!(out.status.success(), "{}", text(&out));
    let card = text(&out);
    assert!(
        card.contains("delegator-a") && card.contains(&format!("skill {SKILL}")),
        "{card}"
    );
    assert!(
        card.contains(&format!("JSONRPC 1.0 {}/a2a", a.url)),
        "{card}"
    );
    let bad = data_a.path().join("bad-token");
    std::fs::write(&bad, "nope").unwrap();
    let out = a2a_cli(&[
        "send",
        &a.url,
        "--token-file",
        bad.to_str().unwrap(),
        "-m",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));

    let token_a = warden_server::auth::token_path(data_a.path());
    let token_a = token_a.to_str().unwrap().to_string();
    let url_a = a.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        a2a_cli(&[
            "send",
            &url_a,
            "--token-file",
            &token_a,
            "--stream",
            "--message",
            "Get the release notes written",
        ])
    })
    .await
    .unwrap();
    let shown = text(&out);
    assert!(
        out.status.success(),
        "{shown}\nA:\n{}",
        a.log.lock().unwrap().join("\n")
    );
    assert!(shown.contains("status TASK_STATE_COMPLETED"), "{shown}");
    assert!(shown.contains("B did it."), "{shown}");

    // B's result reached A's agent as the Delegate tool's output.
    let (id, result) = llm_a
        .requests()
        .iter()
        .find_map(|r| r.last_tool_result())
        .expect("A's model got the tool's result");
    assert_eq!(id, "toolu_delegate");
    assert!(result.contains("Notes written by B."), "{result}");
    // B ran it as a task of its own, through A2A.
    let api_b = support::Api::new(&b, Some(data_b.token()));
    let tasks_b = api_b.get("/v1/tasks").json();
    let tasks_b = tasks_b["tasks"].as_array().unwrap();
    assert_eq!(tasks_b.len(), 1, "{tasks_b:?}");
    assert_eq!(tasks_b[0]["task"], "Write the release notes");
    assert_eq!(tasks_b[0]["status"], "SUCCEEDED");
}

/// A bad `[a2a]` section stops `warden serve` at start with exit 64, naming the field.
#[test]
fn a_bad_a2a_section_is_refused_at_start() {
    let data = DataDir::new();
    for (section, needle) in [
        (
            "[a2a]\nskills_dir = \"/nonexistent/checkout\"\n",
            "skills_dir",
        ),
        ("[a2a]\nrepo = \"git@host:org/app.git\"\n", "`repo`"),
        ("[a2a]\nflavour = \"mild\"\n", "flavour"),
        (
            "[a2a.peers.helper]\nurl = \"http://127.0.0.1:9\"\ntoken_file = \"/nonexistent/token\"\n",
            "token_file",
        ),
    ] {
        let cfg = data.path().join("bad.toml");
        std::fs::write(&cfg, section).unwrap();
        let out = Command::new(WARDEN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{section}: {err}");
        assert!(err.contains(needle), "{section}: {err}");
    }
}
