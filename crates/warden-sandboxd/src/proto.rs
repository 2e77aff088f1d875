//! The JSON wire types of sandboxd's warden extension (`/v1/exec`, `/v1/exec/stream`,
//! `/v1/exec/ws`, directory listings), shared by the server, its client (the local driver)
//! and `warden serve`'s API, which passes them through unchanged.
//!
//! The upstream protocols (legacy REST on :8888, sandboxd REST and gRPC) have their own
//! shapes, fixed by the `k8s-agent-sandbox` SDK; these types are warden's superset for
//! what those protocols cannot say: argv or shell commands, stdin, timeouts in
//! milliseconds, streaming with a terminal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What to run: an argv (run as is, no shell) or a shell string (`/bin/sh -c`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

impl Command {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Argv(v) => v.clone(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// `POST /v1/exec`, `POST /v1/exec/stream`, and the first message of `/v1/exec/ws`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub command: Command,
    /// Variables set for this command on top of the sandbox's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory: relative to the workspace, or absolute inside the sandbox.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command's whole process group after this long (exit code 124, `timed_out`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes written to the command's stdin, then closed (UTF-8; buffered exec only).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Give the command a pseudo-terminal (streaming over WebSocket only).
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size when `tty`.
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
}

impl ExecRequest {
    /// A request for `command` with everything else at its default.
    pub fn new(command: Command) -> ExecRequest {
        ExecRequest {
            command,
            env: BTreeMap::new(),
            cwd: None,
            timeout_ms: None,
            stdin: None,
            tty: false,
            cols: None,
            rows: None,
        }
    }
}

/// The result of a buffered exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; 124 on timeout; 128 + N when killed by signal N; 127 when the program
    /// does not exist; 126 when it cannot be executed.
    pub exit_code: i32,
    pub timed_out: bool,
    /// The signal that killed the command, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub duration_ms: f64,
    /// Output past the per-stream limit was dropped.
    #[serde(default)]
    pub truncated: bool,
}

/// One event of a streaming exec: an SSE event (its `event:` name is the `type`) or a
/// WebSocket text message. On the WebSocket, output travels as binary messages instead
/// (first byte 1 = stdout, 2 = stderr, then the bytes) and only `started` and `exit` are
/// text messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    Started {
        pid: u32,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        exit_code: i32,
        timed_out: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        duration_ms: f64,
    },
    /// The exec could not start or broke off; the stream ends after it.
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// A client's control message on `/v1/exec/ws` (text); stdin travels as binary messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecControl {
    Resize {
        cols: u16,
        rows: u16,
    },
    Signal {
        signal: i32,
    },
    /// Close the command's stdin.
    Eof,
}

/// The WebSocket binary message channel byte for stdout.
pub const WS_STDOUT: u8 = 1;
/// The WebSocket binary message channel byte for stderr.
pub const WS_STDERR: u8 = 2;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
    Other,
}

/// One entry of a directory listing (`GET /v1/files/{dir}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// RFC 3339, UTC.
    pub modified_at: String,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
}

/// `GET /v1/files/{dir}` on a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub uptime_seconds: f64,
}

/// sandboxd's error codes (the upstream set, plus RESOURCE_EXHAUSTED for quotas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    PermissionDenied,
    NotFound,
    InvalidArgument,
    Conflict,
    ResourceExhausted,
    Internal,
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status sandboxd answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Conflict => 409,
            ErrorCode::ResourceExhausted => 413,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// sandboxd's error body: `{"code": "NOT_FOUND", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_argv_or_shell() {
        let r: ExecRequest = serde_json::from_str(r#"{"command": ["ls", "-l"]}"#).unwrap();
        assert_eq!(r.command.argv(), ["ls", "-l"]);
        let r: ExecRequest = serde_json::from_str(r#"{"command": "echo hi | wc -c"}"#).unwrap();
        assert_eq!(r.command.argv(), ["/bin/sh", "-c", "echo hi | wc -c"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<ExecRequest>(r#"{"command": "x", "timeout": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `timeout`"), "{e}");
    }

    #[test]
    fn events_are_tagged() {
        let s = serde_json::to_string(&ExecEvent::Stdout { data: "a".into() }).unwrap();
        assert_eq!(s, r#"{"type":"stdout","data":"a"}"#);
        let c: ExecControl =
            serde_json::from_str(r#"{"type":"resize","cols":80,"rows":24}"#).unwrap();
        assert_eq!(c, ExecControl::Resize { cols: 80, rows: 24 });
        let e = serde_json::to_string(&ErrorBody {
            code: ErrorCode::NotFound,
            message: "m".into(),
        })
        .unwrap();
        assert_eq!(e, r#"{"code":"NOT_FOUND","message":"m"}"#);
    }
}
