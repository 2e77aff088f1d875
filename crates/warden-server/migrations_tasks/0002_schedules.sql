-- Cron schedules: each files a task on its expression, in its time zone. The same SQL runs on
-- SQLite and PostgreSQL (TEXT, BIGINT ms since the Unix epoch, BOOLEAN).

CREATE TABLE IF NOT EXISTS schedules (
    name        TEXT PRIMARY KEY NOT NULL,   -- a DNS label
    cron        TEXT NOT NULL,               -- 5 fields, 6 with seconds, or @daily...
    timezone    TEXT NOT NULL,               -- IANA name
    missed      TEXT NOT NULL,               -- skip, run-once, run-all
    enabled     BOOLEAN NOT NULL,
    task        TEXT NOT NULL,               -- the TaskSubmission each run files, as JSON
    next_run_ms BIGINT,                      -- the next fire time; NULL while paused
    last_run_ms BIGINT,                      -- the fire time of its last run
    last_task   TEXT,                        -- the id of the last task it filed
    last_error  TEXT,                        -- why the last run filed none
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

-- The scheduler's question: which enabled schedules are due, and when is the next one.
CREATE INDEX IF NOT EXISTS schedules_next_run ON schedules (next_run_ms);
