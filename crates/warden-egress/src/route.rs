//! Credential routes: the proxy as a reverse proxy that adds a secret on the way out.
//!
//! A request for `/<route>/<rest>` (origin form, or absolute form addressed to the proxy
//! itself, which is what clients send when `HTTP_PROXY` is set) goes to the route's upstream
//! base URL with `<rest>` appended, its credential header replaced by the real secret. The
//! sandbox holds only a placeholder. Owns the path mapping and the rule that makes it safe:
//! the upstream's scheme and authority come from configuration only, and the sandbox can change
//! nothing but the path below the base (no `.`/`..` segments, no encoded slashes), so a route
//! cannot reach an upstream it was not configured for. Bodies stream both ways unbuffered
//! (SSE arrives event by event); redirects are passed to the client, never followed.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use warden_policy::{AuthScheme, RouteSpec};

use crate::client::HttpClient;
use crate::credential::{CredentialSource, EnvLookup, credential_source};
use crate::forward::{Completion, strip_hop_by_hop};
use crate::policy::Decision;
use crate::proxy::{Exchange, ProxyBody, text_response};

/// Why a route could not be set up. Names the route and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routes.{route}.{field}: {message}")]
pub struct RouteError {
    pub route: String,
    /// The key below `routes.NAME`, such as `credential` or `credential.token_exchange.endpoint`.
    pub field: String,
    pub message: String,
}

/// One route, ready to serve.
struct Route {
    name: String,
    scheme: Scheme,
    authority: Authority,
    /// The base path without a trailing `/` (empty for the root).
    base_path: String,
    header: HeaderName,
    auth: AuthScheme,
    username: String,
    credential: Arc<dyn CredentialSource>,
    client: HttpClient,
}

/// The routes a proxy serves, and the authorities under which clients address the proxy
/// itself (`127.0.0.1:3128` inside a sandbox).
#[derive(Default)]
pub struct Routes {
    routes: Vec<Route>,
    own_authorities: Vec<String>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("names", &self.names())
            .field("own_authorities", &self.own_authorities)
            .finish()
    }
}

impl Routes {
    /// Builds every route: parses its upstream, reads its secret (from `env` or a file, now;
    /// a token exchange checks its files now and exchanges on first use) and prepares its
    /// client. Fails on the first route that cannot be served.
    pub fn load(
        specs: &[RouteSpec],
        env: EnvLookup<'_>,
        connect_timeout: Duration,
    ) -> Result<Routes, RouteError> {
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            let error = |field: &str, message: String| RouteError {
                route: spec.name.clone(),
                field: field.to_string(),
                message,
            };
            let uri: Uri = spec
                .upstream
                .parse()
                .map_err(|e| error("upstream", format!("`{}`: {e}", spec.upstream)))?;
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                return Err(error(
                    "upstream",
                    format!("`{}` must be an absolute http(s) URL", spec.upstream),
                ));
            };
            if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
                return Err(error(
                    "upstream",
                    format!("`{}` must use https:// or http://", spec.upstream),
                ));
            }
            let header = HeaderName::from_bytes(spec.header.as_bytes())
                .map_err(|e| error("header", format!("`{}`: {e}", spec.header)))?;
            let credential = credential_source(&spec.credential, env).map_err(|e| {
                // Token-exchange errors already name their key below `credential`.
                match e.0.split_once(": ") {
                    Some((key, rest)) if key.starts_with("credential.") && !key.contains(' ') => {
                        error(key, rest.to_string())
                    }
                    _ => error("credential", e.0),
                }
            })?;
            let client = HttpClient::new(spec.ca_file.as_deref(), connect_timeout)
                .map_err(|e| error("ca_file", e.to_string()))?;
            routes.push(Route {
                name: spec.name.clone(),
                scheme: scheme.clone(),
                authority: authority.clone(),
                base_path: uri.path().trim_end_matches('/').to_string(),
                header,
                auth: spec.scheme,
                username: spec.username.clone(),
                credential,
                client,
            });
        }
        Ok(Routes {
            routes,
            own_authorities: Vec::new(),
        })
    }

    /// Adds an authority (`host:port`) under which clients address this proxy, so that an
    /// absolute-form `GET http://127.0.0.1:3128/anthropic/...` is served as a route.
    pub fn answer_as(mut self, authority: impl Into<String>) -> Self {
        self.own_authorities
            .push(authority.into().to_ascii_lowercase());
        self
    }

    /// The route names, in configuration order.
    pub fn names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether a request is meant for a route rather than for forwarding: origin form, or
    /// absolute form naming the proxy itself.
    pub(crate) fn claims(&self, uri: &Uri) -> bool {
        match uri.authority() {
            None => uri.scheme().is_none() && uri.path().starts_with('/'),
            Some(authority) => {
                uri.scheme() == Some(&Scheme::HTTP)
                    && self
                        .own_authorities
                        .iter()
                        .any(|own| own.eq_ignore_ascii_case(authority.as_str()))
            }
        }
    }

    fn find(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// The upstream URI for `path_and_query` below a route, or why there is none.
fn split_route(path_and_query: &str) -> (&str, &str) {
    let rest = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    (&rest[..end], &rest[end..])
}

/// Joins a route's base path with what follows the route name, refusing anything that could
/// step outside the base: `.` and `..` segments (also percent-encoded), encoded `/` and `\`,
/// and raw backslashes.
fn upstream_path(base_path: &str, rest: &str) -> Result<PathAndQuery, String> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if !path.is_empty() && !path.starts_with('/') {
        return Err("the route name must be followed by `/` or the end of the path".into());
    }
    let lowered = path.to_ascii_lowercase();
    if path.contains('\\') || lowered.contains("%2f") || lowered.contains("%5c") {
        return Err("encoded slashes and backslashes are not allowed in a route path".into());
    }
    for segment in path.split('/') {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err("`.` and `..` segments are not allowed in a route path".into());
        }
    }
    let mut joined = String::with_capacity(base_path.len() + rest.len() + 1);
    joined.push_str(base_path);
    joined.push_str(path);
    if joined.is_empty() {
        joined.push('/');
    }
    if let Some(q) = query {
        joined.push('?');
        joined.push_str(q);
    }
    PathAndQuery::try_from(joined).map_err(|e| format!("invalid path: {e}"))
}

impl Route {
    fn header_value(&self, secret: &str) -> Option<HeaderValue> {
        let text = match self.auth {
            AuthScheme::Raw => secret.to_string(),
            AuthScheme::Bearer => format!("Bearer {secret}"),
            AuthScheme::Basic => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{secret}", self.username))
            ),
        };
        let mut value = HeaderValue::try_from(text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// Serves a request addressed to the proxy itself.
pub(crate) async fn serve(
    routes: &Routes,
    req: Request<Incoming>,
    mut exchange: Exchange,
) -> Response<ProxyBody> {
    let target = req
        .uri()
        .path_and_query()
        .map(PathAndQuery::as_str)
        .unwrap_or("/")
        .to_string();
    let (name, rest) = split_route(&target);
    let Some(route) = routes.find(name) else {
        let known = routes.names();
        if !known.is_empty() {
            exchange.event.rule = "route:unknown".into();
            exchange.event.host = format!("/{name}");
        }
        let text = if known.is_empty() {
            format!(
                "warden: `{target}` is not a proxy request and this proxy has no routes: send the full URL \
                 (GET http://host/path) or open a tunnel with CONNECT host:port; point HTTP_PROXY \
                 and HTTPS_PROXY at this address\n"
            )
        } else {
            format!(
                "warden: no route `{name}`; this proxy's routes are: /{}\n",
                known.join(", /")
            )
        };
        let status = if known.is_empty() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        };
        return exchange.respond(status, text, false);
    };
    exchange.event.rule = format!("route:{}", route.name);
    exchange.event.host = route.authority.host().to_string();
    exchange.event.port = route
        .authority
        .port_u16()
        .unwrap_or(if route.scheme == Scheme::HTTPS {
            443
        } else {
            80
        });
    let path = match upstream_path(&route.base_path, rest) {
        Ok(p) => p,
        Err(why) => return exchange.bad_request(format!("route {}: {why}", route.name), false),
    };
    let secret = match route.credential.secret().await {
        Ok(s) => s,
        Err(e) => {
            exchange.event.error = Some(format!("credential: {e}"));
            return exchange.respond(
                StatusCode::BAD_GATEWAY,
                format!("warden: route {}: no credential: {e}\n", route.name),
                false,
            );
        }
    };
    let Some(value) = route.header_value(secret.expose()) else {
        exchange.event.error = Some("the credential is not a valid header value".into());
        return exchange.respond(
            StatusCode::BAD_GATEWAY,
            format!(
                "warden: route {}: the credential is not a valid header value\n",
                route.name
            ),
            false,
        );
    };
    exchange.event.verdict = Decision::Allowed;

    let (mut parts, body) = req.into_parts();
    parts.uri = Uri::builder()
        .scheme(route.scheme.clone())
        .authority(route.authority.clone())
        .path_and_query(path)
        .build()
        .expect("scheme, authority and path were each validated");
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The client's Host names the proxy; the client fills in the upstream's.
    parts.headers.remove(header::HOST);
    parts.headers.remove(&route.header);
    parts.headers.insert(route.header.clone(), value);

    let completion = Arc::new(Completion::new(exchange));
    let counter = Arc::clone(&completion);
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.up.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed();
    let response = match route.client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            let status = StatusCode::BAD_GATEWAY;
            completion.update(|exchange| {
                exchange.event.status = status.as_u16();
                exchange.event.error = Some(format!("upstream: {e}"));
            });
            return text_response(
                status,
                format!(
                    "warden: route {}: the upstream {} failed: {e}\n",
                    route.name, route.authority
                ),
                false,
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    completion.update(|exchange| exchange.event.status = parts.status.as_u16());
    let counter = completion;
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.down.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_split_from_the_rest() {
        assert_eq!(
            split_route("/anthropic/v1/messages"),
            ("anthropic", "/v1/messages")
        );
        assert_eq!(split_route("/anthropic"), ("anthropic", ""));
        assert_eq!(split_route("/anthropic?x=1"), ("anthropic", "?x=1"));
        assert_eq!(split_route("/"), ("", ""));
    }

    #[test]
    fn paths_join_below_the_base_only() {
        let ok = |base: &str, rest: &str| upstream_path(base, rest).unwrap().to_string();
        assert_eq!(ok("", "/v1/messages"), "/v1/messages");
        assert_eq!(ok("", ""), "/");
        assert_eq!(ok("/llm", "/v1/x?beta=true"), "/llm/v1/x?beta=true");
        assert_eq!(ok("/llm", ""), "/llm");
        assert_eq!(ok("", "?a=1"), "/?a=1");
        // Doubled slashes stay on the same upstream: harmless, passed as written.
        assert_eq!(ok("", "//evil.example/x"), "//evil.example/x");
        // A query may hold anything; it is never a path.
        assert_eq!(ok("", "/x?next=../../y"), "/x?next=../../y");

        for rest in [
            "/../openai/v1",
            "/v1/..",
            "/./x",
            "/%2e%2e/x",
            "/%2E./x",
            "/.%2e",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "x",
        ] {
            assert!(upstream_path("/base", rest).is_err(), "{rest} was accepted");
        }
    }

    #[test]
    fn credentials_are_written_per_scheme_and_marked_sensitive() {
        let route = |auth| Route {
            name: "r".into(),
            scheme: Scheme::HTTPS,
            authority: Authority::from_static("api.example.com"),
            base_path: String::new(),
            header: HeaderName::from_static("authorization"),
            auth,
            username: "x-access-token".into(),
            credential: Arc::new(crate::credential::StaticCredential::new(
                crate::credential::Secret::new("s"),
            )),
            client: HttpClient::new(None, Duration::from_secs(1)).unwrap(),
        };
        let raw = route(AuthScheme::Raw).header_value("sk-1").unwrap();
        assert_eq!(raw, "sk-1");
        assert!(raw.is_sensitive());
        assert_eq!(
            route(AuthScheme::Bearer).header_value("t").unwrap(),
            "Bearer t"
        );
        // base64("x-access-token:ghp") = eC1hY2Nlc3MtdG9rZW46Z2hw
        assert_eq!(
            route(AuthScheme::Basic).header_value("ghp").unwrap(),
            "Basic eC1hY2Nlc3MtdG9rZW46Z2hw"
        );
        assert!(route(AuthScheme::Raw).header_value("a\nb").is_none());
    }

    #[test]
    fn requests_for_the_proxy_itself_are_claimed() {
        let routes = Routes::default().answer_as("127.0.0.1:3128");
        let claims = |u: &str| routes.claims(&u.parse().unwrap());
        assert!(claims("/anthropic/v1/messages"));
        assert!(claims("http://127.0.0.1:3128/anthropic/v1"));
        assert!(!claims("http://127.0.0.1:3129/anthropic/v1"));
        assert!(!claims("http://example.com/anthropic"));
        assert!(!claims("https://127.0.0.1:3128/x"));
        assert!(!claims("example.com:443"));
    }
}
