//! A small client of the API, for `warden sandbox`: JSON calls, streamed uploads and
//! downloads, and the exec WebSocket. One HTTP/1.1 connection per call (the server is local).

use std::path::Path;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The default server address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// A request body: JSON, a file streamed from disk, or nothing.
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach warden serve at {server} ({source}); start it with `warden serve`, or point \
         --server / WARDEN_SERVER at it"
    )]
    Connect {
        server: String,
        source: std::io::Error,
    },
    /// The server answered with an error body.
    #[error("{message} ({status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    server: String,
    authority: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// `server` is `http://HOST:PORT` (no TLS: the server listens locally).
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let uri: Uri = server
            .parse()
            .map_err(|e| ClientError::Protocol(format!("--server `{server}`: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(ClientError::Protocol(format!(
                "--server `{server}`: only http://HOST:PORT is supported"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Protocol(format!("--server `{server}`: no host")))?
            .to_string();
        Ok(Client {
            server: server.trim_end_matches('/').to_string(),
            authority,
            token,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    async fn connect(&self) -> Result<tokio::net::TcpStream, ClientError> {
        let addr = if self.authority.contains(':') {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        };
        tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Connect {
                server: self.server.clone(),
                source,
            })
    }

    /// Sends a request; an error status becomes `ClientError::Api`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: ReqBody,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(format!("{path}: {e}")))?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let code = v["code"].as_str().unwrap_or("").to_string();
            let message = v["message"]
                .as_str()
                .or(v["detail"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            let message = if message.is_empty() {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error")
                    .to_string()
            } else {
                message
            };
            return Err(ClientError::Api {
                status,
                code,
                message,
            });
        }
        Ok(resp)
    }

    /// A JSON call: `body` (if any) out, `T` back (`()`-like callers use `serde_json::Value`).
    pub async fn json<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (ct, body) = match body {
            Some(b) => (
                Some("application/json"),
                full(serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?),
            ),
            None => (None, empty()),
        };
        let resp = self.send(method, path, ct, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("{path}: unexpected answer: {e}")))
    }

    /// Uploads a local file to a sandbox path, streaming it.
    pub async fn upload(&self, id: &str, path: &str, local: &Path) -> Result<(), ClientError> {
        let file = tokio::fs::File::open(local).await?;
        let stream = futures_util::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 64 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let body = BodyExt::boxed(StreamBody::new(stream));
        self.send(
            Method::PUT,
            &files_path(id, path),
            Some("application/octet-stream"),
            body,
        )
        .await?;
        Ok(())
    }

    /// Downloads a sandbox file into `out`, streaming it.
    pub async fn download(
        &self,
        id: &str,
        path: &str,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<(), ClientError> {
        use tokio::io::AsyncWriteExt;
        let resp = self
            .send(Method::GET, &files_path(id, path), None, empty())
            .await?;
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if is_json {
            return Err(ClientError::Protocol(format!(
                "`{id}:{path}` is a directory; copy files one by one"
            )));
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await?;
            }
        }
        out.flush().await?;
        Ok(())
    }

    /// Opens the exec WebSocket of a sandbox.
    pub async fn exec_ws(
        &self,
        id: &str,
    ) -> Result<WebSocketStream<tokio::net::TcpStream>, ClientError> {
        let url = format!(
            "ws://{}/v1/sandboxes/{}/exec/ws",
            self.authority,
            encode_segment(id)
        );
        let mut req = url
            .into_client_request()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        let stream = self.connect().await?;
        match tokio_tungstenite::client_async(req, stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().clone().unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                Err(ClientError::Api {
                    status,
                    code: v["code"].as_str().unwrap_or("").to_string(),
                    message: v["message"]
                        .as_str()
                        .unwrap_or("WebSocket refused")
                        .to_string(),
                })
            }
            Err(e) => Err(ClientError::Protocol(format!("WebSocket: {e}"))),
        }
    }
}

/// `/v1/sandboxes/{id}/files/{path}` with each segment percent-encoded.
pub fn files_path(id: &str, path: &str) -> String {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "." } else { path };
    let encoded: Vec<String> = path.split('/').map(encode_segment).collect();
    format!(
        "/v1/sandboxes/{}/files/{}",
        encode_segment(id),
        encoded.join("/")
    )
}

/// `path` with a query string of the parameters that have a value, each value
/// percent-encoded; `path` alone when none has.
pub fn with_query(path: &str, params: &[(&str, Option<&str>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode_segment(v))))
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn full(bytes: Vec<u8>) -> ReqBody {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ReqBody {
    full(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn queries_carry_only_the_given_parameters_encoded() {
        assert_eq!(with_query("/v1/tasks", &[("status", None)]), "/v1/tasks");
        assert_eq!(
            with_query(
                "/v1/tasks",
                &[
                    ("limit", Some("20")),
                    ("status", None),
                    ("repo", Some("https://h/a b.git")),
                ],
            ),
            "/v1/tasks?limit=20&repo=https%3A%2F%2Fh%2Fa%20b.git"
        );
    }
}
