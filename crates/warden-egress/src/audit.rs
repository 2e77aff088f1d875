//! Audit events: one record per proxy decision, written as one JSON line. Owns the
//! [`AuditEvent`] shape and the [`AuditSink`] seam with two sinks: [`WriterSink`] (a file,
//! stderr, any `Write`) and [`ChannelSink`] (for tests and in-process consumers).

use std::fmt;
use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::policy::Decision;

/// One decision of the proxy and, for admitted requests, what then happened.
///
/// Byte counts are payload only: request and response bodies for forwarded HTTP, the raw
/// tunnel bytes for CONNECT (client to upstream is `bytes_up`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When the request arrived, RFC 3339 in UTC with milliseconds.
    pub time: String,
    pub sandbox_id: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub verdict: Decision,
    /// The deciding rule, as in [`Verdict::rule`](crate::Verdict::rule).
    pub rule: String,
    /// The status the proxy answered with (200 for an established tunnel).
    pub status: u16,
    /// The upstream address connected to, once one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// What went wrong after the decision (resolution, connection, upstream), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Formats a time as the audit log writes it.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Where audit events go. Called once per decision, from the proxy's tasks: keep it quick.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: AuditEvent);
    /// A CONNECT tunnel was established; its event is recorded when it closes.
    fn tunnel_opened(&self) {}
    /// The tunnel of an earlier [`tunnel_opened`](Self::tunnel_opened) closed.
    fn tunnel_closed(&self) {}
}

/// Writes each event as one JSON line to a writer (a file, `std::io::stderr()`, a buffer).
/// A write error is reported through `tracing` and the event is dropped: auditing must not
/// take the proxy down.
pub struct WriterSink<W> {
    writer: Mutex<W>,
}

impl<W: Write + Send + 'static> WriterSink<W> {
    pub fn new(writer: W) -> Self {
        WriterSink {
            writer: Mutex::new(writer),
        }
    }

    /// The writer back, for example to read what a test buffer received.
    pub fn into_inner(self) -> W {
        self.writer.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W> fmt::Debug for WriterSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> AuditSink for WriterSink<W> {
    fn record(&self, event: AuditEvent) {
        let mut line = match serde_json::to_vec(&event) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "could not serialise an audit event");
                return;
            }
        };
        line.push(b'\n');
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writer.write_all(&line).and_then(|()| writer.flush()) {
            tracing::warn!(error = %e, "could not write an audit event");
        }
    }
}

/// Sends each event down an unbounded channel. Events for a dropped receiver are discarded;
/// a receiver that stops reading lets them pile up, so read it.
#[derive(Debug, Clone)]
pub struct ChannelSink {
    sender: mpsc::UnboundedSender<AuditEvent>,
}

impl ChannelSink {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<AuditEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (ChannelSink { sender }, receiver)
    }
}

impl AuditSink for ChannelSink {
    fn record(&self, event: AuditEvent) {
        let _ = self.sender.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn event() -> AuditEvent {
        AuditEvent {
            time: rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            sandbox_id: "sb-1".into(),
            method: "CONNECT".into(),
            host: "example.com".into(),
            port: 443,
            verdict: Decision::Allowed,
            rule: "allow:example.com".into(),
            status: 200,
            address: Some("93.184.215.14:443".into()),
            bytes_up: 10,
            bytes_down: 20,
            duration_ms: 5,
            error: None,
        }
    }

    #[test]
    fn writer_sink_writes_one_json_line_per_event() {
        let sink = WriterSink::new(Vec::new());
        sink.record(event());
        let mut denied = event();
        denied.verdict = Decision::Denied;
        denied.address = None;
        denied.error = Some("refused".into());
        sink.record(denied);
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(first["verdict"], "allowed");
        assert_eq!(first["sandbox_id"], "sb-1");
        assert_eq!(first["bytes_down"], 20);
        assert!(first.get("error").is_none());
        let second: AuditEvent = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second.verdict, Decision::Denied);
        assert_eq!(second.error.as_deref(), Some("refused"));
    }

    #[test]
    fn channel_sink_delivers_events() {
        let (sink, mut receiver) = ChannelSink::new();
        sink.record(event());
        assert_eq!(receiver.try_recv().unwrap(), event());
        drop(receiver);
        sink.record(event()); // a gone receiver is not an error
    }
}
