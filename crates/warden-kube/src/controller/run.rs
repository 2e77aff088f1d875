//! The long-running part of `warden controller`: kube-runtime controllers for the kinds,
//! started while this replica holds the leader Lease, and the health and metrics endpoints.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::runtime::controller::Controller;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use super::{Context, Metrics};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::ObjectRef;

use crate::crd::labels::SANDBOX_TEMPLATE_REF_ANNOTATION;
use crate::crd::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace (the controller's own).
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal, in seconds.
    pub duration_seconds: u64,
}

/// How [`run`] watches the cluster.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Watch only these namespaces; all when empty.
    pub namespaces: Vec<String>,
    /// Reconcile only while holding this lease; always when `None`.
    pub leader_election: Option<LeaderElection>,
    /// Objects of one kind reconciled at once (0: no limit).
    pub concurrency: u16,
}

/// Whether the controllers run, for `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness {
    running: AtomicBool,
}

impl Readiness {
    /// True while this replica reconciles.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// Drains a controller's stream, logging what it reconciled.
async fn drain<S, T, E>(stream: S, kind: &'static str)
where
    S: futures_util::Stream<Item = Result<T, E>>,
    T: std::fmt::Debug,
    E: std::fmt::Display,
{
    stream
        .for_each(|result| async move {
            match result {
                Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
                Err(e) => tracing::debug!(kind, "reconcile: {e}"),
            }
        })
        .await;
}

fn config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

fn owned<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + DeserializeOwned,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Every controller of one namespace (or of all), as futures that end when the stream does.
fn controllers(ctx: Arc<Context>, options: &RunOptions) -> Vec<BoxFuture<'static, ()>> {
    let client = ctx.client.clone();
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let controller_config =
        kube::runtime::controller::Config::default().concurrency(options.concurrency);
    let mut futures: Vec<BoxFuture<'static, ()>> = Vec::new();
    for scope in scopes {
        let ns = scope.as_deref();
        // The Sandbox cache claims pick warm members from.
        let (reader, writer) = kube::runtime::reflector::store::<Sandbox>();
        ctx.add_sandbox_cache(reader);
        let cache =
            // With backoff: a watch that fails (an API server going away) must not retry in
            // a busy loop.
            kube::runtime::reflector(
                writer,
                watcher(owned::<Sandbox>(&client, ns), config()).default_backoff(),
            );
        futures.push(Box::pin(async move {
            cache
                .for_each(|event| async move {
                    if let Err(e) = event {
                        tracing::debug!("Sandbox cache watch: {e}");
                    }
                })
                .await;
        }));
        let sandboxes = Controller::new(owned::<Sandbox>(&client, ns), config())
            .with_config(controller_config.clone())
            .owns(owned::<Pod>(&client, ns), config())
            .owns(owned::<Service>(&client, ns), config())
            .owns(owned::<PersistentVolumeClaim>(&client, ns), config())
            .run(
                super::sandbox::reconcile,
                super::sandbox::error_policy,
                ctx.clone(),
            );
        futures.push(Box::pin(drain(sandboxes, super::sandbox::KIND)));

        let templates = Controller::new(owned::<SandboxTemplate>(&client, ns), config())
            .with_config(controller_config.clone())
            .owns(owned::<NetworkPolicy>(&client, ns), config())
            .run(
                super::template::reconcile,
                super::template::error_policy,
                ctx.clone(),
            );
        futures.push(Box::pin(drain(templates, super::template::KIND)));

        // A claim hears of its Sandbox (status, deletion) through ownership; a pool or template
        // it waits for is looked for again after the reconciler's retry delay.
        let claims = Controller::new(owned::<SandboxClaim>(&client, ns), config())
            .with_config(controller_config.clone())
            .owns(owned::<Sandbox>(&client, ns), config())
            .run(
                super::claim::reconcile,
                super::claim::error_policy,
                ctx.clone(),
            );
        futures.push(Box::pin(drain(claims, super::claim::KIND)));

        // A pool hears of its members through their controller reference, and of a member
        // a claim adopted (whose reference now names the claim) through the template the
        // member was made from; of its template through the pools' own cache.
        let pools = Controller::new(owned::<SandboxWarmPool>(&client, ns), config())
            .with_config(controller_config.clone());
        let store_for_sandboxes = pools.store();
        let store_for_templates = pools.store();
        let pools = pools
            .watches(
                owned::<Sandbox>(&client, ns),
                config(),
                move |sandbox: Sandbox| {
                    let template = sandbox
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(SANDBOX_TEMPLATE_REF_ANNOTATION));
                    let owners: Vec<&str> = sandbox
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|o| o.kind == "SandboxWarmPool" && o.controller == Some(true))
                        .map(|o| o.name.as_str())
                        .collect();
                    pools_matching(&store_for_sandboxes, &sandbox.metadata.namespace, |pool| {
                        pool.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| owners.contains(&n))
                            || template.is_some_and(|t| *t == pool.spec.sandbox_template_ref.name)
                    })
                },
            )
            .watches(
                owned::<SandboxTemplate>(&client, ns),
                config(),
                move |template: SandboxTemplate| {
                    let name = template.metadata.name.unwrap_or_default();
                    pools_matching(&store_for_templates, &template.metadata.namespace, |pool| {
                        pool.spec.sandbox_template_ref.name == name
                    })
                },
            )
            .run(
                super::warm_pool::reconcile,
                super::warm_pool::error_policy,
                ctx.clone(),
            );
        futures.push(Box::pin(drain(pools, super::warm_pool::KIND)));
    }
    futures
}

/// The pools of `namespace` in the pool controller's cache for which `wanted` holds, as the
/// objects to reconcile.
fn pools_matching(
    store: &kube::runtime::reflector::Store<SandboxWarmPool>,
    namespace: &Option<String>,
    wanted: impl Fn(&SandboxWarmPool) -> bool,
) -> Vec<ObjectRef<SandboxWarmPool>> {
    store
        .state()
        .into_iter()
        .filter(|pool| pool.metadata.namespace == *namespace && wanted(pool))
        .map(|pool| ObjectRef::from_obj(pool.as_ref()))
        .collect()
}

/// Runs the controllers until `shutdown` resolves: at once without leader election, else
/// whenever this replica holds the lease (stopping them when it loses it).
pub async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let metrics = ctx.metrics.clone();
    let Some(election) = options.leader_election.clone() else {
        metrics.set_leader(true);
        readiness.running.store(true, Ordering::Relaxed);
        let all = futures_util::future::join_all(controllers(ctx, &options));
        tokio::select! {
            _ = all => {}
            _ = shutdown => {}
        }
        readiness.running.store(false, Ordering::Relaxed);
        return Ok(());
    };
    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration_seconds)
            .with_grace(election.duration_seconds.div_ceil(3).max(1))
            .with_field_manager("warden-controller")
            .build()
            .await?;
    let (mut leading, lease_task) = manager.watch().await;
    tokio::pin!(shutdown);
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let leader = *leading.borrow_and_update();
        metrics.set_leader(leader);
        match (leader, running.is_some()) {
            (true, false) => {
                tracing::info!(identity = %election.identity, "leading: reconcilers started");
                let all = futures_util::future::join_all(controllers(ctx.clone(), &options));
                running = Some(tokio::spawn(async move {
                    all.await;
                }));
                readiness.running.store(true, Ordering::Relaxed);
            }
            (false, true) => {
                tracing::warn!(identity = %election.identity, "lost the lease: reconcilers stopped");
                if let Some(task) = running.take() {
                    task.abort();
                }
                readiness.running.store(false, Ordering::Relaxed);
            }
            _ => {}
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = &mut shutdown => break,
        }
    }
    if let Some(task) = running.take() {
        task.abort();
    }
    readiness.running.store(false, Ordering::Relaxed);
    metrics.set_leader(false);
    // Dropping the receiver makes the lease task release the lease and end.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Err(e))) => Err(e),
        _ => Ok(()),
    }
}

/// Serves `/healthz` (always 200 while the process runs), `/readyz` (200 while reconciling:
/// a standby replica is not ready) and `/metrics` on `listener` until the task is dropped.
pub async fn serve_health(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                let readiness = readiness.clone();
                async move { Ok::<_, Infallible>(health_response(&req, &metrics, &readiness)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn health_response<B>(
    req: &Request<B>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.to_string(),
        ),
        "/readyz" if readiness.is_running() => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.to_string(),
        ),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"status":"standby"}"#.to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"detail":"not found: try /healthz, /readyz or /metrics"}"#.to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Binds `addr` for [`serve_health`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
