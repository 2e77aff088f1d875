//! `warden serve` and `warden sandbox`, driven as users would: the real binary, the local
//! driver, real sandboxes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

mod support;
use support::{Api, DataDir, WARDEN, http, ok, sandbox, serve};

#[test]
fn no_auth_on_a_non_loopback_address_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--listen", "0.0.0.0:0", "--no-auth", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-auth") && err.contains("loopback"),
        "{err}"
    );
}

#[test]
fn bad_config_exits_64_naming_the_field() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("serve.toml");
    std::fs::write(&config, "[templates.py]\nidle_timeout = \"whenever\"\n").unwrap();
    let out = Command::new(WARDEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("templates.py") && err.contains("idle_timeout"),
        "{err}"
    );
}

#[test]
fn unreachable_server_says_to_start_it() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(WARDEN)
        .args(["sandbox", "ls", "--server", "http://127.0.0.1:9"])
        .env("WARDEN_DATA", data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warden serve"), "{err}");
}

#[test]
fn token_healthz_auth_and_graceful_stop() {
    let data = DataDir::new();
    let mut server = serve(data.path(), &[]);
    let token_path = data.path().join("token");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    let health = http(
        &server.url,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#"{"status":"ok"}"#),
        "{health}"
    );
    let denied = http(
        &server.url,
        "GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let allowed = http(
        &server.url,
        &format!(
            "GET /v1/templates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    // SIGTERM: exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // A restart reuses the token.
    let _server = serve(data.path(), &[]);
    let again = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(again.trim(), token);
}

#[test]
fn sandbox_cli_end_to_end() {
    let data = DataDir::new();
    let config = data.path().join("serve.toml");
    std::fs::write(
        &config,
        "[templates.box]\nshutdown_after = \"10m\"\n[templates.box.policy]\nprofile = \"default\"\n\
         [pools.warm]\ntemplate = \"box\"\nreplicas = 1\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let server = serve(data.path(), &["--config", config_arg]);
    let d = data.path();
    let templates = ok(&sandbox(&server, d, &["templates"]));
    assert!(
        templates.contains("NAME") && templates.contains("box"),
        "{templates}"
    );
    let pools = ok(&sandbox(&server, d, &["pools", "--json"]));
    assert!(pools.contains("\"warm\""), "{pools}");
    let id = ok(&sandbox(
        &server,
        d,
        &["create", "--template", "box", "--timeout", "5m"],
    ))
    .trim()
    .to_string();
    assert!(!id.is_empty());
    let ls = ok(&sandbox(&server, d, &["ls"]));
    assert!(ls.contains(&id) && ls.contains("ready"), "{ls}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&sandbox(&server, d, &["get", &id, "--json"]))).unwrap();
    assert_eq!(json["id"], id.as_str());
    // Output streamed, exit code passed through.
    let out = sandbox(
        &server,
        d,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    // stdin with -i.
    let mut child = Command::new(WARDEN)
        .args(["sandbox", "exec", "-i", &id, "--", "cat"])
        .env("WARDEN_SERVER", &server.url)
        .env("WARDEN_DATA", d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");
    // cp both ways.
    let local = d.join("in.txt");
    std::fs::write(&local, "payload\n").unwrap();
    ok(&sandbox(
        &server,
        d,
        &["cp", local.to_str().unwrap(), &format!("{id}:copied.txt")],
    ));
    let out = sandbox(&server, d, &["exec", &id, "--", "cat", "copied.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "payload\n");
    let back = d.join("back.txt");
    ok(&sandbox(
        &server,
        d,
        &["cp", &format!("{id}:copied.txt"), back.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "payload\n");
    let out = sandbox(
        &server,
        d,
        &["cp", &format!("{id}:missing.txt"), back.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    // suspend / resume.
    assert!(ok(&sandbox(&server, d, &["suspend", &id])).contains("suspended"));
    let out = sandbox(&server, d, &["exec", &id, "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(ok(&sandbox(&server, d, &["resume", &id])).contains("ready"));
    // --fresh: a sandbox from the pool, deleted afterwards.
    let before = ok(&sandbox(&server, d, &["ls", "--json"]));
    let out = sandbox(
        &server,
        d,
        &[
            "exec",
            "--fresh",
            "--pool",
            "warm",
            "--",
            "sh",
            "-c",
            "echo fresh; exit 3",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fresh\n");
    let after = ok(&sandbox(&server, d, &["ls", "--json"]));
    let count = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&before), count(&after));
    // rm.
    ok(&sandbox(&server, d, &["rm", &id]));
    let out = sandbox(&server, d, &["get", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn approvals_of_agent_runs_are_answered_over_the_api() {
    use warden_agent::run::{Answer, ApprovalBox, PendingApproval};
    let data = DataDir::new();
    let server = serve(data.path(), &[]);
    let api = Api::new(&server, Some(data.token()));
    // What a `warden agent --approvals wait` run publishes when an `ask` rule matches.
    let run_box = ApprovalBox::new(&data.path().join("agent-runs/run-0123456789ab"));
    let pending = PendingApproval {
        run_id: "run-0123456789ab".into(),
        call_id: "toolu_01AbC".into(),
        tool: "Bash".into(),
        call: "Bash(git push origin main)".into(),
        input: serde_json::json!({"command": "git push origin main"}),
        basis: "Bash(git push *)".into(),
        requested_at: "2030-01-01T00:00:00Z".into(),
        deadline: "2030-01-01T00:10:00Z".into(),
    };
    run_box.publish(&pending).unwrap();
    // The API lists what `warden approvals list` lists.
    let listed = api.get("/v1/approvals");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        listed.json(),
        serde_json::json!([serde_json::to_value(&pending).unwrap()])
    );
    let cli = Command::new(WARDEN)
        .args(["approvals", "list", "--json", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_str(&ok(&cli)).unwrap();
    assert_eq!(cli, listed.json());
    // Denied over the API: the run finds the answer, given by `api`.
    let r = api.post_json(
        "/v1/approvals/run-0123456789ab/toolu_01AbC",
        &serde_json::json!({"approved": false, "reason": "never push to main"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        run_box.take_answer("toolu_01AbC"),
        Some(Answer {
            approved: false,
            reason: Some("never push to main".into()),
            by: "api".into(),
        })
    );
    // A call nobody asked about: 404 naming it; no token: 401.
    let r = api.post_json(
        "/v1/approvals/run-0123456789ab/toolu_nope",
        &serde_json::json!({"approved": true}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("`toolu_nope`")
    );
    let r = Api::new(&server, None).get("/v1/approvals");
    assert_eq!(r.status, 401, "{}", r.text());
}
