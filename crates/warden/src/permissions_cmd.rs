//! `warden permissions check`: what the permission rules decide for a tool call.

use std::process::ExitCode;

use clap::Args;

/// (being written: issue 6)
#[derive(Debug, Args)]
pub struct PermissionsArgs {}

pub fn main(_args: PermissionsArgs) -> ExitCode {
    say!("warden: not built yet");
    ExitCode::from(69)
}
