//! `Sandbox` (`agents.x-k8s.io/v1beta1`): one stateful pod with a stable identity, optional
//! volumes and a headless Service, a shutdown time, and suspend/resume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a Sandbox.
// Two printer columns of type string: clippy reads the repeated `type_ = "string"` inside the
// derive's helper attribute as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "agents.x-k8s.io",
    version = "v1beta1",
    kind = "Sandbox",
    plural = "sandboxes",
    shortname = "sandbox",
    namespaced,
    status = "SandboxStatus",
    derive = "PartialEq",
    doc = "Sandbox is the Schema for the sandboxes API.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// podTemplate describes the pod that will be created in the sandbox.
    pub pod_template: PodTemplate,

    /// volumeClaimTemplates is a list of claims that the sandbox pod is allowed to reference.
    /// When creating a sandbox, PVCs will be created from these templates. Immutable after
    /// creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,

    /// service controls whether the controller creates a headless Service for the Sandbox.
    /// Unset keeps an existing Service but creates none; true creates one; false deletes an
    /// owned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,

    /// shutdownTime is the absolute time when the sandbox expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_time: Option<Time>,

    /// shutdownPolicy determines if the Sandbox resource itself should be deleted when it
    /// expires. Underlying resources (Pods, Services) are always deleted on expiry.
    #[serde(default)]
    pub shutdown_policy: ShutdownPolicy,

    /// operatingMode specifies the desired operational state of the Sandbox.
    #[serde(default)]
    pub operating_mode: OperatingMode,
}

/// The pod a Sandbox runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PodTemplate {
    /// spec is the Pod's spec.
    pub spec: PodSpec,

    /// metadata is the Pod's metadata. Only labels and annotations are used.
    #[serde(default, skip_serializing_if = "PodMetadata::is_empty")]
    pub metadata: PodMetadata,
}

/// Labels and annotations for a pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PodMetadata {
    /// labels to put on the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// annotations to put on the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl PodMetadata {
    /// No labels and no annotations.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// A PersistentVolumeClaim to create for a Sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PersistentVolumeClaimTemplate {
    /// metadata is the PVC's metadata.
    #[serde(default, skip_serializing_if = "EmbeddedObjectMetadata::is_empty")]
    pub metadata: EmbeddedObjectMetadata,

    /// spec is the PVC's spec.
    pub spec: PersistentVolumeClaimSpec,
}

/// Name, labels and annotations of an object made from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EmbeddedObjectMetadata {
    /// name of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,

    /// labels of the object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// annotations of the object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl EmbeddedObjectMetadata {
    /// No name, labels or annotations.
    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// What happens to an expired Sandbox.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ShutdownPolicy {
    /// Delete the Sandbox when it expires.
    Delete,
    /// Keep the Sandbox when it expires (its status shows it expired).
    #[default]
    Retain,
}

/// Whether a Sandbox's pod should run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OperatingMode {
    /// The pod runs.
    #[default]
    Running,
    /// The pod is deleted; the Sandbox, its volumes and its identity stay.
    Suspended,
}

/// The observed state of a Sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// serviceFQDN of the Sandbox's Service, valid for the cluster's domain.
    #[serde(
        rename = "serviceFQDN",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub service_fqdn: String,

    /// service is the name of the Sandbox's Service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,

    /// conditions of the Sandbox: Ready, Suspended, PodScheduled, Finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// selector is the label selector for the Sandbox's pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,

    /// podIPs are the IP addresses of the pod (two in dual-stack clusters).
    #[serde(rename = "podIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,

    /// nodeName is the node the pod is scheduled on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
}
