//! Reconciling one `SandboxClaim` (`extensions.agents.x-k8s.io/v1beta1`) as upstream's claim
//! controller does: [`plan`] takes the claim, its warm pool, the pool's template and the
//! Sandboxes observed for it, and the time, and returns the [`Action`]s to apply, the status to
//! write and when to look again.
//!
//! # Binding
//!
//! A claim is bound to one Sandbox, found or made in this order:
//! 1. the Sandbox named in `status.sandbox.name`, if the claim controls it;
//! 2. a Sandbox labelled `agents.x-k8s.io/claim-uid=<claim uid>`: one the claim controls (its
//!    status write was lost), or an interrupted adoption, still controlled by a warm pool, whose
//!    adoption is completed;
//! 3. the Sandbox named after the claim, if the claim controls it (one it does not control is
//!    an error: the claim cannot have its name);
//! 4. a claim with `env` or `volumeClaimTemplates` skips the pool (its pods were started without
//!    them) and starts cold;
//! 5. one of the oldest Ready members of the `warmPoolRef` pool (the claim's UID picks among
//!    the [`ADOPTION_SPREAD`] oldest, so concurrent claims rarely collide) is adopted: one
//!    merge patch, on the member's resourceVersion (so a concurrent adoption by another claim fails with a
//!    conflict, see [`status_after_failure`]), drops the pool's labels, sets
//!    `launch-type=warm`, `claim-uid`, `sandbox-template-ref-hash` and `created-by`, replaces the
//!    pool's controller reference by the claim's, and sets the pod template's labels and
//!    annotations;
//! 6. otherwise a Sandbox named after the claim is created cold from the pool's template, with
//!    the template's secure defaults, the claim's `env` (as the template's
//!    `envVarsInjectionPolicy` allows), volume claim templates (as `volumeClaimTemplatesPolicy`
//!    allows) and `additionalPodMetadata`.
//!
//! A missing warm pool or template stops only what needs it (adoption, cold creation): the
//! claim is Ready=False with WarmPoolNotFound or TemplateNotFound, nothing is created, and the
//! plan asks to look again after [`Settings::dependency_retry`].
//!
//! # Status
//!
//! `status.sandbox` holds the bound Sandbox's name and pod IPs. `Ready` mirrors the Sandbox's
//! (SandboxNotReady when it has none, SandboxExpired when the Sandbox expired on its own,
//! SandboxCreatePending while the Sandbox is being created) or says why there is no Sandbox;
//! `Finished` is the Sandbox's, copied.
//!
//! # Lifecycle
//!
//! The claim expires at the earlier of `lifecycle.shutdownTime` and its `Finished` condition's
//! transition time plus `ttlSecondsAfterFinished`. The first pass after that only marks it
//! (Ready=False ClaimExpired) and asks to be called again at once; then `shutdownPolicy` decides:
//! Delete deletes the claim (garbage collection takes its Sandbox), DeleteForeground deletes it
//! in the foreground (it stays until its Sandbox is gone), Retain deletes the Sandbox the claim
//! controls and keeps the claim, expired.
//!
//! # Where this differs from upstream or compat.md
//!
//! - Upstream now records an adoption in progress in an annotation on the claim and falls back
//!   to an unready pool member when no member is Ready; this follows compat.md's v1.0
//!   description (the `claim-uid` label marks the adoption; only Ready members are adopted).
//! - Upstream reports a refused variable override as ReconcilerError; here every refusal by
//!   `envVarsInjectionPolicy` is EnvVarsInjectionRejected.
//! - Upstream's newest controller also requires claim label keys to be in an allowlist of
//!   domains; here only the reserved domains are refused (`kubernetes.io`, `k8s.io`,
//!   `agents.x-k8s.io` and their subdomains), as well as `app: sandbox-router`, which would let
//!   a pod pose as the router in the template's NetworkPolicy.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::conditions::{self, FALSE, TRUE, condition};
use super::ownership::{Ownership, controlled_by_kind, controller_reference, ownership};
use super::template::{apply_secure_defaults, sandbox_spec};
use super::warm_pool::POD_TEMPLATE_HASH;
use super::{
    MissingMetadata, SandboxPatch, label, labels_of, map_diff, required, sandbox_ready, terminating,
};
use crate::crd::conditions::{claim as reason, sandbox as sandbox_reason, types};
use crate::crd::labels::{
    CLAIM_UID, CREATED_BY, LAUNCH_TYPE, LAUNCH_TYPE_COLD, LAUNCH_TYPE_WARM,
    SANDBOX_TEMPLATE_REF_ANNOTATION, SANDBOX_TEMPLATE_REF_HASH, WARM_POOL_SANDBOX, name_hash,
};
use crate::crd::{
    ClaimEnvVar, ClaimShutdownPolicy, EnvVarsInjectionPolicy, PersistentVolumeClaimTemplate,
    PodMetadata, Sandbox, SandboxClaim, SandboxClaimStatus, SandboxTemplate, SandboxWarmPool,
    VolumeClaimTemplatesPolicy,
};

/// Label and annotation domains a claim may not set on its pod (nor their subdomains).
pub const RESERVED_DOMAINS: [&str; 3] = ["kubernetes.io", "k8s.io", "agents.x-k8s.io"];
/// Keys in a reserved domain that a claim may still set.
pub const EXEMPT_KEYS: [&str; 1] = ["cluster-autoscaler.kubernetes.io/safe-to-evict"];

/// What the claim controller reads from the cluster for one claim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The SandboxWarmPool named by `spec.warmPoolRef`, if it exists.
    pub warm_pool: Option<SandboxWarmPool>,
    /// The SandboxTemplate named by that pool's `sandboxTemplateRef`, if both exist.
    pub template: Option<SandboxTemplate>,
    /// The Sandboxes of the claim's namespace that may bind to it: the one named in
    /// `status.sandbox.name`, the one named after the claim, those labelled
    /// `agents.x-k8s.io/claim-uid=<claim uid>`, and the pool's members (labelled
    /// `agents.x-k8s.io/warm-pool-sandbox=<hash of the pool's name>`). Others are ignored.
    pub sandboxes: Vec<Sandbox>,
}

/// What [`plan`] needs to know besides the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long to wait before looking again for a missing warm pool or template (upstream:
    /// one minute; their creation does not wake the claim).
    pub dependency_retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dependency_retry: Duration::from_secs(60),
        }
    }
}

/// How a claim is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The claim goes at once; garbage collection deletes its Sandbox after.
    Background,
    /// The claim stays, being deleted, until its Sandbox (and the Sandbox's pod) are gone.
    Foreground,
}

/// One change to make in the cluster. Applied in the order of [`Plan::actions`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this Sandbox (named after the claim, controlled by it).
    CreateSandbox(Box<Sandbox>),
    /// Adopt the warm-pool Sandbox `name`: merge-patch it with `patch`, whose resourceVersion
    /// precondition makes a concurrent adoption fail with 409 Conflict.
    AdoptSandbox {
        /// The Sandbox.
        name: String,
        /// The change, with the resourceVersion observed.
        patch: SandboxPatch,
    },
    /// Merge-patch the bound Sandbox `name` to keep its labels and pod metadata in line with
    /// the claim and template.
    PatchSandbox {
        /// The Sandbox.
        name: String,
        /// The change, with the resourceVersion observed.
        patch: SandboxPatch,
    },
    /// Delete the Sandbox `name`, on the precondition that its UID is still `uid`.
    DeleteSandbox {
        /// The Sandbox.
        name: String,
        /// The UID observed: a Sandbox made since under that name is not touched.
        uid: Option<String>,
    },
    /// Delete the claim itself (it expired under `shutdownPolicy` Delete or DeleteForeground).
    DeleteClaim(Propagation),
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to change, in order.
    pub actions: Vec<Action>,
    /// The claim's status once the actions are applied; the current one when nothing changed.
    pub status: SandboxClaimStatus,
    /// Reconcile again after this long even if nothing is observed to change: at expiry, at
    /// once after marking the claim expired, or after [`Settings::dependency_retry`] while
    /// the warm pool or template is missing.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// The status to write, or `None` when it equals `claim`'s.
    pub fn status_update(&self, claim: &SandboxClaim) -> Option<&SandboxClaimStatus> {
        let unchanged = match &claim.status {
            Some(current) => *current == self.status,
            None => self.status == SandboxClaimStatus::default(),
        };
        (!unchanged).then_some(&self.status)
    }
}

/// How applying an action of a [`Plan`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFailure {
    /// 409 Conflict: the object changed since it was read (another claim adopted it first).
    Conflict(String),
    /// Anything else.
    Error(String),
}

/// `status` with Ready=False after `failed` could not be applied: AdoptionConflict when an
/// adoption lost a race (look again at once: another member may be free), ReconcilerError
/// otherwise. Returns the status and how soon to look again (`None`: the shell's backoff).
pub fn status_after_failure(
    status: &SandboxClaimStatus,
    generation: Option<i64>,
    failed: &Action,
    failure: &ActionFailure,
    now: Timestamp,
) -> (SandboxClaimStatus, Option<Duration>) {
    let (why, message, retry) = match (failed, failure) {
        (Action::AdoptSandbox { name, .. }, ActionFailure::Conflict(m)) => (
            reason::ADOPTION_CONFLICT,
            format!("Sandbox {name:?} was changed or adopted by someone else first: {m}"),
            Some(Duration::ZERO),
        ),
        (_, ActionFailure::Conflict(m) | ActionFailure::Error(m)) => {
            (reason::RECONCILER_ERROR, format!("Error seen: {m}"), None)
        }
    };
    let mut status = status.clone();
    conditions::set(
        &mut status.conditions,
        condition(
            types::READY,
            FALSE,
            why,
            message,
            generation,
            conditions::whole_seconds(now),
        ),
    );
    (status, retry)
}

/// When `claim` expires given its `conditions`: the earlier of `lifecycle.shutdownTime` and
/// the True `Finished` condition's transition time plus `ttlSecondsAfterFinished`. `None`
/// without a lifecycle, or while neither applies.
pub fn expiry(claim: &SandboxClaim, conditions: &[Condition]) -> Option<Timestamp> {
    let lifecycle = claim.spec.lifecycle.as_ref()?;
    let at_shutdown = lifecycle.shutdown_time.as_ref().map(|t| t.0);
    let after_finish = lifecycle.ttl_seconds_after_finished.and_then(|ttl| {
        let finished =
            conditions::find(conditions, types::FINISHED).filter(|c| c.status == TRUE)?;
        finished
            .last_transition_time
            .0
            .checked_add(SignedDuration::from_secs(i64::from(ttl.max(0))))
            .ok()
    });
    match (at_shutdown, after_finish) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Decides what to do for `claim`, given what is `observed` for it, at `now`.
///
/// Deterministic: the same inputs give the same plan; once the cluster matches the claim, the
/// plan has no actions and the status is the current one (transition times kept).
pub fn plan(
    claim: &SandboxClaim,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Result<Plan, MissingMetadata> {
    let id = Identity::of(claim)?;
    let current = claim.status.clone().unwrap_or_default();
    if terminating(&claim.metadata) {
        return Ok(Plan {
            actions: Vec::new(),
            status: current,
            requeue_after: None,
        });
    }
    let stamp = conditions::whole_seconds(now);
    if expiry(claim, &current.conditions).is_some_and(|t| now >= t) {
        return Ok(expire(claim, &id, observed, current, stamp));
    }

    let mut active = Active {
        claim,
        id: &id,
        observed,
        actions: Vec::new(),
    };
    let outcome = active.bind();
    let mut status = current;
    let retry = matches!(
        &outcome,
        Outcome::Failed { reason: why, .. }
            if *why == reason::WARM_POOL_NOT_FOUND || *why == reason::TEMPLATE_NOT_FOUND
    )
    .then_some(settings.dependency_retry);
    set_status(&mut status, &outcome, id.generation, stamp);

    // Mirroring the Sandbox's Finished may have just started the TTL.
    let requeue_after = match expiry(claim, &status.conditions) {
        Some(t) if now >= t => {
            conditions::set(
                &mut status.conditions,
                expired_condition(CLEANUP_MESSAGE.into(), id.generation, stamp),
            );
            Some(Duration::ZERO)
        }
        Some(t) => {
            let left = Duration::try_from(now.duration_until(t)).unwrap_or(Duration::ZERO);
            Some(retry.map_or(left, |r| r.min(left)))
        }
        None => retry,
    };
    Ok(Plan {
        actions: active.actions,
        status,
        requeue_after,
    })
}

const CLEANUP_MESSAGE: &str = "Claim expired. Sandbox cleanup initiated.";

/// What every object made for a claim derives from.
struct Identity<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    generation: Option<i64>,
    created_by: Option<&'a str>,
}

impl<'a> Identity<'a> {
    fn of(claim: &'a SandboxClaim) -> Result<Self, MissingMetadata> {
        let meta = &claim.metadata;
        Ok(Self {
            name: required(&meta.name, "SandboxClaim", "name")?,
            namespace: required(&meta.namespace, "SandboxClaim", "namespace")?,
            uid: required(&meta.uid, "SandboxClaim", "uid")?,
            generation: meta.generation,
            created_by: label(meta, CREATED_BY).filter(|v| !v.is_empty()),
        })
    }

    fn controls(&self, meta: &ObjectMeta) -> bool {
        ownership(meta, self.uid) == Ownership::Controlled
    }

    /// The claim's identity labels on `labels`: its UID, and its `created-by` (removed when the
    /// claim has none, so a warm member's does not linger).
    fn identity_labels(&self, labels: &mut BTreeMap<String, String>) {
        labels.insert(CLAIM_UID.into(), self.uid.to_owned());
        match self.created_by {
            Some(by) => labels.insert(CREATED_BY.into(), by.to_owned()),
            None => labels.remove(CREATED_BY),
        };
    }
}

/// How the claim stands after binding.
enum Outcome<'a> {
    /// Bound to this Sandbox (found, or adopted by this plan).
    Bound(&'a Sandbox),
    /// A Sandbox of this name is created by this plan.
    Creating(String),
    /// No Sandbox can be bound: Ready=False with this reason and message.
    Failed {
        reason: &'static str,
        message: String,
    },
}

fn failed(why: &'static str, message: impl Into<String>) -> Outcome<'static> {
    Outcome::Failed {
        reason: why,
        message: message.into(),
    }
}

/// The branch of a claim that has not expired.
struct Active<'a> {
    claim: &'a SandboxClaim,
    id: &'a Identity<'a>,
    observed: &'a Observed,
    actions: Vec<Action>,
}

impl<'a> Active<'a> {
    fn bind(&mut self) -> Outcome<'a> {
        let problems = validate_pod_metadata(&self.claim.spec.additional_pod_metadata);
        if !problems.is_empty() {
            return failed(reason::INVALID_METADATA, problems.join("; "));
        }
        let observed = self.observed;
        let named = |name: &str| {
            observed
                .sandboxes
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
        };

        // 1. The Sandbox the status names.
        let in_status = self
            .claim
            .status
            .as_ref()
            .map(|s| s.sandbox.name.as_str())
            .filter(|n| !n.is_empty());
        if let Some(sb) = in_status.and_then(&named)
            && self.id.controls(&sb.metadata)
        {
            return self.keep(sb, None);
        }

        // 2. One labelled with the claim's UID: bound already, or an adoption to finish.
        let labelled: Vec<&'a Sandbox> = observed
            .sandboxes
            .iter()
            .filter(|s| label(&s.metadata, CLAIM_UID) == Some(self.id.uid))
            .collect();
        if let Some(sb) = labelled.iter().find(|s| self.id.controls(&s.metadata)) {
            return self.keep(sb, None);
        }
        if let Some(sb) = labelled.iter().find(|s| {
            controlled_by_kind::<SandboxWarmPool>(&s.metadata) && !terminating(&s.metadata)
        }) {
            return self.adopt(sb);
        }

        // 3. The one named after the claim.
        if let Some(sb) = named(self.id.name) {
            if self.id.controls(&sb.metadata) {
                return self.keep(sb, Some(LAUNCH_TYPE_COLD));
            }
            return failed(
                reason::RECONCILER_ERROR,
                format!(
                    "Error seen: Sandbox {:?} is not controlled by claim {:?}. Please use a \
                     different claim name or delete the Sandbox manually",
                    self.id.name, self.id.name
                ),
            );
        }

        let spec = &self.claim.spec;
        let Some(pool) = &observed.warm_pool else {
            return failed(
                reason::WARM_POOL_NOT_FOUND,
                format!("SandboxWarmPool {:?} not found", spec.warm_pool_ref.name),
            );
        };

        // 4 and 5. Claims with their own env or volumes start cold; the others take a member.
        if spec.env.is_empty()
            && spec.volume_claim_templates.is_empty()
            && let Some(sb) = adoptable(pool, &observed.sandboxes, self.id.uid)
        {
            return self.adopt(sb);
        }

        // 6. Cold.
        let Some(template) = &observed.template else {
            return failed(
                reason::TEMPLATE_NOT_FOUND,
                format!(
                    "SandboxTemplate {:?} of SandboxWarmPool {:?} not found",
                    pool.spec.sandbox_template_ref.name, spec.warm_pool_ref.name
                ),
            );
        };
        match cold_sandbox(self.claim, self.id, template) {
            Ok(sb) => {
                self.actions.push(Action::CreateSandbox(Box::new(sb)));
                Outcome::Creating(self.id.name.to_owned())
            }
            Err(outcome) => outcome,
        }
    }

    /// Binds `sb`, keeping its labels and pod metadata in line with the claim and template.
    /// `launch_type` is what an unlabelled Sandbox gets (cold when it has the claim's name).
    fn keep(&mut self, sb: &'a Sandbox, launch_type: Option<&str>) -> Outcome<'a> {
        if terminating(&sb.metadata) {
            return Outcome::Bound(sb);
        }
        let mut patch = SandboxPatch {
            resource_version: sb.metadata.resource_version.clone(),
            ..SandboxPatch::default()
        };
        if label(&sb.metadata, LAUNCH_TYPE).is_none() {
            let launch =
                launch_type.unwrap_or(if sb.metadata.name.as_deref() == Some(self.id.name) {
                    LAUNCH_TYPE_COLD
                } else {
                    LAUNCH_TYPE_WARM
                });
            patch
                .labels
                .insert(LAUNCH_TYPE.into(), Some(launch.to_owned()));
        }
        match &self.observed.template {
            Some(template) => {
                let hash = name_hash(template_name(template));
                let mut want = template.spec.pod_template.metadata.clone();
                self.id.identity_labels(&mut want.labels);
                want.labels
                    .insert(SANDBOX_TEMPLATE_REF_HASH.into(), hash.clone());
                if let Err(conflict) =
                    merge_pod_metadata(&mut want, &self.claim.spec.additional_pod_metadata)
                {
                    return failed(reason::RECONCILER_ERROR, format!("Error seen: {conflict}"));
                }
                let have = &sb.spec.pod_template.metadata;
                patch.pod_labels = map_diff(&have.labels, &want.labels);
                patch.pod_annotations = map_diff(&have.annotations, &want.annotations);
                if label(&sb.metadata, SANDBOX_TEMPLATE_REF_HASH) != Some(hash.as_str()) {
                    patch
                        .labels
                        .insert(SANDBOX_TEMPLATE_REF_HASH.into(), Some(hash));
                }
                let created_by = label(&sb.metadata, CREATED_BY);
                if created_by != self.id.created_by {
                    patch
                        .labels
                        .insert(CREATED_BY.into(), self.id.created_by.map(str::to_owned));
                }
            }
            None if !self.claim.spec.additional_pod_metadata.is_empty() => {
                return failed(
                    reason::RECONCILER_ERROR,
                    "Error seen: the warm pool's SandboxTemplate is needed to apply \
                     additionalPodMetadata, and it is not found",
                );
            }
            None => {}
        }
        if !patch.is_empty() {
            self.actions.push(Action::PatchSandbox {
                name: object_name(sb),
                patch,
            });
        }
        Outcome::Bound(sb)
    }

    /// Moves the warm-pool Sandbox `sb` to the claim.
    fn adopt(&mut self, sb: &'a Sandbox) -> Outcome<'a> {
        let id = self.id;
        let template = self.observed.template.as_ref();
        let have_labels = labels_of(&sb.metadata);
        let mut labels = have_labels.clone();
        labels.remove(WARM_POOL_SANDBOX);
        labels.remove(POD_TEMPLATE_HASH);
        labels.insert(LAUNCH_TYPE.into(), LAUNCH_TYPE_WARM.into());
        id.identity_labels(&mut labels);
        let hash = label(&sb.metadata, SANDBOX_TEMPLATE_REF_HASH)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .or_else(|| template.map(|t| name_hash(template_name(t))));
        if let Some(hash) = &hash {
            labels.insert(SANDBOX_TEMPLATE_REF_HASH.into(), hash.clone());
        }

        let mut pod = match template {
            Some(t) => t.spec.pod_template.metadata.clone(),
            None => sb.spec.pod_template.metadata.clone(),
        };
        id.identity_labels(&mut pod.labels);
        if let Some(hash) = hash {
            pod.labels.insert(SANDBOX_TEMPLATE_REF_HASH.into(), hash);
        }
        if let Err(conflict) =
            merge_pod_metadata(&mut pod, &self.claim.spec.additional_pod_metadata)
        {
            return failed(reason::RECONCILER_ERROR, format!("Error seen: {conflict}"));
        }
        let have_pod = &sb.spec.pod_template.metadata;
        self.actions.push(Action::AdoptSandbox {
            name: object_name(sb),
            patch: SandboxPatch {
                resource_version: sb.metadata.resource_version.clone(),
                labels: map_diff(&have_labels, &labels),
                annotations: BTreeMap::new(),
                owner_references: Some(vec![controller_reference::<SandboxClaim>(id.name, id.uid)]),
                pod_labels: map_diff(&have_pod.labels, &pod.labels),
                pod_annotations: map_diff(&have_pod.annotations, &pod.annotations),
            },
        });
        Outcome::Bound(sb)
    }
}

/// How many of the oldest Ready members a claim chooses among: concurrent claims (the
/// controller reconciles several at once) then rarely race for the same member.
pub const ADOPTION_SPREAD: usize = 16;

/// A Ready member of `pool` that nobody is adopting (controlled by the pool, labelled with its
/// name hash, not being deleted, not labelled with a claim's UID): among the
/// [`ADOPTION_SPREAD`] oldest, the one the claim's UID picks, so the choice is deterministic
/// for a claim and spread across claims.
fn adoptable<'a>(
    pool: &SandboxWarmPool,
    sandboxes: &'a [Sandbox],
    claim_uid: &str,
) -> Option<&'a Sandbox> {
    let uid = pool.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    let hash = name_hash(pool.metadata.name.as_deref().unwrap_or_default());
    let mut ready: Vec<&Sandbox> = sandboxes
        .iter()
        .filter(|s| {
            ownership(&s.metadata, uid) == Ownership::Controlled
                && label(&s.metadata, WARM_POOL_SANDBOX) == Some(hash.as_str())
                && label(&s.metadata, CLAIM_UID).is_none()
                && !terminating(&s.metadata)
                && sandbox_ready(s)
        })
        .collect();
    ready.sort_by(|a, b| {
        let created = |s: &Sandbox| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let window = ready.len().min(ADOPTION_SPREAD);
    if window == 0 {
        return None;
    }
    let pick = u32::from_str_radix(&name_hash(claim_uid), 16).unwrap_or(0) as usize % window;
    ready.get(pick).copied()
}

/// The Sandbox a claim starts cold, or why it cannot.
fn cold_sandbox(
    claim: &SandboxClaim,
    id: &Identity<'_>,
    template: &SandboxTemplate,
) -> Result<Sandbox, Outcome<'static>> {
    let tspec = &template.spec;
    let mut spec = sandbox_spec(tspec);
    let vcts_error = |m: String| failed(reason::VOLUME_CLAIM_TEMPLATES_ERROR, m);
    if claim.spec.volume_claim_templates.is_empty() {
        if let Err(m) = validate_volume_claim_templates(&tspec.volume_claim_templates) {
            return Err(vcts_error(format!(
                "invalid volume claim templates in template: {m}"
            )));
        }
    } else {
        spec.volume_claim_templates = merge_volume_claim_templates(
            &tspec.volume_claim_templates,
            &claim.spec.volume_claim_templates,
            tspec.volume_claim_templates_policy,
        )
        .map_err(vcts_error)?;
    }

    let hash = name_hash(template_name(template));
    let metadata = &mut spec.pod_template.metadata;
    id.identity_labels(&mut metadata.labels);
    metadata
        .labels
        .insert(SANDBOX_TEMPLATE_REF_HASH.into(), hash.clone());
    merge_pod_metadata(metadata, &claim.spec.additional_pod_metadata)
        .map_err(|m| failed(reason::RECONCILER_ERROR, format!("Error seen: {m}")))?;

    inject_env(
        &mut spec.pod_template.spec,
        claim,
        tspec.env_vars_injection_policy,
    )?;
    // Injection may have touched nothing the defaults look at, but apply them last, as upstream.
    apply_secure_defaults(tspec, &mut spec.pod_template.spec);

    let mut labels = BTreeMap::new();
    id.identity_labels(&mut labels);
    labels.insert(LAUNCH_TYPE.into(), LAUNCH_TYPE_COLD.into());
    labels.insert(SANDBOX_TEMPLATE_REF_HASH.into(), hash);
    let mut sandbox = Sandbox::new(id.name, spec);
    sandbox.metadata = ObjectMeta {
        name: Some(id.name.to_owned()),
        namespace: Some(id.namespace.to_owned()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            SANDBOX_TEMPLATE_REF_ANNOTATION.to_owned(),
            template_name(template).to_owned(),
        )])),
        owner_references: Some(vec![controller_reference::<SandboxClaim>(id.name, id.uid)]),
        ..ObjectMeta::default()
    };
    Ok(sandbox)
}

/// Puts the claim's `env` into the pod as `policy` allows: variables without a container go to
/// the first container, the others to the (init) container of that name.
fn inject_env(
    pod: &mut PodSpec,
    claim: &SandboxClaim,
    policy: EnvVarsInjectionPolicy,
) -> Result<(), Outcome<'static>> {
    let env = &claim.spec.env;
    if env.is_empty() {
        return Ok(());
    }
    let rejected = |m: String| failed(reason::ENV_VARS_INJECTION_REJECTED, m);
    if policy == EnvVarsInjectionPolicy::Disallowed {
        return Err(rejected(
            "environment variable injection is not allowed by the template policy \
             (envVarsInjectionPolicy: Disallowed)"
                .into(),
        ));
    }
    for var in env {
        let known = var.container_name.is_empty()
            || pod
                .init_containers
                .iter()
                .flatten()
                .chain(&pod.containers)
                .any(|c| c.name == var.container_name);
        if !known {
            return Err(failed(
                reason::RECONCILER_ERROR,
                format!(
                    "Error seen: target container {:?} not found in template for environment \
                     variable {:?}",
                    var.container_name, var.name
                ),
            ));
        }
    }
    let init = pod.init_containers.iter_mut().flatten().map(|c| (c, false));
    let main = pod
        .containers
        .iter_mut()
        .enumerate()
        .map(|(i, c)| (c, i == 0));
    for (c, is_first) in init.chain(main) {
        let vars: Vec<&ClaimEnvVar> = env
            .iter()
            .filter(|v| v.container_name == c.name || (is_first && v.container_name.is_empty()))
            .collect();
        if vars.is_empty() {
            continue;
        }
        if policy == EnvVarsInjectionPolicy::Allowed
            && c.env_from.as_ref().is_some_and(|f| !f.is_empty())
        {
            return Err(rejected(format!(
                "container {:?} uses envFrom sources; envVarsInjectionPolicy Allowed cannot \
                 prevent overriding the variables they provide",
                c.name
            )));
        }
        let list = c.env.get_or_insert_with(Vec::new);
        for v in vars {
            let new = EnvVar {
                name: v.name.clone(),
                value: Some(v.value.clone()),
                value_from: None,
            };
            match list.iter_mut().find(|e| e.name == v.name) {
                Some(_) if policy != EnvVarsInjectionPolicy::Overrides => {
                    return Err(rejected(format!(
                        "environment variable {:?} is set by the template; overriding it needs \
                         envVarsInjectionPolicy: Overrides",
                        v.name
                    )));
                }
                Some(existing) => *existing = new,
                None => list.push(new),
            }
        }
    }
    Ok(())
}

/// The template's volume claim templates with the claim's, as `policy` allows: Allowed adds
/// new names only, Overrides also replaces the template's of the same name.
fn merge_volume_claim_templates(
    template: &[PersistentVolumeClaimTemplate],
    claim: &[PersistentVolumeClaimTemplate],
    policy: VolumeClaimTemplatesPolicy,
) -> Result<Vec<PersistentVolumeClaimTemplate>, String> {
    validate_volume_claim_templates(template).map_err(|m| format!("template: {m}"))?;
    validate_volume_claim_templates(claim).map_err(|m| format!("claim: {m}"))?;
    let in_template = |name: &str| template.iter().any(|t| t.metadata.name == name);
    match policy {
        VolumeClaimTemplatesPolicy::Disallowed => {
            Err("volume claim templates are disallowed by the template \
             (volumeClaimTemplatesPolicy: Disallowed)"
                .into())
        }
        VolumeClaimTemplatesPolicy::Allowed => {
            if let Some(c) = claim.iter().find(|c| in_template(&c.metadata.name)) {
                return Err(format!(
                    "overriding the template's volume claim template {:?} needs \
                     volumeClaimTemplatesPolicy: Overrides",
                    c.metadata.name
                ));
            }
            Ok(template.iter().chain(claim).cloned().collect())
        }
        VolumeClaimTemplatesPolicy::Overrides => {
            let mut merged: Vec<PersistentVolumeClaimTemplate> = template
                .iter()
                .map(|t| {
                    claim
                        .iter()
                        .find(|c| c.metadata.name == t.metadata.name)
                        .unwrap_or(t)
                        .clone()
                })
                .collect();
            merged.extend(
                claim
                    .iter()
                    .filter(|c| !in_template(&c.metadata.name))
                    .cloned(),
            );
            Ok(merged)
        }
    }
}

/// Every volume claim template has a name, used once.
fn validate_volume_claim_templates(vcts: &[PersistentVolumeClaimTemplate]) -> Result<(), String> {
    for (i, vct) in vcts.iter().enumerate() {
        let name = &vct.metadata.name;
        if name.is_empty() {
            return Err(format!("the name at index {i} is empty"));
        }
        if vcts[..i].iter().any(|v| &v.metadata.name == name) {
            return Err(format!("the name {name:?} is used twice"));
        }
    }
    Ok(())
}

/// Adds the claim's labels and annotations to `into`; a key `into` already has with another
/// value is an error (a claim adds metadata, it does not change the template's).
fn merge_pod_metadata(into: &mut PodMetadata, claim: &PodMetadata) -> Result<(), String> {
    for (what, have, add) in [
        ("label", &into.labels, &claim.labels),
        ("annotation", &into.annotations, &claim.annotations),
    ] {
        for (k, v) in add {
            if let Some(old) = have.get(k)
                && old != v
            {
                return Err(format!(
                    "metadata override conflict: {what} {k:?} is {old:?} in the template, the \
                     claim asks for {v:?}"
                ));
            }
        }
    }
    into.labels
        .extend(claim.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    into.annotations.extend(
        claim
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    Ok(())
}

/// What is wrong with `additionalPodMetadata`, one message per key: keys must be qualified
/// names outside [`RESERVED_DOMAINS`] (but [`EXEMPT_KEYS`]), label values valid label values,
/// and `app: sandbox-router` is refused.
pub fn validate_pod_metadata(metadata: &PodMetadata) -> Vec<String> {
    let mut problems = Vec::new();
    for (is_label, map) in [(true, &metadata.labels), (false, &metadata.annotations)] {
        let field = if is_label { "labels" } else { "annotations" };
        for (k, v) in map {
            let at = format!("spec.additionalPodMetadata.{field}[{k:?}]");
            if let Err(why) = qualified_name(k) {
                problems.push(format!("{at}: invalid key: {why}"));
                continue;
            }
            if let Some((prefix, _)) = k.split_once('/') {
                let prefix = prefix.to_ascii_lowercase();
                let reserved = RESERVED_DOMAINS
                    .iter()
                    .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
                if reserved && !EXEMPT_KEYS.contains(&k.as_str()) {
                    problems.push(format!(
                        "{at}: the domain {prefix:?} is reserved to the system ({})",
                        RESERVED_DOMAINS.join(", ")
                    ));
                    continue;
                }
            }
            if is_label {
                if k.eq_ignore_ascii_case("app") && v.eq_ignore_ascii_case("sandbox-router") {
                    problems.push(format!(
                        "{at}: app=sandbox-router is reserved to the sandbox router"
                    ));
                } else if let Err(why) = label_value(v) {
                    problems.push(format!("{at}: invalid label value {v:?}: {why}"));
                }
            }
        }
    }
    problems
}

/// A Kubernetes qualified name: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "the prefix {p:?} must be a lowercase DNS subdomain of at most 253 characters"
            ));
        }
    }
    if name.is_empty() {
        return Err("the name part must not be empty".into());
    }
    label_value(name)
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("at most 63 characters".into());
    }
    let bytes = value.as_bytes();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let ok = bytes.is_empty()
        || (bytes.iter().all(inner)
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric".into())
    }
}

/// The expired branch: mark, then apply `shutdownPolicy`.
fn expire(
    claim: &SandboxClaim,
    id: &Identity<'_>,
    observed: &Observed,
    mut status: SandboxClaimStatus,
    now: Timestamp,
) -> Plan {
    let marked = conditions::find(&status.conditions, types::READY)
        .is_some_and(|c| c.status == FALSE && c.reason == reason::CLAIM_EXPIRED);
    if !marked {
        conditions::set(
            &mut status.conditions,
            expired_condition(CLEANUP_MESSAGE.into(), id.generation, now),
        );
        return Plan {
            actions: Vec::new(),
            status,
            requeue_after: Some(Duration::ZERO),
        };
    }
    let policy = claim
        .spec
        .lifecycle
        .as_ref()
        .map(|l| l.shutdown_policy)
        .unwrap_or_default();
    let mut actions = Vec::new();
    match policy {
        ClaimShutdownPolicy::Delete => actions.push(Action::DeleteClaim(Propagation::Background)),
        ClaimShutdownPolicy::DeleteForeground => {
            actions.push(Action::DeleteClaim(Propagation::Foreground))
        }
        ClaimShutdownPolicy::Retain => {
            let target = Some(status.sandbox.name.as_str())
                .filter(|n| !n.is_empty())
                .unwrap_or(id.name)
                .to_owned();
            let found = observed
                .sandboxes
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(&target));
            let message = match found {
                None => {
                    status.sandbox = Default::default();
                    CLEANUP_MESSAGE.to_owned()
                }
                Some(sb) if !id.controls(&sb.metadata) => {
                    status.sandbox = Default::default();
                    format!(
                        "Claim expired. Sandbox {target:?} is not controlled by claim {:?}; \
                         deletion skipped.",
                        id.name
                    )
                }
                Some(sb) => {
                    if !terminating(&sb.metadata) {
                        actions.push(Action::DeleteSandbox {
                            name: target.clone(),
                            uid: sb.metadata.uid.clone(),
                        });
                    }
                    status.sandbox.name = target;
                    status.sandbox.pod_ips = sandbox_pod_ips(sb);
                    mirror_finished(&mut status.conditions, sb);
                    CLEANUP_MESSAGE.to_owned()
                }
            };
            conditions::set(
                &mut status.conditions,
                expired_condition(message, id.generation, now),
            );
        }
    }
    Plan {
        actions,
        status,
        requeue_after: None,
    }
}

fn expired_condition(message: String, generation: Option<i64>, now: Timestamp) -> Condition {
    condition(
        types::READY,
        FALSE,
        reason::CLAIM_EXPIRED,
        message,
        generation,
        now,
    )
}

/// The status of a claim that has not expired, from how binding went.
fn set_status(
    status: &mut SandboxClaimStatus,
    outcome: &Outcome<'_>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let conditions = &mut status.conditions;
    match outcome {
        Outcome::Failed {
            reason: why,
            message,
        } => {
            // The bound name stays: a passing error must not send the claim to a new Sandbox.
            conditions::set(
                conditions,
                condition(types::READY, FALSE, why, message.clone(), generation, now),
            );
            conditions::remove(conditions, types::FINISHED);
        }
        Outcome::Creating(name) => {
            status.sandbox.name = name.clone();
            status.sandbox.pod_ips = Vec::new();
            conditions::set(
                conditions,
                condition(
                    types::READY,
                    FALSE,
                    reason::SANDBOX_CREATE_PENDING,
                    format!("Sandbox {name:?} is being created"),
                    generation,
                    now,
                ),
            );
            conditions::remove(conditions, types::FINISHED);
        }
        Outcome::Bound(sb) => {
            status.sandbox.name = object_name(sb);
            status.sandbox.pod_ips = sandbox_pod_ips(sb);
            let sandbox_conditions = sb
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let ready = conditions::find(sandbox_conditions, types::READY);
            let new = match ready {
                Some(c) if c.status == FALSE && c.reason == sandbox_reason::SANDBOX_EXPIRED => {
                    condition(
                        types::READY,
                        FALSE,
                        reason::SANDBOX_EXPIRED,
                        "Underlying Sandbox resource has expired independently of the Claim.",
                        generation,
                        now,
                    )
                }
                Some(c) => c.clone(),
                None => condition(
                    types::READY,
                    FALSE,
                    reason::SANDBOX_NOT_READY,
                    "Sandbox is not ready",
                    generation,
                    now,
                ),
            };
            conditions::set(conditions, new);
            mirror_finished(conditions, sb);
        }
    }
}

/// The claim's `Finished` is the Sandbox's, or none.
fn mirror_finished(conditions: &mut Vec<Condition>, sb: &Sandbox) {
    let finished = sb
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::FINISHED));
    match finished {
        Some(c) => conditions::set(conditions, c.clone()),
        None => conditions::remove(conditions, types::FINISHED),
    }
}

fn sandbox_pod_ips(sb: &Sandbox) -> Vec<String> {
    sb.status
        .as_ref()
        .map(|s| s.pod_ips.clone())
        .unwrap_or_default()
}

fn object_name(sb: &Sandbox) -> String {
    sb.metadata.name.clone().unwrap_or_default()
}

fn template_name(t: &SandboxTemplate) -> &str {
    t.metadata.name.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests;
