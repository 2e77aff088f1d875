//! The skills-driven agent behind `warden agent`.
//!
//! Owns: reading a repository's instruction files (CLAUDE.md, AGENTS.md, `@` imports),
//! skills and subagents; the permission rules and the pure `decide`; (to come) the model
//! providers, the tool loop and approvals.
//! Must never: load instructions from anywhere but the primary repository, execute a tool
//! call the rules deny, or crash on a malformed file: a bad file is a warning.

pub mod instructions;
pub mod permissions;
pub mod skills;
pub mod subagents;
