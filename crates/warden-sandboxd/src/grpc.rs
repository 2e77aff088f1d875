//! gRPC `process.v1.ProcessService`, as the `k8s-agent-sandbox` SDK calls it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::exec::{self, Event, Input, Spec};
use crate::process_v1::process_service_server::{ProcessService, ProcessServiceServer};
use crate::process_v1::{
    ExecuteRequest, ExecuteResponse, ExitEvent, InitEvent, ProcessConfig, ResizeTtyRequest,
    ResizeTtyResponse, SendSignalRequest, SendSignalResponse, Signal, StartRequest, StartResponse,
    WriteStdinRequest, WriteStdinResponse, start_response, write_stdin_request,
};
use crate::state::Sandboxd;

/// The service over the shared state.
#[derive(Debug, Clone)]
pub struct Process {
    state: Arc<Sandboxd>,
}

/// The tonic service to mount.
pub fn service(state: Arc<Sandboxd>) -> ProcessServiceServer<Process> {
    ProcessServiceServer::new(Process { state })
}

/// Parses a `grpc-timeout` header value: digits then one of `H M S m u n`.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn deadline<T>(req: &Request<T>) -> Option<Duration> {
    req.metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

fn spec_of(config: Option<ProcessConfig>) -> Result<Spec, Status> {
    let Some(c) = config else {
        return Err(Status::invalid_argument("config: is required"));
    };
    Ok(Spec {
        argv: c.command,
        env: c.env_vars.into_iter().collect(),
        cwd: c.cwd,
        ..Spec::default()
    })
}

fn status(e: ApiError) -> Status {
    e.to_status()
}

type StartStream = Pin<Box<dyn Stream<Item = Result<StartResponse, Status>> + Send + 'static>>;

/// Removes a started process from the table when its stream ends: only its own entry, so
/// that a newer process that was given the same pid keeps its entry.
struct Registered {
    state: Arc<Sandboxd>,
    pid: i32,
    input: tokio::sync::mpsc::Sender<Input>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut t) = self.state.processes.lock()
            && t.get(&self.pid)
                .is_some_and(|s| s.same_channel(&self.input))
        {
            t.remove(&self.pid);
        }
    }
}

impl Process {
    fn input_of(&self, pid: i32) -> Result<tokio::sync::mpsc::Sender<Input>, Status> {
        self.state
            .processes
            .lock()
            .map_err(|_| Status::internal("process table poisoned"))?
            .get(&pid)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "process_id: {pid} is not a running process started with Start"
                ))
            })
    }
}

#[tonic::async_trait]
impl ProcessService for Process {
    type StartStream = StartStream;

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<Self::StartStream>, Status> {
        let timeout = deadline(&request);
        let req = request.into_inner();
        let mut spec = spec_of(req.config)?;
        spec.timeout = timeout;
        if let Some(p) = req.pty {
            let dim = |v: u32, name: &str| {
                u16::try_from(v).map_err(|_| {
                    Status::invalid_argument(format!("pty.{name}: {v} is more than 65535"))
                })
            };
            spec.tty = Some((dim(p.cols, "cols")?.max(1), dim(p.rows, "rows")?.max(1)));
        }
        let session = exec::start(&self.state, spec).map_err(status)?;
        let pid = session.pid as i32;
        let reg = if pid > 0 {
            if let Ok(mut t) = self.state.processes.lock() {
                t.insert(pid, session.input.clone());
            }
            Some(Registered {
                state: self.state.clone(),
                pid,
                input: session.input.clone(),
            })
        } else {
            None
        };
        let init = StartResponse {
            event: Some(start_response::Event::Init(InitEvent { process_id: pid })),
        };
        let stream = futures_util::stream::unfold(
            (Some(init), Some(session), reg),
            |(init, session, reg)| async move {
                if let Some(i) = init {
                    return Some((Ok(i), (None, session, reg)));
                }
                let mut session = session?;
                let event = match session.events.recv().await? {
                    Event::Stdout(b) => start_response::Event::Stdout(b.to_vec()),
                    Event::Stderr(b) => start_response::Event::Stderr(b.to_vec()),
                    Event::Exit(e) => {
                        let ev = start_response::Event::Exit(ExitEvent {
                            exit_code: e.exit_code,
                        });
                        return Some((Ok(StartResponse { event: Some(ev) }), (None, None, reg)));
                    }
                };
                Some((
                    Ok(StartResponse { event: Some(event) }),
                    (None, Some(session), reg),
                ))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let timeout = deadline(&request);
        let mut spec = spec_of(request.into_inner().config)?;
        spec.timeout = timeout;
        let r = exec::run(&self.state, spec, None, self.state.output_cap)
            .await
            .map_err(status)?;
        let mut stderr = r.stderr;
        if r.exit.timed_out {
            stderr.extend_from_slice(b"\ncommand timed out: the call's deadline passed\n");
        }
        Ok(Response::new(ExecuteResponse {
            exit_code: r.exit.exit_code,
            stdout: r.stdout,
            stderr,
        }))
    }

    async fn write_stdin(
        &self,
        request: Request<WriteStdinRequest>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        let req = request.into_inner();
        let input = self.input_of(req.process_id)?;
        let msg = match req.payload {
            Some(write_stdin_request::Payload::Input(b)) => Input::Stdin(b.into()),
            Some(write_stdin_request::Payload::Eof(())) => Input::Eof,
            None => {
                return Err(Status::invalid_argument(
                    "payload: one of `input` or `eof` is required",
                ));
            }
        };
        input
            .send(msg)
            .await
            .map_err(|_| Status::not_found("process_id: the process has exited"))?;
        Ok(Response::new(WriteStdinResponse {}))
    }

    async fn send_signal(
        &self,
        request: Request<SendSignalRequest>,
    ) -> Result<Response<SendSignalResponse>, Status> {
        let req = request.into_inner();
        let sig = match Signal::try_from(req.signal) {
            Ok(Signal::Sigint) => libc::SIGINT,
            Ok(Signal::Sigkill) => libc::SIGKILL,
            Ok(Signal::Sigterm) => libc::SIGTERM,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "signal: {} is not one of SIGNAL_SIGINT, SIGNAL_SIGKILL, SIGNAL_SIGTERM",
                    req.signal
                )));
            }
        };
        let input = self.input_of(req.process_id)?;
        input
            .send(Input::Signal(sig))
            .await
            .map_err(|_| Status::not_found("process_id: the process has exited"))?;
        Ok(Response::new(SendSignalResponse {}))
    }

    async fn resize_tty(
        &self,
        request: Request<ResizeTtyRequest>,
    ) -> Result<Response<ResizeTtyResponse>, Status> {
        let req = request.into_inner();
        let (Ok(cols), Ok(rows)) = (u16::try_from(req.cols), u16::try_from(req.rows)) else {
            return Err(Status::invalid_argument(
                "cols, rows: must be between 1 and 65535",
            ));
        };
        if cols == 0 || rows == 0 {
            return Err(Status::invalid_argument(
                "cols, rows: must be between 1 and 65535",
            ));
        }
        let input = self.input_of(req.process_id)?;
        input
            .send(Input::Resize { cols, rows })
            .await
            .map_err(|_| Status::not_found("process_id: the process has exited"))?;
        Ok(Response::new(ResizeTtyResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        for bad in ["", "S", "5", "5x", "-5S", "1234567890S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
