-- warden serve's store: templates, pools, sandbox records and events.
CREATE TABLE IF NOT EXISTS templates (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,          -- the Template as JSON
    updated_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS pools (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,          -- the PoolSpec as JSON
    updated_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sandboxes (
    id         TEXT PRIMARY KEY NOT NULL,
    template   TEXT NOT NULL,
    pool       TEXT,
    phase      TEXT NOT NULL,
    record     TEXT NOT NULL,          -- the SandboxRecord as JSON
    updated_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    sandbox    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS events_time ON events (time_ms);
CREATE INDEX IF NOT EXISTS events_sandbox ON events (sandbox, time_ms);
