//! The controllers' decisions, as pure functions: from a resource and the objects observed for
//! it, the actions that bring the cluster to the desired state and the status to write.
//!
//! Nothing here talks to an API server, reads a clock or logs: the shell that watches the
//! cluster passes the snapshot and the time in, applies the [`sandbox::Action`]s it gets back
//! and writes the status. So every branch is unit-tested without a cluster.

mod conditions;
mod ownership;
pub mod sandbox;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

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
        fn entries(map: &BTreeMap<String, Option<String>>) -> Value {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map_or(Value::Null, |v| json!(v))))
                .collect::<Map<String, Value>>()
                .into()
        }
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
    fn merge_patch_of_labels_only_has_no_spec() {
        let patch = MergePatch {
            labels: BTreeMap::from([("a".into(), Some("1".into()))]),
            ..MergePatch::default()
        };
        assert_eq!(patch.to_json(), json!({"metadata": {"labels": {"a": "1"}}}));
    }
}
