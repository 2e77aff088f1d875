//! `warden trust`: review the instruction files of a repository that changed since they were
//! pinned, and accept them; `--check` does what `warden agent` does before its first model
//! call; `--list` shows the pins. The rules live in `warden_agent::trust`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use warden_agent::run::prepare::{PrepareError, collect_repository};
use warden_agent::trust::signature::manifest_text;
use warden_agent::trust::{
    AllowedSigner, FileTrustStore, RepoIdentity, SignaturePolicy, TrustCheck, TrustError,
    TrustStore, TrustedFile, accept, check, check_and_pin, render_changes, verify_signatures,
};

use crate::EXIT_USAGE;

const TRUST_HELP: &str =
    "What is pinned, for the repository root (the nearest directory above the current one
that holds .git, or --repo DIR), with the current directory as the working directory:

  CLAUDE.md, .claude/CLAUDE.md, CLAUDE.local.md (root down to the current directory), their
  @imports, or AGENTS.md; every valid skill's SKILL.md and supporting files; every subagent
  in .claude/agents; .claude/settings.json and .claude/settings.local.json.

Each file is pinned by SHA-256 with the first 64 KiB of its text, so a change can be shown
as a diff. Pins live in DATA/trust/<id>.json (mode 0600), keyed by the repository's
canonical path; the origin remote is recorded and a changed remote needs approval too.

Modes:
  warden trust            show what changed since the pins, then accept it after a prompt
                          (or at once with --yes) and pin the current files
  warden trust --check    what `warden agent` does first: pin silently on first use, pass
                          when nothing changed, exit 1 with the diffs when something did
  warden trust --list     the pins of the repository
  warden trust --manifest the sha256sum manifest of the current files, to sign for
                          --require-signatures (.warden/instructions.sha256, signed with
                          `minisign -Sm` or `ssh-keygen -Y sign -n warden-instructions`)

Exit status: 0 when the files are trusted (unchanged, pinned, or accepted); 1 when a change
was not accepted or a signature or the store failed; 64 for bad flags or --repo.

Examples:
  warden trust --check
  warden trust --repo ~/src/app --yes
  warden trust --list --json
  warden trust --require-signatures --signer ~/.ssh/id_ed25519.pub --check";

/// Review and accept changed instruction files (trust on first use).
#[derive(Debug, Args)]
#[command(
    after_long_help = TRUST_HELP,
    after_help = "See `warden trust --help` for what is pinned, the modes and examples."
)]
pub struct TrustArgs {
    /// The repository root (default: the git top level of the current directory).
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Accept without asking.
    #[arg(long, short = 'y', conflicts_with_all = ["list", "check", "manifest"])]
    yes: bool,
    /// Check as a run does: pin on first use, fail with the diffs on a change.
    #[arg(long, conflicts_with_all = ["list", "manifest"])]
    check: bool,
    /// Show what is pinned.
    #[arg(long, conflicts_with = "manifest")]
    list: bool,
    /// Print the manifest of the current files (sha256sum format) for signing.
    #[arg(long)]
    manifest: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    signatures: SignatureArgs,
    /// Data directory [default: /var/lib/warden for root, else $XDG_DATA_HOME/warden or
    /// ~/.local/share/warden].
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
}

/// `--require-signatures` and `--signer`, shared by `warden trust` and `warden agent`.
#[derive(Debug, Args)]
pub struct SignatureArgs {
    /// Refuse files not covered by a manifest signed by a --signer.
    #[arg(long, requires = "signer")]
    require_signatures: bool,
    /// A public key whose signatures are accepted: a minisign .pub file, an OpenSSH public
    /// key file, or an allowed_signers line in a file (repeatable).
    #[arg(long, value_name = "FILE")]
    signer: Vec<PathBuf>,
}

impl SignatureArgs {
    /// The policy these flags ask for; the error names the flag and the file.
    pub fn policy(&self) -> Result<SignaturePolicy, String> {
        let mut allowed_signers = Vec::new();
        for f in &self.signer {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("--signer {}: {e}", f.display()))?;
            let signer = AllowedSigner::parse(&text)
                .map_err(|e| format!("--signer {}: {e}", f.display()))?;
            allowed_signers.push(signer);
        }
        Ok(SignaturePolicy {
            required: self.require_signatures,
            allowed_signers,
        })
    }
}

/// What every mode needs.
struct Context {
    repo: RepoIdentity,
    files: Vec<TrustedFile>,
    store: FileTrustStore,
}

pub fn main(args: TrustArgs) -> ExitCode {
    match run(&args) {
        Ok(code) => code,
        Err(Failure::Usage(m)) => {
            say!("warden: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Refused(m)) => {
            say!("warden: {m}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Refused(String),
}

fn refused(e: impl std::fmt::Display) -> Failure {
    Failure::Refused(e.to_string())
}

fn run(args: &TrustArgs) -> Result<ExitCode, Failure> {
    let cx = context(args)?;
    if args.manifest {
        print(&manifest_text(&cx.files));
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        return list(args, &cx);
    }
    let policy = args.signatures.policy().map_err(Failure::Usage)?;
    let signed = verify_signatures(&policy, &cx.repo.root, &cx.files).map_err(refused)?;
    if args.check {
        return run_check(args, &cx, &signed);
    }
    review(args, &cx, &signed)
}

fn context(args: &TrustArgs) -> Result<Context, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Usage(format!("the current directory: {e}")))?;
    let collected = collect_repository(args.repo.as_deref(), &cwd).map_err(|e| match e {
        PrepareError::Usage(m) => Failure::Usage(m),
        other => refused(other),
    })?;
    let (repo, files) = (collected.repo, collected.files);
    let data = args
        .data
        .clone()
        .or_else(warden_server::default_data_dir)
        .ok_or_else(|| Failure::Usage("no data directory: pass --data DIR or set HOME".into()))?;
    Ok(Context {
        repo,
        files,
        store: FileTrustStore::in_data_dir(&data),
    })
}

fn run_check(
    args: &TrustArgs,
    cx: &Context,
    signed: &warden_agent::trust::SignatureReport,
) -> Result<ExitCode, Failure> {
    match check_and_pin(&cx.store, &cx.repo, &cx.files) {
        Ok(report) => {
            if args.json {
                print_json(&json!({
                    "repo": cx.repo.root,
                    "remote": cx.repo.remote,
                    "status": report.outcome,
                    "files": report.checked,
                    "signatures": signed,
                }));
            } else {
                print(&format!("{}\n", report.summary()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(TrustError::Changed {
            repo,
            diffs,
            remote,
        }) => {
            if args.json {
                print_json(&json!({
                    "repo": repo,
                    "remote": cx.repo.remote,
                    "status": "changed",
                    "changes": diffs,
                    "remote_change": remote,
                    "signatures": signed,
                }));
                say!(
                    "warden: instruction files changed since they were pinned; review and accept with `warden trust --repo {}`",
                    repo.display()
                );
            } else {
                let e = TrustError::Changed {
                    repo,
                    diffs,
                    remote,
                };
                say!("warden: {e}");
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(refused(e)),
    }
}

fn review(
    args: &TrustArgs,
    cx: &Context,
    signed: &warden_agent::trust::SignatureReport,
) -> Result<ExitCode, Failure> {
    let state = check(&cx.store, &cx.repo, &cx.files).map_err(refused)?;
    let root = cx.repo.root.display();
    let (status, text, changes, remote) = match &state {
        TrustCheck::Unchanged(_) => {
            let n = cx.files.len();
            if args.json {
                print_json(&json!({
                    "repo": cx.repo.root, "remote": cx.repo.remote, "status": "unchanged",
                    "files": n, "accepted": false, "signatures": signed,
                }));
            } else {
                print(&format!(
                    "{n} instruction files of {root} match their pins; nothing to accept.\n"
                ));
            }
            return Ok(ExitCode::SUCCESS);
        }
        TrustCheck::NotPinned => {
            let mut text = format!(
                "Nothing is pinned for {root} yet. These {} files would be pinned:\n",
                cx.files.len()
            );
            for f in &cx.files {
                text.push_str(&format!(
                    "  {}  {} ({})\n",
                    &f.sha256_hex()[..12],
                    f.key,
                    f.role
                ));
            }
            ("not-pinned", text, Vec::new(), None)
        }
        TrustCheck::Changed { diffs, remote, .. } => (
            "changed",
            format!(
                "Instruction files of {root} changed since they were pinned:\n{}",
                render_changes(diffs, remote.as_ref())
            ),
            diffs.clone(),
            remote.clone(),
        ),
    };
    if !args.json {
        print(&text);
    }
    let accepted = if args.yes {
        true
    } else if !args.json && std::io::stdin().is_terminal() {
        confirm()
    } else {
        false
    };
    let report = if accepted {
        Some(accept(&cx.store, &cx.repo, &cx.files).map_err(refused)?)
    } else {
        None
    };
    if args.json {
        print_json(&json!({
            "repo": cx.repo.root, "remote": cx.repo.remote, "status": status,
            "changes": changes, "remote_change": remote, "files": cx.files.len(),
            "accepted": accepted, "signatures": signed,
        }));
    } else if let Some(r) = &report {
        print(&format!("\n{}\n", r.summary()));
    }
    if accepted {
        Ok(ExitCode::SUCCESS)
    } else {
        say!(
            "warden: not accepted; the files stay untrusted. Run `warden trust --repo {root} --yes` to accept them."
        );
        Ok(ExitCode::from(1))
    }
}

/// Asks on the terminal; anything but yes is no.
fn confirm() -> bool {
    let mut err = std::io::stderr();
    let _ = write!(err, "\nAccept and pin the current files? [y/N] ");
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn list(args: &TrustArgs, cx: &Context) -> Result<ExitCode, Failure> {
    let path = cx.store.path_for(&cx.repo);
    let pins = cx.store.get(&cx.repo).map_err(refused)?;
    if args.json {
        let files: Vec<_> = pins
            .iter()
            .flat_map(|p| &p.files)
            .map(|(k, p)| {
                json!({
                    "path": k, "role": p.role, "sha256": p.sha256,
                    "text_kept": p.content.is_some(), "text_truncated": p.content_truncated,
                })
            })
            .collect();
        print_json(&json!({
            "repo": cx.repo.root,
            "store": path,
            "pinned": pins.is_some(),
            "remote": pins.as_ref().and_then(|p| p.remote.clone()),
            "pinned_at": pins.as_ref().map(|p| p.pinned_at),
            "files": files,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(pins) = pins else {
        print(&format!(
            "Nothing is pinned for {} (the first run pins its files).\n",
            cx.repo.root.display()
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let mut out = format!(
        "Repository: {}\nRemote: {}\nStore: {}\nPinned at: {} (Unix time)\n\nFiles ({})\n",
        cx.repo.root.display(),
        pins.remote.as_deref().unwrap_or("(none)"),
        path.display(),
        pins.pinned_at,
        pins.files.len()
    );
    for (k, p) in &pins.files {
        let text = match (&p.content, p.content_truncated) {
            (None, _) => "hash only",
            (Some(_), true) => "text cut",
            (Some(_), false) => "text",
        };
        out.push_str(&format!(
            "  {}  {:<12} {:<9} {k}\n",
            &p.sha256[..12],
            p.role.to_string(),
            text
        ));
    }
    print(&out);
    Ok(ExitCode::SUCCESS)
}

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

fn print_json(v: &serde_json::Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    print(&s);
}
