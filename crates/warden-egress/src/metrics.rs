//! Prometheus metrics of a proxy, and the small admin server that exposes them with a health
//! check (`warden proxy --admin-listen`). Owns the metric names:
//!
//! - `warden_egress_requests_total{kind, verdict}`: every decision; `kind` is `forward`,
//!   `tunnel` or `route`, `verdict` is `allowed` or `denied`;
//! - `warden_egress_bytes_total{direction}`: payload bytes, `up` (to the upstream) and `down`;
//! - `warden_egress_request_duration_seconds`: from request to the end of the exchange (for a
//!   tunnel, its whole life);
//! - `warden_egress_tunnels_open`: CONNECT tunnels established and not yet closed.
//!
//! [`MetricsSink`] feeds them from the audit events, on the way to another sink.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::audit::{AuditEvent, AuditSink};
use crate::policy::Decision;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByteLabels {
    direction: &'static str,
}

/// The proxy's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes: Family<ByteLabels, Counter>,
    duration: Histogram,
    tunnels_open: Gauge<i64, AtomicI64>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden_egress");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Egress decisions by kind (forward, tunnel, route) and verdict",
            requests.clone(),
        );
        let bytes = Family::<ByteLabels, Counter>::default();
        registry.register(
            "bytes",
            "Payload bytes through the proxy, up (to the upstream) and down",
            bytes.clone(),
        );
        // 1 ms to about 9 minutes.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the exchange (a tunnel's whole life)",
            duration.clone(),
        );
        let tunnels_open = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "tunnels_open",
            "CONNECT tunnels established and not yet closed",
            tunnels_open.clone(),
        );
        Metrics {
            registry,
            requests,
            bytes,
            duration,
            tunnels_open,
        }
    }

    fn observe(&self, event: &AuditEvent) {
        let kind = if event.method == "CONNECT" {
            "tunnel"
        } else if event.rule.starts_with("route:") {
            "route"
        } else {
            "forward"
        };
        let verdict = match event.verdict {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        };
        self.requests
            .get_or_create(&RequestLabels { kind, verdict })
            .inc();
        self.bytes
            .get_or_create(&ByteLabels { direction: "up" })
            .inc_by(event.bytes_up);
        self.bytes
            .get_or_create(&ByteLabels { direction: "down" })
            .inc_by(event.bytes_down);
        self.duration.observe(event.duration_ms as f64 / 1000.0);
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Counts every event into [`Metrics`], then passes it on.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    next: Arc<dyn AuditSink>,
}

impl fmt::Debug for MetricsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsSink")
    }
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>, next: Arc<dyn AuditSink>) -> Self {
        MetricsSink { metrics, next }
    }
}

impl AuditSink for MetricsSink {
    fn record(&self, event: AuditEvent) {
        self.metrics.observe(&event);
        self.next.record(event);
    }

    fn tunnel_opened(&self) {
        self.metrics.tunnels_open.inc();
        self.next.tunnel_opened();
    }

    fn tunnel_closed(&self) {
        self.metrics.tunnels_open.dec();
        self.next.tunnel_closed();
    }
}

/// Serves `GET /healthz` (`{"status":"ok"}`) and `GET /metrics` on `listener` until dropped.
pub async fn serve_admin(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(admin_answer(&metrics, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_answer(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => (
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}\n".to_string(),
        ),
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (_, "/healthz" | "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_string(),
        ),
        (_, path) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no {path} here: GET /healthz or /metrics\n"),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ChannelSink;

    fn event(method: &str, rule: &str, verdict: Decision, up: u64, down: u64) -> AuditEvent {
        AuditEvent {
            time: String::new(),
            sandbox_id: "sb".into(),
            method: method.into(),
            host: "example.com".into(),
            port: 443,
            verdict,
            rule: rule.into(),
            status: 200,
            address: None,
            bytes_up: up,
            bytes_down: down,
            duration_ms: 3,
            error: None,
        }
    }

    #[test]
    fn events_are_counted_by_kind_and_verdict() {
        let metrics = Arc::new(Metrics::new());
        let (next, mut rx) = ChannelSink::new();
        let sink = MetricsSink::new(Arc::clone(&metrics), Arc::new(next));
        sink.tunnel_opened();
        sink.tunnel_opened();
        sink.record(event(
            "CONNECT",
            "allow:example.com",
            Decision::Allowed,
            10,
            20,
        ));
        sink.tunnel_closed();
        sink.record(event("GET", "default-deny", Decision::Denied, 0, 0));
        sink.record(event("POST", "route:anthropic", Decision::Allowed, 5, 7));
        assert!(rx.try_recv().is_ok(), "events pass through");
        let text = metrics.render();
        for line in [
            "warden_egress_requests_total{kind=\"tunnel\",verdict=\"allowed\"} 1",
            "warden_egress_requests_total{kind=\"forward\",verdict=\"denied\"} 1",
            "warden_egress_requests_total{kind=\"route\",verdict=\"allowed\"} 1",
            "warden_egress_bytes_total{direction=\"up\"} 15",
            "warden_egress_bytes_total{direction=\"down\"} 27",
            "warden_egress_tunnels_open 1",
            "warden_egress_request_duration_seconds_count 3",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
