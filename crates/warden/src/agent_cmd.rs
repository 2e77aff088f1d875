//! `warden agent`: run a repository's CLAUDE.md and skills with any LLM, every tool call in
//! a sandbox; and `warden approvals`: answer the calls such runs wait on. The work lives in
//! `warden_agent::run`; this is wiring, the sandbox's set-up and the terminal display.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tokio::sync::{Mutex, mpsc};
use warden_agent::model::{ModelClient, ModelConfig, ModelSpec};
use warden_agent::permissions::{Context, DefaultPolicy};
use warden_agent::run::approval::{all_pending, answer_in};
use warden_agent::run::{
    Agent, AgentConfig, AgentEvent, Answer, ApprovalBox, Approver, Budget, DenyAll, DriverHost,
    EventSink, OnTimeout, PendingApproval, PrepareOptions, Price, RunDir, RunOutcome, RunState,
    RunStatus, cancellation, new_run_id, prepare, system_prompt, tools,
};
use warden_agent::trust::FileTrustStore;
use warden_sandbox::{CreateRequest, Driver, LocalConfig, LocalDriver, MemoryStore, Template};
use warden_sandboxd::proto::{Command, ExecRequest};

use crate::EXIT_USAGE;

const AGENT_HELP: &str = "\
What happens:
  1. The repository (--repo, or the git top level of the current directory) is read: CLAUDE.md,
     .claude/CLAUDE.md and CLAUDE.local.md from the root down to the current directory, their
     @imports (or AGENTS.md), the skills in .claude/skills and .agents/skills, the subagents in
     .claude/agents, and the permission rules in .claude/settings.json and settings.local.json.
  2. Every one of those files is checked against its trust pin (pinned on first use). A file that
     changed stops the run with a diff until `warden trust` accepts it.
  3. A sandbox is started with the repository as its workspace. Every tool call (Bash, Read, Write,
     Edit, Glob, Grep) runs inside it; nothing the model asks for runs on this machine directly.
  4. Each call is checked against the permission rules: deny refuses it, ask waits for you, allow
     runs it. Skill, TodoWrite and Task need no permission unless a rule names them.

The model is chosen by WARDEN_MODEL (or --model): anthropic/claude-sonnet-4-5, openai/gpt-4.1,
openai-chat/gpt-4.1, gemini/gemini-2.5-pro, ollama/qwen3, openai-compatible/MODEL@URL. Keys come from
ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY and stay on this side of the sandbox.

Approvals (--approvals):
  prompt   ask on this terminal (the default when stdin is a terminal); `warden approvals` can
           answer too
  wait     publish the call and wait for `warden approvals approve|deny` (the default otherwise)
  deny     refuse every ask at once
An ask nobody answers within --approval-timeout is denied (or, with --on-timeout cancel, ends the
run). Ctrl-C stops the run; its state is kept, and `--resume RUN` goes on where it stopped.

Everything the run does is kept in DATA/agent-runs/RUN/transcript.jsonl (one JSON event per line,
tool output whole), with its state in state.json.

Exit status: 0 when the model finished; 1 when the run failed (the model, the sandbox, a trust
check); 3 when it reached --max-turns or its budget; 4 when it was cancelled; 64 for bad flags.

Examples:
  WARDEN_MODEL=anthropic/claude-sonnet-4-5 warden agent 'Fix the failing test in src/parse.rs'
  warden agent --repo ~/src/app --max-turns 20 --max-cost 0.50 'Write release notes'
  warden agent --allow-domain crates.io --allow-domain static.crates.io 'Update the dependencies'
  warden agent --json --approvals wait 'Refactor the parser' > events.jsonl
  warden agent --resume run-0123456789ab";

/// Run a repository's CLAUDE.md and skills with any LLM, every tool call in a sandbox.
#[derive(Debug, Args)]
#[command(
    after_long_help = AGENT_HELP,
    after_help = "See `warden agent --help` for what happens, the model, approvals and examples."
)]
pub struct AgentArgs {
    /// What to do.
    #[arg(value_name = "PROMPT", required_unless_present = "resume")]
    prompt: Option<String>,
    /// The repository (default: the git top level of the current directory).
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Who works: warden's own loop with any model, or the real Claude Code or Codex CLI
    /// run headless inside the sandbox.
    #[arg(long, value_enum, default_value_t = AgentKind::Warden)]
    agent: AgentKind,
    /// The model, as WARDEN_MODEL takes it (overrides WARDEN_MODEL). With --agent
    /// claude-code or codex, the CLI's own model name (a `provider/` prefix is dropped).
    #[arg(long, value_name = "PROVIDER/MODEL")]
    model: Option<String>,
    /// Most model calls (sub-agents' included).
    #[arg(long, value_name = "N", default_value_t = 50)]
    max_turns: u32,
    /// Most tokens (input plus output).
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    /// Most US dollars; needs the model's price (known for common models, else
    /// WARDEN_MODEL_PRICE=INPUT/OUTPUT per million tokens).
    #[arg(long, value_name = "USD")]
    max_cost: Option<f64>,
    /// How asks are answered [default: prompt on a terminal, else wait].
    #[arg(long, value_enum)]
    approvals: Option<ApprovalMode>,
    /// How long an ask waits for an answer.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    approval_timeout: Duration,
    /// What an unanswered ask comes to.
    #[arg(long, value_enum, default_value_t = TimeoutAction::Deny)]
    on_timeout: TimeoutAction,
    /// Go on with a stopped run (its repository, prompt and conversation).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["prompt", "repo", "agent"])]
    resume: Option<String>,
    /// A sandbox policy file (TOML, as `warden run --policy`; without `filesystem.workspace`)
    /// [default: the `default` profile].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// A domain the sandbox may reach through its proxy (repeatable; `*.example.com` for
    /// subdomains).
    #[arg(long, value_name = "DOMAIN")]
    allow_domain: Vec<String>,
    /// The sandbox's wall-clock limit: it is killed after this long even if warden dies.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    timeout: Duration,
    /// Characters of a tool's output the model gets (the transcript keeps all of it).
    #[arg(long, value_name = "N", default_value_t = warden_agent::run::DEFAULT_MAX_TOOL_OUTPUT)]
    max_tool_output: usize,
    /// Print every event as a JSON line on stdout instead of the progress display.
    #[arg(long)]
    json: bool,
    /// Wait for whole answers instead of streaming them.
    #[arg(long)]
    no_stream: bool,
    #[command(flatten)]
    signatures: crate::trust_cmd::SignatureArgs,
    /// Data directory [default: /var/lib/warden for root, else $XDG_DATA_HOME/warden or
    /// ~/.local/share/warden].
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AgentKind {
    /// warden's tool loop (the model from WARDEN_MODEL).
    Warden,
    /// Claude Code (`claude -p --output-format stream-json`), its model calls through the
    /// sandbox's `anthropic` credential route (key from ANTHROPIC_API_KEY).
    ClaudeCode,
    /// Codex (`codex exec --json`), its model calls through the `openai` credential route
    /// (key from OPENAI_API_KEY).
    Codex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ApprovalMode {
    Prompt,
    Wait,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TimeoutAction {
    Deny,
    Cancel,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (write e.g. 90s, 10m, 2h)"))
}

/// Exit codes beyond 0, 1 and 64.
const EXIT_LIMIT: u8 = 3;
const EXIT_CANCELED: u8 = 4;

enum Failure {
    Usage(String),
    Run(String),
}

pub fn main(args: AgentArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("warden agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(outcome) => match outcome.status {
            RunStatus::Succeeded => ExitCode::SUCCESS,
            RunStatus::Failed => ExitCode::from(1),
            RunStatus::MaxTurns | RunStatus::BudgetExceeded => ExitCode::from(EXIT_LIMIT),
            RunStatus::Canceled => ExitCode::from(EXIT_CANCELED),
        },
        Err(Failure::Usage(m)) => {
            say!("warden agent: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Run(m)) => {
            say!("warden agent: {m}");
            ExitCode::from(1)
        }
    }
}

fn data_dir(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    flag.map(Path::to_path_buf)
        .or_else(warden_server::default_data_dir)
        .ok_or_else(|| Failure::Usage("no data directory: pass --data DIR or set HOME".into()))
}

/// The repository read and trusted (`run::prepare`), errors sorted into usage and run.
fn read_repository(
    args: &AgentArgs,
    data: &Path,
    repo: Option<&Path>,
    cwd: &Path,
) -> Result<warden_agent::run::Prepared, Failure> {
    let trust_store = FileTrustStore::in_data_dir(data);
    prepare(&PrepareOptions {
        repo,
        cwd,
        trust_store: &trust_store,
        signatures: args.signatures.policy().map_err(Failure::Usage)?,
    })
    .map_err(|e| match e {
        warden_agent::run::PrepareError::Usage(m) => Failure::Usage(m),
        other => Failure::Run(other.to_string()),
    })
}

/// The sandbox's policy: `--policy`, or the default profile; the allowed domains added.
fn sandbox_policy(args: &AgentArgs) -> Result<toml::Table, Failure> {
    let mut table = match &args.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::Usage(format!("--policy {}: {e}", p.display())))?;
            toml::from_str::<toml::Table>(&text)
                .map_err(|e| Failure::Usage(format!("--policy {}: {e}", p.display())))?
        }
        None => toml::Table::from_iter([("profile".to_string(), "default".into())]),
    };
    if !args.allow_domain.is_empty() {
        let network = table
            .entry("network")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(network) = network else {
            return Err(Failure::Usage("--policy: `network` must be a table".into()));
        };
        network.insert("mode".into(), "proxy".into());
        let list = network
            .entry("allow_domains")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        let toml::Value::Array(list) = list else {
            return Err(Failure::Usage(
                "--policy: `network.allow_domains` must be a list".into(),
            ));
        };
        list.extend(
            args.allow_domain
                .iter()
                .map(|d| toml::Value::from(d.as_str())),
        );
    }
    let resources = table
        .entry("resources")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(r) = resources {
        r.entry("timeout").or_insert_with(|| {
            toml::Value::from(humantime::format_duration(args.timeout).to_string())
        });
    }
    Ok(table)
}

async fn run(args: AgentArgs) -> Result<RunOutcome, Failure> {
    if args.agent != AgentKind::Warden {
        return run_external_agent(args).await;
    }
    let data = data_dir(args.data.as_deref())?;
    let runs = data.join("agent-runs");
    // The run: a new one, or a stopped one to resume.
    let (mut state, run_dir) = match &args.resume {
        Some(id) => {
            let dir =
                RunDir::open(&runs, id).map_err(|e| Failure::Usage(format!("--resume: {e}")))?;
            let state = dir
                .load()
                .map_err(|e| Failure::Usage(format!("--resume {id}: {e}")))?;
            if let Some(o) = &state.outcome
                && o.status != RunStatus::Canceled
            {
                return Err(Failure::Usage(format!(
                    "--resume {id}: the run ended ({}); only a stopped run can go on",
                    o.status.as_str()
                )));
            }
            (Some(state), dir)
        }
        None => {
            let id = new_run_id();
            let dir = RunDir::create(&runs, &id)
                .map_err(|e| Failure::Run(format!("cannot create the run's directory: {e}")))?;
            (None, dir)
        }
    };
    let run_id = run_dir
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // The model.
    let env = |k: &str| std::env::var(k).ok();
    let model_value = args
        .model
        .clone()
        .or_else(|| state.as_ref().map(|s| s.model.clone()))
        .or_else(|| env("WARDEN_MODEL"))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "no model: set WARDEN_MODEL or pass --model, in one of the forms {}",
                warden_agent::model::ACCEPTED_FORMS
            ))
        })?;
    let spec = ModelSpec::parse(&model_value).map_err(|e| Failure::Usage(e.to_string()))?;
    let model_name = format!("{}/{}", spec.provider.as_str(), spec.model);
    let model_config =
        ModelConfig::for_spec(spec, env).map_err(|e| Failure::Usage(e.to_string()))?;
    let model = ModelClient::new(model_config).map_err(|e| Failure::Usage(e.to_string()))?;
    let price = match env("WARDEN_MODEL_PRICE") {
        Some(p) => Some(Price::parse(&p).map_err(Failure::Usage)?),
        None => Price::known(&model_value),
    };
    if args.max_cost.is_some() && price.is_none() {
        return Err(Failure::Usage(format!(
            "--max-cost: the price of {model_value} is not known; set WARDEN_MODEL_PRICE=INPUT/OUTPUT (US dollars per million tokens)"
        )));
    }

    // The repository, read and trusted.
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Usage(format!("the current directory: {e}")))?;
    let (repo_flag, cwd) = match &state {
        Some(s) => (Some(s.repo.clone()), s.working_dir.clone()),
        None => (args.repo.clone(), cwd),
    };
    let prepared = read_repository(&args, &data, repo_flag.as_deref(), &cwd)?;
    let root = prepared.source.repo_root.clone();
    let working_dir = prepared.source.working_dir.clone();

    // Events: the transcript, and the terminal or JSON lines.
    let interactive = std::io::stdin().is_terminal();
    let display = event_display(args.json);
    let sink = EventSink::new(
        &run_id,
        Some(&run_dir.transcript_path()),
        None,
        Some(display),
    )
    .map_err(|e| Failure::Run(e.to_string()))?;
    let mut state = match state.take() {
        Some(s) => s,
        None => {
            let prompt = args.prompt.clone().unwrap_or_default();
            RunState::new(&run_id, &model_value, &root, &working_dir, &prompt)
        }
    };
    sink.emit(AgentEvent::RunStarted {
        run_id: run_id.clone(),
        agent: "warden".into(),
        model: model_name.clone(),
        repo: root.display().to_string(),
        prompt: state.prompt.clone(),
    });
    for w in &prepared.warnings {
        sink.emit(AgentEvent::Warning { message: w.clone() });
    }
    sink.emit(AgentEvent::Loaded {
        instructions: prepared
            .instructions
            .parts
            .iter()
            .map(|p| prepared.instructions.display_path(&p.path))
            .collect(),
        skills: prepared
            .skills
            .skills
            .iter()
            .filter(|s| !s.disable_model_invocation)
            .map(|s| s.name.clone())
            .collect(),
        subagents: prepared
            .subagents
            .agents
            .iter()
            .map(|a| a.name.clone())
            .collect(),
        trust: prepared.trust.summary(),
    });

    // The sandbox, with the repository as its workspace.
    let policy = sandbox_policy(&args)?;
    let (driver, sandbox) = start_sandbox(&data, &args, policy, &root, &run_id).await?;
    let host = Arc::new(DriverHost {
        driver: driver.clone(),
        sandbox: sandbox.clone(),
        workspace: root.clone(),
    });

    // Approvals.
    let approvals = ApprovalBox::new(&run_dir.dir);
    let mode = args.approvals.unwrap_or(if interactive && !args.json {
        ApprovalMode::Prompt
    } else {
        ApprovalMode::Wait
    });
    let approver: Arc<dyn Approver> = match mode {
        ApprovalMode::Prompt => Arc::new(TerminalApprover::new(approvals.clone())),
        ApprovalMode::Wait => Arc::new(approvals.clone()),
        ApprovalMode::Deny => Arc::new(DenyAll),
    };

    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    let mut context = Context::new(&root, &home);
    context.cwd = working_dir.clone();
    context.default = DefaultPolicy::Standard;
    let config = AgentConfig {
        model,
        model_name,
        price,
        system: system_prompt(&prepared, &root, &working_dir),
        rules: prepared.rules.clone(),
        context,
        skills: prepared.skills.clone(),
        subagents: prepared.subagents.clone(),
        trust: Some(prepared.trust.clone()),
        budget: Budget {
            max_turns: args.max_turns,
            max_tokens: args.max_tokens,
            max_cost_usd: args.max_cost,
        },
        max_tool_output: args.max_tool_output,
        approval_timeout: args.approval_timeout,
        on_timeout: match args.on_timeout {
            TimeoutAction::Deny => OnTimeout::Deny,
            TimeoutAction::Cancel => OnTimeout::Cancel,
        },
        tools: tools::ALL_TOOLS.iter().map(|s| s.to_string()).collect(),
        max_tokens_per_call: 8192,
        stream: !args.no_stream,
        delegate: None,
    };
    let agent = Agent {
        config: Arc::new(config),
        host,
        approver,
        approvals: Some(approvals),
        sink: sink.clone(),
        run_dir: Some(run_dir.clone()),
    };
    let (handle, cancel) = cancellation();
    let stop = cancel_on_signal(handle);
    let outcome = agent.run(&mut state, &cancel).await;
    stop.abort();
    conclude(&driver, &sandbox, &outcome, args.json, &run_id, &run_dir).await;
    Ok(outcome)
}

/// Cancels the run on SIGINT or SIGTERM, until the returned task is aborted.
fn cancel_on_signal(handle: warden_agent::run::CancelHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let signal = crate::stop_signal().await;
        say!("\nwarden agent: {signal}: stopping the run");
        handle.cancel();
    })
}

/// After a run: its sandbox removed, and (without --json) the outcome reported.
async fn conclude(
    driver: &Arc<dyn Driver>,
    sandbox: &str,
    outcome: &RunOutcome,
    json: bool,
    run_id: &str,
    run_dir: &RunDir,
) {
    if let Err(e) = driver.delete(sandbox).await {
        say!("warden agent: cannot remove the sandbox {sandbox}: {e}");
    }
    if !json {
        report(outcome, run_id, run_dir);
    }
}
/// Starts the run's sandbox: a local driver of its own under `DATA/agent`, one template
/// made of `policy`, and one sandbox whose workspace is the repository.
async fn start_sandbox(
    data: &Path,
    args: &AgentArgs,
    policy: toml::Table,
    root: &Path,
    run_id: &str,
) -> Result<(Arc<dyn Driver>, String), Failure> {
    let cfg = LocalConfig::new(data.join("agent"))
        .map_err(|e| Failure::Run(format!("cannot find the warden binary: {e}")))?;
    let driver = LocalDriver::new(cfg, Arc::new(MemoryStore::default()))
        .map_err(|e| Failure::Run(e.to_string()))?;
    let driver: Arc<dyn Driver> = Arc::new(driver);
    driver
        .put_template(Template {
            name: "agent".into(),
            policy,
            shutdown_after: Some(args.timeout),
            idle_timeout: Some(args.timeout),
            workspace_quota: None,
        })
        .await
        .map_err(|e| Failure::Usage(format!("--policy: {e}")))?;
    let sandbox = driver
        .create(CreateRequest {
            template: "agent".into(),
            labels: BTreeMap::from([("warden-run".into(), run_id.to_string())]),
            workspace: Some(root.to_path_buf()),
            ..CreateRequest::default()
        })
        .await
        .map_err(|e| Failure::Run(format!("the sandbox did not start: {e}")))?;
    Ok((driver, sandbox.id))
}

/// The display of events: JSON lines on stdout, or the progress display on stderr.
fn event_display(json: bool) -> Box<dyn Fn(&AgentEvent) + Send + Sync> {
    if json {
        Box::new(|e: &AgentEvent| {
            if let Ok(line) = serde_json::to_string(e) {
                println!("{line}");
            }
        })
    } else {
        Box::new(progress_display())
    }
}

/// `--agent claude-code|codex`: the repository read and trusted as for warden's loop (the
/// CLI reads the same files inside the sandbox), then the CLI run headless in a sandbox
/// whose proxy serves the model's credential route.
async fn run_external_agent(args: AgentArgs) -> Result<RunOutcome, Failure> {
    use warden_agent::run::external::{ExternalAgent, ExternalOptions, run_external};
    let (agent, route, key_var, url_var, strip) = match args.agent {
        AgentKind::ClaudeCode => (
            ExternalAgent::ClaudeCode,
            "anthropic",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            None,
        ),
        _ => (
            ExternalAgent::Codex,
            "openai",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            Some("/v1"),
        ),
    };
    if std::env::var_os(key_var).is_none_or(|v| v.is_empty()) {
        return Err(Failure::Usage(format!(
            "--agent {}: {key_var} is not set; the sandbox's credential route adds it to the CLI's model calls on the way out",
            agent.as_str()
        )));
    }
    let data = data_dir(args.data.as_deref())?;
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Usage(format!("the current directory: {e}")))?;
    let prepared = read_repository(&args, &data, args.repo.as_deref(), &cwd)?;
    let root = prepared.source.repo_root.clone();
    let run_id = new_run_id();
    let run_dir = RunDir::create(&data.join("agent-runs"), &run_id)
        .map_err(|e| Failure::Run(format!("cannot create the run's directory: {e}")))?;
    let sink = EventSink::new(
        &run_id,
        Some(&run_dir.transcript_path()),
        None,
        Some(event_display(args.json)),
    )
    .map_err(|e| Failure::Run(e.to_string()))?;
    for w in &prepared.warnings {
        sink.emit(AgentEvent::Warning { message: w.clone() });
    }

    // The sandbox's policy serves the model's credential route: the upstream is the
    // provider's (or its *_BASE_URL on this side), and the key is read here, outside.
    let mut policy = sandbox_policy(&args)?;
    let mut route_table = toml::Table::new();
    if let Some(url) = std::env::var(url_var).ok().filter(|u| !u.trim().is_empty()) {
        let url = url.trim().trim_end_matches('/');
        let url = strip.and_then(|s| url.strip_suffix(s)).unwrap_or(url);
        route_table.insert("upstream".into(), url.into());
    }
    route_table.insert(
        "credential".into(),
        toml::Value::Table(toml::Table::from_iter([(
            "env".to_string(),
            toml::Value::from(key_var),
        )])),
    );
    let routes = policy
        .entry("routes")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(routes) = routes else {
        return Err(Failure::Usage("--policy: `routes` must be a table".into()));
    };
    routes.insert(route.into(), toml::Value::Table(route_table));
    let (driver, sandbox) = start_sandbox(&data, &args, policy, &root, &run_id).await?;
    let host = DriverHost {
        driver: driver.clone(),
        sandbox: sandbox.clone(),
        workspace: root.clone(),
    };
    // The route's address as the sandbox sees it.
    let probe = driver
        .exec(
            &sandbox,
            ExecRequest::new(Command::Argv(vec!["printenv".into(), url_var.into()])),
        )
        .await;
    let base_url = match probe {
        Ok(r) if r.exit_code == 0 => r.stdout.trim().to_string(),
        other => {
            let _ = driver.delete(&sandbox).await;
            return Err(Failure::Run(format!(
                "the sandbox has no {url_var} for its `{route}` credential route: {other:?}"
            )));
        }
    };
    let mut opts = ExternalOptions::new(args.prompt.clone().unwrap_or_default(), base_url);
    opts.run_id = run_id.clone();
    opts.model = args
        .model
        .as_deref()
        .map(|m| m.rsplit('/').next().unwrap_or(m).to_string());
    opts.max_turns = Some(args.max_turns);
    opts.timeout = Some(args.timeout);
    opts.cwd = Some(prepared.source.working_dir.to_string_lossy().into_owned());
    let (handle, cancel) = cancellation();
    let stop = cancel_on_signal(handle);
    let outcome = run_external(agent, &host, &sink, &opts, cancel.cancelled()).await;
    stop.abort();
    conclude(&driver, &sandbox, &outcome, args.json, &run_id, &run_dir).await;
    Ok(outcome)
}

/// The last lines: the answer on stdout, the status on stderr.
fn report(outcome: &RunOutcome, run_id: &str, run_dir: &RunDir) {
    if !outcome.result.is_empty() {
        println!("{}", outcome.result);
    }
    let usage = &outcome.usage;
    let cost = outcome
        .cost_usd
        .map(|c| format!(", ${c:.4}"))
        .unwrap_or_default();
    let status = match outcome.status {
        RunStatus::Succeeded => "done".to_string(),
        s => format!(
            "{}: {}",
            s.as_str(),
            outcome.error.as_deref().unwrap_or("no reason given")
        ),
    };
    say!(
        "warden agent: {status} ({} model calls, {} tokens in, {} out{cost}); transcript {}",
        outcome.turns,
        usage.input_tokens,
        usage.output_tokens,
        run_dir.transcript_path().display()
    );
    if outcome.status == RunStatus::Canceled {
        say!("warden agent: go on with `warden agent --resume {run_id}`");
    }
}

/// The progress display on stderr: what the model says, each call with its decision, and
/// the first line of each result.
fn progress_display() -> impl Fn(&AgentEvent) + Send + Sync {
    let streamed = AtomicBool::new(false);
    move |e: &AgentEvent| match e {
        AgentEvent::Warning { message } => say!("warden agent: warning: {message}"),
        AgentEvent::Loaded {
            instructions,
            skills,
            trust,
            ..
        } => say!(
            "warden agent: {} instruction file(s), {} skill(s); {trust}",
            instructions.len(),
            skills.len()
        ),
        AgentEvent::TextDelta { text } => {
            streamed.store(true, Ordering::Relaxed);
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "{text}");
        }
        AgentEvent::Assistant { text, .. } => {
            if !streamed.swap(false, Ordering::Relaxed) && !text.trim().is_empty() {
                say!("{}", text.trim_end());
            } else if !text.is_empty() {
                say!("");
            }
        }
        AgentEvent::ToolCall {
            tool,
            input,
            subagent,
            ..
        } => {
            let arg = ["command", "file_path", "pattern", "skill", "prompt"]
                .iter()
                .find_map(|k| input.get(*k).and_then(|v| v.as_str()))
                .unwrap_or("");
            let who = subagent
                .as_ref()
                .map(|s| format!("[{s}] "))
                .unwrap_or_default();
            say!("  {who}> {tool}({})", tools::shorten(arg, 120));
        }
        AgentEvent::Decision {
            decision, basis, ..
        } if decision != "allow" => say!("    {decision}: {basis}"),
        AgentEvent::ApprovalAnswered {
            approved,
            reason,
            by,
            ..
        } => say!(
            "    {} by {by}{}",
            if *approved { "approved" } else { "denied" },
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        AgentEvent::ToolResult {
            output, is_error, ..
        } => {
            let first = output.lines().next().unwrap_or("");
            let n = output.lines().count();
            say!(
                "    {}{}{}",
                if *is_error { "error: " } else { "" },
                tools::shorten(first, 120),
                if n > 1 {
                    format!(" (+{} lines)", n - 1)
                } else {
                    String::new()
                }
            );
        }
        AgentEvent::SubagentStarted { name, .. } => say!("  sub-agent {name} starts"),
        AgentEvent::SubagentFinished { name, status, .. } => {
            say!("  sub-agent {name}: {}", status.as_str())
        }
        _ => {}
    }
}

/// Asks on the terminal, and takes an answer from `warden approvals` too, whichever comes
/// first. Lines of stdin are read by one thread for the whole run.
#[derive(Debug)]
struct TerminalApprover {
    lines: Mutex<mpsc::UnboundedReceiver<String>>,
    inbox: ApprovalBox,
}

impl TerminalApprover {
    fn new(inbox: ApprovalBox) -> TerminalApprover {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                if tx.send(line.trim().to_string()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        TerminalApprover {
            lines: Mutex::new(rx),
            inbox,
        }
    }
}

#[async_trait::async_trait]
impl Approver for TerminalApprover {
    async fn ask(&self, pending: &PendingApproval) -> Option<Answer> {
        say!(
            "\n  {} needs your approval ({}).\n  Allow? [y]es / [n]o, optionally followed by a reason (denied at {}): ",
            pending.call,
            pending.basis,
            pending.deadline
        );
        let mut lines = self.lines.lock().await;
        tokio::select! {
            line = lines.recv() => {
                let line = line?;
                let (word, reason) = match line.split_once(char::is_whitespace) {
                    Some((w, r)) => (w.to_string(), Some(r.trim().to_string()).filter(|r| !r.is_empty())),
                    None => (line.clone(), None),
                };
                let approved = matches!(word.to_ascii_lowercase().as_str(), "y" | "yes");
                Some(Answer { approved, reason, by: "terminal".into() })
            }
            answer = self.inbox.ask(pending) => answer,
        }
    }
}

const APPROVALS_HELP: &str = "\
A run of `warden agent` that meets an `ask` rule publishes the call and waits (see `warden agent
--help`, --approvals). These commands list and answer such calls from another terminal or a
script; `warden serve` offers the same through its API. The answer reaches the run within a moment,
and its reason goes back to the model.

Exit status: 0 on success; 1 when the call is not pending (answered already, timed out, or never
asked); 64 for bad flags.

Examples:
  warden approvals list
  warden approvals approve run-0123456789ab toolu_01AbC --reason 'ok for this branch'
  warden approvals deny run-0123456789ab toolu_01AbC --reason 'never push to main'";

/// List and answer the tool calls `warden agent` runs wait on.
#[derive(Debug, Args)]
#[command(after_long_help = APPROVALS_HELP, after_help = "See `warden approvals --help` for examples.")]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
    /// Data directory [default: as `warden agent`].
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA", global = true)]
    data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// The calls waiting for an answer, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let a call run.
    Approve(AnswerArgs),
    /// Refuse a call; the model is told why.
    Deny(AnswerArgs),
}

#[derive(Debug, Args)]
struct AnswerArgs {
    /// The run's id (`run-...`).
    run: String,
    /// The call's id, as `warden approvals list` shows it.
    call: String,
    /// Why (passed to the model).
    #[arg(long)]
    reason: Option<String>,
}

pub fn approvals_main(args: ApprovalsArgs) -> ExitCode {
    let data = match data_dir(args.data.as_deref()) {
        Ok(d) => d,
        Err(Failure::Usage(m) | Failure::Run(m)) => {
            say!("warden approvals: {m}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runs = data.join("agent-runs");
    let (a, approved) = match args.command {
        ApprovalsCommand::List { json } => {
            let pending = all_pending(&runs);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&pending).unwrap_or_default()
                );
            } else if pending.is_empty() {
                say!("warden approvals: nothing is waiting");
            } else {
                for p in &pending {
                    println!(
                        "{}  {}  {}\n    rule: {}\n    denied at {} unless answered",
                        p.run_id, p.call_id, p.call, p.basis, p.deadline
                    );
                }
            }
            return ExitCode::SUCCESS;
        }
        ApprovalsCommand::Approve(a) => (a, true),
        ApprovalsCommand::Deny(a) => (a, false),
    };
    let answer = Answer {
        approved,
        reason: a.reason,
        by: "cli".into(),
    };
    match answer_in(&runs, &a.run, &a.call, &answer) {
        Ok(()) => {
            say!(
                "warden approvals: {} {} of {}",
                if approved { "approved" } else { "denied" },
                a.call,
                a.run
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("warden approvals: {e}");
            ExitCode::from(1)
        }
    }
}
