//! `warden a2a ...`: an A2A v1.0 client (JSON-RPC) for any agent, warden's own or another's:
//! read its card, send it a message and follow the task.

use std::path::PathBuf;
use std::process::ExitCode;

use a2a::{SendMessageResponse, StreamResponse, Task, TaskState};
use clap::{Args, Subcommand};
use serde_json::json;
use warden_server::a2a::client::{
    A2aClient, ClientError, rpc_url, state_name, text_of_task, user_message,
};

use crate::EXIT_USAGE;
use crate::sandbox_cmd::Failure;

const A2A_HELP: &str = "\
A2A (Agent2Agent, v1.0) lets agents give each other tasks. An agent publishes its card at
<URL>/.well-known/agent-card.json (name, skills, where its JSON-RPC endpoint is, how to
authenticate); `warden a2a card` prints it. `warden a2a send` sends a message: it starts a
task, or, with --task, answers one that waits for input (warden's tasks wait there when a
tool call needs approval: send \"approve\" or \"deny\").

`warden serve` is an A2A agent itself (see `warden serve --help`): its URL is the server's,
its token the server's (<data>/token).

The bearer token is read from --token-file, else from WARDEN_A2A_TOKEN; none is sent
without either.

Exit status: 0 when the task completed (or the agent answered with a message), 1 when it
failed, was canceled or rejected, or the agent refused the request (its JSON-RPC error is
printed), 2 when it waits for input (answer with --task ID), 64 for bad arguments, 69 when
the agent cannot be reached.

Examples:
  warden a2a card http://127.0.0.1:7070
  warden a2a send http://127.0.0.1:7070 --token-file /var/lib/warden/token \\
      --message 'Fix the failing test in tests/parse.rs' --repo https://git.example/org/app.git
  warden a2a send http://127.0.0.1:7070 --stream --message 'Write release notes'
  warden a2a send http://127.0.0.1:7070 --task task-3k9d2m1x0a7b --message approve";

/// Talk to an A2A agent: read its card, send it tasks.
#[derive(Debug, Args)]
#[command(after_long_help = A2A_HELP, after_help = "See `warden a2a --help` for tokens, exit codes and examples.")]
pub struct A2aArgs {
    /// Print JSON (the card, the task, or one event per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: A2aCommand,
}

#[derive(Debug, Subcommand)]
enum A2aCommand {
    /// Print an agent's card: what it does, its skills, its endpoint.
    Card {
        /// The agent's base URL (its card is at URL/.well-known/agent-card.json).
        url: String,
    },
    /// Send a message: start a task (or answer one with --task) and wait for its end.
    Send(SendArgs),
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The agent's base URL.
    url: String,
    /// What to say: the task, or the answer to a task waiting for input.
    #[arg(long, short = 'm', value_name = "TEXT")]
    message: String,
    /// Follow the task as it runs (Server-Sent Events) instead of waiting for its end.
    #[arg(long)]
    stream: bool,
    /// A file holding the bearer token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The repository a warden agent works on (sent as the message's data part).
    #[arg(long, value_name = "URL")]
    repo: Option<String>,
    /// Answer this task (waiting for input) instead of starting one.
    #[arg(long, value_name = "ID")]
    task: Option<String>,
    /// Return as soon as the task is accepted.
    #[arg(long, conflicts_with = "stream")]
    no_wait: bool,
}

fn failure(e: ClientError) -> Failure {
    let code = match &e {
        ClientError::Usage(_) => EXIT_USAGE,
        ClientError::Http { .. } => 69,
        _ => 1,
    };
    Failure {
        code,
        message: e.to_string(),
    }
}

pub fn main(args: A2aArgs) -> ExitCode {
    crate::sandbox_cmd::run_client("a2a", run(args))
}

fn read_token(file: Option<&PathBuf>) -> Result<Option<String>, Failure> {
    match file {
        Some(f) => std::fs::read_to_string(f)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| Failure {
                code: EXIT_USAGE,
                message: format!("--token-file {}: {e}", f.display()),
            }),
        None => Ok(std::env::var("WARDEN_A2A_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())),
    }
}

fn json_line(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// The exit code a task's state ends the command with.
fn exit_for(state: &TaskState) -> ExitCode {
    match state {
        TaskState::Completed => ExitCode::SUCCESS,
        TaskState::InputRequired | TaskState::AuthRequired => ExitCode::from(2),
        TaskState::Failed | TaskState::Canceled | TaskState::Rejected => ExitCode::from(1),
        // Still running: the agent's wait ran out.
        _ => ExitCode::SUCCESS,
    }
}

fn print_task(t: &Task) {
    println!("task {}  {}", t.id, state_name(&t.status.state));
    let text = text_of_task(t);
    if !text.is_empty() {
        println!("{text}");
    }
    if t.status.state == TaskState::InputRequired {
        say!(
            "warden a2a: the task waits for input; answer with --task {} --message approve (or deny)",
            t.id
        );
    }
}

async fn run(args: A2aArgs) -> Result<ExitCode, Failure> {
    match args.command {
        A2aCommand::Card { url } => {
            let client = A2aClient::new(&url, None).map_err(failure)?;
            let card = client.card().await.map_err(failure)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&card).unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("{} {}", card.name, card.version);
            println!("{}", card.description);
            for i in &card.supported_interfaces {
                println!(
                    "interface: {} {} {}",
                    i.protocol_binding, i.protocol_version, i.url
                );
            }
            println!(
                "streaming: {}  push notifications: {}",
                card.capabilities.streaming.unwrap_or(false),
                card.capabilities.push_notifications.unwrap_or(false)
            );
            for s in &card.skills {
                println!("skill {}: {}", s.id, s.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        A2aCommand::Send(s) => {
            let token = read_token(s.token_file.as_ref())?;
            let client = A2aClient::new(&s.url, token).map_err(failure)?;
            let card = client.card().await.map_err(failure)?;
            let rpc = rpc_url(&card).map_err(failure)?;
            let data = s.repo.as_ref().map(|r| json!({"repo": r}));
            let message = user_message(&s.message, data, s.task.clone());
            if s.stream {
                let params = json!({"message": message});
                let mut last: Option<TaskState> = None;
                let json = args.json;
                client
                    .stream(&rpc, "SendStreamingMessage", params, |ev| {
                        if json {
                            json_line(&ev);
                        }
                        match &ev {
                            StreamResponse::Task(t) => {
                                if !json {
                                    println!("task {}  {}", t.id, state_name(&t.status.state));
                                }
                                last = Some(t.status.state.clone());
                            }
                            StreamResponse::StatusUpdate(u) => {
                                if !json {
                                    println!("status {}", state_name(&u.status.state));
                                    if let Some(m) = &u.status.message {
                                        for p in m.parts.iter().filter_map(a2a::Part::as_text) {
                                            println!("  {p}");
                                        }
                                    }
                                }
                                last = Some(u.status.state.clone());
                            }
                            StreamResponse::ArtifactUpdate(a) => {
                                if !json {
                                    for p in a.artifact.parts.iter().filter_map(a2a::Part::as_text)
                                    {
                                        println!("artifact {}: {p}", a.artifact.artifact_id);
                                    }
                                }
                            }
                            StreamResponse::Message(m) => {
                                if !json {
                                    for p in m.parts.iter().filter_map(a2a::Part::as_text) {
                                        println!("{p}");
                                    }
                                }
                                last = Some(TaskState::Completed);
                            }
                        }
                        true
                    })
                    .await
                    .map_err(failure)?;
                return Ok(last.as_ref().map_or(ExitCode::from(1), exit_for));
            }
            let answer = client
                .send_message(&rpc, message, !s.no_wait)
                .await
                .map_err(failure)?;
            if args.json {
                json_line(&answer);
            }
            match answer {
                SendMessageResponse::Task(t) => {
                    if !args.json {
                        print_task(&t);
                    }
                    Ok(exit_for(&t.status.state))
                }
                SendMessageResponse::Message(m) => {
                    if !args.json {
                        for p in m.parts.iter().filter_map(a2a::Part::as_text) {
                            println!("{p}");
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}
