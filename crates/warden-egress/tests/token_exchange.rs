//! The RFC 8693 token exchange credential source against a local OAuth 2.0 token server
//! written here: it checks every parameter of every request (the subject token against the
//! file's content at that moment, the Basic client credentials, no extra or missing
//! parameter), answers as RFC 8693 §2.2 says, and counts the exchanges.
//!
//! Time is an injected clock moved by hand, so refreshes are tested without waiting; the only
//! real-time limit is a guard against hangs.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use warden_egress::{CredentialError, CredentialSource, Secret, TokenExchange};
use warden_policy::{CredentialSpec, TokenExchangeSpec};

use support::tls::TestCa;

/// Guards against a hang only; no test asserts how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(30);

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const CLIENT_ID: &str = "warden proxy";
const CLIENT_SECRET: &str = "client-secret:with/odd chars";
const SECRET_VAR: &str = "TX_CLIENT_SECRET";

// ---------------------------------------------------------------------------------------------
// Scratch files

/// A directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("warden-tx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The token server

/// What the server expects besides the subject token (read from `subject_file` per request).
#[derive(Clone, Default)]
struct Expect {
    subject_file: PathBuf,
    subject_token_type: String,
    actor: Option<(PathBuf, String)>,
    audience: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    /// Client credentials expected in an `Authorization: Basic` header.
    basic: Option<(String, String)>,
    /// A client id expected as a form parameter.
    form_client_id: Option<String>,
}

/// How the server answers a request that passed the checks.
#[derive(Clone)]
enum Reply {
    /// `access_token` is `access-N` for the N-th request.
    Success { expires_in: Option<u64> },
    /// An RFC 6749 §5.2 error; `{subject}` in the description is replaced by the subject token
    /// received, as a careless server might echo it.
    OAuthError {
        status: u16,
        code: &'static str,
        description: &'static str,
    },
    /// Anything else, verbatim.
    Raw {
        status: u16,
        content_type: &'static str,
        body: &'static str,
    },
}

#[derive(Clone)]
struct ServerState {
    expect: Arc<Mutex<Expect>>,
    reply: Arc<Mutex<Reply>>,
    calls: Arc<AtomicUsize>,
    /// What was wrong with requests; every test asserts it is empty.
    problems: Arc<Mutex<Vec<String>>>,
    /// The subject tokens received, in order.
    subjects: Arc<Mutex<Vec<String>>>,
}

struct TokenServer {
    addr: SocketAddr,
    state: ServerState,
}

impl TokenServer {
    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn reply_with(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    fn subjects(&self) -> Vec<String> {
        self.state.subjects.lock().unwrap().clone()
    }

    fn assert_no_problems(&self) {
        let problems = self.state.problems.lock().unwrap();
        assert!(
            problems.is_empty(),
            "the token server saw bad requests: {problems:#?}"
        );
    }

    fn endpoint(&self, scheme: &str) -> String {
        format!("{scheme}://{}/token", self.addr)
    }
}

fn server_state(expect: Expect) -> ServerState {
    ServerState {
        expect: Arc::new(Mutex::new(expect)),
        reply: Arc::new(Mutex::new(Reply::Success {
            expires_in: Some(3600),
        })),
        calls: Arc::new(AtomicUsize::new(0)),
        problems: Arc::new(Mutex::new(Vec::new())),
        subjects: Arc::new(Mutex::new(Vec::new())),
    }
}

async fn start_server(expect: Expect) -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server_state(expect);
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(stream, shared.clone()));
        }
    });
    TokenServer { addr, state }
}

/// The same server behind TLS, with a certificate of the test CA.
async fn start_tls_server(expect: Expect, ca: &TestCa) -> TokenServer {
    let acceptor = ca.acceptor.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server_state(expect);
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA aborts the handshake; that is a test case.
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve(tls, shared).await;
                }
            });
        }
    });
    TokenServer { addr, state }
}

async fn serve<I>(io: I, state: ServerState)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| answer(req, state.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn json_response(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn answer(
    req: Request<Incoming>,
    state: ServerState,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let expect = state.expect.lock().unwrap().clone();
    let mut problems = Vec::new();

    if req.method() != hyper::Method::POST {
        problems.push(format!("method {}", req.method()));
    }
    if req.uri().path() != "/token" {
        problems.push(format!("path {}", req.uri().path()));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not ascii>").to_string())
    };
    if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
        problems.push(format!("content-type {:?}", header("content-type")));
    }
    match (&expect.basic, header("authorization")) {
        (None, None) => {}
        (None, Some(_)) => problems.push("an Authorization header nobody asked for".into()),
        (Some(_), None) => problems.push("no Authorization header".into()),
        (Some((id, secret)), Some(value)) => match decode_basic(&value) {
            Some((got_id, got_secret)) if &got_id == id && &got_secret == secret => {}
            Some((got_id, _)) => problems.push(format!(
                "Basic credentials of client `{got_id}` do not match"
            )),
            None => problems.push("an Authorization header that is not valid Basic".into()),
        },
    }

    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut form = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(&body) {
        if form.insert(key.to_string(), value.to_string()).is_some() {
            problems.push(format!("parameter {key} sent twice"));
        }
    }
    let subject = form.get("subject_token").cloned().unwrap_or_default();
    state.subjects.lock().unwrap().push(subject.clone());

    // Every parameter, with the tokens as the files hold them right now.
    let read = |path: &Path| std::fs::read_to_string(path).unwrap().trim().to_string();
    let mut wanted = BTreeMap::new();
    wanted.insert("grant_type", GRANT_TYPE.to_string());
    wanted.insert("subject_token", read(&expect.subject_file));
    wanted.insert("subject_token_type", expect.subject_token_type.clone());
    if let Some((path, token_type)) = &expect.actor {
        wanted.insert("actor_token", read(path));
        wanted.insert("actor_token_type", token_type.clone());
    }
    for (key, value) in [
        ("audience", &expect.audience),
        ("resource", &expect.resource),
        ("scope", &expect.scope),
        ("requested_token_type", &expect.requested_token_type),
        ("client_id", &expect.form_client_id),
    ] {
        if let Some(v) = value {
            wanted.insert(key, v.clone());
        }
    }
    for (key, value) in &wanted {
        match form.get(*key) {
            None => problems.push(format!("missing {key}")),
            Some(got) if got != value => problems.push(format!("wrong {key}")),
            Some(_) => {}
        }
    }
    for key in form.keys() {
        if !wanted.contains_key(key.as_str()) {
            problems.push(format!("unexpected parameter {key}"));
        }
    }
    if !problems.is_empty() {
        let description = problems.join("; ");
        state.problems.lock().unwrap().extend(problems);
        return Ok(json_response(
            400,
            serde_json::json!({"error": "invalid_request", "error_description": description}),
        ));
    }

    let reply = state.reply.lock().unwrap().clone();
    Ok(match reply {
        Reply::Success { expires_in } => {
            let mut body = serde_json::json!({
                "access_token": format!("access-{n}"),
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
            });
            if let Some(e) = expires_in {
                body["expires_in"] = e.into();
            }
            json_response(200, body)
        }
        Reply::OAuthError {
            status,
            code,
            description,
        } => {
            let mut response = json_response(
                status,
                serde_json::json!({
                    "error": code,
                    "error_description": description.replace("{subject}", &subject),
                    "error_uri": "https://sts.test/errors",
                }),
            );
            if status == 401 {
                response
                    .headers_mut()
                    .insert("www-authenticate", "Basic realm=\"token\"".parse().unwrap());
            }
            response
        }
        Reply::Raw {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    })
}

/// `Basic base64(urlencode(id):urlencode(secret))` back to (id, secret).
fn decode_basic(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.to_string())
    };
    Some((unescape(id)?, unescape(secret)?))
}

// ---------------------------------------------------------------------------------------------
// The client side

/// A clock that moves only when told to.
#[derive(Clone)]
struct ManualClock {
    start: Instant,
    elapsed_secs: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> ManualClock {
        ManualClock {
            start: Instant::now(),
            elapsed_secs: Arc::new(AtomicU64::new(0)),
        }
    }

    fn set(&self, secs: u64) {
        self.elapsed_secs.store(secs, Ordering::SeqCst);
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_secs(self.elapsed_secs.load(Ordering::SeqCst))
    }
}

fn env(name: &str) -> Option<String> {
    (name == SECRET_VAR).then(|| CLIENT_SECRET.to_string())
}

/// A spec with every parameter, and what the server should expect of it.
fn full_setup(scratch: &Scratch, endpoint: String) -> (TokenExchangeSpec, Expect) {
    let subject_file = scratch.write("subject.jwt", "subject-token-1\n");
    let actor_file = scratch.write("actor.jwt", "  actor-token-1  ");
    let spec = TokenExchangeSpec {
        endpoint,
        subject_token_file: subject_file.clone(),
        subject_token_type: JWT.into(),
        actor_token_file: Some(actor_file.clone()),
        actor_token_type: Some(ACCESS_TOKEN_TYPE.into()),
        audience: Some("internal-api".into()),
        resource: Some("https://api.internal.test/v1".into()),
        scope: Some("read write".into()),
        requested_token_type: Some(ACCESS_TOKEN_TYPE.into()),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(Box::new(CredentialSpec::Env(SECRET_VAR.into()))),
        ca_file: None,
    };
    let expect = Expect {
        subject_file,
        subject_token_type: JWT.into(),
        actor: Some((actor_file, ACCESS_TOKEN_TYPE.into())),
        audience: spec.audience.clone(),
        resource: spec.resource.clone(),
        scope: spec.scope.clone(),
        requested_token_type: spec.requested_token_type.clone(),
        basic: Some((CLIENT_ID.into(), CLIENT_SECRET.into())),
        form_client_id: None,
    };
    (spec, expect)
}

/// A spec with only what is required, and its expectation.
fn minimal_setup(scratch: &Scratch, endpoint: String) -> (TokenExchangeSpec, Expect) {
    let subject_file = scratch.write("subject.jwt", "subject-token-1");
    let spec = TokenExchangeSpec::new(endpoint, subject_file.clone());
    let expect = Expect {
        subject_file,
        subject_token_type: JWT.into(),
        ..Expect::default()
    };
    (spec, expect)
}

/// Binds first so the endpoint is known when the spec is written, then starts the server.
async fn server_for(
    scratch: &Scratch,
    setup: fn(&Scratch, String) -> (TokenExchangeSpec, Expect),
) -> (TokenServer, TokenExchangeSpec) {
    // The expectation only depends on the files, not on the endpoint.
    let (_, expect) = setup(scratch, String::new());
    let server = start_server(expect).await;
    let (spec, _) = setup(scratch, server.endpoint("http"));
    (server, spec)
}

async fn secret_of(source: &TokenExchange) -> Result<Secret, CredentialError> {
    tokio::time::timeout(HANG_GUARD, source.secret())
        .await
        .expect("the token exchange hung")
}

async fn token(source: &TokenExchange) -> String {
    secret_of(source)
        .await
        .unwrap_or_else(|e| panic!("no token: {e}"))
        .expose()
        .to_string()
}

/// Fails unless `message` says nothing secret.
fn assert_no_secret(message: &str) {
    for secret in [
        "subject-token",
        "actor-token",
        CLIENT_SECRET,
        "client-secret",
        "access-",
    ] {
        assert!(
            !message.contains(secret),
            "`{secret}` leaked into: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn exchanges_with_every_parameter_and_basic_client_auth() {
    let scratch = Scratch::new("full");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let source = TokenExchange::new(&spec, &env).unwrap();
    assert_eq!(token(&source).await, "access-1");
    server.assert_no_problems();
    assert_eq!(server.calls(), 1);
    assert_eq!(server.subjects(), ["subject-token-1"]);
    let debug = format!("{source:?}");
    assert!(debug.contains(CLIENT_ID), "{debug}");
    assert_no_secret(&debug);
}

#[tokio::test]
async fn a_public_client_sends_its_id_in_the_form() {
    let scratch = Scratch::new("public");
    let (server, mut spec) = server_for(&scratch, minimal_setup).await;
    // Only the three required parameters, and no client authentication at all.
    let source = TokenExchange::new(&spec, &env).unwrap();
    assert_eq!(token(&source).await, "access-1");
    server.assert_no_problems();

    // A client id without a secret goes in the form, not in a header.
    spec.client_id = Some("public-client".into());
    server.state.expect.lock().unwrap().form_client_id = Some("public-client".into());
    let source = TokenExchange::new(&spec, &env).unwrap();
    assert_eq!(token(&source).await, "access-2");
    server.assert_no_problems();
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn the_token_is_cached() {
    let scratch = Scratch::new("cached");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let clock = ManualClock::new();
    let c = clock.clone();
    let source = TokenExchange::new(&spec, &env)
        .unwrap()
        .with_clock(move || c.now());
    for second in [0, 1, 60, 600, 3000] {
        clock.set(second);
        for _ in 0..10 {
            assert_eq!(token(&source).await, "access-1");
        }
    }
    assert_eq!(server.calls(), 1);
    server.assert_no_problems();
}

#[tokio::test]
async fn the_token_is_refreshed_shortly_before_it_expires() {
    let scratch = Scratch::new("refresh");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let clock = ManualClock::new();
    let c = clock.clone();
    let source = TokenExchange::new(&spec, &env)
        .unwrap()
        .with_clock(move || c.now());

    // 100 s: refreshed when less than 10% (10 s) remains.
    server.reply_with(Reply::Success {
        expires_in: Some(100),
    });
    assert_eq!(token(&source).await, "access-1");
    clock.set(89);
    assert_eq!(token(&source).await, "access-1");
    assert_eq!(server.calls(), 1);
    clock.set(90);
    assert_eq!(token(&source).await, "access-2");
    assert_eq!(server.calls(), 2);

    // One hour, issued at 90: refreshed when less than 60 s remains.
    server.reply_with(Reply::Success {
        expires_in: Some(3600),
    });
    clock.set(90);
    assert_eq!(token(&source).await, "access-2");
    clock.set(190);
    assert_eq!(token(&source).await, "access-3");
    clock.set(190 + 3539);
    assert_eq!(token(&source).await, "access-3");
    clock.set(190 + 3540);
    assert_eq!(token(&source).await, "access-4");

    // No expires_in: cached for the default five minutes.
    server.reply_with(Reply::Success { expires_in: None });
    let later = 100_000;
    clock.set(later);
    assert_eq!(token(&source).await, "access-5");
    clock.set(later + 299);
    assert_eq!(token(&source).await, "access-5");
    clock.set(later + 300);
    assert_eq!(token(&source).await, "access-6");
    assert_eq!(server.calls(), 6);
    server.assert_no_problems();
}

#[tokio::test]
async fn a_rotated_subject_token_is_used_at_the_next_refresh() {
    let scratch = Scratch::new("rotate");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let clock = ManualClock::new();
    let c = clock.clone();
    let source = TokenExchange::new(&spec, &env)
        .unwrap()
        .with_clock(move || c.now());
    server.reply_with(Reply::Success {
        expires_in: Some(600),
    });
    assert_eq!(token(&source).await, "access-1");

    // The kubelet rewrites the projected token; the cached access token stays until refresh.
    scratch.write("subject.jwt", "subject-token-2\n");
    scratch.write("actor.jwt", "actor-token-2");
    assert_eq!(token(&source).await, "access-1");
    clock.set(600);
    assert_eq!(token(&source).await, "access-2");
    assert_eq!(server.subjects(), ["subject-token-1", "subject-token-2"]);
    // The server compared each request with the files as they were then, actor included.
    server.assert_no_problems();
}

#[tokio::test]
async fn concurrent_callers_share_one_exchange() {
    let scratch = Scratch::new("concurrent");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let source = TokenExchange::new(&spec, &env).unwrap();
    // join! polls all eight before any can finish: the first starts the exchange and the
    // others find it in flight. Without single flight, each would start its own.
    let results = tokio::join!(
        token(&source),
        token(&source),
        token(&source),
        token(&source),
        token(&source),
        token(&source),
        token(&source),
        token(&source),
    );
    let all = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
    ];
    assert!(all.iter().all(|t| t == "access-1"), "{all:?}");
    assert_eq!(server.calls(), 1);

    // A failing exchange is shared too: one request, the same error for every caller.
    let scratch = Scratch::new("concurrent-failure");
    let (server, spec) = server_for(&scratch, full_setup).await;
    server.reply_with(Reply::OAuthError {
        status: 400,
        code: "invalid_grant",
        description: "subject token expired",
    });
    let source = TokenExchange::new(&spec, &env).unwrap();
    let (a, b, c, d) = tokio::join!(
        secret_of(&source),
        secret_of(&source),
        secret_of(&source),
        secret_of(&source),
    );
    for result in [a, b, c, d] {
        let err = result.unwrap_err();
        assert!(err.0.contains("invalid_grant"), "{err}");
    }
    assert_eq!(server.calls(), 1);
    server.assert_no_problems();
}

#[tokio::test]
async fn a_failure_is_retried_after_a_short_backoff() {
    let scratch = Scratch::new("retry");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let clock = ManualClock::new();
    let c = clock.clone();
    let source = TokenExchange::new(&spec, &env)
        .unwrap()
        .with_clock(move || c.now());
    server.reply_with(Reply::Raw {
        status: 503,
        content_type: "text/plain",
        body: "maintenance",
    });
    let first = secret_of(&source).await.unwrap_err();
    assert!(first.0.contains("503"), "{first}");
    // Within the backoff the error is served without a new request, and says so.
    let again = secret_of(&source).await.unwrap_err();
    assert!(
        again.0.contains("503") && again.0.contains("retried in 1 s"),
        "{again}"
    );
    assert_eq!(server.calls(), 1);

    // After it, the next call tries again; the failure was not cached for good.
    server.reply_with(Reply::Success {
        expires_in: Some(3600),
    });
    clock.set(1);
    assert_eq!(token(&source).await, "access-2");
    assert_eq!(server.calls(), 2);

    // A refresh that fails keeps serving the token while it is still valid.
    server.reply_with(Reply::Raw {
        status: 503,
        content_type: "text/plain",
        body: "maintenance",
    });
    clock.set(1 + 3550);
    assert_eq!(token(&source).await, "access-2");
    assert_eq!(server.calls(), 3);
    clock.set(1 + 3600);
    let expired = secret_of(&source).await.unwrap_err();
    assert!(expired.0.contains("503"), "{expired}");
    assert_eq!(server.calls(), 4);
    server.assert_no_problems();
}

#[tokio::test]
async fn error_answers_become_clear_errors_without_secrets() {
    let scratch = Scratch::new("errors");
    let (server, spec) = server_for(&scratch, full_setup).await;
    let endpoint = server.endpoint("http");
    let cases: Vec<(Reply, Vec<&str>)> = vec![
        (
            Reply::OAuthError {
                status: 400,
                code: "invalid_request",
                description: "subject_token_type is not supported",
            },
            vec![
                "HTTP 400",
                "`invalid_request`",
                "subject_token_type is not supported",
                "(see https://sts.test/errors)",
            ],
        ),
        (
            Reply::OAuthError {
                status: 401,
                code: "invalid_client",
                description: "client authentication failed",
            },
            vec![
                "HTTP 401",
                "`invalid_client`",
                "client authentication failed",
                "client_id and client_secret",
            ],
        ),
        (
            Reply::OAuthError {
                status: 400,
                code: "invalid_target",
                description: "audience internal-api is unknown",
            },
            vec!["`invalid_target`", "audience internal-api is unknown"],
        ),
        (
            // A server that quotes the token it refused: scrubbed.
            Reply::OAuthError {
                status: 400,
                code: "invalid_grant",
                description: "token {subject} has expired",
            },
            vec!["`invalid_grant`", "token <redacted> has expired"],
        ),
        (
            Reply::Raw {
                status: 200,
                content_type: "text/html",
                body: "<html>access-1</html>",
            },
            vec!["HTTP 200", "text/html", "not JSON"],
        ),
        (
            Reply::Raw {
                status: 502,
                content_type: "text/html",
                body: "<h1>Bad gateway</h1>",
            },
            vec!["HTTP 502", "not an OAuth error response", "Bad gateway"],
        ),
        (
            Reply::Raw {
                status: 200,
                content_type: "application/json",
                body: r#"{"access_token":"access-x","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            },
            vec!["no `token_type`"],
        ),
        (
            Reply::Raw {
                status: 200,
                content_type: "application/json",
                body: r#"{"access_token":"access-x","token_type":"DPoP"}"#,
            },
            vec!["`token_type` is `DPoP`"],
        ),
        (
            Reply::Raw {
                status: 200,
                content_type: "application/json",
                body: r#"{"access_token":"access-x","token_type":"Bearer","issued_token_type":42}"#,
            },
            vec!["`issued_token_type` is not a string"],
        ),
        (
            Reply::Raw {
                status: 200,
                content_type: "application/json",
                body: r#"{"token_type":"Bearer"}"#,
            },
            vec!["no `access_token`"],
        ),
    ];
    for (reply, expected) in cases {
        server.reply_with(reply);
        // A fresh source per case: no cache, no backoff in between.
        let source = TokenExchange::new(&spec, &env).unwrap();
        let err = secret_of(&source).await.unwrap_err().0;
        assert!(err.contains(&endpoint), "the endpoint is not named: {err}");
        for part in expected {
            assert!(err.contains(part), "`{part}` missing in: {err}");
        }
        assert_no_secret(&err);
    }
    server.assert_no_problems();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let scratch = Scratch::new("unreachable");
    // A port that was free a moment ago and has no listener now.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (spec, _) = full_setup(&scratch, format!("http://{addr}/token"));
    let source = TokenExchange::new(&spec, &env).unwrap();
    let err = secret_of(&source).await.unwrap_err().0;
    assert!(err.contains(&format!("http://{addr}/token")), "{err}");
    assert!(err.contains("request failed"), "{err}");
    assert_no_secret(&err);
}

#[tokio::test]
async fn the_subject_token_file_is_checked_at_start_and_at_every_exchange() {
    let scratch = Scratch::new("subject-file");
    let (server, mut spec) = server_for(&scratch, full_setup).await;

    let missing = scratch.0.join("no-such-token");
    let original = std::mem::replace(&mut spec.subject_token_file, missing.clone());
    let err = TokenExchange::new(&spec, &env).unwrap_err().0;
    assert!(
        err.starts_with("credential.token_exchange.subject_token_file: cannot read"),
        "{err}"
    );
    assert!(err.contains(&missing.display().to_string()), "{err}");

    std::fs::write(&missing, " \n").unwrap();
    let err = TokenExchange::new(&spec, &env).unwrap_err().0;
    assert!(err.contains("is empty"), "{err}");

    // Present at start, gone at the exchange: no request, an error naming the file.
    spec.subject_token_file = original.clone();
    let source = TokenExchange::new(&spec, &env).unwrap();
    std::fs::remove_file(&original).unwrap();
    let err = secret_of(&source).await.unwrap_err().0;
    assert!(err.contains("subject_token_file"), "{err}");
    assert!(err.contains(&original.display().to_string()), "{err}");
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn configuration_errors_name_the_policy_key() {
    let scratch = Scratch::new("config");
    let (base, _) = full_setup(&scratch, "https://sts.example.com/token".into());
    assert!(TokenExchange::new(&base, &env).is_ok());

    let no_env = |_: &str| -> Option<String> { None };
    /// A change to a valid spec, the start of the error it causes, and a detail of it.
    type Case = (
        Box<dyn Fn(&mut TokenExchangeSpec)>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            Box::new(|s| s.endpoint = "http://sts.example.com/token".into()),
            "credential.token_exchange.endpoint: ",
            "cleartext",
        ),
        (
            Box::new(|s| s.endpoint = "http://10.1.2.3/token".into()),
            "credential.token_exchange.endpoint: ",
            "use https://",
        ),
        (
            Box::new(|s| s.endpoint = "sts.example.com/token".into()),
            "credential.token_exchange.endpoint: ",
            "absolute URL",
        ),
        (
            Box::new(|s| s.subject_token_type = String::new()),
            "credential.token_exchange.subject_token_type: ",
            "empty",
        ),
        (
            Box::new(|s| s.actor_token_file = Some("/nonexistent/actor.jwt".into())),
            "credential.token_exchange.actor_token_file: ",
            "/nonexistent/actor.jwt",
        ),
        (
            Box::new(|s| s.actor_token_type = None),
            "credential.token_exchange.actor_token_type: ",
            "go together",
        ),
        (
            Box::new(|s| s.client_id = None),
            "credential.token_exchange.client_id: ",
            "client secret needs",
        ),
        (
            Box::new(|s| {
                s.client_secret = Some(Box::new(CredentialSpec::File(
                    "/nonexistent/secret.txt".into(),
                )))
            }),
            "credential.token_exchange.client_secret: ",
            "/nonexistent/secret.txt",
        ),
        (
            Box::new(|s| s.ca_file = Some("/nonexistent/ca.pem".into())),
            "credential.token_exchange.ca_file: ",
            "/nonexistent/ca.pem",
        ),
    ];
    for (change, prefix, detail) in cases {
        let mut spec = base.clone();
        change(&mut spec);
        let err = TokenExchange::new(&spec, &env).unwrap_err().0;
        assert!(err.starts_with(prefix), "expected {prefix}...: {err}");
        assert!(err.contains(detail), "`{detail}` missing in: {err}");
        assert_no_secret(&err);
    }
    let err = TokenExchange::new(&base, &no_env).unwrap_err().0;
    assert!(
        err.starts_with("credential.token_exchange.client_secret: ") && err.contains(SECRET_VAR),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// https with a test CA

#[tokio::test]
async fn an_https_endpoint_is_trusted_through_ca_file() {
    let scratch = Scratch::new("https");
    let ca = TestCa::new();
    let ca_file = ca.ca_file.clone();
    let secret_file = scratch.write("client-secret", &format!("{CLIENT_SECRET}\n"));
    let (_, expect) = full_setup(&scratch, String::new());
    let server = start_tls_server(expect, &ca).await;
    let (mut spec, _) = full_setup(&scratch, server.endpoint("https"));
    spec.client_secret = Some(Box::new(CredentialSpec::File(secret_file)));

    // Without the CA the certificate is refused, and the error says so.
    let untrusting = TokenExchange::new(&spec, &env).unwrap();
    let err = secret_of(&untrusting).await.unwrap_err().0;
    assert!(err.contains(&server.endpoint("https")), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_no_secret(&err);
    assert_eq!(server.calls(), 0);

    spec.ca_file = Some(ca_file);
    let source = TokenExchange::new(&spec, &env).unwrap();
    assert_eq!(token(&source).await, "access-1");
    assert_eq!(token(&source).await, "access-1");
    assert_eq!(server.calls(), 1);
    server.assert_no_problems();
}
