-- The task store: the queue, the tasks and their logs. The same SQL runs on SQLite and on
-- PostgreSQL, so it keeps to what both understand: TEXT, BIGINT (times in ms since the Unix
-- epoch), BOOLEAN, and no AUTOINCREMENT or SERIAL.

CREATE TABLE IF NOT EXISTS tasks (
    id               TEXT PRIMARY KEY NOT NULL,
    status           TEXT NOT NULL,              -- QUEUED, RUNNING, ... as TaskStatus::as_str
    repo             TEXT NOT NULL,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    started_ms       BIGINT,
    finished_ms      BIGINT,
    idempotency_key  TEXT UNIQUE,
    owner            TEXT,                       -- the replica holding it
    lease_until_ms   BIGINT,                     -- its runner's lease, while active
    attempts         BIGINT NOT NULL DEFAULT 0,
    reason           TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    last_event_seq   BIGINT NOT NULL DEFAULT 0,  -- the seq of its newest event
    -- The rest of the Task as a JSON object: every field without a column of its own.
    record           TEXT NOT NULL
);

-- The queue (status = 'QUEUED' ORDER BY created_ms, id), counts and reaping by status.
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, created_ms, id);
-- Listing, newest first.
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_ms, id);
CREATE INDEX IF NOT EXISTS tasks_repo ON tasks (repo, created_ms, id);

CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,                     -- from 1 within a task
    time_ms BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,                       -- JSON
    PRIMARY KEY (task_id, seq)
);
