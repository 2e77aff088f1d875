//! `warden sandboxd` under gVisor, as in a pod with `runtimeClassName: gvisor`: Debian's
//! `runsc` (ptrace platform, no network) runs a script that starts sandboxd with
//! `--allow-degraded landlock` and drives it with curl. gVisor implements neither Landlock
//! nor `openat2` nor `CLOSE_RANGE_CLOEXEC`; this test shows commands still run under seccomp,
//! and that file paths stay beneath the root through the step-by-step resolution, symlink
//! escapes included.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

const SCRIPT: &str = r#"#!/bin/bash
set -u
"$WARDEN" sandboxd --listen 127.0.0.1:18080 --root "$WS" --allow-degraded landlock 2>"$LOG" &
for _ in $(seq 300); do curl -sf localhost:18080/v1/health >/dev/null && break; sleep 0.1; done
api() { echo "== $1"; shift; curl -s "$@"; echo; }
api exec localhost:18080/v1/exec -d '{"command": "echo hi > made.txt; ln -s /etc/hostname esc_abs; ln -s ../.. esc_up; mkdir -p d; ln -s ../../.. d/esc_deep; ln -s d inner; cat made.txt"}'
api confined localhost:18080/v1/exec -d '{"command": "grep Seccomp: /proc/self/status; unshare -U true 2>/dev/null; echo unshare=$?; curl -s -m 2 http://127.0.0.1:18080/v1/health >/dev/null; echo inet=$?; echo fds=$(for fd in $(seq 3 1023); do (: <&$fd) 2>/dev/null && printf \"%s,\" $fd; done)"}'
api read localhost:18080/v1/files/made.txt
api abs localhost:18080/v1/files/esc_abs
api up localhost:18080/v1/files/esc_up/etc/hostname
api deep localhost:18080/v1/files/d/esc_deep
api inner --path-as-is localhost:18080/v1/files/inner/../made.txt
api upload -T /etc/hostname localhost:18080/v1/files/sub/dir/h.txt
api list localhost:18080/v1/files/sub/dir
api cwd localhost:18080/v1/exec -d '{"command": "pwd; ls", "cwd": "inner"}'
api cwd_out localhost:18080/v1/exec -d '{"command": "pwd", "cwd": "esc_up"}'
echo "== log"
cat "$LOG"
"#;

/// The script's output, split at its `== name` markers.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            v.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = v.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    v
}

#[test]
fn sandboxd_serves_and_confines_under_gvisor() {
    let runsc = ["/usr/bin/runsc", "/usr/sbin/runsc", "/usr/local/bin/runsc"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "runsc (gVisor) is not installed: `apt-get install runsc` (.ci/run installs it); \
             this test runs sandboxd inside it",
        );
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let script = tmp.path().join("script.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let state = tmp.path().join("runsc-state");
    std::fs::create_dir(&state).unwrap();

    let mut child = Command::new(runsc)
        .arg(format!("--root={}", state.display()))
        .args(["--network=none", "--platform=ptrace", "do", "/bin/bash"])
        .arg(&script)
        .env("WARDEN", WARDEN)
        .env("WS", &ws)
        .env("LOG", tmp.path().join("sandboxd.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runsc");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runsc did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "runsc: {status}\n{out}\n{err}");

    let s = sections(&out);
    let get = |name: &str| -> serde_json::Value {
        let body = &s
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
            .1;
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {body}"))
    };

    // Commands run (the cwd fallback, the cloexec fallback).
    let exec = get("exec");
    assert_eq!(exec["exit_code"], 0, "{out}");
    assert_eq!(exec["stdout"], "hi\n");

    // ...under seccomp: no new namespaces, no inet socket without an egress proxy.
    let confined = get("confined");
    let stdout = confined["stdout"].as_str().unwrap();
    assert!(stdout.contains("Seccomp:\t2"), "{confined}");
    assert!(stdout.contains("unshare=1"), "{confined}");
    assert!(!stdout.contains("inet=0"), "{confined}");
    // Nothing of sandboxd's (its sockets, other commands' pipes) reached the command: no
    // descriptor above 2 is open in it (the shell's own are probed by dup, as `<&N`).
    assert!(stdout.contains("fds=\n"), "{confined}");

    // Files: inside the root they work; every symlink out is refused.
    assert_eq!(s.iter().find(|(n, _)| n == "read").unwrap().1, "hi\n\n");
    for escape in ["abs", "up", "deep"] {
        let e = get(escape);
        assert_eq!(e["code"], "PERMISSION_DENIED", "{escape}: {e}");
    }
    // `..` in a client's path is refused before any lookup, even where it would stay inside.
    assert_eq!(get("inner")["code"], "PERMISSION_DENIED");
    let list = get("list");
    assert_eq!(list["entries"][0]["name"], "h.txt", "{list}");
    let cwd = get("cwd");
    assert_eq!(cwd["exit_code"], 0, "{cwd}");
    assert!(
        cwd["stdout"].as_str().unwrap().contains("esc_deep"),
        "{cwd}"
    );
    assert_eq!(get("cwd_out")["code"], "PERMISSION_DENIED");

    // And it says why it took the other path.
    let log = &s.iter().find(|(n, _)| n == "log").unwrap().1;
    assert!(log.contains("WITHOUT landlock-fs"), "{log}");
    assert!(log.contains("no openat2"), "{log}");
}
