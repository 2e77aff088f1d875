//! The `deploy/` tree installs what it says, safely: the Helm chart lints and renders for
//! several value sets; every built-in object it renders validates with the real
//! `kubernetes-validate`, every custom resource reads into warden-kube's CRD types; RBAC is
//! least privilege, warden's own pods meet the restricted Pod Security Standard, sandboxes get a
//! restricted namespace; the chart's `crds/` are `deploy/crds`; `deploy/manifests` is the chart
//! rendered with its defaults; `deploy/examples` are generated from the types and
//! `harden_pod_spec`; the Falco rules are well formed.
//!
//! Regenerate what is generated (the chart's CRDs, the plain manifests, the examples) with
//!   WARDEN_BLESS=1 cargo test -p warden-kube --test deploy

mod deploy_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use deploy_support::falco::{
    FALCO_PRIORITIES, falco_condition_problems, falco_field, falco_output_fields, falco_tokens,
};
use deploy_support::{Doc, Tools, bless, deploy_dir, docs_of, is_subset, subset_mismatch};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use warden_kube::crd::{
    self, ClaimLifecycle, ClaimShutdownPolicy, NetworkPolicyManagement, NetworkPolicySpec,
    PodMetadata, PodTemplate, SandboxClaim, SandboxClaimSpec, SandboxTemplate, SandboxTemplateRef,
    SandboxTemplateSpec, SandboxWarmPool, SandboxWarmPoolSpec, WarmPoolRef,
};
use warden_kube::harden::{
    WardenTemplateOptions, harden_pod_spec, network_policy, restricted_violations,
};

/// The release the plain manifests are rendered as, and the namespace they install into.
const RELEASE: &str = "warden";
const RELEASE_NAMESPACE: &str = "warden-system";
/// The chart's defaults that the examples share.
const SANDBOX_NAMESPACE: &str = "warden-sandboxes";
const WARDEN_IMAGE: &str = "ghcr.io/warden-sandbox/warden:0.1.0";
/// The examples' toolchain image: Python with the `warden` binary on PATH.
const PYTHON_IMAGE: &str = "registry.example.com/warden/python-runtime:3.12";
const ALLOW_DOMAINS: [&str; 2] = ["pypi.org", "files.pythonhosted.org"];

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/warden")
}

// ---------------------------------------------------------------------------------------------
// Examples: generated from the types and harden_pod_spec.

/// The options of the example templates: warden's image for the proxy, the Python package
/// index allowlisted, the router admitted from the release namespace.
fn example_options(runtime_class: Option<&str>) -> WardenTemplateOptions {
    let mut o = WardenTemplateOptions::new(WARDEN_IMAGE);
    o.allow_domains = ALLOW_DOMAINS.iter().map(|d| d.to_string()).collect();
    o.runtime_class = runtime_class.map(str::to_string);
    o.router_namespace = Some(RELEASE_NAMESPACE.into());
    o
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// What a template author writes: one container, the toolchain image, its resources.
fn author_spec(container: &str, image: &str, resources: ResourceRequirements) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: container.into(),
            image: Some(image.into()),
            resources: Some(resources),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}

/// A warden SandboxTemplate: the author's spec hardened, and the rules of warden's
/// NetworkPolicy for the template controller to keep.
fn hardened_template(
    name: &str,
    namespace: &str,
    spec: PodSpec,
    opts: &WardenTemplateOptions,
) -> SandboxTemplate {
    let pod = harden_pod_spec(spec, opts).unwrap_or_else(|e| panic!("{name}: refused:\n{e}"));
    assert_eq!(restricted_violations(&pod), Vec::<String>::new(), "{name}");
    let policy = network_policy(name, namespace, opts)
        .spec
        .expect("warden's NetworkPolicy has a spec");
    let mut t = SandboxTemplate::new(
        name,
        SandboxTemplateSpec {
            pod_template: PodTemplate {
                metadata: PodMetadata {
                    labels: BTreeMap::from([("app.kubernetes.io/name".into(), name.into())]),
                    annotations: BTreeMap::new(),
                },
                spec: pod,
            },
            volume_claim_templates: Vec::new(),
            service: None,
            network_policy: Some(NetworkPolicySpec {
                ingress: policy.ingress.unwrap_or_default(),
                egress: policy.egress.unwrap_or_default(),
            }),
            network_policy_management: NetworkPolicyManagement::Managed,
            env_vars_injection_policy: Default::default(),
            volume_claim_templates_policy: Default::default(),
        },
    );
    t.metadata.namespace = Some(namespace.into());
    t
}

fn warm_pool(name: &str, namespace: &str, template: &str, replicas: i32) -> SandboxWarmPool {
    let mut p = SandboxWarmPool::new(
        name,
        SandboxWarmPoolSpec {
            replicas,
            sandbox_template_ref: SandboxTemplateRef {
                name: template.into(),
            },
            update_strategy: None,
        },
    );
    p.metadata.namespace = Some(namespace.into());
    p
}

/// One generated example: its file under `deploy/examples/` and its YAML.
struct Example {
    file: &'static str,
    yaml: String,
}

fn example_yaml<T: serde::Serialize>(what: &str, object: &T) -> String {
    let body = serde_saphyr::to_string(object).expect("an example serializes");
    // `what` as comment lines of at most 96 columns.
    let mut header = String::new();
    let mut line = String::from("#");
    for word in what.split_whitespace() {
        if line.len() + 1 + word.len() > 96 {
            header += &line;
            header.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    format!(
        "{header}{line}\n# Generated from warden-kube's types by crates/warden-kube/tests/deploy.rs; \
         regenerate with\n#   WARDEN_BLESS=1 cargo test -p warden-kube --test deploy\n{body}"
    )
}

fn python_template() -> SandboxTemplate {
    hardened_template(
        "python-sandbox",
        SANDBOX_NAMESPACE,
        author_spec("python", PYTHON_IMAGE, resources("250m", "256Mi", "2Gi")),
        &example_options(None),
    )
}

fn python_gvisor_template() -> SandboxTemplate {
    hardened_template(
        "python-sandbox-gvisor",
        SANDBOX_NAMESPACE,
        author_spec("python", PYTHON_IMAGE, resources("250m", "256Mi", "2Gi")),
        &example_options(Some("gvisor")),
    )
}

fn python_warm_pool() -> SandboxWarmPool {
    warm_pool("python-pool", SANDBOX_NAMESPACE, "python-sandbox", 2)
}

fn python_claim() -> SandboxClaim {
    let mut c = SandboxClaim::new(
        "agent-task-1",
        SandboxClaimSpec {
            warm_pool_ref: WarmPoolRef {
                name: "python-pool".into(),
            },
            lifecycle: Some(ClaimLifecycle {
                shutdown_time: None,
                ttl_seconds_after_finished: Some(600),
                shutdown_policy: ClaimShutdownPolicy::Delete,
            }),
            additional_pod_metadata: PodMetadata::default(),
            env: Vec::new(),
            volume_claim_templates: Vec::new(),
        },
    );
    c.metadata.namespace = Some(SANDBOX_NAMESPACE.into());
    c
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            file: "python-template.yaml",
            yaml: example_yaml(
                "A hardened SandboxTemplate: Python with warden sandboxd as the runtime \
                 (8888/8080/9090), the warden proxy sidecar admitting only pypi.org and \
                 files.pythonhosted.org, restricted Pod Security, and its NetworkPolicy rules.",
                &python_template(),
            ),
        },
        Example {
            file: "python-template-gvisor.yaml",
            yaml: example_yaml(
                "The same template under gVisor (RuntimeClass gvisor, handler runsc). Known \
                 gap: gVisor has no Landlock, and `warden sandboxd --jail pod` refuses to start \
                 without it, so pods of this template do not become ready yet (see \
                 deploy/README.md).",
                &python_gvisor_template(),
            ),
        },
        Example {
            file: "python-warm-pool.yaml",
            yaml: example_yaml(
                "Two ready sandboxes of python-sandbox, waiting for claims.",
                &python_warm_pool(),
            ),
        },
        Example {
            file: "sandbox-claim.yaml",
            yaml: example_yaml(
                "A claim for a sandbox from python-pool, deleted 10 minutes after it finishes.",
                &python_claim(),
            ),
        },
    ]
}

fn examples_dir() -> PathBuf {
    deploy_dir().join("examples")
}

#[test]
fn committed_examples_are_current() {
    let dir = examples_dir();
    let examples = examples();
    if bless() {
        std::fs::create_dir_all(&dir).unwrap();
        for e in &examples {
            std::fs::write(dir.join(e.file), &e.yaml).unwrap();
        }
    }
    let mut stale = Vec::new();
    for e in &examples {
        if std::fs::read_to_string(dir.join(e.file)).unwrap_or_default() != e.yaml {
            stale.push(e.file.to_string());
        }
    }
    let expected: BTreeSet<&str> = examples.iter().map(|e| e.file).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected.contains(name.as_str()) {
            stale.push(format!("{name} (not generated)"));
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/examples differs from what the types generate: {stale:?}; regenerate with\n  \
         WARDEN_BLESS=1 cargo test -p warden-kube --test deploy\nand commit the result"
    );
}

#[test]
fn committed_examples_read_back_as_the_crd_types() {
    let dir = examples_dir();
    let read = |file: &str| -> Doc {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut docs = docs_of(file, &text);
        assert_eq!(docs.len(), 1, "{file} holds one object");
        docs.remove(0)
    };
    let template: SandboxTemplate = read("python-template.yaml").parse();
    assert_eq!(template, python_template());
    let gvisor: SandboxTemplate = read("python-template-gvisor.yaml").parse();
    assert_eq!(gvisor, python_gvisor_template());
    assert_eq!(
        gvisor.spec.pod_template.spec.runtime_class_name.as_deref(),
        Some("gvisor")
    );
    let pool: SandboxWarmPool = read("python-warm-pool.yaml").parse();
    assert_eq!(pool, python_warm_pool());
    assert_eq!(
        pool.spec.sandbox_template_ref.name,
        template.metadata.name.clone().unwrap()
    );
    let claim: SandboxClaim = read("sandbox-claim.yaml").parse();
    assert_eq!(claim, python_claim());
    assert_eq!(
        claim.spec.warm_pool_ref.name,
        pool.metadata.name.clone().unwrap()
    );
}

/// The examples' pods and NetworkPolicies, as the objects the controllers make from them,
/// validate with kubernetes-validate: a check of the embedded PodSpec and rules that the
/// CRD types alone (which do not reject unknown fields) cannot make.
#[test]
fn example_pods_and_network_policies_validate() {
    let tools = Tools::get();
    let mut texts = Vec::new();
    for template in [python_template(), python_gvisor_template()] {
        let name = template.metadata.name.clone().unwrap();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{name}-pod")),
                namespace: template.metadata.namespace.clone(),
                labels: Some(template.spec.pod_template.metadata.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(template.spec.pod_template.spec.clone()),
            status: None,
        };
        texts.push(serde_saphyr::to_string(&pod).unwrap());
        let rules = template.spec.network_policy.clone().unwrap();
        let mut policy = network_policy(&name, SANDBOX_NAMESPACE, &example_options(None));
        let spec = policy.spec.as_mut().unwrap();
        spec.ingress = Some(rules.ingress);
        spec.egress = Some(rules.egress);
        texts.push(serde_saphyr::to_string(&policy).unwrap());
    }
    let docs: Vec<Doc> = texts
        .iter()
        .flat_map(|t| docs_of("deploy/examples", t))
        .collect();
    tools.validate("deploy/examples", &docs.iter().collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// The chart: value sets, rendering, validation.

/// A set of values the chart is rendered with, as a values file.
struct ValueSet {
    name: &'static str,
    values: &'static str,
}

const DEFAULTS: ValueSet = ValueSet {
    name: "defaults",
    values: "",
};

const ROUTER_AUTH: ValueSet = ValueSet {
    name: "router auth with tokens from values",
    values: "router:\n  auth:\n    enabled: true\n    tokens: [token-one, token-two]\n",
};

const ROUTER_AUTH_SECRET: ValueSet = ValueSet {
    name: "router auth with an existing Secret",
    values: "router:\n  auth:\n    enabled: true\n    existingSecret: router-tokens\n    \
             secretKey: tokens.txt\n",
};

const EVERYTHING: ValueSet = ValueSet {
    name: "runtime classes, examples, PDBs, NetworkPolicies, a digest",
    values: "\
image:
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
runtimeClasses:
  gvisor:
    enabled: true
  kata:
    enabled: true
    overhead:
      podFixed:
        cpu: 250m
        memory: 160Mi
examples:
  enabled: true
controller:
  replicas: 2
  podDisruptionBudget:
    enabled: true
router:
  podDisruptionBudget:
    enabled: true
networkPolicy:
  enabled: true
  metricsFrom:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
  routerClientsFrom:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: agents
",
};

const WATCHED: ValueSet = ValueSet {
    name: "a watched-namespace list",
    values: "controller:\n  watchNamespaces: [warden-sandboxes, team-a]\n\
             router:\n  watchNamespace: warden-sandboxes\n",
};

const VALUE_SETS: [&ValueSet; 5] = [
    &DEFAULTS,
    &ROUTER_AUTH,
    &ROUTER_AUTH_SECRET,
    &EVERYTHING,
    &WATCHED,
];

/// The chart rendered as release `warden` in `warden-system`, split into objects.
fn render(tools: &Tools, set: &ValueSet) -> Vec<Doc> {
    let yaml = tools.template(&chart_dir(), RELEASE, RELEASE_NAMESPACE, set.values);
    docs_of(set.name, &yaml)
}

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

fn one<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == kind && d.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name}: {} rendered", found.len());
    found[0]
}

const CLUSTER_SCOPED: [&str; 4] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "RuntimeClass",
];

#[test]
fn chart_lints_for_every_value_set() {
    let tools = Tools::get();
    for set in VALUE_SETS {
        tools.lint(&chart_dir(), RELEASE_NAMESPACE, set.values);
    }
}

#[test]
fn every_rendered_object_validates() {
    let tools = Tools::get();
    for set in VALUE_SETS {
        let docs = render(&tools, set);
        assert!(!docs.is_empty(), "{}", set.name);
        let mut seen = BTreeSet::new();
        for d in &docs {
            assert!(
                seen.insert((
                    d.kind().to_string(),
                    d.namespace().to_string(),
                    d.name().to_string()
                )),
                "{}: {} {} is rendered twice",
                set.name,
                d.kind(),
                d.name()
            );
            // Every namespaced object names its namespace, so the plain manifests apply as
            // they are.
            if CLUSTER_SCOPED.contains(&d.kind()) {
                assert_eq!(d.namespace(), "", "{}: {} {}", set.name, d.kind(), d.name());
            } else {
                assert_ne!(d.namespace(), "", "{}: {} {}", set.name, d.kind(), d.name());
            }
        }
        let builtin: Vec<&Doc> = docs.iter().filter(|d| d.is_builtin()).collect();
        tools.validate(set.name, &builtin);
        // Custom resources: the validator knows no schema for them; warden-kube's types do.
        for d in docs.iter().filter(|d| !d.is_builtin()) {
            match d.kind() {
                "SandboxTemplate" => {
                    let t: SandboxTemplate = d.parse();
                    assert_eq!(
                        restricted_violations(&t.spec.pod_template.spec),
                        Vec::<String>::new()
                    );
                }
                "SandboxWarmPool" => {
                    d.parse::<SandboxWarmPool>();
                }
                other => panic!("{}: unexpected custom resource {other}", set.name),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Security properties of what the chart renders.

/// What RBAC rules grant, as `(apiGroup, resource, resourceName) -> verbs`; the name is empty
/// for a rule on every object of the resource.
type Grants = BTreeMap<(String, String, String), BTreeSet<String>>;

fn grants(rules: &[PolicyRule]) -> Grants {
    let mut out = Grants::new();
    for r in rules {
        assert!(r.non_resource_urls.is_none(), "{r:?}");
        let names = match &r.resource_names {
            Some(names) => names.clone(),
            None => vec![String::new()],
        };
        for group in r.api_groups.iter().flatten() {
            for resource in r.resources.iter().flatten() {
                for name in &names {
                    out.entry((group.clone(), resource.clone(), name.clone()))
                        .or_default()
                        .extend(r.verbs.iter().cloned());
                }
            }
        }
    }
    out
}

/// Rows of `(apiGroup, resources, verbs)` on every object of the resources.
fn table(rows: &[(&str, &[&str], &[&str])]) -> Grants {
    let mut out = Grants::new();
    for (group, resources, verbs) in rows {
        for resource in *resources {
            out.entry((group.to_string(), resource.to_string(), String::new()))
                .or_default()
                .extend(verbs.iter().map(|v| v.to_string()));
        }
    }
    out
}

const READ: &[&str] = &["get", "list", "watch"];
const CRUD: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const STATUS: &[&str] = &["get", "update", "patch"];

/// Everything the controller may do, and nothing more.
fn controller_grants() -> Grants {
    table(&[
        ("agents.x-k8s.io", &["sandboxes"], CRUD),
        ("agents.x-k8s.io", &["sandboxes/status"], STATUS),
        ("agents.x-k8s.io", &["sandboxes/finalizers"], &["update"]),
        ("extensions.agents.x-k8s.io", &["sandboxtemplates"], READ),
        (
            "extensions.agents.x-k8s.io",
            &["sandboxclaims"],
            &["get", "list", "watch", "update", "patch", "delete"],
        ),
        (
            "extensions.agents.x-k8s.io",
            &["sandboxclaims/status"],
            STATUS,
        ),
        (
            "extensions.agents.x-k8s.io",
            &["sandboxwarmpools"],
            &["get", "list", "watch", "update", "patch"],
        ),
        (
            "extensions.agents.x-k8s.io",
            &["sandboxwarmpools/status", "sandboxwarmpools/scale"],
            STATUS,
        ),
        (
            "extensions.agents.x-k8s.io",
            &[
                "sandboxtemplates/finalizers",
                "sandboxclaims/finalizers",
                "sandboxwarmpools/finalizers",
            ],
            &["update"],
        ),
        ("", &["pods", "services", "persistentvolumeclaims"], CRUD),
        ("networking.k8s.io", &["networkpolicies"], CRUD),
        ("", &["events"], &["create", "patch"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
    ])
}

fn rules_of(d: &Doc) -> Vec<PolicyRule> {
    match d.kind() {
        "ClusterRole" => d.parse::<ClusterRole>().rules.unwrap_or_default(),
        "Role" => d.parse::<Role>().rules.unwrap_or_default(),
        other => panic!("{other} has no rules"),
    }
}

#[test]
fn rbac_is_least_privilege() {
    let tools = Tools::get();
    for set in VALUE_SETS {
        let docs = render(&tools, set);
        let roles: Vec<&Doc> = docs
            .iter()
            .filter(|d| d.kind() == "ClusterRole" || d.kind() == "Role")
            .collect();
        for role in &roles {
            for rule in rules_of(role) {
                assert!(
                    rule.resource_names.is_none()
                        || rule.resources == Some(vec!["leases".to_string()]),
                    "{}: {} {}: resourceNames outside the Lease rule",
                    set.name,
                    role.kind(),
                    role.name()
                );
                let all = rule
                    .api_groups
                    .iter()
                    .flatten()
                    .chain(rule.resources.iter().flatten())
                    .chain(rule.verbs.iter());
                for word in all {
                    assert!(
                        !word.contains('*'),
                        "{}: {} {} grants `{word}`",
                        set.name,
                        role.kind(),
                        role.name()
                    );
                }
                for resource in rule.resources.iter().flatten() {
                    assert!(
                        !["secrets", "configmaps", "serviceaccounts/token", "nodes"]
                            .contains(&resource.as_str()),
                        "{}: {} {} grants {resource}",
                        set.name,
                        role.kind(),
                        role.name()
                    );
                    assert!(
                        resource != "leases"
                            || (role.kind() == "Role" && role.namespace() == RELEASE_NAMESPACE),
                        "{}: leases are granted by {} {} in `{}`; only a Role in the release \
                         namespace may",
                        set.name,
                        role.kind(),
                        role.name(),
                        role.namespace()
                    );
                }
            }
        }

        // The controller: exactly its table, cluster-wide or in each watched namespace.
        let watched: Vec<&str> = if set.name == WATCHED.name {
            vec!["warden-sandboxes", "team-a"]
        } else {
            vec![]
        };
        let controller = format!("{RELEASE}-controller");
        if watched.is_empty() {
            let role = one(&docs, "ClusterRole", &controller);
            assert_eq!(grants(&rules_of(role)), controller_grants(), "{}", set.name);
            let binding: ClusterRoleBinding = one(&docs, "ClusterRoleBinding", &controller).parse();
            assert_eq!(binding.role_ref.name, controller);
            let subject = &binding.subjects.unwrap()[0];
            assert_eq!(subject.namespace.as_deref(), Some(RELEASE_NAMESPACE));
            assert!(
                of_kind(&docs, "Role")
                    .iter()
                    .all(|r| r.name() != controller)
            );
        } else {
            assert!(
                of_kind(&docs, "ClusterRole")
                    .iter()
                    .all(|r| r.name() != controller),
                "{}: a watched-namespace list needs no ClusterRole for the controller",
                set.name
            );
            for ns in &watched {
                let role = of_kind(&docs, "Role")
                    .into_iter()
                    .find(|r| r.name() == controller && r.namespace() == *ns)
                    .unwrap_or_else(|| panic!("no controller Role in {ns}"));
                assert_eq!(grants(&rules_of(role)), controller_grants(), "{ns}");
                let binding = of_kind(&docs, "RoleBinding")
                    .into_iter()
                    .find(|r| r.name() == controller && r.namespace() == *ns)
                    .unwrap_or_else(|| panic!("no controller RoleBinding in {ns}"));
                let binding: RoleBinding = binding.parse();
                assert_eq!(binding.role_ref.kind, "Role");
                let subject = &binding.subjects.unwrap()[0];
                assert_eq!(subject.namespace.as_deref(), Some(RELEASE_NAMESPACE));
            }
        }

        // Its Lease, in the release namespace: create (which RBAC cannot limit by name), and
        // get, update and patch of its own Lease only. Nothing else there.
        let lease = one(&docs, "Role", &format!("{controller}-leader-election"));
        assert_eq!(lease.namespace(), RELEASE_NAMESPACE);
        let mut want = table(&[("coordination.k8s.io", &["leases"], &["create"])]);
        want.insert(
            (
                "coordination.k8s.io".into(),
                "leases".into(),
                "warden-controller".into(),
            ),
            ["get", "update", "patch"].map(String::from).into(),
        );
        assert_eq!(grants(&rules_of(lease)), want);

        // The router reads pods, everywhere or in the one namespace it watches; the client
        // role claims sandboxes and reads them.
        let router_name = format!("{RELEASE}-router");
        let router = if watched.is_empty() {
            one(&docs, "ClusterRole", &router_name)
        } else {
            let role = one(&docs, "Role", &router_name);
            assert_eq!(role.namespace(), "warden-sandboxes");
            role
        };
        assert_eq!(grants(&rules_of(router)), table(&[("", &["pods"], READ)]));
        let client = one(&docs, "ClusterRole", &format!("{RELEASE}-sandbox-client"));
        assert_eq!(
            grants(&rules_of(client)),
            table(&[
                (
                    "extensions.agents.x-k8s.io",
                    &["sandboxclaims"],
                    &["create", "delete", "get", "list", "watch"]
                ),
                ("agents.x-k8s.io", &["sandboxes"], READ),
            ])
        );
        assert_eq!(
            roles.len(),
            if watched.is_empty() {
                4
            } else {
                3 + watched.len()
            },
            "{}: unexpected roles: {:?}",
            set.name,
            roles
                .iter()
                .map(|r| format!("{} {}/{}", r.kind(), r.namespace(), r.name()))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn sandbox_namespace_enforces_restricted_pod_security() {
    let tools = Tools::get();
    for set in VALUE_SETS {
        let docs = render(&tools, set);
        let ns: Namespace = one(&docs, "Namespace", SANDBOX_NAMESPACE).parse();
        let labels = ns.metadata.labels.unwrap();
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                labels
                    .get(&format!("pod-security.kubernetes.io/{mode}"))
                    .map(String::as_str),
                Some("restricted"),
                "{}: {mode}",
                set.name
            );
        }
        let annotations = ns.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep")
        );
    }
}

/// The image the chart's values name.
fn chart_image(set: &ValueSet) -> String {
    if set.name == EVERYTHING.name {
        "ghcr.io/warden-sandbox/warden@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()
    } else {
        WARDEN_IMAGE.into()
    }
}

fn args(c: &Container) -> Vec<&str> {
    c.args.iter().flatten().map(String::as_str).collect()
}

#[test]
fn warden_deployments_run_restricted() {
    let tools = Tools::get();
    for set in VALUE_SETS {
        let docs = render(&tools, set);
        let deployments = of_kind(&docs, "Deployment");
        assert_eq!(deployments.len(), 2, "{}", set.name);
        for d in deployments {
            let deployment: Deployment = d.parse();
            let template = deployment.spec.as_ref().unwrap().template.clone();
            let spec = template.spec.unwrap();
            let what = format!("{}: Deployment {}", set.name, d.name());
            assert_eq!(restricted_violations(&spec), Vec::<String>::new(), "{what}");
            let pod_sc = spec.security_context.clone().unwrap();
            assert_eq!(pod_sc.run_as_non_root, Some(true), "{what}");
            assert_eq!(pod_sc.run_as_user, Some(65532), "{what}");
            assert_eq!(pod_sc.run_as_group, Some(65532), "{what}");
            assert_eq!(
                pod_sc.seccomp_profile.map(|s| s.type_).as_deref(),
                Some("RuntimeDefault"),
                "{what}"
            );
            // Both talk to the API server (the controller reconciles, the router watches
            // pods), so both say so explicitly; their ServiceAccounts mount nothing by default.
            assert_eq!(spec.automount_service_account_token, Some(true), "{what}");
            assert_eq!(spec.enable_service_links, Some(false), "{what}");
            let sa = spec.service_account_name.clone().unwrap();
            let account = one(&docs, "ServiceAccount", &sa);
            assert_eq!(
                account.value.pointer("/automountServiceAccountToken"),
                Some(&Value::Bool(false)),
                "{what}"
            );
            assert!(
                spec.init_containers.is_none()
                    && spec.volumes.iter().flatten().all(|v| v.secret.is_some()),
                "{what}"
            );
            assert_eq!(spec.containers.len(), 1, "{what}");
            let c = &spec.containers[0];
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true), "{what}");
            assert_eq!(sc.run_as_user, Some(65532), "{what}");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
            assert_eq!(sc.privileged, Some(false), "{what}");
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()]),
                "{what}"
            );
            assert_eq!(
                sc.seccomp_profile.map(|s| s.type_).as_deref(),
                Some("RuntimeDefault"),
                "{what}"
            );
            assert_eq!(
                c.image.as_deref(),
                Some(chart_image(set).as_str()),
                "{what}"
            );
            assert_eq!(c.command, Some(vec!["warden".to_string()]), "{what}");
            let resources = c.resources.clone().unwrap();
            assert!(
                resources.requests.is_some() && resources.limits.is_some(),
                "{what}"
            );
            assert!(
                c.liveness_probe.is_some() && c.readiness_probe.is_some(),
                "{what}"
            );
        }
    }
}

#[test]
fn controller_and_router_run_the_agreed_commands() {
    let tools = Tools::get();
    for set in VALUE_SETS {
        let docs = render(&tools, set);
        let controller: Deployment = one(&docs, "Deployment", "warden-controller").parse();
        let pod = controller.spec.unwrap().template;
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let mut want = vec![
            "controller",
            "--metrics-addr",
            "0.0.0.0:9090",
            "--leader-elect",
            "--lease-namespace",
            "$(POD_NAMESPACE)",
            "--cluster-domain",
            "cluster.local",
        ];
        if set.name == WATCHED.name {
            want.extend(["--namespace", "warden-sandboxes", "--namespace", "team-a"]);
        }
        assert_eq!(args(c), want, "{}", set.name);
        let env = c.env.clone().unwrap();
        let ns = env.iter().find(|e| e.name == "POD_NAMESPACE").unwrap();
        assert_eq!(
            ns.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.namespace")
        );
        let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            let get = p.as_ref().unwrap().http_get.clone().unwrap();
            (get.path.unwrap(), get.port)
        };
        let metrics =
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into());
        assert_eq!(
            probe(&c.liveness_probe),
            ("/healthz".into(), metrics.clone())
        );
        // With leader election, standbys are ready (/healthz): a rolling update must not
        // wait for a pod that cannot take the Lease while the old one holds it.
        assert_eq!(probe(&c.readiness_probe), ("/healthz".into(), metrics));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9090);

        let router: Deployment = one(&docs, "Deployment", "warden-router").parse();
        let template = router.spec.unwrap().template;
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            labels.get("app").map(String::as_str),
            Some("sandbox-router"),
            "{}: the label sandbox NetworkPolicies admit",
            set.name
        );
        let spec = template.spec.unwrap();
        let c = &spec.containers[0];
        let auth = set.name == ROUTER_AUTH.name || set.name == ROUTER_AUTH_SECRET.name;
        let mut want = vec![
            "router",
            "--listen",
            "0.0.0.0:8080",
            "--cluster-domain",
            "cluster.local",
        ];
        if set.name == WATCHED.name {
            want.extend(["--namespace", "warden-sandboxes"]);
        }
        if auth {
            want.extend(["--token-file", "/etc/warden-router/tokens"]);
        }
        assert_eq!(args(c), want, "{}", set.name);
        let http = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into());
        assert_eq!(probe(&c.liveness_probe), ("/healthz".into(), http.clone()));
        assert_eq!(probe(&c.readiness_probe), ("/healthz".into(), http));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        if auth {
            let secret_name = if set.name == ROUTER_AUTH.name {
                let secret = one(&docs, "Secret", "warden-router-tokens");
                let tokens = secret.value.pointer("/stringData/tokens").unwrap();
                assert_eq!(tokens.as_str(), Some("token-one\ntoken-two\n"));
                "warden-router-tokens"
            } else {
                assert!(of_kind(&docs, "Secret").is_empty());
                "router-tokens"
            };
            let volume = &spec.volumes.as_ref().unwrap()[0];
            let source = volume.secret.as_ref().unwrap();
            assert_eq!(source.secret_name.as_deref(), Some(secret_name));
            let key = if set.name == ROUTER_AUTH.name {
                "tokens"
            } else {
                "tokens.txt"
            };
            let item = &source.items.as_ref().unwrap()[0];
            assert_eq!((item.key.as_str(), item.path.as_str()), (key, "tokens"));
            let mount = &c.volume_mounts.as_ref().unwrap()[0];
            assert_eq!(mount.mount_path, "/etc/warden-router");
            assert_eq!(mount.read_only, Some(true));
        } else {
            assert!(spec.volumes.is_none() && c.volume_mounts.is_none());
        }

        // The router's Service: the name and port the SDK uses, selecting the router's pods.
        let service: k8s_openapi::api::core::v1::Service =
            one(&docs, "Service", "sandbox-router-svc").parse();
        let service = service.spec.unwrap();
        let port = &service.ports.unwrap()[0];
        assert_eq!(port.port, 8080);
        assert!(is_subset(
            &serde_json::to_value(service.selector.unwrap()).unwrap(),
            &serde_json::to_value(&labels).unwrap()
        ));
    }
}

#[test]
fn optional_pieces_render_only_when_enabled() {
    let tools = Tools::get();
    let defaults = render(&tools, &DEFAULTS);
    for kind in [
        "RuntimeClass",
        "SandboxTemplate",
        "SandboxWarmPool",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Secret",
    ] {
        assert!(
            of_kind(&defaults, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    let all = render(&tools, &EVERYTHING);
    let gvisor: RuntimeClass = one(&all, "RuntimeClass", "gvisor").parse();
    assert_eq!(gvisor.handler, "runsc");
    let kata: RuntimeClass = one(&all, "RuntimeClass", "kata").parse();
    assert_eq!(kata.handler, "kata");
    assert!(kata.overhead.is_some());
    assert_eq!(of_kind(&all, "PodDisruptionBudget").len(), 2);
    for name in ["warden-controller", "warden-router"] {
        let policy: NetworkPolicy = one(&all, "NetworkPolicy", name).parse();
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
    }
    let pool: SandboxWarmPool = one(&all, "SandboxWarmPool", "python-pool").parse();
    assert_eq!(pool.spec.sandbox_template_ref.name, "python-sandbox");
    assert_eq!(pool.metadata.namespace.as_deref(), Some(SANDBOX_NAMESPACE));
}

/// The chart's example template is written out in Helm; it must be exactly what
/// `harden_pod_spec` and `network_policy` make of a one-container pod with the same values.
#[test]
fn chart_example_template_is_what_harden_pod_spec_makes() {
    let tools = Tools::get();
    let custom = ValueSet {
        name: "a customised example",
        values: "\
examples:
  enabled: true
  template:
    name: agent-box
    image: registry.example.com/tools:1
    allowDomains: [pypi.org, \"*.pythonhosted.org\", github.com]
    runtimeClassName: gvisor
    resources:
      requests:
        cpu: \"1\"
        memory: 1Gi
      limits:
        memory: 4Gi
  warmPool:
    name: agent-pool
    replicas: 5
",
    };
    /// One rendering of the example, and the author's spec and options it stands for.
    struct Case<'a> {
        set: &'a ValueSet,
        name: &'a str,
        sandbox_image: String,
        domains: &'a [&'a str],
        runtime_class: Option<&'a str>,
        resources: ResourceRequirements,
    }
    let cases = [
        Case {
            set: &EVERYTHING,
            name: "python-sandbox",
            sandbox_image: chart_image(&EVERYTHING),
            domains: &ALLOW_DOMAINS,
            runtime_class: None,
            resources: resources("250m", "256Mi", "2Gi"),
        },
        Case {
            set: &custom,
            name: "agent-box",
            sandbox_image: "registry.example.com/tools:1".into(),
            domains: &["pypi.org", "*.pythonhosted.org", "github.com"],
            runtime_class: Some("gvisor"),
            resources: resources("1", "1Gi", "4Gi"),
        },
    ];
    for case in cases {
        let Case {
            set,
            name,
            sandbox_image,
            domains,
            runtime_class,
            resources: res,
        } = case;
        let docs = render(&tools, set);
        let rendered: SandboxTemplate = one(&docs, "SandboxTemplate", name).parse();
        let mut opts = WardenTemplateOptions::new(chart_image(set));
        opts.allow_domains = domains.iter().map(|d| d.to_string()).collect();
        opts.runtime_class = runtime_class.map(str::to_string);
        opts.router_namespace = Some(RELEASE_NAMESPACE.into());
        let want = hardened_template(
            name,
            SANDBOX_NAMESPACE,
            author_spec("sandbox", &sandbox_image, res),
            &opts,
        );
        assert_eq!(rendered.metadata.namespace, want.metadata.namespace);
        let (got, expected) = (
            serde_json::to_value(&rendered.spec).unwrap(),
            serde_json::to_value(&want.spec).unwrap(),
        );
        if let Some(path) = subset_mismatch(&expected, &got, "spec")
            .or_else(|| subset_mismatch(&got, &expected, "spec"))
        {
            panic!(
                "{}: the chart's example template (templates/examples.yaml) differs from what \
                 harden_pod_spec makes, at {path}",
                set.name
            );
        }
        assert_eq!(rendered.spec, want.spec, "{}", set.name);
        // Hardening what the chart renders changes nothing: it is already warden's.
        let again = harden_pod_spec(rendered.spec.pod_template.spec.clone(), &opts).unwrap();
        assert_eq!(again, rendered.spec.pod_template.spec);
        let pool: SandboxWarmPool = of_kind(&docs, "SandboxWarmPool")[0].parse();
        assert_eq!(pool.spec.sandbox_template_ref.name, name);
    }
}

// ---------------------------------------------------------------------------------------------
// Generated copies: the chart's CRDs and the plain manifests.

#[test]
fn chart_crds_are_deploy_crds() {
    let chart_crds = chart_dir().join("crds");
    let manifests = crd::manifests();
    if bless() {
        std::fs::create_dir_all(&chart_crds).unwrap();
        for m in &manifests {
            std::fs::write(chart_crds.join(&m.file_name), &m.yaml).unwrap();
        }
    }
    let crds_dir = deploy_dir().join("crds");
    let mut stale = Vec::new();
    for m in &manifests {
        let committed = std::fs::read_to_string(crds_dir.join(&m.file_name)).unwrap();
        let copy = std::fs::read_to_string(chart_crds.join(&m.file_name)).unwrap_or_default();
        if copy != committed || copy != m.yaml {
            stale.push(m.file_name.clone());
        }
    }
    let expected: BTreeSet<String> = manifests.iter().map(|m| m.file_name.clone()).collect();
    for entry in std::fs::read_dir(&chart_crds).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            stale.push(format!("{name} (not a CRD of warden-kube)"));
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/helm/warden/crds differs from deploy/crds: {stale:?}; regenerate with\n  \
         WARDEN_BLESS=1 cargo test -p warden-kube --test deploy\nand commit the result"
    );
}

const PLAIN_MANIFESTS: &str = "manifests/warden.yaml";

fn plain_manifests(tools: &Tools) -> String {
    let header = format!(
        "# warden without Helm: the chart in deploy/helm/warden rendered with its default values,\n\
         # as release `{RELEASE}` in namespace `{RELEASE_NAMESPACE}` (see deploy/README.md). Install with\n\
         #   kubectl create namespace {RELEASE_NAMESPACE}\n\
         #   kubectl apply --server-side -f deploy/crds/ -f deploy/manifests/\n\
         # Generated by crates/warden-kube/tests/deploy.rs; regenerate with\n\
         #   WARDEN_BLESS=1 cargo test -p warden-kube --test deploy\n"
    );
    header + &tools.template(&chart_dir(), RELEASE, RELEASE_NAMESPACE, "")
}

#[test]
fn plain_manifests_are_the_rendered_chart() {
    let tools = Tools::get();
    let want = plain_manifests(&tools);
    let path = deploy_dir().join(PLAIN_MANIFESTS);
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == want,
        "deploy/{PLAIN_MANIFESTS} differs from the chart rendered with its defaults; regenerate \
         with\n  WARDEN_BLESS=1 cargo test -p warden-kube --test deploy\nand commit the result"
    );
    let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["warden.yaml"],
        "deploy/manifests holds only the rendering"
    );
    // The same objects as a rendering, whatever the text: nothing hand-edited in.
    let docs = docs_of(PLAIN_MANIFESTS, &committed);
    assert_eq!(docs.len(), render(&tools, &DEFAULTS).len());
}

// ---------------------------------------------------------------------------------------------
// Falco rules. Falco is not installable here (no Debian package), so the file is checked for
// structure: the keys each item needs, priorities, and that every name a condition or output
// uses is a field Falco has (listed in deploy_support/falco.rs), a macro or list defined
// earlier in the file, or a value.

fn falco_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_dir().join("falco/warden-rules.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("the Falco rules file is a YAML list")
}

#[test]
fn falco_rules_are_well_formed() {
    let items = falco_rules();
    let mut macros = BTreeSet::new();
    let mut lists = BTreeSet::new();
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for item in &items {
        let map = item.as_object().expect("every item is a mapping");
        let keys: BTreeSet<&str> = map.keys().map(String::as_str).collect();
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if keys.contains("list") {
            let name = text("list");
            assert_eq!(keys, BTreeSet::from(["list", "items"]), "list {name}");
            let items = map["items"].as_array().expect("items is a sequence");
            assert!(!items.is_empty(), "list {name} is empty");
            assert!(
                items.iter().all(|v| v.is_string() || v.is_number()),
                "list {name} holds scalars only"
            );
            assert!(lists.insert(name.clone()), "list {name} is defined twice");
        } else if keys.contains("macro") {
            let name = text("macro");
            assert_eq!(keys, BTreeSet::from(["macro", "condition"]), "macro {name}");
            for p in falco_condition_problems(&text("condition"), &macros, &lists) {
                problems.push(format!("macro {name}: {p}"));
            }
            assert!(macros.insert(name.clone()), "macro {name} is defined twice");
        } else if keys.contains("rule") {
            let name = text("rule");
            for key in ["rule", "desc", "condition", "output", "priority", "tags"] {
                assert!(keys.contains(key), "rule {name} has no {key}");
            }
            let allowed = [
                "rule",
                "desc",
                "condition",
                "output",
                "priority",
                "tags",
                "enabled",
                "source",
            ];
            for key in &keys {
                assert!(allowed.contains(key), "rule {name}: unknown key {key}");
            }
            for key in ["desc", "condition", "output"] {
                assert!(!text(key).trim().is_empty(), "rule {name}: empty {key}");
            }
            let priority = text("priority");
            assert!(
                FALCO_PRIORITIES.contains(&priority.to_uppercase().as_str()),
                "rule {name}: priority {priority} is not one of {FALCO_PRIORITIES:?}"
            );
            let tags: Vec<&str> = map["tags"]
                .as_array()
                .expect("tags is a sequence")
                .iter()
                .map(|t| t.as_str().expect("tags are strings"))
                .collect();
            assert!(tags.contains(&"warden"), "rule {name}: tag it `warden`");
            let condition = text("condition");
            for p in falco_condition_problems(&condition, &macros, &lists) {
                problems.push(format!("rule {name}: {p}"));
            }
            // Every rule is about sandbox pods, selected by the pod label.
            assert!(
                falco_tokens(&condition)
                    .iter()
                    .any(|t| t == "warden_sandbox_pod"),
                "rule {name} does not select sandbox pods (warden_sandbox_pod)"
            );
            for field in falco_output_fields(&text("output")) {
                if falco_field(&field) != Some(true) {
                    problems.push(format!("rule {name}: output field %{field} is unknown"));
                }
            }
            rules.push(name);
        } else {
            panic!("an item that is no rule, macro or list: {item}");
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/falco/warden-rules.yaml:\n{}",
        problems.join("\n")
    );
    let unique: BTreeSet<&String> = rules.iter().collect();
    assert_eq!(unique.len(), rules.len(), "rule names are unique");
    // Everything defined is used.
    let used: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i.get("condition").and_then(Value::as_str))
        .flat_map(falco_tokens)
        .collect();
    for name in macros.iter().chain(&lists) {
        assert!(used.contains(name), "{name} is defined but never used");
    }
}

#[test]
fn falco_rules_cover_the_sandbox_threats() {
    use warden_kube::crd::labels::SANDBOX_NAME_HASH;
    let items = falco_rules();
    let find = |key: &str, name: &str| -> Value {
        items
            .iter()
            .find(|i| i.get(key).and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no {key} {name}"))
            .clone()
    };
    let condition = |key: &str, name: &str| -> String {
        find(key, name)["condition"].as_str().unwrap().to_string()
    };
    let list = |name: &str| -> Vec<String> {
        find("list", name)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    // Sandbox pods are those carrying the Sandbox's name-hash label.
    assert_eq!(
        condition("macro", "warden_sandbox_pod"),
        format!("(k8s.pod.label[{SANDBOX_NAME_HASH}] exists)")
    );
    // The ports and names agree with what harden_pod_spec builds.
    let opts = WardenTemplateOptions::default();
    let ports = opts.sandboxd_ports;
    assert_eq!(
        list("warden_sandboxd_ports"),
        [ports.runtime, ports.http, ports.grpc].map(|p| p.to_string())
    );
    assert_eq!(list("warden_proxy_port"), [opts.proxy_port.to_string()]);
    assert_eq!(
        list("warden_proxy_listen_ports"),
        [opts.proxy_port, opts.proxy_admin_port].map(|p| p.to_string())
    );
    assert_eq!(
        condition("macro", "warden_proxy_container"),
        format!(
            "(container.name = {})",
            warden_kube::harden::PROXY_CONTAINER
        )
    );
    assert!(list("warden_shell_parents").contains(&"warden".to_string()));
    assert!(
        list("warden_service_account_dirs")
            .contains(&"/var/run/secrets/kubernetes.io/serviceaccount".to_string())
    );
    let mut private = list("warden_private_networks");
    private.sort();
    let mut excluded: Vec<String> = warden_kube::harden::WARDEN_EXCEPT_IPV4
        .iter()
        .chain(&warden_kube::harden::WARDEN_EXCEPT_IPV6)
        .map(|s| s.to_string())
        .collect();
    excluded.sort();
    assert_eq!(private, excluded);

    // One rule per threat, each on what it names.
    let rule = |name: &str| condition("rule", name);
    let shell = rule("Warden sandbox shell from unexpected parent");
    assert!(shell.contains("proc.name in (warden_shell_binaries)"));
    assert!(shell.contains("not proc.pname in (warden_shell_parents)"));
    let writes = rule("Warden sandbox writes below /usr or /etc");
    assert!(
        writes.contains("warden_open_write") && writes.contains("warden_path_under_usr_or_etc")
    );
    let egress = rule("Warden sandbox connects past its proxy");
    assert!(egress.contains("not warden_connect_to_proxy"));
    let proxy = rule("Warden proxy connects to a private address");
    assert!(proxy.contains("fd.snet in (warden_private_networks)"));
    let inbound = rule("Warden sandbox accepts a connection on an unexpected port");
    assert!(inbound.contains("not fd.sport in (warden_sandboxd_ports)"));
    let token = rule("Warden sandbox reads a service account token");
    assert!(token.contains("warden_path_is_service_account_token"));
    rule("Warden proxy sidecar runs a program");
}

#[test]
fn falco_checker_catches_mistakes() {
    let macros = BTreeSet::from(["warden_sandbox_pod".to_string()]);
    let lists = BTreeSet::from(["warden_ports".to_string()]);
    let check = |c: &str| falco_condition_problems(c, &macros, &lists);
    assert_eq!(
        check("warden_sandbox_pod and fd.sport in (warden_ports, 22) and not proc.name = sh"),
        Vec::<String>::new()
    );
    for bad in [
        "warden_sandbox_pod and spawned_process",
        "warden_sandbox_pod and proc.nmae = sh",
        "fd.sport in (warden_unknown_ports)",
        "fd.sport in ()",
        "proc.name =",
        "(proc.name = sh",
        "proc.name = sh)",
        "exists",
        "k8s.pod.label[] exists",
    ] {
        let caught = std::panic::catch_unwind(|| check(bad)).map_or(true, |p| !p.is_empty());
        assert!(caught, "not caught: {bad}");
    }
    assert_eq!(
        falco_output_fields("x (a=%proc.name b=%k8s.pod.label[x/y]) %fd.name."),
        ["proc.name", "k8s.pod.label[x/y]", "fd.name"]
    );
}

#[test]
fn without_leader_election_controllers_never_overlap() {
    let tools = Tools::get();
    let single = ValueSet {
        name: "no leader election",
        values: "controller:\n  leaderElect: false\n",
    };
    let docs = render(&tools, &single);
    let deployment: Deployment = one(&docs, "Deployment", "warden-controller").parse();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate")
    );
    let c = &spec.template.spec.unwrap().containers[0];
    assert!(!args(c).contains(&"--leader-elect"));
    let get = c.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(get.path.as_deref(), Some("/readyz"));
    assert!(
        of_kind(&docs, "Role").is_empty(),
        "no Lease permission without leader election"
    );
    // Two replicas without a leader would fight over every object: refused.
    let mut cmd = tools.helm();
    cmd.args(["template", RELEASE]).arg(chart_dir()).args([
        "--set",
        "controller.leaderElect=false,controller.replicas=2",
    ]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("controller.leaderElect"));
}
