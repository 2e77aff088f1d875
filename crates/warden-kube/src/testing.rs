//! An in-memory Kubernetes API server for tests and benchmarks: a [`tower::Service`] that a
//! [`kube::Client`] is built on, so the controller, the router's index and the driver are
//! exercised through the real client code without a cluster.
//!
//! It keeps objects as JSON and serves the part of the API they use: get, list (label and
//! field selectors), watch (a stream of events from a resource version), create (with
//! `generateName`), replace and patch (merge, strategic-merge treated as merge, and
//! server-side apply treated as a merge that may create), the `status` subresource, delete
//! with `uid`/`resourceVersion` preconditions, finalizers and background garbage collection
//! through ownerReferences. Writes that carry a stale `metadata.resourceVersion` get 409
//! Conflict, as from a real API server.
//!
//! Faults are injected per request ([`FakeApi::fail`]), every request is logged
//! ([`FakeApi::requests`]), and a stand-in kubelet can make new pods Ready
//! ([`FakeApi::auto_ready_pods`]). Admission, defaulting and schema validation are not
//! modelled.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// The response body of the fake: whole JSON documents, or a watch's endless event stream.
pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query string, empty when none.
    pub query: String,
    /// The status the fake answered with.
    pub status: u16,
}

/// A fault to inject: requests matching `method` (any when `None`) whose path contains
/// `path_contains` are answered with `status` and `reason`, `times` times.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The method to match; `None` matches any.
    pub method: Option<Method>,
    /// A substring of the path to match, such as `/sandboxes/my-claim`.
    pub path_contains: String,
    /// The HTTP status to answer with, such as 409 or 503.
    pub status: u16,
    /// The Status `reason`, such as `Conflict` or `ServiceUnavailable`.
    pub reason: String,
    /// How many matching requests fail.
    pub times: usize,
}

impl Fault {
    /// `times` requests of `method` on a path containing `path_contains` get 409 Conflict.
    pub fn conflict(method: Method, path_contains: &str, times: usize) -> Fault {
        Fault {
            method: Some(method),
            path_contains: path_contains.into(),
            status: 409,
            reason: "Conflict".into(),
            times,
        }
    }

    /// `times` requests on a path containing `path_contains` get 503 ServiceUnavailable.
    pub fn unavailable(path_contains: &str, times: usize) -> Fault {
        Fault {
            method: None,
            path_contains: path_contains.into(),
            status: 503,
            reason: "ServiceUnavailable".into(),
            times,
        }
    }
}

/// Where a collection lives: `/api/v1` or `/apis/<group>/<version>`, and its plural.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Collection {
    prefix: String,
    plural: String,
}

/// A parsed request path.
#[derive(Debug, Clone)]
struct Target {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    collection: Collection,
    namespace: Option<String>,
    resource_version: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Store {
    /// (collection, namespace or "", name) → object.
    objects: BTreeMap<(Collection, String, String), Value>,
    resource_version: u64,
    uid: u64,
    generated: u64,
    faults: Vec<Fault>,
    log: Vec<LoggedRequest>,
    auto_ready_pods: bool,
    /// The address every pod made Ready gets; one of 10.244/16 per pod when `None`.
    pod_ip: Option<String>,
    /// Events kept for watches that start from an older resource version.
    history: Vec<WatchEvent>,
}

/// The in-memory API server. Cheap to clone: clones share the same objects.
#[derive(Debug, Clone)]
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(status: u16, body: &Value) -> Response<FakeBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error(code: u16, reason: &str, message: impl Into<String>) -> Response<FakeBody> {
    json_response(code, &status_body(code, reason, &message.into()))
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (format!("/api/{version}"), rest),
        ["apis", group, version, rest @ ..] => (format!("/apis/{group}/{version}"), rest),
        _ => return None,
    };
    let owned = |s: &&str| s.to_string();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            v
        }),
        other => (None, other.to_vec()),
    };
    let plural = rest.first()?;
    Some(Target {
        collection: Collection {
            prefix,
            plural: plural.to_string(),
        },
        namespace,
        name: rest.get(1).map(owned),
        subresource: rest.get(2).map(owned),
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Splits a selector at the commas that are not inside `in (...)` sets.
fn split_selector(selector: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts
}

fn parse_selector(selector: &str) -> Vec<Requirement> {
    let set = |s: &str| -> Vec<String> {
        s.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().to_string())
            .collect()
    };
    split_selector(selector)
        .iter()
        .map(|part| part.trim())
        .filter(|part| !part.is_empty())
        .map(|part| {
            if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v))
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v))
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            }
        })
        .collect()
}

fn labels_match(object: &Value, requirements: &[Requirement]) -> bool {
    let labels = object.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    requirements.iter().all(|r| match r {
        Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
        Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
    })
}

fn fields_match(object: &Value, selector: &str) -> bool {
    split_selector(selector).iter().all(|part| {
        let (negate, (k, v)) = match part.split_once("!=") {
            Some(kv) => (true, kv),
            None => match part.split_once("==").or_else(|| part.split_once('=')) {
                Some(kv) => (false, kv),
                None => return true,
            },
        };
        let pointer = format!("/{}", k.trim().replace('.', "/"));
        let actual = object.pointer(&pointer).and_then(Value::as_str);
        (actual == Some(v.trim())) != negate
    })
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata was just made an object")
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// A stand-in kubelet: the pod runs and is Ready, with an address made from its uid.
fn make_ready(pod: &mut Value, serial: u64, fixed_ip: Option<&str>) {
    let ip = fixed_ip.map_or_else(
        || format!("10.244.{}.{}", (serial / 250) % 250, serial % 250 + 2),
        str::to_string,
    );
    let now = Timestamp::now().to_string();
    pod["status"] = json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "192.0.2.10",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    });
    if pod.pointer("/spec/nodeName").is_none() {
        pod["spec"]["nodeName"] = json!("node-1");
    }
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> FakeApi {
        let (events, _) = broadcast::channel(65_536);
        FakeApi {
            store: Arc::new(Mutex::new(Store::default())),
            events,
        }
    }

    /// A client of this server, with `default_namespace` for `Api::default_namespaced`.
    pub fn client(&self, default_namespace: &str) -> kube::Client {
        kube::Client::new(self.clone(), default_namespace)
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects a fault; faults are matched in the order they were added.
    pub fn fail(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Gives every pod made Ready this address (say, this host's, where a test's server
    /// stands in for the pods) instead of one of 10.244/16 each.
    pub fn pod_ip(&self, ip: std::net::IpAddr) {
        self.lock().pod_ip = Some(ip.to_string());
    }

    /// When on, every pod created becomes Running and Ready at once, with an IP address.
    pub fn auto_ready_pods(&self, on: bool) {
        self.lock().auto_ready_pods = on;
    }

    /// Stores `object` as is (apiVersion, kind, metadata.name, and metadata.namespace for a
    /// namespaced kind must be set), filling in uid, resourceVersion and creationTimestamp
    /// when absent. For seeding a test.
    pub fn insert<K: serde::Serialize + kube::Resource<DynamicType = ()>>(&self, object: &K) {
        let url = K::url_path(&(), object.meta().namespace.as_deref());
        let target = parse_path(&url).expect("a resource URL");
        let value = serde_json::to_value(object).expect("a serializable object");
        let mut store = self.lock();
        self.put(&mut store, &target.collection, value, "ADDED");
    }

    /// The object `name` of kind `K` in `namespace` (`None` for cluster-scoped kinds).
    pub fn get<K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let url = K::url_path(&(), namespace);
        let target = parse_path(&url)?;
        let store = self.lock();
        let key = (
            target.collection,
            namespace.unwrap_or_default().to_string(),
            name.to_string(),
        );
        store
            .objects
            .get(&key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Every object of kind `K` in `namespace` (all namespaces when `None`).
    pub fn list<K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
    ) -> Vec<K> {
        let url = K::url_path(&(), namespace);
        let Some(target) = parse_path(&url) else {
            return Vec::new();
        };
        let store = self.lock();
        store
            .objects
            .iter()
            .filter(|((c, ns, _), _)| {
                *c == target.collection && namespace.is_none_or(|n| n == ns.as_str())
            })
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Changes the stored object `name` of kind `K` with `change`, as another client would
    /// (a new resourceVersion, and a MODIFIED event for watchers).
    pub fn modify<K: kube::Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> bool {
        let url = K::url_path(&(), namespace);
        let Some(target) = parse_path(&url) else {
            return false;
        };
        let mut store = self.lock();
        let key = (
            target.collection.clone(),
            namespace.unwrap_or_default().to_string(),
            name.to_string(),
        );
        let Some(mut object) = store.objects.get(&key).cloned() else {
            return false;
        };
        change(&mut object);
        self.put(&mut store, &target.collection, object, "MODIFIED");
        true
    }

    /// Makes the pod `name` Running and Ready with an address, as the kubelet would.
    pub fn set_pod_ready(&self, namespace: &str, name: &str) -> bool {
        let (serial, ip) = {
            let mut store = self.lock();
            store.generated += 1;
            (store.generated, store.pod_ip.clone())
        };
        self.modify::<k8s_openapi::api::core::v1::Pod>(Some(namespace), name, |pod| {
            make_ready(pod, serial, ip.as_deref())
        })
    }

    /// Deletes the object `name` of kind `K` as another client would (finalizers and
    /// garbage collection apply).
    pub fn remove<K: kube::Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let url = K::url_path(&(), namespace);
        let Some(target) = parse_path(&url) else {
            return false;
        };
        let mut store = self.lock();
        let key = (
            target.collection,
            namespace.unwrap_or_default().to_string(),
            name.to_string(),
        );
        self.delete_key(&mut store, key).is_some()
    }

    /// Stores `object` under a new resource version and tells the watchers.
    fn put(
        &self,
        store: &mut Store,
        collection: &Collection,
        mut object: Value,
        kind: &'static str,
    ) {
        store.resource_version += 1;
        let rv = store.resource_version;
        let namespace = meta_str(&object, "namespace").map(str::to_string);
        let name = meta_str(&object, "name").unwrap_or_default().to_string();
        if meta_str(&object, "uid").is_none() {
            store.uid += 1;
            let uid = format!("00000000-0000-4000-8000-{:012x}", store.uid);
            metadata_mut(&mut object).insert("uid".into(), json!(uid));
        }
        if meta_str(&object, "creationTimestamp").is_none() {
            metadata_mut(&mut object).insert(
                "creationTimestamp".into(),
                json!(Timestamp::now().to_string()),
            );
        }
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        store.objects.insert(
            (
                collection.clone(),
                namespace.clone().unwrap_or_default(),
                name,
            ),
            object.clone(),
        );
        let event = WatchEvent {
            collection: collection.clone(),
            namespace,
            resource_version: rv,
            kind,
            object,
        };
        store.history.push(event.clone());
        let _ = self.events.send(event);
    }

    /// Removes the object at `key` now, or marks it deleted when finalizers hold it; removes
    /// its dependents (background propagation). Returns the object as last stored.
    fn delete_key(&self, store: &mut Store, key: (Collection, String, String)) -> Option<Value> {
        let mut object = store.objects.get(&key)?.clone();
        if has_finalizers(&object) {
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                metadata_mut(&mut object).insert(
                    "deletionTimestamp".into(),
                    json!(Timestamp::now().to_string()),
                );
                self.put(store, &key.0, object.clone(), "MODIFIED");
            }
            return store.objects.get(&key).cloned();
        }
        store.objects.remove(&key);
        store.resource_version += 1;
        let rv = store.resource_version;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let event = WatchEvent {
            collection: key.0.clone(),
            namespace: (!key.1.is_empty()).then(|| key.1.clone()),
            resource_version: rv,
            kind: "DELETED",
            object: object.clone(),
        };
        store.history.push(event.clone());
        let _ = self.events.send(event);
        if let Some(uid) = meta_str(&object, "uid").map(str::to_string) {
            let dependents: Vec<_> = store
                .objects
                .iter()
                .filter(|(_, v)| {
                    v.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r.get("uid").and_then(Value::as_str) == Some(&uid))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            for dependent in dependents {
                self.delete_key(store, dependent);
            }
        }
        Some(object)
    }

    fn take_fault(store: &mut Store, method: &Method, path: &str) -> Option<Fault> {
        let index = store.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&f.path_contains)
        })?;
        let fault = &mut store.faults[index];
        fault.times -= 1;
        let taken = fault.clone();
        if fault.times == 0 {
            store.faults.remove(index);
        }
        Some(taken)
    }

    async fn handle(self, req: Request<kube::client::Body>) -> Response<FakeBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = match req.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let response = self.respond(&method, &path, &query, &content_type, &body);
        let mut store = self.lock();
        store.log.push(LoggedRequest {
            method,
            path,
            query,
            status: response.status().as_u16(),
        });
        response
    }

    fn respond(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Response<FakeBody> {
        let mut store = self.lock();
        if let Some(fault) = Self::take_fault(&mut store, method, path) {
            return error(fault.status, &fault.reason, "injected fault");
        }
        let Some(target) = parse_path(path) else {
            return error(404, "NotFound", format!("no such path {path}"));
        };
        let namespace = target.namespace.clone().unwrap_or_default();
        let body_json = || -> Result<Value, String> {
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
        };
        match (method.clone(), target.name.clone()) {
            (Method::GET, None) => {
                if query_param(query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    drop(store);
                    return self.watch(&target, query);
                }
                let labels = query_param(query, "labelSelector")
                    .map(|s| parse_selector(&s))
                    .unwrap_or_default();
                let fields = query_param(query, "fieldSelector").unwrap_or_default();
                let items: Vec<Value> = store
                    .objects
                    .iter()
                    .filter(|((c, ns, _), _)| {
                        *c == target.collection && (target.namespace.is_none() || *ns == namespace)
                    })
                    .map(|(_, v)| v)
                    .filter(|v| labels_match(v, &labels) && fields_match(v, &fields))
                    .cloned()
                    .collect();
                json_response(
                    200,
                    &json!({
                        "apiVersion": "v1",
                        "kind": "List",
                        "metadata": {"resourceVersion": store.resource_version.to_string()},
                        "items": items,
                    }),
                )
            }
            (Method::GET, Some(name)) => {
                let key = (target.collection.clone(), namespace, name.clone());
                match store.objects.get(&key) {
                    Some(v) => json_response(200, v),
                    None => not_found(&target, &name),
                }
            }
            (Method::POST, None) => {
                let mut object = match body_json() {
                    Ok(v) => v,
                    Err(e) => return error(400, "BadRequest", e),
                };
                let mut name = meta_str(&object, "name").unwrap_or_default().to_string();
                if name.is_empty() {
                    let Some(prefix) = meta_str(&object, "generateName").map(str::to_string) else {
                        return error(
                            422,
                            "Invalid",
                            "metadata.name: Required value: name or generateName is required",
                        );
                    };
                    store.generated += 1;
                    name = format!("{prefix}{:05x}", store.generated);
                    metadata_mut(&mut object).insert("name".into(), json!(name));
                }
                if target.namespace.is_some() {
                    metadata_mut(&mut object).insert("namespace".into(), json!(namespace));
                }
                let key = (target.collection.clone(), namespace, name.clone());
                if store.objects.contains_key(&key) {
                    return error(
                        409,
                        "AlreadyExists",
                        format!("{} \"{name}\" already exists", target.collection.plural),
                    );
                }
                for field in ["uid", "resourceVersion", "deletionTimestamp"] {
                    metadata_mut(&mut object).remove(field);
                }
                metadata_mut(&mut object).insert(
                    "creationTimestamp".into(),
                    json!(Timestamp::now().to_string()),
                );
                if object
                    .get("metadata")
                    .and_then(|m| m.get("generation"))
                    .is_none()
                {
                    metadata_mut(&mut object).insert("generation".into(), json!(1));
                }
                if target.collection.plural == "pods" && store.auto_ready_pods {
                    store.generated += 1;
                    let serial = store.generated;
                    let ip = store.pod_ip.clone();
                    make_ready(&mut object, serial, ip.as_deref());
                }
                self.put(&mut store, &target.collection, object, "ADDED");
                json_response(201, &store.objects[&key])
            }
            (Method::PUT | Method::PATCH, Some(name)) => {
                let key = (target.collection.clone(), namespace.clone(), name.clone());
                let incoming = match body_json() {
                    Ok(v) => v,
                    Err(e) => return error(400, "BadRequest", e),
                };
                let apply = content_type.starts_with("application/apply-patch");
                let current = match store.objects.get(&key) {
                    Some(v) => v.clone(),
                    None if apply => {
                        let mut object = incoming.clone();
                        metadata_mut(&mut object).insert("name".into(), json!(name));
                        if target.namespace.is_some() {
                            metadata_mut(&mut object).insert("namespace".into(), json!(namespace));
                        }
                        self.put(&mut store, &target.collection, object, "ADDED");
                        return json_response(201, &store.objects[&key]);
                    }
                    None => return not_found(&target, &name),
                };
                if method == Method::PATCH && content_type.starts_with("application/json-patch") {
                    return error(415, "UnsupportedMediaType", "JSON patch is not served");
                }
                if let Some(rv) = meta_str(&incoming, "resourceVersion")
                    && Some(rv) != meta_str(&current, "resourceVersion")
                {
                    return error(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                            target.collection.plural
                        ),
                    );
                }
                let status_only = target.subresource.as_deref() == Some("status");
                let mut next = current.clone();
                if method == Method::PUT {
                    next = incoming.clone();
                } else {
                    merge(&mut next, &incoming);
                }
                // The status subresource changes only the status; the main resource never does
                // (as for every kind with a status subresource).
                if status_only {
                    let status = next.get("status").cloned();
                    next = current.clone();
                    match status {
                        Some(s) => next["status"] = s,
                        None => {
                            next.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                } else if target.collection.plural != "leases" {
                    match current.get("status") {
                        Some(s) => next["status"] = s.clone(),
                        None => {
                            next.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                }
                // Fields the server owns.
                for field in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "name",
                    "namespace",
                ] {
                    match current.pointer(&format!("/metadata/{field}")) {
                        Some(v) => {
                            metadata_mut(&mut next).insert(field.into(), v.clone());
                        }
                        None => {
                            metadata_mut(&mut next).remove(field);
                        }
                    }
                }
                if next.get("spec") != current.get("spec") {
                    let generation = current
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    metadata_mut(&mut next).insert("generation".into(), json!(generation + 1));
                }
                if next == current {
                    return json_response(200, &current);
                }
                if next.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&next) {
                    self.put(&mut store, &target.collection, next, "MODIFIED");
                    let gone = self.delete_key(&mut store, key);
                    return json_response(200, &gone.unwrap_or(Value::Null));
                }
                self.put(&mut store, &target.collection, next, "MODIFIED");
                json_response(200, &store.objects[&key])
            }
            (Method::DELETE, Some(name)) => {
                let key = (target.collection.clone(), namespace, name.clone());
                let Some(current) = store.objects.get(&key).cloned() else {
                    return not_found(&target, &name);
                };
                let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                    if let Some(expected) = options
                        .pointer(&format!("/preconditions/{field}"))
                        .and_then(Value::as_str)
                        && Some(expected) != meta_str(&current, field)
                    {
                        return error(
                            409,
                            "Conflict",
                            format!(
                                "Precondition failed: {label} in precondition: {expected}, {label} in object meta: {}",
                                meta_str(&current, field).unwrap_or_default()
                            ),
                        );
                    }
                }
                match self.delete_key(&mut store, key) {
                    Some(object) => json_response(200, &object),
                    None => not_found(&target, &name),
                }
            }
            _ => error(
                405,
                "MethodNotAllowed",
                format!("{method} {path} is not served"),
            ),
        }
    }

    /// A watch: the events after `resourceVersion` (all current objects as ADDED when it is
    /// absent or "0"), then live events, as newline-separated JSON.
    fn watch(&self, target: &Target, query: &str) -> Response<FakeBody> {
        let labels = query_param(query, "labelSelector")
            .map(|s| parse_selector(&s))
            .unwrap_or_default();
        let fields = query_param(query, "fieldSelector").unwrap_or_default();
        let since: Option<u64> = query_param(query, "resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .filter(|rv| *rv > 0);
        let receiver = self.events.subscribe();
        let store = self.lock();
        let matches = {
            let target = target.clone();
            move |e: &WatchEvent| {
                e.collection == target.collection
                    && (target.namespace.is_none() || e.namespace == target.namespace)
            }
        };
        let backlog: Vec<Value> = match since {
            Some(rv) => store
                .history
                .iter()
                .filter(|e| e.resource_version > rv && matches(e))
                .filter(|e| labels_match(&e.object, &labels) && fields_match(&e.object, &fields))
                .map(|e| json!({"type": e.kind, "object": e.object}))
                .collect(),
            None => store
                .objects
                .iter()
                .filter(|((c, ns, _), _)| {
                    *c == target.collection && target.namespace.as_ref().is_none_or(|n| n == ns)
                })
                .map(|(_, v)| v)
                .filter(|v| labels_match(v, &labels) && fields_match(v, &fields))
                .map(|v| json!({"type": "ADDED", "object": v}))
                .collect(),
        };
        let last = store.resource_version;
        drop(store);
        let line = |v: &Value| {
            let mut bytes = serde_json::to_vec(v).unwrap_or_default();
            bytes.push(b'\n');
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(bytes)))
        };
        let backlog = futures_util::stream::iter(backlog.iter().map(line).collect::<Vec<_>>());
        let live = futures_util::stream::unfold(receiver, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |e| {
            let keep = e.resource_version > last
                && matches(e)
                && labels_match(&e.object, &labels)
                && fields_match(&e.object, &fields);
            std::future::ready(keep)
        })
        .map(move |e| line(&json!({"type": e.kind, "object": e.object})));
        let body = StreamBody::new(backlog.chain(live));
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(BodyExt::boxed_unsync(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
    }
}

fn not_found(target: &Target, name: &str) -> Response<FakeBody> {
    error(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", target.collection.plural),
    )
}

impl tower::Service<Request<kube::client::Body>> for FakeApi {
    type Response = Response<FakeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl FakeApi {
    /// Serves this API server over plain HTTP/1.1 on `listener` until the task is dropped, for
    /// clients in other processes (a kubeconfig with `server: http://ADDR`), such as the
    /// Kubernetes Python client the agent-sandbox SDK uses.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let api = self.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let mut api = api.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let req = Request::from_parts(
                                parts,
                                kube::client::Body::from(bytes.to_vec()),
                            );
                            tower::Service::call(&mut api, req).await
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// This host's non-loopback IPv4 address, where a test's server stands in for a pod (the
/// router refuses loopback pod IPs, as upstream's does). Panics, saying why, when the host
/// has none.
pub fn host_ip() -> std::net::IpAddr {
    if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0")
        && s.connect("192.0.2.200:9").is_ok()
        && let Ok(local) = s.local_addr()
        && !local.ip().is_loopback()
        && !local.ip().is_unspecified()
    {
        return local.ip();
    }
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("this test needs a non-loopback IPv4 address: no default route and no `ip`");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .expect("this test needs a non-loopback IPv4 address; this host has none")
}

/// Objects by kind, for assertions: how many of each plural are stored.
impl FakeApi {
    /// The number of stored objects per collection plural (`pods`, `sandboxes`, ...).
    pub fn counts(&self) -> HashMap<String, usize> {
        let store = self.lock();
        let mut counts = HashMap::new();
        for (c, _, _) in store.objects.keys() {
            *counts.entry(c.plural.clone()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    }

    #[test]
    fn selectors_parse_like_the_api_server() {
        assert_eq!(
            parse_selector("a=b,c!=d,e,!f,g in (x,y),h notin (z)"),
            vec![
                Requirement::Equals("a".into(), "b".into()),
                Requirement::NotEquals("c".into(), "d".into()),
                Requirement::Exists("e".into()),
                Requirement::NotExists("f".into()),
                Requirement::In("g".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("h".into(), vec!["z".into()]),
            ]
        );
        assert_eq!(percent_decode("a%3Db%2Cc"), "a=b,c");
    }

    #[tokio::test]
    async fn create_get_list_patch_delete_through_the_kube_client() {
        let fake = FakeApi::new();
        let pods: Api<Pod> = Api::namespaced(fake.client("default"), "default");
        let made = pods
            .create(&PostParams::default(), &pod("a", &[("app", "x")]))
            .await
            .unwrap();
        assert!(made.metadata.uid.is_some());
        pods.create(&PostParams::default(), &pod("b", &[("app", "y")]))
            .await
            .unwrap();
        let err = pods
            .create(&PostParams::default(), &pod("a", &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 409),
            "{err}"
        );

        let listed = pods
            .list(&ListParams::default().labels("app=x"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);

        // A patch with a stale resourceVersion conflicts; with the current one it applies.
        let stale = json!({"metadata": {"resourceVersion": "999", "labels": {"k": "v"}}});
        let err = pods
            .patch("a", &PatchParams::default(), &Patch::Merge(&stale))
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 409),
            "{err}"
        );
        let rv = pods.get("a").await.unwrap().metadata.resource_version;
        let fresh = json!({"metadata": {"resourceVersion": rv, "labels": {"k": "v"}}});
        let patched = pods
            .patch("a", &PatchParams::default(), &Patch::Merge(&fresh))
            .await
            .unwrap();
        assert_eq!(patched.metadata.labels.unwrap()["k"], "v");

        // Delete preconditions.
        let wrong = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some("nope".into()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        assert!(pods.delete("a", &wrong).await.is_err());
        pods.delete("a", &DeleteParams::default()).await.unwrap();
        assert!(pods.get_opt("a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn owned_objects_are_collected_and_faults_are_injected() {
        let fake = FakeApi::new();
        let pods: Api<Pod> = Api::namespaced(fake.client("default"), "default");
        let owner = pods
            .create(&PostParams::default(), &pod("owner", &[]))
            .await
            .unwrap();
        let mut child = pod("child", &[]);
        child.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
        pods.create(&PostParams::default(), &child).await.unwrap();
        pods.delete("owner", &DeleteParams::default())
            .await
            .unwrap();
        assert!(fake.get::<Pod>(Some("default"), "child").is_none());

        fake.fail(Fault::unavailable("/pods", 1));
        assert!(pods.list(&ListParams::default()).await.is_err());
        assert!(pods.list(&ListParams::default()).await.is_ok());
        let log = fake.requests();
        assert_eq!(log[log.len() - 2].status, 503);
    }

    #[tokio::test]
    async fn watch_streams_events_after_the_listed_version() {
        use kube::runtime::{WatchStreamExt, watcher};
        let fake = FakeApi::new();
        fake.insert(&pod("early", &[]));
        let pods: Api<Pod> = Api::namespaced(fake.client("default"), "default");
        let mut stream =
            Box::pin(watcher(pods.clone(), watcher::Config::default()).applied_objects());
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("early"));
        pods.create(&PostParams::default(), &pod("late", &[]))
            .await
            .unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.metadata.name.as_deref(), Some("late"));
    }
}
