//! The index of ready sandbox pods: (namespace, sandbox name) → pod IP, fed by a kube-runtime
//! watcher on the pods that carry the sandbox-name-hash label. A pod is named after its
//! Sandbox, and is in the index only while its `Ready` condition is `True` and it has an IP.
//!
//! The index is a cache in front of DNS: when the API server is unreachable the watcher
//! retries with backoff, the index keeps what it had (or stays empty), and the router falls
//! back to the Service's DNS name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::crd::labels::SANDBOX_NAME_HASH;

type Namespaces = HashMap<String, HashMap<String, IpAddr>>;

/// Ready sandbox pods by namespace and name; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct SandboxIndex {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pods: RwLock<Namespaces>,
    synced: AtomicBool,
}

impl SandboxIndex {
    pub fn new() -> SandboxIndex {
        SandboxIndex::default()
    }

    /// The IP of the ready pod of sandbox `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<IpAddr> {
        let pods = self.inner.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.get(namespace).and_then(|m| m.get(name)).copied()
    }

    /// Records a ready pod (or moves it to a new IP).
    pub fn insert(&self, namespace: &str, name: &str, ip: IpAddr) {
        let mut pods = self.inner.pods.write().unwrap_or_else(|e| e.into_inner());
        pods.entry(namespace.to_string())
            .or_default()
            .insert(name.to_string(), ip);
    }

    /// Forgets a pod (deleted, or no longer ready).
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut pods = self.inner.pods.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = pods.get_mut(namespace) {
            m.remove(name);
            if m.is_empty() {
                pods.remove(namespace);
            }
        }
    }

    fn replace(&self, all: Namespaces) {
        *self.inner.pods.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// How many ready sandbox pods the index holds.
    pub fn len(&self) -> usize {
        let pods = self.inner.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the last list from the API server completed and no watch error followed.
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Relaxed)
    }

    pub fn set_synced(&self, synced: bool) {
        self.inner.synced.store(synced, Ordering::Relaxed);
    }
}

/// What the index should hold for a pod: its IP while it is a ready, running sandbox pod.
pub fn ready_pod_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

fn key(pod: &Pod) -> Option<(&str, &str)> {
    Some((
        pod.metadata.namespace.as_deref()?,
        pod.metadata.name.as_deref()?,
    ))
}

/// Applies watcher events to an index: applies and deletes as they come, a re-list buffered
/// between `Init` and `InitDone` and swapped in whole (so pods deleted while the watch was
/// down disappear).
#[derive(Debug)]
pub struct IndexFeeder {
    index: SandboxIndex,
    relist: Option<Namespaces>,
}

impl IndexFeeder {
    pub fn new(index: SandboxIndex) -> IndexFeeder {
        IndexFeeder {
            index,
            relist: None,
        }
    }

    pub fn apply(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relist = Some(Namespaces::new()),
            Event::InitApply(pod) => {
                if let (Some(buf), Some((ns, name)), Some(ip)) =
                    (self.relist.as_mut(), key(&pod), ready_pod_ip(&pod))
                {
                    buf.entry(ns.to_string())
                        .or_default()
                        .insert(name.to_string(), ip);
                }
            }
            Event::InitDone => {
                if let Some(all) = self.relist.take() {
                    self.index.replace(all);
                }
                self.index.set_synced(true);
            }
            Event::Apply(pod) => {
                if let Some((ns, name)) = key(&pod) {
                    match ready_pod_ip(&pod) {
                        Some(ip) => self.index.insert(ns, name, ip),
                        None => self.index.remove(ns, name),
                    }
                }
            }
            Event::Delete(pod) => {
                if let Some((ns, name)) = key(&pod) {
                    self.index.remove(ns, name);
                }
            }
        }
    }
}

/// Feeds `index` from the API server until the stream ends (it does not: the watcher retries
/// with exponential backoff, up to about 30 s between attempts, logging each failure).
/// `namespace` limits the watch to one namespace; `None` watches all.
pub async fn watch_pods(client: kube::Client, namespace: Option<String>, index: SandboxIndex) {
    let api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let config = watcher::Config::default().labels(SANDBOX_NAME_HASH);
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut feeder = IndexFeeder::new(index.clone());
    let mut failures: u64 = 0;
    let scope = namespace.as_deref().unwrap_or("all namespaces");
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                feeder.apply(event);
                if done {
                    tracing::info!(
                        pods = index.len(),
                        namespaces = scope,
                        after_failures = failures,
                        "router: sandbox pod index synced"
                    );
                    failures = 0;
                }
            }
            Err(e) => {
                failures += 1;
                index.set_synced(false);
                tracing::warn!(
                    error = %e,
                    failures,
                    namespaces = scope,
                    "router: cannot watch sandbox pods; retrying with backoff (routing by \
                     X-Sandbox-Pod-IP and DNS meanwhile)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(ns: &str, name: &str, ip: Option<&str>, ready: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            pod_ip: ip.map(Into::into),
            conditions: ready.map(|s| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: s.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_indexed() {
        let cases = [
            (
                pod("ns", "a", Some("10.0.0.1"), Some("True")),
                Some("10.0.0.1"),
            ),
            (
                pod("ns", "a", Some("fd00::1"), Some("True")),
                Some("fd00::1"),
            ),
            (pod("ns", "a", Some("10.0.0.1"), Some("False")), None),
            (pod("ns", "a", Some("10.0.0.1"), Some("Unknown")), None),
            (pod("ns", "a", Some("10.0.0.1"), None), None),
            (pod("ns", "a", None, Some("True")), None),
            (pod("ns", "a", Some("garbage"), Some("True")), None),
        ];
        for (p, want) in cases {
            assert_eq!(ready_pod_ip(&p), want.map(|s| s.parse().unwrap()), "{p:?}");
        }
        let mut terminating = pod("ns", "a", Some("10.0.0.1"), Some("True"));
        terminating.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(ready_pod_ip(&terminating), None);
    }

    #[test]
    fn events_update_the_index() {
        let index = SandboxIndex::new();
        let mut feeder = IndexFeeder::new(index.clone());
        index.insert("old", "gone", "10.9.9.9".parse().unwrap());
        feeder.apply(Event::Init);
        feeder.apply(Event::InitApply(pod(
            "a",
            "s1",
            Some("10.0.0.1"),
            Some("True"),
        )));
        feeder.apply(Event::InitApply(pod(
            "a",
            "s2",
            Some("10.0.0.2"),
            Some("False"),
        )));
        // Until InitDone the old contents serve.
        assert_eq!(index.get("old", "gone"), Some("10.9.9.9".parse().unwrap()));
        assert!(!index.is_synced());
        feeder.apply(Event::InitDone);
        assert!(index.is_synced());
        assert_eq!(index.get("old", "gone"), None);
        assert_eq!(index.get("a", "s1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(index.get("a", "s2"), None);
        assert_eq!(index.len(), 1);

        feeder.apply(Event::Apply(pod("a", "s2", Some("10.0.0.2"), Some("True"))));
        assert_eq!(index.get("a", "s2"), Some("10.0.0.2".parse().unwrap()));
        feeder.apply(Event::Apply(pod(
            "a",
            "s1",
            Some("10.0.0.1"),
            Some("False"),
        )));
        assert_eq!(index.get("a", "s1"), None);
        feeder.apply(Event::Apply(pod("b", "s1", Some("10.0.1.1"), Some("True"))));
        assert_eq!(index.get("b", "s1"), Some("10.0.1.1".parse().unwrap()));
        assert_eq!(index.get("a", "s1"), None, "namespaces are separate");
        feeder.apply(Event::Delete(pod(
            "a",
            "s2",
            Some("10.0.0.2"),
            Some("True"),
        )));
        assert_eq!(index.get("a", "s2"), None);
        assert_eq!(index.len(), 1);
    }
}
