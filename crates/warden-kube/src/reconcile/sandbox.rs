//! Reconciling one `Sandbox` (`agents.x-k8s.io/v1beta1`) as upstream's controller does:
//! [`plan`] takes the Sandbox, the objects observed for it and the time, and returns the
//! [`Action`]s to apply, the status to write and when to look again.
//!
//! What it decides:
//! - a Pod named after the Sandbox, from `spec.podTemplate`, with the template's labels and
//!   annotations (minus the keys reserved to agent-sandbox), the
//!   `agents.x-k8s.io/sandbox-name-hash` label and a controller ownerReference; a PVC
//!   `<template>-<sandbox>` per volume claim template, mounted as a volume named after its
//!   template; a headless Service named after the Sandbox when `service: true`;
//! - `operatingMode: Suspended` deletes the Pod, `Running` creates it again;
//! - at `shutdownTime` the Sandbox is first marked expired (Ready=False SandboxExpired), then
//!   its Pod and Service are deleted and, by `shutdownPolicy`, the Sandbox itself (Delete) or
//!   its status is cleared but for its conditions (Retain);
//! - a Pod, PVC or Service it does not control is never deleted, adopted or replaced: it is
//!   reported in the conditions;
//! - nothing is created for a Sandbox that is being deleted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodCondition, Service,
    ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use super::MergePatch;
use super::conditions::{self, FALSE, TRUE, condition};
use super::ownership::{Ownership, controller_of, not_controlled, ownership};
use crate::crd::conditions::{sandbox as reason, types};
use crate::crd::labels::{
    CLAIM_UID, CREATED_BY, SANDBOX_NAME_HASH, SANDBOX_TEMPLATE_REF_HASH, WARM_POOL_SANDBOX,
    name_hash, sandbox_selector,
};
use crate::crd::{
    EXTENSIONS_GROUP, OperatingMode, PersistentVolumeClaimTemplate, Sandbox, SandboxStatus,
    ShutdownPolicy,
};

/// `PodScheduled` reason when the pod's condition is True without a reason (the scheduler sets
/// none on success), as upstream reports it.
pub const POD_SCHEDULED_REASON: &str = "PodScheduled";
/// `PodScheduled` reason when the pod's condition is not True and has no reason.
pub const POD_SCHEDULING_UNKNOWN: &str = "PodSchedulingUnknown";

/// Label and annotation prefixes reserved to agent-sandbox: a pod template cannot set them on
/// its pod (they select Services and mark pods for the controllers).
const RESERVED_PREFIXES: &[&str] = &["agents.x-k8s.io/", "extensions.agents.x-k8s.io/"];

/// Labels the controller itself manages on a pod besides the name hash: copied from the
/// Sandbox's labels when it applies, removed when it does not.
const PROPAGATED_POD_LABELS: &[&str] = &[
    CLAIM_UID,
    WARM_POOL_SANDBOX,
    SANDBOX_TEMPLATE_REF_HASH,
    CREATED_BY,
];

/// The longest object name the API server takes (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;

/// The objects observed for a Sandbox, as read from the API server (or an informer cache).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The pod named after the Sandbox, if any, and the pods labelled with its name hash.
    pub pods: Vec<Pod>,
    /// The PVCs named `<template>-<sandbox>` for its volume claim templates.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The Service named after the Sandbox, if any.
    pub service: Option<Service>,
}

/// What [`plan`] needs to know of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's DNS domain, for `status.serviceFQDN`.
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// One change to make in the cluster. Applied in the order of [`Plan::actions`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this PVC.
    CreatePvc(Box<PersistentVolumeClaim>),
    /// Create this pod.
    CreatePod(Box<Pod>),
    /// Merge-patch the labels and annotations of the pod `name`.
    PatchPod {
        /// The pod.
        name: String,
        /// The change.
        patch: MergePatch,
    },
    /// Delete the pod `name`, on the precondition that its UID is still `uid`.
    DeletePod {
        /// The pod.
        name: String,
        /// The UID observed, as a delete precondition: a pod made since is not touched.
        uid: Option<String>,
    },
    /// Create this Service.
    CreateService(Box<Service>),
    /// Merge-patch the label and selector of the Service `name`.
    PatchService {
        /// The Service.
        name: String,
        /// The change.
        patch: MergePatch,
    },
    /// Delete the Service `name`, on the precondition that its UID is still `uid`.
    DeleteService {
        /// The Service.
        name: String,
        /// The UID observed, as a delete precondition.
        uid: Option<String>,
    },
    /// Delete the Sandbox itself (it expired under `shutdownPolicy: Delete`).
    DeleteSandbox,
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to change, in order.
    pub actions: Vec<Action>,
    /// The Sandbox's status once the actions are applied. Equal to the current status when
    /// nothing changed (see [`Plan::status_update`]).
    pub status: SandboxStatus,
    /// Reconcile again after this long even if nothing is observed to change: at
    /// `shutdownTime`, or at once after marking the Sandbox expired.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// The status to write, or `None` when it equals `sandbox`'s.
    pub fn status_update(&self, sandbox: &Sandbox) -> Option<&SandboxStatus> {
        let unchanged = match &sandbox.status {
            Some(current) => *current == self.status,
            None => self.status == SandboxStatus::default(),
        };
        (!unchanged).then_some(&self.status)
    }
}

/// A Sandbox that cannot be reconciled: it lacks what the API server always sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidSandbox {
    /// `metadata.<field>` is missing or empty.
    MissingMetadata(&'static str),
}

impl fmt::Display for InvalidSandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingMetadata(field) => write!(
                f,
                "the Sandbox has no metadata.{field}: reconcile Sandboxes as the API server \
                 returns them (with name, namespace and uid)"
            ),
        }
    }
}

impl std::error::Error for InvalidSandbox {}

/// How applying an action of a [`Plan`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFailure {
    /// The API server rejected the object as invalid (HTTP 422): the spec must change.
    Rejected(String),
    /// Anything else (a conflict, a timeout, a denied request): worth retrying.
    Error(String),
}

/// `status` with Ready=False for a failed action: `InvalidConfiguration` when the API server
/// rejected an object made from the spec, `ReconcilerError` otherwise.
pub fn status_after_failure(
    status: &SandboxStatus,
    generation: Option<i64>,
    failure: &ActionFailure,
    now: Timestamp,
) -> SandboxStatus {
    let (why, message) = match failure {
        ActionFailure::Rejected(m) => (reason::INVALID_CONFIGURATION, m.clone()),
        ActionFailure::Error(m) => (reason::RECONCILER_ERROR, format!("Error seen: {m}")),
    };
    let mut status = status.clone();
    let now = conditions::whole_seconds(now);
    conditions::set(
        &mut status.conditions,
        condition(types::READY, FALSE, why, message, generation, now),
    );
    status
}

/// Decides what to do for `sandbox`, given the objects `observed` for it, at `now`.
///
/// Deterministic: the same inputs give the same plan. When the cluster already matches the
/// Sandbox, the plan has no actions and the status is the current one (transition times kept).
pub fn plan(
    sandbox: &Sandbox,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Result<Plan, InvalidSandbox> {
    let id = Identity::of(sandbox)?;
    let current = sandbox.status.clone().unwrap_or_default();
    if sandbox.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes what the Sandbox owns; nothing new is made meanwhile.
        return Ok(Plan {
            actions: Vec::new(),
            status: current,
            requeue_after: None,
        });
    }
    match sandbox.spec.shutdown_time.as_ref().map(|t| t.0) {
        Some(shutdown) if now >= shutdown => Ok(expire(sandbox, &id, observed, current, now)),
        shutdown => {
            let mut plan = Live::new(sandbox, &id, observed, settings).plan(current, now);
            plan.requeue_after =
                shutdown.and_then(|t| Duration::try_from(now.duration_until(t)).ok());
            Ok(plan)
        }
    }
}

/// What every object made for a Sandbox derives from.
struct Identity<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    generation: Option<i64>,
    hash: String,
}

impl<'a> Identity<'a> {
    fn of(sandbox: &'a Sandbox) -> Result<Self, InvalidSandbox> {
        let meta = &sandbox.metadata;
        let field = |value: &'a Option<String>, name| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .ok_or(InvalidSandbox::MissingMetadata(name))
        };
        let name = field(&meta.name, "name")?;
        Ok(Self {
            name,
            namespace: field(&meta.namespace, "namespace")?,
            uid: field(&meta.uid, "uid")?,
            generation: meta.generation,
            hash: name_hash(name),
        })
    }

    /// The controller reference every object made for the Sandbox carries.
    fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: Sandbox::api_version(&()).into_owned(),
            kind: Sandbox::kind(&()).into_owned(),
            name: self.name.to_owned(),
            uid: self.uid.to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            owner_references: Some(vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }

    fn controls(&self, meta: &ObjectMeta) -> bool {
        ownership(meta, self.uid) == Ownership::Controlled
    }
}

/// The expired branch. The first pass only marks the Sandbox expired (so watchers see why
/// before its pod goes) and asks to be called again at once; the next deletes what it controls.
fn expire(
    sandbox: &Sandbox,
    id: &Identity<'_>,
    observed: &Observed,
    mut status: SandboxStatus,
    now: Timestamp,
) -> Plan {
    let marked = conditions::find(&status.conditions, types::READY)
        .is_some_and(|c| c.status == FALSE && c.reason == reason::SANDBOX_EXPIRED);
    conditions::set(
        &mut status.conditions,
        condition(
            types::READY,
            FALSE,
            reason::SANDBOX_EXPIRED,
            "Sandbox has expired",
            id.generation,
            conditions::whole_seconds(now),
        ),
    );
    // The pod is going: its scheduling state no longer describes the Sandbox. Finished stays.
    conditions::remove(&mut status.conditions, types::POD_SCHEDULED);
    if !marked {
        return Plan {
            actions: Vec::new(),
            status,
            requeue_after: Some(Duration::ZERO),
        };
    }

    let mut actions: Vec<Action> = observed
        .pods
        .iter()
        .filter(|p| id.controls(&p.metadata) && !terminating(&p.metadata))
        .map(|p| delete_pod(p, id.name))
        .collect();
    if let Some(svc) = &observed.service
        && id.controls(&svc.metadata)
        && !terminating(&svc.metadata)
    {
        actions.push(delete_service(svc, id.name));
    }
    match sandbox.spec.shutdown_policy {
        ShutdownPolicy::Delete => actions.push(Action::DeleteSandbox),
        ShutdownPolicy::Retain => {
            status = SandboxStatus {
                conditions: status.conditions,
                ..SandboxStatus::default()
            };
        }
    }
    Plan {
        actions,
        status,
        requeue_after: None,
    }
}

/// The Sandbox's pod as observed (or about to be made).
#[derive(Clone, Copy)]
enum PodState<'a> {
    /// None, and none made (the spec is invalid, a PVC conflicts, or it is suspended).
    Absent,
    /// Created by this plan.
    Creating,
    /// The one pod the Sandbox controls.
    Controlled(&'a Pod),
    /// A pod holds the Sandbox's name but the Sandbox does not control it.
    NotControlled(&'a Pod),
    /// The Sandbox controls more than one pod (running mode only; suspending deletes them all).
    Multiple(usize),
}

/// The Sandbox's Service as observed (or about to be made).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServiceState {
    /// None the Sandbox uses.
    Absent,
    /// Created by this plan.
    Creating,
    /// A Service the Sandbox controls, not being deleted.
    Present,
    /// A Service the Sandbox controls, being deleted.
    Terminating,
    /// Not looked at: the pod mapping is ambiguous (upstream leaves Services alone then).
    Untouched,
}

/// The branch of a Sandbox that has not expired.
struct Live<'a> {
    sandbox: &'a Sandbox,
    id: &'a Identity<'a>,
    observed: &'a Observed,
    settings: &'a Settings,
    suspended: bool,
    /// Why the spec cannot be acted on: nothing is created while there is any.
    invalid: Vec<String>,
    /// Objects in the way that the Sandbox does not control.
    conflicts: Vec<String>,
    actions: Vec<Action>,
}

impl<'a> Live<'a> {
    fn new(
        sandbox: &'a Sandbox,
        id: &'a Identity<'a>,
        observed: &'a Observed,
        settings: &'a Settings,
    ) -> Self {
        Self {
            sandbox,
            id,
            observed,
            settings,
            suspended: sandbox.spec.operating_mode == OperatingMode::Suspended,
            invalid: validate(sandbox, id.name),
            conflicts: Vec::new(),
            actions: Vec::new(),
        }
    }

    fn plan(mut self, mut status: SandboxStatus, now: Timestamp) -> Plan {
        let volumes_ok = self.reconcile_pvcs();
        let pod = self.reconcile_pod(volumes_ok);
        let service = match pod {
            PodState::Multiple(_) => ServiceState::Untouched,
            _ => self.reconcile_service(),
        };
        self.status(&mut status, pod, service, conditions::whole_seconds(now));
        Plan {
            actions: self.actions,
            status,
            requeue_after: None,
        }
    }

    /// Creates the missing PVCs. False when one is in the way (the pod would mount a volume
    /// the Sandbox does not control) or the spec is invalid.
    fn reconcile_pvcs(&mut self) -> bool {
        if !self.invalid.is_empty() {
            return false;
        }
        let mut ok = true;
        for template in &self.sandbox.spec.volume_claim_templates {
            let name = pvc_name(template, self.id.name);
            let found = self
                .observed
                .pvcs
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&name));
            match found.map(|p| ownership(&p.metadata, self.id.uid)) {
                None => self.actions.push(Action::CreatePvc(Box::new(desired_pvc(
                    template, name, self.id,
                )))),
                Some(Ownership::Controlled) => {}
                Some(other) => {
                    self.conflicts
                        .push(not_controlled("PersistentVolumeClaim", &name, other));
                    ok = false;
                }
            }
        }
        ok
    }

    fn reconcile_pod(&mut self, volumes_ok: bool) -> PodState<'a> {
        let observed = self.observed;
        let controlled: Vec<&'a Pod> = observed
            .pods
            .iter()
            .filter(|p| self.id.controls(&p.metadata))
            .collect();
        let named = observed
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(self.id.name));

        if self.suspended {
            for pod in &controlled {
                if !terminating(&pod.metadata) {
                    self.actions.push(delete_pod(pod, self.id.name));
                }
            }
            return match (controlled.as_slice(), named) {
                ([pod], _) => PodState::Controlled(pod),
                ([], Some(pod)) => PodState::NotControlled(pod),
                ([], None) => PodState::Absent,
                (pods, _) => PodState::Multiple(pods.len()),
            };
        }

        match (controlled.as_slice(), named) {
            ([pod], _) => {
                if !terminating(&pod.metadata) {
                    let patch = pod_metadata_patch(pod, self.sandbox, self.id);
                    if !patch.is_empty() {
                        self.actions.push(Action::PatchPod {
                            name: object_name(&pod.metadata, self.id.name),
                            patch,
                        });
                    }
                }
                PodState::Controlled(pod)
            }
            ([], Some(pod)) => {
                let owner = ownership(&pod.metadata, self.id.uid);
                self.conflicts
                    .push(not_controlled("Pod", self.id.name, owner));
                PodState::NotControlled(pod)
            }
            ([], None) if self.invalid.is_empty() && volumes_ok => {
                self.actions.push(Action::CreatePod(Box::new(desired_pod(
                    self.sandbox,
                    self.id,
                ))));
                PodState::Creating
            }
            ([], None) => PodState::Absent,
            (pods, _) => PodState::Multiple(pods.len()),
        }
    }

    fn reconcile_service(&mut self) -> ServiceState {
        let id = self.id;
        let wanted = self.sandbox.spec.service;
        let Some(svc) = &self.observed.service else {
            return if wanted == Some(true) && self.invalid.is_empty() {
                self.actions
                    .push(Action::CreateService(Box::new(desired_service(id))));
                ServiceState::Creating
            } else {
                ServiceState::Absent
            };
        };
        let owner = ownership(&svc.metadata, id.uid);
        match (wanted, owner) {
            (Some(false), Ownership::Controlled) => {
                if !terminating(&svc.metadata) {
                    self.actions.push(delete_service(svc, id.name));
                }
                ServiceState::Absent
            }
            (_, Ownership::Controlled) if terminating(&svc.metadata) => {
                // Made again once it is gone, if still wanted.
                if wanted == Some(true) {
                    ServiceState::Terminating
                } else {
                    ServiceState::Absent
                }
            }
            (Some(true) | None, Ownership::Controlled) => {
                let patch = service_patch(svc, &id.hash);
                if !patch.is_empty() {
                    self.actions.push(Action::PatchService {
                        name: object_name(&svc.metadata, id.name),
                        patch,
                    });
                }
                ServiceState::Present
            }
            (Some(true), other) => {
                self.conflicts
                    .push(not_controlled("Service", id.name, other));
                ServiceState::Absent
            }
            // Unset or false: a Service the Sandbox does not control is none of its business.
            (Some(false) | None, _) => ServiceState::Absent,
        }
    }

    fn status(
        &self,
        status: &mut SandboxStatus,
        pod: PodState<'_>,
        service: ServiceState,
        now: Timestamp,
    ) {
        let id = self.id;
        let the_pod = match pod {
            PodState::Controlled(p) => Some(p),
            _ => None,
        };

        status.selector = sandbox_selector(id.name);
        status.pod_ips = the_pod.map(pod_ips).unwrap_or_default();
        status.node_name = the_pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        match service {
            ServiceState::Present | ServiceState::Creating => {
                status.service = id.name.to_owned();
                status.service_fqdn = format!(
                    "{}.{}.svc.{}",
                    id.name, id.namespace, self.settings.cluster_domain
                );
            }
            ServiceState::Absent | ServiceState::Terminating => {
                status.service.clear();
                status.service_fqdn.clear();
            }
            ServiceState::Untouched => {}
        }

        let generation = id.generation;
        let set = |conditions: &mut Vec<Condition>, type_, (state, why, message): Verdict| {
            conditions::set(
                conditions,
                condition(type_, state, &why, message, generation, now),
            );
        };
        let conditions = &mut status.conditions;
        set(conditions, types::SUSPENDED, self.suspended_condition(pod));
        match the_pod.and_then(finished) {
            Some(verdict) => set(conditions, types::FINISHED, verdict),
            None => conditions::remove(conditions, types::FINISHED),
        }
        match the_pod.and_then(|p| pod_condition(p, "PodScheduled")) {
            Some(scheduled) => set(
                conditions,
                types::POD_SCHEDULED,
                scheduled_verdict(scheduled),
            ),
            None => conditions::remove(conditions, types::POD_SCHEDULED),
        }
        set(conditions, types::READY, self.ready_condition(pod, service));
    }

    fn suspended_condition(&self, pod: PodState<'_>) -> Verdict {
        if !self.suspended {
            return (
                FALSE,
                reason::NOT_SUSPENDED.into(),
                "Sandbox is not suspended".into(),
            );
        }
        match pod {
            PodState::Absent | PodState::Creating => (
                TRUE,
                reason::POD_TERMINATED.into(),
                "Pod has been terminated. Sandbox is suspended".into(),
            ),
            PodState::Controlled(_) | PodState::Multiple(_) => (
                FALSE,
                reason::POD_TERMINATING.into(),
                "Pod is terminating. Sandbox is suspending".into(),
            ),
            PodState::NotControlled(p) => (
                FALSE,
                reason::POD_NOT_OWNED.into(),
                format!(
                    "Refused to delete pod {:?}: it is not controlled by this Sandbox",
                    object_name(&p.metadata, self.id.name)
                ),
            ),
        }
    }

    fn ready_condition(&self, pod: PodState<'_>, service: ServiceState) -> Verdict {
        if let PodState::Multiple(n) = pod
            && !self.suspended
        {
            return (
                FALSE,
                reason::MULTIPLE_PODS.into(),
                format!(
                    "{n} pods are controlled by this Sandbox; refusing to choose one or to \
                     create another"
                ),
            );
        }
        if !self.invalid.is_empty() {
            return (
                FALSE,
                reason::INVALID_CONFIGURATION.into(),
                self.invalid.join("; "),
            );
        }
        if !self.conflicts.is_empty() {
            return (
                FALSE,
                reason::RECONCILER_ERROR.into(),
                self.conflicts.join("; "),
            );
        }
        if self.suspended {
            let message = match pod {
                PodState::Controlled(_) | PodState::Multiple(_) => "Sandbox is suspending",
                _ => "Sandbox is suspended",
            };
            return (FALSE, reason::SANDBOX_SUSPENDED.into(), message.into());
        }
        if let PodState::Controlled(p) = pod
            && let Some(verdict) = finished(p)
        {
            return (FALSE, verdict.1, verdict.2);
        }

        let (pod_ready, mut message) = match pod {
            PodState::Creating => (false, "Pod is being created".to_owned()),
            PodState::Controlled(p) => pod_readiness(p),
            _ => (false, "Pod does not exist".to_owned()),
        };
        let service_required = match self.sandbox.spec.service {
            Some(wanted) => wanted,
            None => service == ServiceState::Present,
        };
        let mut service_ready = true;
        if service_required {
            let (ready, part) = match service {
                ServiceState::Present => (true, "Service exists"),
                ServiceState::Creating => (true, "Service is being created"),
                ServiceState::Terminating => (false, "Service is being deleted"),
                ServiceState::Absent | ServiceState::Untouched => (false, "Service does not exist"),
            };
            service_ready = ready;
            message = format!("{message}; {part}");
        }
        if pod_ready && service_ready {
            (TRUE, reason::DEPENDENCIES_READY.into(), message)
        } else {
            (FALSE, reason::DEPENDENCIES_NOT_READY.into(), message)
        }
    }
}

/// A condition's status, reason and message.
type Verdict = (&'static str, Cow<'static, str>, String);

/// Why the spec cannot be acted on, one message per problem, naming the field.
fn validate(sandbox: &Sandbox, name: &str) -> Vec<String> {
    let spec = &sandbox.spec;
    let mut problems = Vec::new();
    if spec.pod_template.spec.containers.is_empty() {
        problems
            .push("spec.podTemplate.spec.containers: at least one container is required".into());
    }
    let mut seen = Vec::new();
    for (i, template) in spec.volume_claim_templates.iter().enumerate() {
        let field = format!("spec.volumeClaimTemplates[{i}].metadata.name");
        let claim = &template.metadata.name;
        if claim.is_empty() {
            problems.push(format!("{field}: a name is required"));
        } else if seen.contains(&claim) {
            problems.push(format!("{field}: {claim:?} is used by an earlier template"));
        } else if claim.len() + 1 + name.len() > MAX_NAME_LEN {
            problems.push(format!(
                "{field}: the claim name \"{claim}-{name}\" would be longer than \
                 {MAX_NAME_LEN} characters"
            ));
        }
        seen.push(claim);
    }
    problems
}

/// The Pod's readiness and what to say about it.
fn pod_readiness(pod: &Pod) -> (bool, String) {
    if terminating(&pod.metadata) {
        return (false, "Pod is terminating".into());
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    match phase {
        "Running" => match pod_condition(pod, "Ready").map(|c| c.status.as_str()) {
            Some("True") if pod_ips(pod).is_empty() => {
                (false, "Pod is Ready but has no IP yet".into())
            }
            Some("True") => (true, "Pod is Ready".into()),
            _ => (false, "Pod is Running but not Ready".into()),
        },
        "" => (false, "Pod has no phase yet".into()),
        phase => (false, format!("Pod is {phase}")),
    }
}

/// `Finished=True` for a pod in a terminal phase.
fn finished(pod: &Pod) -> Option<Verdict> {
    let status = pod.status.as_ref()?;
    let detail = status
        .message
        .as_deref()
        .or(status.reason.as_deref())
        .filter(|m| !m.is_empty());
    let (why, message) = match status.phase.as_deref()? {
        "Succeeded" => (reason::POD_SUCCEEDED, "Pod completed successfully"),
        "Failed" => (reason::POD_FAILED, "Pod failed"),
        _ => return None,
    };
    let message = match detail {
        Some(detail) => format!("{message}: {detail}"),
        None => message.to_owned(),
    };
    Some((TRUE, why.into(), message))
}

/// The Sandbox's `PodScheduled`, copied from its pod's. A condition needs a reason; the
/// scheduler gives none on success.
fn scheduled_verdict(pod: &PodCondition) -> Verdict {
    let status = match pod.status.as_str() {
        "True" => TRUE,
        "False" => FALSE,
        _ => "Unknown",
    };
    let why: Cow<'static, str> = match pod.reason.as_deref().unwrap_or("") {
        "" if status == TRUE => POD_SCHEDULED_REASON.into(),
        "" => POD_SCHEDULING_UNKNOWN.into(),
        why => why.to_owned().into(),
    };
    (status, why, pod.message.clone().unwrap_or_default())
}

fn pod_condition<'p>(pod: &'p Pod, type_: &str) -> Option<&'p PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    match (&status.pod_ip, ips.is_empty()) {
        (Some(ip), true) if !ip.is_empty() => vec![ip.clone()],
        _ => ips,
    }
}

fn terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

fn object_name(meta: &ObjectMeta, fallback: &str) -> String {
    meta.name.clone().unwrap_or_else(|| fallback.to_owned())
}

fn delete_pod(pod: &Pod, fallback: &str) -> Action {
    Action::DeletePod {
        name: object_name(&pod.metadata, fallback),
        uid: pod.metadata.uid.clone(),
    }
}

fn delete_service(svc: &Service, fallback: &str) -> Action {
    Action::DeleteService {
        name: object_name(&svc.metadata, fallback),
        uid: svc.metadata.uid.clone(),
    }
}

fn reserved(key: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `<template>-<sandbox>`.
fn pvc_name(template: &PersistentVolumeClaimTemplate, sandbox: &str) -> String {
    format!("{}-{sandbox}", template.metadata.name)
}

fn desired_pvc(
    template: &PersistentVolumeClaimTemplate,
    name: String,
    id: &Identity<'_>,
) -> PersistentVolumeClaim {
    let mut labels = template.metadata.labels.clone();
    labels.insert(SANDBOX_NAME_HASH.into(), id.hash.clone());
    let annotations = &template.metadata.annotations;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
            ..id.meta(name)
        },
        spec: Some(template.spec.clone()),
        status: None,
    }
}

/// The labels the Sandbox's pod carries: the template's (but reserved keys), the labels
/// propagated from the Sandbox, and the name hash.
fn desired_pod_labels(sandbox: &Sandbox, id: &Identity<'_>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = sandbox
        .spec
        .pod_template
        .metadata
        .labels
        .iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(propagated_labels(sandbox));
    labels.insert(SANDBOX_NAME_HASH.into(), id.hash.clone());
    labels
}

fn desired_pod_annotations(sandbox: &Sandbox) -> BTreeMap<String, String> {
    sandbox
        .spec
        .pod_template
        .metadata
        .annotations
        .iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Labels of the Sandbox that go on its pod: the claim UID when a SandboxClaim controls it,
/// the pool when a SandboxWarmPool does, the template hash under either, and `created-by`.
fn propagated_labels(sandbox: &Sandbox) -> BTreeMap<String, String> {
    let own = |key: &str| {
        sandbox
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .filter(|v| !v.is_empty())
            .map(|v| (key.to_owned(), v.clone()))
    };
    let extension_kind = controller_of(&sandbox.metadata)
        .filter(|r| r.api_version.split('/').next() == Some(EXTENSIONS_GROUP))
        .map(|r| r.kind.as_str());
    let mut labels = BTreeMap::new();
    let mut add = |entry: Option<(String, String)>| labels.extend(entry);
    match extension_kind {
        Some("SandboxClaim") => add(own(CLAIM_UID)),
        Some("SandboxWarmPool") => add(own(WARM_POOL_SANDBOX)),
        _ => {}
    }
    if extension_kind.is_some() {
        add(own(SANDBOX_TEMPLATE_REF_HASH));
    }
    add(own(CREATED_BY));
    labels
}

/// The pod upstream makes: the template's spec with the claim volumes (replacing template
/// volumes of the same name), named after the Sandbox and controlled by it.
fn desired_pod(sandbox: &Sandbox, id: &Identity<'_>) -> Pod {
    let mut spec = sandbox.spec.pod_template.spec.clone();
    let claims = &sandbox.spec.volume_claim_templates;
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = spec
            .volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|c| c.metadata.name == v.name))
            .collect();
        volumes.extend(claims.iter().map(|c| Volume {
            name: c.metadata.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(c, id.name),
                read_only: None,
            }),
            ..Volume::default()
        }));
        spec.volumes = Some(volumes);
    }
    let annotations = desired_pod_annotations(sandbox);
    Pod {
        metadata: ObjectMeta {
            labels: Some(desired_pod_labels(sandbox, id)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..id.meta(id.name.to_owned())
        },
        spec: Some(spec),
        status: None,
    }
}

/// What an existing pod lacks of the labels and annotations it should carry. Labels that
/// left the template stay (upstream tracks them in annotations of its own; this does not);
/// the labels propagated from the Sandbox are removed when they no longer apply.
fn pod_metadata_patch(pod: &Pod, sandbox: &Sandbox, id: &Identity<'_>) -> MergePatch {
    let empty = BTreeMap::new();
    let have_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let have_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let want_labels = desired_pod_labels(sandbox, id);
    let mut patch = MergePatch::default();
    for (k, v) in &want_labels {
        if have_labels.get(k) != Some(v) {
            patch.labels.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in PROPAGATED_POD_LABELS {
        if have_labels.contains_key(*k) && !want_labels.contains_key(*k) {
            patch.labels.insert((*k).to_owned(), None);
        }
    }
    for (k, v) in desired_pod_annotations(sandbox) {
        if have_annotations.get(&k) != Some(&v) {
            patch.annotations.insert(k, Some(v));
        }
    }
    patch
}

/// The headless Service: no cluster IP, selecting the pod by its name-hash label.
fn desired_service(id: &Identity<'_>) -> Service {
    let selector = BTreeMap::from([(SANDBOX_NAME_HASH.to_owned(), id.hash.clone())]);
    Service {
        metadata: ObjectMeta {
            labels: Some(selector.clone()),
            ..id.meta(id.name.to_owned())
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Puts back the name-hash label and a selector on it alone, if someone changed them.
fn service_patch(svc: &Service, hash: &str) -> MergePatch {
    let mut patch = MergePatch::default();
    let label = svc
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SANDBOX_NAME_HASH));
    if label.map(String::as_str) != Some(hash) {
        patch
            .labels
            .insert(SANDBOX_NAME_HASH.into(), Some(hash.to_owned()));
    }
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    for key in selector.into_iter().flat_map(|s| s.keys()) {
        if key != SANDBOX_NAME_HASH {
            patch.selector.insert(key.clone(), None);
        }
    }
    if selector
        .and_then(|s| s.get(SANDBOX_NAME_HASH))
        .map(String::as_str)
        != Some(hash)
    {
        patch
            .selector
            .insert(SANDBOX_NAME_HASH.into(), Some(hash.to_owned()));
    }
    patch
}

#[cfg(test)]
mod tests;
