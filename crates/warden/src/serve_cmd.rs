//! `warden serve`: the control plane's HTTP API (sandboxes, templates, pools, exec, files,
//! events, the agent-sandbox router contract) over the local driver, or over the Kubernetes
//! driver (`--driver kubernetes`: agent-sandbox resources, reached through the router).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use warden_kube::driver::{DEFAULT_ROUTER_URL, KubeDriver, KubeDriverConfig};
use warden_sandbox::{Driver, LocalConfig, LocalDriver};
use warden_server::{AppState, Auth, StartError, Store};

use crate::EXIT_USAGE;

const SERVE_HELP: &str =
    "The API is documented in docs/openapi.json. Every route but /healthz needs
`Authorization: Bearer <token>`; the token is generated at first start (32 random bytes, hex)
and kept in <data>/token with mode 0600. `warden sandbox` finds it there (--data) or in
WARDEN_TOKEN.

The data directory holds the token, the store (warden.db, SQLite) and the sandboxes. Its
default is /var/lib/warden for root, else $XDG_DATA_HOME/warden, or ~/.local/share/warden.

Tasks (`POST /v1/tasks`, `warden task submit`) run unattended: each is queued in the task store
(SQLite in the data directory, or --database postgres://... shared by several replicas), claimed
by a runner when one of --task-concurrency slots is free, and given its own sandbox from its
template (--task-template when it names none), where the repository is cloned through the
sandbox's egress proxy (so the template's policy must allow the repository's host, and a
credential route for the host injects the token), the new branch created, the agent run, and
the result committed (--git-author) and pushed. The sandbox is deleted afterwards. A task that
runs past its timeout (--task-timeout when it names none) ends TIMED_OUT. A task this replica
was running when it stopped is failed at the next start; one whose replica stopped renewing
its lease is failed by the others. Metrics under warden_serve_task*. With
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, each task is one trace
over OTLP/HTTP following the GenAI conventions (invoke_agent, chat, execute_tool spans), and
agents that honour it get TRACEPARENT. WARDEN_LOG_FORMAT=json logs one JSON object per line.

Cron schedules (/v1/schedules, `warden schedule`) file a task on a cron expression (5 fields,
6 with seconds first, or @daily...) read in an IANA time zone (default UTC). They live in the
task database: every replica sharing it runs the scheduler, and each run is claimed by one
replica and files one task (idempotency key schedule:NAME:FIRE-TIME-MS). Runs missed while no
replica was up (more than a minute late): `skip` (default) drops them, `run-once` files one
task for them all, `run-all` one for each (the latest 10 at most). Metrics: warden_serve_schedule_runs. The config file can declare them:

  [schedules.nightly]
  cron = \"0 3 * * MON-FRI\"
  timezone = \"Europe/Berlin\"
  [schedules.nightly.task]
  repo = \"https://github.com/org/app.git\"
  task = \"Update the dependencies and fix what breaks\"

The tool calls that `warden agent` runs and tasks' agents (with the same data directory) wait
on are listed and answered under /v1/approvals, as `warden approvals` and `warden task approve`
do.

The web console is at /console/ (/ leads there): tasks with their live events, pending
approvals to approve or deny, sandboxes with a terminal in the browser (xterm.js over the exec
WebSocket, with a TTY), templates, pools, schedules and webhook deliveries. It asks for the
same token (kept in the browser tab only) and sends it with every request; its files need none.

Webhooks file tasks from events: POST /webhooks/github (X-Hub-Signature-256), /webhooks/alertmanager
(Authorization: Bearer, payload version 4), /webhooks/pagerduty (X-PagerDuty-Signature, v3) and
/webhooks/generic/NAME (Authorization: Bearer, X-Webhook-Delivery). These need no API token: each
source is on only when the config file's [webhooks.SOURCE] names its secret (secret_file or
secret_env), and a bad or missing signature gets 401 with nothing started. [[webhooks.rules]] map a
delivery to a task (repo, a MiniJinja prompt filled from the payload, agent, model, template); a
delivery id is accepted once (a replay gets 409). `warden webhook ls` and `warden webhook
deliveries` show the rules and what became of each delivery, rejected ones with the reason:

  [webhooks.github]
  secret_file = \"/etc/warden/github-secret\"
  [[webhooks.rules]]
  name = \"fix-on-comment\"
  source = \"github\"
  event = \"issue_comment\"
  comment_prefix = \"/warden\"         # by OWNER, MEMBER or COLLABORATOR only (author_association)
  prompt = \"{{ webhook.command }} (issue #{{ issue.number }}: {{ issue.title }})\"

Other agents give this server tasks over A2A v1.0: its agent card is public at
/.well-known/agent-card.json (the skills of [a2a] skills_dir, the JSON-RPC URL, the bearer
scheme) and POST /a2a takes JSON-RPC (SendMessage, SendStreamingMessage, GetTask, ListTasks,
CancelTask, SubscribeToTask) with the same token. A message becomes a task on the [a2a] repo
(or the repo of its metadata or data part); a task waiting for an approval is
TASK_STATE_INPUT_REQUIRED until a message on it says \"approve\" or \"deny\". With
[a2a.peers.NAME] (url, token_file), warden's agent gets a Delegate tool that hands sub-tasks to
those agents. `warden a2a` is the client.

Requests carrying X-Sandbox-ID, on any path, follow the kubernetes-sigs/agent-sandbox router
contract: they are forwarded to that sandbox's runtime server (X-Sandbox-Port, default 8888).

--driver kubernetes keeps templates, pools and sandboxes in a cluster instead, as
agent-sandbox v1beta1 resources in one namespace (--namespace; default: the pod's own, or the
kubeconfig context's): a template becomes a SandboxTemplate whose pod runs `warden sandboxd`
and the `warden proxy` sidecar from --image, a pool a SandboxWarmPool, a claim a SandboxClaim,
a create a Sandbox; each carries app.kubernetes.io/managed-by=warden. The agent-sandbox
controller (`warden controller`, or upstream's) must run in the cluster. Exec and files, and
the router contract above (X-Sandbox-Namespace must then name --namespace), go through the
cluster's router (`warden router` or upstream's) at --router-url, default
http://sandbox-router-svc.warden-system.svc:8080 (the Service the Helm chart installs; from a
laptop, `kubectl -n warden-system port-forward svc/sandbox-router-svc 8080` and
--router-url http://127.0.0.1:8080), with the token of --router-token-file when the router
wants one. The cluster is reached as kubectl does (KUBECONFIG, ~/.kube/config, or the pod's
service account). Of a template's policy, network.allow_domains (mode \"proxy\"),
resources.memory and cpus, filesystem.tmp_size, environment.set and workspace_quota map onto
the pod; network mode \"host\", deny_domains, allow_ports, allow_cidrs and credential routes
are refused (a pod cannot honour them); idle_timeout is not enforced (agent-sandbox has none).

The config file declares templates, pools and schedules, upserted into the store at every
start, and the webhook sources and rules and the A2A server, read at start:

  [templates.python]
  shutdown_after = \"1h\"
  idle_timeout = \"15m\"
  [templates.python.policy]              # the format of `warden run --policy`
  profile = \"default\"

  [pools.python]
  template = \"python\"
  replicas = 4

  [a2a]                                  # the A2A agent card and defaults
  name = \"app-fixer\"
  repo = \"https://github.com/org/app.git\"
  skills_dir = \"/srv/checkouts/app\"
  public_url = \"https://warden.example.com\"
  [a2a.peers.reviewer]                   # an agent tasks may delegate to
  url = \"http://10.0.0.7:7070\"
  token_file = \"/etc/warden/reviewer-token\"

Exit status: 0 after SIGTERM or SIGINT; 64 for a bad flag, config file or data directory
(including --no-auth on a non-loopback address); 69 when the address cannot be bound; 70
for another host error.

Examples:
  warden serve
  warden serve --listen 127.0.0.1:7070 --data /srv/warden --config warden-serve.toml
  warden serve --listen 0.0.0.0:7070            # other machines need the token
  warden serve --model anthropic/claude-sonnet-4-5 --task-concurrency 4 --git-author \"Bot <bot@example.com>\"
  warden serve --database postgres://warden@db.internal/warden   # replicas share the task queue
  warden serve --driver kubernetes --namespace agents --router-token-file /etc/warden/router-token";

/// Where sandboxes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DriverKind {
    /// On this machine, in warden's jails.
    Local,
    /// In a Kubernetes cluster, as agent-sandbox resources.
    Kubernetes,
}

/// Serve the sandbox API: templates, warm pools, sandboxes, exec, files, events.
#[derive(Debug, Args)]
#[command(after_long_help = SERVE_HELP, after_help = "See `warden serve --help` for auth, the config file and examples.")]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Data directory: token, store, sandboxes [default: /var/lib/warden for root, else
    /// $XDG_DATA_HOME/warden or ~/.local/share/warden].
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
    /// TOML file declaring [templates.NAME], [pools.NAME] and [schedules.NAME] (upserted at
    /// start), [webhooks] sources and rules, and [a2a]; see below.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve without a token. Refused unless --listen is a loopback address.
    #[arg(long)]
    no_auth: bool,
    /// Where sandboxes run: local (this machine) or kubernetes (agent-sandbox resources in a
    /// cluster; see --help).
    #[arg(long, value_enum, value_name = "DRIVER", default_value = "local")]
    driver: DriverKind,
    /// kubernetes: the namespace of the templates, pools and sandboxes [default: the pod's
    /// own, or the kubeconfig context's].
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// kubernetes: the agent-sandbox router's URL [default:
    /// http://sandbox-router-svc.warden-system.svc:8080].
    #[arg(long, value_name = "URL")]
    router_url: Option<String>,
    /// kubernetes: a file holding the router's bearer token (one line).
    #[arg(long, value_name = "FILE")]
    router_token_file: Option<PathBuf>,
    /// kubernetes: warden's image, run by every sandbox pod (sandboxd and the proxy sidecar)
    /// [default: ghcr.io/warden-sandbox/warden:<this version>].
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// The task queue's database: SQLite in the data directory (default), or
    /// postgres://USER@HOST/DB, which several `warden serve` replicas can share.
    #[arg(long, value_name = "URL", env = "WARDEN_DATABASE")]
    database: Option<String>,
    /// Tasks this replica runs at once, each in its own sandbox.
    #[arg(long, value_name = "N", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=1000))]
    task_concurrency: u32,
    /// The template a task's sandbox is made from when the task names none. A template
    /// `default` (the `default` profile) is created when none exists.
    #[arg(long, value_name = "NAME", default_value = "default")]
    task_template: String,
    /// A task's timeout when it names none (e.g. 30m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    task_timeout: Duration,
    /// The model of tasks that name none, as `warden agent --model` takes it.
    #[arg(long, value_name = "MODEL", env = "WARDEN_MODEL")]
    model: Option<String>,
    /// The author of tasks' commits, as "Name <email>" [warden <warden@localhost>].
    #[arg(long, value_name = "AUTHOR", value_parser = parse_author)]
    git_author: Option<(String, String)>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    warden_server::tasks::model::TimeoutValue::Text(s.to_string()).to_duration()
}

/// "Name <email>".
fn parse_author(s: &str) -> Result<(String, String), String> {
    let bad = || format!("`{s}` is not an author; write it as \"Name <email@example.com>\"");
    let (name, rest) = s.split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?.trim();
    let name = name.trim();
    if name.is_empty() || email.is_empty() || !email.contains('@') || email.contains(['<', '>']) {
        return Err(bad());
    }
    if s.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok((name.to_string(), email.to_string()))
}

/// What the task runner is set up with.
#[derive(Debug, Clone)]
struct TaskFlags {
    database: Option<String>,
    concurrency: u32,
    template: String,
    timeout: Duration,
    model: Option<String>,
    author: Option<(String, String)>,
}

/// The driver flags, checked before anything starts.
#[derive(Debug)]
enum DriverChoice {
    Local,
    Kubernetes {
        /// `None`: the kube client's default namespace.
        namespace: Option<String>,
        config: KubeDriverConfig,
    },
}

fn default_image() -> String {
    format!(
        "ghcr.io/warden-sandbox/warden:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Checks the driver flags; a usage error names the flag.
fn driver_choice(args: &ServeArgs) -> Result<DriverChoice, StartError> {
    let usage = |m: String| StartError::Usage(m);
    if args.driver == DriverKind::Local {
        let given = [
            ("--namespace", args.namespace.is_some()),
            ("--router-url", args.router_url.is_some()),
            ("--router-token-file", args.router_token_file.is_some()),
            ("--image", args.image.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            return Err(usage(format!(
                "{flag} is for --driver kubernetes; the local driver runs sandboxes on this machine"
            )));
        }
        return Ok(DriverChoice::Local);
    }
    // The namespace is checked again with the client's default, once known.
    let mut config = KubeDriverConfig::new(
        args.namespace.clone().unwrap_or_else(|| "default".into()),
        args.image.clone().unwrap_or_else(default_image),
    );
    config.router_url = args
        .router_url
        .clone()
        .unwrap_or_else(|| DEFAULT_ROUTER_URL.into());
    if let Some(path) = &args.router_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--router-token-file {}: {e}", path.display())))?;
        let token = text.trim_end_matches(['\n', '\r']).to_string();
        config.router_token = Some(token);
    }
    config.validate().map_err(|e| {
        let flag = match e.field {
            "namespace" => "--namespace",
            "router_url" => "--router-url",
            "router_token" => "--router-token-file",
            "image" => "--image",
            other => other,
        };
        usage(format!("{flag}: {}", e.message))
    })?;
    Ok(DriverChoice::Kubernetes {
        namespace: args.namespace.clone(),
        config,
    })
}

fn fail(e: StartError) -> ExitCode {
    say!("warden serve: {e}");
    ExitCode::from(e.exit_code())
}

pub fn main(args: ServeArgs) -> ExitCode {
    if let Err(e) = warden_server::check_listen(args.listen, args.no_auth) {
        return fail(e);
    }
    let Some(data) = args.data.clone().or_else(warden_server::default_data_dir) else {
        say!("warden serve: no data directory: pass --data DIR (HOME and XDG_DATA_HOME are unset)");
        return ExitCode::from(EXIT_USAGE);
    };
    if let Err(e) = warden_server::prepare_data_dir(&data) {
        return fail(e);
    }
    let data = match std::fs::canonicalize(&data) {
        Ok(d) => d,
        Err(e) => return fail(StartError::Usage(format!("--data {}: {e}", data.display()))),
    };
    let choice = match driver_choice(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let config = match &args.config {
        Some(path) => match warden_server::config::load(path) {
            Ok(c) => Some(c),
            Err(e) => return fail(StartError::Usage(format!("--config {e}"))),
        },
        None => None,
    };
    let auth = if args.no_auth {
        Auth::Disabled
    } else {
        match warden_server::auth::load_or_create_token(&data) {
            Ok(t) => Auth::Token(t),
            Err(e) => return fail(StartError::Usage(format!("token: {e}"))),
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(StartError::Host(format!("cannot start the runtime: {e}"))),
    };
    if !warden_server::sandbox_router::is_dns_label(&args.task_template) {
        return fail(StartError::Usage(format!(
            "--task-template: `{}` is not a template name (lower-case letters, digits and `-`)",
            args.task_template
        )));
    }
    let tasks = TaskFlags {
        database: args.database.clone(),
        concurrency: args.task_concurrency,
        template: args.task_template.clone(),
        timeout: args.task_timeout,
        model: args.model.clone(),
        author: args.git_author.clone(),
    };
    runtime.block_on(serve(args.listen, data, config, auth, choice, tasks))
}

/// This replica's name in the task store: kept in `<data>/replica-id`, so that after a
/// restart it knows which running tasks were its own.
fn replica_id(data: &Path) -> Result<String, StartError> {
    let path = data.join("replica-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_graphic()) {
            return Ok(s.to_string());
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        })
        .unwrap_or_else(|| "host".into());
    let suffix = warden_server::tasks::model::new_task_id();
    let id = format!("{host}-{}", &suffix["task-".len()..][..8]);
    std::fs::write(&path, format!("{id}\n"))
        .map_err(|e| StartError::Host(format!("{}: {e}", path.display())))?;
    Ok(id)
}

/// The driver behind the API.
fn local_driver(data: &Path, store: &Store) -> Result<Arc<dyn Driver>, StartError> {
    let cfg = LocalConfig::new(data)
        .map_err(|e| StartError::Host(format!("cannot find the warden binary: {e}")))?;
    let driver = LocalDriver::new(cfg, Arc::new(store.clone())).map_err(|e| match e {
        warden_sandbox::DriverError::InvalidArgument { .. } => {
            StartError::Usage(format!("--data {}: {e}", data.display()))
        }
        other => StartError::Host(other.to_string()),
    })?;
    Ok(Arc::new(driver))
}

/// The Kubernetes driver, over the cluster kubectl would use, and its namespace.
async fn kube_driver(
    namespace: Option<String>,
    mut config: KubeDriverConfig,
) -> Result<(Arc<dyn Driver>, String), StartError> {
    let client = kube::Client::try_default().await.map_err(|e| {
        StartError::Host(format!(
            "--driver kubernetes: cannot reach the Kubernetes API ({e}); run in a pod with a \
             service account, or set KUBECONFIG"
        ))
    })?;
    if namespace.is_none() {
        config.namespace = client.default_namespace().to_string();
    }
    let ns = config.namespace.clone();
    let driver = KubeDriver::new(client, config)
        .map_err(|e| StartError::Usage(format!("--driver kubernetes: {e} (namespace {ns:?})")))?;
    Ok((Arc::new(driver), ns))
}

async fn serve(
    listen: SocketAddr,
    data: PathBuf,
    config: Option<warden_server::ServeConfig>,
    auth: Auth,
    choice: DriverChoice,
    task_flags: TaskFlags,
) -> ExitCode {
    let store = match Store::open(&data).await {
        Ok(s) => s,
        Err(e) => return fail(StartError::Host(e.to_string())),
    };
    let (driver, where_note) = match choice {
        DriverChoice::Local => (local_driver(&data, &store), String::new()),
        DriverChoice::Kubernetes { namespace, config } => {
            let router = config.router_url.clone();
            match kube_driver(namespace, config).await {
                Ok((driver, ns)) => (
                    Ok(driver),
                    format!(
                        "; sandboxes in Kubernetes namespace {ns}, through the router at {router}"
                    ),
                ),
                Err(e) => (Err(e), String::new()),
            }
        }
    };
    let driver = match driver {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let Err(e) = warden_server::bootstrap(driver.as_ref(), &store, config.as_ref()).await {
        return fail(e);
    }
    // One database for the task queue and what feeds it (schedules, webhook deliveries, A2A).
    let task_db = match warden_server::tasks::store_sql::SqlTaskStore::open_for(
        task_flags.database.as_deref(),
        &data,
        task_flags.concurrency as usize,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return fail(match &e {
                warden_server::tasks::store::TaskStoreError::Open { .. } => {
                    StartError::Usage(format!("--database: {e}"))
                }
                _ => StartError::Host(e.to_string()),
            });
        }
    };
    let task_store: Arc<dyn warden_server::tasks::TaskStore> = Arc::new(task_db.clone());
    // Peer agents that tasks may delegate sub-tasks to (`[a2a.peers]`).
    let peers = config
        .as_ref()
        .and_then(|c| c.a2a.as_ref())
        .map(|a| &a.peers);
    let delegate = match peers.map(warden_server::a2a::delegate::PeerDelegate::from_config) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(d))) => Some(d),
        Some(Err(e)) => return fail(StartError::Usage(format!("--config {e}"))),
    };
    let tasks = match start_tasks(
        &data,
        driver.clone(),
        &store,
        task_store,
        &task_flags,
        delegate,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    // A2A: the agent card and JSON-RPC over the same task queue.
    let a2a = match warden_server::a2a::A2aServer::new(
        config
            .as_ref()
            .and_then(|c| c.a2a.clone())
            .unwrap_or_default(),
        tasks.clone(),
        task_db.clone(),
        matches!(auth, Auth::Token(_)),
    ) {
        Ok(a) => a,
        Err(e) => return fail(StartError::Usage(format!("--config {e}"))),
    };
    // Webhooks: deliveries filing tasks by the config's [webhooks] rules; secrets read now.
    let webhooks = match warden_server::webhooks::Webhooks::start(
        config
            .as_ref()
            .and_then(|c| c.webhooks.clone())
            .unwrap_or_default(),
        &|name| std::env::var(name).ok(),
        task_db.clone(),
        tasks.clone(),
    ) {
        Ok(w) => w,
        Err(e) => return fail(StartError::Usage(format!("--config {e}"))),
    };
    // Cron schedules in the task database; the config file's are created or replaced now.
    let schedules = warden_server::schedules::Schedules::new(
        task_db.clone(),
        tasks.clone(),
        Arc::new(warden_server::schedules::SystemClock),
    );
    if let Err(e) = put_config_schedules(&schedules, config.as_ref()).await {
        return fail(e);
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            say!("warden serve: cannot listen on {listen}: {e}");
            return ExitCode::from(69);
        }
    };
    let local = listener.local_addr().unwrap_or(listen);
    let auth_note = match &auth {
        Auth::Token(_) => format!(
            "token in {}",
            warden_server::auth::token_path(&data).display()
        ),
        Auth::Disabled => "no auth (--no-auth)".to_string(),
    };
    say!(
        "warden serve: listening on http://{local} ({auth_note}); data in {}{where_note}",
        data.display()
    );
    let state = AppState::new(driver, store, auth)
        .with_agent_runs(data.join("agent-runs"))
        .with_tasks(tasks.clone())
        .with_schedules(schedules.clone())
        .with_webhooks(webhooks)
        .with_a2a(a2a);
    let _runner = tasks.start();
    let _scheduler = schedules.start();
    let shutdown = async {
        let stop = crate::stop_signal().await;
        say!("warden serve: {stop}, stopping");
    };
    let served = warden_server::serve(listener, state, shutdown).await;
    // The last spans go out before the process does.
    tasks.config().telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(StartError::Host(format!("serving: {e}"))),
    }
}

/// Creates or replaces the config file's `[schedules.NAME]`; a bad one is a usage error
/// naming its section and field.
async fn put_config_schedules(
    schedules: &warden_server::schedules::Schedules,
    config: Option<&warden_server::ServeConfig>,
) -> Result<(), StartError> {
    use warden_server::schedules::scheduler::ScheduleError;
    for spec in config.map(|c| c.schedules.as_slice()).unwrap_or_default() {
        let name = spec.name.clone().unwrap_or_default();
        match schedules.put(&name, spec.clone()).await {
            Ok(_) => {}
            Err(ScheduleError::Invalid(errors)) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Err(StartError::Usage(format!(
                    "--config: [schedules.{name}]: {}",
                    errors.join("; ")
                )));
            }
            Err(ScheduleError::Store(e)) => return Err(StartError::Host(e.to_string())),
        }
    }
    Ok(())
}

/// The task queue's runner over `driver`: the task template made when missing, the
/// built-in agents, the flags' defaults.
async fn start_tasks(
    data: &Path,
    driver: Arc<dyn Driver>,
    store: &Store,
    task_store: Arc<dyn warden_server::tasks::TaskStore>,
    flags: &TaskFlags,
    delegate: Option<warden_server::a2a::delegate::PeerDelegate>,
) -> Result<warden_server::tasks::runner::Tasks, StartError> {
    use warden_server::tasks::runner::{RunnerConfig, Tasks};
    if flags.template == "default" && !driver.templates().await.iter().any(|t| t.name == "default")
    {
        let template = warden_sandbox::Template {
            name: "default".into(),
            policy: toml::Table::from_iter([("profile".to_string(), toml::Value::from("default"))]),
            shutdown_after: None,
            idle_timeout: None,
            workspace_quota: None,
        };
        driver
            .put_template(template.clone())
            .await
            .map_err(|e| StartError::Host(format!("the default task template: {e}")))?;
        store
            .put_template(&template)
            .await
            .map_err(|e| StartError::Host(e.to_string()))?;
    }
    let mut cfg = RunnerConfig::new(replica_id(data)?, data.join("agent-runs"));
    cfg.concurrency = flags.concurrency as usize;
    cfg.defaults.template = flags.template.clone();
    cfg.defaults.timeout = flags.timeout;
    cfg.defaults.model = flags.model.clone();
    if let Some((name, email)) = &flags.author {
        cfg.git.author_name = name.clone();
        cfg.git.author_email = email.clone();
    }
    // OpenTelemetry traces of tasks, when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set.
    use warden_server::tasks::telemetry::{Telemetry, TelemetryConfig};
    let otel = TelemetryConfig::from_env().map_err(|e| StartError::Usage(e.to_string()))?;
    cfg.telemetry = Telemetry::start(&otel).map_err(|e| StartError::Usage(e.to_string()))?;
    let mut agents = warden_server::tasks::agents::BuiltinAgents::new(data);
    if let Some(d) = delegate {
        agents.delegate = Some(Arc::new(d));
    }
    Ok(Tasks::new(task_store, driver, Arc::new(agents), cfg))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn choice(args: &[&str]) -> Result<DriverChoice, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        driver_choice(&cli.serve).map_err(|e| {
            assert_eq!(e.exit_code(), EXIT_USAGE, "{e}");
            e.to_string()
        })
    }

    #[test]
    fn driver_flags() {
        assert!(matches!(choice(&[]), Ok(DriverChoice::Local)));
        let Ok(DriverChoice::Kubernetes { namespace, config }) =
            choice(&["--driver", "kubernetes"])
        else {
            panic!("kubernetes")
        };
        assert_eq!(namespace, None);
        assert_eq!(config.router_url, DEFAULT_ROUTER_URL);
        assert_eq!(config.image, default_image());
        assert_eq!(config.router_token, None);

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
        let token = token.to_str().unwrap();
        let Ok(DriverChoice::Kubernetes { namespace, config }) = choice(&[
            "--driver",
            "kubernetes",
            "--namespace",
            "agents",
            "--router-url",
            "http://127.0.0.1:8080",
            "--router-token-file",
            token,
            "--image",
            "registry.example/warden@sha256:abc",
        ]) else {
            panic!("kubernetes with flags")
        };
        assert_eq!(namespace.as_deref(), Some("agents"));
        assert_eq!(config.namespace, "agents");
        assert_eq!(config.router_url, "http://127.0.0.1:8080");
        assert_eq!(
            config.router_token.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(config.image, "registry.example/warden@sha256:abc");

        // Each usage error names its flag.
        let cases: [(&[&str], &str); 6] = [
            (
                &["--namespace", "agents"],
                "--namespace is for --driver kubernetes",
            ),
            (&["--image", "x"], "--image is for --driver kubernetes"),
            (
                &["--driver", "kubernetes", "--namespace", "Agents"],
                "--namespace:",
            ),
            (
                &["--driver", "kubernetes", "--router-url", "https://r:1"],
                "--router-url:",
            ),
            (
                &[
                    "--driver",
                    "kubernetes",
                    "--router-token-file",
                    "/nonexistent/token",
                ],
                "--router-token-file /nonexistent/token",
            ),
            (&["--driver", "kubernetes", "--image", "a b"], "--image:"),
        ];
        for (args, want) in cases {
            let e = choice(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} was accepted"));
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(
            choice(&["--driver", "k8s"])
                .unwrap_err()
                .contains("kubernetes")
        );
    }
}
