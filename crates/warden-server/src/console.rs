//! The web console: a page of plain HTML, CSS and JavaScript (`console/` beside this crate,
//! embedded at build time) that shows tasks, approvals, sandboxes with a web terminal,
//! templates, pools, schedules and webhook deliveries, all read from the API with the same
//! bearer token.
//!
//! The files hold no data, so they are served without the token. Every response carries a
//! strict Content-Security-Policy (scripts and styles from this origin only; the `<style>`
//! elements xterm.js creates are admitted by a nonce made per page), and may not be framed.
//! xterm.js itself comes from npm (`npm ci` in `console/`); `build.rs` embeds it when it is
//! there, and without it the terminal view says how to get it.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// xterm.js and its fit addon, as npm installed them.
#[derive(Debug, Clone, Copy)]
pub struct XtermAssets {
    pub xterm_js: &'static [u8],
    pub xterm_css: &'static [u8],
    pub fit_js: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/xterm_assets.rs"));

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");
const FAVICON: &str = include_str!("../console/favicon.svg");

/// Where the page's nonce goes in `index.html`.
const NONCE_MARK: &str = "__WARDEN_NONCE__";

/// Whether this binary carries xterm.js.
pub fn has_xterm() -> bool {
    XTERM.is_some()
}

/// The console's routes: `/` and `/console` lead to `/console/`, the page and its files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(to_console))
        .route("/console", get(to_console))
        .route("/console/", get(index))
        .route("/console/{file}", get(asset))
        .route("/console/vendor/{file}", get(vendor))
}

async fn to_console() -> Response {
    let mut resp = (
        StatusCode::FOUND,
        [(header::LOCATION, HeaderValue::from_static("/console/"))],
    )
        .into_response();
    secure(resp.headers_mut(), &content_security_policy(None, None));
    resp
}

async fn index(headers: HeaderMap) -> Response {
    let nonce = match crate::auth::new_token() {
        Ok(t) => t[..32].to_string(),
        Err(e) => {
            tracing::error!(error = %e, "no randomness for the console's nonce");
            return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
        }
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let csp = content_security_policy(Some(&nonce), host);
    file(
        "text/html; charset=utf-8",
        INDEX_HTML.replace(NONCE_MARK, &nonce).into_bytes(),
        &csp,
    )
}

async fn asset(Path(name): Path<String>) -> Response {
    let csp = content_security_policy(None, None);
    match name.as_str() {
        "app.js" => file("text/javascript; charset=utf-8", APP_JS.as_bytes(), &csp),
        "app.css" => file("text/css; charset=utf-8", APP_CSS.as_bytes(), &csp),
        "favicon.svg" => file("image/svg+xml", FAVICON.as_bytes(), &csp),
        _ => not_found(&format!("no console file `{name}`"), &csp),
    }
}

async fn vendor(Path(name): Path<String>) -> Response {
    let csp = content_security_policy(None, None);
    let Some(x) = XTERM else {
        return not_found(
            "xterm.js is not built into this warden: run `npm ci` in \
             crates/warden-server/console, then build warden again",
            &csp,
        );
    };
    match name.as_str() {
        "xterm.js" => file("text/javascript; charset=utf-8", x.xterm_js, &csp),
        "xterm.css" => file("text/css; charset=utf-8", x.xterm_css, &csp),
        "addon-fit.js" => file("text/javascript; charset=utf-8", x.fit_js, &csp),
        _ => not_found(&format!("no console file `vendor/{name}`"), &csp),
    }
}

fn file(content_type: &'static str, body: impl Into<axum::body::Body>, csp: &str) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, content_type),
            // The page is small and changes with the binary: always ask.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.into(),
    )
        .into_response();
    secure(resp.headers_mut(), csp);
    resp
}

fn not_found(message: &str, csp: &str) -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response();
    secure(resp.headers_mut(), csp);
    resp
}

/// The headers every console response carries.
fn secure(h: &mut HeaderMap, csp: &str) {
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// The page's policy: everything from this origin only, no inline script or style (the
/// `<style>` elements xterm.js makes carry `nonce`), WebSockets to this host, no framing.
/// `host` is the request's `Host`, used only when it is a plain host\[:port\].
pub fn content_security_policy(nonce: Option<&str>, host: Option<&str>) -> String {
    let style = match nonce {
        Some(n) => format!("style-src 'self' 'nonce-{n}'"),
        None => "style-src 'self'".to_string(),
    };
    let ws = match host.filter(|h| is_plain_host(h)) {
        Some(h) => format!(" ws://{h} wss://{h}"),
        None => String::new(),
    };
    format!(
        "default-src 'self'; script-src 'self'; {style}; img-src 'self'; \
         connect-src 'self'{ws}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// A host name or address with an optional port, and nothing that could end a directive.
fn is_plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> Router {
        routes()
    }

    async fn get(path: &str, host: &str) -> (StatusCode, HeaderMap, String) {
        let resp = app()
            .oneshot(
                Request::get(path)
                    .header("host", host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn the_policy_is_strict_and_hosts_cannot_inject_directives() {
        let p = content_security_policy(Some("abc"), Some("127.0.0.1:7070"));
        assert!(
            p.starts_with("default-src 'self'; script-src 'self'; "),
            "{p}"
        );
        assert!(p.contains("style-src 'self' 'nonce-abc';"), "{p}");
        assert!(
            p.contains("connect-src 'self' ws://127.0.0.1:7070 wss://127.0.0.1:7070;"),
            "{p}"
        );
        assert!(p.contains("frame-ancestors 'none'"), "{p}");
        assert!(!p.contains("unsafe"), "{p}");
        for evil in ["a; script-src *", "a b", "a'", ""] {
            let p = content_security_policy(None, Some(evil));
            assert!(p.contains("connect-src 'self';"), "{evil}: {p}");
        }
    }

    #[tokio::test]
    async fn the_page_and_its_files_carry_the_security_headers() {
        let (status, h, body) = get("/console/", "localhost:1234").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let csp = h["content-security-policy"].to_str().unwrap().to_string();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(body.contains(&format!("nonce=\"{nonce}\"")), "{body}");
        assert!(!body.contains(NONCE_MARK));
        // A new nonce for every page.
        let (_, h2, _) = get("/console/", "localhost:1234").await;
        assert_ne!(h2["content-security-policy"], h["content-security-policy"]);
        // No inline script or style in our page.
        assert!(
            !body.contains("<script>") && !body.contains("style="),
            "{body}"
        );

        let (status, h, body) = get("/console/app.js", "x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(body.contains("sessionStorage"));
        let (status, h, _) = get("/console/app.css", "x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["content-type"], "text/css; charset=utf-8");
        let (status, _, _) = get("/console/secrets", "x").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, h, body) = get("/console/vendor/xterm.js", "x").await;
        if has_xterm() {
            assert_eq!(status, StatusCode::OK);
            assert!(body.contains("Terminal"));
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(body.contains("npm ci"), "{body}");
        }
        assert_eq!(h["x-frame-options"], "DENY");
        for path in ["/", "/console"] {
            let (status, h, _) = get(path, "x").await;
            assert_eq!(status, StatusCode::FOUND, "{path}");
            assert_eq!(h["location"], "/console/", "{path}");
        }
    }
}
