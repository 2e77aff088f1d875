//! Bearer-token auth: a token generated at first start (32 random bytes, hex), stored with
//! mode 0600 as `<data>/token`, compared in constant time.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
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
            .get(axum::http::header::AUTHORIZATION)
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
}
