//! The Kubernetes driver of `warden serve` without a cluster: the in-memory API server
//! (`FakeApi`, with a stand-in kubelet making pods Ready), the real controllers
//! (`controller::run::run`), the real router (`router::SandboxRouter`, in-process, with its DNS
//! fallback answering 127.0.0.1) and a real `warden sandboxd` in pod isolation on 127.0.0.1 as
//! every sandbox's "pod". Calls go driver → router (X-Sandbox-* headers, bearer token) →
//! sandboxd, as in a cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use warden_jail::spawn::{Confinement, PodJail};
use warden_kube::controller::Context;
use warden_kube::controller::run::{Readiness, RunOptions, run};
use warden_kube::crd::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use warden_kube::driver::{KubeDriver, KubeDriverConfig};
use warden_kube::reconcile::sandbox::Settings;
use warden_kube::router::{Resolve, RouterConfig, SandboxIndex, SandboxRouter, TokenTable};
use warden_kube::testing::FakeApi;
use warden_sandbox::{
    ByteStream, ClaimRequest, CreateRequest, Driver, DriverError, Launch, Phase, PoolSpec,
    SandboxEvent, StreamItem, Template,
};
use warden_sandboxd::proto::{Command, ExecEvent, ExecRequest};
use warden_sandboxd::server::{Bound, Listen};
use warden_sandboxd::{Sandboxd, app};

const NS: &str = "team";
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(30);

/// The router's DNS fallback: every Service name is the one sandboxd; the names asked for are
/// kept.
struct Loopback {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Resolve for Loopback {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<SocketAddr>> + Send + 'a>> {
        self.asked.lock().unwrap().push(format!("{host}:{port}"));
        let addr = self.addr;
        Box::pin(async move { Ok(addr) })
    }
}

struct World {
    fake: FakeApi,
    driver: KubeDriver,
    router_url: String,
    asked: Arc<Mutex<Vec<String>>>,
    _root: tempfile::TempDir,
}

async fn world() -> World {
    let fake = FakeApi::new();
    fake.auto_ready_pods(true);
    let client = fake.client(NS);

    let ctx = Arc::new(Context::new(client.clone(), Settings::default()));
    let options = RunOptions {
        namespaces: vec![NS.into()],
        ..RunOptions::default()
    };
    tokio::spawn(run(
        ctx,
        options,
        Arc::new(Readiness::default()),
        std::future::pending(),
    ));

    // The "pod": sandboxd in pod isolation on 127.0.0.1.
    let root = tempfile::tempdir().unwrap();
    let fs_root = warden_sandboxd::fs::Root::open(root.path()).unwrap();
    let jail = PodJail::prepare(&warden_policy::Profile::Pod.policy(), fs_root.path(), &[])
        .expect("pod jail (needs Landlock and seccomp)");
    let state = Arc::new(Sandboxd::new(fs_root, Confinement::Pod(Arc::new(jail))));
    let bound = Bound::bind(&Listen::Tcp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let sandboxd = bound.local_addr().unwrap();
    tokio::spawn(bound.serve(app(state)));

    // The router, with a token, resolving every sandbox to that sandboxd.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let config = RouterConfig {
        tokens: Some(TokenTable::parse(&format!("{TOKEN} {NS}/*\n")).unwrap()),
        ..RouterConfig::default()
    };
    let router = SandboxRouter::with_resolver(
        config,
        SandboxIndex::new(),
        Arc::new(Loopback {
            addr: sandboxd,
            asked: asked.clone(),
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(router.serve(listener, std::future::pending()));

    let driver = KubeDriver::new(client, config_for(&router_url)).unwrap();
    World {
        fake,
        driver,
        router_url,
        asked,
        _root: root,
    }
}

fn config_for(router_url: &str) -> KubeDriverConfig {
    let mut cfg = KubeDriverConfig::new(NS, "ghcr.io/warden-sandbox/warden:test");
    cfg.router_url = router_url.into();
    cfg.router_token = Some(TOKEN.into());
    cfg.ready_timeout = WAIT;
    cfg
}

fn template(name: &str) -> Template {
    Template {
        name: name.into(),
        policy: toml::from_str("[network]\nmode = \"proxy\"\nallow_domains = [\"pypi.org\"]")
            .unwrap(),
        shutdown_after: Some(Duration::from_secs(1800)),
        idle_timeout: None,
        workspace_quota: None,
    }
}

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest::new(Command::Shell(cmd.into()))
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pool_ready(w: &World, name: &str, n: u32) {
    eventually(&format!("pool {name} to have {n} ready"), async || {
        w.driver
            .pools()
            .await
            .into_iter()
            .find(|p| p.name == name && p.ready >= n)
    })
    .await;
}

fn bytes(b: &'static [u8]) -> ByteStream {
    Box::pin(futures_util::stream::once(async move {
        Ok(Bytes::from_static(b))
    }))
}

async fn read_all(s: ByteStream) -> Vec<u8> {
    s.try_fold(Vec::new(), |mut acc, b| async move {
        acc.extend_from_slice(&b);
        Ok(acc)
    })
    .await
    .unwrap()
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<SandboxEvent>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push((e.sandbox, e.kind));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_exec_files_suspend_resume_delete() {
    let w = world().await;
    let mut events = w.driver.events();
    w.driver.put_template(template("py")).await.unwrap();
    assert_eq!(w.driver.templates().await, vec![template("py")]);
    let st = w.fake.get::<SandboxTemplate>(Some(NS), "py").unwrap();
    assert_eq!(
        st.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "warden"
    );
    w.driver
        .put_pool(PoolSpec {
            name: "py-pool".into(),
            template: "py".into(),
            replicas: 1,
        })
        .await
        .unwrap();
    pool_ready(&w, "py-pool", 1).await;
    // The member is listed as an unclaimed pool member.
    let members = w.driver.list().await;
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(members[0].pool_member);

    let mut labels = BTreeMap::new();
    labels.insert("task".to_string(), "t-1".to_string());
    let info = w
        .driver
        .claim(ClaimRequest {
            pool: "py-pool".into(),
            labels: labels.clone(),
            ..ClaimRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(info.phase, Phase::Ready);
    assert_eq!(info.launch, Launch::Warm);
    assert_eq!(info.pool.as_deref(), Some("py-pool"));
    assert!(!info.pool_member);
    assert_eq!(info.template, "py");
    assert_eq!(info.labels, labels);
    assert!(info.id.starts_with("py-pool-"), "{}", info.id);
    let shutdown = info.shutdown_at.expect("a shutdown time");
    let left = shutdown
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(1700) && left <= Duration::from_secs(1800),
        "{left:?}"
    );
    let id = info.id.clone();
    assert_eq!(w.driver.get(&id).await.unwrap().id, id);

    // Exec through the router, which resolved the sandbox's Service name.
    let r = w
        .driver
        .exec(&id, sh("echo hello; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_code),
        ("hello\n", "err\n", 3)
    );
    let asked = w.asked.lock().unwrap().clone();
    assert!(
        asked.contains(&format!("{id}.{NS}.svc.cluster.local.:8080")),
        "{asked:?}"
    );

    // Files.
    w.driver
        .write_file(&id, "dir/hello.txt", Some(0o600), bytes(b"hi there"))
        .await
        .unwrap();
    assert_eq!(
        read_all(w.driver.read_file(&id, "dir/hello.txt").await.unwrap()).await,
        b"hi there"
    );
    assert!(w.driver.exists(&id, "dir/hello.txt").await.unwrap());
    assert!(!w.driver.exists(&id, "dir/nope").await.unwrap());
    let listing = w.driver.list_dir(&id, "dir").await.unwrap();
    assert_eq!(listing.entries.len(), 1, "{listing:?}");
    w.driver.mkdir(&id, "a/b/c").await.unwrap();
    match w.driver.remove(&id, "a", false).await {
        Err(DriverError::Sandbox(e)) => assert_eq!(e.code.http_status(), 409),
        other => panic!("removing a non-empty directory: {other:?}"),
    }
    w.driver.remove(&id, "a", true).await.unwrap();
    assert!(!w.driver.exists(&id, "a").await.unwrap());
    let r = w.driver.exec(&id, sh("cat dir/hello.txt")).await.unwrap();
    assert_eq!(r.stdout, "hi there");

    // A streaming exec over the router's WebSocket.
    let mut req = sh("read line; echo got $line");
    req.stdin = None;
    let mut session = w.driver.exec_stream(&id, req).await.unwrap();
    session
        .stdin
        .send(warden_sandbox::StdinMsg::Data(Bytes::from_static(
            b"ping\n",
        )))
        .await
        .unwrap();
    let mut out = Vec::new();
    let exit = loop {
        match tokio::time::timeout(WAIT, session.output.recv())
            .await
            .unwrap()
        {
            Some(StreamItem::Stdout(b)) => out.extend_from_slice(&b),
            Some(StreamItem::Event(ExecEvent::Exit { exit_code, .. })) => break exit_code,
            Some(StreamItem::Event(ExecEvent::Error { message, .. })) => panic!("{message}"),
            Some(_) => {}
            None => panic!("the stream ended without an exit"),
        }
    };
    assert_eq!(
        (String::from_utf8_lossy(&out).as_ref(), exit),
        ("got ping\n", 0)
    );

    // Shutdown time on the claim.
    let at = std::time::SystemTime::now() + Duration::from_secs(7200);
    let info = w.driver.set_shutdown(&id, Some(at)).await.unwrap();
    let got = info.shutdown_at.unwrap();
    let diff = got.duration_since(at).unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(1), "{got:?} vs {at:?}");
    let claim_name = w
        .fake
        .get::<Sandbox>(Some(NS), &id)
        .unwrap()
        .metadata
        .labels
        .unwrap()["warden.dev/claim"]
        .clone();
    let claim = w.fake.get::<SandboxClaim>(Some(NS), &claim_name).unwrap();
    assert!(claim.spec.lifecycle.unwrap().shutdown_time.is_some());

    // Suspend: exec refuses; resume: it answers again.
    let info = w.driver.suspend(&id).await.unwrap();
    assert_eq!(info.phase, Phase::Suspended);
    match w.driver.exec(&id, sh("true")).await {
        Err(DriverError::Conflict(m)) => assert!(m.contains("suspended"), "{m}"),
        other => panic!("exec while suspended: {other:?}"),
    }
    let info = w.driver.resume(&id).await.unwrap();
    assert_eq!(info.phase, Phase::Ready);
    let r = w.driver.exec(&id, sh("echo back")).await.unwrap();
    assert_eq!(r.stdout, "back\n");

    // A driver whose router is unreachable: Unavailable, naming the router.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let offline = KubeDriver::new(w.fake.client(NS), config_for(&closed)).unwrap();
    match offline.exec(&id, sh("true")).await {
        Err(DriverError::Unavailable(m)) => assert!(m.contains(&closed), "{m}"),
        other => panic!("exec through a closed router: {other:?}"),
    }
    match offline.connect_runtime(&id, 8080).await {
        Err(DriverError::Unavailable(_)) => {}
        other => panic!("connect through a closed router: {other:?}"),
    }
    // A wrong token: the router refuses, and the error says so.
    let mut cfg = config_for(&w.router_url);
    cfg.router_token = Some("f".repeat(48));
    let stranger = KubeDriver::new(w.fake.client(NS), cfg).unwrap();
    match stranger.exec(&id, sh("true")).await {
        Err(DriverError::Internal(m)) => assert!(m.contains("router token"), "{m}"),
        other => panic!("exec with a wrong router token: {other:?}"),
    }

    // The template cannot go while the pool uses it.
    match w.driver.delete_template("py").await {
        Err(DriverError::Conflict(m)) => assert!(m.contains("py-pool"), "{m}"),
        other => panic!("deleting a template in use: {other:?}"),
    }

    // Delete: the claim goes, and its Sandbox with it.
    w.driver.delete(&id).await.unwrap();
    eventually("the sandbox to be gone", async || {
        matches!(
            w.driver.get(&id).await,
            Err(DriverError::NotFound {
                kind: "sandbox",
                ..
            })
        )
        .then_some(())
    })
    .await;
    assert!(w.fake.get::<SandboxClaim>(Some(NS), &claim_name).is_none());

    // Events from the driver and its watches.
    // Every poll's events are kept: an earlier poll may have drained `claimed`.
    let mut seen = Vec::new();
    eventually("the deleted event", async || {
        seen.extend(drain(&mut events));
        seen.iter()
            .any(|(s, k)| *s == id && k == "deleted")
            .then_some(())
    })
    .await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|(s, _)| *s == id)
        .map(|(_, k)| k.as_str())
        .collect();
    for want in ["claimed", "timeout_set", "suspended", "resumed", "deleted"] {
        assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
    }

    // Then the pool and the template.
    w.driver.delete_pool("py-pool").await.unwrap();
    assert!(w.fake.get::<SandboxWarmPool>(Some(NS), "py-pool").is_none());
    w.driver.delete_template("py").await.unwrap();
    assert!(w.driver.templates().await.is_empty());
    match w.driver.delete_template("py").await {
        Err(DriverError::NotFound {
            kind: "template", ..
        }) => {}
        other => panic!("deleting a missing template: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_cold_and_clear_errors() {
    let w = world().await;
    // A claim naming a missing pool: NotFound naming it, and the claim is cleaned up.
    match w
        .driver
        .claim(ClaimRequest {
            pool: "no-such-pool".into(),
            ..ClaimRequest::default()
        })
        .await
    {
        Err(e @ DriverError::NotFound { kind: "pool", .. }) => {
            assert!(e.to_string().contains("no-such-pool"), "{e}")
        }
        other => panic!("claim from a missing pool: {other:?}"),
    }
    eventually("the failed claim to be deleted", async || {
        w.fake
            .list::<SandboxClaim>(Some(NS))
            .is_empty()
            .then_some(())
    })
    .await;

    // A pool over a missing template is refused up front.
    match w
        .driver
        .put_pool(PoolSpec {
            name: "p".into(),
            template: "nope".into(),
            replicas: 1,
        })
        .await
    {
        Err(DriverError::NotFound {
            kind: "template",
            name,
        }) => assert_eq!(name, "nope"),
        other => panic!("pool over a missing template: {other:?}"),
    }

    // A policy a pod cannot honour is refused, naming the field.
    let mut t = template("host");
    t.policy = toml::from_str("[network]\nmode = \"host\"").unwrap();
    match w.driver.put_template(t).await {
        Err(DriverError::InvalidArgument { field, .. }) => assert_eq!(field, "policy.network.mode"),
        other => panic!("host network: {other:?}"),
    }

    // Create: a cold Sandbox from the template, Ready, reachable.
    w.driver.put_template(template("py")).await.unwrap();
    let mut env = BTreeMap::new();
    env.insert("GREETING".to_string(), "hi".to_string());
    let info = w
        .driver
        .create(CreateRequest {
            template: "py".into(),
            env,
            ..CreateRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(info.phase, Phase::Ready);
    assert_eq!(info.launch, Launch::Cold);
    assert_eq!(info.template, "py");
    assert!(info.id.starts_with("sbx-"), "{}", info.id);
    let s = w.fake.get::<Sandbox>(Some(NS), &info.id).unwrap();
    assert!(s.spec.shutdown_time.is_some());
    let pod_labels = &s.spec.pod_template.metadata.labels;
    assert!(
        pod_labels.contains_key("agents.x-k8s.io/sandbox-template-ref-hash"),
        "the template's NetworkPolicy must select the pod: {pod_labels:?}"
    );
    let env: Vec<String> = s.spec.pod_template.spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    assert!(env.contains(&"GREETING".to_string()), "{env:?}");
    let r = w.driver.exec(&info.id, sh("echo cold")).await.unwrap();
    assert_eq!(r.stdout, "cold\n");
    let listed: Vec<String> = w.driver.list().await.into_iter().map(|i| i.id).collect();
    assert_eq!(listed, vec![info.id.clone()]);
    assert_eq!(w.driver.recover().await.unwrap().len(), 1);

    // set_shutdown(None) clears the Sandbox's own shutdown time.
    let cleared = w.driver.set_shutdown(&info.id, None).await.unwrap();
    assert_eq!(cleared.shutdown_at, None);

    // A Sandbox warden did not make is not the driver's.
    let mut foreign = s.clone();
    foreign.metadata = kube::api::ObjectMeta {
        name: Some("foreign".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    w.fake.insert(&foreign);
    match w.driver.get("foreign").await {
        Err(DriverError::NotFound { .. }) => {}
        other => panic!("a foreign sandbox: {other:?}"),
    }
    match w.driver.exec("foreign", sh("true")).await {
        Err(DriverError::NotFound { .. }) => {}
        other => panic!("exec in a foreign sandbox: {other:?}"),
    }

    w.driver.delete(&info.id).await.unwrap();
    eventually("the cold sandbox to be gone", async || {
        w.fake
            .get::<Sandbox>(Some(NS), &info.id)
            .is_none()
            .then_some(())
    })
    .await;
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

/// `warden serve`'s HTTP API (warden-server's `app`) over the driver: templates, pools, a
/// claim, exec and files through the API, and the agent-sandbox router contract (a request
/// with `X-Sandbox-ID`) reaching the sandbox through the cluster's router.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warden_serve_api_over_the_kubernetes_driver() {
    let w = world().await;
    let data = tempfile::tempdir().unwrap();
    let store = warden_server::Store::open(data.path()).await.unwrap();
    let driver: Arc<dyn Driver> = Arc::new(w.driver.clone());
    let state = warden_server::AppState::new(driver, store, warden_server::Auth::Disabled);
    let app = warden_server::app(state);

    let (s, b) = call(
        &app,
        "PUT",
        "/v1/templates/py",
        &[],
        r#"{"policy": {"network": {"mode": "proxy", "allow_domains": ["pypi.org"]}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, b) = call(
        &app,
        "PUT",
        "/v1/pools/py-pool",
        &[],
        r#"{"template": "py", "replicas": 1}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    pool_ready(&w, "py-pool", 1).await;

    let (s, b) = call(&app, "POST", "/v1/sandboxes", &[], r#"{"pool": "py-pool"}"#).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let id = json(&b)["id"].as_str().unwrap().to_string();
    assert_eq!(json(&b)["launch"], "warm");

    let (s, b) = call(
        &app,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        &[],
        r#"{"command": "echo via-api"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["stdout"], "via-api\n");

    // The router contract: sandboxd's REST API addressed by X-Sandbox-ID, in the driver's
    // namespace; a caller's X-Sandbox-Pod-IP is not passed on.
    let headers = [
        ("x-sandbox-id", id.as_str()),
        ("x-sandbox-namespace", NS),
        ("x-sandbox-port", "8080"),
        ("x-sandbox-pod-ip", "10.1.2.3"),
    ];
    let (s, b) = call(&app, "PUT", "/v1/files/routed.txt", &headers, "routed!").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&b));
    let (s, b) = call(&app, "GET", "/v1/files/routed.txt", &headers, "").await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, b"routed!".as_slice()));
    let (s, b) = call(&app, "GET", "/v1/health", &headers, "").await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["status"], "ok");
    // Legacy REST on the default port (8888): the router forwards to it.
    let legacy = [("x-sandbox-id", id.as_str()), ("x-sandbox-namespace", NS)];
    let (s, b) = call(
        &app,
        "POST",
        "/execute",
        &legacy,
        r#"{"command": "echo legacy"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["stdout"], "legacy\n");
    let asked = w.asked.lock().unwrap().clone();
    assert!(
        asked.contains(&format!("{id}.{NS}.svc.cluster.local.:8888")),
        "{asked:?}"
    );
    // Another namespace, or a sandbox warden does not manage: the router's 502.
    let other_ns = [
        ("x-sandbox-id", id.as_str()),
        ("x-sandbox-namespace", "default"),
    ];
    let (s, b) = call(&app, "GET", "/v1/health", &other_ns, "").await;
    assert_eq!(
        s,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let unknown = [("x-sandbox-id", "nobody"), ("x-sandbox-namespace", NS)];
    let (s, _) = call(&app, "GET", "/v1/health", &unknown, "").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);

    // Files through the API read what the router contract wrote.
    let (s, b) = call(
        &app,
        "GET",
        &format!("/v1/sandboxes/{id}/files/routed.txt"),
        &[],
        "",
    )
    .await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, b"routed!".as_slice()));

    let (s, b) = call(&app, "POST", "/v1/sandboxes", &[], r#"{"pool": "missing"}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("missing"));

    let (s, _) = call(&app, "DELETE", &format!("/v1/sandboxes/{id}"), &[], "").await;
    assert!(s.is_success(), "{s}");
}
