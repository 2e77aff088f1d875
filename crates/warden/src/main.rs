//! `warden`: one binary, many roles. This crate is argument parsing and wiring only; the
//! work lives in the library crates (`warden-policy`, `warden-jail`, ...).

/// Like `eprintln!`, but never panics: the proxy (a thread of `warden run`, or `warden proxy`
/// itself) must survive a closed stderr, such as a log collector gone; with `panic = "abort"`
/// a panic there would take warden and its sandbox down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod a2a_cmd;
mod agent_cmd;
mod controller_cmd;
mod doctor;
mod egress;
mod permissions_cmd;
mod proxy_cmd;
mod router_cmd;
mod run;
mod sandbox_cmd;
mod sandboxd_cmd;
mod schedule_cmd;
mod serve_cmd;
mod skills_cmd;
mod task_cmd;
mod trust_cmd;
mod webhook_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad flags, policies and paths (BSD sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Run AI coding agents and the code they write inside defense-in-depth sandboxes",
    long_about = "Run AI coding agents and the code they write inside defense-in-depth sandboxes.\n\n\
        A command that warden runs cannot read your secrets, write outside its workspace, reach the \
        network, see or signal other processes, or exhaust the machine: user, pid, mount, network, ipc \
        and uts namespaces, Landlock, seccomp, dropped capabilities, cgroups and rlimits enforce it.",
    after_help = "Start with `warden doctor` to see which layers this host can enforce, then `warden run -- sh`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(Box<run::RunArgs>),
    Proxy(Box<proxy_cmd::ProxyArgs>),
    Doctor(doctor::DoctorArgs),
    Serve(Box<serve_cmd::ServeArgs>),
    Sandbox(Box<sandbox_cmd::SandboxArgs>),
    Task(Box<task_cmd::TaskArgs>),
    Schedule(Box<schedule_cmd::ScheduleArgs>),
    Webhook(Box<webhook_cmd::WebhookArgs>),
    Sandboxd(Box<sandboxd_cmd::SandboxdArgs>),
    Skills(skills_cmd::SkillsArgs),
    Permissions(permissions_cmd::PermissionsArgs),
    Trust(Box<trust_cmd::TrustArgs>),
    Agent(Box<agent_cmd::AgentArgs>),
    Approvals(agent_cmd::ApprovalsArgs),
    Router(Box<router_cmd::RouterArgs>),
    Controller(Box<controller_cmd::ControllerArgs>),
    A2a(Box<a2a_cmd::A2aArgs>),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run(args) => run::main(*args),
        Command::Proxy(args) => proxy_cmd::main(*args),
        Command::Doctor(args) => doctor::main(args),
        Command::Serve(args) => serve_cmd::main(*args),
        Command::Sandbox(args) => sandbox_cmd::main(*args),
        Command::Task(args) => task_cmd::main(*args),
        Command::Schedule(args) => schedule_cmd::main(*args),
        Command::Webhook(args) => webhook_cmd::main(*args),
        Command::Sandboxd(args) => sandboxd_cmd::main(*args),
        Command::Skills(args) => skills_cmd::main(args),
        Command::Permissions(args) => permissions_cmd::main(args),
        Command::Trust(args) => trust_cmd::main(*args),
        Command::Agent(args) => agent_cmd::main(*args),
        Command::Approvals(args) => agent_cmd::approvals_main(args),
        Command::Router(args) => router_cmd::main(*args),
        Command::Controller(args) => controller_cmd::main(*args),
        Command::A2a(args) => a2a_cmd::main(*args),
    }
}

/// Waits for SIGTERM or SIGINT and names it (the servers' graceful stop).
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!("pending never completes");
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // WARDEN_LOG_FORMAT=json: one JSON object per line (for log collectors).
    let json = std::env::var("WARDEN_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
