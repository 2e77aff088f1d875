//! The web console end to end: `warden serve` with a git server and a scripted model, driven
//! in headless Chromium (Debian's chromium and chromium-driver, through Python selenium) by
//! `console_browser.py`: sign in, submit a task in the form, watch its events arrive, approve
//! its pending call, see it succeed; open a terminal on a sandbox, type a command and read its
//! output; delete the sandbox under the terminal and see it say so. A second server runs with
//! `--no-auth`: no login, a terminal without a token, and a sandbox killed under it. The
//! screenshots of each step are kept under `$CARGO_TARGET_TMPDIR/console-artifacts*/` (the
//! test prints the path).
//!
//! Also, over raw HTTP: the console's files and their security headers, and the WebSocket
//! token carried in `Sec-WebSocket-Protocol` (accepted on an upgrade only, never echoed).

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Api, DataDir, serve_env, wait_exit};
use warden_agent::model::testing::{ScriptedLlm, Turn};
use warden_server::testing_git::{GitServer, branch_commit, host_git};

/// What the agent prints and says: markup the console must show as text.
const MARKUP: &str = "<img src=x onerror=window.pwned=1>";

/// The `default` template may reach the git server and nothing else; GitHub deliveries are
/// checked against a secret (none of the test's will match).
fn config(dir: &Path, git: &GitServer) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[templates.default]\nshutdown_after = \"1h\"\n[templates.default.policy]\n\
             profile = \"default\"\n[templates.default.policy.network]\nmode = \"proxy\"\n\
             allow_domains = [\"localhost\"]\nallow_cidrs = [\"127.0.0.0/8\"]\n\
             allow_ports = [{}]\n\
             [webhooks.github]\nsecret_env = \"WARDEN_CONSOLE_GITHUB_SECRET\"\n",
            git.addr().port()
        ),
    )
    .unwrap();
    path
}

/// Sends a request and reads only the response head (a 101 keeps the connection open).
fn head(addr: &str, request: &str) -> (u16, Vec<(String, String)>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn upgrade(path: &str, protocols: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: warden\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n{origin}\r\n"
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// selenium for Python, installed with pip when missing; chromium and its driver from
/// Runs `console_browser.py` with `env` (and `CONSOLE_ARTIFACTS`, a fresh directory
/// `artifacts` under the test's temporary directory, where it keeps its screenshots) and
/// fails if it fails or runs past `timeout`. Returns that directory.
async fn run_browser(artifacts: &str, env: &[(&str, &str)], timeout: Duration) -> PathBuf {
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join(artifacts);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    eprintln!("console screenshots: {}", artifacts.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py");
    let mut browser = Command::new("python3")
        .arg(&script)
        .envs(env.iter().copied())
        .env("CONSOLE_ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        wait_exit(&mut browser, timeout, "the browser script hung")
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "the browser script failed ({status}); screenshots in {}",
        artifacts.display()
    );
    artifacts
}

/// Debian, which this test cannot install itself (.ci/run does).
fn ensure_browser() {
    for (bin, package) in [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: this test drives Debian's headless Chromium; \
             `apt-get install chromium chromium-driver` (.ci/run does) [{package}]"
        );
    }
    support::ensure_python_package("selenium", "selenium==4.40.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_a_task_answers_its_approval_and_opens_a_terminal() {
    assert!(
        warden_server::console::has_xterm(),
        "this warden was built without xterm.js: run `npm ci` in crates/warden-server/console \
         (.ci/run does), then build again"
    );
    ensure_browser();
    let repos = tempfile::tempdir().unwrap();
    let git = support::git_server_with_app(repos.path()).await;
    let llm = ScriptedLlm::start(vec![
        Turn::tool_call(
            "toolu_say",
            "Bash",
            json!({"command": format!("echo '{MARKUP}'")}),
        ),
        Turn::tool_call("toolu_no", "Bash", json!({"command": "touch denied.txt"})),
        Turn::tool_call(
            "toolu_ask",
            "Bash",
            json!({"command": "touch approved.txt"}),
        ),
        Turn::text(&format!("Touched approved.txt. {MARKUP}")),
    ])
    .await;
    let data = DataDir::new();
    let cfg = config(data.path(), &git);
    let llm_url = llm.url();
    let server = serve_env(
        data.path(),
        &["--config", cfg.to_str().unwrap()],
        &[
            ("WARDEN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_BASE_URL", &llm_url),
            ("ANTHROPIC_API_KEY", "test-key"),
            (
                "WARDEN_CONSOLE_GITHUB_SECRET",
                "console-secret-0123456789abcdef",
            ),
        ],
    );
    let token = data.token();
    let anon = Api::new(&server, None);
    let api = Api::new(&server, Some(token.clone()));

    // The page needs no token and carries its security headers; the API still does.
    let page = anon.get("/console/");
    assert_eq!(page.status, 200, "{}", page.text());
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self';"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(anon.get("/console/vendor/xterm.js").status, 200);
    assert_eq!(anon.get("/v1/tasks").status, 401);

    // The WebSocket token: in the protocol header of an upgrade, compared exactly.
    let addr = server.addr().to_string();
    let ws = "/v1/sandboxes/sbx-nothere/exec/ws";
    let wrong = format!("warden.bearer.{}, warden.v1", "0".repeat(64));
    assert_eq!(head(&addr, &upgrade(ws, &wrong, None)).0, 401);
    let right = format!("warden.bearer.{token}, warden.v1");
    let (status, headers) = head(&addr, &upgrade(ws, &right, None));
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("warden.v1")
    );
    assert!(
        !format!("{headers:?}").contains(&token),
        "the token is never echoed"
    );
    // From a page of another origin: refused even with the token.
    let (status, _) = head(&addr, &upgrade(ws, &right, Some("https://evil.example")));
    assert_eq!(status, 403);
    // On a request that is no upgrade, the protocol header proves nothing.
    let plain = format!(
        "GET /v1/tasks HTTP/1.1\r\nHost: warden\r\nSec-WebSocket-Protocol: {right}\r\n\
         Connection: close\r\n\r\n"
    );
    assert_eq!(head(&addr, &plain).0, 401);

    // The browser.
    let repo = format!("http://localhost:{}/app.git", git.addr().port());
    let artifacts = run_browser(
        "console-artifacts",
        &[
            ("WARDEN_URL", server.url.as_str()),
            ("WARDEN_TOKEN", token.as_str()),
            ("CONSOLE_REPO", repo.as_str()),
        ],
        Duration::from_secs(540),
    )
    .await;

    // What the browser did happened: the task ran through its approval and pushed.
    let tasks = api.get("/v1/tasks").json();
    let task: &Value = &tasks["tasks"][0];
    assert_eq!(task["status"], "SUCCEEDED", "{task}");
    assert_eq!(task["repo"], repo.as_str());
    let id = task["id"].as_str().unwrap();
    let bare = repos.path().join("app.git");
    let pushed = branch_commit(&bare, &format!("warden/{id}")).expect("the branch was pushed");
    let files = host_git(&bare, &["show", "--name-only", "--format=", &pushed]).unwrap();
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
        .expect("the model was told of the denial");
    assert!(denied.1.contains("not from the console"), "{denied:?}");
    let events = api.get(&format!("/v1/tasks/{id}/events")).json();
    assert_eq!(
        support::statuses(events.as_array().unwrap()),
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
    // The terminal's sandbox is gone.
    assert_eq!(api.get("/v1/sandboxes").json(), json!([]));
    // Every step left its screenshot.
    for name in [
        "01-login",
        "03-waiting-for-approval",
        "04-task-succeeded",
        "06-terminal",
        "07-sandbox-gone",
        "12-schedules",
    ] {
        let png = std::fs::read(artifacts.join(format!("{name}.png")))
            .unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{name}.png is no PNG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_no_auth_server_the_console_asks_for_no_token() {
    assert!(
        warden_server::console::has_xterm(),
        "this warden was built without xterm.js: run `npm ci` in crates/warden-server/console"
    );
    ensure_browser();
    let data = DataDir::new();
    let cfg = data.path().join("serve.toml");
    std::fs::write(
        &cfg,
        "[templates.default]\nshutdown_after = \"1h\"\n[templates.default.policy]\n\
         profile = \"default\"\n",
    )
    .unwrap();
    let server = serve_env(
        data.path(),
        &["--no-auth", "--config", cfg.to_str().unwrap()],
        &[],
    );
    run_browser(
        "console-artifacts-no-auth",
        &[
            ("WARDEN_URL", server.url.as_str()),
            ("WARDEN_TOKEN", ""),
            ("CONSOLE_REPO", ""),
            ("CONSOLE_MODE", "no-auth"),
            ("WARDEN_DATA", data.path().to_str().unwrap()),
        ],
        Duration::from_secs(300),
    )
    .await;
    // The sandbox the script killed is not ready, and the server knows.
    let api = Api::new(&server, None);
    let sandboxes = api.get("/v1/sandboxes").json();
    eprintln!("after the kill: {sandboxes}");
    assert!(
        sandboxes
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["phase"] != "ready"),
        "{sandboxes}"
    );
}
