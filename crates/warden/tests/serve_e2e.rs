//! `warden serve` end to end, with the real binary, the local driver and real sandboxes: a
//! server crash in the middle of an exec and the recovery after it, bad input on the API,
//! the real `k8s-agent-sandbox` Python SDK through the router contract, and
//! `warden sandbox exec -it` under a real pseudo-terminal.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use support::{Api, DataDir, JailState, Resp, WARDEN, jailed_processes, kill9, serve};

const TEMPLATE: &str = "/v1/templates/box";
/// The workspace quota of the template: uploads past it get 413.
const QUOTA: u64 = 1 << 20;

fn put_template(api: &Api) {
    let r = api.put_json(
        TEMPLATE,
        &json!({
            "policy": {"profile": "default", "resources": {"memory": "512M", "pids": 128}},
            "shutdown_after": "30m",
            "idle_timeout": "30m",
            "workspace_quota": QUOTA,
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn create(api: &Api) -> String {
    let r = api.post_json("/v1/sandboxes", &json!({"template": "box"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    assert_eq!(info["phase"], "ready", "{info}");
    info["id"].as_str().unwrap().to_string()
}

fn exec_path(id: &str) -> String {
    format!("/v1/sandboxes/{id}/exec")
}

/// A buffered exec that must succeed; returns its stdout.
fn exec_ok(api: &Api, id: &str, script: &str) -> String {
    let r = api.post_json(&exec_path(id), &json!({"command": ["sh", "-c", script]}));
    assert_eq!(r.status, 200, "exec in {id}: {}", r.text());
    let v = r.json();
    assert_eq!(v["exit_code"], 0, "exec in {id}: {v}");
    v["stdout"].as_str().unwrap().to_string()
}

fn phase(api: &Api, id: &str) -> serde_json::Value {
    let r = api.get(&format!("/v1/sandboxes/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A 4xx with a JSON `{code, message}` body whose message mentions every one of `words`.
fn assert_json_error(r: &Resp, status: u16, words: &[&str]) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let message = v["message"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(v["code"].is_string(), "{v}");
    for w in words {
        assert!(message.contains(w), "`{w}` not in {v}");
    }
}

fn assert_client_error(r: &Resp, what: &str) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: status {} {}",
        r.status,
        r.text()
    );
    let v = r.json();
    assert!(
        v["code"].is_string() && v["message"].is_string(),
        "{what}: {v}"
    );
}

/// Waits until a sandbox has left no process, cgroup or directory behind.
fn assert_gone(dir: &Path, state: &JailState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = support::processes_mentioning(dir);
        let cgroups: Vec<_> = state.cgroups.iter().filter(|c| c.exists()).collect();
        if procs.is_empty() && cgroups.is_empty() && !dir.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox remains: processes {procs:?}, cgroups {cgroups:?}, directory exists: {}",
            dir.exists()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn server_crash_mid_exec_recovers_and_bad_input_is_refused() {
    let data = DataDir::new();
    let d = data.path();
    let server = serve(d, &[]);
    let api = Api::new(&server, Some(data.token()));
    put_template(&api);

    // A: the exec interrupted by the crash. B: its supervisor dies while the server is
    // down. C: a bystander that must not notice anything.
    let a = create(&api);
    let b = create(&api);
    let c = create(&api);
    let r = api.put_bytes(&format!("/v1/sandboxes/{c}/files/keep.txt"), b"bystander\n");
    assert_eq!(r.status, 204, "{}", r.text());
    let c_state = JailState::read(&data.sandbox_dir(&c)).unwrap();
    let a_state = JailState::read(&data.sandbox_dir(&a)).unwrap();

    // Two execs in A, one over the API (buffered) and one through `warden sandbox exec`
    // (WebSocket), then the server dies with SIGKILL while they sleep.
    let started = Instant::now();
    let api_exec = {
        let a_api = Api {
            addr: api.addr.clone(),
            token: api.token.clone(),
        };
        let path = exec_path(&a);
        std::thread::spawn(move || {
            a_api.send_json(
                "POST",
                &path,
                &json!({"command": ["sh", "-c", "sleep 5; touch late-api"]}),
            )
        })
    };
    let mut cli_exec = Command::new(WARDEN)
        .args([
            "sandbox",
            "exec",
            &a,
            "--",
            "sh",
            "-c",
            "sleep 5; touch late-cli",
        ])
        .env("WARDEN_SERVER", &server.url)
        .env("WARDEN_DATA", d)
        .env_remove("WARDEN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_for("both sleeps to run in A", Duration::from_secs(30), || {
        jailed_processes(&a_state.id, "sleep").len() == 2
    });
    server.crash();

    // The clients get an error, not a hang and not a result.
    let api_result = api_exec.join().unwrap();
    assert!(
        api_result.is_err(),
        "the API client got a response from a dead server: {api_result:?}"
    );
    let status = support::wait_exit(
        &mut cli_exec,
        Duration::from_secs(30),
        "`warden sandbox exec` hangs after the server died",
    );
    let out = cli_exec.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("warden sandbox exec after the crash: {status}: {stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("warden sandbox"), "{stderr}");

    // Restart on the same data directory: A and C are back, Ready, with the same
    // supervisors; the interrupted commands are dead and never finish.
    let server = serve(d, &[]);
    let api = Api::new(&server, Some(data.token()));
    for id in [&a, &b, &c] {
        assert_eq!(phase(&api, id)["phase"], "ready", "{id} after restart");
    }
    assert!(alive(a_state.pid) && alive(c_state.pid));
    support::wait_for(
        "the interrupted sleeps in A to be killed",
        Duration::from_secs(10),
        || jailed_processes(&a_state.id, "sleep").is_empty(),
    );
    assert_eq!(exec_ok(&api, &a, "echo alive"), "alive\n");
    // Past the sleeps' 5 s: the commands did not go on to their `touch`.
    let past = Duration::from_secs(7);
    if let Some(rest) = past.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    for late in ["late-api", "late-cli"] {
        assert!(
            !data.workspace(&a).join(late).exists(),
            "{late} was written"
        );
        let r = api.head(&format!("/v1/sandboxes/{a}/files/{late}"));
        assert_eq!(r.status, 404, "{late}");
    }

    // B's supervisor dies while the server is down: after the restart B is failed with a
    // message, and nothing of it is left.
    server.crash();
    let b_dir = data.sandbox_dir(&b);
    let b_state = JailState::read(&b_dir).unwrap();
    assert!(!b_state.cgroups.is_empty());
    kill9(b_state.pid);
    support::wait_for("B's supervisor to die", Duration::from_secs(10), || {
        !alive(b_state.pid)
    });
    let server = serve(d, &[]);
    let api = Api::new(&server, Some(data.token()));
    let info = phase(&api, &b);
    assert_eq!(info["phase"], "failed", "{info}");
    let message = info["message"].as_str().unwrap_or_default();
    eprintln!("B after its supervisor died: {message}");
    assert!(message.contains("supervisor"), "{info}");
    assert_gone(&b_dir, &b_state);
    let r = api.post_json(&exec_path(&b), &json!({"command": ["true"]}));
    assert_json_error(&r, 409, &[&b, "failed"]);
    for id in [&a, &c] {
        assert_eq!(phase(&api, id)["phase"], "ready", "{id}");
    }

    bad_input(&api, &data, &a, &c);

    // The bystander saw nothing: same supervisor, its file, exec works.
    assert!(alive(c_state.pid));
    assert_eq!(
        JailState::read(&data.sandbox_dir(&c)).unwrap().pid,
        c_state.pid
    );
    let r = api.get(&format!("/v1/sandboxes/{c}/files/keep.txt"));
    assert_eq!((r.status, r.text().as_str()), (200, "bystander\n"));
    assert_eq!(exec_ok(&api, &c, "cat keep.txt"), "bystander\n");
    drop(server);
}

/// Deleted and suspended sandboxes, path escapes and an upload over the quota, on the
/// server after the restarts. `a` is ready; `c` is the bystander.
fn bad_input(api: &Api, data: &DataDir, a: &str, c: &str) {
    // Exec in a deleted sandbox: 404 naming it.
    let gone = create(api);
    let gone_dir = data.sandbox_dir(&gone);
    let gone_state = JailState::read(&gone_dir).unwrap();
    let r = api.delete(&format!("/v1/sandboxes/{gone}"));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_gone(&gone_dir, &gone_state);
    let r = api.post_json(&exec_path(&gone), &json!({"command": ["true"]}));
    assert_json_error(&r, 404, &[&gone]);

    // Exec and files in a suspended sandbox: 409 naming the phase.
    let r = api.post_json(&format!("/v1/sandboxes/{a}/suspend"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.post_json(&exec_path(a), &json!({"command": ["true"]}));
    assert_json_error(&r, 409, &[a, "suspended"]);
    let r = api.put_bytes(&format!("/v1/sandboxes/{a}/files/frozen.txt"), b"x");
    assert_json_error(&r, 409, &[a, "suspended"]);
    assert_eq!(exec_ok(api, c, "echo c"), "c\n");
    let r = api.post_json(&format!("/v1/sandboxes/{a}/resume"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!data.workspace(a).join("frozen.txt").exists());

    // Path escapes: `..` (plain and percent-encoded), an absolute path outside the
    // workspace, and symlinks planted inside that point out (made by a command in the
    // sandbox, and on the host). Each is a 4xx with a JSON body, and nothing is written
    // outside.
    let sandbox_dir = data.sandbox_dir(a);
    let outside = data.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "host secret").unwrap();
    std::os::unix::fs::symlink(&outside, data.workspace(a).join("host-link")).unwrap();
    exec_ok(
        api,
        a,
        &format!(
            "ln -s .. up && ln -s {} abs-up && ln -s /etc etc-link",
            sandbox_dir.display()
        ),
    );
    let files = format!("/v1/sandboxes/{a}/files");
    let abs = sandbox_dir.join("abs-escape.txt");
    let writes = [
        ("../escape.txt", sandbox_dir.join("escape.txt")),
        ("%2e%2e/escape-enc.txt", sandbox_dir.join("escape-enc.txt")),
        (
            "%2E%2E%2Fescape-slash.txt",
            sandbox_dir.join("escape-slash.txt"),
        ),
        (
            "sub/../../escape-sub.txt",
            sandbox_dir.join("escape-sub.txt"),
        ),
        (&format!("/{}", abs.display()) as &str, abs.clone()),
        ("up/sym-escape.txt", sandbox_dir.join("sym-escape.txt")),
        (
            "abs-up/sym-abs-escape.txt",
            sandbox_dir.join("sym-abs-escape.txt"),
        ),
        ("host-link/evil.txt", outside.join("evil.txt")),
    ];
    for (path, target) in &writes {
        let r = api.put_bytes(&format!("{files}/{path}"), b"escaped");
        assert_client_error(&r, &format!("PUT {path}"));
        assert!(!target.exists(), "PUT {path} wrote {}", target.display());
    }
    let reads = [
        "../state.json".to_string(),
        "%2e%2e/policy.toml".to_string(),
        format!("/{}/state.json", sandbox_dir.display()),
        "/etc/passwd".to_string(),
        "etc-link/passwd".to_string(),
        "up/state.json".to_string(),
        "host-link/secret.txt".to_string(),
        "host-link".to_string(),
    ];
    for path in &reads {
        let r = api.get(&format!("{files}/{path}"));
        assert_client_error(&r, &format!("GET {path}"));
        assert!(
            !r.text().contains("host secret"),
            "GET {path}: {}",
            r.text()
        );
    }
    for path in ["up/x", "host-link/secret.txt"] {
        let r = api.delete(&format!("{files}/{path}"));
        assert_client_error(&r, &format!("DELETE {path}"));
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "host secret"
    );
    let entries: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, ["secret.txt"], "written outside the workspace");

    // An upload over the template's workspace quota: 413 with JSON, and no file left.
    let big = vec![b'x'; (QUOTA as usize) * 2];
    let r = api.put_bytes(&format!("{files}/big.bin"), &big);
    assert_json_error(&r, 413, &[]);
    assert!(!data.workspace(a).join("big.bin").exists());
    assert_eq!(api.head(&format!("{files}/big.bin")).status, 404);
    // Under the quota it works.
    let r = api.put_bytes(&format!("{files}/small.bin"), &big[..1000]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        std::fs::read(data.workspace(a).join("small.bin"))
            .unwrap()
            .len(),
        1000
    );
}

fn python_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn k8s_agent_sandbox_sdk_through_the_router_contract() {
    support::ensure_sdk();
    let data = DataDir::new();
    let server = serve(data.path(), &[]);
    let token = data.token();
    let api = Api::new(&server, Some(token.clone()));
    put_template(&api);
    let id = create(&api);
    let other = create(&api);
    // The SDK sends the token with `extra_headers` of its direct connection config; the
    // server strips it before forwarding.
    let out = Command::new("python3")
        .arg(python_fixture("serve_sdk.py"))
        .args([&server.url, &id, &token])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "SDK run failed:\n{stdout}\n{stderr}"
    );
    // What the SDK wrote is in this sandbox's workspace, and only there.
    let ws = data.workspace(&id);
    assert_eq!(
        std::fs::read(ws.join("sdk/hello.txt")).unwrap(),
        b"hello from the sdk"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("from-command.txt")).unwrap(),
        "written by commands.run\n"
    );
    assert!(!data.workspace(&other).join("sdk").exists());
    assert_eq!(exec_ok(&api, &other, "ls -A"), "");
}

#[test]
fn exec_it_under_a_real_terminal() {
    let data = DataDir::new();
    let server = serve(data.path(), &[]);
    let api = Api::new(&server, Some(data.token()));
    put_template(&api);
    let id = create(&api);
    let out = Command::new("python3")
        .arg(python_fixture("pty_exec.py"))
        .args([WARDEN, &server.url, data.path().to_str().unwrap(), &id])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pty driver failed:\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("pty driver output ({e}):\n{stdout}"));
    let first = report["first"].as_str().unwrap();
    // `tty` inside names a pseudo-terminal, and `stty size` the outer terminal's rows and
    // columns.
    assert!(first.contains("/dev/pts/"), "{first:?}");
    assert!(first.contains("33 97"), "{first:?}");
    // After the outer terminal was resized (TIOCSWINSZ, SIGWINCH), the inner one follows.
    let resized = report["resized"].as_str().unwrap();
    assert!(resized.contains("41 123"), "{resized:?}");
    // `exit 7` inside is warden's exit status.
    assert_eq!(report["exit_code"], 7, "{report}");
    assert_eq!(report["signal"], serde_json::Value::Null, "{report}");
}
