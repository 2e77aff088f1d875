//! Who sent a delivery: HMAC-SHA256 signatures over the raw body (GitHub's
//! `X-Hub-Signature-256: sha256=<hex>`, PagerDuty's `X-PagerDuty-Signature: v1=<hex>[,v1=...]`)
//! and bearer secrets (`Authorization: Bearer <secret>`: Alertmanager's
//! `http_config.authorization`, generic hooks). Pure; every comparison in constant time; any
//! doubt is a failure.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::Secret;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The header GitHub signs with.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// The header PagerDuty signs with.
pub const PAGERDUTY_SIGNATURE: &str = "x-pagerduty-signature";

/// HMAC-SHA256 of `body` under `secret`, as lower-case hex.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(body);
    m
}

/// Whether `hex_sig` is the HMAC of `body` under `secret` (constant time).
fn hmac_matches(secret: &[u8], body: &[u8], hex_sig: &str) -> Result<bool, ()> {
    if hex_sig.len() != 64 {
        return Err(());
    }
    let sig = hex::decode(hex_sig).map_err(|_| ())?;
    Ok(mac(secret, body).verify_slice(&sig).is_ok())
}

/// Checks GitHub's `X-Hub-Signature-256` header; the error says what was wrong (never the
/// expected signature).
pub fn github(secret: &Secret, header: Option<&str>, body: &[u8]) -> Result<(), String> {
    let Some(value) = header else {
        return Err("no X-Hub-Signature-256 header; set the webhook's secret in GitHub".into());
    };
    let Some(hex_sig) = value.trim().strip_prefix("sha256=") else {
        return Err("X-Hub-Signature-256 is not `sha256=<64 hex digits>`".into());
    };
    match hmac_matches(secret.expose().as_bytes(), body, hex_sig) {
        Ok(true) => Ok(()),
        Ok(false) => Err(
            "X-Hub-Signature-256 does not match the body (a different secret, or a changed body)"
                .into(),
        ),
        Err(()) => Err("X-Hub-Signature-256 is not `sha256=<64 hex digits>`".into()),
    }
}

/// Checks PagerDuty's `X-PagerDuty-Signature` header: one or more comma-separated `v1=<hex>`
/// (several while a secret is being rotated); one match is enough, other versions are
/// skipped.
pub fn pagerduty(secret: &Secret, header: Option<&str>, body: &[u8]) -> Result<(), String> {
    let Some(value) = header else {
        return Err(
            "no X-PagerDuty-Signature header; use a PagerDuty v3 webhook subscription".into(),
        );
    };
    let mut any_v1 = false;
    let mut matched = false;
    for sig in value.split(',') {
        let Some(hex_sig) = sig.trim().strip_prefix("v1=") else {
            continue;
        };
        any_v1 = true;
        // No early exit: every candidate is checked.
        if hmac_matches(secret.expose().as_bytes(), body, hex_sig) == Ok(true) {
            matched = true;
        }
    }
    match (any_v1, matched) {
        (_, true) => Ok(()),
        (false, false) => Err("X-PagerDuty-Signature has no `v1=<64 hex digits>` signature".into()),
        (true, false) => Err(
            "no X-PagerDuty-Signature signature matches the body (a different secret, or a changed body)"
                .into(),
        ),
    }
}

/// Checks `Authorization: Bearer <secret>`. Both sides are hashed first, so the comparison
/// takes the same time whatever the lengths.
pub fn bearer(secret: &Secret, authorization: Option<&str>) -> Result<(), String> {
    let Some(value) = authorization else {
        return Err("no Authorization header; send `Authorization: Bearer <secret>`".into());
    };
    let Some(given) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Err("the Authorization header is not `Bearer <secret>`".into());
    };
    let given = Sha256::digest(given.trim().as_bytes());
    let want = Sha256::digest(secret.expose().as_bytes());
    if bool::from(given.as_slice().ct_eq(want.as_slice())) {
        Ok(())
    } else {
        Err("the bearer secret is wrong".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries").
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_string())
    }

    #[test]
    fn github_test_vector() {
        assert_eq!(
            format!("sha256={}", hmac_sha256_hex(GH_SECRET.as_bytes(), GH_BODY)),
            GH_SIG
        );
        assert_eq!(github(&secret(GH_SECRET), Some(GH_SIG), GH_BODY), Ok(()));
    }

    #[test]
    fn github_failures() {
        let s = secret(GH_SECRET);
        let upper = GH_SIG.to_uppercase().replace("SHA256=", "sha256=");
        let cases: [(Option<&str>, &[u8], &str); 8] = [
            (None, GH_BODY, "no X-Hub-Signature-256"),
            (Some(""), GH_BODY, "not `sha256="),
            (Some("sha1=abc"), GH_BODY, "not `sha256="),
            (Some("sha256=zz"), GH_BODY, "not `sha256="),
            (Some(&GH_SIG[..GH_SIG.len() - 2]), GH_BODY, "not `sha256="),
            (Some(GH_SIG), b"Hello, World?", "does not match"),
            (
                Some("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
                GH_BODY,
                "does not match",
            ),
            (
                Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g"),
                GH_BODY,
                "not `sha256=",
            ),
        ];
        for (header, body, want) in cases {
            let e = github(&s, header, body).unwrap_err();
            assert!(e.contains(want), "{header:?}: {e}");
        }
        // Hex digits in upper case are still the same bytes.
        assert_eq!(github(&s, Some(&upper), GH_BODY), Ok(()));
        // Another secret.
        assert!(github(&secret("another secret entirely"), Some(GH_SIG), GH_BODY).is_err());
    }

    #[test]
    fn pagerduty_signatures_and_rotation() {
        let s = secret("pagerduty-secret-0123456789");
        let body = br#"{"event":{"id":"01ABC","event_type":"incident.triggered"}}"#;
        let good = format!(
            "v1={}",
            hmac_sha256_hex(b"pagerduty-secret-0123456789", body)
        );
        let old = format!("v1={}", hmac_sha256_hex(b"the previous secret!!", body));
        assert_eq!(pagerduty(&s, Some(&good), body), Ok(()));
        // During a rotation: the old secret's signature first, ours second.
        assert_eq!(pagerduty(&s, Some(&format!("{old},{good}")), body), Ok(()));
        assert_eq!(pagerduty(&s, Some(&format!("{good}, {old}")), body), Ok(()));
        // A future version is skipped, not an error, when a v1 matches.
        assert_eq!(
            pagerduty(&s, Some(&format!("v2=abcd,{good}")), body),
            Ok(())
        );
        let cases: [(Option<&str>, &str); 4] = [
            (None, "no X-PagerDuty-Signature"),
            (Some("v2=abcd"), "no `v1="),
            (Some(&old), "no X-PagerDuty-Signature signature matches"),
            (
                Some("v1=nothex"),
                "no X-PagerDuty-Signature signature matches",
            ),
        ];
        for (header, want) in cases {
            let e = pagerduty(&s, header, body).unwrap_err();
            assert!(e.contains(want), "{header:?}: {e}");
        }
        assert!(pagerduty(&s, Some(&good), b"{}").is_err());
    }

    #[test]
    fn bearer_secrets() {
        let s = secret("alertmanager-bearer-secret");
        assert_eq!(
            bearer(&s, Some("Bearer alertmanager-bearer-secret")),
            Ok(())
        );
        assert_eq!(
            bearer(&s, Some("bearer alertmanager-bearer-secret")),
            Ok(())
        );
        let cases: [(Option<&str>, &str); 5] = [
            (None, "no Authorization"),
            (Some("Basic YTpi"), "not `Bearer"),
            (Some("Bearer "), "wrong"),
            (Some("Bearer alertmanager-bearer-secreT"), "wrong"),
            (Some("Bearer alertmanager-bearer-secret-and-more"), "wrong"),
        ];
        for (header, want) in cases {
            let e = bearer(&s, header).unwrap_err();
            assert!(e.contains(want), "{header:?}: {e}");
        }
    }
}
