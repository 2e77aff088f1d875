//! What a run reports as it goes: one [`AgentEvent`] per step, written to the JSONL
//! transcript and sent to whoever watches (the terminal, the API). warden's own loop and the
//! external agents (Claude Code, Codex) report the same events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Usage;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The model finished its answer.
    Succeeded,
    /// Something went wrong: the model or sandbox failed, the agent's CLI crashed, a trust
    /// check stopped it. The reason is in `RunFinished.error`.
    Failed,
    /// It reached `max_turns`.
    MaxTurns,
    /// It spent its token or cost budget.
    BudgetExceeded,
    /// It was cancelled (Ctrl-C, the API).
    Canceled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::MaxTurns => "max_turns",
            RunStatus::BudgetExceeded => "budget_exceeded",
            RunStatus::Canceled => "canceled",
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The first event.
    RunStarted {
        run_id: String,
        /// `warden`, `claude-code` or `codex`.
        agent: String,
        model: String,
        /// The repository root, as seen inside the sandbox.
        repo: String,
        prompt: String,
    },
    /// What was loaded before the first model call.
    Loaded {
        /// Instruction files, in the order they appear in the system prompt.
        instructions: Vec<String>,
        /// Skills the model is told of.
        skills: Vec<String>,
        subagents: Vec<String>,
        /// The trust check's one-line summary.
        trust: String,
    },
    /// Something the user should know that does not stop the run (a rejected skill, a
    /// malformed rule).
    Warning { message: String },
    /// A piece of streamed text (sent to watchers only, never written to the transcript:
    /// the whole text follows in `assistant`).
    TextDelta { text: String },
    /// One model call's answer.
    Assistant {
        turn: u32,
        text: String,
        /// How many tool calls it asked for.
        tool_calls: usize,
        stop_reason: String,
        usage: Usage,
    },
    /// The model asked for a tool call.
    ToolCall {
        call_id: String,
        tool: String,
        input: Value,
        /// Set for calls made by a sub-agent (its name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subagent: Option<String>,
    },
    /// The permission rules' decision on a call.
    Decision {
        call_id: String,
        /// `allow`, `ask` or `deny`.
        decision: String,
        /// The rule that decided, or why none did.
        basis: String,
    },
    /// An `ask` is waiting for a person.
    ApprovalRequested {
        call_id: String,
        tool: String,
        /// The call in rule syntax: `Bash(git push origin main)`.
        call: String,
        basis: String,
        /// RFC 3339: when it is denied if nobody answers.
        deadline: String,
    },
    ApprovalAnswered {
        call_id: String,
        approved: bool,
        reason: Option<String>,
        /// `terminal`, `api`, `cli`, `timeout`, `script`.
        by: String,
    },
    /// A tool call's outcome, whole (the model may have been given a truncated copy).
    ToolResult {
        call_id: String,
        tool: String,
        is_error: bool,
        output: String,
        /// The model got only the first part of `output`.
        truncated_for_model: bool,
    },
    /// A sub-agent (the Task tool) starts or ends.
    SubagentStarted {
        call_id: String,
        name: String,
        prompt: String,
    },
    SubagentFinished {
        call_id: String,
        name: String,
        status: RunStatus,
        result: String,
    },
    /// The plan, as the model last wrote it with TodoWrite.
    Todos { todos: Value },
    /// The last event.
    RunFinished {
        status: RunStatus,
        /// The model's final answer (its last text).
        result: String,
        /// Why it failed or stopped, when it did not succeed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        turns: u32,
        usage: Usage,
        /// In US dollars, when the model's price is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
}

impl AgentEvent {
    /// The event's `type`, as in the transcript.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentEvent::RunStarted { .. } => "run_started",
            AgentEvent::Loaded { .. } => "loaded",
            AgentEvent::Warning { .. } => "warning",
            AgentEvent::TextDelta { .. } => "text_delta",
            AgentEvent::Assistant { .. } => "assistant",
            AgentEvent::ToolCall { .. } => "tool_call",
            AgentEvent::Decision { .. } => "decision",
            AgentEvent::ApprovalRequested { .. } => "approval_requested",
            AgentEvent::ApprovalAnswered { .. } => "approval_answered",
            AgentEvent::ToolResult { .. } => "tool_result",
            AgentEvent::SubagentStarted { .. } => "subagent_started",
            AgentEvent::SubagentFinished { .. } => "subagent_finished",
            AgentEvent::Todos { .. } => "todos",
            AgentEvent::RunFinished { .. } => "run_finished",
        }
    }
}

/// What a run came to: the fields of its `run_finished` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub status: RunStatus,
    /// The model's final answer.
    pub result: String,
    pub error: Option<String>,
    /// Model calls made.
    pub turns: u32,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
}

impl RunOutcome {
    /// The `run_finished` event for this outcome.
    pub fn event(&self) -> AgentEvent {
        AgentEvent::RunFinished {
            status: self.status,
            result: self.result.clone(),
            error: self.error.clone(),
            turns: self.turns,
            usage: self.usage,
            cost_usd: self.cost_usd,
        }
    }
}
