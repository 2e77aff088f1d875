//! Cron schedules: tasks filed on a cron expression read in a time zone.
//!
//! A schedule binds a cron expression (5 fields, 6 with seconds, or @daily...) and an IANA
//! time zone to a task (the body `POST /v1/tasks` takes). Schedules live in the task database
//! (SQLite or PostgreSQL), so every `warden serve` replica sharing it runs the scheduler, and
//! each run is claimed by one of them and files one task.
//!
//! * [`cron`]: expressions, time zones, fire times, DST (pure).
//! * [`model`]: the API's types and the missed-run policy (pure).
//! * [`store`]: the `schedules` table and the atomic claim of a due run.
//! * [`scheduler`]: [`Schedules`], shared by the API and the scheduler loop.
//! * [`api`]: the HTTP handlers under `/v1/schedules`.

pub mod api;
pub mod cron;
pub mod model;
pub mod scheduler;
pub mod store;

pub use model::{MissedPolicy, Schedule, ScheduleSpec};
pub use scheduler::{Clock, Schedules, SystemClock};
