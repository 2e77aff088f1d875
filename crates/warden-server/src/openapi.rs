//! The OpenAPI document of the API, generated from the handlers' annotations with utoipa and
//! committed as `docs/openapi.json` (a test fails when they differ).
//!
//! The JSON types of the driver (`warden-sandbox`) and of sandboxd's wire protocol
//! (`warden-sandboxd::proto`) belong to other crates, so the schemas here describe them; a
//! test serialises the real types and checks that their fields match these schemas.

#![allow(dead_code)] // The schema types are never built; they only describe JSON.

use std::collections::BTreeMap;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// A sandbox template (agent-sandbox's SandboxTemplate): everything a sandbox is made from.
#[derive(Debug, ToSchema)]
#[schema(as = Template)]
pub struct TemplateDoc {
    /// DNS-1123 label (lowercase letters, digits, `-`; at most 63). May be left out of a PUT
    /// body; it must equal the path's name when given.
    name: String,
    /// The sandbox policy in warden's policy-file format (profile, filesystem, network,
    /// routes, resources, environment); `filesystem.workspace` must be unset.
    #[schema(value_type = Object)]
    policy: Option<BTreeMap<String, serde_json::Value>>,
    /// How long a sandbox lives after creation or claim (humantime, e.g. "30m") [1h].
    shutdown_after: Option<String>,
    /// Stop a sandbox after this long without exec or file calls [15m].
    idle_timeout: Option<String>,
    /// Largest total size uploads may bring the workspace to, in bytes [1 GiB].
    workspace_quota: Option<u64>,
}

/// A warm pool (agent-sandbox's SandboxWarmPool).
#[derive(Debug, ToSchema)]
#[schema(as = PoolSpec)]
pub struct PoolSpecDoc {
    /// DNS-1123 label; may be left out of a PUT body.
    name: String,
    template: String,
    /// Ready members to keep [1].
    replicas: Option<u32>,
}

/// A pool as it is now.
#[derive(Debug, ToSchema)]
#[schema(as = PoolStatus)]
pub struct PoolStatusDoc {
    name: String,
    template: String,
    replicas: u32,
    /// Members ready to be claimed.
    ready: u32,
    /// Members being created.
    starting: u32,
}

/// `POST /v1/sandboxes` with `template`: a cold sandbox.
#[derive(Debug, ToSchema, serde::Serialize)]
#[schema(as = CreateRequest)]
pub struct CreateRequestDoc {
    template: String,
    /// Overrides the template's `shutdown_after` (humantime).
    shutdown_after: Option<String>,
    /// Overrides the template's `idle_timeout` (humantime).
    idle_timeout: Option<String>,
    /// Variables for every command in the sandbox.
    env: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /v1/sandboxes` with `pool`: a ready member of the pool, or a cold create of its
/// template when the pool is empty.
#[derive(Debug, ToSchema, serde::Serialize)]
#[schema(as = ClaimRequest)]
pub struct ClaimRequestDoc {
    pool: String,
    shutdown_after: Option<String>,
    idle_timeout: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// Exactly one of `template` (create) or `pool` (claim).
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(untagged)]
#[schema(as = NewSandbox)]
pub enum NewSandboxDoc {
    Create(CreateRequestDoc),
    Claim(ClaimRequestDoc),
}

/// Where a sandbox is in its life.
#[derive(Debug, ToSchema)]
#[schema(as = Phase)]
#[allow(non_camel_case_types)]
pub enum PhaseDoc {
    starting,
    ready,
    suspended,
    failed,
    stopped,
}

/// How the sandbox came to its owner.
#[derive(Debug, ToSchema)]
#[schema(as = Launch)]
#[allow(non_camel_case_types)]
pub enum LaunchDoc {
    cold,
    warm,
}

/// A sandbox.
#[derive(Debug, ToSchema)]
#[schema(as = Sandbox)]
pub struct SandboxDoc {
    /// DNS-1123 label; the router contract's `X-Sandbox-ID`.
    id: String,
    template: String,
    pool: Option<String>,
    /// Still an unclaimed member of `pool`.
    pool_member: bool,
    phase: PhaseDoc,
    launch: LaunchDoc,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339, or null for no deadline.
    shutdown_at: Option<String>,
    idle_timeout: Option<String>,
    last_activity: String,
    labels: BTreeMap<String, String>,
    /// Why it failed or stopped.
    message: Option<String>,
}

/// `PUT /v1/sandboxes/{id}/timeout`: exactly one of `shutdown_at` (RFC 3339, or null for no
/// deadline) or `shutdown_after` (humantime, from now).
#[derive(Debug, ToSchema)]
#[schema(as = SetTimeout)]
pub struct SetTimeoutDoc {
    shutdown_at: Option<String>,
    shutdown_after: Option<String>,
}

/// An argv (run as is) or a shell string (`/bin/sh -c`).
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(untagged)]
#[schema(as = Command)]
pub enum CommandDoc {
    Argv(Vec<String>),
    Shell(String),
}

/// An exec request; over the WebSocket, its first text message.
#[derive(Debug, ToSchema)]
#[schema(as = ExecRequest)]
pub struct ExecRequestDoc {
    command: CommandDoc,
    env: Option<BTreeMap<String, String>>,
    /// Relative to the workspace, or absolute inside the sandbox.
    cwd: Option<String>,
    /// Kill the command after this long (exit 124, `timed_out`).
    timeout_ms: Option<u64>,
    /// Bytes for the command's stdin (UTF-8), then closed.
    stdin: Option<String>,
    /// A pseudo-terminal (WebSocket only).
    tty: Option<bool>,
    cols: Option<u16>,
    rows: Option<u16>,
}

/// The result of a buffered exec.
#[derive(Debug, ToSchema)]
#[schema(as = ExecResult)]
pub struct ExecResultDoc {
    stdout: String,
    stderr: String,
    /// 124 on timeout; 128+N when killed by signal N; 127 not found; 126 not executable.
    exit_code: i32,
    timed_out: bool,
    signal: Option<i32>,
    duration_ms: f64,
    /// Output past the per-stream limit was dropped.
    truncated: bool,
}

/// One event of a streaming exec (SSE: the `event:` name is `type`). On the WebSocket,
/// output travels as binary messages (first byte 1 = stdout, 2 = stderr); stdin as binary
/// messages; control (`{"type":"resize","cols":..,"rows":..}`, `{"type":"signal",
/// "signal":N}`, `{"type":"eof"}`) as text.
#[derive(Debug, ToSchema)]
#[schema(as = ExecEvent)]
pub struct ExecEventDoc {
    /// started, stdout, stderr, exit or error.
    r#type: String,
    pid: Option<u32>,
    data: Option<String>,
    exit_code: Option<i32>,
    timed_out: Option<bool>,
    signal: Option<i32>,
    duration_ms: Option<f64>,
    code: Option<String>,
    message: Option<String>,
}

/// One entry of a directory listing.
#[derive(Debug, ToSchema)]
#[schema(as = FileEntry)]
pub struct FileEntryDoc {
    name: String,
    size: u64,
    /// file, directory, symlink or other.
    r#type: String,
    /// RFC 3339.
    modified_at: String,
    /// Octal, e.g. "0644".
    mode: String,
}

/// `GET .../files/{dir}` on a directory.
#[derive(Debug, ToSchema)]
#[schema(as = DirListing)]
pub struct DirListingDoc {
    path: String,
    entries: Vec<FileEntryDoc>,
}

/// Something that happened to a sandbox.
#[derive(Debug, ToSchema)]
#[schema(as = SandboxEvent)]
pub struct SandboxEventDoc {
    /// RFC 3339.
    time: String,
    sandbox: String,
    /// created, claimed, ready, suspended, resumed, timeout_set, deleted, expired, idle,
    /// failed, pool_refilled.
    kind: String,
    message: String,
}

/// A tool call a `warden agent` run waits on: an `ask` rule matched it. Unanswered by
/// `deadline`, it is denied (or, for a run started with `--on-timeout cancel`, the run ends).
#[derive(Debug, ToSchema)]
#[schema(as = PendingApproval)]
pub struct PendingApprovalDoc {
    /// The run's id (`run-...`).
    run_id: String,
    /// The call's id, as the model's provider gave it.
    call_id: String,
    /// The tool, e.g. `Bash`.
    tool: String,
    /// The call in rule syntax, e.g. `Bash(git push origin main)`.
    call: String,
    /// The tool's input as the model gave it.
    #[schema(value_type = Object)]
    input: serde_json::Value,
    /// The rule that asked, or why no rule allowed the call.
    basis: String,
    /// RFC 3339.
    requested_at: String,
    /// RFC 3339: when the call is answered for the person.
    deadline: String,
}

/// An error: `code` is one of PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT, CONFLICT,
/// RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL, UNAUTHENTICATED.
#[derive(Debug, ToSchema)]
#[schema(as = Error)]
pub struct ErrorDoc {
    code: String,
    message: String,
}

/// `GET /healthz`.
#[derive(Debug, ToSchema)]
#[schema(as = Health)]
pub struct HealthDoc {
    status: String,
}

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

const DESCRIPTION: &str = "The sandbox API of `warden serve`. Every route but `/healthz` needs \
`Authorization: Bearer <token>`; the token is in `<data>/token`. Errors are \
`{\"code\", \"message\"}` with the status of the problem.\n\n\
Webhooks: deliveries to `/webhooks/...` need no token; each source checks its own signature \
or bearer secret (401 when it fails), and a delivery id is accepted once (409 for a replay).\n\n\
Approvals: the tool calls that `warden agent` runs (with the same data directory) wait on, \
listed and answered as `warden approvals` does.\n\n\
Router contract (kubernetes-sigs/agent-sandbox): any request carrying `X-Sandbox-ID`, on any \
path, is forwarded to that sandbox's runtime server (`X-Sandbox-Port`, default 8888) with the \
upstream router's validation and `{\"detail\": \"...\"}` errors (400, 502, 504).";

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "warden serve", description = DESCRIPTION, license(name = "Apache-2.0")),
    paths(
        crate::api::healthz,
        crate::api::metrics,
        crate::api::list_templates,
        crate::api::get_template,
        crate::api::put_template,
        crate::api::delete_template,
        crate::api::list_pools,
        crate::api::get_pool,
        crate::api::put_pool,
        crate::api::delete_pool,
        crate::api::new_sandbox,
        crate::api::list_sandboxes,
        crate::api::get_sandbox,
        crate::api::delete_sandbox,
        crate::api::suspend_sandbox,
        crate::api::resume_sandbox,
        crate::api::set_timeout,
        crate::api::exec,
        crate::api::exec_ws,
        crate::api::get_file,
        crate::api::head_file,
        crate::api::put_file,
        crate::api::delete_file,
        crate::api::events,
        crate::api_tasks::submit_task,
        crate::api_tasks::list_tasks,
        crate::api_tasks::get_task,
        crate::api_tasks::cancel_task,
        crate::api_tasks::task_events,
        crate::api_tasks::task_approvals,
        crate::schedules::api::list_schedules,
        crate::schedules::api::put_schedule,
        crate::schedules::api::get_schedule,
        crate::schedules::api::delete_schedule,
        crate::schedules::api::pause_schedule,
        crate::schedules::api::resume_schedule,
        crate::schedules::api::run_schedule,
        crate::api::list_approvals,
        crate::api::answer_approval,
        crate::webhooks::api::list_webhooks,
        crate::webhooks::api::list_deliveries,
        crate::webhooks::api::github,
        crate::webhooks::api::alertmanager,
        crate::webhooks::api::pagerduty,
        crate::webhooks::api::generic,
        crate::a2a::agent_card,
        crate::a2a::jsonrpc,
    ),
    components(schemas(ExecEventDoc)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// The document as committed in `docs/openapi.json`.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
