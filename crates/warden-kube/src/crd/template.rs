//! `SandboxTemplate` (`extensions.agents.x-k8s.io/v1beta1`): what warm pools and claims make
//! Sandboxes from, with the NetworkPolicy they get and what a claim may change.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sandbox::{PersistentVolumeClaimTemplate, PodTemplate};

/// The desired state of a SandboxTemplate. It has no status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1beta1",
    kind = "SandboxTemplate",
    plural = "sandboxtemplates",
    shortname = "sandboxtemplate",
    namespaced,
    derive = "PartialEq",
    doc = "SandboxTemplate is the Schema for the sandbox template API."
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    /// podTemplate describes the pod of the sandboxes made from this template. Without an
    /// automountServiceAccountToken, the controller sets it to false.
    pub pod_template: PodTemplate,

    /// volumeClaimTemplates is a list of claims that pods made from this template may
    /// reference; PVCs are created from them for each sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,

    /// service controls whether a headless Service is created for each sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,

    /// networkPolicy is the policy shared by the sandboxes made from this template. Omitted
    /// with Managed management, a secure default applies: ingress only from the sandbox
    /// router, egress to the public internet only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// networkPolicyManagement says whether the controller manages the NetworkPolicy.
    #[serde(default)]
    pub network_policy_management: NetworkPolicyManagement,

    /// envVarsInjectionPolicy says whether a SandboxClaim may add or override environment
    /// variables.
    #[serde(default)]
    pub env_vars_injection_policy: EnvVarsInjectionPolicy,

    /// volumeClaimTemplatesPolicy says whether a SandboxClaim may add or override volume
    /// claim templates.
    #[serde(default)]
    pub volume_claim_templates_policy: VolumeClaimTemplatesPolicy,
}

/// The rules of a template's NetworkPolicy. The pod selector and policy types are the
/// controller's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NetworkPolicySpec {
    /// ingress rules; empty denies all ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,

    /// egress rules; empty denies all egress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

/// Who manages a template's NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum NetworkPolicyManagement {
    /// The controller keeps one NetworkPolicy per template.
    #[default]
    Managed,
    /// The controller creates none (another system manages networking).
    Unmanaged,
}

/// What a SandboxClaim may do with environment variables.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum EnvVarsInjectionPolicy {
    /// Add new variables, not override the template's.
    Allowed,
    /// Add new variables and override the template's.
    Overrides,
    /// None: a claim with `env` is rejected.
    #[default]
    Disallowed,
}

/// What a SandboxClaim may do with volume claim templates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum VolumeClaimTemplatesPolicy {
    /// None: a claim with `volumeClaimTemplates` is rejected.
    #[default]
    Disallowed,
    /// Add new templates, not override the template's.
    Allowed,
    /// Add new templates and override the template's.
    Overrides,
}
