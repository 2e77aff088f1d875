//! The controllers' decisions, as pure functions: from a resource and the objects observed for
//! it, the actions that bring the cluster to the desired state and the status to write.
//!
//! Nothing here talks to an API server, reads a clock or logs: the shell that watches the
//! cluster passes the snapshot and the time in, applies the actions it gets back
//! ([`sandbox::Action`], [`template::Action`], [`claim::Action`], [`warm_pool::Action`]) and
//! writes the status. So every branch is unit-tested without a cluster.

pub mod claim;
mod conditions;
pub(crate) mod ownership;
pub mod sandbox;
pub mod template;
pub mod warm_pool;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Map, Value, json};

/// An object that cannot be reconciled: it lacks what the API server always sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingMetadata {
    /// The kind of the object (`SandboxClaim`, ...).
    pub kind: &'static str,
    /// The missing or empty `metadata` field (`name`, `namespace`, `uid`).
    pub field: &'static str,
}

impl fmt::Display for MissingMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} has no metadata.{}: reconcile objects as the API server returns them (with \
             name, namespace and uid)",
            self.kind, self.field
        )
    }
}

impl std::error::Error for MissingMetadata {}

/// `metadata.<field>` of a `kind`, which must be present and non-empty.
pub(crate) fn required<'a>(
    value: &'a Option<String>,
    kind: &'static str,
    field: &'static str,
) -> Result<&'a str, MissingMetadata> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or(MissingMetadata { kind, field })
}

/// A JSON merge patch (RFC 7386) of a Sandbox made by the extension controllers: its labels,
/// annotations and controller, and the labels and annotations of its pod template. With a
/// `resource_version`, the API server applies it only to that version of the object (else 409
/// Conflict): two controllers adopting the same Sandbox cannot both succeed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxPatch {
    /// `metadata.resourceVersion` the patch requires, if any.
    pub resource_version: Option<String>,
    /// `metadata.labels` to set (`Some`) or remove (`None`).
    pub labels: BTreeMap<String, Option<String>>,
    /// `metadata.annotations` to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// The whole new `metadata.ownerReferences` list (a merge patch replaces lists).
    pub owner_references: Option<Vec<OwnerReference>>,
    /// `spec.podTemplate.metadata.labels` to set (`Some`) or remove (`None`).
    pub pod_labels: BTreeMap<String, Option<String>>,
    /// `spec.podTemplate.metadata.annotations` to set (`Some`) or remove (`None`).
    pub pod_annotations: BTreeMap<String, Option<String>>,
}

impl SandboxPatch {
    /// Nothing to change (a resource version alone changes nothing).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
            && self.annotations.is_empty()
            && self.owner_references.is_none()
            && self.pod_labels.is_empty()
            && self.pod_annotations.is_empty()
    }

    /// The patch as the body of a `PATCH` with `Content-Type: application/merge-patch+json`.
    pub fn to_json(&self) -> Value {
        let mut metadata = Map::new();
        if let Some(rv) = &self.resource_version {
            metadata.insert("resourceVersion".into(), json!(rv));
        }
        if !self.labels.is_empty() {
            metadata.insert("labels".into(), entries(&self.labels));
        }
        if !self.annotations.is_empty() {
            metadata.insert("annotations".into(), entries(&self.annotations));
        }
        if let Some(refs) = &self.owner_references {
            metadata.insert(
                "ownerReferences".into(),
                serde_json::to_value(refs).unwrap_or(Value::Null),
            );
        }
        let mut pod_metadata = Map::new();
        if !self.pod_labels.is_empty() {
            pod_metadata.insert("labels".into(), entries(&self.pod_labels));
        }
        if !self.pod_annotations.is_empty() {
            pod_metadata.insert("annotations".into(), entries(&self.pod_annotations));
        }
        let mut patch = Map::new();
        if !metadata.is_empty() {
            patch.insert("metadata".into(), metadata.into());
        }
        if !pod_metadata.is_empty() {
            patch.insert(
                "spec".into(),
                json!({ "podTemplate": { "metadata": pod_metadata } }),
            );
        }
        patch.into()
    }
}

/// The changes that turn `have` into `want`: keys to set, and keys of `have` absent from `want`
/// to remove.
pub(crate) fn map_diff(
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    let mut diff: BTreeMap<String, Option<String>> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for k in have.keys() {
        if !want.contains_key(k) {
            diff.insert(k.clone(), None);
        }
    }
    diff
}

/// `metadata.labels`, or an empty map.
pub(crate) fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// The value of label `key`, if set.
pub(crate) fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether a Sandbox's `Ready` condition is True.
pub(crate) fn sandbox_ready(sandbox: &crate::crd::Sandbox) -> bool {
    sandbox.status.as_ref().is_some_and(|s| {
        conditions::find(&s.conditions, crate::crd::conditions::types::READY)
            .is_some_and(|c| c.status == conditions::TRUE)
    })
}

/// Whether the object is being deleted.
pub(crate) fn terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

fn entries(map: &BTreeMap<String, Option<String>>) -> Value {
    map.iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map_or(Value::Null, |v| json!(v))))
        .collect::<Map<String, Value>>()
        .into()
}

/// A JSON merge patch (RFC 7386) of an object's labels, annotations and, for a Service, its
/// selector: `Some(value)` sets a key, `None` removes it. Keys not named are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergePatch {
    /// `metadata.labels` to set (`Some`) or remove (`None`).
    pub labels: BTreeMap<String, Option<String>>,
    /// `metadata.annotations` to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// `spec.selector` keys to set (`Some`) or remove (`None`); Services only.
    pub selector: BTreeMap<String, Option<String>>,
}

impl MergePatch {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty() && self.selector.is_empty()
    }

    /// The patch as the body of a `PATCH` with `Content-Type: application/merge-patch+json`.
    pub fn to_json(&self) -> Value {
        let mut patch = Map::new();
        let mut metadata = Map::new();
        if !self.labels.is_empty() {
            metadata.insert("labels".into(), entries(&self.labels));
        }
        if !self.annotations.is_empty() {
            metadata.insert("annotations".into(), entries(&self.annotations));
        }
        if !metadata.is_empty() {
            patch.insert("metadata".into(), metadata.into());
        }
        if !self.selector.is_empty() {
            patch.insert(
                "spec".into(),
                json!({ "selector": entries(&self.selector) }),
            );
        }
        patch.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_patch_is_an_empty_object() {
        let patch = MergePatch::default();
        assert!(patch.is_empty());
        assert_eq!(patch.to_json(), json!({}));
    }

    #[test]
    fn merge_patch_sets_and_removes_keys() {
        let patch = MergePatch {
            labels: BTreeMap::from([("a".into(), Some("1".into())), ("b".into(), None)]),
            annotations: BTreeMap::from([("note".into(), Some("x".into()))]),
            selector: BTreeMap::from([("old".into(), None), ("k".into(), Some("v".into()))]),
        };
        assert!(!patch.is_empty());
        assert_eq!(
            patch.to_json(),
            json!({
                "metadata": {"labels": {"a": "1", "b": null}, "annotations": {"note": "x"}},
                "spec": {"selector": {"k": "v", "old": null}},
            })
        );
    }

    #[test]
    fn sandbox_patch_carries_the_precondition_and_the_pod_metadata() {
        let owner = OwnerReference {
            api_version: "extensions.agents.x-k8s.io/v1beta1".into(),
            kind: "SandboxClaim".into(),
            name: "c".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let patch = SandboxPatch {
            resource_version: Some("42".into()),
            labels: BTreeMap::from([("a".into(), Some("1".into())), ("b".into(), None)]),
            owner_references: Some(vec![owner]),
            pod_labels: BTreeMap::from([("p".into(), Some("2".into()))]),
            pod_annotations: BTreeMap::from([("q".into(), None)]),
            ..SandboxPatch::default()
        };
        assert!(!patch.is_empty());
        assert_eq!(
            patch.to_json(),
            json!({
                "metadata": {
                    "resourceVersion": "42",
                    "labels": {"a": "1", "b": null},
                    "ownerReferences": [{
                        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                        "kind": "SandboxClaim",
                        "name": "c",
                        "uid": "u",
                        "controller": true,
                        "blockOwnerDeletion": true,
                    }],
                },
                "spec": {"podTemplate": {"metadata": {"labels": {"p": "2"}, "annotations": {"q": null}}}},
            })
        );
        let only_rv = SandboxPatch {
            resource_version: Some("1".into()),
            ..SandboxPatch::default()
        };
        assert!(only_rv.is_empty());
    }

    #[test]
    fn map_diff_sets_changed_and_removes_missing_keys() {
        let have = BTreeMap::from([
            ("keep".to_owned(), "1".to_owned()),
            ("change".to_owned(), "old".to_owned()),
            ("drop".to_owned(), "x".to_owned()),
        ]);
        let want = BTreeMap::from([
            ("keep".to_owned(), "1".to_owned()),
            ("change".to_owned(), "new".to_owned()),
            ("add".to_owned(), "y".to_owned()),
        ]);
        assert_eq!(
            map_diff(&have, &want),
            BTreeMap::from([
                ("add".to_owned(), Some("y".to_owned())),
                ("change".to_owned(), Some("new".to_owned())),
                ("drop".to_owned(), None),
            ])
        );
        assert!(map_diff(&want, &want).is_empty());
    }

    #[test]
    fn missing_metadata_names_kind_and_field() {
        let none = None;
        let empty = Some(String::new());
        let some = Some("x".to_owned());
        let err = required(&none, "SandboxClaim", "uid").unwrap_err();
        assert!(err.to_string().contains("SandboxClaim has no metadata.uid"));
        assert!(required(&empty, "SandboxClaim", "name").is_err());
        assert_eq!(required(&some, "SandboxClaim", "name"), Ok("x"));
    }

    #[test]
    fn merge_patch_of_labels_only_has_no_spec() {
        let patch = MergePatch {
            labels: BTreeMap::from([("a".into(), Some("1".into()))]),
            ..MergePatch::default()
        };
        assert_eq!(patch.to_json(), json!({"metadata": {"labels": {"a": "1"}}}));
    }
}
