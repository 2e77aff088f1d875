//! Applying [`crate::reconcile::claim::plan`] for one SandboxClaim: binding (adoption of a
//! warm member or a cold Sandbox), status mirrored from the Sandbox, expiry.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PropagationPolicy};
use kube::runtime::controller::Action as Requeue;

use super::{
    Context, Error, api_code, delete_with_uid, found, gone_ok, instrumented, object_key,
    patch_params, post_params, retry_after, status_message, write_status,
};
use crate::crd::conditions::{claim as reason, types};
use crate::crd::labels::{CLAIM_UID, LAUNCH_TYPE, LAUNCH_TYPE_WARM, WARM_POOL_SANDBOX, name_hash};
use crate::crd::{Sandbox, SandboxClaim, SandboxClaimStatus, SandboxTemplate, SandboxWarmPool};
use crate::reconcile::claim::{
    Action, ActionFailure, Observed, Propagation, Settings, plan, status_after_failure,
};
use crate::reconcile::ownership::{Ownership, ownership};
use crate::reconcile::warm_pool::selector as pool_selector;

/// The metric label of this kind.
pub const KIND: &str = "SandboxClaim";

/// Reconciles `claim` once.
pub async fn reconcile(claim: Arc<SandboxClaim>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    instrumented(
        KIND,
        object_key(claim.as_ref()),
        &ctx,
        reconcile_inner(&claim, &ctx),
    )
    .await
}

/// The requeue after a failed reconcile of `claim`.
pub fn error_policy(claim: Arc<SandboxClaim>, error: &Error, ctx: Arc<Context>) -> Requeue {
    retry_after(&object_key(claim.as_ref()), error, &ctx)
}

/// What the reconciler needs to see for `claim`: its pool, the pool's template, and the
/// Sandboxes that may bind to it. The pool's members come from the context's Sandbox cache
/// when it has one (a stale entry only makes an adoption conflict, which is retried), else
/// from the API server; they are read only while the claim is not bound yet.
pub async fn observe(ctx: &Context, claim: &SandboxClaim) -> Result<Observed, Error> {
    let client = &ctx.client;
    let (Some(ns), Some(name)) = (&claim.metadata.namespace, &claim.metadata.name) else {
        return Err(Error::Invalid(
            "the SandboxClaim has no name or namespace".into(),
        ));
    };
    let pools: Api<SandboxWarmPool> = Api::namespaced(client.clone(), ns);
    let templates: Api<SandboxTemplate> = Api::namespaced(client.clone(), ns);
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), ns);
    let pool_name = &claim.spec.warm_pool_ref.name;
    let warm_pool = if pool_name.is_empty() {
        None
    } else {
        found(pools.get(pool_name).await)?
    };
    let template = match warm_pool
        .as_ref()
        .map(|p| &p.spec.sandbox_template_ref.name)
    {
        Some(t) if !t.is_empty() => found(templates.get(t).await)?,
        _ => None,
    };
    let mut observed: Vec<Sandbox> = Vec::new();
    fn add(observed: &mut Vec<Sandbox>, s: Sandbox) {
        if !observed.iter().any(|o| o.metadata.uid == s.metadata.uid) {
            observed.push(s);
        }
    }
    let bound = claim
        .status
        .as_ref()
        .map(|s| s.sandbox.name.clone())
        .filter(|n| !n.is_empty());
    for candidate in [bound.as_deref(), Some(name.as_str())]
        .into_iter()
        .flatten()
    {
        if let Some(s) = found(sandboxes.get(candidate).await)? {
            add(&mut observed, s);
        }
    }
    if let Some(uid) = &claim.metadata.uid {
        let labelled = sandboxes
            .list(&ListParams::default().labels(&format!("{CLAIM_UID}={uid}")))
            .await?;
        for s in labelled.items {
            add(&mut observed, s);
        }
    }
    let bound = claim.metadata.uid.as_deref().is_some_and(|uid| {
        observed
            .iter()
            .any(|s| ownership(&s.metadata, uid) == Ownership::Controlled)
    });
    if warm_pool.is_some() && !bound {
        let members = match ctx.cached_sandboxes(ns, WARM_POOL_SANDBOX, &name_hash(pool_name)) {
            Some(members) => members,
            None => {
                sandboxes
                    .list(&ListParams::default().labels(&pool_selector(pool_name)))
                    .await?
                    .items
            }
        };
        for s in members {
            add(&mut observed, s);
        }
    }
    Ok(Observed {
        warm_pool,
        template,
        sandboxes: observed,
    })
}

fn ready(status: Option<&SandboxClaimStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == types::READY && c.status == "True")
    })
}

async fn reconcile_inner(claim: &SandboxClaim, ctx: &Context) -> Result<Requeue, Error> {
    let Some(ns) = claim.metadata.namespace.as_deref() else {
        return Err(Error::Invalid("the SandboxClaim has no namespace".into()));
    };
    let observed = observe(ctx, claim).await?;
    let now = ctx.clock.now();
    let plan = plan(claim, &observed, &Settings::default(), now)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let client = &ctx.client;
    for action in &plan.actions {
        if let Err(e) = apply(client, ns, claim, action, &ctx.field_manager).await {
            let failure = match api_code(&e) {
                Some(409) => ActionFailure::Conflict(status_message(&e)),
                _ => ActionFailure::Error(status_message(&e)),
            };
            let (status, retry) = status_after_failure(
                &plan.status,
                claim.metadata.generation,
                action,
                &failure,
                now,
            );
            if claim.status.as_ref() != Some(&status) {
                let _ = write_status(client, claim, &status, &ctx.field_manager).await;
            }
            // A lost adoption race: try the next member at once.
            if let Some(after) = retry {
                return Ok(Requeue::requeue(after.max(Duration::from_millis(10))));
            }
            return Err(e.into());
        }
        if matches!(action, Action::DeleteClaim(_)) {
            return Ok(Requeue::await_change());
        }
    }
    if let Some((reason, message)) = newly_failed(claim.status.as_ref(), &plan.status) {
        ctx.warn(claim, &reason, "Bind", message).await;
    }
    if let Some(status) = plan.status_update(claim) {
        write_status(client, claim, status, &ctx.field_manager).await?;
        if ready(Some(status)) && !ready(claim.status.as_ref()) {
            record_ready(ctx, claim, &observed, status, now);
        }
    }
    Ok(match plan.requeue_after {
        Some(after) => Requeue::requeue(after.max(Duration::from_millis(10))),
        None => Requeue::await_change(),
    })
}

/// The Ready=False reason and message of `new` when it is a failure the claim was not
/// already reporting (not one of the passing states of a claim being served).
fn newly_failed(
    old: Option<&SandboxClaimStatus>,
    new: &SandboxClaimStatus,
) -> Option<(String, String)> {
    let ready = |s: &SandboxClaimStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (status, reason, message) = ready(new)?;
    let passing = [reason::SANDBOX_NOT_READY, reason::SANDBOX_CREATE_PENDING];
    if status != "False" || passing.contains(&reason.as_str()) {
        return None;
    }
    let before = old.and_then(ready).map(|(_, r, _)| r);
    (before.as_deref() != Some(reason.as_str())).then_some((reason, message))
}

/// Observes the claim-to-ready latency the first time a claim is seen Ready.
fn record_ready(
    ctx: &Context,
    claim: &SandboxClaim,
    observed: &Observed,
    status: &SandboxClaimStatus,
    now: k8s_openapi::jiff::Timestamp,
) {
    let Some(created) = claim.metadata.creation_timestamp.as_ref() else {
        return;
    };
    let warm = observed
        .sandboxes
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(status.sandbox.name.as_str()))
        .and_then(|s| s.metadata.labels.as_ref()?.get(LAUNCH_TYPE).cloned())
        .is_some_and(|l| l == LAUNCH_TYPE_WARM)
        || status.sandbox.name != claim.metadata.name.clone().unwrap_or_default();
    // A clock behind the API server's counts as no time at all.
    let latency = Duration::try_from(created.0.duration_until(now)).unwrap_or(Duration::ZERO);
    ctx.metrics.claim_ready(warm, latency);
}

async fn apply(
    client: &kube::Client,
    ns: &str,
    claim: &SandboxClaim,
    action: &Action,
    field_manager: &str,
) -> Result<(), kube::Error> {
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), ns);
    let post = post_params(field_manager);
    let patch_params = patch_params(field_manager);
    match action {
        Action::CreateSandbox(sandbox) => sandboxes.create(&post, sandbox).await.map(drop),
        Action::AdoptSandbox { name, patch } | Action::PatchSandbox { name, patch } => sandboxes
            .patch(name, &patch_params, &Patch::Merge(patch.to_json()))
            .await
            .map(drop),
        Action::DeleteSandbox { name, uid } => {
            gone_ok(sandboxes.delete(name, &delete_with_uid(uid)).await)
        }
        Action::DeleteClaim(propagation) => {
            let claims: Api<SandboxClaim> = Api::namespaced(client.clone(), ns);
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            let params = DeleteParams {
                propagation_policy: Some(match propagation {
                    Propagation::Background => PropagationPolicy::Background,
                    Propagation::Foreground => PropagationPolicy::Foreground,
                }),
                ..delete_with_uid(&claim.metadata.uid)
            };
            gone_ok(claims.delete(name, &params).await)
        }
    }
}
