//! `SandboxClaim` (`extensions.agents.x-k8s.io/v1beta1`): a request for a Sandbox from a warm
//! pool, with its lifecycle and what it adds to the pod.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sandbox::{PersistentVolumeClaimTemplate, PodMetadata};

/// The desired state of a SandboxClaim.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1beta1",
    kind = "SandboxClaim",
    plural = "sandboxclaims",
    shortname = "sandboxclaim",
    namespaced,
    status = "SandboxClaimStatus",
    derive = "PartialEq",
    doc = "SandboxClaim is the Schema for the sandbox Claim API."
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimSpec {
    /// warmPoolRef names the SandboxWarmPool to take a sandbox from.
    pub warm_pool_ref: WarmPoolRef,

    /// lifecycle defines when and how the claim is shut down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClaimLifecycle>,

    /// additionalPodMetadata holds labels and annotations to put on the sandbox's pod.
    #[serde(default, skip_serializing_if = "PodMetadata::is_empty")]
    pub additional_pod_metadata: PodMetadata,

    /// env lists environment variables to inject into the sandbox. A claim with env always
    /// starts cold from the warm pool's template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub env: Vec<ClaimEnvVar>,

    /// volumeClaimTemplates lists PVCs to create for the sandbox. A claim with them always
    /// starts cold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,
}

/// A reference to a SandboxWarmPool in the claim's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct WarmPoolRef {
    /// name of the SandboxWarmPool.
    pub name: String,
}

/// When and how a claim expires: at `shutdownTime` or `ttlSecondsAfterFinished` after its
/// sandbox finished, whichever comes first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// shutdownTime is the absolute time when the claim expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,

    /// ttlSecondsAfterFinished limits how long a finished claim is kept, counted from its
    /// Finished condition's lastTransitionTime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// shutdownPolicy is what happens to the claim when it expires.
    #[serde(default)]
    pub shutdown_policy: ClaimShutdownPolicy,
}

/// What happens to an expired claim. Its Sandbox, pod and Service are deleted in every case.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClaimShutdownPolicy {
    /// Delete the claim (and so its Sandbox).
    Delete,
    /// Delete the claim in the foreground: it stays, being deleted, until its Sandbox and pod
    /// are gone.
    DeleteForeground,
    /// Keep the claim (its status shows it expired).
    #[default]
    Retain,
}

/// An environment variable for the claimed sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimEnvVar {
    /// name of the variable.
    pub name: String,

    /// value of the variable.
    pub value: String,

    /// containerName is the container to set it in; the template's first container when
    /// empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_name: String,
}

/// The observed state of a SandboxClaim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SandboxClaimStatus {
    /// conditions of the claim: Ready, Finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// sandbox is the Sandbox bound to the claim.
    #[serde(default, skip_serializing_if = "ClaimSandboxStatus::is_empty")]
    pub sandbox: ClaimSandboxStatus,
}

/// The Sandbox bound to a claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClaimSandboxStatus {
    /// name of the Sandbox.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,

    /// podIPs are the IP addresses of the Sandbox's pod.
    #[serde(rename = "podIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
}

impl ClaimSandboxStatus {
    /// No Sandbox bound yet.
    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.pod_ips.is_empty()
    }
}
