//! Escape tests that run for real: `warden-probe` is copied into a sandbox's workspace and
//! tries to break out; every attempt must be blocked. Each scenario runs in full isolation
//! and, where the layer exists there, in pod isolation (Landlock + seccomp + no_new_privs +
//! rlimits, no namespaces), the way `warden sandboxd` jails commands inside a pod.
//!
//! The tests need root or unprivileged user namespaces, Landlock and seccomp: what CI and
//! this project's development machines have. They fail, never skip, when a layer is missing.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use warden_jail::{Degraded, Jail, JailConfig, Layer, LayerStatus, Outcome, Termination};
use warden_policy::{ByteSize, EnvPattern, HomeMode, Isolation, Profile, ReadScope, SandboxPolicy};

/// Secrets planted in the fake home, each holding [`SECRET`].
const HOME_SECRETS: &[&str] = &[
    ".ssh/id_ed25519",
    ".gnupg/private-keys-v1.d/key.key",
    ".aws/credentials",
    ".azure/accessTokens.json",
    ".config/gcloud/credentials.db",
    ".kube/config",
    ".docker/config.json",
    ".git-credentials",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".vault-token",
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".mozilla/firefox/abc.default/cookies.sqlite",
    ".config/google-chrome/Default/Cookies",
    ".config/chromium/Default/Login Data",
];
const SECRET: &str = "SECRET-do-not-leak";

struct Sandbox {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    home: PathBuf,
    /// A host directory outside the workspace.
    outside: PathBuf,
}

struct Run {
    outcome: Outcome,
    lines: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn attempts(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|l| l["outcome"] != "info")
    }
    fn escapes(&self) -> Vec<&Value> {
        self.attempts()
            .filter(|l| l["outcome"] == "escaped")
            .collect()
    }
    fn info(&self, check: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["check"] == check)
            .unwrap_or_else(|| panic!("no {check} line in {}", self.stdout))
    }
    /// Every attempt was made and blocked; `expected` attempts at least (so that a probe
    /// that dies early cannot pass).
    fn assert_all_blocked(&self, expected: usize) {
        let n = self.attempts().count();
        assert!(
            n >= expected,
            "only {n} attempts reported, expected {expected}:\n{}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let escapes = self.escapes();
        assert!(
            escapes.is_empty(),
            "escapes:\n{}",
            escapes
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn probe_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-probe"))
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("warden-escape-")
            .tempdir()
            .unwrap();
        let ws = dir.path().join("workspace");
        let home = dir.path().join("home");
        let outside = dir.path().join("outside");
        for d in [&ws, &home, &outside] {
            fs::create_dir(d).unwrap();
        }
        let probe = ws.join("warden-probe");
        fs::copy(probe_binary(), &probe).unwrap();
        fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
        for s in HOME_SECRETS {
            let p = home.join(s);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, SECRET).unwrap();
        }
        fs::write(home.join("notes.txt"), "not a secret").unwrap();
        fs::write(outside.join("data.txt"), "outside").unwrap();
        Sandbox {
            ws,
            home,
            outside,
            _dir: dir,
        }
    }

    fn policy(&self, isolation: Isolation) -> SandboxPolicy {
        let mut p = Profile::Default.policy();
        p.isolation = isolation;
        p.filesystem.workspace = Some(self.ws.clone());
        p
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("HOME".into(), self.home.clone().into()),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ]
    }

    fn run(&self, policy: SandboxPolicy, args: &[&str]) -> Run {
        self.run_with_env(policy, args, self.env())
    }

    fn run_with_env(
        &self,
        policy: SandboxPolicy,
        args: &[&str],
        host_env: Vec<(OsString, OsString)>,
    ) -> Run {
        let mut command: Vec<OsString> = vec!["./warden-probe".into()];
        command.extend(args.iter().map(OsString::from));
        self.run_command(policy, command, host_env)
    }

    fn run_command(
        &self,
        policy: SandboxPolicy,
        command: Vec<OsString>,
        host_env: Vec<(OsString, OsString)>,
    ) -> Run {
        self.run_bridged(policy, command, host_env, None)
    }

    fn run_bridged(
        &self,
        policy: SandboxPolicy,
        command: Vec<OsString>,
        host_env: Vec<(OsString, OsString)>,
        egress: Option<warden_jail::EgressBridge>,
    ) -> Run {
        let mut out = tempfile::tempfile().unwrap();
        let mut err = tempfile::tempfile().unwrap();
        let null = fs::File::open("/dev/null").unwrap();
        let config = JailConfig {
            policy,
            command,
            cwd: self.ws.clone(),
            host_env,
            degraded: Degraded::none(),
            tty: false,
            stdio: [
                Some(OwnedFd::from(null)),
                Some(OwnedFd::from(out.try_clone().unwrap())),
                Some(OwnedFd::from(err.try_clone().unwrap())),
            ],
            forward_signals: false,
            egress,
        };
        let jail = Jail::prepare(config).unwrap_or_else(|e| panic!("prepare: {e}"));
        let outcome = jail.run().unwrap_or_else(|e| panic!("run: {e}"));
        let mut stdout = String::new();
        out.rewind().unwrap();
        out.read_to_string(&mut stdout).unwrap();
        let mut stderr = String::new();
        err.rewind().unwrap();
        err.read_to_string(&mut stderr).unwrap();
        let lines = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Run {
            outcome,
            lines,
            stdout,
            stderr,
        }
    }
}

fn both_modes(mut test: impl FnMut(Isolation)) {
    test(Isolation::Full);
    test(Isolation::Pod);
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// --- secrets --------------------------------------------------------------------------------

#[test]
fn blocklisted_paths_cannot_be_read_even_with_the_home_visible() {
    // /run/secrets and /var/run/secrets: plant a token where Kubernetes would.
    let token_dir = Path::new("/run/secrets");
    let planted = !token_dir.exists();
    fs::create_dir_all(token_dir).unwrap();
    let token = token_dir.join(format!("warden-escape-test-{}", std::process::id()));
    fs::write(&token, SECRET).unwrap();

    both_modes(|isolation| {
        let sb = Sandbox::new();
        let mut policy = sb.policy(isolation);
        // The most permissive reading policy: the whole host and the real home readable.
        policy.filesystem.read_scope = ReadScope::Host;
        policy.filesystem.home = HomeMode::ReadOnly;
        let mut targets: Vec<String> = HOME_SECRETS.iter().map(|p| s(&sb.home.join(p))).collect();
        for dir in [
            ".ssh",
            ".gnupg",
            ".aws",
            ".kube",
            ".docker",
            ".config/gcloud",
            ".mozilla",
            ".config/google-chrome",
        ] {
            targets.push(s(&sb.home.join(dir)));
        }
        targets.extend(["/etc/shadow", "/etc/gshadow", "/root"].map(String::from));
        targets.push(s(&token));
        targets.push(format!(
            "/var/run/secrets/{}",
            token.file_name().unwrap().to_string_lossy()
        ));
        let args: Vec<&str> = std::iter::once("read")
            .chain(targets.iter().map(String::as_str))
            .collect();
        let run = sb.run(policy.clone(), &args);
        run.assert_all_blocked(targets.len());
        assert!(
            !run.stdout.contains(SECRET),
            "{isolation:?}: a secret leaked:\n{}",
            run.stdout
        );

        // Positive control: the home is visible in this policy, so the masks did the work.
        let run = sb.run(
            policy,
            &["read", &s(&sb.home.join("notes.txt")), "/etc/passwd"],
        );
        assert_eq!(
            run.escapes().len(),
            2,
            "{isolation:?}: the home should be readable here:\n{}",
            run.stdout
        );
    });

    fs::remove_file(&token).unwrap();
    if planted {
        let _ = fs::remove_dir(token_dir);
    }
}

#[test]
fn the_default_home_is_private_and_empty() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let run = sb.run(
            sb.policy(isolation),
            &[
                "read",
                &s(&sb.home.join("notes.txt")),
                &s(&sb.home.join(".ssh/id_ed25519")),
                &s(&sb.outside),
            ],
        );
        run.assert_all_blocked(3);
    });
}

// --- writes ---------------------------------------------------------------------------------

#[test]
fn writes_outside_the_workspace_fail_and_the_workspace_is_writable() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let host_tmp_file = format!("/tmp/warden-escape-{}-{isolation:?}", std::process::id());
        let targets = [
            "/etc",
            "/usr",
            "/var/tmp",
            &s(&sb.outside),
            &s(&sb.home),
            &host_tmp_file,
            "/etc/passwd",
        ];
        let mut args = vec!["write"];
        args.extend(targets.iter().copied());
        let run = sb.run(sb.policy(isolation), &args);
        // In full isolation the home and /tmp are private tmpfs: writing there works but the
        // host never sees it. Everything else must fail outright.
        let host_paths: Vec<&Value> = run
            .escapes()
            .into_iter()
            .filter(|e| {
                let t = e["target"].as_str().unwrap();
                !(isolation == Isolation::Full
                    && (t.starts_with(&s(&sb.home)) || t.starts_with("/tmp/")))
            })
            .collect();
        assert!(
            host_paths.is_empty(),
            "{isolation:?}: wrote outside the workspace: {host_paths:?}"
        );
        assert!(
            run.attempts().count() >= 2 * targets.len(),
            "{}",
            run.stdout
        );
        // Nothing reached the host.
        assert_eq!(fs::read_dir(&sb.outside).unwrap().count(), 1);
        assert!(!Path::new(&host_tmp_file).exists());
        let home_entries: Vec<_> = fs::read_dir(&sb.home)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            !home_entries
                .iter()
                .any(|n| n.to_string_lossy().starts_with("warden-probe")),
            "{home_entries:?}"
        );
        assert!(
            !fs::read_to_string("/etc/passwd")
                .unwrap()
                .contains("escaped")
        );

        // The workspace is writable, and the host sees the result.
        let run = sb.run(sb.policy(isolation), &["write", &s(&sb.ws)]);
        assert_eq!(run.escapes().len(), 2, "{}", run.stdout);
        assert!(
            fs::read_dir(&sb.ws)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("warden-probe-"))
        );
    });
}

#[test]
fn symlinks_hard_links_and_proc_roots_do_not_escape() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        std::os::unix::fs::symlink("/etc/shadow", sb.ws.join("host-symlink-to-shadow")).unwrap();
        std::os::unix::fs::symlink("/root", sb.ws.join("host-symlink-to-root")).unwrap();
        std::os::unix::fs::symlink(sb.home.join(".ssh"), sb.ws.join("host-symlink-to-ssh"))
            .unwrap();
        let mut policy = sb.policy(isolation);
        policy.filesystem.home = HomeMode::ReadOnly;
        let run = sb.run(policy, &["links", &s(&sb.ws)]);
        // 1 own symlink + 3 host symlinks + write-through + 3 hard links + 4 proc reads + 2 proc writes
        run.assert_all_blocked(14);
        assert!(!Path::new("/etc/warden-probe-escape").exists());
    });
}

// --- network --------------------------------------------------------------------------------

#[test]
fn the_host_network_is_unreachable() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let tcp_addr = tcp.local_addr().unwrap().to_string();
    let udp_addr = udp.local_addr().unwrap().to_string();
    // An answering UDP server, so that a datagram that got through would be answered.
    let echo = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = [0u8; 64];
        for _ in 0..60 {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                got += n;
                let _ = udp.send_to(b"pong", from);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        got
    });
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let run = sb.run(
            sb.policy(isolation),
            &["tcp", &tcp_addr, "1.1.1.1:443", "[::1]:22"],
        );
        run.assert_all_blocked(3);
        let run = sb.run(sb.policy(isolation), &["tcp-listen", "8080"]);
        run.assert_all_blocked(3);
        let run = sb.run(sb.policy(isolation), &["udp", &udp_addr]);
        run.assert_all_blocked(1);
    });
    assert!(
        tcp.accept().is_err(),
        "a connection reached the host's listener"
    );
    assert_eq!(echo.join().unwrap(), 0, "a datagram reached the host");
}

#[test]
fn raw_packet_and_other_family_sockets_are_refused() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        sb.run(sb.policy(isolation), &["sockets"])
            .assert_all_blocked(13);
    });
}

// --- kernel attack surface ------------------------------------------------------------------

#[test]
fn ptrace_and_process_memory_access_are_refused() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let me = std::process::id().to_string();
        sb.run(sb.policy(isolation), &["ptrace", &me])
            .assert_all_blocked(5);
    });
}

#[test]
fn mounting_is_refused() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        sb.run(sb.policy(isolation), &["mount"])
            .assert_all_blocked(12);
    });
}

#[test]
fn new_namespaces_are_refused() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        // 8 unshare + clone + clone3 + 4 setns + the sysctl write
        sb.run(sb.policy(isolation), &["namespaces"])
            .assert_all_blocked(15);
    });
}

#[test]
fn io_uring_bpf_keyctl_and_other_dangerous_calls_are_refused() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let run = sb.run(sb.policy(isolation), &["syscalls"]);
        run.assert_all_blocked(28);
        for check in [
            "io_uring_setup",
            "bpf",
            "add_key",
            "keyctl",
            "perf_event_open",
            "userfaultfd",
            "kexec_load",
            "finit_module",
            "personality",
            "ioctl",
        ] {
            assert!(
                run.attempts().any(|l| l["check"] == check),
                "{check} not attempted:\n{}",
                run.stdout
            );
        }
    });
}

// --- processes ------------------------------------------------------------------------------

#[test]
fn host_processes_can_be_neither_seen_nor_signalled() {
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = victim.id().to_string();
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let run = sb.run(sb.policy(isolation), &["kill", &pid]);
        if isolation == Isolation::Full {
            run.assert_all_blocked(5);
            let procs = sb.run(sb.policy(isolation), &["procs"]);
            let pids = procs.info("procs")["pids"].as_array().unwrap().clone();
            assert!(
                pids.len() <= 3 && pids.iter().all(|p| p.as_u64().unwrap() < 10),
                "sees host processes: {pids:?}"
            );
        } else {
            // Without a pid namespace the process is listed in /proc, but the Landlock signal
            // scope and seccomp keep it out of reach.
            let attempts: Vec<&Value> = run
                .attempts()
                .filter(|l| l["check"] != "see-process")
                .collect();
            assert!(attempts.len() >= 4, "{}", run.stdout);
            assert!(
                attempts.iter().all(|l| l["outcome"] == "blocked"),
                "{}",
                run.stdout
            );
        }
        assert!(
            victim.try_wait().unwrap().is_none(),
            "{isolation:?}: the host process was killed"
        );
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn no_capabilities_no_new_privileges_and_seccomp_in_every_mode() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let run = sb.run(sb.policy(isolation), &["whoami"]);
        let who = run.info("whoami");
        for cap in ["cap_eff", "cap_prm", "cap_bnd", "cap_amb"] {
            assert_eq!(
                who[cap], "0000000000000000",
                "{isolation:?}: {cap} in {who}"
            );
        }
        assert_eq!(who["no_new_privs"], "1");
        assert_eq!(who["seccomp"], "2");
        if isolation == Isolation::Full {
            assert_eq!(who["hostname"], "warden");
        }
    });
}

#[test]
fn a_setuid_binary_does_not_escalate() {
    // A setuid-root copy of the probe, owned by root, reachable read-only. Inside, the mounts
    // are nosuid and no_new_privs is set: exec must not raise any capability. (The CLI tests
    // repeat this with a non-root invoker, where a raised euid would show.)
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let suid_dir = sb.outside.join("suid");
        fs::create_dir(&suid_dir).unwrap();
        let suid = suid_dir.join("probe-suid");
        fs::copy(probe_binary(), &suid).unwrap();
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(&suid_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let mut policy = sb.policy(isolation);
        policy.filesystem.read_only.push(suid_dir.clone());
        let run = sb.run_command(policy, vec![suid.clone().into(), "whoami".into()], sb.env());
        let who = run.info("whoami");
        assert_eq!(who["cap_eff"], "0000000000000000", "{who}");
        assert_eq!(who["cap_prm"], "0000000000000000", "{who}");
    });
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let mut policy = sb.policy(isolation);
        policy.resources.pids = Some(32);
        let run = sb.run(policy, &["forkbomb"]);
        run.assert_all_blocked(1);
        let detail = run.lines[0]["detail"].as_str().unwrap();
        let children: u32 = detail.split_whitespace().next().unwrap().parse().unwrap();
        assert!(children < 32, "{detail}");
        assert!(
            detail.contains("Resource temporarily unavailable"),
            "{detail}"
        );
        assert_eq!(run.outcome.termination, Termination::Exited { code: 0 });
        // The host can still fork.
        assert!(Command::new("true").status().unwrap().success());
    });
}

#[test]
fn a_memory_hog_is_killed_and_reported() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let mut policy = sb.policy(isolation);
        policy.resources.memory = Some(ByteSize::mib(64));
        let run = sb.run(policy, &["memhog", "1024"]);
        assert!(
            run.escapes().is_empty(),
            "{isolation:?}: allocated 1 GiB under a 64 MiB limit"
        );
        assert_eq!(
            run.outcome.termination,
            Termination::Signaled {
                signal: libc::SIGKILL
            },
            "{isolation:?}: {}",
            run.stderr
        );
        assert!(
            run.outcome.memory_limit_hit,
            "{isolation:?}: the OOM kill was not reported"
        );
    });
}

fn processes_with(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(token)
        {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn a_timeout_kills_the_whole_tree_daemons_included() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let token = format!("warden-tree-{}-{isolation:?}", std::process::id());
        let mut policy = sb.policy(isolation);
        policy.resources.timeout = Some(Duration::from_millis(1500));
        let run = sb.run(policy, &["spawn-tree", &token]);
        assert_eq!(run.info("spawn-tree")["token"], token.as_str());
        assert!(
            matches!(run.outcome.termination, Termination::TimedOut { .. }),
            "{:?}",
            run.outcome.termination
        );
        let left = processes_with(&token);
        assert!(
            left.is_empty(),
            "{isolation:?}: processes left behind: {left:?}"
        );
    });
}

// --- the environment ------------------------------------------------------------------------

#[test]
fn injected_variables_are_stripped_even_when_everything_passes() {
    let injected = [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "BASH_ENV",
        "ENV",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PERL5OPT",
        "NODE_OPTIONS",
        "RUBYOPT",
        "PROMPT_COMMAND",
        "GIT_CONFIG_GLOBAL",
    ];
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let mut env = sb.env();
        for v in injected {
            env.push((v.into(), "/tmp/evil.so".into()));
        }
        env.push(("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()));
        env.push(("TERM".into(), "xterm-256color".into()));
        let run = sb.run_with_env(sb.policy(isolation), &["env"], env.clone());
        let vars = run.info("env")["vars"].as_object().unwrap().clone();
        for v in injected {
            assert!(!vars.contains_key(v), "{isolation:?}: {v} passed");
        }
        assert!(
            !vars.contains_key("AWS_SECRET_ACCESS_KEY"),
            "{isolation:?}: a host secret passed by default"
        );
        assert_eq!(vars["TERM"], "xterm-256color");
        assert_eq!(vars["WARDEN_SANDBOX"].as_str().map(|_| ()), Some(()));

        // Passing everything still never passes injection variables.
        let mut policy = sb.policy(isolation);
        policy.environment.pass = vec!["*".parse::<EnvPattern>().unwrap()];
        let run = sb.run_with_env(policy, &["env"], env);
        let vars = run.info("env")["vars"].as_object().unwrap().clone();
        assert!(vars.contains_key("AWS_SECRET_ACCESS_KEY"));
        for v in injected {
            assert!(
                !vars.contains_key(v),
                "{isolation:?}: {v} passed with pass = [\"*\"]"
            );
        }
    });
}

// --- positive cases -------------------------------------------------------------------------

#[test]
fn exit_codes_and_signals_come_back() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        assert_eq!(
            sb.run(sb.policy(isolation), &["exit", "3"])
                .outcome
                .termination,
            Termination::Exited { code: 3 }
        );
        assert_eq!(
            sb.run(sb.policy(isolation), &["exit", "0"])
                .outcome
                .termination,
            Termination::Exited { code: 0 }
        );
        assert_eq!(
            sb.run(sb.policy(isolation), &["signal", "15"])
                .outcome
                .termination,
            Termination::Signaled {
                signal: libc::SIGTERM
            }
        );
        let missing = sb.run_command(
            sb.policy(isolation),
            vec!["no-such-program-anywhere".into()],
            sb.env(),
        );
        assert_eq!(missing.outcome.termination, Termination::NotFound);
    });
}

#[test]
fn shell_python_and_git_run_in_the_workspace() {
    both_modes(|isolation| {
        let sb = Sandbox::new();
        let script = "set -e
            echo from-sh
            python3 -c 'import sys; print(\"from-python\", sys.version_info[0])'
            git init -q repo && cd repo
            echo hello > file.txt
            git add file.txt
            git -c user.name=t -c user.email=t@example.com commit -qm first
            git log --format=%s";
        let run = sb.run_command(
            sb.policy(isolation),
            vec!["sh".into(), "-c".into(), script.into()],
            sb.env(),
        );
        assert_eq!(
            run.outcome.termination,
            Termination::Exited { code: 0 },
            "stdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stdout.contains("from-sh")
                && run.stdout.contains("from-python 3")
                && run.stdout.contains("first"),
            "{}",
            run.stdout
        );
        assert!(sb.ws.join("repo/.git/HEAD").is_file());
    });
}

#[test]
fn every_layer_of_the_default_policy_is_enforced() {
    let sb = Sandbox::new();
    let run = sb.run(sb.policy(Isolation::Full), &["exit", "0"]);
    let required = [
        Layer::UserNamespace,
        Layer::PidNamespace,
        Layer::MountNamespace,
        Layer::NetworkNamespace,
        Layer::IpcNamespace,
        Layer::UtsNamespace,
        Layer::LandlockFs,
        Layer::LandlockNet,
        Layer::LandlockScope,
        Layer::Seccomp,
        Layer::Capabilities,
        Layer::NoNewPrivs,
        Layer::CgroupMemory,
        Layer::CgroupPids,
        Layer::Rlimits,
        Layer::DieWithParent,
    ];
    for layer in required {
        let report = run
            .outcome
            .layers
            .iter()
            .find(|l| l.layer == layer)
            .unwrap_or_else(|| panic!("{layer} not reported"));
        assert!(
            matches!(report.status, LayerStatus::Enforced { .. }),
            "{layer}: {:?}",
            report.status
        );
    }
    // Pod isolation reports its namespaces as not requested rather than pretending.
    let run = sb.run(sb.policy(Isolation::Pod), &["exit", "0"]);
    let user = run
        .outcome
        .layers
        .iter()
        .find(|l| l.layer == Layer::UserNamespace)
        .unwrap();
    assert!(!user.is_enforced());
    for layer in [
        Layer::LandlockFs,
        Layer::Seccomp,
        Layer::NoNewPrivs,
        Layer::Capabilities,
        Layer::Rlimits,
    ] {
        assert!(
            run.outcome
                .layers
                .iter()
                .any(|l| l.layer == layer && l.is_enforced()),
            "{layer} not enforced in pod mode"
        );
    }
}

#[test]
fn the_command_cannot_kill_init_to_orphan_its_tree() {
    // Pod isolation without cgroups (the `pod` profile) is the hard case: no pid namespace
    // and no cgroup.kill, so init is all that holds the tree together.
    for (isolation, profile) in [
        (Isolation::Full, Profile::Default),
        (Isolation::Pod, Profile::Pod),
        (Isolation::Pod, Profile::Default),
    ] {
        let sb = Sandbox::new();
        let mut policy = profile.policy();
        policy.isolation = isolation;
        policy.filesystem.workspace = Some(sb.ws.clone());
        let token = format!(
            "warden-orphan-{}-{isolation:?}-{profile:?}",
            std::process::id()
        );
        let run = sb.run(policy, &["kill-init", &token]);
        run.assert_all_blocked(1);
        assert_eq!(
            run.outcome.termination,
            Termination::Exited { code: 0 },
            "{isolation:?} {profile:?}: {}",
            run.stdout
        );
        let left = processes_with(&token);
        assert!(
            left.is_empty(),
            "{isolation:?} {profile:?}: orphans outlived the sandbox: {left:?}"
        );
    }
}

#[test]
fn the_egress_bridge_port_is_the_only_way_out() {
    use std::io::{Read as _, Write as _};
    let sb = Sandbox::new();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let host_addr = host.local_addr().unwrap().to_string();
    let port: u16 = 18_000 + (std::process::id() % 1000) as u16;
    let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
    // The supervisor's side: accept from the sandbox's listening socket and answer.
    let server = std::thread::spawn(move || {
        let listener = TcpListener::from(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the bridge socket"),
        );
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
        buf[..n].to_vec()
    });
    let mut policy = sb.policy(Isolation::Full);
    policy.network.mode = warden_policy::NetworkMode::Proxy;
    let bridge = warden_jail::EgressBridge {
        port,
        listener: tx,
        env: Vec::new(),
    };
    let other = format!("127.0.0.1:{}", port + 1);
    let bridged = format!("127.0.0.1:{port}");
    let command: Vec<OsString> = [
        "./warden-probe",
        "tcp",
        &bridged,
        &other,
        &host_addr,
        "1.1.1.1:443",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let run = sb.run_bridged(policy.clone(), command, sb.env(), Some(bridge));
    let received = server.join().unwrap();
    assert_eq!(
        received, b"escaped\n",
        "the bridged connection did not arrive"
    );
    let attempts: Vec<&Value> = run.attempts().collect();
    assert_eq!(attempts.len(), 4, "{}", run.stdout);
    assert_eq!(
        attempts[0]["outcome"], "escaped",
        "the bridge port must connect: {}",
        run.stdout
    );
    for a in &attempts[1..] {
        assert_eq!(a["outcome"], "blocked", "{a}");
    }
    // Refused by Landlock (EACCES), not merely by an empty port (ECONNREFUSED).
    assert!(
        attempts[1]["detail"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{}",
        attempts[1]
    );
    assert!(
        host.accept().is_err(),
        "a connection reached the host's listener"
    );
    let net = run
        .outcome
        .layers
        .iter()
        .find(|l| l.layer == Layer::LandlockNet)
        .unwrap();
    assert!(
        format!("{:?}", net.status).contains(&port.to_string()),
        "{net:?}"
    );

    // Binding is still refused, the bridge port included (it is taken, and Landlock denies it).
    let (tx, _rx) = std::sync::mpsc::channel::<OwnedFd>();
    let run = sb.run_bridged(
        policy,
        ["./warden-probe", "tcp-listen", &port.to_string()]
            .iter()
            .map(OsString::from)
            .collect(),
        sb.env(),
        Some(warden_jail::EgressBridge {
            port,
            listener: tx,
            env: Vec::new(),
        }),
    );
    run.assert_all_blocked(3);
}
