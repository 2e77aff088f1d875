//! Applying [`crate::reconcile::warm_pool::plan`] for one SandboxWarmPool: refill in slow-start
//! batches, excess and stale members deleted, status.
//!
//! The snapshot is read with consistent LISTs from the API server (not an informer cache), so
//! every write this controller made before is in it: nothing is ever in flight
//! ([`InFlight`] stays empty).

use std::sync::Arc;

use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::Action as Requeue;

use super::{
    Context, Error, delete_with_uid, found, gone_ok, instrumented, object_key, patch_params,
    post_params, retry_after, write_status,
};
use crate::crd::{Sandbox, SandboxTemplate, SandboxWarmPool};
use crate::reconcile::warm_pool::{Action, InFlight, Observed, Settings, plan, selector};

/// The metric label of this kind.
pub const KIND: &str = "SandboxWarmPool";

/// Reconciles `pool` once.
pub async fn reconcile(pool: Arc<SandboxWarmPool>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    instrumented(
        KIND,
        object_key(pool.as_ref()),
        &ctx,
        reconcile_inner(&pool, &ctx),
    )
    .await
}

/// The requeue after a failed reconcile of `pool`.
pub fn error_policy(pool: Arc<SandboxWarmPool>, error: &Error, ctx: Arc<Context>) -> Requeue {
    retry_after(&object_key(pool.as_ref()), error, &ctx)
}

/// What the reconciler needs to see for `pool`: its template and its members.
pub async fn observe(client: &kube::Client, pool: &SandboxWarmPool) -> Result<Observed, Error> {
    let (Some(ns), Some(name)) = (&pool.metadata.namespace, &pool.metadata.name) else {
        return Err(Error::Invalid(
            "the SandboxWarmPool has no name or namespace".into(),
        ));
    };
    let templates: Api<SandboxTemplate> = Api::namespaced(client.clone(), ns);
    let template_name = &pool.spec.sandbox_template_ref.name;
    let template = if template_name.is_empty() {
        None
    } else {
        found(templates.get(template_name).await)?
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), ns);
    let members = sandboxes
        .list(&ListParams::default().labels(&selector(name)))
        .await?
        .items;
    Ok(Observed {
        template,
        sandboxes: members,
        in_flight: InFlight::default(),
    })
}

async fn reconcile_inner(pool: &SandboxWarmPool, ctx: &Context) -> Result<Requeue, Error> {
    let Some(ns) = pool.metadata.namespace.as_deref() else {
        return Err(Error::Invalid(
            "the SandboxWarmPool has no namespace".into(),
        ));
    };
    let observed = observe(&ctx.client, pool).await?;
    let plan = plan(pool, &observed, &Settings::default(), ctx.clock.now())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let key = object_key(pool);
    for problem in &plan.problems {
        tracing::warn!(pool = %key, "{problem}");
        ctx.warn(pool, "WarmPoolDegraded", "Refill", problem.clone())
            .await;
    }
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), ns);
    let post = post_params(&ctx.field_manager);
    let patch_params = patch_params(&ctx.field_manager);
    // The status first: it counts the members before this plan's changes, as upstream does,
    // and a failed creation below must not hide it.
    if let Some(status) = plan.status_update(pool) {
        write_status(&ctx.client, pool, status, &ctx.field_manager).await?;
    }
    for action in &plan.actions {
        match action {
            Action::CreateSandboxes { sandbox, batches } => {
                // Slow start: a batch's creations run together; the next batch starts only
                // when every one of them succeeded.
                for &size in batches {
                    let creations = (0..size).map(|_| sandboxes.create(&post, sandbox));
                    let results = futures_util::future::join_all(creations).await;
                    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                        return Err(e.into());
                    }
                }
            }
            Action::AdoptSandbox { name, patch } | Action::PatchSandbox { name, patch } => {
                sandboxes
                    .patch(name, &patch_params, &Patch::Merge(patch.to_json()))
                    .await?;
            }
            Action::DeleteSandbox { name, uid, reason } => {
                tracing::info!(pool = %key, sandbox = %name, ?reason, "deleting a member");
                gone_ok(sandboxes.delete(name, &delete_with_uid(uid)).await)?;
            }
        }
    }
    Ok(match plan.requeue_after {
        Some(after) => Requeue::requeue(after.max(std::time::Duration::from_millis(10))),
        None => Requeue::await_change(),
    })
}
