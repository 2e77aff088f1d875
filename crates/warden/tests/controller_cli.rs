//! The real `warden controller` binary: usage errors naming the flag, --help, and a start
//! against an API server that is not there (it keeps serving /healthz and /metrics while the
//! watches retry, and stops cleanly on SIGTERM).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

#[test]
fn bad_flags_are_usage_errors_that_name_the_flag() {
    for (args, names) in [
        (vec!["--namespace", "Not_A_Namespace"], "--namespace"),
        (vec!["--lease-duration", "1"], "--lease-duration"),
        (vec!["--cluster-domain", "bad..domain"], "--cluster-domain"),
        (vec!["--metrics-addr", "nowhere"], "--metrics-addr"),
    ] {
        let out = Command::new(WARDEN)
            .arg("controller")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}

#[test]
fn help_teaches_what_it_reconciles() {
    let out = Command::new(WARDEN)
        .args(["controller", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["--leader-elect", "SandboxWarmPool", "/readyz", "Examples:"] {
        assert!(help.contains(needle), "missing {needle}: {help}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn it_starts_without_an_api_server_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // An API server address where nothing listens.
    let dead = free_port();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{dead}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\nusers:\n- name: u\n  user:\n    token: t\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(WARDEN)
        .args(["controller", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = get(port, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "no /healthz");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = get(port, "/metrics").unwrap();
    assert!(metrics.contains("warden_controller_leader 1"), "{metrics}");
    let missing = get(port, "/nope").unwrap();
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    nix_kill(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
