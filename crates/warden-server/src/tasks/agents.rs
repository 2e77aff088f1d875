//! The agents a task can name: warden's own loop (any model; the model calls leave from the
//! server, every tool call runs in the task's sandbox), and Claude Code or Codex run headless
//! in the sandbox with their model calls through the template's credential route.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use warden_agent::model::{ModelClient, ModelConfig, ModelSpec, Usage};
use warden_agent::permissions::{Context, DefaultPolicy};
use warden_agent::run::external::{ExternalAgent, ExternalOptions, run_external};
use warden_agent::run::{
    Agent, AgentConfig, AgentEvent, ApprovalBox, Approver, Budget, DriverHost, EventSink,
    OnTimeout, PrepareOptions, Price, RunDir, RunOutcome, RunState, RunStatus, prepare,
    system_prompt, tools,
};
use warden_agent::trust::MemoryTrustStore;
use warden_sandboxd::proto::{Command, ExecRequest};

use super::model::AgentKind;
use super::runner::{AgentRun, TaskAgent};

/// The agents of `warden serve`.
#[derive(Debug, Clone)]
pub struct BuiltinAgents {
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Model calls per task.
    pub max_turns: u32,
    /// How long a tool call waits for a person's approval before it is denied.
    pub approval_timeout: Duration,
    /// Variables read before the process environment (model keys and base URLs), for
    /// callers that embed the server.
    pub env: std::collections::BTreeMap<String, String>,
    /// Peer agents warden's agent may delegate sub-tasks to (the `Delegate` tool).
    pub delegate: Option<Arc<dyn warden_agent::run::Delegate>>,
}

impl BuiltinAgents {
    pub fn new(data_dir: impl Into<PathBuf>) -> BuiltinAgents {
        BuiltinAgents {
            data_dir: data_dir.into(),
            max_turns: 100,
            approval_timeout: Duration::from_secs(3600),
            env: Default::default(),
            delegate: None,
        }
    }
}

fn failed(error: impl Into<String>) -> RunOutcome {
    RunOutcome {
        status: RunStatus::Failed,
        result: String::new(),
        error: Some(error.into()),
        turns: 0,
        usage: Usage::default(),
        cost_usd: None,
    }
}

#[async_trait]
impl TaskAgent for BuiltinAgents {
    async fn run(&self, run: AgentRun) -> RunOutcome {
        match run.task.spec.agent {
            AgentKind::Warden => self.run_warden(run).await,
            AgentKind::ClaudeCode => self.run_external(run, ExternalAgent::ClaudeCode).await,
            AgentKind::Codex => self.run_external(run, ExternalAgent::Codex).await,
        }
    }
}

impl BuiltinAgents {
    fn sink(&self, run: &AgentRun, dir: &RunDir) -> Result<EventSink, String> {
        let events = run.events.clone();
        EventSink::new(
            &run.task.id,
            Some(&dir.transcript_path()),
            None,
            Some(Box::new(move |e: &AgentEvent| events(e.clone()))),
        )
        .map_err(|e| format!("cannot open the run's transcript: {e}"))
    }

    async fn run_warden(&self, run: AgentRun) -> RunOutcome {
        let task = &run.task;
        let Some(model_value) = task.spec.model.clone() else {
            return failed(format!(
                "no model: give `model` in the task, or start warden serve with --model (forms: {})",
                warden_agent::model::ACCEPTED_FORMS
            ));
        };
        let env = |k: &str| self.env.get(k).cloned().or_else(|| std::env::var(k).ok());
        let spec = match ModelSpec::parse(&model_value) {
            Ok(s) => s,
            Err(e) => return failed(format!("model: {e}")),
        };
        let model_name = format!("{}/{}", spec.provider.as_str(), spec.model);
        let model = match ModelConfig::for_spec(spec, env).and_then(ModelClient::new) {
            Ok(m) => m,
            Err(e) => return failed(format!("model: {e}")),
        };
        let price = env("WARDEN_MODEL_PRICE")
            .and_then(|p| Price::parse(&p).ok())
            .or_else(|| Price::known(&model_value));

        // The checkout is read where the local driver keeps it: the same path inside the
        // sandbox and on this machine.
        let root = PathBuf::from(&run.checkout);
        if !root.is_dir() {
            return failed(format!(
                "the warden agent reads the repository's instructions from this machine, and {} is not here: use the local driver, or agent claude-code or codex",
                run.checkout
            ));
        }
        // Each task reads a fresh clone whose path is new, so pins by path would never match
        // a later task: the instructions are hashed into the run's trust report (its
        // transcript) but not pinned across tasks. The submitter, who holds the API token,
        // chose the repository. Pinning by repository URL is future work.
        let trust_store = MemoryTrustStore::default();
        let prepared = match prepare(&PrepareOptions {
            repo: Some(&root),
            cwd: &root,
            trust_store: &trust_store,
            signatures: Default::default(),
        }) {
            Ok(p) => p,
            Err(e) => return failed(format!("the repository's instructions: {e}")),
        };
        let dir = match RunDir::create(run.run_dir.parent().unwrap_or(&run.run_dir), &task.id) {
            Ok(d) => d,
            Err(e) => return failed(format!("cannot create the run's directory: {e}")),
        };
        let sink = match self.sink(&run, &dir) {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let mut state = RunState::new(&task.id, &model_value, &root, &root, &task.spec.task);
        sink.emit(AgentEvent::RunStarted {
            run_id: task.id.clone(),
            agent: "warden".into(),
            model: model_name.clone(),
            repo: root.display().to_string(),
            prompt: task.spec.task.clone(),
        });
        for w in &prepared.warnings {
            sink.emit(AgentEvent::Warning { message: w.clone() });
        }
        let approvals = ApprovalBox::new(&dir.dir);
        let approver: Arc<dyn Approver> = Arc::new(approvals.clone());
        let home = PathBuf::from("/nonexistent");
        let mut context = Context::new(&root, &home);
        context.cwd = root.clone();
        // Unattended: what no rule names is allowed (the sandbox is the boundary); the
        // repository's deny and ask rules still hold.
        context.default = DefaultPolicy::AllowAll;
        let config = AgentConfig {
            model,
            model_name,
            price,
            system: system_prompt(&prepared, &root, &root),
            rules: prepared.rules.clone(),
            context,
            skills: prepared.skills.clone(),
            subagents: prepared.subagents.clone(),
            trust: Some(prepared.trust.clone()),
            budget: Budget {
                max_turns: self.max_turns,
                max_tokens: None,
                max_cost_usd: None,
            },
            max_tool_output: warden_agent::run::DEFAULT_MAX_TOOL_OUTPUT,
            approval_timeout: self.approval_timeout,
            on_timeout: OnTimeout::Deny,
            tools: tools::ALL_TOOLS
                .iter()
                .copied()
                .chain(self.delegate.as_ref().map(|_| warden_agent::run::DELEGATE))
                .map(str::to_string)
                .collect(),
            max_tokens_per_call: 8192,
            stream: true,
            delegate: self.delegate.clone(),
        };
        let agent = Agent {
            config: Arc::new(config),
            host: Arc::new(DriverHost {
                driver: run.driver.clone(),
                sandbox: run.sandbox.clone(),
                workspace: root.clone(),
            }),
            approver,
            approvals: Some(approvals),
            sink,
            run_dir: Some(dir),
        };
        agent.run(&mut state, &run.cancel).await
    }

    async fn run_external(&self, run: AgentRun, agent: ExternalAgent) -> RunOutcome {
        let (route, url_var) = match agent {
            ExternalAgent::ClaudeCode => ("anthropic", "ANTHROPIC_BASE_URL"),
            _ => ("openai", "OPENAI_BASE_URL"),
        };
        // The route's address as the sandbox sees it; the template must define the route.
        let probe = run
            .driver
            .exec(
                &run.sandbox,
                ExecRequest::new(Command::Argv(vec!["printenv".into(), url_var.into()])),
            )
            .await;
        let base_url = match probe {
            Ok(r) if r.exit_code == 0 && !r.stdout.trim().is_empty() => r.stdout.trim().to_string(),
            _ => {
                return failed(format!(
                    "agent {}: template `{}` has no `{route}` credential route (its sandboxes get no {url_var}); add [routes.{route}] with a credential to the template's policy",
                    agent.as_str(),
                    run.task.spec.template
                ));
            }
        };
        let dir = match RunDir::create(run.run_dir.parent().unwrap_or(&run.run_dir), &run.task.id) {
            Ok(d) => d,
            Err(e) => return failed(format!("cannot create the run's directory: {e}")),
        };
        let sink = match self.sink(&run, &dir) {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let mut opts = ExternalOptions::new(run.task.spec.task.clone(), base_url);
        opts.run_id = run.task.id.clone();
        opts.model = run
            .task
            .spec
            .model
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m).to_string());
        opts.max_turns = Some(self.max_turns);
        opts.timeout = Some(Duration::from_secs(run.task.spec.timeout_secs));
        opts.cwd = Some(run.checkout.clone());
        if let Some(tp) = &run.traceparent {
            opts.env.insert("TRACEPARENT".into(), tp.clone());
        }
        let host = DriverHost {
            driver: run.driver.clone(),
            sandbox: run.sandbox.clone(),
            workspace: PathBuf::from(&run.checkout),
        };
        run_external(agent, &host, &sink, &opts, run.cancel.cancelled()).await
    }
}
