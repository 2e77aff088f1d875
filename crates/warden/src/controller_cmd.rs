//! `warden controller`: the agents.x-k8s.io controller (Sandbox, SandboxTemplate,
//! SandboxClaim, SandboxWarmPool) with leader election and Prometheus metrics.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use warden_kube::controller::Context;
use warden_kube::controller::run::{
    LeaderElection, Readiness, RunOptions, bind, run, serve_health,
};
use warden_kube::reconcile::sandbox::Settings;

use crate::EXIT_USAGE;

const CONTROLLER_HELP: &str =
    "Reconciles the kubernetes-sigs/agent-sandbox v1beta1 resources the way the upstream
controller does (either can run a cluster): a Sandbox gets its pod, PVCs and headless Service;
a SandboxTemplate its NetworkPolicy; a SandboxWarmPool keeps ready Sandboxes; a SandboxClaim
adopts one of them or gets a cold Sandbox. Install the CRDs and RBAC first (deploy/).

The API server is found like kubectl does: in-cluster service account, else KUBECONFIG or
~/.kube/config. With --leader-elect, replicas share a coordination.k8s.io Lease and only its
holder reconciles; the others report 503 on /readyz until they take over.

Endpoints on --metrics-addr: GET /healthz, GET /readyz, GET /metrics (Prometheus:
warden_controller_reconciles_total, warden_controller_reconcile_errors_total by reason,
warden_controller_claim_ready_seconds, warden_controller_leader).

Exit status: 0 after SIGTERM or SIGINT; 64 for a bad flag; 69 when the API server or the
metrics port cannot be reached or bound at start.

Examples:
  warden controller
  warden controller --namespace sandboxes --metrics-addr 127.0.0.1:9090
  warden controller --leader-elect --lease-namespace warden-system";

/// Run the Kubernetes controller for agents.x-k8s.io sandboxes.
#[derive(Debug, Args)]
#[command(after_long_help = CONTROLLER_HELP, after_help = "See `warden controller --help` for what it reconciles and examples.")]
pub struct ControllerArgs {
    /// Watch only this namespace (repeatable); all namespaces when absent.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding the leader Lease (for several replicas).
    #[arg(long)]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, value_name = "NAME", default_value = "warden-controller")]
    lease_name: String,
    /// Namespace of the leader Lease (the controller's own; from POD_NAMESPACE in a pod).
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    lease_namespace: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the host name).
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays held without renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    lease_duration: u64,
    /// The cluster's DNS domain, for status.serviceFQDN.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Objects of one kind reconciled at once (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: u16,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("warden controller: {msg}");
    ExitCode::from(EXIT_USAGE)
}

pub fn main(args: ControllerArgs) -> ExitCode {
    for ns in &args.namespaces {
        if !warden_policy::is_dns_label(ns) {
            return usage(format!(
                "--namespace {ns:?} is not a namespace name (a DNS label: lowercase letters, digits and '-', at most 63)"
            ));
        }
    }
    if !warden_policy::is_dns_label(&args.lease_namespace) {
        return usage(format!(
            "--lease-namespace {:?} is not a namespace name (a DNS label)",
            args.lease_namespace
        ));
    }
    if args.lease_duration < 3 {
        return usage("--lease-duration must be at least 3 seconds");
    }
    if args.cluster_domain.is_empty()
        || !args
            .cluster_domain
            .split('.')
            .all(warden_policy::is_dns_label)
    {
        return usage(format!(
            "--cluster-domain {:?} is not a DNS domain such as cluster.local",
            args.cluster_domain
        ));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warden controller: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: ControllerArgs) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!(
                "warden controller: cannot reach the Kubernetes API ({e}); run it in a pod with a service account, or set KUBECONFIG"
            );
            return ExitCode::from(69);
        }
    };
    let listener = match bind(args.metrics_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "warden controller: cannot listen on --metrics-addr {}: {e}",
                args.metrics_addr
            );
            return ExitCode::from(69);
        }
    };
    let settings = Settings {
        cluster_domain: args.cluster_domain.clone(),
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("warden-controller-{}", std::process::id()))
    });
    // Warnings (a missing pool, a NetworkPolicy it may not manage, a rejected pod) become
    // Events on the object, for `kubectl describe`.
    let ctx = Arc::new(Context::new(client, settings).with_events(&identity));
    let readiness = Arc::new(Readiness::default());
    let health = tokio::spawn(serve_health(
        listener,
        ctx.metrics.clone(),
        readiness.clone(),
    ));
    let options = RunOptions {
        namespaces: args.namespaces.clone(),
        leader_election: args.leader_elect.then(|| LeaderElection {
            lease_name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity,
            duration_seconds: args.lease_duration,
        }),
        concurrency: args.concurrency,
    };
    eprintln!(
        "warden controller: reconciling {} (metrics on {})",
        if args.namespaces.is_empty() {
            "all namespaces".to_string()
        } else {
            args.namespaces.join(", ")
        },
        args.metrics_addr
    );
    let result = run(ctx, options, readiness, async {
        let signal = crate::stop_signal().await;
        eprintln!("warden controller: {signal}: stopping");
    })
    .await;
    health.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden controller: leader election failed: {e}");
            ExitCode::from(69)
        }
    }
}
