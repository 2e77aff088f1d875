//! Bearer-token auth: a token generated at first start (32 random bytes, hex), stored with
//! mode 0600 as `<data>/token`, compared in constant time.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, Method, header};
use subtle::ConstantTimeEq;

/// How requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>` on every route but `/healthz`.
    Token(String),
    /// `--no-auth`: only allowed on a loopback listen address.
    Disabled,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print the token.
            Auth::Token(_) => f.write_str("Auth::Token(<redacted>)"),
            Auth::Disabled => f.write_str("Auth::Disabled"),
        }
    }
}

impl Auth {
    /// Whether the request carries the right token (always, when auth is disabled).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Auth::Token(token) = self else {
            return true;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(given) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return false;
        };
        bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
    }

    /// [`Auth::allows`], or, on a WebSocket upgrade only, the token offered as the
    /// subprotocol `warden.bearer.<token>` (browsers cannot set headers on a WebSocket; see
    /// [`WS_PROTOCOL`]). Anywhere else a protocol header proves nothing.
    pub fn allows_request(&self, method: &Method, headers: &HeaderMap) -> bool {
        if self.allows(headers) {
            return true;
        }
        let Auth::Token(token) = self else {
            return true;
        };
        if !is_websocket_upgrade(method, headers) {
            return false;
        }
        let mut ok = false;
        for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for offered in value.split(',').map(str::trim) {
                if let Some(given) = offered.strip_prefix(WS_BEARER_PREFIX) {
                    // Every candidate is compared, so the time does not tell which matched.
                    ok |= bool::from(given.as_bytes().ct_eq(token.as_bytes()));
                }
            }
        }
        ok
    }
}

/// The subprotocol a WebSocket route answers with when the client offered it (the console
/// offers `warden.bearer.<token>` and this one).
pub const WS_PROTOCOL: &str = "warden.v1";

/// The prefix of the subprotocol that carries the bearer token on a WebSocket upgrade.
pub const WS_BEARER_PREFIX: &str = "warden.bearer.";

/// An HTTP/1.1 WebSocket opening handshake: GET with `Upgrade: websocket` and a key.
pub fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && headers.contains_key(header::SEC_WEBSOCKET_KEY)
}

/// A browser's WebSocket from a page of another origin (cross-site WebSocket hijacking):
/// its `Origin` names a host other than the one it connects to. Clients that send no
/// `Origin` (not browsers) pass.
pub fn is_cross_origin_websocket(method: &Method, headers: &HeaderMap) -> bool {
    if !is_websocket_upgrade(method, headers) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Some(origin_host) = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'))
    else {
        return true;
    };
    // The host the browser connected to: `Host`, or, behind a reverse proxy that rewrites it,
    // the `X-Forwarded-Host` it sets (a page cannot set either on a WebSocket).
    let same = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|h| origin_host.eq_ignore_ascii_case(h.trim()))
    };
    !(same("host") || same("x-forwarded-host"))
}

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}` or delete it to get a new token"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "{path} does not hold a token (expected 64 hex characters); delete it to get a new one"
    )]
    Malformed { path: PathBuf },
    #[error("no randomness for the token: {0}")]
    Random(String),
}

/// The token file of a data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// Reads `<data>/token`, or creates it (mode 0600) with a fresh token. Refuses a token file
/// that others can read.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, TokenError> {
    let path = token_path(data_dir);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::TooOpen { path, mode });
            }
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let token = text.trim().to_string();
            if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::Malformed { path });
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_token()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            writeln!(f, "{token}").map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(token)
        }
        Err(e) => Err(io(e)),
    }
}

/// 32 random bytes as 64 lowercase hex characters.
pub fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let t2 = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert_ne!(t1, new_token().unwrap());
    }

    #[test]
    fn open_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_token(dir.path()).unwrap();
        let path = token_path(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short\n").unwrap();
        let e = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not hold a token"), "{e}");
    }

    #[test]
    fn bearer_is_compared_exactly() {
        let auth = Auth::Token("ab".repeat(32));
        let mut h = HeaderMap::new();
        assert!(!auth.allows(&h));
        h.insert(
            "authorization",
            format!("Bearer {}", "ab".repeat(32)).parse().unwrap(),
        );
        assert!(auth.allows(&h));
        h.insert(
            "authorization",
            format!("Bearer {}", "ab".repeat(31)).parse().unwrap(),
        );
        assert!(!auth.allows(&h));
        h.insert(
            "authorization",
            format!("Basic {}", "ab".repeat(32)).parse().unwrap(),
        );
        assert!(!auth.allows(&h));
        assert!(Auth::Disabled.allows(&HeaderMap::new()));
        assert!(!format!("{auth:?}").contains("abab"));
    }

    fn upgrade(protocols: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        h.insert("sec-websocket-protocol", protocols.parse().unwrap());
        h
    }

    #[test]
    fn websocket_token_rides_in_the_protocol_header_on_upgrades_only() {
        let token = "cd".repeat(32);
        let auth = Auth::Token(token.clone());
        let get = Method::GET;
        let right = format!("warden.bearer.{token}, warden.v1");
        assert!(auth.allows_request(&get, &upgrade(&right)));
        // Either order, several headers.
        let mut h = upgrade("warden.v1");
        h.append(
            "sec-websocket-protocol",
            format!("warden.bearer.{token}").parse().unwrap(),
        );
        assert!(auth.allows_request(&get, &h));
        // Wrong, shorter, longer, empty, without the prefix.
        for bad in [
            format!("warden.bearer.{}, warden.v1", "cd".repeat(31)),
            format!("warden.bearer.{token}x, warden.v1"),
            "warden.bearer., warden.v1".to_string(),
            format!("{token}, warden.v1"),
            "warden.v1".to_string(),
        ] {
            assert!(!auth.allows_request(&get, &upgrade(&bad)), "{bad}");
        }
        // The same header on a request that is not an upgrade proves nothing.
        let mut plain = HeaderMap::new();
        plain.insert("sec-websocket-protocol", right.parse().unwrap());
        assert!(!auth.allows_request(&get, &plain));
        let mut no_key = upgrade(&right);
        no_key.remove("sec-websocket-key");
        assert!(!auth.allows_request(&get, &no_key));
        assert!(!auth.allows_request(&Method::POST, &upgrade(&right)));
        // The Authorization header still works on any request; --no-auth lets all through.
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert!(auth.allows_request(&Method::POST, &bearer));
        assert!(Auth::Disabled.allows_request(&get, &HeaderMap::new()));
    }

    #[test]
    fn websockets_from_other_origins_are_told_apart() {
        let get = Method::GET;
        let mut h = upgrade("warden.v1");
        h.insert("host", "127.0.0.1:7070".parse().unwrap());
        assert!(
            !is_cross_origin_websocket(&get, &h),
            "no Origin: not a browser"
        );
        h.insert("origin", "http://127.0.0.1:7070".parse().unwrap());
        assert!(!is_cross_origin_websocket(&get, &h));
        for evil in ["https://evil.example", "http://127.0.0.1:7071", "null"] {
            h.insert("origin", evil.parse().unwrap());
            assert!(is_cross_origin_websocket(&get, &h), "{evil}");
        }
        // Behind a proxy that rewrote Host.
        h.insert("host", "10.0.0.7:7070".parse().unwrap());
        h.insert("origin", "https://warden.example".parse().unwrap());
        assert!(is_cross_origin_websocket(&get, &h));
        h.insert("x-forwarded-host", "warden.example".parse().unwrap());
        assert!(!is_cross_origin_websocket(&get, &h));
        // Not an upgrade: CORS is the browser's business there.
        let mut plain = HeaderMap::new();
        plain.insert("origin", "https://evil.example".parse().unwrap());
        assert!(!is_cross_origin_websocket(&get, &plain));
    }
}
