//! Reconciling one `SandboxWarmPool` (`extensions.agents.x-k8s.io/v1beta1`) as upstream's
//! warm-pool controller does: [`plan`] takes the pool, its template, its member Sandboxes and
//! the writes still in flight, and the time, and returns the [`Action`]s that keep
//! `spec.replicas` members, the status to write and when to look again.
//!
//! What it decides:
//! - Members are the Sandboxes labelled `agents.x-k8s.io/warm-pool-sandbox=<hash of the pool's
//!   name>` ([`selector`]) that the pool controls. An uncontrolled one with that label is
//!   adopted (controller reference and `launch-type=warm`, on its resourceVersion) unless
//!   stale, then deleted; one another object controls (a claim adopted it) no longer counts.
//! - New members ([`member`]) are made from the template with `generateName: <pool>-`, the
//!   labels `warm-pool-sandbox`, `sandbox-template-ref-hash`, [`POD_TEMPLATE_HASH`],
//!   `launch-type=warm` and `created-by=controller`, the annotation `sandbox-template-ref`, a
//!   controller ownerReference to the pool, and the template's secure defaults.
//! - The deficit (`replicas` minus members, terminating ones included so the population never
//!   overshoots while deletions lag) is created in slow-start batches ([`slow_start_batches`]:
//!   1, 2, 4, ... each only once the previous one was created), at most
//!   [`Settings::max_batch`] per pass; nothing is created or deleted for excess while writes
//!   of an earlier pass are not yet in the snapshot ([`InFlight`]).
//! - Excess members are deleted unready first, then newest first.
//! - A member not Ready [`Settings::readiness_grace`] (5 minutes) after its creation is deleted
//!   and replaced, unless its pod is unschedulable: a replacement would be too, so it is kept
//!   and reported ([`Plan::problems`]) and the pool looks again later.
//! - `updateStrategy: Recreate` deletes members made from an older template (their
//!   [`POD_TEMPLATE_HASH`] differs and their spec no longer matches) and replaces them;
//!   `OnReplenish` (the default) keeps them, and only new members use the new template.
//! - Status: `replicas` (active members), `readyReplicas`, `selector`, `observedGeneration`.
//!
//! Where this differs from upstream: upstream's per-pool bookkeeping (creation expectations,
//! optional replenish delay and refill rate) lives in its controller; here the shell tracks the
//! writes in flight and passes them in. Upstream hashes the template with Go's JSON encoding;
//! the hash here differs, so members made by upstream are compared by spec instead, as
//! upstream itself does when the hashes differ.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::conditions::{self, FALSE};
use super::ownership::{Ownership, controller_reference, ownership};
use super::template::sandbox_spec;
use super::{MissingMetadata, SandboxPatch, label, required, sandbox_ready, terminating};
use crate::crd::conditions::types;
use crate::crd::labels::{
    CREATED_BY, LAUNCH_TYPE, LAUNCH_TYPE_WARM, SANDBOX_TEMPLATE_REF_ANNOTATION,
    SANDBOX_TEMPLATE_REF_HASH, WARM_POOL_SANDBOX, name_hash,
};
use crate::crd::{
    Sandbox, SandboxTemplate, SandboxTemplateSpec, SandboxWarmPool, SandboxWarmPoolStatus,
    UpdateStrategyType,
};

/// Label on a pool's Sandboxes (and their pods): [`template_hash`] of the template they were
/// made from, to spot stale members.
pub const POD_TEMPLATE_HASH: &str = "agents.x-k8s.io/sandbox-pod-template-hash";
/// The `agents.x-k8s.io/created-by` value of the Sandboxes a pool makes.
pub const CREATED_BY_CONTROLLER: &str = "controller";
/// The pod condition reason that marks a pod the scheduler cannot place.
const UNSCHEDULABLE: &str = "Unschedulable";

/// What the warm-pool controller reads from the cluster (and remembers) for one pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The SandboxTemplate named by `spec.sandboxTemplateRef`, if it exists.
    pub template: Option<SandboxTemplate>,
    /// The Sandboxes of the pool's namespace labelled with [`selector`]; others are ignored.
    pub sandboxes: Vec<Sandbox>,
    /// This controller's writes for the pool that the snapshot does not show yet.
    pub in_flight: InFlight,
}

/// Writes made by earlier plans and not yet seen in the snapshot (the shell's expectations:
/// raised when it creates or deletes, lowered when the watch shows the result or the write
/// fails). While any is pending, a snapshot may miss members, so nothing is created and no
/// excess is deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Sandboxes created whose creation the snapshot does not show yet.
    pub creates: u32,
    /// UIDs of members deleted whose deletion the snapshot does not show yet (they count as
    /// terminating).
    pub deletes: BTreeSet<String>,
}

impl InFlight {
    /// Nothing pending: the snapshot shows every write.
    pub fn is_empty(&self) -> bool {
        self.creates == 0 && self.deletes.is_empty()
    }
}

/// What [`plan`] needs to know besides the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a member may stay not Ready after its creation before it is replaced.
    pub readiness_grace: Duration,
    /// How soon to look again while members are held unschedulable.
    pub unschedulable_recheck: Duration,
    /// How soon to look again while writes are in flight (watch events usually come first).
    pub in_flight_recheck: Duration,
    /// At most this many creations, and this many excess deletions, per pass.
    pub max_batch: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            readiness_grace: Duration::from_secs(5 * 60),
            unschedulable_recheck: Duration::from_secs(60),
            in_flight_recheck: Duration::from_secs(30),
            max_batch: 300,
        }
    }
}

/// Why a member is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Made from an older template, under `updateStrategy: Recreate` (or an uncontrolled one).
    Stale,
    /// Not Ready within the readiness grace period.
    Stuck,
    /// The pool has more members than `replicas`.
    Excess,
}

/// One change to make in the cluster. Applied in the order of [`Plan::actions`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create copies of `sandbox` (it has a `generateName`) in slow-start batches: the first
    /// `batches[0]` at once, then, when all of them were created, the next `batches[1]`, and
    /// so on; stop at the first batch with a failure.
    CreateSandboxes {
        /// The member to create.
        sandbox: Box<Sandbox>,
        /// Batch sizes, summing to the number to create.
        batches: Vec<u32>,
    },
    /// Take the uncontrolled Sandbox `name` into the pool (the patch carries its
    /// resourceVersion: if it changed, for instance a claim took it, the adoption fails).
    AdoptSandbox {
        /// The Sandbox.
        name: String,
        /// The change.
        patch: SandboxPatch,
    },
    /// Merge-patch the member `name` (its `launch-type` label).
    PatchSandbox {
        /// The Sandbox.
        name: String,
        /// The change.
        patch: SandboxPatch,
    },
    /// Delete the member `name`, on the precondition that its UID is still `uid`.
    DeleteSandbox {
        /// The Sandbox.
        name: String,
        /// The UID observed.
        uid: Option<String>,
        /// Why.
        reason: DeleteReason,
    },
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to change, in order.
    pub actions: Vec<Action>,
    /// The pool's status (it counts members before this plan's creations and excess deletions,
    /// as upstream does).
    pub status: SandboxWarmPoolStatus,
    /// Reconcile again after this long even if nothing is observed to change: at the earliest
    /// readiness deadline of a member, while members are unschedulable, or while writes are
    /// in flight.
    pub requeue_after: Option<Duration>,
    /// Why the pool cannot reach `replicas`, for the shell to report (an Event, a log line):
    /// a missing template, unschedulable members.
    pub problems: Vec<String>,
}

impl Plan {
    /// The status to write, or `None` when it equals `pool`'s.
    pub fn status_update(&self, pool: &SandboxWarmPool) -> Option<&SandboxWarmPoolStatus> {
        let unchanged = match &pool.status {
            Some(current) => *current == self.status,
            None => self.status == SandboxWarmPoolStatus::default(),
        };
        (!unchanged).then_some(&self.status)
    }
}

/// The label selector of a pool's members, as `status.selector` writes it:
/// `agents.x-k8s.io/warm-pool-sandbox=<hash of the pool's name>`.
pub fn selector(pool_name: &str) -> String {
    format!("{WARM_POOL_SANDBOX}={}", name_hash(pool_name))
}

/// Batch sizes to create `count` members with: 1, 2, 4, ... the last one what is left.
pub fn slow_start_batches(count: u32) -> Vec<u32> {
    let mut batches = Vec::new();
    let (mut left, mut size) = (count, 1u32);
    while left > 0 {
        let batch = size.min(left);
        batches.push(batch);
        left -= batch;
        size = size.saturating_mul(2);
    }
    batches
}

/// The hash of what a member is made from (pod template, volume claim templates, service), as
/// 8 hex digits: the value of [`POD_TEMPLATE_HASH`].
pub fn template_hash(template: &SandboxTemplateSpec) -> String {
    let parts = (
        &template.pod_template,
        &template.volume_claim_templates,
        &template.service,
    );
    name_hash(&serde_json::to_string(&parts).unwrap_or_default())
}

/// A new member of the pool `pool_name` (UID `pool_uid`) in `namespace`, made from `template`.
pub fn member(
    pool_name: &str,
    pool_uid: &str,
    namespace: &str,
    template: &SandboxTemplate,
) -> Sandbox {
    let template_name = template.metadata.name.as_deref().unwrap_or_default();
    let pool_hash = name_hash(pool_name);
    let ref_hash = name_hash(template_name);
    let hash = template_hash(&template.spec);
    let mut spec = sandbox_spec(&template.spec);
    let pod_labels = &mut spec.pod_template.metadata.labels;
    pod_labels.insert(WARM_POOL_SANDBOX.into(), pool_hash.clone());
    pod_labels.insert(SANDBOX_TEMPLATE_REF_HASH.into(), ref_hash.clone());
    pod_labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut sandbox = Sandbox::new("", spec);
    sandbox.metadata = ObjectMeta {
        generate_name: Some(format!("{pool_name}-")),
        namespace: Some(namespace.to_owned()),
        labels: Some(
            [
                (WARM_POOL_SANDBOX, pool_hash),
                (SANDBOX_TEMPLATE_REF_HASH, ref_hash),
                (LAUNCH_TYPE, LAUNCH_TYPE_WARM.to_owned()),
                (POD_TEMPLATE_HASH, hash),
                (CREATED_BY, CREATED_BY_CONTROLLER.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ),
        annotations: Some(
            [(
                SANDBOX_TEMPLATE_REF_ANNOTATION.to_owned(),
                template_name.to_owned(),
            )]
            .into(),
        ),
        owner_references: Some(vec![controller_reference::<SandboxWarmPool>(
            pool_name, pool_uid,
        )]),
        ..ObjectMeta::default()
    };
    sandbox
}

/// Whether `sandbox` was made from something other than `template`: another template, or,
/// when its [`POD_TEMPLATE_HASH`] differs (or it is uncontrolled), a pod spec, volume claim
/// templates (names and specs, in order) or service that no longer match the template's.
pub fn stale(sandbox: &Sandbox, template: &SandboxTemplate) -> bool {
    let name = template.metadata.name.as_deref().unwrap_or_default();
    if label(&sandbox.metadata, SANDBOX_TEMPLATE_REF_HASH) != Some(name_hash(name).as_str()) {
        return true;
    }
    let controlled = super::ownership::controller_of(&sandbox.metadata).is_some();
    if controlled
        && label(&sandbox.metadata, POD_TEMPLATE_HASH)
            == Some(template_hash(&template.spec).as_str())
    {
        return false;
    }
    let want = sandbox_spec(&template.spec);
    let have = &sandbox.spec;
    let same_volumes = have.volume_claim_templates.len() == want.volume_claim_templates.len()
        && have
            .volume_claim_templates
            .iter()
            .zip(&want.volume_claim_templates)
            .all(|(a, b)| a.metadata.name == b.metadata.name && a.spec == b.spec);
    !(have.pod_template.spec == want.pod_template.spec
        && same_volumes
        && have.service == want.service)
}

/// Decides what to do for `pool`, given what is `observed` for it, at `now`.
///
/// Deterministic: the same inputs give the same plan; a full, fresh, Ready pool gives none.
pub fn plan(
    pool: &SandboxWarmPool,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Result<Plan, MissingMetadata> {
    let meta = &pool.metadata;
    let name = required(&meta.name, "SandboxWarmPool", "name")?;
    let namespace = required(&meta.namespace, "SandboxWarmPool", "namespace")?;
    let uid = required(&meta.uid, "SandboxWarmPool", "uid")?;
    let current = pool.status.clone().unwrap_or_default();
    let mut plan = Plan {
        actions: Vec::new(),
        status: current,
        requeue_after: None,
        problems: Vec::new(),
    };
    if terminating(meta) {
        return Ok(plan);
    }
    let pool_hash = name_hash(name);
    let template = observed.template.as_ref();
    let recreate = pool
        .spec
        .update_strategy
        .as_ref()
        .is_some_and(|s| s.strategy_type == UpdateStrategyType::Recreate);

    let mut active: Vec<&Sandbox> = Vec::new();
    let mut terminating_members = 0u32;
    for sb in &observed.sandboxes {
        if label(&sb.metadata, WARM_POOL_SANDBOX) != Some(pool_hash.as_str()) {
            continue;
        }
        let owner = ownership(&sb.metadata, uid);
        let ours = owner == Ownership::Controlled;
        let orphan = owner == Ownership::Uncontrolled;
        let pending_delete = sb
            .metadata
            .uid
            .as_ref()
            .is_some_and(|u| observed.in_flight.deletes.contains(u));
        if terminating(&sb.metadata) || (ours && pending_delete) {
            terminating_members += u32::from(ours);
            continue;
        }
        if !ours && !orphan {
            continue; // A claim (or someone else) has it: no longer a member.
        }
        if let Some(t) = template
            && (recreate || orphan)
            && stale(sb, t)
        {
            plan.actions.push(delete(sb, DeleteReason::Stale));
            terminating_members += u32::from(ours);
            continue;
        }
        let needs_label = label(&sb.metadata, LAUNCH_TYPE) != Some(LAUNCH_TYPE_WARM);
        let mut patch = SandboxPatch {
            resource_version: sb.metadata.resource_version.clone(),
            ..SandboxPatch::default()
        };
        if needs_label {
            patch
                .labels
                .insert(LAUNCH_TYPE.into(), Some(LAUNCH_TYPE_WARM.into()));
        }
        if orphan {
            let mut refs = sb.metadata.owner_references.clone().unwrap_or_default();
            refs.push(controller_reference::<SandboxWarmPool>(name, uid));
            patch.owner_references = Some(refs);
            plan.actions.push(Action::AdoptSandbox {
                name: object_name(sb),
                patch,
            });
        } else if !patch.is_empty() {
            plan.actions.push(Action::PatchSandbox {
                name: object_name(sb),
                patch,
            });
        }
        active.push(sb);
    }

    // Members that never became Ready.
    let grace = settings.readiness_grace;
    let mut next_deadline: Option<Duration> = None;
    let mut unschedulable = 0u32;
    let mut healthy: Vec<&Sandbox> = Vec::new();
    for sb in active {
        let created = sb.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let age = created.map(|c| Duration::try_from(c.duration_until(now)).unwrap_or_default());
        match age {
            Some(age) if !sandbox_ready(sb) => {
                if age <= grace {
                    let left = grace - age + Duration::from_secs(1);
                    next_deadline = Some(next_deadline.map_or(left, |d| d.min(left)));
                    healthy.push(sb);
                } else if pod_unschedulable(sb) {
                    unschedulable += 1;
                    healthy.push(sb);
                } else {
                    plan.actions.push(delete(sb, DeleteReason::Stuck));
                    terminating_members += 1;
                }
            }
            _ => healthy.push(sb),
        }
    }
    let active = healthy;

    let desired = u32::try_from(pool.spec.replicas).unwrap_or(0);
    let count = u32::try_from(active.len()).unwrap_or(u32::MAX);
    let total = count.saturating_add(terminating_members);
    let ready = active.iter().filter(|s| sandbox_ready(s)).count();
    plan.status = SandboxWarmPoolStatus {
        replicas: i32::try_from(count).unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(ready).unwrap_or(i32::MAX),
        selector: selector(name),
        observed_generation: meta.generation.unwrap_or_default(),
    };

    let mut requeue = next_deadline;
    let mut wait = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    let settled = observed.in_flight.is_empty();
    match template {
        None => plan.problems.push(format!(
            "SandboxTemplate {:?} not found: no sandboxes are created for the pool",
            pool.spec.sandbox_template_ref.name
        )),
        Some(_) if total >= desired => {}
        Some(_) if !settled => wait(settings.in_flight_recheck),
        Some(t) => {
            let n = (desired - total).min(settings.max_batch);
            plan.actions.push(Action::CreateSandboxes {
                sandbox: Box::new(member(name, uid, namespace, t)),
                batches: slow_start_batches(n),
            });
        }
    }
    if count > desired {
        if settled {
            let mut excess = active.clone();
            excess.sort_by(|a, b| {
                let created = |s: &Sandbox| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
                sandbox_ready(a)
                    .cmp(&sandbox_ready(b))
                    .then_with(|| created(b).cmp(&created(a)))
                    .then_with(|| b.metadata.name.cmp(&a.metadata.name))
            });
            let n = (count - desired).min(settings.max_batch) as usize;
            for sb in excess.into_iter().take(n) {
                plan.actions.push(delete(sb, DeleteReason::Excess));
            }
        } else {
            wait(settings.in_flight_recheck);
        }
    }
    if unschedulable > 0 {
        plan.problems.push(format!(
            "{unschedulable}/{desired} sandboxes are unschedulable past the {}s readiness grace \
             period; they are kept, since replacements would be unschedulable too",
            grace.as_secs()
        ));
        wait(settings.unschedulable_recheck);
    }
    plan.requeue_after = requeue;
    Ok(plan)
}

/// Whether the Sandbox's pod cannot be scheduled: its `PodScheduled` (copied from the pod) is
/// False with reason Unschedulable.
fn pod_unschedulable(sb: &Sandbox) -> bool {
    sb.status.as_ref().is_some_and(|s| {
        conditions::find(&s.conditions, types::POD_SCHEDULED)
            .is_some_and(|c| c.status == FALSE && c.reason == UNSCHEDULABLE)
    })
}

fn delete(sb: &Sandbox, reason: DeleteReason) -> Action {
    Action::DeleteSandbox {
        name: object_name(sb),
        uid: sb.metadata.uid.clone(),
        reason,
    }
}

fn object_name(sb: &Sandbox) -> String {
    sb.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests;
