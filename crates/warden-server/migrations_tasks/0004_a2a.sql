-- A2A (`warden_server::a2a`): which warden tasks were started through A2A, the context each
-- belongs to, and the messages clients sent on them (the task's A2A history). The task itself
-- (status, result) stays in `tasks`; the A2A task id is the warden task id.
CREATE TABLE a2a_tasks (
    task_id TEXT PRIMARY KEY,
    context_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX a2a_tasks_by_created ON a2a_tasks (created_ms, task_id);
CREATE INDEX a2a_tasks_by_context ON a2a_tasks (context_id, created_ms);

CREATE TABLE a2a_messages (
    task_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    -- The A2A Message as JSON.
    body TEXT NOT NULL,
    PRIMARY KEY (task_id, message_id)
);
