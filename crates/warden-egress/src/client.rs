//! The proxy's own HTTP client, for the upstreams an operator configured (credential routes,
//! token endpoints), not for the sandbox's requests: `http://` and `https://` with rustls,
//! the system's trusted roots plus an optional CA file, pooled keep-alive connections.
//! These upstreams are trusted configuration, so their addresses are not screened; what the
//! sandbox can change is only the path below a route's base (see [`crate::route`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::proxy::ProxyBody;

/// Why a client could not be built or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("{0}")]
    Request(String),
}

/// A pooled HTTP/1.1 client over TCP or rustls. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, ProxyBody>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client trusting the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured)
    /// and, if given, the PEM certificates in `ca_file`. Must be called inside a tokio runtime
    /// only when requests are sent.
    pub fn new(ca_file: Option<&Path>, connect_timeout: Duration) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let _ = roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let ca_error = |message: String| ClientError::CaFile {
                path: path.display().to_string(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_error(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(HttpClient { inner })
    }

    /// Sends a request with an absolute URI; the response body streams.
    pub async fn request(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.inner
            .request(req)
            .await
            .map_err(|e| ClientError::Request(error_chain(&e)))
    }
}

/// An error and its causes, `: `-separated (hyper's top-level messages say little alone).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
