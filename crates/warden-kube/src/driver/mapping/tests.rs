use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;
use warden_sandbox::Phase;

use super::*;
use crate::crd::{SandboxClaimStatus, SandboxSpec, SandboxStatus};

fn defaults() -> TemplateDefaults {
    TemplateDefaults {
        image: "ghcr.io/warden-sandbox/warden:test".into(),
        sandboxd_port: 8080,
        router_namespace: Some("warden-system".into()),
        namespace: "team".into(),
    }
}

fn template(policy: &str) -> Template {
    Template {
        name: "py".into(),
        policy: toml::from_str(policy).unwrap(),
        shutdown_after: Some(Duration::from_secs(600)),
        idle_timeout: None,
        workspace_quota: Some(2 << 30),
    }
}

fn field(r: Result<SandboxTemplate, DriverError>) -> String {
    match r {
        Err(DriverError::InvalidArgument { field, message }) => {
            assert!(!message.is_empty());
            field
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn sandbox_container(st: &SandboxTemplate) -> &Container {
    st.spec
        .pod_template
        .spec
        .containers
        .iter()
        .find(|c| c.name == SANDBOX_CONTAINER)
        .expect("a sandbox container")
}

fn proxy_args(st: &SandboxTemplate) -> Vec<String> {
    let proxy = st
        .spec
        .pod_template
        .spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == harden::PROXY_CONTAINER)
        .expect("the proxy sidecar");
    proxy
        .command
        .iter()
        .flatten()
        .chain(proxy.args.iter().flatten())
        .cloned()
        .collect()
}

#[test]
fn a_template_becomes_a_hardened_sandbox_template() {
    let t = template(
        "[network]\nmode = \"proxy\"\nallow_domains = [\"pypi.org\", \"*.pythonhosted.org\"]\n\
         [resources]\nmemory = \"512M\"\ncpus = 1.5\n[environment]\nset = { A = \"1\" }\n\
         [filesystem]\ntmp_size = \"64M\"",
    );
    let st = sandbox_template(&t, &defaults()).unwrap();
    assert_eq!(st.metadata.name.as_deref(), Some("py"));
    assert_eq!(st.metadata.namespace.as_deref(), Some("team"));
    assert!(is_managed(&st.metadata));
    // Read back whole.
    assert_eq!(template_of(&st), Some(t.clone()));

    let spec = &st.spec.pod_template.spec;
    assert!(
        harden::restricted_violations(spec).is_empty(),
        "{:?}",
        harden::restricted_violations(spec)
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    let c = sandbox_container(&st);
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/warden-sandbox/warden:test")
    );
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"], Quantity((512u64 << 20).to_string()));
    assert_eq!(limits["cpu"], Quantity("1500m".into()));
    let env: Vec<(&str, Option<&str>)> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert!(env.contains(&("A", Some("1"))), "{env:?}");
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert!(ports.contains(&8080), "{ports:?}");

    let args = proxy_args(&st).join(" ");
    assert!(args.contains("pypi.org"), "{args}");
    assert!(args.contains("*.pythonhosted.org"), "{args}");

    // warden's NetworkPolicy rules, admitting the router from its own namespace.
    let np = st.spec.network_policy.as_ref().unwrap();
    assert!(!np.ingress.is_empty() && !np.egress.is_empty());
    let from = serde_json::to_string(&np.ingress).unwrap();
    assert!(from.contains("warden-system"), "{from}");
    assert!(from.contains("sandbox-router"), "{from}");

    // Hardening is idempotent: putting the same template twice writes the same object.
    assert_eq!(sandbox_template(&t, &defaults()).unwrap(), st);
}

#[test]
fn an_offline_policy_gets_an_empty_allowlist() {
    let st = sandbox_template(&template(""), &defaults()).unwrap();
    let args = proxy_args(&st);
    assert!(
        !args.iter().any(|a| a.starts_with("--allow-domain")),
        "{args:?}"
    );
}

#[test]
fn what_a_pod_cannot_honour_is_refused_naming_the_field() {
    let cases = [
        ("[network]\nmode = \"host\"", "policy.network.mode"),
        (
            "[network]\nmode = \"proxy\"\nallow_domains = [\"a.com\"]\ndeny_domains = [\"b.a.com\"]",
            "policy.network.deny_domains",
        ),
        (
            "[network]\nmode = \"proxy\"\nallow_ports = [8443]",
            "policy.network.allow_ports",
        ),
        (
            "[network]\nmode = \"proxy\"\nallow_cidrs = [\"10.1.0.0/16\"]",
            "policy.network.allow_cidrs",
        ),
        ("[routes.anthropic]", "policy.routes"),
        // The checks the local driver makes apply too.
        ("[resources]\nmemory = \"lots\"", "policy.resources.memory"),
        (
            "[filesystem]\nworkspace = \"/srv\"",
            "policy.filesystem.workspace",
        ),
    ];
    for (policy, want) in cases {
        let got = field(sandbox_template(&template(policy), &defaults()));
        assert!(got.starts_with(want), "{policy:?}: {got}, wanted {want}");
    }
    let mut t = template("");
    t.workspace_quota = Some(1000);
    assert_eq!(field(sandbox_template(&t, &defaults())), "workspace_quota");
    let mut d = defaults();
    d.image = String::new();
    assert_eq!(field(sandbox_template(&template(""), &d)), "image");
}

#[test]
fn request_env_joins_the_policy_and_cannot_override_the_proxy() {
    let t = template("[environment]\nset = { A = \"1\" }");
    let env = BTreeMap::from([
        ("B".to_string(), "2".to_string()),
        ("HTTPS_PROXY".to_string(), "http://evil:3128".to_string()),
    ]);
    let spec = pod_spec(&t, &env, &defaults()).unwrap();
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == SANDBOX_CONTAINER)
        .unwrap();
    let get = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(get("A").as_deref(), Some("1"));
    assert_eq!(get("B").as_deref(), Some("2"));
    assert_ne!(get("HTTPS_PROXY").as_deref(), Some("http://evil:3128"));
    // Injection variables are refused as locally.
    let env = BTreeMap::from([("LD_PRELOAD".to_string(), "/x.so".to_string())]);
    assert!(matches!(
        pod_spec(&t, &env, &defaults()),
        Err(DriverError::InvalidArgument { .. })
    ));
}

#[test]
fn pools_map_both_ways() {
    let p = PoolSpec {
        name: "py-pool".into(),
        template: "py".into(),
        replicas: 3,
    };
    let mut wp = warm_pool(&p, "team");
    assert!(is_managed(&wp.metadata));
    assert_eq!(wp.spec.replicas, 3);
    assert_eq!(wp.spec.sandbox_template_ref.name, "py");
    assert_eq!(
        pool_status(&wp),
        PoolStatus {
            name: "py-pool".into(),
            template: "py".into(),
            replicas: 3,
            ready: 0,
            starting: 0
        }
    );
    wp.status = Some(crate::crd::SandboxWarmPoolStatus {
        replicas: 3,
        ready_replicas: 2,
        ..Default::default()
    });
    let s = pool_status(&wp);
    assert_eq!((s.ready, s.starting), (2, 1));
}

fn cond(kind: &str, status: &str, reason: &str) -> Condition {
    serde_json::from_value(json!({
        "type": kind, "status": status, "reason": reason, "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }))
    .unwrap()
}

fn sandbox(mode: OperatingMode, conditions: Vec<Condition>) -> Sandbox {
    let mut s = Sandbox::new(
        "sbx-1",
        SandboxSpec {
            pod_template: PodTemplate::default(),
            volume_claim_templates: vec![],
            service: None,
            shutdown_time: None,
            shutdown_policy: Default::default(),
            operating_mode: mode,
        },
    );
    s.status = Some(SandboxStatus {
        conditions,
        ..Default::default()
    });
    s
}

#[test]
fn phases_from_conditions() {
    use OperatingMode::{Running, Suspended};
    let cases = vec![
        (Running, vec![], Phase::Starting),
        (
            Running,
            vec![cond("Ready", "False", "DependenciesNotReady")],
            Phase::Starting,
        ),
        (
            Running,
            vec![cond("Ready", "True", "DependenciesReady")],
            Phase::Ready,
        ),
        (
            Suspended,
            vec![cond("Ready", "True", "DependenciesReady")],
            Phase::Ready,
        ),
        (
            Suspended,
            vec![
                cond("Ready", "False", "SandboxSuspended"),
                cond("Suspended", "False", "PodTerminating"),
            ],
            Phase::Starting,
        ),
        (
            Suspended,
            vec![
                cond("Ready", "False", "SandboxSuspended"),
                cond("Suspended", "True", "PodTerminated"),
            ],
            Phase::Suspended,
        ),
        (
            Running,
            vec![cond("Ready", "False", "SandboxExpired")],
            Phase::Stopped,
        ),
        (
            Running,
            vec![
                cond("Ready", "False", "PodFailed"),
                cond("Finished", "True", "PodFailed"),
            ],
            Phase::Failed,
        ),
        (
            Running,
            vec![
                cond("Ready", "False", "PodSucceeded"),
                cond("Finished", "True", "PodSucceeded"),
            ],
            Phase::Stopped,
        ),
        (
            Running,
            vec![cond("Ready", "False", "InvalidConfiguration")],
            Phase::Failed,
        ),
    ];
    for (mode, conditions, want) in cases {
        let s = sandbox(mode, conditions.clone());
        assert_eq!(phase(&s).0, want, "{mode:?} {conditions:?}");
    }
    let mut s = sandbox(Running, vec![cond("Ready", "True", "DependenciesReady")]);
    s.metadata.deletion_timestamp = Some(to_time(SystemTime::now()));
    assert_eq!(phase(&s).0, Phase::Stopped);
}

fn owned_by(s: &mut Sandbox, kind: &str, name: &str) {
    s.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "extensions.agents.x-k8s.io/v1beta1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: "u".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
}

#[test]
fn sandbox_info_from_a_claimed_warm_sandbox() {
    let mut s = sandbox(
        OperatingMode::Running,
        vec![cond("Ready", "True", "DependenciesReady")],
    );
    s.metadata.creation_timestamp =
        Some(to_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)));
    s.metadata.labels = Some(BTreeMap::from([
        (LAUNCH_TYPE.to_string(), LAUNCH_TYPE_WARM.to_string()),
        (MANAGED_BY.to_string(), WARDEN.to_string()),
    ]));
    s.metadata.annotations = Some(BTreeMap::from([
        (
            SANDBOX_TEMPLATE_REF_ANNOTATION.to_string(),
            "py".to_string(),
        ),
        (
            ANNOTATION_LABELS.to_string(),
            r#"{"task":"t-1"}"#.to_string(),
        ),
    ]));
    owned_by(&mut s, "SandboxClaim", "sbx-claim");
    let claim: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
        "kind": "SandboxClaim",
        "metadata": {"name": "sbx-claim", "namespace": "team"},
        "spec": {"warmPoolRef": {"name": "py-pool"},
                 "lifecycle": {"shutdownTime": "1970-01-01T01:00:00Z"}},
    }))
    .unwrap();
    let info = sandbox_info(&s, Some(&claim));
    assert_eq!(info.id, "sbx-1");
    assert_eq!(info.template, "py");
    assert_eq!(info.pool.as_deref(), Some("py-pool"));
    assert!(!info.pool_member);
    assert_eq!(info.phase, Phase::Ready);
    assert_eq!(info.launch, Launch::Warm);
    assert_eq!(
        info.created_at,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000)
    );
    assert_eq!(
        info.shutdown_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(3600))
    );
    assert_eq!(info.labels["task"], "t-1");

    let mut member = sandbox(OperatingMode::Running, vec![]);
    owned_by(&mut member, "SandboxWarmPool", "py-pool");
    let info = sandbox_info(&member, None);
    assert!(info.pool_member);
    assert_eq!(info.pool.as_deref(), Some("py-pool"));
    assert_eq!(info.phase, Phase::Starting);
    assert_eq!(holder(&member), Holder::Pool("py-pool".into()));
}

fn claim_with(reason: Option<(&str, &str)>, sandbox: &str) -> SandboxClaim {
    let mut c: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
        "kind": "SandboxClaim",
        "metadata": {"name": "sbx-abc", "namespace": "team"},
        "spec": {"warmPoolRef": {"name": "py-pool"}},
    }))
    .unwrap();
    c.status = reason.map(|(status, r)| SandboxClaimStatus {
        conditions: vec![cond("Ready", status, r)],
        sandbox: crate::crd::ClaimSandboxStatus {
            name: sandbox.into(),
            pod_ips: vec![],
        },
    });
    c
}

#[test]
fn claim_states() {
    assert_eq!(
        claim_state(&claim_with(None, ""), "py-pool"),
        ClaimState::Pending(None)
    );
    assert_eq!(
        claim_state(
            &claim_with(Some(("True", "DependenciesReady")), "py-pool-x1"),
            "py-pool"
        ),
        ClaimState::Ready("py-pool-x1".into())
    );
    assert!(matches!(
        claim_state(&claim_with(Some(("False", "SandboxNotReady")), "py-pool-x1"), "py-pool"),
        ClaimState::Pending(Some((r, _))) if r == "SandboxNotReady"
    ));
    let failed =
        |reason: &str| match claim_state(&claim_with(Some(("False", reason)), ""), "py-pool") {
            ClaimState::Failed(e) => e,
            other => panic!("{reason}: {other:?}"),
        };
    assert_eq!(
        failed("WarmPoolNotFound"),
        DriverError::NotFound {
            kind: "pool",
            name: "py-pool".into()
        }
    );
    let e = failed("TemplateNotFound");
    assert!(matches!(
        e,
        DriverError::NotFound {
            kind: "template",
            ..
        }
    ));
    assert!(e.to_string().contains("py-pool"), "{e}");
    for reason in [
        "InvalidMetadata",
        "EnvVarsInjectionRejected",
        "VolumeClaimTemplatesError",
    ] {
        let e = failed(reason);
        assert!(matches!(e, DriverError::InvalidArgument { .. }), "{reason}");
        assert!(
            e.to_string().contains("py-pool") && e.to_string().contains(reason),
            "{e}"
        );
    }
    for reason in ["ClaimExpired", "SandboxExpired"] {
        assert!(
            matches!(failed(reason), DriverError::Conflict(_)),
            "{reason}"
        );
    }
    // Transient reasons keep the driver waiting.
    for reason in [
        "SandboxCreatePending",
        "AdoptionConflict",
        "ReconcilerError",
        "SandboxMissing",
    ] {
        assert!(
            matches!(
                claim_state(&claim_with(Some(("False", reason)), ""), "py-pool"),
                ClaimState::Pending(_)
            ),
            "{reason}"
        );
    }
}
