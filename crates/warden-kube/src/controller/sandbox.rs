//! Applying [`crate::reconcile::sandbox::plan`] for one Sandbox.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::Action as Requeue;

use super::{
    Context, Error, delete_with_uid, found, gone_ok, instrumented, object_key, patch_params,
    post_params, retry_after, status_message, write_status,
};
use crate::crd::Sandbox;
use crate::crd::labels::{SANDBOX_NAME_HASH, name_hash};
use crate::reconcile::sandbox::{Action, ActionFailure, Observed, plan, status_after_failure};

/// The metric label of this kind.
pub const KIND: &str = "Sandbox";

/// Reconciles `sandbox` once: reads its pods, PVCs and Service, applies the plan and writes
/// the status. Counts the outcome in the context's metrics.
pub async fn reconcile(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    instrumented(
        KIND,
        object_key(sandbox.as_ref()),
        &ctx,
        reconcile_inner(&sandbox, &ctx),
    )
    .await
}

/// The requeue after a failed reconcile of `sandbox`: backoff per object.
pub fn error_policy(sandbox: Arc<Sandbox>, error: &Error, ctx: Arc<Context>) -> Requeue {
    retry_after(&object_key(sandbox.as_ref()), error, &ctx)
}

/// What the reconciler needs to see for `sandbox`.
pub async fn observe(client: &kube::Client, sandbox: &Sandbox) -> Result<Observed, Error> {
    let (ns, name) = names(sandbox)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{SANDBOX_NAME_HASH}={}", name_hash(name));
    let mut observed_pods = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    if !observed_pods
        .iter()
        .any(|p| p.metadata.name.as_deref() == Some(name))
        && let Some(pod) = found(pods.get(name).await)?
    {
        observed_pods.push(pod);
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut observed_pvcs = Vec::new();
    for template in &sandbox.spec.volume_claim_templates {
        let pvc_name = format!("{}-{name}", template.metadata.name);
        if let Some(pvc) = found(pvcs.get(&pvc_name).await)? {
            observed_pvcs.push(pvc);
        }
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = found(services.get(name).await)?;
    Ok(Observed {
        pods: observed_pods,
        pvcs: observed_pvcs,
        service,
    })
}

fn names(sandbox: &Sandbox) -> Result<(&str, &str), Error> {
    let ns = sandbox
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| Error::Invalid("the Sandbox has no metadata.namespace".into()))?;
    let name = sandbox
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| Error::Invalid("the Sandbox has no metadata.name".into()))?;
    Ok((ns, name))
}

async fn reconcile_inner(sandbox: &Sandbox, ctx: &Context) -> Result<Requeue, Error> {
    let (ns, _) = names(sandbox)?;
    let observed = observe(&ctx.client, sandbox).await?;
    let now = ctx.clock.now();
    let plan =
        plan(sandbox, &observed, &ctx.settings, now).map_err(|e| Error::Invalid(e.to_string()))?;
    let client = &ctx.client;
    for action in &plan.actions {
        if let Err(e) = apply(client, ns, sandbox, action, &ctx.field_manager).await {
            // A conflict or an object that appeared meanwhile: look again, without marking
            // the Sandbox failed. Anything else is reported in its Ready condition.
            if !matches!(super::api_code(&e), Some(409)) {
                let failure = match super::api_code(&e) {
                    Some(422) => ActionFailure::Rejected(status_message(&e)),
                    _ => ActionFailure::Error(status_message(&e)),
                };
                let status =
                    status_after_failure(&plan.status, sandbox.metadata.generation, &failure, now);
                if sandbox.status.as_ref() != Some(&status) {
                    // Best effort: the action's error is the one reported.
                    let _ = write_status(client, sandbox, &status, &ctx.field_manager).await;
                    let why = match failure {
                        ActionFailure::Rejected(_) => "InvalidConfiguration",
                        ActionFailure::Error(_) => "ReconcilerError",
                    };
                    ctx.warn(sandbox, why, "Reconcile", status_message(&e))
                        .await;
                }
            }
            return Err(e.into());
        }
        if matches!(action, Action::DeleteSandbox) {
            return Ok(Requeue::await_change());
        }
    }
    if let Some(status) = plan.status_update(sandbox) {
        write_status(client, sandbox, status, &ctx.field_manager).await?;
    }
    Ok(match plan.requeue_after {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

async fn apply(
    client: &kube::Client,
    ns: &str,
    sandbox: &Sandbox,
    action: &Action,
    field_manager: &str,
) -> Result<(), kube::Error> {
    let post = post_params(field_manager);
    let patch_params = patch_params(field_manager);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    match action {
        Action::CreatePvc(pvc) => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
            // A PVC outlives pod restarts; one made by an earlier attempt is fine.
            match pvcs.create(&post, pvc).await {
                Err(e) if super::api_code(&e) == Some(409) => Ok(()),
                other => other.map(drop),
            }
        }
        Action::CreatePod(pod) => pods.create(&post, pod).await.map(drop),
        Action::PatchPod { name, patch } => pods
            .patch(name, &patch_params, &Patch::Merge(patch.to_json()))
            .await
            .map(drop),
        Action::DeletePod { name, uid } => gone_ok(pods.delete(name, &delete_with_uid(uid)).await),
        Action::CreateService(service) => services.create(&post, service).await.map(drop),
        Action::PatchService { name, patch } => services
            .patch(name, &patch_params, &Patch::Merge(patch.to_json()))
            .await
            .map(drop),
        Action::DeleteService { name, uid } => {
            gone_ok(services.delete(name, &delete_with_uid(uid)).await)
        }
        Action::DeleteSandbox => {
            let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), ns);
            let name = sandbox.metadata.name.as_deref().unwrap_or_default();
            gone_ok(
                sandboxes
                    .delete(name, &delete_with_uid(&sandbox.metadata.uid))
                    .await,
            )
        }
    }
}
