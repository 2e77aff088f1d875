//! Webhooks through the router (`oneshot`): each source's authentication, replay protection,
//! rules filing tasks with the mapped repository, prompt, agent and model, ignored and
//! rejected deliveries with their reasons, the API; and the deliveries' store on SQLite and
//! PostgreSQL (two concurrent deliveries of one id file one task).
//!
//! Tasks are filed into a real task store and stay QUEUED: no runner is started here (the end
//! to end test in `crates/warden/tests/webhooks.rs` runs one).

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod postgres_cluster;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_agent::run::RunOutcome;
use warden_sandbox::{Driver, Template};
use warden_server::tasks::runner::{AgentRun, RunnerConfig, TaskAgent, Tasks};
use warden_server::tasks::store::TaskQuery;
use warden_server::tasks::store_sql::SqlTaskStore;
use warden_server::tasks::{Task, TaskStatus};
use warden_server::testing::FakeDriver;
use warden_server::webhooks::verify::hmac_sha256_hex;
use warden_server::webhooks::{Outcome, Source, Webhooks};
use warden_server::{AppState, Auth, Store, app};

const API_TOKEN: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const GH_SECRET: &str = "github-secret-0123456789";
const AM_SECRET: &str = "alertmanager-secret-0123456789";
const PD_SECRET: &str = "pagerduty-secret-0123456789";
const DEPLOY_SECRET: &str = "deploys-secret-0123456789";

const CONFIG: &str = r#"
[webhooks.github]
secret_env = "GH"
[webhooks.alertmanager]
secret_env = "AM"
[webhooks.pagerduty]
secret_env = "PD"
[webhooks.generic.deploys]
secret_env = "DEPLOY"

[[webhooks.rules]]
name = "fix-on-comment"
source = "github"
event = "issue_comment"
action = "created"
comment_prefix = "/warden"
prompt = "{{ webhook.command }}\n\nIssue #{{ issue.number }}: {{ issue.title }}"
agent = "claude-code"
model = "anthropic/claude-sonnet-4-5"

[[webhooks.rules]]
name = "triage-issue"
source = "github"
event = "issues"
action = "opened"
prompt = "Triage: {{ issue.titel }}"

[[webhooks.rules]]
name = "page"
source = "alertmanager"
status = "firing"
labels = { severity = "critical" }
repo = "https://git.example.com/ops/runbooks.git"
prompt = "{% for a in alerts %}{{ a.labels.alertname }} on {{ a.labels.instance }}; {% endfor %}"
agent = "codex"

[[webhooks.rules]]
name = "incident"
source = "pagerduty"
event_type = "incident.triggered"
repo = "https://git.example.com/ops/services.git"
prompt = "Incident {{ event.data.title }} ({{ event.data.urgency }})"
base_branch = "main"

[[webhooks.rules]]
name = "deploy-check"
source = "generic:deploys"
match = { "/env" = "prod" }
repo = "{{ repo }}"
prompt = "Check the deploy of {{ sha }}"
template = "default"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "GH" => Some(GH_SECRET.into()),
        "AM" => Some(AM_SECRET.into()),
        "PD" => Some(PD_SECRET.into()),
        "DEPLOY" => Some(DEPLOY_SECRET.into()),
        _ => None,
    }
}

/// The agent of these tests never runs: no runner is started.
struct NoAgent;

#[async_trait]
impl TaskAgent for NoAgent {
    async fn run(&self, _run: AgentRun) -> RunOutcome {
        panic!("no task runs in these tests")
    }
}

struct World {
    state: AppState,
    tasks: Tasks,
    _dir: tempfile::TempDir,
}

async fn world_on(db: SqlTaskStore, config: &str, dir: tempfile::TempDir) -> World {
    let store = Store::in_memory().await.unwrap();
    let fake = Arc::new(FakeDriver::new(Some(Arc::new(store.clone()))));
    let template: Template = toml::from_str(
        r#"name = "default"
           [policy]
           profile = "default"
           [policy.network]
           mode = "proxy"
           allow_domains = ["github.com", "git.example.com"]"#,
    )
    .unwrap();
    fake.put_template(template).await.unwrap();
    let driver: Arc<dyn Driver> = fake;
    let tasks = Tasks::new(
        Arc::new(db.clone()),
        driver.clone(),
        Arc::new(NoAgent),
        RunnerConfig::new("test", dir.path().join("agent-runs")),
    );
    let cfg = warden_server::config::parse(config).unwrap();
    let webhooks =
        Webhooks::start(cfg.webhooks.unwrap_or_default(), &env, db, tasks.clone()).unwrap();
    let state = AppState::new(driver, store, Auth::Token(API_TOKEN.into()))
        .with_tasks(tasks.clone())
        .with_webhooks(webhooks);
    World {
        state,
        tasks,
        _dir: dir,
    }
}

async fn world(config: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = SqlTaskStore::open(None, dir.path()).await.unwrap();
    world_on(db, config, dir).await
}

impl World {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (StatusCode, Value) {
        let mut req = Request::builder().method("POST").uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app(self.state.clone())
            .oneshot(req.body(Body::from(body.to_vec())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {API_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn github(&self, event: &str, delivery: &str, payload: &Value) -> (StatusCode, Value) {
        let body = payload.to_string();
        let sig = format!(
            "sha256={}",
            hmac_sha256_hex(GH_SECRET.as_bytes(), body.as_bytes())
        );
        self.post(
            "/webhooks/github",
            &[
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
    }

    async fn tasks(&self) -> Vec<Task> {
        self.tasks
            .list(&TaskQuery {
                limit: 500,
                ..TaskQuery::default()
            })
            .await
            .unwrap()
            .tasks
    }

    async fn deliveries(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/v1/webhooks/deliveries?{query}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["deliveries"].as_array().unwrap().clone()
    }
}

fn comment(body: &str, association: &str) -> Value {
    json!({
        "action": "created",
        "issue": {"number": 42, "title": "Login test fails", "body": "See CI."},
        "comment": {"body": body, "author_association": association, "user": {"login": "alice"}},
        "repository": {"full_name": "org/app", "clone_url": "https://github.com/org/app.git"},
        "sender": {"login": "alice"},
    })
}

#[tokio::test]
async fn a_signed_github_comment_files_the_mapped_task() {
    let w = world(CONFIG).await;
    let (s, v) = w
        .github(
            "issue_comment",
            "gh-1",
            &comment("/warden fix the login test", "MEMBER"),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["outcome"], "accepted");
    let ids = v["task_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{v}");
    let tasks = w.tasks().await;
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(ids[0], json!(t.id));
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.spec.repo, "https://github.com/org/app.git");
    assert_eq!(
        t.spec.task,
        "fix the login test\n\nIssue #42: Login test fails"
    );
    assert_eq!(t.spec.agent.as_str(), "claude-code");
    assert_eq!(t.spec.model.as_deref(), Some("anthropic/claude-sonnet-4-5"));
    assert_eq!(
        t.spec.idempotency_key.as_deref(),
        Some("webhook:github:gh-1:fix-on-comment")
    );
    // The record, in the shape the console reads.
    let d = w.deliveries("").await;
    assert_eq!(d.len(), 1);
    let keys: Vec<&str> = d[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "source",
        "delivery_id",
        "event",
        "received_at",
        "outcome",
        "reason",
        "status_code",
        "task_ids",
    ] {
        assert!(keys.contains(&k), "{k} missing from {}", d[0]);
    }
    assert_eq!(d[0]["source"], "github");
    assert_eq!(d[0]["delivery_id"], "gh-1");
    assert_eq!(d[0]["event"], "issue_comment.created");
    assert_eq!(d[0]["outcome"], "accepted");
    assert_eq!(d[0]["status_code"], 202);
    assert_eq!(d[0]["task_ids"], json!([t.id]));
    assert_eq!(d[0]["id"], v["delivery"]);
    // Counted by source and outcome.
    let req = Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = app(w.state.clone()).oneshot(req).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            "warden_serve_webhook_deliveries_total{source=\"github\",outcome=\"accepted\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn bad_or_missing_signatures_are_401_start_nothing_and_are_recorded() {
    let w = world(CONFIG).await;
    let body = comment("/warden rm -rf", "OWNER").to_string();
    let good = format!(
        "sha256={}",
        hmac_sha256_hex(GH_SECRET.as_bytes(), body.as_bytes())
    );
    let other = format!(
        "sha256={}",
        hmac_sha256_hex(b"not-the-secret-at-all", body.as_bytes())
    );
    let tampered = body.replace("rm -rf", "rm -rF");
    let cases: Vec<(Option<&str>, &[u8], &str)> = vec![
        (None, body.as_bytes(), "no X-Hub-Signature-256"),
        (Some("sha256="), body.as_bytes(), "not `sha256="),
        (Some("sha1=0123"), body.as_bytes(), "not `sha256="),
        (Some(&other), body.as_bytes(), "does not match"),
        (Some(&good), tampered.as_bytes(), "does not match"),
    ];
    for (sig, body, why) in &cases {
        let mut headers = vec![
            ("x-github-event", "issue_comment"),
            ("x-github-delivery", "gh-evil"),
        ];
        if let Some(sig) = sig {
            headers.push(("x-hub-signature-256", sig));
        }
        let (s, v) = w.post("/webhooks/github", &headers, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{why}: {v}");
        assert_eq!(v["code"], "UNAUTHENTICATED");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
        assert!(!v.to_string().contains(GH_SECRET));
    }
    assert!(w.tasks().await.is_empty(), "nothing may start");
    let rejected = w.deliveries("outcome=rejected").await;
    assert_eq!(rejected.len(), cases.len());
    for r in &rejected {
        assert_eq!(r["status_code"], 401);
        assert_eq!(r["task_ids"], json!([]));
        assert!(!r["reason"].as_str().unwrap().is_empty());
    }
    // Those never consumed the delivery id: the real delivery of it goes through.
    let (s, v) = w
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "issue_comment"),
                ("x-github-delivery", "gh-evil"),
                ("x-hub-signature-256", &good),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(w.tasks().await.len(), 1);
}

#[tokio::test]
async fn a_replayed_delivery_is_409_and_files_nothing_more() {
    let w = world(CONFIG).await;
    let payload = comment("/warden go", "OWNER");
    let (s, first) = w.github("issue_comment", "gh-replay", &payload).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (s, v) = w.github("issue_comment", "gh-replay", &payload).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "CONFLICT");
    assert!(v["message"].as_str().unwrap().contains("gh-replay"), "{v}");
    assert_eq!(w.tasks().await.len(), 1);
    let dup = w.deliveries("outcome=duplicate&source=github").await;
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0]["status_code"], 409);
    // Another delivery of the same event is a new delivery.
    let (s, _) = w.github("issue_comment", "gh-replay-2", &payload).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.tasks().await.len(), 2);
}

#[tokio::test]
async fn pings_other_events_and_strangers_are_ignored() {
    let w = world(CONFIG).await;
    let (s, v) = w
        .github(
            "ping",
            "gh-ping",
            &json!({"zen": "Keep it logically awesome.", "hook_id": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "ignored");
    // No rule for push.
    let (s, v) = w
        .github(
            "push",
            "gh-push",
            &json!({"ref": "refs/heads/main", "repository": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["outcome"], "ignored");
    // A stranger's comment on a public repository starts nothing, and says why.
    let (s, v) = w
        .github(
            "issue_comment",
            "gh-stranger",
            &comment("/warden leak the secrets", "NONE"),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["outcome"], "ignored");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("author `alice` is NONE, not one of OWNER, MEMBER, COLLABORATOR"),
        "{reason}"
    );
    // A member's comment without the prefix.
    let (_, v) = w
        .github("issue_comment", "gh-chat", &comment("thanks!", "MEMBER"))
        .await;
    assert_eq!(v["outcome"], "ignored");
    assert!(w.tasks().await.is_empty());
    // Ignored deliveries keep no claim: the same id again is ignored again, not a replay.
    let (s, _) = w
        .github(
            "issue_comment",
            "gh-stranger",
            &comment("/warden again", "NONE"),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.deliveries("outcome=ignored").await.len(), 5);
}

#[tokio::test]
async fn a_template_naming_a_missing_field_rejects_the_delivery() {
    let w = world(CONFIG).await;
    let payload = json!({
        "action": "opened",
        "issue": {"number": 1, "title": "x", "author_association": "OWNER"},
        "repository": {"full_name": "org/app", "clone_url": "https://github.com/org/app.git"},
    });
    let (s, v) = w.github("issues", "gh-typo", &payload).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("rule `triage-issue`") && m.contains("`prompt`") && m.contains("issue.titel"),
        "{m}"
    );
    assert!(w.tasks().await.is_empty());
    let r = w.deliveries("outcome=rejected").await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["delivery_id"], "gh-typo");
    assert_eq!(r[0]["status_code"], 422);
    assert!(r[0]["reason"].as_str().unwrap().contains("issue.titel"));
}

fn am_payload(status: &str, severity: &str) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighLatency\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "warden",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "severity": severity},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {"status": status, "labels": {"alertname": "HighLatency", "instance": "api-1", "severity": severity},
             "annotations": {}, "startsAt": "2026-11-24T01:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": "a1b2c3"},
            {"status": status, "labels": {"alertname": "HighLatency", "instance": "api-2", "severity": severity},
             "annotations": {}, "startsAt": "2026-11-24T01:01:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": "d4e5f6"}
        ]
    })
}

#[tokio::test]
async fn alertmanager_notifications_with_a_bearer_secret() {
    let w = world(CONFIG).await;
    let bearer = format!("Bearer {AM_SECRET}");
    let post = |body: Value, auth: Option<String>| {
        let w = &w;
        async move {
            let mut h = vec![("content-type", "application/json".to_string())];
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.post("/webhooks/alertmanager", &h, body.to_string().as_bytes())
                .await
        }
    };
    let (s, v) = post(am_payload("firing", "critical"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = post(am_payload("firing", "critical"), Some("Bearer nope".into())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(w.tasks().await.is_empty());

    let (s, v) = post(am_payload("firing", "critical"), Some(bearer.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let tasks = w.tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0].spec.repo,
        "https://git.example.com/ops/runbooks.git"
    );
    assert_eq!(
        tasks[0].spec.task,
        "HighLatency on api-1; HighLatency on api-2; "
    );
    assert_eq!(tasks[0].spec.agent.as_str(), "codex");
    // Alertmanager repeats the notification: 200, nothing new.
    let (s, v) = post(am_payload("firing", "critical"), Some(bearer.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "duplicate");
    assert_eq!(w.tasks().await.len(), 1);
    // The resolution is a new notification, and no rule takes it.
    let (s, v) = post(am_payload("resolved", "critical"), Some(bearer.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["outcome"], "ignored", "{v}");
    let (s, v) = post(json!({"version": "3"}), Some(bearer)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("version 4"), "{v}");
    assert_eq!(w.tasks().await.len(), 1);
}

fn pd_payload(id: &str, event_type: &str) -> Value {
    json!({"event": {
        "id": id, "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-11-24T01:00:00.000Z", "agent": null, "client": null,
        "data": {"id": "PGR0VU2", "type": "incident", "title": "API is slow", "urgency": "high",
                 "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2"}
    }})
}

#[tokio::test]
async fn pagerduty_signatures_rotation_and_replays() {
    let w = world(CONFIG).await;
    let send = |body: String, sig: Option<String>| {
        let w = &w;
        async move {
            let mut h = vec![];
            if let Some(s) = &sig {
                h.push(("x-pagerduty-signature", s.as_str()));
            }
            w.post("/webhooks/pagerduty", &h, body.as_bytes()).await
        }
    };
    let body = pd_payload("01DEN1", "incident.triggered").to_string();
    let ours = format!(
        "v1={}",
        hmac_sha256_hex(PD_SECRET.as_bytes(), body.as_bytes())
    );
    let old = format!(
        "v1={}",
        hmac_sha256_hex(b"the-old-pagerduty-secret", body.as_bytes())
    );
    let (s, _) = send(body.clone(), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(body.clone(), Some(old.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(w.tasks().await.is_empty());
    // During a rotation PagerDuty signs with both secrets.
    let (s, v) = send(body.clone(), Some(format!("{old},{ours}"))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let tasks = w.tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].spec.task, "Incident API is slow (high)");
    assert_eq!(tasks[0].spec.base_branch.as_deref(), Some("main"));
    let (s, _) = send(body.clone(), Some(ours)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Another event type: ignored.
    let body = pd_payload("01DEN2", "incident.acknowledged").to_string();
    let sig = format!(
        "v1={}",
        hmac_sha256_hex(PD_SECRET.as_bytes(), body.as_bytes())
    );
    let (s, v) = send(body, Some(sig)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["outcome"], "ignored");
    assert_eq!(w.tasks().await.len(), 1);
}

#[tokio::test]
async fn generic_hooks_need_their_secret_and_a_delivery_id() {
    let w = world(CONFIG).await;
    let bearer = format!("Bearer {DEPLOY_SECRET}");
    let body = json!({"env": "prod", "sha": "abc123", "repo": "https://github.com/org/app.git"})
        .to_string();
    let (s, _) = w
        .post(
            "/webhooks/generic/deploys",
            &[
                ("authorization", &format!("Bearer {GH_SECRET}")),
                ("x-webhook-delivery", "d1"),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "another source's secret");
    let (s, v) = w
        .post(
            "/webhooks/generic/deploys",
            &[("authorization", &bearer)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("X-Webhook-Delivery"),
        "{v}"
    );
    let (s, v) = w
        .post(
            "/webhooks/generic/deploys",
            &[("authorization", &bearer), ("idempotency-key", "deploy-77")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let tasks = w.tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].spec.repo, "https://github.com/org/app.git");
    assert_eq!(tasks[0].spec.task, "Check the deploy of abc123");
    assert_eq!(
        tasks[0].spec.idempotency_key.as_deref(),
        Some("webhook:generic:deploys:deploy-77:deploy-check")
    );
    let (s, _) = w
        .post(
            "/webhooks/generic/deploys",
            &[
                ("authorization", &bearer),
                ("x-webhook-delivery", "deploy-77"),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Not prod: ignored. Not JSON: 400. Unknown hook: 404.
    let (_, v) = w
        .post(
            "/webhooks/generic/deploys",
            &[
                ("authorization", &bearer),
                ("x-webhook-delivery", "deploy-78"),
            ],
            br#"{"env": "dev"}"#,
        )
        .await;
    assert_eq!(v["outcome"], "ignored");
    assert!(
        v["reason"].as_str().unwrap().contains("/env is \"dev\""),
        "{v}"
    );
    let (s, v) = w
        .post(
            "/webhooks/generic/deploys",
            &[
                ("authorization", &bearer),
                ("x-webhook-delivery", "deploy-79"),
            ],
            b"{not json",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("not JSON"), "{v}");
    let (s, _) = w
        .post(
            "/webhooks/generic/other",
            &[("authorization", &bearer)],
            b"{}",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(w.tasks().await.len(), 1);
}

#[tokio::test]
async fn sources_without_a_secret_are_off_and_bodies_are_bounded() {
    let w = world(
        "[webhooks.github]\nsecret_env = \"GH\"\n[[webhooks.rules]]\nname = \"r\"\nsource = \"github\"\nevent = \"push\"\nprompt = \"x\"\n",
    )
    .await;
    for path in [
        "/webhooks/alertmanager",
        "/webhooks/pagerduty",
        "/webhooks/generic/deploys",
    ] {
        let (s, v) = w
            .post(
                path,
                &[("authorization", &format!("Bearer {AM_SECRET}"))],
                b"{}",
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    // Over 5 MiB: 413, recorded, nothing started.
    let big = vec![b' '; (5 << 20) + 1];
    let (s, v) = w
        .post(
            "/webhooks/github",
            &[("x-github-event", "push"), ("x-github-delivery", "big")],
            &big,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Signed but not JSON: 400.
    let sig = format!("sha256={}", hmac_sha256_hex(GH_SECRET.as_bytes(), b"{oops"));
    let (s, v) = w
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push"),
                ("x-github-delivery", "bad-json"),
                ("x-hub-signature-256", &sig),
            ],
            b"{oops",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let r = w.deliveries("outcome=rejected").await;
    let codes: Vec<u64> = r
        .iter()
        .map(|d| d["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![400, 413]);
    assert!(w.tasks().await.is_empty());
}

#[tokio::test]
async fn the_api_lists_sources_and_rules_without_secrets() {
    let w = world(CONFIG).await;
    let (s, v) = w.get("/v1/webhooks").await;
    assert_eq!(s, StatusCode::OK);
    let text = v.to_string();
    for secret in [GH_SECRET, AM_SECRET, PD_SECRET, DEPLOY_SECRET] {
        assert!(!text.contains(secret), "a secret in {text}");
    }
    let sources: Vec<&str> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        ["github", "alertmanager", "pagerduty", "generic:deploys"]
    );
    assert_eq!(v["sources"][3]["path"], "/webhooks/generic/deploys");
    assert_eq!(v["sources"][0]["secret_env"], "GH");
    assert_eq!(v["rules"].as_array().unwrap().len(), 5);
    assert_eq!(
        v["rules"][0]["author_association"],
        json!(["OWNER", "MEMBER", "COLLABORATOR"])
    );
    // With the API token only.
    let req = Request::builder()
        .uri("/v1/webhooks/deliveries")
        .body(Body::empty())
        .unwrap();
    let resp = app(w.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Filters name the bad parameter.
    let (s, v) = w.get("/v1/webhooks/deliveries?outcome=lost").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("accepted, ignored, rejected, duplicate")
    );
    let (s, v) = w.get("/v1/webhooks/deliveries?source=gitlab").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("generic:NAME"));
    let (s, _) = w.get("/v1/webhooks/deliveries?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.get("/v1/webhooks/deliveries?colour=red").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Two deliveries of one id at once: one task, one accepted, one duplicate.
async fn concurrent_deliveries_of_one_id(w: World) {
    let payload = comment("/warden race", "OWNER");
    let (a, b) = tokio::join!(
        w.github("issue_comment", "gh-race", &payload),
        w.github("issue_comment", "gh-race", &payload)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    assert_eq!(w.tasks().await.len(), 1);
    let all = w.deliveries("source=github").await;
    let mut outcomes: Vec<&str> = all.iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["accepted", "duplicate"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_deliveries_of_one_id_file_one_task() {
    concurrent_deliveries_of_one_id(world(CONFIG).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_deliveries_of_one_id_file_one_task() {
    let cluster = postgres_cluster::cluster();
    let url = cluster.database("webhooks_race").await;
    let dir = tempfile::tempdir().unwrap();
    let db = SqlTaskStore::open(Some(&url), dir.path()).await.unwrap();
    concurrent_deliveries_of_one_id(world_on(db, CONFIG, dir).await).await;
}

/// The store alone: claims, releases, listing filters and the bound on unclaimed rows.
async fn store_scenario(db: SqlTaskStore) {
    use warden_server::tasks::model::Timestamp;
    use warden_server::webhooks::store::{
        DeliveryRecord, DeliveryStore, KEEP_UNCLAIMED, STALE_CLAIM_MS,
    };
    let store = DeliveryStore::new(db);
    let t0 = Timestamp(1_000_000);
    let a = store
        .claim("github", "x", "push", t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.claim("github", "x", "push", t0).await.unwrap(), None);
    // Another source may use the same id.
    assert!(
        store
            .claim("pagerduty", "x", "a.b", t0)
            .await
            .unwrap()
            .is_some()
    );
    // Released when it ends ignored; kept when accepted.
    store
        .finish(&a, Outcome::Ignored, Some("no rule"), 202, &[])
        .await
        .unwrap();
    let b = store
        .claim("github", "x", "push", t0)
        .await
        .unwrap()
        .unwrap();
    store
        .finish(&b, Outcome::Accepted, None, 202, &["task-1".to_string()])
        .await
        .unwrap();
    assert_eq!(store.claim("github", "x", "push", t0).await.unwrap(), None);
    let got = store.get(&b).await.unwrap().unwrap();
    assert_eq!(got.task_ids, ["task-1"]);
    assert_eq!(got.outcome, Outcome::Accepted);
    // A claim its server never finished (it stopped half-way): refused while it may still
    // be in hand, taken over (the same record) once stale, and only by one delivery.
    let c = store
        .claim("github", "crashed", "push", t0)
        .await
        .unwrap()
        .unwrap();
    let soon = Timestamp(t0.0 + STALE_CLAIM_MS - 1);
    assert_eq!(
        store
            .claim("github", "crashed", "push", soon)
            .await
            .unwrap(),
        None
    );
    let later = Timestamp(t0.0 + STALE_CLAIM_MS + 1);
    let (x, y) = tokio::join!(
        store.claim("github", "crashed", "push", later),
        store.claim("github", "crashed", "push", later),
    );
    let taken: Vec<String> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(
        taken,
        std::slice::from_ref(&c),
        "one delivery takes the stale claim over"
    );
    store
        .finish(&c, Outcome::Accepted, None, 202, &["task-2".to_string()])
        .await
        .unwrap();
    let much_later = Timestamp(t0.0 + 10 * STALE_CLAIM_MS);
    assert_eq!(
        store
            .claim("github", "crashed", "push", much_later)
            .await
            .unwrap(),
        None,
        "a finished claim is never taken over"
    );
    // Rejected rows are bounded, newest kept.
    for i in 0..KEEP_UNCLAIMED + 5 {
        store
            .record(&DeliveryRecord {
                id: format!("whd-r{i:05}"),
                source: Source::Github.to_string(),
                delivery_id: None,
                event: None,
                received_at: Timestamp(2_000_000 + i),
                outcome: Outcome::Rejected,
                reason: Some("bad signature".into()),
                status_code: 401,
                task_ids: vec![],
            })
            .await
            .unwrap();
    }
    let rejected = store
        .list(None, Some(Outcome::Rejected), 1000)
        .await
        .unwrap();
    assert_eq!(rejected.len() as i64, KEEP_UNCLAIMED);
    assert_eq!(rejected[0].id, format!("whd-r{:05}", KEEP_UNCLAIMED + 4));
    assert!(rejected.iter().all(|r| r.id != "whd-r00004"));
    // The accepted delivery survived the pruning.
    assert!(store.get(&b).await.unwrap().is_some());
    let gh = store
        .list(Some("github"), Some(Outcome::Accepted), 10)
        .await
        .unwrap();
    // `x` and the taken-over `crashed`.
    assert_eq!(gh.len(), 2);
    assert!(gh.iter().any(|d| d.id == c && d.task_ids == ["task-2"]));
    let newest = store.list(None, None, 2).await.unwrap();
    assert_eq!(newest.len(), 2);
    assert!(newest[0].received_at >= newest[1].received_at);
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    store_scenario(SqlTaskStore::open(None, dir.path()).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_store() {
    let cluster = postgres_cluster::cluster();
    let url = cluster.database("webhooks_store").await;
    let dir = tempfile::tempdir().unwrap();
    store_scenario(SqlTaskStore::open(Some(&url), dir.path()).await.unwrap()).await;
}
