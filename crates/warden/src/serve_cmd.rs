//! `warden serve`: the control plane's HTTP API (sandboxes, templates, pools).

use std::process::ExitCode;

use clap::Args;

/// (being written: issue 4)
#[derive(Debug, Args)]
pub struct ServeArgs {}

pub fn main(_args: ServeArgs) -> ExitCode {
    say!("warden: not built yet");
    ExitCode::from(69)
}
