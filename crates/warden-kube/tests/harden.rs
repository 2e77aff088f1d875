//! Hardened by default: warden's template pods meet the restricted Pod Security Standard, run
//! sandboxd with the proxy sidecar, refuse what cannot be made safe (naming the field), harden
//! once for all, and their manifests validate with the real `kubernetes-validate`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, EphemeralContainer, HTTPGetAction, HostPathVolumeSource, Lifecycle,
    LifecycleHandler, NFSVolumeSource, PersistentVolumeClaimVolumeSource, Pod, PodOS,
    PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SELinuxOptions, SeccompProfile, SecretEnvSource, SecretKeySelector, SecretVolumeSource,
    SecurityContext, ServiceAccountTokenProjection, Sysctl, TCPSocketAction, Volume, VolumeMount,
    VolumeProjection, WindowsSecurityContextOptions,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use warden_kube::harden::{
    self, CREDENTIAL_PLACEHOLDER, CredentialRoute, HardenError, PROXY_CONTAINER, PROXY_USER,
    SANDBOX_USER, WardenTemplateOptions, harden_pod_spec, network_policy, restricted_violations,
    upstream_default_network_policy,
};

const IMAGE: &str = "ghcr.io/warden-sandbox/warden:test";

fn secret(name: &str, key: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        optional: None,
    }
}

/// Options with an allowlist and the three built-in routes, one of them repointed.
fn opts() -> WardenTemplateOptions {
    let mut o = WardenTemplateOptions::new(IMAGE);
    o.allow_domains = vec!["pypi.org".into(), "*.PythonHosted.org.".into()];
    o.routes = vec![
        CredentialRoute {
            name: "anthropic".into(),
            upstream: None,
            secret_key_ref: secret("llm-keys", "anthropic"),
        },
        CredentialRoute {
            name: "openai".into(),
            upstream: Some("https://litellm.example.com/".into()),
            secret_key_ref: secret("llm-keys", "openai"),
        },
        CredentialRoute {
            name: "git".into(),
            upstream: None,
            secret_key_ref: secret("github-token", "token"),
        },
    ];
    o
}

fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Container::default()
    }
}

/// A template author's ordinary spec: a toolchain image, an init container, a helper.
fn author_spec() -> PodSpec {
    PodSpec {
        containers: vec![
            Container {
                env: Some(vec![EnvVar {
                    name: "PIP_INDEX_URL".into(),
                    value: Some("https://pypi.org/simple".into()),
                    value_from: None,
                }]),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([
                        ("memory".to_string(), Quantity("2Gi".into())),
                        ("cpu".to_string(), Quantity("2".into())),
                    ])),
                    ..ResourceRequirements::default()
                }),
                ..container("agent", "registry.example.com/python-warden:3.12")
            },
            container("redis", "redis:7"),
        ],
        init_containers: Some(vec![container("setup", "busybox:1.37")]),
        ..PodSpec::default()
    }
}

fn harden(spec: PodSpec) -> PodSpec {
    harden_pod_spec(spec, &opts()).unwrap_or_else(|e| panic!("refused:\n{e}"))
}

fn env_of(c: &Container) -> BTreeMap<String, EnvVar> {
    c.env
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.clone()))
        .collect()
}

fn value(c: &Container, name: &str) -> Option<String> {
    env_of(c).get(name).and_then(|v| v.value.clone())
}

fn proxy(spec: &PodSpec) -> &Container {
    let inits = spec.init_containers.as_ref().unwrap();
    assert_eq!(
        inits[0].name, PROXY_CONTAINER,
        "the proxy is the first init container"
    );
    &inits[0]
}

#[test]
fn an_empty_spec_becomes_a_complete_sandbox_pod() {
    let spec = harden(PodSpec::default());
    assert_eq!(restricted_violations(&spec), Vec::<String>::new());

    assert_eq!(spec.containers.len(), 1);
    let sandbox = &spec.containers[0];
    assert_eq!(sandbox.name, "sandbox");
    assert_eq!(sandbox.image.as_deref(), Some(IMAGE));
    assert_eq!(
        sandbox.command,
        Some(vec!["warden".to_string(), "sandboxd".to_string()])
    );
    let size = (10u64 << 30).to_string();
    assert_eq!(
        sandbox.args.clone().unwrap(),
        [
            "--listen",
            "0.0.0.0:8888",
            "--listen",
            "0.0.0.0:8080",
            "--listen",
            "0.0.0.0:9090",
            "--root",
            "/workspace",
            "--jail",
            "pod",
            "--egress-proxy",
            "127.0.0.1:3128",
            "--quota",
            size.as_str(),
        ]
    );
    let ports: Vec<(Option<String>, i32)> = sandbox
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("runtime".into()), 8888),
            (Some("http".into()), 8080),
            (Some("grpc".into()), 9090)
        ]
    );
    let probe = sandbox
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/v1/health"));
    assert_eq!(probe.port, IntOrString::Int(8080));
    assert_eq!(probe.host, None);
    let mounts: Vec<(&str, &str)> = sandbox
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(
        mounts,
        [("warden-workspace", "/workspace"), ("warden-tmp", "/tmp")]
    );
    let volumes: Vec<(&str, Option<&str>)> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            (
                v.name.as_str(),
                v.empty_dir
                    .as_ref()
                    .and_then(|d| d.size_limit.as_ref())
                    .map(|q| q.0.as_str()),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        [
            ("warden-workspace", Some("10Gi")),
            ("warden-tmp", Some("1Gi"))
        ]
    );
    let sc = sandbox.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(value(sandbox, "HOME").as_deref(), Some("/workspace"));

    let pod = spec.security_context.as_ref().unwrap();
    assert_eq!(pod.run_as_non_root, Some(true));
    assert_eq!(pod.run_as_user, Some(SANDBOX_USER));
    assert_eq!(pod.run_as_group, Some(SANDBOX_USER));
    assert_eq!(pod.fs_group, Some(SANDBOX_USER));
    assert_eq!(
        pod.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.runtime_class_name, None);
}

#[test]
fn the_proxy_sidecar_carries_the_allowlist_and_routes() {
    let spec = harden(PodSpec::default());
    let p = proxy(&spec);
    assert_eq!(p.image.as_deref(), Some(IMAGE));
    assert_eq!(
        p.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert_eq!(p.command, Some(vec!["warden".to_string()]));
    assert_eq!(
        p.args.clone().unwrap(),
        [
            "proxy",
            "--listen",
            "127.0.0.1:3128",
            "--admin-listen",
            "0.0.0.0:9901",
            "--sandbox-id",
            "$(POD_NAME)",
            "--allow-domain",
            "pypi.org",
            "--allow-domain",
            "*.pythonhosted.org",
            "--route",
            "anthropic",
            "--route",
            "openai=https://litellm.example.com",
            "--route",
            "git",
        ]
    );
    let env = env_of(p);
    let from_secret = |name: &str| {
        env[name]
            .value_from
            .as_ref()
            .and_then(|s| s.secret_key_ref.clone())
            .unwrap_or_else(|| panic!("{name} is not from a Secret"))
    };
    assert_eq!(
        from_secret("ANTHROPIC_API_KEY"),
        secret("llm-keys", "anthropic")
    );
    assert_eq!(from_secret("OPENAI_API_KEY"), secret("llm-keys", "openai"));
    assert_eq!(from_secret("GITHUB_TOKEN"), secret("github-token", "token"));
    assert_eq!(
        env["POD_NAME"]
            .value_from
            .as_ref()
            .and_then(|s| s.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name")
    );
    for probe in [&p.startup_probe, &p.readiness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::Int(9901));
    }
    let sc = p.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(PROXY_USER));
    assert_eq!(sc.run_as_group, Some(PROXY_USER));
    assert_ne!(PROXY_USER, SANDBOX_USER);
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
}

#[test]
fn the_sandbox_gets_the_route_urls_and_placeholders_never_the_secrets() {
    let spec = harden(PodSpec::default());
    let sandbox = &spec.containers[0];
    let url = "http://127.0.0.1:3128";
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        assert_eq!(value(sandbox, name).as_deref(), Some(url), "{name}");
    }
    assert_eq!(value(sandbox, "NO_PROXY").as_deref(), Some(""));
    assert_eq!(value(sandbox, "no_proxy").as_deref(), Some(""));
    let cases = [
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:3128/anthropic"),
        ("ANTHROPIC_API_KEY", CREDENTIAL_PLACEHOLDER),
        ("OPENAI_BASE_URL", "http://127.0.0.1:3128/openai/v1"),
        ("OPENAI_API_KEY", CREDENTIAL_PLACEHOLDER),
        ("WARDEN_ROUTE_ANTHROPIC", "http://127.0.0.1:3128/anthropic"),
        ("WARDEN_ROUTE_OPENAI", "http://127.0.0.1:3128/openai"),
        ("WARDEN_ROUTE_GIT", "http://127.0.0.1:3128/git"),
        ("GIT_CONFIG_COUNT", "1"),
        (
            "GIT_CONFIG_KEY_0",
            "url.http://127.0.0.1:3128/git/.insteadOf",
        ),
        ("GIT_CONFIG_VALUE_0", "https://github.com/"),
    ];
    for (name, want) in cases {
        assert_eq!(value(sandbox, name).as_deref(), Some(want), "{name}");
    }
    assert!(
        sandbox.env.iter().flatten().all(|v| v.value_from.is_none()),
        "nothing in the sandbox container comes from a Secret"
    );
    assert!(
        sandbox.env_from.is_none(),
        "no envFrom on the sandbox container"
    );
    // No route's Secret appears anywhere in the pod but the proxy's env.
    let mut elsewhere = spec.clone();
    elsewhere.init_containers.as_mut().unwrap().remove(0);
    let text = serde_json::to_string(&elsewhere).unwrap();
    for name in ["llm-keys", "github-token"] {
        assert!(!text.contains(name), "{name} outside the proxy: {text}");
    }
}

#[test]
fn the_author_spec_keeps_its_image_and_every_container_is_hardened() {
    let spec = harden(author_spec());
    assert_eq!(restricted_violations(&spec), Vec::<String>::new());
    let agent = &spec.containers[0];
    assert_eq!(agent.name, "agent");
    assert_eq!(
        agent.image.as_deref(),
        Some("registry.example.com/python-warden:3.12")
    );
    assert_eq!(
        value(agent, "PIP_INDEX_URL").as_deref(),
        Some("https://pypi.org/simple")
    );
    assert!(agent.resources.as_ref().unwrap().limits.is_some());
    assert_eq!(
        agent.command,
        Some(vec!["warden".to_string(), "sandboxd".to_string()])
    );
    // The helper and the author's init container: hardened, otherwise untouched.
    let redis = &spec.containers[1];
    assert_eq!(redis.command, None);
    assert_eq!(redis.env, None);
    let inits = spec.init_containers.as_ref().unwrap();
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [PROXY_CONTAINER, "setup"]
    );
    for c in [redis, &inits[1]] {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()]),
            "{}",
            c.name
        );
    }
}

#[test]
fn hardening_twice_is_hardening_once() {
    let mut with_pvc = author_spec();
    with_pvc.containers[0].volume_mounts = Some(vec![VolumeMount {
        name: "workspace".into(),
        mount_path: "/workspace".into(),
        ..VolumeMount::default()
    }]);
    let mut with_safe_settings = author_spec();
    with_safe_settings.containers[0].security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["NET_RAW".into()]),
        }),
        run_as_user: Some(1000),
        ..SecurityContext::default()
    });
    with_safe_settings.containers[0].env = Some(vec![
        EnvVar {
            name: "HOME".into(),
            value: Some("/home/agent".into()),
            value_from: None,
        },
        EnvVar {
            name: "HTTPS_PROXY".into(),
            value: Some("http://elsewhere:8080".into()),
            value_from: None,
        },
    ]);
    with_safe_settings.security_context = Some(PodSecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some("profiles/strict.json".into()),
        }),
        sysctls: Some(vec![Sysctl {
            name: "net.ipv4.ping_group_range".into(),
            value: "0 0".into(),
        }]),
        ..PodSecurityContext::default()
    });
    let mut by_name = author_spec();
    by_name.containers.swap(0, 1);
    let mut named_opts = opts();
    named_opts.sandbox_container = Some("agent".into());
    let mut gvisor = opts();
    gvisor.runtime_class = Some("gvisor".into());
    let cases = [
        ("empty", PodSpec::default(), opts()),
        ("author", author_spec(), opts()),
        ("pvc workspace", with_pvc, opts()),
        ("safe settings", with_safe_settings, opts()),
        ("named sandbox", by_name, named_opts),
        (
            "no routes",
            author_spec(),
            WardenTemplateOptions::new(IMAGE),
        ),
        ("gvisor", author_spec(), gvisor),
    ];
    for (name, spec, o) in cases {
        let once = harden_pod_spec(spec, &o).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        let twice =
            harden_pod_spec(once.clone(), &o).unwrap_or_else(|e| panic!("{name} again:\n{e}"));
        assert_eq!(twice, once, "{name}");
        assert_eq!(restricted_violations(&once), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn warden_owns_the_proxy_variables_but_the_author_keeps_home_and_the_rest() {
    let mut spec = author_spec();
    spec.containers[0].env = Some(vec![
        EnvVar {
            name: "HTTPS_PROXY".into(),
            value: Some("http://attacker.example:8080".into()),
            value_from: None,
        },
        EnvVar {
            name: "ANTHROPIC_BASE_URL".into(),
            value: Some("https://api.anthropic.com".into()),
            value_from: None,
        },
        EnvVar {
            name: "HOME".into(),
            value: Some("/workspace/home".into()),
            value_from: None,
        },
    ]);
    let spec = harden(spec);
    let c = &spec.containers[0];
    let names: Vec<&str> = c.env.iter().flatten().map(|v| v.name.as_str()).collect();
    for once in ["HTTPS_PROXY", "ANTHROPIC_BASE_URL", "HOME"] {
        assert_eq!(
            names.iter().filter(|n| **n == once).count(),
            1,
            "{once}: {names:?}"
        );
    }
    assert_eq!(
        value(c, "HTTPS_PROXY").as_deref(),
        Some("http://127.0.0.1:3128")
    );
    assert_eq!(
        value(c, "ANTHROPIC_BASE_URL").as_deref(),
        Some("http://127.0.0.1:3128/anthropic")
    );
    assert_eq!(value(c, "HOME").as_deref(), Some("/workspace/home"));
}

#[test]
fn an_authors_workspace_volume_is_kept_and_gets_no_quota() {
    let mut spec = author_spec();
    spec.containers[0].volume_mounts = Some(vec![VolumeMount {
        // A volumeClaimTemplates PVC: the controller adds the volume itself.
        name: "workspace".into(),
        mount_path: "/workspace/".into(),
        ..VolumeMount::default()
    }]);
    let spec = harden(spec);
    let c = &spec.containers[0];
    let mounts: Vec<(&str, &str)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(
        mounts,
        [("workspace", "/workspace/"), ("warden-tmp", "/tmp")]
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["warden-tmp"]);
    assert!(!c.args.as_ref().unwrap().contains(&"--quota".to_string()));
}

#[test]
fn the_sandbox_container_can_be_named() {
    let mut o = opts();
    o.sandbox_container = Some("agent".into());
    let mut spec = author_spec();
    spec.containers.swap(0, 1);
    let spec = harden_pod_spec(spec, &o).unwrap();
    assert_eq!(spec.containers[0].name, "redis");
    assert_eq!(spec.containers[0].command, None);
    assert_eq!(
        spec.containers[1].command,
        Some(vec!["warden".to_string(), "sandboxd".to_string()])
    );

    o.sandbox_container = Some("missing".into());
    let err = harden_pod_spec(author_spec(), &o).unwrap_err();
    assert!(err.names("options.sandboxContainer"), "{err}");
    assert!(err.to_string().contains("agent, redis"), "{err}");
}

#[test]
fn the_runtime_class_comes_from_the_options() {
    let mut o = opts();
    o.runtime_class = Some("kata".into());
    let spec = harden_pod_spec(author_spec(), &o).unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("kata"));

    let degraded = |spec: &PodSpec| {
        let args = spec.containers[0].args.clone().unwrap_or_default();
        args.windows(2)
            .any(|w| w[0] == "--allow-degraded" && w[1] == "landlock")
    };
    assert!(
        !degraded(&spec),
        "Kata's guest kernel has Landlock: it stays required"
    );

    // The author's own, without options: kept. gVisor implements no Landlock, so sandboxd
    // is told to run without it there (and only there).
    let mut spec = author_spec();
    spec.runtime_class_name = Some("gvisor".into());
    let spec = harden(spec);
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert!(degraded(&spec), "{:?}", spec.containers[0].args);
    let mut o = opts();
    o.runtime_class = Some("gvisor".into());
    assert!(degraded(&harden_pod_spec(author_spec(), &o).unwrap()));
    assert!(!degraded(&harden(author_spec())));
}

/// A mutation of [`author_spec`] that must be refused, and the field the refusal names.
type Hostile = (&'static str, Box<dyn Fn(&mut PodSpec)>);

fn sc(spec: &mut PodSpec) -> &mut SecurityContext {
    spec.containers[0]
        .security_context
        .get_or_insert_with(SecurityContext::default)
}

fn pod_sc(spec: &mut PodSpec) -> &mut PodSecurityContext {
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default)
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Volume::default()
    }
}

fn mount(spec: &mut PodSpec, name: &str, path: &str) {
    spec.containers[0]
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..VolumeMount::default()
        });
}

fn hostile() -> Vec<Hostile> {
    vec![
        (
            "spec.containers[0].securityContext.privileged",
            Box::new(|s| sc(s).privileged = Some(true)),
        ),
        (
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
            Box::new(|s| sc(s).allow_privilege_escalation = Some(true)),
        ),
        (
            "spec.containers[0].securityContext.capabilities.add",
            Box::new(|s| {
                sc(s).capabilities = Some(Capabilities {
                    add: Some(vec!["SYS_ADMIN".into(), "NET_ADMIN".into()]),
                    drop: None,
                })
            }),
        ),
        (
            "spec.containers[0].securityContext.runAsUser",
            Box::new(|s| sc(s).run_as_user = Some(0)),
        ),
        (
            "spec.containers[0].securityContext.runAsNonRoot",
            Box::new(|s| sc(s).run_as_non_root = Some(false)),
        ),
        (
            "spec.containers[0].securityContext.runAsGroup",
            Box::new(|s| sc(s).run_as_group = Some(0)),
        ),
        (
            "spec.containers[0].securityContext.readOnlyRootFilesystem",
            Box::new(|s| sc(s).read_only_root_filesystem = Some(false)),
        ),
        (
            "spec.containers[0].securityContext.seccompProfile.type",
            Box::new(|s| {
                sc(s).seccomp_profile = Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                })
            }),
        ),
        (
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            Box::new(|s| {
                sc(s).seccomp_profile = Some(SeccompProfile {
                    type_: "Localhost".into(),
                    localhost_profile: None,
                })
            }),
        ),
        (
            "spec.containers[0].securityContext.appArmorProfile.type",
            Box::new(|s| {
                sc(s).app_armor_profile = Some(AppArmorProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                })
            }),
        ),
        (
            "spec.containers[0].securityContext.seLinuxOptions.type",
            Box::new(|s| {
                sc(s).se_linux_options = Some(SELinuxOptions {
                    type_: Some("spc_t".into()),
                    ..SELinuxOptions::default()
                })
            }),
        ),
        (
            "spec.containers[0].securityContext.seLinuxOptions.user",
            Box::new(|s| {
                sc(s).se_linux_options = Some(SELinuxOptions {
                    user: Some("system_u".into()),
                    ..SELinuxOptions::default()
                })
            }),
        ),
        (
            "spec.containers[0].securityContext.procMount",
            Box::new(|s| sc(s).proc_mount = Some("Unmasked".into())),
        ),
        (
            "spec.containers[0].securityContext.windowsOptions.hostProcess",
            Box::new(|s| {
                sc(s).windows_options = Some(WindowsSecurityContextOptions {
                    host_process: Some(true),
                    ..WindowsSecurityContextOptions::default()
                })
            }),
        ),
        (
            "spec.containers[1].securityContext.privileged",
            Box::new(|s| {
                s.containers[1].security_context = Some(SecurityContext {
                    privileged: Some(true),
                    ..SecurityContext::default()
                })
            }),
        ),
        (
            "spec.initContainers[0].securityContext.allowPrivilegeEscalation",
            Box::new(|s| {
                s.init_containers.as_mut().unwrap()[0].security_context = Some(SecurityContext {
                    allow_privilege_escalation: Some(true),
                    ..SecurityContext::default()
                })
            }),
        ),
        (
            "spec.containers[0].ports[0].hostPort",
            Box::new(|s| {
                s.containers[0].ports = Some(vec![ContainerPort {
                    container_port: 8888,
                    host_port: Some(8888),
                    ..ContainerPort::default()
                }])
            }),
        ),
        (
            "spec.containers[1].livenessProbe.httpGet.host",
            Box::new(|s| {
                s.containers[1].liveness_probe = Some(Probe {
                    http_get: Some(HTTPGetAction {
                        host: Some("169.254.169.254".into()),
                        port: IntOrString::Int(80),
                        ..HTTPGetAction::default()
                    }),
                    ..Probe::default()
                })
            }),
        ),
        (
            "spec.containers[1].lifecycle.preStop.tcpSocket.host",
            Box::new(|s| {
                s.containers[1].lifecycle = Some(Lifecycle {
                    pre_stop: Some(LifecycleHandler {
                        tcp_socket: Some(TCPSocketAction {
                            host: Some("10.0.0.1".into()),
                            port: IntOrString::Int(22),
                        }),
                        ..LifecycleHandler::default()
                    }),
                    ..Lifecycle::default()
                })
            }),
        ),
        (
            "spec.hostNetwork",
            Box::new(|s| s.host_network = Some(true)),
        ),
        ("spec.hostPID", Box::new(|s| s.host_pid = Some(true))),
        ("spec.hostIPC", Box::new(|s| s.host_ipc = Some(true))),
        (
            "spec.shareProcessNamespace",
            Box::new(|s| s.share_process_namespace = Some(true)),
        ),
        (
            "spec.automountServiceAccountToken",
            Box::new(|s| s.automount_service_account_token = Some(true)),
        ),
        (
            "spec.enableServiceLinks",
            Box::new(|s| s.enable_service_links = Some(true)),
        ),
        (
            "spec.ephemeralContainers",
            Box::new(|s| {
                s.ephemeral_containers = Some(vec![EphemeralContainer {
                    name: "debug".into(),
                    image: Some("busybox".into()),
                    ..EphemeralContainer::default()
                }])
            }),
        ),
        (
            "spec.os.name",
            Box::new(|s| {
                s.os = Some(PodOS {
                    name: "windows".into(),
                })
            }),
        ),
        (
            "spec.securityContext.runAsUser",
            Box::new(|s| pod_sc(s).run_as_user = Some(0)),
        ),
        (
            "spec.securityContext.runAsNonRoot",
            Box::new(|s| pod_sc(s).run_as_non_root = Some(false)),
        ),
        (
            "spec.securityContext.runAsGroup",
            Box::new(|s| pod_sc(s).run_as_group = Some(0)),
        ),
        (
            "spec.securityContext.fsGroup",
            Box::new(|s| pod_sc(s).fs_group = Some(0)),
        ),
        (
            "spec.securityContext.supplementalGroups[1]",
            Box::new(|s| pod_sc(s).supplemental_groups = Some(vec![1000, 0])),
        ),
        (
            "spec.securityContext.seccompProfile.type",
            Box::new(|s| {
                pod_sc(s).seccomp_profile = Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                })
            }),
        ),
        (
            "spec.securityContext.sysctls[0].name",
            Box::new(|s| {
                pod_sc(s).sysctls = Some(vec![Sysctl {
                    name: "kernel.msgmax".into(),
                    value: "65536".into(),
                }])
            }),
        ),
        (
            "spec.securityContext.windowsOptions.hostProcess",
            Box::new(|s| {
                pod_sc(s).windows_options = Some(WindowsSecurityContextOptions {
                    host_process: Some(true),
                    ..WindowsSecurityContextOptions::default()
                })
            }),
        ),
        (
            "spec.volumes[0].hostPath",
            Box::new(|s| {
                s.volumes = Some(vec![Volume {
                    host_path: Some(HostPathVolumeSource {
                        path: "/".into(),
                        type_: None,
                    }),
                    ..volume("host")
                }]);
                mount(s, "host", "/host");
            }),
        ),
        (
            "spec.volumes[1]",
            Box::new(|s| {
                s.volumes = Some(vec![
                    Volume {
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..volume("scratch")
                    },
                    Volume {
                        nfs: Some(NFSVolumeSource {
                            path: "/exports".into(),
                            server: "10.0.0.5".into(),
                            read_only: None,
                        }),
                        ..volume("shared")
                    },
                ])
            }),
        ),
        (
            "spec.volumes[0].name",
            Box::new(|s| {
                s.volumes = Some(vec![Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: "data".into(),
                        read_only: None,
                    }),
                    ..volume("warden-workspace")
                }])
            }),
        ),
        (
            "spec.containers[1].name",
            Box::new(|s| s.containers[1].name = PROXY_CONTAINER.into()),
        ),
        (
            "spec.runtimeClassName",
            Box::new(|s| s.runtime_class_name = Some("Not A Name".into())),
        ),
        (
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
            Box::new(|s| {
                s.containers[0].env = Some(vec![EnvVar {
                    name: "KEY".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(secret("llm-keys", "anthropic")),
                        ..EnvVarSource::default()
                    }),
                }])
            }),
        ),
        (
            "spec.containers[0].envFrom[0].secretRef",
            Box::new(|s| {
                s.containers[0].env_from = Some(vec![EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "github-token".into(),
                        optional: None,
                    }),
                    ..EnvFromSource::default()
                }])
            }),
        ),
        (
            "spec.containers[0].volumeMounts[0]",
            Box::new(|s| {
                s.volumes = Some(vec![Volume {
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("llm-keys".into()),
                        ..SecretVolumeSource::default()
                    }),
                    ..volume("keys")
                }]);
                mount(s, "keys", "/keys");
            }),
        ),
        (
            "spec.containers[0].volumeMounts[0]",
            Box::new(|s| {
                s.volumes = Some(vec![Volume {
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                audience: None,
                                expiration_seconds: None,
                            }),
                            ..VolumeProjection::default()
                        }]),
                        default_mode: None,
                    }),
                    ..volume("sa")
                }]);
                mount(s, "sa", "/var/run/sa");
            }),
        ),
        (
            "spec.containers[0].securityContext.runAsUser",
            Box::new(|s| sc(s).run_as_user = Some(PROXY_USER)),
        ),
        (
            "spec.securityContext.runAsUser",
            Box::new(|s| pod_sc(s).run_as_user = Some(PROXY_USER)),
        ),
    ]
}

#[test]
fn hostile_specs_are_refused_naming_the_field() {
    for (field, mutate) in hostile() {
        let mut spec = author_spec();
        mutate(&mut spec);
        let err: HardenError = match harden_pod_spec(spec, &opts()) {
            Ok(out) => panic!("{field}: accepted, giving {out:?}"),
            Err(e) => e,
        };
        assert!(
            err.names(field),
            "{field}: refused for another reason:\n{err}"
        );
        // The message is a sentence after the field, shown as `field: message`.
        let line = err
            .to_string()
            .lines()
            .find(|l| l.starts_with(&format!("{field}: ")))
            .map(str::to_string)
            .unwrap();
        assert!(line.len() > field.len() + 12, "{line}");
    }
}

#[test]
fn a_refused_author_setting_is_never_silently_changed() {
    // The one refusal is about the setting; the pod does not come back with it flipped.
    let mut spec = author_spec();
    sc(&mut spec).allow_privilege_escalation = Some(true);
    let err = harden_pod_spec(spec, &opts()).unwrap_err();
    assert_eq!(err.refusals.len(), 1, "{err}");
    assert!(err.to_string().contains("must be false or unset"), "{err}");
}

#[test]
fn every_refusal_is_reported_at_once() {
    let mut spec = author_spec();
    for (_, mutate) in hostile().iter().take(6) {
        mutate(&mut spec);
    }
    spec.host_pid = Some(true);
    let err = harden_pod_spec(spec, &opts()).unwrap_err();
    for field in [
        "spec.hostPID",
        "spec.containers[0].securityContext.privileged",
        "spec.containers[0].securityContext.capabilities.add",
        "spec.containers[0].securityContext.runAsNonRoot",
    ] {
        assert!(err.names(field), "{field} missing from:\n{err}");
    }
    assert!(err.refusals.len() >= 6, "{err}");
}

#[test]
fn the_standards_checker_finds_what_the_hostile_specs_break() {
    // A hostile spec, left unhardened beyond its mutation, breaks the standard in the field named.
    let pss_fields = [
        "spec.containers[0].securityContext.privileged",
        "spec.containers[0].securityContext.capabilities.add",
        "spec.containers[0].securityContext.runAsUser",
        "spec.containers[0].securityContext.seccompProfile.type",
        "spec.containers[0].securityContext.procMount",
        "spec.containers[0].ports[0].hostPort",
        "spec.containers[1].livenessProbe.httpGet.host",
        "spec.containers[1].lifecycle.preStop.tcpSocket.host",
        "spec.hostNetwork",
        "spec.hostPID",
        "spec.hostIPC",
        "spec.securityContext.runAsUser",
        "spec.securityContext.sysctls[0].name",
        "spec.volumes[0].hostPath",
        "spec.volumes[1]",
        "spec.securityContext.windowsOptions.hostProcess",
        "spec.containers[0].securityContext.seLinuxOptions.type",
        "spec.containers[0].securityContext.appArmorProfile.type",
    ];
    let mut checked = Vec::new();
    for (field, mutate) in hostile() {
        // The first mutation of a field is the one the standard forbids (`runAsUser: 0`; the
        // later `runAsUser` case is warden's own rule).
        if !pss_fields.contains(&field) || checked.contains(&field) {
            continue;
        }
        // Start from a spec that passes, so what is found comes from the mutation.
        let mut spec = harden(author_spec());
        spec.volumes = None;
        spec.containers[0].volume_mounts = None;
        mutate(&mut spec);
        let found = restricted_violations(&spec);
        let hit = |prefix: &str| found.iter().any(|v| v.starts_with(prefix));
        let prefix = field.trim_end_matches(".add");
        assert!(hit(prefix), "{field}: not found in {found:#?}");
        checked.push(field);
    }
    assert_eq!(checked.len(), pss_fields.len());
}

#[test]
fn the_standards_checker_follows_the_published_rules() {
    let linux = |c: Container| PodSpec {
        containers: vec![c],
        ..PodSpec::default()
    };
    // A bare pod breaks the restricted rules that need explicit values.
    let found = restricted_violations(&linux(container("app", "busybox")));
    for rule in [
        "spec.containers[0].securityContext.allowPrivilegeEscalation: must be false (Privilege Escalation)",
        "spec.containers[0].securityContext.runAsNonRoot: must be true, here or at the pod level (Running as Non-root)",
        "spec.containers[0].securityContext.seccompProfile.type: must be RuntimeDefault or Localhost, here or at the pod level (Seccomp)",
        "spec.containers[0].securityContext.capabilities.drop: must include ALL (Capabilities)",
    ] {
        assert!(found.iter().any(|f| f == rule), "{rule} not in {found:#?}");
    }
    assert_eq!(found.len(), 4, "{found:#?}");

    // Container-level settings satisfy the rules as well as pod-level ones do.
    let restricted_container = SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        capabilities: Some(Capabilities {
            add: Some(vec!["NET_BIND_SERVICE".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        ..SecurityContext::default()
    };
    let ok = linux(Container {
        security_context: Some(restricted_container.clone()),
        ..container("app", "nginx")
    });
    assert_eq!(restricted_violations(&ok), Vec::<String>::new());

    // Only NET_BIND_SERVICE may be added.
    let mut caps = restricted_container.clone();
    caps.capabilities.as_mut().unwrap().add = Some(vec!["NET_RAW".into()]);
    let found = restricted_violations(&linux(Container {
        security_context: Some(caps),
        ..container("app", "nginx")
    }));
    assert_eq!(
        found,
        [
            "spec.containers[0].securityContext.capabilities.add[0]: `NET_RAW` may not be added; only NET_BIND_SERVICE may (Capabilities)"
        ]
    );

    // Windows pods skip the Linux-only rules.
    let mut windows = linux(Container {
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        ..container("app", "mcr.microsoft.com/windows/nanoserver")
    });
    windows.os = Some(PodOS {
        name: "windows".into(),
    });
    assert_eq!(restricted_violations(&windows), Vec::<String>::new());

    // Ephemeral and init containers are checked too; allowed volume kinds pass.
    let mut spec = ok.clone();
    spec.init_containers = Some(vec![container("init", "busybox")]);
    spec.ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debug".into(),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..restricted_container
        }),
        ..EphemeralContainer::default()
    }]);
    spec.volumes = Some(vec![
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("a")
        },
        Volume {
            secret: Some(SecretVolumeSource::default()),
            ..volume("b")
        },
    ]);
    let found = restricted_violations(&spec);
    assert!(
        found
            .iter()
            .any(|f| f
                .starts_with("spec.initContainers[0].securityContext.allowPrivilegeEscalation")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("spec.ephemeralContainers[0].securityContext.privileged")),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|f| f.starts_with("spec.volumes")),
        "{found:#?}"
    );
}

#[test]
fn options_are_validated_naming_the_field_and_the_allowed_values() {
    type Bad = (
        &'static str,
        &'static str,
        Box<dyn Fn(&mut WardenTemplateOptions)>,
    );
    let cases: Vec<Bad> = vec![
        ("options.image", "required", Box::new(|o| o.image.clear())),
        (
            "options.runtimeClassName",
            "such as gvisor or kata",
            Box::new(|o| o.runtime_class = Some("gVisor".into())),
        ),
        (
            "options.allowDomains[2]",
            "example.com",
            Box::new(|o| o.allow_domains.push("*.com".into())),
        ),
        (
            "options.routes[0].name",
            "anthropic, openai, git",
            Box::new(|o| o.routes[0].name = "internal-llm".into()),
        ),
        (
            "options.routes[3].name",
            "given twice",
            Box::new(|o| {
                let again = o.routes[0].clone();
                o.routes.push(again)
            }),
        ),
        (
            "options.routes[1].upstream",
            "user information",
            Box::new(|o| o.routes[1].upstream = Some("https://user:pw@litellm.example.com".into())),
        ),
        (
            "options.routes[1].upstream",
            "https://",
            Box::new(|o| o.routes[1].upstream = Some("ftp://litellm.example.com".into())),
        ),
        (
            "options.routes[2].secretKeyRef.name",
            "Secret name",
            Box::new(|o| o.routes[2].secret_key_ref.name = "GitHub Token".into()),
        ),
        (
            "options.routes[2].secretKeyRef.key",
            "Secret key",
            Box::new(|o| o.routes[2].secret_key_ref.key = "a/b".into()),
        ),
        (
            "options.sandboxdPorts.grpc",
            "1 to 65535",
            Box::new(|o| o.sandboxd_ports.grpc = 0),
        ),
        (
            "options.proxyPort",
            "options.sandboxdPorts.http",
            Box::new(|o| o.proxy_port = 8080),
        ),
        (
            "options.proxyUser",
            "must differ",
            Box::new(|o| o.proxy_user = o.sandbox_user),
        ),
        (
            "options.sandboxUser",
            "never 0",
            Box::new(|o| o.sandbox_user = 0),
        ),
        (
            "options.workspaceSize",
            "at least 1 MiB",
            Box::new(|o| o.workspace_size = 4096),
        ),
        (
            "options.routerLabels",
            "admit every pod",
            Box::new(|o| o.router_labels.clear()),
        ),
        (
            "options.routerLabels.app",
            "label value",
            Box::new(|o| {
                o.router_labels
                    .insert("app".into(), "sandbox router".into());
            }),
        ),
        (
            "options.routerNamespace",
            "namespace name",
            Box::new(|o| o.router_namespace = Some("Warden_System".into())),
        ),
        (
            "options.dns.labels",
            "kube-dns",
            Box::new(|o| o.dns.labels.clear()),
        ),
    ];
    assert!(opts().validate().is_ok());
    for (field, says, mutate) in cases {
        let mut o = opts();
        mutate(&mut o);
        let err = o.validate().expect_err(field);
        assert!(err.names(field), "{field}: got\n{err}");
        let text = err.to_string();
        assert!(text.contains(says), "{field}: `{says}` not in\n{text}");
        // harden_pod_spec refuses the same options.
        let again = harden_pod_spec(PodSpec::default(), &o).unwrap_err();
        assert!(again.names(field), "{field}");
    }
}

#[test]
fn options_read_from_json_with_defaults() {
    let o: WardenTemplateOptions = serde_json::from_value(json!({
        "image": IMAGE,
        "runtimeClassName": "gvisor",
        "allowDomains": ["pypi.org"],
        "routes": [{"name": "anthropic", "secretKeyRef": {"name": "llm-keys", "key": "anthropic"}}],
        "routerNamespace": "warden-system"
    }))
    .unwrap();
    assert_eq!(o.runtime_class.as_deref(), Some("gvisor"));
    assert_eq!(o.proxy_port, 3128);
    assert_eq!(o.sandboxd_ports.runtime, 8888);
    assert_eq!(o.router_labels["app"], "sandbox-router");
    assert!(o.validate().is_ok());
    let unknown = serde_json::from_value::<WardenTemplateOptions>(json!({
        "image": IMAGE, "allowDomain": ["pypi.org"]
    }));
    assert!(unknown.unwrap_err().to_string().contains("allowDomain"));
}

#[test]
fn the_warden_network_policy_admits_the_router_and_reaches_dns_and_the_web() {
    let np = network_policy("python", "agents", &opts());
    assert_eq!(np.metadata.name.as_deref(), Some("python-network-policy"));
    assert_eq!(np.metadata.namespace.as_deref(), Some("agents"));
    let want = json!({
        "podSelector": {"matchLabels": {"agents.x-k8s.io/sandbox-template-ref-hash": warden_kube::crd::name_hash("python")}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": "sandbox-router"}}}],
            "ports": [
                {"protocol": "TCP", "port": 8888},
                {"protocol": "TCP", "port": 8080},
                {"protocol": "TCP", "port": 9090}
            ]
        }],
        "egress": [
            {
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            },
            {
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]}},
                    {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}}
                ],
                "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}]
            }
        ]
    });
    assert_eq!(serde_json::to_value(np.spec.unwrap()).unwrap(), want);
    // The proxy's admin port is no ingress port.
    assert_eq!(
        harden::template_pod_selector("python"),
        BTreeMap::from([(
            "agents.x-k8s.io/sandbox-template-ref-hash".to_string(),
            warden_kube::crd::name_hash("python")
        )])
    );

    // A router in its own namespace.
    let mut o = opts();
    o.router_namespace = Some("warden-system".into());
    let np = network_policy("python", "agents", &o);
    let from = serde_json::to_value(&np.spec.unwrap().ingress.unwrap()[0].from).unwrap();
    assert_eq!(
        from,
        json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "warden-system"}},
            "podSelector": {"matchLabels": {"app": "sandbox-router"}}
        }])
    );
}

#[test]
fn the_upstream_default_network_policy_is_upstreams() {
    let np = upstream_default_network_policy("python", "agents");
    assert_eq!(np.metadata.name.as_deref(), Some("python-network-policy"));
    let want = json!({
        "podSelector": {"matchLabels": {"agents.x-k8s.io/sandbox-template-ref-hash": warden_kube::crd::name_hash("python")}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "sandbox-router"}}}]}],
        "egress": [{"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7"]}}
        ]}]
    });
    assert_eq!(serde_json::to_value(np.spec.unwrap()).unwrap(), want);
}

/// The real validator (PyPI `kubernetes-validate`), as tests/manifests.rs runs it.
fn validator() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate"]);
    cmd
}

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("warden-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn hardened_manifests_validate_with_kubernetes_validate() {
    let probe = validator().arg("--version").output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        panic!(
            "kubernetes-validate is not installed for python3 (it checks the hardened Pod and \
             the NetworkPolicies against the Kubernetes API schemas); install it with\n  \
             python3 -m pip install kubernetes-validate==1.37.0\n(.ci/run does this)"
        );
    }
    let dir = TempDir::new("harden");
    let mut o = opts();
    o.runtime_class = Some("gvisor".into());
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("python-x7k2p".into()),
            namespace: Some("agents".into()),
            ..ObjectMeta::default()
        },
        spec: Some(harden_pod_spec(author_spec(), &o).unwrap()),
        status: None,
    };
    let minimal = Pod {
        metadata: ObjectMeta {
            name: Some("minimal".into()),
            ..ObjectMeta::default()
        },
        spec: Some(
            harden_pod_spec(PodSpec::default(), &WardenTemplateOptions::new(IMAGE)).unwrap(),
        ),
        status: None,
    };
    let mut files = Vec::new();
    let mut write = |name: &str, yaml: String| {
        let path = dir.0.join(name);
        std::fs::write(&path, yaml).unwrap();
        files.push(path);
    };
    let pod_yaml = serde_saphyr::to_string(&pod).unwrap();
    write("pod.yaml", pod_yaml.clone());
    write(
        "minimal-pod.yaml",
        serde_saphyr::to_string(&minimal).unwrap(),
    );
    write(
        "network-policy.yaml",
        serde_saphyr::to_string(&network_policy("python", "agents", &o)).unwrap(),
    );
    let mut elsewhere = o.clone();
    elsewhere.router_namespace = Some("warden-system".into());
    write(
        "network-policy-router-namespace.yaml",
        serde_saphyr::to_string(&network_policy("python", "agents", &elsewhere)).unwrap(),
    );
    write(
        "upstream-network-policy.yaml",
        serde_saphyr::to_string(&upstream_default_network_policy("python", "agents")).unwrap(),
    );

    // The YAML reads back as the same objects.
    let read: Pod = serde_saphyr::from_str(&pod_yaml).unwrap();
    assert_eq!(read, pod);
    assert!(
        pod_yaml.contains("apiVersion: v1") && pod_yaml.contains("kind: Pod"),
        "{pod_yaml}"
    );

    for file in files {
        let out = validator()
            .args(["--strict", "-k", "1.36"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{stdout}{stderr}\n{text}",
            file.display()
        );
        assert!(
            stdout.contains("INFO") && stdout.contains("passed") && !stdout.contains("WARN"),
            "{}: kubernetes-validate did not pass it:\n{stdout}{stderr}",
            file.display()
        );
    }
}
