//! The real `warden router` binary: routing by header to a backend on this host's
//! non-loopback address while its KUBECONFIG points at a closed port, /healthz, /metrics,
//! upstream's 400, a clean stop on SIGTERM, usage errors naming the flag, and --help.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_kube::testing::host_ip;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// A backend on 0.0.0.0 that answers every request with the request's head as its body.
fn backend() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    if stream.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One request with `Connection: close`; the status and the body.
fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: router.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn routes_by_header_while_the_api_server_is_unreachable() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{closed}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(WARDEN)
        .args([
            "router",
            "--listen",
            "127.0.0.1:0",
            "--cluster-domain",
            "test.invalid",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("WARDEN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let wait_log = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if log.lock().unwrap().contains(what) {
                return log.lock().unwrap().clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{what}` in:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = wait_log("listening on http://");
    let addr: SocketAddr = text
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {text}"));
    assert!(text.contains("watching all namespaces"), "{text}");

    let ip = host_ip().to_string();
    let port = backend().to_string();
    let (status, body) = request(
        addr,
        "/execute?q=1",
        &[
            ("X-Sandbox-ID", "sbx-1"),
            ("X-Sandbox-Port", &port),
            ("X-Sandbox-Pod-IP", &ip),
            ("Authorization", "Bearer client-secret"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /execute?q=1 HTTP/1.1\r\n"), "{body}");
    let lower = body.to_ascii_lowercase();
    assert!(lower.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(lower.contains("x-forwarded-host: router.test"), "{body}");
    assert!(!lower.contains("authorization"), "{body}");
    assert!(lower.contains(&format!("host: {ip}:{port}")), "{body}");

    assert_eq!(
        request(addr, "/healthz", &[]),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let (status, body) = request(addr, "/", &[]);
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"detail":"X-Sandbox-ID header is required."}"#)
    );
    // No DNS for test.invalid: 502.
    let (status, body) = request(addr, "/", &[("X-Sandbox-ID", "nowhere")]);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("Could not connect to the backend sandbox: nowhere"),
        "{body}"
    );

    let (status, metrics) = request(addr, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l == "warden_router_index_synced 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"warden_router_requests_total{code="200",route="pod_ip_header"} 1"#),
        "{metrics}"
    );
    wait_log("cannot watch sandbox pods");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "warden router did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_name_the_flag_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("tokens");
    std::fs::write(&weak, "# ok\nshort\n").unwrap();
    let weak = weak.to_str().unwrap().to_string();
    for (args, needle) in [
        (vec!["--backend-timeout", "soon"], "--backend-timeout"),
        (vec!["--backend-timeout", "0s"], "--backend-timeout"),
        (vec!["--cluster-domain", "Bad_Domain"], "--cluster-domain"),
        (vec!["--namespace", "Team"], "--namespace"),
        (vec!["--listen", "nowhere"], "--listen"),
        (
            vec!["--token-file", "/nonexistent/tokens"],
            "--token-file /nonexistent/tokens",
        ),
        (vec!["--token-file", &weak], "line 2"),
    ] {
        let out = Command::new(WARDEN)
            .arg("router")
            .args(&args)
            .args(
                ["--listen", "127.0.0.1:0"]
                    .iter()
                    .filter(|_| !args.contains(&"--listen")),
            )
            .arg("--no-watch")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let out = Command::new(WARDEN)
        .args(["router", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "X-Sandbox-Pod-IP",
        "--token-file",
        "--backend-timeout",
        "--no-watch",
        "Examples:",
        "team-a/*",
    ] {
        assert!(help.contains(needle), "no {needle} in --help:\n{help}");
    }
}
