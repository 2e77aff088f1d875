//! Where a route's secret comes from: the host environment, a file, or a token exchange
//! ([`crate::token_exchange`]). Secrets live in the proxy process only; their `Debug` output
//! is redacted so they never reach a log.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use warden_policy::CredentialSpec;

/// A secret value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for building the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// The future [`CredentialSource::secret`] returns.
pub type SecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Secret, CredentialError>> + Send + 'a>>;

/// Gives the current secret of a route; called for every request, so sources that expire
/// (token exchange) cache and refresh inside.
pub trait CredentialSource: Send + Sync + 'static {
    fn secret(&self) -> SecretFuture<'_>;
}

impl fmt::Debug for dyn CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn CredentialSource")
    }
}

/// A secret read once, when the proxy starts.
#[derive(Debug, Clone)]
pub struct StaticCredential(Secret);

impl StaticCredential {
    pub fn new(secret: Secret) -> Self {
        StaticCredential(secret)
    }
}

impl CredentialSource for StaticCredential {
    fn secret(&self) -> SecretFuture<'_> {
        let secret = self.0.clone();
        Box::pin(async move { Ok(secret) })
    }
}

/// Looks a variable up in the environment warden runs in (a seam for tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads an `env` or `file` secret now. Empty secrets are errors: a route that sends an empty
/// key fails later and more confusingly.
pub fn read_secret(spec: &CredentialSpec, env: EnvLookup<'_>) -> Result<Secret, CredentialError> {
    let value = match spec {
        CredentialSpec::Env(var) => env(var).ok_or_else(|| {
            CredentialError(format!(
                "environment variable {var} is not set (export it where warden runs; it never enters the sandbox)"
            ))
        })?,
        CredentialSpec::File(path) => std::fs::read_to_string(path)
            .map_err(|e| CredentialError(format!("cannot read {}: {e}", path.display())))?,
        CredentialSpec::TokenExchange(_) => {
            return Err(CredentialError(
                "a token exchange is not a static secret".into(),
            ));
        }
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(CredentialError(match spec {
            CredentialSpec::Env(var) => format!("environment variable {var} is empty"),
            CredentialSpec::File(path) => format!("{} is empty", path.display()),
            CredentialSpec::TokenExchange(_) => unreachable!("handled above"),
        }));
    }
    Ok(Secret::new(value))
}

/// The credential source a spec describes, ready to serve.
pub fn credential_source(
    spec: &CredentialSpec,
    env: EnvLookup<'_>,
) -> Result<Arc<dyn CredentialSource>, CredentialError> {
    match spec {
        CredentialSpec::Env(_) | CredentialSpec::File(_) => {
            Ok(Arc::new(StaticCredential::new(read_secret(spec, env)?)))
        }
        CredentialSpec::TokenExchange(t) => {
            Ok(Arc::new(crate::token_exchange::TokenExchange::new(t, env)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_trimmed() {
        let env = |k: &str| (k == "KEY").then(|| " sk-123\n".to_string());
        let s = read_secret(&CredentialSpec::Env("KEY".into()), &env).unwrap();
        assert_eq!(s.expose(), "sk-123");
        assert!(!format!("{s:?}").contains("sk-123"));
        let err = read_secret(&CredentialSpec::Env("NOPE".into()), &env).unwrap_err();
        assert!(err.0.contains("NOPE is not set"), "{err}");
        let dir = std::env::temp_dir().join(format!("warden-cred-{}", std::process::id()));
        std::fs::write(&dir, "\n").unwrap();
        let err = read_secret(&CredentialSpec::File(dir.clone()), &env).unwrap_err();
        assert!(err.0.contains("is empty"), "{err}");
        std::fs::remove_file(&dir).unwrap();
    }
}
