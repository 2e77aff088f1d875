-- Webhook deliveries (`crate::webhooks::store`): every delivery a configured source received,
-- with what became of it. SQL both SQLite and PostgreSQL understand (see 0001_tasks.sql).
--
-- Replay protection: `claimed_id` holds the sender's delivery id while the delivery is being
-- handled and after it was accepted, NULL otherwise (rejected, ignored, duplicate). The unique
-- constraint on (source, claimed_id) lets one delivery of an id through; NULLs never collide on
-- either database, so rejected and unauthenticated deliveries never consume an id.

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          TEXT PRIMARY KEY NOT NULL,      -- whd-<random>, ours
    source      TEXT NOT NULL,                  -- github, alertmanager, pagerduty, generic:NAME
    delivery_id TEXT,                           -- the sender's, as given (when there was one)
    claimed_id  TEXT,                           -- = delivery_id while it holds the id
    event       TEXT,                           -- e.g. issue_comment.created
    received_ms BIGINT NOT NULL,
    outcome     TEXT NOT NULL,                  -- accepted, ignored, rejected, duplicate
    reason      TEXT,
    status_code BIGINT NOT NULL,
    task_ids    TEXT NOT NULL DEFAULT '[]',     -- JSON array of the tasks it filed
    UNIQUE (source, claimed_id)
);

-- Listing, newest first; pruning the rejected ones.
CREATE INDEX IF NOT EXISTS webhook_deliveries_received ON webhook_deliveries (received_ms, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_outcome ON webhook_deliveries (outcome, received_ms, id);
