//! `warden sandboxd`: the runtime server inside a sandbox or pod.

use std::process::ExitCode;

use clap::Args;

/// (being written: issue 4)
#[derive(Debug, Args)]
pub struct SandboxdArgs {}

pub fn main(_args: SandboxdArgs) -> ExitCode {
    say!("warden: not built yet");
    ExitCode::from(69)
}
