//! Network mode `proxy` for `warden run`: warden's egress proxy serves the sandbox's bridge
//! socket (a listener on the sandbox's own loopback, see `warden_jail::EgressBridge`) on a
//! thread of its own, and reports denials on stderr.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use std::time::Duration;

use warden_egress::{
    AuditEvent, AuditSink, Decision, DomainRule, EgressPolicy, Proxy, ProxyOptions, Routes,
    read_secret,
};
use warden_jail::EgressBridge;
use warden_policy::route::{RouteFile, check_upstream, route_from_flag};
use warden_policy::{CredentialSpec, RouteKind, RouteSpec, SandboxPolicy};

/// The port the proxy answers on inside the sandbox (squid's customary one).
pub const PORT: u16 = 3128;

/// [`warden_policy::proxy_environment`] for the proxy of `warden run` (loopback, [`PORT`]).
pub fn proxy_environment(routes: &[RouteSpec]) -> Vec<(String, String)> {
    proxy_environment_at(std::net::SocketAddr::from(([127, 0, 0, 1], PORT)), routes)
}

/// [`proxy_environment`] for a proxy listening on `proxy` (in a pod: the `warden proxy`
/// sidecar, see `warden sandboxd --egress-proxy`).
pub fn proxy_environment_at(
    proxy: std::net::SocketAddr,
    routes: &[RouteSpec],
) -> Vec<(String, String)> {
    warden_policy::proxy_environment(&format!("http://{proxy}"), routes.iter().map(Into::into))
}

/// Adds the routes of `--route NAME[=URL]` flags to the policy: a route of the policy file
/// is kept (and repointed when a URL is given), a built-in kind is added with its defaults.
pub fn apply_route_flags(policy: &mut SandboxPolicy, flags: &[String]) -> Result<(), String> {
    for flag in flags {
        let (name, file) = route_from_flag(flag).map_err(|e| format!("--route: {e}"))?;
        let known = policy.network.routes.iter_mut().find(|r| r.name == name);
        match (known, file.upstream) {
            (Some(_), None) => {}
            (Some(route), Some(upstream)) => {
                check_upstream(&upstream).map_err(|e| format!("--route {name}: {e}"))?;
                route.upstream = upstream.trim_end_matches('/').to_string();
            }
            (None, upstream) => {
                if name.parse::<RouteKind>().is_err() || name == "generic" {
                    let builtin: Vec<&str> = RouteKind::NAMES
                        .iter()
                        .copied()
                        .filter(|n| *n != "generic")
                        .collect();
                    return Err(format!(
                        "--route: `{name}` is neither a built-in route ({}) nor a route of the policy file ([routes.{name}])",
                        builtin.join(", ")
                    ));
                }
                let file = RouteFile {
                    upstream,
                    ..RouteFile::default()
                };
                let spec = file
                    .resolve(&name, &format!("--route {name}"))
                    .map_err(|e| e.to_string())?;
                policy.network.routes.push(spec);
            }
        }
    }
    Ok(())
}

/// The routes of the policy, with their secrets read from warden's own environment.
pub fn load_routes(policy: &SandboxPolicy) -> Result<Routes, String> {
    let env = |name: &str| std::env::var(name).ok();
    let routes = Routes::load(&policy.network.routes, &env, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(routes
        .answer_as(format!("127.0.0.1:{PORT}"))
        .answer_as(format!("localhost:{PORT}")))
}

/// Refuses to start when a route's secret would enter the sandbox anyway: through a passed
/// host variable (`--pass-env`, the policy's `environment.pass`) or a value set explicitly.
pub fn check_no_secret_enters(
    policy: &SandboxPolicy,
    proxy_env: &[(String, String)],
) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    let mut secrets = Vec::new();
    let mut add = |spec: &CredentialSpec| {
        if let Ok(secret) = read_secret(spec, &env) {
            secrets.push(secret);
        }
    };
    for route in &policy.network.routes {
        match &route.credential {
            CredentialSpec::TokenExchange(t) => {
                if let Some(client_secret) = &t.client_secret {
                    add(client_secret);
                }
            }
            other => add(other),
        }
    }
    if secrets.is_empty() {
        return Ok(());
    }
    let inside = policy.environment.build(
        std::env::vars_os(),
        proxy_env
            .iter()
            .map(|(k, v)| (k.as_str(), std::ffi::OsStr::new(v.as_str()))),
    );
    for (name, value) in &inside {
        let value = value.to_string_lossy();
        if secrets.iter().any(|s| value.contains(s.expose())) {
            return Err(format!(
                "the sandbox's variable {} would hold a credential route's secret; stop passing it \
                 (--pass-env, environment.pass or --env): the route adds the secret outside the sandbox",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// The proxy's policy from the sandbox policy's network section, `--allow-cidr` and
/// `--allow-port` (on top of 80 and 443).
pub fn egress_policy(
    policy: &SandboxPolicy,
    cidrs: &[String],
    ports: &[u16],
) -> Result<EgressPolicy, String> {
    let n = &policy.network;
    let mut p = EgressPolicy::new();
    for (field, port) in n
        .allow_ports
        .iter()
        .map(|p| ("network.allow_ports", p))
        .chain(ports.iter().map(|p| ("--allow-port", p)))
    {
        p = p.allow_port(*port).map_err(|e| format!("{field}: {e}"))?;
    }
    for d in &n.allow_domains {
        p = p.allow(DomainRule::Pattern(d.clone()));
    }
    for d in &n.deny_domains {
        p = p.deny(DomainRule::Pattern(d.clone()));
    }
    for (field, c) in n
        .allow_cidrs
        .iter()
        .map(|c| ("network.allow_cidrs", c))
        .chain(cidrs.iter().map(|c| ("--allow-cidr", c)))
    {
        p = p.allow_cidr(c).map_err(|e| format!("{field}: {e}"))?;
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
        if event.verdict == Decision::Denied && event.rule.starts_with("route:") {
            let why = event.error.as_deref().unwrap_or("no such route");
            say!(
                "warden: credential route request refused ({}): {why}; routes are added with --route NAME",
                event.rule
            );
        } else if event.verdict == Decision::Denied {
            let how = if event.rule.starts_with("port:") {
                format!("allow the port with --allow-port {}", event.port)
            } else if event.rule.starts_with("screen:") || event.rule == "ip-literal" {
                "allow its address range with --allow-cidr".to_string()
            } else {
                format!("allow it with --allow-domain {}", event.host)
            };
            say!(
                "warden: egress to {}:{} refused ({}); {how}",
                event.host,
                event.port,
                event.rule
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

/// Starts the proxy thread and returns the bridge to give the jail, carrying `env` (see
/// [`proxy_environment`]). The thread waits for the
/// bridge socket, then serves it until warden exits. `sandbox_id` is read when the socket
/// arrives (the id is known once the sandbox is prepared).
pub fn start(
    policy: EgressPolicy,
    routes: Routes,
    env: Vec<(String, String)>,
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
                    say!("warden: cannot start the egress proxy: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                match Proxy::from_listener(std::net::TcpListener::from(fd), policy, audit, options)
                {
                    Ok(proxy) => proxy.with_routes(routes).serve().await,
                    Err(e) => say!("warden: cannot serve the egress proxy: {e}"),
                }
            });
        });
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    spawned.map_err(|e| format!("cannot start the egress proxy thread: {e}"))?;
    Ok(EgressBridge {
        port: PORT,
        listener: tx,
        env,
    })
}
