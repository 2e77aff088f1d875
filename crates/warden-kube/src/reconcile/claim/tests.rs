//! Unit tests of the claim reconciler: each step of the binding order, the policies on `env`,
//! volume claim templates and pod metadata, the status mirrored from the Sandbox, and the
//! lifecycle, plus round trips that apply a plan and check the next one is empty.

use k8s_openapi::api::core::v1::{Container, EnvFromSource, PersistentVolumeClaimSpec, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::*;
use crate::crd::{
    ClaimLifecycle, EmbeddedObjectMetadata, PodTemplate, SandboxClaimSpec, SandboxStatus,
    SandboxTemplateRef, SandboxTemplateSpec, SandboxWarmPoolSpec, WarmPoolRef,
};
use crate::reconcile::warm_pool;

const NAME: &str = "job-1";
const NS: &str = "team-a";
const UID: &str = "uid-claim";
const POOL: &str = "py-pool";
const POOL_UID: &str = "uid-pool";
const TEMPLATE: &str = "python";

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// 2026-01-01T00:00:00Z.
fn t0() -> Timestamp {
    at(1_767_225_600)
}

fn later(seconds: i64) -> Timestamp {
    at(t0().as_second() + seconds)
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn template_spec() -> SandboxTemplateSpec {
    SandboxTemplateSpec {
        pod_template: PodTemplate {
            spec: PodSpec {
                containers: vec![
                    Container {
                        name: "agent".into(),
                        image: Some("python:3".into()),
                        env: Some(vec![EnvVar {
                            name: "MODE".into(),
                            value: Some("batch".into()),
                            value_from: None,
                        }]),
                        ..Container::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        image: Some("busybox".into()),
                        ..Container::default()
                    },
                ],
                init_containers: Some(vec![Container {
                    name: "setup".into(),
                    image: Some("busybox".into()),
                    ..Container::default()
                }]),
                ..PodSpec::default()
            },
            metadata: PodMetadata {
                labels: map(&[("app", "agent")]),
                annotations: map(&[("team", "a")]),
            },
        },
        volume_claim_templates: Vec::new(),
        service: None,
        network_policy: None,
        network_policy_management: Default::default(),
        env_vars_injection_policy: EnvVarsInjectionPolicy::default(),
        volume_claim_templates_policy: VolumeClaimTemplatesPolicy::default(),
    }
}

fn template_with(spec: SandboxTemplateSpec) -> SandboxTemplate {
    let mut t = SandboxTemplate::new(TEMPLATE, spec);
    t.metadata.namespace = Some(NS.into());
    t.metadata.uid = Some("uid-template".into());
    t
}

fn template() -> SandboxTemplate {
    template_with(template_spec())
}

fn pool() -> SandboxWarmPool {
    let mut p = SandboxWarmPool::new(
        POOL,
        SandboxWarmPoolSpec {
            replicas: 2,
            sandbox_template_ref: SandboxTemplateRef {
                name: TEMPLATE.into(),
            },
            update_strategy: None,
        },
    );
    p.metadata.namespace = Some(NS.into());
    p.metadata.uid = Some(POOL_UID.into());
    p
}

fn claim_spec() -> SandboxClaimSpec {
    SandboxClaimSpec {
        warm_pool_ref: WarmPoolRef { name: POOL.into() },
        lifecycle: None,
        additional_pod_metadata: PodMetadata::default(),
        env: Vec::new(),
        volume_claim_templates: Vec::new(),
    }
}

fn claim_with(spec: SandboxClaimSpec) -> SandboxClaim {
    let mut c = SandboxClaim::new(NAME, spec);
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some(UID.into());
    c.metadata.generation = Some(3);
    c
}

fn claim() -> SandboxClaim {
    claim_with(claim_spec())
}

fn observed(sandboxes: Vec<Sandbox>) -> Observed {
    Observed {
        warm_pool: Some(pool()),
        template: Some(template()),
        sandboxes,
    }
}

fn run(c: &SandboxClaim, o: &Observed) -> Plan {
    plan(c, o, &Settings::default(), t0()).unwrap()
}

fn sandbox_condition(type_: &str, status: &str, why: &str, second: i64) -> Condition {
    condition(
        type_,
        status,
        why,
        format!("{type_} is {status}"),
        Some(1),
        at(second),
    )
}

fn with_ready(mut sb: Sandbox, ready: bool) -> Sandbox {
    let c = if ready {
        sandbox_condition(types::READY, TRUE, "DependenciesReady", 100)
    } else {
        sandbox_condition(types::READY, FALSE, "DependenciesNotReady", 100)
    };
    sb.status = Some(SandboxStatus {
        conditions: vec![c],
        pod_ips: vec!["10.0.0.7".into()],
        ..SandboxStatus::default()
    });
    sb
}

/// A member of the pool as the warm-pool reconciler makes it, as stored.
fn member(name: &str, ready: bool, created: i64) -> Sandbox {
    let mut sb = warm_pool::member(POOL, POOL_UID, NS, &template());
    sb.metadata.name = Some(name.into());
    sb.metadata.generate_name = None;
    sb.metadata.uid = Some(format!("uid-{name}"));
    sb.metadata.resource_version = Some(format!("rv-{name}"));
    sb.metadata.creation_timestamp = Some(Time(at(created)));
    with_ready(sb, ready)
}

fn claim_ref() -> OwnerReference {
    controller_reference::<SandboxClaim>(NAME, UID)
}

fn created(plan: &Plan) -> &Sandbox {
    plan.actions
        .iter()
        .find_map(|a| match a {
            Action::CreateSandbox(sb) => Some(&**sb),
            _ => None,
        })
        .expect("a CreateSandbox action")
}

/// The cold Sandbox [`plan`] creates for [`claim`], as stored (with a UID).
fn stored_cold(c: &SandboxClaim) -> Sandbox {
    let mut sb = created(&run(c, &observed(vec![]))).clone();
    sb.metadata.uid = Some("uid-cold".into());
    sb.metadata.resource_version = Some("1".into());
    sb
}

fn ready(status: &SandboxClaimStatus) -> (&str, &str, &str) {
    let c = conditions::find(&status.conditions, types::READY).expect("a Ready condition");
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn bound(mut c: SandboxClaim, name: &str) -> SandboxClaim {
    let mut status = c.status.take().unwrap_or_default();
    status.sandbox.name = name.into();
    c.status = Some(status);
    c
}

fn deleting(meta: &mut ObjectMeta) {
    meta.deletion_timestamp = Some(Time(at(1)));
}

fn apply_map(map: &mut BTreeMap<String, String>, diff: &BTreeMap<String, Option<String>>) {
    for (k, v) in diff {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
}

/// `patch` applied to `sb` as the API server applies a merge patch.
fn apply_patch(sb: &mut Sandbox, patch: &SandboxPatch) {
    if let Some(rv) = &patch.resource_version {
        assert_eq!(
            sb.metadata.resource_version.as_ref(),
            Some(rv),
            "precondition"
        );
    }
    let mut labels = sb.metadata.labels.take().unwrap_or_default();
    apply_map(&mut labels, &patch.labels);
    sb.metadata.labels = Some(labels);
    let mut annotations = sb.metadata.annotations.take().unwrap_or_default();
    apply_map(&mut annotations, &patch.annotations);
    sb.metadata.annotations = Some(annotations);
    if let Some(refs) = &patch.owner_references {
        sb.metadata.owner_references = Some(refs.clone());
    }
    apply_map(&mut sb.spec.pod_template.metadata.labels, &patch.pod_labels);
    apply_map(
        &mut sb.spec.pod_template.metadata.annotations,
        &patch.pod_annotations,
    );
    sb.metadata.resource_version = Some("after-patch".into());
}

fn env(name: &str, value: &str, container: &str) -> ClaimEnvVar {
    ClaimEnvVar {
        name: name.into(),
        value: value.into(),
        container_name: container.into(),
    }
}

fn vct(name: &str, size: &str) -> PersistentVolumeClaimTemplate {
    PersistentVolumeClaimTemplate {
        metadata: EmbeddedObjectMetadata {
            name: name.into(),
            ..EmbeddedObjectMetadata::default()
        },
        spec: PersistentVolumeClaimSpec {
            volume_name: Some(size.into()),
            ..PersistentVolumeClaimSpec::default()
        },
    }
}

// ---- cold start --------------------------------------------------------------------------

#[test]
fn an_empty_pool_creates_a_cold_sandbox_named_after_the_claim() {
    let plan = run(&claim(), &observed(vec![]));
    assert_eq!(plan.actions.len(), 1);
    let sb = created(&plan);
    assert_eq!(sb.metadata.name.as_deref(), Some(NAME));
    assert_eq!(sb.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(sb.metadata.owner_references, Some(vec![claim_ref()]));
    assert_eq!(
        sb.metadata.labels,
        Some(map(&[
            (CLAIM_UID, UID),
            (LAUNCH_TYPE, LAUNCH_TYPE_COLD),
            (SANDBOX_TEMPLATE_REF_HASH, &name_hash(TEMPLATE)),
        ]))
    );
    assert_eq!(
        sb.metadata.annotations,
        Some(map(&[(SANDBOX_TEMPLATE_REF_ANNOTATION, TEMPLATE)]))
    );
    assert_eq!(
        sb.spec.pod_template.metadata.labels,
        map(&[
            ("app", "agent"),
            (CLAIM_UID, UID),
            (SANDBOX_TEMPLATE_REF_HASH, &name_hash(TEMPLATE)),
        ])
    );
    assert_eq!(
        sb.spec.pod_template.metadata.annotations,
        map(&[("team", "a")])
    );
    let pod = &sb.spec.pod_template.spec;
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.dns_policy.as_deref(), Some("None"));
    assert_eq!(pod.containers, template_spec().pod_template.spec.containers);

    assert_eq!(
        ready(&plan.status),
        (
            FALSE,
            reason::SANDBOX_CREATE_PENDING,
            "Sandbox \"job-1\" is being created"
        )
    );
    assert_eq!(plan.status.sandbox.name, NAME);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn created_by_goes_to_the_sandbox_and_its_pod() {
    let mut c = claim();
    c.metadata.labels = Some(map(&[(CREATED_BY, "sdk")]));
    let plan = run(&c, &observed(vec![]));
    let sb = created(&plan);
    assert_eq!(label(&sb.metadata, CREATED_BY), Some("sdk"));
    assert_eq!(
        sb.spec
            .pod_template
            .metadata
            .labels
            .get(CREATED_BY)
            .map(String::as_str),
        Some("sdk")
    );
}

#[test]
fn a_created_sandbox_is_bound_on_the_next_pass_without_actions() {
    let c = claim();
    let first = run(&c, &observed(vec![]));
    let mut c2 = c.clone();
    c2.status = Some(first.status.clone());
    let sb = stored_cold(&claim());
    let plan = run(&c2, &observed(vec![sb.clone()]));
    assert_eq!(plan.actions, vec![], "nothing to change");
    assert_eq!(
        ready(&plan.status),
        (FALSE, reason::SANDBOX_NOT_READY, "Sandbox is not ready")
    );
    let plan = run(&c2, &observed(vec![with_ready(sb, true)]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(ready(&plan.status).0, TRUE);
    assert_eq!(plan.status.sandbox.pod_ips, vec!["10.0.0.7".to_owned()]);
}

// ---- adoption ----------------------------------------------------------------------------

#[test]
fn a_ready_member_is_adopted_never_an_unready_one() {
    // The claim's UID picks among the oldest Ready members; here it picks the older one.
    let plan = run(
        &claim(),
        &observed(vec![
            member("py-pool-unready", false, 100),
            member("py-pool-old", true, 200),
        ]),
    );
    let (name, patch) = match plan.actions.as_slice() {
        [Action::AdoptSandbox { name, patch }] => (name, patch),
        other => panic!("{other:?}"),
    };
    assert_eq!(name, "py-pool-old");
    assert_eq!(patch.resource_version.as_deref(), Some("rv-py-pool-old"));
    assert_eq!(patch.owner_references, Some(vec![claim_ref()]));
    assert_eq!(
        patch.labels,
        BTreeMap::from([
            (WARM_POOL_SANDBOX.to_owned(), None),
            (POD_TEMPLATE_HASH.to_owned(), None),
            (CLAIM_UID.to_owned(), Some(UID.to_owned())),
            (CREATED_BY.to_owned(), None),
        ]),
        "launch-type and the template hash are already right"
    );
    assert_eq!(
        patch.pod_labels,
        BTreeMap::from([
            (WARM_POOL_SANDBOX.to_owned(), None),
            (POD_TEMPLATE_HASH.to_owned(), None),
            (CLAIM_UID.to_owned(), Some(UID.to_owned())),
        ])
    );
    assert!(patch.pod_annotations.is_empty());
    assert_eq!(plan.status.sandbox.name, "py-pool-old");
    assert_eq!(plan.status.sandbox.pod_ips, vec!["10.0.0.7".to_owned()]);
    assert_eq!(
        ready(&plan.status).0,
        TRUE,
        "a Ready member is Ready at once"
    );
}

#[test]
fn concurrent_claims_spread_over_the_oldest_ready_members() {
    let members: Vec<Sandbox> = (0..8)
        .map(|i| member(&format!("py-pool-{i}"), true, 100 + i))
        .collect();
    let mut chosen = std::collections::BTreeSet::new();
    for i in 0..32 {
        let mut c = claim();
        c.metadata.uid = Some(format!("claim-uid-{i}"));
        let plan = run(&c, &observed(members.clone()));
        match plan.actions.as_slice() {
            [Action::AdoptSandbox { name, .. }] => {
                chosen.insert(name.clone());
            }
            other => panic!("{other:?}"),
        }
        // The same claim always picks the same member.
        let again = run(&c, &observed(members.clone()));
        assert_eq!(plan.actions, again.actions);
    }
    assert!(chosen.len() >= 4, "32 claims chose only {chosen:?}");
}

#[test]
fn an_adopted_member_needs_nothing_more() {
    let mut sb = member("py-pool-old", true, 200);
    let plan = run(&claim(), &observed(vec![sb.clone()]));
    let Action::AdoptSandbox { patch, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    apply_patch(&mut sb, patch);
    assert_eq!(label(&sb.metadata, LAUNCH_TYPE), Some(LAUNCH_TYPE_WARM));
    let mut c = claim();
    c.status = Some(plan.status.clone());
    let next = run(&c, &observed(vec![sb.clone()]));
    assert_eq!(next.actions, vec![]);
    assert_eq!(next.status, plan.status);
    // Without the status (its write was lost), the claim-uid label finds it.
    let next = run(&claim(), &observed(vec![sb]));
    assert_eq!(next.actions, vec![]);
    assert_eq!(next.status.sandbox.name, "py-pool-old");
}

#[test]
fn members_that_cannot_be_adopted_are_skipped() {
    let mut other_pool = member("a", true, 1);
    other_pool.metadata.owner_references = Some(vec![controller_reference::<SandboxWarmPool>(
        "other",
        "uid-other-pool",
    )]);
    let mut wrong_label = member("b", true, 1);
    wrong_label
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(WARM_POOL_SANDBOX.into(), name_hash("other"));
    let mut being_adopted = member("c", true, 1);
    being_adopted
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(CLAIM_UID.into(), "uid-other-claim".into());
    let mut going = member("d", true, 1);
    deleting(&mut going.metadata);
    let unready = member("e", false, 1);
    let mut no_status = member("f", true, 1);
    no_status.status = None;
    for sb in [
        other_pool,
        wrong_label,
        being_adopted,
        going,
        unready,
        no_status,
    ] {
        let name = sb.metadata.name.clone();
        let plan = run(&claim(), &observed(vec![sb]));
        assert!(
            matches!(plan.actions.as_slice(), [Action::CreateSandbox(_)]),
            "{name:?}: {:?}",
            plan.actions
        );
    }
}

#[test]
fn an_interrupted_adoption_is_completed() {
    let mut sb = member("py-pool-x", true, 1);
    sb.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(CLAIM_UID.into(), UID.into());
    // Even with an older ready member around, the one already labelled is finished first.
    let plan = run(&claim(), &observed(vec![member("py-pool-a", true, 0), sb]));
    match plan.actions.as_slice() {
        [Action::AdoptSandbox { name, patch }] => {
            assert_eq!(name, "py-pool-x");
            assert_eq!(patch.owner_references, Some(vec![claim_ref()]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.status.sandbox.name, "py-pool-x");
}

#[test]
fn adoption_needs_no_template_but_keeps_the_members_pod_metadata() {
    let mut o = observed(vec![member("py-pool-a", true, 0)]);
    o.template = None;
    let plan = run(&claim(), &o);
    match plan.actions.as_slice() {
        [Action::AdoptSandbox { patch, .. }] => {
            assert_eq!(
                patch.pod_labels,
                BTreeMap::from([(CLAIM_UID.to_owned(), Some(UID.to_owned()))]),
                "the pool's labels stay on the pod template without a template to follow"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn claims_with_env_or_volumes_skip_the_pool() {
    let allow = SandboxTemplateSpec {
        env_vars_injection_policy: EnvVarsInjectionPolicy::Allowed,
        volume_claim_templates_policy: VolumeClaimTemplatesPolicy::Allowed,
        ..template_spec()
    };
    for spec in [
        SandboxClaimSpec {
            env: vec![env("TOKEN", "x", "")],
            ..claim_spec()
        },
        SandboxClaimSpec {
            volume_claim_templates: vec![vct("data", "1")],
            ..claim_spec()
        },
    ] {
        let mut o = observed(vec![member("py-pool-a", true, 0)]);
        o.template = Some(template_with(allow.clone()));
        let plan = run(&claim_with(spec), &o);
        assert!(matches!(
            plan.actions.as_slice(),
            [Action::CreateSandbox(_)]
        ));
    }
}

#[test]
fn status_after_failure_reports_a_lost_adoption_race() {
    let adopt = Action::AdoptSandbox {
        name: "py-pool-a".into(),
        patch: SandboxPatch::default(),
    };
    let (status, retry) = status_after_failure(
        &SandboxClaimStatus::default(),
        Some(3),
        &adopt,
        &ActionFailure::Conflict("the object has been modified".into()),
        t0(),
    );
    assert_eq!(ready(&status).1, reason::ADOPTION_CONFLICT);
    assert_eq!(retry, Some(Duration::ZERO));

    let create = Action::CreateSandbox(Box::new(stored_cold(&claim())));
    for failure in [
        ActionFailure::Conflict("exists".into()),
        ActionFailure::Error("timeout".into()),
    ] {
        let (status, retry) = status_after_failure(
            &SandboxClaimStatus::default(),
            Some(3),
            &create,
            &failure,
            t0(),
        );
        let (s, why, message) = ready(&status);
        assert_eq!((s, why), (FALSE, reason::RECONCILER_ERROR));
        assert!(message.starts_with("Error seen: "), "{message}");
        assert_eq!(retry, None);
    }
}

// ---- binding order -----------------------------------------------------------------------

#[test]
fn the_sandbox_in_the_status_wins() {
    let mut sb = member("py-pool-z", true, 0);
    sb.metadata.owner_references = Some(vec![claim_ref()]);
    let c = bound(claim(), "py-pool-z");
    let plan = run(&c, &observed(vec![sb, member("py-pool-a", true, 0)]));
    assert!(
        plan.actions
            .iter()
            .all(|a| matches!(a, Action::PatchSandbox { name, .. } if name == "py-pool-z")),
        "{:?}",
        plan.actions
    );
    assert_eq!(plan.status.sandbox.name, "py-pool-z");
}

#[test]
fn a_vanished_sandbox_is_replaced() {
    let c = bound(claim(), "gone");
    let plan = run(&c, &observed(vec![member("py-pool-a", true, 0)]));
    assert!(matches!(
        plan.actions.as_slice(),
        [Action::AdoptSandbox { .. }]
    ));
    assert_eq!(plan.status.sandbox.name, "py-pool-a");
    let plan = run(&c, &observed(vec![]));
    assert!(matches!(
        plan.actions.as_slice(),
        [Action::CreateSandbox(_)]
    ));
    assert_eq!(plan.status.sandbox.name, NAME);
}

#[test]
fn a_sandbox_with_the_claims_name_it_does_not_control_is_an_error() {
    for owner in [
        None,
        Some(controller_reference::<SandboxClaim>(NAME, "uid-old-claim")),
    ] {
        let mut sb = stored_cold(&claim());
        sb.metadata.owner_references = owner.map(|o| vec![o]);
        let plan = run(&claim(), &observed(vec![sb, member("py-pool-a", true, 0)]));
        assert_eq!(plan.actions, vec![], "neither adopted nor replaced");
        let (s, why, message) = ready(&plan.status);
        assert_eq!((s, why), (FALSE, reason::RECONCILER_ERROR));
        assert!(message.contains("not controlled by claim"), "{message}");
        assert_eq!(plan.requeue_after, None);
    }
}

#[test]
fn an_unlabelled_own_sandbox_gets_its_launch_type() {
    let mut sb = stored_cold(&claim());
    sb.metadata.labels.as_mut().unwrap().remove(LAUNCH_TYPE);
    let plan = run(&claim(), &observed(vec![sb]));
    match plan.actions.as_slice() {
        [Action::PatchSandbox { name, patch }] => {
            assert_eq!(name, NAME);
            assert_eq!(
                patch.labels,
                BTreeMap::from([(LAUNCH_TYPE.to_owned(), Some(LAUNCH_TYPE_COLD.to_owned()))])
            );
            assert_eq!(patch.resource_version.as_deref(), Some("1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bound_sandbox_follows_the_template_and_claim_metadata() {
    let sb = stored_cold(&claim());
    let mut t = template_spec();
    t.pod_template.metadata.labels = map(&[("app", "agent-v2")]);
    t.pod_template.metadata.annotations = BTreeMap::new();
    let mut o = observed(vec![sb.clone()]);
    o.template = Some(template_with(t));
    let mut c = claim();
    c.metadata.labels = Some(map(&[(CREATED_BY, "sdk")]));
    let plan = run(&c, &o);
    let Action::PatchSandbox { patch, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(
        patch.pod_labels,
        BTreeMap::from([
            ("app".to_owned(), Some("agent-v2".to_owned())),
            (CREATED_BY.to_owned(), Some("sdk".to_owned())),
        ])
    );
    assert_eq!(
        patch.pod_annotations,
        BTreeMap::from([("team".to_owned(), None)])
    );
    assert_eq!(
        patch.labels,
        BTreeMap::from([(CREATED_BY.to_owned(), Some("sdk".to_owned()))])
    );
    let mut sb = sb;
    apply_patch(&mut sb, patch);
    o.sandboxes = vec![sb];
    assert_eq!(run(&c, &o).actions, vec![]);
}

#[test]
fn a_bound_sandbox_is_kept_while_the_pool_or_template_is_missing() {
    let sb = with_ready(stored_cold(&claim()), true);
    for (pool, template) in [(false, false), (true, false)] {
        let mut o = observed(vec![sb.clone()]);
        if !pool {
            o.warm_pool = None;
        }
        if !template {
            o.template = None;
        }
        let plan = run(&claim(), &o);
        assert_eq!(plan.actions, vec![]);
        assert_eq!(ready(&plan.status).0, TRUE);
        assert_eq!(plan.requeue_after, None);
    }
    // Unless the claim has pod metadata to apply, which needs the template.
    let c = bound(
        claim_with(SandboxClaimSpec {
            additional_pod_metadata: PodMetadata {
                labels: map(&[("example.com/user", "ann")]),
                ..PodMetadata::default()
            },
            ..claim_spec()
        }),
        NAME,
    );
    let mut o = observed(vec![sb]);
    o.template = None;
    let plan = run(&c, &o);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(ready(&plan.status).1, reason::RECONCILER_ERROR);
    assert_eq!(
        plan.status.sandbox.name, NAME,
        "the binding is kept on an error"
    );
}

#[test]
fn a_terminating_bound_sandbox_is_not_patched() {
    let mut sb = stored_cold(&claim());
    sb.metadata.labels.as_mut().unwrap().remove(LAUNCH_TYPE);
    deleting(&mut sb.metadata);
    let plan = run(&claim(), &observed(vec![sb]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.sandbox.name, NAME);
}

// ---- missing dependencies ----------------------------------------------------------------

#[test]
fn a_missing_pool_or_template_creates_nothing_and_retries() {
    let mut no_pool = observed(vec![]);
    no_pool.warm_pool = None;
    let plan = run(&claim(), &no_pool);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(
        ready(&plan.status),
        (
            FALSE,
            reason::WARM_POOL_NOT_FOUND,
            "SandboxWarmPool \"py-pool\" not found"
        )
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));

    let mut no_template = observed(vec![]);
    no_template.template = None;
    let plan = run(&claim(), &no_template);
    assert_eq!(plan.actions, vec![]);
    let (_, why, message) = ready(&plan.status);
    assert_eq!(why, reason::TEMPLATE_NOT_FOUND);
    assert!(message.contains("\"python\""), "{message}");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));

    let settings = Settings {
        dependency_retry: Duration::from_secs(5),
    };
    let quick = super::plan(&claim(), &no_template, &settings, t0()).unwrap();
    assert_eq!(quick.requeue_after, Some(Duration::from_secs(5)));
}

#[test]
fn the_retry_is_not_later_than_the_expiry() {
    let c = claim_with(SandboxClaimSpec {
        lifecycle: Some(ClaimLifecycle {
            shutdown_time: Some(Time(later(20))),
            ..ClaimLifecycle::default()
        }),
        ..claim_spec()
    });
    let mut o = observed(vec![]);
    o.warm_pool = None;
    assert_eq!(run(&c, &o).requeue_after, Some(Duration::from_secs(20)));
}

// ---- env ---------------------------------------------------------------------------------

fn env_of(sb: &Sandbox, container: &str) -> Vec<(String, String)> {
    let spec = &sb.spec.pod_template.spec;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == container)
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// `Ok((container, its env))` or `Err(reason)`.
type EnvOutcome = Result<(&'static str, Vec<(String, String)>), &'static str>;

#[test]
fn env_injection_follows_the_templates_policy() {
    use EnvVarsInjectionPolicy::{Allowed, Disallowed, Overrides};
    struct Case {
        what: &'static str,
        policy: EnvVarsInjectionPolicy,
        env: Vec<ClaimEnvVar>,
        env_from: bool,
        /// `Ok((container, its env))` or `Err(reason)`.
        want: EnvOutcome,
    }
    let cases = vec![
        Case {
            what: "disallowed",
            policy: Disallowed,
            env: vec![env("TOKEN", "x", "")],
            env_from: false,
            want: Err(reason::ENV_VARS_INJECTION_REJECTED),
        },
        Case {
            what: "allowed adds to the first container",
            policy: Allowed,
            env: vec![env("TOKEN", "x", "")],
            env_from: false,
            want: Ok(("agent", vec![pair("MODE", "batch"), pair("TOKEN", "x")])),
        },
        Case {
            what: "allowed cannot override",
            policy: Allowed,
            env: vec![env("MODE", "live", "")],
            env_from: false,
            want: Err(reason::ENV_VARS_INJECTION_REJECTED),
        },
        Case {
            what: "overrides replaces in place",
            policy: Overrides,
            env: vec![env("MODE", "live", ""), env("NEW", "1", "")],
            env_from: false,
            want: Ok(("agent", vec![pair("MODE", "live"), pair("NEW", "1")])),
        },
        Case {
            what: "a named main container",
            policy: Allowed,
            env: vec![env("A", "1", "sidecar")],
            env_from: false,
            want: Ok(("sidecar", vec![pair("A", "1")])),
        },
        Case {
            what: "a named init container",
            policy: Allowed,
            env: vec![env("A", "1", "setup")],
            env_from: false,
            want: Ok(("setup", vec![pair("A", "1")])),
        },
        Case {
            what: "an unknown container",
            policy: Overrides,
            env: vec![env("A", "1", "nope")],
            env_from: false,
            want: Err(reason::RECONCILER_ERROR),
        },
        Case {
            what: "allowed refuses a container with envFrom",
            policy: Allowed,
            env: vec![env("A", "1", "")],
            env_from: true,
            want: Err(reason::ENV_VARS_INJECTION_REJECTED),
        },
        Case {
            what: "overrides accepts a container with envFrom",
            policy: Overrides,
            env: vec![env("A", "1", "")],
            env_from: true,
            want: Ok(("agent", vec![pair("MODE", "batch"), pair("A", "1")])),
        },
    ];
    for c in cases {
        let mut t = template_spec();
        t.env_vars_injection_policy = c.policy;
        if c.env_from {
            t.pod_template.spec.containers[0].env_from = Some(vec![EnvFromSource::default()]);
        }
        let mut o = observed(vec![]);
        o.template = Some(template_with(t));
        let plan = run(
            &claim_with(SandboxClaimSpec {
                env: c.env,
                ..claim_spec()
            }),
            &o,
        );
        match c.want {
            Ok((container, want)) => {
                assert_eq!(env_of(created(&plan), container), want, "{}", c.what);
            }
            Err(why) => {
                assert_eq!(plan.actions, vec![], "{}", c.what);
                assert_eq!(ready(&plan.status).1, why, "{}", c.what);
                assert_eq!(plan.requeue_after, None, "{}", c.what);
            }
        }
    }
}

// ---- volume claim templates --------------------------------------------------------------

/// What is asked, the template's and the claim's templates, and the merged `(name, volume)`s or
/// an error.
type VctCase = (
    &'static str,
    VolumeClaimTemplatesPolicy,
    Vec<PersistentVolumeClaimTemplate>,
    Vec<PersistentVolumeClaimTemplate>,
    Result<Vec<(String, String)>, ()>,
);

#[test]
fn volume_claim_templates_follow_the_templates_policy() {
    use VolumeClaimTemplatesPolicy::{Allowed, Disallowed, Overrides};
    let names = |sb: &Sandbox| -> Vec<(String, String)> {
        sb.spec
            .volume_claim_templates
            .iter()
            .map(|v| {
                (
                    v.metadata.name.clone(),
                    v.spec.volume_name.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let cases: Vec<VctCase> = vec![
        (
            "disallowed",
            Disallowed,
            vec![vct("ws", "t")],
            vec![vct("data", "c")],
            Err(()),
        ),
        (
            "allowed appends",
            Allowed,
            vec![vct("ws", "t")],
            vec![vct("data", "c")],
            Ok(vec![pair("ws", "t"), pair("data", "c")]),
        ),
        (
            "allowed cannot override",
            Allowed,
            vec![vct("ws", "t")],
            vec![vct("ws", "c")],
            Err(()),
        ),
        (
            "overrides replaces by name and appends",
            Overrides,
            vec![vct("ws", "t"), vct("cache", "t")],
            vec![vct("new", "c"), vct("ws", "c")],
            Ok(vec![pair("ws", "c"), pair("cache", "t"), pair("new", "c")]),
        ),
        (
            "duplicate names in the claim",
            Overrides,
            vec![],
            vec![vct("a", "1"), vct("a", "2")],
            Err(()),
        ),
        (
            "an empty name in the claim",
            Allowed,
            vec![],
            vec![vct("", "1")],
            Err(()),
        ),
        (
            "an invalid template",
            Allowed,
            vec![vct("", "t")],
            vec![vct("a", "1")],
            Err(()),
        ),
        (
            "an invalid template without claim volumes",
            Allowed,
            vec![vct("x", "1"), vct("x", "2")],
            vec![],
            Err(()),
        ),
        (
            "the template's alone",
            Disallowed,
            vec![vct("ws", "t")],
            vec![],
            Ok(vec![pair("ws", "t")]),
        ),
    ];
    for (what, policy, template_vcts, claim_vcts, want) in cases {
        let mut t = template_spec();
        t.volume_claim_templates_policy = policy;
        t.volume_claim_templates = template_vcts;
        let mut o = observed(vec![]);
        o.template = Some(template_with(t));
        let plan = run(
            &claim_with(SandboxClaimSpec {
                volume_claim_templates: claim_vcts,
                ..claim_spec()
            }),
            &o,
        );
        match want {
            Ok(want) => assert_eq!(names(created(&plan)), want, "{what}"),
            Err(()) => {
                assert_eq!(plan.actions, vec![], "{what}");
                assert_eq!(
                    ready(&plan.status).1,
                    reason::VOLUME_CLAIM_TEMPLATES_ERROR,
                    "{what}"
                );
            }
        }
    }
}

// ---- additional pod metadata -------------------------------------------------------------

#[test]
fn pod_metadata_validation() {
    let cases: &[(bool, &str, &str, bool)] = &[
        // (is a label, key, value, accepted)
        (true, "example.com/user", "ann", true),
        (true, "team", "a", true),
        (true, "example.com/empty", "", true),
        (
            false,
            "example.com/note",
            "any value at all, with spaces!",
            true,
        ),
        (
            false,
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
            "false",
            true,
        ),
        (true, "kubernetes.io/arch", "amd64", false),
        (true, "node.kubernetes.io/x", "y", false),
        (false, "k8s.io/x", "y", false),
        (true, "agents.x-k8s.io/claim-uid", "forged", false),
        (false, "Agents.X-K8s.io/pod-name", "x", false),
        (true, "app", "sandbox-router", false),
        (true, "APP", "Sandbox-Router", false),
        (true, "tier", "sandbox-router", true),
        (true, "example.com/user", "-bad", false),
        (true, "example.com/user", &"x".repeat(64), false),
        (true, "example.com/user", "a b", false),
        (true, "bad key", "v", false),
        (false, "/x", "v", false),
        (false, "Example.com/x", "v", false),
        (false, "example.com/", "v", false),
    ];
    for (is_label, key, value, accepted) in cases {
        let mut metadata = PodMetadata::default();
        let target = if *is_label {
            &mut metadata.labels
        } else {
            &mut metadata.annotations
        };
        target.insert((*key).to_owned(), (*value).to_owned());
        let problems = validate_pod_metadata(&metadata);
        assert_eq!(
            problems.is_empty(),
            *accepted,
            "{key}={value}: {problems:?}"
        );
        if !accepted {
            assert!(problems[0].contains(key), "{problems:?}");
        }

        let plan = run(
            &claim_with(SandboxClaimSpec {
                additional_pod_metadata: metadata,
                ..claim_spec()
            }),
            &observed(vec![member("py-pool-a", true, 0)]),
        );
        if *accepted {
            assert_eq!(plan.actions.len(), 1, "{key}");
        } else {
            assert_eq!(plan.actions, vec![], "{key}");
            assert_eq!(ready(&plan.status).1, reason::INVALID_METADATA, "{key}");
        }
    }
}

#[test]
fn pod_metadata_is_added_and_may_not_change_the_templates() {
    let extra = PodMetadata {
        labels: map(&[("example.com/user", "ann")]),
        annotations: map(&[("example.com/note", "hi")]),
    };
    let c = claim_with(SandboxClaimSpec {
        additional_pod_metadata: extra.clone(),
        ..claim_spec()
    });
    let plan = run(&c, &observed(vec![]));
    let meta = &created(&plan).spec.pod_template.metadata;
    assert_eq!(
        meta.labels.get("example.com/user").map(String::as_str),
        Some("ann")
    );
    assert_eq!(
        meta.annotations.get("example.com/note").map(String::as_str),
        Some("hi")
    );

    let plan = run(&c, &observed(vec![member("py-pool-a", true, 0)]));
    let Action::AdoptSandbox { patch, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(
        patch.pod_labels.get("example.com/user"),
        Some(&Some("ann".to_owned()))
    );

    // The same value as the template's is fine; another is a conflict.
    for (value, ok) in [("agent", true), ("other", false)] {
        let c = claim_with(SandboxClaimSpec {
            additional_pod_metadata: PodMetadata {
                labels: map(&[("app", value)]),
                ..PodMetadata::default()
            },
            ..claim_spec()
        });
        for sandboxes in [vec![], vec![member("py-pool-a", true, 0)]] {
            let plan = run(&c, &observed(sandboxes));
            assert_eq!(!plan.actions.is_empty(), ok, "{value}");
            if !ok {
                let (_, why, message) = ready(&plan.status);
                assert_eq!(why, reason::RECONCILER_ERROR);
                assert!(message.contains("override conflict"), "{message}");
            }
        }
    }
}

#[test]
fn invalid_metadata_keeps_the_binding() {
    let c = bound(
        claim_with(SandboxClaimSpec {
            additional_pod_metadata: PodMetadata {
                labels: map(&[("kubernetes.io/x", "y")]),
                ..PodMetadata::default()
            },
            ..claim_spec()
        }),
        NAME,
    );
    let plan = run(&c, &observed(vec![stored_cold(&claim())]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(ready(&plan.status).1, reason::INVALID_METADATA);
    assert_eq!(plan.status.sandbox.name, NAME);
}

// ---- status mirrored from the Sandbox ----------------------------------------------------

#[test]
fn ready_and_finished_are_mirrored() {
    let base = stored_cold(&claim());
    type Case = (
        Vec<Condition>,
        (&'static str, &'static str),
        Option<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (vec![], (FALSE, reason::SANDBOX_NOT_READY), None),
        (
            vec![sandbox_condition(
                types::READY,
                TRUE,
                "DependenciesReady",
                50,
            )],
            (TRUE, "DependenciesReady"),
            None,
        ),
        (
            vec![sandbox_condition(
                types::READY,
                FALSE,
                "DependenciesNotReady",
                50,
            )],
            (FALSE, "DependenciesNotReady"),
            None,
        ),
        (
            vec![sandbox_condition(types::READY, FALSE, "SandboxExpired", 50)],
            (FALSE, reason::SANDBOX_EXPIRED),
            None,
        ),
        (
            vec![
                sandbox_condition(types::READY, FALSE, "PodSucceeded", 50),
                sandbox_condition(types::FINISHED, TRUE, "PodSucceeded", 50),
            ],
            (FALSE, "PodSucceeded"),
            Some((TRUE, "PodSucceeded")),
        ),
    ];
    for (conds, want_ready, want_finished) in cases {
        let mut sb = base.clone();
        sb.status = Some(SandboxStatus {
            conditions: conds.clone(),
            ..SandboxStatus::default()
        });
        let mut c = claim();
        c.status = Some(SandboxClaimStatus {
            conditions: vec![sandbox_condition(types::FINISHED, TRUE, "Stale", 1)],
            ..SandboxClaimStatus::default()
        });
        let plan = run(&c, &observed(vec![sb]));
        let (s, why, _) = ready(&plan.status);
        assert_eq!((s, why), want_ready, "{conds:?}");
        let finished = conditions::find(&plan.status.conditions, types::FINISHED)
            .map(|c| (c.status.as_str(), c.reason.as_str()));
        assert_eq!(finished, want_finished, "{conds:?}");
    }
}

#[test]
fn transition_times_hold_while_the_status_does() {
    let sb = with_ready(stored_cold(&claim()), false);
    let first = run(&claim(), &observed(vec![sb.clone()]));
    let mut c = claim();
    c.status = Some(first.status.clone());
    let again = plan(&c, &observed(vec![sb]), &Settings::default(), later(30)).unwrap();
    assert_eq!(again.status, first.status);
    assert_eq!(again.status_update(&c), None);
    assert!(first.status_update(&claim()).is_some());
}

// ---- lifecycle ---------------------------------------------------------------------------

fn lifecycle(shutdown: Option<i64>, ttl: Option<i32>, policy: ClaimShutdownPolicy) -> SandboxClaim {
    claim_with(SandboxClaimSpec {
        lifecycle: Some(ClaimLifecycle {
            shutdown_time: shutdown.map(|s| Time(later(s))),
            ttl_seconds_after_finished: ttl,
            shutdown_policy: policy,
        }),
        ..claim_spec()
    })
}

#[test]
fn expiry_is_the_earlier_of_shutdown_and_ttl_after_finished() {
    let finished = |status: &str, second: i64| {
        vec![condition(
            types::FINISHED,
            status,
            "PodSucceeded",
            "",
            None,
            later(second),
        )]
    };
    let retain = ClaimShutdownPolicy::Retain;
    let cases: Vec<(SandboxClaim, Vec<Condition>, Option<Timestamp>)> = vec![
        (claim(), finished(TRUE, 0), None),
        (lifecycle(None, None, retain), vec![], None),
        (lifecycle(Some(100), None, retain), vec![], Some(later(100))),
        (lifecycle(None, Some(30), retain), vec![], None),
        (lifecycle(None, Some(30), retain), finished(FALSE, 0), None),
        (
            lifecycle(None, Some(30), retain),
            finished(TRUE, 10),
            Some(later(40)),
        ),
        (
            lifecycle(None, Some(0), retain),
            finished(TRUE, 10),
            Some(later(10)),
        ),
        (
            lifecycle(Some(100), Some(30), retain),
            finished(TRUE, 10),
            Some(later(40)),
        ),
        (
            lifecycle(Some(20), Some(30), retain),
            finished(TRUE, 10),
            Some(later(20)),
        ),
        (
            lifecycle(Some(20), Some(-5), retain),
            finished(TRUE, 10),
            Some(later(10)),
        ),
    ];
    for (c, conds, want) in cases {
        assert_eq!(expiry(&c, &conds), want, "{:?} {conds:?}", c.spec.lifecycle);
    }
}

#[test]
fn a_live_claim_looks_again_at_its_shutdown_time() {
    let c = lifecycle(Some(100), None, ClaimShutdownPolicy::Delete);
    let plan = run(&c, &observed(vec![stored_cold(&claim())]));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(100)));
}

#[test]
fn expiry_first_marks_then_applies_the_policy() {
    let cases = [
        (
            ClaimShutdownPolicy::Delete,
            Action::DeleteClaim(Propagation::Background),
        ),
        (
            ClaimShutdownPolicy::DeleteForeground,
            Action::DeleteClaim(Propagation::Foreground),
        ),
        (
            ClaimShutdownPolicy::Retain,
            Action::DeleteSandbox {
                name: NAME.into(),
                uid: Some("uid-cold".into()),
            },
        ),
    ];
    for (policy, want) in cases {
        let c = bound(lifecycle(Some(-1), None, policy), NAME);
        let sb = with_ready(stored_cold(&claim()), true);
        let first = run(&c, &observed(vec![sb.clone()]));
        assert_eq!(first.actions, vec![], "{policy:?}: marked first");
        assert_eq!(
            ready(&first.status),
            (FALSE, reason::CLAIM_EXPIRED, CLEANUP_MESSAGE)
        );
        assert_eq!(first.requeue_after, Some(Duration::ZERO));

        let mut c2 = c.clone();
        c2.status = Some(first.status.clone());
        let second = run(&c2, &observed(vec![sb]));
        assert_eq!(second.actions, vec![want], "{policy:?}");
        assert_eq!(ready(&second.status).1, reason::CLAIM_EXPIRED);
        assert_eq!(second.requeue_after, None);
    }
}

#[test]
fn an_expired_retained_claim_cleans_up_only_its_own_sandbox() {
    let c = bound(lifecycle(Some(-1), None, ClaimShutdownPolicy::Retain), NAME);
    let mut marked = c.clone();
    marked.status = Some(run(&c, &observed(vec![])).status);

    // Gone: the binding is cleared.
    let plan = run(&marked, &observed(vec![]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.sandbox, Default::default());
    assert_eq!(ready(&plan.status).2, CLEANUP_MESSAGE);

    // Someone else's: left, and said so.
    let mut foreign = stored_cold(&claim());
    foreign.metadata.owner_references = None;
    let plan = run(&marked, &observed(vec![foreign]));
    assert_eq!(plan.actions, vec![]);
    assert!(ready(&plan.status).2.contains("deletion skipped"));
    assert_eq!(plan.status.sandbox, Default::default());

    // Already going: nothing more to do.
    let mut going = stored_cold(&claim());
    deleting(&mut going.metadata);
    let plan = run(&marked, &observed(vec![going]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.sandbox.name, NAME);

    // Found by the claim's name when the status names none.
    let mut unbound = marked.clone();
    unbound.status.as_mut().unwrap().sandbox.name.clear();
    let plan = run(&unbound, &observed(vec![stored_cold(&claim())]));
    assert!(matches!(
        plan.actions.as_slice(),
        [Action::DeleteSandbox { .. }]
    ));
}

#[test]
fn a_finished_sandbox_starts_the_ttl() {
    let c = lifecycle(None, Some(5), ClaimShutdownPolicy::Delete);
    let mut sb = stored_cold(&claim());
    sb.status = Some(SandboxStatus {
        conditions: vec![
            condition(types::READY, FALSE, "PodSucceeded", "", Some(1), later(-2)),
            condition(
                types::FINISHED,
                TRUE,
                "PodSucceeded",
                "",
                Some(1),
                later(-2),
            ),
        ],
        ..SandboxStatus::default()
    });
    let plan = run(&c, &observed(vec![sb.clone()]));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(3)));
    assert_eq!(ready(&plan.status).1, "PodSucceeded");

    // Past the TTL in the same pass: marked at once.
    let plan = plan_at(&c, &observed(vec![sb]), later(10));
    assert_eq!(ready(&plan.status).1, reason::CLAIM_EXPIRED);
    assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    assert_eq!(
        conditions::find(&plan.status.conditions, types::FINISHED).map(|c| c.status.as_str()),
        Some(TRUE)
    );
}

fn plan_at(c: &SandboxClaim, o: &Observed, now: Timestamp) -> Plan {
    plan(c, o, &Settings::default(), now).unwrap()
}

// ---- edges -------------------------------------------------------------------------------

#[test]
fn a_claim_being_deleted_does_nothing() {
    let mut c = claim();
    deleting(&mut c.metadata);
    let plan = run(&c, &observed(vec![member("py-pool-a", true, 0)]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status, SandboxClaimStatus::default());
}

#[test]
fn missing_metadata_is_an_error() {
    for field in ["name", "namespace", "uid"] {
        let mut c = claim();
        match field {
            "name" => c.metadata.name = None,
            "namespace" => c.metadata.namespace = None,
            _ => c.metadata.uid = Some(String::new()),
        }
        let err = plan(&c, &observed(vec![]), &Settings::default(), t0()).unwrap_err();
        assert_eq!((err.kind, err.field), ("SandboxClaim", field));
    }
}

#[test]
fn plans_are_deterministic() {
    let o = observed(vec![
        member("b", true, 5),
        member("a", true, 5),
        member("c", false, 1),
    ]);
    let first = run(&claim(), &o);
    let mut reversed = o.clone();
    reversed.sandboxes.reverse();
    assert_eq!(run(&claim(), &reversed), first);
    match first.actions.as_slice() {
        [Action::AdoptSandbox { name, .. }] => assert_eq!(name, "a", "ties go by name"),
        other => panic!("{other:?}"),
    }
}
