//! Starting commands and relaying them: every child confined (see
//! [`warden_jail::spawn`]), leader of its own process group, killed with its group on
//! timeout, when the client goes away, and when it exits (so nothing it left running keeps
//! its pipes open), and always reaped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::state::Sandboxd;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// A pseudo-terminal of this size (cols, rows) instead of pipes.
    pub tty: Option<(u16, u16)>,
    pub timeout: Option<Duration>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: f64,
}

/// One event of a running command, in order: output, then exactly one `Exit`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(Exit),
}

/// What a client sends a running command.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin(Bytes),
    Eof,
    Signal(i32),
    Resize { cols: u16, rows: u16 },
}

/// A started command: its pid, its events, and where to send its input. Dropping `events`
/// kills the command's process group.
#[derive(Debug)]
pub struct Session {
    pub pid: u32,
    pub events: mpsc::Receiver<Event>,
    pub input: mpsc::Sender<Input>,
}

/// The exit code a spawn error stands for, if it is the program's fault (127: not found,
/// 126: not executable), as a shell would report it.
fn spawn_failure_code(e: &std::io::Error) -> Option<i32> {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Some(127),
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) | Some(libc::EPERM) => {
            Some(126)
        }
        _ => None,
    }
}

/// Checks a request's environment: names non-empty, without `=` or NUL.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::invalid(format!(
                "env: `{k}` is not a valid variable name (non-empty, no `=` or NUL)"
            )));
        }
        if v.contains('\0') {
            return Err(ApiError::invalid(format!(
                "env: the value of `{k}` contains a NUL byte"
            )));
        }
    }
    Ok(())
}

/// Starts `spec`. A program that cannot be found or executed is not an error: the session
/// reports its output on stderr and exit code 127 or 126.
pub fn start(state: &Arc<Sandboxd>, spec: Spec) -> Result<Session, ApiError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(ApiError::invalid(
            "command: is empty; give an argv such as [\"ls\", \"-l\"] or a shell string",
        ));
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid(
            "command: an argument contains a NUL byte",
        ));
    }
    check_env(&spec.env)?;
    let cwd_field = |mut e: ApiError| {
        e.message = e.message.replacen("path:", "cwd:", 1);
        e
    };
    let cwd_parts = state
        .root
        .parse(spec.cwd.as_deref().unwrap_or(""))
        .map_err(cwd_field)?;
    let cwd_fd = state
        .root
        .open_beneath(&cwd_parts, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .map_err(cwd_field)?;
    let started = Instant::now();

    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..]);
    for (k, v) in &state.child_env {
        cmd.env(k, v);
    }
    cmd.envs(&spec.env);
    // The directory descriptor opened beneath the root: no path is resolved again.
    cmd.current_dir(format!("/proc/self/fd/{}", cwd_fd.as_raw_fd()));
    let mut pty_master: Option<File> = None;
    if let Some((cols, rows)) = spec.tty {
        let ws = nix::pty::Winsize {
            ws_row: rows.max(1),
            ws_col: cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None)
            .map_err(|e| ApiError::internal(format!("tty: cannot open a pseudo-terminal: {e}")))?;
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(|e| ApiError::internal(format!("tty: {e}")))?;
        }
        let flags = fcntl(&pty.master, FcntlArg::F_GETFL)
            .map_err(|e| ApiError::internal(format!("tty: {e}")))?;
        fcntl(
            &pty.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(|e| ApiError::internal(format!("tty: {e}")))?;
        let dup = |fd: &OwnedFd| -> Result<Stdio, ApiError> {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| ApiError::internal(format!("tty: {e}")))
        };
        cmd.stdin(dup(&pty.slave)?)
            .stdout(dup(&pty.slave)?)
            .stderr(dup(&pty.slave)?);
        if !spec.env.contains_key("TERM") {
            cmd.env("TERM", "xterm-256color");
        }
        pty_master = Some(File::from(pty.master));
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    warden_jail::spawn::confine(cmd.as_std_mut(), &state.confinement, spec.tty.is_some());

    let (ev_tx, ev_rx) = mpsc::channel::<Event>(16);
    let (in_tx, in_rx) = mpsc::channel::<Input>(16);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            drop(cmd);
            let Some(code) = spawn_failure_code(&e) else {
                return Err(ApiError::internal(format!(
                    "command: cannot start `{}`: {e}",
                    spec.argv[0]
                )));
            };
            let why = if code == 127 {
                "command not found"
            } else {
                "permission denied or not executable"
            };
            let msg = format!("{}: {why}\n", spec.argv[0]);
            tokio::spawn(async move {
                let _ = ev_tx.send(Event::Stderr(Bytes::from(msg))).await;
                let _ = ev_tx
                    .send(Event::Exit(Exit {
                        exit_code: code,
                        signal: None,
                        timed_out: false,
                        duration_ms: started.elapsed().as_secs_f64() * 1e3,
                    }))
                    .await;
            });
            return Ok(Session {
                pid: 0,
                events: ev_rx,
                input: in_tx,
            });
        }
    };
    drop(cmd);
    drop(cwd_fd);
    let pid = child.id().unwrap_or(0);
    let guard = GroupGuard { pgid: pid };
    let relay = Relay {
        child,
        guard,
        master: match pty_master {
            Some(f) => Some(Arc::new(watch(f).map_err(|e| {
                ApiError::internal(format!("tty: cannot watch the pseudo-terminal: {e}"))
            })?)),
            None => None,
        },
        started,
        deadline: spec.timeout.map(|t| tokio::time::Instant::now() + t),
    };
    tokio::spawn(relay.run(ev_tx, in_rx));
    Ok(Session {
        pid,
        events: ev_rx,
        input: in_tx,
    })
}

/// Registers the terminal's master side with the reactor. `AsyncFd::new` is deprecated in
/// favour of an `unsafe` constructor because a registered descriptor must not be closed
/// behind the reactor's back; here the `AsyncFd` owns the `File`, so the descriptor lives
/// exactly as long as its registration (the condition the safe constructor needs).
#[allow(deprecated)]
fn watch(f: File) -> std::io::Result<AsyncFd<File>> {
    AsyncFd::new(f)
}

/// Kills the process group on drop.
#[derive(Debug)]
struct GroupGuard {
    pgid: u32,
}

impl GroupGuard {
    fn kill(&self, signal: i32) {
        if self.pgid != 0 {
            let _ = warden_jail::spawn::kill_group(self.pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}

struct Relay {
    child: tokio::process::Child,
    guard: GroupGuard,
    master: Option<Arc<AsyncFd<File>>>,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
}

const CHUNK: usize = 32 * 1024;

async fn read_master(master: &AsyncFd<File>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|f| f.get_ref().read(buf)) {
            Ok(Ok(n)) => return Ok(n),
            // The slave side closed: the terminal is gone.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

async fn write_master(master: &AsyncFd<File>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|f| f.get_ref().write(data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

impl Relay {
    async fn run(mut self, events: mpsc::Sender<Event>, mut input: mpsc::Receiver<Input>) {
        // Stdin goes through its own task, so a command that does not read cannot stall the
        // output relay.
        let (stdin_tx, mut stdin_rx) = mpsc::channel::<Input>(16);
        if let Some(mut pipe) = self.child.stdin.take() {
            tokio::spawn(async move {
                while let Some(i) = stdin_rx.recv().await {
                    match i {
                        Input::Stdin(b) => {
                            if pipe.write_all(&b).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            });
        } else if let Some(master) = self.master.clone() {
            tokio::spawn(async move {
                while let Some(i) = stdin_rx.recv().await {
                    let r = match i {
                        // ^D: end of input for a terminal in canonical mode.
                        Input::Eof => write_master(&master, &[4]).await,
                        Input::Stdin(b) => write_master(&master, &b).await,
                        _ => Ok(()),
                    };
                    if r.is_err() {
                        break;
                    }
                }
            });
        }
        let mut stdin_tx = Some(stdin_tx);
        let mut stdout = self.child.stdout.take();
        let mut stderr = self.child.stderr.take();
        let master = self.master.clone();
        let mut master_open = master.is_some();
        let mut out_buf = vec![0u8; CHUNK];
        let mut err_buf = vec![0u8; CHUNK];
        let mut pty_buf = vec![0u8; CHUNK];
        let mut status: Option<std::process::ExitStatus> = None;
        let mut timed_out = false;
        let mut input_open = true;
        loop {
            let outputs_open = stdout.is_some() || stderr.is_some() || master_open;
            if status.is_some() && !outputs_open {
                break;
            }
            tokio::select! {
                _ = events.closed() => {
                    // The client went away: the command goes with it.
                    self.guard.kill(libc::SIGKILL);
                    let _ = self.child.wait().await;
                    return;
                }
                _ = sleep_until(self.deadline), if !timed_out && status.is_none() => {
                    timed_out = true;
                    self.guard.kill(libc::SIGKILL);
                }
                i = input.recv(), if input_open => match i {
                    None => input_open = false,
                    Some(Input::Signal(sig)) => self.guard.kill(sig),
                    Some(Input::Resize { cols, rows }) => {
                        if let Some(m) = &master {
                            let _ = warden_jail::spawn::set_winsize(m.get_ref().as_fd(), cols, rows);
                        }
                    }
                    Some(Input::Eof) => {
                        if let Some(tx) = stdin_tx.take() {
                            let _ = tx.send(Input::Eof).await;
                        }
                    }
                    Some(i @ Input::Stdin(_)) => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(i).await;
                        }
                    }
                },
                n = read_opt(&mut stdout, &mut out_buf) => match n {
                    Some(n) if n > 0 => {
                        if events.send(Event::Stdout(Bytes::copy_from_slice(&out_buf[..n]))).await.is_err() {
                            continue;
                        }
                    }
                    _ => stdout = None,
                },
                n = read_opt(&mut stderr, &mut err_buf) => match n {
                    Some(n) if n > 0 => {
                        if events.send(Event::Stderr(Bytes::copy_from_slice(&err_buf[..n]))).await.is_err() {
                            continue;
                        }
                    }
                    _ => stderr = None,
                },
                n = read_master_opt(master.as_deref(), &mut pty_buf), if master_open => match n {
                    Ok(n) if n > 0 => {
                        if events.send(Event::Stdout(Bytes::copy_from_slice(&pty_buf[..n]))).await.is_err() {
                            continue;
                        }
                    }
                    _ => master_open = false,
                },
                s = self.child.wait(), if status.is_none() => {
                    status = Some(s.unwrap_or_else(|_| std::process::ExitStatus::from_raw(1 << 8)));
                    // What the command left running would keep its pipes open.
                    self.guard.kill(libc::SIGKILL);
                    stdin_tx = None;
                }
            }
        }
        let status = status.unwrap_or_else(|| std::process::ExitStatus::from_raw(1 << 8));
        let (exit_code, signal) = if timed_out {
            (124, None)
        } else if let Some(code) = status.code() {
            (code, None)
        } else {
            let sig = status.signal().unwrap_or(0);
            (128 + sig, Some(sig))
        };
        let _ = events
            .send(Event::Exit(Exit {
                exit_code,
                signal,
                timed_out,
                duration_ms: self.started.elapsed().as_secs_f64() * 1e3,
            }))
            .await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn read_opt<R: tokio::io::AsyncRead + Unpin>(
    r: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    match r {
        Some(r) => r.read(buf).await.ok(),
        None => std::future::pending().await,
    }
}

async fn read_master_opt(m: Option<&AsyncFd<File>>, buf: &mut [u8]) -> std::io::Result<usize> {
    match m {
        Some(m) => read_master(m, buf).await,
        None => std::future::pending().await,
    }
}

/// The collected result of a buffered exec.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
    pub truncated: bool,
}

/// Runs `spec` to the end, feeding it `stdin` and keeping up to `cap` bytes per stream.
pub async fn run(
    state: &Arc<Sandboxd>,
    spec: Spec,
    stdin: Option<Bytes>,
    cap: usize,
) -> Result<Collected, ApiError> {
    let mut session = start(state, spec)?;
    let input = session.input.clone();
    tokio::spawn(async move {
        if let Some(b) = stdin
            && !b.is_empty()
        {
            let _ = input.send(Input::Stdin(b)).await;
        }
        let _ = input.send(Input::Eof).await;
    });
    let mut out = Collected {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit: Exit {
            exit_code: -1,
            signal: None,
            timed_out: false,
            duration_ms: 0.0,
        },
        truncated: false,
    };
    let push = |buf: &mut Vec<u8>, b: &[u8], truncated: &mut bool| {
        let room = cap.saturating_sub(buf.len());
        if b.len() > room {
            *truncated = true;
        }
        buf.extend_from_slice(&b[..b.len().min(room)]);
    };
    while let Some(ev) = session.events.recv().await {
        match ev {
            Event::Stdout(b) => push(&mut out.stdout, &b, &mut out.truncated),
            Event::Stderr(b) => push(&mut out.stderr, &b, &mut out.truncated),
            Event::Exit(e) => {
                out.exit = e;
                return Ok(out);
            }
        }
    }
    Err(ApiError::internal(
        "command: the relay ended without an exit status",
    ))
}
