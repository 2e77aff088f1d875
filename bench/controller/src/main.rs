//! Claims bound per second by `warden controller` (the real kube-runtime controllers, the
//! real kube client) against the in-memory API server of `warden_kube::testing`, whose
//! stand-in kubelet makes pods Ready at once. So the figures are the controller's own cost:
//! watches, reconciles, API round trips through the client, JSON. A real API server and
//! kubelet add their latency on top.
//!
//!   warden-bench-controller [--claims N] [--rounds R] [--markdown]
//!
//! Per round: a warm run (a pool of N Ready members, then N claims at once, each adopting a
//! member while the pool refills) and a cold run (an empty pool, N claims, each getting a new
//! Sandbox and pod). Reports claims bound per second and the latency from a claim's creation
//! to its Ready condition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use warden_kube::controller::Context;
use warden_kube::controller::run::{Readiness, RunOptions, run};
use warden_kube::crd::{SandboxClaim, SandboxTemplate, SandboxWarmPool};
use warden_kube::reconcile::sandbox::Settings;
use warden_kube::testing::FakeApi;

const NS: &str = "bench";

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

struct Run {
    claims: usize,
    took: Duration,
    latencies: Vec<Duration>,
}

fn ready(claim: &SandboxClaim) -> bool {
    claim.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > deadline {
            eprintln!("timed out waiting for {what}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn one(claims: usize, warm: bool) -> Run {
    let fake = FakeApi::new();
    fake.auto_ready_pods(true);
    let ctx = Arc::new(Context::new(fake.client(NS), Settings::default()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        ctx,
        RunOptions {
            namespaces: vec![NS.into()],
            concurrency: 16,
            ..RunOptions::default()
        },
        Arc::new(Readiness::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    fake.insert(&object::<SandboxTemplate>(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
        "metadata": {"name": "py", "namespace": NS},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "runtime", "image": "python:3.13"}]}}},
    })));
    let replicas = if warm { claims } else { 0 };
    fake.insert(&object::<SandboxWarmPool>(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
        "metadata": {"name": "pool", "namespace": NS},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": "py"}},
    })));
    wait_for("the pool to fill", Duration::from_secs(300), || {
        fake.get::<SandboxWarmPool>(Some(NS), "pool")
            .and_then(|p| p.status)
            .is_some_and(|s| {
                s.ready_replicas as usize == replicas && s.replicas as usize == replicas
            })
            || replicas == 0
    })
    .await;

    let start = Instant::now();
    let mut created = HashMap::new();
    for i in 0..claims {
        let name = format!("claim-{i}");
        fake.insert(&object::<SandboxClaim>(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"warmPoolRef": {"name": "pool"}},
        })));
        created.insert(name, Instant::now());
    }
    let mut latencies = Vec::with_capacity(claims);
    let mut pending: Vec<String> = created.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !pending.is_empty() {
        let now = Instant::now();
        if now > deadline {
            eprintln!("timed out: {} claims not Ready", pending.len());
            std::process::exit(1);
        }
        pending.retain(|name| {
            let done = fake
                .get::<SandboxClaim>(Some(NS), name)
                .is_some_and(|c| ready(&c));
            if done {
                latencies.push(now.duration_since(created[name]));
            }
            !done
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    if warm {
        // Every claim adopted a member: none was started cold.
        let cold = fake
            .list::<SandboxClaim>(Some(NS))
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.sandbox.name == c.metadata.name.clone().unwrap_or_default())
            })
            .count();
        if cold > 0 {
            eprintln!("note: {cold} of {claims} warm claims started cold (the pool was short)");
        }
    }
    let _ = stop.send(());
    let _ = task.await;
    latencies.sort();
    Run {
        claims,
        took,
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let mut claims = 200usize;
    let mut rounds = 3usize;
    let mut markdown = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--claims" => claims = args.next().and_then(|v| v.parse().ok()).unwrap_or(claims),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--markdown" => markdown = true,
            other => {
                eprintln!(
                    "unknown argument {other}; usage: warden-bench-controller [--claims N] [--rounds R] [--markdown]"
                );
                std::process::exit(64);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut results: Vec<(&str, Run)> = Vec::new();
    for _ in 0..rounds {
        for warm in [true, false] {
            let run = runtime.block_on(one(claims, warm));
            results.push((
                if warm {
                    "warm (adopt a Ready member)"
                } else {
                    "cold (new Sandbox and pod)"
                },
                run,
            ));
        }
    }
    if markdown {
        println!("| launch | round | claims | seconds | claims/s | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (kind, run) in &results {
        let round = counts.entry(kind).or_insert(0);
        *round += 1;
        let rate = run.claims as f64 / run.took.as_secs_f64();
        let (p50, p99) = (
            percentile(&run.latencies, 0.5),
            percentile(&run.latencies, 0.99),
        );
        if markdown {
            println!(
                "| {kind} | {round} | {} | {:.2} | {rate:.0} | {p50:.1} | {p99:.1} |",
                run.claims,
                run.took.as_secs_f64()
            );
        } else {
            println!(
                "{kind}: round {round}: {} claims in {:.2}s = {rate:.0} claims/s, p50 {p50:.1} ms, p99 {p99:.1} ms",
                run.claims,
                run.took.as_secs_f64()
            );
        }
    }
}
