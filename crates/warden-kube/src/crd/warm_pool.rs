//! `SandboxWarmPool` (`extensions.agents.x-k8s.io/v1beta1`, short name `swp`): ready
//! Sandboxes made from a template, waiting for claims. Scalable (`kubectl scale`, an HPA).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a SandboxWarmPool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "extensions.agents.x-k8s.io",
    version = "v1beta1",
    kind = "SandboxWarmPool",
    plural = "sandboxwarmpools",
    shortname = "swp",
    namespaced,
    status = "SandboxWarmPoolStatus",
    derive = "PartialEq",
    doc = "SandboxWarmPool is the Schema for the sandboxwarmpools API.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolSpec {
    /// replicas is the desired number of sandboxes in the pool.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// sandboxTemplateRef names the SandboxTemplate the pool's sandboxes are made from.
    pub sandbox_template_ref: SandboxTemplateRef,

    /// updateStrategy says how the pool replaces sandboxes made from an older template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
}

fn default_replicas() -> i32 {
    1
}

/// A reference to a SandboxTemplate in the pool's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SandboxTemplateRef {
    /// name of the SandboxTemplate.
    pub name: String,
}

/// How a warm pool replaces stale sandboxes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct UpdateStrategy {
    /// type of the strategy.
    #[serde(rename = "type", default)]
    pub strategy_type: UpdateStrategyType,
}

/// The kinds of [`UpdateStrategy`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum UpdateStrategyType {
    /// Delete stale sandboxes at once, so the pool holds only fresh ones.
    Recreate,
    /// Replace stale sandboxes only as they are deleted or claimed.
    #[default]
    OnReplenish,
}

/// The observed state of a SandboxWarmPool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolStatus {
    /// replicas is the number of sandboxes in the pool.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: i32,

    /// readyReplicas is the number of sandboxes in the pool that are ready.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_replicas: i32,

    /// selector is the label selector of the pool's sandboxes, for the scale subresource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,

    /// observedGeneration is the generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub observed_generation: i64,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
