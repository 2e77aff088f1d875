//! Webhooks: tasks started by events. GitHub (`/webhooks/github`), Prometheus Alertmanager
//! (`/webhooks/alertmanager`), PagerDuty (`/webhooks/pagerduty`) and named generic JSON hooks
//! (`/webhooks/generic/{name}`) post deliveries; rules of the config file's `[webhooks]`
//! section map a delivery to a task (repository, prompt filled from the payload, agent,
//! model).
//!
//! Owns: each source's authentication (HMAC-SHA256 signatures or a bearer secret, compared in
//! constant time), replay protection (a delivery id is accepted once), the deliveries' record
//! and the rules. Must never: start anything for a delivery that failed authentication, let
//! an unauthenticated request consume a delivery id, or show a secret in a log, an answer or
//! an error. A source without a secret is off (404).
//!
//! * [`config`]: the `[webhooks]` section, validated at start.
//! * [`verify`]: signatures and bearer secrets (pure).
//! * [`inbound`]: a delivery's id and event, per source (pure).
//! * [`rules`]: matching and filling the task's templates (pure).
//! * [`store`]: the `webhook_deliveries` table.
//! * [`api`]: the HTTP handlers.

pub mod api;
pub mod config;
pub mod inbound;
pub mod rules;
pub mod store;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

pub use config::{Rule, Secret, Source, WebhooksConfig};
pub use rules::Delivery;
pub use store::{DeliveryRecord, DeliveryStore, Outcome};

use crate::tasks::model::Timestamp;
use crate::tasks::runner::{SubmitError, Tasks};
use crate::tasks::store_sql::SqlTaskStore;

/// The largest delivery body: 5 MiB (GitHub caps its payloads at 25 MB, but the events a
/// rule can use are far smaller).
pub const MAX_BODY: usize = 5 << 20;

/// The webhooks of a server: configuration, secrets, deliveries and the task queue they
/// feed. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    config: WebhooksConfig,
    secrets: BTreeMap<Source, Secret>,
    store: DeliveryStore,
    tasks: Tasks,
    /// Rejections are logged within this budget: anyone can send them.
    reject_logs: LogBudget,
}

/// At most [`LogBudget::PER_WINDOW`] log lines per [`LogBudget::WINDOW`]; the next line
/// allowed says how many were dropped meanwhile.
#[derive(Debug, Default)]
struct LogBudget {
    state: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>>,
}

impl LogBudget {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
    const PER_WINDOW: u32 = 20;

    /// `Some(dropped since the last allowed line)` when a line may be logged now.
    fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (start, used, dropped) = state.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            *start = now;
            *used = 0;
        }
        if *used < Self::PER_WINDOW {
            *used += 1;
            Some(std::mem::take(dropped))
        } else {
            *dropped += 1;
            None
        }
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("sources", &self.inner.secrets.keys().collect::<Vec<_>>())
            .field("rules", &self.inner.config.rules.len())
            .finish_non_exhaustive()
    }
}

/// What the sender is answered, and what to log.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    /// Our record of the delivery, when one was kept.
    pub record_id: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub task_ids: Vec<String>,
    /// How many of `task_ids` are new (the others existed under their idempotency key).
    pub created: usize,
}

impl Webhooks {
    /// Reads every configured source's secret (`env` looks variables up) and serves the
    /// rules over `db` (the task database) and `tasks`.
    pub fn start(
        config: WebhooksConfig,
        env: &dyn Fn(&str) -> Option<String>,
        db: SqlTaskStore,
        tasks: Tasks,
    ) -> Result<Webhooks, String> {
        let mut secrets = BTreeMap::new();
        for (source, secret_ref) in config.sources() {
            let at = match &source {
                Source::Generic(n) => format!("webhooks.generic.{n}"),
                other => format!("webhooks.{other}"),
            };
            secrets.insert(source, secret_ref.resolve(&at, env)?);
        }
        Ok(Webhooks {
            inner: Arc::new(Inner {
                config,
                secrets,
                store: DeliveryStore::new(db),
                tasks,
                reject_logs: LogBudget::default(),
            }),
        })
    }

    pub fn config(&self) -> &WebhooksConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &DeliveryStore {
        &self.inner.store
    }

    /// Whether `source` is on.
    pub fn serves(&self, source: &Source) -> bool {
        self.inner.secrets.contains_key(source)
    }

    /// Handles one delivery of `source` (which must be on): authenticates it, records it,
    /// and files the tasks of the rules that apply. `body` is `Err` when it was over
    /// [`MAX_BODY`] or could not be read.
    pub async fn receive(
        &self,
        source: &Source,
        headers: &HeaderMap,
        body: Result<bytes::Bytes, String>,
    ) -> Answer {
        let now = Timestamp::now();
        let Some(secret) = self.inner.secrets.get(source) else {
            return Answer::error(StatusCode::NOT_FOUND, None, "this source is off".into());
        };
        // Shown in the record of a rejected delivery; not trusted for anything.
        let stated_id = match source {
            Source::Github => header(headers, "x-github-delivery"),
            Source::Generic(_) => {
                header(headers, "x-webhook-delivery").or_else(|| header(headers, "idempotency-key"))
            }
            _ => None,
        }
        .filter(|id| inbound::check_delivery_id("", id).is_ok());
        let rejected = |status: StatusCode, reason: String, delivery_id: Option<String>| {
            self.reject(source, now, status, reason, delivery_id)
        };
        let body = match body {
            Ok(b) => b,
            Err(reason) => {
                return rejected(StatusCode::PAYLOAD_TOO_LARGE, reason, stated_id).await;
            }
        };
        let auth = match source {
            Source::Github => verify::github(
                secret,
                header(headers, verify::GITHUB_SIGNATURE).as_deref(),
                &body,
            ),
            Source::Pagerduty => verify::pagerduty(
                secret,
                header(headers, verify::PAGERDUTY_SIGNATURE).as_deref(),
                &body,
            ),
            Source::Alertmanager | Source::Generic(_) => {
                verify::bearer(secret, header(headers, "authorization").as_deref())
            }
        };
        if let Err(reason) = auth {
            return rejected(StatusCode::UNAUTHORIZED, reason, stated_id).await;
        }
        let parsed = inbound::parse_body(&body).and_then(|payload| match source {
            Source::Github => inbound::github(headers, payload),
            Source::Alertmanager => inbound::alertmanager(payload),
            Source::Pagerduty => inbound::pagerduty(payload),
            Source::Generic(name) => inbound::generic(name, headers, payload),
        });
        let delivery = match parsed {
            Ok(d) => d,
            Err(reason) => return rejected(StatusCode::BAD_REQUEST, reason, stated_id).await,
        };
        if delivery.source == Source::Github && delivery.event == "ping" {
            let reason = "ping: the hook is set up".to_string();
            let rec = self
                .keep(
                    &delivery,
                    now,
                    Outcome::Ignored,
                    Some(&reason),
                    StatusCode::OK,
                )
                .await;
            tracing::info!(source = %source, delivery_id = %delivery.delivery_id, "webhook ping");
            return Answer {
                status: StatusCode::OK,
                record_id: rec,
                outcome: Outcome::Ignored,
                reason: Some(reason),
                task_ids: Vec::new(),
                created: 0,
            };
        }
        self.handle(delivery, now).await
    }

    /// An authenticated, parsed delivery: claim its id, apply the rules, file the tasks.
    async fn handle(&self, d: Delivery, now: Timestamp) -> Answer {
        let source = d.source.to_string();
        let label = d.label();
        let claim = match self
            .inner
            .store
            .claim(&source, &d.delivery_id, &label, now)
            .await
        {
            Ok(c) => c,
            Err(e) => return Answer::internal(e),
        };
        let Some(record_id) = claim else {
            // Alertmanager repeats a notification by design (repeat_interval, retries) and
            // counts anything but 2xx as a failed send: a repeat is answered 200.
            let status = if d.source == Source::Alertmanager {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            let reason = format!(
                "delivery `{}` of {source} was accepted already; nothing started",
                d.delivery_id
            );
            tracing::warn!(source = %source, delivery_id = %d.delivery_id, "webhook delivery replayed");
            let rec = self
                .keep(&d, now, Outcome::Duplicate, Some(&reason), status)
                .await;
            return Answer {
                status,
                record_id: rec,
                outcome: Outcome::Duplicate,
                reason: Some(reason),
                task_ids: Vec::new(),
                created: 0,
            };
        };
        let answer = self.apply_rules(&d).await;
        let answer = Answer {
            record_id: Some(record_id.clone()),
            ..answer
        };
        if let Err(e) = self
            .inner
            .store
            .finish(
                &record_id,
                answer.outcome,
                answer.reason.as_deref(),
                answer.status.as_u16(),
                &answer.task_ids,
            )
            .await
        {
            tracing::error!(error = %e, "could not record a webhook delivery's outcome");
        }
        match answer.outcome {
            Outcome::Accepted => tracing::info!(
                source = %source, delivery_id = %d.delivery_id, event = %label,
                tasks = ?answer.task_ids, "webhook delivery accepted"
            ),
            Outcome::Ignored => tracing::info!(
                source = %source, delivery_id = %d.delivery_id, event = %label,
                reason = answer.reason.as_deref().unwrap_or(""), "webhook delivery ignored"
            ),
            _ => tracing::warn!(
                source = %source, delivery_id = %d.delivery_id, event = %label,
                reason = answer.reason.as_deref().unwrap_or(""), "webhook delivery rejected"
            ),
        }
        answer
    }

    /// The rules of the delivery's source, applied: ignored, rejected, or the tasks filed.
    async fn apply_rules(&self, d: &Delivery) -> Answer {
        let mut skipped = Vec::new();
        let mut submissions = Vec::new();
        for rule in self
            .inner
            .config
            .rules
            .iter()
            .filter(|r| r.source() == d.source)
        {
            match rules::evaluate(rule, d) {
                rules::Verdict::Skip(why) => skipped.push(format!("rule `{}`: {why}", rule.name)),
                rules::Verdict::Match { command } => {
                    match rules::submission(rule, d, command.as_deref()) {
                        Ok(s) => submissions.push((rule.name.as_str(), s)),
                        Err(why) => {
                            return Answer::error(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                None,
                                format!("rule `{}`: {why}; nothing started", rule.name),
                            );
                        }
                    }
                }
            }
        }
        if submissions.is_empty() {
            let reason = if skipped.is_empty() {
                format!("no rule for {}", d.source)
            } else {
                format!("no rule matched: {}", skipped.join("; "))
            };
            return Answer {
                status: StatusCode::ACCEPTED,
                record_id: None,
                outcome: Outcome::Ignored,
                reason: Some(reason),
                task_ids: Vec::new(),
                created: 0,
            };
        }
        let mut task_ids = Vec::new();
        let mut created = 0;
        for (rule, submission) in submissions {
            match self.inner.tasks.submit(submission, None).await {
                Ok((task, new)) => {
                    created += usize::from(new);
                    task_ids.push(task.id);
                }
                Err(SubmitError::Invalid(errors)) => {
                    let why = errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Answer {
                        task_ids,
                        created,
                        ..Answer::error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            None,
                            format!("rule `{rule}`: the task is not valid: {why}"),
                        )
                    };
                }
                Err(SubmitError::Store(e)) => {
                    return Answer {
                        task_ids,
                        created,
                        ..Answer::internal(e)
                    };
                }
            }
        }
        Answer {
            status: StatusCode::ACCEPTED,
            record_id: None,
            outcome: Outcome::Accepted,
            reason: None,
            task_ids,
            created,
        }
    }

    /// Records and logs a delivery refused before it claimed an id.
    async fn reject(
        &self,
        source: &Source,
        now: Timestamp,
        status: StatusCode,
        reason: String,
        delivery_id: Option<String>,
    ) -> Answer {
        if let Some(dropped) = self.inner.reject_logs.allow() {
            tracing::warn!(
                source = %source,
                delivery_id = delivery_id.as_deref().unwrap_or(""),
                status = status.as_u16(),
                reason = %reason,
                not_logged_before = dropped,
                "webhook delivery rejected"
            );
        }
        let rec = DeliveryRecord {
            id: store::new_delivery_id(),
            source: source.to_string(),
            delivery_id,
            event: None,
            received_at: now,
            outcome: Outcome::Rejected,
            reason: Some(reason.clone()),
            status_code: status.as_u16(),
            task_ids: Vec::new(),
        };
        let record_id = match self.inner.store.record(&rec).await {
            Ok(()) => Some(rec.id),
            Err(e) => {
                tracing::error!(error = %e, "could not record a rejected webhook delivery");
                None
            }
        };
        Answer {
            record_id,
            ..Answer::error(status, None, reason)
        }
    }

    /// Records an authenticated delivery that holds no claim (ping, duplicate).
    async fn keep(
        &self,
        d: &Delivery,
        now: Timestamp,
        outcome: Outcome,
        reason: Option<&str>,
        status: StatusCode,
    ) -> Option<String> {
        let rec = DeliveryRecord {
            id: store::new_delivery_id(),
            source: d.source.to_string(),
            delivery_id: Some(d.delivery_id.clone()),
            event: Some(d.label()),
            received_at: now,
            outcome,
            reason: reason.map(String::from),
            status_code: status.as_u16(),
            task_ids: Vec::new(),
        };
        match self.inner.store.record(&rec).await {
            Ok(()) => Some(rec.id),
            Err(e) => {
                tracing::error!(error = %e, "could not record a webhook delivery");
                None
            }
        }
    }
}

impl Answer {
    fn error(status: StatusCode, record_id: Option<String>, reason: String) -> Answer {
        Answer {
            status,
            record_id,
            outcome: Outcome::Rejected,
            reason: Some(reason),
            task_ids: Vec::new(),
            created: 0,
        }
    }

    fn internal(e: impl std::fmt::Display) -> Answer {
        tracing::error!(error = %e, "webhook delivery failed");
        Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal error; the server log has the details".into(),
        )
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::LogBudget;

    #[test]
    fn rejection_logs_are_rate_limited() {
        let budget = LogBudget::default();
        for _ in 0..LogBudget::PER_WINDOW {
            assert_eq!(budget.allow(), Some(0));
        }
        assert_eq!(budget.allow(), None);
        assert_eq!(budget.allow(), None);
        // A new window: allowed again, telling how many were dropped.
        if let Ok(mut s) = budget.state.lock()
            && let Some((start, _, _)) = s.as_mut()
        {
            *start = start.checked_sub(LogBudget::WINDOW).unwrap_or(*start);
        }
        assert_eq!(budget.allow(), Some(2));
        assert_eq!(budget.allow(), Some(0));
    }
}
