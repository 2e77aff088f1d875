//! A [`ToolHost`] for tests of the loop itself: commands run as plain child processes in a
//! directory, with no isolation at all. Never use it for anything but tests: the sandbox is
//! what makes tool calls safe.

use std::path::{Path, PathBuf};
use std::time::Instant;

use warden_sandbox::{DriverError, ExecSession, StreamItem};
use warden_sandboxd::proto::{ExecEvent, ExecRequest, ExecResult};

use super::host::ToolHost;

/// Runs everything directly in `dir` (tests only).
#[derive(Debug, Clone)]
pub struct DirectHost {
    pub dir: PathBuf,
}

fn io_err(e: std::io::Error) -> DriverError {
    DriverError::Internal(e.to_string())
}

#[async_trait::async_trait]
impl ToolHost for DirectHost {
    fn workspace(&self) -> &Path {
        &self.dir
    }

    async fn exec(&self, request: ExecRequest) -> Result<ExecResult, DriverError> {
        let argv = request.command.argv();
        let start = Instant::now();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.dir)
            .envs(&request.env)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let fut = cmd.output();
        let out = match request.timeout_ms {
            Some(ms) => match tokio::time::timeout(std::time::Duration::from_millis(ms), fut).await
            {
                Ok(r) => r.map_err(io_err)?,
                Err(_) => {
                    return Ok(ExecResult {
                        stdout: String::new(),
                        stderr: String::new(),
                        exit_code: 124,
                        timed_out: true,
                        signal: None,
                        duration_ms: start.elapsed().as_secs_f64() * 1000.0,
                        truncated: false,
                    });
                }
            },
            None => fut.await.map_err(io_err)?,
        };
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            exit_code: out.status.code().unwrap_or(128),
            timed_out: false,
            signal: None,
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            truncated: false,
        })
    }

    async fn exec_stream(&self, request: ExecRequest) -> Result<ExecSession, DriverError> {
        let (stdin, _rx) = tokio::sync::mpsc::channel(1);
        let (tx, output) = tokio::sync::mpsc::channel(16);
        let result = self.exec(request).await?;
        tokio::spawn(async move {
            let _ = tx
                .send(StreamItem::Event(ExecEvent::Started { pid: 0 }))
                .await;
            let _ = tx.send(StreamItem::Stdout(result.stdout.into())).await;
            let _ = tx.send(StreamItem::Stderr(result.stderr.into())).await;
            let _ = tx
                .send(StreamItem::Event(ExecEvent::Exit {
                    exit_code: result.exit_code,
                    timed_out: result.timed_out,
                    signal: None,
                    duration_ms: result.duration_ms,
                }))
                .await;
        });
        Ok(ExecSession { stdin, output })
    }

    async fn read_file(&self, rel: &str, max: usize) -> Result<(Vec<u8>, bool), DriverError> {
        match std::fs::read(self.dir.join(rel)) {
            Ok(mut b) => {
                let more = b.len() > max;
                b.truncate(max);
                Ok((b, more))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DriverError::NotFound {
                kind: "path",
                name: rel.to_string(),
            }),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn write_file(&self, rel: &str, data: Vec<u8>) -> Result<(), DriverError> {
        let path = self.dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(io_err)?;
        }
        std::fs::write(path, data).map_err(io_err)
    }
}
