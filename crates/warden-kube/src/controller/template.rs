//! Applying [`crate::reconcile::template::plan`] for one SandboxTemplate: its managed
//! NetworkPolicy.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;

use super::{
    Context, Error, delete_with_uid, found, gone_ok, instrumented, object_key, post_params,
    retry_after,
};
use crate::crd::SandboxTemplate;
use crate::reconcile::template::{Action, Observed, network_policy_name, plan};

/// The metric label of this kind.
pub const KIND: &str = "SandboxTemplate";

/// Reconciles `template` once.
pub async fn reconcile(
    template: Arc<SandboxTemplate>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    instrumented(
        KIND,
        object_key(template.as_ref()),
        &ctx,
        reconcile_inner(&template, &ctx),
    )
    .await
}

/// The requeue after a failed reconcile of `template`.
pub fn error_policy(template: Arc<SandboxTemplate>, error: &Error, ctx: Arc<Context>) -> Requeue {
    retry_after(&object_key(template.as_ref()), error, &ctx)
}

async fn reconcile_inner(template: &SandboxTemplate, ctx: &Context) -> Result<Requeue, Error> {
    let (Some(ns), Some(name)) = (&template.metadata.namespace, &template.metadata.name) else {
        return Err(Error::Invalid(
            "the SandboxTemplate has no name or namespace".into(),
        ));
    };
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let observed = Observed {
        network_policy: found(policies.get(&network_policy_name(name)).await)?,
    };
    let plan = plan(template, &observed).map_err(|e| Error::Invalid(e.to_string()))?;
    for problem in &plan.problems {
        tracing::warn!(template = %format!("{ns}/{name}"), "{problem}");
        ctx.warn(
            template,
            "NetworkPolicyNotManaged",
            "Reconcile",
            problem.clone(),
        )
        .await;
    }
    let post = post_params(&ctx.field_manager);
    for action in plan.actions {
        match action {
            Action::CreateNetworkPolicy(policy) => {
                policies.create(&post, &policy).await?;
            }
            Action::UpdateNetworkPolicySpec {
                name,
                resource_version,
                spec,
            } => {
                // The object as read, with the new spec: a replace on its resourceVersion, so
                // a policy changed since is not overwritten.
                let Some(mut current) = observed.network_policy.clone() else {
                    continue;
                };
                current.metadata.resource_version = resource_version;
                current.spec = Some(*spec);
                policies.replace(&name, &post, &current).await?;
            }
            Action::DeleteNetworkPolicy { name, uid } => {
                gone_ok(policies.delete(&name, &delete_with_uid(&uid)).await)?;
            }
        }
    }
    Ok(Requeue::await_change())
}
