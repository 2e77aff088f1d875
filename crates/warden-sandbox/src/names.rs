//! Names and ids: DNS-1123 labels (what Kubernetes and the router accept as `X-Sandbox-ID`),
//! and random ids shaped like `generateName`.

use crate::driver::DriverError;

/// The longest DNS-1123 label.
pub const MAX_LABEL: usize = 63;

/// Characters of a random suffix: lowercase letters and digits.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Length of the random part of a cold sandbox's id (`sbx-` + this many).
pub const SANDBOX_SUFFIX: usize = 10;
/// Length of the random part of a pool member's id (`<pool>-` + this many).
pub const MEMBER_SUFFIX: usize = 5;

/// Checks a DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, starting and ending
/// with a letter or digit. `field` names the field in the error.
pub fn check_label(field: &str, name: &str) -> Result<(), DriverError> {
    check_label_max(field, name, MAX_LABEL)
}

/// Like [`check_label`] with a shorter limit (a pool's name leaves room for its members'
/// suffix).
pub fn check_label_max(field: &str, name: &str, max: usize) -> Result<(), DriverError> {
    let bad = |why: String| {
        Err(DriverError::InvalidArgument {
            field: field.to_string(),
            message: format!(
                "`{name}` {why}; use 1 to {max} lowercase letters, digits and `-`, starting and ending with a letter or digit (a DNS-1123 label)"
            ),
        })
    };
    if name.is_empty() {
        return bad("is empty".into());
    }
    if name.len() > max {
        return bad(format!("is {} characters long", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(format!("contains {c:?}"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("starts or ends with `-`".into());
    }
    Ok(())
}

/// `n` random characters from [`ALPHABET`], without modulo bias.
pub fn random_suffix(n: usize) -> Result<String, DriverError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        getrandom::fill(&mut buf)
            .map_err(|e| DriverError::Internal(format!("cannot read random bytes: {e}")))?;
        // 252 = 7 * 36: bytes at or above it would favour the first letters.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[(*b % 36) as usize] as char);
        }
    }
    Ok(out)
}

/// A cold sandbox's id: `sbx-` and ten random characters.
pub fn sandbox_id() -> Result<String, DriverError> {
    Ok(format!("sbx-{}", random_suffix(SANDBOX_SUFFIX)?))
}

/// A pool member's id: `<pool>-` and five random characters, like `generateName`.
pub fn member_id(pool: &str) -> Result<String, DriverError> {
    Ok(format!("{pool}-{}", random_suffix(MEMBER_SUFFIX)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("python-3", true),
            ("0abc", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("A", false),
            ("a_b", false),
            ("a.b", false),
            ("é", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
        ];
        for (name, ok) in cases {
            let r = check_label("name", name);
            assert_eq!(r.is_ok(), *ok, "{name:?}: {r:?}");
            if let Err(DriverError::InvalidArgument { field, message }) = r {
                assert_eq!(field, "name");
                assert!(message.contains("DNS-1123"), "{message}");
            }
        }
        assert!(check_label_max("pool", &"a".repeat(58), 57).is_err());
    }

    #[test]
    fn ids_are_labels_and_differ() {
        let a = sandbox_id().unwrap();
        let b = sandbox_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + SANDBOX_SUFFIX);
        check_label("id", &a).unwrap();
        let m = member_id("py").unwrap();
        assert!(m.starts_with("py-") && m.len() == 3 + MEMBER_SUFFIX, "{m}");
        check_label("id", &m).unwrap();
    }
}
