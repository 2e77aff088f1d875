//! Who controls an object: its controller `ownerReference`, matched by UID. The controllers act
//! only on objects they control; anything else they report and leave alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The controller reference an object made for (or adopted by) a `K` named `name` carries:
/// `controller: true`, and `blockOwnerDeletion: true` so a foreground deletion of the owner
/// waits for it.
pub(crate) fn controller_reference<K: Resource<DynamicType = ()>>(
    name: &str,
    uid: &str,
) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta`'s controller is a `K` (by API group and kind, any name).
pub(crate) fn controlled_by_kind<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> bool {
    controller_of(meta).is_some_and(|r| {
        r.kind == K::kind(&()) && r.api_version.split('/').next() == Some(&*K::group(&()))
    })
}

/// An object's controller, relative to one owner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Ownership<'a> {
    /// Its controller reference has the owner's UID.
    Controlled,
    /// It has no controller.
    Uncontrolled,
    /// Another object controls it.
    ControlledBy(&'a OwnerReference),
}

/// The `ownerReference` with `controller: true`, if any.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// How `meta`'s object relates to the owner whose UID is `owner_uid`.
pub(crate) fn ownership<'a>(meta: &'a ObjectMeta, owner_uid: &str) -> Ownership<'a> {
    match controller_of(meta) {
        None => Ownership::Uncontrolled,
        Some(r) if r.uid == owner_uid => Ownership::Controlled,
        Some(r) => Ownership::ControlledBy(r),
    }
}

/// Why `kind` `name` is left alone, for a condition message.
pub(crate) fn not_controlled(kind: &str, name: &str, ownership: Ownership<'_>) -> String {
    not_controlled_by(kind, name, ownership, "Sandbox")
}

/// Why `kind` `name` is left alone by the `owner_kind` reconciling it, for a message.
pub(crate) fn not_controlled_by(
    kind: &str,
    name: &str,
    ownership: Ownership<'_>,
    owner_kind: &str,
) -> String {
    match ownership {
        Ownership::ControlledBy(r) => format!(
            "{kind} {name:?} exists and is controlled by {} {:?} (uid {}), not by this \
             {owner_kind}; it is left alone",
            r.kind, r.name, r.uid
        ),
        Ownership::Uncontrolled | Ownership::Controlled => format!(
            "{kind} {name:?} exists and is not controlled by this {owner_kind}; it is neither \
             adopted nor replaced"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "agents.x-k8s.io/v1beta1".into(),
            kind: "Sandbox".into(),
            name: "other".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        }
    }

    fn meta(refs: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(refs),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn ownership_is_by_controller_uid() {
        let cases = [
            (vec![], "none"),
            (vec![owner("u1", None)], "none"),
            (vec![owner("u1", Some(false))], "none"),
            (vec![owner("u1", Some(true))], "this"),
            (vec![owner("u2", Some(true))], "other"),
            (vec![owner("u1", None), owner("u2", Some(true))], "other"),
            (vec![owner("u2", None), owner("u1", Some(true))], "this"),
        ];
        for (refs, want) in cases {
            let meta = meta(refs.clone());
            let got = match ownership(&meta, "u1") {
                Ownership::Controlled => "this",
                Ownership::Uncontrolled => "none",
                Ownership::ControlledBy(_) => "other",
            };
            assert_eq!(got, want, "{refs:?}");
        }
        assert_eq!(
            ownership(&ObjectMeta::default(), "u1"),
            Ownership::Uncontrolled
        );
    }

    #[test]
    fn controller_reference_and_kind() {
        use crate::crd::{SandboxClaim, SandboxWarmPool};
        let r = controller_reference::<SandboxClaim>("c", "u");
        assert_eq!(r.api_version, "extensions.agents.x-k8s.io/v1beta1");
        assert_eq!(r.kind, "SandboxClaim");
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
        let m = meta(vec![r]);
        assert!(controlled_by_kind::<SandboxClaim>(&m));
        assert!(!controlled_by_kind::<SandboxWarmPool>(&m));
        let mut other_group = owner("u", Some(true));
        other_group.kind = "SandboxClaim".into();
        assert!(!controlled_by_kind::<SandboxClaim>(&meta(vec![
            other_group
        ])));
        assert!(!controlled_by_kind::<SandboxClaim>(&ObjectMeta::default()));
    }

    #[test]
    fn messages_name_the_object_and_its_controller() {
        let r = owner("u2", Some(true));
        let m = not_controlled("Pod", "sb", Ownership::ControlledBy(&r));
        assert!(m.contains("Pod \"sb\"") && m.contains("Sandbox \"other\"") && m.contains("u2"));
        let m = not_controlled("Service", "sb", Ownership::Uncontrolled);
        assert!(
            m.contains("Service \"sb\"") && m.contains("not controlled"),
            "{m}"
        );
        let m = not_controlled_by(
            "NetworkPolicy",
            "np",
            Ownership::Uncontrolled,
            "SandboxTemplate",
        );
        assert!(m.contains("this SandboxTemplate"), "{m}");
    }
}
