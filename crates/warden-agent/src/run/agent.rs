//! The tool loop: ask the model, check each tool call against the permission rules, wait
//! for a person on `ask`, run the call in the sandbox, feed the results back, until the
//! model answers without a tool call or a limit is reached.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::watch;

use super::approval::{Answer, ApprovalBox, Approver, OnTimeout, PendingApproval, rfc3339};
use super::budget::{Budget, Price};
use super::event::{AgentEvent, RunOutcome, RunStatus};
use super::host::ToolHost;
use super::state::{InFlight, Phase, RunDir, RunState};
use super::tools::{self, ToolOutput};
use super::transcript::EventSink;
use crate::model::{
    Message, ModelClient, ModelRequest, StopReason, StreamEvent, ToolCall, ToolResult,
};
use crate::permissions::{self, Author, Basis, Context, Decision, Origin, RuleSet, RuleSource};
use crate::skills::SkillSet;
use crate::subagents::SubagentSet;
use crate::trust::TrustReport;

/// Characters of a tool's output the model gets; the transcript keeps all of it.
pub const DEFAULT_MAX_TOOL_OUTPUT: usize = 30_000;

/// How a run works: fixed for its whole life.
#[derive(Debug)]
pub struct AgentConfig {
    pub model: ModelClient,
    /// `provider/model`, for events.
    pub model_name: String,
    pub price: Option<Price>,
    pub system: String,
    /// The repository's rules and warden's own.
    pub rules: Vec<RuleSource>,
    pub context: Context,
    pub skills: SkillSet,
    pub subagents: SubagentSet,
    /// The pins of the run's files: a skill body read later must match them.
    pub trust: Option<TrustReport>,
    pub budget: Budget,
    pub max_tool_output: usize,
    pub approval_timeout: Duration,
    pub on_timeout: OnTimeout,
    /// The tools offered (a subset of [`tools::ALL_TOOLS`]).
    pub tools: Vec<String>,
    pub max_tokens_per_call: u32,
    /// Stream the model's answers (text deltas reach watchers as they come).
    pub stream: bool,
    /// Peer agents the `Delegate` tool hands sub-tasks to (offered when set and `tools`
    /// names it).
    pub delegate: Option<Arc<dyn super::Delegate>>,
}

/// Cancels a run: `cancel()` on the handle, and the run stops at the next step (an
/// in-flight model call or command is abandoned; the command is killed with its session).
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<watch::Sender<bool>>);

/// The run's side of [`CancelHandle`].
#[derive(Debug, Clone)]
pub struct Cancel(watch::Receiver<bool>);

/// A handle and its receiver.
pub fn cancellation() -> (CancelHandle, Cancel) {
    let (tx, rx) = watch::channel(false);
    (CancelHandle(Arc::new(tx)), Cancel(rx))
}

impl CancelHandle {
    pub fn cancel(&self) {
        let _ = self.0.send(true);
    }
}

impl Cancel {
    /// A receiver that is never cancelled (its handle is gone at once, which
    /// [`cancelled`](Self::cancelled) takes as never).
    pub fn never() -> Cancel {
        Cancel(watch::channel(false).1)
    }
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
    /// Resolves when cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                // The handle is gone: never cancelled.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A running agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub config: Arc<AgentConfig>,
    pub host: Arc<dyn ToolHost>,
    pub approver: Arc<dyn Approver>,
    /// Where pending approvals are published for other processes (and the API) to see.
    pub approvals: Option<ApprovalBox>,
    pub sink: EventSink,
    /// Where the state is persisted (none: in memory only).
    pub run_dir: Option<RunDir>,
}

/// The scope of a loop: the main run, or a sub-agent inside it.
struct Scope {
    subagent: Option<String>,
    system: String,
    tools: Vec<String>,
    persist: bool,
    max_turns: u32,
}

enum Step {
    Result(ToolResult),
    Stop(RunStatus, String),
}

impl Agent {
    /// Runs (or resumes) `state` to its end. The outcome is also the last event and is
    /// saved in the state.
    pub async fn run(&self, state: &mut RunState, cancel: &Cancel) -> RunOutcome {
        // A finished run stays finished, except one that was cancelled: it goes on where it
        // stopped (its pending approval is asked again).
        if state.phase == Phase::Finished
            && let Some(o) = &state.outcome
            && o.status != RunStatus::Canceled
        {
            return o.clone();
        }
        state.phase = Phase::Running;
        state.outcome = None;
        let scope = Scope {
            subagent: None,
            system: self.config.system.clone(),
            tools: self.config.tools.clone(),
            persist: true,
            max_turns: self.config.budget.max_turns,
        };
        let outcome = self.run_loop(state, cancel, &scope).await;
        self.sink.emit(outcome.event());
        outcome
    }

    fn save(&self, state: &RunState, scope: &Scope) {
        if !scope.persist {
            return;
        }
        if let Some(dir) = &self.run_dir
            && let Err(e) = dir.save(state)
        {
            self.sink.emit(AgentEvent::Warning {
                message: format!("cannot save the run's state in {}: {e}", dir.dir.display()),
            });
        }
    }

    async fn run_loop(&self, state: &mut RunState, cancel: &Cancel, scope: &Scope) -> RunOutcome {
        loop {
            if let Some(in_flight) = state.in_flight.clone() {
                let calls = &in_flight.response.tool_calls;
                for call in calls.iter().skip(in_flight.results.len()) {
                    if cancel.is_cancelled() {
                        return self.finish(
                            state,
                            scope,
                            RunStatus::Canceled,
                            Some("cancelled".into()),
                        );
                    }
                    match self.execute(state, call, cancel, scope).await {
                        Step::Result(result) => {
                            if let Some(f) = state.in_flight.as_mut() {
                                f.results.push(result);
                            }
                            self.save(state, scope);
                        }
                        Step::Stop(status, why) => {
                            return self.finish(state, scope, status, Some(why));
                        }
                    }
                }
                let done = state.in_flight.take().expect("in flight");
                state.messages.push(Message::assistant_from(&done.response));
                state.messages.push(Message::ToolResults {
                    results: done.results,
                });
                self.save(state, scope);
            }

            if state.turns >= scope.max_turns {
                return self.finish(
                    state,
                    scope,
                    RunStatus::MaxTurns,
                    Some(format!(
                        "reached the limit of {} model calls",
                        scope.max_turns
                    )),
                );
            }
            let request = ModelRequest::new(state.messages.clone())
                .with_system(scope.system.clone())
                .with_tools({
                    let mut defs = tools::definitions(
                        &scope.tools.iter().map(String::as_str).collect::<Vec<_>>(),
                    );
                    if let Some(d) = &self.config.delegate
                        && scope.tools.iter().any(|t| t == super::DELEGATE)
                    {
                        defs.push(d.definition());
                    }
                    defs
                })
                .with_max_tokens(self.config.max_tokens_per_call);
            let call = async {
                if self.config.stream {
                    let sink = self.sink.clone();
                    self.config
                        .model
                        .stream(&request, move |ev| {
                            if let StreamEvent::Text { text } = ev {
                                sink.emit(AgentEvent::TextDelta { text });
                            }
                        })
                        .await
                } else {
                    self.config.model.complete(&request).await
                }
            };
            let response = tokio::select! {
                r = call => r,
                _ = cancel.cancelled() => {
                    return self.finish(state, scope, RunStatus::Canceled, Some("cancelled during a model call".into()));
                }
            };
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    return self.finish(
                        state,
                        scope,
                        RunStatus::Failed,
                        Some(format!("the model call failed: {e}")),
                    );
                }
            };
            state.turns += 1;
            state.usage.add(&response.usage);
            if let Some(price) = self.config.price {
                state.cost_usd = Some(price.cost(&state.usage));
            }
            self.sink.emit(AgentEvent::Assistant {
                turn: state.turns,
                text: response.text.clone(),
                tool_calls: response.tool_calls.len(),
                stop_reason: stop_word(&response.stop_reason),
                usage: response.usage,
            });
            if response.tool_calls.is_empty() {
                state.messages.push(Message::assistant_from(&response));
                if response.stop_reason == StopReason::MaxTokens {
                    self.sink.emit(AgentEvent::Warning {
                        message: format!(
                            "the model's last answer was cut at {} output tokens",
                            self.config.max_tokens_per_call
                        ),
                    });
                }
                return self.finish(state, scope, RunStatus::Succeeded, None);
            }
            if let Some(why) = self.over_budget(state) {
                state.messages.push(Message::assistant_from(&response));
                return self.finish(state, scope, RunStatus::BudgetExceeded, Some(why));
            }
            state.in_flight = Some(InFlight {
                response,
                results: Vec::new(),
            });
            self.save(state, scope);
        }
    }

    fn over_budget(&self, state: &RunState) -> Option<String> {
        let b = &self.config.budget;
        let used = state.usage.input_tokens + state.usage.output_tokens;
        if let Some(max) = b.max_tokens
            && used >= max
        {
            return Some(format!("spent {used} tokens of a budget of {max}"));
        }
        if let (Some(max), Some(cost)) = (b.max_cost_usd, state.cost_usd)
            && cost >= max
        {
            return Some(format!("spent ${cost:.4} of a budget of ${max:.2}"));
        }
        None
    }

    fn finish(
        &self,
        state: &mut RunState,
        scope: &Scope,
        status: RunStatus,
        error: Option<String>,
    ) -> RunOutcome {
        let result = state
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::Assistant { text, .. } if !text.trim().is_empty() => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let outcome = RunOutcome {
            status,
            result,
            error: if status == RunStatus::Succeeded {
                None
            } else {
                error
            },
            turns: state.turns,
            usage: state.usage,
            cost_usd: state.cost_usd,
        };
        state.phase = Phase::Finished;
        state.outcome = Some(outcome.clone());
        self.save(state, scope);
        outcome
    }

    fn rules(&self, state: &RunState) -> RuleSet {
        let mut sources = self.config.rules.clone();
        for name in &state.active_skills {
            if let Some(skill) = self.config.skills.get(name)
                && let Some(allowed) = &skill.allowed_tools
            {
                sources.push(RuleSource {
                    origin: Origin {
                        author: Author::Repository,
                        label: format!("skill {name} (allowed-tools)"),
                    },
                    root: self.config.context.workspace.clone(),
                    allow: allowed.clone(),
                    ask: Vec::new(),
                    deny: Vec::new(),
                });
            }
        }
        RuleSet::new(&sources).0
    }

    /// Decides, asks if need be, and runs one call.
    async fn execute(
        &self,
        state: &mut RunState,
        call: &ToolCall,
        cancel: &Cancel,
        scope: &Scope,
    ) -> Step {
        self.sink.emit(AgentEvent::ToolCall {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            input: call.arguments.clone(),
            subagent: scope.subagent.clone(),
        });
        let reply = |out: ToolOutput| self.reply(call, out);
        if !scope.tools.iter().any(|t| t == &call.name) {
            return Step::Result(reply(ToolOutput::error(format!(
                "there is no tool `{}` here; the tools are {}",
                call.name,
                scope.tools.join(", ")
            ))));
        }
        if !call.arguments.is_object() {
            return Step::Result(reply(ToolOutput::error(format!(
                "invalid arguments for {}: expected a JSON object, got {}",
                call.name,
                tools::shorten(&call.arguments.to_string(), 200)
            ))));
        }
        let pcall = match permissions::ToolCall::from_tool_use(&call.name, &call.arguments) {
            Ok(c) => c,
            Err(e) => {
                return Step::Result(reply(ToolOutput::error(format!(
                    "invalid arguments for {}: {}",
                    call.name, e.reason
                ))));
            }
        };
        let rules = self.rules(state);
        let mut decision = permissions::decide(&rules, &pcall, &self.config.context);
        // The loop's own tools (reading a trusted skill, writing the plan, starting a
        // sub-agent whose every call is checked) need no permission unless a rule says so.
        if matches!(call.name.as_str(), tools::SKILL | tools::TODO | tools::TASK)
            && matches!(decision.basis(), Basis::Default { .. })
        {
            decision = Decision::Allow(decision.basis().clone());
        }
        self.sink.emit(AgentEvent::Decision {
            call_id: call.id.clone(),
            decision: decision.effect().to_string(),
            basis: decision.basis().to_string(),
        });
        let mut note = None;
        match &decision {
            Decision::Allow(_) => {}
            Decision::Deny(basis) => {
                return Step::Result(reply(ToolOutput::error(format!(
                    "permission denied: {pcall} is denied by {basis}. Do not try to get around this rule; take another way or tell the user."
                ))));
            }
            Decision::Ask(basis) => {
                let answer = match self.ask(state, call, &pcall, basis, cancel, scope).await {
                    Ok(a) => a,
                    Err(stop) => return stop,
                };
                if !answer.approved {
                    let reason = answer.reason.unwrap_or_else(|| "no reason given".into());
                    return Step::Result(reply(ToolOutput::error(format!(
                        "the user denied {pcall}: {reason}"
                    ))));
                }
                note = answer
                    .reason
                    .map(|r| format!("\n[approved by the user: {r}]"));
            }
        }
        if let Some(refusal) = self.recheck_resolved(&rules, &pcall).await {
            return Step::Result(reply(ToolOutput::error(refusal)));
        }
        let run = self.run_tool(state, call, &rules, cancel, scope);
        let out = tokio::select! {
            out = run => out,
            _ = cancel.cancelled() => return Step::Stop(RunStatus::Canceled, format!("cancelled while {} ran", call.name)),
        };
        match out {
            Ok(mut out) => {
                if let Some(n) = note {
                    out.content.push_str(&n);
                }
                Step::Result(reply(out))
            }
            Err(stop) => stop,
        }
    }

    /// A file call's path as the sandbox resolves it (symlinks followed, `realpath -m` run
    /// inside the sandbox), decided again: a link to a file the rules deny (or ask for by a
    /// rule) is refused, so `notes -> .env` cannot get around `deny: Read(.env)`. `None`
    /// lets the call go on.
    async fn recheck_resolved(
        &self,
        rules: &RuleSet,
        pcall: &permissions::ToolCall,
    ) -> Option<String> {
        let (path, make): (&str, fn(String) -> permissions::ToolCall) = match pcall {
            permissions::ToolCall::Read { path } => {
                (path, |path| permissions::ToolCall::Read { path })
            }
            permissions::ToolCall::Edit { path } => {
                (path, |path| permissions::ToolCall::Edit { path })
            }
            permissions::ToolCall::Write { path } => {
                (path, |path| permissions::ToolCall::Write { path })
            }
            _ => return None,
        };
        let named = tools::absolute(self.host.as_ref(), path);
        let mut request =
            warden_sandboxd::proto::ExecRequest::new(warden_sandboxd::proto::Command::Argv(vec![
                "realpath".into(),
                "-m".into(),
                "--".into(),
                named.to_string_lossy().into_owned(),
            ]));
        request.timeout_ms = Some(10_000);
        let resolved = match self.host.exec(request).await {
            Ok(r) if r.exit_code == 0 => std::path::PathBuf::from(r.stdout.trim_end_matches('\n')),
            Ok(r) => {
                return Some(format!(
                    "cannot resolve {} in the sandbox: {}",
                    named.display(),
                    r.stderr.trim()
                ));
            }
            Err(e) => {
                return Some(format!(
                    "cannot resolve {} in the sandbox: {e}",
                    named.display()
                ));
            }
        };
        if resolved == named {
            return None;
        }
        let again = make(resolved.to_string_lossy().into_owned());
        match permissions::decide(rules, &again, &self.config.context) {
            Decision::Deny(basis) | Decision::Ask(basis @ Basis::Rules(_)) => Some(format!(
                "permission denied: {} resolves to {}, and {again} is refused by {basis}",
                named.display(),
                resolved.display()
            )),
            _ => None,
        }
    }

    /// The result for the model, the whole output in the transcript.
    fn reply(&self, call: &ToolCall, out: ToolOutput) -> ToolResult {
        let max = self.config.max_tool_output;
        let (content, cut) = truncate_middle(&out.content, max);
        self.sink.emit(AgentEvent::ToolResult {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            is_error: out.is_error,
            output: out.content.clone(),
            truncated_for_model: cut,
        });
        let content = if out.is_error && !content.starts_with("Error") {
            format!("Error: {content}")
        } else {
            content
        };
        ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content,
        }
    }

    /// Publishes an approval, persists the run, and waits for the answer.
    async fn ask(
        &self,
        state: &mut RunState,
        call: &ToolCall,
        pcall: &permissions::ToolCall,
        basis: &Basis,
        cancel: &Cancel,
        scope: &Scope,
    ) -> Result<Answer, Step> {
        let now = SystemTime::now();
        let pending = PendingApproval {
            run_id: state.run_id.clone(),
            call_id: call.id.clone(),
            tool: call.name.clone(),
            call: pcall.to_string(),
            input: call.arguments.clone(),
            basis: basis.to_string(),
            requested_at: rfc3339(now),
            deadline: rfc3339(now + self.config.approval_timeout),
        };
        if scope.persist {
            state.phase = Phase::WaitingApproval;
        }
        self.save(state, scope);
        if let Some(b) = &self.approvals
            && let Err(e) = b.publish(&pending)
        {
            self.sink.emit(AgentEvent::Warning {
                message: format!("cannot publish the approval for other processes: {e}"),
            });
        }
        self.sink.emit(AgentEvent::ApprovalRequested {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            call: pending.call.clone(),
            basis: pending.basis.clone(),
            deadline: pending.deadline.clone(),
        });
        let wait = async {
            match self.approver.ask(&pending).await {
                Some(a) => a,
                None => std::future::pending().await,
            }
        };
        let answer = tokio::select! {
            a = tokio::time::timeout(self.config.approval_timeout, wait) => a.ok(),
            _ = cancel.cancelled() => {
                // The approval stays published and the state says waiting: a resumed run
                // asks again.
                return Err(Step::Stop(RunStatus::Canceled, format!("cancelled while waiting for approval of {pcall}")));
            }
        };
        if let Some(b) = &self.approvals {
            b.close(&call.id);
        }
        state.phase = Phase::Running;
        let answer = match answer {
            Some(a) => a,
            None => {
                let secs = self.config.approval_timeout.as_secs();
                let a = Answer {
                    approved: false,
                    reason: Some(format!("nobody answered within {secs} s")),
                    by: "timeout".into(),
                };
                if self.config.on_timeout == OnTimeout::Cancel {
                    self.sink.emit(AgentEvent::ApprovalAnswered {
                        call_id: call.id.clone(),
                        approved: false,
                        reason: a.reason.clone(),
                        by: a.by.clone(),
                    });
                    return Err(Step::Stop(
                        RunStatus::Canceled,
                        format!("nobody approved {pcall} within {secs} s"),
                    ));
                }
                a
            }
        };
        self.sink.emit(AgentEvent::ApprovalAnswered {
            call_id: call.id.clone(),
            approved: answer.approved,
            reason: answer.reason.clone(),
            by: answer.by.clone(),
        });
        self.save(state, scope);
        Ok(answer)
    }

    async fn run_tool(
        &self,
        state: &mut RunState,
        call: &ToolCall,
        rules: &RuleSet,
        cancel: &Cancel,
        scope: &Scope,
    ) -> Result<ToolOutput, Step> {
        let host = self.host.as_ref();
        let input = &call.arguments;
        macro_rules! args {
            ($t:ty) => {
                match tools::parse_args::<$t>(&call.name, input) {
                    Ok(a) => a,
                    Err(e) => return Ok(ToolOutput::error(e)),
                }
            };
        }
        Ok(match call.name.as_str() {
            tools::BASH => tools::bash(host, &args!(tools::BashArgs)).await,
            tools::READ => tools::read(host, &args!(tools::ReadArgs)).await,
            tools::WRITE => tools::write(host, &args!(tools::WriteArgs)).await,
            tools::EDIT => tools::edit(host, &args!(tools::EditArgs)).await,
            tools::GLOB => {
                let a = args!(tools::GlobArgs);
                match tools::glob(host, &a).await {
                    Err(e) => e,
                    Ok((_, found)) => {
                        let (kept, hidden) = self.readable(rules, found.iter());
                        let mut out: Vec<String> = found
                            .iter()
                            .zip(kept)
                            .filter(|(_, k)| *k)
                            .map(|(p, _)| p.display().to_string())
                            .collect();
                        let total = out.len();
                        let mut text = if total == 0 {
                            "No files found".to_string()
                        } else {
                            out.truncate(tools::GLOB_MAX);
                            out.join("\n")
                        };
                        if total > tools::GLOB_MAX {
                            text.push_str(&format!(
                                "\n[{total} files matched; the first {} are shown: narrow the pattern]",
                                tools::GLOB_MAX
                            ));
                        }
                        if hidden > 0 {
                            text.push_str(&format!(
                                "\n[{hidden} matching file(s) hidden: the permission rules do not let you read them]"
                            ));
                        }
                        ToolOutput::ok(text)
                    }
                }
            }
            tools::GREP => {
                let a = args!(tools::GrepArgs);
                match tools::grep(host, &a).await {
                    Err(e) => e,
                    Ok((_, mut hits)) => {
                        let mut files: Vec<std::path::PathBuf> =
                            hits.lines.iter().map(|(f, _)| f.clone()).collect();
                        files.dedup();
                        let (kept, hidden) = self.readable(rules, files.iter());
                        let denied: std::collections::HashSet<_> = files
                            .iter()
                            .zip(kept)
                            .filter(|(_, k)| !*k)
                            .map(|(f, _)| f.clone())
                            .collect();
                        hits.lines.retain(|(f, _)| !denied.contains(f));
                        let mut text = hits.render(a.head_limit);
                        if hidden > 0 {
                            text.push_str(&format!(
                                "\n[matches in {hidden} file(s) hidden: the permission rules do not let you read them]"
                            ));
                        }
                        ToolOutput::ok(text)
                    }
                }
            }
            tools::SKILL => return self.skill(state, &args!(tools::SkillArgs)),
            tools::TODO => {
                let a = args!(tools::TodoArgs);
                state.todos = a.todos.clone();
                self.sink.emit(AgentEvent::Todos {
                    todos: serde_json::to_value(&a.todos).unwrap_or(Value::Null),
                });
                let lines: Vec<String> = a
                    .todos
                    .iter()
                    .map(|t| {
                        let mark = match t.status {
                            tools::TodoStatus::Completed => "[x]",
                            tools::TodoStatus::InProgress => "[>]",
                            tools::TodoStatus::Pending => "[ ]",
                        };
                        format!("{mark} {}", t.content)
                    })
                    .collect();
                ToolOutput::ok(format!("the plan is saved:\n{}", lines.join("\n")))
            }
            tools::TASK => {
                let a = args!(tools::TaskArgs);
                return Ok(self.task(state, call, &a, cancel, scope).await);
            }
            super::DELEGATE => match &self.config.delegate {
                Some(d) => d.delegate(input, cancel).await,
                None => ToolOutput::error("no peer agents are configured"),
            },
            other => ToolOutput::error(format!("there is no tool `{other}`")),
        })
    }

    /// Which of `paths` the rules let the model read (a Read decision of deny, or of ask by
    /// a rule, hides a file), and how many were hidden.
    fn readable<'a>(
        &self,
        rules: &RuleSet,
        paths: impl Iterator<Item = &'a std::path::PathBuf>,
    ) -> (Vec<bool>, usize) {
        let mut hidden = 0;
        let kept = paths
            .map(|p| {
                let d = permissions::decide(
                    rules,
                    &permissions::ToolCall::Read {
                        path: p.to_string_lossy().into_owned(),
                    },
                    &self.config.context,
                );
                let ok = matches!(
                    &d,
                    Decision::Allow(_) | Decision::Ask(Basis::Default { .. })
                );
                if !ok {
                    hidden += 1;
                }
                ok
            })
            .collect();
        (kept, hidden)
    }

    /// Skill: the body of a trusted skill; its `allowed-tools` apply from now on.
    fn skill(&self, state: &mut RunState, a: &tools::SkillArgs) -> Result<ToolOutput, Step> {
        let Some(skill) = self.config.skills.get(&a.skill) else {
            let names: Vec<&str> = self
                .config
                .skills
                .skills
                .iter()
                .filter(|s| !s.disable_model_invocation)
                .map(|s| s.name.as_str())
                .collect();
            return Ok(ToolOutput::error(format!(
                "there is no skill `{}`; the skills are: {}",
                a.skill,
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if skill.disable_model_invocation {
            return Ok(ToolOutput::error(format!(
                "skill `{}` can only be invoked by a person (disable-model-invocation)",
                skill.name
            )));
        }
        let body = match skill.load_body() {
            Ok(b) => b,
            Err(e) => {
                return Ok(ToolOutput::error(format!(
                    "cannot load skill `{}`: {e}",
                    skill.name
                )));
            }
        };
        if let Some(trust) = &self.config.trust
            && let Err(e) = trust.verify_loaded(&body.file.digest, Some(&body.file.text))
        {
            // The error shows the diff.
            return Err(Step::Stop(RunStatus::Failed, e.to_string()));
        }
        if !state.active_skills.contains(&skill.name) {
            state.active_skills.push(skill.name.clone());
        }
        let mut text = body.text.clone();
        if let Some(args) = &a.args {
            if text.contains("$ARGUMENTS") {
                text = text.replace("$ARGUMENTS", args);
            } else {
                text.push_str(&format!("\n\nARGUMENTS: {args}"));
            }
        }
        let mut out = format!(
            "<skill name=\"{}\" base-directory=\"{}\">\n{}\n</skill>\n",
            skill.name,
            skill
                .file
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            text.trim_end()
        );
        if let Ok(files) = skill.supporting_files()
            && !files.files.is_empty()
        {
            out.push_str("\nSupporting files of this skill (read them with Read when the instructions call for them):\n");
            for f in &files.files {
                out.push_str(&format!("- {}\n", skill.dir.join(&f.path).display()));
            }
        }
        if let Some(allowed) = &skill.allowed_tools {
            out.push_str(&format!(
                "\nWhile this skill is active these tools are allowed without asking: {}\n",
                allowed.join(", ")
            ));
        }
        Ok(ToolOutput::ok(out))
    }

    /// Task: a sub-agent in this process, with its own conversation and a scoped set of
    /// tools, in the same sandbox. Its model calls count against this run's budget.
    async fn task(
        &self,
        state: &mut RunState,
        call: &ToolCall,
        a: &tools::TaskArgs,
        cancel: &Cancel,
        parent: &Scope,
    ) -> ToolOutput {
        if parent.subagent.is_some() {
            return ToolOutput::error("a sub-agent cannot start sub-agents of its own");
        }
        let kind = a.subagent_type.as_deref().unwrap_or("general-purpose");
        let inherited: Vec<String> = parent
            .tools
            .iter()
            .filter(|t| *t != tools::TASK)
            .cloned()
            .collect();
        let (name, system, tools) = if kind == "general-purpose" {
            (kind.to_string(), parent.system.clone(), inherited)
        } else {
            let Some(sub) = self.config.subagents.get(kind) else {
                let mut names: Vec<&str> = self
                    .config
                    .subagents
                    .agents
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                names.push("general-purpose");
                return ToolOutput::error(format!(
                    "there is no subagent `{kind}`; use one of: {}",
                    names.join(", ")
                ));
            };
            let tools = match &sub.tools {
                None => inherited,
                Some(list) => inherited
                    .into_iter()
                    .filter(|t| list.iter().any(|l| l == t))
                    .collect(),
            };
            let system = format!(
                "{}\n\n# Environment\n\n- Working directory: {}\n- Every tool runs inside warden's sandbox.\n",
                sub.system_prompt.trim(),
                self.config.context.cwd.display()
            );
            (sub.name.clone(), system, tools)
        };
        let remaining = self.config.budget.max_turns.saturating_sub(state.turns);
        self.sink.emit(AgentEvent::SubagentStarted {
            call_id: call.id.clone(),
            name: name.clone(),
            prompt: a.prompt.clone(),
        });
        let scope = Scope {
            subagent: Some(name.clone()),
            system,
            tools,
            persist: false,
            max_turns: remaining,
        };
        let mut sub = RunState::new(
            &format!("{}-{}", state.run_id, call.id),
            &state.model,
            &state.repo,
            &state.working_dir,
            &a.prompt,
        );
        let outcome = Box::pin(self.run_loop(&mut sub, cancel, &scope)).await;
        state.turns += sub.turns;
        state.usage.add(&sub.usage);
        if let Some(price) = self.config.price {
            state.cost_usd = Some(price.cost(&state.usage));
        }
        self.sink.emit(AgentEvent::SubagentFinished {
            call_id: call.id.clone(),
            name: name.clone(),
            status: outcome.status,
            result: outcome.result.clone(),
        });
        match outcome.status {
            RunStatus::Succeeded => ToolOutput::ok(outcome.result),
            status => ToolOutput::error(format!(
                "the sub-agent `{name}` stopped ({}): {}{}",
                status.as_str(),
                outcome.error.unwrap_or_default(),
                if outcome.result.is_empty() {
                    String::new()
                } else {
                    format!("\nIts last words: {}", outcome.result)
                }
            )),
        }
    }
}

fn stop_word(s: &StopReason) -> String {
    match s {
        StopReason::EndTurn => "end_turn".into(),
        StopReason::ToolUse => "tool_use".into(),
        StopReason::MaxTokens => "max_tokens".into(),
        StopReason::StopSequence => "stop_sequence".into(),
        StopReason::ContentFilter => "content_filter".into(),
        StopReason::Other(o) => o.clone(),
    }
}

/// `text` cut to about `max` bytes: its beginning and end, with a note in the middle.
pub fn truncate_middle(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let head_len = max * 4 / 5;
    let tail_len = max - head_len;
    let mut head = text.to_string();
    tools::cut(&mut head, head_len);
    let mut start = text.len() - tail_len;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let dropped = start - head.len();
    (
        format!(
            "{head}\n[... {dropped} bytes cut here; the whole output is in the run's transcript ...]\n{}",
            &text[start..]
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_its_beginning_and_end() {
        let text = format!("{}{}", "a".repeat(100), "b".repeat(100));
        let (cut, was_cut) = truncate_middle(&text, 50);
        assert!(was_cut);
        assert!(cut.starts_with(&"a".repeat(40)));
        assert!(cut.ends_with(&"b".repeat(10)));
        assert!(cut.contains("150 bytes cut"));
        assert_eq!(truncate_middle("short", 50), ("short".to_string(), false));
        // Never splits a character.
        let (cut, _) = truncate_middle(&"é".repeat(100), 51);
        assert!(cut.contains("cut here"));
    }
}
