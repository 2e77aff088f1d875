//! `warden task ...`: the client of `warden serve`'s task API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value, json};
use warden_server::api_tasks::{TaskCreated, TaskList};
use warden_server::client::{Client, DEFAULT_SERVER, empty, encode_segment, with_query};
use warden_server::tasks::model::{Task, TaskEvent, TaskStatus};

use crate::sandbox_cmd::{Failure, find_token, parse_kv, print_json, short, table, usage};

const TASK_HELP: &str = "\
A task names a repository and what to do. `warden serve` queues it, runs it in a fresh
sandbox (clone through the egress proxy, new branch, the agent, commit, push) and keeps its
log. Statuses: QUEUED, RUNNING, WAITING_APPROVAL (a tool call waits for `warden task
approve`), SUCCEEDED, FAILED, CANCELED, TIMED_OUT.

The server and token are found as for `warden sandbox`: --server or WARDEN_SERVER (default
http://127.0.0.1:7070), WARDEN_TOKEN or the token file of --data.

Exit status: 0 on success (with --follow: the task SUCCEEDED), 1 when the server refused or
the followed task did not succeed, 64 for bad arguments, 69 when the server is unreachable.

Examples:
  warden task submit --repo https://github.com/org/app.git --base main \\
      'Fix the failing test in tests/test_login.py'
  warden task submit --repo https://github.com/org/app.git --agent claude-code --timeout 1h \\
      --follow 'Add type hints to utils.py'
  warden task ls --status RUNNING,WAITING_APPROVAL
  warden task logs -f task-3k9d2m1x0a7b
  warden task approvals task-3k9d2m1x0a7b
  warden task approve task-3k9d2m1x0a7b toolu_01A2B3
  warden task cancel task-3k9d2m1x0a7b";

/// Submit and follow tasks of a running `warden serve`: repository in, pushed branch out.
#[derive(Debug, Args)]
#[command(after_long_help = TASK_HELP, after_help = "See `warden task --help` for statuses, exit codes and examples.")]
pub struct TaskArgs {
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
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Queue a task; prints its id (and follows it with --follow).
    Submit(SubmitArgs),
    /// One task: status, times, branch, commit, summary, usage.
    Get { id: String },
    /// Tasks, newest first.
    Ls(LsArgs),
    /// A task's log: steps, git's and the agent's output (-f follows until it ends).
    Logs(LogsArgs),
    /// Cancel a queued or running task (its sandbox is deleted).
    Cancel { id: String },
    /// The tool calls a task's agent waits on a person for.
    Approvals { id: String },
    /// Let a pending tool call run.
    Approve(AnswerArgs),
    /// Refuse a pending tool call (the agent is told, with --reason).
    Deny(AnswerArgs),
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// The repository's https:// URL.
    #[arg(long, value_name = "URL")]
    repo: String,
    /// The branch to push [warden/<task id>].
    #[arg(long = "branch", value_name = "BRANCH")]
    new_branch: Option<String>,
    #[command(flatten)]
    options: TaskOptions,
    /// Makes a retried submission return the first task.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Follow the task's log until it ends; exit 0 only if it SUCCEEDED.
    #[arg(long, short = 'f')]
    follow: bool,
    /// What to do (the rest of the line).
    #[arg(required = true, num_args = 1.., value_name = "TASK")]
    task: Vec<String>,
}

/// The optional fields of a task submission, as flags (`warden task submit`, `warden schedule
/// create`).
#[derive(Debug, Args)]
pub(crate) struct TaskOptions {
    /// The branch to start from [the repository's default].
    #[arg(long = "base", value_name = "BRANCH")]
    base_branch: Option<String>,
    /// warden, claude-code or codex [warden].
    #[arg(long, value_name = "AGENT")]
    agent: Option<String>,
    /// The model [the server's --model].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// The sandbox template [the server's --task-template].
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// The task's timeout: seconds or a duration such as 30m [the server's --task-timeout].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// A variable for the agent's commands (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_kv)]
    env: Vec<(String, String)>,
}

impl TaskOptions {
    /// Sets the fields given on a submission's JSON body.
    pub(crate) fn apply(self, body: &mut Value) {
        for (k, v) in [
            ("base_branch", self.base_branch),
            ("agent", self.agent),
            ("model", self.model),
            ("template", self.template),
            ("timeout", self.timeout),
        ] {
            if let Some(v) = v {
                body[k] = Value::String(v);
            }
        }
        if !self.env.is_empty() {
            body["env"] = serde_json::to_value(self.env.into_iter().collect::<BTreeMap<_, _>>())
                .unwrap_or_default();
        }
    }
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Only these statuses, comma-separated.
    #[arg(long, value_name = "STATUS,...")]
    status: Option<String>,
    /// Only this repository URL.
    #[arg(long, value_name = "URL")]
    repo: Option<String>,
    /// At most this many (1 to 500).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: u32,
    /// The next page: the cursor the previous page printed.
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,
}

#[derive(Debug, Args)]
struct LogsArgs {
    id: String,
    /// Keep following until the task ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only these kinds, comma-separated: status, step, log, agent.
    #[arg(long, value_name = "KINDS")]
    kinds: Option<String>,
}

#[derive(Debug, Args)]
struct AnswerArgs {
    /// The task's id.
    id: String,
    /// The call's id, as `warden task approvals` lists it.
    call: String,
    /// Why (the agent sees it).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

pub fn main(args: TaskArgs) -> ExitCode {
    crate::sandbox_cmd::run_client("task", run(args))
}

type Outcome = Result<ExitCode, Failure>;

fn task_path(id: &str) -> String {
    format!("/v1/tasks/{}", encode_segment(id))
}

async fn run(args: TaskArgs) -> Outcome {
    let token = find_token(args.data.as_deref())?;
    let client = Client::new(&args.server, token).map_err(|e| usage(e.to_string()))?;
    let json = args.json;
    match args.command {
        TaskCommand::Submit(s) => submit(&client, s, json).await,
        TaskCommand::Get { id } => {
            let task: Task = client
                .json(Method::GET, &task_path(&id), None::<&()>)
                .await?;
            if json {
                print_json(&task);
            } else {
                print_task(&task);
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Ls(l) => ls(&client, l, json).await,
        TaskCommand::Logs(l) => {
            let end = logs(&client, &l.id, l.follow, l.kinds.as_deref(), json).await?;
            Ok(match end {
                Some(s) if s != TaskStatus::Succeeded && l.follow => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            })
        }
        TaskCommand::Cancel { id } => {
            let task: Task = client
                .json(
                    Method::POST,
                    &format!("{}/cancel", task_path(&id)),
                    None::<&()>,
                )
                .await?;
            if json {
                print_json(&task);
            } else if task.status == TaskStatus::Canceled {
                println!("{id} canceled");
            } else {
                println!("{id} is being canceled (it was {})", task.status);
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Approvals { id } => {
            let pending: Vec<Value> = client
                .json(
                    Method::GET,
                    &format!("{}/approvals", task_path(&id)),
                    None::<&()>,
                )
                .await?;
            if json {
                print_json(&pending);
            } else if pending.is_empty() {
                println!("{id} waits on no approval");
            } else {
                table(
                    &["CALL", "TOOL", "DEADLINE", "CALL TEXT"],
                    pending
                        .iter()
                        .map(|p| {
                            vec![
                                p["call_id"].as_str().unwrap_or("").to_string(),
                                p["tool"].as_str().unwrap_or("").to_string(),
                                p["deadline"].as_str().unwrap_or("").to_string(),
                                one_line(p["call"].as_str().unwrap_or(""), 80),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Approve(a) => answer(&client, a, true, json).await,
        TaskCommand::Deny(a) => answer(&client, a, false, json).await,
    }
}

async fn submit(client: &Client, s: SubmitArgs, json: bool) -> Outcome {
    let mut body = json!({
        "repo": s.repo,
        "task": s.task.join(" "),
    });
    let set = |body: &mut Value, k: &str, v: Option<String>| {
        if let Some(v) = v {
            body[k] = Value::String(v);
        }
    };
    set(&mut body, "new_branch", s.new_branch);
    set(&mut body, "idempotency_key", s.idempotency_key);
    s.options.apply(&mut body);
    let created: TaskCreated = client.json(Method::POST, "/v1/tasks", Some(&body)).await?;
    if json && !s.follow {
        print_json(&created);
    } else if !created.created {
        println!(
            "{} (already submitted with this key; {})",
            created.id, created.status
        );
    } else {
        println!("{}", created.id);
    }
    if !s.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let end = logs(client, &created.id, true, None, json).await?;
    Ok(match end {
        Some(TaskStatus::Succeeded) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

async fn ls(client: &Client, l: LsArgs, json: bool) -> Outcome {
    if !(1..=500).contains(&l.limit) {
        return Err(usage(format!(
            "--limit: {} is out of range; use 1 to 500",
            l.limit
        )));
    }
    let limit = l.limit.to_string();
    let path = with_query(
        "/v1/tasks",
        &[
            ("limit", Some(&limit)),
            ("status", l.status.as_deref()),
            ("repo", l.repo.as_deref()),
            ("cursor", l.cursor.as_deref()),
        ],
    );
    let list: TaskList = client.json(Method::GET, &path, None::<&()>).await?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let now = warden_server::tasks::model::Timestamp::now().millis();
    table(
        &["ID", "STATUS", "AGE", "REPO", "BRANCH", "TASK"],
        list.tasks
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.status.to_string(),
                    short(((now - t.created_at.millis()).max(0) / 1000) as u64),
                    t.spec.repo.clone(),
                    t.spec.new_branch.clone(),
                    one_line(&t.spec.task, 50),
                ]
            })
            .collect(),
    );
    if let Some(c) = list.next_cursor {
        println!("(more: --cursor {c})");
    }
    Ok(ExitCode::SUCCESS)
}

async fn answer(client: &Client, a: AnswerArgs, approved: bool, json: bool) -> Outcome {
    let body = json!({"approved": approved, "reason": a.reason});
    let path = format!(
        "/v1/approvals/{}/{}",
        encode_segment(&a.id),
        encode_segment(&a.call)
    );
    let _: Value = client.json(Method::POST, &path, Some(&body)).await?;
    let word = if approved { "approved" } else { "denied" };
    if json {
        print_json(&json!({"task": a.id, "call": a.call, "answer": word}));
    } else {
        println!("{} {}: {word}", a.id, a.call);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a task's log (following it with `follow`); returns the final status seen.
async fn logs(
    client: &Client,
    id: &str,
    follow: bool,
    kinds: Option<&str>,
    json: bool,
) -> Result<Option<TaskStatus>, Failure> {
    let mut path = format!("{}/events?follow={follow}", task_path(id));
    if let Some(k) = kinds {
        path.push_str(&format!("&kinds={}", encode_segment(k)));
    }
    let mut last = None;
    let mut show = |e: TaskEvent| {
        if e.kind == "status"
            && let Some(s) = e.data["status"]
                .as_str()
                .and_then(|s| TaskStatus::parse(s).ok())
        {
            last = Some(s);
        }
        if json {
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
        } else if let Some(line) = render(&e) {
            println!("{line}");
        }
    };
    if !follow {
        let events: Vec<TaskEvent> = client.json(Method::GET, &path, None::<&()>).await?;
        for e in events {
            show(e);
        }
        return Ok(last);
    }
    let resp = client.send(Method::GET, &path, None, empty()).await?;
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut data = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure {
            code: 1,
            message: format!("the event stream broke: {e}"),
        })?;
        let Ok(bytes) = frame.into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(pos) = buf.find('\n') {
            let line = buf[..pos].trim_end_matches('\r').to_string();
            buf.drain(..=pos);
            if line.is_empty() {
                if !data.is_empty() {
                    if let Ok(e) = serde_json::from_str::<TaskEvent>(&data) {
                        show(e);
                    }
                    data.clear();
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
    }
    if last.is_none() {
        // The stream ended without a final status (the server stopped): say where it is.
        let task: Task = client
            .json(Method::GET, &task_path(id), None::<&()>)
            .await?;
        if task.status.is_terminal() {
            last = Some(task.status);
        }
    }
    Ok(last)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let mut t: String = flat.chars().take(max - 1).collect();
        t.push('…');
        t
    } else {
        flat
    }
}

/// One line per event for people.
fn render(e: &TaskEvent) -> Option<String> {
    let time = e.time.rfc3339();
    let clock = time.get(11..19).unwrap_or(&time);
    let d = &e.data;
    let text = match e.kind.as_str() {
        "status" => {
            let mut s = format!("== {}", d["status"].as_str().unwrap_or("?"));
            if let Some(r) = d["reason"].as_str() {
                s.push_str(&format!(": {r}"));
            }
            s
        }
        "step" => {
            let name = d["step"].as_str().unwrap_or("?");
            let rest: Vec<String> = d
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, v)| *k != "step" && !v.is_null())
                        .map(|(k, v)| match v.as_str() {
                            Some(s) => format!("{k}={s}"),
                            None => format!("{k}={v}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("-- {name} {}", rest.join(" "))
                .trim_end()
                .to_string()
        }
        "log" => format!(
            "{}: {}",
            d["stream"].as_str().unwrap_or("log"),
            d["text"].as_str().unwrap_or("").trim_end()
        ),
        "agent" => match d["type"].as_str().unwrap_or("") {
            "assistant" => {
                let t = d["text"].as_str().unwrap_or("").trim();
                if t.is_empty() {
                    return None;
                }
                format!("agent: {}", one_line(t, 200))
            }
            "tool_call" => format!(
                "agent: {} {}",
                d["tool"].as_str().unwrap_or("?"),
                one_line(&d["input"].to_string(), 150)
            ),
            "tool_result" if d["is_error"].as_bool() == Some(true) => format!(
                "agent: {} failed: {}",
                d["tool"].as_str().unwrap_or("?"),
                one_line(d["output"].as_str().unwrap_or(""), 150)
            ),
            "approval_requested" => format!(
                "agent: waiting for approval of {} `{}` (warden task approve {} {})",
                d["tool"].as_str().unwrap_or("?"),
                one_line(d["call"].as_str().unwrap_or(""), 80),
                "<task>",
                d["call_id"].as_str().unwrap_or("?")
            ),
            "approval_answered" => format!(
                "agent: {} {}",
                d["call_id"].as_str().unwrap_or("?"),
                if d["approved"].as_bool() == Some(true) {
                    "approved"
                } else {
                    "denied"
                }
            ),
            "run_finished" => format!(
                "agent: finished ({}) {}",
                d["status"].as_str().unwrap_or("?"),
                one_line(d["result"].as_str().unwrap_or(""), 150)
            ),
            "warning" => format!("agent: warning: {}", d["message"].as_str().unwrap_or("")),
            _ => return None,
        },
        _ => return None,
    };
    Some(format!("{clock} {text}"))
}

fn print_task(t: &Task) {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", t.id.clone()),
        ("status", t.status.to_string()),
        ("repo", t.spec.repo.clone()),
        (
            "base",
            t.spec
                .base_branch
                .clone()
                .unwrap_or_else(|| "(default branch)".into()),
        ),
        ("branch", t.spec.new_branch.clone()),
        ("agent", t.spec.agent.as_str().to_string()),
        ("model", t.spec.model.clone().unwrap_or_else(|| "-".into())),
        ("template", t.spec.template.clone()),
        (
            "timeout",
            humantime::format_duration(std::time::Duration::from_secs(t.spec.timeout_secs))
                .to_string(),
        ),
        ("created", t.created_at.rfc3339()),
    ];
    if let Some(s) = t.started_at {
        rows.push(("started", s.rfc3339()));
    }
    if let Some(f) = t.finished_at {
        rows.push(("finished", f.rfc3339()));
    }
    if let Some(c) = &t.commit {
        rows.push(("commit", c.clone()));
    }
    if let Some(s) = &t.summary {
        rows.push(("summary", one_line(s, 200)));
    }
    if let Some(r) = &t.reason {
        rows.push(("reason", r.clone()));
    }
    rows.push((
        "tokens",
        format!("{} in, {} out", t.usage.input_tokens, t.usage.output_tokens),
    ));
    if let Some(c) = t.cost_usd {
        rows.push(("cost", format!("${c:.4}")));
    }
    if let Some(s) = &t.sandbox {
        rows.push(("sandbox", s.clone()));
    }
    rows.push(("task", one_line(&t.spec.task, 200)));
    for (k, v) in rows {
        println!("{k:<9} {v}");
    }
}
