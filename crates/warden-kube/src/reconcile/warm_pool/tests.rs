//! Unit tests of the warm-pool reconciler: membership, slow-start refill, excess and stuck
//! members, the update strategies, in-flight writes, status; and a fake cluster that applies
//! the plans to check that a pool fills up and then stays put.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};

use super::*;
use crate::crd::conditions::types;
use crate::crd::labels::CLAIM_UID;
use crate::crd::{
    PodTemplate, SandboxClaim, SandboxStatus, SandboxTemplateRef, SandboxWarmPoolSpec,
    UpdateStrategy,
};
use crate::reconcile::conditions::{TRUE, condition};

const POOL: &str = "py-pool";
const NS: &str = "team-a";
const UID: &str = "uid-pool";
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

fn template_spec(image: &str) -> SandboxTemplateSpec {
    SandboxTemplateSpec {
        pod_template: PodTemplate {
            spec: PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            },
            ..PodTemplate::default()
        },
        volume_claim_templates: Vec::new(),
        service: None,
        network_policy: None,
        network_policy_management: Default::default(),
        env_vars_injection_policy: Default::default(),
        volume_claim_templates_policy: Default::default(),
    }
}

fn template_with(image: &str) -> SandboxTemplate {
    let mut t = SandboxTemplate::new(TEMPLATE, template_spec(image));
    t.metadata.namespace = Some(NS.into());
    t
}

fn template() -> SandboxTemplate {
    template_with("python:3.12")
}

fn pool_with(replicas: i32, strategy: Option<UpdateStrategyType>) -> SandboxWarmPool {
    let mut p = SandboxWarmPool::new(
        POOL,
        SandboxWarmPoolSpec {
            replicas,
            sandbox_template_ref: SandboxTemplateRef {
                name: TEMPLATE.into(),
            },
            update_strategy: strategy.map(|strategy_type| UpdateStrategy { strategy_type }),
        },
    );
    p.metadata.namespace = Some(NS.into());
    p.metadata.uid = Some(UID.into());
    p.metadata.generation = Some(4);
    p
}

fn pool(replicas: i32) -> SandboxWarmPool {
    pool_with(replicas, None)
}

fn ready_condition(status: &str) -> Condition {
    condition(types::READY, status, "R", "", Some(1), t0())
}

/// A member made from `t`, created `age` seconds before [`t0`], Ready or not.
fn member_of(t: &SandboxTemplate, name: &str, ready: bool, age: i64) -> Sandbox {
    let mut sb = member(POOL, UID, NS, t);
    sb.metadata.name = Some(name.into());
    sb.metadata.generate_name = None;
    sb.metadata.uid = Some(format!("uid-{name}"));
    sb.metadata.resource_version = Some(format!("rv-{name}"));
    sb.metadata.creation_timestamp = Some(Time(later(-age)));
    sb.status = Some(SandboxStatus {
        conditions: vec![ready_condition(if ready { TRUE } else { "False" })],
        ..SandboxStatus::default()
    });
    sb
}

fn fresh(name: &str, ready: bool, age: i64) -> Sandbox {
    member_of(&template(), name, ready, age)
}

fn observed(sandboxes: Vec<Sandbox>) -> Observed {
    Observed {
        template: Some(template()),
        sandboxes,
        in_flight: InFlight::default(),
    }
}

fn run(p: &SandboxWarmPool, o: &Observed) -> Plan {
    plan(p, o, &Settings::default(), t0()).unwrap()
}

fn creations(plan: &Plan) -> Option<(&Sandbox, &[u32])> {
    plan.actions.iter().find_map(|a| match a {
        Action::CreateSandboxes { sandbox, batches } => Some((&**sandbox, batches.as_slice())),
        _ => None,
    })
}

fn deletions(plan: &Plan) -> Vec<(&str, DeleteReason)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteSandbox { name, reason, .. } => Some((name.as_str(), *reason)),
            _ => None,
        })
        .collect()
}

fn deleting(meta: &mut ObjectMeta) {
    meta.deletion_timestamp = Some(Time(at(1)));
}

#[test]
fn slow_start_batches_double_up_to_the_count() {
    let cases: &[(u32, &[u32])] = &[
        (0, &[]),
        (1, &[1]),
        (2, &[1, 1]),
        (3, &[1, 2]),
        (4, &[1, 2, 1]),
        (7, &[1, 2, 4]),
        (10, &[1, 2, 4, 3]),
        (300, &[1, 2, 4, 8, 16, 32, 64, 128, 45]),
    ];
    for (count, want) in cases {
        let got = slow_start_batches(*count);
        assert_eq!(got, *want, "{count}");
        assert_eq!(got.iter().sum::<u32>(), *count);
    }
}

#[test]
fn an_empty_pool_is_filled_from_the_template() {
    let plan = run(&pool(3), &observed(vec![]));
    let (sb, batches) = creations(&plan).expect("creations");
    assert_eq!(batches, [1, 2]);
    assert_eq!(plan.actions.len(), 1);
    let meta = &sb.metadata;
    assert_eq!(meta.generate_name.as_deref(), Some("py-pool-"));
    assert_eq!(meta.name, None);
    assert_eq!(meta.namespace.as_deref(), Some(NS));
    let labels = meta.labels.clone().unwrap();
    let want: BTreeMap<String, String> = [
        (WARM_POOL_SANDBOX, name_hash(POOL)),
        (SANDBOX_TEMPLATE_REF_HASH, name_hash(TEMPLATE)),
        (LAUNCH_TYPE, LAUNCH_TYPE_WARM.to_owned()),
        (POD_TEMPLATE_HASH, template_hash(&template().spec)),
        (CREATED_BY, CREATED_BY_CONTROLLER.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(labels, want);
    assert_eq!(
        meta.annotations.clone().unwrap(),
        BTreeMap::from([(
            SANDBOX_TEMPLATE_REF_ANNOTATION.to_owned(),
            TEMPLATE.to_owned()
        )])
    );
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("SandboxWarmPool", POOL, UID, Some(true))
    );
    let pod_labels = &sb.spec.pod_template.metadata.labels;
    for key in [
        WARM_POOL_SANDBOX,
        SANDBOX_TEMPLATE_REF_HASH,
        POD_TEMPLATE_HASH,
    ] {
        assert_eq!(pod_labels.get(key), labels.get(key), "{key}");
    }
    let pod = &sb.spec.pod_template.spec;
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "secure defaults"
    );
    assert_eq!(pod.dns_policy.as_deref(), Some("None"));

    assert_eq!(
        plan.status,
        SandboxWarmPoolStatus {
            replicas: 0,
            ready_replicas: 0,
            selector: format!("agents.x-k8s.io/warm-pool-sandbox={}", name_hash(POOL)),
            observed_generation: 4,
        }
    );
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn only_the_deficit_is_created() {
    let cases = [
        (5, 0, vec![1, 2, 2]),
        (5, 2, vec![1, 2]),
        (5, 4, vec![1]),
        (5, 5, vec![]),
        (1, 0, vec![1]),
        (0, 0, vec![]),
    ];
    for (replicas, have, want) in cases {
        let members = (0..have)
            .map(|i| fresh(&format!("m{i}"), true, 10))
            .collect();
        let plan = run(&pool(replicas), &observed(members));
        let got = creations(&plan)
            .map(|(_, b)| b.to_vec())
            .unwrap_or_default();
        assert_eq!(got, want, "{replicas} wanted, {have} there");
        assert_eq!(plan.status.replicas, have);
        assert_eq!(plan.status.ready_replicas, have);
    }
}

#[test]
fn creations_per_pass_are_capped() {
    let settings = Settings {
        max_batch: 10,
        ..Settings::default()
    };
    let plan = plan(&pool(100), &observed(vec![]), &settings, t0()).unwrap();
    assert_eq!(creations(&plan).unwrap().1, [1, 2, 4, 3]);
}

#[test]
fn terminating_members_hold_their_place() {
    let mut going = fresh("going", true, 10);
    deleting(&mut going.metadata);
    let plan = run(&pool(2), &observed(vec![fresh("a", true, 10), going]));
    assert_eq!(creations(&plan), None, "the deletion has not finished");
    assert_eq!(plan.status.replicas, 1, "not an active member");
}

#[test]
fn writes_in_flight_hold_creations_and_excess_deletions() {
    let cases = [
        InFlight {
            creates: 2,
            deletes: Default::default(),
        },
        InFlight {
            creates: 0,
            deletes: ["uid-gone".to_owned()].into(),
        },
    ];
    for in_flight in cases {
        let mut o = observed(vec![]);
        o.in_flight = in_flight.clone();
        let plan = run(&pool(3), &o);
        assert_eq!(plan.actions, vec![], "{in_flight:?}");
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));

        let mut o = observed((0..3).map(|i| fresh(&format!("m{i}"), true, 10)).collect());
        o.in_flight = in_flight.clone();
        let plan = run(&pool(1), &o);
        assert_eq!(deletions(&plan), vec![], "{in_flight:?}");
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));
    }
}

#[test]
fn a_member_being_deleted_by_us_counts_as_terminating() {
    let mut o = observed(vec![fresh("a", true, 10), fresh("b", true, 10)]);
    o.in_flight.deletes.insert("uid-b".into());
    let plan = run(&pool(2), &o);
    assert_eq!(plan.status.replicas, 1);
    assert_eq!(
        plan.actions,
        vec![],
        "no replacement until the deletion shows"
    );
}

#[test]
fn excess_goes_unready_first_then_newest() {
    let members = vec![
        fresh("old-ready", true, 300),
        fresh("new-ready", true, 10),
        fresh("old-unready", false, 200),
        fresh("new-unready", false, 20),
        fresh("mid-ready", true, 100),
    ];
    let cases = [
        (4, vec!["new-unready"]),
        (3, vec!["new-unready", "old-unready"]),
        (2, vec!["new-unready", "old-unready", "new-ready"]),
        (
            0,
            vec![
                "new-unready",
                "old-unready",
                "new-ready",
                "mid-ready",
                "old-ready",
            ],
        ),
    ];
    for (replicas, want) in cases {
        let plan = run(&pool(replicas), &observed(members.clone()));
        let got: Vec<&str> = deletions(&plan).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, want, "replicas {replicas}");
        assert!(
            deletions(&plan)
                .iter()
                .all(|(_, r)| *r == DeleteReason::Excess)
        );
        assert_eq!(plan.status.replicas, 5);
        assert_eq!(plan.status.ready_replicas, 3);
    }
    let plan = run(&pool(4), &observed(members));
    match &plan.actions[0] {
        Action::DeleteSandbox { uid, .. } => assert_eq!(uid.as_deref(), Some("uid-new-unready")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn members_not_ready_in_time_are_replaced() {
    let plan = run(
        &pool(3),
        &observed(vec![
            fresh("ok", true, 1000),
            fresh("young", false, 240),
            fresh("stuck", false, 301),
        ]),
    );
    assert_eq!(deletions(&plan), vec![("stuck", DeleteReason::Stuck)]);
    assert_eq!(
        creations(&plan),
        None,
        "the replacement comes once the deletion shows"
    );
    assert_eq!(plan.status.replicas, 2);
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(61)),
        "just after the young member's deadline"
    );
}

#[test]
fn exactly_at_the_deadline_is_still_in_time() {
    let plan = run(&pool(1), &observed(vec![fresh("m", false, 300)]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(1)));
}

#[test]
fn unschedulable_members_are_kept_and_reported() {
    let mut sb = fresh("pending", false, 600);
    sb.status.as_mut().unwrap().conditions.push(condition(
        types::POD_SCHEDULED,
        "False",
        "Unschedulable",
        "0/3 nodes are available",
        Some(1),
        t0(),
    ));
    let plan = run(&pool(1), &observed(vec![sb]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.replicas, 1);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));
    assert_eq!(plan.problems.len(), 1);
    assert!(
        plan.problems[0].contains("unschedulable"),
        "{:?}",
        plan.problems
    );
}

#[test]
fn a_member_without_a_creation_time_is_never_stuck() {
    let mut sb = fresh("m", false, 0);
    sb.metadata.creation_timestamp = None;
    let plan = run(&pool(1), &observed(vec![sb]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn adopted_and_foreign_sandboxes_are_not_members() {
    let mut adopted = fresh("adopted", true, 10);
    adopted.metadata.owner_references =
        Some(vec![controller_reference::<SandboxClaim>("job", "uid-job")]);
    adopted
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(CLAIM_UID.into(), "uid-job".into());
    let mut other_pool = fresh("other", true, 10);
    other_pool
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(WARM_POOL_SANDBOX.into(), name_hash("other-pool"));
    let plan = run(&pool(1), &observed(vec![adopted, other_pool]));
    assert_eq!(plan.status.replicas, 0);
    assert_eq!(
        creations(&plan).unwrap().1,
        [1],
        "the adopted one is replaced"
    );
    assert_eq!(deletions(&plan), vec![]);
}

#[test]
fn orphans_are_adopted_unless_stale() {
    let mut orphan = fresh("orphan", true, 10);
    orphan.metadata.owner_references = None;
    orphan.metadata.labels.as_mut().unwrap().remove(LAUNCH_TYPE);
    let plan = run(&pool(1), &observed(vec![orphan.clone()]));
    match plan.actions.as_slice() {
        [Action::AdoptSandbox { name, patch }] => {
            assert_eq!(name, "orphan");
            assert_eq!(patch.resource_version.as_deref(), Some("rv-orphan"));
            assert_eq!(
                patch.labels,
                BTreeMap::from([(LAUNCH_TYPE.to_owned(), Some(LAUNCH_TYPE_WARM.to_owned()))])
            );
            let refs = patch.owner_references.as_ref().unwrap();
            assert_eq!((refs.len(), refs[0].uid.as_str()), (1, UID));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.status.replicas, 1);

    // An orphan's non-controller references are kept.
    let mut with_ref = orphan.clone();
    with_ref.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "x".into(),
        uid: "uid-x".into(),
        controller: None,
        block_owner_deletion: None,
    }]);
    let plan = run(&pool(1), &observed(vec![with_ref]));
    let Action::AdoptSandbox { patch, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(patch.owner_references.as_ref().unwrap().len(), 2);

    // A stale orphan is deleted whatever the strategy.
    let mut stale_orphan = member_of(&template_with("python:3.11"), "old", true, 10);
    stale_orphan.metadata.owner_references = None;
    let plan = run(&pool(1), &observed(vec![stale_orphan]));
    assert_eq!(deletions(&plan), vec![("old", DeleteReason::Stale)]);
    assert_eq!(plan.status.replicas, 0);
    assert_eq!(
        creations(&plan).unwrap().1,
        [1],
        "an orphan held no place in the pool"
    );
}

#[test]
fn a_member_without_its_launch_type_gets_it() {
    let mut sb = fresh("m", true, 10);
    sb.metadata.labels.as_mut().unwrap().remove(LAUNCH_TYPE);
    let plan = run(&pool(1), &observed(vec![sb]));
    assert_eq!(
        plan.actions,
        vec![Action::PatchSandbox {
            name: "m".into(),
            patch: SandboxPatch {
                resource_version: Some("rv-m".into()),
                labels: BTreeMap::from([(
                    LAUNCH_TYPE.to_owned(),
                    Some(LAUNCH_TYPE_WARM.to_owned())
                )]),
                ..SandboxPatch::default()
            },
        }]
    );
}

#[test]
fn update_strategies_treat_stale_members_differently() {
    let old = template_with("python:3.11");
    let members = || {
        vec![
            member_of(&old, "old-a", true, 100),
            member_of(&old, "old-b", true, 100),
            fresh("new", true, 10),
        ]
    };
    // OnReplenish (default and explicit): the old ones stay.
    for strategy in [None, Some(UpdateStrategyType::OnReplenish)] {
        let plan = run(&pool_with(3, strategy), &observed(members()));
        assert_eq!(plan.actions, vec![], "{strategy:?}");
        assert_eq!(plan.status.replicas, 3);
    }
    // Recreate: the old ones go, and are replaced on a later pass.
    let p = pool_with(3, Some(UpdateStrategyType::Recreate));
    let plan = run(&p, &observed(members()));
    assert_eq!(
        deletions(&plan),
        vec![
            ("old-a", DeleteReason::Stale),
            ("old-b", DeleteReason::Stale)
        ]
    );
    assert_eq!(creations(&plan), None);
    assert_eq!(plan.status.replicas, 1);
    let mut o = observed(vec![fresh("new", true, 10)]);
    o.template = Some(template());
    let plan = run(&p, &o);
    let (sb, batches) = creations(&plan).unwrap();
    assert_eq!(batches, [1, 1]);
    assert_eq!(
        sb.spec.pod_template.spec.containers[0].image.as_deref(),
        Some("python:3.12"),
        "new members use the new template"
    );
}

#[test]
fn staleness_looks_at_the_spec_when_the_hash_differs() {
    let t = template();
    // Same spec, another hash (made by another implementation): fresh.
    let mut foreign_hash = fresh("a", true, 1);
    foreign_hash
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(POD_TEMPLATE_HASH.into(), "0badc0de".into());
    assert!(!stale(&foreign_hash, &t));
    // Another template name: stale, whatever the spec.
    let mut renamed = fresh("b", true, 1);
    renamed
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(SANDBOX_TEMPLATE_REF_HASH.into(), name_hash("other"));
    assert!(stale(&renamed, &t));
    // Matching hash: fresh without comparing.
    assert!(!stale(&fresh("c", true, 1), &t));
    // Service, volumes, pod spec changes with a differing hash: stale.
    type Change = Box<dyn Fn(&mut SandboxTemplateSpec)>;
    let changes: Vec<Change> = vec![
        Box::new(|s| s.service = Some(true)),
        Box::new(|s| {
            s.volume_claim_templates = vec![crate::crd::PersistentVolumeClaimTemplate::default()]
        }),
        Box::new(|s| s.pod_template.spec.containers[0].image = Some("x".into())),
    ];
    for change in changes {
        let mut spec = template_spec("python:3.12");
        change(&mut spec);
        let mut changed = SandboxTemplate::new(TEMPLATE, spec);
        changed.metadata.namespace = Some(NS.into());
        assert!(stale(&fresh("d", true, 1), &changed));
    }
    // Pod metadata alone does not make a member stale (its hash differs, its spec does not).
    let mut spec = template_spec("python:3.12");
    spec.pod_template
        .metadata
        .labels
        .insert("x".into(), "y".into());
    let mut relabelled = SandboxTemplate::new(TEMPLATE, spec);
    relabelled.metadata.namespace = Some(NS.into());
    assert!(!stale(&fresh("e", true, 1), &relabelled));
}

#[test]
fn a_missing_template_creates_nothing_and_says_so() {
    let mut o = observed(vec![fresh("a", true, 10)]);
    o.template = None;
    let plan = run(&pool_with(3, Some(UpdateStrategyType::Recreate)), &o);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.replicas, 1);
    assert_eq!(plan.problems.len(), 1);
    assert!(
        plan.problems[0].contains("\"python\""),
        "{:?}",
        plan.problems
    );
    // Excess is still removed without a template.
    let mut o = observed(vec![fresh("a", true, 10), fresh("b", true, 5)]);
    o.template = None;
    let plan = run(&pool(1), &o);
    assert_eq!(deletions(&plan), vec![("b", DeleteReason::Excess)]);
}

#[test]
fn a_full_ready_pool_needs_nothing() {
    let members = vec![fresh("a", true, 10), fresh("b", true, 20)];
    let mut p = pool(2);
    let plan = run(&p, &observed(members.clone()));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.requeue_after, None);
    assert!(plan.problems.is_empty());
    assert_eq!(plan.status.ready_replicas, 2);
    assert!(plan.status_update(&p).is_some());
    p.status = Some(plan.status.clone());
    assert_eq!(run(&p, &observed(members)).status_update(&p), None);
}

#[test]
fn a_pool_being_deleted_does_nothing() {
    let mut p = pool(3);
    deleting(&mut p.metadata);
    let plan = run(&p, &observed(vec![]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status, SandboxWarmPoolStatus::default());
}

#[test]
fn missing_metadata_is_an_error() {
    for field in ["name", "namespace", "uid"] {
        let mut p = pool(1);
        match field {
            "name" => p.metadata.name = None,
            "namespace" => p.metadata.namespace = None,
            _ => p.metadata.uid = None,
        }
        let err = plan(&p, &observed(vec![]), &Settings::default(), t0()).unwrap_err();
        assert_eq!((err.kind, err.field), ("SandboxWarmPool", field));
    }
}

#[test]
fn negative_replicas_mean_none() {
    let plan = run(&pool(-1), &observed(vec![fresh("a", true, 1)]));
    assert_eq!(deletions(&plan), vec![("a", DeleteReason::Excess)]);
}

#[test]
fn template_hash_tracks_what_members_are_made_from() {
    let base = template_spec("python:3.12");
    let h = template_hash(&base);
    assert_eq!(h.len(), 8);
    assert_eq!(template_hash(&base.clone()), h, "deterministic");
    let mut other = base.clone();
    other.pod_template.spec.containers[0].image = Some("python:3.13".into());
    assert_ne!(template_hash(&other), h);
    let mut policy_only = base.clone();
    policy_only.network_policy = Some(Default::default());
    assert_eq!(
        template_hash(&policy_only),
        h,
        "the network policy is not in a member"
    );
}

#[test]
fn selector_names_the_pool_hash() {
    assert_eq!(
        selector("foobar"),
        "agents.x-k8s.io/warm-pool-sandbox=bf9cf968"
    );
}

/// A fake cluster: applies plans as the API server would, makes created members Ready
/// after a while, and counts passes.
struct World {
    pool: SandboxWarmPool,
    sandboxes: Vec<Sandbox>,
    next: u32,
}

impl World {
    fn step(&mut self, now: Timestamp) -> Plan {
        let o = Observed {
            template: Some(template()),
            sandboxes: self.sandboxes.clone(),
            in_flight: InFlight::default(),
        };
        let plan = plan(&self.pool, &o, &Settings::default(), now).unwrap();
        for action in plan.actions.clone() {
            match action {
                Action::CreateSandboxes { sandbox, batches } => {
                    for _ in 0..batches.iter().sum::<u32>() {
                        let mut sb = (*sandbox).clone();
                        self.next += 1;
                        let name = format!("py-pool-{}", self.next);
                        sb.metadata.name = Some(name.clone());
                        sb.metadata.uid = Some(format!("uid-{name}"));
                        sb.metadata.creation_timestamp = Some(Time(now));
                        self.sandboxes.push(sb);
                    }
                }
                Action::DeleteSandbox { name, .. } => self
                    .sandboxes
                    .retain(|s| s.metadata.name.as_deref() != Some(&name)),
                other => panic!("unexpected {other:?}"),
            }
        }
        self.pool.status = Some(plan.status.clone());
        plan
    }

    fn make_ready(&mut self) {
        for sb in &mut self.sandboxes {
            sb.status = Some(SandboxStatus {
                conditions: vec![ready_condition(TRUE)],
                ..SandboxStatus::default()
            });
        }
    }
}

#[test]
fn a_pool_fills_scales_and_settles() {
    let mut world = World {
        pool: pool(5),
        sandboxes: Vec::new(),
        next: 0,
    };
    let plan = world.step(t0());
    assert_eq!(creations(&plan).unwrap().1, [1, 2, 2]);
    assert_eq!(world.sandboxes.len(), 5);
    world.make_ready();
    let plan = world.step(later(10));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.ready_replicas, 5);

    // Two members are claimed: they leave the pool, which refills.
    for sb in world.sandboxes.iter_mut().take(2) {
        sb.metadata.owner_references =
            Some(vec![controller_reference::<SandboxClaim>("c", "uid-c")]);
    }
    let plan = world.step(later(20));
    assert_eq!(creations(&plan).unwrap().1, [1, 1]);
    world.make_ready();

    // Scale down to 1: four of the five members go, the claimed ones stay.
    world.pool.spec.replicas = 1;
    let plan = world.step(later(30));
    let gone: Vec<&str> = deletions(&plan).into_iter().map(|(n, _)| n).collect();
    assert_eq!(gone.len(), 4);
    assert!(
        !gone.contains(&"py-pool-1") && !gone.contains(&"py-pool-2"),
        "{gone:?}"
    );
    let plan = world.step(later(40));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.status.replicas, 1);
}
