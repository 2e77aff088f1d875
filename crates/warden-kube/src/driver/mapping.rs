//! The pure half of the Kubernetes driver: warden's templates, pools and sandboxes as
//! agent-sandbox objects and back, phases from conditions, and claim failures as
//! [`DriverError`]s. No I/O.
//!
//! # How a warden template maps
//!
//! A warden [`Template`] becomes a SandboxTemplate of the same name whose pod runs one
//! container, `sandbox`, with the driver's image, hardened by [`harden_pod_spec`] (restricted
//! Pod Security, `warden sandboxd --jail pod`, the `warden proxy` sidecar), and whose
//! NetworkPolicy is warden's ([`harden::network_policy`]: ingress only from the router, egress
//! only to cluster DNS and public 80/443). The whole template is kept as JSON in the
//! [`ANNOTATION_TEMPLATE`] annotation, so that `templates()` gives back what was put.
//!
//! Mapped: `network.allow_domains` (with mode `proxy`) → the proxy's allowlist;
//! `resources.memory` and `resources.cpus` → the sandbox container's limits and requests;
//! `filesystem.tmp_size` → the `/tmp` emptyDir; `workspace_quota` → the `/workspace` emptyDir
//! and sandboxd's quota; `environment.set` (and a create request's `env`) → the sandbox
//! container's environment; `shutdown_after` → `shutdownTime` of each claim or Sandbox.
//!
//! Refused, because a pod cannot honour them and silently dropping them would grant or deny
//! something other than what the policy says: `network.mode = "host"`, `deny_domains`,
//! `allow_ports`, `allow_cidrs` (the NetworkPolicy and the proxy admit public 80/443 only),
//! and credential `routes` (on Kubernetes their secrets come from Secrets, which a policy file
//! cannot name; use a SandboxTemplate written with `harden`'s options instead).
//!
//! Not mapped, and said so here: `profile` and `isolation` (a pod's commands are always
//! jailed by `sandboxd --jail pod`: Landlock and seccomp in the pod's own namespaces), the
//! `filesystem` view other than `tmp_size` (the root is the image, read-only; the workspace is
//! `/workspace`), `resources.pids`, `timeout`, `file_size` and `open_files` (no per-pod
//! equivalent; an exec request carries its own timeout), `environment.pass` (the pod's
//! environment is the container's), and `idle_timeout` (agent-sandbox has no idle timeout;
//! sandboxes end at their shutdown time or when deleted).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use warden_policy::{NetworkMode, PolicyFile, Profile};
use warden_sandbox::{
    DriverError, Launch, Phase, PoolSpec, PoolStatus, SandboxInfo, Template,
    template::{check_template, policy_text},
};

use crate::crd::conditions::{claim as claim_reason, sandbox as sandbox_reason, types};
use crate::crd::labels::{LAUNCH_TYPE, LAUNCH_TYPE_WARM, SANDBOX_TEMPLATE_REF_ANNOTATION};
use crate::crd::{
    NetworkPolicySpec, OperatingMode, PodMetadata, PodTemplate, Sandbox, SandboxClaim,
    SandboxTemplate, SandboxTemplateRef, SandboxTemplateSpec, SandboxWarmPool, SandboxWarmPoolSpec,
};
use crate::harden::{self, HardenError, SANDBOX_CONTAINER, WardenTemplateOptions, harden_pod_spec};

/// On every object the driver makes: `app.kubernetes.io/managed-by=warden`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const WARDEN: &str = "warden";
/// `MANAGED_BY=WARDEN`, as a label selector.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=warden";
/// On a SandboxTemplate: the warden [`Template`] it was made from, as JSON.
pub const ANNOTATION_TEMPLATE: &str = "warden.dev/template";
/// On a claimed Sandbox: the SandboxClaim that holds it.
pub const LABEL_CLAIM: &str = "warden.dev/claim";
/// On a claimed Sandbox: the pool it was claimed from.
pub const ANNOTATION_POOL: &str = "warden.dev/pool";
/// On a Sandbox: the caller's labels (any strings), as a JSON object.
pub const ANNOTATION_LABELS: &str = "warden.dev/labels";

/// What the driver adds to every template: its image, sandboxd's port, the router's
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateDefaults {
    /// warden's image: the sandbox container's and the proxy sidecar's.
    pub image: String,
    /// sandboxd's REST port (the driver's calls go there through the router).
    pub sandboxd_port: u16,
    /// The router's namespace, admitted by the NetworkPolicy; `None`: the template's own.
    pub router_namespace: Option<String>,
    /// The namespace the objects live in.
    pub namespace: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DriverError {
    DriverError::InvalidArgument {
        field: field.into(),
        message: message.into(),
    }
}

fn managed_meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.to_string(),
            WARDEN.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// Whether an object carries `app.kubernetes.io/managed-by=warden`.
pub fn is_managed(meta: &ObjectMeta) -> bool {
    label(meta, MANAGED_BY) == Some(WARDEN)
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The options and the author's pod spec a template hardens, or why it cannot map.
pub fn template_options(
    t: &Template,
    env: &BTreeMap<String, String>,
    defaults: &TemplateDefaults,
) -> Result<(WardenTemplateOptions, PodSpec), DriverError> {
    let text = policy_text(t, env)?;
    warden_sandbox::template::check_policy(&text)?;
    let file = PolicyFile::from_toml(&text).map_err(|e| invalid("policy", e.to_string()))?;
    let refuse = |field: &str, why: &str| {
        invalid(
            format!("policy.{field}"),
            format!("not supported by the Kubernetes driver: {why}"),
        )
    };
    if !file.routes.is_empty() {
        return Err(refuse(
            "routes",
            "credential routes take their secrets from Kubernetes Secrets, which a policy file \
             cannot name; write a SandboxTemplate with warden's options instead",
        ));
    }
    let n = &file.network;
    if n.deny_domains.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(refuse(
            "network.deny_domains",
            "the pod's proxy takes an allowlist only; leave the denied domains out of \
             allow_domains",
        ));
    }
    if n.allow_ports.as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(refuse(
            "network.allow_ports",
            "the NetworkPolicy admits ports 80 and 443 only",
        ));
    }
    if n.allow_cidrs.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(refuse(
            "network.allow_cidrs",
            "the NetworkPolicy and the proxy refuse private ranges",
        ));
    }
    let env_set = file.environment.set.clone().unwrap_or_default();
    let home = std::path::PathBuf::from("/");
    let policy = file
        .apply(Profile::Default, std::path::Path::new("/"), &home)
        .map_err(|e| invalid("policy", e.to_string()))?;
    let mut opts = WardenTemplateOptions::new(defaults.image.clone());
    match policy.network.mode {
        NetworkMode::Host => {
            return Err(refuse(
                "network.mode",
                "`host` has no equivalent in a pod; use `proxy` with allow_domains",
            ));
        }
        NetworkMode::Proxy => {
            opts.allow_domains = policy
                .network
                .allow_domains
                .iter()
                .map(|d| d.to_string())
                .collect();
        }
        NetworkMode::None => {}
    }
    opts.tmp_size = policy.filesystem.tmp_size.0;
    if let Some(q) = t.workspace_quota {
        opts.workspace_size = q;
    }
    opts.sandboxd_ports.http = defaults.sandboxd_port;
    opts.router_namespace = defaults.router_namespace.clone();

    let mut limits = BTreeMap::new();
    if let Some(m) = policy.resources.memory {
        limits.insert("memory".to_string(), Quantity(m.0.to_string()));
    }
    if let Some(c) = policy.resources.cpus {
        let milli = (c * 1000.0).ceil().max(1.0) as u64;
        limits.insert("cpu".to_string(), Quantity(format!("{milli}m")));
    }
    let env: Vec<EnvVar> = env_set
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect();
    let container = Container {
        name: SANDBOX_CONTAINER.to_string(),
        image: Some(defaults.image.clone()),
        env: (!env.is_empty()).then_some(env),
        resources: (!limits.is_empty()).then(|| ResourceRequirements {
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let spec = PodSpec {
        containers: vec![container],
        ..PodSpec::default()
    };
    Ok((opts, spec))
}

fn harden_error(e: HardenError) -> DriverError {
    let field = e
        .refusals
        .first()
        .map(|r| match r.field.as_str() {
            "options.workspaceSize" => "workspace_quota".to_string(),
            "options.tmpSize" => "policy.filesystem.tmp_size".to_string(),
            "options.image" => "image".to_string(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "policy".into());
    invalid(field, e.to_string())
}

/// The hardened pod spec of a sandbox of `t` (with `env` on top of the policy's).
pub fn pod_spec(
    t: &Template,
    env: &BTreeMap<String, String>,
    defaults: &TemplateDefaults,
) -> Result<PodSpec, DriverError> {
    let (opts, spec) = template_options(t, env, defaults)?;
    harden_pod_spec(spec, &opts).map_err(harden_error)
}

/// The SandboxTemplate for warden template `t`.
pub fn sandbox_template(
    t: &Template,
    defaults: &TemplateDefaults,
) -> Result<SandboxTemplate, DriverError> {
    check_template(t)?;
    let (opts, spec) = template_options(t, &BTreeMap::new(), defaults)?;
    let spec = harden_pod_spec(spec, &opts).map_err(harden_error)?;
    let rules = harden::network_policy(&t.name, &defaults.namespace, &opts)
        .spec
        .unwrap_or_default();
    let mut meta = managed_meta(&t.name, &defaults.namespace);
    let json = serde_json::to_string(t)
        .map_err(|e| DriverError::Internal(format!("template `{}`: {e}", t.name)))?;
    meta.annotations = Some(BTreeMap::from([(ANNOTATION_TEMPLATE.to_string(), json)]));
    Ok(SandboxTemplate {
        metadata: meta,
        spec: SandboxTemplateSpec {
            pod_template: PodTemplate {
                spec,
                metadata: PodMetadata::default(),
            },
            volume_claim_templates: Vec::new(),
            service: None,
            network_policy: Some(NetworkPolicySpec {
                ingress: rules.ingress.unwrap_or_default(),
                egress: rules.egress.unwrap_or_default(),
            }),
            network_policy_management: Default::default(),
            env_vars_injection_policy: Default::default(),
            volume_claim_templates_policy: Default::default(),
        },
    })
}

/// The warden template a SandboxTemplate made by the driver holds.
pub fn template_of(st: &SandboxTemplate) -> Option<Template> {
    if !is_managed(&st.metadata) {
        return None;
    }
    serde_json::from_str(annotation(&st.metadata, ANNOTATION_TEMPLATE)?).ok()
}

/// The SandboxWarmPool for a pool.
pub fn warm_pool(p: &PoolSpec, namespace: &str) -> SandboxWarmPool {
    SandboxWarmPool {
        metadata: managed_meta(&p.name, namespace),
        spec: SandboxWarmPoolSpec {
            replicas: i32::try_from(p.replicas).unwrap_or(i32::MAX),
            sandbox_template_ref: SandboxTemplateRef {
                name: p.template.clone(),
            },
            update_strategy: None,
        },
        status: None,
    }
}

/// A pool as `pools()` shows it, from its status.
pub fn pool_status(p: &SandboxWarmPool) -> PoolStatus {
    let status = p.status.clone().unwrap_or_default();
    let count = |n: i32| u32::try_from(n).unwrap_or(0);
    PoolStatus {
        name: p.metadata.name.clone().unwrap_or_default(),
        template: p.spec.sandbox_template_ref.name.clone(),
        replicas: count(p.spec.replicas),
        ready: count(status.ready_replicas),
        starting: count(status.replicas.saturating_sub(status.ready_replicas)),
    }
}

fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

/// A Sandbox's phase, from its conditions (and its spec while the controller catches up).
pub fn phase(sandbox: &Sandbox) -> (Phase, Option<String>) {
    if sandbox.metadata.deletion_timestamp.is_some() {
        return (Phase::Stopped, Some("being deleted".into()));
    }
    let conditions = sandbox
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = condition(conditions, types::READY);
    let message = ready.filter(|c| c.status != "True").map(|c| {
        format!("{}: {}", c.reason, c.message)
            .trim_end_matches(": ")
            .to_string()
    });
    if let Some(f) = condition(conditions, types::FINISHED)
        && f.status == "True"
    {
        let phase = if f.reason == sandbox_reason::POD_SUCCEEDED {
            Phase::Stopped
        } else {
            Phase::Failed
        };
        return (phase, Some(format!("{}: {}", f.reason, f.message)));
    }
    match ready {
        // Also when asked to suspend and the controller has not acted yet.
        Some(c) if c.status == "True" => (Phase::Ready, None),
        Some(c) if c.reason == sandbox_reason::SANDBOX_EXPIRED => (Phase::Stopped, message),
        Some(c)
            if c.reason == sandbox_reason::RECONCILER_ERROR
                || c.reason == sandbox_reason::INVALID_CONFIGURATION
                || c.reason == sandbox_reason::MULTIPLE_PODS =>
        {
            (Phase::Failed, message)
        }
        _ if sandbox.spec.operating_mode == OperatingMode::Suspended => {
            let done = condition(conditions, types::SUSPENDED).is_some_and(|c| c.status == "True");
            if done {
                (Phase::Suspended, None)
            } else {
                (Phase::Starting, Some("suspending".into()))
            }
        }
        _ => (Phase::Starting, message),
    }
}

/// Who holds a Sandbox: the SandboxClaim or SandboxWarmPool that controls it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Claim(String),
    Pool(String),
    None,
}

/// The controller of a Sandbox, by its controller ownerReference (or, for a claim, the
/// driver's [`LABEL_CLAIM`]).
pub fn holder(sandbox: &Sandbox) -> Holder {
    let controller = sandbox
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) if o.kind == "SandboxClaim" => Holder::Claim(o.name.clone()),
        Some(o) if o.kind == "SandboxWarmPool" => Holder::Pool(o.name.clone()),
        _ => match label(&sandbox.metadata, LABEL_CLAIM) {
            Some(c) => Holder::Claim(c.to_string()),
            None => Holder::None,
        },
    }
}

fn time(t: &Time) -> SystemTime {
    let nanos = t.0.as_nanosecond();
    if nanos <= 0 {
        return SystemTime::UNIX_EPOCH;
    }
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A `SystemTime` as a Kubernetes `Time` (second precision, as the API server keeps it).
pub fn to_time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Time(Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX))
}

/// A Sandbox as the API shows it. `claim` is the SandboxClaim holding it, when there is one.
pub fn sandbox_info(sandbox: &Sandbox, claim: Option<&SandboxClaim>) -> SandboxInfo {
    let meta = &sandbox.metadata;
    let (phase, message) = phase(sandbox);
    let created_at = meta
        .creation_timestamp
        .as_ref()
        .map(time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let holder = holder(sandbox);
    let pool = match &holder {
        Holder::Pool(p) => Some(p.clone()),
        _ => annotation(meta, ANNOTATION_POOL)
            .map(str::to_string)
            .or_else(|| claim.map(|c| c.spec.warm_pool_ref.name.clone())),
    };
    let shutdown_at = match claim {
        Some(c) => c
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.shutdown_time.as_ref())
            .map(time),
        None => sandbox.spec.shutdown_time.as_ref().map(time),
    };
    let labels = annotation(meta, ANNOTATION_LABELS)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    SandboxInfo {
        id: meta.name.clone().unwrap_or_default(),
        template: annotation(meta, SANDBOX_TEMPLATE_REF_ANNOTATION)
            .unwrap_or_default()
            .to_string(),
        pool,
        pool_member: matches!(holder, Holder::Pool(_)),
        phase,
        launch: if label(meta, LAUNCH_TYPE) == Some(LAUNCH_TYPE_WARM) {
            Launch::Warm
        } else {
            Launch::Cold
        },
        created_at,
        shutdown_at,
        idle_timeout: None,
        last_activity: created_at,
        labels,
        message,
    }
}

/// Where a claim stands while the driver waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// Ready: the Sandbox bound to it.
    Ready(String),
    /// Not yet; the reason and message of `Ready=False`, if the controller wrote any.
    Pending(Option<(String, String)>),
    /// It will not become Ready: the error to return.
    Failed(DriverError),
}

/// Where a claim from `pool` stands.
pub fn claim_state(claim: &SandboxClaim, pool: &str) -> ClaimState {
    let status = claim.status.clone().unwrap_or_default();
    let Some(ready) = condition(&status.conditions, types::READY) else {
        return ClaimState::Pending(None);
    };
    if ready.status == "True" && !status.sandbox.name.is_empty() {
        return ClaimState::Ready(status.sandbox.name);
    }
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let detail = if ready.message.is_empty() {
        String::new()
    } else {
        format!(": {}", ready.message)
    };
    let failed = match ready.reason.as_str() {
        claim_reason::WARM_POOL_NOT_FOUND => Some(DriverError::NotFound {
            kind: "pool",
            name: pool.to_string(),
        }),
        claim_reason::TEMPLATE_NOT_FOUND => Some(DriverError::NotFound {
            kind: "template",
            name: format!("of pool `{pool}`{detail}"),
        }),
        claim_reason::INVALID_METADATA
        | claim_reason::ENV_VARS_INJECTION_REJECTED
        | claim_reason::VOLUME_CLAIM_TEMPLATES_ERROR => Some(invalid(
            "pool",
            format!(
                "pool `{pool}` refused claim `{name}` ({}){detail}",
                ready.reason
            ),
        )),
        claim_reason::CLAIM_EXPIRED | claim_reason::SANDBOX_EXPIRED => {
            Some(DriverError::Conflict(format!(
                "claim `{name}` from pool `{pool}` expired before it was ready ({}){detail}",
                ready.reason
            )))
        }
        _ => None,
    };
    match failed {
        Some(e) => ClaimState::Failed(e),
        None => ClaimState::Pending(Some((ready.reason.clone(), ready.message.clone()))),
    }
}

#[cfg(test)]
mod tests;
