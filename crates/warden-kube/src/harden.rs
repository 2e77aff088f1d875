//! Hardened by default: the pods of warden's SandboxTemplates and their NetworkPolicy.
//!
//! Owns: turning a template author's PodSpec into one that meets the `restricted` Pod Security
//! Standard, runs `warden sandboxd` as the runtime server and `warden proxy` as the egress
//! sidecar ([`harden_pod_spec`]); the NetworkPolicy of a warden template ([`network_policy`])
//! and of a template without warden's options ([`upstream_default_network_policy`]); a checker
//! of the restricted standard's rules ([`restricted_violations`]).
//! Must never: loosen what the author wrote, or let a credential route's secret reach the
//! sandbox container. Pure functions: no I/O.
//!
//! # The pod
//!
//! * `initContainers[0]` is `warden-proxy`, a native sidecar (`restartPolicy: Always`, so it
//!   starts before the author's init containers and the sandbox, and runs as long as the pod):
//!   `warden proxy --listen 127.0.0.1:<proxyPort> --admin-listen 0.0.0.0:<proxyAdminPort>
//!   --sandbox-id $(POD_NAME) --allow-domain D... --route NAME[=URL]...`, warden's image, its
//!   own user ([`PROXY_USER`]), probed on the admin listener's `/healthz`. Each route's secret
//!   comes from a Kubernetes Secret through `env.valueFrom.secretKeyRef` into the variable
//!   `warden proxy` reads for that route (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`,
//!   `GITHUB_TOKEN`): on this container only.
//! * The sandbox container (the one named by `sandboxContainer`, else the first; a container
//!   named `sandbox` with warden's image when the spec has none) runs `warden sandboxd --listen
//!   0.0.0.0:8888 --listen 0.0.0.0:8080 --listen 0.0.0.0:9090 --root /workspace --jail pod`
//!   (plus `--quota` when the workspace is warden's emptyDir), readiness on `/v1/health`. Its
//!   image must hold the `warden` binary on `PATH` (warden's image does): the author's
//!   toolchain image with warden added. Its command, args, ports and readiness probe are
//!   warden's. It gets the proxy's environment, as `warden run --route` gives a sandbox:
//!   `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` (both cases) = `http://127.0.0.1:<proxyPort>`,
//!   `NO_PROXY`/`no_proxy` empty, `WARDEN_ROUTE_<NAME>` per route, `ANTHROPIC_BASE_URL` and
//!   `OPENAI_BASE_URL` (`…/v1`) with placeholder keys, git's `url.<route>/.insteadOf` through
//!   `GIT_CONFIG_*`; and `HOME=/workspace` unless the author set `HOME`.
//! * `/workspace` and `/tmp` are emptyDirs (`warden-workspace`, `warden-tmp`, sized by
//!   `workspaceSize` and `tmpSize`) unless the author mounts a volume there (a PVC of
//!   `volumeClaimTemplates` for a lasting workspace); every root filesystem is read-only.
//! * Pod level: `automountServiceAccountToken: false`, `enableServiceLinks: false`,
//!   `runAsNonRoot: true`, user, group and fsGroup [`SANDBOX_USER`] unless set,
//!   `seccompProfile: RuntimeDefault` unless set, `runtimeClassName` from the options.
//!
//! # Refuse or fill in
//!
//! What the author left unset is filled with the safe value. What the author set to an unsafe
//! value is refused, never silently changed: a pod that behaves unlike its manifest hides the
//! mistake, and a value that grants host access or privilege cannot be made safe by editing
//! around it. Every refusal names the field (`spec.containers[0].securityContext.privileged`)
//! and what is accepted, and one call reports them all. Refused: `privileged: true`,
//! `allowPrivilegeEscalation: true`, any `capabilities.add`, `runAsNonRoot: false`,
//! `runAsUser: 0`, group 0 (`runAsGroup`, `fsGroup`, `supplementalGroups`),
//! `readOnlyRootFilesystem: false`, seccomp or AppArmor `Unconfined`, custom SELinux
//! user/role/type, `procMount` other than `Default`, Windows `hostProcess` or `os.name`,
//! `hostNetwork`/`hostPID`/`hostIPC: true`, `hostPort`, a probe or lifecycle hook with a
//! `host`, sysctls outside the standard's safe set, volumes other than configMap, csi,
//! downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret (hostPath
//! above all), `automountServiceAccountToken: true`, `enableServiceLinks: true`,
//! `shareProcessNamespace: true` (the sandbox would see the proxy's processes and their
//! environment), ephemeral containers, a `runtimeClassName` other than the options', and on
//! the sandbox container any reference to a route's Secret or a service-account token.
//! Filled or merged: `capabilities.drop` gains `ALL`; unset `allowPrivilegeEscalation` and
//! `readOnlyRootFilesystem` become `false` and `true`. Replaced as warden's own: the init
//! container `warden-proxy`, emptyDir volumes named `warden-workspace`/`warden-tmp`, and on
//! the sandbox container the variables above; so hardening a hardened spec changes nothing.
//!
//! # What the NetworkPolicy can and cannot enforce
//!
//! A NetworkPolicy acts on the pod's IP, at L3/L4: it selects the template's pods
//! (`agents.x-k8s.io/sandbox-template-ref-hash`), admits connections only from the router's
//! pods and only to sandboxd's ports, and lets the pod reach only cluster DNS (UDP/TCP 53 of
//! the kube-dns pods) and TCP 80/443 of addresses outside the private, link-local and
//! shared ranges (the cluster, the node's network, the metadata server). It cannot tell the
//! sandbox container from the proxy sidecar: they share one network namespace, and loopback
//! traffic never meets the policy, so "egress only through the proxy" and domain names are
//! not L3/L4 facts. Those are held inside the pod: `warden proxy` admits only the allowlisted
//! domains and refuses private addresses after resolution, and `warden sandboxd --jail pod`
//! confines every command with Landlock and seccomp. Nor can a NetworkPolicy stop what DNS
//! queries carry, and it does nothing at all where the CNI plugin does not enforce
//! NetworkPolicy; other policies selecting the same pods add to what this one allows, and
//! traffic from the node (the kubelet's probes) is always allowed.
//!
//! # Known gaps
//!
//! * gVisor does not implement Landlock (google/gvisor#13439), so under
//!   `runtimeClassName: gvisor` sandboxd gets `--allow-degraded landlock` and jails commands
//!   with seccomp, no_new_privs and rlimits only; Kata runs a guest Linux kernel, where
//!   Landlock works if that kernel enables it and stays required.
//! * Upstreams on private addresses (`--route openai=http://litellm.internal:4000`) are out of
//!   reach: the NetworkPolicy and the proxy both refuse private ranges and ports other than
//!   80 and 443.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
    Probe, SELinuxOptions, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use warden_policy::route::RouteFile;
use warden_policy::{CredentialSpec, DomainPattern, RouteKind};

use crate::crd::labels::{SANDBOX_TEMPLATE_REF_HASH, name_hash};

/// Name of the sandbox container warden adds when the spec has none.
pub const SANDBOX_CONTAINER: &str = "sandbox";
/// Name of the egress proxy sidecar (an init container with `restartPolicy: Always`).
pub const PROXY_CONTAINER: &str = "warden-proxy";
/// The emptyDir mounted at [`WORKSPACE_DIR`] when the author mounts nothing there.
pub const WORKSPACE_VOLUME: &str = "warden-workspace";
/// The emptyDir mounted at [`TMP_DIR`] when the author mounts nothing there.
pub const TMP_VOLUME: &str = "warden-tmp";
/// sandboxd's `--root`.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where sandboxd makes each command's private temporary directory.
pub const TMP_DIR: &str = "/tmp";
/// Default user, group and fsGroup of the pod (distroless' `nonroot`).
pub const SANDBOX_USER: i64 = 65532;
/// Default user and group of the proxy sidecar: not the sandbox's, so nothing running as the
/// sandbox's user can read the proxy's memory or environment.
pub const PROXY_USER: i64 = 65533;
/// What the sandbox gets instead of a route's secret (`warden run --route` gives the same).
pub use warden_policy::CREDENTIAL_PLACEHOLDER;
/// sandboxd's health endpoint, on every listener.
pub const SANDBOXD_HEALTH_PATH: &str = "/v1/health";
/// The proxy admin listener's health endpoint.
pub const PROXY_HEALTH_PATH: &str = "/healthz";
/// The RuntimeClass of gVisor. Pods that use it run `sandboxd --allow-degraded landlock`:
/// gVisor implements no Landlock, and its own kernel is the boundary there.
pub const GVISOR_RUNTIME_CLASS: &str = "gvisor";

/// IPv4 ranges upstream's default NetworkPolicy keeps out of `0.0.0.0/0`.
pub const UPSTREAM_EXCEPT_IPV4: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
];
/// IPv6 ranges upstream's default NetworkPolicy keeps out of `::/0` (its controller lists
/// `fc00::/7` only).
pub const UPSTREAM_EXCEPT_IPV6: [&str; 1] = ["fc00::/7"];
/// IPv4 ranges a warden template's pods never reach: upstream's, and the shared range
/// `100.64.0.0/10` that some clusters use for pods and nodes.
pub const WARDEN_EXCEPT_IPV4: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
];
/// IPv6 ranges a warden template's pods never reach: unique-local and link-local.
pub const WARDEN_EXCEPT_IPV6: [&str; 2] = ["fc00::/7", "fe80::/10"];

/// sysctls the Pod Security Standards count as safe (namespaced, isolated from other pods).
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// SELinux types the baseline standard allows (besides none).
const SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
/// Volume sources the restricted standard allows.
const RESTRICTED_VOLUMES: &str =
    "configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret";

/// The ports `warden sandboxd` listens on, each serving every protocol; the defaults are the
/// ones the `k8s-agent-sandbox` SDK expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxdPorts {
    /// The legacy python-runtime REST API (default 8888, the router's default port).
    pub runtime: u16,
    /// sandboxd's REST API (default 8080); the readiness probe asks it.
    pub http: u16,
    /// The gRPC process service (default 9090).
    pub grpc: u16,
}

impl Default for SandboxdPorts {
    fn default() -> Self {
        SandboxdPorts {
            runtime: 8888,
            http: 8080,
            grpc: 9090,
        }
    }
}

impl SandboxdPorts {
    fn named(&self) -> [(&'static str, u16); 3] {
        [
            ("runtime", self.runtime),
            ("http", self.http),
            ("grpc", self.grpc),
        ]
    }
}

/// A credential route the proxy serves: the sandbox calls `http://127.0.0.1:<proxyPort>/<name>`
/// with a placeholder key, the proxy forwards to the upstream with the real one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRoute {
    /// A built-in route: `anthropic`, `openai` or `git`.
    pub name: String,
    /// Where the route forwards to, if not the built-in's default (`https://api.anthropic.com`,
    /// `https://api.openai.com`, `https://github.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The Kubernetes Secret key holding the credential; it reaches the proxy sidecar only.
    pub secret_key_ref: SecretKeySelector,
}

/// The pods that answer DNS: the egress rule for port 53 selects them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsPeer {
    /// Their namespace (default `kube-system`).
    pub namespace: String,
    /// Their labels (default `k8s-app: kube-dns`, which CoreDNS keeps too).
    pub labels: BTreeMap<String, String>,
}

impl Default for DnsPeer {
    fn default() -> Self {
        DnsPeer {
            namespace: "kube-system".into(),
            labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
        }
    }
}

/// What a warden template adds to its pods. [`WardenTemplateOptions::new`] gives the defaults;
/// [`WardenTemplateOptions::validate`] checks every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WardenTemplateOptions {
    /// warden's image: the proxy sidecar's, and the sandbox container's when the spec gives
    /// none. Pin it by digest in production.
    pub image: String,
    /// The RuntimeClass of a sandboxed runtime, such as `gvisor` or `kata`.
    #[serde(rename = "runtimeClassName", skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    /// Domains the proxy admits: `example.com` or `*.example.com`.
    pub allow_domains: Vec<String>,
    /// Credential routes the proxy serves.
    pub routes: Vec<CredentialRoute>,
    /// Size of the `/workspace` emptyDir and sandboxd's upload quota, in bytes (default 10 GiB).
    pub workspace_size: u64,
    /// Size of the `/tmp` emptyDir, in bytes (default 1 GiB).
    pub tmp_size: u64,
    /// sandboxd's ports.
    pub sandboxd_ports: SandboxdPorts,
    /// The proxy's port on the pod's loopback (default 3128).
    pub proxy_port: u16,
    /// The proxy's admin listener (`/healthz`, `/metrics`; default 9901), probed by the kubelet.
    pub proxy_admin_port: u16,
    /// The pod's default user, group and fsGroup (default 65532).
    pub sandbox_user: i64,
    /// The proxy sidecar's user and group (default 65533); never the sandbox's.
    pub proxy_user: i64,
    /// The container that becomes the sandbox; default the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_container: Option<String>,
    /// Labels of the router's pods, the only ones admitted (default `app: sandbox-router`).
    pub router_labels: BTreeMap<String, String>,
    /// The router's namespace; unset: the template's own, as upstream's default policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_namespace: Option<String>,
    /// Cluster DNS.
    pub dns: DnsPeer,
}

impl Default for WardenTemplateOptions {
    fn default() -> Self {
        WardenTemplateOptions {
            image: String::new(),
            runtime_class: None,
            allow_domains: Vec::new(),
            routes: Vec::new(),
            workspace_size: 10 << 30,
            tmp_size: 1 << 30,
            sandboxd_ports: SandboxdPorts::default(),
            proxy_port: 3128,
            proxy_admin_port: 9901,
            sandbox_user: SANDBOX_USER,
            proxy_user: PROXY_USER,
            sandbox_container: None,
            router_labels: BTreeMap::from([("app".to_string(), "sandbox-router".to_string())]),
            router_namespace: None,
            dns: DnsPeer::default(),
        }
    }
}

/// One thing refused, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `spec.…` for the pod spec, `options.…` for [`WardenTemplateOptions`].
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// Everything [`harden_pod_spec`] or [`WardenTemplateOptions::validate`] refused; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardenError {
    pub refusals: Vec<Refusal>,
}

impl HardenError {
    /// Whether a refusal names exactly this field.
    pub fn names(&self, field: &str) -> bool {
        self.refusals.iter().any(|r| r.field == field)
    }
}

impl fmt::Display for HardenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.refusals.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", r.field, r.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for HardenError {}

#[derive(Default)]
struct Refusals(Vec<Refusal>);

impl Refusals {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Refusal {
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, HardenError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(HardenError { refusals: self.0 })
        }
    }
}

/// A route as the proxy and the sandbox see it.
struct ResolvedRoute {
    name: String,
    kind: RouteKind,
    upstream: String,
    /// The `--route` flag's value.
    flag: String,
    /// The variable `warden proxy` reads the secret from.
    env: String,
    secret: SecretKeySelector,
}

struct Resolved {
    domains: Vec<String>,
    routes: Vec<ResolvedRoute>,
}

impl WardenTemplateOptions {
    /// The defaults with warden's image.
    pub fn new(image: impl Into<String>) -> Self {
        WardenTemplateOptions {
            image: image.into(),
            ..WardenTemplateOptions::default()
        }
    }

    /// Checks every field; the error names each bad one (`options.runtimeClassName`, …) and
    /// what is allowed.
    pub fn validate(&self) -> Result<(), HardenError> {
        let mut e = Refusals::default();
        self.resolve(&mut e);
        e.finish(())
    }

    fn resolve(&self, e: &mut Refusals) -> Resolved {
        if self.image.trim().is_empty() {
            e.push(
                "options.image",
                "required: warden's container image (it runs the proxy sidecar), such as \
                 ghcr.io/warden-sandbox/warden@sha256:...",
            );
        } else if self
            .image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            e.push(
                "options.image",
                format!(
                    "`{}` is not an image reference: it holds spaces",
                    self.image
                ),
            );
        }
        if let Some(class) = &self.runtime_class
            && let Err(why) = check_dns_subdomain(class)
        {
            e.push(
                "options.runtimeClassName",
                format!(
                    "`{class}` is not a DNS-1123 name ({why}); give the name of a RuntimeClass \
                     installed in the cluster, such as gvisor or kata"
                ),
            );
        }
        let mut domains = Vec::new();
        for (i, d) in self.allow_domains.iter().enumerate() {
            match d.parse::<DomainPattern>() {
                Ok(p) => {
                    let p = p.to_string();
                    if !domains.contains(&p) {
                        domains.push(p);
                    }
                }
                Err(why) => e.push(format!("options.allowDomains[{i}]"), why.to_string()),
            }
        }
        let routes = self.resolve_routes(e);
        for (field, size) in [
            ("options.workspaceSize", self.workspace_size),
            ("options.tmpSize", self.tmp_size),
        ] {
            if size < 1 << 20 {
                e.push(
                    field,
                    format!("{size} bytes is too small; give at least 1 MiB (1048576)"),
                );
            }
        }
        let mut ports: Vec<(String, u16)> = self
            .sandboxd_ports
            .named()
            .iter()
            .map(|(n, p)| (format!("options.sandboxdPorts.{n}"), *p))
            .collect();
        ports.push(("options.proxyPort".into(), self.proxy_port));
        ports.push(("options.proxyAdminPort".into(), self.proxy_admin_port));
        for (i, (field, port)) in ports.iter().enumerate() {
            if *port == 0 {
                e.push(field, "must be a port from 1 to 65535");
            } else if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                e.push(
                    field,
                    format!("port {port} is already {other}; every listener of the pod needs its own port"),
                );
            }
        }
        for (field, user) in [
            ("options.sandboxUser", self.sandbox_user),
            ("options.proxyUser", self.proxy_user),
        ] {
            if !(1..=i64::from(i32::MAX)).contains(&user) {
                e.push(
                    field,
                    format!("{user} is not a user id warden runs as; give one from 1 to 2147483647 (never 0, root)"),
                );
            }
        }
        if self.sandbox_user == self.proxy_user {
            e.push(
                "options.proxyUser",
                format!(
                    "must differ from sandboxUser ({}): the sandbox must not run as the user that holds the credentials",
                    self.sandbox_user
                ),
            );
        }
        if let Some(name) = &self.sandbox_container
            && let Err(why) = check_dns_label(name)
        {
            e.push(
                "options.sandboxContainer",
                format!("`{name}` is not a container name ({why})"),
            );
        }
        if self.router_labels.is_empty() {
            e.push(
                "options.routerLabels",
                "must select the router's pods, such as app: sandbox-router; an empty selector would admit every pod",
            );
        }
        check_labels("options.routerLabels", &self.router_labels, e);
        if let Some(ns) = &self.router_namespace
            && let Err(why) = check_dns_label(ns)
        {
            e.push(
                "options.routerNamespace",
                format!("`{ns}` is not a namespace name ({why})"),
            );
        }
        if let Err(why) = check_dns_label(&self.dns.namespace) {
            e.push(
                "options.dns.namespace",
                format!("`{}` is not a namespace name ({why})", self.dns.namespace),
            );
        }
        if self.dns.labels.is_empty() {
            e.push(
                "options.dns.labels",
                "must select the DNS pods, such as k8s-app: kube-dns",
            );
        }
        check_labels("options.dns.labels", &self.dns.labels, e);
        Resolved { domains, routes }
    }

    fn resolve_routes(&self, e: &mut Refusals) -> Vec<ResolvedRoute> {
        let builtin: Vec<&str> = RouteKind::NAMES
            .iter()
            .copied()
            .filter(|n| *n != RouteKind::Generic.name())
            .collect();
        let mut routes: Vec<ResolvedRoute> = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("options.routes[{i}]");
            let kind = match route.name.parse::<RouteKind>() {
                Ok(kind) if kind != RouteKind::Generic => kind,
                _ => {
                    e.push(
                        format!("{field}.name"),
                        format!(
                            "`{}` is not a built-in credential route; use one of {} (other routes \
                             need a policy file, which warden's templates do not carry)",
                            route.name,
                            builtin.join(", ")
                        ),
                    );
                    continue;
                }
            };
            if routes.iter().any(|r| r.name == route.name) {
                e.push(
                    format!("{field}.name"),
                    format!("the route `{}` is given twice", route.name),
                );
                continue;
            }
            let mut ok = true;
            let secret = &route.secret_key_ref;
            if let Err(why) = check_dns_subdomain(&secret.name) {
                e.push(
                    format!("{field}.secretKeyRef.name"),
                    format!(
                        "`{}` is not a Secret name ({why}); name the Secret holding the credential",
                        secret.name
                    ),
                );
                ok = false;
            }
            let key_ok = !secret.key.is_empty()
                && secret.key.len() <= 253
                && secret
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                && secret.key != "."
                && secret.key != "..";
            if !key_ok {
                e.push(
                    format!("{field}.secretKeyRef.key"),
                    format!(
                        "`{}` is not a Secret key: use letters, digits, `-`, `_` and `.`",
                        secret.key
                    ),
                );
                ok = false;
            }
            let file = RouteFile {
                upstream: route.upstream.clone(),
                ..RouteFile::default()
            };
            let spec = match file.resolve(&route.name, &field) {
                Ok(spec) => spec,
                Err(err) => {
                    for f in err.errors {
                        e.push(f.field, f.message);
                    }
                    continue;
                }
            };
            let env = match &spec.credential {
                CredentialSpec::Env(var) => var.clone(),
                _ => continue,
            };
            if !ok {
                continue;
            }
            let flag = match &route.upstream {
                Some(_) => format!("{}={}", route.name, spec.upstream),
                None => route.name.clone(),
            };
            routes.push(ResolvedRoute {
                name: route.name.clone(),
                kind,
                upstream: spec.upstream,
                flag,
                env,
                secret: SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: None,
                },
            });
        }
        routes
    }
}

/// The author's pod spec, hardened for warden: the restricted Pod Security Standard on every
/// container, `warden sandboxd` in the sandbox container, the `warden proxy` sidecar with the
/// allowlist and the routes (see the module documentation for every field and the choice
/// between refusing and filling in). Hardening the result again returns it unchanged.
pub fn harden_pod_spec(
    spec: PodSpec,
    opts: &WardenTemplateOptions,
) -> Result<PodSpec, HardenError> {
    let mut e = Refusals::default();
    let resolved = opts.resolve(&mut e);
    let mut spec = spec;

    harden_pod_level(&mut spec, opts, &mut e);

    // Volumes: warden's emptyDirs are re-made below; the author's must be of the restricted
    // kinds.
    let mut volumes = Vec::new();
    for (i, v) in spec
        .volumes
        .take()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = format!("spec.volumes[{i}]");
        if v.name == WORKSPACE_VOLUME || v.name == TMP_VOLUME {
            if v.empty_dir.is_none() {
                e.push(
                    format!("{path}.name"),
                    format!(
                        "`{}` is warden's name for its emptyDir; call this volume something else",
                        v.name
                    ),
                );
            }
            continue;
        }
        if let Some(kind) = restricted_volume_kind(&v) {
            let field = if kind == "hostPath" {
                format!("{path}.hostPath")
            } else {
                path.clone()
            };
            let why = if kind == "hostPath" {
                "hostPath volumes expose the node's filesystem and are refused; use an emptyDir, \
                 a PersistentVolumeClaim (volumeClaimTemplates), a ConfigMap or a Secret"
                    .to_string()
            } else {
                format!(
                    "a `{kind}` volume is not allowed by the restricted Pod Security Standard; use one of {RESTRICTED_VOLUMES}"
                )
            };
            e.push(field, why);
        }
        volumes.push(v);
    }

    // Init containers: warden's sidecar is re-made below; the author's are hardened.
    let mut inits = Vec::new();
    for (i, mut c) in spec
        .init_containers
        .take()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if c.name == PROXY_CONTAINER {
            continue;
        }
        harden_container(&mut c, &format!("spec.initContainers[{i}]"), &mut e);
        inits.push(c);
    }

    // Containers: the sandbox one, and the rest hardened like init containers.
    if spec.containers.is_empty() {
        spec.containers.push(Container {
            name: SANDBOX_CONTAINER.into(),
            ..Container::default()
        });
    }
    let sandbox = match &opts.sandbox_container {
        None => Some(0),
        Some(name) => {
            let found = spec.containers.iter().position(|c| &c.name == name);
            if found.is_none() {
                let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
                e.push(
                    "options.sandboxContainer",
                    format!(
                        "no container is named `{name}`; the containers are: {}",
                        names.join(", ")
                    ),
                );
            }
            found
        }
    };
    let mut uses_workspace = false;
    let mut uses_tmp = false;
    // gVisor implements no Landlock (google/gvisor#13439): its own kernel is the boundary,
    // and sandboxd is told to run without Landlock there (seccomp stays).
    let without_landlock = opts
        .runtime_class
        .as_deref()
        .or(spec.runtime_class_name.as_deref())
        == Some(GVISOR_RUNTIME_CLASS);
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let path = format!("spec.containers[{i}]");
        if c.name == PROXY_CONTAINER {
            e.push(
                format!("{path}.name"),
                format!("`{PROXY_CONTAINER}` is the name of warden's proxy sidecar; call this container something else"),
            );
        }
        harden_container(c, &path, &mut e);
        if Some(i) == sandbox {
            // The user the sandbox runs as, and the field that says so.
            let user = match c.security_context.as_ref().and_then(|s| s.run_as_user) {
                Some(u) => Some((u, format!("{path}.securityContext.runAsUser"))),
                None => spec
                    .security_context
                    .as_ref()
                    .and_then(|s| s.run_as_user)
                    .map(|u| (u, "spec.securityContext.runAsUser".to_string())),
            };
            if let Some((u, field)) = user
                && u == opts.proxy_user
            {
                e.push(
                    field,
                    format!(
                        "{} is the proxy sidecar's user (options.proxyUser); the sandbox must run as another",
                        opts.proxy_user
                    ),
                );
            }
            let (ws, tmp) = make_sandbox(
                c,
                &path,
                &volumes,
                opts,
                &resolved,
                without_landlock,
                &mut e,
            );
            uses_workspace = ws;
            uses_tmp = tmp;
        }
    }
    if uses_workspace {
        volumes.push(empty_dir(WORKSPACE_VOLUME, opts.workspace_size));
    }
    if uses_tmp {
        volumes.push(empty_dir(TMP_VOLUME, opts.tmp_size));
    }
    spec.volumes = Some(volumes);
    inits.insert(0, proxy_container(opts, &resolved));
    spec.init_containers = Some(inits);
    e.finish(spec)
}

fn harden_pod_level(spec: &mut PodSpec, opts: &WardenTemplateOptions, e: &mut Refusals) {
    for (field, value, what) in [
        ("spec.hostNetwork", spec.host_network, "network"),
        ("spec.hostPID", spec.host_pid, "process"),
        ("spec.hostIPC", spec.host_ipc, "IPC"),
    ] {
        if value == Some(true) {
            e.push(
                field,
                format!(
                    "must be false or unset: a sandbox never shares the node's {what} namespace"
                ),
            );
        }
    }
    if spec.share_process_namespace == Some(true) {
        e.push(
            "spec.shareProcessNamespace",
            "must be false or unset: the sandbox would see the proxy sidecar's processes and the credentials in their environment",
        );
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        e.push(
            "spec.ephemeralContainers",
            "must be empty: ephemeral containers are added to running pods by `kubectl debug`, never by a template",
        );
    }
    if let Some(os) = &spec.os
        && os.name != "linux"
    {
        e.push(
            "spec.os.name",
            format!(
                "`{}` is not allowed; warden's sandboxes run on linux (or leave it unset)",
                os.name
            ),
        );
    }
    match spec.automount_service_account_token {
        Some(true) => e.push(
            "spec.automountServiceAccountToken",
            "must be false or unset (warden sets false): a sandbox never holds the service account's API token",
        ),
        _ => spec.automount_service_account_token = Some(false),
    }
    match spec.enable_service_links {
        Some(true) => e.push(
            "spec.enableServiceLinks",
            "must be false or unset (warden sets false): service links list the namespace's services in the sandbox's environment",
        ),
        _ => spec.enable_service_links = Some(false),
    }
    match (&spec.runtime_class_name, &opts.runtime_class) {
        (Some(theirs), Some(ours)) if theirs != ours => e.push(
            "spec.runtimeClassName",
            format!(
                "`{theirs}` contradicts the template's runtime class `{ours}` (options.runtimeClassName); set one of them"
            ),
        ),
        (_, Some(ours)) => spec.runtime_class_name = Some(ours.clone()),
        (Some(theirs), None) => {
            if let Err(why) = check_dns_subdomain(theirs) {
                e.push(
                    "spec.runtimeClassName",
                    format!("`{theirs}` is not a RuntimeClass name ({why})"),
                );
            }
        }
        (None, None) => {}
    }

    let sc = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    let p = "spec.securityContext";
    match sc.run_as_non_root {
        Some(false) => e.push(
            format!("{p}.runAsNonRoot"),
            "must be true or unset (warden sets true)",
        ),
        _ => sc.run_as_non_root = Some(true),
    }
    match sc.run_as_user {
        Some(0) => e.push(
            format!("{p}.runAsUser"),
            format!(
                "must not be 0 (root); leave it unset for {} or give another user id",
                opts.sandbox_user
            ),
        ),
        Some(_) => {}
        None => sc.run_as_user = Some(opts.sandbox_user),
    }
    for (field, value) in [
        ("runAsGroup", &mut sc.run_as_group),
        ("fsGroup", &mut sc.fs_group),
    ] {
        match value {
            Some(0) => e.push(
                format!("{p}.{field}"),
                format!(
                    "must not be 0 (root's group); leave it unset for {} or give another group id",
                    opts.sandbox_user
                ),
            ),
            Some(_) => {}
            None => *value = Some(opts.sandbox_user),
        }
    }
    if let Some(i) = sc
        .supplemental_groups
        .iter()
        .flatten()
        .position(|g| *g == 0)
    {
        e.push(
            format!("{p}.supplementalGroups[{i}]"),
            "must not be 0 (root's group)",
        );
    }
    match &sc.seccomp_profile {
        None => {
            sc.seccomp_profile = Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            })
        }
        Some(s) => check_seccomp(s, &format!("{p}.seccompProfile.type"), e),
    }
    if let Some(a) = &sc.app_armor_profile {
        check_apparmor(&a.type_, &format!("{p}.appArmorProfile.type"), e);
    }
    if let Some(s) = &sc.se_linux_options {
        check_selinux(s, &format!("{p}.seLinuxOptions"), e);
    }
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            e.push(
                format!("{p}.sysctls[{i}].name"),
                format!(
                    "`{}` is not a safe sysctl; allowed: {}",
                    s.name,
                    SAFE_SYSCTLS.join(", ")
                ),
            );
        }
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        e.push(
            format!("{p}.windowsOptions.hostProcess"),
            "must be false or unset",
        );
    }
}

fn check_seccomp(s: &SeccompProfile, field: &str, e: &mut Refusals) {
    match s.type_.as_str() {
        "RuntimeDefault" => {}
        "Localhost" => {
            if s.localhost_profile.as_deref().unwrap_or("").is_empty() {
                e.push(
                    field.replace(".type", ".localhostProfile"),
                    "a Localhost seccomp profile needs localhostProfile, the profile's file on the node",
                );
            }
        }
        other => e.push(
            field,
            format!("`{other}` is not allowed; use RuntimeDefault (or Localhost with a profile)"),
        ),
    }
}

fn check_apparmor(type_: &str, field: &str, e: &mut Refusals) {
    if type_ != "RuntimeDefault" && type_ != "Localhost" {
        e.push(
            field,
            format!("`{type_}` is not allowed; use RuntimeDefault or Localhost, or leave it unset"),
        );
    }
}

fn check_selinux(s: &SELinuxOptions, field: &str, e: &mut Refusals) {
    if let Some(t) = s.type_.as_deref()
        && !t.is_empty()
        && !SELINUX_TYPES.contains(&t)
    {
        e.push(
            format!("{field}.type"),
            format!(
                "`{t}` is not allowed; use one of {} or leave it unset",
                SELINUX_TYPES.join(", ")
            ),
        );
    }
    for (name, value) in [("user", &s.user), ("role", &s.role)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            e.push(
                format!("{field}.{name}"),
                "must be unset: a custom SELinux user or role is refused",
            );
        }
    }
}

/// The restricted profile on one container; `path` is `spec.containers[i]` or
/// `spec.initContainers[i]`.
fn harden_container(c: &mut Container, path: &str, e: &mut Refusals) {
    let p = format!("{path}.securityContext");
    let sc = c
        .security_context
        .get_or_insert_with(SecurityContext::default);
    if sc.privileged == Some(true) {
        e.push(
            format!("{p}.privileged"),
            "must be false or unset: a privileged container holds every capability and the node's devices",
        );
    }
    match sc.allow_privilege_escalation {
        Some(true) => e.push(
            format!("{p}.allowPrivilegeEscalation"),
            "must be false or unset (warden sets false): setuid programs would regain privileges",
        ),
        _ => sc.allow_privilege_escalation = Some(false),
    }
    let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
    if let Some(add) = caps.add.as_ref().filter(|a| !a.is_empty()) {
        e.push(
            format!("{p}.capabilities.add"),
            format!(
                "must be empty: warden drops ALL capabilities and adds none (got {})",
                add.join(", ")
            ),
        );
    }
    let drop = caps.drop.get_or_insert_with(Vec::new);
    if !drop.iter().any(|d| d == "ALL") {
        drop.push("ALL".into());
    }
    if sc.run_as_non_root == Some(false) {
        e.push(
            format!("{p}.runAsNonRoot"),
            "must be true or unset: the pod runs as non-root",
        );
    }
    if sc.run_as_user == Some(0) {
        e.push(
            format!("{p}.runAsUser"),
            "must not be 0 (root); leave it unset for the pod's user",
        );
    }
    if sc.run_as_group == Some(0) {
        e.push(
            format!("{p}.runAsGroup"),
            "must not be 0 (root's group); leave it unset for the pod's group",
        );
    }
    match sc.read_only_root_filesystem {
        Some(false) => e.push(
            format!("{p}.readOnlyRootFilesystem"),
            format!(
                "must be true or unset (warden sets true); write to {WORKSPACE_DIR}, {TMP_DIR} or a mounted volume"
            ),
        ),
        _ => sc.read_only_root_filesystem = Some(true),
    }
    if let Some(s) = &sc.seccomp_profile {
        check_seccomp(s, &format!("{p}.seccompProfile.type"), e);
    }
    if let Some(a) = &sc.app_armor_profile {
        check_apparmor(&a.type_, &format!("{p}.appArmorProfile.type"), e);
    }
    if let Some(s) = &sc.se_linux_options {
        check_selinux(s, &format!("{p}.seLinuxOptions"), e);
    }
    if let Some(m) = sc.proc_mount.as_deref()
        && m != "Default"
    {
        e.push(
            format!("{p}.procMount"),
            format!("`{m}` is not allowed; use Default or leave it unset"),
        );
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        e.push(
            format!("{p}.windowsOptions.hostProcess"),
            "must be false or unset",
        );
    }
    for (j, port) in c.ports.iter().flatten().enumerate() {
        if port.host_port.is_some_and(|h| h != 0) {
            e.push(
                format!("{path}.ports[{j}].hostPort"),
                "must be unset or 0: a sandbox never binds the node's ports",
            );
        }
    }
    for (field, host) in probe_hosts(
        &c.liveness_probe,
        &c.readiness_probe,
        &c.startup_probe,
        &c.lifecycle,
    ) {
        e.push(
            format!("{path}.{field}"),
            format!("`{host}` is refused: probes and lifecycle hooks reach the pod's own address only; leave host unset"),
        );
    }
}

/// `(field below the container, host)` for every probe or lifecycle handler that names a host.
fn probe_hosts(
    liveness: &Option<Probe>,
    readiness: &Option<Probe>,
    startup: &Option<Probe>,
    lifecycle: &Option<Lifecycle>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, probe) in [
        ("livenessProbe", liveness),
        ("readinessProbe", readiness),
        ("startupProbe", startup),
    ] {
        let Some(probe) = probe else { continue };
        if let Some(h) = probe.http_get.as_ref().and_then(|a| a.host.as_ref())
            && !h.is_empty()
        {
            out.push((format!("{name}.httpGet.host"), h.clone()));
        }
        if let Some(h) = probe.tcp_socket.as_ref().and_then(|a| a.host.as_ref())
            && !h.is_empty()
        {
            out.push((format!("{name}.tcpSocket.host"), h.clone()));
        }
    }
    if let Some(l) = lifecycle {
        for (name, handler) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            let Some(handler) = handler else { continue };
            let LifecycleHandler {
                http_get,
                tcp_socket,
                ..
            } = handler;
            if let Some(h) = http_get.as_ref().and_then(|a| a.host.as_ref())
                && !h.is_empty()
            {
                out.push((format!("lifecycle.{name}.httpGet.host"), h.clone()));
            }
            if let Some(h) = tcp_socket.as_ref().and_then(|a| a.host.as_ref())
                && !h.is_empty()
            {
                out.push((format!("lifecycle.{name}.tcpSocket.host"), h.clone()));
            }
        }
    }
    out
}

/// The source kind of a volume the restricted standard does not allow, or `None`.
fn restricted_volume_kind(v: &Volume) -> Option<&'static str> {
    let allowed = v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.secret.is_some();
    if allowed {
        return None;
    }
    let kinds: [(&'static str, bool); 22] = [
        ("hostPath", v.host_path.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("cinder", v.cinder.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("flocker", v.flocker.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("nfs", v.nfs.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("rbd", v.rbd.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
    ];
    Some(
        kinds
            .iter()
            .find(|(_, set)| *set)
            .map(|(k, _)| *k)
            .unwrap_or("unknown"),
    )
}

/// Makes `c` the sandbox container; returns whether it mounts warden's workspace and tmp
/// emptyDirs.
#[allow(clippy::too_many_arguments)]
fn make_sandbox(
    c: &mut Container,
    path: &str,
    volumes: &[Volume],
    opts: &WardenTemplateOptions,
    resolved: &Resolved,
    without_landlock: bool,
    e: &mut Refusals,
) -> (bool, bool) {
    // No route's secret and no service-account token, by any way into this container.
    let secret_names: BTreeSet<&str> = resolved
        .routes
        .iter()
        .map(|r| r.secret.name.as_str())
        .collect();
    for (j, var) in c.env.iter().flatten().enumerate() {
        if let Some(r) = var
            .value_from
            .as_ref()
            .and_then(|s| s.secret_key_ref.as_ref())
            && secret_names.contains(r.name.as_str())
        {
            e.push(
                format!("{path}.env[{j}].valueFrom.secretKeyRef"),
                format!(
                    "the Secret `{}` holds a credential route's secret, which only the proxy sidecar receives; the sandbox reaches the route without it",
                    r.name
                ),
            );
        }
    }
    for (j, from) in c.env_from.iter().flatten().enumerate() {
        if let Some(r) = &from.secret_ref
            && secret_names.contains(r.name.as_str())
        {
            e.push(
                format!("{path}.envFrom[{j}].secretRef"),
                format!(
                    "the Secret `{}` holds a credential route's secret, which only the proxy sidecar receives",
                    r.name
                ),
            );
        }
    }
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(v) = volumes.iter().find(|v| v.name == m.name) else {
            continue;
        };
        let mut carries = Vec::new();
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
            && secret_names.contains(s)
        {
            carries.push(format!("the route Secret `{s}`"));
        }
        for source in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(s) = &source.secret
                && secret_names.contains(s.name.as_str())
            {
                carries.push(format!("the route Secret `{}`", s.name));
            }
            if source.service_account_token.is_some() {
                carries.push("a service-account token".to_string());
            }
        }
        if !carries.is_empty() {
            e.push(
                format!("{path}.volumeMounts[{j}]"),
                format!(
                    "the volume `{}` carries {}, which never enters the sandbox container",
                    m.name,
                    carries.join(" and ")
                ),
            );
        }
    }

    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        c.image = Some(opts.image.clone());
    }

    let mut mounts: Vec<VolumeMount> = c
        .volume_mounts
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.name != WORKSPACE_VOLUME && m.name != TMP_VOLUME)
        .collect();
    let mounted = |mounts: &[VolumeMount], dir: &str| {
        mounts
            .iter()
            .any(|m| m.mount_path.trim_end_matches('/') == dir)
    };
    let uses_workspace = !mounted(&mounts, WORKSPACE_DIR);
    let uses_tmp = !mounted(&mounts, TMP_DIR);
    for (uses, name, dir) in [
        (uses_workspace, WORKSPACE_VOLUME, WORKSPACE_DIR),
        (uses_tmp, TMP_VOLUME, TMP_DIR),
    ] {
        if uses {
            mounts.push(VolumeMount {
                name: name.into(),
                mount_path: dir.into(),
                ..VolumeMount::default()
            });
        }
    }
    c.volume_mounts = Some(mounts);

    let ports = opts.sandboxd_ports;
    let mut args = Vec::new();
    for (_, port) in ports.named() {
        args.push("--listen".to_string());
        args.push(format!("0.0.0.0:{port}"));
    }
    args.extend([
        "--root".into(),
        WORKSPACE_DIR.into(),
        "--jail".into(),
        "pod".into(),
        // Commands may connect to the sidecar's port and nothing else (Landlock).
        "--egress-proxy".into(),
        format!("127.0.0.1:{}", opts.proxy_port),
    ]);
    if uses_workspace {
        args.extend(["--quota".into(), opts.workspace_size.to_string()]);
    }
    if without_landlock {
        args.extend(["--allow-degraded".into(), "landlock".into()]);
    }
    c.command = Some(vec!["warden".into(), "sandboxd".into()]);
    c.args = Some(args);
    c.ports = Some(
        ports
            .named()
            .iter()
            .map(|(name, port)| ContainerPort {
                name: Some((*name).into()),
                container_port: i32::from(*port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            })
            .collect(),
    );
    c.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some(SANDBOXD_HEALTH_PATH.into()),
            port: IntOrString::Int(i32::from(ports.http)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    });

    let ours = sandbox_environment(opts.proxy_port, &resolved.routes);
    let mut env: Vec<EnvVar> = c
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !ours.iter().any(|(name, _)| *name == v.name))
        .collect();
    if !env.iter().any(|v| v.name == "HOME") {
        env.push(EnvVar {
            name: "HOME".into(),
            value: Some(WORKSPACE_DIR.into()),
            value_from: None,
        });
    }
    env.extend(ours.into_iter().map(|(name, value)| EnvVar {
        name,
        value: Some(value),
        value_from: None,
    }));
    c.env = Some(env);
    (uses_workspace, uses_tmp)
}

/// The sandbox's view of the proxy sidecar: the same variables `warden run` sets
/// ([`warden_policy::proxy_environment`]).
fn sandbox_environment(proxy_port: u16, routes: &[ResolvedRoute]) -> Vec<(String, String)> {
    warden_policy::proxy_environment(
        &format!("http://127.0.0.1:{proxy_port}"),
        routes.iter().map(|r| warden_policy::RouteView {
            name: &r.name,
            kind: r.kind,
            upstream: &r.upstream,
        }),
    )
}

/// The `warden proxy` sidecar.
fn proxy_container(opts: &WardenTemplateOptions, resolved: &Resolved) -> Container {
    let mut args = vec![
        "proxy".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", opts.proxy_port),
        "--admin-listen".into(),
        format!("0.0.0.0:{}", opts.proxy_admin_port),
        "--sandbox-id".into(),
        "$(POD_NAME)".into(),
    ];
    for d in &resolved.domains {
        args.push("--allow-domain".into());
        args.push(d.clone());
    }
    for r in &resolved.routes {
        args.push("--route".into());
        args.push(r.flag.clone());
    }
    let mut env = vec![EnvVar {
        name: "POD_NAME".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "metadata.name".into(),
            }),
            ..EnvVarSource::default()
        }),
    }];
    for r in &resolved.routes {
        env.push(EnvVar {
            name: r.env.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(r.secret.clone()),
                ..EnvVarSource::default()
            }),
        });
    }
    let health = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(PROXY_HEALTH_PATH.into()),
            port: IntOrString::Int(i32::from(opts.proxy_admin_port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(opts.image.clone()),
        command: Some(vec!["warden".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("proxy-admin".into()),
            container_port: i32::from(opts.proxy_admin_port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        restart_policy: Some("Always".into()),
        startup_probe: Some(health(1, 30)),
        readiness_probe: Some(health(5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(opts.proxy_user),
            run_as_group: Some(opts.proxy_user),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn empty_dir(name: &str, size: u64) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(quantity(size)),
        }),
        ..Volume::default()
    }
}

/// Bytes as a Kubernetes quantity, in the largest binary unit that divides them.
fn quantity(bytes: u64) -> Quantity {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return Quantity(format!("{}{unit}", bytes >> shift));
        }
    }
    Quantity(bytes.to_string())
}

/// The labels that select a template's pods: `agents.x-k8s.io/sandbox-template-ref-hash` =
/// the hash of the template's name, as upstream's controller selects them.
pub fn template_pod_selector(template_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        SANDBOX_TEMPLATE_REF_HASH.to_string(),
        name_hash(template_name),
    )])
}

fn network_policy_name(template_name: &str) -> String {
    format!("{template_name}-network-policy")
}

fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        match_expressions: None,
    }
}

fn ip_block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: Some(except.iter().map(|c| c.to_string()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(port))),
        end_port: None,
    }
}

/// The NetworkPolicy of a warden template, `<template>-network-policy`: ingress only from the
/// router's pods to sandboxd's ports; egress only to cluster DNS (UDP and TCP 53) and to TCP
/// 80 and 443 outside [`WARDEN_EXCEPT_IPV4`] and [`WARDEN_EXCEPT_IPV6`], which the proxy
/// sidecar needs. See the module documentation for what it cannot enforce.
pub fn network_policy(
    template_name: &str,
    namespace: &str,
    opts: &WardenTemplateOptions,
) -> NetworkPolicy {
    let router = NetworkPolicyPeer {
        pod_selector: Some(selector(&opts.router_labels)),
        namespace_selector: opts.router_namespace.as_ref().map(|ns| {
            selector(&BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                ns.clone(),
            )]))
        }),
        ip_block: None,
    };
    let dns = NetworkPolicyPeer {
        pod_selector: Some(selector(&opts.dns.labels)),
        namespace_selector: Some(selector(&BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            opts.dns.namespace.clone(),
        )]))),
        ip_block: None,
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(template_name)),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(&template_pod_selector(template_name))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![router]),
                ports: Some(
                    opts.sandboxd_ports
                        .named()
                        .iter()
                        .map(|(_, p)| port("TCP", *p))
                        .collect(),
                ),
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![dns]),
                    ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![
                        ip_block("0.0.0.0/0", &WARDEN_EXCEPT_IPV4),
                        ip_block("::/0", &WARDEN_EXCEPT_IPV6),
                    ]),
                    ports: Some(vec![port("TCP", 443), port("TCP", 80)]),
                },
            ]),
        }),
    }
}

/// The NetworkPolicy upstream's template controller keeps for a managed template without
/// rules of its own: ingress only from `app: sandbox-router` pods of the namespace, egress to
/// any port outside [`UPSTREAM_EXCEPT_IPV4`] and [`UPSTREAM_EXCEPT_IPV6`] (cluster DNS
/// included in what it blocks).
pub fn upstream_default_network_policy(template_name: &str, namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(template_name)),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(&template_pod_selector(template_name))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(selector(&BTreeMap::from([(
                        "app".to_string(),
                        "sandbox-router".to_string(),
                    )]))),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: None,
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![
                    ip_block("0.0.0.0/0", &UPSTREAM_EXCEPT_IPV4),
                    ip_block("::/0", &UPSTREAM_EXCEPT_IPV6),
                ]),
                ports: None,
            }]),
        }),
    }
}

/// Every rule of the `restricted` Pod Security Standard (baseline's included) that `spec`
/// breaks, each as `field: what is wrong`. Written from the published rule list as of
/// Kubernetes 1.36; rules on pod metadata (AppArmor annotations) are out of a PodSpec's reach.
/// Pods with `os.name: windows` skip the Linux-only rules, as the standard says.
pub fn restricted_violations(spec: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut v = |field: String, rule: &str, msg: &str| out.push(format!("{field}: {msg} ({rule})"));
    let windows = spec.os.as_ref().is_some_and(|os| os.name == "windows");
    let pod_sc = spec.security_context.clone().unwrap_or_default();

    // Baseline: host namespaces.
    for (field, value) in [
        ("spec.hostNetwork", spec.host_network),
        ("spec.hostPID", spec.host_pid),
        ("spec.hostIPC", spec.host_ipc),
    ] {
        if value == Some(true) {
            v(field.into(), "Host Namespaces", "must be false or unset");
        }
    }
    // Baseline: HostProcess, SELinux, seccomp and AppArmor types, sysctls (pod level).
    if pod_sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        v(
            "spec.securityContext.windowsOptions.hostProcess".into(),
            "HostProcess",
            "must be false or unset",
        );
    }
    if let Some(s) = &pod_sc.se_linux_options {
        selinux_violations("spec.securityContext.seLinuxOptions", s, &mut v);
    }
    if let Some(a) = &pod_sc.app_armor_profile
        && a.type_ == "Unconfined"
    {
        v(
            "spec.securityContext.appArmorProfile.type".into(),
            "AppArmor",
            "must not be Unconfined",
        );
    }
    for (i, s) in pod_sc.sysctls.iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v(
                format!("spec.securityContext.sysctls[{i}].name"),
                "Sysctls",
                "must be one of the safe sysctls",
            );
        }
    }
    // Restricted: volume types (baseline's hostPath included).
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        if let Some(kind) = restricted_volume_kind(vol) {
            let (field, rule) = if kind == "hostPath" {
                (format!("spec.volumes[{i}].hostPath"), "HostPath Volumes")
            } else {
                (format!("spec.volumes[{i}]"), "Volume Types")
            };
            v(field, rule, &format!("`{kind}` volumes are not allowed"));
        }
    }
    // Restricted: running as non-root, non-root user, seccomp (pod level).
    let pod_non_root = pod_sc.run_as_non_root == Some(true);
    if pod_sc.run_as_non_root == Some(false) {
        v(
            "spec.securityContext.runAsNonRoot".into(),
            "Running as Non-root",
            "must be true",
        );
    }
    if pod_sc.run_as_user == Some(0) {
        v(
            "spec.securityContext.runAsUser".into(),
            "Running as Non-root user",
            "must not be 0",
        );
    }
    let seccomp_ok = |s: &Option<SeccompProfile>| {
        s.as_ref()
            .is_some_and(|s| s.type_ == "RuntimeDefault" || s.type_ == "Localhost")
    };
    let pod_seccomp = seccomp_ok(&pod_sc.seccomp_profile);
    if !windows
        && let Some(s) = &pod_sc.seccomp_profile
        && !pod_seccomp
    {
        v(
            "spec.securityContext.seccompProfile.type".into(),
            "Seccomp",
            &format!("`{}` is not RuntimeDefault or Localhost", s.type_),
        );
    }

    let mut containers: Vec<(String, ContainerView)> = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        containers.push((format!("spec.containers[{i}]"), ContainerView::of(c)));
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        containers.push((format!("spec.initContainers[{i}]"), ContainerView::of(c)));
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        containers.push((
            format!("spec.ephemeralContainers[{i}]"),
            ContainerView {
                security_context: c.security_context.clone(),
                ports: c.ports.clone().unwrap_or_default(),
                probes: probe_hosts(
                    &c.liveness_probe,
                    &c.readiness_probe,
                    &c.startup_probe,
                    &c.lifecycle,
                ),
            },
        ));
    }
    for (path, c) in &containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let p = format!("{path}.securityContext");
        if sc.privileged == Some(true) {
            v(
                format!("{p}.privileged"),
                "Privileged Containers",
                "must be false or unset",
            );
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            v(
                format!("{p}.windowsOptions.hostProcess"),
                "HostProcess",
                "must be false or unset",
            );
        }
        if let Some(s) = &sc.se_linux_options {
            selinux_violations(&format!("{p}.seLinuxOptions"), s, &mut v);
        }
        if let Some(a) = &sc.app_armor_profile
            && a.type_ == "Unconfined"
        {
            v(
                format!("{p}.appArmorProfile.type"),
                "AppArmor",
                "must not be Unconfined",
            );
        }
        if let Some(m) = sc.proc_mount.as_deref()
            && m != "Default"
        {
            v(
                format!("{p}.procMount"),
                "/proc Mount Type",
                "must be Default or unset",
            );
        }
        for (j, port) in c.ports.iter().enumerate() {
            if port.host_port.is_some_and(|h| h != 0) {
                v(
                    format!("{path}.ports[{j}].hostPort"),
                    "Host Ports",
                    "must be unset or 0",
                );
            }
        }
        for (field, _) in &c.probes {
            v(
                format!("{path}.{field}"),
                "Host Probes / Lifecycle Hooks",
                "must be unset or empty",
            );
        }
        if sc.run_as_non_root == Some(false) || (!pod_non_root && sc.run_as_non_root != Some(true))
        {
            v(
                format!("{p}.runAsNonRoot"),
                "Running as Non-root",
                "must be true, here or at the pod level",
            );
        }
        if sc.run_as_user == Some(0) {
            v(
                format!("{p}.runAsUser"),
                "Running as Non-root user",
                "must not be 0",
            );
        }
        if windows {
            continue;
        }
        if sc.allow_privilege_escalation != Some(false) {
            v(
                format!("{p}.allowPrivilegeEscalation"),
                "Privilege Escalation",
                "must be false",
            );
        }
        match &sc.seccomp_profile {
            Some(s) if s.type_ != "RuntimeDefault" && s.type_ != "Localhost" => v(
                format!("{p}.seccompProfile.type"),
                "Seccomp",
                &format!("`{}` is not RuntimeDefault or Localhost", s.type_),
            ),
            None if !pod_seccomp => v(
                format!("{p}.seccompProfile.type"),
                "Seccomp",
                "must be RuntimeDefault or Localhost, here or at the pod level",
            ),
            _ => {}
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            v(
                format!("{p}.capabilities.drop"),
                "Capabilities",
                "must include ALL",
            );
        }
        for (j, cap) in caps.add.iter().flatten().enumerate() {
            if cap != "NET_BIND_SERVICE" {
                v(
                    format!("{p}.capabilities.add[{j}]"),
                    "Capabilities",
                    &format!("`{cap}` may not be added; only NET_BIND_SERVICE may"),
                );
            }
        }
    }
    out
}

/// The parts of a container or an ephemeral container the standard looks at.
struct ContainerView {
    security_context: Option<SecurityContext>,
    ports: Vec<ContainerPort>,
    probes: Vec<(String, String)>,
}

impl ContainerView {
    fn of(c: &Container) -> Self {
        ContainerView {
            security_context: c.security_context.clone(),
            ports: c.ports.clone().unwrap_or_default(),
            probes: probe_hosts(
                &c.liveness_probe,
                &c.readiness_probe,
                &c.startup_probe,
                &c.lifecycle,
            ),
        }
    }
}

fn selinux_violations(field: &str, s: &SELinuxOptions, v: &mut impl FnMut(String, &str, &str)) {
    if let Some(t) = s.type_.as_deref()
        && !t.is_empty()
        && !SELINUX_TYPES.contains(&t)
    {
        v(
            format!("{field}.type"),
            "SELinux",
            "must be unset or a container type",
        );
    }
    for (name, value) in [("user", &s.user), ("role", &s.role)] {
        if value.as_deref().is_some_and(|x| !x.is_empty()) {
            v(format!("{field}.{name}"), "SELinux", "must be unset");
        }
    }
}

/// A DNS-1123 label: 1 to 63 of `a-z`, `0-9` and `-`, starting and ending alphanumeric.
fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("1 to 63 characters".into());
    }
    if warden_policy::is_dns_label(s) {
        Ok(())
    } else {
        Err("lowercase letters, digits and `-`, starting and ending with a letter or digit".into())
    }
}

/// A DNS-1123 subdomain: at most 253 characters, labels joined by `.`.
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("1 to 253 characters".into());
    }
    for label in s.split('.') {
        check_dns_label(label).map_err(|_| {
            "lowercase letters, digits, `-` and `.`, each part starting and ending with a letter or digit"
                .to_string()
        })?;
    }
    Ok(())
}

/// Label keys (`[prefix/]name`) and values as Kubernetes accepts them.
fn check_labels(field: &str, labels: &BTreeMap<String, String>, e: &mut Refusals) {
    fn name_ok(s: &str) -> bool {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    }
    for (key, value) in labels {
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        if !name_ok(name) || prefix.is_some_and(|p| check_dns_subdomain(p).is_err()) {
            e.push(
                format!("{field}.{key}"),
                format!("`{key}` is not a label key: [prefix/]name, the name up to 63 letters, digits, `-`, `_` and `.`"),
            );
        }
        if !value.is_empty() && !name_ok(value) {
            e.push(
                format!("{field}.{key}"),
                format!("`{value}` is not a label value: up to 63 letters, digits, `-`, `_` and `.`, starting and ending alphanumeric"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_use_the_largest_binary_unit() {
        let cases = [
            (10 << 30, "10Gi"),
            (1 << 30, "1Gi"),
            (1536 << 20, "1536Mi"),
            (1 << 20, "1Mi"),
            (3 << 10, "3Ki"),
            (1000, "1000"),
            (2 << 40, "2Ti"),
        ];
        for (bytes, want) in cases {
            assert_eq!(quantity(bytes).0, want, "{bytes}");
        }
    }

    #[test]
    fn dns_names() {
        for ok in ["gvisor", "kata", "kata-qemu", "runsc.gvisor.dev", "a", "a1"] {
            assert!(check_dns_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "GVisor",
            "-kata",
            "kata-",
            "a..b",
            "a_b",
            "a b",
            &"x".repeat(254),
        ] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad}");
        }
        assert!(check_dns_label("a.b").is_err());
        assert!(check_dns_label(&"x".repeat(64)).is_err());
    }

    #[test]
    fn environment_mirrors_warden_run() {
        let routes = vec![
            ResolvedRoute {
                name: "anthropic".into(),
                kind: RouteKind::Anthropic,
                upstream: "https://api.anthropic.com".into(),
                flag: "anthropic".into(),
                env: "ANTHROPIC_API_KEY".into(),
                secret: SecretKeySelector::default(),
            },
            ResolvedRoute {
                name: "git".into(),
                kind: RouteKind::Git,
                upstream: "https://github.com".into(),
                flag: "git".into(),
                env: "GITHUB_TOKEN".into(),
                secret: SecretKeySelector::default(),
            },
        ];
        let env: BTreeMap<String, String> =
            sandbox_environment(3128, &routes).into_iter().collect();
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["https_proxy"], "http://127.0.0.1:3128");
        assert_eq!(env["ALL_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["NO_PROXY"], "");
        assert_eq!(
            env["WARDEN_ROUTE_ANTHROPIC"],
            "http://127.0.0.1:3128/anthropic"
        );
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:3128/anthropic");
        assert_eq!(env["ANTHROPIC_API_KEY"], CREDENTIAL_PLACEHOLDER);
        assert_eq!(env["GIT_CONFIG_COUNT"], "1");
        assert_eq!(
            env["GIT_CONFIG_KEY_0"],
            "url.http://127.0.0.1:3128/git/.insteadOf"
        );
        assert_eq!(env["GIT_CONFIG_VALUE_0"], "https://github.com/");
        assert!(!env.contains_key("OPENAI_BASE_URL"));
    }
}
