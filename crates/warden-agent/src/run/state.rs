//! A run's persisted state (`<data>/agent-runs/<id>/state.json`), written after every model
//! call and tool result and before waiting for an approval, so that a run that stops (a
//! crash, a reboot, Ctrl-C while waiting) is resumed where it was with `warden agent
//! --resume ID`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::approval::write_atomic;
use super::tools::Todo;
use crate::model::{Message, ModelResponse, ToolResult, Usage};

pub const STATE_VERSION: u32 = 1;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    WaitingApproval,
    Finished,
}

/// An assistant turn whose tool calls are being executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub response: ModelResponse,
    /// The results so far, in call order.
    pub results: Vec<ToolResult>,
}

/// Everything needed to go on with a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub version: u32,
    pub run_id: String,
    pub created_at: String,
    pub model: String,
    /// The repository root on the host, and the working directory.
    pub repo: PathBuf,
    pub working_dir: PathBuf,
    pub prompt: String,
    /// The conversation, the prompt first.
    pub messages: Vec<Message>,
    pub in_flight: Option<InFlight>,
    pub turns: u32,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub phase: Phase,
    /// Skills loaded so far (their `allowed-tools` apply for the rest of the run).
    pub active_skills: Vec<String>,
    pub todos: Vec<Todo>,
    /// The final outcome, once finished.
    #[serde(default)]
    pub outcome: Option<super::RunOutcome>,
}

impl RunState {
    pub fn new(
        run_id: &str,
        model: &str,
        repo: &Path,
        working_dir: &Path,
        prompt: &str,
    ) -> RunState {
        RunState {
            version: STATE_VERSION,
            run_id: run_id.to_string(),
            created_at: super::approval::rfc3339(std::time::SystemTime::now()),
            model: model.to_string(),
            repo: repo.to_path_buf(),
            working_dir: working_dir.to_path_buf(),
            prompt: prompt.to_string(),
            messages: vec![Message::user(prompt)],
            in_flight: None,
            turns: 0,
            usage: Usage::default(),
            cost_usd: None,
            phase: Phase::Running,
            active_skills: Vec::new(),
            todos: Vec::new(),
            outcome: None,
        }
    }
}

/// A fresh run id: `run-` and 12 hex digits.
pub fn new_run_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the kernel's random source");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("run-{hex}")
}

/// The directory of one run: `state.json`, `transcript.jsonl`, `approvals/`.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    /// `<runs>/<id>`, created (mode 0700).
    pub fn create(runs: &Path, id: &str) -> std::io::Result<RunDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runs.join(id))?;
        Ok(RunDir { dir: runs.join(id) })
    }

    /// An existing run's directory.
    pub fn open(runs: &Path, id: &str) -> std::io::Result<RunDir> {
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let dir = runs.join(id);
        if !valid || !dir.join("state.json").is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no run `{id}` in {}", runs.display()),
            ));
        }
        Ok(RunDir { dir })
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn transcript_path(&self) -> PathBuf {
        self.dir.join("transcript.jsonl")
    }

    pub fn save(&self, state: &RunState) -> std::io::Result<()> {
        write_atomic(
            &self.state_path(),
            &serde_json::to_vec_pretty(state).expect("serializable"),
        )
    }

    pub fn load(&self) -> std::io::Result<RunState> {
        let text = std::fs::read(self.state_path())?;
        let state: RunState = serde_json::from_slice(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", self.state_path().display()),
            )
        })?;
        if state.version != STATE_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: state version {} is not {STATE_VERSION}",
                    self.state_path().display(),
                    state.version
                ),
            ));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_and_a_bad_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_run_id();
        assert!(id.starts_with("run-") && id.len() == 16);
        let rd = RunDir::create(dir.path(), &id).unwrap();
        let s = RunState::new(&id, "anthropic/x", Path::new("/r"), Path::new("/r"), "hi");
        rd.save(&s).unwrap();
        assert_eq!(RunDir::open(dir.path(), &id).unwrap().load().unwrap(), s);
        assert!(RunDir::open(dir.path(), "../etc").is_err());
        assert!(RunDir::open(dir.path(), "run-nope").is_err());
    }
}
