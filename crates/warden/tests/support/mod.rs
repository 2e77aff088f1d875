//! Helpers shared by the end-to-end tests (serve.rs, serve_e2e.rs, local_driver.rs,
//! sandboxd.rs): a data directory that removes every sandbox left in it, the server as a
//! child process, a small HTTP/1.1 client that sends paths exactly as written, `warden
//! sandbox` runs, and waits.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// A data directory under /tmp (never under /root, which is on the sensitive-path
/// blocklist). Sandboxes outlive `warden serve` on purpose, so dropping this kills every
/// sandbox left under it (processes and cgroups) before the directory goes, even when the
/// test failed.
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            dir: tempfile::Builder::new()
                .prefix("wd-e2e-")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.path().join("sandboxes").join(id)
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("workspace")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.path().join("token"))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let mut cgroups = Vec::new();
        // `warden serve`'s sandboxes, and `warden agent`'s.
        let dirs = ["sandboxes", "agent/sandboxes"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.path().join(d)).ok())
            .flatten();
        {
            for d in dirs.flatten() {
                if let Some(state) = JailState::read(&d.path()) {
                    for cg in &state.cgroups {
                        kill_cgroup(cg);
                    }
                    cgroups.extend(state.cgroups);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_mentioning(self.path());
            for pid in &left {
                kill9(*pid);
            }
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for cg in &cgroups {
            kill_cgroup(cg);
            remove_cgroup_tree(cg);
        }
    }
}

/// What `warden run --state-file` wrote for a sandbox: its supervisor and cgroups.
#[derive(Debug, Clone)]
pub struct JailState {
    pub id: String,
    pub pid: u32,
    pub cgroups: Vec<PathBuf>,
}

impl JailState {
    pub fn read(sandbox_dir: &Path) -> Option<JailState> {
        let text = std::fs::read_to_string(sandbox_dir.join("state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(JailState {
            id: v["id"].as_str()?.to_string(),
            pid: v["pid"].as_u64()? as u32,
            cgroups: v["cgroups"]
                .as_array()?
                .iter()
                .filter_map(|c| c.as_str().map(PathBuf::from))
                .collect(),
        })
    }
}

pub fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Kills every process of a cgroup (v2 `cgroup.kill`, else each pid of a v1 hierarchy).
fn kill_cgroup(cg: &Path) {
    if std::fs::write(cg.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for procs in walk_dirs(cg) {
        if let Ok(text) = std::fs::read_to_string(procs.join("cgroup.procs")) {
            for pid in text.lines().filter_map(|l| l.trim().parse().ok()) {
                kill9(pid);
            }
        }
    }
}

/// A cgroup and its descendants, deepest first.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_dirs(&e.path()));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

fn remove_cgroup_tree(cg: &Path) {
    let deadline = Instant::now() + Duration::from_secs(3);
    for d in walk_dirs(cg) {
        while std::fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Pids of processes (other than this one) whose command line mentions `dir`: a sandbox's
/// supervisor and its sandboxd.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Pids of live processes in a jail's cgroups (named after the jail id) whose command name
/// is `comm`.
pub fn jailed_processes(jail_id: &str, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let in_jail = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
            c.lines()
                .any(|l| l.ends_with(&format!("/{jail_id}")) || l.contains(&format!("/{jail_id}/")))
        });
        let named =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm);
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if in_jail && named && !zombie {
            out.push(pid);
        }
    }
    out
}

/// Polls `f` until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit; kills it and fails with `hang` if it has not after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration, hang: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{hang}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `warden serve` as a child. Dropping it kills the server (not the sandboxes: that is
/// `DataDir`'s job).
pub struct Server {
    pub child: Child,
    pub url: String,
    /// Every line the server wrote on stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// SIGKILL, as a crash would: nothing of the server gets to clean up.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `warden serve` on a free port and waits for its "listening on" line.
pub fn serve(data: &Path, extra: &[&str]) -> Server {
    serve_env(data, extra, &[])
}

/// [`serve`] with more variables in the server's environment.
pub fn serve_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(WARDEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = log.clone();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Ok(mut l) = keep.lock() {
                l.push(line.clone());
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap().to_string();
                let _ = tx.send(Ok(url));
            } else if line.contains("warden serve:") && !line.contains("stopping") {
                let _ = tx.send(Err(line));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(url)) => Server { child, url, log },
        Ok(Err(line)) => panic!("warden serve failed: {line}"),
        Err(_) => panic!("warden serve did not start"),
    }
}

/// Sends a raw request and reads until the server closes.
pub fn http(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A response: status, headers (lowercased names) and the body (chunked coding undone).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The API with the bearer token. `path` goes on the wire exactly as given (no
/// normalisation of `..` or `//`), which the path-escape checks need.
pub struct Api {
    pub addr: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &Server, token: Option<String>) -> Api {
        Api {
            addr: server.addr().to_string(),
            token,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], None).unwrap()
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, &[], None).unwrap()
    }

    pub fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, &[], None).unwrap()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Resp {
        self.send_json("POST", path, body).unwrap()
    }

    pub fn put_json(&self, path: &str, body: &serde_json::Value) -> Resp {
        self.send_json("PUT", path, body).unwrap()
    }

    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> std::io::Result<Resp> {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call(
            method,
            path,
            &[("Content-Type", "application/json")],
            Some(&bytes),
        )
    }

    pub fn put_bytes(&self, path: &str, body: &[u8]) -> Resp {
        self.call(
            "PUT",
            path,
            &[("Content-Type", "application/octet-stream")],
            Some(body),
        )
        .unwrap()
    }

    /// One request on a fresh connection (`Connection: close`). The body is written from
    /// another thread while the response is read, so a server that answers early (413)
    /// is heard. An error means the connection failed or closed before a full response.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Resp> {
        let mut s = std::net::TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: warden\r\nConnection: close\r\n");
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        let writer = body.map(|b| {
            let mut w = s.try_clone().unwrap();
            let b = b.to_vec();
            std::thread::spawn(move || {
                for chunk in b.chunks(64 * 1024) {
                    if w.write_all(chunk).is_err() {
                        return;
                    }
                }
            })
        });
        let mut raw = Vec::new();
        let read = s.read_to_end(&mut raw);
        if let Some(w) = writer {
            let _ = w.join();
        }
        // A reset after a complete response (the server did not read all of an upload)
        // still leaves that response.
        if let Err(e) = read
            && raw.is_empty()
        {
            return Err(e);
        }
        parse_response(&raw, method == "HEAD")
    }
}

fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("the connection closed before a response head"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("the connection closed inside a chunked body"))?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..nl])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let data = rest
                .get(nl + 2..nl + 2 + size)
                .ok_or_else(|| bad("the connection closed inside a chunk"))?;
            body.extend_from_slice(data);
            rest = &rest[(nl + 4 + size).min(rest.len())..];
        }
        body
    } else {
        if let Some(len) = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            && rest.len() < len
        {
            return Err(bad("the connection closed inside the body"));
        }
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// `warden sandbox ARGS` against `server`, the token read from the data directory.
pub fn sandbox(server: &Server, data: &Path, args: &[&str]) -> Output {
    Command::new(WARDEN)
        .arg("sandbox")
        .args(args)
        .env("WARDEN_SERVER", &server.url)
        .env("WARDEN_DATA", data)
        .env_remove("WARDEN_TOKEN")
        .output()
        .unwrap()
}

/// The stdout of a run that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Installs the k8s-agent-sandbox SDK with pip when it is missing; fails (does not skip)
/// when it cannot.
pub fn ensure_sdk() {
    ensure_python_package(
        "k8s_agent_sandbox.connector, k8s_agent_sandbox.commands._process_stubs, grpc, requests",
        "k8s-agent-sandbox[grpc]==1.0.8",
    );
}

/// Makes `python3 -c "import MODULES"` work, installing `requirement` with pip when it does
/// not; fails (does not skip) when it cannot.
pub fn ensure_python_package(modules: &str, requirement: &str) {
    let probe = || {
        Command::new("python3")
            .args(["-c", &format!("import {modules}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if probe() {
        return;
    }
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "-q"])
            .args(extra)
            .arg(requirement)
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = pip(&[]) || pip(&["--break-system-packages"]);
    assert!(
        installed && probe(),
        "cannot install {requirement} with pip; this test needs it (.ci/run installs it)"
    );
}

/// A git server (`git http-backend`) over `repos` with one repository, `app.git` (branch
/// `main`: README.md, and the permission rules in `.claude/settings.json` that make `touch`
/// ask for approval).
pub async fn git_server_with_app(repos: &Path) -> warden_server::testing_git::GitServer {
    use warden_server::testing_git::{GitServer, GitServerOptions, create_bare_repo};
    create_bare_repo(
        repos,
        "app.git",
        "main",
        &[
            ("README.md", "hello\n"),
            (
                ".claude/settings.json",
                r#"{"permissions": {"ask": ["Bash(touch:*)"]}}"#,
            ),
        ],
    )
    .unwrap();
    GitServer::start(repos, GitServerOptions::default())
        .await
        .unwrap()
}

/// The statuses a task went through, in order, from its events (`/v1/tasks/{id}/events`).
pub fn statuses(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "status")
        .map(|e| e["data"]["status"].as_str().unwrap().to_string())
        .collect()
}
