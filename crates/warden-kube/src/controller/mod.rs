//! `warden controller`: the thin shell around the pure reconcilers of [`crate::reconcile`].
//!
//! For each object it reads what the reconciler needs from the API server, asks the pure
//! `plan` what to do, applies the actions in order and writes the status with the object's
//! resourceVersion as a precondition (so a stale read cannot overwrite a newer status). A
//! failed API call is counted by reason and the object is retried with exponential backoff;
//! nothing is deleted without a uid precondition, so an object made since it was observed is
//! never touched.
//!
//! [`run`] watches the four kinds with kube-runtime controllers while this replica holds the
//! leader Lease, and serves `/healthz`, `/readyz` and `/metrics`.

pub mod claim;
pub mod metrics;
pub mod run;
pub mod sandbox;
pub mod template;
pub mod warm_pool;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::controller::Action as Requeue;

pub use metrics::Metrics;

use crate::reconcile::sandbox::Settings;

/// The time source of the reconcilers: the wall clock, or a fixed one in tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Timestamp::now))
    }

    /// A clock that returns whatever `now` returns.
    pub fn from_fn(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Cluster facts the reconcilers need.
    pub settings: Settings,
    /// Where reconciles are counted.
    pub metrics: Arc<Metrics>,
    /// The time source.
    pub clock: Clock,
    /// The identity written as field manager.
    pub field_manager: String,
    backoff: Mutex<HashMap<String, u32>>,
    /// Watch-fed caches of the Sandboxes (one per watched scope), where claims look for a
    /// warm member to adopt instead of listing the pool on every reconcile. Empty: list.
    sandbox_caches: Mutex<Vec<kube::runtime::reflector::Store<crate::crd::Sandbox>>>,
    /// Publishes Kubernetes Events (`kubectl describe` shows them); none when `None`.
    recorder: Option<kube::runtime::events::Recorder>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("field_manager", &self.field_manager)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context on `client` with the system clock and fresh metrics.
    pub fn new(client: Client, settings: Settings) -> Context {
        Context {
            client,
            settings,
            metrics: Arc::new(Metrics::new()),
            clock: Clock::system(),
            field_manager: "warden-controller".into(),
            backoff: Mutex::new(HashMap::new()),
            sandbox_caches: Mutex::new(Vec::new()),
            recorder: None,
        }
    }

    /// The same context publishing Events as `warden-controller`, replica `instance`.
    pub fn with_events(mut self, instance: &str) -> Context {
        let reporter = kube::runtime::events::Reporter {
            controller: "warden-controller".into(),
            instance: Some(instance.to_string()),
        };
        self.recorder = Some(kube::runtime::events::Recorder::new(
            self.client.clone(),
            reporter,
        ));
        self
    }

    /// Publishes a Warning Event about `object` (best effort: a failure is logged, never
    /// fails the reconcile). The recorder folds repeats into one Event with a count.
    pub(crate) async fn warn<K>(&self, object: &K, reason: &str, action: &str, note: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: reason.to_string(),
            note: Some(note.chars().take(1024).collect()),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!("could not publish an Event: {e}");
        }
    }

    /// Adds a watch-fed cache of Sandboxes for claims to find warm members in.
    pub fn add_sandbox_cache(&self, store: kube::runtime::reflector::Store<crate::crd::Sandbox>) {
        self.sandbox_caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
    }

    /// The cached Sandboxes of `namespace` whose labels include `key=value`, or `None` when
    /// no cache covering it has synced yet (then the API server is asked).
    pub fn cached_sandboxes(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Option<Vec<crate::crd::Sandbox>> {
        let caches = self
            .sandbox_caches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A cache that has not listed yet would look empty: not used until it has.
        let ready: Vec<_> = caches
            .iter()
            .filter(|c| {
                futures_util::FutureExt::now_or_never(c.wait_until_ready())
                    .is_some_and(|r| r.is_ok())
            })
            .collect();
        if ready.is_empty() {
            return None;
        }
        let mut found = Vec::new();
        for cache in ready {
            for sandbox in cache.state() {
                if sandbox.metadata.namespace.as_deref() == Some(namespace)
                    && sandbox
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(key))
                        .is_some_and(|v| v == value)
                {
                    found.push(sandbox.as_ref().clone());
                }
            }
        }
        Some(found)
    }

    /// The same context with `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Context {
        self.clock = clock;
        self
    }

    /// The same context counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Context {
        self.metrics = metrics;
        self
    }

    /// The delay before retrying `key` after its `n`th failure in a row: 200 ms doubling up
    /// to 5 minutes.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let failures = map.entry(key.to_string()).or_insert(0);
        *failures = failures.saturating_add(1);
        backoff_delay(*failures)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// 200 ms × 2^(failures-1), at most 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_millis(200u64 << exponent).min(Duration::from_secs(300))
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The object lacks what the API server always sets, or the reconciler refused it.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The reason label of the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Api(kube::Error::Api(status)) => match (status.code, status.reason.as_str()) {
                (409, "AlreadyExists") => "already_exists",
                (409, _) => "conflict",
                (404, _) => "not_found",
                (422, _) | (400, _) => "invalid",
                (401 | 403, _) => "forbidden",
                (429, _) | (500..=599, _) => "unavailable",
                _ => "other",
            },
            Error::Api(kube::Error::HyperError(_) | kube::Error::Service(_)) => "transport",
            Error::Api(_) => "other",
            Error::Invalid(_) => "invalid",
        }
    }

    /// Whether another attempt may succeed without the object changing: a conflict, a
    /// missing object or an unavailable server. A rejected object waits for its next change.
    pub fn is_transient(&self) -> bool {
        !matches!(self.reason(), "invalid" | "forbidden")
    }
}

/// `namespace/name` of an object, the key of its backoff.
pub(crate) fn object_key<K: kube::Resource>(object: &K) -> String {
    format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// Runs one reconcile of `kind`, counts it and forgets the object's failures on success.
pub(crate) async fn instrumented<F>(
    kind: &'static str,
    key: String,
    ctx: &Context,
    reconcile: F,
) -> Result<Requeue, Error>
where
    F: Future<Output = Result<Requeue, Error>>,
{
    let started = Instant::now();
    let result = reconcile.await;
    ctx.metrics.reconciled(
        kind,
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    match &result {
        Ok(_) => ctx.succeeded(&key),
        Err(e) => tracing::warn!(kind, object = %key, reason = e.reason(), "reconcile failed: {e}"),
    }
    result
}

/// The requeue after a failed reconcile: per-object exponential backoff for what may pass; a
/// slow look again for what needs the object to change (its watch event comes first).
pub(crate) fn retry_after(key: &str, error: &Error, ctx: &Context) -> Requeue {
    if error.is_transient() {
        Requeue::requeue(ctx.failed(key))
    } else {
        Requeue::requeue(Duration::from_secs(300))
    }
}

/// The API server's message for a failed call.
pub(crate) fn status_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Delete options with a uid precondition (when known) and background propagation.
pub(crate) fn delete_with_uid(uid: &Option<String>) -> kube::api::DeleteParams {
    kube::api::DeleteParams {
        preconditions: uid.as_ref().map(|uid| kube::api::Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::background()
    }
}

/// Create and replace options that name the controller as the field manager.
pub(crate) fn post_params(field_manager: &str) -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(field_manager.to_string()),
        ..kube::api::PostParams::default()
    }
}

/// Patch options that name the controller as the field manager.
pub(crate) fn patch_params(field_manager: &str) -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(field_manager.to_string()),
        ..kube::api::PatchParams::default()
    }
}

/// Replaces the whole status of `object` with `status` (fields the plan cleared are gone),
/// on the resourceVersion that was read: a status computed from a stale read gets 409.
pub(crate) async fn write_status<K>(
    client: &Client,
    object: &K,
    status: &K::Status,
    field_manager: &str,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + kube::core::object::HasStatus
        + Clone
        + fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::Status: Clone,
{
    let (Some(ns), Some(name)) = (&object.meta().namespace, &object.meta().name) else {
        return Ok(());
    };
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns);
    let mut updated = object.clone();
    *updated.status_mut() = Some(status.clone());
    api.replace_status(name, &post_params(field_manager), &updated)
        .await
        .map(drop)
}

/// The HTTP status of a failed API call, if the server answered.
pub(crate) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// `Ok(None)` for 404, the object otherwise.
pub(crate) fn found<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if api_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A 404 on delete means the object is already gone: success.
pub(crate) fn gone_ok<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_millis(200));
        assert_eq!(backoff_delay(2), Duration::from_millis(400));
        assert_eq!(backoff_delay(5), Duration::from_millis(3200));
        assert_eq!(backoff_delay(40), Duration::from_secs(300));
    }

    #[test]
    fn errors_are_classified_by_reason() {
        let api = |code: u16, reason: &str| {
            Error::Api(kube::Error::Api(
                kube::core::Status::failure("x", reason)
                    .with_code(code)
                    .boxed(),
            ))
        };
        assert_eq!(api(409, "Conflict").reason(), "conflict");
        assert_eq!(api(409, "AlreadyExists").reason(), "already_exists");
        assert_eq!(api(404, "NotFound").reason(), "not_found");
        assert_eq!(api(422, "Invalid").reason(), "invalid");
        assert_eq!(api(403, "Forbidden").reason(), "forbidden");
        assert_eq!(api(503, "ServiceUnavailable").reason(), "unavailable");
        assert!(api(409, "Conflict").is_transient());
        assert!(!api(422, "Invalid").is_transient());
    }
}
