//! `warden skills list`: the skills, instruction files and subagents a repository has.

use std::process::ExitCode;

use clap::Args;

/// (being written: issue 6)
#[derive(Debug, Args)]
pub struct SkillsArgs {}

pub fn main(_args: SkillsArgs) -> ExitCode {
    say!("warden: not built yet");
    ExitCode::from(69)
}
