//! End to end: `warden sandboxd` driven by the real `k8s-agent-sandbox` Python SDK.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running sandboxd, stopped as an operator would (SIGTERM), so that it removes its
/// private temporary directory; killed only if it does not stop.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn k8s_agent_sandbox_sdk_drives_sandboxd() {
    support::ensure_sdk();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(base.path().join("outside"), "secret").unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("sandboxd").arg("--root").arg(&root);
    for p in ports {
        cmd.arg("--listen").arg(format!("127.0.0.1:{p}"));
    }
    let _server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    support::wait_for("sandboxd to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ports[2])).is_ok()
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sandboxd_sdk.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args(ports.iter().map(|p| p.to_string()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "SDK run failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(base.path().join("outside")).unwrap(),
        "secret"
    );
}

#[test]
fn inherited_jail_is_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "sandboxd",
            "--jail",
            "inherited",
            "--listen",
            "127.0.0.1:0",
            "--root",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a warden jail"));
}

/// A sandbox whose directory was removed on the host (its server's data directory deleted
/// while it ran) ends itself instead of running on unseen.
#[test]
fn sandboxd_stops_when_its_root_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspace");
    std::fs::create_dir(&root).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sandboxd", "--listen", "127.0.0.1:0", "--root"])
        .arg(&root)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "sandboxd ended early");
    std::fs::remove_dir(&root).unwrap();
    let status = support::wait_exit(
        &mut child,
        Duration::from_secs(30),
        "sandboxd kept running after its root was removed",
    );
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("root directory was removed"), "{err}");
}

/// The pids of the live processes whose parent is `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its `)`.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            out.push((child, comm.to_string()));
        }
    }
    out
}

/// `Start`, `WriteStdin`, `SendSignal` and `ResizeTTY`, driven through the SDK's own gRPC
/// stubs against a real sandboxd in pod isolation.
#[test]
fn grpc_streaming_process_calls() {
    support::ensure_sdk();
    let base = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args([
                "sandboxd",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--root",
            ])
            .arg(base.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    support::wait_for("sandboxd to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sandboxd_grpc.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "gRPC driver failed:\n{stdout}\n{stderr}"
    );
    // The signalled sleep was reaped: its pid is free, or taken by something else.
    let sleep_pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SLEEP_PID "))
        .and_then(|p| p.parse().ok())
        .expect("the driver names the sleep it signalled");
    let cmdline = std::fs::read(format!("/proc/{sleep_pid}/cmdline")).unwrap_or_default();
    assert_ne!(
        cmdline, b"sleep\x0060\x00",
        "the signalled sleep is still there"
    );
    // Every command ended and was reaped: sandboxd has no children left.
    assert_eq!(children_of(server.0.id()), vec![], "sandboxd left children");
}

/// Starts `warden sandboxd` in pod isolation on a free port with `extra` flags, and waits
/// until it listens.
fn pod_sandboxd(root: &std::path::Path, extra: &[&str]) -> (Server, support::Api) {
    let port = free_port();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["sandboxd", "--jail", "pod", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--root")
            .arg(root)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    support::wait_for("sandboxd to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let api = support::Api {
        addr: format!("127.0.0.1:{port}"),
        token: None,
    };
    (server, api)
}

/// Runs the egress probe through sandboxd's exec API: `(attempt, result)` lines.
fn run_probe(api: &support::Api, root: &std::path::Path, proxy: u16, other: u16) -> String {
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pod_egress_probe.py"
        ),
        root.join("probe.py"),
    )
    .unwrap();
    let body = serde_json::json!({
        "command": ["python3", "probe.py", proxy.to_string(), other.to_string()],
        "timeout_ms": 60000,
    });
    let r = api.post_json("/v1/exec", &body).json();
    assert_eq!(r["exit_code"], 0, "probe failed: {r}");
    r["stdout"].as_str().unwrap().to_string()
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{name}` in the probe's output:\n{out}"))
}

/// A listener that counts the connections it accepts.
fn counting_listener() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(c);
        }
    });
    (port, n)
}

/// `--egress-proxy`: pod-mode commands reach the proxy's port and nothing else. Landlock
/// refuses TCP connect to any other port and every bind (EACCES), seccomp refuses UDP,
/// SCTP and TCP Fast Open (EPERM), and the proxy variables point at the proxy.
#[test]
fn pod_egress_proxy_is_the_only_way_out() {
    let base = tempfile::tempdir().unwrap();
    let (proxy, proxy_seen) = counting_listener();
    let (other, other_seen) = counting_listener();
    let proxy_flag = format!("127.0.0.1:{proxy}");
    let (_server, api) = pod_sandboxd(base.path(), &["--egress-proxy", &proxy_flag]);
    let out = run_probe(&api, base.path(), proxy, other);
    assert_eq!(line(&out, "connect-proxy"), "ok", "{out}");
    assert_eq!(line(&out, "connect-other"), "EACCES", "{out}");
    // No IPv6 loopback on some hosts: then the kernel refuses before Landlock does.
    assert!(
        ["EACCES", "EADDRNOTAVAIL", "ENETUNREACH"].contains(&line(&out, "connect-other-v6")),
        "{out}"
    );
    assert_eq!(line(&out, "bind-listen"), "EACCES", "{out}");
    assert_eq!(line(&out, "udp"), "EPERM", "{out}");
    assert_eq!(line(&out, "fast-open"), "EPERM", "{out}");
    assert_eq!(line(&out, "sctp"), "EPERM", "{out}");
    assert_eq!(line(&out, "unix"), "ok", "{out}");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        assert_eq!(
            line(&out, &format!("env {var}")),
            format!("http://127.0.0.1:{proxy}"),
            "{out}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(proxy_seen.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(
        other_seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other port was reached:\n{out}"
    );
}

/// Without `--egress-proxy`, pod mode keeps commands off the network entirely: seccomp
/// refuses every inet socket, the proxy's port included, and no proxy variable is set.
#[test]
fn pod_without_egress_proxy_has_no_inet_socket() {
    let base = tempfile::tempdir().unwrap();
    let (proxy, proxy_seen) = counting_listener();
    let (other, other_seen) = counting_listener();
    let (_server, api) = pod_sandboxd(base.path(), &[]);
    let out = run_probe(&api, base.path(), proxy, other);
    for attempt in [
        "connect-proxy",
        "connect-other",
        "connect-other-v6",
        "bind-listen",
        "listen-unbound",
        "udp",
        "fast-open",
        "sctp",
    ] {
        assert_eq!(line(&out, attempt), "EPERM", "{attempt}:\n{out}");
    }
    assert_eq!(line(&out, "env HTTP_PROXY"), "-", "{out}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(proxy_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(other_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Bad `--egress-proxy` values are usage errors that say what to give.
#[test]
fn egress_proxy_flag_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (vec!["--egress-proxy", "10.0.0.1:3128"], "loopback"),
        (vec!["--egress-proxy", "127.0.0.1:0"], "not 0"),
        (
            vec!["--egress-proxy", "127.0.0.1:3128", "--jail", "inherited"],
            "need --jail pod",
        ),
        (vec!["--allow-degraded", "seccomp"], "cannot run without it"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["sandboxd", "--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
