//! Labels and annotations the agent-sandbox controllers put on the objects they manage, and the
//! hash of a sandbox's name that selects its pod.

/// On a Sandbox's pod: [`name_hash`] of the Sandbox's name. `status.selector` selects on it.
pub const SANDBOX_NAME_HASH: &str = "agents.x-k8s.io/sandbox-name-hash";
/// On a Sandbox: how it started, [`LAUNCH_TYPE_COLD`] or [`LAUNCH_TYPE_WARM`].
pub const LAUNCH_TYPE: &str = "agents.x-k8s.io/launch-type";
/// [`LAUNCH_TYPE`] of a Sandbox created for a claim.
pub const LAUNCH_TYPE_COLD: &str = "cold";
/// [`LAUNCH_TYPE`] of a Sandbox created by a warm pool, or adopted from one.
pub const LAUNCH_TYPE_WARM: &str = "warm";
/// The component that created a resource (a client, a controller).
pub const CREATED_BY: &str = "agents.x-k8s.io/created-by";
/// On a warm pool's Sandboxes: the pool that owns them.
pub const WARM_POOL_SANDBOX: &str = "agents.x-k8s.io/warm-pool-sandbox";
/// On a warm pool's Sandboxes: a hash of the template they were made from, to spot stale ones.
pub const SANDBOX_TEMPLATE_REF_HASH: &str = "agents.x-k8s.io/sandbox-template-ref-hash";
/// On a claimed Sandbox's pod: the UID of the claim.
pub const CLAIM_UID: &str = "agents.x-k8s.io/claim-uid";
/// Annotation on a Sandbox: the name of the SandboxTemplate it was made from.
pub const SANDBOX_TEMPLATE_REF_ANNOTATION: &str = "agents.x-k8s.io/sandbox-template-ref";

/// The value of [`SANDBOX_NAME_HASH`] for a Sandbox: FNV-1a (32-bit) of its name, as 8
/// lowercase hex digits.
pub fn name_hash(name: &str) -> String {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = name.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:08x}")
}

/// A Sandbox's `status.selector`: `agents.x-k8s.io/sandbox-name-hash=<hash>`.
pub fn sandbox_selector(name: &str) -> String {
    format!("{SANDBOX_NAME_HASH}={}", name_hash(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hash_is_fnv1a_32() {
        // Reference vectors of FNV-1a, 32-bit (Fowler, Noll, Vo test suite).
        let cases = [
            ("", "811c9dc5"),
            ("a", "e40c292c"),
            ("b", "e70c2de5"),
            ("c", "e60c2c52"),
            ("foo", "a9f37ed7"),
            ("foobar", "bf9cf968"),
            ("chongo was here!\n", "d49930d5"),
        ];
        for (input, want) in cases {
            assert_eq!(name_hash(input), want, "name_hash({input:?})");
        }
    }

    #[test]
    fn name_hash_pads_to_eight_digits() {
        // Every hash is 8 lowercase hex digits, leading zeros kept.
        for name in ["sandbox-1", "my-sandbox", "x", "pool-abcde", "A-Z"] {
            let h = name_hash(name);
            assert_eq!(h.len(), 8, "{name}: {h}");
            assert!(
                h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{name}: {h}"
            );
        }
    }

    #[test]
    fn selector_names_the_label() {
        assert_eq!(
            sandbox_selector("foobar"),
            "agents.x-k8s.io/sandbox-name-hash=bf9cf968"
        );
    }
}
