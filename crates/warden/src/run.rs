//! `warden run`: one command in a fresh sandbox, then gone.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use warden_jail::{
    Degraded, Jail, JailConfig, JailError, Layer, Outcome, Termination, render_table,
};
use warden_policy::{
    ByteSize, DomainPattern, EnvPattern, Isolation, NetworkMode, PolicyError, PolicyFile, Profile,
    SandboxPolicy, resolve_path,
};

use crate::EXIT_USAGE;

const PROFILES_HELP: &str = "Built-in profiles:
  default        workspace rw, system ro, private home and /tmp, no network, 4 GiB, 1024 processes
  offline        as default, never any network
  read-anywhere  as default, but the whole host is readable except the blocklist
  pod            Landlock + seccomp only, as inside an unprivileged pod

Limits accept \"unlimited\". Sizes use binary suffixes (512M = 512 MiB); durations look like 30s, 10m, 1h30m.

Exit status: the command's own; or, if it was killed by a signal, warden dies by the same signal.
  64   bad flags, policy or paths       69   a required isolation layer is unavailable
  124  the timeout fired                 125  setting up the sandbox failed
  126  the command cannot be executed   127  the command was not found in the sandbox

Examples:
  warden run -- python3 -c 'print(1)'
  warden run --memory 512M --pids 64 --timeout 30s -- make test
  warden run --profile read-anywhere --ro ~/.cargo --workspace ~/src/app -- cargo build --offline
  warden run --policy warden.toml -- ./agent.sh
  warden run --route anthropic --allow-domain pypi.org -- claude -p 'fix the tests'
  warden run --route git -- git clone https://github.com/acme/private.git";

/// Run a command in a fresh sandbox.
#[derive(Debug, Args)]
#[command(after_long_help = PROFILES_HELP, after_help = "See `warden run --help` for profiles, exit codes and examples.")]
pub struct RunArgs {
    /// Policy file (TOML); its `profile` key picks the base profile.
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    policy: Option<PathBuf>,
    /// Built-in profile: default, offline, read-anywhere, pod.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// The read-write working tree [default: the current directory].
    #[arg(short, long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Extra path visible read-only (repeatable).
    #[arg(long = "ro", value_name = "PATH")]
    read_only: Vec<PathBuf>,
    /// Extra path visible read-write (repeatable).
    #[arg(long = "rw", value_name = "PATH")]
    read_write: Vec<PathBuf>,
    /// Path never visible in the sandbox, on top of the built-in blocklist (repeatable).
    #[arg(long = "hide", value_name = "PATH")]
    hidden: Vec<PathBuf>,
    /// Allow egress to this domain through warden's proxy (repeatable; `*.example.com` for subdomains).
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    allow_domains: Vec<String>,
    /// Let the proxy reach addresses in this range, which are refused by default:
    /// loopback, private, link-local, ... (repeatable; e.g. 10.0.0.0/8 for a company mirror).
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidrs: Vec<String>,
    /// Let the proxy connect to this port too; 80 and 443 always are (repeatable).
    #[arg(long = "allow-port", value_name = "PORT")]
    allow_ports: Vec<u16>,
    /// Serve a credential route through the proxy (repeatable): anthropic, openai, git, or a
    /// route of the policy file; NAME=URL points a built-in at another upstream (a gateway
    /// such as LiteLLM). The secret is read on the host (ANTHROPIC_API_KEY, OPENAI_API_KEY,
    /// GITHUB_TOKEN) and never enters the sandbox, which gets a placeholder and the route's
    /// URL (ANTHROPIC_BASE_URL, OPENAI_BASE_URL, git's url.<route>.insteadOf).
    #[arg(long = "route", value_name = "NAME[=URL]")]
    routes: Vec<String>,
    /// Write every egress decision to FILE as one JSON line (time, method, host, port,
    /// verdict, rule, bytes each way, duration).
    #[arg(long = "egress-log", value_name = "FILE")]
    egress_log: Option<PathBuf>,
    /// Network: none, or host (no network isolation at all; loud).
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Isolation: full (namespaces, cgroups, Landlock, seccomp) or pod (Landlock and seccomp only).
    #[arg(long, value_name = "MODE")]
    isolation: Option<String>,
    /// Memory limit, e.g. 512M, 2G, unlimited.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<String>,
    /// CPU limit in cores, e.g. 1.5.
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Wall-clock limit; the whole process tree is killed when it fires, e.g. 30s, 10m.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Largest file the command may write.
    #[arg(long, value_name = "SIZE")]
    file_size: Option<String>,
    /// Maximum open files per process.
    #[arg(long, value_name = "N")]
    open_files: Option<String>,
    /// Set a variable in the sandbox (repeatable).
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Pass a host variable (or PREFIX*) into the sandbox (repeatable).
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Run even if this layer (or group: namespaces, landlock, cgroups) cannot be enforced (repeatable).
    #[arg(long = "allow-degraded", value_name = "LAYER")]
    allow_degraded: Vec<String>,
    /// Give the command a terminal of its own [default: when stdin and stdout are terminals].
    #[arg(long, overrides_with = "no_tty")]
    tty: bool,
    /// Never allocate a terminal.
    #[arg(long)]
    no_tty: bool,
    /// Print the isolation layers before running.
    #[arg(short, long)]
    verbose: bool,
    /// Write the outcome (termination, layers, warnings, duration) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,

    // Hidden flags for the local sandbox driver (warden-sandbox), which runs `warden run`
    // as the detached supervisor of a persistent sandbox.
    /// Write the sandbox's id, this supervisor's pid and the sandbox's cgroup directories
    /// as JSON to FILE once they exist, before the command starts.
    #[arg(long, value_name = "FILE", hide = true)]
    state_file: Option<PathBuf>,
    /// Start a new session first, detached from any terminal.
    #[arg(long, hide = true)]
    setsid: bool,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("warden: {msg}");
    ExitCode::from(EXIT_USAGE)
}

pub fn main(args: RunArgs) -> ExitCode {
    let since_main = || {
        crate::STARTED
            .get()
            .map_or(0, |t| t.elapsed().as_micros() as u64)
    };
    tracing::debug!(since_main_us = since_main(), "arguments parsed");
    if args.setsid
        && let Err(e) = warden_jail::sys::setsid()
    {
        eprintln!(
            "warden: cannot start a new session: {}",
            nix::errno::Errno::from_raw(e)
        );
        return ExitCode::from(70);
    }
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return usage(format!("cannot read the current directory: {e}")),
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let policy = match build_policy(&args, &cwd, &home) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let proxy_mode = policy.network.mode == NetworkMode::Proxy;
    if !proxy_mode
        && (!args.allow_cidrs.is_empty()
            || !args.allow_ports.is_empty()
            || args.egress_log.is_some())
    {
        return usage(
            "--allow-cidr, --allow-port and --egress-log need the egress proxy: add --allow-domain DOMAIN or --route NAME",
        );
    }
    let sandbox_id = std::sync::Arc::new(std::sync::OnceLock::new());
    let egress = if proxy_mode {
        let rules =
            match crate::egress::egress_policy(&policy, &args.allow_cidrs, &args.allow_ports) {
                Ok(r) => r,
                Err(e) => return usage(e),
            };
        let routes = match crate::egress::load_routes(&policy) {
            Ok(r) => r,
            Err(e) => return usage(e),
        };
        let env = crate::egress::proxy_environment(&policy.network.routes);
        if let Err(e) = crate::egress::check_no_secret_enters(&policy, &env) {
            return usage(e);
        }
        match crate::egress::start(
            rules,
            routes,
            env,
            args.egress_log.as_deref(),
            sandbox_id.clone(),
        ) {
            Ok(bridge) => Some(bridge),
            Err(e) => {
                eprintln!("warden: {e}");
                return ExitCode::from(70);
            }
        }
    } else {
        None
    };
    let mut degraded = Degraded::none();
    for name in &args.allow_degraded {
        match Layer::parse_set(name) {
            Ok(layers) => degraded.allow(layers),
            Err(e) => return usage(format!("--allow-degraded: {e}")),
        }
    }
    if args.command.is_empty() {
        return usage("no command given; put it after `--`, e.g. `warden run -- sh -c 'echo hi'`");
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tty = !args.no_tty && (args.tty || interactive);
    let config = JailConfig {
        policy,
        command: args.command.clone(),
        cwd,
        host_env: std::env::vars_os().collect(),
        degraded,
        tty,
        stdio: [None, None, None],
        forward_signals: true,
        egress,
    };
    let t0 = std::time::Instant::now();
    tracing::debug!(since_main_us = since_main(), "preparing");
    let prepared = Jail::prepare(config);
    tracing::debug!(elapsed_us = t0.elapsed().as_micros() as u64, "prepared");
    let jail = match prepared {
        Ok(j) => j,
        Err(e) => return fail(&e),
    };
    let _ = sandbox_id.set(jail.id().to_string());
    if let Some(path) = &args.state_file
        && let Err(e) = write_state_file(path, &jail)
    {
        eprintln!("warden: --state-file {}: {e}", path.display());
        return ExitCode::from(70);
    }
    for w in jail.warnings() {
        eprintln!("warden: warning: {w}");
    }
    let degraded_layers: Vec<String> = jail
        .layers()
        .iter()
        .filter(|l| matches!(l.status, warden_jail::LayerStatus::Unavailable { .. }))
        .map(|l| l.layer.to_string())
        .collect();
    if !degraded_layers.is_empty() {
        eprintln!(
            "warden: warning: running WITHOUT {} (allowed by --allow-degraded)",
            degraded_layers.join(", ")
        );
    }
    if args.verbose {
        eprintln!(
            "warden: sandbox {}\n{}",
            jail.id(),
            render_table(jail.layers())
        );
    }
    // The exit status goes back as soon as the command's tree is gone; removing the
    // sandbox's remains finishes in the background (see Jail::run_until_exit).
    let (result, cleanup) = jail.run_until_exit();
    tracing::debug!("run returned");
    cleanup.detach();
    tracing::debug!("cleanup detached");
    match result {
        Ok(outcome) => finish(&args, outcome),
        Err(e) => fail(&e),
    }
}

/// The hidden `--state-file`: what the local driver needs to freeze, kill and clean up the
/// sandbox from outside. Written to a temporary name and renamed, so it is whole or absent.
fn write_state_file(path: &Path, jail: &Jail) -> std::io::Result<()> {
    let state = serde_json::json!({
        "id": jail.id(),
        "pid": std::process::id(),
        "cgroups": jail.cgroup_paths(),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, state.to_string() + "\n")?;
    std::fs::rename(&tmp, path)
}

fn fail(e: &JailError) -> ExitCode {
    eprintln!("warden: {e}");
    ExitCode::from(e.exit_code() as u8)
}

fn finish(args: &RunArgs, outcome: Outcome) -> ExitCode {
    for w in &outcome.warnings {
        if !w.starts_with("network mode \"host\"") {
            eprintln!("warden: warning: {w}");
        }
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&outcome).expect("outcome serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("warden: cannot write the report to {}: {e}", path.display());
        }
    }
    let program = args.command[0].to_string_lossy();
    match outcome.termination {
        Termination::Exited { code } => ExitCode::from(code as u8),
        Termination::Signaled { signal } => {
            if outcome.memory_limit_hit {
                eprintln!(
                    "warden: the sandbox hit its memory limit; the kernel killed `{program}` (signal {signal})"
                );
            }
            warden_jail::sys::die_by_signal(signal)
        }
        Termination::TimedOut { after_ms } => {
            eprintln!(
                "warden: timed out after {}; killed the sandbox's whole process tree",
                humantime::format_duration(Duration::from_millis(after_ms))
            );
            ExitCode::from(124)
        }
        Termination::NotFound => {
            eprintln!(
                "warden: `{program}`: command not found in the sandbox (is its directory readable by the policy?)"
            );
            ExitCode::from(127)
        }
        Termination::NotExecutable { error } => {
            eprintln!("warden: `{program}`: cannot execute: {error}");
            ExitCode::from(126)
        }
    }
}

/// Builds the policy from the profile or policy file, then the flags, and validates it.
fn build_policy(args: &RunArgs, cwd: &Path, home: &Path) -> Result<SandboxPolicy, String> {
    let mut policy = match (&args.policy, &args.profile) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--policy {}: {e}", file.display()))?;
            let base = file
                .parent()
                .map(|p| resolve_path(p, cwd, home))
                .unwrap_or_else(|| cwd.to_path_buf());
            PolicyFile::from_toml(&text)
                .and_then(|f| f.apply(Profile::Default, &base, home))
                .map_err(|e| format!("policy file {}:\n{}", file.display(), indent(&e)))?
        }
        (None, Some(name)) => {
            let profile = name
                .parse::<Profile>()
                .map_err(|e| format!("--profile: {e}"))?;
            if profile == Profile::Offline
                && (!args.allow_domains.is_empty()
                    || !args.routes.is_empty()
                    || args.network.is_some())
            {
                return Err("--profile offline never has network: drop --allow-domain, --route and --network, or use --profile default".into());
            }
            profile.policy()
        }
        (None, None) => Profile::Default.policy(),
    };
    let abs = |p: &PathBuf| resolve_path(p, cwd, home);
    if let Some(ws) = &args.workspace {
        policy.filesystem.workspace = Some(abs(ws));
    }
    policy
        .filesystem
        .read_only
        .extend(args.read_only.iter().map(abs));
    policy
        .filesystem
        .read_write
        .extend(args.read_write.iter().map(abs));
    policy.filesystem.hidden.extend(args.hidden.iter().map(abs));
    if let Some(mode) = &args.isolation {
        policy.isolation = mode
            .parse::<Isolation>()
            .map_err(|e| format!("--isolation: {e}"))?;
    }
    if let Some(mode) = &args.network {
        let mode = mode
            .parse::<NetworkMode>()
            .map_err(|e| format!("--network: {e}"))?;
        if mode == NetworkMode::Proxy {
            return Err("--network: use --allow-domain DOMAIN to turn on the egress proxy".into());
        }
        policy.network.mode = mode;
    }
    if !args.allow_domains.is_empty() {
        if policy.network.mode == NetworkMode::Host {
            return Err("--allow-domain cannot be combined with network mode host".into());
        }
        policy.network.mode = NetworkMode::Proxy;
        for d in &args.allow_domains {
            policy.network.allow_domains.push(
                d.parse::<DomainPattern>()
                    .map_err(|e| format!("--allow-domain: {e}"))?,
            );
        }
    }
    if !args.routes.is_empty() {
        if policy.network.mode == NetworkMode::Host {
            return Err(
                "--route needs the egress proxy, which network mode host does not have".into(),
            );
        }
        crate::egress::apply_route_flags(&mut policy, &args.routes)?;
        policy.network.mode = NetworkMode::Proxy;
    }
    let r = &mut policy.resources;
    if let Some(v) = &args.memory {
        r.memory = limit(v, "--memory", |s| {
            s.parse::<ByteSize>().map_err(|e| e.to_string())
        })?;
    }
    if let Some(v) = &args.file_size {
        r.file_size = limit(v, "--file-size", |s| {
            s.parse::<ByteSize>().map_err(|e| e.to_string())
        })?;
    }
    if let Some(v) = &args.pids {
        r.pids = limit(v, "--pids", |s| {
            s.parse::<u32>()
                .map_err(|_| format!("`{s}` is not a whole number"))
        })?;
    }
    if let Some(v) = &args.open_files {
        r.open_files = limit(v, "--open-files", |s| {
            s.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a whole number"))
        })?;
    }
    if let Some(v) = &args.cpus {
        r.cpus = limit(v, "--cpus", |s| {
            s.parse::<f64>()
                .map_err(|_| format!("`{s}` is not a number of cores such as 1.5"))
        })?;
    }
    if let Some(v) = &args.timeout {
        r.timeout = limit(v, "--timeout", |s| {
            humantime::parse_duration(s)
                .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 30s, 10m, 1h30m"))
        })?;
    }
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env: `{kv}` must look like NAME=VALUE"))?;
        policy.environment.set.insert(k.to_string(), v.to_string());
    }
    for p in &args.pass_env {
        policy.environment.pass.push(
            p.parse::<EnvPattern>()
                .map_err(|e| format!("--pass-env: {e}"))?,
        );
    }
    policy
        .validate()
        .map_err(|e| format!("invalid policy:\n{}", indent(&e)))?;
    Ok(policy)
}

fn limit<T>(
    value: &str,
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if value == "unlimited" {
        return Ok(None);
    }
    parse(value)
        .map(Some)
        .map_err(|e| format!("{flag}: {e}, or \"unlimited\""))
}

fn indent(e: &PolicyError) -> String {
    e.to_string()
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
