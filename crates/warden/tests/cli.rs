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
        "{} run --tty -- sh -c 'tty; test -t 0 && test -t 1 && echo is-a-terminal; stty size'",
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

#[test]
fn https_clients_tunnel_through_the_proxy_to_a_tls_server() {
    use std::io::BufRead;
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    // A test CA and a certificate for localhost (openssl from the distribution).
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
    // A TLS server on the host's loopback, outside the sandbox.
    let server_py = "import http.server, ssl, sys\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.send_header('Content-Length', '9'); self.end_headers(); self.wfile.write(b'hello-tls')\n    def log_message(self, *a): pass\ns = http.server.HTTPServer(('127.0.0.1', 0), H)\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain('srv.pem', 'srv.key')\ns.socket = ctx.wrap_socket(s.socket, server_side=True)\nprint(s.server_address[1], flush=True)\ns.serve_forever()\n";
    let mut server = Command::new("python3")
        .arg("-c")
        .arg(server_py)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().to_string();
    let script = format!(
        "curl -sS --cacert ca.pem https://localhost:{port}/; echo; python3 -c \"import ssl, urllib.request; c = ssl.create_default_context(cafile='ca.pem'); print(urllib.request.urlopen('https://localhost:{port}/', context=c, timeout=10).read().decode())\""
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
            &port,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.matches("hello-tls").count(),
        2,
        "curl and python both: {stdout}\n{}",
        text(&out.stderr)
    );
}
