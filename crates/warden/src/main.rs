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

/// The top-level attributes, shared by [`Cli`] and [`RunCli`].
macro_rules! warden_cli {
    ($(#[$m:meta])* struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
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
        struct $name { $($body)* }
    };
}

warden_cli! {
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
}

warden_cli! {
    /// `warden run` alone: what a sandbox's start parses. Building the whole command tree
    /// (every subcommand's arguments and help) costs a sandbox start about 0.4 MB of heap
    /// and a tenth of a millisecond; `warden run --help` and its errors read the same.
    struct RunCli {
        #[command(subcommand)]
        command: RunOnly,
    }
}

#[derive(Debug, Subcommand)]
enum RunOnly {
    Run(Box<run::RunArgs>),
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

/// When `main` began, for the start-up timings `warden run` logs at debug level.
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    STARTED.get_or_init(std::time::Instant::now);
    init_tracing();
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        return match RunCli::try_parse() {
            Ok(RunCli {
                command: RunOnly::Run(args),
            }) => run::main(*args),
            Err(e) => usage_error(e),
        };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
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

/// Prints a parse error (or the help or version asked for) and gives its exit code.
fn usage_error(e: clap::Error) -> ExitCode {
    let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
    let _ = e.print();
    ExitCode::from(code)
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
    // WARDEN_LOG_FORMAT=json: one JSON object per line (for log collectors).
    let json = std::env::var("WARDEN_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    // Without WARDEN_LOG, warnings and errors: a plain level filter, which spares every
    // sandbox start parsing filter directives.
    match tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG") {
        Ok(filter) => {
            let builder = builder.with_env_filter(filter);
            let _ = if json {
                builder.json().flatten_event(true).try_init()
            } else {
                builder.try_init()
            };
        }
        Err(_) => {
            let builder = builder.with_max_level(tracing::Level::WARN);
            let _ = if json {
                builder.json().flatten_event(true).try_init()
            } else {
                builder.try_init()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `warden run` is parsed by [`RunCli`] alone: its help, usage and errors must read as
    /// they would from the whole command tree.
    #[test]
    fn the_run_fast_path_reads_like_the_whole_cli() {
        let mut whole = Cli::command();
        let mut alone = RunCli::command();
        whole.build();
        alone.build();
        let whole_run = whole.find_subcommand_mut("run").expect("run");
        let alone_run = alone.find_subcommand_mut("run").expect("run");
        assert_eq!(
            whole_run.render_long_help().to_string(),
            alone_run.render_long_help().to_string()
        );
        assert_eq!(
            whole_run.render_help().to_string(),
            alone_run.render_help().to_string()
        );
        assert_eq!(
            whole_run.render_usage().to_string(),
            alone_run.render_usage().to_string()
        );
        for argv in [
            &["warden", "run", "--bogus"][..],
            &["warden", "run", "--memory"],
            &["warden", "run", "--profle", "x"],
        ] {
            let a = Cli::try_parse_from(argv).unwrap_err().to_string();
            let b = RunCli::try_parse_from(argv).unwrap_err().to_string();
            assert_eq!(a, b, "{argv:?}");
        }
        let RunCli {
            command: RunOnly::Run(args),
        } = RunCli::try_parse_from(["warden", "run", "--memory", "64M", "--", "true"]).unwrap();
        let Command::Run(whole_args) =
            Cli::try_parse_from(["warden", "run", "--memory", "64M", "--", "true"])
                .unwrap()
                .command
        else {
            panic!("not run");
        };
        assert_eq!(format!("{args:?}"), format!("{whole_args:?}"));
    }
}
