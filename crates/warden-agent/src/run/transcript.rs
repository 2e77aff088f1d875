//! The JSONL transcript of a run and the sink every event goes through.
//!
//! Each line is one event with the time and run id added:
//! `{"ts":"2026-11-23T10:00:00.123Z","run":"run-...","type":"tool_call",...}`. Lines are
//! written and flushed one at a time, so a run that dies keeps everything before it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::event::AgentEvent;

/// Where events go: the transcript file (every event but text deltas), live watchers (every
/// event), and an optional callback (the CLI's progress display).
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Arc<SinkInner>,
}

type Callback = Box<dyn Fn(&AgentEvent) + Send + Sync>;

#[derive(Default)]
struct SinkInner {
    run_id: String,
    file: Mutex<Option<(PathBuf, File)>>,
    watchers: Option<broadcast::Sender<AgentEvent>>,
    callback: Option<Callback>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("transcript", &self.transcript_path())
            .finish()
    }
}

impl EventSink {
    /// A sink writing the transcript at `path` (appending: a resumed run goes on in the same
    /// file), with an optional live channel and callback.
    pub fn new(
        run_id: &str,
        transcript: Option<&Path>,
        watchers: Option<broadcast::Sender<AgentEvent>>,
        callback: Option<Callback>,
    ) -> io::Result<EventSink> {
        let file = match transcript {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("transcript {}: {e}", path.display()))
                    })?;
                Some((path.to_path_buf(), file))
            }
            None => None,
        };
        Ok(EventSink {
            inner: Arc::new(SinkInner {
                run_id: run_id.to_string(),
                file: Mutex::new(file),
                watchers,
                callback,
            }),
        })
    }

    /// A sink that keeps nothing (tests, sub-calls).
    pub fn discard() -> EventSink {
        EventSink::default()
    }

    pub fn transcript_path(&self) -> Option<PathBuf> {
        let file = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        file.as_ref().map(|(p, _)| p.clone())
    }

    /// Reports `event`. A transcript that can no longer be written is logged once and
    /// dropped; the run goes on (its events still reach watchers).
    pub fn emit(&self, event: AgentEvent) {
        if !matches!(event, AgentEvent::TextDelta { .. }) {
            let mut file = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((path, f)) = file.as_mut() {
                let line = transcript_line(&self.inner.run_id, SystemTime::now(), &event);
                if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
                    tracing::error!(
                        "cannot write the transcript {}: {e}; later events are not kept",
                        path.display()
                    );
                    *file = None;
                }
            }
        }
        if let Some(cb) = &self.inner.callback {
            cb(&event);
        }
        if let Some(tx) = &self.inner.watchers {
            let _ = tx.send(event);
        }
    }
}

/// One transcript line (with its newline).
pub fn transcript_line(run: &str, at: SystemTime, event: &AgentEvent) -> String {
    let mut obj = Map::new();
    obj.insert(
        "ts".into(),
        Value::String(humantime::format_rfc3339_millis(at).to_string()),
    );
    obj.insert("run".into(), Value::String(run.to_string()));
    if let Ok(Value::Object(fields)) = serde_json::to_value(event) {
        obj.extend(fields);
    }
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    line
}

/// Reads a transcript back: each line's event, skipping lines that are not events (a line
/// cut short by a crash).
pub fn read_transcript(path: &Path) -> io::Result<Vec<AgentEvent>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<AgentEvent>(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_time_run_and_type_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let sink = EventSink::new("run-1", Some(&path), None, None).unwrap();
        sink.emit(AgentEvent::Warning {
            message: "w".into(),
        });
        sink.emit(AgentEvent::TextDelta { text: "x".into() });
        sink.emit(AgentEvent::Todos {
            todos: serde_json::json!([]),
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "text deltas are not kept: {text}");
        assert_eq!(lines[0]["type"], "warning");
        assert_eq!(lines[0]["run"], "run-1");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
        // A line cut short by a crash is skipped when read back.
        std::fs::write(&path, format!("{text}{{\"type\":\"warn")).unwrap();
        let events = read_transcript(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind(), "todos");
    }
}
