//! Credential routes: reverse-proxy paths on warden's egress proxy that add a secret on the
//! way out, so the sandbox can call an API without ever holding its key.
//!
//! A route named `anthropic` answers `http://127.0.0.1:3128/anthropic/...` inside the sandbox
//! and forwards to `https://api.anthropic.com/...` with `x-api-key` set from the host. This
//! module holds the description of a route ([`RouteSpec`]) with the built-in defaults of each
//! [`RouteKind`], as written in a policy file (`[routes.NAME]`) or on the command line
//! (`--route NAME[=UPSTREAM]`). Reading secrets and serving routes is `warden-egress`'s.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Errors, PolicyError};
use crate::names::named_enum;

named_enum! {
    /// What a route talks to, which sets its defaults.
    pub enum RouteKind {
        /// Anthropic's API: `x-api-key` from `ANTHROPIC_API_KEY`.
        Anthropic = "anthropic",
        /// OpenAI's API: `Authorization: Bearer` from `OPENAI_API_KEY`.
        Openai = "openai",
        /// Git over HTTPS: `Authorization: Basic` (user `x-access-token`) from `GITHUB_TOKEN`.
        Git = "git",
        /// Any upstream; `upstream`, `header` and `credential` must be given.
        Generic = "generic",
    }
}

named_enum! {
    /// How the secret is written into the header.
    pub enum AuthScheme {
        /// The secret as it is.
        Raw = "raw",
        /// `Bearer <secret>`.
        Bearer = "bearer",
        /// `Basic base64(<username>:<secret>)`.
        Basic = "basic",
    }
}

/// Where a route's secret comes from. Read on the host, never inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSpec {
    /// A variable of the environment warden itself runs in.
    Env(String),
    /// A file holding the secret (surrounding whitespace is trimmed), read when the proxy starts.
    File(PathBuf),
    /// An OAuth 2.0 token exchange (RFC 8693), refreshed before the token expires.
    TokenExchange(Box<TokenExchangeSpec>),
}

/// An RFC 8693 token exchange as a credential source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchangeSpec {
    /// The token endpoint (`https://...`, or `http://` to a loopback address only).
    pub endpoint: String,
    /// File holding the subject token, re-read at every exchange (projected tokens rotate):
    /// a SPIFFE JWT-SVID or a Kubernetes service-account token.
    pub subject_token_file: PathBuf,
    /// Default `urn:ietf:params:oauth:token-type:jwt`.
    pub subject_token_type: String,
    pub actor_token_file: Option<PathBuf>,
    pub actor_token_type: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
    /// Client authentication at the endpoint (HTTP Basic), if it asks for one.
    pub client_id: Option<String>,
    pub client_secret: Option<Box<CredentialSpec>>,
    /// Extra trusted CA certificates (PEM) for the endpoint.
    pub ca_file: Option<PathBuf>,
}

impl TokenExchangeSpec {
    /// An exchange of a JWT subject token at `endpoint`, with every optional parameter unset.
    pub fn new(endpoint: impl Into<String>, subject_token_file: impl Into<PathBuf>) -> Self {
        TokenExchangeSpec {
            endpoint: endpoint.into(),
            subject_token_file: subject_token_file.into(),
            subject_token_type: JWT_TOKEN_TYPE.into(),
            actor_token_file: None,
            actor_token_type: None,
            audience: None,
            resource: None,
            scope: None,
            requested_token_type: None,
            client_id: None,
            client_secret: None,
            ca_file: None,
        }
    }
}

/// The token type RFC 8693 names for a JWT.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// One credential route, complete: every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The first path segment the route answers on: `[a-z0-9-]`, 1 to 32 characters.
    pub name: String,
    pub kind: RouteKind,
    /// Base URL requests are forwarded to; the path after `/<name>` is appended.
    pub upstream: String,
    /// The header the credential goes in (any copy the client sent is dropped).
    pub header: String,
    pub scheme: AuthScheme,
    /// For `basic`: the user name paired with the secret.
    pub username: String,
    pub credential: CredentialSpec,
    /// Extra trusted CA certificates (PEM) for the upstream, on top of the system's.
    pub ca_file: Option<PathBuf>,
}

impl RouteSpec {
    /// Rewrites every path of the route (CA files, secret files, token files), as a policy
    /// file's relative paths are resolved against its directory.
    pub fn map_paths(&mut self, f: impl Fn(&Path) -> PathBuf) {
        fn credential(c: &mut CredentialSpec, f: &dyn Fn(&Path) -> PathBuf) {
            match c {
                CredentialSpec::Env(_) => {}
                CredentialSpec::File(p) => *p = f(p),
                CredentialSpec::TokenExchange(t) => {
                    t.subject_token_file = f(&t.subject_token_file);
                    if let Some(p) = &mut t.actor_token_file {
                        *p = f(p);
                    }
                    if let Some(p) = &mut t.ca_file {
                        *p = f(p);
                    }
                    if let Some(s) = &mut t.client_secret {
                        credential(s, f);
                    }
                }
            }
        }
        if let Some(p) = &mut self.ca_file {
            *p = f(p);
        }
        credential(&mut self.credential, &f);
    }
}

impl RouteKind {
    fn default_upstream(self) -> Option<&'static str> {
        match self {
            RouteKind::Anthropic => Some("https://api.anthropic.com"),
            RouteKind::Openai => Some("https://api.openai.com"),
            RouteKind::Git => Some("https://github.com"),
            RouteKind::Generic => None,
        }
    }

    fn default_header(self) -> Option<&'static str> {
        match self {
            RouteKind::Anthropic => Some("x-api-key"),
            RouteKind::Openai | RouteKind::Git => Some("authorization"),
            RouteKind::Generic => None,
        }
    }

    fn default_scheme(self) -> AuthScheme {
        match self {
            RouteKind::Anthropic | RouteKind::Generic => AuthScheme::Raw,
            RouteKind::Openai => AuthScheme::Bearer,
            RouteKind::Git => AuthScheme::Basic,
        }
    }

    /// The host variable the secret is read from by default.
    pub fn default_env(self) -> Option<&'static str> {
        match self {
            RouteKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            RouteKind::Openai => Some("OPENAI_API_KEY"),
            RouteKind::Git => Some("GITHUB_TOKEN"),
            RouteKind::Generic => None,
        }
    }
}

/// `[routes.NAME]` as written in a policy file. Every key is optional for a built-in kind.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub kind: Option<RouteKind>,
    pub upstream: Option<String>,
    pub header: Option<String>,
    pub scheme: Option<AuthScheme>,
    pub username: Option<String>,
    pub credential: Option<CredentialFile>,
    pub ca_file: Option<PathBuf>,
}

/// `credential = { env = "..." }`, `{ file = "..." }` or `{ token_exchange = { ... } }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    pub token_exchange: Option<TokenExchangeFile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeFile {
    pub endpoint: Option<String>,
    pub subject_token_file: Option<PathBuf>,
    pub subject_token_type: Option<String>,
    pub actor_token_file: Option<PathBuf>,
    pub actor_token_type: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretFile>,
    pub ca_file: Option<PathBuf>,
}

/// A client secret: `{ env = "..." }` or `{ file = "..." }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// Checks a route name: what users type after `/` inside the sandbox.
pub fn check_route_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a route name: use 1 to 32 of a-z, 0-9 and `-`, not starting or ending with `-`"
        ))
    }
}

/// Checks an upstream base URL: `http://` or `https://`, a host, no user information, query
/// or fragment.
pub fn check_upstream(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` must start with https:// or http://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    if authority.contains('@') {
        return Err(format!(
            "`{url}` carries user information; put secrets in `credential`, never in the URL"
        ));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{url}` must be a plain base URL without query, fragment or spaces"
        ));
    }
    Ok(())
}

impl RouteFile {
    /// Fills in the defaults of the route's kind and checks every field; `field` is the
    /// dotted prefix for errors (`routes.NAME`).
    pub fn resolve(self, name: &str, field: &str) -> Result<RouteSpec, PolicyError> {
        let mut e = Errors::default();
        if let Err(m) = check_route_name(name) {
            e.push(field, m);
        }
        let kind = self
            .kind
            .or_else(|| name.parse().ok())
            .unwrap_or(RouteKind::Generic);
        let upstream = match self.upstream.or(kind.default_upstream().map(String::from)) {
            Some(u) => {
                if let Err(m) = check_upstream(&u) {
                    e.push(format!("{field}.upstream"), m);
                }
                u
            }
            None => {
                e.push(
                    format!("{field}.upstream"),
                    format!(
                        "a `{kind}` route needs an upstream URL such as \"https://api.example.com\""
                    ),
                );
                String::new()
            }
        };
        let header = match self.header.or(kind.default_header().map(String::from)) {
            Some(h) => {
                let valid = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
                if !valid {
                    e.push(
                        format!("{field}.header"),
                        format!("`{h}` is not a header name"),
                    );
                }
                h.to_ascii_lowercase()
            }
            None => {
                e.push(
                    format!("{field}.header"),
                    format!("a `{kind}` route needs the header to put the credential in, such as \"authorization\""),
                );
                String::new()
            }
        };
        let scheme = self.scheme.unwrap_or(kind.default_scheme());
        let username = self.username.unwrap_or_else(|| "x-access-token".into());
        if username.contains(':') {
            e.push(format!("{field}.username"), "must not contain `:`");
        }
        let credential = match self.credential {
            Some(c) => c.resolve(&format!("{field}.credential"), &mut e),
            None => match kind.default_env() {
                Some(var) => Some(CredentialSpec::Env(var.into())),
                None => {
                    e.push(
                        format!("{field}.credential"),
                        "a `generic` route needs a credential: { env = \"VAR\" }, { file = \"PATH\" } or { token_exchange = { ... } }",
                    );
                    None
                }
            },
        };
        e.finish()?;
        Ok(RouteSpec {
            name: name.to_string(),
            kind,
            upstream: upstream.trim_end_matches('/').to_string(),
            header,
            scheme,
            username,
            credential: credential.expect("errors were reported above"),
            ca_file: self.ca_file,
        })
    }
}

const ONE_OF: &str = "give exactly one of `env`, `file` or `token_exchange`";

impl CredentialFile {
    fn resolve(self, field: &str, e: &mut Errors) -> Option<CredentialSpec> {
        match (self.env, self.file, self.token_exchange) {
            (Some(var), None, None) => {
                check_env_name(&var, &format!("{field}.env"), e).then_some(CredentialSpec::Env(var))
            }
            (None, Some(path), None) => Some(CredentialSpec::File(path)),
            (None, None, Some(t)) => t
                .resolve(&format!("{field}.token_exchange"), e)
                .map(|t| CredentialSpec::TokenExchange(Box::new(t))),
            _ => {
                e.push(field, ONE_OF);
                None
            }
        }
    }
}

fn check_env_name(var: &str, field: &str, e: &mut Errors) -> bool {
    let ok = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        e.push(
            field,
            format!("`{var}` is not an environment variable name"),
        );
    }
    ok
}

impl TokenExchangeFile {
    fn resolve(self, field: &str, e: &mut Errors) -> Option<TokenExchangeSpec> {
        let endpoint = match self.endpoint {
            Some(u) => {
                if let Err(m) = check_upstream(&u.replace(['?'], "")) {
                    e.push(format!("{field}.endpoint"), m);
                }
                Some(u)
            }
            None => {
                e.push(
                    format!("{field}.endpoint"),
                    "the token endpoint URL is required, such as \"https://sts.example.com/token\"",
                );
                None
            }
        };
        let subject = self.subject_token_file.or_else(|| {
            e.push(
                format!("{field}.subject_token_file"),
                "required: the file holding the subject token (a JWT-SVID or a projected service-account token)",
            );
            None
        });
        if self.actor_token_file.is_some() != self.actor_token_type.is_some() {
            e.push(
                format!("{field}.actor_token_type"),
                "`actor_token_file` and `actor_token_type` go together",
            );
        }
        let client_secret = match self.client_secret {
            None => None,
            Some(SecretFile {
                env: Some(var),
                file: None,
            }) => check_env_name(&var, &format!("{field}.client_secret.env"), e)
                .then(|| Box::new(CredentialSpec::Env(var))),
            Some(SecretFile {
                env: None,
                file: Some(path),
            }) => Some(Box::new(CredentialSpec::File(path))),
            Some(_) => {
                e.push(
                    format!("{field}.client_secret"),
                    "give exactly one of `env` or `file`",
                );
                None
            }
        };
        if client_secret.is_some() && self.client_id.is_none() {
            e.push(
                format!("{field}.client_id"),
                "a client secret needs the client id it belongs to",
            );
        }
        Some(TokenExchangeSpec {
            endpoint: endpoint?,
            subject_token_file: subject?,
            subject_token_type: self
                .subject_token_type
                .unwrap_or_else(|| JWT_TOKEN_TYPE.into()),
            actor_token_file: self.actor_token_file,
            actor_token_type: self.actor_token_type,
            audience: self.audience,
            resource: self.resource,
            scope: self.scope,
            requested_token_type: self.requested_token_type,
            client_id: self.client_id,
            client_secret,
            ca_file: self.ca_file,
        })
    }
}

/// A route from the command line: `NAME` (a built-in kind, or a route of the policy file) or
/// `NAME=UPSTREAM` (a built-in kind pointed elsewhere, such as a LiteLLM gateway).
pub fn route_from_flag(flag: &str) -> Result<(String, RouteFile), String> {
    let (name, upstream) = match flag.split_once('=') {
        Some((n, u)) => (n, Some(u.to_string())),
        None => (flag, None),
    };
    check_route_name(name)?;
    Ok((
        name.to_string(),
        RouteFile {
            upstream,
            ..RouteFile::default()
        },
    ))
}

/// What a sandbox gets instead of a route's secret (the proxy replaces it on the way out).
pub const CREDENTIAL_PLACEHOLDER: &str = "warden-credential-route-placeholder";

/// A route as a sandbox's environment names it: its path segment, its kind and its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteView<'a> {
    pub name: &'a str,
    pub kind: RouteKind,
    pub upstream: &'a str,
}

impl<'a> From<&'a RouteSpec> for RouteView<'a> {
    fn from(r: &'a RouteSpec) -> RouteView<'a> {
        RouteView {
            name: &r.name,
            kind: r.kind,
            upstream: &r.upstream,
        }
    }
}

/// The variables that point a sandbox's HTTP clients at the egress proxy at `proxy_url`
/// (`http://127.0.0.1:3128`), upper and lower case as tools differ, with an empty
/// `NO_PROXY` (nothing is reachable without the proxy, loopback included), and each route's
/// URL: `WARDEN_ROUTE_<NAME>` always, plus what the route's kind of client reads
/// (`ANTHROPIC_BASE_URL` with a placeholder `ANTHROPIC_API_KEY`, `OPENAI_BASE_URL` with a
/// placeholder `OPENAI_API_KEY`, git's `url.<route>.insteadOf <upstream>` through
/// `GIT_CONFIG_COUNT`). `warden run`, `warden sandboxd --egress-proxy` and warden's pod
/// templates all set exactly these.
pub fn proxy_environment<'a>(
    proxy_url: &str,
    routes: impl IntoIterator<Item = RouteView<'a>>,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((name.to_string(), proxy_url.to_string()));
        env.push((name.to_lowercase(), proxy_url.to_string()));
    }
    env.push(("NO_PROXY".into(), String::new()));
    env.push(("no_proxy".into(), String::new()));
    let mut git = Vec::new();
    for route in routes {
        let base = format!("{proxy_url}/{}", route.name);
        let var = format!(
            "WARDEN_ROUTE_{}",
            route.name.to_ascii_uppercase().replace('-', "_")
        );
        env.push((var, base.clone()));
        match route.kind {
            RouteKind::Anthropic => {
                env.push(("ANTHROPIC_BASE_URL".into(), base));
                env.push(("ANTHROPIC_API_KEY".into(), CREDENTIAL_PLACEHOLDER.into()));
            }
            RouteKind::Openai => {
                env.push(("OPENAI_BASE_URL".into(), format!("{base}/v1")));
                env.push(("OPENAI_API_KEY".into(), CREDENTIAL_PLACEHOLDER.into()));
            }
            RouteKind::Git => git.push((
                format!("url.{base}/.insteadOf"),
                format!("{}/", route.upstream),
            )),
            RouteKind::Generic => {}
        }
    }
    if !git.is_empty() {
        env.push(("GIT_CONFIG_COUNT".into(), git.len().to_string()));
        for (i, (key, value)) in git.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), key));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RouteSpec, PolicyError> {
        let file: RouteFile =
            toml::from_str(text).map_err(|e| PolicyError::new("toml", e.to_string()))?;
        file.resolve("r", "routes.r")
    }

    #[test]
    fn built_in_kinds_fill_every_default() {
        let a = RouteFile::default()
            .resolve("anthropic", "routes.anthropic")
            .unwrap();
        assert_eq!(a.kind, RouteKind::Anthropic);
        assert_eq!(a.upstream, "https://api.anthropic.com");
        assert_eq!(a.header, "x-api-key");
        assert_eq!(a.scheme, AuthScheme::Raw);
        assert_eq!(
            a.credential,
            CredentialSpec::Env("ANTHROPIC_API_KEY".into())
        );

        let o = RouteFile::default()
            .resolve("openai", "routes.openai")
            .unwrap();
        assert_eq!(
            (o.header.as_str(), o.scheme),
            ("authorization", AuthScheme::Bearer)
        );
        let g = RouteFile::default().resolve("git", "routes.git").unwrap();
        assert_eq!(g.scheme, AuthScheme::Basic);
        assert_eq!(g.username, "x-access-token");
        assert_eq!(g.credential, CredentialSpec::Env("GITHUB_TOKEN".into()));
    }

    #[test]
    fn a_kind_can_be_named_under_another_name_and_repointed() {
        let spec =
            parse("kind = \"anthropic\"\nupstream = \"http://127.0.0.1:4000/llm/\"").unwrap();
        assert_eq!(spec.name, "r");
        assert_eq!(spec.kind, RouteKind::Anthropic);
        assert_eq!(spec.upstream, "http://127.0.0.1:4000/llm");
    }

    #[test]
    fn generic_routes_need_upstream_header_and_credential() {
        let err = parse("").unwrap_err().to_string();
        assert!(err.contains("routes.r.upstream"), "{err}");
        assert!(err.contains("routes.r.header"), "{err}");
        assert!(err.contains("routes.r.credential"), "{err}");
        let ok = parse(
            "upstream = \"https://api.example.com\"\nheader = \"X-Token\"\nscheme = \"bearer\"\ncredential = { file = \"/run/key\" }",
        )
        .unwrap();
        assert_eq!(ok.header, "x-token");
        assert_eq!(ok.credential, CredentialSpec::File("/run/key".into()));
    }

    #[test]
    fn bad_values_name_the_field_and_what_is_allowed() {
        let err = parse("kind = \"gitlab\"").unwrap_err().to_string();
        assert!(err.contains("anthropic, openai, git, generic"), "{err}");
        let err = parse("kind = \"git\"\nupstream = \"ftp://x\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes.r.upstream") && err.contains("https://"),
            "{err}"
        );
        let err = parse("kind = \"git\"\nupstream = \"https://u:p@x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("user information"), "{err}");
        let err = parse("kind = \"git\"\ncredential = { env = \"A\", file = \"/b\" }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes.r.credential") && err.contains("exactly one"),
            "{err}"
        );
        let err = parse("kind = \"git\"\ncredential = { env = \"A-B\" }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes.r.credential.env"), "{err}");
        let err = parse("kind = \"git\"\nheader = \"bad header\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes.r.header"), "{err}");
        let err = parse("kind = \"git\"\ncolour = 1").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert!(
            RouteFile::default()
                .resolve("Bad_Name", "routes.Bad_Name")
                .is_err()
        );
    }

    #[test]
    fn token_exchange_credentials() {
        let spec = parse(
            "kind = \"generic\"\nupstream = \"https://api.example.com\"\nheader = \"authorization\"\nscheme = \"bearer\"\n\
             [credential.token_exchange]\nendpoint = \"https://sts.example.com/token\"\n\
             subject_token_file = \"/var/run/secrets/tokens/sa\"\naudience = \"api\"\nscope = \"read\"\n\
             client_id = \"warden\"\nclient_secret = { env = \"STS_SECRET\" }",
        )
        .unwrap();
        let CredentialSpec::TokenExchange(t) = spec.credential else {
            panic!("not a token exchange")
        };
        assert_eq!(t.subject_token_type, JWT_TOKEN_TYPE);
        assert_eq!(t.audience.as_deref(), Some("api"));
        assert_eq!(
            t.client_secret,
            Some(Box::new(CredentialSpec::Env("STS_SECRET".into())))
        );

        let err = parse(
            "kind = \"git\"\n[credential.token_exchange]\nclient_secret = { env = \"S\" }\nactor_token_file = \"/a\"",
        )
        .unwrap_err()
        .to_string();
        for field in [
            "endpoint",
            "subject_token_file",
            "actor_token_type",
            "client_id",
        ] {
            assert!(
                err.contains(&format!("routes.r.credential.token_exchange.{field}")),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn flags() {
        assert_eq!(route_from_flag("anthropic").unwrap().0, "anthropic");
        let (name, file) = route_from_flag("openai=http://127.0.0.1:4000").unwrap();
        assert_eq!(name, "openai");
        assert_eq!(file.upstream.as_deref(), Some("http://127.0.0.1:4000"));
        assert!(route_from_flag("=x").is_err());
    }
}
