//! RFC 8693 OAuth 2.0 token exchange as a credential source: the proxy trades a workload's
//! subject token (a SPIFFE JWT-SVID, a projected Kubernetes service-account token) for an
//! access token at a token endpoint and puts that in a credential route's header.
//!
//! Owns: the exchange request (RFC 8693 §2.1, client authentication per RFC 6749 §2.3.1),
//! reading the response (§2.2, errors per RFC 6749 §5.2), and the cache with its refresh.
//! Must never: put the subject token, the actor token, the client secret or an access token
//! in an error or a log line (the errors reach the sandbox in the proxy's 502 answers), or
//! send them over cleartext to anything but loopback.
//!
//! Caching. The access token is kept until less than `min(60 s, 10% of its lifetime)` of
//! `expires_in` remains, counted from when the request was sent. A response without
//! `expires_in` is cached for [`DEFAULT_LIFETIME`] (5 minutes): the endpoint's own default is
//! unknown, and a short guess costs only an extra exchange. Lifetimes are capped at
//! [`MAX_LIFETIME`] so a rotated subject token is used within a day whatever the endpoint
//! says. One `tokio::sync::Mutex` guards the cache and is held across the exchange, so callers
//! arriving while a refresh is in flight wait for it and share its result: one exchange, not
//! a stampede. A failure is kept only for a short backoff (1 s, doubling to 30 s while
//! failures repeat), during which callers get the same error at once instead of queueing
//! behind one more attempt each; the first call after the backoff tries again. While a
//! refresh fails, a token that has not yet expired is still served.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use warden_policy::TokenExchangeSpec;

use crate::client::HttpClient;
use crate::credential::{
    CredentialError, CredentialSource, EnvLookup, Secret, SecretFuture, read_secret,
};

/// `grant_type` of a token exchange (RFC 8693 §2.1).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// How long a token without `expires_in` is cached.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// The longest a token is cached, whatever `expires_in` says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// A token is refreshed when less than this, or 10% of its lifetime if smaller, remains.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Backoff after the first failed exchange; doubles while failures repeat.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole exchange (connect, send, read the answer); callers wait on it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Token responses are small; anything bigger is not one.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How much of a server's free text (an error description, a non-OAuth error page) is quoted.
const MAX_QUOTE_CHARS: usize = 300;
/// The policy-file path of the spec, for errors found in [`TokenExchange::new`].
const FIELD: &str = "credential.token_exchange";

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Exchanges a subject token for an access token at a token endpoint, caching it (see the
/// module documentation for the cache, its refresh and its single flight).
pub struct TokenExchange {
    endpoint: String,
    uri: Uri,
    subject: TokenFile,
    actor: Option<TokenFile>,
    /// `audience`, `resource`, `scope`, `requested_token_type`, as configured.
    options: Vec<(&'static str, String)>,
    client_auth: ClientAuth,
    client: HttpClient,
    clock: Clock,
    cache: Mutex<Cache>,
}

/// A token read from a file at every exchange, with its RFC 8693 type URI.
#[derive(Debug, Clone)]
struct TokenFile {
    path: PathBuf,
    token_type: String,
    /// The policy-file key of the path, for errors.
    field: &'static str,
}

/// How the proxy authenticates itself to the token endpoint.
enum ClientAuth {
    None,
    /// A public client: `client_id` goes in the form.
    Id(String),
    /// HTTP Basic (RFC 6749 §2.3.1); the secret is kept to scrub it from server messages.
    Basic {
        client_id: String,
        header: HeaderValue,
        secret: Secret,
    },
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client_auth = match &self.client_auth {
            ClientAuth::None => "none".to_string(),
            ClientAuth::Id(id) => format!("client_id {id}"),
            ClientAuth::Basic { client_id, .. } => format!("basic {client_id}:<redacted>"),
        };
        f.debug_struct("TokenExchange")
            .field("endpoint", &self.endpoint)
            .field("subject", &self.subject)
            .field("actor", &self.actor)
            .field("options", &self.options)
            .field("client_auth", &client_auth)
            .finish_non_exhaustive()
    }
}

impl TokenExchange {
    /// Checks the spec and prepares the client; exchanges nothing yet (the first
    /// [`CredentialSource::secret`] does). Fails when the endpoint is not `https://` (or
    /// `http://` to loopback), a token file cannot be read now, the client secret is missing
    /// or the CA file is unusable; the message names the policy key.
    pub fn new(spec: &TokenExchangeSpec, env: EnvLookup<'_>) -> Result<Self, CredentialError> {
        let invalid =
            |key: &str, message: String| CredentialError(format!("{FIELD}.{key}: {message}"));
        let uri = check_endpoint(&spec.endpoint).map_err(|m| invalid("endpoint", m))?;

        if spec.subject_token_type.trim().is_empty() {
            return Err(invalid(
                "subject_token_type",
                "must not be empty (the default is urn:ietf:params:oauth:token-type:jwt)".into(),
            ));
        }
        let subject = TokenFile {
            path: spec.subject_token_file.clone(),
            token_type: spec.subject_token_type.clone(),
            field: "subject_token_file",
        };
        read_token(&subject).map_err(|m| invalid(subject.field, m))?;

        let actor = match (&spec.actor_token_file, &spec.actor_token_type) {
            (None, None) => None,
            (Some(path), Some(token_type)) if !token_type.trim().is_empty() => {
                let actor = TokenFile {
                    path: path.clone(),
                    token_type: token_type.clone(),
                    field: "actor_token_file",
                };
                read_token(&actor).map_err(|m| invalid(actor.field, m))?;
                Some(actor)
            }
            _ => {
                return Err(invalid(
                    "actor_token_type",
                    "`actor_token_file` and a non-empty `actor_token_type` go together".into(),
                ));
            }
        };

        let client_auth = match (&spec.client_id, &spec.client_secret) {
            (None, None) => ClientAuth::None,
            (None, Some(_)) => {
                return Err(invalid(
                    "client_id",
                    "a client secret needs the client id it belongs to".into(),
                ));
            }
            (Some(id), _) if id.is_empty() => {
                return Err(invalid("client_id", "must not be empty".into()));
            }
            (Some(id), None) => ClientAuth::Id(id.clone()),
            (Some(id), Some(secret_spec)) => {
                let secret =
                    read_secret(secret_spec, env).map_err(|e| invalid("client_secret", e.0))?;
                let mut header = HeaderValue::from_str(&basic_credentials(id, secret.expose()))
                    .expect("base64 is a valid header value");
                header.set_sensitive(true);
                ClientAuth::Basic {
                    client_id: id.clone(),
                    header,
                    secret,
                }
            }
        };

        let options = [
            ("resource", &spec.resource),
            ("audience", &spec.audience),
            ("scope", &spec.scope),
            ("requested_token_type", &spec.requested_token_type),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
        .collect();

        let client = HttpClient::new(spec.ca_file.as_deref(), CONNECT_TIMEOUT)
            .map_err(|e| invalid("ca_file", e.to_string()))?;

        Ok(TokenExchange {
            endpoint: spec.endpoint.clone(),
            uri,
            subject,
            actor,
            options,
            client_auth,
            client,
            clock: Arc::new(Instant::now),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Replaces the clock the cache and the backoff read (the default is [`Instant::now`]), so
    /// tests can move time past a refresh point without waiting. Network timeouts keep using
    /// tokio's timer.
    pub fn with_clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The token endpoint, as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The cached token, or a fresh one. Holds the cache lock across the exchange: that is
    /// the single flight.
    async fn current(&self) -> Result<Secret, CredentialError> {
        let mut cache = self.cache.lock().await;
        let now = (self.clock)();
        match cache.lookup(now) {
            Lookup::Fresh(secret) => return Ok(secret),
            Lookup::BackingOff { error, retry_in } => {
                return Err(CredentialError(format!(
                    "{error} (the exchange is retried in {} s)",
                    retry_in.as_secs_f64().ceil() as u64
                )));
            }
            Lookup::Exchange => {}
        }
        let outcome = match tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs())),
        };
        let after = (self.clock)();
        match outcome {
            Ok(issued) => {
                tracing::debug!(
                    endpoint = %self.endpoint,
                    lifetime_s = issued.lifetime.map(|l| l.as_secs()),
                    issued_token_type = issued.issued_token_type.as_deref().unwrap_or("-"),
                    "token exchange succeeded"
                );
                let secret = issued.access_token.clone();
                cache.store(now, issued);
                Ok(secret)
            }
            Err(why) => {
                let error = CredentialError(format!("token exchange at {}: {why}", self.endpoint));
                tracing::warn!(error = %error, "token exchange failed");
                match cache.fail(after, error.clone()) {
                    Some(still_valid) => {
                        tracing::warn!(
                            endpoint = %self.endpoint,
                            "refresh failed; serving the cached token until it expires"
                        );
                        Ok(still_valid)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// One exchange. The error is a message without the endpoint (the caller adds it) and,
    /// by construction, without any secret.
    async fn exchange(&self) -> Result<Issued, String> {
        // Blocking reads of small local files, once per exchange (not per request): cheaper
        // than a trip to the blocking pool.
        let subject =
            read_token(&self.subject).map_err(|m| format!("{}: {m}", self.subject.field))?;
        let actor = match &self.actor {
            Some(a) => Some((a, read_token(a).map_err(|m| format!("{}: {m}", a.field))?)),
            None => None,
        };
        // What a confused or hostile endpoint could echo back, scrubbed from its messages.
        let mut secrets = vec![subject.clone()];
        secrets.extend(actor.as_ref().map(|(_, t)| t.clone()));
        if let ClientAuth::Basic { secret, .. } = &self.client_auth {
            secrets.push(secret.clone());
        }

        let client_id = match &self.client_auth {
            ClientAuth::Id(id) => Some(id.as_str()),
            ClientAuth::None | ClientAuth::Basic { .. } => None,
        };
        let body = exchange_form(&ExchangeForm {
            subject_token: subject.expose(),
            subject_token_type: &self.subject.token_type,
            actor: actor
                .as_ref()
                .map(|(a, t)| (t.expose(), a.token_type.as_str())),
            options: &self.options,
            client_id,
        });
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("warden/", env!("CARGO_PKG_VERSION")));
        if let ClientAuth::Basic { header, .. } = &self.client_auth {
            request = request.header(AUTHORIZATION, header.clone());
        }
        let request = request
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| format!("cannot build the request: {e}"))?;

        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    format!(
                        "the response (HTTP {status}) is larger than {} KiB, which no token response is",
                        MAX_RESPONSE_BYTES / 1024
                    )
                } else {
                    format!("reading the response (HTTP {status}) failed: {e}")
                }
            })?
            .to_bytes();

        if status.is_success() {
            parse_issued(&body)
                .map_err(|m| format!("HTTP {status}, content-type {content_type}: {m}"))
        } else {
            Err(describe_failure(status, &content_type, &body, &secrets))
        }
    }
}

impl CredentialSource for TokenExchange {
    fn secret(&self) -> SecretFuture<'_> {
        Box::pin(self.current())
    }
}

// ---------------------------------------------------------------------------------------------
// The cache, as a pure state machine over instants.

#[derive(Debug, Default)]
struct Cache {
    token: Option<CachedToken>,
    failure: Option<Failure>,
}

#[derive(Debug)]
struct CachedToken {
    secret: Secret,
    /// From here on a call exchanges again.
    refresh_at: Instant,
    /// Until here the token may still be served while a refresh fails.
    expires_at: Instant,
}

#[derive(Debug)]
struct Failure {
    error: CredentialError,
    retry_at: Instant,
    /// Failures in a row, for the backoff.
    count: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Fresh(Secret),
    BackingOff {
        error: CredentialError,
        retry_in: Duration,
    },
    Exchange,
}

impl Cache {
    fn lookup(&self, now: Instant) -> Lookup {
        if let Some(token) = &self.token
            && now < token.refresh_at
        {
            return Lookup::Fresh(token.secret.clone());
        }
        if let Some(failure) = &self.failure
            && now < failure.retry_at
        {
            // A refresh failed but the old token still works: keep serving it.
            if let Some(token) = &self.token
                && now < token.expires_at
            {
                return Lookup::Fresh(token.secret.clone());
            }
            return Lookup::BackingOff {
                error: failure.error.clone(),
                retry_in: failure.retry_at - now,
            };
        }
        Lookup::Exchange
    }

    /// Keeps a token issued in answer to a request sent at `sent`.
    fn store(&mut self, sent: Instant, issued: Issued) {
        let (refresh_at, expires_at) = match issued.lifetime {
            Some(lifetime) => (
                sent + (lifetime - refresh_margin(lifetime)),
                sent + lifetime,
            ),
            // The real expiry is unknown: never serve it past the default lifetime.
            None => (sent + DEFAULT_LIFETIME, sent + DEFAULT_LIFETIME),
        };
        self.token = Some(CachedToken {
            secret: issued.access_token,
            refresh_at,
            expires_at,
        });
        self.failure = None;
    }

    /// Records a failed exchange that ended at `now`; returns the cached token if it is still
    /// valid and may be served meanwhile.
    fn fail(&mut self, now: Instant, error: CredentialError) -> Option<Secret> {
        let count = self
            .failure
            .as_ref()
            .map_or(1, |f| f.count.saturating_add(1));
        self.failure = Some(Failure {
            error,
            retry_at: now + backoff(count),
            count,
        });
        match &self.token {
            Some(token) if now < token.expires_at => Some(token.secret.clone()),
            _ => {
                self.token = None;
                None
            }
        }
    }
}

/// How long before expiry a token of this lifetime is refreshed: 10% of it, at most 60 s.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_REFRESH_MARGIN)
}

/// The wait after the `count`-th failure in a row: 1 s, 2 s, 4 s, ... up to 30 s.
fn backoff(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

// ---------------------------------------------------------------------------------------------
// Pure parts of the protocol.

/// Checks the endpoint URL: `https://`, or `http://` to a loopback host only, because the
/// request carries the subject token and the client secret and the answer an access token,
/// all of which cleartext would expose to anyone on the path.
fn check_endpoint(endpoint: &str) -> Result<Uri, String> {
    if endpoint.contains('#')
        || endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{endpoint}` must be a URL without fragment or spaces, such as \"https://sts.example.com/token\""
        ));
    }
    let uri: Uri = endpoint.parse().map_err(|e| {
        format!(
            "`{endpoint}` is not an absolute URL such as \"https://sts.example.com/token\" ({e})"
        )
    })?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "`{endpoint}` must be an absolute URL such as \"https://sts.example.com/token\""
        ));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{endpoint}` carries user information; use `client_id` and `client_secret` instead"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("`{endpoint}` names no host"));
    }
    match scheme {
        "https" => Ok(uri),
        "http" if is_loopback_host(authority.host()) => Ok(uri),
        "http" => Err(format!(
            "`{endpoint}` is cleartext http to a host that is not loopback, which would expose the \
             subject token, the client secret and the access token on the network; use https:// \
             (http:// is accepted only for localhost, 127.0.0.0/8 and ::1)"
        )),
        other => Err(format!(
            "`{endpoint}` uses the scheme `{other}`; the token endpoint must be https://"
        )),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a token file, trimmed; the message names the path and never the content.
fn read_token(file: &TokenFile) -> Result<Secret, String> {
    read_token_at(&file.path)
}

fn read_token_at(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(token))
}

/// `base64(urlencode(id) ":" urlencode(secret))`, the Basic credentials of RFC 6749 §2.3.1.
fn basic_credentials(client_id: &str, client_secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

struct ExchangeForm<'a> {
    subject_token: &'a str,
    subject_token_type: &'a str,
    /// The actor token and its type.
    actor: Option<(&'a str, &'a str)>,
    options: &'a [(&'static str, String)],
    /// Only for a client without a secret.
    client_id: Option<&'a str>,
}

/// The `application/x-www-form-urlencoded` body of RFC 8693 §2.1.
fn exchange_form(form: &ExchangeForm<'_>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("grant_type", GRANT_TYPE);
    out.append_pair("subject_token", form.subject_token);
    out.append_pair("subject_token_type", form.subject_token_type);
    if let Some((token, token_type)) = form.actor {
        out.append_pair("actor_token", token);
        out.append_pair("actor_token_type", token_type);
    }
    for (key, value) in form.options {
        out.append_pair(key, value);
    }
    if let Some(id) = form.client_id {
        out.append_pair("client_id", id);
    }
    out.finish()
}

/// A successful answer (RFC 8693 §2.2.1).
#[derive(Debug, PartialEq, Eq)]
struct Issued {
    access_token: Secret,
    issued_token_type: Option<String>,
    /// `expires_in`, capped at [`MAX_LIFETIME`].
    lifetime: Option<Duration>,
}

/// Reads a 2xx body. Messages name fields, never values of the token.
fn parse_issued(body: &[u8]) -> Result<Issued, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| "the response is not JSON (a token response is a JSON object)".to_string())?;
    let Value::Object(fields) = value else {
        return Err("the response is JSON but not an object".into());
    };
    let access_token = match fields.get("access_token") {
        Some(Value::String(t)) if t.trim().is_empty() => {
            return Err("`access_token` is empty".into());
        }
        Some(Value::String(t)) => t.trim(),
        Some(_) => return Err("`access_token` is not a string".into()),
        None => return Err("the response has no `access_token`".into()),
    };
    if access_token
        .chars()
        .any(|c| c.is_control() || !c.is_ascii())
    {
        return Err("`access_token` holds characters that cannot go in an HTTP header".into());
    }
    match fields.get("token_type") {
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("n_a") => {}
        Some(Value::String(t)) => {
            return Err(format!(
                "`token_type` is `{}`; only Bearer and N_A tokens can be sent as a header",
                quote(t, &[])
            ));
        }
        Some(_) => return Err("`token_type` is not a string".into()),
        None => return Err("the response has no `token_type` (RFC 6749 §5.1 requires it)".into()),
    }
    let issued_token_type = optional_string(&fields, "issued_token_type")?;
    if issued_token_type.is_none() {
        tracing::debug!(
            "the token response has no issued_token_type (RFC 8693 requires it); accepted"
        );
    }
    optional_string(&fields, "scope")?;
    let lifetime = match fields.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_expires_in(v)?),
    };
    Ok(Issued {
        access_token: Secret::new(access_token),
        issued_token_type,
        lifetime,
    })
}

fn optional_string(fields: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

/// `expires_in` in seconds: a number, or (tolerated, some servers send it) a string of one.
fn parse_expires_in(value: &Value) -> Result<Duration, String> {
    let seconds = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
    .ok_or_else(|| "`expires_in` is not a number of seconds".to_string())?;
    Ok(Duration::try_from_secs_f64(seconds)
        .unwrap_or(MAX_LIFETIME)
        .min(MAX_LIFETIME))
}

/// Describes a non-2xx answer: the OAuth error (RFC 6749 §5.2) if there is one, otherwise the
/// status and the start of the body. Known secrets are scrubbed from anything quoted.
fn describe_failure(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    secrets: &[Secret],
) -> String {
    let oauth = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match v {
            Value::Object(fields) => match fields.get("error") {
                Some(Value::String(code)) => Some((code.clone(), fields)),
                _ => None,
            },
            _ => None,
        });
    let Some((code, fields)) = oauth else {
        let text = String::from_utf8_lossy(body);
        let text = quote(&text, secrets);
        return if text.is_empty() {
            format!("HTTP {status} with an empty body (not an OAuth error response)")
        } else {
            format!(
                "HTTP {status} with a {content_type} body that is not an OAuth error response: {text}"
            )
        };
    };
    let code = quote(&code, secrets);
    let mut message = format!("the endpoint refused the exchange: HTTP {status}, error `{code}`");
    if let Some(Value::String(description)) = fields.get("error_description") {
        message.push_str(&format!(": {}", quote(description, secrets)));
    }
    if let Some(Value::String(uri)) = fields.get("error_uri") {
        message.push_str(&format!(" (see {})", quote(uri, secrets)));
    }
    if let Some(hint) = error_hint(&code) {
        message.push_str("; ");
        message.push_str(hint);
    }
    message
}

/// What to check for the standard error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2.
fn error_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_client" => "check credential.token_exchange.client_id and client_secret",
        "invalid_grant" => {
            "the subject or actor token was refused (expired, or issued for another audience?)"
        }
        "invalid_target" => {
            "the endpoint will not issue a token for this audience or resource; check audience, resource and requested_token_type"
        }
        "invalid_scope" => "check credential.token_exchange.scope",
        "unauthorized_client" => "this client may not use token exchange at this endpoint",
        "unsupported_grant_type" => "the endpoint does not support RFC 8693 token exchange",
        "invalid_request" => "check the token types and parameters in credential.token_exchange",
        _ => return None,
    })
}

/// Server text made fit for an error: known secrets replaced, control characters (log
/// injection) turned into spaces, trimmed and cut to [`MAX_QUOTE_CHARS`].
fn quote(text: &str, secrets: &[Secret]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        let value = secret.expose();
        if !value.is_empty() {
            text = text.replace(value, "<redacted>");
        }
    }
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    match cleaned.char_indices().nth(MAX_QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &cleaned[..cut]),
        None => cleaned.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_or_loopback_http() {
        let accepted = [
            "https://sts.example.com/token",
            "https://sts.example.com:8443/oauth2/token?tenant=a",
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://[::1]:9000/token",
            "http://localhost/token",
            "http://LOCALHOST:1/token",
        ];
        for endpoint in accepted {
            assert!(
                check_endpoint(endpoint).is_ok(),
                "{endpoint} should be accepted"
            );
        }
        let refused = [
            ("http://sts.example.com/token", "cleartext"),
            ("http://10.0.0.1/token", "cleartext"),
            ("http://[::2]/token", "cleartext"),
            ("http://localhost.example.com/token", "cleartext"),
            ("ftp://sts.example.com/token", "scheme `ftp`"),
            ("https://user:pw@sts.example.com/token", "user information"),
            ("/token", "absolute URL"),
            ("sts.example.com/token", "absolute URL"),
            ("https://sts.example.com/token#x", "fragment"),
            ("https://sts.example.com/to ken", "spaces"),
            ("", "absolute URL"),
        ];
        for (endpoint, why) in refused {
            let err = check_endpoint(endpoint).expect_err(endpoint);
            assert!(err.contains(why), "{endpoint}: {err}");
        }
    }

    #[test]
    fn refresh_margin_is_ten_percent_up_to_a_minute() {
        let cases = [
            (0, 0),
            (10, 1),
            (100, 10),
            (600, 60),
            (3600, 60),
            (86_400, 60),
        ];
        for (lifetime, margin) in cases {
            assert_eq!(
                refresh_margin(Duration::from_secs(lifetime)),
                Duration::from_secs(margin),
                "lifetime {lifetime}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn basic_credentials_form_encode_id_and_secret() {
        // RFC 6749 §2.3.1: both parts are application/x-www-form-urlencoded first.
        let header = basic_credentials("my app", "p@ss:w/rd");
        let encoded = header.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"my+app:p%40ss%3Aw%2Frd");
    }

    #[test]
    fn the_form_carries_every_parameter_in_order() {
        let options = vec![
            ("resource", "https://api.example.com/v1".to_string()),
            ("audience", "api".to_string()),
            ("scope", "read write".to_string()),
        ];
        let body = exchange_form(&ExchangeForm {
            subject_token: "a.b+c",
            subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
            actor: Some(("actor&1", "urn:ietf:params:oauth:token-type:access_token")),
            options: &options,
            client_id: Some("cli"),
        });
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=a.b%2Bc\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt\
             &actor_token=actor%261\
             &actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &resource=https%3A%2F%2Fapi.example.com%2Fv1&audience=api&scope=read+write\
             &client_id=cli"
        );
        let minimal = exchange_form(&ExchangeForm {
            subject_token: "t",
            subject_token_type: "x",
            actor: None,
            options: &[],
            client_id: None,
        });
        assert_eq!(
            minimal,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=t&subject_token_type=x"
        );
    }

    #[test]
    fn successful_responses_are_read() {
        let cases: [(&str, Option<u64>, Option<&str>); 6] = [
            (
                r#"{"access_token":"at","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}"#,
                Some(3600),
                Some("urn:ietf:params:oauth:token-type:access_token"),
            ),
            (r#"{"access_token":"at","token_type":"bearer"}"#, None, None),
            (
                r#"{"access_token":"at","token_type":"N_A","expires_in":"60"}"#,
                Some(60),
                None,
            ),
            (
                r#"{"access_token":"at","token_type":"n_a","expires_in":1.5,"scope":"a b"}"#,
                Some(1),
                None,
            ),
            (
                r#"{"access_token":"at","token_type":"Bearer","expires_in":null}"#,
                None,
                None,
            ),
            (
                r#"{"access_token":"at","token_type":"Bearer","expires_in":1e30,"refresh_token":"r"}"#,
                Some(MAX_LIFETIME.as_secs()),
                None,
            ),
        ];
        for (body, lifetime, issued_type) in cases {
            let issued = parse_issued(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(issued.access_token.expose(), "at");
            assert_eq!(issued.lifetime.map(|l| l.as_secs()), lifetime, "{body}");
            assert_eq!(issued.issued_token_type.as_deref(), issued_type, "{body}");
        }
    }

    #[test]
    fn malformed_responses_name_the_field_and_not_the_token() {
        let cases = [
            ("<html>sekrit</html>", "not JSON"),
            ("[]", "not an object"),
            (r#"{"token_type":"Bearer"}"#, "no `access_token`"),
            (
                r#"{"access_token":7,"token_type":"Bearer"}"#,
                "`access_token` is not a string",
            ),
            (
                r#"{"access_token":" ","token_type":"Bearer"}"#,
                "`access_token` is empty",
            ),
            (
                r#"{"access_token":"sekrit\r\nx: y","token_type":"Bearer"}"#,
                "cannot go in an HTTP header",
            ),
            (r#"{"access_token":"sekrit"}"#, "no `token_type`"),
            (
                r#"{"access_token":"sekrit","token_type":"MAC"}"#,
                "`token_type` is `MAC`",
            ),
            (
                r#"{"access_token":"sekrit","token_type":1}"#,
                "`token_type` is not a string",
            ),
            (
                r#"{"access_token":"sekrit","token_type":"Bearer","issued_token_type":5}"#,
                "`issued_token_type` is not a string",
            ),
            (
                r#"{"access_token":"sekrit","token_type":"Bearer","scope":[]}"#,
                "`scope` is not a string",
            ),
            (
                r#"{"access_token":"sekrit","token_type":"Bearer","expires_in":-1}"#,
                "`expires_in`",
            ),
            (
                r#"{"access_token":"sekrit","token_type":"Bearer","expires_in":"soon"}"#,
                "`expires_in`",
            ),
            (
                r#"{"access_token":"sekrit","token_type":"Bearer","expires_in":true}"#,
                "`expires_in`",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_issued(body.as_bytes()).expect_err(body);
            assert!(err.contains(expected), "{body}: {err}");
            assert!(!err.contains("sekrit"), "{body}: {err}");
        }
    }

    #[test]
    fn error_responses_name_code_description_and_scrub_secrets() {
        let secrets = [Secret::new("subject-jwt"), Secret::new("client-pw")];
        let cases = [
            (
                400,
                r#"{"error":"invalid_target","error_description":"unknown audience","error_uri":"https://x/e"}"#,
                vec![
                    "HTTP 400 Bad Request",
                    "`invalid_target`",
                    "unknown audience",
                    "(see https://x/e)",
                    "audience",
                ],
            ),
            (
                401,
                r#"{"error":"invalid_client","error_description":"bad secret client-pw"}"#,
                vec![
                    "401",
                    "`invalid_client`",
                    "bad secret <redacted>",
                    "client_id",
                ],
            ),
            (
                400,
                r#"{"error":"invalid_grant","error_description":"token subject-jwt\nexpired"}"#,
                vec!["`invalid_grant`", "token <redacted> expired"],
            ),
            (400, r#"{"error":"custom_thing"}"#, vec!["`custom_thing`"]),
            (
                502,
                "<html>Bad gateway for subject-jwt</html>",
                vec![
                    "HTTP 502 Bad Gateway",
                    "text/html",
                    "not an OAuth error",
                    "<redacted>",
                ],
            ),
            (500, "", vec!["HTTP 500", "empty body"]),
            (
                500,
                r#"{"message":"boom"}"#,
                vec!["not an OAuth error", "boom"],
            ),
        ];
        for (status, body, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let message = describe_failure(status, "text/html", body.as_bytes(), &secrets);
            for part in expected {
                assert!(
                    message.contains(part),
                    "{body}: `{part}` missing in {message}"
                );
            }
            assert!(!message.contains("subject-jwt"), "{message}");
            assert!(!message.contains("client-pw"), "{message}");
        }
    }

    #[test]
    fn quotes_are_cut_and_cleaned() {
        let long = "x".repeat(1000);
        let quoted = quote(&long, &[]);
        assert_eq!(quoted.len(), MAX_QUOTE_CHARS + 3);
        assert_eq!(quote(" a\r\nb\u{1b}[31m ", &[]), "a  b [31m");
        assert_eq!(quote("ééé", &[]), "ééé");
    }

    fn issued(token: &str, lifetime: Option<u64>) -> Issued {
        Issued {
            access_token: Secret::new(token),
            issued_token_type: None,
            lifetime: lifetime.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_cache_serves_until_the_refresh_point() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut cache = Cache::default();
        assert_eq!(cache.lookup(t0), Lookup::Exchange);

        // 100 s lifetime: refreshed when less than 10 s remain.
        cache.store(t0, issued("one", Some(100)));
        assert_eq!(cache.lookup(at(0)), Lookup::Fresh(Secret::new("one")));
        assert_eq!(cache.lookup(at(89)), Lookup::Fresh(Secret::new("one")));
        assert_eq!(cache.lookup(at(90)), Lookup::Exchange);

        // 3600 s: refreshed a minute before expiry.
        cache.store(t0, issued("two", Some(3600)));
        assert_eq!(cache.lookup(at(3539)), Lookup::Fresh(Secret::new("two")));
        assert_eq!(cache.lookup(at(3540)), Lookup::Exchange);

        // No expires_in: the default lifetime, no margin.
        cache.store(t0, issued("three", None));
        assert_eq!(
            cache.lookup(t0 + DEFAULT_LIFETIME - Duration::from_secs(1)),
            Lookup::Fresh(Secret::new("three"))
        );
        assert_eq!(cache.lookup(t0 + DEFAULT_LIFETIME), Lookup::Exchange);

        // expires_in 0: never cached.
        cache.store(t0, issued("four", Some(0)));
        assert_eq!(cache.lookup(t0), Lookup::Exchange);
    }

    #[test]
    fn failures_back_off_and_a_valid_token_outlives_a_failed_refresh() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let error = CredentialError("down".into());
        let mut cache = Cache::default();

        // No token: the failure is served during the backoff, then retried.
        assert_eq!(cache.fail(at(0), error.clone()), None);
        assert_eq!(
            cache.lookup(at(0)),
            Lookup::BackingOff {
                error: error.clone(),
                retry_in: Duration::from_secs(1)
            }
        );
        assert_eq!(cache.lookup(at(1)), Lookup::Exchange);
        assert_eq!(cache.fail(at(1), error.clone()), None);
        assert!(matches!(cache.lookup(at(2)), Lookup::BackingOff { .. }));
        assert_eq!(cache.lookup(at(3)), Lookup::Exchange);

        // Success clears the failure count; refreshed from 100, expires at 110.
        cache.store(at(10), issued("one", Some(100)));
        assert!(cache.failure.is_none());
        assert_eq!(cache.lookup(at(99)), Lookup::Fresh(Secret::new("one")));
        assert_eq!(cache.lookup(at(100)), Lookup::Exchange);

        // A failed refresh keeps serving the token, without a new attempt until the backoff
        // ends, and only until the token expires.
        assert_eq!(cache.fail(at(100), error.clone()), Some(Secret::new("one")));
        assert_eq!(cache.lookup(at(100)), Lookup::Fresh(Secret::new("one")));
        assert_eq!(cache.lookup(at(101)), Lookup::Exchange);
        assert_eq!(cache.fail(at(109), error.clone()), Some(Secret::new("one")));
        assert_eq!(cache.lookup(at(109)), Lookup::Fresh(Secret::new("one")));
        assert!(matches!(cache.lookup(at(110)), Lookup::BackingOff { .. }));
        assert_eq!(cache.lookup(at(111)), Lookup::Exchange);
        // A failure past expiry drops the token.
        assert_eq!(cache.fail(at(111), error.clone()), None);
        assert!(cache.token.is_none());
        assert!(matches!(cache.lookup(at(111)), Lookup::BackingOff { .. }));
    }

    #[test]
    fn token_files_are_trimmed_and_errors_name_the_path() {
        let path = std::env::temp_dir().join(format!("warden-tx-unit-{}", std::process::id()));
        std::fs::write(&path, "  jwt.value \n").unwrap();
        assert_eq!(read_token_at(&path).unwrap().expose(), "jwt.value");
        std::fs::write(&path, "\n").unwrap();
        let err = read_token_at(&path).unwrap_err();
        assert!(
            err.contains("is empty") && err.contains(&path.display().to_string()),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        let err = read_token_at(&path).unwrap_err();
        assert!(
            err.contains("cannot read") && err.contains(&path.display().to_string()),
            "{err}"
        );
    }
}
