//! The readiness probe: sandboxd's `/v1/health` through its client. The
//! socket is reached through an `O_PATH` descriptor of the very inode sandboxd bound (see
//! [`SocketId`]), never through a path a sandboxed process could have replaced.

use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The identity of sandboxd's socket inode, recorded when the sandbox became ready (before
/// any command ran in it). Commands in the sandbox can write the directory holding the
/// socket; a socket or symlink they put in its place has another identity and is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketId {
    pub dev: u64,
    pub ino: u64,
}

/// An open `O_PATH` descriptor of the socket, and the `/proc/self/fd/N` path that connects
/// to it. Keep it alive while connecting.
#[derive(Debug)]
pub struct PinnedSocket {
    _fd: std::fs::File,
    pub path: PathBuf,
    pub id: SocketId,
}

/// Opens the socket at `path` without following a symlink and checks that it is a socket
/// (and, when `expect` is given, the very one recorded).
pub fn pin(path: &Path, expect: Option<SocketId>) -> Result<PinnedSocket, String> {
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_path() | nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = fd
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", path.display()));
    }
    let id = SocketId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if let Some(want) = expect
        && want != id
    {
        return Err(format!(
            "{} was replaced (it is no longer the socket sandboxd bound)",
            path.display()
        ));
    }
    use std::os::fd::AsRawFd;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok(PinnedSocket {
        _fd: fd,
        path: proc_path,
        id,
    })
}

fn libc_o_path() -> i32 {
    nix::fcntl::OFlag::O_PATH.bits()
}

/// One health probe: `Client::health` on the pinned socket.
pub async fn probe(socket: &PinnedSocket, timeout: Duration) -> Result<(), String> {
    let client = warden_sandboxd::client::Client::new(&socket.path);
    match tokio::time::timeout(timeout, client.health()).await {
        Ok(Ok(h)) if h.status == "ok" => Ok(()),
        Ok(Ok(h)) => Err(format!("health status {:?}", h.status)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
