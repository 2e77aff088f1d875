//! `warden sandbox ...`: the client of `warden serve`'s sandbox API.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use warden_sandbox::{PoolStatus, SandboxInfo, Template};
use warden_sandboxd::proto::{Command, ExecControl, ExecEvent, ExecRequest, WS_STDERR, WS_STDOUT};
use warden_server::client::{Client, ClientError, DEFAULT_SERVER, encode_segment, with_query};
use warden_server::sandbox_router::is_dns_label;

use crate::EXIT_USAGE;

/// Exit code when the server cannot be reached (EX_UNAVAILABLE).
pub(crate) const EXIT_UNREACHABLE: u8 = 69;
/// Exit code when the server refused a call (not found, conflict, ...).
const EXIT_API: u8 = 1;

const SANDBOX_HELP: &str =
    "Clients find the server through --server or WARDEN_SERVER (default http://127.0.0.1:7070),
and the token through WARDEN_TOKEN or the token file of the server's data directory (--data,
default /var/lib/warden for root, else $XDG_DATA_HOME/warden or ~/.local/share/warden). Start the server with `warden serve`.

Every command takes --json for machine-readable output.

Exit status: `exec` passes the command's exit code through; otherwise 0 on success, 1 when the
server refused (the message says why), 64 for bad arguments, 69 when the server is unreachable.

Examples:
  warden sandbox create --template python --timeout 30m
  warden sandbox ls --all
  warden sandbox exec sbx-00001 -- python3 -c 'print(6*7)'
  warden sandbox exec -it sbx-00001 -- bash
  warden sandbox exec --fresh --pool python -- pytest -q
  warden sandbox cp ./data.csv sbx-00001:input/data.csv
  warden sandbox cp sbx-00001:out/report.html .
  warden sandbox rm sbx-00001
  warden sandbox apply warden-serve.toml";

/// Manage sandboxes of a running `warden serve`: create, exec, copy files, delete.
#[derive(Debug, Args)]
#[command(after_long_help = SANDBOX_HELP, after_help = "See `warden sandbox --help` for how the server and token are found, and examples.")]
pub struct SandboxArgs {
    /// The server's URL.
    #[arg(long, global = true, value_name = "URL", env = "WARDEN_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The server's data directory, to read its token file (unless WARDEN_TOKEN is set).
    #[arg(long, global = true, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Create a sandbox from a template, or claim one from a warm pool.
    #[command(
        after_help = "Examples:\n  warden sandbox create --template python\n  warden sandbox create --pool python --timeout 2h --label owner=ci"
    )]
    Create(CreateArgs),
    /// List sandboxes (unclaimed warm-pool members with --all).
    Ls(LsArgs),
    /// Show one sandbox.
    Get { id: String },
    /// Run a command in a sandbox; its exit code becomes warden's.
    #[command(
        after_help = "Examples:\n  warden sandbox exec sbx-00001 -- make test\n  warden sandbox exec -it sbx-00001 -- bash\n  warden sandbox exec --env CI=1 --cwd src --timeout 5m sbx-00001 -- cargo test\n  echo hi | warden sandbox exec -i sbx-00001 -- cat\n  warden sandbox exec --fresh --pool python -- python3 script.py   # deleted afterwards"
    )]
    Exec(ExecArgs),
    /// Copy a file into or out of a sandbox: `cp LOCAL ID:PATH` or `cp ID:PATH LOCAL`.
    #[command(
        after_help = "Paths in the sandbox are relative to its workspace. LOCAL may be `-` for stdin or stdout.\n\nExamples:\n  warden sandbox cp main.py sbx-00001:main.py\n  warden sandbox cp sbx-00001:out/result.json ./result.json"
    )]
    Cp { from: String, to: String },
    /// Delete sandboxes.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Freeze a sandbox's processes (exec and files refuse until resumed).
    Suspend { id: String },
    /// Thaw a suspended sandbox.
    Resume { id: String },
    /// Set when a sandbox is deleted: a duration from now (30m, 2h) or `never`.
    Timeout { id: String, after: String },
    /// List templates.
    Templates,
    /// List warm pools.
    Pools,
    /// Create or update the templates and pools of a file (the `warden serve --config` format).
    Apply { file: PathBuf },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Create a cold sandbox from this template.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "pool",
        required_unless_present = "pool"
    )]
    template: Option<String>,
    /// Claim a ready sandbox from this warm pool (a cold one when the pool is empty).
    #[arg(long, value_name = "NAME")]
    pool: Option<String>,
    /// Delete the sandbox this long after it is created (e.g. 30m, 2h).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<humantime::Duration>,
    /// Stop the sandbox after this long without exec or file calls.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<humantime::Duration>,
    /// A label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_kv)]
    labels: Vec<(String, String)>,
    /// A variable for every command in the sandbox (repeatable; --template only).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_kv, conflicts_with = "pool")]
    env: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Include unclaimed warm-pool members.
    #[arg(long)]
    all: bool,
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    #[arg(long, value_name = "NAME")]
    pool: Option<String>,
    /// starting, ready, suspended, failed or stopped.
    #[arg(long, value_name = "PHASE")]
    phase: Option<String>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The sandbox (not with --fresh).
    #[arg(required_unless_present = "fresh", conflicts_with = "fresh")]
    id: Option<String>,
    /// Run in a fresh sandbox claimed from --pool, deleted afterwards (even on failure or
    /// Ctrl-C).
    #[arg(long, requires = "pool")]
    fresh: bool,
    /// The warm pool for --fresh.
    #[arg(long, value_name = "NAME")]
    pool: Option<String>,
    /// A variable for this command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Working directory, relative to the workspace.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Kill the command after this long (exit 124).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<humantime::Duration>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a terminal (raw mode here, window size forwarded); use with -i.
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// A `KEY=VALUE` flag value (`--env`), for clap's `value_parser`.
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE")),
    }
}

/// Why a command failed, with the exit code it maps to.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match &e {
            ClientError::Connect { .. } => EXIT_UNREACHABLE,
            ClientError::Api { status: 401, .. } => EXIT_API,
            _ => EXIT_API,
        };
        let message = match &e {
            ClientError::Api { status: 401, .. } => {
                format!("{e}; set WARDEN_TOKEN, or --data to the server's data directory")
            }
            _ => e.to_string(),
        };
        Failure { code, message }
    }
}

pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

type Outcome = Result<ExitCode, Failure>;

/// WARDEN_TOKEN, else the data directory's token file, else none (a --no-auth server).
pub(crate) fn find_token(data: Option<&Path>) -> Result<Option<String>, Failure> {
    if let Ok(t) = std::env::var("WARDEN_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    let dir = data
        .map(Path::to_path_buf)
        .or_else(warden_server::default_data_dir);
    let Some(dir) = dir else { return Ok(None) };
    let path = warden_server::auth::token_path(&dir);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(usage(format!(
            "token file {}: {e}; set WARDEN_TOKEN instead",
            path.display()
        ))),
    }
}

pub fn main(args: SandboxArgs) -> ExitCode {
    run_client("sandbox", run(args))
}

/// Runs the future of the client command `warden NAME` on a current-thread runtime; a
/// failure is printed as `warden NAME: message` and exits with its code.
pub(crate) fn run_client(
    name: &str,
    command: impl Future<Output = Result<ExitCode, Failure>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("warden {name}: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(f) => {
            say!("warden {name}: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(args: SandboxArgs) -> Outcome {
    let token = find_token(args.data.as_deref())?;
    let client = Client::new(&args.server, token).map_err(|e| usage(e.to_string()))?;
    let json = args.json;
    match args.command {
        SandboxCommand::Create(c) => create(&client, c, json).await,
        SandboxCommand::Ls(l) => ls(&client, l, json).await,
        SandboxCommand::Get { id } => {
            let info: SandboxInfo = client
                .json(hyper_get(), &sandbox_path(&id), None::<&()>)
                .await?;
            if json {
                print_json(&info);
            } else {
                print_sandbox(&info);
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Exec(e) => exec(&client, e).await,
        SandboxCommand::Cp { from, to } => cp(&client, &from, &to, json).await,
        SandboxCommand::Rm { ids } => {
            let mut failed = None;
            for id in &ids {
                match client
                    .json::<serde_json::Value, ()>(hyper::Method::DELETE, &sandbox_path(id), None)
                    .await
                {
                    Ok(_) if json => print_json(&serde_json::json!({"id": id, "deleted": true})),
                    Ok(_) => println!("{id}"),
                    Err(e) => {
                        let f = Failure::from(e);
                        say!("warden sandbox: {}", f.message);
                        failed = Some(f.code);
                    }
                }
            }
            Ok(failed.map(ExitCode::from).unwrap_or(ExitCode::SUCCESS))
        }
        SandboxCommand::Suspend { id } => phase_call(&client, &id, "suspend", json).await,
        SandboxCommand::Resume { id } => phase_call(&client, &id, "resume", json).await,
        SandboxCommand::Timeout { id, after } => {
            let body = if after == "never" || after == "none" {
                serde_json::json!({"shutdown_at": null})
            } else {
                humantime::parse_duration(&after).map_err(|e| {
                    usage(format!(
                        "`{after}` is not a duration ({e}); write e.g. 30m, 2h, or never"
                    ))
                })?;
                serde_json::json!({"shutdown_after": after})
            };
            let info: SandboxInfo = client
                .json(
                    hyper::Method::PUT,
                    &format!("{}/timeout", sandbox_path(&id)),
                    Some(&body),
                )
                .await?;
            if json {
                print_json(&info);
            } else {
                println!("{}\texpires {}", info.id, expires(&info));
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Templates => {
            let list: Vec<Template> = client
                .json(hyper_get(), "/v1/templates", None::<&()>)
                .await?;
            if json {
                print_json(&list);
            } else {
                let rows = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            opt_dur(t.shutdown_after),
                            opt_dur(t.idle_timeout),
                            t.workspace_quota
                                .map(|q| format!("{} MiB", q >> 20))
                                .unwrap_or_else(|| "-".into()),
                            t.policy
                                .get("profile")
                                .and_then(|p| p.as_str())
                                .unwrap_or("default")
                                .to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "SHUTDOWN AFTER", "IDLE TIMEOUT", "QUOTA", "PROFILE"],
                    rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Pools => {
            let list: Vec<PoolStatus> = client.json(hyper_get(), "/v1/pools", None::<&()>).await?;
            if json {
                print_json(&list);
            } else {
                let rows = list
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.template.clone(),
                            format!("{}/{}", p.ready, p.replicas),
                            p.starting.to_string(),
                        ]
                    })
                    .collect();
                table(&["NAME", "TEMPLATE", "READY", "STARTING"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Apply { file } => {
            let config = warden_server::config::load(&file).map_err(usage)?;
            let mut applied = Vec::new();
            for t in &config.templates {
                let _: Template = client
                    .json(
                        hyper::Method::PUT,
                        &format!("/v1/templates/{}", encode_segment(&t.name)),
                        Some(t),
                    )
                    .await?;
                applied.push(format!("template/{}", t.name));
            }
            for p in &config.pools {
                let _: PoolStatus = client
                    .json(
                        hyper::Method::PUT,
                        &format!("/v1/pools/{}", encode_segment(&p.name)),
                        Some(p),
                    )
                    .await?;
                applied.push(format!("pool/{}", p.name));
            }
            if json {
                print_json(&applied);
            } else {
                for a in applied {
                    println!("{a}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn hyper_get() -> hyper::Method {
    hyper::Method::GET
}

fn sandbox_path(id: &str) -> String {
    format!("/v1/sandboxes/{}", encode_segment(id))
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn opt_dur(d: Option<Duration>) -> String {
    d.map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_else(|| "-".into())
}

fn age(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    short(secs)
}

pub(crate) fn short(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn expires(info: &SandboxInfo) -> String {
    match info.shutdown_at {
        None => "never".into(),
        Some(t) => match t.duration_since(SystemTime::now()) {
            Ok(d) => format!("in {}", short(d.as_secs())),
            Err(_) => "now".into(),
        },
    }
}

fn phase_name(info: &SandboxInfo) -> String {
    serde_json::to_value(info.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn launch_name(info: &SandboxInfo) -> String {
    serde_json::to_value(info.launch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Prints rows under headers, columns padded to their widest cell.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_sandbox(info: &SandboxInfo) {
    let labels = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let rows = [
        ("id", info.id.clone()),
        ("template", info.template.clone()),
        ("pool", info.pool.clone().unwrap_or_else(|| "-".into())),
        ("phase", phase_name(info)),
        ("launch", launch_name(info)),
        (
            "created",
            humantime::format_rfc3339_seconds(info.created_at).to_string(),
        ),
        ("expires", expires(info)),
        ("idle timeout", opt_dur(info.idle_timeout)),
        ("last activity", format!("{} ago", age(info.last_activity))),
        (
            "labels",
            if labels.is_empty() {
                "-".into()
            } else {
                labels
            },
        ),
        (
            "message",
            info.message.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
}

async fn create(client: &Client, c: CreateArgs, json: bool) -> Outcome {
    let mut body = serde_json::Map::new();
    match (&c.template, &c.pool) {
        (Some(t), None) => {
            body.insert("template".into(), t.clone().into());
            if !c.env.is_empty() {
                let env: BTreeMap<_, _> = c.env.into_iter().collect();
                body.insert("env".into(), serde_json::to_value(env).unwrap_or_default());
            }
        }
        (None, Some(p)) => {
            body.insert("pool".into(), p.clone().into());
        }
        _ => return Err(usage("give --template or --pool")),
    }
    if let Some(t) = c.timeout {
        body.insert("shutdown_after".into(), t.to_string().into());
    }
    if let Some(t) = c.idle_timeout {
        body.insert("idle_timeout".into(), t.to_string().into());
    }
    if !c.labels.is_empty() {
        let labels: BTreeMap<_, _> = c.labels.into_iter().collect();
        body.insert(
            "labels".into(),
            serde_json::to_value(labels).unwrap_or_default(),
        );
    }
    let info: SandboxInfo = client
        .json(hyper::Method::POST, "/v1/sandboxes", Some(&body))
        .await?;
    if json {
        print_json(&info);
    } else {
        println!("{}", info.id);
    }
    Ok(ExitCode::SUCCESS)
}

async fn ls(client: &Client, l: LsArgs, json: bool) -> Outcome {
    let path = with_query(
        "/v1/sandboxes",
        &[
            ("all", l.all.then_some("true")),
            ("template", l.template.as_deref()),
            ("pool", l.pool.as_deref()),
            ("phase", l.phase.as_deref()),
        ],
    );
    let list: Vec<SandboxInfo> = client.json(hyper_get(), &path, None::<&()>).await?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list
        .iter()
        .map(|s| {
            let mut pool = s.pool.clone().unwrap_or_else(|| "-".into());
            if s.pool_member {
                pool.push_str(" (unclaimed)");
            }
            vec![
                s.id.clone(),
                s.template.clone(),
                pool,
                phase_name(s),
                launch_name(s),
                age(s.created_at),
                expires(s),
            ]
        })
        .collect();
    table(
        &[
            "ID", "TEMPLATE", "POOL", "PHASE", "LAUNCH", "AGE", "EXPIRES",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn phase_call(client: &Client, id: &str, action: &str, json: bool) -> Outcome {
    let info: SandboxInfo = client
        .json(
            hyper::Method::POST,
            &format!("{}/{action}", sandbox_path(id)),
            None::<&()>,
        )
        .await?;
    if json {
        print_json(&info);
    } else {
        println!("{}\t{}", info.id, phase_name(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID:PATH` when the part before the first `:` is a sandbox id.
fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    is_dns_label(id).then_some((id, path))
}

async fn cp(client: &Client, from: &str, to: &str, json: bool) -> Outcome {
    match (remote(from), remote(to)) {
        (None, Some((id, path))) => {
            let path = if path.is_empty() || path.ends_with('/') {
                let name = Path::new(from)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| usage(format!("`{from}`: name the destination file")))?;
                format!("{path}{name}")
            } else {
                path.to_string()
            };
            if from == "-" {
                let tmp = std::env::temp_dir().join(format!("warden-cp-{}", std::process::id()));
                let mut f = tokio::fs::File::create(&tmp).await.map_err(io_fail)?;
                tokio::io::copy(&mut tokio::io::stdin(), &mut f)
                    .await
                    .map_err(io_fail)?;
                let r = client.upload(id, &path, &tmp).await;
                let _ = std::fs::remove_file(&tmp);
                r?;
            } else {
                if !Path::new(from).is_file() {
                    return Err(usage(format!(
                        "`{from}`: not a file (directories are not copied)"
                    )));
                }
                client.upload(id, &path, Path::new(from)).await?;
            }
            done(json, from, &format!("{id}:{path}"));
            Ok(ExitCode::SUCCESS)
        }
        (Some((id, path)), None) => {
            if to == "-" {
                let mut out = tokio::io::stdout();
                client.download(id, path, &mut out).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut dest = PathBuf::from(to);
            if dest.is_dir() {
                let name = Path::new(path)
                    .file_name()
                    .ok_or_else(|| usage(format!("`{from}`: name a file")))?;
                dest = dest.join(name);
            }
            // Into a temporary sibling first, so a failed download leaves no half file.
            let tmp = dest.with_extension("warden-partial");
            let mut f = tokio::fs::File::create(&tmp).await.map_err(io_fail)?;
            let r = client.download(id, path, &mut f).await;
            drop(f);
            if let Err(e) = r {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, &dest).map_err(io_fail)?;
            done(json, from, &dest.display().to_string());
            Ok(ExitCode::SUCCESS)
        }
        (Some(_), Some(_)) => Err(usage("copy between two sandboxes through a local file")),
        (None, None) => Err(usage(
            "one side must be a sandbox path, ID:PATH (e.g. sbx-00001:src/main.py)",
        )),
    }
}

fn io_fail(e: std::io::Error) -> Failure {
    Failure {
        code: EXIT_API,
        message: e.to_string(),
    }
}

fn done(json: bool, from: &str, to: &str) {
    if json {
        print_json(&serde_json::json!({"from": from, "to": to}));
    }
}

async fn exec(client: &Client, e: ExecArgs) -> Outcome {
    if e.tty && !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(usage("-t needs stdin and stdout to be a terminal"));
    }
    let mut req = ExecRequest::new(Command::Argv(e.command.clone()));
    req.env = e.env.iter().cloned().collect();
    req.cwd = e.cwd.clone();
    req.timeout_ms = e.timeout.map(|t| Duration::from(t).as_millis() as u64);
    req.tty = e.tty;
    if e.tty
        && let Some((terminal_size::Width(w), terminal_size::Height(h))) =
            terminal_size::terminal_size()
    {
        req.cols = Some(w);
        req.rows = Some(h);
    }
    if !e.fresh {
        let id = e.id.clone().unwrap_or_default();
        return run_exec(client, &id, req, e.interactive, e.tty).await;
    }
    let pool = e.pool.clone().unwrap_or_default();
    let claim = serde_json::json!({"pool": pool, "labels": {"warden.exec": "fresh"}});
    let info: SandboxInfo = client
        .json(hyper::Method::POST, "/v1/sandboxes", Some(&claim))
        .await?;
    let id = info.id.clone();
    // Ctrl-C is caught here, so the sandbox is deleted whatever happens to the command.
    let result = tokio::select! {
        r = run_exec(client, &id, req, e.interactive, e.tty) => r,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(130)),
    };
    if let Err(err) = client
        .json::<serde_json::Value, ()>(hyper::Method::DELETE, &sandbox_path(&id), None)
        .await
    {
        say!("warden sandbox: could not delete the fresh sandbox {id}: {err}");
    }
    result
}

/// Puts the local terminal in raw mode; restores it when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Runs the exec over the WebSocket: output written as it comes, stdin forwarded with -i,
/// the window size with -t; returns the command's exit code.
async fn run_exec(
    client: &Client,
    id: &str,
    req: ExecRequest,
    interactive: bool,
    tty: bool,
) -> Outcome {
    let ws = client.exec_ws(id).await?;
    let (mut sink, mut stream) = ws.split();
    let first = serde_json::to_string(&req).map_err(|e| usage(e.to_string()))?;
    sink.send(Message::Text(first.into()))
        .await
        .map_err(|e| ws_fail(&e))?;
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(8);
    if interactive {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = stdin_tx.blocking_send(None);
                        return;
                    }
                    Ok(n) => {
                        if stdin_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        let eof = serde_json::to_string(&ExecControl::Eof).unwrap_or_default();
        sink.send(Message::Text(eof.into()))
            .await
            .map_err(|e| ws_fail(&e))?;
        drop(stdin_tx);
    }
    let _raw = if tty { RawMode::enter() } else { None };
    let mut winch = if tty {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut interrupted = false;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut stdin_open = interactive;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { break };
                match msg.map_err(|e| ws_fail(&e))? {
                    Message::Binary(b) if !b.is_empty() => {
                        let out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send) =
                            if b[0] == WS_STDERR { &mut stderr } else { &mut stdout };
                        if b[0] == WS_STDOUT || b[0] == WS_STDERR {
                            let _ = out.write_all(&b[1..]).await;
                            let _ = out.flush().await;
                        }
                    }
                    Message::Text(t) => match serde_json::from_str::<ExecEvent>(&t) {
                        Ok(ExecEvent::Exit { exit_code, .. }) => {
                            return Ok(ExitCode::from(exit_code.clamp(0, 255) as u8));
                        }
                        Ok(ExecEvent::Error { message, .. }) => {
                            return Err(Failure { code: EXIT_API, message });
                        }
                        Ok(ExecEvent::Stdout { data }) => {
                            let _ = stdout.write_all(data.as_bytes()).await;
                            let _ = stdout.flush().await;
                        }
                        Ok(ExecEvent::Stderr { data }) => {
                            let _ = stderr.write_all(data.as_bytes()).await;
                            let _ = stderr.flush().await;
                        }
                        _ => {}
                    },
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            data = stdin_rx.recv(), if stdin_open => {
                let msg = match data.flatten() {
                    Some(bytes) => Message::Binary(bytes.into()),
                    None => {
                        stdin_open = false;
                        Message::Text(serde_json::to_string(&ExecControl::Eof).unwrap_or_default().into())
                    }
                };
                sink.send(msg).await.map_err(|e| ws_fail(&e))?;
            }
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => None } } => {
                if let Some((terminal_size::Width(cols), terminal_size::Height(rows))) = terminal_size::terminal_size() {
                    let c = serde_json::to_string(&ExecControl::Resize { cols, rows }).unwrap_or_default();
                    sink.send(Message::Text(c.into())).await.map_err(|e| ws_fail(&e))?;
                }
            }
            Some(()) = async { match interrupt.as_mut() { Some(i) => i.recv().await, None => None } } => {
                if interrupted {
                    return Ok(ExitCode::from(130));
                }
                // The first Ctrl-C goes to the command; a second one leaves.
                interrupted = true;
                let c = serde_json::to_string(&ExecControl::Signal { signal: 2 }).unwrap_or_default();
                sink.send(Message::Text(c.into())).await.map_err(|e| ws_fail(&e))?;
            }
        }
    }
    Err(Failure {
        code: EXIT_API,
        message: "the connection closed before the command finished".into(),
    })
}

fn ws_fail(e: &tokio_tungstenite::tungstenite::Error) -> Failure {
    Failure {
        code: EXIT_API,
        message: format!("exec WebSocket: {e}"),
    }
}
