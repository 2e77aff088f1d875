//! The agent-sandbox v1beta1 custom resources, field for field as upstream serves them.
//!
//! JSON names are upstream's (camelCase), optional fields are optional, and fields with an
//! upstream default (`shutdownPolicy`, `operatingMode`, `replicas`, ...) take it when absent,
//! both when read here and, through the `default` in the generated schema, in the API server.
//! Enums are string enums: an unknown value is an error that names the allowed ones.
//!
//! [`manifests`] renders the CRDs as YAML, one document per resource; `deploy/crds/` holds them
//! and a test keeps the two identical.

mod claim;
pub mod conditions;
pub mod labels;
mod sandbox;
mod template;
mod warm_pool;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use claim::{
    ClaimEnvVar, ClaimLifecycle, ClaimSandboxStatus, ClaimShutdownPolicy, SandboxClaim,
    SandboxClaimSpec, SandboxClaimStatus, WarmPoolRef,
};
pub use labels::name_hash;
pub use sandbox::{
    EmbeddedObjectMetadata, OperatingMode, PersistentVolumeClaimTemplate, PodMetadata, PodTemplate,
    Sandbox, SandboxSpec, SandboxStatus, ShutdownPolicy,
};
pub use template::{
    EnvVarsInjectionPolicy, NetworkPolicyManagement, NetworkPolicySpec, SandboxTemplate,
    SandboxTemplateSpec, VolumeClaimTemplatesPolicy,
};
pub use warm_pool::{
    SandboxTemplateRef, SandboxWarmPool, SandboxWarmPoolSpec, SandboxWarmPoolStatus,
    UpdateStrategy, UpdateStrategyType,
};

/// API group of `Sandbox`.
pub const GROUP: &str = "agents.x-k8s.io";
/// API group of `SandboxTemplate`, `SandboxClaim` and `SandboxWarmPool`.
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
/// The one version served.
pub const VERSION: &str = "v1beta1";

/// One CRD manifest: the file it is committed as under `deploy/crds/` and its YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `<group>_<plural>.yaml`, as upstream names its files.
    pub file_name: String,
    /// The `CustomResourceDefinition` as one YAML document.
    pub yaml: String,
}

/// The four CRDs, as installed: generated from the types, with upstream's `listKind`, and
/// without the descriptions that the embedded Kubernetes types (PodSpec,
/// PersistentVolumeClaimSpec, NetworkPolicy rules, Condition) bring along, as upstream's
/// manifests leave them out, so a Sandbox CRD stays well under the API server's and
/// `kubectl apply`'s size limits. The agent-sandbox fields keep theirs for `kubectl explain`.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Sandbox::crd(),
        SandboxClaim::crd(),
        SandboxTemplate::crd(),
        SandboxWarmPool::crd(),
    ];
    for crd in &mut crds {
        // Upstream's manifests name the list kind; the API server would default it the same.
        crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                strip_embedded_descriptions(schema, "");
            }
        }
    }
    crds
}

/// [`definitions`] rendered as YAML, one [`Manifest`] per CRD.
pub fn manifests() -> Vec<Manifest> {
    definitions()
        .into_iter()
        .map(|crd| {
            let file_name = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            let yaml = serde_saphyr::to_string(&crd)
                .unwrap_or_else(|e| panic!("{file_name}: a CRD always serializes: {e}"));
            Manifest { file_name, yaml }
        })
        .collect()
}

/// Properties whose schemas come from k8s-openapi rather than from this crate: by their own
/// name, and `spec` by the name of the template that holds it.
const EMBEDDED: &[&str] = &["conditions", "ingress", "egress"];
const EMBEDDED_SPEC_IN: &[&str] = &["podTemplate", "volumeClaimTemplates"];

/// Walks the schema and, below every property that holds a Kubernetes type (`conditions`,
/// network policy rules, the `spec` of a pod or volume claim template), removes all
/// descriptions but that property's own. `parent` is the name of the property `schema` belongs to (or of the array
/// whose items it describes).
fn strip_embedded_descriptions(schema: &mut JSONSchemaProps, parent: &str) {
    if let Some(props) = schema.properties.as_mut() {
        for (name, prop) in props.iter_mut() {
            let embedded = EMBEDDED.contains(&name.as_str())
                || (name == "spec" && EMBEDDED_SPEC_IN.contains(&parent));
            if embedded {
                // The property's own description is this crate's; what is below is not.
                let own = prop.description.take();
                strip_all_descriptions(prop);
                prop.description = own;
            } else {
                strip_embedded_descriptions(prop, name);
            }
        }
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_embedded_descriptions(items, parent);
    }
}

fn strip_all_descriptions(schema: &mut JSONSchemaProps) {
    schema.description = None;
    if let Some(props) = schema.properties.as_mut() {
        props.values_mut().for_each(strip_all_descriptions);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(items)) => strip_all_descriptions(items),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(strip_all_descriptions)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        strip_all_descriptions(extra);
    }
    for list in [
        schema.all_of.as_mut(),
        schema.any_of.as_mut(),
        schema.one_of.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        list.iter_mut().for_each(strip_all_descriptions);
    }
}

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;

    #[test]
    fn group_and_version_constants_are_the_types() {
        assert_eq!(Sandbox::group(&()), GROUP);
        for group in [
            SandboxTemplate::group(&()),
            SandboxClaim::group(&()),
            SandboxWarmPool::group(&()),
        ] {
            assert_eq!(group, EXTENSIONS_GROUP);
        }
        for version in [
            Sandbox::version(&()),
            SandboxTemplate::version(&()),
            SandboxClaim::version(&()),
            SandboxWarmPool::version(&()),
        ] {
            assert_eq!(version, VERSION);
        }
        assert_eq!(Sandbox::api_version(&()), "agents.x-k8s.io/v1beta1");
        assert_eq!(Sandbox::plural(&()), "sandboxes");
    }

    #[test]
    fn manifests_are_named_as_upstream_names_its_files() {
        let names: Vec<String> = manifests().into_iter().map(|m| m.file_name).collect();
        assert_eq!(
            names,
            [
                "agents.x-k8s.io_sandboxes.yaml",
                "extensions.agents.x-k8s.io_sandboxclaims.yaml",
                "extensions.agents.x-k8s.io_sandboxtemplates.yaml",
                "extensions.agents.x-k8s.io_sandboxwarmpools.yaml",
            ]
        );
    }
}
