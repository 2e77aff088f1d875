//! Delegation to peer agents: the `Delegate` tool of warden's agent loop, over A2A. A task's
//! agent hands a self-contained sub-task to a peer named in `[a2a.peers]` (another
//! `warden serve`, or any A2A v1.0 agent), waits for the peer's task to end, and gets its
//! result as the tool's output. Canceling the delegating task cancels the peer's.

use std::collections::BTreeMap;
use std::time::Duration;

use a2a::{SendMessageResponse, TaskState};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use warden_agent::model::ToolDefinition;
use warden_agent::run::tools::{ToolOutput, parse_args};
use warden_agent::run::{Cancel, DELEGATE, Delegate};

use super::PeerConfig;
use super::client::{A2aClient, rpc_url, state_name, text_of_task, user_message};

/// How often a peer's task is read while it runs.
const POLL: Duration = Duration::from_secs(1);

/// The peers of `[a2a.peers]`, each with its client.
#[derive(Debug)]
pub struct PeerDelegate {
    peers: BTreeMap<String, Peer>,
}

#[derive(Debug)]
struct Peer {
    client: A2aClient,
    url: String,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateArgs {
    agent: String,
    message: String,
    #[serde(default)]
    repo: Option<String>,
}

impl PeerDelegate {
    /// Clients for the configured peers (their token files read now); `None` when there are
    /// none.
    pub fn from_config(
        peers: &BTreeMap<String, PeerConfig>,
    ) -> Result<Option<PeerDelegate>, String> {
        if peers.is_empty() {
            return Ok(None);
        }
        let mut out = BTreeMap::new();
        for (name, p) in peers {
            let token = match &p.token_file {
                None => None,
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| {
                            format!("[a2a.peers.{name}]: `token_file` {}: {e}", f.display())
                        })?
                        .trim()
                        .to_string(),
                ),
            };
            let client =
                A2aClient::new(&p.url, token).map_err(|e| format!("[a2a.peers.{name}]: {e}"))?;
            out.insert(
                name.clone(),
                Peer {
                    client,
                    url: p.url.clone(),
                    description: p.description.clone(),
                },
            );
        }
        Ok(Some(PeerDelegate { peers: out }))
    }

    async fn run(
        &self,
        peer: &Peer,
        name: &str,
        args: &DelegateArgs,
        cancel: &Cancel,
    ) -> ToolOutput {
        let fail = |m: String| ToolOutput::error(format!("delegating to `{name}`: {m}"));
        let card = match peer.client.card().await {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        let rpc = match rpc_url(&card) {
            Ok(u) => u,
            Err(e) => return fail(e.to_string()),
        };
        let data = args.repo.as_ref().map(|r| json!({"repo": r}));
        let message = user_message(&args.message, data, None);
        let mut task = match peer.client.send_message(&rpc, message, false).await {
            Ok(SendMessageResponse::Task(t)) => t,
            Ok(SendMessageResponse::Message(m)) => {
                let text: Vec<&str> = m.parts.iter().filter_map(a2a::Part::as_text).collect();
                return ToolOutput::ok(format!("`{name}` answered:\n{}", text.join("\n")));
            }
            Err(e) => return fail(e.to_string()),
        };
        tracing::info!(peer = name, task = %task.id, "a2a: sub-task delegated");
        while !task.status.state.is_terminal() {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = peer
                        .client
                        .call::<Value>(&rpc, "CancelTask", json!({"id": task.id}), Duration::from_secs(30))
                        .await;
                    return fail(format!("canceled; the peer's task {} was canceled too", task.id));
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            task = match peer.client.get_task(&rpc, &task.id).await {
                Ok(t) => t,
                Err(e) => return fail(format!("following task {}: {e}", task.id)),
            };
        }
        let text = text_of_task(&task);
        match task.status.state {
            TaskState::Completed => {
                ToolOutput::ok(format!("`{name}` completed its task {}:\n{text}", task.id))
            }
            other => fail(format!(
                "its task {} ended {}: {text}",
                task.id,
                state_name(&other)
            )),
        }
    }
}

#[async_trait]
impl Delegate for PeerDelegate {
    fn definition(&self) -> ToolDefinition {
        let list: Vec<String> = self
            .peers
            .iter()
            .map(|(n, p)| match &p.description {
                Some(d) => format!("- {n}: {d} ({})", p.url),
                None => format!("- {n} ({})", p.url),
            })
            .collect();
        ToolDefinition {
            name: DELEGATE.into(),
            description: format!(
                "Hands a self-contained sub-task to another agent, which runs it in its own \
                 sandbox on a repository (its default one, or `repo`) and pushes its own branch; \
                 waits until it ends and returns its result. The other agent sees nothing of \
                 this conversation: say everything it needs in `message`. The agents:\n{}",
                list.join("\n")
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "enum": self.peers.keys().collect::<Vec<_>>(),
                              "description": "Which agent"},
                    "message": {"type": "string", "description": "The sub-task, complete in itself"},
                    "repo": {"type": "string", "description": "The repository's https:// URL, if not the agent's default"}
                },
                "required": ["agent", "message"],
                "additionalProperties": false
            }),
        }
    }

    async fn delegate(&self, input: &Value, cancel: &Cancel) -> ToolOutput {
        let args: DelegateArgs = match parse_args(DELEGATE, input) {
            Ok(a) => a,
            Err(e) => return ToolOutput::error(e),
        };
        let Some(peer) = self.peers.get(&args.agent) else {
            return ToolOutput::error(format!(
                "there is no agent `{}`; the agents are {}",
                args.agent,
                self.peers.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        if args.message.trim().is_empty() {
            return ToolOutput::error("`message` is empty; say what the other agent should do");
        }
        self.run(peer, &args.agent, &args, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegate() -> PeerDelegate {
        let peers = BTreeMap::from([(
            "reviewer".to_string(),
            PeerConfig {
                url: "http://127.0.0.1:9".into(),
                token_file: None,
                description: Some("Reviews changes".into()),
            },
        )]);
        PeerDelegate::from_config(&peers).unwrap().unwrap()
    }

    #[test]
    fn no_peers_no_tool_and_unreadable_tokens_are_refused() {
        assert!(
            PeerDelegate::from_config(&BTreeMap::new())
                .unwrap()
                .is_none()
        );
        let peers = BTreeMap::from([(
            "p".to_string(),
            PeerConfig {
                url: "http://127.0.0.1:9".into(),
                token_file: Some("/nonexistent/token".into()),
                description: None,
            },
        )]);
        let e = PeerDelegate::from_config(&peers).unwrap_err();
        assert!(
            e.contains("[a2a.peers.p]") && e.contains("token_file"),
            "{e}"
        );
    }

    #[test]
    fn the_tool_names_its_peers() {
        let d = delegate().definition();
        assert_eq!(d.name, "Delegate");
        assert!(
            d.description
                .contains("- reviewer: Reviews changes (http://127.0.0.1:9)")
        );
        assert_eq!(
            d.input_schema["properties"]["agent"]["enum"],
            json!(["reviewer"])
        );
    }

    #[tokio::test]
    async fn bad_calls_are_errors_the_model_can_act_on() {
        let d = delegate();
        let cancel = Cancel::never();
        let out = d
            .delegate(&json!({"agent": "nobody", "message": "x"}), &cancel)
            .await;
        assert!(
            out.is_error && out.content.contains("the agents are reviewer"),
            "{out:?}"
        );
        let out = d.delegate(&json!({"agent": "reviewer"}), &cancel).await;
        assert!(out.is_error && out.content.contains("message"), "{out:?}");
        let out = d
            .delegate(&json!({"agent": "reviewer", "message": "  "}), &cancel)
            .await;
        assert!(out.is_error && out.content.contains("empty"), "{out:?}");
        // Nobody listens on port 9: the error says where it went.
        let out = d
            .delegate(&json!({"agent": "reviewer", "message": "review"}), &cancel)
            .await;
        assert!(
            out.is_error && out.content.starts_with("delegating to `reviewer`"),
            "{out:?}"
        );
    }
}
