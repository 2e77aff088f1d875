//! A run of the agent: the tool loop, approvals, budgets, the transcript, and the external
//! agents (Claude Code, Codex) that report the same events.
//!
//! - [`prepare`] reads the repository (instructions, skills, subagents, settings) and checks
//!   trust; [`prepare::system_prompt`] builds the system prompt.
//! - [`Agent`] runs the tool loop in one sandbox ([`ToolHost`]), checking every call with
//!   [`crate::permissions::decide`] and asking its [`Approver`] on `ask`.
//! - [`RunState`] is persisted in the run's directory after every step, so a run is resumed.
//! - [`EventSink`] writes the JSONL transcript and feeds watchers.

pub mod agent;
pub mod approval;
pub mod budget;
pub mod delegate;
pub mod event;
pub mod external;
pub mod host;
pub mod prepare;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tools;
pub mod transcript;

pub use agent::{Agent, AgentConfig, Cancel, CancelHandle, DEFAULT_MAX_TOOL_OUTPUT, cancellation};
pub use approval::{Answer, ApprovalBox, Approver, DenyAll, OnTimeout, PendingApproval};
pub use budget::{Budget, Price};
pub use delegate::{DELEGATE, Delegate};
pub use event::{AgentEvent, RunOutcome, RunStatus};
pub use host::{DriverHost, ToolHost};
pub use prepare::{PrepareError, PrepareOptions, Prepared, prepare, system_prompt};
pub use state::{RunDir, RunState, new_run_id};
pub use transcript::{EventSink, read_transcript};
