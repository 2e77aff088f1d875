//! Prometheus metrics of `warden router`: requests by status code and route, the latency to
//! the response head, and the state of the pod index.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::index::SandboxIndex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: u16,
    /// pod_ip_header, index, dns, or local (answered by the router itself).
    route: &'static str,
}

/// The router's metrics and their registry.
#[derive(Debug)]
pub struct RouterMetrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    index_pods: Gauge,
    index_synced: Gauge,
}

impl Default for RouterMetrics {
    fn default() -> Self {
        RouterMetrics::new()
    }
}

impl RouterMetrics {
    pub fn new() -> RouterMetrics {
        let mut registry = Registry::with_prefix("warden_router");
        let requests = Family::<RequestLabels, Counter>::default();
        // 100 µs to about 100 s.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.5, 16));
        let index_pods = Gauge::default();
        let index_synced = Gauge::default();
        registry.register(
            "requests",
            "Requests by HTTP status code and how the target was found",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request to the response head (the body streams after)",
            latency.clone(),
        );
        registry.register(
            "index_pods",
            "Ready sandbox pods in the watch-fed index",
            index_pods.clone(),
        );
        registry.register(
            "index_synced",
            "1 when the pod index has listed the API server and is watching it, else 0",
            index_synced.clone(),
        );
        RouterMetrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            index_pods,
            index_synced,
        }
    }

    pub fn record(&self, code: u16, route: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { code, route })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the index gauges read now.
    pub fn encode(&self, index: &SandboxIndex) -> String {
        self.index_pods.set(index.len() as i64);
        self.index_synced.set(i64::from(index.is_synced()));
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}
