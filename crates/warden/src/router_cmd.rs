//! `warden router`: the cluster router of the kubernetes-sigs/agent-sandbox contract, a
//! drop-in for upstream's sandbox-router (same headers, same errors, same port).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use warden_kube::router::{RouterConfig, SandboxIndex, SandboxRouter, TokenTable};

use crate::EXIT_USAGE;

const ROUTER_HELP: &str =
    "Every request that carries X-Sandbox-ID, on any path and with any method, is proxied to
that sandbox's pod:

  X-Sandbox-ID         required; the Sandbox's name (a DNS-1123 label)
  X-Sandbox-Namespace  default `default`
  X-Sandbox-Port       default 8888 (the runtime's legacy REST port; sandboxd gRPC is 9090)
  X-Sandbox-Pod-IP     optional; dial this pod IP (loopback, link-local, multicast and
                       unspecified addresses are refused)

Without X-Sandbox-Pod-IP the pod is found in an index of ready sandbox pods, kept by watching
pods labelled agents.x-k8s.io/sandbox-name-hash (RBAC: list and watch pods), and failing that
through DNS: <id>.<namespace>.svc.<cluster-domain>. The router starts without a reachable API
server: the index retries with backoff and header and DNS routing work meanwhile (the gauge
warden_router_index_synced says when the index is live). The Kubernetes client comes from
KUBECONFIG, ~/.kube/config or the pod's service account.

HTTP/1.1, HTTP/2 without TLS (prior knowledge, for gRPC) and WebSocket pass through; bodies
stream both ways. Host and Authorization are not forwarded; X-Forwarded-For, -Host and -Proto
are set. Errors are JSON {\"detail\": ...}: 400 for a bad header, 401/403 for a missing or
out-of-scope token, 502 `Could not connect to the backend sandbox: <id>`, 504 when the backend
sends no response head within --backend-timeout.

GET /healthz ({\"status\":\"ok\"}) and GET /metrics (Prometheus) answer requests WITHOUT
X-Sandbox-ID; with the header, those paths are the sandbox's.

The token file (--token-file) holds one token per line, optionally limited to sandboxes:

  # TOKEN                            SCOPE ...
  9f86d081884c7d659a2feaa0c55ad015   team-a/*  team-b/sbx-7
  3c59dc048e8850243be8079a5c74d079             # no scope: every sandbox

Clients send `Authorization: Bearer <token>`; /healthz stays open, /metrics needs a token. A
scoped token may send X-Sandbox-Pod-IP only with the IP the index holds for that sandbox.

Exit status: 0 after SIGTERM or SIGINT; 64 for a bad flag or token file; 69 when the address
cannot be bound; 70 for another host error.

Examples:
  warden router
  warden router --listen 0.0.0.0:8080 --cluster-domain cluster.local --token-file /etc/warden/tokens
  warden router --namespace agents --backend-timeout 30s
  warden router --listen 127.0.0.1:8080 --no-watch     # header and DNS routing only";

/// Route X-Sandbox-ID requests to sandbox pods (the agent-sandbox cluster router).
#[derive(Debug, Args)]
#[command(
    after_long_help = ROUTER_HELP,
    after_help = "See `warden router --help` for the headers, routing order, token file and examples."
)]
pub struct RouterArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        env = "WARDEN_ROUTER_LISTEN"
    )]
    listen: SocketAddr,
    /// The cluster's DNS domain, for <id>.<namespace>.svc.<domain>.
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "cluster.local",
        value_parser = parse_domain,
        env = "WARDEN_ROUTER_CLUSTER_DOMAIN"
    )]
    cluster_domain: String,
    /// Require bearer tokens from this file: one `TOKEN [NAMESPACE/ID|NAMESPACE/* ...]` a line.
    #[arg(long, value_name = "FILE", env = "WARDEN_ROUTER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Longest wait for a backend's response head before 504 (e.g. 30s, 3m).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "180s",
        value_parser = parse_timeout,
        env = "WARDEN_ROUTER_BACKEND_TIMEOUT"
    )]
    backend_timeout: Duration,
    /// Do not watch pods: route by X-Sandbox-Pod-IP and DNS only (no API access needed).
    #[arg(long)]
    no_watch: bool,
    /// Watch sandbox pods in this namespace only [default: all namespaces].
    #[arg(long, value_name = "NS", value_parser = parse_namespace, env = "WARDEN_ROUTER_NAMESPACE")]
    namespace: Option<String>,
}

fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.strip_suffix('.').unwrap_or(s);
    if d.is_empty() || d.len() > 253 || !d.split('.').all(warden_policy::is_dns_label) {
        return Err(format!(
            "`{s}` is not a DNS domain: dot-separated labels of lowercase letters, digits and '-' \
             (for example cluster.local)"
        ));
    }
    Ok(d.to_string())
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}`: {e} (write a duration such as 30s, 500ms or 3m)"))?;
    if d.is_zero() {
        return Err("must be more than 0 (for example 180s)".into());
    }
    Ok(d)
}

fn parse_namespace(s: &str) -> Result<String, String> {
    if warden_policy::is_dns_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a namespace name: lowercase letters, digits and '-', at most 63"
        ))
    }
}

fn load_tokens(path: &PathBuf) -> Result<TokenTable, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    TokenTable::parse(&text).map_err(|e| format!("--token-file {}: {e}", path.display()))
}

pub fn main(args: RouterArgs) -> ExitCode {
    let tokens = match &args.token_file {
        Some(path) => match load_tokens(path) {
            Ok(t) => Some(t),
            Err(e) => {
                say!("warden router: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => None,
    };
    // One CPU (a pod limited to one core, or `taskset`): a single-threaded runtime, as
    // linkerd2-proxy runs on one core; it spares the work-stealing scheduler's cross-thread
    // synchronisation on every wake-up.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say!("warden router: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(run(args, tokens))
}

async fn run(args: RouterArgs, tokens: Option<TokenTable>) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            say!(
                "warden router: cannot listen on {} (--listen): {e}",
                args.listen
            );
            return ExitCode::from(69);
        }
    };
    let local = listener.local_addr().unwrap_or(args.listen);
    let index = SandboxIndex::new();
    let watching = if args.no_watch {
        "off (--no-watch)".to_string()
    } else {
        match tokio::time::timeout(Duration::from_secs(10), warden_kube::router::kube_client())
            .await
        {
            Ok(Ok(client)) => {
                tokio::spawn(warden_kube::router::watch_pods(
                    client,
                    args.namespace.clone(),
                    index.clone(),
                ));
                match &args.namespace {
                    Some(ns) => format!("watching namespace {ns}"),
                    None => "watching all namespaces".to_string(),
                }
            }
            Ok(Err(e)) => format!("off (no Kubernetes client: {e})"),
            Err(_) => "off (the Kubernetes client did not load within 10s)".to_string(),
        }
    };
    let auth = match &tokens {
        Some(t) => format!("{} bearer token(s)", t.len()),
        None => "no auth".to_string(),
    };
    if tokens.is_none() && !local.ip().is_loopback() {
        say!(
            "warden router: no --token-file: every client that reaches {local} reaches every \
             sandbox (upstream relies on a NetworkPolicy for this)"
        );
    }
    say!(
        "warden router: listening on http://{local} ({auth}); pod index {watching}; DNS \
         <id>.<namespace>.svc.{}; backend timeout {}",
        args.cluster_domain,
        humantime::format_duration(args.backend_timeout)
    );
    let config = RouterConfig {
        cluster_domain: args.cluster_domain,
        backend_timeout: args.backend_timeout,
        tokens,
    };
    let router = SandboxRouter::new(config, index);
    let stop = async {
        let signal = crate::stop_signal().await;
        say!("warden router: {signal}, stopping");
    };
    match router.serve(listener, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("warden router: {e}");
            ExitCode::from(70)
        }
    }
}
