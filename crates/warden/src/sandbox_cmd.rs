//! `warden sandbox ...`: the client of `warden serve`'s sandbox API.

use std::process::ExitCode;

use clap::Args;

/// (being written: issue 4)
#[derive(Debug, Args)]
pub struct SandboxArgs {}

pub fn main(_args: SandboxArgs) -> ExitCode {
    say!("warden: not built yet");
    ExitCode::from(69)
}
