//! Prometheus metrics of `warden serve`: requests by route and status, a latency histogram,
//! sandboxes by phase, pool ready/replicas, claims warm vs cold.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warden_sandbox::{Launch, Phase, PoolStatus, SandboxInfo};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    direction: &'static str,
}

/// The task metrics the runner records into (cheap clones of the registered handles).
#[derive(Clone, Debug)]
pub struct TaskMetrics {
    submitted: Counter,
    finished: Family<StatusLabels, Counter>,
    duration: Family<StatusLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    by_status: Family<StatusLabels, Gauge>,
    running_here: Gauge,
}

impl Default for TaskMetrics {
    fn default() -> TaskMetrics {
        TaskMetrics {
            submitted: Counter::default(),
            finished: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.5, 2.0, 16))
            }),
            tokens: Family::default(),
            by_status: Family::default(),
            running_here: Gauge::default(),
        }
    }
}

impl TaskMetrics {
    pub fn submitted(&self) {
        self.submitted.inc();
    }

    /// A task ended on this replica: its status, how long from submission, its tokens.
    pub fn finished(&self, status: &'static str, seconds: f64, input: u64, output: u64) {
        self.finished.get_or_create(&StatusLabels { status }).inc();
        self.duration
            .get_or_create(&StatusLabels { status })
            .observe(seconds);
        self.tokens
            .get_or_create(&TokenLabels { direction: "input" })
            .inc_by(input);
        self.tokens
            .get_or_create(&TokenLabels {
                direction: "output",
            })
            .inc_by(output);
    }

    /// Tasks by status across every replica sharing the store (refreshed at scrape time),
    /// and the tasks (each holding one sandbox) running on this replica.
    pub fn set_counts(&self, counts: &[(&'static str, u64)], running_here: usize) {
        self.by_status.clear();
        for (status, n) in counts {
            self.by_status
                .get_or_create(&StatusLabels { status })
                .set(*n as i64);
        }
        self.running_here.set(running_here as i64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Runs of cron schedules on this replica, by outcome: `filed` (a task), `failed` (no task
/// could be filed; the schedule's `last_error` says why), `skipped` (missed, policy `skip`).
#[derive(Clone, Debug, Default)]
pub struct ScheduleMetrics {
    runs: Family<OutcomeLabels, Counter>,
}

impl ScheduleMetrics {
    pub fn run(&self, outcome: &'static str) {
        self.runs.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaunchLabels {
    launch: &'static str,
}

/// The server's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    sandboxes: Family<PhaseLabels, Gauge>,
    pool_ready: Family<PoolLabels, Gauge>,
    pool_replicas: Family<PoolLabels, Gauge>,
    claims: Family<LaunchLabels, Counter>,
    tasks: TaskMetrics,
    schedules: ScheduleMetrics,
    webhooks: Family<WebhookLabels, Counter>,
}

const PHASES: [(Phase, &str); 5] = [
    (Phase::Starting, "starting"),
    (Phase::Ready, "ready"),
    (Phase::Suspended, "suspended"),
    (Phase::Failed, "failed"),
    (Phase::Stopped, "stopped"),
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("warden_serve");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let sandboxes = Family::<PhaseLabels, Gauge>::default();
        let pool_ready = Family::<PoolLabels, Gauge>::default();
        let pool_replicas = Family::<PoolLabels, Gauge>::default();
        let claims = Family::<LaunchLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency by route (to the response head)",
            latency.clone(),
        );
        registry.register("sandboxes", "Sandboxes by phase", sandboxes.clone());
        registry.register(
            "pool_ready",
            "Ready members of each warm pool",
            pool_ready.clone(),
        );
        registry.register(
            "pool_replicas",
            "Desired members of each warm pool",
            pool_replicas.clone(),
        );
        registry.register(
            "claims",
            "Claims by launch: warm (a pool member) or cold (created on demand)",
            claims.clone(),
        );
        let tasks = TaskMetrics::default();
        registry.register(
            "tasks_submitted",
            "Tasks queued through this replica",
            tasks.submitted.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks that ended on this replica, by final status",
            tasks.finished.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "From submission to the end, by final status",
            tasks.duration.clone(),
        );
        registry.register(
            "task_tokens",
            "Model tokens used by tasks' agents, input and output",
            tasks.tokens.clone(),
        );
        registry.register(
            "tasks",
            "Tasks by status in the store (QUEUED is the queue depth, WAITING_APPROVAL the approvals waiting)",
            tasks.by_status.clone(),
        );
        registry.register(
            "tasks_running_here",
            "Tasks running on this replica, each in its own sandbox",
            tasks.running_here.clone(),
        );
        let schedules = ScheduleMetrics::default();
        registry.register(
            "schedule_runs",
            "Runs of cron schedules on this replica: filed (a task), failed (none could be filed), skipped (missed)",
            schedules.runs.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by source and outcome (accepted, ignored, rejected, duplicate)",
            webhooks.clone(),
        );
        Metrics {
            tasks,
            schedules,
            webhooks,
            registry: Mutex::new(registry),
            requests,
            latency,
            sandboxes,
            pool_ready,
            pool_replicas,
            claims,
        }
    }

    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The task metrics, for the runner and the API.
    pub fn tasks(&self) -> &TaskMetrics {
        &self.tasks
    }

    /// The schedule metrics, for the scheduler.
    pub fn schedules(&self) -> &ScheduleMetrics {
        &self.schedules
    }

    /// A webhook delivery of `source` (github, alertmanager, pagerduty, generic:NAME) ended
    /// with `outcome`.
    pub fn webhook_delivery(&self, source: &str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                source: source.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn task_submitted(&self) {
        self.tasks.submitted();
    }

    pub fn record_claim(&self, launch: Launch) {
        let launch = match launch {
            Launch::Warm => "warm",
            Launch::Cold => "cold",
        };
        self.claims.get_or_create(&LaunchLabels { launch }).inc();
    }

    /// Text exposition, after refreshing the gauges from the driver's view.
    pub fn encode(&self, sandboxes: &[SandboxInfo], pools: &[PoolStatus]) -> String {
        for (phase, name) in PHASES {
            let n = sandboxes.iter().filter(|s| s.phase == phase).count();
            self.sandboxes
                .get_or_create(&PhaseLabels { phase: name })
                .set(n as i64);
        }
        self.pool_ready.clear();
        self.pool_replicas.clear();
        for p in pools {
            let labels = PoolLabels {
                pool: p.name.clone(),
            };
            self.pool_ready
                .get_or_create(&labels)
                .set(i64::from(p.ready));
            self.pool_replicas
                .get_or_create(&labels)
                .set(i64::from(p.replicas));
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}
