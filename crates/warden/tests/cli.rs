//! `warden run` and `warden doctor` as users meet them: flags, exit codes, terminals, bad
//! input, and what is left behind (nothing).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn warden() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.env_remove("WARDEN_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Directories named `warden-<pid>-*` (cgroups, scratch directories) that a warden process
/// with this pid left behind.
fn leftovers(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("warden-{pid}-");
    let mut found = Vec::new();
    fn walk(dir: &Path, depth: usize, prefix: &str, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                found.push(e.path());
            }
            if depth > 0 && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), depth - 1, prefix, found);
            }
        }
    }
    walk(Path::new("/sys/fs/cgroup"), 5, &prefix, &mut found);
    walk(&std::env::temp_dir(), 0, &prefix, &mut found);
    found
}

/// Runs warden to the end and checks that it left nothing behind.
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    // warden exits as soon as the command's tree is gone; a background process of its own
    // then waits for the sandbox's init to finish exiting and removes the cgroups and scratch
    // directory, which takes milliseconds.
    let start = Instant::now();
    loop {
        let left = leftovers(pid);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

/// Runs `warden ARGS` in `dir` to the end (see [`run`]).
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = warden();
    cmd.current_dir(dir).args(args);
    run(cmd)
}

fn bad_input(args: &[&str], expect: &[&str]) {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(ws.path(), args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: {e:?} not in:\n{err}");
    }
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed on stdout: {}",
        text(&out.stdout)
    );
}

// --- bad input ------------------------------------------------------------------------------

#[test]
fn a_missing_command_is_a_usage_error() {
    bad_input(&["run"], &["command"]);
    bad_input(&["run", "--memory", "1G"], &["command"]);
}

#[test]
fn an_unknown_profile_lists_the_profiles() {
    bad_input(
        &["run", "--profile", "paranoid", "--", "true"],
        &["paranoid", "default", "offline", "read-anywhere", "pod"],
    );
}

#[test]
fn a_missing_workspace_is_named() {
    bad_input(
        &["run", "-w", "/no/such/workspace", "--", "true"],
        &["/no/such/workspace", "does not exist"],
    );
    bad_input(
        &["run", "--ro", "/no/such/dir", "--", "true"],
        &["/no/such/dir"],
    );
}

#[test]
fn a_malformed_policy_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    fs::write(
        &unknown,
        "profile = \"default\"\n\n[resources]\nmemroy = \"1G\"\n",
    )
    .unwrap();
    bad_input(
        &["run", "--policy", unknown.to_str().unwrap(), "--", "true"],
        &["memroy", "line 4", "memory"],
    );
    let broken = dir.path().join("broken.toml");
    fs::write(&broken, "[network\nmode = \"none\"\n").unwrap();
    bad_input(
        &["run", "--policy", broken.to_str().unwrap(), "--", "true"],
        &["broken.toml", "line 1"],
    );
    let bad_value = dir.path().join("bad-value.toml");
    fs::write(&bad_value, "[network]\nmode = \"sometimes\"\n").unwrap();
    bad_input(
        &["run", "--policy", bad_value.to_str().unwrap(), "--", "true"],
        &["sometimes", "none", "proxy", "host"],
    );
    bad_input(
        &["run", "--policy", "/no/such/policy.toml", "--", "true"],
        &["/no/such/policy.toml"],
    );
}

#[test]
fn impossible_limits_are_refused() {
    bad_input(&["run", "--memory", "1K", "--", "true"], &["memory"]);
    bad_input(&["run", "--memory", "lots", "--", "true"], &["lots"]);
    bad_input(&["run", "--pids", "0", "--", "true"], &["pids"]);
    bad_input(&["run", "--cpus", "0", "--", "true"], &["cpus"]);
    bad_input(&["run", "--cpus=-1", "--", "true"], &["cpus"]);
    bad_input(&["run", "--timeout", "soon", "--", "true"], &["soon"]);
    bad_input(&["run", "--open-files", "1", "--", "true"], &["open"]);
}

#[test]
fn unknown_layers_and_modes_list_the_accepted_names() {
    bad_input(
        &["run", "--allow-degraded", "everything", "--", "true"],
        &["everything", "seccomp", "landlock"],
    );
    bad_input(
        &["run", "--network", "wifi", "--", "true"],
        &["wifi", "none", "host"],
    );
    bad_input(
        &["run", "--isolation", "vm", "--", "true"],
        &["vm", "full", "pod"],
    );
    bad_input(&["run", "-e", "NOEQUALS", "--", "true"], &["NOEQUALS"]);
}

// --- behaviour ------------------------------------------------------------------------------

#[test]
fn exit_codes_pass_through() {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(
        ws.path(),
        &["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"));

    let out = run_in(ws.path(), &["run", "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
}

#[test]
fn a_signal_that_kills_the_command_kills_warden_the_same_way() {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(ws.path(), &["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        out.status.signal(),
        Some(libc_sigterm()),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

#[test]
fn stdin_passes_through() {
    let ws = tempfile::tempdir().unwrap();
    let mut child = warden()
        .current_dir(ws.path())
        .args(["run", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello sandbox\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "HELLO SANDBOX\n");
}

#[test]
fn a_timeout_exits_124_and_says_so() {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(
        ws.path(),
        &[
            "run",
            "--timeout",
            "1s",
            "--",
            "sh",
            "-c",
            "sleep 30 & sleep 30",
        ],
    );
    assert_eq!(out.status.code(), Some(124));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_interactive_terminal_works() {
    // `script` gives warden a terminal, as a user's shell would.
    let ws = tempfile::tempdir().unwrap();
    let inner = format!(
        "echo warden-pid=$$; exec {} run --tty -- sh -c 'tty; test -t 0 && test -t 1 && echo is-a-terminal; stty size'",
        env!("CARGO_BIN_EXE_warden")
    );
    let out = Command::new("script")
        .current_dir(ws.path())
        .args(["-qec", &inner, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux / bsdutils) is needed for this test");
    let s = text(&out.stdout);
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(s.contains("is-a-terminal"), "{s}");
    assert!(out.status.success(), "{s} {}", text(&out.stderr));
    // The terminal closes as warden exits; the cleanup it leaves behind still removes the
    // sandbox's cgroups (the hangup must not stop it).
    let v2_mount = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4).map(PathBuf::from))
        .expect("a cgroup v2 hierarchy (the default profile makes a cgroup there)");
    // The sandbox's cgroup is `warden-<pid of warden run>-0` (its first sandbox).
    let pid = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("warden-pid="))
        .expect("the shell printed warden's pid");
    let ours = fs::read_to_string("/proc/self/cgroup").unwrap();
    let ours = ours
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("this process's cgroup v2 path");
    let cgroups: Vec<PathBuf> = vec![
        v2_mount
            .join(ours.trim_start_matches('/'))
            .join(format!("warden-{pid}-0")),
    ];
    let start = Instant::now();
    while cgroups.iter().any(|c| c.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "cgroups left behind: {cgroups:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_sandbox_dies_with_warden() {
    let ws = tempfile::tempdir().unwrap();
    let token = format!("{}.{}", 900 + std::process::id() % 50, std::process::id());
    let mut child = warden()
        .current_dir(ws.path())
        .args(["run", "--", "sleep", &token])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the sandboxed sleep runs.
    let start = Instant::now();
    while sleepers(&token).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sandbox never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    while !sleepers(&token).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sandbox outlived warden: {:?}",
            sleepers(&token)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed with SIGKILL, warden could not clean up its cgroup itself; the kernel removed
    // the processes, and the next run must still work.
    let _ = leftovers(pid).iter().map(fs::remove_dir).count();
}

fn sleepers(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = fs::read(e.path().join("cmdline"))
            && text(&c).contains(token)
            && text(&c).starts_with("sleep")
        {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn the_report_describes_every_layer() {
    let ws = tempfile::tempdir().unwrap();
    let report = ws.path().join("report.json");
    let out = run_in(
        ws.path(),
        &["run", "--report", report.to_str().unwrap(), "--", "true"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["termination"]["kind"], "exited");
    assert_eq!(v["termination"]["code"], 0);
    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() >= 16, "{layers:?}");
    assert!(layers.iter().any(|l| l["layer"] == "seccomp"), "{layers:?}");
}

#[test]
fn verbose_prints_the_layer_table() {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(ws.path(), &["run", "-v", "--", "true"]);
    let err = text(&out.stderr);
    for layer in ["user-namespace", "landlock-fs", "seccomp", "cgroup-memory"] {
        assert!(err.contains(layer), "{layer} missing from:\n{err}");
    }
}

#[test]
fn host_network_is_a_loud_opt_out() {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(ws.path(), &["run", "--network", "host", "--", "true"]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).to_lowercase().contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn doctor_reports_every_layer_as_json() {
    let out = warden().args(["doctor", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() >= 16);
    for l in layers {
        assert!(l["status"].is_string() || l["status"].is_object(), "{l}");
    }
    let human = warden().arg("doctor").output().unwrap();
    assert!(
        text(&human.stdout).contains("landlock"),
        "{}",
        text(&human.stdout)
    );
}

#[test]
fn help_teaches_profiles_exit_codes_and_examples() {
    let out = warden().args(["run", "--help"]).output().unwrap();
    let s = text(&out.stdout);
    for needle in ["--allow-degraded", "read-anywhere", "124", "Examples"] {
        assert!(s.contains(needle), "{needle} missing from --help");
    }
}

// --- a non-root invoker ---------------------------------------------------------------------

#[test]
fn a_setuid_binary_does_not_escalate_for_a_non_root_user() {
    if !nix::unistd::geteuid().is_root() {
        // Without root, this test cannot make a setuid-root binary; the escape tests cover
        // the non-root invoker as they run.
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("warden-suid-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("bin");
    let ws = dir.path().join("ws");
    fs::create_dir(&bin).unwrap();
    fs::create_dir(&ws).unwrap();
    nix::unistd::chown(
        &ws,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let suid = bin.join("suid-id");
    fs::copy("/usr/bin/id", &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .args(args)
            .current_dir(&ws)
            .output()
            .expect("setpriv (util-linux) is needed for this test")
    };
    // Control: outside the sandbox the setuid bit works, so the test can see an escalation.
    let control = as_nobody(&[suid.to_str().unwrap(), "-u"]);
    assert_eq!(text(&control.stdout).trim(), "0");
    let out = as_nobody(&[
        env!("CARGO_BIN_EXE_warden"),
        "run",
        "--memory",
        "unlimited",
        "--pids",
        "unlimited",
        "--ro",
        bin.to_str().unwrap(),
        "--",
        suid.to_str().unwrap(),
        "-u",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "65534", "{}", text(&out.stderr));
}

/// A tiny HTTP server on the host's loopback answering `hello` to every request.
fn hello_server() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, handle)
}

#[test]
fn proxy_mode_reaches_allowed_destinations_and_nothing_else() {
    let (port, _server) = hello_server();
    let ws = tempfile::tempdir().unwrap();
    let log = ws.path().join("egress.jsonl");
    let p = port.to_string();
    let fetch = format!(
        "import urllib.request, os\nprint(os.environ['HTTPS_PROXY'])\ntry:\n    print(urllib.request.urlopen('http://localhost:{port}/', timeout=10).read().decode())\nexcept Exception as e:\n    print('ERROR', e)\n"
    );
    // Allowed: domain, port and the loopback range all named.
    let out = run_in(
        ws.path(),
        &[
            "run",
            "--allow-domain",
            "localhost",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            &p,
            "--egress-log",
            log.to_str().unwrap(),
            "--",
            "python3",
            "-c",
            &fetch,
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("http://127.0.0.1:3128") && stdout.contains("hello"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let event: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&log).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(event["verdict"], "allowed");
    assert_eq!(event["host"], "localhost");
    assert!(
        event["sandbox_id"].as_str().unwrap().starts_with("warden-"),
        "{event}"
    );

    // Another domain allowed instead: the proxy answers 403 and says how to allow it.
    let out = run_in(
        ws.path(),
        &[
            "run",
            "--allow-domain",
            "example.com",
            "--allow-port",
            &p,
            "--",
            "python3",
            "-c",
            &fetch,
        ],
    );
    assert!(
        text(&out.stdout).contains("ERROR HTTP Error 403"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("--allow-domain localhost"),
        "{}",
        text(&out.stderr)
    );

    // Programs that ignore the proxy variables reach nothing, and there is no DNS.
    let direct = format!(
        "import socket\nfor target in [('127.0.0.1', {port}), ('1.1.1.1', 443)]:\n    try:\n        socket.create_connection(target, timeout=5); print('CONNECTED', target)\n    except OSError as e:\n        print('refused', target, e)\ntry:\n    socket.getaddrinfo('example.com', 80); print('RESOLVED')\nexcept OSError as e:\n    print('no dns', e)\n"
    );
    let out = run_in(
        ws.path(),
        &[
            "run",
            "--allow-domain",
            "localhost",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            &p,
            "--",
            "python3",
            "-c",
            &direct,
        ],
    );
    let s = text(&out.stdout);
    assert!(!s.contains("CONNECTED") && !s.contains("RESOLVED"), "{s}");
    assert_eq!(s.matches("refused").count(), 2, "{s}");
    assert!(s.contains("no dns"), "{s}");
    let out = run_in(
        ws.path(),
        &[
            "run",
            "--allow-domain",
            "localhost",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            &p,
            "--",
            "bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED; if command -v curl >/dev/null; then curl -s --noproxy '*' http://127.0.0.1:{port}/ && echo CURL-CONNECTED; fi; true"
            ),
        ],
    );
    assert!(
        !text(&out.stdout).contains("CONNECTED"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn proxy_mode_in_pod_isolation_is_refused_clearly() {
    let ws = tempfile::tempdir().unwrap();
    let out = run_in(
        ws.path(),
        &[
            "run",
            "--isolation",
            "pod",
            "--allow-domain",
            "example.com",
            "--",
            "true",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("pod isolation"), "{err}");
    assert!(
        !err.contains("--allow-degraded"),
        "suggests a flag that cannot help: {err}"
    );
}

#[test]
fn egress_flags_without_the_proxy_are_usage_errors() {
    bad_input(
        &[
            "run",
            "--profile",
            "offline",
            "--allow-domain",
            "example.com",
            "--",
            "true",
        ],
        &["offline", "network"],
    );
    bad_input(
        &["run", "--allow-cidr", "10.0.0.0/8", "--", "true"],
        &["--allow-domain"],
    );
    bad_input(
        &["run", "--allow-domain", "*.", "--", "true"],
        &["--allow-domain"],
    );
    bad_input(
        &[
            "run",
            "--allow-domain",
            "x.example",
            "--allow-cidr",
            "nonsense",
            "--",
            "true",
        ],
        &["--allow-cidr"],
    );
}

fn sh(cmd: &str, dir: &Path) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// A test CA (`ca.pem`) and a certificate for localhost (`srv.pem`, `srv.key`) in `dir`,
/// made with the distribution's openssl.
fn make_certificates(dir: &Path) {
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj '/CN=warden test CA'",
        dir,
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj '/CN=localhost'",
        dir,
    );
    fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    sh(
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile san.ext",
        dir,
    );
}

/// The HTTPS test server of `tests/fixtures/https_server.py` on the host's loopback, outside
/// any sandbox: an API that checks a token, and git repositories under `git_root`.
struct HttpsServer {
    child: std::process::Child,
    port: String,
}

impl HttpsServer {
    fn start(dir: &Path, git_root: &Path, token: &str) -> HttpsServer {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/https_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["srv.pem", "srv.key"])
            .arg(git_root)
            .arg(token)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        HttpsServer {
            child,
            port: line.trim().to_string(),
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_clients_tunnel_through_the_proxy_to_a_tls_server() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    make_certificates(dir);
    let server = HttpsServer::start(dir, dir, "unused");
    let port = &server.port;
    let script = format!(
        "curl -sS --cacert ca.pem https://localhost:{port}/api/hello; echo; python3 -c \"import ssl, urllib.request; c = ssl.create_default_context(cafile='ca.pem'); print(urllib.request.urlopen('https://localhost:{port}/api/hello', context=c, timeout=10).read().decode())\""
    );
    let out = run_in(
        dir,
        &[
            "run",
            "--allow-domain",
            "localhost",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            port,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.matches(r#""path": "/api/hello""#).count(),
        2,
        "curl and python both: {stdout}\n{}",
        text(&out.stderr)
    );
}

/// A bare repository `<root>/<name>.git` holding one commit with `README`.
fn bare_repository(root: &Path, name: &str) {
    let seed = root.join(format!("{name}-seed"));
    fs::create_dir_all(&seed).unwrap();
    sh(
        &format!(
            "git init -q -b main . && echo hello > README && git add README && \
             git -c user.name=t -c user.email=t@example.com commit -q -m seed && \
             git clone -q --bare . {root}/{name}.git && \
             git -C {root}/{name}.git config http.receivepack true",
            root = root.display()
        ),
        &seed,
    );
}

#[test]
fn git_clones_through_a_tunnel_and_pushes_through_the_git_route_without_the_token() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    make_certificates(dir);
    let repos = dir.join("repos");
    fs::create_dir_all(repos.join("public")).unwrap();
    fs::create_dir_all(repos.join("private")).unwrap();
    bare_repository(&repos.join("public"), "open");
    bare_repository(&repos.join("private"), "app");
    let token = "ghp_test_secret_0f9e8d7c6b5a";
    let server = HttpsServer::start(dir, &repos, token);
    let port = &server.port;
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::copy(dir.join("ca.pem"), work.join("ca.pem")).unwrap();

    // 1. HTTPS through CONNECT: git trusts the test CA, the proxy sees only a tunnel.
    let clone = format!(
        "GIT_SSL_CAINFO=$PWD/ca.pem git clone -q https://localhost:{port}/public/open.git open && cat open/README"
    );
    let out = run_in(
        &work,
        &[
            "run",
            "--allow-domain",
            "localhost",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-port",
            port,
            "--",
            "sh",
            "-c",
            &clone,
        ],
    );
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));

    // 2. A private repository through the git route: the proxy adds the token; the sandbox
    // clones and pushes with the repository's usual URL and never holds the token.
    let policy = dir.join("git.toml");
    fs::write(
        &policy,
        format!(
            "[routes.git]\nupstream = \"https://localhost:{port}\"\nca_file = \"ca.pem\"\ncredential = {{ env = \"TEST_GIT_TOKEN\" }}\n"
        ),
    )
    .unwrap();
    let push = format!(
        "set -e; git clone -q https://localhost:{port}/private/app.git app; cd app; \
         echo change >> README; git -c user.name=agent -c user.email=a@example.com commit -qam change; \
         git push -q origin main; echo PUSHED; env | grep -c {token} || true; \
         git config --get-regexp 'url\\..*' | sed 's/ .*//'"
    );
    let mut cmd = warden();
    cmd.current_dir(&work)
        .env("TEST_GIT_TOKEN", token)
        .args(["run", "--policy"])
        .arg(&policy)
        .args(["--", "sh", "-c", &push]);
    let out = run(cmd);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PUSHED"), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("\n0\n"),
        "the token is in the sandbox's environment: {stdout}"
    );
    assert!(
        stdout.contains("url.http://127.0.0.1:3128/git/.insteadof"),
        "{stdout}"
    );
    let log = Command::new("git")
        .args(["log", "-1", "--format=%s %an"])
        .current_dir(repos.join("private/app.git"))
        .output()
        .unwrap();
    assert_eq!(text(&log.stdout), "change agent\n");
}

/// A Python script that prints everything a sandboxed process can read about the sandbox's
/// processes and its writable places, so that the test, outside, can look for the secret.
const DUMP_EVERYTHING: &str = r#"
import os, sys
out = sys.stdout.buffer
for pid in os.listdir('/proc'):
    if pid.isdigit():
        for part in ('environ', 'cmdline'):
            try:
                out.write(open(f'/proc/{pid}/{part}', 'rb').read() + b'\n')
            except OSError:
                pass
out.write(repr(dict(os.environ)).encode() + b'\n')
for top in (os.getcwd(), os.path.expanduser('~'), '/tmp', '/run', '/etc', '/var/tmp', '/dev/shm'):
    for root, dirs, files in os.walk(top):
        for f in files:
            try:
                out.write(open(os.path.join(root, f), 'rb').read() + b'\n')
            except OSError:
                pass
"#;

#[test]
fn credential_routes_add_the_secret_outside_the_sandbox_only() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    make_certificates(dir);
    let secret = "sk-ant-test-5e3c9a1b7d2f4e6a8c0b";
    let server = HttpsServer::start(dir, dir, secret);
    let port = &server.port;
    let policy = dir.join("routes.toml");
    fs::write(
        &policy,
        format!(
            "[routes.anthropic]\nupstream = \"https://localhost:{port}/api\"\nca_file = \"ca.pem\"\n\n\
             [routes.openai]\nupstream = \"https://localhost:{port}/api\"\nca_file = \"ca.pem\"\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("dump.py"), DUMP_EVERYTHING).unwrap();
    // Clients as agents use them: the base URL and key from the environment.
    let script = "set -e\n\
        curl -sS -X POST -H \"x-api-key: $ANTHROPIC_API_KEY\" -d '{}' \"$ANTHROPIC_BASE_URL/v1/messages\"; echo\n\
        python3 -c \"import os, urllib.request as u; r = u.Request(os.environ['OPENAI_BASE_URL'] + '/responses', data=b'{}', headers={'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']}); print(u.urlopen(r, timeout=10).read().decode())\"\n\
        python3 dump.py\n";
    let mut cmd = warden();
    cmd.current_dir(dir)
        .env("ANTHROPIC_API_KEY", secret)
        .env("OPENAI_API_KEY", secret)
        .args(["run", "--policy"])
        .arg(&policy)
        .args(["--", "sh", "-c", script]);
    let out = run(cmd);
    let stdout = text(&out.stdout);
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with("{\"path\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{stdout}\n{}", text(&out.stderr));
    assert_eq!(answers[0]["path"], "/api/v1/messages");
    assert_eq!(answers[0]["api_key_ok"], true);
    assert_eq!(answers[1]["path"], "/api/v1/responses");
    assert_eq!(answers[1]["bearer_ok"], true);
    assert_eq!(answers[0]["got_placeholder"], false);
    // The dump ran (it printed the sandbox's environment) and the secret is nowhere in it.
    assert!(stdout.contains("ANTHROPIC_BASE_URL"), "{stdout}");
    assert!(stdout.contains("warden-credential-route-placeholder"));
    assert!(!stdout.contains(secret), "the secret reached the sandbox");
    assert!(!text(&out.stderr).contains(secret));
}

#[test]
fn credential_route_mistakes_are_usage_errors() {
    bad_input(
        &["run", "--route", "nosuch", "--", "true"],
        &["--route", "anthropic, openai, git"],
    );
    bad_input(
        &[
            "run",
            "--profile",
            "offline",
            "--route",
            "anthropic",
            "--",
            "true",
        ],
        &["offline"],
    );
    bad_input(
        &[
            "run",
            "--network",
            "host",
            "--route",
            "anthropic",
            "--",
            "true",
        ],
        &["--route", "host"],
    );
    bad_input(
        &["run", "--route", "openai=ftp://gateway", "--", "true"],
        &["https://"],
    );
    // The secret is read on the host; without it the route cannot work.
    let ws = tempfile::tempdir().unwrap();
    let mut cmd = warden();
    cmd.current_dir(ws.path())
        .env_remove("ANTHROPIC_API_KEY")
        .args(["run", "--route", "anthropic", "--", "true"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains(
            "routes.anthropic.credential: environment variable ANTHROPIC_API_KEY is not set"
        ),
        "{}",
        text(&out.stderr)
    );
    // Passing the secret's variable into the sandbox as well is refused, not silently fixed.
    let mut cmd = warden();
    cmd.current_dir(ws.path())
        .env("ANTHROPIC_API_KEY", "sk-secret-value")
        .env("KEY_COPY", "sk-secret-value")
        .args([
            "run",
            "--route",
            "anthropic",
            "--pass-env",
            "KEY_COPY",
            "--",
            "true",
        ]);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("would hold a credential route's secret"),
        "{err}"
    );
    assert!(!err.contains("sk-secret-value"), "{err}");
}

/// Sends raw HTTP/1.1 on a new connection and returns everything the server sent until it
/// closed the connection or `until` appeared.
fn http_exchange(addr: &str, request: &str, until: &str) -> (std::net::TcpStream, String) {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !text(&got).contains(until) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (conn, text(&got))
}

#[test]
fn the_standalone_proxy_serves_its_policy_with_health_and_metrics() {
    use std::io::BufRead;
    let (port, _server) = hello_server();
    let ws = tempfile::tempdir().unwrap();
    let policy = ws.path().join("sidecar.toml");
    fs::write(
        &policy,
        format!(
            "[network]\nallow_domains = [\"localhost\"]\nallow_cidrs = [\"127.0.0.0/8\"]\nallow_ports = [{port}]\n"
        ),
    )
    .unwrap();
    let mut proxy = warden()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--policy")
        .arg(&policy)
        .args(["--sandbox-id", "sb-sidecar"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let mut stderr = std::io::BufReader::new(proxy.stderr.take().unwrap());
    stderr.read_line(&mut banner).unwrap();
    // "warden proxy: listening on ADDR; admin (GET /healthz, /metrics) on ADDR; routes: none"
    let addr_after = |marker: &str| {
        banner
            .split(marker)
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let (listen, admin) = (addr_after("listening on "), addr_after(") on "));

    let (_, health) = http_exchange(
        &admin,
        "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "\n}",
    );
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("{\"status\":\"ok\"}"),
        "{health}"
    );

    let (_, allowed) = http_exchange(
        &listen,
        &format!(
            "GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
        ),
        "hello",
    );
    assert!(
        allowed.starts_with("HTTP/1.1 200") && allowed.ends_with("hello"),
        "{allowed}"
    );
    let (_, denied) = http_exchange(
        &listen,
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        "allow",
    );
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    // A tunnel held open shows in the gauge.
    let (tunnel, established) = http_exchange(
        &listen,
        &format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
        "\r\n\r\n",
    );
    assert!(established.starts_with("HTTP/1.1 200"), "{established}");

    let (_, metrics) = http_exchange(
        &admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "# EOF",
    );
    for line in [
        "warden_egress_requests_total{kind=\"forward\",verdict=\"allowed\"} 1",
        "warden_egress_requests_total{kind=\"forward\",verdict=\"denied\"} 1",
        "warden_egress_tunnels_open 1",
        "warden_egress_bytes_total{direction=\"down\"} 5",
        "warden_egress_request_duration_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    drop(tunnel);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = proxy.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(out.status.code(), Some(0), "{rest}");
    assert!(rest.contains("SIGTERM, stopping"), "{rest}");
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{}", text(&out.stdout));
    assert!(events.iter().all(|e| e["sandbox_id"] == "sb-sidecar"));
    assert_eq!(events[1]["verdict"], "denied");
}

#[test]
fn the_standalone_proxy_refuses_bad_input_clearly() {
    let ws = tempfile::tempdir().unwrap();
    let policy = ws.path().join("bad.toml");
    fs::write(&policy, "[network]\nallow_domain = [\"x\"]\n").unwrap();
    let out = run_in(ws.path(), &["proxy", "--policy", policy.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("line 2") && err.contains("allow_domains"),
        "{err}"
    );
    let out = run_in(ws.path(), &["proxy", "--route", "nosuch"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("built-in route"),
        "{}",
        text(&out.stderr)
    );
    let out = run_in(ws.path(), &["proxy", "--listen", "nonsense"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--listen"),
        "{}",
        text(&out.stderr)
    );
}

/// warden in a user namespace whose limit on network namespaces is 0 (a host that refuses
/// them): the sandbox's network namespace cannot be made.
fn warden_without_network_namespaces(ws: &Path, run_args: &[&str]) -> Output {
    // `unshare` execs the shell, which execs warden: the pid `run` checks for leftovers is
    // warden's.
    let mut cmd = Command::new("unshare");
    cmd.current_dir(ws)
        .env_remove("WARDEN_LOG")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_net_namespaces && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_warden"),
        ])
        .args(run_args);
    run(cmd)
}

#[test]
fn a_refused_network_namespace_is_refused_clearly_or_degrades_to_pod_isolation() {
    let ws = tempfile::tempdir().unwrap();
    let out = warden_without_network_namespaces(ws.path(), &["run", "--", "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(
            "network-namespace: the kernel refused to create the sandbox's network namespace"
        ),
        "{err}"
    );
    assert!(err.contains("--allow-degraded network-namespace"), "{err}");

    // Every namespace layer allowed to degrade: the run goes on in pod isolation, and says so.
    let mut args = vec!["run"];
    for layer in [
        "user-namespace",
        "pid-namespace",
        "mount-namespace",
        "network-namespace",
        "ipc-namespace",
        "uts-namespace",
    ] {
        args.extend(["--allow-degraded", layer]);
    }
    args.extend(["--", "sh", "-c", "echo ran"]);
    let out = warden_without_network_namespaces(ws.path(), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(text(&out.stdout), "ran\n");
    assert!(
        err.contains("running in pod isolation instead, WITHOUT user-namespace"),
        "{err}"
    );
    assert!(err.contains("network-namespace"), "{err}");
}
