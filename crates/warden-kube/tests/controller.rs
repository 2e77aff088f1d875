//! `warden controller` against the in-memory API server (`warden_kube::testing::FakeApi`):
//! each scenario goes through the real kube client, the controller shell and the pure
//! reconcilers, and checks the objects the API server ends up holding.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::controller::Action as Requeue;
use serde_json::json;
use warden_kube::controller::run::{LeaderElection, Readiness, RunOptions, run};
use warden_kube::controller::{Context, sandbox};
use warden_kube::crd::Sandbox;
use warden_kube::reconcile::sandbox::Settings;
use warden_kube::testing::{FakeApi, Fault};

mod clock_support;
use clock_support::TestClock;

const NS: &str = "team";

fn sandbox_object(name: &str, extra_spec: serde_json::Value) -> Sandbox {
    let mut spec = json!({
        "podTemplate": {"spec": {"containers": [{"name": "runtime", "image": "python:3.13"}]}},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "agents.x-k8s.io/v1beta1",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .unwrap()
}

fn context(fake: &FakeApi, clock: &TestClock) -> Arc<Context> {
    Arc::new(Context::new(fake.client(NS), Settings::default()).with_clock(clock.clock()))
}

async fn reconcile_sandbox(
    fake: &FakeApi,
    ctx: &Arc<Context>,
    name: &str,
) -> Result<Requeue, warden_kube::controller::Error> {
    let current = fake
        .get::<Sandbox>(Some(NS), name)
        .expect("the Sandbox exists");
    sandbox::reconcile(Arc::new(current), ctx.clone()).await
}

fn condition(sandbox: &Sandbox, kind: &str) -> Option<(String, String)> {
    sandbox
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn a_cold_sandbox_gets_its_pod_and_service_and_becomes_ready() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object("py", json!({"service": true})));

    reconcile_sandbox(&fake, &ctx, "py").await.unwrap();
    let pod = fake
        .get::<Pod>(Some(NS), "py")
        .expect("a pod named after the Sandbox");
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Sandbox", Some(true))
    );
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["agents.x-k8s.io/sandbox-name-hash"],
        warden_kube::crd::labels::name_hash("py")
    );
    let service = fake
        .get::<Service>(Some(NS), "py")
        .expect("a headless Service");
    assert_eq!(service.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let sb = fake.get::<Sandbox>(Some(NS), "py").unwrap();
    assert_eq!(condition(&sb, "Ready").unwrap().0, "False");

    // The kubelet runs the pod; the next reconcile reports it.
    assert!(fake.set_pod_ready(NS, "py"));
    reconcile_sandbox(&fake, &ctx, "py").await.unwrap();
    let sb = fake.get::<Sandbox>(Some(NS), "py").unwrap();
    assert_eq!(
        condition(&sb, "Ready").unwrap(),
        ("True".to_string(), "DependenciesReady".to_string())
    );
    let status = sb.status.unwrap();
    assert_eq!(status.service_fqdn, "py.team.svc.cluster.local");
    assert_eq!(status.pod_ips.len(), 1);

    // Nothing changes on a third pass: no writes at all.
    fake.clear_requests();
    reconcile_sandbox(&fake, &ctx, "py").await.unwrap();
    assert!(
        fake.requests().iter().all(|r| r.method == Method::GET),
        "{:?}",
        fake.requests()
    );
    assert_eq!(ctx.metrics.reconcile_count("Sandbox", "ok"), 3);
}

#[tokio::test]
async fn suspend_deletes_the_pod_and_resume_makes_it_again() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object("s", json!({})));
    reconcile_sandbox(&fake, &ctx, "s").await.unwrap();
    fake.set_pod_ready(NS, "s");
    reconcile_sandbox(&fake, &ctx, "s").await.unwrap();

    fake.modify::<Sandbox>(Some(NS), "s", |sb| {
        sb["spec"]["operatingMode"] = json!("Suspended")
    });
    reconcile_sandbox(&fake, &ctx, "s").await.unwrap();
    assert!(
        fake.get::<Pod>(Some(NS), "s").is_none(),
        "suspend deletes the pod"
    );
    reconcile_sandbox(&fake, &ctx, "s").await.unwrap();
    let sb = fake.get::<Sandbox>(Some(NS), "s").unwrap();
    assert_eq!(condition(&sb, "Suspended").unwrap().0, "True");
    assert_eq!(condition(&sb, "Ready").unwrap().1, "SandboxSuspended");

    fake.modify::<Sandbox>(Some(NS), "s", |sb| {
        sb["spec"]["operatingMode"] = json!("Running")
    });
    reconcile_sandbox(&fake, &ctx, "s").await.unwrap();
    assert!(
        fake.get::<Pod>(Some(NS), "s").is_some(),
        "resume makes the pod again"
    );
}

#[tokio::test]
async fn expiry_under_delete_removes_the_sandbox() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object(
        "d",
        json!({"service": true, "shutdownTime": clock.rfc3339(60), "shutdownPolicy": "Delete"}),
    ));
    let requeue = reconcile_sandbox(&fake, &ctx, "d").await.unwrap();
    assert_ne!(
        requeue,
        Requeue::await_change(),
        "requeued for the shutdown time"
    );
    assert!(fake.get::<Pod>(Some(NS), "d").is_some());

    clock.advance(61);
    for _ in 0..3 {
        if fake.get::<Sandbox>(Some(NS), "d").is_none() {
            break;
        }
        reconcile_sandbox(&fake, &ctx, "d").await.unwrap();
    }
    assert!(
        fake.get::<Sandbox>(Some(NS), "d").is_none(),
        "Delete removes the Sandbox"
    );
    assert!(fake.get::<Pod>(Some(NS), "d").is_none());
    assert!(fake.get::<Service>(Some(NS), "d").is_none());
}

#[tokio::test]
async fn expiry_under_retain_keeps_the_sandbox_with_its_conditions() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object(
        "r",
        json!({"service": true, "shutdownTime": clock.rfc3339(-1)}),
    ));
    for _ in 0..3 {
        reconcile_sandbox(&fake, &ctx, "r").await.unwrap();
    }
    let sb = fake
        .get::<Sandbox>(Some(NS), "r")
        .expect("Retain keeps the Sandbox");
    assert_eq!(
        condition(&sb, "Ready").unwrap(),
        ("False".to_string(), "SandboxExpired".to_string())
    );
    assert!(fake.get::<Pod>(Some(NS), "r").is_none());
    assert!(fake.get::<Service>(Some(NS), "r").is_none());
    let status = sb.status.unwrap();
    assert!(status.pod_ips.is_empty() && status.service_fqdn.is_empty());
}

#[tokio::test]
async fn a_conflict_is_counted_and_the_retry_converges() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object("c", json!({})));
    fake.fail(Fault::conflict(Method::PUT, "/sandboxes/c/status", 1));
    let err = reconcile_sandbox(&fake, &ctx, "c").await.unwrap_err();
    assert_eq!(err.reason(), "conflict");
    assert_eq!(ctx.metrics.error_count("Sandbox", "conflict"), 1);
    assert!(err.is_transient());
    // Backoff grows per object, and resets after a success.
    let sb = Arc::new(fake.get::<Sandbox>(Some(NS), "c").unwrap());
    let first = sandbox::error_policy(sb.clone(), &err, ctx.clone());
    let second = sandbox::error_policy(sb.clone(), &err, ctx.clone());
    assert_ne!(first, second, "the second retry waits longer");

    reconcile_sandbox(&fake, &ctx, "c").await.unwrap();
    assert_eq!(fake.counts()["pods"], 1, "the pod made once, not twice");
    assert!(fake.get::<Sandbox>(Some(NS), "c").unwrap().status.is_some());
}

#[tokio::test]
async fn an_unavailable_api_server_fails_the_reconcile_and_deletes_nothing() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object("u", json!({"service": true})));
    reconcile_sandbox(&fake, &ctx, "u").await.unwrap();
    fake.fail(Fault::unavailable("/pods", 3));
    let err = reconcile_sandbox(&fake, &ctx, "u").await.unwrap_err();
    assert_eq!(err.reason(), "unavailable");
    assert!(fake.get::<Pod>(Some(NS), "u").is_some());
    assert!(fake.get::<Service>(Some(NS), "u").is_some());
    assert!(
        fake.requests().iter().all(|r| r.method != Method::DELETE),
        "nothing deleted while the server is failing"
    );
}

#[tokio::test]
async fn a_pod_the_sandbox_does_not_control_is_left_alone() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    let foreign: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "f", "namespace": NS, "labels": {"app": "someone-else"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }))
    .unwrap();
    fake.insert(&foreign);
    fake.insert(&sandbox_object("f", json!({})));
    reconcile_sandbox(&fake, &ctx, "f").await.unwrap();
    let pod = fake.get::<Pod>(Some(NS), "f").unwrap();
    assert_eq!(pod.metadata.labels.unwrap()["app"], "someone-else");
    assert!(pod.metadata.owner_references.is_none(), "never adopted");
    let sb = fake.get::<Sandbox>(Some(NS), "f").unwrap();
    assert_eq!(condition(&sb, "Ready").unwrap().0, "False");
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn the_running_controller_reacts_to_watch_events() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    let readiness = Arc::new(Readiness::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        ctx.clone(),
        RunOptions {
            namespaces: vec![NS.into()],
            ..RunOptions::default()
        },
        readiness.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    fake.insert(&sandbox_object("w", json!({})));
    eventually("the pod", || fake.get::<Pod>(Some(NS), "w").is_some()).await;
    assert!(readiness.is_running());
    fake.set_pod_ready(NS, "w");
    eventually("Ready", || {
        fake.get::<Sandbox>(Some(NS), "w")
            .and_then(|sb| condition(&sb, "Ready"))
            .is_some_and(|(s, _)| s == "True")
    })
    .await;
    // A pod deleted behind the controller's back is made again (the pod watch).
    fake.remove::<Pod>(Some(NS), "w");
    eventually("the pod again", || fake.get::<Pod>(Some(NS), "w").is_some()).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(!readiness.is_running());
}

#[tokio::test]
async fn leader_election_holds_a_lease_and_reconciles_only_then() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    let readiness = Arc::new(Readiness::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        ctx.clone(),
        RunOptions {
            namespaces: vec![NS.into()],
            leader_election: Some(LeaderElection {
                lease_name: "warden-controller".into(),
                namespace: "warden-system".into(),
                identity: "replica-a".into(),
                duration_seconds: 5,
            }),
            concurrency: 0,
        },
        readiness.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    eventually("the lease held", || {
        fake.get::<Lease>(Some("warden-system"), "warden-controller")
            .and_then(|l| l.spec?.holder_identity)
            .is_some_and(|h| h == "replica-a")
    })
    .await;
    fake.insert(&sandbox_object("l", json!({})));
    eventually("the pod", || fake.get::<Pod>(Some(NS), "l").is_some()).await;
    assert!(ctx.metrics.encode().contains("warden_controller_leader 1"));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(ctx.metrics.encode().contains("warden_controller_leader 0"));
}

#[tokio::test]
async fn a_pod_spec_the_api_server_rejects_is_reported_as_invalid_configuration() {
    let fake = FakeApi::new();
    let clock = TestClock::new();
    let ctx = context(&fake, &clock);
    fake.insert(&sandbox_object("bad", json!({})));
    fake.fail(Fault {
        method: Some(Method::POST),
        path_contains: "/pods".into(),
        status: 422,
        reason: "Invalid".into(),
        times: 1,
    });
    let err = reconcile_sandbox(&fake, &ctx, "bad").await.unwrap_err();
    assert_eq!(err.reason(), "invalid");
    assert!(!err.is_transient(), "waits for the spec to change");
    let sb = fake.get::<Sandbox>(Some(NS), "bad").unwrap();
    assert_eq!(
        condition(&sb, "Ready").unwrap(),
        ("False".to_string(), "InvalidConfiguration".to_string())
    );
    assert!(fake.get::<Pod>(Some(NS), "bad").is_none());
    assert_eq!(ctx.metrics.error_count("Sandbox", "invalid"), 1);
}
