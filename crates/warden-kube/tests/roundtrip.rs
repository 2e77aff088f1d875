//! Manifests written the way an agent-sandbox user writes them read into the types, take
//! upstream's defaults, and come back out with upstream's field names; bad enum values are
//! refused with an error that names the allowed ones.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warden_kube::crd::{
    ClaimShutdownPolicy, EnvVarsInjectionPolicy, NetworkPolicyManagement, OperatingMode, Sandbox,
    SandboxClaim, SandboxTemplate, SandboxWarmPool, ShutdownPolicy, UpdateStrategyType,
    VolumeClaimTemplatesPolicy, conditions, labels,
};

fn read<T: DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn read_err<T: DeserializeOwned + std::fmt::Debug>(yaml: &str) -> String {
    match serde_saphyr::from_str::<T>(yaml) {
        Ok(v) => panic!("accepted {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Writes `value` as JSON and reads it back: the same value, and the JSON it was written as.
fn round_trip<T: serde::Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
) -> Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value);
    json
}

const MINIMAL_SANDBOX: &str = r#"
apiVersion: agents.x-k8s.io/v1beta1
kind: Sandbox
metadata:
  name: my-sandbox
spec:
  podTemplate:
    spec:
      containers:
      - name: my-container
        image: python:3.12-slim
"#;

#[test]
fn a_minimal_sandbox_takes_upstream_defaults() {
    let sb: Sandbox = read(MINIMAL_SANDBOX);
    assert_eq!(sb.metadata.name.as_deref(), Some("my-sandbox"));
    assert_eq!(sb.spec.shutdown_policy, ShutdownPolicy::Retain);
    assert_eq!(sb.spec.operating_mode, OperatingMode::Running);
    assert_eq!(sb.spec.service, None);
    assert_eq!(sb.spec.shutdown_time, None);
    assert!(sb.spec.volume_claim_templates.is_empty());
    assert!(sb.spec.pod_template.metadata.is_empty());
    assert_eq!(sb.spec.pod_template.spec.containers[0].name, "my-container");
    assert!(sb.status.is_none());

    let json = round_trip(&sb);
    assert_eq!(json["apiVersion"], "agents.x-k8s.io/v1beta1");
    assert_eq!(json["kind"], "Sandbox");
    assert_eq!(json["spec"]["shutdownPolicy"], "Retain");
    assert_eq!(json["spec"]["operatingMode"], "Running");
    // Unset optional fields stay out of what is written.
    let spec = json["spec"].as_object().unwrap();
    for absent in ["service", "shutdownTime", "volumeClaimTemplates"] {
        assert!(!spec.contains_key(absent), "{absent} in {json}");
    }
    assert!(json.get("status").is_none(), "{json}");
}

#[test]
fn a_full_sandbox_reads_every_field() {
    let sb: Sandbox = read(
        r#"
apiVersion: agents.x-k8s.io/v1beta1
kind: Sandbox
metadata:
  name: dev-box
  namespace: agents
spec:
  operatingMode: Suspended
  service: true
  shutdownTime: "2030-01-02T03:04:05Z"
  shutdownPolicy: Delete
  podTemplate:
    metadata:
      labels:
        app: dev-box
      annotations:
        example.com/owner: team-a
    spec:
      runtimeClassName: gvisor
      automountServiceAccountToken: false
      containers:
      - name: runtime
        image: ghcr.io/example/runtime:1.0
        ports:
        - containerPort: 8888
        resources:
          requests:
            cpu: 250m
            memory: 512Mi
        volumeMounts:
        - name: workspace
          mountPath: /workspace
  volumeClaimTemplates:
  - metadata:
      name: workspace
      labels:
        tier: scratch
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 10Gi
status:
  serviceFQDN: dev-box.agents.svc.cluster.local
  service: dev-box
  selector: agents.x-k8s.io/sandbox-name-hash=0a1b2c3d
  podIPs: [10.0.0.7, "fd00::7"]
  nodeName: node-1
  conditions:
  - type: Ready
    status: "False"
    reason: SandboxSuspended
    message: the sandbox is suspended
    lastTransitionTime: "2030-01-01T00:00:00Z"
    observedGeneration: 2
"#,
    );
    let spec = &sb.spec;
    assert_eq!(spec.operating_mode, OperatingMode::Suspended);
    assert_eq!(spec.shutdown_policy, ShutdownPolicy::Delete);
    assert_eq!(spec.service, Some(true));
    assert_eq!(
        spec.shutdown_time.as_ref().unwrap().0.to_string(),
        "2030-01-02T03:04:05Z"
    );
    assert_eq!(spec.pod_template.metadata.labels["app"], "dev-box");
    assert_eq!(
        spec.pod_template.metadata.annotations["example.com/owner"],
        "team-a"
    );
    assert_eq!(
        spec.pod_template.spec.runtime_class_name.as_deref(),
        Some("gvisor")
    );
    let vct = &spec.volume_claim_templates[0];
    assert_eq!(vct.metadata.name, "workspace");
    assert_eq!(vct.metadata.labels["tier"], "scratch");
    assert_eq!(
        vct.spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    let status = sb.status.as_ref().unwrap();
    assert_eq!(status.service_fqdn, "dev-box.agents.svc.cluster.local");
    assert_eq!(status.service, "dev-box");
    assert_eq!(status.pod_ips, ["10.0.0.7", "fd00::7"]);
    assert_eq!(status.node_name, "node-1");
    let ready = &status.conditions[0];
    assert_eq!(ready.type_, conditions::types::READY);
    assert_eq!(ready.reason, conditions::sandbox::SANDBOX_SUSPENDED);
    assert_eq!(ready.observed_generation, Some(2));

    let json = round_trip(&sb);
    assert_eq!(json["spec"]["shutdownTime"], "2030-01-02T03:04:05Z");
    assert_eq!(
        json["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "workspace"
    );
    assert_eq!(
        json["status"]["serviceFQDN"],
        "dev-box.agents.svc.cluster.local"
    );
    assert_eq!(json["status"]["podIPs"], json!(["10.0.0.7", "fd00::7"]));
    assert_eq!(json["status"]["nodeName"], "node-1");
}

const TEMPLATE: &str = r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxTemplate
metadata:
  name: python-runtime
spec:
  podTemplate:
    metadata:
      labels:
        app: python-runtime
    spec:
      containers:
      - name: runtime
        image: python:3.12-slim
        ports:
        - containerPort: 8888
          protocol: TCP
        readinessProbe:
          httpGet:
            path: /
            port: 8888
          periodSeconds: 1
"#;

#[test]
fn a_template_takes_upstream_defaults() {
    let t: SandboxTemplate = read(TEMPLATE);
    let spec = &t.spec;
    assert_eq!(
        spec.network_policy_management,
        NetworkPolicyManagement::Managed
    );
    assert_eq!(
        spec.env_vars_injection_policy,
        EnvVarsInjectionPolicy::Disallowed
    );
    assert_eq!(
        spec.volume_claim_templates_policy,
        VolumeClaimTemplatesPolicy::Disallowed
    );
    assert_eq!(spec.network_policy, None);
    assert_eq!(spec.service, None);
    let json = round_trip(&t);
    assert_eq!(json["kind"], "SandboxTemplate");
    assert_eq!(json["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");
    assert_eq!(json["spec"]["networkPolicyManagement"], "Managed");
    assert_eq!(json["spec"]["envVarsInjectionPolicy"], "Disallowed");
    assert_eq!(json["spec"]["volumeClaimTemplatesPolicy"], "Disallowed");
    assert_eq!(
        json["spec"]["podTemplate"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        8888
    );
    assert!(json.get("status").is_none());
}

#[test]
fn a_template_with_its_own_network_policy_and_policies() {
    let t: SandboxTemplate = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxTemplate
metadata:
  name: locked-down
spec:
  service: false
  networkPolicyManagement: Unmanaged
  envVarsInjectionPolicy: Overrides
  volumeClaimTemplatesPolicy: Allowed
  networkPolicy:
    ingress:
    - from:
      - podSelector:
          matchLabels:
            app: sandbox-router
      ports:
      - protocol: TCP
        port: 8888
    egress: []
  podTemplate:
    spec:
      containers:
      - name: runtime
        image: busybox
"#,
    );
    let spec = &t.spec;
    assert_eq!(spec.service, Some(false));
    assert_eq!(
        spec.network_policy_management,
        NetworkPolicyManagement::Unmanaged
    );
    assert_eq!(
        spec.env_vars_injection_policy,
        EnvVarsInjectionPolicy::Overrides
    );
    assert_eq!(
        spec.volume_claim_templates_policy,
        VolumeClaimTemplatesPolicy::Allowed
    );
    let np = spec.network_policy.as_ref().unwrap();
    assert!(np.egress.is_empty());
    let from = &np.ingress[0].from.as_ref().unwrap()[0];
    let selector = from.pod_selector.as_ref().unwrap();
    assert_eq!(
        selector.match_labels.as_ref().unwrap()["app"],
        "sandbox-router"
    );
    round_trip(&t);
}

#[test]
fn a_warm_pool_takes_upstream_defaults() {
    let p: SandboxWarmPool = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxWarmPool
metadata:
  name: python-pool
spec:
  sandboxTemplateRef:
    name: python-runtime
"#,
    );
    assert_eq!(p.spec.replicas, 1);
    assert_eq!(p.spec.sandbox_template_ref.name, "python-runtime");
    assert_eq!(p.spec.update_strategy, None);
    let json = round_trip(&p);
    assert_eq!(json["spec"]["replicas"], 1);

    let p: SandboxWarmPool = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxWarmPool
metadata:
  name: python-pool
spec:
  replicas: 0
  sandboxTemplateRef:
    name: python-runtime
  updateStrategy: {}
status:
  replicas: 3
  readyReplicas: 2
  selector: agents.x-k8s.io/warm-pool-sandbox=python-pool
  observedGeneration: 4
"#,
    );
    assert_eq!(p.spec.replicas, 0, "an explicit 0 is not the default");
    assert_eq!(
        p.spec.update_strategy.as_ref().unwrap().strategy_type,
        UpdateStrategyType::OnReplenish
    );
    let status = p.status.as_ref().unwrap();
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.observed_generation
        ),
        (3, 2, 4)
    );
    let json = round_trip(&p);
    assert_eq!(json["spec"]["replicas"], 0);
    assert_eq!(json["spec"]["updateStrategy"]["type"], "OnReplenish");
    assert_eq!(json["status"]["readyReplicas"], 2);
    assert_eq!(json["status"]["observedGeneration"], 4);

    let p: SandboxWarmPool = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxWarmPool
metadata:
  name: python-pool
spec:
  replicas: 5
  sandboxTemplateRef:
    name: python-runtime
  updateStrategy:
    type: Recreate
"#,
    );
    assert_eq!(p.spec.replicas, 5);
    assert_eq!(
        p.spec.update_strategy.unwrap().strategy_type,
        UpdateStrategyType::Recreate
    );
}

#[test]
fn a_claim_takes_upstream_defaults() {
    let c: SandboxClaim = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxClaim
metadata:
  name: my-claim
spec:
  warmPoolRef:
    name: python-pool
"#,
    );
    assert_eq!(c.spec.warm_pool_ref.name, "python-pool");
    assert_eq!(c.spec.lifecycle, None);
    assert!(c.spec.env.is_empty());
    assert!(c.spec.volume_claim_templates.is_empty());
    assert!(c.spec.additional_pod_metadata.is_empty());
    let json = round_trip(&c);
    assert_eq!(
        json["spec"],
        json!({"warmPoolRef": {"name": "python-pool"}})
    );

    // A lifecycle without a policy takes Retain.
    let c: SandboxClaim = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxClaim
metadata:
  name: my-claim
spec:
  warmPoolRef:
    name: python-pool
  lifecycle:
    ttlSecondsAfterFinished: 60
"#,
    );
    let lifecycle = c.spec.lifecycle.as_ref().unwrap();
    assert_eq!(lifecycle.shutdown_policy, ClaimShutdownPolicy::Retain);
    assert_eq!(lifecycle.ttl_seconds_after_finished, Some(60));
    assert_eq!(lifecycle.shutdown_time, None);
}

#[test]
fn a_full_claim_reads_every_field() {
    let c: SandboxClaim = read(
        r#"
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxClaim
metadata:
  name: task-42
  namespace: agents
spec:
  warmPoolRef:
    name: python-pool
  lifecycle:
    shutdownTime: "2030-06-01T12:00:00Z"
    ttlSecondsAfterFinished: 300
    shutdownPolicy: DeleteForeground
  additionalPodMetadata:
    labels:
      example.com/task: "42"
    annotations:
      example.com/requested-by: ci
  env:
  - name: TASK_ID
    value: "42"
  - name: MODE
    value: batch
    containerName: runtime
  volumeClaimTemplates:
  - metadata:
      name: scratch
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
status:
  sandbox:
    name: python-pool-x7k2p
    podIPs: [10.1.2.3]
  conditions:
  - type: Ready
    status: "True"
    reason: SandboxReady
    message: ""
    lastTransitionTime: "2030-06-01T11:00:00Z"
"#,
    );
    let spec = &c.spec;
    let lifecycle = spec.lifecycle.as_ref().unwrap();
    assert_eq!(
        lifecycle.shutdown_policy,
        ClaimShutdownPolicy::DeleteForeground
    );
    assert_eq!(lifecycle.ttl_seconds_after_finished, Some(300));
    assert_eq!(
        spec.additional_pod_metadata.labels["example.com/task"],
        "42"
    );
    assert_eq!(spec.env.len(), 2);
    assert_eq!(spec.env[0].container_name, "");
    assert_eq!(spec.env[1].container_name, "runtime");
    assert_eq!(spec.volume_claim_templates[0].metadata.name, "scratch");
    let status = c.status.as_ref().unwrap();
    assert_eq!(status.sandbox.name, "python-pool-x7k2p");
    assert_eq!(status.sandbox.pod_ips, ["10.1.2.3"]);
    let json = round_trip(&c);
    assert_eq!(
        json["spec"]["lifecycle"]["shutdownPolicy"],
        "DeleteForeground"
    );
    assert_eq!(json["spec"]["lifecycle"]["ttlSecondsAfterFinished"], 300);
    assert_eq!(json["spec"]["env"][1]["containerName"], "runtime");
    assert!(json["spec"]["env"][0].get("containerName").is_none());
    assert_eq!(json["status"]["sandbox"]["podIPs"], json!(["10.1.2.3"]));
}

#[test]
fn unknown_enum_values_are_refused_naming_the_allowed_ones() {
    let sandbox_with = |field: &str, value: &str| {
        format!(
            "apiVersion: agents.x-k8s.io/v1beta1\nkind: Sandbox\nmetadata:\n  name: s\nspec:\n  \
             {field}: {value}\n  podTemplate:\n    spec:\n      containers:\n      - name: c\n"
        )
    };
    let cases: Vec<(String, &str, &[&str])> = vec![
        (
            sandbox_with("shutdownPolicy", "Never"),
            "Never",
            &["Delete", "Retain"],
        ),
        (
            sandbox_with("operatingMode", "Paused"),
            "Paused",
            &["Running", "Suspended"],
        ),
        // Enum values are case-sensitive, as the CRD's enum is.
        (
            sandbox_with("operatingMode", "running"),
            "running",
            &["Running", "Suspended"],
        ),
    ];
    for (yaml, bad, allowed) in &cases {
        let err = read_err::<Sandbox>(yaml);
        assert!(err.contains(bad), "{err}");
        for a in *allowed {
            assert!(err.contains(a), "error does not name {a}: {err}");
        }
    }

    let err = read_err::<SandboxClaim>(
        "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxClaim\nmetadata:\n  \
         name: c\nspec:\n  warmPoolRef:\n    name: p\n  lifecycle:\n    shutdownPolicy: \
         Orphan\n",
    );
    for word in ["Orphan", "Delete", "DeleteForeground", "Retain"] {
        assert!(err.contains(word), "{word}: {err}");
    }

    let template_with = |field: &str, value: &str| {
        format!(
            "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxTemplate\nmetadata:\n  \
             name: t\nspec:\n  {field}: {value}\n  podTemplate:\n    spec:\n      containers:\n      \
             - name: c\n"
        )
    };
    for (field, allowed) in [
        ("networkPolicyManagement", &["Managed", "Unmanaged"][..]),
        (
            "envVarsInjectionPolicy",
            &["Allowed", "Overrides", "Disallowed"][..],
        ),
        (
            "volumeClaimTemplatesPolicy",
            &["Disallowed", "Allowed", "Overrides"][..],
        ),
    ] {
        let err = read_err::<SandboxTemplate>(&template_with(field, "Sometimes"));
        assert!(err.contains("Sometimes"), "{field}: {err}");
        for a in allowed {
            assert!(err.contains(a), "{field}: error does not name {a}: {err}");
        }
    }

    let err = read_err::<SandboxWarmPool>(
        "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxWarmPool\nmetadata:\n  \
         name: p\nspec:\n  sandboxTemplateRef:\n    name: t\n  updateStrategy:\n    type: \
         RollingUpdate\n",
    );
    for word in ["RollingUpdate", "Recreate", "OnReplenish"] {
        assert!(err.contains(word), "{word}: {err}");
    }
}

#[test]
fn required_fields_are_required() {
    let err = read_err::<SandboxClaim>(
        "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxClaim\nmetadata:\n  \
         name: c\nspec:\n  lifecycle:\n    shutdownPolicy: Delete\n",
    );
    assert!(err.contains("warmPoolRef"), "{err}");
    let err = read_err::<SandboxWarmPool>(
        "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxWarmPool\nmetadata:\n  \
         name: p\nspec:\n  replicas: 2\n",
    );
    assert!(err.contains("sandboxTemplateRef"), "{err}");
    let err = read_err::<Sandbox>(
        "apiVersion: agents.x-k8s.io/v1beta1\nkind: Sandbox\nmetadata:\n  name: s\nspec:\n  \
         operatingMode: Running\n",
    );
    assert!(err.contains("podTemplate"), "{err}");
}

#[test]
fn the_selector_the_controller_writes_is_the_name_hash_label() {
    // What upstream's controller puts in status.selector for a Sandbox named "my-sandbox".
    let sb: Sandbox = read(MINIMAL_SANDBOX);
    let name = sb.metadata.name.as_deref().unwrap();
    let selector = labels::sandbox_selector(name);
    assert_eq!(
        selector,
        format!(
            "agents.x-k8s.io/sandbox-name-hash={}",
            labels::name_hash(name)
        )
    );
    assert_eq!(labels::name_hash(name).len(), 8);
}
