//! End to end: `warden sandboxd` driven by the real `k8s-agent-sandbox` Python SDK.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
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
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", ports[2])).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sandboxd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sandboxd kept running after its root was removed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("root directory was removed"), "{err}");
}
