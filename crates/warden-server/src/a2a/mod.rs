//! A2A v1.0: other agents give warden tasks, over JSON-RPC 2.0 at `POST /a2a`, and find
//! what warden can do in the agent card at `GET /.well-known/agent-card.json`.
//!
//! Owns: the card (the repository's skills, the JSON-RPC interface, the bearer scheme), the
//! methods `SendMessage`, `SendStreamingMessage` (SSE), `GetTask`, `ListTasks`,
//! `CancelTask`, `SubscribeToTask`, and the A2A side of a task (its context and the messages
//! sent on it, in the task database). An A2A task is a warden task: same id, submitted with
//! [`Tasks::submit`], run by the same runner; [`mapping`] translates states both ways. A task
//! waiting for an approval is `TASK_STATE_INPUT_REQUIRED`; the next message on it ("approve" or
//! "deny") answers the approval and the task resumes.
//! Must never: start anything for a request it refuses (every check comes before the
//! submission), or put a secret in the card (it is public).
//!
//! [`client`] is the other side: calling a peer agent (`warden a2a`, delegation).

pub mod client;
pub mod config;
pub mod delegate;
pub mod mapping;
pub mod rpc;
pub mod store;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::{
    A2AError, AgentCapabilities, AgentCard, AgentInterface, AgentSkill, CancelTaskRequest,
    GetTaskRequest, HttpAuthSecurityScheme, JsonRpcId, ListTasksRequest, ListTasksResponse,
    Message, SecurityScheme, SendMessageRequest, SendMessageResponse, StreamResponse,
    SubscribeToTaskRequest, TaskArtifactUpdateEvent, TaskStatusUpdateEvent,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use warden_agent::run::approval::{AnswerError, all_pending, answer_in};
use warden_agent::run::{Answer, ApprovalBox, PendingApproval};

use crate::AppState;
use crate::error::ApiError;
use crate::tasks::model::{Task, TaskStatus, Timestamp, check_idempotency_key};
use crate::tasks::runner::{SubmitError, Tasks};
use crate::tasks::store::{CancelOutcome, TaskStoreError};
use crate::tasks::store_sql::SqlTaskStore;
pub use config::{A2aConfig, DEFAULT_SEND_WAIT, PeerConfig};
use mapping::View;
use rpc::{Method, Request};
use store::{A2aStore, ListFilter};

/// The path of the JSON-RPC endpoint.
pub const RPC_PATH: &str = "/a2a";
/// The path of the agent card.
pub const CARD_PATH: &str = "/.well-known/agent-card.json";
/// The protocol version served.
pub const PROTOCOL_VERSION: &str = "1.0";
/// How often a watched task is read again when no live event came (tasks run by another
/// replica sharing the database send none here).
const POLL: Duration = Duration::from_millis(500);

/// The A2A server of `warden serve`: its card and its methods over the task queue.
#[derive(Debug)]
pub struct A2aServer {
    cfg: A2aConfig,
    skills: Vec<AgentSkill>,
    tasks: Tasks,
    store: A2aStore,
    auth: bool,
    /// Where submitted tasks are counted (the server's registry).
    metrics: std::sync::OnceLock<crate::metrics::TaskMetrics>,
}

/// The generic skill every warden agent has.
fn task_skill() -> AgentSkill {
    AgentSkill {
        id: "repository-task".into(),
        name: "Repository task".into(),
        description: "Works on a git repository in a sandbox: clones it, does what the message \
                      says, commits and pushes a new branch, and answers with a summary. Name the \
                      repository in the message's metadata or a data part ({\"repo\": \
                      \"https://...\"}) unless the server has a default."
            .into(),
        tags: vec!["coding".into(), "git".into()],
        examples: Some(vec!["Fix the failing test in tests/parse.rs".into()]),
        input_modes: None,
        output_modes: None,
        security_requirements: None,
    }
}

impl A2aServer {
    /// Reads the skills of `cfg.skills_dir` (a missing or unreadable one is a usage error).
    pub fn new(
        cfg: A2aConfig,
        tasks: Tasks,
        db: SqlTaskStore,
        auth: bool,
    ) -> Result<A2aServer, String> {
        cfg.validate()?;
        let mut skills = vec![task_skill()];
        if let Some(dir) = &cfg.skills_dir {
            if !dir.is_dir() {
                return Err(format!(
                    "[a2a]: `skills_dir`: {} is not a directory (give a checkout of the repository)",
                    dir.display()
                ));
            }
            let set = warden_agent::skills::discover_skills(dir)
                .map_err(|e| format!("[a2a]: `skills_dir`: {e}"))?;
            for r in &set.rejected {
                tracing::warn!(skill = ?r, "a2a: a skill of skills_dir is not listed in the agent card");
            }
            for s in set.skills {
                if s.disable_model_invocation {
                    continue;
                }
                skills.push(AgentSkill {
                    id: s.name.clone(),
                    name: s.name.clone(),
                    description: match &s.when_to_use {
                        Some(w) => format!("{} {w}", s.description),
                        None => s.description.clone(),
                    },
                    tags: vec!["skill".into(), s.source.dir().into()],
                    examples: s.argument_hint.clone().map(|h| vec![h]),
                    input_modes: None,
                    output_modes: None,
                    security_requirements: None,
                });
            }
        }
        Ok(A2aServer {
            cfg,
            skills,
            tasks,
            store: A2aStore::new(db),
            auth,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Counts the tasks it submits in `metrics` (set once).
    pub fn set_metrics(&self, metrics: crate::metrics::TaskMetrics) {
        let _ = self.metrics.set(metrics);
    }

    pub fn config(&self) -> &A2aConfig {
        &self.cfg
    }

    /// The agent card, with the JSON-RPC URL under `base` (no trailing slash).
    pub fn card(&self, base: &str) -> AgentCard {
        let (schemes, requirements) = if self.auth {
            (
                Some(std::collections::HashMap::from([(
                    "bearer".to_string(),
                    SecurityScheme::HttpAuth(HttpAuthSecurityScheme {
                        scheme: "Bearer".into(),
                        description: Some(
                            "The API token of this warden serve (kept in <data>/token)".into(),
                        ),
                        bearer_format: None,
                    }),
                )])),
                Some(vec![std::collections::HashMap::from([(
                    "bearer".to_string(),
                    Vec::new(),
                )])]),
            )
        } else {
            (None, None)
        };
        AgentCard {
            name: self.cfg.name.clone().unwrap_or_else(|| "warden".into()),
            description: self.cfg.description.clone().unwrap_or_else(|| {
                "A warden coding agent: runs tasks on git repositories in sandboxes and pushes \
                 the result to a new branch."
                    .into()
            }),
            version: env!("CARGO_PKG_VERSION").into(),
            supported_interfaces: vec![AgentInterface {
                url: format!("{base}{RPC_PATH}"),
                protocol_binding: a2a::TRANSPORT_PROTOCOL_JSONRPC.into(),
                protocol_version: PROTOCOL_VERSION.into(),
                tenant: None,
            }],
            capabilities: AgentCapabilities {
                streaming: Some(true),
                push_notifications: Some(false),
                extensions: None,
                extended_agent_card: Some(false),
            },
            default_input_modes: vec!["text/plain".into(), "application/json".into()],
            default_output_modes: vec!["text/plain".into(), "application/json".into()],
            skills: self.skills.clone(),
            provider: None,
            documentation_url: None,
            icon_url: None,
            security_schemes: schemes,
            security_requirements: requirements,
            signatures: None,
        }
    }

    /// The approvals a task waits on that nobody answered yet (an answer stays pending until
    /// the run takes it).
    fn pending(&self, task_id: &str) -> Vec<PendingApproval> {
        let runs = &self.tasks.config().agent_runs;
        all_pending(runs)
            .into_iter()
            .filter(|p| {
                p.run_id == task_id
                    && ApprovalBox::new(&runs.join(task_id))
                        .take_answer(&p.call_id)
                        .is_none()
            })
            .collect()
    }

    async fn pending_async(self: &Arc<Self>, task: &Task) -> Vec<PendingApproval> {
        if task.status != TaskStatus::WaitingApproval {
            return Vec::new();
        }
        let this = self.clone();
        let id = task.id.clone();
        tokio::task::spawn_blocking(move || this.pending(&id))
            .await
            .unwrap_or_default()
    }

    async fn history(&self, task_id: &str) -> Result<Vec<Message>, A2AError> {
        Ok(self
            .store
            .messages(task_id)
            .await
            .map_err(internal)?
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect())
    }

    /// An A2A task by id, with its context; TaskNotFound unless it came through A2A.
    async fn a2a_task(&self, id: &str) -> Result<(Task, String), A2AError> {
        let Some(ctx) = self.store.context_of(id).await.map_err(internal)? else {
            return Err(A2AError::task_not_found(id));
        };
        let task = self
            .tasks
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| A2AError::task_not_found(id))?;
        Ok((task, ctx))
    }

    async fn view(
        self: &Arc<Self>,
        task: &Task,
        ctx: &str,
        view: View,
    ) -> Result<a2a::Task, A2AError> {
        let pending = self.pending_async(task).await;
        let history = if view.history_length == Some(0) {
            Vec::new()
        } else {
            self.history(&task.id).await?
        };
        Ok(mapping::to_a2a(task, ctx, &pending, history, view))
    }
}

fn internal(e: TaskStoreError) -> A2AError {
    tracing::warn!(error = %e, "a2a: task store");
    A2AError::internal("the task store failed; try again")
}

fn history_length(n: Option<i32>, field: &str) -> Result<Option<usize>, A2AError> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Err(A2AError::invalid_params(format!(
            "{field}: {n} is negative; give 0 (no history) or more"
        ))),
        Some(n) => Ok(Some(n as usize)),
    }
}

/// Whether a watched task has come to rest: finished, or waiting for an approval other than
/// the one just answered.
fn settled(task: &Task, pending: &[PendingApproval], answered: Option<&str>) -> bool {
    if task.status.is_terminal() {
        return true;
    }
    task.status == TaskStatus::WaitingApproval
        && !pending.is_empty()
        && answered.is_none_or(|a| pending.iter().all(|p| p.call_id != a))
}

/// Follows one task: each call to [`Watcher::next`] returns the task once it changed.
struct Watcher {
    server: Arc<A2aServer>,
    live: tokio::sync::broadcast::Receiver<crate::tasks::runner::LiveEvent>,
    id: String,
    last: Option<(TaskStatus, Vec<String>)>,
}

impl Watcher {
    fn new(server: Arc<A2aServer>, id: &str) -> Watcher {
        // Subscribed before the first read, so no change falls in between.
        let live = server.tasks.subscribe();
        Watcher {
            server,
            live,
            id: id.to_string(),
            last: None,
        }
    }

    /// The task and its pending approvals as they are now, and whether that differs from
    /// the last call's.
    async fn read(&mut self) -> Result<(Task, Vec<PendingApproval>, bool), A2AError> {
        let task = self
            .server
            .tasks
            .get(&self.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| A2AError::task_not_found(&self.id))?;
        let pending = self.server.pending_async(&task).await;
        let key = (
            task.status,
            pending
                .iter()
                .map(|p| p.call_id.clone())
                .collect::<Vec<_>>(),
        );
        let changed = self.last.as_ref() != Some(&key);
        self.last = Some(key);
        Ok((task, pending, changed))
    }

    /// Waits for a live event of this task or the poll interval, then reads it.
    async fn next(&mut self) -> Result<(Task, Vec<PendingApproval>, bool), A2AError> {
        let deadline = tokio::time::sleep(POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = self.live.recv() => match r {
                    Ok(e) if e.task_id != self.id => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        (&mut deadline).await;
                        break;
                    }
                },
                _ = &mut deadline => break,
            }
        }
        self.read().await
    }
}

/// What a method answers: one response, or a stream of them.
enum Answered {
    One(serde_json::Value),
    Stream(Follow),
}

impl A2aServer {
    async fn dispatch(self: &Arc<Self>, req: &Request) -> Result<Answered, A2AError> {
        match req.method {
            Method::SendMessage | Method::SendStreamingMessage => {
                let p: SendMessageRequest = rpc::params(&req.params)?;
                self.send_message(p, req.method == Method::SendStreamingMessage)
                    .await
            }
            Method::GetTask => {
                let p: GetTaskRequest = rpc::params(&req.params)?;
                let hl = history_length(p.history_length, "params.historyLength")?;
                let (task, ctx) = self.a2a_task(&p.id).await?;
                let view = View {
                    history_length: hl,
                    include_artifacts: true,
                };
                one(&self.view(&task, &ctx, view).await?)
            }
            Method::ListTasks => {
                let p: ListTasksRequest = rpc::params(&req.params)?;
                one(&self.list_tasks(p).await?)
            }
            Method::CancelTask => {
                let p: CancelTaskRequest = rpc::params(&req.params)?;
                one(&self.cancel_task(&p.id).await?)
            }
            Method::SubscribeToTask => {
                let p: SubscribeToTaskRequest = rpc::params(&req.params)?;
                let (task, ctx) = self.a2a_task(&p.id).await?;
                if task.status.is_terminal() {
                    return Err(A2AError::unsupported_operation(format!(
                        "task {} has finished ({}); GetTask reads its final state",
                        task.id,
                        client::state_name(&mapping::state_of(task.status))
                    )));
                }
                Ok(Answered::Stream(Follow {
                    task_id: task.id,
                    context_id: ctx,
                    answered: None,
                    stop_on_input: false,
                }))
            }
            Method::PushConfig => Err(A2AError::push_notification_not_supported()),
            Method::GetExtendedAgentCard => Err(A2AError::extended_card_not_configured()),
        }
    }

    async fn send_message(
        self: &Arc<Self>,
        p: SendMessageRequest,
        stream: bool,
    ) -> Result<Answered, A2AError> {
        let config = p.configuration.clone();
        if let Some(modes) = config
            .as_ref()
            .and_then(|c| c.accepted_output_modes.as_ref())
            && !modes.is_empty()
            && !modes
                .iter()
                .any(|m| ["text/plain", "application/json", "text/*", "*/*"].contains(&m.as_str()))
        {
            return Err(A2AError::content_type_not_supported().with_detail(format!(
                "params.configuration.acceptedOutputModes: {} includes neither text/plain nor application/json, which are what this agent answers in",
                modes.join(", ")
            )));
        }
        if config
            .as_ref()
            .is_some_and(|c| c.task_push_notification_config.is_some())
        {
            return Err(A2AError::push_notification_not_supported());
        }
        let hl = history_length(
            config.as_ref().and_then(|c| c.history_length),
            "params.configuration.historyLength",
        )?;
        let immediately = config
            .as_ref()
            .and_then(|c| c.return_immediately)
            .unwrap_or(false);
        let message = p.message;
        let (task, ctx, answered) = match message.task_id.clone() {
            Some(id) => self.continue_task(&id, &message).await?,
            None => {
                let (task, ctx) = self.start_task(&message).await?;
                (task, ctx, None)
            }
        };
        if stream {
            return Ok(Answered::Stream(Follow {
                task_id: task.id,
                context_id: ctx,
                answered,
                stop_on_input: true,
            }));
        }
        let task = if immediately {
            task
        } else {
            self.wait_settled(&task.id, answered.as_deref()).await?
        };
        let view = View {
            history_length: hl,
            include_artifacts: true,
        };
        let t = self.view(&task, &ctx, view).await?;
        Ok(Answered::One(
            serde_json::to_value(SendMessageResponse::Task(t)).unwrap_or_default(),
        ))
    }

    /// Waits (at most `send_wait`) until the task finishes or waits for a new approval.
    async fn wait_settled(
        self: &Arc<Self>,
        id: &str,
        answered: Option<&str>,
    ) -> Result<Task, A2AError> {
        let until = Instant::now() + self.cfg.send_wait();
        let mut w = Watcher::new(self.clone(), id);
        let (mut task, mut pending, _) = w.read().await?;
        while !settled(&task, &pending, answered) && Instant::now() < until {
            (task, pending, _) = w.next().await?;
        }
        Ok(task)
    }

    async fn start_task(self: &Arc<Self>, message: &Message) -> Result<(Task, String), A2AError> {
        let mut submission = mapping::submission_of(message, self.cfg.repo.as_deref())?;
        let ctx = match &message.context_id {
            Some(c) if c.trim().is_empty() || c.len() > 200 => {
                return Err(A2AError::invalid_params(
                    "params.message.contextId: must be 1 to 200 characters",
                ));
            }
            Some(c) => c.clone(),
            None => a2a::new_context_id(),
        };
        // A message sent twice (a client's retry) gives the same task.
        let key = format!("a2a-{}", message.message_id);
        if check_idempotency_key(&key).is_ok() {
            submission.idempotency_key = Some(key);
        }
        let (task, created) = match self.tasks.submit(submission, None).await {
            Ok(r) => r,
            Err(SubmitError::Invalid(errors)) => {
                return Err(A2AError::invalid_params(format!(
                    "params.message: the task it makes is not valid: {}",
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            Err(SubmitError::Store(e)) => return Err(internal(e)),
        };
        if created {
            self.store
                .link(&task.id, &ctx, task.created_at.millis())
                .await
                .map_err(internal)?;
        }
        let ctx = self
            .store
            .context_of(&task.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                A2AError::invalid_params(format!(
                    "params.message.messageId: `{}` was used for a task that did not come through A2A",
                    message.message_id
                ))
            })?;
        self.keep_message(&task.id, &ctx, message).await?;
        if created {
            if let Some(m) = self.metrics.get() {
                m.submitted();
            }
            tracing::info!(task = %task.id, context = %ctx, "a2a: task submitted");
        }
        Ok((task, ctx))
    }

    async fn keep_message(
        &self,
        task_id: &str,
        ctx: &str,
        message: &Message,
    ) -> Result<(), A2AError> {
        let mut m = message.clone();
        m.task_id = Some(task_id.to_string());
        m.context_id = Some(ctx.to_string());
        let body = serde_json::to_string(&m).unwrap_or_default();
        self.store
            .add_message(task_id, &m.message_id, Timestamp::now().millis(), &body)
            .await
            .map_err(internal)
    }

    /// A message on an existing task: the answer to the approval it waits for.
    async fn continue_task(
        self: &Arc<Self>,
        id: &str,
        message: &Message,
    ) -> Result<(Task, String, Option<String>), A2AError> {
        let (task, ctx) = self.a2a_task(id).await?;
        if let Some(c) = &message.context_id
            && *c != ctx
        {
            return Err(A2AError::invalid_params(format!(
                "params.message.contextId: `{c}` is not the context of task {id} (`{ctx}`)"
            )));
        }
        let state = mapping::state_of(task.status);
        if task.status.is_terminal() {
            return Err(A2AError::unsupported_operation(format!(
                "task {id} has finished ({}); a message without taskId starts a new task",
                client::state_name(&state)
            )));
        }
        if task.status != TaskStatus::WaitingApproval {
            return Err(A2AError::unsupported_operation(format!(
                "task {id} is not waiting for input ({}); send a message on it when it is \
                 TASK_STATE_INPUT_REQUIRED",
                client::state_name(&state)
            )));
        }
        let decision = mapping::decision_of(message)?;
        let pending = self.pending_async(&task).await;
        let call = match &decision.call_id {
            Some(c) => pending.iter().find(|p| p.call_id == *c).ok_or_else(|| {
                A2AError::invalid_params(format!(
                    "callId: `{c}` is not pending on task {id}; pending: {}",
                    pending
                        .iter()
                        .map(|p| p.call_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
            None => pending.first().ok_or_else(|| {
                A2AError::unsupported_operation(format!(
                    "task {id} has no pending approval any more (answered, or timed out); GetTask shows its state"
                ))
            })?,
        };
        let call_id = call.call_id.clone();
        let answer = Answer {
            approved: decision.approved,
            reason: decision.reason.clone(),
            by: "a2a".into(),
        };
        let runs = self.tasks.config().agent_runs.clone();
        let (run, c) = (id.to_string(), call_id.clone());
        let answered = tokio::task::spawn_blocking(move || answer_in(&runs, &run, &c, &answer))
            .await
            .map_err(|e| A2AError::internal(e.to_string()))?;
        match answered {
            Ok(()) => {}
            Err(e @ AnswerError::NotPending { .. }) => {
                return Err(A2AError::unsupported_operation(e.to_string()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a2a: answering an approval");
                return Err(A2AError::internal("could not record the answer"));
            }
        }
        tracing::info!(task = %id, call = %call_id, approved = decision.approved, "a2a: approval answered");
        self.keep_message(id, &ctx, message).await?;
        Ok((task, ctx, Some(call_id)))
    }

    async fn list_tasks(
        self: &Arc<Self>,
        p: ListTasksRequest,
    ) -> Result<ListTasksResponse, A2AError> {
        let page_size = match p.page_size {
            None | Some(0) => 50,
            Some(n) if (1..=100).contains(&n) => n,
            Some(n) => {
                return Err(A2AError::invalid_params(format!(
                    "params.pageSize: {n} is out of range; use 1 to 100"
                )));
            }
        };
        let hl = history_length(p.history_length, "params.historyLength")?;
        let after = match p.page_token.as_deref() {
            None | Some("") => None,
            Some(t) => Some(parse_page_token(t).ok_or_else(|| {
                A2AError::invalid_params(format!(
                    "params.pageToken: `{t}` is not a token this server gave (nextPageToken of a previous page)"
                ))
            })?),
        };
        let filter = ListFilter {
            context_id: p.context_id.filter(|c| !c.is_empty()),
            statuses: p.status.as_ref().and_then(mapping::statuses_of),
            updated_after: p.status_timestamp_after.map(|t| t.timestamp_millis()),
        };
        let (ids, next, total) = self
            .store
            .page(&filter, after.as_ref(), page_size as u32)
            .await
            .map_err(internal)?;
        let view = View {
            history_length: hl,
            include_artifacts: p.include_artifacts.unwrap_or(false),
        };
        let mut tasks = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            // Between the page and this read a task cannot go, but be lenient.
            if let Ok((task, ctx)) = self.a2a_task(&id).await {
                tasks.push(self.view(&task, &ctx, view).await?);
            }
        }
        Ok(ListTasksResponse {
            tasks,
            next_page_token: next
                .map(|(ms, id)| format!("{ms}:{id}"))
                .unwrap_or_default(),
            page_size,
            total_size: total.try_into().unwrap_or(i32::MAX),
        })
    }

    async fn cancel_task(self: &Arc<Self>, id: &str) -> Result<a2a::Task, A2AError> {
        let (_, ctx) = self.a2a_task(id).await?;
        let task = match self.tasks.cancel(id).await.map_err(internal)? {
            None => return Err(A2AError::task_not_found(id)),
            Some(CancelOutcome::Finished(t)) => {
                return Err(A2AError::task_not_cancelable(id).with_detail(format!(
                    "task {id} has finished ({}); only a submitted, working or input-required task can be canceled",
                    client::state_name(&mapping::state_of(t.status))
                )));
            }
            Some(CancelOutcome::Canceled(t)) => t,
            Some(CancelOutcome::Requested(_)) => {
                // Its runner stops it within moments; answer with the final state if it comes.
                let until = Instant::now() + Duration::from_secs(15);
                let mut w = Watcher::new(self.clone(), id);
                let (mut t, _, _) = w.read().await?;
                while !t.status.is_terminal() && Instant::now() < until {
                    (t, _, _) = w.next().await?;
                }
                t
            }
        };
        tracing::info!(task = %id, "a2a: task canceled");
        self.view(&task, &ctx, View::FULL).await
    }
}

trait Detail {
    fn with_detail(self, message: String) -> Self;
}

impl Detail for A2AError {
    fn with_detail(mut self, message: String) -> A2AError {
        self.message = message;
        self
    }
}

/// One JSON-RPC result.
fn one(result: &impl serde::Serialize) -> Result<Answered, A2AError> {
    Ok(Answered::One(
        serde_json::to_value(result).map_err(|e| A2AError::internal(e.to_string()))?,
    ))
}

/// What a stream follows: a task, until it finishes or, with `stop_on_input`, waits for an
/// approval other than `answered` (the one the request just answered).
struct Follow {
    task_id: String,
    context_id: String,
    answered: Option<String>,
    stop_on_input: bool,
}

fn parse_page_token(t: &str) -> Option<store::Cursor> {
    let (ms, id) = t.split_once(':')?;
    let ms: i64 = ms.parse().ok()?;
    crate::tasks::model::is_task_id(id).then(|| (ms, id.to_string()))
}

/// The stream of a task's changes as JSON-RPC responses: the task first, then a status
/// update at each change (and the result artifact before a COMPLETED one), until the task
/// finishes or, when `stop_on_input`, waits for an approval other than `answered`.
fn task_stream(
    server: Arc<A2aServer>,
    rpc_id: JsonRpcId,
    follow: Follow,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let Follow {
        task_id,
        context_id: ctx,
        answered,
        stop_on_input,
    } = follow;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let send = |r: StreamResponse| {
            let tx = tx.clone();
            let body = rpc::success(rpc_id.clone(), &r);
            async move {
                let data = serde_json::to_string(&body).unwrap_or_default();
                tx.send(Ok(Event::default().data(data))).await.is_ok()
            }
        };
        let fail = |e: A2AError| {
            let tx = tx.clone();
            let body = rpc::failure(rpc_id.clone(), &e);
            async move {
                let data = serde_json::to_string(&body).unwrap_or_default();
                let _ = tx.send(Ok(Event::default().data(data))).await;
            }
        };
        let mut w = Watcher::new(server.clone(), &task_id);
        let (task, pending, _) = match w.read().await {
            Ok(r) => r,
            Err(e) => return fail(e).await,
        };
        let history = match server.history(&task_id).await {
            Ok(h) => h,
            Err(e) => return fail(e).await,
        };
        let first = mapping::to_a2a(&task, &ctx, &pending, history, View::FULL);
        if !send(StreamResponse::Task(first)).await {
            return;
        }
        let done = |t: &Task, p: &[PendingApproval]| {
            t.status.is_terminal() || (stop_on_input && settled(t, p, answered.as_deref()))
        };
        if done(&task, &pending) {
            return;
        }
        loop {
            if tx.is_closed() {
                // The client went away.
                return;
            }
            let (task, pending, changed) = match w.next().await {
                Ok(r) => r,
                Err(e) => return fail(e).await,
            };
            if changed {
                if task.status == TaskStatus::Succeeded {
                    let a = TaskArtifactUpdateEvent {
                        task_id: task.id.clone(),
                        context_id: ctx.clone(),
                        artifact: mapping::result_artifact(&task),
                        append: Some(false),
                        last_chunk: Some(true),
                        metadata: None,
                    };
                    if !send(StreamResponse::ArtifactUpdate(a)).await {
                        return;
                    }
                }
                let s = TaskStatusUpdateEvent {
                    task_id: task.id.clone(),
                    context_id: ctx.clone(),
                    status: mapping::status_of(&task, &ctx, &pending),
                    metadata: None,
                };
                if !send(StreamResponse::StatusUpdate(s)).await {
                    return;
                }
            }
            if done(&task, &pending) {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

fn rpc_json(body: &a2a::JsonRpcResponse) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

/// The base URL the card names: `[a2a] public_url`, else the request's Host.
fn base_url(server: &A2aServer, headers: &HeaderMap) -> String {
    if let Some(u) = &server.cfg.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn not_enabled() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "A2A is not enabled on this server (it needs the task runner)",
    )
    .into_response()
}

/// The A2A agent card.
///
/// What this agent does (the repository's skills), where its JSON-RPC endpoint is, how to
/// authenticate. Public: it holds no secret.
#[utoipa::path(get, path = "/.well-known/agent-card.json", tag = "a2a", security(),
    responses((status = 200, description = "The A2A v1.0 agent card", body = Object,
            content_type = "application/json"),
        (status = 404, description = "A2A is not enabled", body = crate::openapi::ErrorDoc)))]
pub async fn agent_card(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(server) = state.a2a() else {
        return not_enabled();
    };
    let card = server.card(&base_url(server, &headers));
    // A card built from the request's Host is not for shared caches.
    let cache = if server.cfg.public_url.is_some() {
        "public, max-age=60"
    } else {
        "private, max-age=60"
    };
    ([(header::CACHE_CONTROL, cache)], Json(card)).into_response()
}

/// The A2A v1.0 JSON-RPC endpoint.
///
/// JSON-RPC 2.0 methods `SendMessage`, `SendStreamingMessage`, `GetTask`, `ListTasks`,
/// `CancelTask`, `SubscribeToTask` (push-notification configs answer
/// PushNotificationNotSupported). Errors are JSON-RPC error objects (HTTP 200): -32700 parse
/// error, -32600 invalid request, -32601 method not found, -32602 invalid params (naming the
/// field), -32001 task not found, -32002 not cancelable, -32003 push notifications not
/// supported, -32004 unsupported operation, -32005 content type not supported, -32009
/// version not supported. The streaming methods answer `text/event-stream`, each event's data
/// a JSON-RPC response whose result is a StreamResponse.
#[utoipa::path(post, path = "/a2a", tag = "a2a",
    params(("A2A-Version" = Option<String>, Header, description = "The protocol version the client speaks; 1.0")),
    request_body(content = Object, description = "A JSON-RPC 2.0 request", content_type = "application/json"),
    responses((status = 200, description = "A JSON-RPC response (result or error); for SendStreamingMessage and SubscribeToTask, Server-Sent Events of JSON-RPC responses",
            body = Object),
        (status = 401, description = "No or wrong bearer token", body = crate::openapi::ErrorDoc),
        (status = 404, description = "A2A is not enabled", body = crate::openapi::ErrorDoc)))]
pub async fn jsonrpc(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(server) = state.a2a().cloned() else {
        return not_enabled();
    };
    let req = match rpc::parse_request(&body) {
        Ok(r) => r,
        Err((id, e)) => return rpc_json(&rpc::failure(id, &e)),
    };
    if let Some(v) = headers.get("a2a-version") {
        let v = v.to_str().unwrap_or("").trim();
        if !v.is_empty() && v != "1.0" && v != "1" {
            return rpc_json(&rpc::failure(req.id, &A2AError::version_not_supported(v)));
        }
    }
    match server.dispatch(&req).await {
        Ok(Answered::One(v)) => rpc_json(&a2a::JsonRpcResponse::success(req.id, v)),
        Ok(Answered::Stream(follow)) => {
            let stream = task_stream(server, req.id, follow);
            Sse::new(stream)
                .keep_alive(KeepAlive::default())
                .into_response()
        }
        Err(e) => rpc_json(&rpc::failure(req.id, &e)),
    }
}
