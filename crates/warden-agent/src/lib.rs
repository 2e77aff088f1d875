//! The skills-driven agent behind `warden agent`.
//!
//! Owns: reading a repository's instruction files (CLAUDE.md, AGENTS.md, `@` imports),
//! skills and subagents; trust (pins on first use, signed manifests, the primary-repository
//! rule); the permission rules and the pure `decide`; the model providers (`model`, through
//! genai, with retries and timeouts, and a scripted LLM server for tests); the tool loop,
//! approvals and external agents (`run`).
//! Must never: load instructions from anywhere but the primary repository, execute a tool
//! call the rules deny, or crash on a malformed file: a bad file is a warning.

pub mod instructions;
pub mod model;
pub mod permissions;
pub mod run;
pub mod skills;
pub mod subagents;
pub mod trust;
