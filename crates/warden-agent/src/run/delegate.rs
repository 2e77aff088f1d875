//! Delegation: the `Delegate` tool hands a sub-task to another agent running out of process
//! (a peer A2A agent, such as another `warden serve`) and returns its answer to the model.
//!
//! The loop only offers the tool and routes its calls; what a peer is and how it is reached is
//! the embedder's (`warden serve` builds one from its `[a2a.peers]`). A call goes through the
//! permission rules like any other tool (`Delegate` is matched by name; the input names the
//! peer), so a repository can deny or ask for it.

use async_trait::async_trait;
use serde_json::Value;

use super::agent::Cancel;
use super::tools::ToolOutput;
use crate::model::ToolDefinition;

/// The tool's name.
pub const DELEGATE: &str = "Delegate";

/// Sends sub-tasks to peer agents.
#[async_trait]
pub trait Delegate: Send + Sync + std::fmt::Debug {
    /// The tool as the model sees it (named [`DELEGATE`]): its description names the peers.
    fn definition(&self) -> ToolDefinition;

    /// Runs one call: sends the sub-task, waits for the peer's result (or `cancel`), and
    /// answers with its text, or an error the model can act on.
    async fn delegate(&self, input: &Value, cancel: &Cancel) -> ToolOutput;
}
