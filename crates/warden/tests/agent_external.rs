//! External agents end to end: the real Claude Code CLI (`claude`) and Codex CLI (`codex`)
//! run inside a real sandbox (the local driver: a detached `warden run` holding sandboxd),
//! reach a scripted model on the host only through the sandbox's egress proxy credential
//! route, and the tool calls the model asks for run inside the sandbox.
//!
//! Needs root or unprivileged user namespaces, Landlock and seccomp, and both CLIs on the
//! `PATH` (`.ci/run` installs them with npm). A missing CLI fails the test: it is never
//! skipped.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{DataDir, WARDEN};
use warden_agent::model::testing::{RecordedRequest, ScriptedLlm, Turn};
use warden_agent::run::external::{ExternalAgent, ExternalOptions, PLACEHOLDER_KEY, run_external};
use warden_agent::run::{AgentEvent, DriverHost, EventSink, RunStatus, ToolHost};
use warden_sandbox::{CreateRequest, Driver, LocalConfig, LocalDriver, MemoryStore, Template};
use warden_sandboxd::proto::{Command, ExecRequest};

/// Fails with a clear message when the CLI is not installed.
fn require_cli(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed; this test needs it: \
         npm install -g @anthropic-ai/claude-code@2.1.197 @openai/codex@0.169.0 (.ci/run does)"
    );
}

/// A sandbox whose policy serves one credential route, `route`, to `upstream`, with the
/// real key read on the host from a file the sandbox cannot see.
struct RoutedSandbox {
    driver: Arc<LocalDriver>,
    id: String,
    workspace: PathBuf,
    secret_file: PathBuf,
    /// The output of the sandbox's `warden run`: egress refusals are reported there.
    log: PathBuf,
}

async fn routed_sandbox(
    data: &DataDir,
    route: &str,
    upstream: &str,
    secret: &str,
) -> RoutedSandbox {
    use std::os::unix::fs::PermissionsExt;
    let secret_file = data.path().join(format!("{route}-key"));
    std::fs::write(&secret_file, secret).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let policy = format!(
        "[routes.{route}]\nupstream = \"{upstream}\"\ncredential = {{ file = \"{}\" }}\n",
        secret_file.display()
    );
    let cfg = LocalConfig::with_exe(data.path(), WARDEN);
    let driver = Arc::new(LocalDriver::new(cfg, Arc::new(MemoryStore::new())).unwrap());
    driver
        .put_template(Template {
            name: "agent".into(),
            policy: toml::from_str(&policy).unwrap(),
            shutdown_after: None,
            idle_timeout: None,
            workspace_quota: None,
        })
        .await
        .unwrap();
    let info = driver
        .create(CreateRequest {
            template: "agent".into(),
            ..CreateRequest::default()
        })
        .await
        .unwrap();
    RoutedSandbox {
        workspace: data.workspace(&info.id),
        log: data.sandbox_dir(&info.id).join("log"),
        id: info.id,
        driver,
        secret_file,
    }
}

/// A sink that keeps every event.
fn collecting_sink() -> (EventSink, Arc<Mutex<Vec<AgentEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&events);
    let sink = EventSink::new(
        "run-e2e",
        None,
        None,
        Some(Box::new(move |e: &AgentEvent| {
            kept.lock().unwrap().push(e.clone())
        })),
    )
    .unwrap();
    (sink, events)
}

/// The command the model asks for: writes a file in the workspace and prints what only the
/// inside of a sandbox shows (its hostname, a one-id user namespace), whether the host's key
/// file is visible, and the key the sandbox holds.
fn probe_command(secret_file: &Path, key_var: &str) -> String {
    format!(
        "echo made-in-sandbox > proof.txt; \
         echo \"hostname=$(cat /proc/sys/kernel/hostname)\"; \
         echo \"uid_range=$(awk '{{print $3}}' /proc/self/uid_map)\"; \
         if cat {} >/dev/null 2>&1; then echo secret-file=visible; else echo secret-file=hidden; fi; \
         echo \"key=${key_var}\"; env | sort",
        secret_file.display()
    )
}

/// The tool result checks the model's second turn makes (it sees what the CLI sent back).
fn expect_sandboxed(r: &RecordedRequest) -> Result<(), String> {
    let (_, output) = r.last_tool_result().ok_or("no tool result")?;
    for want in ["hostname=warden", "uid_range=1", "secret-file=hidden"] {
        if !output.contains(want) {
            return Err(format!("the tool result lacks {want}: {output}"));
        }
    }
    Ok(())
}

/// What every external run must show: the tool call ran in the sandbox, the real key
/// reached the model server and never the sandbox.
fn check_run(
    events: &[AgentEvent],
    sandbox: &RoutedSandbox,
    llm: &ScriptedLlm,
    tool: &str,
    key_header: &str,
    key_value: &str,
    secret: &str,
) {
    let kinds: Vec<&str> = events.iter().map(AgentEvent::kind).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    let call = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolCall {
                call_id, tool: t, ..
            } if t == tool => Some(call_id.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {tool} tool call: {events:#?}"));
    let output = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolResult {
                call_id,
                tool: t,
                is_error,
                output,
                ..
            } if *call_id == call => {
                assert_eq!(t, tool);
                assert!(!is_error, "{output}");
                Some(output.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no result of {call}: {events:#?}"));
    // The command ran inside the sandbox: its hostname and user namespace, and its file in
    // the sandbox's workspace.
    assert!(output.contains("hostname=warden"), "{output}");
    assert!(output.contains("uid_range=1"), "{output}");
    assert!(output.contains("secret-file=hidden"), "{output}");
    assert!(
        output.contains(&format!("key={PLACEHOLDER_KEY}")),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.workspace.join("proof.txt")).unwrap(),
        "made-in-sandbox\n"
    );
    // The secret is nowhere in the sandbox's environment or in any event.
    for e in events {
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.contains(secret), "the secret is in an event: {text}");
    }
    // The model server saw the real key on every request, never the placeholder.
    let requests = llm.requests();
    assert!(requests.len() >= 2, "{} requests", requests.len());
    for r in &requests {
        assert_eq!(
            r.headers.get(key_header).map(String::as_str),
            Some(key_value),
            "{:?}",
            r.headers
        );
        assert!(
            !r.headers.values().any(|v| v.contains(PLACEHOLDER_KEY)),
            "{:?}",
            r.headers
        );
    }
    assert!(llm.failures().is_empty(), "{:?}", llm.failures());
    // The CLI called nothing but its model: no telemetry, update check or plugin sync was
    // tried (the proxy would have refused and said so).
    let log = std::fs::read_to_string(&sandbox.log).unwrap();
    assert!(!log.contains("refused"), "{log}");
    assert!(!log.contains(secret));
}

async fn sandbox_env(host: &DriverHost, var: &str) -> String {
    let req = ExecRequest::new(Command::Argv(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("printf %s \"${var}\""),
    ]));
    host.exec(req).await.unwrap().stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_in_the_sandbox_through_the_credential_route() {
    require_cli("claude");
    const SECRET: &str = "sk-ant-e2e-real-key-5b0e7c2a9d14";
    let data = DataDir::new();
    let llm = ScriptedLlm::start(Vec::new()).await;
    let sandbox = routed_sandbox(&data, "anthropic", &llm.url(), SECRET).await;
    let host = DriverHost {
        driver: sandbox.driver.clone(),
        sandbox: sandbox.id.clone(),
        workspace: sandbox.workspace.clone(),
    };
    // The route as the sandbox sees it.
    let base_url = sandbox_env(&host, "ANTHROPIC_BASE_URL").await;
    assert_eq!(base_url, "http://127.0.0.1:3128/anthropic");
    assert_eq!(
        sandbox_env(&host, "ANTHROPIC_API_KEY").await,
        PLACEHOLDER_KEY
    );

    let probe = probe_command(&sandbox.secret_file, "ANTHROPIC_API_KEY");
    llm.push([
        Turn::tool_call(
            "toolu_e2e_1",
            "Bash",
            json!({"command": probe, "description": "Prove the sandbox"}),
        )
        .with_text("Checking where I run."),
        Turn::text("Done: it runs in a warden sandbox.").expect(expect_sandboxed),
    ]);
    let (sink, events) = collecting_sink();
    let mut opts = ExternalOptions::new("Show where you run.", base_url);
    opts.run_id = "run-e2e".into();
    opts.model = Some("claude-sonnet-4-5".into());
    opts.max_turns = Some(5);
    opts.timeout = Some(Duration::from_secs(180));
    let outcome = run_external(
        ExternalAgent::ClaudeCode,
        &host,
        &sink,
        &opts,
        std::future::pending(),
    )
    .await;
    let events = events.lock().unwrap().clone();
    assert_eq!(
        outcome.status,
        RunStatus::Succeeded,
        "{outcome:#?}\n{events:#?}\nfailures: {:?}",
        llm.failures()
    );
    assert_eq!(outcome.result, "Done: it runs in a warden sandbox.");
    assert_eq!(outcome.turns, 2);
    assert!(outcome.usage.input_tokens > 0 && outcome.cost_usd.is_some());
    check_run(&events, &sandbox, &llm, "Bash", "x-api-key", SECRET, SECRET);
    // Claude Code's first answer is one `assistant` event: its text and its tool call.
    assert!(
        events.iter().any(|e| matches!(e,
            AgentEvent::Assistant { turn: 1, text, tool_calls: 1, .. } if text == "Checking where I run.")),
        "{events:#?}"
    );
    for r in llm.requests() {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.model(), Some("claude-sonnet-4-5"));
    }
    sandbox.driver.delete(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_in_the_sandbox_through_the_credential_route() {
    require_cli("codex");
    const SECRET: &str = "sk-proj-e2e-real-key-8c3f61d0a7e2";
    let data = DataDir::new();
    let llm = ScriptedLlm::start(Vec::new()).await;
    let sandbox = routed_sandbox(&data, "openai", &llm.url(), SECRET).await;
    let host = DriverHost {
        driver: sandbox.driver.clone(),
        sandbox: sandbox.id.clone(),
        workspace: sandbox.workspace.clone(),
    };
    let base_url = sandbox_env(&host, "OPENAI_BASE_URL").await;
    assert_eq!(base_url, "http://127.0.0.1:3128/openai/v1");

    let probe = probe_command(&sandbox.secret_file, "OPENAI_API_KEY");
    llm.push([
        Turn::tool_call("call_e2e_1", "exec_command", json!({"cmd": probe})),
        Turn::text("Done: it runs in a warden sandbox.").expect(expect_sandboxed),
    ]);
    let (sink, events) = collecting_sink();
    let mut opts = ExternalOptions::new("Show where you run.", base_url);
    opts.run_id = "run-e2e".into();
    // A model of Codex's catalog that is given the `exec_command` function tool (its
    // default model is given a JavaScript `exec` tool the scripted server cannot call).
    opts.model = Some("gpt-5.5".into());
    opts.timeout = Some(Duration::from_secs(180));
    let outcome = run_external(
        ExternalAgent::Codex,
        &host,
        &sink,
        &opts,
        std::future::pending(),
    )
    .await;
    let events = events.lock().unwrap().clone();
    assert_eq!(
        outcome.status,
        RunStatus::Succeeded,
        "{outcome:#?}\n{events:#?}\nfailures: {:?}",
        llm.failures()
    );
    assert_eq!(outcome.result, "Done: it runs in a warden sandbox.");
    assert!(outcome.usage.input_tokens > 0);
    check_run(
        &events,
        &sandbox,
        &llm,
        "command_execution",
        "authorization",
        &format!("Bearer {SECRET}"),
        SECRET,
    );
    for r in llm.requests() {
        assert_eq!(r.path, "/v1/responses");
        assert_eq!(r.model(), Some("gpt-5.5"));
    }
    sandbox.driver.delete(&sandbox.id).await.unwrap();
}

/// The processes named `comm` in the sandbox, one per line.
async fn processes_named(host: &DriverHost, comm: &str) -> String {
    let script =
        format!("for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null | grep -x {comm} || true");
    host.exec(ExecRequest::new(Command::Shell(script)))
        .await
        .unwrap()
        .stdout
}

/// Cancelling a run kills the CLI inside the sandbox and ends the run `canceled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_run_kills_the_cli() {
    require_cli("claude");
    let data = DataDir::new();
    let llm = ScriptedLlm::start(vec![Turn::hang()]).await;
    let sandbox = routed_sandbox(&data, "anthropic", &llm.url(), "sk-ant-e2e-cancel").await;
    let host = DriverHost {
        driver: sandbox.driver.clone(),
        sandbox: sandbox.id.clone(),
        workspace: sandbox.workspace.clone(),
    };
    let (sink, events) = collecting_sink();
    let opts = ExternalOptions::new("Wait.", "http://127.0.0.1:3128/anthropic");
    let cancel = async {
        // Once the model call hangs, with claude running in the sandbox.
        while llm.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let running = processes_named(&host, "claude").await;
        assert!(
            running.lines().any(|l| l == "claude"),
            "claude is not running"
        );
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        run_external(ExternalAgent::ClaudeCode, &host, &sink, &opts, cancel),
    )
    .await
    .expect("the canceled run ended");
    assert_eq!(outcome.status, RunStatus::Canceled, "{outcome:?}");
    let kinds: Vec<&str> = events
        .lock()
        .unwrap()
        .iter()
        .map(AgentEvent::kind)
        .collect();
    assert_eq!(kinds.last(), Some(&"run_finished"));
    // Nothing of the CLI is left in the sandbox.
    let mut left = String::new();
    for _ in 0..100 {
        left = processes_named(&host, "claude").await;
        if left.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.trim().is_empty(), "claude still runs: {left}");
    sandbox.driver.delete(&sandbox.id).await.unwrap();
}
