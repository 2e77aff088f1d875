//! The extension controllers (SandboxTemplate, SandboxWarmPool, SandboxClaim) with the
//! Sandbox controller, against the in-memory API server: cold claims, warm adoption, pool
//! refill and scale-down, template changes under each update strategy, expiry under each
//! shutdown policy, missing pools and templates, and adoption races.
//!
//! [`settle`] plays the controllers deterministically: it reconciles every object until a
//! round makes no write. One test runs the real watch-driven controllers instead.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use warden_kube::controller::run::{Readiness, RunOptions, run};
use warden_kube::controller::{Context, claim, sandbox, template, warm_pool};
use warden_kube::crd::labels::{CLAIM_UID, LAUNCH_TYPE};
use warden_kube::crd::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use warden_kube::reconcile::sandbox::Settings;
use warden_kube::testing::{FakeApi, Fault};

mod clock_support;
use clock_support::TestClock;

const NS: &str = "agents";

fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap()
}

fn template_object(name: &str, image: &str, extra: Value) -> SandboxTemplate {
    let mut spec = json!({
        "podTemplate": {"spec": {"containers": [{"name": "runtime", "image": image}]}},
    });
    merge(&mut spec, &extra);
    object(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
        "kind": "SandboxTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
}

fn pool_object(
    name: &str,
    template: &str,
    replicas: i32,
    strategy: Option<&str>,
) -> SandboxWarmPool {
    let mut spec = json!({"replicas": replicas, "sandboxTemplateRef": {"name": template}});
    if let Some(s) = strategy {
        spec["updateStrategy"] = json!({"type": s});
    }
    object(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
        "kind": "SandboxWarmPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
}

fn claim_object(name: &str, pool: &str, extra: Value) -> SandboxClaim {
    let mut spec = json!({"warmPoolRef": {"name": pool}});
    merge(&mut spec, &extra);
    object(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
        "kind": "SandboxClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
}

fn merge(target: &mut Value, extra: &Value) {
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
}

struct Cluster {
    fake: FakeApi,
    ctx: Arc<Context>,
    clock: TestClock,
}

impl Cluster {
    fn new() -> Cluster {
        let fake = FakeApi::new();
        // The stand-in kubelet: pods run and are Ready as soon as they exist.
        fake.auto_ready_pods(true);
        let clock = TestClock::new();
        let ctx =
            Arc::new(Context::new(fake.client(NS), Settings::default()).with_clock(clock.clock()));
        Cluster { fake, ctx, clock }
    }

    /// One pass over every object of every kind; the errors met.
    async fn round(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for t in self.fake.list::<SandboxTemplate>(Some(NS)) {
            if let Err(e) = template::reconcile(Arc::new(t), self.ctx.clone()).await {
                errors.push(format!("template: {e}"));
            }
        }
        for p in self.fake.list::<SandboxWarmPool>(Some(NS)) {
            if let Err(e) = warm_pool::reconcile(Arc::new(p), self.ctx.clone()).await {
                errors.push(format!("pool: {e}"));
            }
        }
        for c in self.fake.list::<SandboxClaim>(Some(NS)) {
            let name = c.metadata.name.clone().unwrap_or_default();
            // Fresh: an earlier reconcile in this round may have changed it.
            let Some(c) = self.fake.get::<SandboxClaim>(Some(NS), &name) else {
                continue;
            };
            if let Err(e) = claim::reconcile(Arc::new(c), self.ctx.clone()).await {
                errors.push(format!("claim {name}: {e}"));
            }
        }
        for s in self.fake.list::<Sandbox>(Some(NS)) {
            if let Err(e) = sandbox::reconcile(Arc::new(s), self.ctx.clone()).await {
                errors.push(format!("sandbox: {e}"));
            }
        }
        errors
    }

    /// Rounds until one makes no write (at most 12); panics on a reconcile error unless
    /// `errors_ok`.
    async fn settle_with(&self, errors_ok: bool) {
        for _ in 0..12 {
            self.fake.clear_requests();
            let errors = self.round().await;
            assert!(
                errors_ok || errors.is_empty(),
                "reconcile errors: {errors:?}"
            );
            if errors.is_empty() && self.fake.requests().iter().all(|r| r.method == Method::GET) {
                return;
            }
        }
        panic!("the controllers did not settle: {:?}", self.fake.requests());
    }

    async fn settle(&self) {
        self.settle_with(false).await
    }

    fn claim(&self, name: &str) -> SandboxClaim {
        self.fake.get(Some(NS), name).expect("the claim exists")
    }

    fn sandboxes(&self) -> Vec<Sandbox> {
        self.fake.list(Some(NS))
    }

    fn pool_members(&self, pool: &str) -> Vec<Sandbox> {
        self.sandboxes()
            .into_iter()
            .filter(|s| {
                s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "SandboxWarmPool" && o.name == pool)
            })
            .collect()
    }
}

fn ready(claim: &SandboxClaim) -> Option<(String, String)> {
    claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn label<'a>(s: &'a Sandbox, key: &str) -> Option<&'a str> {
    s.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

#[tokio::test]
async fn the_template_keeps_its_network_policy() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.settle().await;
    let np: NetworkPolicy = c
        .fake
        .get(Some(NS), "py-network-policy")
        .expect("a managed NetworkPolicy");
    assert_eq!(
        np.metadata.owner_references.unwrap()[0].kind,
        "SandboxTemplate"
    );
    let ingress = serde_json::to_value(np.spec.unwrap().ingress).unwrap();
    assert!(ingress.to_string().contains("sandbox-router"), "{ingress}");

    // Someone edits the policy: it is put back.
    c.fake
        .modify::<NetworkPolicy>(Some(NS), "py-network-policy", |np| {
            np["spec"]["ingress"] = json!([{}]);
        });
    c.settle().await;
    let np: NetworkPolicy = c.fake.get(Some(NS), "py-network-policy").unwrap();
    assert!(
        serde_json::to_string(&np.spec)
            .unwrap()
            .contains("sandbox-router")
    );

    // Unmanaged: the policy it made goes.
    c.fake.modify::<SandboxTemplate>(Some(NS), "py", |t| {
        t["spec"]["networkPolicyManagement"] = json!("Unmanaged");
    });
    c.settle().await;
    assert!(
        c.fake
            .get::<NetworkPolicy>(Some(NS), "py-network-policy")
            .is_none()
    );
}

#[tokio::test]
async fn a_policy_the_template_does_not_own_is_left_alone() {
    let c = Cluster::new();
    let foreign: NetworkPolicy = object(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "py-network-policy", "namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }));
    c.fake.insert(&foreign);
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.settle().await;
    let np: NetworkPolicy = c.fake.get(Some(NS), "py-network-policy").unwrap();
    assert!(np.metadata.owner_references.is_none());
    assert_eq!(
        np.spec.unwrap().policy_types.unwrap(),
        vec!["Ingress".to_string()]
    );
}

#[tokio::test]
async fn a_pool_fills_up_and_scales_down() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 3, None));
    c.settle().await;
    let members = c.pool_members("warm");
    assert_eq!(members.len(), 3);
    for m in &members {
        assert!(m.metadata.name.as_deref().unwrap().starts_with("warm-"));
        // Secure defaults from the template.
        assert_eq!(
            m.spec.pod_template.spec.automount_service_account_token,
            Some(false)
        );
    }
    let pool: SandboxWarmPool = c.fake.get(Some(NS), "warm").unwrap();
    let status = pool.status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert!(
        status
            .selector
            .starts_with("agents.x-k8s.io/warm-pool-sandbox=")
    );

    // Slow start: the first creation went alone, then the rest.
    c.fake
        .modify::<SandboxWarmPool>(Some(NS), "warm", |p| p["spec"]["replicas"] = json!(1));
    c.settle().await;
    assert_eq!(c.pool_members("warm").len(), 1);
    assert_eq!(
        c.fake.counts().get("pods"),
        Some(&1),
        "the pods of excess members go too"
    );
}

#[tokio::test]
async fn a_member_deleted_behind_the_pools_back_is_replaced() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 2, None));
    c.settle().await;
    let gone = c.pool_members("warm")[0].metadata.name.clone().unwrap();
    c.fake.remove::<Sandbox>(Some(NS), &gone);
    c.settle().await;
    let members = c.pool_members("warm");
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .all(|m| m.metadata.name.as_deref() != Some(gone.as_str()))
    );
}

#[tokio::test]
async fn a_claim_adopts_a_ready_warm_member_and_the_pool_refills() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 2, None));
    c.settle().await;
    let before: Vec<String> = c
        .pool_members("warm")
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();

    c.fake.insert(&claim_object("job-1", "warm", json!({})));
    c.settle().await;
    let claim = c.claim("job-1");
    assert_eq!(
        ready(&claim).unwrap(),
        ("True".into(), "DependenciesReady".into())
    );
    let bound = claim.status.as_ref().unwrap().sandbox.name.clone();
    assert!(
        before.contains(&bound),
        "a warm member {bound} was adopted, not a new one"
    );
    assert_eq!(claim.status.as_ref().unwrap().sandbox.pod_ips.len(), 1);
    let sandbox: Sandbox = c.fake.get(Some(NS), &bound).unwrap();
    assert_eq!(label(&sandbox, LAUNCH_TYPE), Some("warm"));
    assert_eq!(label(&sandbox, CLAIM_UID), claim.metadata.uid.as_deref());
    let owner = &sandbox.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("SandboxClaim", "job-1")
    );
    // The pool made a replacement: two members again, plus the adopted one.
    assert_eq!(c.pool_members("warm").len(), 2);
    assert_eq!(c.sandboxes().len(), 3);
    assert!(
        c.ctx
            .metrics
            .encode()
            .contains("warden_controller_claim_ready_seconds_count{launch=\"warm\"} 1"),
        "{}",
        c.ctx.metrics.encode()
    );

    // Deleting the claim takes its Sandbox (garbage collection), not the pool's.
    c.fake.remove::<SandboxClaim>(Some(NS), "job-1");
    c.settle().await;
    assert!(c.fake.get::<Sandbox>(Some(NS), &bound).is_none());
    assert_eq!(c.pool_members("warm").len(), 2);
}

#[tokio::test]
async fn a_claim_without_a_ready_member_starts_cold() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("empty", "py", 0, None));
    c.fake.insert(&claim_object("cold-1", "empty", json!({})));
    c.settle().await;
    let claim = c.claim("cold-1");
    assert_eq!(claim.status.as_ref().unwrap().sandbox.name, "cold-1");
    assert_eq!(ready(&claim).unwrap().0, "True");
    let sandbox: Sandbox = c.fake.get(Some(NS), "cold-1").unwrap();
    assert_eq!(label(&sandbox, LAUNCH_TYPE), Some("cold"));
    assert!(c.fake.get::<Pod>(Some(NS), "cold-1").is_some());
}

#[tokio::test]
async fn a_claim_with_env_goes_cold_and_gets_its_variables_when_allowed() {
    let c = Cluster::new();
    c.fake.insert(&template_object(
        "py",
        "python:3.13",
        json!({"envVarsInjectionPolicy": "Allowed"}),
    ));
    c.fake.insert(&pool_object("warm", "py", 1, None));
    c.settle().await;
    c.fake.insert(&claim_object(
        "env-1",
        "warm",
        json!({"env": [{"name": "TASK_ID", "value": "42"}]}),
    ));
    c.settle().await;
    let claim = c.claim("env-1");
    assert_eq!(
        claim.status.as_ref().unwrap().sandbox.name,
        "env-1",
        "cold, not adopted"
    );
    let pod: Pod = c.fake.get(Some(NS), "env-1").unwrap();
    let env = serde_json::to_string(&pod.spec.unwrap().containers[0].env).unwrap();
    assert!(env.contains("TASK_ID") && env.contains("42"), "{env}");
    assert_eq!(
        c.pool_members("warm").len(),
        1,
        "the warm member was left in the pool"
    );
}

#[tokio::test]
async fn a_claim_with_env_is_rejected_when_the_template_disallows_it() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 0, None));
    c.fake.insert(&claim_object(
        "env-2",
        "warm",
        json!({"env": [{"name": "TASK_ID", "value": "42"}]}),
    ));
    c.settle().await;
    let claim = c.claim("env-2");
    assert_eq!(
        ready(&claim).unwrap(),
        ("False".into(), "EnvVarsInjectionRejected".into())
    );
    assert!(c.sandboxes().is_empty(), "nothing created");
}

#[tokio::test]
async fn a_claim_naming_a_missing_pool_or_template_waits_and_creates_nothing() {
    let c = Cluster::new();
    c.fake
        .insert(&claim_object("lost", "no-such-pool", json!({})));
    c.settle().await;
    assert_eq!(
        ready(&c.claim("lost")).unwrap(),
        ("False".into(), "WarmPoolNotFound".into())
    );
    assert!(c.sandboxes().is_empty());
    let requeue = claim::reconcile(Arc::new(c.claim("lost")), c.ctx.clone())
        .await
        .unwrap();
    assert_ne!(
        requeue,
        kube::runtime::controller::Action::await_change(),
        "looked for again later"
    );

    // The pool appears, naming a template that does not exist.
    c.fake
        .insert(&pool_object("no-such-pool", "no-such-template", 1, None));
    c.settle().await;
    assert_eq!(
        ready(&c.claim("lost")).unwrap(),
        ("False".into(), "TemplateNotFound".into())
    );
    assert!(c.sandboxes().is_empty());

    // And the template: the claim is served.
    c.fake.insert(&template_object(
        "no-such-template",
        "python:3.13",
        json!({}),
    ));
    c.settle().await;
    assert_eq!(ready(&c.claim("lost")).unwrap().0, "True");
}

#[tokio::test]
async fn two_claims_racing_for_one_member_both_end_up_served() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 1, None));
    c.settle().await;
    let member = c.pool_members("warm")[0].metadata.name.clone().unwrap();
    c.fake.insert(&claim_object("a", "warm", json!({})));
    // Someone else adopts the member first: the adoption patch conflicts.
    c.fake.fail(Fault::conflict(
        Method::PATCH,
        &format!("/sandboxes/{member}"),
        1,
    ));
    let requeue = claim::reconcile(Arc::new(c.claim("a")), c.ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        ready(&c.claim("a")).unwrap(),
        ("False".into(), "AdoptionConflict".into())
    );
    assert!(
        matches!(requeue, r if r != kube::runtime::controller::Action::await_change()),
        "retried soon"
    );
    c.fake.insert(&claim_object("b", "warm", json!({})));
    c.settle().await;
    let (a, b) = (c.claim("a"), c.claim("b"));
    assert_eq!(ready(&a).unwrap().0, "True");
    assert_eq!(ready(&b).unwrap().0, "True");
    assert_ne!(
        a.status.unwrap().sandbox.name,
        b.status.unwrap().sandbox.name,
        "one Sandbox per claim"
    );
}

#[tokio::test]
async fn a_template_change_recreates_members_only_under_recreate() {
    for (strategy, replaced) in [("Recreate", true), ("OnReplenish", false)] {
        let c = Cluster::new();
        c.fake
            .insert(&template_object("py", "python:3.12", json!({})));
        c.fake.insert(&pool_object("warm", "py", 2, Some(strategy)));
        c.settle().await;
        let before: Vec<String> = c
            .pool_members("warm")
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        c.fake.modify::<SandboxTemplate>(Some(NS), "py", |t| {
            t["spec"]["podTemplate"]["spec"]["containers"][0]["image"] = json!("python:3.13");
        });
        c.settle().await;
        let after = c.pool_members("warm");
        assert_eq!(after.len(), 2, "{strategy}");
        let images: Vec<String> = after
            .iter()
            .map(|m| {
                m.spec.pod_template.spec.containers[0]
                    .image
                    .clone()
                    .unwrap_or_default()
            })
            .collect();
        let kept = after
            .iter()
            .filter(|m| before.contains(m.metadata.name.as_ref().unwrap()))
            .count();
        if replaced {
            assert_eq!(kept, 0, "Recreate replaces stale members");
            assert!(images.iter().all(|i| i == "python:3.13"), "{images:?}");
        } else {
            assert_eq!(kept, 2, "OnReplenish keeps them");
            assert!(images.iter().all(|i| i == "python:3.12"), "{images:?}");
        }
    }
}

#[tokio::test]
async fn claim_expiry_follows_its_shutdown_policy() {
    for policy in ["Delete", "DeleteForeground", "Retain"] {
        let c = Cluster::new();
        c.fake
            .insert(&template_object("py", "python:3.13", json!({})));
        c.fake.insert(&pool_object("warm", "py", 0, None));
        c.fake.insert(&claim_object(
            "exp",
            "warm",
            json!({"lifecycle": {"shutdownTime": c.clock.rfc3339(30), "shutdownPolicy": policy}}),
        ));
        c.settle().await;
        assert_eq!(ready(&c.claim("exp")).unwrap().0, "True", "{policy}");
        c.clock.advance(31);
        c.settle().await;
        let sandbox = c.fake.get::<Sandbox>(Some(NS), "exp");
        assert!(sandbox.is_none(), "{policy}: the Sandbox goes");
        let claim = c.fake.get::<SandboxClaim>(Some(NS), "exp");
        if policy == "Retain" {
            let claim = claim.expect("Retain keeps the claim");
            assert_eq!(
                ready(&claim).unwrap(),
                ("False".into(), "ClaimExpired".into())
            );
        } else {
            assert!(claim.is_none(), "{policy}: the claim goes");
        }
    }
}

#[tokio::test]
async fn a_claim_expires_ttl_seconds_after_its_sandbox_finished() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 0, None));
    c.fake.insert(&claim_object(
        "ttl",
        "warm",
        json!({"lifecycle": {"ttlSecondsAfterFinished": 60, "shutdownPolicy": "Delete"}}),
    ));
    c.settle().await;
    // The pod's command exits: the Sandbox and the claim are Finished.
    c.fake.modify::<Pod>(Some(NS), "ttl", |pod| {
        pod["status"]["phase"] = json!("Succeeded");
        pod["status"]["conditions"] =
            json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
    });
    c.settle().await;
    assert!(
        c.fake.get::<SandboxClaim>(Some(NS), "ttl").is_some(),
        "kept for the TTL"
    );
    c.clock.advance(61);
    c.settle().await;
    assert!(
        c.fake.get::<SandboxClaim>(Some(NS), "ttl").is_none(),
        "gone after the TTL"
    );
}

#[tokio::test]
async fn conflicts_and_outages_are_retried_without_losing_anything() {
    let c = Cluster::new();
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 2, None));
    c.fake.fail(Fault::unavailable("/sandboxes", 2));
    c.fake.fail(Fault::conflict(
        Method::PUT,
        "/sandboxwarmpools/warm/status",
        1,
    ));
    c.settle_with(true).await;
    assert_eq!(c.pool_members("warm").len(), 2);
    assert!(c.ctx.metrics.error_count("SandboxWarmPool", "unavailable") >= 1);
    assert!(c.ctx.metrics.error_count("SandboxWarmPool", "conflict") >= 1);
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn the_running_controllers_serve_a_warm_claim() {
    let c = Cluster::new();
    let readiness = Arc::new(Readiness::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        c.ctx.clone(),
        RunOptions::default(),
        readiness,
        async move {
            let _ = stopped.await;
        },
    ));
    c.fake
        .insert(&template_object("py", "python:3.13", json!({})));
    c.fake.insert(&pool_object("warm", "py", 2, None));
    eventually("a full, ready pool", || {
        c.fake
            .get::<SandboxWarmPool>(Some(NS), "warm")
            .and_then(|p| p.status)
            .is_some_and(|s| s.ready_replicas == 2)
    })
    .await;
    c.fake.insert(&claim_object("live", "warm", json!({})));
    eventually("the claim Ready", || {
        c.fake
            .get::<SandboxClaim>(Some(NS), "live")
            .and_then(|cl| ready(&cl))
            .is_some_and(|(s, _)| s == "True")
    })
    .await;
    let bound = c.claim("live").status.unwrap().sandbox.name;
    assert_ne!(bound, "live", "warm: a pool member was adopted");
    eventually("the pool refilled", || c.pool_members("warm").len() == 2).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn failures_become_events_on_the_object() {
    use k8s_openapi::api::events::v1::Event;
    let fake = FakeApi::new();
    let ctx =
        Arc::new(Context::new(fake.client(NS), Settings::default()).with_events("test-replica"));
    fake.insert(&claim_object("orphan", "no-such-pool", json!({})));
    let claim = fake.get::<SandboxClaim>(Some(NS), "orphan").unwrap();
    claim::reconcile(Arc::new(claim), ctx.clone())
        .await
        .unwrap();
    let events = fake.list::<Event>(Some(NS));
    let event = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("WarmPoolNotFound"))
        .unwrap_or_else(|| panic!("no WarmPoolNotFound event: {events:?}"));
    let regarding = event.regarding.as_ref().unwrap();
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("SandboxClaim"), Some("orphan"))
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("no-such-pool")
    );
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("warden-controller")
    );

    // The same failure again is not a new Event.
    let claim = fake.get::<SandboxClaim>(Some(NS), "orphan").unwrap();
    claim::reconcile(Arc::new(claim), ctx.clone())
        .await
        .unwrap();
    assert_eq!(fake.list::<Event>(Some(NS)).len(), events.len());
}
