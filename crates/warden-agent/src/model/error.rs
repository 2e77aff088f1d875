//! What can go wrong choosing or calling a model. Messages name the provider, the model and
//! what the server said (an excerpt), and never hold the API key.

use std::time::Duration;

use super::spec::{ACCEPTED_FORMS, Provider};

/// The longest excerpt of a response body an error keeps.
pub const BODY_EXCERPT: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("WARDEN_MODEL `{value}`: {reason}; accepted forms: {ACCEPTED_FORMS}")]
    Spec { value: String, reason: String },

    #[error("{provider} needs an API key: set {vars}")]
    MissingKey { provider: Provider, vars: String },

    #[error("{var} `{value}`: {reason}")]
    BaseUrl {
        var: String,
        value: String,
        reason: String,
    },

    #[error("could not set up the HTTP client: {0}")]
    Setup(String),

    /// The server answered with an error status.
    #[error(
        "{provider} model `{model}`: HTTP {status} from {url} after {attempts} attempt(s): {body}"
    )]
    Status {
        provider: Provider,
        model: String,
        url: String,
        status: u16,
        /// An excerpt of the body, key redacted.
        body: String,
        attempts: u32,
    },

    /// No answer, or no next stream event, within the timeout.
    #[error(
        "{provider} model `{model}`: no answer within {timeout:?} from {url} after {attempts} attempt(s)"
    )]
    Timeout {
        provider: Provider,
        model: String,
        url: String,
        timeout: Duration,
        attempts: u32,
    },

    /// The connection failed or broke before an answer.
    #[error(
        "{provider} model `{model}`: could not reach {url} after {attempts} attempt(s): {message}"
    )]
    Connect {
        provider: Provider,
        model: String,
        url: String,
        message: String,
        attempts: u32,
    },

    /// The server answered, but not in the provider's format.
    #[error("{provider} model `{model}`: the answer from {url} is not a valid response: {detail}")]
    InvalidResponse {
        provider: Provider,
        model: String,
        url: String,
        detail: String,
    },

    /// The provider reported an error inside a stream (e.g. Anthropic's `error` event).
    #[error("{provider} model `{model}`: the provider reported an error in the stream: {body}")]
    StreamError {
        provider: Provider,
        model: String,
        body: String,
    },

    /// The request could not be built (a bad tool schema, an empty conversation, ...).
    #[error("{provider} model `{model}`: the request was not sent: {message}")]
    Request {
        provider: Provider,
        model: String,
        message: String,
    },
}

impl ModelError {
    /// The HTTP status, for `Status` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ModelError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How many attempts were made, for errors of a call that was sent.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            ModelError::Status { attempts, .. }
            | ModelError::Timeout { attempts, .. }
            | ModelError::Connect { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }

    /// Whether another attempt may succeed: 408, 409, 429 and 5xx, timeouts and
    /// connection failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || (500..600).contains(status)
            }
            ModelError::Timeout { .. } | ModelError::Connect { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        match self {
            ModelError::Status { attempts, .. }
            | ModelError::Timeout { attempts, .. }
            | ModelError::Connect { attempts, .. } => *attempts = n,
            _ => {}
        }
    }
}

/// Cuts `text` to [`BODY_EXCERPT`] characters and replaces every occurrence of `secret`.
pub(crate) fn excerpt(text: &str, secret: Option<&str>) -> String {
    let mut text = text.trim().to_string();
    if let Some(secret) = secret.filter(|s| s.len() >= 4) {
        text = text.replace(secret, "<redacted>");
    }
    if text.chars().count() > BODY_EXCERPT {
        let cut: String = text.chars().take(BODY_EXCERPT).collect();
        format!("{cut}... ({} bytes in all)", text.len())
    } else if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_redacted() {
        let body = format!(
            "Incorrect API key provided: sk-secret-123. {}",
            "x".repeat(1000)
        );
        let e = excerpt(&body, Some("sk-secret-123"));
        assert!(!e.contains("sk-secret-123"));
        assert!(e.contains("<redacted>"));
        assert!(e.ends_with("bytes in all)"), "{e}");
        assert!(e.chars().count() < BODY_EXCERPT + 40);
        assert_eq!(excerpt("  ", None), "(empty body)");
    }

    #[test]
    fn retryable_statuses() {
        let status = |status| ModelError::Status {
            provider: Provider::Anthropic,
            model: "m".into(),
            url: "u".into(),
            status,
            body: String::new(),
            attempts: 1,
        };
        for s in [408, 409, 429, 500, 502, 503, 529] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!status(s).is_retryable(), "{s}");
        }
    }
}
