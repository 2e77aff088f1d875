//! External agents: the real Claude Code CLI (`claude`) or OpenAI Codex CLI (`codex`) run
//! headless inside a warden sandbox, with their JSONL event streams turned into warden's
//! [`AgentEvent`]s.
//!
//! Owns: the command line and environment of each CLI ([`command`]), the pure mapping of
//! each CLI's JSON lines to events ([`claude_events`], [`codex_events`]), the small state
//! that merges and completes them ([`StreamState`]), and the run itself ([`run_external`]):
//! start, read, cancel, time out, and settle the outcome.
//! Must never: run the CLI anywhere but in the sandbox it is given, hand it a real API key
//! (it gets the credential route's URL and a placeholder; the egress proxy adds the key
//! outside), or panic on a line it cannot read (that is a warning).
//!
//! # How each CLI is run
//!
//! Both run as `/bin/sh -c 'mkdir -p -- "$1" && shift && exec "$@" </dev/null' sh DIR CLI
//! ARGS... -- PROMPT`: the shell makes a fresh, writable home under `/tmp` (the sandbox's
//! own home may be read-only or empty), gives the CLI an empty stdin (Codex otherwise waits
//! for more input on a pipe) and execs the CLI, so nothing else stays in between. The prompt follows
//! `--`, so a prompt that starts with `-` is never taken for a flag.
//!
//! **Claude Code**: `claude -p --output-format stream-json --verbose
//! --include-partial-messages --dangerously-skip-permissions --no-session-persistence
//! [--model M] [--max-turns N] -- PROMPT`, with `ANTHROPIC_BASE_URL` (the route) and a
//! placeholder `ANTHROPIC_API_KEY`. Claude Code's own permission prompts are skipped:
//! nobody is there to answer them in `-p` mode, and warden's sandbox is the security
//! boundary. warden's user namespace maps the caller's own id, so a sandbox started by root
//! runs the CLI as root, and as root Claude Code refuses `--dangerously-skip-permissions`
//! ("cannot be used with root/sudo privileges") unless `IS_SANDBOX=1` says it runs in a
//! sandbox, which is true here; it is always set. `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`,
//! `DISABLE_AUTOUPDATER`, `DISABLE_TELEMETRY` and `DISABLE_ERROR_REPORTING` keep it from
//! calling anything but the model (the egress proxy would refuse those calls anyway, with a
//! line in the sandbox's log each time). Claude Code prints one `assistant` line per content
//! block, all with the message's id; [`StreamState`] merges them into one `assistant` event
//! per model call, with the stop reason of the partial `message_delta` event.
//!
//! **Codex**: `codex exec --json --skip-git-repo-check
//! --dangerously-bypass-approvals-and-sandbox --ephemeral --color never --disable plugins
//! -c ... [-m M] -- PROMPT`. Codex's own Linux sandbox (bubblewrap, Landlock) cannot nest
//! inside warden's: warden's seccomp filter refuses the namespaces it needs. So Codex runs
//! in its "no sandbox, no approvals" mode, made for environments that are sandboxed from
//! outside, as this one is. Codex 0.169 does not follow `OPENAI_BASE_URL` (it still called
//! OpenAI's own hosts), so the route is given as a model provider of its own
//! (`model_providers.warden`: `base_url` = the route, `env_key` = `OPENAI_API_KEY` holding
//! the placeholder, the Responses wire API, and no WebSocket transport, which the route
//! does not serve); `OPENAI_BASE_URL` is set too, for the tools it runs. Analytics,
//! feedback, the update check and the history file are turned off, and so are plugins,
//! whose start-up sync of the curated plugin list otherwise calls github.com,
//! api.github.com and chatgpt.com. `CODEX_HOME` lies in the fresh home. Codex has no turn
//! limit, so `max_turns` is reported as a warning and not enforced. Its default model
//! (`gpt-6.1-sol` in 0.169) is given a JavaScript `exec` tool to drive the other tools
//! ("code mode"); other models of its catalog (`gpt-5.5`), and models it does not know
//! (with a warning line), get the plain `exec_command` function tool.
//!
//! # What becomes of the lines
//!
//! Claude Code: `assistant` lines become `assistant` and `tool_call` events (`TodoWrite`
//! also `todos`), `user` lines with `tool_result` blocks become `tool_result` events,
//! streamed text deltas `text_delta`, `result` the outcome (`success`, `error_max_turns`,
//! `error_max_budget_usd`, errors), `system` `init` and `status` nothing, and a retry of
//! the model call a warning. A sub-agent's tool calls carry its name; its own answers are
//! not turns of the run. Codex: `item.started`/`item.completed` of a `command_execution`,
//! `file_change`, `mcp_tool_call` or `web_search` become `tool_call` and `tool_result` (the
//! tool is named after the item type; an MCP tool `mcp__<server>__<tool>`),
//! `agent_message` an `assistant` event, `todo_list` `todos`, `error` items and lines
//! warnings, `turn.completed` (with its usage) success and `turn.failed` failure. Anything
//! else, and any line that is not JSON, is a warning; a line over [`MAX_LINE_BYTES`] is
//! dropped with a warning.
//!
//! # The outcome
//!
//! What the CLI reported last (Claude Code's `result`, Codex's `turn.completed` or
//! `turn.failed`) decides, if the process then exited with 0 ([`settle`]). A failure it
//! reported itself (max turns, budget, an API error) stays that; a non-zero exit after a
//! success, an exit without any report, a kill, and a CLI missing from the sandbox (127)
//! are `failed`, with an error naming the CLI, the exit and the tail of its stderr. The
//! timeout is enforced by the sandbox (the command's process group is killed, exit 124);
//! the run stops waiting 10 s after it in any case. Cancelling drops the exec session,
//! which kills the command, and the run is `canceled`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};
use warden_sandbox::{StdinMsg, StreamItem};
use warden_sandboxd::proto::{Command, ExecControl, ExecEvent, ExecRequest};

use super::event::{AgentEvent, RunOutcome, RunStatus};
use super::host::ToolHost;
use super::transcript::EventSink;
use crate::model::Usage;

/// What the sandbox gets instead of an API key when the credential route adds the real one
/// (the value `warden run` sets for a route).
pub use warden_policy::CREDENTIAL_PLACEHOLDER as PLACEHOLDER_KEY;

/// Lines longer than this are dropped (with a warning) rather than kept in memory.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// How much of the CLI's stderr is kept for the error message.
const STDERR_TAIL_BYTES: usize = 4096;

/// How long after its own timeout the sandbox gets to report the kill before the run gives
/// up on it.
const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// Which CLI runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExternalAgent {
    /// Anthropic's Claude Code (`claude`).
    ClaudeCode,
    /// OpenAI's Codex CLI (`codex`).
    Codex,
}

impl ExternalAgent {
    /// Every agent, in the order the error message lists them.
    pub const ALL: [ExternalAgent; 2] = [ExternalAgent::ClaudeCode, ExternalAgent::Codex];

    /// The name `--agent` takes and events carry: `claude-code` or `codex`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalAgent::ClaudeCode => "claude-code",
            ExternalAgent::Codex => "codex",
        }
    }

    /// The program run inside the sandbox (found on the sandbox's `PATH`).
    pub fn program(self) -> &'static str {
        match self {
            ExternalAgent::ClaudeCode => "claude",
            ExternalAgent::Codex => "codex",
        }
    }

    /// The home the CLI gets when the options name none.
    fn default_home(self) -> String {
        format!("/tmp/warden-{}-home", self.as_str())
    }
}

impl fmt::Display for ExternalAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent name that is not one of [`ExternalAgent::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown agent `{0}`: expected claude-code or codex")]
pub struct UnknownAgent(pub String);

impl FromStr for ExternalAgent {
    type Err = UnknownAgent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExternalAgent::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAgent(s.to_string()))
    }
}

/// What an external run is asked to do, and how it reaches its model.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalOptions {
    /// Put in the `run_started` event.
    pub run_id: String,
    pub prompt: String,
    /// The CLI's own default when unset.
    pub model: Option<String>,
    /// Model calls allowed (Claude Code's `--max-turns`; Codex has no such limit).
    pub max_turns: Option<u32>,
    /// The credential route as seen from inside the sandbox, as the CLI's variable takes
    /// it: `ANTHROPIC_BASE_URL` for Claude Code (`http://127.0.0.1:3128/anthropic`),
    /// `OPENAI_BASE_URL` for Codex, `/v1` included (`http://127.0.0.1:3128/openai/v1`).
    pub base_url: String,
    /// The API key the CLI sends; the route replaces it with the real one outside.
    pub placeholder_key: String,
    /// More variables for the CLI. The ones [`command`] sets itself win.
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit for the whole run.
    pub timeout: Option<Duration>,
    /// Working directory (relative to the workspace, or absolute inside the sandbox); the
    /// workspace when unset.
    pub cwd: Option<String>,
    /// The CLI's home directory inside the sandbox, created fresh if missing;
    /// `/tmp/warden-<agent>-home` when unset.
    pub home: Option<String>,
}

impl ExternalOptions {
    /// Options with the placeholder key and everything optional unset.
    pub fn new(prompt: impl Into<String>, base_url: impl Into<String>) -> ExternalOptions {
        ExternalOptions {
            run_id: String::new(),
            prompt: prompt.into(),
            model: None,
            max_turns: None,
            base_url: base_url.into(),
            placeholder_key: PLACEHOLDER_KEY.to_string(),
            env: BTreeMap::new(),
            timeout: None,
            cwd: None,
            home: None,
        }
    }
}

/// The shell prefix, `sh -c LAUNCHER sh DIR CLI ARGS...`: makes `DIR` (the CLI's home, or a
/// directory in it), then runs the CLI with an empty stdin.
const LAUNCHER: &str = r#"mkdir -p -- "$1" && shift && exec "$@" </dev/null"#;

/// The headless command for `agent`: argv, environment, working directory and timeout.
pub fn command(agent: ExternalAgent, opts: &ExternalOptions) -> ExecRequest {
    let home = opts.home.clone().unwrap_or_else(|| agent.default_home());
    let mut env = opts.env.clone();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    set("HOME", &home);
    let codex_home = format!("{}/.codex", home.trim_end_matches('/'));
    let make = match agent {
        ExternalAgent::ClaudeCode => &home,
        ExternalAgent::Codex => &codex_home,
    };
    let mut argv: Vec<String> = vec!["/bin/sh".into(), "-c".into(), LAUNCHER.into(), "sh".into()];
    argv.push(make.clone());
    argv.push(agent.program().into());
    let arg = |argv: &mut Vec<String>, a: &str| argv.push(a.to_string());
    match agent {
        ExternalAgent::ClaudeCode => {
            set("ANTHROPIC_BASE_URL", &opts.base_url);
            set("ANTHROPIC_API_KEY", &opts.placeholder_key);
            set("IS_SANDBOX", "1");
            set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
            set("DISABLE_AUTOUPDATER", "1");
            set("DISABLE_TELEMETRY", "1");
            set("DISABLE_ERROR_REPORTING", "1");
            for a in [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--include-partial-messages",
                "--dangerously-skip-permissions",
                "--no-session-persistence",
            ] {
                arg(&mut argv, a);
            }
            if let Some(model) = &opts.model {
                arg(&mut argv, "--model");
                arg(&mut argv, model);
            }
            if let Some(n) = opts.max_turns {
                arg(&mut argv, "--max-turns");
                arg(&mut argv, &n.to_string());
            }
        }
        ExternalAgent::Codex => {
            set("CODEX_HOME", &codex_home);
            set("OPENAI_BASE_URL", &opts.base_url);
            set("OPENAI_API_KEY", &opts.placeholder_key);
            for a in [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "--ephemeral",
                "--color",
                "never",
                "--disable",
                "plugins",
            ] {
                arg(&mut argv, a);
            }
            // A TOML string (JSON's escapes are TOML's).
            let base = Value::String(opts.base_url.clone()).to_string();
            for c in [
                "model_provider=\"warden\"".to_string(),
                "model_providers.warden.name=\"warden\"".to_string(),
                format!("model_providers.warden.base_url={base}"),
                "model_providers.warden.env_key=\"OPENAI_API_KEY\"".to_string(),
                "model_providers.warden.wire_api=\"responses\"".to_string(),
                "model_providers.warden.supports_websockets=false".to_string(),
                "analytics.enabled=false".to_string(),
                "feedback.enabled=false".to_string(),
                "check_for_update_on_startup=false".to_string(),
                "history.persistence=\"none\"".to_string(),
            ] {
                arg(&mut argv, "-c");
                argv.push(c);
            }
            if let Some(model) = &opts.model {
                arg(&mut argv, "-m");
                arg(&mut argv, model);
            }
        }
    }
    argv.push("--".into());
    argv.push(opts.prompt.clone());
    let mut request = ExecRequest::new(Command::Argv(argv));
    request.env = env;
    request.cwd = opts.cwd.clone();
    request.timeout_ms = opts
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    request
}

// ---------------------------------------------------------------------------------------
// Parsing

/// A line that is not what the CLI is expected to print.
fn warning(agent: ExternalAgent, what: &str, line: &str) -> AgentEvent {
    AgentEvent::Warning {
        message: format!("{agent}: {what}: {}", clip(line, 200)),
    }
}

/// At most `max` bytes of `s` (on a character boundary), with `...` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The text of a tool result's content: a string, or an array of blocks (text kept, other
/// blocks named).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("text").and_then(Value::as_str) {
                Some(t) => t.to_string(),
                None => format!("[{}]", b.get("type").and_then(Value::as_str).unwrap_or("?")),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Anthropic's usage: `input_tokens` there leaves out the cache, warden's includes it.
fn anthropic_usage(u: &Value) -> Usage {
    let read = u64_of(u, "cache_read_input_tokens");
    let write = u64_of(u, "cache_creation_input_tokens");
    Usage {
        input_tokens: u64_of(u, "input_tokens") + read + write,
        output_tokens: u64_of(u, "output_tokens"),
        cache_read_tokens: u.get("cache_read_input_tokens").map(|_| read),
        cache_write_tokens: u.get("cache_creation_input_tokens").map(|_| write),
    }
}

/// One line of Claude Code's stream, with the id of the message an `assistant` line
/// belongs to (Claude Code prints one line per content block).
struct ClaudeLine {
    events: Vec<AgentEvent>,
    message_id: Option<String>,
    /// A `stream_event` line: partial output, interleaved with a message's block lines.
    partial: bool,
    /// The stop reason a `message_delta` stream event gives the message being read.
    stop_reason: Option<String>,
}

fn parse_claude(line: &str) -> ClaudeLine {
    let agent = ExternalAgent::ClaudeCode;
    let mut out = ClaudeLine {
        events: Vec::new(),
        message_id: None,
        partial: false,
        stop_reason: None,
    };
    let v: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            out.events
                .push(warning(agent, "a line that is not a JSON event", line));
            return out;
        }
    };
    let parent = v
        .get("parent_tool_use_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    match str_of(&v, "type") {
        "system" => match str_of(&v, "subtype") {
            "init" | "status" => {}
            "api_retry" => out.events.push(AgentEvent::Warning {
                message: format!(
                    "{agent}: retrying the model call (attempt {} of {}): {}",
                    u64_of(&v, "attempt"),
                    u64_of(&v, "max_retries"),
                    clip(&v.get("error").map(content_text).unwrap_or_default(), 200)
                ),
            }),
            other => out
                .events
                .push(warning(agent, &format!("system event `{other}`"), line)),
        },
        "assistant" => {
            let message = &v["message"];
            let Some(blocks) = message.get("content").and_then(Value::as_array) else {
                out.events
                    .push(warning(agent, "an assistant line without content", line));
                return out;
            };
            let mut text = String::new();
            let mut calls = Vec::new();
            for block in blocks {
                match str_of(block, "type") {
                    "text" => text.push_str(str_of(block, "text")),
                    "tool_use" | "server_tool_use" => {
                        let input = block.get("input").cloned().unwrap_or(Value::Null);
                        let todos = input
                            .get("todos")
                            .filter(|_| str_of(block, "name") == "TodoWrite")
                            .cloned();
                        calls.push(AgentEvent::ToolCall {
                            call_id: str_of(block, "id").to_string(),
                            tool: str_of(block, "name").to_string(),
                            input,
                            subagent: parent.clone(),
                        });
                        if let Some(todos) = todos {
                            calls.push(AgentEvent::Todos { todos });
                        }
                    }
                    _ => {} // thinking, redacted thinking
                }
            }
            // A sub-agent's own model calls are not the run's turns; its tool calls are
            // reported, marked with it.
            if parent.is_none() {
                out.message_id = message
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let tool_calls = calls
                    .iter()
                    .filter(|e| matches!(e, AgentEvent::ToolCall { .. }))
                    .count();
                out.events.push(AgentEvent::Assistant {
                    turn: 0,
                    text,
                    tool_calls,
                    stop_reason: str_of(message, "stop_reason").to_string(),
                    usage: message
                        .get("usage")
                        .map(anthropic_usage)
                        .unwrap_or_default(),
                });
            }
            out.events.extend(calls);
        }
        "user" => {
            // Only tool results: the prompt is not replayed without --replay-user-messages.
            if let Some(blocks) = v.pointer("/message/content").and_then(Value::as_array) {
                for block in blocks.iter().filter(|b| str_of(b, "type") == "tool_result") {
                    out.events.push(AgentEvent::ToolResult {
                        call_id: str_of(block, "tool_use_id").to_string(),
                        tool: String::new(),
                        is_error: block
                            .get("is_error")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        output: content_text(block.get("content").unwrap_or(&Value::Null)),
                        truncated_for_model: false,
                    });
                }
            }
        }
        "stream_event" => {
            out.partial = true;
            let event = &v["event"];
            if str_of(event, "type") == "message_delta" && parent.is_none() {
                out.stop_reason = event
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            if parent.is_none()
                && str_of(event, "type") == "content_block_delta"
                && str_of(&event["delta"], "type") == "text_delta"
            {
                out.events.push(AgentEvent::TextDelta {
                    text: str_of(&event["delta"], "text").to_string(),
                });
            }
        }
        "result" => {
            let subtype = str_of(&v, "subtype");
            let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
            let result = str_of(&v, "result").to_string();
            let errors: Vec<String> = v
                .get("errors")
                .and_then(Value::as_array)
                .map(|e| e.iter().map(content_text).collect())
                .unwrap_or_default();
            let (status, error) = match subtype {
                "success" if !is_error => (RunStatus::Succeeded, None),
                "error_max_turns" => (RunStatus::MaxTurns, Some(errors.join("; "))),
                "error_max_budget_usd" => (RunStatus::BudgetExceeded, Some(errors.join("; "))),
                _ => {
                    let why = [result.as_str()]
                        .into_iter()
                        .chain(errors.iter().map(String::as_str))
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let why = if why.is_empty() {
                        format!("the run ended with `{subtype}`")
                    } else {
                        why
                    };
                    (RunStatus::Failed, Some(why))
                }
            };
            let error = error.map(|e| {
                if e.is_empty() {
                    format!("the run ended with `{subtype}`")
                } else {
                    format!("{agent}: {e}")
                }
            });
            out.events.push(AgentEvent::RunFinished {
                status,
                result,
                error,
                turns: u32::try_from(u64_of(&v, "num_turns")).unwrap_or(u32::MAX),
                usage: v.get("usage").map(anthropic_usage).unwrap_or_default(),
                cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
            });
        }
        "" => out
            .events
            .push(warning(agent, "an event without a type", line)),
        other => out
            .events
            .push(warning(agent, &format!("an unknown event `{other}`"), line)),
    }
    out
}

/// The events one line of `claude -p --output-format stream-json --verbose` stands for. An
/// `assistant` line is one content block of a message (its `assistant` event has turn 0
/// and counts only its own tool calls: [`StreamState`] merges a message's lines); a
/// `tool_result` does not name its tool (the state fills it in); the `result` line is a
/// `run_finished` event. Never panics: a line it cannot read is a warning.
pub fn claude_events(line: &str) -> Vec<AgentEvent> {
    parse_claude(line).events
}

/// A Codex item as a tool call, if it is one: `(tool, input)`.
fn codex_call(item: &Value) -> Option<(String, Value)> {
    match str_of(item, "type") {
        "command_execution" => Some((
            "command_execution".into(),
            json!({"command": str_of(item, "command")}),
        )),
        "file_change" => Some((
            "file_change".into(),
            json!({"changes": item.get("changes").cloned().unwrap_or(Value::Null)}),
        )),
        "mcp_tool_call" => Some((
            format!("mcp__{}__{}", str_of(item, "server"), str_of(item, "tool")),
            item.get("arguments").cloned().unwrap_or(Value::Null),
        )),
        "web_search" => Some(("web_search".into(), json!({"query": str_of(item, "query")}))),
        _ => None,
    }
}

/// A finished Codex tool item's output and whether it failed.
fn codex_result(item: &Value) -> (String, bool) {
    let failed = str_of(item, "status") == "failed";
    match str_of(item, "type") {
        "command_execution" => {
            let code = item.get("exit_code").and_then(Value::as_i64);
            (
                str_of(item, "aggregated_output").to_string(),
                failed || code.is_some_and(|c| c != 0),
            )
        }
        "file_change" => {
            let changes = item.get("changes").and_then(Value::as_array);
            let lines: Vec<String> = changes
                .into_iter()
                .flatten()
                .map(|c| format!("{} {}", str_of(c, "kind"), str_of(c, "path")))
                .collect();
            (lines.join("\n"), failed)
        }
        "mcp_tool_call" => match item.get("error").filter(|e| !e.is_null()) {
            Some(e) => (
                e.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string()),
                true,
            ),
            None => {
                let result = item.get("result").unwrap_or(&Value::Null);
                let text = match result.get("content") {
                    Some(c) => content_text(c),
                    None => content_text(result),
                };
                (text, failed)
            }
        },
        _ => (String::new(), failed),
    }
}

/// The events one line of `codex exec --json` stands for. A tool item's `item.started` is
/// its `tool_call`; its `item.completed` is the `tool_call` again (for items that were never
/// started; [`StreamState`] drops the repeat) and the `tool_result`. `turn.completed` and
/// `turn.failed` are `run_finished` events (the final text is the last `assistant` one).
/// Never panics: a line it cannot read is a warning.
pub fn codex_events(line: &str) -> Vec<AgentEvent> {
    let agent = ExternalAgent::Codex;
    let v: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        _ => return vec![warning(agent, "a line that is not a JSON event", line)],
    };
    let item = &v["item"];
    let id = str_of(item, "id").to_string();
    match str_of(&v, "type") {
        "thread.started" | "turn.started" => Vec::new(),
        "item.started" | "item.updated" => {
            if str_of(item, "type") == "todo_list" {
                return vec![AgentEvent::Todos {
                    todos: item.get("items").cloned().unwrap_or(Value::Null),
                }];
            }
            match codex_call(item) {
                Some((tool, input)) if str_of(&v, "type") == "item.started" => {
                    vec![AgentEvent::ToolCall {
                        call_id: id,
                        tool,
                        input,
                        subagent: None,
                    }]
                }
                _ => Vec::new(),
            }
        }
        "item.completed" => match str_of(item, "type") {
            "agent_message" => vec![AgentEvent::Assistant {
                turn: 0,
                text: str_of(item, "text").to_string(),
                tool_calls: 0,
                stop_reason: String::new(),
                usage: Usage::default(),
            }],
            "reasoning" => Vec::new(),
            "todo_list" => vec![AgentEvent::Todos {
                todos: item.get("items").cloned().unwrap_or(Value::Null),
            }],
            "error" => vec![AgentEvent::Warning {
                message: format!("{agent}: {}", str_of(item, "message")),
            }],
            other => match codex_call(item) {
                Some((tool, input)) => {
                    let (output, is_error) = codex_result(item);
                    vec![
                        AgentEvent::ToolCall {
                            call_id: id.clone(),
                            tool: tool.clone(),
                            input,
                            subagent: None,
                        },
                        AgentEvent::ToolResult {
                            call_id: id,
                            tool,
                            is_error,
                            output,
                            truncated_for_model: false,
                        },
                    ]
                }
                None => vec![warning(agent, &format!("an unknown item `{other}`"), line)],
            },
        },
        "turn.completed" => {
            let u = &v["usage"];
            vec![AgentEvent::RunFinished {
                status: RunStatus::Succeeded,
                result: String::new(),
                error: None,
                turns: 0,
                usage: Usage {
                    input_tokens: u64_of(u, "input_tokens"),
                    output_tokens: u64_of(u, "output_tokens"),
                    cache_read_tokens: u
                        .get("cached_input_tokens")
                        .map(|_| u64_of(u, "cached_input_tokens")),
                    cache_write_tokens: u
                        .get("cache_write_input_tokens")
                        .map(|_| u64_of(u, "cache_write_input_tokens")),
                },
                cost_usd: None,
            }]
        }
        "turn.failed" => {
            let message = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("the turn failed");
            vec![AgentEvent::RunFinished {
                status: RunStatus::Failed,
                result: String::new(),
                error: Some(format!("{agent}: {message}")),
                turns: 0,
                usage: Usage::default(),
                cost_usd: None,
            }]
        }
        "error" => vec![AgentEvent::Warning {
            message: format!("{agent}: {}", str_of(&v, "message")),
        }],
        "" => vec![warning(agent, "an event without a type", line)],
        other => vec![warning(agent, &format!("an unknown event `{other}`"), line)],
    }
}

/// An `assistant` message being read, line by line (Claude Code).
#[derive(Debug)]
struct PendingMessage {
    id: String,
    text: String,
    tool_calls: usize,
    stop_reason: String,
    usage: Usage,
    /// Its tool calls (and todos), emitted after the merged `assistant` event.
    held: Vec<AgentEvent>,
}

/// What turns a CLI's lines into the run's events: it merges Claude Code's per-block
/// `assistant` lines, numbers turns, names the tool of each result, drops a tool call
/// reported twice, and keeps what the CLI said about the end of the run (the `run_finished`
/// events of the parsers are kept here, not emitted).
#[derive(Debug)]
pub struct StreamState {
    agent: ExternalAgent,
    pending: Option<PendingMessage>,
    /// Tool of every call seen, by call id.
    tools: HashMap<String, String>,
    /// Sub-agent name of every Task/Agent call, by call id.
    subagents: HashMap<String, String>,
    emitted_calls: HashSet<String>,
    turns: u32,
    /// Codex: the last event was an answer's text (a tool call right after it is part of
    /// the same answer).
    after_text: bool,
    last_text: String,
    reported: Option<RunOutcome>,
}

impl StreamState {
    pub fn new(agent: ExternalAgent) -> StreamState {
        StreamState {
            agent,
            pending: None,
            tools: HashMap::new(),
            subagents: HashMap::new(),
            emitted_calls: HashSet::new(),
            turns: 0,
            after_text: false,
            last_text: String::new(),
            reported: None,
        }
    }

    /// The events of one line (without its newline).
    pub fn feed(&mut self, line: &str) -> Vec<AgentEvent> {
        if line.trim().is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let (events, message_id, partial) = match self.agent {
            ExternalAgent::ClaudeCode => {
                let parsed = parse_claude(line);
                if let (Some(reason), Some(p)) = (parsed.stop_reason, &mut self.pending) {
                    p.stop_reason = reason;
                }
                (parsed.events, parsed.message_id, parsed.partial)
            }
            ExternalAgent::Codex => (codex_events(line), None, false),
        };
        let continues = matches!(
            (&self.pending, &message_id),
            (Some(p), Some(id)) if &p.id == id
        );
        // Partial output runs alongside a message's lines; anything else ends the message.
        if !continues && !partial {
            self.flush(&mut out);
        }
        let mut events = events.into_iter();
        if let Some(id) = message_id {
            // A Claude Code assistant line: its first event is the assistant one.
            if let Some(AgentEvent::Assistant {
                text,
                tool_calls,
                stop_reason,
                usage,
                ..
            }) = events.next()
            {
                let p = self.pending.get_or_insert_with(|| PendingMessage {
                    id,
                    text: String::new(),
                    tool_calls: 0,
                    stop_reason: String::new(),
                    usage: Usage::default(),
                    held: Vec::new(),
                });
                p.text.push_str(&text);
                p.tool_calls += tool_calls;
                if !stop_reason.is_empty() {
                    p.stop_reason = stop_reason;
                }
                p.usage = usage;
            }
            let held: Vec<AgentEvent> = events.filter_map(|e| self.complete(e)).collect();
            if let Some(p) = &mut self.pending {
                p.held.extend(held);
            }
            return out;
        }
        for event in events {
            if let Some(e) = self.complete(event) {
                out.push(e);
            }
        }
        out
    }

    /// Events still held back (the last message's), at the end of the stream.
    pub fn finish(&mut self) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        self.flush(&mut out);
        out
    }

    /// What the CLI itself reported about the end of the run, if it did: its status,
    /// error, usage and cost, with the final text and turns filled in from the stream when
    /// it left them out.
    pub fn reported(&self) -> Option<RunOutcome> {
        let mut r = self.reported.clone()?;
        if r.result.is_empty() && r.status == RunStatus::Succeeded {
            r.result = self.last_text.clone();
        }
        if r.turns == 0 {
            r.turns = self.turns;
        }
        Some(r)
    }

    /// Model answers seen so far. Codex does not report its model calls: with parallel tool
    /// calls off (as Codex asks), each answer is one tool call or a text, or a text and
    /// the tool call right after it.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// The last non-empty answer text seen.
    pub fn last_text(&self) -> &str {
        &self.last_text
    }

    fn flush(&mut self, out: &mut Vec<AgentEvent>) {
        if let Some(p) = self.pending.take() {
            if let Some(e) = self.complete(AgentEvent::Assistant {
                turn: 0,
                text: p.text,
                tool_calls: p.tool_calls,
                stop_reason: p.stop_reason,
                usage: p.usage,
            }) {
                out.push(e);
            }
            out.extend(p.held);
        }
    }

    /// Fills in what one line could not know; `None` drops the event.
    fn complete(&mut self, event: AgentEvent) -> Option<AgentEvent> {
        match event {
            AgentEvent::Assistant {
                text,
                tool_calls,
                stop_reason,
                usage,
                ..
            } => {
                self.turns += 1;
                self.after_text = true;
                if !text.is_empty() {
                    self.last_text = text.clone();
                }
                Some(AgentEvent::Assistant {
                    turn: self.turns,
                    text,
                    tool_calls,
                    stop_reason,
                    usage,
                })
            }
            AgentEvent::ToolCall {
                call_id,
                tool,
                input,
                subagent,
            } => {
                if !self.emitted_calls.insert(call_id.clone()) {
                    return None;
                }
                if self.agent == ExternalAgent::Codex && !self.after_text {
                    self.turns += 1;
                }
                self.after_text = false;
                if matches!(tool.as_str(), "Task" | "Agent") {
                    let name = ["subagent_type", "description"]
                        .iter()
                        .find_map(|k| input.get(*k).and_then(Value::as_str))
                        .unwrap_or("general-purpose");
                    self.subagents.insert(call_id.clone(), name.to_string());
                }
                self.tools.insert(call_id.clone(), tool.clone());
                let subagent =
                    subagent.map(|parent| self.subagents.get(&parent).cloned().unwrap_or(parent));
                Some(AgentEvent::ToolCall {
                    call_id,
                    tool,
                    input,
                    subagent,
                })
            }
            AgentEvent::ToolResult {
                call_id,
                tool,
                is_error,
                output,
                truncated_for_model,
            } => {
                let tool = if tool.is_empty() {
                    self.tools.get(&call_id).cloned().unwrap_or_default()
                } else {
                    tool
                };
                Some(AgentEvent::ToolResult {
                    call_id,
                    tool,
                    is_error,
                    output,
                    truncated_for_model,
                })
            }
            AgentEvent::RunFinished {
                status,
                result,
                error,
                turns,
                usage,
                cost_usd,
            } => {
                // Codex reports usage per turn; a later turn adds to it.
                let mut total = self
                    .reported
                    .as_ref()
                    .filter(|_| self.agent == ExternalAgent::Codex)
                    .map(|r| r.usage)
                    .unwrap_or_default();
                total.add(&usage);
                self.reported = Some(RunOutcome {
                    status,
                    result,
                    error,
                    turns,
                    usage: total,
                    cost_usd,
                });
                None
            }
            other => Some(other),
        }
    }
}

/// Splits a byte stream into lines, whatever the chunks; drops lines over the cap.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: Vec<u8>,
    /// Skipping the rest of a line that went over the cap.
    skipping: bool,
}

impl LineBuffer {
    /// Complete lines in `chunk` (without `\n`, and `\r` trimmed), plus how many lines
    /// were dropped for their length.
    fn push(&mut self, chunk: &[u8], max: usize) -> (Vec<String>, usize) {
        let mut lines = Vec::new();
        let mut dropped = 0;
        let mut rest = chunk;
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if self.skipping {
                        self.skipping = false;
                    } else if self.buf.len() + i > max {
                        dropped += 1;
                        self.buf.clear();
                    } else {
                        self.buf.extend_from_slice(&rest[..i]);
                        lines.push(Self::text(std::mem::take(&mut self.buf)));
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    if !self.skipping {
                        if self.buf.len() + rest.len() > max {
                            dropped += 1;
                            self.buf.clear();
                            self.skipping = true;
                        } else {
                            self.buf.extend_from_slice(rest);
                        }
                    }
                    rest = &[];
                }
            }
        }
        (lines, dropped)
    }

    /// What is left at the end of the stream (a last line without a newline).
    fn finish(&mut self) -> Option<String> {
        let skipping = std::mem::take(&mut self.skipping);
        let buf = std::mem::take(&mut self.buf);
        (!skipping && !buf.is_empty()).then(|| Self::text(buf))
    }

    fn text(mut bytes: Vec<u8>) -> String {
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// The last bytes of a stream.
#[derive(Debug, Default)]
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > STDERR_TAIL_BYTES {
            let cut = self.buf.len() - STDERR_TAIL_BYTES;
            self.buf.drain(..cut);
        }
    }

    /// The tail as text, trimmed, on one line per line; empty when there was none.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).trim().to_string()
    }
}

/// How the CLI's process ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitKind {
    /// It exited (or was killed by a signal, or by the sandbox's timeout).
    Exited {
        exit_code: i32,
        timed_out: bool,
        signal: Option<i32>,
    },
    /// The sandbox could not start it, or the connection to it broke off.
    Broken(String),
    /// The run was cancelled; the command was killed.
    Canceled,
    /// The timeout passed and the sandbox did not report the kill in time.
    TimedOut,
}

/// The outcome of a run from how the CLI ended and what it reported: its own report wins
/// when the process exited cleanly; a failure names the CLI, the exit and its stderr's
/// tail. Pure, for tests.
pub fn settle(
    agent: ExternalAgent,
    exit: &ExitKind,
    reported: Option<RunOutcome>,
    stderr_tail: &str,
    timeout: Option<Duration>,
    fallback_turns: u32,
) -> RunOutcome {
    let program = agent.program();
    let stderr = if stderr_tail.is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", clip_tail(stderr_tail, 1500))
    };
    let failed = |error: String, reported: Option<RunOutcome>| {
        let mut o = reported.unwrap_or(RunOutcome {
            status: RunStatus::Failed,
            result: String::new(),
            error: None,
            turns: fallback_turns,
            usage: Usage::default(),
            cost_usd: None,
        });
        o.status = RunStatus::Failed;
        o.error = Some(match o.error.take() {
            Some(own) => format!("{error}: {own}"),
            None => error,
        });
        o
    };
    let limit = timeout
        .map(|t| format!(" after {}", humantime::format_duration(t)))
        .unwrap_or_default();
    match exit {
        ExitKind::Canceled => {
            let mut o = reported.unwrap_or(RunOutcome {
                status: RunStatus::Canceled,
                result: String::new(),
                error: None,
                turns: fallback_turns,
                usage: Usage::default(),
                cost_usd: None,
            });
            o.status = RunStatus::Canceled;
            o.error = Some(format!("{agent} was canceled"));
            o
        }
        ExitKind::TimedOut
        | ExitKind::Exited {
            timed_out: true, ..
        } => failed(
            format!("{agent} ({program}) timed out{limit} and was killed{stderr}"),
            reported,
        ),
        ExitKind::Broken(why) => failed(format!("{agent} ({program}): {why}{stderr}"), reported),
        ExitKind::Exited { exit_code: 127, .. } if reported.is_none() => failed(
            format!("{agent}: `{program}` is not installed in the sandbox (exit code 127){stderr}"),
            None,
        ),
        ExitKind::Exited {
            exit_code, signal, ..
        } => {
            let how = match signal {
                Some(s) => format!("was killed by signal {s}"),
                None => format!("exited with code {exit_code}"),
            };
            match reported {
                Some(r) if r.status != RunStatus::Succeeded => {
                    // Its own report says why (max turns, budget, an API error).
                    let mut r = r;
                    if r.error.is_none() {
                        r.error = Some(format!("{agent} ({program}) {how}{stderr}"));
                    }
                    r
                }
                Some(r) if *exit_code == 0 && signal.is_none() => r,
                Some(r) => failed(format!("{agent} ({program}) {how}{stderr}"), Some(r)),
                None => failed(
                    format!("{agent} ({program}) {how} without reporting a result{stderr}"),
                    None,
                ),
            }
        }
    }
}

/// The last `max` bytes of `s` (on a character boundary), with `...` in front when cut.
fn clip_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// Runs `agent` in the sandbox `host` to its end: emits `run_started`, the events of its
/// stream as they come, and `run_finished` last, and returns the outcome. `cancel`
/// completing kills the CLI (the run is `canceled`); `opts.timeout` kills it too (the run
/// `failed`).
pub async fn run_external(
    agent: ExternalAgent,
    host: &dyn ToolHost,
    sink: &EventSink,
    opts: &ExternalOptions,
    cancel: impl Future<Output = ()>,
) -> RunOutcome {
    sink.emit(AgentEvent::RunStarted {
        run_id: opts.run_id.clone(),
        agent: agent.as_str().to_string(),
        model: opts.model.clone().unwrap_or_else(|| "default".to_string()),
        repo: host.workspace().display().to_string(),
        prompt: opts.prompt.clone(),
    });
    if agent == ExternalAgent::Codex && opts.max_turns.is_some() {
        sink.emit(AgentEvent::Warning {
            message: "codex has no turn limit: max_turns is not enforced".into(),
        });
    }
    let mut state = StreamState::new(agent);
    let mut stderr = Tail::default();
    let exit = run_stream(agent, host, sink, opts, cancel, &mut state, &mut stderr).await;
    for e in state.finish() {
        sink.emit(e);
    }
    let outcome = settle(
        agent,
        &exit,
        state.reported(),
        &stderr.text(),
        opts.timeout,
        state.turns(),
    );
    tracing::info!(
        agent = agent.as_str(),
        run = %opts.run_id,
        status = outcome.status.as_str(),
        "external agent finished"
    );
    sink.emit(outcome.event());
    outcome
}

/// Starts the command and pumps its output into `state` until it ends.
async fn run_stream(
    agent: ExternalAgent,
    host: &dyn ToolHost,
    sink: &EventSink,
    opts: &ExternalOptions,
    cancel: impl Future<Output = ()>,
    state: &mut StreamState,
    stderr: &mut Tail,
) -> ExitKind {
    let mut cancel = std::pin::pin!(cancel);
    let deadline = opts
        .timeout
        .map(|t| tokio::time::Instant::now() + t + TIMEOUT_GRACE);
    let start = host.exec_stream(command(agent, opts));
    let session = tokio::select! {
        biased;
        () = &mut cancel => return ExitKind::Canceled,
        r = start => match r {
            Ok(s) => s,
            Err(e) => return ExitKind::Broken(format!("cannot start it in the sandbox: {e}")),
        },
    };
    let mut output = session.output;
    // The launcher gives the CLI /dev/null as stdin already; close the pipe as well.
    let _ = session.stdin.try_send(StdinMsg::Control(ExecControl::Eof));
    drop(session.stdin);
    let mut lines = LineBuffer::default();
    let feed = |state: &mut StreamState, line: &str| {
        for e in state.feed(line) {
            sink.emit(e);
        }
    };
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut sleep = std::pin::pin!(sleep);
    loop {
        let item = tokio::select! {
            biased;
            () = &mut cancel => return ExitKind::Canceled,
            () = &mut sleep => return ExitKind::TimedOut,
            item = output.recv() => item,
        };
        match item {
            Some(StreamItem::Stdout(bytes)) => {
                let (complete, dropped) = lines.push(&bytes, MAX_LINE_BYTES);
                for line in complete {
                    feed(state, &line);
                }
                if dropped > 0 {
                    sink.emit(AgentEvent::Warning {
                        message: format!(
                            "{agent}: dropped {dropped} line(s) longer than {MAX_LINE_BYTES} bytes"
                        ),
                    });
                }
            }
            Some(StreamItem::Stderr(bytes)) => stderr.push(&bytes),
            Some(StreamItem::Event(ExecEvent::Stdout { data })) => {
                let (complete, _) = lines.push(data.as_bytes(), MAX_LINE_BYTES);
                for line in complete {
                    feed(state, &line);
                }
            }
            Some(StreamItem::Event(ExecEvent::Stderr { data })) => stderr.push(data.as_bytes()),
            Some(StreamItem::Event(ExecEvent::Started { .. })) => {}
            Some(StreamItem::Event(ExecEvent::Exit {
                exit_code,
                timed_out,
                signal,
                ..
            })) => {
                if let Some(last) = lines.finish() {
                    feed(state, &last);
                }
                return ExitKind::Exited {
                    exit_code,
                    timed_out,
                    signal,
                };
            }
            Some(StreamItem::Event(ExecEvent::Error { message, .. })) => {
                return ExitKind::Broken(format!("the sandbox reported an error: {message}"));
            }
            None => {
                if let Some(last) = lines.finish() {
                    feed(state, &last);
                }
                return ExitKind::Broken(
                    "the connection to the sandbox closed before the command's exit".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines captured from claude 2.1.197 and codex 0.169.0 run against
    // `model::testing::ScriptedLlm` (long fields shortened).
    const CLAUDE_INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/tmp/explore/ws","session_id":"601d54bd-8d5d-4014-b2f0-5599dcd3996a","tools":["Task","Bash","Edit","Read","Write"],"mcp_servers":[],"model":"claude-opus-4-8[1m]","permissionMode":"bypassPermissions","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.197","output_style":"default","agents":["claude","Explore","general-purpose","Plan"],"skills":["verify","debug"],"plugins":[],"analytics_disabled":true,"uuid":"60344c88-2965-4463-8ccd-16202d8e6aad","fast_mode_state":"off"}"#;
    const CLAUDE_TEXT: &str = r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"text","text":"Let me look."}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},"context_management":null},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"f6cc238c-893d-4503-9057-49ee089d6ded"}"#;
    const CLAUDE_BASH: &str = r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"call_1","name":"Bash","input":{"command":"echo one"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},"context_management":null},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"520e487b-e403-44c1-9733-902d6671c085"}"#;
    const CLAUDE_WRITE: &str = r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"call_2","name":"Write","input":{"file_path":"/tmp/explore/ws/w.txt","content":"x\n"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},"context_management":null},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"ad5057a8-1be5-4315-9ead-5b162086437f"}"#;
    const CLAUDE_BASH_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"call_1","type":"tool_result","content":"one","is_error":false}]},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"46b1523a-d6fb-4941-9dc2-0408c25c7e13","timestamp":"2026-11-23T19:02:07.531Z","tool_use_result":{"stdout":"one","stderr":"","interrupted":false,"isImage":false,"noOutputExpected":false}}"#;
    const CLAUDE_WRITE_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"call_2","type":"tool_result","content":"File created successfully at: /tmp/explore/ws/w.txt"}]},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"db2dfd4e-8306-4915-8ca8-bebe10e570f1","timestamp":"2026-11-23T19:02:07.548Z","tool_use_result":{"type":"create","filePath":"/tmp/explore/ws/w.txt","content":"x\n","structuredPatch":[],"originalFile":null,"userModified":false}}"#;
    const CLAUDE_FAILED_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Exit code 3\nout\nerr","is_error":true,"tool_use_id":"call_1"}]},"parent_tool_use_id":null,"session_id":"c8d65b6e-d587-4d59-b70d-6c60b0150294","uuid":"6c6dc810-7ef8-4d8f-9508-34b300d63b8d","timestamp":"2026-11-23T19:00:24.858Z","tool_use_result":"Error: Exit code 3\nout\nerr"}"#;
    const CLAUDE_TODO: &str = r#"{"type":"assistant","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"call_3","name":"TodoWrite","input":{"todos":[{"content":"a","status":"pending","activeForm":"doing a"}]}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},"context_management":null},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"8335224e-8697-4020-9518-72b52865509b"}"#;
    const CLAUDE_FINAL: &str = r#"{"type":"assistant","message":{"id":"msg_3","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"text","text":"fin"}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0},"context_management":null},"parent_tool_use_id":null,"session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","uuid":"0b062a9c-4d0c-45eb-b3db-916b201ade2e"}"#;
    const CLAUDE_SUCCESS: &str = r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":244,"duration_api_ms":74,"ttft_ms":130,"num_turns":4,"result":"fin","stop_reason":"end_turn","session_id":"b57fafda-1d4c-40e7-a120-3e4ecb02f5b7","total_cost_usd":0.0006900000000000001,"usage":{"input_tokens":33,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"output_tokens":21,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard"},"modelUsage":{"claude-opus-4-8[1m]":{"inputTokens":33,"outputTokens":21,"costUSD":0.00069}},"permission_denials":[],"terminal_reason":"completed","uuid":"3783bf73-6006-482a-a616-3cfafe0e6511"}"#;
    const CLAUDE_MAX_TURNS: &str = r#"{"type":"result","subtype":"error_max_turns","duration_ms":262,"duration_api_ms":68,"is_error":true,"num_turns":2,"stop_reason":"tool_use","session_id":"d07fdf8e-c540-49d9-9244-d8b54a0119fe","total_cost_usd":0.00023,"usage":{"input_tokens":11,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":7},"permission_denials":[],"terminal_reason":"max_turns","uuid":"b84170fd-c381-443f-91e9-4525732e58bd","errors":["Reached maximum number of turns (1)"]}"#;
    const CLAUDE_API_ERROR: &str = r#"{"type":"assistant","message":{"id":"fe938154-0bf8-471b-b164-d71837a93b7c","container":null,"model":"<synthetic>","role":"assistant","stop_details":null,"stop_reason":"stop_sequence","stop_sequence":"","type":"message","usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0},"content":[{"type":"text","text":"API Error: 400 scripted failure"}],"context_management":null},"parent_tool_use_id":null,"session_id":"c8d65b6e-d587-4d59-b70d-6c60b0150294","uuid":"ab8e5875-08a8-478a-804c-3329ad9a39b0","error":"unknown"}"#;
    const CLAUDE_API_ERROR_RESULT: &str = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":400,"duration_ms":223,"duration_api_ms":55,"num_turns":2,"result":"API Error: 400 scripted failure","stop_reason":"stop_sequence","session_id":"c8d65b6e-d587-4d59-b70d-6c60b0150294","total_cost_usd":0.00023,"usage":{"input_tokens":11,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":7},"permission_denials":[],"terminal_reason":"completed","uuid":"2f78a744-f95b-4341-aad4-b0d26d955531"}"#;
    const CLAUDE_STATUS: &str = r#"{"type":"system","subtype":"status","status":"requesting","uuid":"2e67cfe0-20b8-48a7-94db-ec971202d277","session_id":"fffd80fd-97db-4c9f-9da1-6af2afad146f"}"#;
    const CLAUDE_DELTA: &str = r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello wo"}},"session_id":"fffd80fd-97db-4c9f-9da1-6af2afad146f","parent_tool_use_id":null,"uuid":"ec3caf3e-284f-478d-a7f5-355885068969"}"#;
    const CLAUDE_BLOCK_STOP: &str = r#"{"type":"stream_event","event":{"type":"content_block_stop","index":0},"session_id":"fffd80fd-97db-4c9f-9da1-6af2afad146f","parent_tool_use_id":null,"uuid":"8d47d15e-7d23-49e0-b492-2896469a58f1"}"#;
    const CLAUDE_TOOL_USE_STOP: &str = r#"{"type":"stream_event","event":{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":7}},"session_id":"fffd80fd-97db-4c9f-9da1-6af2afad146f","parent_tool_use_id":null,"uuid":"3639ade4-d8f4-4b9f-b396-50f13d2c11d7"}"#;
    const CLAUDE_END_TURN_STOP: &str = r#"{"type":"stream_event","event":{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}},"session_id":"fffd80fd-97db-4c9f-9da1-6af2afad146f","parent_tool_use_id":null,"uuid":"3639ade4-d8f4-4b9f-b396-50f13d2c11d8"}"#;

    const CODEX_THREAD: &str =
        r#"{"type":"thread.started","thread_id":"01a209c6-5b46-7313-86a2-6647d4f00298"}"#;
    const CODEX_MODEL_WARNING: &str = r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `gpt-4.1` not found. Defaulting to fallback metadata; this can degrade performance and cause issues."}}"#;
    const CODEX_TURN: &str = r#"{"type":"turn.started"}"#;
    const CODEX_CMD_STARTED: &str = r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"/bin/bash -lc 'echo hi > f.txt; hostname; exit 3'","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#;
    const CODEX_CMD_DONE: &str = r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"/bin/bash -lc 'echo hi > f.txt; hostname; exit 3'","aggregated_output":"vm\n","exit_code":3,"status":"failed"}}"#;
    const CODEX_MESSAGE: &str = r#"{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"all done"}}"#;
    const CODEX_DONE: &str = r#"{"type":"turn.completed","usage":{"input_tokens":22,"cached_input_tokens":4,"cache_write_input_tokens":0,"output_tokens":14,"reasoning_output_tokens":0}}"#;
    const CODEX_RETRY: &str = r#"{"type":"error","message":"Reconnecting... 2/5 (stream disconnected before completion: failed to lookup address information: Name does not resolve)"}"#;
    const CODEX_FAILED: &str = r#"{"type":"turn.failed","error":{"message":"{\"error\":{\"message\":\"scripted failure\",\"type\":\"server_error\",\"param\":null,\"code\":null}}"}}"#;

    fn state_events(agent: ExternalAgent, lines: &[&str]) -> (Vec<AgentEvent>, StreamState) {
        let mut state = StreamState::new(agent);
        let mut out = Vec::new();
        for line in lines {
            out.extend(state.feed(line));
        }
        out.extend(state.finish());
        (out, state)
    }

    fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
        events.iter().map(AgentEvent::kind).collect()
    }

    #[test]
    fn agent_names() {
        assert_eq!("claude-code".parse(), Ok(ExternalAgent::ClaudeCode));
        assert_eq!("codex".parse(), Ok(ExternalAgent::Codex));
        let err = "claude".parse::<ExternalAgent>().unwrap_err().to_string();
        assert!(
            err.contains("`claude`") && err.contains("claude-code or codex"),
            "{err}"
        );
        for a in ExternalAgent::ALL {
            assert_eq!(a.as_str().parse(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
        }
    }

    fn argv(r: &ExecRequest) -> Vec<String> {
        match &r.command {
            Command::Argv(v) => v.clone(),
            Command::Shell(s) => panic!("a shell command: {s}"),
        }
    }

    #[test]
    fn claude_command_line_and_environment() {
        let mut opts = ExternalOptions::new("-fix the tests", "http://127.0.0.1:3128/anthropic");
        opts.model = Some("claude-sonnet-4-5".into());
        opts.max_turns = Some(7);
        opts.timeout = Some(Duration::from_secs(90));
        opts.env
            .insert("ANTHROPIC_API_KEY".into(), "sk-ant-real".into());
        opts.env.insert("EXTRA".into(), "1".into());
        let r = command(ExternalAgent::ClaudeCode, &opts);
        let a = argv(&r);
        assert_eq!(
            &a[..6],
            [
                "/bin/sh",
                "-c",
                LAUNCHER,
                "sh",
                "/tmp/warden-claude-code-home",
                "claude"
            ]
        );
        for flag in [
            "-p",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--no-session-persistence",
        ] {
            assert!(a.contains(&flag.to_string()), "{flag} missing: {a:?}");
        }
        let pos = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert_eq!(a[pos("--model") + 1], "claude-sonnet-4-5");
        assert_eq!(a[pos("--max-turns") + 1], "7");
        // The prompt comes last, after `--`, so a leading dash is no flag.
        assert_eq!(a[a.len() - 2..], ["--", "-fix the tests"]);
        assert_eq!(
            r.env["ANTHROPIC_BASE_URL"],
            "http://127.0.0.1:3128/anthropic"
        );
        // The placeholder wins over a key given in the options.
        assert_eq!(r.env["ANTHROPIC_API_KEY"], PLACEHOLDER_KEY);
        assert_eq!(r.env["IS_SANDBOX"], "1");
        assert_eq!(r.env["HOME"], "/tmp/warden-claude-code-home");
        assert_eq!(r.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
        assert_eq!(r.env["EXTRA"], "1");
        assert!(!r.env.contains_key("CODEX_HOME"));
        assert_eq!(r.timeout_ms, Some(90_000));
        assert_eq!(r.cwd, None);
    }

    #[test]
    fn codex_command_line_and_environment() {
        let mut opts = ExternalOptions::new("do it", "http://127.0.0.1:3128/openai/v1");
        opts.model = Some("gpt-5".into());
        opts.home = Some("/tmp/h/".into());
        opts.cwd = Some("sub".into());
        let r = command(ExternalAgent::Codex, &opts);
        let a = argv(&r);
        assert_eq!(a[4..7], ["/tmp/h/.codex", "codex", "exec"]);
        for flag in [
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "--ephemeral",
            "plugins",
            "model_provider=\"warden\"",
            "model_providers.warden.base_url=\"http://127.0.0.1:3128/openai/v1\"",
            "model_providers.warden.supports_websockets=false",
            "analytics.enabled=false",
        ] {
            assert!(a.contains(&flag.to_string()), "{flag} missing: {a:?}");
        }
        let pos = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert_eq!(a[pos("-m") + 1], "gpt-5");
        assert_eq!(a[a.len() - 2..], ["--", "do it"]);
        assert_eq!(r.env["OPENAI_API_KEY"], PLACEHOLDER_KEY);
        assert_eq!(r.env["OPENAI_BASE_URL"], "http://127.0.0.1:3128/openai/v1");
        assert_eq!(r.env["HOME"], "/tmp/h/");
        assert_eq!(r.env["CODEX_HOME"], "/tmp/h/.codex");
        assert_eq!(r.cwd.as_deref(), Some("sub"));
        assert_eq!(r.timeout_ms, None);
        // A quote in the URL stays inside the TOML string.
        let opts = ExternalOptions::new("x", "http://h/\"a");
        let a = argv(&command(ExternalAgent::Codex, &opts));
        assert!(a.contains(&"model_providers.warden.base_url=\"http://h/\\\"a\"".to_string()));
    }

    #[test]
    fn launcher_makes_the_home_and_runs_the_cli_with_empty_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("h/.codex");
        // The "CLI" reads its stdin to the end, then prints its arguments. Its stdin is
        // /dev/null: the pipe given to the launcher stays open and is never read.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", LAUNCHER, "sh"])
            .arg(&made)
            .args(["sh", "-c", "cat; echo \"[$*]\"", "cli", "--", "-p x"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _open_stdin = child.stdin.take();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the CLI waits on stdin"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        assert_eq!(stdout, "[-- -p x]\n");
        assert!(made.is_dir());
        // A home that cannot be made: the CLI does not start.
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", LAUNCHER, "sh", "/proc/no/such", "echo", "started"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn claude_lines_map_to_events() {
        assert!(claude_events(CLAUDE_INIT).is_empty());
        assert!(claude_events(CLAUDE_STATUS).is_empty());
        assert!(claude_events(CLAUDE_BLOCK_STOP).is_empty());
        assert_eq!(
            claude_events(CLAUDE_DELTA),
            [AgentEvent::TextDelta {
                text: "hello wo".into()
            }]
        );
        let e = claude_events(CLAUDE_BASH);
        assert_eq!(kinds(&e), ["assistant", "tool_call"]);
        assert!(
            matches!(&e[0], AgentEvent::Assistant { tool_calls: 1, usage, .. } if usage.input_tokens == 11)
        );
        assert_eq!(
            e[1],
            AgentEvent::ToolCall {
                call_id: "call_1".into(),
                tool: "Bash".into(),
                input: json!({"command": "echo one"}),
                subagent: None,
            }
        );
        assert_eq!(
            claude_events(CLAUDE_FAILED_RESULT),
            [AgentEvent::ToolResult {
                call_id: "call_1".into(),
                tool: String::new(),
                is_error: true,
                output: "Exit code 3\nout\nerr".into(),
                truncated_for_model: false,
            }]
        );
        assert_eq!(
            kinds(&claude_events(CLAUDE_TODO)),
            ["assistant", "tool_call", "todos"]
        );
        match &claude_events(CLAUDE_SUCCESS)[..] {
            [
                AgentEvent::RunFinished {
                    status,
                    result,
                    error,
                    turns,
                    usage,
                    cost_usd,
                },
            ] => {
                assert_eq!(*status, RunStatus::Succeeded);
                assert_eq!(result, "fin");
                assert_eq!(*error, None);
                assert_eq!(*turns, 4);
                assert_eq!(
                    *usage,
                    Usage {
                        input_tokens: 45,
                        output_tokens: 21,
                        cache_read_tokens: Some(7),
                        cache_write_tokens: Some(5),
                    }
                );
                assert!((cost_usd.unwrap() - 0.00069).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        match &claude_events(CLAUDE_MAX_TURNS)[..] {
            [AgentEvent::RunFinished { status, error, .. }] => {
                assert_eq!(*status, RunStatus::MaxTurns);
                assert!(
                    error
                        .as_deref()
                        .unwrap()
                        .contains("maximum number of turns (1)")
                );
            }
            other => panic!("{other:?}"),
        }
        match &claude_events(CLAUDE_API_ERROR_RESULT)[..] {
            [AgentEvent::RunFinished { status, error, .. }] => {
                assert_eq!(*status, RunStatus::Failed);
                assert_eq!(
                    error.as_deref(),
                    Some("claude-code: API Error: 400 scripted failure")
                );
            }
            other => panic!("{other:?}"),
        }
        // Sub-agent blocks: tool calls marked, no turn of the run.
        let sub = CLAUDE_BASH.replace(
            r#""parent_tool_use_id":null"#,
            r#""parent_tool_use_id":"toolu_task""#,
        );
        match &claude_events(&sub)[..] {
            [AgentEvent::ToolCall { subagent, .. }] => {
                assert_eq!(subagent.as_deref(), Some("toolu_task"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_truncated_lines_are_warnings() {
        let cut = &CLAUDE_BASH[..CLAUDE_BASH.len() / 2];
        for line in [
            "",
            "not json at all",
            "[1,2,3]",
            "42",
            "null",
            "{\"type\":",
            cut,
            "{}",
            "{\"type\":\"telemetry\",\"x\":1}",
            "{\"type\":\"assistant\",\"message\":7}",
            "{\"type\":\"system\",\"subtype\":\"mystery\"}",
            "\u{fffd}\u{fffd}",
        ] {
            for (agent, events) in [
                (ExternalAgent::ClaudeCode, claude_events(line)),
                (ExternalAgent::Codex, codex_events(line)),
            ] {
                if line.contains("\"type\":\"system\"") && agent == ExternalAgent::Codex {
                    continue;
                }
                match &events[..] {
                    [AgentEvent::Warning { message }] => {
                        assert!(message.starts_with(agent.as_str()), "{message}");
                        assert!(message.len() < 400, "{message}");
                    }
                    other => panic!("{agent} on {line:?}: {other:?}"),
                }
            }
        }
        // Wrong types inside a known shape are no panic either.
        for line in [
            r#"{"type":"user","message":{"content":"just text"}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":{"x":1},"is_error":"yes"}]}}"#,
            r#"{"type":"result","subtype":7,"usage":"none","num_turns":-1,"total_cost_usd":"a"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use"},{"type":"text","text":5}]}}"#,
            r#"{"type":"stream_event","event":null}"#,
        ] {
            let _ = claude_events(line);
        }
        for line in [
            r#"{"type":"item.completed","item":null}"#,
            r#"{"type":"item.completed","item":{"type":"command_execution","exit_code":"x"}}"#,
            r#"{"type":"item.completed","item":{"type":"file_change","changes":"x"}}"#,
            r#"{"type":"item.completed","item":{"type":"mcp_tool_call","error":"boom"}}"#,
            r#"{"type":"turn.completed","usage":[]}"#,
            r#"{"type":"turn.failed"}"#,
        ] {
            let _ = codex_events(line);
        }
        let mut state = StreamState::new(ExternalAgent::ClaudeCode);
        assert!(state.feed("   ").is_empty());
        assert!(state.reported().is_none());
    }

    #[test]
    fn claude_stream_merges_a_message_and_names_results() {
        let (events, state) = state_events(
            ExternalAgent::ClaudeCode,
            &[
                CLAUDE_INIT,
                CLAUDE_DELTA,
                CLAUDE_TEXT,
                CLAUDE_BLOCK_STOP,
                CLAUDE_BASH,
                CLAUDE_BLOCK_STOP,
                CLAUDE_WRITE,
                CLAUDE_BLOCK_STOP,
                CLAUDE_TOOL_USE_STOP,
                CLAUDE_BASH_RESULT,
                CLAUDE_WRITE_RESULT,
                CLAUDE_TODO,
                CLAUDE_FAILED_RESULT,
                CLAUDE_FINAL,
                CLAUDE_END_TURN_STOP,
                CLAUDE_SUCCESS,
            ],
        );
        assert_eq!(
            kinds(&events),
            [
                "text_delta",
                "assistant",
                "tool_call",
                "tool_call",
                "tool_result",
                "tool_result",
                "assistant",
                "tool_call",
                "todos",
                "tool_result",
                "assistant",
            ]
        );
        match &events[1] {
            AgentEvent::Assistant {
                turn,
                text,
                tool_calls,
                stop_reason,
                ..
            } => {
                assert_eq!((*turn, text.as_str(), *tool_calls), (1, "Let me look.", 2));
                assert_eq!(stop_reason, "tool_use");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&events[4], AgentEvent::ToolResult { tool, .. } if tool == "Bash"));
        assert!(matches!(&events[5], AgentEvent::ToolResult { tool, .. } if tool == "Write"));
        assert!(
            matches!(&events[10], AgentEvent::Assistant { turn: 3, text, stop_reason, .. } if text == "fin" && stop_reason == "end_turn")
        );
        let r = state.reported().unwrap();
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(r.result, "fin");
        assert_eq!(r.turns, 4);
        assert!(!events.iter().any(|e| e.kind() == "run_finished"));
    }

    #[test]
    fn claude_stream_api_error() {
        let (events, state) = state_events(
            ExternalAgent::ClaudeCode,
            &[
                CLAUDE_BASH,
                CLAUDE_FAILED_RESULT,
                CLAUDE_API_ERROR,
                CLAUDE_API_ERROR_RESULT,
            ],
        );
        assert_eq!(
            kinds(&events),
            ["assistant", "tool_call", "tool_result", "assistant"]
        );
        let r = state.reported().unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.result, "API Error: 400 scripted failure");
    }

    #[test]
    fn subagent_calls_carry_the_subagent_name() {
        let task = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"toolu_task","name":"Task","input":{"description":"look","prompt":"p","subagent_type":"Explore"}}]},"parent_tool_use_id":null}"#;
        let sub = CLAUDE_BASH.replace(
            r#""parent_tool_use_id":null"#,
            r#""parent_tool_use_id":"toolu_task""#,
        );
        let (events, _) = state_events(ExternalAgent::ClaudeCode, &[task, &sub]);
        assert_eq!(kinds(&events), ["assistant", "tool_call", "tool_call"]);
        assert!(
            matches!(&events[2], AgentEvent::ToolCall { subagent: Some(s), .. } if s == "Explore")
        );
    }

    #[test]
    fn codex_lines_map_to_events() {
        assert!(codex_events(CODEX_THREAD).is_empty());
        assert!(codex_events(CODEX_TURN).is_empty());
        assert!(
            matches!(&codex_events(CODEX_MODEL_WARNING)[..], [AgentEvent::Warning { message }] if message.contains("gpt-4.1"))
        );
        assert!(
            matches!(&codex_events(CODEX_RETRY)[..], [AgentEvent::Warning { message }] if message.starts_with("codex: Reconnecting"))
        );
        assert_eq!(
            codex_events(CODEX_CMD_STARTED),
            [AgentEvent::ToolCall {
                call_id: "item_1".into(),
                tool: "command_execution".into(),
                input: json!({"command": "/bin/bash -lc 'echo hi > f.txt; hostname; exit 3'"}),
                subagent: None,
            }]
        );
        match &codex_events(CODEX_CMD_DONE)[..] {
            [
                AgentEvent::ToolCall { .. },
                AgentEvent::ToolResult {
                    call_id,
                    tool,
                    is_error,
                    output,
                    ..
                },
            ] => {
                assert_eq!(call_id, "item_1");
                assert_eq!(tool, "command_execution");
                assert!(*is_error);
                assert_eq!(output, "vm\n");
            }
            other => panic!("{other:?}"),
        }
        let patch = r#"{"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"/w/a.rs","kind":"update"},{"path":"/w/b.rs","kind":"add"}],"status":"completed"}}"#;
        match &codex_events(patch)[..] {
            [
                AgentEvent::ToolCall { tool, .. },
                AgentEvent::ToolResult {
                    output, is_error, ..
                },
            ] => {
                assert_eq!(tool, "file_change");
                assert_eq!(output, "update /w/a.rs\nadd /w/b.rs");
                assert!(!is_error);
            }
            other => panic!("{other:?}"),
        }
        let mcp = r#"{"type":"item.completed","item":{"id":"item_4","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"result":{"content":[{"type":"text","text":"found"}]},"error":null,"status":"completed"}}"#;
        match &codex_events(mcp)[..] {
            [
                AgentEvent::ToolCall { tool, input, .. },
                AgentEvent::ToolResult { output, .. },
            ] => {
                assert_eq!(tool, "mcp__docs__search");
                assert_eq!(input, &json!({"q": "x"}));
                assert_eq!(output, "found");
            }
            other => panic!("{other:?}"),
        }
        let todo = r#"{"type":"item.updated","item":{"id":"item_5","type":"todo_list","items":[{"text":"a","completed":false}]}}"#;
        assert!(matches!(
            &codex_events(todo)[..],
            [AgentEvent::Todos { .. }]
        ));
        assert!(matches!(
            &codex_events(CODEX_FAILED)[..],
            [AgentEvent::RunFinished { status: RunStatus::Failed, error: Some(e), .. }] if e.contains("scripted failure")
        ));
        let unknown = r#"{"type":"item.completed","item":{"id":"i","type":"hologram"}}"#;
        assert!(
            matches!(&codex_events(unknown)[..], [AgentEvent::Warning { message }] if message.contains("hologram"))
        );
    }

    #[test]
    fn codex_stream_drops_repeated_calls_and_keeps_the_final_text() {
        let (events, state) = state_events(
            ExternalAgent::Codex,
            &[
                CODEX_THREAD,
                CODEX_MODEL_WARNING,
                CODEX_TURN,
                CODEX_CMD_STARTED,
                CODEX_CMD_DONE,
                CODEX_MESSAGE,
                CODEX_DONE,
            ],
        );
        assert_eq!(
            kinds(&events),
            ["warning", "tool_call", "tool_result", "assistant"]
        );
        let r = state.reported().unwrap();
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(r.result, "all done");
        // The command (one model answer), then the text (another).
        assert_eq!(r.turns, 2);
        assert!(matches!(&events[3], AgentEvent::Assistant { turn: 2, .. }));
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 22,
                output_tokens: 14,
                cache_read_tokens: Some(4),
                cache_write_tokens: Some(0),
            }
        );
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"{\"a\":", 100), (vec![], 0));
        assert_eq!(
            b.push(b"1}\n{\"b\":2}\r\n{\"c\"", 100),
            (vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()], 0)
        );
        assert_eq!(b.finish().as_deref(), Some("{\"c\""));
        assert_eq!(b.finish(), None);
        // Over the cap: the line is dropped, whether it arrives at once or in pieces.
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"0123456789\nok\n", 5), (vec!["ok".to_string()], 1));
        assert_eq!(b.push(b"0123", 5), (vec![], 0));
        assert_eq!(b.push(b"45678", 5), (vec![], 1));
        assert_eq!(b.push(b"9999", 5), (vec![], 0));
        assert_eq!(b.push(b"99\nnext\n", 5), (vec!["next".to_string()], 0));
        assert_eq!(b.push(b"xxxxxxxx", 5), (vec![], 1));
        assert_eq!(b.finish(), None);
        // A multi-byte character split across chunks survives.
        let mut b = LineBuffer::default();
        let s = "é\n".as_bytes();
        assert_eq!(b.push(&s[..1], 100), (vec![], 0));
        assert_eq!(b.push(&s[1..], 100), (vec!["é".to_string()], 0));
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; STDERR_TAIL_BYTES]);
        t.push(b"the end\n");
        assert_eq!(t.buf.len(), STDERR_TAIL_BYTES);
        assert!(t.text().ends_with("the end"));
        assert_eq!(clip_tail("abcdef", 3), "...def");
        assert_eq!(clip("abcdef", 3), "abc...");
        assert_eq!(clip("éé", 1), "...");
    }

    fn reported(status: RunStatus) -> RunOutcome {
        RunOutcome {
            status,
            result: "answer".into(),
            error: (status != RunStatus::Succeeded).then(|| "own reason".to_string()),
            turns: 3,
            usage: Usage::default(),
            cost_usd: Some(0.1),
        }
    }

    #[test]
    fn settling_the_outcome() {
        let claude = ExternalAgent::ClaudeCode;
        let exited = |code| ExitKind::Exited {
            exit_code: code,
            timed_out: false,
            signal: None,
        };
        let ok = settle(
            claude,
            &exited(0),
            Some(reported(RunStatus::Succeeded)),
            "",
            None,
            0,
        );
        assert_eq!(ok, reported(RunStatus::Succeeded));
        // Its own failure report wins over the exit code.
        let max = settle(
            claude,
            &exited(1),
            Some(reported(RunStatus::MaxTurns)),
            "x",
            None,
            0,
        );
        assert_eq!(max.status, RunStatus::MaxTurns);
        assert_eq!(max.error.as_deref(), Some("own reason"));
        // Success reported, but a non-zero exit: failed, naming both.
        let odd = settle(
            claude,
            &exited(2),
            Some(reported(RunStatus::Succeeded)),
            "oops",
            None,
            0,
        );
        assert_eq!(odd.status, RunStatus::Failed);
        let e = odd.error.unwrap();
        assert!(
            e.contains("claude-code (claude) exited with code 2") && e.contains("stderr: oops"),
            "{e}"
        );
        assert_eq!(odd.cost_usd, Some(0.1));
        // No result line.
        let none = settle(claude, &exited(1), None, "Error: bad flag", None, 2);
        assert_eq!(none.status, RunStatus::Failed);
        assert_eq!(none.turns, 2);
        let e = none.error.unwrap();
        assert!(
            e.contains("without reporting a result") && e.ends_with("stderr: Error: bad flag"),
            "{e}"
        );
        let e = settle(ExternalAgent::Codex, &exited(127), None, "", None, 0)
            .error
            .unwrap();
        assert!(e.contains("`codex` is not installed"), "{e}");
        let killed = ExitKind::Exited {
            exit_code: 137,
            timed_out: false,
            signal: Some(9),
        };
        let e = settle(claude, &killed, None, "", None, 0).error.unwrap();
        assert!(e.contains("killed by signal 9"), "{e}");
        // Timeouts, from the sandbox or the run's own timer.
        let t = Some(Duration::from_secs(30));
        for exit in [
            ExitKind::TimedOut,
            ExitKind::Exited {
                exit_code: 124,
                timed_out: true,
                signal: None,
            },
        ] {
            let o = settle(claude, &exit, None, "", t, 0);
            assert_eq!(o.status, RunStatus::Failed);
            assert!(o.error.unwrap().contains("timed out after 30s"));
        }
        let o = settle(
            claude,
            &ExitKind::Canceled,
            Some(reported(RunStatus::Succeeded)),
            "",
            None,
            0,
        );
        assert_eq!(o.status, RunStatus::Canceled);
        let o = settle(claude, &ExitKind::Broken("gone".into()), None, "", None, 0);
        assert_eq!(o.status, RunStatus::Failed);
        assert_eq!(o.error.as_deref(), Some("claude-code (claude): gone"));
    }

    /// A sandbox that plays back output items; with `hang`, the command then runs until
    /// it is killed (the session dropped) or its `timeout_ms` passes.
    #[derive(Debug, Default)]
    struct FakeHost {
        items: Vec<StreamItem>,
        hang: bool,
        refuse: bool,
        request: std::sync::Mutex<Option<ExecRequest>>,
        killed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait::async_trait]
    impl ToolHost for FakeHost {
        fn workspace(&self) -> &std::path::Path {
            std::path::Path::new("/ws")
        }

        async fn exec(
            &self,
            _: ExecRequest,
        ) -> Result<warden_sandboxd::proto::ExecResult, warden_sandbox::DriverError> {
            Err(warden_sandbox::DriverError::Internal("not here".into()))
        }

        async fn exec_stream(
            &self,
            request: ExecRequest,
        ) -> Result<warden_sandbox::ExecSession, warden_sandbox::DriverError> {
            if self.refuse {
                return Err(warden_sandbox::DriverError::Unavailable(
                    "sandbox `sbx-1` is suspended".into(),
                ));
            }
            let timeout = request.timeout_ms.map(Duration::from_millis);
            *self.request.lock().unwrap() = Some(request);
            let (stdin, _stdin_rx) = tokio::sync::mpsc::channel(4);
            let (tx, output) = tokio::sync::mpsc::channel(4);
            let items = self.items.clone();
            let hang = self.hang;
            let killed = self.killed.clone();
            tokio::spawn(async move {
                for item in items {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                if hang {
                    let expire = async {
                        match timeout {
                            Some(t) => tokio::time::sleep(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = tx.closed() => killed.store(true, std::sync::atomic::Ordering::SeqCst),
                        () = expire => {
                            let _ = tx.send(StreamItem::Event(ExecEvent::Exit {
                                exit_code: 124,
                                timed_out: true,
                                signal: None,
                                duration_ms: 1.0,
                            })).await;
                        }
                    }
                }
            });
            Ok(warden_sandbox::ExecSession { stdin, output })
        }

        async fn read_file(
            &self,
            _: &str,
            _: usize,
        ) -> Result<(Vec<u8>, bool), warden_sandbox::DriverError> {
            Err(warden_sandbox::DriverError::Internal("not here".into()))
        }

        async fn write_file(&self, _: &str, _: Vec<u8>) -> Result<(), warden_sandbox::DriverError> {
            Err(warden_sandbox::DriverError::Internal("not here".into()))
        }
    }

    fn out(s: &str) -> StreamItem {
        StreamItem::Stdout(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    fn exit(code: i32) -> StreamItem {
        StreamItem::Event(ExecEvent::Exit {
            exit_code: code,
            timed_out: false,
            signal: None,
            duration_ms: 1.0,
        })
    }

    async fn run(
        agent: ExternalAgent,
        host: &FakeHost,
        opts: &ExternalOptions,
        cancel: impl Future<Output = ()>,
    ) -> (RunOutcome, Vec<AgentEvent>) {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = events.clone();
        let sink = EventSink::new(
            "run-1",
            None,
            None,
            Some(Box::new(move |e: &AgentEvent| {
                kept.lock().unwrap().push(e.clone())
            })),
        )
        .unwrap();
        let outcome = run_external(agent, host, &sink, opts, cancel).await;
        let events = events.lock().unwrap().clone();
        (outcome, events)
    }

    #[tokio::test]
    async fn a_run_reads_lines_across_chunks_and_ends_with_the_cli_report() {
        let (a, b) = CLAUDE_TEXT.split_at(40);
        let host = FakeHost {
            items: vec![
                StreamItem::Event(ExecEvent::Started { pid: 7 }),
                out(&CLAUDE_INIT[..10]),
                out(&format!("{}\n{a}", &CLAUDE_INIT[10..])),
                StreamItem::Stderr(bytes::Bytes::from_static(b"a warning on stderr\n")),
                out(&format!("{b}\n{CLAUDE_FINAL}\n\nnot json\n")),
                // The last line without its newline.
                out(CLAUDE_SUCCESS),
                exit(0),
            ],
            ..FakeHost::default()
        };
        let mut opts = ExternalOptions::new("hello", "http://127.0.0.1:3128/anthropic");
        opts.run_id = "run-1".into();
        let (outcome, events) = run(
            ExternalAgent::ClaudeCode,
            &host,
            &opts,
            std::future::pending(),
        )
        .await;
        assert_eq!(
            kinds(&events),
            [
                "run_started",
                "assistant",
                "assistant",
                "warning",
                "run_finished"
            ],
            "{events:#?}"
        );
        assert!(
            matches!(&events[0], AgentEvent::RunStarted { agent, model, repo, prompt, run_id }
            if agent == "claude-code" && model == "default" && repo == "/ws" && prompt == "hello" && run_id == "run-1")
        );
        assert_eq!(outcome.status, RunStatus::Succeeded);
        assert_eq!(outcome.result, "fin");
        assert_eq!(events.last(), Some(&outcome.event()));
        let request = host.request.lock().unwrap().clone().unwrap();
        assert_eq!(request, command(ExternalAgent::ClaudeCode, &opts));
    }

    #[tokio::test]
    async fn a_cli_that_dies_without_a_result_fails_with_its_stderr() {
        let host = FakeHost {
            items: vec![
                out(CODEX_THREAD),
                out("\n"),
                StreamItem::Stderr(bytes::Bytes::from_static(
                    b"Error: unexpected argument '--json'\n",
                )),
                exit(2),
            ],
            ..FakeHost::default()
        };
        let mut opts = ExternalOptions::new("x", "http://127.0.0.1:3128/openai/v1");
        opts.max_turns = Some(3);
        let (outcome, events) =
            run(ExternalAgent::Codex, &host, &opts, std::future::pending()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        let e = outcome.error.unwrap();
        assert!(
            e.starts_with("codex (codex) exited with code 2 without reporting a result")
                && e.ends_with("stderr: Error: unexpected argument '--json'"),
            "{e}"
        );
        // Codex has no turn limit: said, not enforced.
        assert!(
            matches!(&events[1], AgentEvent::Warning { message } if message.contains("max_turns"))
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_cli() {
        let host = FakeHost {
            items: vec![out(CLAUDE_INIT), out("\n")],
            hang: true,
            ..FakeHost::default()
        };
        let opts = ExternalOptions::new("x", "u");
        let cancel = tokio::time::sleep(Duration::from_millis(50));
        let (outcome, events) = run(ExternalAgent::ClaudeCode, &host, &opts, cancel).await;
        assert_eq!(outcome.status, RunStatus::Canceled);
        assert_eq!(kinds(&events), ["run_started", "run_finished"]);
        for _ in 0..100 {
            if host.killed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the session was not dropped");
    }

    #[tokio::test]
    async fn the_timeout_kills_the_cli() {
        let host = FakeHost {
            items: vec![out(&format!("{CLAUDE_BASH}\n"))],
            hang: true,
            ..FakeHost::default()
        };
        let mut opts = ExternalOptions::new("x", "u");
        opts.timeout = Some(Duration::from_millis(100));
        let (outcome, events) = run(
            ExternalAgent::ClaudeCode,
            &host,
            &opts,
            std::future::pending(),
        )
        .await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert!(outcome.error.unwrap().contains("timed out after 100ms"));
        // What came before the kill is reported.
        assert_eq!(
            kinds(&events),
            ["run_started", "assistant", "tool_call", "run_finished"]
        );
    }

    #[tokio::test]
    async fn a_sandbox_that_refuses_or_breaks_off() {
        let host = FakeHost {
            refuse: true,
            ..FakeHost::default()
        };
        let opts = ExternalOptions::new("x", "u");
        let (outcome, _) = run(ExternalAgent::Codex, &host, &opts, std::future::pending()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        let e = outcome.error.unwrap();
        assert!(
            e.contains("cannot start it in the sandbox: sandbox `sbx-1` is suspended"),
            "{e}"
        );
        let host = FakeHost {
            items: vec![out(CODEX_CMD_STARTED)],
            ..FakeHost::default()
        };
        let (outcome, events) =
            run(ExternalAgent::Codex, &host, &opts, std::future::pending()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert!(
            outcome
                .error
                .unwrap()
                .contains("closed before the command's exit")
        );
        // The unterminated last line still counted.
        assert_eq!(kinds(&events), ["run_started", "tool_call", "run_finished"]);
    }
}
