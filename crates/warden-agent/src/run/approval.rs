//! Approvals: what happens to a call the rules answer with `ask`.
//!
//! The loop persists the run, publishes a [`PendingApproval`] and waits for an [`Answer`]
//! from its [`Approver`] until the deadline; no answer by then is a denial (the default) or
//! cancels the run. The answer's reason goes back to the model with the result.
//!
//! [`ApprovalBox`] keeps pending approvals as files in the run's directory
//! (`<run>/approvals/<call>.pending.json`) so that another process answers them: `warden agent
//! approve|deny`, or `warden serve`'s API. An answer is written as
//! `<call>.answer.json` (atomically: a temporary file renamed); the waiting run picks it up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A call waiting for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    pub run_id: String,
    pub call_id: String,
    pub tool: String,
    /// The call in rule syntax: `Bash(git push origin main)`.
    pub call: String,
    pub input: Value,
    /// The rule that asked, or why no rule allowed it.
    pub basis: String,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339: when it is answered for the person.
    pub deadline: String,
}

/// A person's (or the deadline's) answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub approved: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// `terminal`, `cli`, `api`, `timeout`, `script`.
    pub by: String,
}

/// What an unanswered ask comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The call is denied and the model told so (the default).
    #[default]
    Deny,
    /// The whole run is cancelled.
    Cancel,
}

/// Who answers asks.
#[async_trait::async_trait]
pub trait Approver: Send + Sync + std::fmt::Debug {
    /// Waits for an answer to `pending`. The loop stops waiting at the deadline. `None`
    /// means this approver will never answer (the loop then waits for the deadline).
    async fn ask(&self, pending: &PendingApproval) -> Option<Answer>;
}

/// Denies every ask at once (runs that must not wait).
#[derive(Debug, Clone, Default)]
pub struct DenyAll;

#[async_trait::async_trait]
impl Approver for DenyAll {
    async fn ask(&self, _: &PendingApproval) -> Option<Answer> {
        Some(Answer {
            approved: false,
            reason: Some("this run takes no approvals (--approvals deny)".into()),
            by: "policy".into(),
        })
    }
}

/// Pending approvals as files, answered by other processes.
#[derive(Debug, Clone)]
pub struct ApprovalBox {
    dir: PathBuf,
    poll: Duration,
}

/// Why an answer could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(
        "no approval `{call}` is pending for run `{run}` (it was answered, timed out, or never asked)"
    )]
    NotPending { run: String, call: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !s.starts_with('.')
}

impl ApprovalBox {
    /// The box of the run whose directory is `run_dir`.
    pub fn new(run_dir: &Path) -> ApprovalBox {
        ApprovalBox {
            dir: run_dir.join("approvals"),
            poll: Duration::from_millis(100),
        }
    }

    fn pending_path(&self, call: &str) -> PathBuf {
        self.dir.join(format!("{}.pending.json", file_safe(call)))
    }
    fn answer_path(&self, call: &str) -> PathBuf {
        self.dir.join(format!("{}.answer.json", file_safe(call)))
    }

    /// Publishes `pending`.
    pub fn publish(&self, pending: &PendingApproval) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        write_atomic(
            &self.pending_path(&pending.call_id),
            &serde_json::to_vec_pretty(pending).expect("serializable"),
        )
    }

    /// Removes a pending approval and its answer (after it was acted on).
    pub fn close(&self, call: &str) {
        let _ = std::fs::remove_file(self.pending_path(call));
        let _ = std::fs::remove_file(self.answer_path(call));
    }

    /// The approvals waiting in this box.
    pub fn pending(&self) -> Vec<PendingApproval> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".pending.json") {
                continue;
            }
            if let Ok(text) = std::fs::read(e.path())
                && let Ok(p) = serde_json::from_slice::<PendingApproval>(&text)
            {
                out.push(p);
            }
        }
        out.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
        out
    }

    /// Answers the pending approval `call`.
    pub fn answer(&self, run: &str, call: &str, answer: &Answer) -> Result<(), AnswerError> {
        if !self.pending_path(call).exists() {
            return Err(AnswerError::NotPending {
                run: run.to_string(),
                call: call.to_string(),
            });
        }
        let path = self.answer_path(call);
        write_atomic(&path, &serde_json::to_vec(answer).expect("serializable"))
            .map_err(|source| AnswerError::Io { path, source })
    }

    /// An answer already written for `call`, if any.
    pub fn take_answer(&self, call: &str) -> Option<Answer> {
        let text = std::fs::read(self.answer_path(call)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[async_trait::async_trait]
impl Approver for ApprovalBox {
    async fn ask(&self, pending: &PendingApproval) -> Option<Answer> {
        loop {
            if let Some(a) = self.take_answer(&pending.call_id) {
                return Some(a);
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// Every pending approval under `runs_dir` (`<data>/agent-runs`), oldest first.
pub fn all_pending(runs_dir: &Path) -> Vec<PendingApproval> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(runs_dir) {
        for e in entries.flatten() {
            out.extend(ApprovalBox::new(&e.path()).pending());
        }
    }
    out.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
    out
}

/// Answers `call` of run `run` under `runs_dir`.
pub fn answer_in(
    runs_dir: &Path,
    run: &str,
    call: &str,
    answer: &Answer,
) -> Result<(), AnswerError> {
    if !valid_id(run) {
        return Err(AnswerError::NotPending {
            run: run.to_string(),
            call: call.to_string(),
        });
    }
    ApprovalBox::new(&runs_dir.join(run)).answer(run, call, answer)
}

/// Call ids come from the model's provider: keep them to characters safe in a file name.
fn file_safe(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// Writes `bytes` to `path` through a temporary file and a rename (mode 0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// RFC 3339 (seconds) of `t`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_written_by_another_process_reaches_the_waiting_run() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path();
        let run_dir = runs.join("run-1");
        let b = ApprovalBox::new(&run_dir);
        let pending = PendingApproval {
            run_id: "run-1".into(),
            call_id: "toolu_01/x".into(),
            tool: "Bash".into(),
            call: "Bash(git push)".into(),
            input: serde_json::json!({"command": "git push"}),
            basis: "Bash(git push *)".into(),
            requested_at: rfc3339(SystemTime::now()),
            deadline: rfc3339(SystemTime::now()),
        };
        // Nothing is pending yet: an answer is refused.
        let a = Answer {
            approved: true,
            reason: Some("ok".into()),
            by: "cli".into(),
        };
        assert!(matches!(
            answer_in(runs, "run-1", "toolu_01/x", &a),
            Err(AnswerError::NotPending { .. })
        ));
        b.publish(&pending).unwrap();
        assert_eq!(all_pending(runs), vec![pending.clone()]);
        let waiter = {
            let b = b.clone();
            let p = pending.clone();
            tokio::spawn(async move { b.ask(&p).await })
        };
        answer_in(runs, "run-1", "toolu_01/x", &a).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(a));
        b.close("toolu_01/x");
        assert!(all_pending(runs).is_empty());
        // A run id that could climb out of the runs directory is refused.
        assert!(
            answer_in(
                runs,
                "../x",
                "c",
                &Answer {
                    approved: true,
                    reason: None,
                    by: "cli".into()
                }
            )
            .is_err()
        );
    }
}
