//! Unit tests of [`plan`]: each branch on its own, and whole lifecycles run against a fake
//! cluster ([`World`]) that applies the plans as an API server would, to check that they
//! converge and then stay put.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaimSpec, PodIP, PodSpec, PodStatus,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::{EmbeddedObjectMetadata, PodMetadata, PodTemplate, SandboxSpec};

const NAME: &str = "sb";
const NS: &str = "team-a";
const UID: &str = "uid-sb";

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

fn spec() -> SandboxSpec {
    SandboxSpec {
        pod_template: PodTemplate {
            spec: PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: Some("busybox".into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            },
            metadata: PodMetadata {
                labels: map(&[("app", "agent")]),
                annotations: map(&[("team", "a")]),
            },
        },
        volume_claim_templates: Vec::new(),
        service: None,
        shutdown_time: None,
        shutdown_policy: ShutdownPolicy::default(),
        operating_mode: OperatingMode::default(),
    }
}

fn sandbox_with(spec: SandboxSpec) -> Sandbox {
    let mut sb = Sandbox::new(NAME, spec);
    sb.metadata.namespace = Some(NS.into());
    sb.metadata.uid = Some(UID.into());
    sb.metadata.generation = Some(1);
    sb
}

fn sandbox() -> Sandbox {
    sandbox_with(spec())
}

fn claim_template(name: &str) -> PersistentVolumeClaimTemplate {
    PersistentVolumeClaimTemplate {
        metadata: EmbeddedObjectMetadata {
            name: name.into(),
            labels: map(&[("tier", "data")]),
            annotations: map(&[("backup", "daily")]),
        },
        spec: PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        },
    }
}

fn run(sb: &Sandbox, observed: &Observed) -> Plan {
    plan(sb, observed, &Settings::default(), t0()).unwrap()
}

fn ready(status: &SandboxStatus) -> (&str, &str, &str) {
    cond(status, types::READY).expect("a Ready condition")
}

fn cond<'s>(status: &'s SandboxStatus, type_: &str) -> Option<(&'s str, &'s str, &'s str)> {
    conditions::find(&status.conditions, type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

fn created_pod(plan: &Plan) -> &Pod {
    plan.actions
        .iter()
        .find_map(|a| match a {
            Action::CreatePod(p) => Some(p),
            _ => None,
        })
        .expect("a CreatePod action")
}

fn controller_ref(uid: &str, kind: &str, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod the Sandbox controls, as made by [`plan`], with a UID and the given phase.
fn owned_pod(phase: &str) -> Pod {
    let mut pod = created_pod(&run(&sandbox(), &Observed::default())).clone();
    pod.metadata.uid = Some("uid-pod".into());
    pod.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..PodStatus::default()
    });
    pod
}

/// A pod that is Running and Ready on node-1 with two IPs, and scheduled.
fn ready_pod() -> Pod {
    let mut pod = owned_pod("Running");
    make_ready(&mut pod);
    pod
}

fn make_ready(pod: &mut Pod) {
    pod.spec.as_mut().unwrap().node_name = Some("node-1".into());
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.0.0.7".into()),
        pod_ips: Some(vec![
            PodIP {
                ip: "10.0.0.7".into(),
            },
            PodIP {
                ip: "fd00::7".into(),
            },
        ]),
        conditions: Some(vec![
            pod_condition_of("PodScheduled", "True", None, None),
            pod_condition_of("Ready", "True", None, None),
        ]),
        ..PodStatus::default()
    });
}

fn pod_condition_of(
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        ..PodCondition::default()
    }
}

fn foreign_pod(owner: Option<OwnerReference>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NS.into()),
            uid: Some("uid-foreign".into()),
            owner_references: owner.map(|o| vec![o]),
            labels: Some(map(&[(SANDBOX_NAME_HASH, &name_hash(NAME))])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    }
}

fn owned_service() -> Service {
    let sb = sandbox_with(SandboxSpec {
        service: Some(true),
        ..spec()
    });
    let plan = run(&sb, &Observed::default());
    let mut svc = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::CreateService(s) => Some((**s).clone()),
            _ => None,
        })
        .unwrap();
    svc.metadata.uid = Some("uid-svc".into());
    svc
}

fn deleting(meta: &mut ObjectMeta) {
    meta.deletion_timestamp = Some(Time(t0()));
}

/// A fake cluster: applies plans at once, as an API server with no other writers would.
struct World {
    sandbox: Sandbox,
    observed: Observed,
    next_uid: u32,
    /// Pods deleted stay, terminating, until [`World::finish_deletions`].
    slow_pod_deletion: bool,
}

impl World {
    fn new(sandbox: Sandbox) -> Self {
        Self {
            sandbox,
            observed: Observed::default(),
            next_uid: 0,
            slow_pod_deletion: false,
        }
    }

    fn uid(&mut self) -> Option<String> {
        self.next_uid += 1;
        Some(format!("uid-{}", self.next_uid))
    }

    /// One reconcile at `now`: plan, apply, write the status.
    fn step(&mut self, now: Timestamp) -> Plan {
        let plan = plan(&self.sandbox, &self.observed, &Settings::default(), now).unwrap();
        for action in plan.actions.clone() {
            self.apply(action, now);
        }
        if let Some(status) = plan.status_update(&self.sandbox) {
            self.sandbox.status = Some(status.clone());
        }
        plan
    }

    fn apply(&mut self, action: Action, now: Timestamp) {
        match action {
            Action::CreatePvc(pvc) => {
                let mut pvc = *pvc;
                pvc.metadata.uid = self.uid();
                self.observed.pvcs.push(pvc);
            }
            Action::CreatePod(pod) => {
                let mut pod = *pod;
                assert!(
                    !self
                        .observed
                        .pods
                        .iter()
                        .any(|p| p.metadata.name == pod.metadata.name),
                    "AlreadyExists: {:?}",
                    pod.metadata.name
                );
                pod.metadata.uid = self.uid();
                pod.status = Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..PodStatus::default()
                });
                self.observed.pods.push(pod);
            }
            Action::PatchPod { name, patch } => {
                let pod = self
                    .observed
                    .pods
                    .iter_mut()
                    .find(|p| p.metadata.name.as_deref() == Some(&name))
                    .expect("patched pod exists");
                apply_patch(&mut pod.metadata.labels, &patch.labels);
                apply_patch(&mut pod.metadata.annotations, &patch.annotations);
            }
            Action::DeletePod { name, uid } => {
                let i = self
                    .observed
                    .pods
                    .iter()
                    .position(|p| p.metadata.name.as_deref() == Some(&name))
                    .expect("deleted pod exists");
                assert_eq!(self.observed.pods[i].metadata.uid, uid, "precondition");
                if self.slow_pod_deletion {
                    self.observed.pods[i].metadata.deletion_timestamp = Some(Time(now));
                } else {
                    self.observed.pods.remove(i);
                }
            }
            Action::CreateService(svc) => {
                let mut svc = *svc;
                assert!(self.observed.service.is_none(), "AlreadyExists: service");
                svc.metadata.uid = self.uid();
                self.observed.service = Some(svc);
            }
            Action::PatchService { patch, .. } => {
                let svc = self.observed.service.as_mut().expect("patched service");
                apply_patch(&mut svc.metadata.labels, &patch.labels);
                let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
                apply_patch(&mut spec.selector, &patch.selector);
            }
            Action::DeleteService { uid, .. } => {
                let svc = self
                    .observed
                    .service
                    .take()
                    .expect("deleted service exists");
                assert_eq!(svc.metadata.uid, uid, "precondition");
            }
            Action::DeleteSandbox => {
                self.sandbox.metadata.deletion_timestamp = Some(Time(now));
            }
        }
    }

    fn finish_deletions(&mut self) {
        self.observed
            .pods
            .retain(|p| p.metadata.deletion_timestamp.is_none());
    }

    fn pod_mut(&mut self) -> &mut Pod {
        self.observed.pods.first_mut().expect("a pod")
    }

    fn status(&self) -> &SandboxStatus {
        self.sandbox.status.as_ref().expect("a status")
    }

    /// Steps until a plan has no actions (at most 5 times); returns the actions taken.
    fn settle(&mut self, now: Timestamp) -> Vec<Action> {
        let mut taken = Vec::new();
        for _ in 0..5 {
            let plan = self.step(now);
            if plan.actions.is_empty() && plan.requeue_after != Some(Duration::ZERO) {
                return taken;
            }
            taken.extend(plan.actions);
        }
        panic!("did not settle: {taken:#?}");
    }
}

fn apply_patch(
    target: &mut Option<BTreeMap<String, String>>,
    patch: &BTreeMap<String, Option<String>>,
) {
    let target = target.get_or_insert_with(BTreeMap::new);
    for (k, v) in patch {
        match v {
            Some(v) => target.insert(k.clone(), v.clone()),
            None => target.remove(k),
        };
    }
}

// ---- The pod ----------------------------------------------------------------------------

#[test]
fn a_new_sandbox_gets_a_pod_named_after_it_and_controlled_by_it() {
    let plan = run(&sandbox(), &Observed::default());
    assert_eq!(plan.actions.len(), 1, "{:#?}", plan.actions);
    let pod = created_pod(&plan);
    assert_eq!(pod.metadata.name.as_deref(), Some(NAME));
    assert_eq!(pod.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(
        pod.metadata.owner_references,
        Some(vec![OwnerReference {
            api_version: "agents.x-k8s.io/v1beta1".into(),
            kind: "Sandbox".into(),
            name: NAME.into(),
            uid: UID.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }])
    );
    assert_eq!(
        pod.metadata.labels,
        Some(map(&[
            ("app", "agent"),
            (SANDBOX_NAME_HASH, &name_hash(NAME))
        ]))
    );
    assert_eq!(pod.metadata.annotations, Some(map(&[("team", "a")])));
    assert_eq!(pod.spec.as_ref(), Some(&sandbox().spec.pod_template.spec));
    assert!(pod.status.is_none());
}

#[test]
fn a_template_cannot_set_reserved_labels_or_annotations_on_its_pod() {
    let mut spec = spec();
    spec.pod_template.metadata.labels = map(&[
        ("app", "agent"),
        // Would steal another sandbox's Service traffic.
        (SANDBOX_NAME_HASH, "deadbeef"),
        (CLAIM_UID, "forged"),
        ("extensions.agents.x-k8s.io/anything", "x"),
    ]);
    spec.pod_template.metadata.annotations =
        map(&[("team", "a"), ("agents.x-k8s.io/sandbox-template-ref", "x")]);
    let plan = run(&sandbox_with(spec), &Observed::default());
    let pod = created_pod(&plan);
    assert_eq!(
        pod.metadata.labels,
        Some(map(&[
            ("app", "agent"),
            (SANDBOX_NAME_HASH, &name_hash(NAME))
        ]))
    );
    assert_eq!(pod.metadata.annotations, Some(map(&[("team", "a")])));
}

#[test]
fn labels_of_a_claimed_or_pooled_sandbox_propagate_to_its_pod() {
    // (controller kind, sandbox labels, labels expected on the pod besides app and hash)
    let all = [
        (CLAIM_UID, "claim-1"),
        (WARM_POOL_SANDBOX, "pool"),
        (SANDBOX_TEMPLATE_REF_HASH, "abc"),
        (CREATED_BY, "sdk"),
    ];
    let cases = [
        (
            Some("SandboxClaim"),
            vec![
                (CLAIM_UID, "claim-1"),
                (SANDBOX_TEMPLATE_REF_HASH, "abc"),
                (CREATED_BY, "sdk"),
            ],
        ),
        (
            Some("SandboxWarmPool"),
            vec![
                (WARM_POOL_SANDBOX, "pool"),
                (SANDBOX_TEMPLATE_REF_HASH, "abc"),
                (CREATED_BY, "sdk"),
            ],
        ),
        (None, vec![(CREATED_BY, "sdk")]),
        (Some("Deployment"), vec![(CREATED_BY, "sdk")]),
    ];
    for (kind, want) in cases {
        let mut sb = sandbox();
        sb.metadata.labels = Some(map(&all));
        if let Some(kind) = kind {
            let group = if kind == "Deployment" {
                "apps/v1"
            } else {
                "extensions.agents.x-k8s.io/v1beta1"
            };
            sb.metadata.owner_references = Some(vec![OwnerReference {
                api_version: group.into(),
                ..controller_ref("uid-owner", kind, "owner")
            }]);
        }
        let plan = run(&sb, &Observed::default());
        let mut expected = map(&want);
        expected.insert("app".into(), "agent".into());
        expected.insert(SANDBOX_NAME_HASH.into(), name_hash(NAME));
        assert_eq!(
            created_pod(&plan).metadata.labels,
            Some(expected),
            "{kind:?}"
        );
    }
}

#[test]
fn an_existing_pod_gets_missing_labels_and_loses_stale_propagated_ones() {
    let mut pod = ready_pod();
    let labels = pod.metadata.labels.as_mut().unwrap();
    labels.remove(SANDBOX_NAME_HASH);
    labels.insert(WARM_POOL_SANDBOX.into(), "pool".into());
    labels.insert("kept".into(), "yes".into());
    let mut sb = sandbox();
    sb.spec
        .pod_template
        .metadata
        .labels
        .insert("app".into(), "agent-v2".into());
    sb.spec
        .pod_template
        .metadata
        .annotations
        .insert("new".into(), "1".into());
    let plan = run(
        &sb,
        &Observed {
            pods: vec![pod],
            ..Observed::default()
        },
    );
    assert_eq!(
        plan.actions,
        [Action::PatchPod {
            name: NAME.into(),
            patch: MergePatch {
                labels: BTreeMap::from([
                    ("app".into(), Some("agent-v2".into())),
                    (SANDBOX_NAME_HASH.into(), Some(name_hash(NAME))),
                    (WARM_POOL_SANDBOX.into(), None),
                ]),
                annotations: BTreeMap::from([("new".into(), Some("1".into()))]),
                selector: BTreeMap::new(),
            },
        }]
    );
}

#[test]
fn a_ready_pod_makes_the_sandbox_ready_and_fills_the_status() {
    let plan = run(
        &sandbox(),
        &Observed {
            pods: vec![ready_pod()],
            ..Observed::default()
        },
    );
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    let status = &plan.status;
    assert_eq!(
        ready(status),
        ("True", reason::DEPENDENCIES_READY, "Pod is Ready")
    );
    assert_eq!(
        status.selector,
        format!("agents.x-k8s.io/sandbox-name-hash={}", name_hash(NAME))
    );
    assert_eq!(status.pod_ips, ["10.0.0.7", "fd00::7"]);
    assert_eq!(status.node_name, "node-1");
    assert_eq!(status.service, "");
    assert_eq!(status.service_fqdn, "");
    assert_eq!(
        cond(status, types::SUSPENDED),
        Some(("False", reason::NOT_SUSPENDED, "Sandbox is not suspended"))
    );
    assert_eq!(
        cond(status, types::POD_SCHEDULED),
        Some(("True", POD_SCHEDULED_REASON, ""))
    );
    assert_eq!(cond(status, types::FINISHED), None);
    for c in &status.conditions {
        assert_eq!(c.observed_generation, Some(1), "{}", c.type_);
        assert_eq!(c.last_transition_time, Time(t0()), "{}", c.type_);
    }
}

#[test]
fn readiness_follows_the_pod() {
    fn with(phase: &str, ready: Option<&str>, ips: bool, deleting_: bool) -> Pod {
        let mut pod = owned_pod(phase);
        let status = pod.status.as_mut().unwrap();
        if let Some(r) = ready {
            status.conditions = Some(vec![pod_condition_of("Ready", r, None, None)]);
        }
        if ips {
            status.pod_ips = Some(vec![PodIP {
                ip: "10.0.0.7".into(),
            }]);
        }
        if deleting_ {
            deleting(&mut pod.metadata);
        }
        pod
    }
    let cases = [
        (
            with("Pending", None, false, false),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is Pending",
        ),
        (
            with("", None, false, false),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod has no phase yet",
        ),
        (
            with("Running", None, true, false),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is Running but not Ready",
        ),
        (
            with("Running", Some("False"), true, false),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is Running but not Ready",
        ),
        (
            with("Running", Some("True"), false, false),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is Ready but has no IP yet",
        ),
        (
            with("Running", Some("True"), true, false),
            "True",
            reason::DEPENDENCIES_READY,
            "Pod is Ready",
        ),
        (
            with("Running", Some("True"), true, true),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is terminating",
        ),
        (
            with("Succeeded", None, false, false),
            "False",
            reason::POD_SUCCEEDED,
            "Pod completed successfully",
        ),
        (
            with("Failed", None, false, false),
            "False",
            reason::POD_FAILED,
            "Pod failed",
        ),
        (
            with("Unknown", None, false, false),
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is Unknown",
        ),
    ];
    for (pod, want_status, want_reason, want_message) in cases {
        let phase = pod.status.as_ref().unwrap().phase.clone();
        let plan = run(
            &sandbox(),
            &Observed {
                pods: vec![pod],
                ..Observed::default()
            },
        );
        assert!(plan.actions.is_empty(), "{phase:?}: {:#?}", plan.actions);
        assert_eq!(
            ready(&plan.status),
            (want_status, want_reason, want_message),
            "{phase:?}"
        );
    }
}

#[test]
fn a_terminal_pod_finishes_the_sandbox_and_is_not_replaced() {
    let cases = [
        (
            "Succeeded",
            reason::POD_SUCCEEDED,
            None,
            "Pod completed successfully",
        ),
        (
            "Failed",
            reason::POD_FAILED,
            Some("OOMKilled"),
            "Pod failed: OOMKilled",
        ),
    ];
    for (phase, why, detail, message) in cases {
        let mut pod = owned_pod(phase);
        pod.status.as_mut().unwrap().reason = detail.map(Into::into);
        let plan = run(
            &sandbox(),
            &Observed {
                pods: vec![pod],
                ..Observed::default()
            },
        );
        assert!(plan.actions.is_empty(), "{phase}: {:#?}", plan.actions);
        assert_eq!(
            cond(&plan.status, types::FINISHED),
            Some(("True", why, message))
        );
        assert_eq!(ready(&plan.status), ("False", why, message));
    }
}

#[test]
fn pod_scheduled_is_copied_from_the_pod() {
    let cases = [
        (
            pod_condition_of(
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some("0/3 nodes"),
            ),
            ("False", "Unschedulable", "0/3 nodes"),
        ),
        (
            pod_condition_of("PodScheduled", "False", Some("SchedulingGated"), None),
            ("False", "SchedulingGated", ""),
        ),
        (
            pod_condition_of("PodScheduled", "True", None, None),
            ("True", POD_SCHEDULED_REASON, ""),
        ),
        (
            pod_condition_of("PodScheduled", "Unknown", None, Some("?")),
            ("Unknown", POD_SCHEDULING_UNKNOWN, "?"),
        ),
        (
            pod_condition_of("PodScheduled", "False", None, None),
            ("False", POD_SCHEDULING_UNKNOWN, ""),
        ),
    ];
    for (pod_condition, want) in cases {
        let mut pod = owned_pod("Pending");
        pod.status.as_mut().unwrap().conditions = Some(vec![pod_condition]);
        let plan = run(
            &sandbox(),
            &Observed {
                pods: vec![pod],
                ..Observed::default()
            },
        );
        assert_eq!(cond(&plan.status, types::POD_SCHEDULED), Some(want));
    }
}

#[test]
fn pod_scheduled_and_finished_go_when_the_pod_does() {
    let mut world = World::new(sandbox());
    world.step(t0());
    world.pod_mut().status = Some(PodStatus {
        phase: Some("Failed".into()),
        conditions: Some(vec![pod_condition_of("PodScheduled", "True", None, None)]),
        ..PodStatus::default()
    });
    world.step(later(1));
    assert!(cond(world.status(), types::FINISHED).is_some());
    assert!(cond(world.status(), types::POD_SCHEDULED).is_some());
    // Someone deletes the failed pod: the Sandbox makes a new one, unscheduled so far.
    world.observed.pods.clear();
    let plan = world.step(later(2));
    assert!(matches!(plan.actions[..], [Action::CreatePod(_)]));
    assert_eq!(cond(world.status(), types::FINISHED), None);
    assert_eq!(cond(world.status(), types::POD_SCHEDULED), None);
    assert_eq!(
        ready(world.status()),
        (
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is being created"
        )
    );
}

#[test]
fn a_pod_ip_without_pod_ips_is_reported() {
    let mut pod = ready_pod();
    pod.status.as_mut().unwrap().pod_ips = None;
    let plan = run(
        &sandbox(),
        &Observed {
            pods: vec![pod],
            ..Observed::default()
        },
    );
    assert_eq!(plan.status.pod_ips, ["10.0.0.7"]);
    assert_eq!(ready(&plan.status).0, "True");
}

// ---- Pods the Sandbox does not control ----------------------------------------------------

#[test]
fn a_pod_it_does_not_control_is_neither_adopted_nor_replaced() {
    let cases = [
        (None, "is not controlled by this Sandbox"),
        (
            Some(controller_ref("uid-rs", "ReplicaSet", "web")),
            "controlled by ReplicaSet \"web\"",
        ),
        (
            Some(OwnerReference {
                api_version: "agents.x-k8s.io/v1beta1".into(),
                ..controller_ref("uid-other-sandbox", "Sandbox", NAME)
            }),
            "uid-other-sandbox",
        ),
    ];
    for (owner, needle) in cases {
        let observed = Observed {
            pods: vec![foreign_pod(owner.clone())],
            ..Observed::default()
        };
        let plan = run(&sandbox(), &observed);
        assert!(plan.actions.is_empty(), "{owner:?}: {:#?}", plan.actions);
        let (status, why, message) = ready(&plan.status);
        assert_eq!(
            (status, why),
            ("False", reason::RECONCILER_ERROR),
            "{owner:?}"
        );
        assert!(
            message.contains("Pod \"sb\"") && message.contains(needle),
            "{message}"
        );
        assert!(plan.status.pod_ips.is_empty() && plan.status.node_name.is_empty());
        assert_eq!(cond(&plan.status, types::POD_SCHEDULED), None);
    }
}

#[test]
fn a_labelled_pod_it_does_not_control_is_ignored() {
    // Carries the name hash but has another name and no controller: not the Sandbox's.
    let mut stray = foreign_pod(None);
    stray.metadata.name = Some("stray".into());
    let plan = run(
        &sandbox(),
        &Observed {
            pods: vec![stray],
            ..Observed::default()
        },
    );
    assert!(matches!(plan.actions[..], [Action::CreatePod(_)]));
}

#[test]
fn several_controlled_pods_while_running_are_reported_not_resolved() {
    let mut second = ready_pod();
    second.metadata.name = Some("sb-old".into());
    second.metadata.uid = Some("uid-pod-2".into());
    let mut sb = sandbox_with(SandboxSpec {
        service: Some(true),
        ..spec()
    });
    sb.status = Some(SandboxStatus {
        service: NAME.into(),
        service_fqdn: "kept".into(),
        ..SandboxStatus::default()
    });
    let plan = run(
        &sb,
        &Observed {
            pods: vec![ready_pod(), second],
            ..Observed::default()
        },
    );
    // No pod made or deleted, and the Service is left as it is (none made here).
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    let (status, why, message) = ready(&plan.status);
    assert_eq!((status, why), ("False", reason::MULTIPLE_PODS));
    assert!(message.starts_with("2 pods"), "{message}");
    assert_eq!(plan.status.service_fqdn, "kept");
    assert!(plan.status.pod_ips.is_empty());
}

// ---- Volumes --------------------------------------------------------------------------------

#[test]
fn claim_templates_become_pvcs_mounted_in_the_pod() {
    let mut spec = spec();
    spec.volume_claim_templates = vec![claim_template("data"), claim_template("cache")];
    spec.pod_template.spec.volumes = Some(vec![
        Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        // Same name as a claim template: the claim wins, as in a StatefulSet.
        Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]);
    let plan = run(&sandbox_with(spec), &Observed::default());
    let pvcs: Vec<&PersistentVolumeClaim> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePvc(p) => Some(&**p),
            _ => None,
        })
        .collect();
    let names: Vec<_> = pvcs.iter().map(|p| p.metadata.name.as_deref()).collect();
    assert_eq!(names, [Some("data-sb"), Some("cache-sb")]);
    let data = pvcs[0];
    assert_eq!(data.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(
        data.metadata.labels,
        Some(map(&[
            ("tier", "data"),
            (SANDBOX_NAME_HASH, &name_hash(NAME))
        ]))
    );
    assert_eq!(data.metadata.annotations, Some(map(&[("backup", "daily")])));
    assert_eq!(data.spec, Some(claim_template("data").spec));
    let owner = &data.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));

    // PVCs before the pod that mounts them.
    assert!(matches!(plan.actions.last(), Some(Action::CreatePod(_))));
    let volumes = created_pod(&plan)
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap();
    let summary: Vec<(String, Option<String>)> = volumes
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("scratch".to_owned(), None),
            ("data".to_owned(), Some("data-sb".to_owned())),
            ("cache".to_owned(), Some("cache-sb".to_owned())),
        ]
    );
}

#[test]
fn existing_controlled_pvcs_are_kept() {
    let mut spec = spec();
    spec.volume_claim_templates = vec![claim_template("data")];
    let sb = sandbox_with(spec);
    let first = run(&sb, &Observed::default());
    let Action::CreatePvc(pvc) = &first.actions[0] else {
        panic!("{:#?}", first.actions)
    };
    let plan = run(
        &sb,
        &Observed {
            pvcs: vec![(**pvc).clone()],
            ..Observed::default()
        },
    );
    assert!(
        matches!(plan.actions[..], [Action::CreatePod(_)]),
        "{:#?}",
        plan.actions
    );
}

#[test]
fn a_pvc_it_does_not_control_blocks_the_pod() {
    let mut spec = spec();
    spec.volume_claim_templates = vec![claim_template("data"), claim_template("cache")];
    let foreign = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data-sb".into()),
            namespace: Some(NS.into()),
            owner_references: Some(vec![controller_ref("uid-x", "StatefulSet", "db")]),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    };
    let plan = run(
        &sandbox_with(spec),
        &Observed {
            pvcs: vec![foreign],
            ..Observed::default()
        },
    );
    // The other claim is still made; the pod, which would mount the foreign one, is not.
    assert_eq!(plan.actions.len(), 1, "{:#?}", plan.actions);
    assert!(
        matches!(&plan.actions[0], Action::CreatePvc(p) if p.metadata.name.as_deref() == Some("cache-sb"))
    );
    let (status, why, message) = ready(&plan.status);
    assert_eq!((status, why), ("False", reason::RECONCILER_ERROR));
    assert!(
        message.contains("PersistentVolumeClaim \"data-sb\""),
        "{message}"
    );
}

// ---- Invalid specs -------------------------------------------------------------------------

#[test]
fn an_invalid_spec_creates_nothing_and_says_why() {
    let no_containers = {
        let mut s = spec();
        s.pod_template.spec.containers.clear();
        s
    };
    let unnamed_claim = {
        let mut s = spec();
        s.volume_claim_templates = vec![claim_template("")];
        s
    };
    let duplicate_claim = {
        let mut s = spec();
        s.volume_claim_templates = vec![claim_template("data"), claim_template("data")];
        s
    };
    let long_claim = {
        let mut s = spec();
        s.volume_claim_templates = vec![claim_template(&"x".repeat(251))];
        s
    };
    let cases = [
        (no_containers, "spec.podTemplate.spec.containers"),
        (
            unnamed_claim,
            "spec.volumeClaimTemplates[0].metadata.name: a name is required",
        ),
        (
            duplicate_claim,
            "spec.volumeClaimTemplates[1].metadata.name: \"data\"",
        ),
        (long_claim, "longer than 253"),
    ];
    for (mut spec, needle) in cases {
        spec.service = Some(true);
        let plan = run(&sandbox_with(spec), &Observed::default());
        assert!(plan.actions.is_empty(), "{needle}: {:#?}", plan.actions);
        let (status, why, message) = ready(&plan.status);
        assert_eq!((status, why), ("False", reason::INVALID_CONFIGURATION));
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn an_invalid_spec_still_suspends() {
    let mut spec = spec();
    spec.pod_template.spec.containers.clear();
    spec.operating_mode = OperatingMode::Suspended;
    let plan = run(
        &sandbox_with(spec),
        &Observed {
            pods: vec![ready_pod()],
            ..Observed::default()
        },
    );
    assert!(matches!(plan.actions[..], [Action::DeletePod { .. }]));
    assert_eq!(ready(&plan.status).1, reason::INVALID_CONFIGURATION);
}

#[test]
fn a_sandbox_without_identity_is_an_error() {
    for field in ["name", "namespace", "uid"] {
        let mut sb = sandbox();
        match field {
            "name" => sb.metadata.name = None,
            "namespace" => sb.metadata.namespace = Some(String::new()),
            _ => sb.metadata.uid = None,
        }
        let err = plan(&sb, &Observed::default(), &Settings::default(), t0()).unwrap_err();
        assert_eq!(err, InvalidSandbox::MissingMetadata(field));
        assert!(err.to_string().contains(&format!("metadata.{field}")));
    }
}

// ---- The Service ---------------------------------------------------------------------------

#[test]
fn service_true_creates_a_headless_service() {
    let sb = sandbox_with(SandboxSpec {
        service: Some(true),
        ..spec()
    });
    let plan = run(&sb, &Observed::default());
    let svc = match &plan.actions[..] {
        [Action::CreatePod(_), Action::CreateService(svc)] => svc,
        other => panic!("{other:#?}"),
    };
    let hash = name_hash(NAME);
    assert_eq!(svc.metadata.name.as_deref(), Some(NAME));
    assert_eq!(svc.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(
        svc.metadata.labels,
        Some(map(&[(SANDBOX_NAME_HASH, &hash)]))
    );
    let owner = &svc.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Sandbox", UID));
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.selector, Some(map(&[(SANDBOX_NAME_HASH, &hash)])));
    assert_eq!(plan.status.service, NAME);
    assert_eq!(plan.status.service_fqdn, "sb.team-a.svc.cluster.local");
    assert_eq!(
        ready(&plan.status),
        (
            "False",
            reason::DEPENDENCIES_NOT_READY,
            "Pod is being created; Service is being created"
        )
    );
}

#[test]
fn the_service_fqdn_uses_the_cluster_domain() {
    let sb = sandbox_with(SandboxSpec {
        service: Some(true),
        ..spec()
    });
    let settings = Settings {
        cluster_domain: "corp.example".into(),
    };
    let plan = plan(&sb, &Observed::default(), &settings, t0()).unwrap();
    assert_eq!(plan.status.service_fqdn, "sb.team-a.svc.corp.example");
}

#[test]
fn the_service_setting_decides_what_happens_to_a_service() {
    let controlled = owned_service();
    let mut controlled_deleting = owned_service();
    deleting(&mut controlled_deleting.metadata);
    let mut uncontrolled = owned_service();
    uncontrolled.metadata.owner_references = None;
    let mut foreign = owned_service();
    foreign.metadata.owner_references = Some(vec![controller_ref("uid-x", "Gateway", "gw")]);

    let delete = || Action::DeleteService {
        name: NAME.into(),
        uid: Some("uid-svc".into()),
    };
    // (service setting, observed Service, expected actions, reported, Ready, Ready's message)
    let cases = vec![
        (
            Some(true),
            Some(&controlled),
            vec![],
            true,
            "True",
            "Pod is Ready; Service exists",
        ),
        (
            None,
            Some(&controlled),
            vec![],
            true,
            "True",
            "Pod is Ready; Service exists",
        ),
        (None, None, vec![], false, "True", "Pod is Ready"),
        (Some(false), None, vec![], false, "True", "Pod is Ready"),
        (
            Some(false),
            Some(&controlled),
            vec![delete()],
            false,
            "True",
            "Pod is Ready",
        ),
        (
            Some(false),
            Some(&controlled_deleting),
            vec![],
            false,
            "True",
            "Pod is Ready",
        ),
        (
            Some(true),
            Some(&controlled_deleting),
            vec![],
            false,
            "False",
            "Pod is Ready; Service is being deleted",
        ),
        (
            None,
            Some(&controlled_deleting),
            vec![],
            false,
            "True",
            "Pod is Ready",
        ),
        (
            None,
            Some(&uncontrolled),
            vec![],
            false,
            "True",
            "Pod is Ready",
        ),
        (
            Some(false),
            Some(&uncontrolled),
            vec![],
            false,
            "True",
            "Pod is Ready",
        ),
        (None, Some(&foreign), vec![], false, "True", "Pod is Ready"),
        (
            Some(false),
            Some(&foreign),
            vec![],
            false,
            "True",
            "Pod is Ready",
        ),
    ];
    for (setting, svc, want_actions, reported, want_ready, want_message) in cases {
        let sb = sandbox_with(SandboxSpec {
            service: setting,
            ..spec()
        });
        let plan = run(
            &sb,
            &Observed {
                pods: vec![ready_pod()],
                service: svc.cloned(),
                ..Observed::default()
            },
        );
        let label = format!(
            "service {setting:?}, observed {:?}",
            svc.map(|s| &s.metadata)
        );
        assert_eq!(plan.actions, want_actions, "{label}");
        assert_eq!(!plan.status.service.is_empty(), reported, "{label}");
        assert_eq!(!plan.status.service_fqdn.is_empty(), reported, "{label}");
        let (status, _, message) = ready(&plan.status);
        assert_eq!((status, message), (want_ready, want_message), "{label}");
    }
}

#[test]
fn service_true_with_a_service_it_does_not_control_is_an_error() {
    for owner in [None, Some(controller_ref("uid-x", "Gateway", "gw"))] {
        let mut svc = owned_service();
        svc.metadata.owner_references = owner.map(|o| vec![o]);
        let sb = sandbox_with(SandboxSpec {
            service: Some(true),
            ..spec()
        });
        let plan = run(
            &sb,
            &Observed {
                pods: vec![ready_pod()],
                service: Some(svc),
                ..Observed::default()
            },
        );
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let (status, why, message) = ready(&plan.status);
        assert_eq!((status, why), ("False", reason::RECONCILER_ERROR));
        assert!(message.contains("Service \"sb\""), "{message}");
        assert!(plan.status.service.is_empty());
    }
}

#[test]
fn a_controlled_service_whose_selector_drifted_is_patched_back() {
    let mut svc = owned_service();
    svc.metadata.labels = Some(map(&[("extra", "1")]));
    svc.spec.as_mut().unwrap().selector = Some(map(&[("app", "other")]));
    let plan = run(
        &sandbox(),
        &Observed {
            pods: vec![ready_pod()],
            service: Some(svc),
            ..Observed::default()
        },
    );
    let hash = name_hash(NAME);
    assert_eq!(
        plan.actions,
        [Action::PatchService {
            name: NAME.into(),
            patch: MergePatch {
                labels: BTreeMap::from([(SANDBOX_NAME_HASH.into(), Some(hash.clone()))]),
                annotations: BTreeMap::new(),
                selector: BTreeMap::from([
                    ("app".into(), None),
                    (SANDBOX_NAME_HASH.into(), Some(hash)),
                ]),
            },
        }]
    );
}

// ---- Suspend and resume --------------------------------------------------------------------

fn suspended() -> Sandbox {
    sandbox_with(SandboxSpec {
        operating_mode: OperatingMode::Suspended,
        ..spec()
    })
}

#[test]
fn suspending_deletes_the_pod_on_its_uid() {
    let plan = run(
        &suspended(),
        &Observed {
            pods: vec![ready_pod()],
            ..Observed::default()
        },
    );
    assert_eq!(
        plan.actions,
        [Action::DeletePod {
            name: NAME.into(),
            uid: Some("uid-pod".into()),
        }]
    );
    assert_eq!(
        cond(&plan.status, types::SUSPENDED),
        Some((
            "False",
            reason::POD_TERMINATING,
            "Pod is terminating. Sandbox is suspending"
        ))
    );
    assert_eq!(
        ready(&plan.status),
        ("False", reason::SANDBOX_SUSPENDED, "Sandbox is suspending")
    );
}

#[test]
fn a_terminating_pod_is_not_deleted_again() {
    let mut pod = ready_pod();
    deleting(&mut pod.metadata);
    let plan = run(
        &suspended(),
        &Observed {
            pods: vec![pod],
            ..Observed::default()
        },
    );
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(
        cond(&plan.status, types::SUSPENDED).unwrap().1,
        reason::POD_TERMINATING
    );
}

#[test]
fn suspended_without_a_pod_is_suspended() {
    let plan = run(&suspended(), &Observed::default());
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(
        cond(&plan.status, types::SUSPENDED),
        Some((
            "True",
            reason::POD_TERMINATED,
            "Pod has been terminated. Sandbox is suspended"
        ))
    );
    assert_eq!(
        ready(&plan.status),
        ("False", reason::SANDBOX_SUSPENDED, "Sandbox is suspended")
    );
    assert!(plan.status.pod_ips.is_empty());
    assert_eq!(cond(&plan.status, types::POD_SCHEDULED), None);
}

#[test]
fn suspending_leaves_a_pod_it_does_not_control() {
    let plan = run(
        &suspended(),
        &Observed {
            pods: vec![foreign_pod(Some(controller_ref(
                "uid-rs",
                "ReplicaSet",
                "web",
            )))],
            ..Observed::default()
        },
    );
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    let (status, why, message) = cond(&plan.status, types::SUSPENDED).unwrap();
    assert_eq!((status, why), ("False", reason::POD_NOT_OWNED));
    assert!(message.contains("\"sb\""), "{message}");
    assert_eq!(ready(&plan.status).1, reason::SANDBOX_SUSPENDED);
}

#[test]
fn suspending_deletes_every_pod_it_controls() {
    let mut second = ready_pod();
    second.metadata.name = Some("sb-old".into());
    second.metadata.uid = Some("uid-pod-2".into());
    let plan = run(
        &suspended(),
        &Observed {
            pods: vec![ready_pod(), second],
            ..Observed::default()
        },
    );
    assert_eq!(
        plan.actions,
        [
            Action::DeletePod {
                name: NAME.into(),
                uid: Some("uid-pod".into()),
            },
            Action::DeletePod {
                name: "sb-old".into(),
                uid: Some("uid-pod-2".into()),
            },
        ]
    );
    assert_eq!(ready(&plan.status).1, reason::SANDBOX_SUSPENDED);
}

#[test]
fn suspended_keeps_its_volumes_and_service() {
    let mut spec = spec();
    spec.operating_mode = OperatingMode::Suspended;
    spec.service = Some(true);
    spec.volume_claim_templates = vec![claim_template("data")];
    let plan = run(&sandbox_with(spec), &Observed::default());
    // Upstream makes PVCs and the Service whatever the mode; only the pod waits.
    assert!(matches!(
        plan.actions[..],
        [Action::CreatePvc(_), Action::CreateService(_)]
    ));
}

#[test]
fn suspend_and_resume_through_a_slow_deletion() {
    let mut world = World::new(sandbox());
    world.slow_pod_deletion = true;
    world.settle(t0());
    make_ready(world.pod_mut());
    world.step(later(1));
    assert_eq!(ready(world.status()).0, "True");
    let suspended_since = conditions::find(&world.status().conditions, types::SUSPENDED)
        .unwrap()
        .last_transition_time
        .clone();

    world.sandbox.spec.operating_mode = OperatingMode::Suspended;
    world.sandbox.metadata.generation = Some(2);
    let plan = world.step(later(10));
    assert!(matches!(plan.actions[..], [Action::DeletePod { .. }]));
    // Still terminating: no second delete, Suspended stays False (and keeps its time).
    assert!(world.step(later(11)).actions.is_empty());
    let suspended_cond = conditions::find(&world.status().conditions, types::SUSPENDED).unwrap();
    assert_eq!(
        (
            suspended_cond.reason.as_str(),
            &suspended_cond.last_transition_time
        ),
        (reason::POD_TERMINATING, &suspended_since)
    );
    assert_eq!(suspended_cond.observed_generation, Some(2));

    world.finish_deletions();
    world.step(later(12));
    assert_eq!(
        cond(world.status(), types::SUSPENDED).unwrap().0,
        "True",
        "{:#?}",
        world.status()
    );
    let ready_cond = conditions::find(&world.status().conditions, types::READY).unwrap();
    assert_eq!(ready_cond.last_transition_time, Time(later(10)));

    world.sandbox.spec.operating_mode = OperatingMode::Running;
    let plan = world.step(later(20));
    assert!(matches!(plan.actions[..], [Action::CreatePod(_)]));
    let suspended_cond = conditions::find(&world.status().conditions, types::SUSPENDED).unwrap();
    assert_eq!(
        (
            suspended_cond.status.as_str(),
            suspended_cond.reason.as_str()
        ),
        ("False", reason::NOT_SUSPENDED)
    );
    assert_eq!(suspended_cond.last_transition_time, Time(later(20)));
}

// ---- Expiry ----------------------------------------------------------------------------------

fn expiring(policy: ShutdownPolicy) -> Sandbox {
    sandbox_with(SandboxSpec {
        service: Some(true),
        shutdown_time: Some(Time(later(60))),
        shutdown_policy: policy,
        ..spec()
    })
}

#[test]
fn a_shutdown_time_asks_to_be_called_back_then() {
    let plan = run(&expiring(ShutdownPolicy::Retain), &Observed::default());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(60)));
    let plan = plan_at(&expiring(ShutdownPolicy::Retain), later(59));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(1)));
    assert_eq!(run(&sandbox(), &Observed::default()).requeue_after, None);
}

fn plan_at(sb: &Sandbox, now: Timestamp) -> Plan {
    plan(sb, &Observed::default(), &Settings::default(), now).unwrap()
}

#[test]
fn expiry_first_marks_the_sandbox_and_deletes_nothing() {
    let mut world = World::new(expiring(ShutdownPolicy::Retain));
    world.settle(t0());
    make_ready(world.pod_mut());
    world.step(later(1));
    assert!(cond(world.status(), types::POD_SCHEDULED).is_some());

    let plan = world.step(later(60));
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(plan.requeue_after, Some(Duration::ZERO));
    assert_eq!(
        ready(world.status()),
        ("False", reason::SANDBOX_EXPIRED, "Sandbox has expired")
    );
    assert_eq!(cond(world.status(), types::POD_SCHEDULED), None);
    // The rest of the status is untouched until the pod is gone.
    assert_eq!(world.status().node_name, "node-1");
}

#[test]
fn expiry_then_deletes_pod_and_service_and_retain_clears_the_status() {
    let mut world = World::new(expiring(ShutdownPolicy::Retain));
    world.settle(t0());
    make_ready(world.pod_mut());
    world.step(later(1));
    world.step(later(60));
    let plan = world.step(later(60));
    let kinds: Vec<&str> = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::DeletePod { .. } => "pod",
            Action::DeleteService { .. } => "service",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["pod", "service"]);
    assert_eq!(plan.requeue_after, None);
    let status = world.status();
    assert_eq!(
        (
            status.selector.as_str(),
            status.node_name.as_str(),
            status.service.as_str(),
            status.service_fqdn.as_str()
        ),
        ("", "", "", "")
    );
    assert!(status.pod_ips.is_empty());
    assert_eq!(ready(status).1, reason::SANDBOX_EXPIRED);
    // Suspended is kept with the other conditions, as upstream keeps them.
    assert!(cond(status, types::SUSPENDED).is_some());

    // And it stays expired: nothing made again, status unchanged, no requeue.
    let before = world.status().clone();
    let plan = world.step(later(3600));
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(plan.requeue_after, None);
    assert_eq!(world.status(), &before);
    assert!(plan.status_update(&world.sandbox).is_none());
}

#[test]
fn expiry_keeps_finished() {
    let mut world = World::new(expiring(ShutdownPolicy::Retain));
    world.settle(t0());
    world.pod_mut().status = Some(PodStatus {
        phase: Some("Succeeded".into()),
        ..PodStatus::default()
    });
    world.step(later(1));
    world.settle(later(60));
    assert_eq!(
        cond(world.status(), types::FINISHED),
        Some(("True", reason::POD_SUCCEEDED, "Pod completed successfully"))
    );
}

#[test]
fn expiry_under_delete_deletes_the_sandbox() {
    let mut world = World::new(expiring(ShutdownPolicy::Delete));
    world.settle(t0());
    world.step(later(60));
    let plan = world.step(later(61));
    assert!(matches!(
        plan.actions[..],
        [
            Action::DeletePod { .. },
            Action::DeleteService { .. },
            Action::DeleteSandbox
        ]
    ));
    assert!(world.sandbox.metadata.deletion_timestamp.is_some());
    // Being deleted: nothing more.
    assert!(world.step(later(62)).actions.is_empty());
}

#[test]
fn expiry_leaves_what_the_sandbox_does_not_control() {
    let mut sb = expiring(ShutdownPolicy::Delete);
    sb.status = Some(run(&sb, &Observed::default()).status);
    let marked = plan_at(&sb, later(60));
    sb.status = Some(marked.status);
    let mut svc = owned_service();
    svc.metadata.owner_references = None;
    let observed = Observed {
        pods: vec![foreign_pod(None)],
        service: Some(svc),
        ..Observed::default()
    };
    let plan = plan(&sb, &observed, &Settings::default(), later(61)).unwrap();
    assert_eq!(plan.actions, [Action::DeleteSandbox]);
}

#[test]
fn a_sandbox_past_its_shutdown_time_at_birth_never_runs() {
    let mut world = World::new(sandbox_with(SandboxSpec {
        shutdown_time: Some(Time(t0())),
        ..spec()
    }));
    let taken = world.settle(t0());
    assert!(taken.is_empty(), "{taken:#?}");
    assert!(world.observed.pods.is_empty());
    assert_eq!(ready(world.status()).1, reason::SANDBOX_EXPIRED);
}

// ---- Deletion --------------------------------------------------------------------------------

#[test]
fn nothing_is_done_for_a_sandbox_being_deleted() {
    let mut spec = spec();
    spec.service = Some(true);
    spec.volume_claim_templates = vec![claim_template("data")];
    spec.shutdown_time = Some(Time(later(-10)));
    let mut sb = sandbox_with(spec);
    deleting(&mut sb.metadata);
    sb.status = Some(SandboxStatus {
        node_name: "node-1".into(),
        ..SandboxStatus::default()
    });
    let plan = run(&sb, &Observed::default());
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(plan.requeue_after, None);
    assert!(plan.status_update(&sb).is_none());
}

// ---- Whole lifecycles and idempotence ----------------------------------------------------------

#[test]
fn a_sandbox_converges_and_then_nothing_changes() {
    let mut spec = spec();
    spec.service = Some(true);
    spec.volume_claim_templates = vec![claim_template("data")];
    let mut world = World::new(sandbox_with(spec));
    let taken = world.settle(t0());
    assert_eq!(taken.len(), 3, "{taken:#?}");
    assert_eq!(ready(world.status()).0, "False");

    make_ready(world.pod_mut());
    world.step(later(5));
    let status = world.status().clone();
    assert_eq!(
        ready(&status),
        (
            "True",
            reason::DEPENDENCIES_READY,
            "Pod is Ready; Service exists"
        )
    );
    let ready_since = conditions::find(&status.conditions, types::READY)
        .unwrap()
        .last_transition_time
        .clone();
    assert_eq!(ready_since, Time(later(5)));

    // Observed == desired: no actions, the same status (transition times kept), no write.
    for seconds in [6, 60, 86_400] {
        let plan = world.step(later(seconds));
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert_eq!(plan.status, status);
        assert!(plan.status_update(&world.sandbox).is_none());
    }
}

#[test]
fn the_suspended_condition_keeps_its_time_while_running() {
    let mut world = World::new(sandbox());
    world.settle(t0());
    make_ready(world.pod_mut());
    world.step(later(30));
    let suspended = conditions::find(&world.status().conditions, types::SUSPENDED).unwrap();
    assert_eq!(suspended.last_transition_time, Time(t0()));
    let ready = conditions::find(&world.status().conditions, types::READY).unwrap();
    assert_eq!(ready.last_transition_time, Time(later(30)));
}

#[test]
fn condition_order_is_stable() {
    let mut world = World::new(sandbox());
    world.settle(t0());
    world.pod_mut().status = Some(PodStatus {
        phase: Some("Failed".into()),
        conditions: Some(vec![pod_condition_of("PodScheduled", "True", None, None)]),
        ..PodStatus::default()
    });
    world.step(later(1));
    let types_: Vec<&str> = world
        .status()
        .conditions
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types_, ["Suspended", "Ready", "Finished", "PodScheduled"]);
}

#[test]
fn transition_times_are_whole_seconds() {
    let now = Timestamp::new(t0().as_second(), 123_456_789).unwrap();
    let plan = plan(&sandbox(), &Observed::default(), &Settings::default(), now).unwrap();
    for c in &plan.status.conditions {
        assert_eq!(c.last_transition_time, Time(t0()), "{}", c.type_);
    }
}

#[test]
fn a_new_generation_is_recorded_without_moving_transition_times() {
    let mut world = World::new(sandbox());
    world.settle(t0());
    world.sandbox.metadata.generation = Some(7);
    world.step(later(1));
    for c in &world.status().conditions {
        assert_eq!(c.observed_generation, Some(7), "{}", c.type_);
        assert_eq!(c.last_transition_time, Time(t0()), "{}", c.type_);
    }
}

// ---- Failures reported by the shell ------------------------------------------------------------

#[test]
fn failed_actions_set_ready_false() {
    let status = run(&sandbox(), &Observed::default()).status;
    let cases = [
        (
            ActionFailure::Rejected("Pod \"sb\" is invalid: spec.containers[0].image".into()),
            reason::INVALID_CONFIGURATION,
            "Pod \"sb\" is invalid: spec.containers[0].image",
        ),
        (
            ActionFailure::Error("etcd timeout".into()),
            reason::RECONCILER_ERROR,
            "Error seen: etcd timeout",
        ),
    ];
    for (failure, why, message) in cases {
        let after = status_after_failure(&status, Some(3), &failure, later(9));
        assert_eq!(ready(&after), ("False", why, message));
        let c = conditions::find(&after.conditions, types::READY).unwrap();
        assert_eq!(c.observed_generation, Some(3));
        // Ready was already False: its transition time stays.
        assert_eq!(c.last_transition_time, Time(t0()));
        assert_eq!(after.conditions.len(), status.conditions.len());
    }
}
