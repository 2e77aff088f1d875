//! Reconciling one `SandboxTemplate` (`extensions.agents.x-k8s.io/v1beta1`) as upstream's
//! template controller does: [`plan`] takes the template and the NetworkPolicy observed for it
//! and returns the [`Action`]s that keep `<template>-network-policy` as the template asks.
//!
//! What it decides:
//! - `networkPolicyManagement: Managed` (the default): one NetworkPolicy named
//!   `<template>-network-policy`, selecting the template's pods by
//!   `agents.x-k8s.io/sandbox-template-ref-hash`, for ingress and egress, with the rules of
//!   `spec.networkPolicy` or, when it is omitted, upstream's secure default (ingress only from
//!   `app: sandbox-router` pods, egress to public addresses only). Created with a controller
//!   ownerReference to the template; its spec is put back when it drifts.
//! - `Unmanaged`: no policy is created, and one the template controls is deleted.
//! - A policy of that name that the template does not control is never changed or deleted: a
//!   Managed template reports it ([`Plan::problems`]; the template has no status to hold it).
//! - Nothing is done for a template that is being deleted (garbage collection removes its
//!   policy).
//!
//! Where this differs from upstream: upstream's controller updates, and under Unmanaged
//! deletes, a policy of that name whoever controls it; this one touches only policies the
//! template controls. compat.md lists only `automountServiceAccountToken: false` among the
//! secure defaults; upstream also points the pods of a secure-by-default template at public
//! DNS resolvers (its default policy blocks cluster DNS), and so does
//! [`apply_secure_defaults`].
//!
//! The template controller itself never edits pod specs: the secure defaults are applied where
//! upstream applies them, when a claim or a warm pool makes a Sandbox from the template
//! ([`sandbox_spec`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodDNSConfig, PodSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec as PolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::ownership::{Ownership, controller_reference, not_controlled_by, ownership};
use super::{MissingMetadata, required, terminating};
use crate::crd::{
    NetworkPolicyManagement, OperatingMode, SandboxSpec, SandboxTemplate, SandboxTemplateSpec,
    ShutdownPolicy,
};
use crate::harden::{template_pod_selector, upstream_default_network_policy};

/// The public resolvers upstream gives the pods of a secure-by-default template: its default
/// NetworkPolicy blocks the cluster's DNS (a private address), so names resolve outside.
pub const PUBLIC_DNS_SERVERS: [&str; 2] = ["8.8.8.8", "1.1.1.1"];

/// The name of a template's NetworkPolicy: `<template>-network-policy`.
pub fn network_policy_name(template_name: &str) -> String {
    format!("{template_name}-network-policy")
}

/// What the template controller reads from the cluster for one template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The NetworkPolicy named `<template>-network-policy` in the template's namespace, if any.
    pub network_policy: Option<NetworkPolicy>,
}

/// One change to make in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this NetworkPolicy (controlled by the template).
    CreateNetworkPolicy(Box<NetworkPolicy>),
    /// Replace the spec of the NetworkPolicy `name` (an update of the object read, keeping its
    /// metadata), on the precondition that its resourceVersion is still `resource_version`.
    UpdateNetworkPolicySpec {
        /// The NetworkPolicy.
        name: String,
        /// The resourceVersion observed: a policy changed since is not overwritten (409).
        resource_version: Option<String>,
        /// The spec it must have.
        spec: Box<PolicySpec>,
    },
    /// Delete the NetworkPolicy `name`, on the precondition that its UID is still `uid`.
    DeleteNetworkPolicy {
        /// The NetworkPolicy.
        name: String,
        /// The UID observed: a policy made since under the same name is not touched.
        uid: Option<String>,
    },
}

/// The outcome of [`plan`]. A template has no status: what cannot be fixed is in
/// [`Plan::problems`], for the shell to report (an Event on the template, a log line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// What to change, in order.
    pub actions: Vec<Action>,
    /// Why something the template asks for is not done, one message each.
    pub problems: Vec<String>,
}

/// Decides what to do for `template`, given the NetworkPolicy `observed` for it.
///
/// Deterministic, and idempotent: once the cluster matches, the plan is empty.
pub fn plan(template: &SandboxTemplate, observed: &Observed) -> Result<Plan, MissingMetadata> {
    let meta = &template.metadata;
    let name = required(&meta.name, "SandboxTemplate", "name")?;
    let namespace = required(&meta.namespace, "SandboxTemplate", "namespace")?;
    let uid = required(&meta.uid, "SandboxTemplate", "uid")?;
    let mut plan = Plan::default();
    if terminating(meta) {
        return Ok(plan);
    }
    let policy_name = network_policy_name(name);
    let existing = observed
        .network_policy
        .as_ref()
        .filter(|p| p.metadata.name.as_deref() == Some(&policy_name));
    let Some(want) = desired_network_policy_spec(name, namespace, &template.spec) else {
        // Unmanaged: take away only what this template made.
        if let Some(np) = existing
            && ownership(&np.metadata, uid) == Ownership::Controlled
            && !terminating(&np.metadata)
        {
            plan.actions.push(Action::DeleteNetworkPolicy {
                name: policy_name,
                uid: np.metadata.uid.clone(),
            });
        }
        return Ok(plan);
    };
    match existing {
        None => plan
            .actions
            .push(Action::CreateNetworkPolicy(Box::new(NetworkPolicy {
                metadata: ObjectMeta {
                    name: Some(policy_name),
                    namespace: Some(namespace.to_owned()),
                    owner_references: Some(vec![controller_reference::<SandboxTemplate>(
                        name, uid,
                    )]),
                    ..ObjectMeta::default()
                },
                spec: Some(want),
            }))),
        Some(np) => match ownership(&np.metadata, uid) {
            // Being deleted: made again once it is gone (its deletion wakes the template).
            Ownership::Controlled if terminating(&np.metadata) => {}
            Ownership::Controlled => {
                let have = np.spec.clone().unwrap_or_default();
                if !same_policy(&have, &want) {
                    plan.actions.push(Action::UpdateNetworkPolicySpec {
                        name: policy_name,
                        resource_version: np.metadata.resource_version.clone(),
                        spec: Box::new(want),
                    });
                }
            }
            other => plan.problems.push(format!(
                "{}; the template's network rules are not enforced by it",
                not_controlled_by("NetworkPolicy", &policy_name, other, "SandboxTemplate")
            )),
        },
    }
    Ok(plan)
}

/// The spec of the NetworkPolicy a template should have, or `None` when it is Unmanaged:
/// `spec.networkPolicy`'s rules (an empty list denies that direction) or, when it is omitted,
/// [`upstream_default_network_policy`]'s, selecting the template's pods for both directions.
pub fn desired_network_policy_spec(
    template_name: &str,
    namespace: &str,
    spec: &SandboxTemplateSpec,
) -> Option<PolicySpec> {
    if spec.network_policy_management == NetworkPolicyManagement::Unmanaged {
        return None;
    }
    let Some(rules) = &spec.network_policy else {
        return upstream_default_network_policy(template_name, namespace).spec;
    };
    Some(PolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some(template_pod_selector(template_name)),
            match_expressions: None,
        }),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ingress: (!rules.ingress.is_empty()).then(|| rules.ingress.clone()),
        egress: (!rules.egress.is_empty()).then(|| rules.egress.clone()),
    })
}

/// Whether a template is "secure by default": Managed with no rules of its own, so its pods get
/// upstream's default policy (and public DNS, see [`apply_secure_defaults`]).
pub fn secure_by_default(spec: &SandboxTemplateSpec) -> bool {
    spec.network_policy_management == NetworkPolicyManagement::Managed
        && spec.network_policy.is_none()
}

/// Upstream's secure defaults for a pod made from `template`, filling only what is unset:
/// `automountServiceAccountToken: false`; and for a [`secure_by_default`] template without a
/// `dnsPolicy`, `dnsPolicy: None` with [`PUBLIC_DNS_SERVERS`] (the default policy blocks the
/// cluster's DNS). Custom rules or Unmanaged keep the cluster's DNS, which air-gapped and
/// proxied clusters need. Applying them twice changes nothing.
pub fn apply_secure_defaults(template: &SandboxTemplateSpec, pod: &mut PodSpec) {
    if pod.automount_service_account_token.is_none() {
        pod.automount_service_account_token = Some(false);
    }
    if secure_by_default(template) && pod.dns_policy.as_deref().unwrap_or("").is_empty() {
        pod.dns_policy = Some("None".into());
        pod.dns_config = Some(PodDNSConfig {
            nameservers: Some(PUBLIC_DNS_SERVERS.iter().map(|s| (*s).to_owned()).collect()),
            ..PodDNSConfig::default()
        });
    }
}

/// The spec of a Sandbox made from `template` (by a claim or a warm pool): its pod template,
/// with [`apply_secure_defaults`], its volume claim templates and service; no shutdown time,
/// `Retain`, `Running`.
pub fn sandbox_spec(template: &SandboxTemplateSpec) -> SandboxSpec {
    let mut pod_template = template.pod_template.clone();
    apply_secure_defaults(template, &mut pod_template.spec);
    SandboxSpec {
        pod_template,
        volume_claim_templates: template.volume_claim_templates.clone(),
        service: template.service,
        shutdown_time: None,
        shutdown_policy: ShutdownPolicy::default(),
        operating_mode: OperatingMode::default(),
    }
}

/// Whether two policy specs mean the same, as the API server stores them: an empty list equals
/// an absent one, and a port without a protocol is TCP.
fn same_policy(a: &PolicySpec, b: &PolicySpec) -> bool {
    normalized(a) == normalized(b)
}

fn normalized(spec: &PolicySpec) -> PolicySpec {
    fn list<T>(v: &Option<Vec<T>>, f: impl Fn(&T) -> T) -> Option<Vec<T>> {
        v.as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().map(f).collect())
    }
    fn selector(s: &Option<LabelSelector>) -> Option<LabelSelector> {
        let s = s.as_ref()?;
        let labels = s
            .match_labels
            .clone()
            .filter(|m: &BTreeMap<String, String>| !m.is_empty());
        let exprs = s.match_expressions.clone().filter(|e| !e.is_empty());
        Some(LabelSelector {
            match_labels: labels,
            match_expressions: exprs,
        })
    }
    fn peer(p: &NetworkPolicyPeer) -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            ip_block: p.ip_block.clone().map(|mut b| {
                b.except = b.except.filter(|e| !e.is_empty());
                b
            }),
            namespace_selector: selector(&p.namespace_selector),
            pod_selector: selector(&p.pod_selector),
        }
    }
    fn port(p: &NetworkPolicyPort) -> NetworkPolicyPort {
        NetworkPolicyPort {
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            ..p.clone()
        }
    }
    PolicySpec {
        pod_selector: Some(selector(&spec.pod_selector).unwrap_or_default()),
        policy_types: spec.policy_types.clone(),
        ingress: list(&spec.ingress, |r| NetworkPolicyIngressRule {
            from: list(&r.from, peer),
            ports: list(&r.ports, port),
        }),
        egress: list(&spec.egress, |r| NetworkPolicyEgressRule {
            to: list(&r.to, peer),
            ports: list(&r.ports, port),
        }),
    }
}

#[cfg(test)]
mod tests;
