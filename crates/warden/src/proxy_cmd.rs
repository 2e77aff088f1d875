//! `warden proxy`: the egress proxy on its own, as the sidecar of a sandbox pod or in front of
//! any process: the policy file's `[network]` allowlist and `[routes]`, audit events as JSON
//! lines, and an admin listener with `/healthz` and Prometheus `/metrics`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use warden_egress::{
    AuditSink, EgressPolicy, Metrics, MetricsSink, Proxy, ProxyOptions, Routes, WriterSink,
    serve_admin,
};
use warden_policy::{DomainPattern, NetworkMode, PolicyFile, Profile, SandboxPolicy, resolve_path};

use crate::EXIT_USAGE;

const PROXY_HELP: &str = "The policy file is the one `warden run --policy` reads; `warden proxy` uses its [network]
section (allow_domains, deny_domains, allow_ports, allow_cidrs) and its [routes]:

  [network]
  allow_domains = [\"pypi.org\", \"*.pythonhosted.org\"]

  [routes.anthropic]                       # http://PROXY/anthropic/... -> https://api.anthropic.com/...
  credential = { env = \"ANTHROPIC_API_KEY\" }

Clients use it as their HTTP proxy (HTTPS_PROXY=http://127.0.0.1:3128) and reach routes at
http://127.0.0.1:3128/<route>/... Every decision is written as one JSON line to the audit log.

Exit status: 0 after SIGTERM or SIGINT; 64 for a bad flag or policy; 69 when a port cannot be bound.

Examples:
  warden proxy --allow-domain example.com
  warden proxy --policy sandbox.toml --listen 127.0.0.1:3128 --admin-listen 0.0.0.0:9901
  ANTHROPIC_API_KEY=... warden proxy --route anthropic --audit-log /var/log/warden/egress.jsonl";

/// Run the egress proxy standalone (the Kubernetes sidecar).
#[derive(Debug, Args)]
#[command(after_long_help = PROXY_HELP, after_help = "See `warden proxy --help` for the policy file and examples.")]
pub struct ProxyArgs {
    /// Policy file (TOML): its [network] allowlist and [routes].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Address the proxy listens on (port 0 picks one; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3128")]
    listen: SocketAddr,
    /// Address of the admin listener: GET /healthz and GET /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// Allow egress to this domain (repeatable; `*.example.com` for subdomains).
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    allow_domains: Vec<String>,
    /// Refuse this domain even when an allow rule matches (repeatable).
    #[arg(long = "deny-domain", value_name = "DOMAIN")]
    deny_domains: Vec<String>,
    /// Let the proxy reach addresses in this otherwise refused range (repeatable).
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidrs: Vec<String>,
    /// Let the proxy connect to this port too; 80 and 443 always are (repeatable).
    #[arg(long = "allow-port", value_name = "PORT")]
    allow_ports: Vec<u16>,
    /// Serve a credential route (repeatable): anthropic, openai, git, a route of the policy
    /// file, or NAME=URL to point a built-in elsewhere.
    #[arg(long = "route", value_name = "NAME[=URL]")]
    routes: Vec<String>,
    /// Another host:port under which clients reach this proxy, so that absolute-form requests
    /// to it are served as routes (repeatable; the listen address always is).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Vec<String>,
    /// Where audit events go, one JSON line each: a file, or `-` for stdout.
    #[arg(long, value_name = "FILE", default_value = "-")]
    audit_log: PathBuf,
    /// The sandbox id written into every audit event.
    #[arg(long, value_name = "ID", default_value = "standalone")]
    sandbox_id: String,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    say!("warden proxy: {msg}");
    ExitCode::from(EXIT_USAGE)
}

pub fn main(args: ProxyArgs) -> ExitCode {
    let policy = match build_policy(&args) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let rules = match crate::egress::egress_policy(&policy, &args.allow_cidrs, &args.allow_ports)
        .and_then(|p| deny(p, &args.deny_domains))
    {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let env = |name: &str| std::env::var(name).ok();
    let routes = match Routes::load(
        &policy.network.routes,
        &env,
        std::time::Duration::from_secs(10),
    ) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let writer: Box<dyn Write + Send> = if args.audit_log == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.audit_log)
        {
            Ok(f) => Box::new(f),
            Err(e) => return usage(format!("--audit-log {}: {e}", args.audit_log.display())),
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("warden proxy: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(serve(args, rules, routes, writer))
}

fn deny(mut p: EgressPolicy, domains: &[String]) -> Result<EgressPolicy, String> {
    for d in domains {
        p = p
            .deny_domain(d)
            .map_err(|e| format!("--deny-domain: {e}"))?;
    }
    Ok(p)
}

async fn serve(
    args: ProxyArgs,
    rules: EgressPolicy,
    routes: Routes,
    writer: Box<dyn Write + Send>,
) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    let audit: Arc<dyn AuditSink> = Arc::new(MetricsSink::new(
        Arc::clone(&metrics),
        Arc::new(WriterSink::new(writer)),
    ));
    let bind_failed = |what: &str, addr: SocketAddr, e: std::io::Error| {
        say!("warden proxy: cannot listen on {addr} ({what}): {e}");
        ExitCode::from(69)
    };
    let admin = match tokio::net::TcpListener::bind(args.admin_listen).await {
        Ok(l) => l,
        Err(e) => return bind_failed("--admin-listen", args.admin_listen, e),
    };
    let proxy = match Proxy::bind(
        args.listen,
        rules,
        audit,
        ProxyOptions::new(args.sandbox_id.clone()),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return bind_failed("--listen", args.listen, e),
    };
    let local = proxy.local_addr();
    let admin_addr = admin.local_addr().unwrap_or(args.admin_listen);
    let mut routes = routes
        .answer_as(local.to_string())
        .answer_as(format!("localhost:{}", local.port()));
    for a in &args.advertise {
        routes = routes.answer_as(a.clone());
    }
    let names = routes
        .names()
        .iter()
        .map(|n| format!("/{n}"))
        .collect::<Vec<_>>();
    say!(
        "warden proxy: listening on {local}; admin (GET /healthz, /metrics) on {admin_addr}; routes: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    let proxy = proxy.with_routes(routes).spawn();
    let admin = tokio::spawn(serve_admin(admin, metrics));
    let stop = crate::stop_signal().await;
    say!("warden proxy: {stop}, stopping");
    admin.abort();
    proxy.shutdown().await;
    ExitCode::SUCCESS
}

/// The network part of the policy file, if any, with the flags on top.
fn build_policy(args: &ProxyArgs) -> Result<SandboxPolicy, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut policy = match &args.policy {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--policy {}: {e}", file.display()))?;
            let base = file
                .parent()
                .map(|p| resolve_path(p, &cwd, &home))
                .unwrap_or_else(|| cwd.clone());
            PolicyFile::from_toml(&text)
                .and_then(|f| f.apply(Profile::Default, &base, &home))
                .map_err(|e| format!("policy file {}:\n{e}", file.display()))?
        }
        None => Profile::Default.policy(),
    };
    if policy.network.mode == NetworkMode::Host {
        return Err(
            "the policy's network mode is \"host\", which has no proxy; use \"proxy\"".into(),
        );
    }
    policy.network.mode = NetworkMode::Proxy;
    for d in &args.allow_domains {
        policy.network.allow_domains.push(
            d.parse::<DomainPattern>()
                .map_err(|e| format!("--allow-domain: {e}"))?,
        );
    }
    crate::egress::apply_route_flags(&mut policy, &args.routes)?;
    policy
        .validate()
        .map_err(|e| format!("invalid policy:\n{e}"))?;
    if policy.network.allow_domains.is_empty() && policy.network.routes.is_empty() {
        say!(
            "warden proxy: warning: no domain is allowed and no route is set; every request will be refused"
        );
    }
    Ok(policy)
}
