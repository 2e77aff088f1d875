//! `WARDEN_MODEL` and the provider settings read from the environment.

use std::fmt;
use std::time::Duration;

use super::error::ModelError;
use super::retry::RetryPolicy;

/// The forms `WARDEN_MODEL` accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "anthropic/<model>, openai/<model> (Responses API), \
     openai-chat/<model> (Chat Completions), gemini/<model>, ollama/<model>, \
     openai-compatible/<model>@<base-url>";

/// Who serves the model, and over which API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// The Anthropic Messages API.
    Anthropic,
    /// OpenAI through the Responses API.
    OpenAi,
    /// OpenAI through the Chat Completions API.
    OpenAiChat,
    /// Google's Gemini API (generateContent).
    Gemini,
    /// Ollama, through its OpenAI-compatible Chat Completions endpoint.
    Ollama,
    /// Any server speaking OpenAI Chat Completions at a given base URL.
    OpenAiCompatible,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::OpenAiChat,
        Provider::Gemini,
        Provider::Ollama,
        Provider::OpenAiCompatible,
    ];

    /// The prefix in `WARDEN_MODEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::OpenAiChat => "openai-chat",
            Provider::Gemini => "gemini",
            Provider::Ollama => "ollama",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    /// `gen_ai.provider.name` of the OpenTelemetry GenAI conventions.
    pub fn otel_name(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi | Provider::OpenAiChat => "openai",
            Provider::Gemini => "gcp.gemini",
            Provider::Ollama => "ollama",
            Provider::OpenAiCompatible => "openai_compatible",
        }
    }

    /// The variable that overrides the base URL, if the provider has one.
    pub fn base_url_var(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some("ANTHROPIC_BASE_URL"),
            Provider::OpenAi | Provider::OpenAiChat => Some("OPENAI_BASE_URL"),
            Provider::Gemini => Some("GEMINI_BASE_URL"),
            Provider::Ollama => Some("OLLAMA_HOST"),
            Provider::OpenAiCompatible => None,
        }
    }

    /// The base URL when nothing overrides it. Anthropic's excludes `/v1` (as
    /// `ANTHROPIC_BASE_URL` does); OpenAI's includes it (as `OPENAI_BASE_URL` does).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::OpenAi | Provider::OpenAiChat => Some("https://api.openai.com/v1"),
            Provider::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            Provider::Ollama => Some("http://127.0.0.1:11434"),
            Provider::OpenAiCompatible => None,
        }
    }

    /// The variables holding the API key, first found wins, and whether one is required.
    pub fn key_vars(self) -> (&'static [&'static str], bool) {
        match self {
            Provider::Anthropic => (&["ANTHROPIC_API_KEY"], true),
            Provider::OpenAi | Provider::OpenAiChat => (&["OPENAI_API_KEY"], true),
            Provider::Gemini => (&["GEMINI_API_KEY", "GOOGLE_API_KEY"], true),
            Provider::Ollama => (&["OLLAMA_API_KEY"], false),
            Provider::OpenAiCompatible => (&["WARDEN_MODEL_API_KEY"], false),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `WARDEN_MODEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub provider: Provider,
    /// The provider's model name, e.g. `claude-sonnet-4-5`.
    pub model: String,
    /// Only for `openai-compatible`: the base URL given after `@`.
    pub base_url: Option<String>,
}

impl ModelSpec {
    /// Parses `provider/model` (or `openai-compatible/model@base-url`).
    pub fn parse(value: &str) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Spec {
            value: value.to_string(),
            reason,
        };
        let Some((prefix, rest)) = value.split_once('/') else {
            return Err(bad("expected `<provider>/<model>`".into()));
        };
        let provider = Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == prefix)
            .ok_or_else(|| bad(format!("unknown provider `{prefix}`")))?;
        let (model, base_url) = if provider == Provider::OpenAiCompatible {
            // The URL starts at the first `@http://` or `@https://`: model names hold no
            // `@`, and a URL holding one (credentials) is refused below.
            let at = [rest.find("@http://"), rest.find("@https://")]
                .into_iter()
                .flatten()
                .min()
                .or_else(|| rest.rfind('@'));
            let Some((model, url)) = at.map(|i| (&rest[..i], &rest[i + 1..])) else {
                return Err(bad(
                    "openai-compatible needs the server's base URL after `@`".into(),
                ));
            };
            let url = check_base_url(url).map_err(|reason| bad(format!("base URL: {reason}")))?;
            (model, Some(url))
        } else {
            (rest, None)
        };
        if model.is_empty() {
            return Err(bad("the model name is empty".into()));
        }
        if let Some(c) = model
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '@')
        {
            return Err(bad(format!(
                "the model name `{model}` holds {c:?}, which no model name has"
            )));
        }
        Ok(Self {
            provider,
            model: model.to_string(),
            base_url,
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)?;
        if let Some(url) = &self.base_url {
            write!(f, "@{url}")?;
        }
        Ok(())
    }
}

/// Checks a base URL: http or https, a host, no credentials, query or fragment. Returns it
/// without a trailing slash.
fn check_base_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "`{url}` holds credentials; put the key in the key variable or a credential route"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// An API key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Everything a [`ModelClient`](super::ModelClient) needs: the model, where to send calls,
/// the key, and the retry and timeout policy.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub spec: ModelSpec,
    /// The provider's base URL, without a trailing slash (see
    /// [`Provider::default_base_url`] for which include `/v1`).
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    pub retry: RetryPolicy,
    /// The most one attempt may wait: for the whole answer of a call, and for the first and
    /// each next event of a stream.
    pub timeout: Duration,
    /// Honour `HTTP(S)_PROXY`/`NO_PROXY` (on by default: inside a warden sandbox they point
    /// at the egress proxy).
    pub use_env_proxy: bool,
}

impl ModelConfig {
    /// The default timeout of an attempt.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// A config for `spec` with an explicit base URL and key, default retries and timeout.
    pub fn new(spec: ModelSpec, base_url: impl Into<String>, api_key: Option<ApiKey>) -> Self {
        Self {
            spec,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key,
            retry: RetryPolicy::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            use_env_proxy: true,
        }
    }

    /// Reads `WARDEN_MODEL`, the provider's base URL variable and its key variable through
    /// `env` (pass `|k| std::env::var(k).ok()` for the process environment).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, ModelError> {
        let value = env("WARDEN_MODEL").ok_or_else(|| ModelError::Spec {
            value: String::new(),
            reason: "WARDEN_MODEL is not set".into(),
        })?;
        Self::for_spec(ModelSpec::parse(&value)?, env)
    }

    /// Like [`from_env`](Self::from_env) with the model already chosen.
    pub fn for_spec(
        spec: ModelSpec,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ModelError> {
        let provider = spec.provider;
        let base_url = match (&spec.base_url, provider.base_url_var()) {
            (Some(url), _) => url.clone(),
            (None, Some(var)) => match env(var).filter(|v| !v.trim().is_empty()) {
                Some(value) => {
                    // OLLAMA_HOST is often `host:port` without a scheme.
                    let url = if provider == Provider::Ollama && !value.contains("://") {
                        format!("http://{value}")
                    } else {
                        value.clone()
                    };
                    check_base_url(&url).map_err(|reason| ModelError::BaseUrl {
                        var: var.to_string(),
                        value,
                        reason,
                    })?
                }
                None => provider
                    .default_base_url()
                    .expect("every provider without a URL in its spec has a default")
                    .to_string(),
            },
            (None, None) => unreachable!("openai-compatible always carries its base URL"),
        };
        let (vars, required) = provider.key_vars();
        let api_key = vars
            .iter()
            .find_map(|var| env(var).filter(|v| !v.is_empty()))
            .map(ApiKey::new);
        if required && api_key.is_none() {
            return Err(ModelError::MissingKey {
                provider,
                vars: vars.join(" or "),
            });
        }
        Ok(Self::new(spec, base_url, api_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let good: &[(&str, Provider, &str, Option<&str>)] = &[
            (
                "anthropic/claude-sonnet-4-5",
                Provider::Anthropic,
                "claude-sonnet-4-5",
                None,
            ),
            ("openai/gpt-4.1", Provider::OpenAi, "gpt-4.1", None),
            (
                "openai-chat/gpt-4.1-mini",
                Provider::OpenAiChat,
                "gpt-4.1-mini",
                None,
            ),
            (
                "gemini/gemini-2.5-pro",
                Provider::Gemini,
                "gemini-2.5-pro",
                None,
            ),
            ("ollama/qwen3", Provider::Ollama, "qwen3", None),
            ("ollama/qwen3:8b", Provider::Ollama, "qwen3:8b", None),
            (
                "openai-compatible/meta-llama/Llama-3.3-70B@http://127.0.0.1:4000/v1/",
                Provider::OpenAiCompatible,
                "meta-llama/Llama-3.3-70B",
                Some("http://127.0.0.1:4000/v1"),
            ),
            (
                "openai-compatible/qwen@https://gateway.example/v1",
                Provider::OpenAiCompatible,
                "qwen",
                Some("https://gateway.example/v1"),
            ),
        ];
        for (value, provider, model, url) in good {
            let spec = ModelSpec::parse(value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(spec.provider, *provider, "{value}");
            assert_eq!(spec.model, *model, "{value}");
            assert_eq!(spec.base_url.as_deref(), *url, "{value}");
        }

        let bad: &[(&str, &str)] = &[
            ("", "expected `<provider>/<model>`"),
            ("claude-sonnet-4-5", "expected `<provider>/<model>`"),
            ("azure/gpt-4.1", "unknown provider `azure`"),
            ("Anthropic/claude", "unknown provider `Anthropic`"),
            ("anthropic/", "the model name is empty"),
            ("openai/gpt 4", "holds ' '"),
            ("openai/gpt-4.1@http://x", "holds '@'"),
            ("openai-compatible/qwen", "needs the server's base URL"),
            (
                "openai-compatible/@http://127.0.0.1:1/v1",
                "the model name is empty",
            ),
            (
                "openai-compatible/qwen@ftp://host/v1",
                "must start with http:// or https://",
            ),
            ("openai-compatible/qwen@not a url", "is not a URL"),
            (
                "openai-compatible/qwen@http://user:pw@host/v1",
                "holds credentials",
            ),
            (
                "openai-compatible/qwen@http://host/v1?key=1",
                "query or fragment",
            ),
        ];
        for (value, expected) in bad {
            let err = ModelSpec::parse(value).expect_err(value).to_string();
            assert!(err.contains(expected), "{value}: {err}");
            assert!(
                err.contains(&format!("`{value}`")),
                "names the value: {err}"
            );
            assert!(err.contains(ACCEPTED_FORMS), "lists the forms: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for value in [
            "anthropic/claude-sonnet-4-5",
            "openai-compatible/m@http://127.0.0.1:9/v1",
        ] {
            assert_eq!(ModelSpec::parse(value).unwrap().to_string(), value);
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn config_reads_base_urls_and_keys() {
        let c = ModelConfig::from_env(env_of(&[
            ("WARDEN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:3128/anthropic/"),
            ("ANTHROPIC_API_KEY", "placeholder"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:3128/anthropic");
        assert_eq!(c.api_key.as_ref().unwrap().expose(), "placeholder");
        assert!(!format!("{c:?}").contains("placeholder"));

        let c = ModelConfig::from_env(env_of(&[
            ("WARDEN_MODEL", "openai/gpt-4.1"),
            ("OPENAI_API_KEY", "k"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "https://api.openai.com/v1");

        let c = ModelConfig::from_env(env_of(&[
            ("WARDEN_MODEL", "ollama/qwen3"),
            ("OLLAMA_HOST", "127.0.0.1:11500"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:11500");
        assert!(c.api_key.is_none());

        let c = ModelConfig::from_env(env_of(&[
            ("WARDEN_MODEL", "gemini/gemini-2.5-pro"),
            ("GOOGLE_API_KEY", "g"),
        ]))
        .unwrap();
        assert_eq!(c.api_key.unwrap().expose(), "g");
    }

    #[test]
    fn config_errors_name_the_variable() {
        let err = ModelConfig::from_env(env_of(&[("WARDEN_MODEL", "openai/gpt-4.1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");

        let err = ModelConfig::from_env(env_of(&[
            ("WARDEN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", "127.0.0.1:3128/anthropic"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ANTHROPIC_BASE_URL"), "{err}");
        assert!(err.contains("127.0.0.1:3128/anthropic"), "{err}");

        let err = ModelConfig::from_env(env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("WARDEN_MODEL is not set"), "{err}");
        assert!(err.contains(ACCEPTED_FORMS), "{err}");
    }
}
