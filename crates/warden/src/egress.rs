//! Network mode `proxy` for `warden run`: warden's egress proxy serves the sandbox's bridge
//! socket (a listener on the sandbox's own loopback, see `warden_jail::EgressBridge`) on a
//! thread of its own, and reports denials on stderr.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use warden_egress::{
    AuditEvent, AuditSink, Decision, DomainRule, EgressPolicy, Proxy, ProxyOptions,
};
use warden_jail::EgressBridge;
use warden_policy::SandboxPolicy;

/// The port the proxy answers on inside the sandbox (squid's customary one).
pub const PORT: u16 = 3128;

/// Variables that point HTTP clients at the proxy, upper and lower case as tools differ.
pub fn proxy_environment() -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{PORT}");
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((name.to_string(), url.clone()));
        env.push((name.to_lowercase(), url.clone()));
    }
    // Nothing inside is reachable without the proxy, loopback included.
    env.push(("NO_PROXY".into(), String::new()));
    env.push(("no_proxy".into(), String::new()));
    env
}

/// The proxy's policy from the sandbox policy's allowlist, `--allow-cidr` and `--allow-port`
/// (on top of 80 and 443).
pub fn egress_policy(
    policy: &SandboxPolicy,
    cidrs: &[String],
    ports: &[u16],
) -> Result<EgressPolicy, String> {
    let mut p = EgressPolicy::new();
    for port in ports {
        p = p
            .allow_port(*port)
            .map_err(|e| format!("--allow-port: {e}"))?;
    }
    for d in &policy.network.allow_domains {
        p = p.allow(DomainRule::Pattern(d.clone()));
    }
    for c in cidrs {
        p = p.allow_cidr(c).map_err(|e| format!("--allow-cidr: {e}"))?;
    }
    Ok(p)
}

/// Writes every decision as a JSON line to the log file, if any, and says on stderr what was
/// refused and how to allow it.
struct CliAudit {
    log: Option<Mutex<File>>,
}

impl AuditSink for CliAudit {
    fn record(&self, event: AuditEvent) {
        if event.verdict == Decision::Denied {
            let how = if event.rule.starts_with("port:") {
                format!("allow the port with --allow-port {}", event.port)
            } else if event.rule.starts_with("screen:") || event.rule == "ip-literal" {
                "allow its address range with --allow-cidr".to_string()
            } else {
                format!("allow it with --allow-domain {}", event.host)
            };
            eprintln!(
                "warden: egress to {}:{} refused ({}); {how}",
                event.host, event.port, event.rule
            );
        }
        if let Some(log) = &self.log
            && let Ok(line) = serde_json::to_string(&event)
            && let Ok(mut f) = log.lock()
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Starts the proxy thread and returns the bridge to give the jail. The thread waits for the
/// bridge socket, then serves it until warden exits. `sandbox_id` is read when the socket
/// arrives (the id is known once the sandbox is prepared).
pub fn start(
    policy: EgressPolicy,
    log: Option<&Path>,
    sandbox_id: Arc<OnceLock<String>>,
) -> Result<EgressBridge, String> {
    let log = match log {
        Some(path) => {
            Some(Mutex::new(File::create(path).map_err(|e| {
                format!("--egress-log {}: {e}", path.display())
            })?))
        }
        None => None,
    };
    let audit: Arc<dyn AuditSink> = Arc::new(CliAudit { log });
    let (tx, rx) = mpsc::channel::<OwnedFd>();
    // The thread must never take the signals warden forwards to the sandbox: it starts with
    // every signal blocked (a new thread inherits the mask), and this thread's is restored.
    let mut previous = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&SigSet::all()),
        Some(&mut previous),
    )
    .map_err(|e| format!("cannot block signals: {e}"))?;
    let spawned = std::thread::Builder::new()
        .name("warden-egress".into())
        .spawn(move || {
            let Ok(fd) = rx.recv() else { return };
            let options = ProxyOptions::new(sandbox_id.get().cloned().unwrap_or_default());
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("warden: cannot start the egress proxy: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                match Proxy::from_listener(std::net::TcpListener::from(fd), policy, audit, options)
                {
                    Ok(proxy) => proxy.serve().await,
                    Err(e) => eprintln!("warden: cannot serve the egress proxy: {e}"),
                }
            });
        });
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    spawned.map_err(|e| format!("cannot start the egress proxy thread: {e}"))?;
    Ok(EgressBridge {
        port: PORT,
        listener: tx,
    })
}
