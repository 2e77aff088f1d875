//! Tasks: unattended agent runs on a repository (`POST /v1/tasks`).
//!
//! A task names a repository and what to do. The runner claims it from the store's queue,
//! starts one sandbox for it, clones the repository inside through the egress proxy (with
//! credentials injected by the proxy, never seen by the sandbox), creates the branch, runs
//! the agent, commits and pushes, then releases the sandbox. Every step is an event in the
//! task's log and a span of its trace.
//!
//! * [`model`]: the wire and stored types, and validation of a submission (pure).
//! * [`store`]: the [`store::TaskStore`] the queue lives in, on SQLite or Postgres.
//! * [`git`]: the git workflow, run in the sandbox through the driver.
//! * [`runner`]: the queue workers, timeouts, cancellation and restart recovery.
//! * [`telemetry`]: OpenTelemetry GenAI spans for a task's run.

pub mod agents;
pub mod git;
pub mod model;
pub mod runner;
pub mod store;
pub mod store_sql;
pub mod telemetry;

pub use model::{Task, TaskEvent, TaskSpec, TaskStatus, TaskSubmission};
pub use store::TaskStore;
