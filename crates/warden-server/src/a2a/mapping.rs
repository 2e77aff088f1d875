//! Between warden's tasks and A2A's, both ways. Pure: no I/O.
//!
//! | warden | A2A |
//! |---|---|
//! | QUEUED | `TASK_STATE_SUBMITTED` |
//! | RUNNING | `TASK_STATE_WORKING` |
//! | WAITING_APPROVAL | `TASK_STATE_INPUT_REQUIRED` (the status message names the call) |
//! | SUCCEEDED | `TASK_STATE_COMPLETED` (artifact `result`: summary, branch, commit) |
//! | FAILED, TIMED_OUT | `TASK_STATE_FAILED` (the status message says why) |
//! | CANCELED | `TASK_STATE_CANCELED` |

use std::collections::HashMap;

use a2a::{
    A2AError, Artifact, Message, Part, PartContent, Role, Task as A2aTask, TaskState,
    TaskStatus as A2aStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};
use warden_agent::run::PendingApproval;

use crate::tasks::model::{Task, TaskStatus, TaskSubmission, TimeoutValue};

/// The A2A state of a warden status.
pub fn state_of(status: TaskStatus) -> TaskState {
    match status {
        TaskStatus::Queued => TaskState::Submitted,
        TaskStatus::Running => TaskState::Working,
        TaskStatus::WaitingApproval => TaskState::InputRequired,
        TaskStatus::Succeeded => TaskState::Completed,
        TaskStatus::Failed | TaskStatus::TimedOut => TaskState::Failed,
        TaskStatus::Canceled => TaskState::Canceled,
    }
}

/// The warden statuses an A2A state stands for (none for REJECTED and AUTH_REQUIRED, which
/// warden's tasks never reach); `None` for UNSPECIFIED, which filters nothing.
pub fn statuses_of(state: &TaskState) -> Option<Vec<&'static str>> {
    let statuses: Vec<TaskStatus> = TaskStatus::ALL
        .into_iter()
        .filter(|s| state_of(*s) == *state)
        .collect();
    match state {
        TaskState::Unspecified => None,
        _ => Some(statuses.into_iter().map(TaskStatus::as_str).collect()),
    }
}

/// How much of a task to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The most recent messages of the history to include (`None`: all).
    pub history_length: Option<usize>,
    pub include_artifacts: bool,
}

impl View {
    pub const FULL: View = View {
        history_length: None,
        include_artifacts: true,
    };
}

fn timestamp(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

fn agent_message(task: &Task, context_id: &str, kind: &str, parts: Vec<Part>) -> Message {
    Message {
        // Stable for one status of one task, so repeated reads agree.
        message_id: format!("{}-{kind}-{}", task.id, task.updated_at.millis()),
        context_id: Some(context_id.to_string()),
        task_id: Some(task.id.clone()),
        role: Role::Agent,
        parts,
        metadata: None,
        extensions: None,
        reference_task_ids: None,
    }
}

/// The status message of a task waiting for approvals: what it waits for, and how to answer.
pub fn approval_message(task: &Task, context_id: &str, pending: &[PendingApproval]) -> Message {
    let text = match pending {
        [] => "The agent waits for a person to approve a tool call. Reply \"approve\" or \"deny\" \
               (or a data part {\"decision\": \"approve\"|\"deny\"})."
            .to_string(),
        [p, ..] => format!(
            "The agent waits for approval of {} ({}). Reply \"approve\" or \"deny\" (optionally \
             followed by a reason), or send a data part {{\"decision\": \"approve\"|\"deny\", \
             \"callId\": \"{}\"}}.",
            p.call, p.basis, p.call_id
        ),
    };
    let calls: Vec<Value> = pending
        .iter()
        .map(|p| {
            json!({
                "callId": p.call_id,
                "tool": p.tool,
                "call": p.call,
                "input": p.input,
                "basis": p.basis,
                "requestedAt": p.requested_at,
                "deadline": p.deadline,
            })
        })
        .collect();
    agent_message(
        task,
        context_id,
        "approval",
        vec![
            Part::text(text),
            Part::data(json!({"pendingApprovals": calls})),
        ],
    )
}

/// The result artifact of a task that succeeded.
pub fn result_artifact(task: &Task) -> Artifact {
    let mut data = json!({
        "repo": task.spec.repo,
        "branch": task.spec.new_branch,
    });
    if let Some(c) = &task.commit {
        data["commit"] = json!(c);
    }
    Artifact {
        artifact_id: format!("{}-result", task.id),
        name: Some("result".into()),
        description: Some("The agent's summary, and the branch and commit it pushed".into()),
        parts: vec![
            Part::text(task.summary.clone().unwrap_or_else(|| "Done.".into())),
            Part::data(data),
        ],
        metadata: None,
        extensions: None,
    }
}

/// The A2A status of a task.
pub fn status_of(task: &Task, context_id: &str, pending: &[PendingApproval]) -> A2aStatus {
    let message = match task.status {
        TaskStatus::WaitingApproval => Some(approval_message(task, context_id, pending)),
        TaskStatus::Succeeded => Some(agent_message(
            task,
            context_id,
            "result",
            vec![Part::text(
                task.summary.clone().unwrap_or_else(|| "Done.".into()),
            )],
        )),
        TaskStatus::Failed | TaskStatus::TimedOut | TaskStatus::Canceled => {
            task.reason.as_ref().map(|r| {
                agent_message(
                    task,
                    context_id,
                    "reason",
                    vec![Part::text(format!("{}: {r}", task.status))],
                )
            })
        }
        TaskStatus::Queued | TaskStatus::Running => None,
    };
    A2aStatus {
        state: state_of(task.status),
        message,
        timestamp: timestamp(task.updated_at.millis()),
    }
}

/// A warden task as an A2A task. `history` is every message kept for it, oldest first.
pub fn to_a2a(
    task: &Task,
    context_id: &str,
    pending: &[PendingApproval],
    mut history: Vec<Message>,
    view: View,
) -> A2aTask {
    if let Some(n) = view.history_length {
        let skip = history.len().saturating_sub(n);
        history.drain(..skip);
    }
    let artifacts = (view.include_artifacts && task.status == TaskStatus::Succeeded)
        .then(|| vec![result_artifact(task)]);
    let mut warden = json!({
        "status": task.status.as_str(),
        "repo": task.spec.repo,
        "branch": task.spec.new_branch,
        "agent": task.spec.agent.as_str(),
    });
    if let Some(c) = &task.commit {
        warden["commit"] = json!(c);
    }
    A2aTask {
        id: task.id.clone(),
        context_id: context_id.to_string(),
        status: status_of(task, context_id, pending),
        artifacts,
        history: (view.history_length != Some(0)).then_some(history),
        metadata: Some(HashMap::from([("warden".to_string(), warden)])),
    }
}

/// What a message that starts a task may set besides the prompt, from its metadata or from
/// a data part.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskOptions {
    #[serde(default, alias = "repo_url")]
    pub repo: Option<String>,
    #[serde(default, alias = "base_branch")]
    pub base_branch: Option<String>,
    #[serde(default, alias = "new_branch")]
    pub new_branch: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub timeout: Option<TimeoutValue>,
}

const OPTION_KEYS: &[&str] = &[
    "repo",
    "baseBranch",
    "newBranch",
    "agent",
    "model",
    "template",
    "timeout",
];

fn invalid(field: &str, message: impl std::fmt::Display) -> A2AError {
    A2AError::invalid_params(format!("{field}: {message}"))
}

/// Text and data parts only; a file (raw bytes or a URL) is not something a task takes.
fn check_parts(message: &Message) -> Result<(), A2AError> {
    if message.role != Role::User {
        return Err(invalid(
            "message.role",
            "must be ROLE_USER (a client's message to the agent)",
        ));
    }
    if message.message_id.trim().is_empty() {
        return Err(invalid("message.messageId", "is empty; give a unique id"));
    }
    for (i, part) in message.parts.iter().enumerate() {
        if matches!(part.content, PartContent::Raw(_) | PartContent::Url(_)) {
            return Err(A2AError::content_type_not_supported().with_message(format!(
                "message.parts[{i}]: files are not supported; send text parts (the task) and \
                 data parts (options such as {{\"repo\": \"https://...\"}})"
            )));
        }
    }
    Ok(())
}

trait WithMessage {
    fn with_message(self, m: String) -> Self;
}

impl WithMessage for A2AError {
    fn with_message(mut self, m: String) -> A2AError {
        self.message = m;
        self
    }
}

fn text_of(message: &Message) -> String {
    message
        .parts
        .iter()
        .filter_map(Part::as_text)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The submission a message that starts a task makes: the prompt from its text parts, the
/// options from its metadata (known keys) and data parts (every key must be known), the
/// repository defaulting to `default_repo`.
pub fn submission_of(
    message: &Message,
    default_repo: Option<&str>,
) -> Result<TaskSubmission, A2AError> {
    check_parts(message)?;
    let mut options = TaskOptions::default();
    let mut merge = |from: TaskOptions| {
        let o = &mut options;
        o.repo = from.repo.or(o.repo.take());
        o.base_branch = from.base_branch.or(o.base_branch.take());
        o.new_branch = from.new_branch.or(o.new_branch.take());
        o.agent = from.agent.or(o.agent.take());
        o.model = from.model.or(o.model.take());
        o.template = from.template.or(o.template.take());
        o.timeout = from.timeout.or(o.timeout.take());
    };
    if let Some(meta) = &message.metadata {
        let known: serde_json::Map<String, Value> = meta
            .iter()
            .filter(|(k, _)| OPTION_KEYS.contains(&k.as_str()) || k.as_str() == "repo_url")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let parsed: TaskOptions = serde_path_to_error::deserialize(Value::Object(known))
            .map_err(|e| invalid(&format!("message.metadata.{}", e.path()), e.inner()))?;
        merge(parsed);
    }
    for (i, part) in message.parts.iter().enumerate() {
        if let PartContent::Data(d) = &part.content {
            if !d.is_object() {
                return Err(invalid(
                    &format!("message.parts[{i}].data"),
                    format!("must be an object with any of {}", OPTION_KEYS.join(", ")),
                ));
            }
            let parsed: TaskOptions = serde_path_to_error::deserialize(d.clone()).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." || path.is_empty() {
                    format!("message.parts[{i}].data")
                } else {
                    format!("message.parts[{i}].data.{path}")
                };
                invalid(
                    &at,
                    format!("{} (the keys are {})", e.inner(), OPTION_KEYS.join(", ")),
                )
            })?;
            merge(parsed);
        }
    }
    let task = text_of(message);
    if task.is_empty() {
        return Err(invalid(
            "message.parts",
            "has no text; a text part says what the agent should do",
        ));
    }
    let Some(repo) = options.repo.or(default_repo.map(str::to_string)) else {
        return Err(invalid(
            "message.metadata.repo",
            "no repository: name one in the message's metadata or a data part \
             ({\"repo\": \"https://host/org/repo.git\"}); this server has no default (`[a2a] repo`)",
        ));
    };
    Ok(TaskSubmission {
        repo,
        task,
        base_branch: options.base_branch,
        new_branch: options.new_branch,
        agent: options.agent,
        model: options.model,
        template: options.template,
        timeout: options.timeout,
        ..TaskSubmission::default()
    })
}

/// A person's answer to a pending approval, as a message carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approved: bool,
    pub reason: Option<String>,
    /// The call answered; `None`: the oldest pending.
    pub call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DecisionPart {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, alias = "call_id")]
    call_id: Option<String>,
}

fn verdict(word: &str) -> Option<bool> {
    match word.to_ascii_lowercase().as_str() {
        "approve" | "approved" | "allow" | "yes" => Some(true),
        "deny" | "denied" | "reject" | "no" => Some(false),
        _ => None,
    }
}

/// The decision a message on a task waiting for approval carries: a data part
/// `{"decision": "approve"|"deny", "reason"?, "callId"?}`, or a text starting with
/// "approve" or "deny" (the rest is the reason).
pub fn decision_of(message: &Message) -> Result<Decision, A2AError> {
    check_parts(message)?;
    for (i, part) in message.parts.iter().enumerate() {
        if let PartContent::Data(d) = &part.content {
            let at = format!("message.parts[{i}].data");
            let p: DecisionPart = serde_path_to_error::deserialize(d.clone()).map_err(|e| {
                invalid(
                    &at,
                    format!(
                        "{}: {} (an answer is {{\"decision\": \"approve\"|\"deny\", \"reason\"?, \"callId\"?}})",
                        e.path(),
                        e.inner()
                    ),
                )
            })?;
            let approved = verdict(&p.decision).ok_or_else(|| {
                invalid(
                    &format!("{at}.decision"),
                    format!("`{}` is not a decision; use approve or deny", p.decision),
                )
            })?;
            return Ok(Decision {
                approved,
                reason: p.reason.filter(|r| !r.trim().is_empty()),
                call_id: p.call_id,
            });
        }
    }
    let text = text_of(message);
    let trimmed = text.trim();
    let word: String = trimmed.chars().take_while(|c| c.is_alphabetic()).collect();
    match verdict(&word) {
        Some(approved) => {
            let rest = trimmed[word.len()..]
                .trim_start_matches([':', ',', '.', '-', '!', ' ', '\n'])
                .trim();
            Ok(Decision {
                approved,
                reason: (!rest.is_empty()).then(|| rest.to_string()),
                call_id: None,
            })
        }
        None => Err(invalid(
            "message.parts",
            "the task waits for an approval; answer with a text starting with \"approve\" or \
             \"deny\", or a data part {\"decision\": \"approve\"|\"deny\"}",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::{TaskDefaults, Timestamp};

    fn msg(parts: Vec<Part>) -> Message {
        Message::new(Role::User, parts)
    }

    fn task(status: TaskStatus) -> Task {
        let spec = TaskSubmission {
            repo: "https://git.example/org/app.git".into(),
            task: "fix it".into(),
            ..TaskSubmission::default()
        }
        .validate("task-abc", &TaskDefaults::default())
        .unwrap();
        let mut t = Task::new("task-abc".into(), spec, Timestamp(1_700_000_000_000));
        t.status = status;
        t
    }

    #[test]
    fn every_status_has_its_state_and_back() {
        let table = [
            (TaskStatus::Queued, TaskState::Submitted),
            (TaskStatus::Running, TaskState::Working),
            (TaskStatus::WaitingApproval, TaskState::InputRequired),
            (TaskStatus::Succeeded, TaskState::Completed),
            (TaskStatus::Failed, TaskState::Failed),
            (TaskStatus::TimedOut, TaskState::Failed),
            (TaskStatus::Canceled, TaskState::Canceled),
        ];
        for (status, state) in table {
            assert_eq!(state_of(status), state, "{status}");
            assert!(
                statuses_of(&state).unwrap().contains(&status.as_str()),
                "{state:?}"
            );
            assert_eq!(state.is_terminal(), status.is_terminal(), "{status}");
        }
        assert_eq!(
            statuses_of(&TaskState::Failed),
            Some(vec!["FAILED", "TIMED_OUT"])
        );
        assert_eq!(statuses_of(&TaskState::Rejected), Some(vec![]));
        assert_eq!(statuses_of(&TaskState::AuthRequired), Some(vec![]));
        assert_eq!(statuses_of(&TaskState::Unspecified), None);
    }

    #[test]
    fn a_task_as_a2a_shows_state_result_and_history() {
        let mut t = task(TaskStatus::Succeeded);
        t.summary = Some("Fixed the typo.".into());
        t.commit = Some("abc123".into());
        let history = vec![msg(vec![Part::text("one")]), msg(vec![Part::text("two")])];
        let a = to_a2a(&t, "ctx-1", &[], history.clone(), View::FULL);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["id"], "task-abc");
        assert_eq!(v["contextId"], "ctx-1");
        assert_eq!(v["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(v["status"]["message"]["role"], "ROLE_AGENT");
        assert_eq!(
            v["status"]["message"]["parts"][0]["text"],
            "Fixed the typo."
        );
        assert_eq!(v["artifacts"][0]["parts"][0]["text"], "Fixed the typo.");
        assert_eq!(v["artifacts"][0]["parts"][1]["data"]["commit"], "abc123");
        assert_eq!(v["history"].as_array().unwrap().len(), 2);
        assert_eq!(v["metadata"]["warden"]["status"], "SUCCEEDED");
        let one = View {
            history_length: Some(1),
            include_artifacts: false,
        };
        let v = serde_json::to_value(to_a2a(&t, "c", &[], history.clone(), one)).unwrap();
        assert_eq!(v["history"][0]["parts"][0]["text"], "two");
        assert!(v.get("artifacts").is_none());
        let none = View {
            history_length: Some(0),
            include_artifacts: true,
        };
        let v = serde_json::to_value(to_a2a(&t, "c", &[], history, none)).unwrap();
        assert!(v.get("history").is_none());
    }

    #[test]
    fn a_waiting_task_names_the_call() {
        let t = task(TaskStatus::WaitingApproval);
        let pending = PendingApproval {
            run_id: "task-abc".into(),
            call_id: "toolu_1".into(),
            tool: "Bash".into(),
            call: "Bash(touch x)".into(),
            input: json!({"command": "touch x"}),
            basis: "ask rule Bash(touch:*)".into(),
            requested_at: "2026-01-01T00:00:00Z".into(),
            deadline: "2026-01-01T01:00:00Z".into(),
        };
        let s = serde_json::to_value(status_of(&t, "c", &[pending])).unwrap();
        assert_eq!(s["state"], "TASK_STATE_INPUT_REQUIRED");
        let text = s["message"]["parts"][0]["text"].as_str().unwrap();
        assert!(
            text.contains("Bash(touch x)") && text.contains("approve"),
            "{text}"
        );
        assert_eq!(
            s["message"]["parts"][1]["data"]["pendingApprovals"][0]["callId"],
            "toolu_1"
        );
        let mut failed = task(TaskStatus::TimedOut);
        failed.reason = Some("ran past 30m".into());
        let s = serde_json::to_value(status_of(&failed, "c", &[])).unwrap();
        assert_eq!(s["state"], "TASK_STATE_FAILED");
        assert_eq!(s["message"]["parts"][0]["text"], "TIMED_OUT: ran past 30m");
    }

    #[test]
    fn a_submission_takes_text_and_options() {
        let mut m = msg(vec![
            Part::text("Fix the typo"),
            Part::data(json!({"baseBranch": "main", "agent": "warden"})),
            Part::text("in README"),
        ]);
        m.metadata = Some(HashMap::from([
            ("repo".to_string(), json!("https://git.example/a.git")),
            ("traceId".to_string(), json!("ignored")),
        ]));
        let s = submission_of(&m, Some("https://git.example/default.git")).unwrap();
        assert_eq!(s.task, "Fix the typo\n\nin README");
        assert_eq!(s.repo, "https://git.example/a.git");
        assert_eq!(s.base_branch.as_deref(), Some("main"));
        assert_eq!(s.agent.as_deref(), Some("warden"));
        let plain = submission_of(&msg(vec![Part::text("go")]), Some("https://d/x.git")).unwrap();
        assert_eq!(plain.repo, "https://d/x.git");
    }

    #[test]
    fn bad_messages_name_the_field() {
        let code = |e: A2AError| (e.code, e.message);
        let cases: Vec<(Message, Option<&str>, i32, &str)> = vec![
            (
                msg(vec![Part::text("go")]),
                None,
                -32602,
                "message.metadata.repo",
            ),
            (
                msg(vec![]),
                Some("https://d/x.git"),
                -32602,
                "message.parts",
            ),
            (
                msg(vec![Part::text("go"), Part::data(json!({"branch": "x"}))]),
                Some("https://d/x.git"),
                -32602,
                "message.parts[1].data",
            ),
            (
                msg(vec![Part::text("go"), Part::data(json!({"repo": 5}))]),
                None,
                -32602,
                "message.parts[1].data.repo",
            ),
            (
                msg(vec![Part::text("go"), Part::data(json!([1]))]),
                None,
                -32602,
                "message.parts[1].data",
            ),
            (
                msg(vec![Part::raw(vec![1, 2])]),
                Some("https://d/x.git"),
                -32005,
                "message.parts[0]",
            ),
            (
                Message::new(Role::Agent, vec![Part::text("go")]),
                Some("https://d/x.git"),
                -32602,
                "message.role",
            ),
        ];
        for (m, repo, want, field) in cases {
            let (c, text) = code(submission_of(&m, repo).unwrap_err());
            assert_eq!(c, want, "{text}");
            assert!(text.starts_with(field), "{text} should name {field}");
        }
    }

    #[test]
    fn decisions_from_text_or_data() {
        let d = decision_of(&msg(vec![Part::text("approve")])).unwrap();
        assert!(d.approved && d.reason.is_none() && d.call_id.is_none());
        let d = decision_of(&msg(vec![Part::text("Deny: not that file")])).unwrap();
        assert!(!d.approved);
        assert_eq!(d.reason.as_deref(), Some("not that file"));
        let d = decision_of(&msg(vec![Part::data(
            json!({"decision": "approve", "callId": "toolu_2"}),
        )]))
        .unwrap();
        assert!(d.approved);
        assert_eq!(d.call_id.as_deref(), Some("toolu_2"));
        let e = decision_of(&msg(vec![Part::text("maybe later")])).unwrap_err();
        assert_eq!(e.code, -32602);
        let e = decision_of(&msg(vec![Part::data(json!({"decision": "perhaps"}))])).unwrap_err();
        assert!(e.message.contains("decision"), "{}", e.message);
        let e = decision_of(&msg(vec![Part::data(
            json!({"decision": "approve", "x": 1}),
        )]))
        .unwrap_err();
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }
}
