//! The upstream Python SDK (`k8s-agent-sandbox` from PyPI, installed by `.ci/run`) against
//! warden's side of the cluster: it creates a SandboxClaim through the Kubernetes API (the
//! in-memory API server, served over HTTP), warden's controller binds it to a warm pool
//! member, and the SDK runs a command and moves files through `warden router` to a real
//! `warden sandboxd` (pod jail) standing in for the pod. Then it deletes the claim, and the
//! controller's garbage collection takes the Sandbox.
//!
//! The SDK sends the pod IP from the claim's status (`X-Sandbox-Pod-IP`), which the router
//! dials: the stand-in kubelet gives pods this host's non-loopback address (the router
//! refuses loopback), where sandboxd listens, and the SDK's `server_port` is sandboxd's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use warden_jail::spawn::{Confinement, PodJail};
use warden_kube::controller::Context;
use warden_kube::controller::run::{Readiness, RunOptions, run};
use warden_kube::crd::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use warden_kube::reconcile::sandbox::Settings;
use warden_kube::router::{Resolve, RouterConfig, SandboxIndex, SandboxRouter};
use warden_kube::testing::{FakeApi, host_ip};
use warden_sandboxd::server::{Bound, Listen};
use warden_sandboxd::{Sandboxd, app};

const NS: &str = "agents";

/// Cluster DNS for the router: every `<id>.<ns>.svc` name is the one sandboxd.
struct ClusterDns(SocketAddr);

impl Resolve for ClusterDns {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<SocketAddr>> + Send + 'a>> {
        let addr = self.0;
        Box::pin(async move { Ok(addr) })
    }
}

const SCRIPT: &str = r#"
import json, sys
from k8s_agent_sandbox import SandboxClient
from k8s_agent_sandbox.models import SandboxDirectConnectionConfig

router, ns, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = SandboxClient(
    connection_config=SandboxDirectConnectionConfig(api_url=router, server_port=port)
)
sandbox = client.create_sandbox(warmpool="python-pool", namespace=ns, sandbox_ready_timeout=60)
out = {"claim": sandbox.claim_name, "sandbox": sandbox.sandbox_id}
result = sandbox.commands.run("echo hello-from-the-sdk; echo oops >&2; exit 3", timeout=30)
out["stdout"], out["stderr"], out["exit_code"] = result.stdout, result.stderr, result.exit_code
sandbox.files.write("notes/hello.txt", b"written by the SDK")
out["read"] = sandbox.files.read("notes/hello.txt").decode()
out["exists"] = sandbox.files.exists("notes/hello.txt")
out["cat"] = sandbox.commands.run("cat notes/hello.txt", timeout=30).stdout
client.delete_sandbox(sandbox.claim_name, namespace=ns)
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_python_sdk_claims_runs_and_deletes_through_warden() {
    let probe = Command::new("python3")
        .args(["-c", "import k8s_agent_sandbox"])
        .output()
        .expect("python3");
    assert!(
        probe.status.success(),
        "this test needs the SDK: pip install k8s-agent-sandbox==1.0.8 (.ci/run installs it): {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // The cluster: the API server (over HTTP for the SDK) and warden's controller.
    let fake = FakeApi::new();
    fake.auto_ready_pods(true);
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api_listener.local_addr().unwrap();
    tokio::spawn(fake.clone().serve(api_listener));
    let ctx = Arc::new(Context::new(fake.client(NS), Settings::default()));
    tokio::spawn(run(
        ctx,
        RunOptions::default(),
        Arc::new(Readiness::default()),
        std::future::pending(),
    ));

    // The "pod": a real sandboxd with the pod jail.
    let root = tempfile::tempdir().unwrap();
    let fs_root = warden_sandboxd::fs::Root::open(root.path()).unwrap();
    let jail = PodJail::prepare(&warden_policy::Profile::Pod.policy(), fs_root.path(), &[])
        .expect("pod jail (needs Landlock and seccomp)");
    let state = Arc::new(Sandboxd::new(fs_root, Confinement::Pod(Arc::new(jail))));
    let bound = Bound::bind(&Listen::Tcp("0.0.0.0:0".parse().unwrap()))
        .await
        .unwrap();
    let sandboxd = SocketAddr::new(host_ip(), bound.local_addr().unwrap().port());
    fake.pod_ip(sandboxd.ip());
    tokio::spawn(bound.serve(app(state)));

    // The router, resolving sandbox names as cluster DNS would.
    let router = SandboxRouter::with_resolver(
        RouterConfig::default(),
        SandboxIndex::new(),
        Arc::new(ClusterDns(sandboxd)),
    );
    let router_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_url = format!("http://{}", router_listener.local_addr().unwrap());
    tokio::spawn(router.serve(router_listener, std::future::pending()));

    // What an operator applies: a template and a warm pool.
    fake.insert(
        &serde_json::from_value::<SandboxTemplate>(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
            "metadata": {"name": "python", "namespace": NS},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "runtime", "image": "python-runtime"}]}}},
        }))
        .unwrap(),
    );
    fake.insert(
        &serde_json::from_value::<SandboxWarmPool>(json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": "python-pool", "namespace": NS},
            "spec": {"replicas": 1, "sandboxTemplateRef": {"name": "python"}},
        }))
        .unwrap(),
    );
    for _ in 0..400 {
        let ready = fake
            .get::<SandboxWarmPool>(Some(NS), "python-pool")
            .and_then(|p| p.status)
            .is_some_and(|s| s.ready_replicas == 1);
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let kubeconfig = root.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api_addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n    namespace: {NS}\nusers:\n- name: me\n  user:\n    token: test\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    let members: Vec<String> = fake
        .list::<Sandbox>(Some(NS))
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();

    let script = SCRIPT.to_string();
    let router = router_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", &script, &router, NS, &sandboxd.port().to_string()])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK script failed:\n{stderr}");
    let result: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("no JSON from the script ({e}): {stderr}"));

    assert!(
        members.contains(&result["sandbox"].as_str().unwrap().to_string()),
        "the claim adopted the warm member {members:?}: {result}"
    );
    assert_eq!(result["stdout"], "hello-from-the-sdk\n", "{result}");
    assert_eq!(result["stderr"], "oops\n", "{result}");
    assert_eq!(result["exit_code"], 3, "{result}");
    assert_eq!(result["read"], "written by the SDK");
    assert_eq!(result["exists"], true);
    assert_eq!(result["cat"], "written by the SDK");
    assert_eq!(
        std::fs::read_to_string(root.path().join("notes/hello.txt")).unwrap(),
        "written by the SDK",
        "the file is in the sandbox's workspace"
    );

    // The claim is gone, and with it (garbage collection) the Sandbox it adopted.
    let claim = result["claim"].as_str().unwrap().to_string();
    let adopted = result["sandbox"].as_str().unwrap().to_string();
    for _ in 0..200 {
        if fake.get::<Sandbox>(Some(NS), &adopted).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(fake.get::<SandboxClaim>(Some(NS), &claim).is_none());
    assert!(fake.get::<Sandbox>(Some(NS), &adopted).is_none());
}
