//! OpenTelemetry GenAI spans of a task (being written).
