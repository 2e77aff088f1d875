//! Listeners: every one serves the combined app (HTTP/1.1 and HTTP/2, gRPC included) on a
//! TCP address or a unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/sandboxd.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!(
                "`{s}` is neither HOST:PORT (e.g. 0.0.0.0:8080, [::1]:9090) nor unix:/path.sock"
            )
        })
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Bound {
    /// Binds `l`. A stale unix socket file is replaced; any other file there is an error.
    pub async fn bind(l: &Listen) -> std::io::Result<Bound> {
        match l {
            Listen::Tcp(a) => Ok(Bound::Tcp(tokio::net::TcpListener::bind(a).await?)),
            Listen::Unix(p) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if let Ok(m) = std::fs::symlink_metadata(p) {
                    if m.file_type().is_socket() {
                        std::fs::remove_file(p)?;
                    } else {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", p.display()),
                        ));
                    }
                }
                let listener = tokio::net::UnixListener::bind(p)?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
                Ok(Bound::Unix(listener))
            }
        }
    }

    /// The TCP address actually bound (for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Unix(_) => None,
        }
    }

    /// Accepts connections forever, serving `app` on each.
    pub async fn serve(self, app: Router) -> std::io::Result<()> {
        loop {
            match &self {
                Bound::Tcp(l) => match l.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        spawn_conn(s, app.clone());
                    }
                    Err(e) => accept_error(e).await?,
                },
                Bound::Unix(l) => match l.accept().await {
                    Ok((s, _)) => spawn_conn(s, app.clone()),
                    Err(e) => accept_error(e).await?,
                },
            }
        }
    }
}

async fn accept_error(e: std::io::Error) -> std::io::Result<()> {
    // Out of descriptors or a connection reset before accept: wait and go on.
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            tracing::warn!("accept: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Ok(())
        }
        Some(libc::ECONNABORTED | libc::EINTR) => Ok(()),
        _ => Err(e),
    }
}

fn spawn_conn<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        let svc = TowerToHyperService::new(app);
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .await
        {
            tracing::debug!("connection: {e}");
        }
    });
}
