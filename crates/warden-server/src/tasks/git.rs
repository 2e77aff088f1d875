//! The git workflow of a task, run in its sandbox (being written).
