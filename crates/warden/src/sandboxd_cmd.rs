//! `warden sandboxd`: the runtime server inside a sandbox or pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use warden_jail::spawn::{Confinement, PodJail, PodOptions, inherited_jail};
use warden_jail::{Degraded, Layer};
use warden_policy::{ByteSize, NetworkMode, Profile};
use warden_sandboxd::server::{Bound, Listen};
use warden_sandboxd::{Sandboxd, fs::Root};

/// How the commands sandboxd starts are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JailMode {
    /// Jail every command in pod isolation: Landlock (the root read-write, system
    /// directories read-only), seccomp, no_new_privs, rlimits. Refuses to start where the
    /// kernel cannot enforce them.
    Pod,
    /// sandboxd itself already runs inside a warden jail, whose layers every command
    /// inherits. Checked at start-up (NoNewPrivs 1 and Seccomp 2 in /proc/self/status);
    /// refuses to start otherwise.
    Inherited,
}

/// Serve the sandbox runtime protocols: the legacy REST API (python-runtime), sandboxd's
/// REST files API and gRPC process service, and warden's exec extension (buffered, SSE and
/// WebSocket with a terminal). Every listener serves every protocol (HTTP/1.1 and HTTP/2).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # In a pod, on the ports the k8s-agent-sandbox SDK expects (8888, 8080, 9090):
  warden sandboxd --root /workspace

  # In a pod with the `warden proxy` sidecar: commands reach the proxy and nothing else
  # (no other TCP port, no UDP); HTTP_PROXY, HTTPS_PROXY, ALL_PROXY point at it:
  warden sandboxd --root /workspace --egress-proxy 127.0.0.1:3128

  # For warden's local driver: one unix socket, commands already inside a warden jail:
  warden sandboxd --listen unix:/run/warden/sb-1.sock --root /work/sb-1 --jail inherited

  # Try it:
  warden sandboxd --listen 127.0.0.1:8080 --root \"$(mktemp -d)\" --quota 100M &
  curl -s localhost:8080/v1/exec -d '{\"command\": \"echo hi; pwd\"}'
  curl -s -T notes.txt localhost:8080/v1/files/docs/notes.txt
  curl -s localhost:8080/v1/files/docs

Exit codes: 64 bad flags, 69 a jail layer unavailable (or --jail inherited outside a jail),
70 cannot bind or open the root.")]
pub struct SandboxdArgs {
    /// Where to listen: HOST:PORT or unix:/path.sock (repeatable). Default: 0.0.0.0:8888,
    /// 0.0.0.0:8080 and 0.0.0.0:9090
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<Listen>,

    /// The workspace every file path and working directory stays beneath. Default:
    /// /workspace if it exists, else the current directory
    #[arg(long, value_name = "DIR", env = "WARDEN_SANDBOXD_ROOT")]
    pub root: Option<PathBuf>,

    /// Total size the files beneath the root may reach through uploads (e.g. 512M, 10G);
    /// an upload past it is refused with 413 RESOURCE_EXHAUSTED
    #[arg(long, value_name = "SIZE")]
    pub quota: Option<ByteSize>,

    /// How commands are confined
    #[arg(long, value_enum, default_value_t = JailMode::Pod)]
    pub jail: JailMode,

    /// With --jail pod: let commands reach the egress proxy on this loopback address (the
    /// `warden proxy` sidecar of the same pod, e.g. 127.0.0.1:3128) and nothing else.
    /// Landlock allows TCP connect to its port only (no bind, no other port), seccomp allows
    /// inet sockets for TCP only, and HTTP_PROXY, HTTPS_PROXY and ALL_PROXY (both cases)
    /// point at it. Landlock checks the port, not the address: the pod's NetworkPolicy must
    /// keep that port on other hosts out. Refused (69) where the kernel has no Landlock
    /// network rules (ABI 4, Linux 6.7). Without it, commands get no network at all
    #[arg(long, value_name = "IP:PORT", env = "WARDEN_SANDBOXD_EGRESS_PROXY")]
    pub egress_proxy: Option<SocketAddr>,

    /// Run even though this layer is unavailable, printing that it is missing. In pod
    /// isolation only Landlock's layers can be missing: `landlock-net` (with --egress-proxy
    /// that lets every TCP connection out; the NetworkPolicy must close it) or `landlock`
    /// (under gVisor, which implements no Landlock and is itself the boundary)
    #[arg(long = "allow-degraded", value_name = "LAYER")]
    pub allow_degraded: Vec<String>,
}

/// Checks `--egress-proxy`: a loopback address (the proxy shares the pod's network
/// namespace; the environment points clients at exactly this address) with a port.
fn check_egress_proxy(addr: SocketAddr) -> Result<SocketAddr, String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--egress-proxy `{addr}`: give the proxy's loopback address in this pod (e.g. 127.0.0.1:3128), not another host"
        ));
    }
    if addr.port() == 0 {
        return Err(format!(
            "--egress-proxy `{addr}`: give the proxy's port, not 0"
        ));
    }
    Ok(addr)
}

/// Parses `--allow-degraded`: pod isolation can run without Landlock's layers only
/// (`landlock-net` on a kernel without network rules; `landlock` as a whole under a runtime
/// without Landlock, such as gVisor). Seccomp, `no_new_privs` and rlimits are never optional.
fn parse_degraded(names: &[String]) -> Result<Degraded, String> {
    let mut degraded = Degraded::none();
    for name in names {
        let layers = Layer::parse_set(name).map_err(|e| format!("--allow-degraded: {e}"))?;
        if let Some(l) = layers.iter().find(|l| !Layer::LANDLOCK.contains(l)) {
            return Err(format!(
                "--allow-degraded `{}`: sandboxd cannot run without it; it can do without `landlock-net` (a kernel without Landlock's network rules) or `landlock` (a runtime without Landlock, such as gVisor)",
                l.name()
            ));
        }
        degraded.allow(layers);
    }
    Ok(degraded)
}

fn default_root() -> PathBuf {
    let ws = PathBuf::from("/workspace");
    if ws.is_dir() {
        ws
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    }
}

pub fn main(args: SandboxdArgs) -> ExitCode {
    let root_path = args.root.clone().unwrap_or_else(default_root);
    let root = match Root::open(&root_path) {
        Ok(r) => r,
        Err(e) => {
            say!(
                "warden sandboxd: --root `{}`: {e}; give an existing directory",
                root_path.display()
            );
            return ExitCode::from(64);
        }
    };
    let egress_proxy = match args.egress_proxy.map(check_egress_proxy).transpose() {
        Ok(p) => p,
        Err(e) => {
            say!("warden sandboxd: {e}");
            return ExitCode::from(64);
        }
    };
    let degraded = match parse_degraded(&args.allow_degraded) {
        Ok(d) => d,
        Err(e) => {
            say!("warden sandboxd: {e}");
            return ExitCode::from(64);
        }
    };
    if args.jail == JailMode::Inherited
        && (egress_proxy.is_some() || !args.allow_degraded.is_empty())
    {
        say!(
            "warden sandboxd: --egress-proxy and --allow-degraded need --jail pod; with --jail inherited the enclosing `warden run` decides the network"
        );
        return ExitCode::from(64);
    }
    let mut child_env = Vec::new();
    let mut scratch: Option<PathBuf> = None;
    let confinement = match args.jail {
        JailMode::Inherited => {
            if let Err(why) = inherited_jail() {
                say!(
                    "warden sandboxd: refusing to start with --jail inherited: {why}. Start sandboxd inside `warden run`, or use --jail pod"
                );
                return ExitCode::from(69);
            }
            Confinement::Inherited
        }
        JailMode::Pod => {
            // A private temporary directory for the commands: the host's /tmp stays out
            // of reach.
            let tmp = std::env::temp_dir().join(format!("warden-sandboxd-{}", std::process::id()));
            if let Err(e) = std::fs::create_dir(&tmp).and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
            }) {
                say!("warden sandboxd: cannot create `{}`: {e}", tmp.display());
                return ExitCode::from(70);
            }
            let mut policy = Profile::Pod.policy();
            if egress_proxy.is_some() {
                policy.network.mode = NetworkMode::Proxy;
            }
            let options = PodOptions {
                egress_port: egress_proxy.map(|a| a.port()),
                degraded,
            };
            match PodJail::prepare_with(&policy, root.path(), std::slice::from_ref(&tmp), &options)
            {
                Ok(j) => {
                    let missing: Vec<&str> = j
                        .layers()
                        .iter()
                        .filter(|r| {
                            matches!(r.status, warden_jail::LayerStatus::Unavailable { .. })
                                && Layer::LANDLOCK.contains(&r.layer)
                        })
                        .map(|r| r.layer.name())
                        .collect();
                    if !missing.is_empty() {
                        say!(
                            "warden sandboxd: warning: running WITHOUT {} (allowed by --allow-degraded){}",
                            missing.join(", "),
                            if egress_proxy.is_some() {
                                ": commands can open any TCP connection"
                            } else {
                                ""
                            }
                        );
                    }
                    child_env.push(("TMPDIR".to_string(), tmp.display().to_string()));
                    if let Some(addr) = egress_proxy {
                        child_env.extend(crate::egress::proxy_environment_at(addr, &[]));
                    }
                    scratch = Some(tmp);
                    Confinement::Pod(Arc::new(j))
                }
                Err(e) => {
                    let _ = std::fs::remove_dir(&tmp);
                    say!("warden sandboxd: cannot jail commands in pod isolation: {e}");
                    return ExitCode::from(e.exit_code() as u8);
                }
            }
        }
    };
    let listens = if args.listen.is_empty() {
        ["0.0.0.0:8888", "0.0.0.0:8080", "0.0.0.0:9090"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    } else {
        args.listen.clone()
    };
    let mut state = Sandboxd::new(root, confinement);
    state.quota = args.quota.map(|q| q.bytes());
    state.child_env = child_env;
    let state = Arc::new(state);

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("warden sandboxd: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let code = rt.block_on(async move {
        let app = warden_sandboxd::app(state.clone());
        let mut tasks = Vec::new();
        for l in &listens {
            match Bound::bind(l).await {
                Ok(b) => {
                    let shown = b
                        .local_addr()
                        .map(|a| a.to_string())
                        .unwrap_or(l.to_string());
                    say!("warden sandboxd: listening on {shown}");
                    tasks.push(tokio::spawn(b.serve(app.clone())));
                }
                Err(e) => {
                    say!("warden sandboxd: cannot listen on {l}: {e}");
                    return 70u8;
                }
            }
        }
        say!(
            "warden sandboxd: root {}, jail {}, network {}",
            state.root.path().display(),
            match args.jail {
                JailMode::Pod => "pod",
                JailMode::Inherited => "inherited",
            },
            match (args.jail, egress_proxy) {
                (JailMode::Inherited, _) => "inherited".to_string(),
                (JailMode::Pod, Some(a)) => format!("egress proxy {a} only"),
                (JailMode::Pod, None) => "none".to_string(),
            }
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => 0,
            _ = terminated() => 0,
            _ = root_removed(&state) => {
                say!("warden sandboxd: the root directory was removed; stopping");
                0
            }
            r = futures_wait(tasks) => { say!("warden sandboxd: a listener failed: {r}"); 70 }
        }
    });
    if let Some(t) = scratch {
        let _ = std::fs::remove_dir_all(t);
    }
    ExitCode::from(code)
}

/// Resolves once the root directory is deleted. A sandbox whose directory is gone has lost
/// its owner (a `warden serve` data directory removed with the sandbox still running): it
/// ends itself rather than run on unseen.
async fn root_removed(state: &Sandboxd) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        if state.root.is_removed() {
            return;
        }
    }
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn futures_wait(tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>) -> String {
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return e.to_string(),
            Err(e) => return e.to_string(),
        }
    }
    "listeners ended".into()
}
