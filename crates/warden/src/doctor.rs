//! `warden doctor`: which isolation layers this host can enforce, and why not.
//!
//! The answer comes from doing it: doctor starts a real sandbox under the default policy
//! (every layer allowed to degrade, so that it runs and reports instead of refusing) and
//! shows what that sandbox enforced, next to the kernel facts behind each answer.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use warden_jail::cgroup::CgroupHost;
use warden_jail::landlock::LandlockSupport;
use warden_jail::{
    Degraded, Jail, JailConfig, LayerReport, LayerStatus, Termination, host, render_table,
};
use warden_policy::Profile;

/// Show which isolation layers this host can enforce, and why not.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    uid: u32,
    landlock_abi: Option<i32>,
    landlock: String,
    cgroups: String,
    user_namespaces: String,
    /// What a sandbox under the default profile enforced here.
    layers: Vec<LayerReport>,
    /// Whether that test sandbox ran its command.
    sandbox_ran: bool,
    sandbox_error: Option<String>,
    /// Optional runtimes (layer 4), not used by `warden run` on this host yet.
    runtimes: Vec<Runtime>,
}

#[derive(Debug, Serialize)]
struct Runtime {
    name: &'static str,
    path: Option<PathBuf>,
}

pub fn main(args: DoctorArgs) -> ExitCode {
    let report = gather();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print_table(&report);
    }
    let all = report.sandbox_ran
        && report
            .layers
            .iter()
            .all(|l| !matches!(l.status, LayerStatus::Unavailable { .. }));
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn gather() -> Report {
    let landlock = LandlockSupport::probe();
    let cgroups = CgroupHost::discover()
        .map(|h| h.describe())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let userns = match host::user_namespaces() {
        Ok(()) => "available".to_string(),
        Err(why) => format!("unavailable: {why}"),
    };
    let (layers, ran, error) = trial_sandbox();
    Report {
        kernel: host::kernel_release(),
        uid: nix_uid(),
        landlock_abi: landlock.as_ref().ok().map(|s| s.abi),
        landlock: match &landlock {
            Ok(s) => format!("ABI {}", s.abi),
            Err(e) => e.clone(),
        },
        cgroups,
        user_namespaces: userns,
        layers,
        sandbox_ran: ran,
        sandbox_error: error,
        runtimes: vec![
            Runtime {
                name: "gvisor (runsc)",
                path: host::find_in_path("runsc"),
            },
            Runtime {
                name: "kata",
                path: host::find_in_path("kata-runtime"),
            },
        ],
    }
}

fn nix_uid() -> u32 {
    // The jail crate reads it the same way; doctor only displays it.
    host::HostUser::current(std::env::var_os("HOME")).uid
}

/// Runs `true` in a default sandbox with every layer allowed to degrade, and returns what
/// it enforced.
fn trial_sandbox() -> (Vec<LayerReport>, bool, Option<String>) {
    let workspace = std::env::temp_dir().join(format!("warden-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&workspace) {
        return (
            Vec::new(),
            false,
            Some(format!("cannot create {}: {e}", workspace.display())),
        );
    }
    let mut policy = Profile::Default.policy();
    policy.filesystem.workspace = Some(workspace.clone());
    let config = JailConfig {
        policy,
        command: vec!["true".into()],
        cwd: workspace.clone(),
        host_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        degraded: Degraded::all(),
        tty: false,
        stdio: [None, None, None],
        forward_signals: false,
        egress: None,
    };
    let result = Jail::prepare(config).and_then(|j| {
        let layers = j.layers().to_vec();
        j.run().map(|o| (layers, o))
    });
    let _ = std::fs::remove_dir_all(&workspace);
    match result {
        Ok((_, outcome)) => {
            let ok = outcome.termination == Termination::Exited { code: 0 };
            let err =
                (!ok).then(|| format!("the test command ended with {:?}", outcome.termination));
            (outcome.layers, ok, err)
        }
        Err(e) => (Vec::new(), false, Some(e.to_string())),
    }
}

fn print_table(r: &Report) {
    println!("warden doctor: what this host can enforce\n");
    println!(
        "  kernel            {} (running as uid {})",
        r.kernel, r.uid
    );
    println!("  user namespaces   {}", r.user_namespaces);
    println!("  landlock          {}", r.landlock);
    println!("  cgroups           {}", r.cgroups);
    for rt in &r.runtimes {
        match &rt.path {
            Some(p) => println!(
                "  runtime           {} at {} (optional layer 4; not used by `warden run` yet)",
                rt.name,
                p.display()
            ),
            None => println!(
                "  runtime           {} not installed (optional layer 4)",
                rt.name
            ),
        }
    }
    println!();
    if r.layers.is_empty() {
        println!("  no test sandbox could be prepared");
    } else {
        println!("layers of a sandbox under the default profile:");
        print!("{}", render_table(&r.layers));
    }
    println!();
    match &r.sandbox_error {
        None => println!("a test sandbox ran `true` successfully."),
        Some(e) => println!("the test sandbox failed: {e}"),
    }
    let missing: Vec<&str> = r
        .layers
        .iter()
        .filter(|l| matches!(l.status, LayerStatus::Unavailable { .. }))
        .map(|l| l.layer.name())
        .collect();
    if !missing.is_empty() {
        println!(
            "`warden run` refuses to start without these unless told otherwise: {}",
            missing
                .iter()
                .map(|m| format!("--allow-degraded {m}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
