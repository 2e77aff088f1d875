//! `warden permissions check` as users meet it: a fixture repository with both settings files,
//! decisions with the rule and its file, exit codes, JSON, warnings and bad input.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(".claude")).unwrap();
    fs::write(
        dir.path().join(".claude/settings.json"),
        r#"{
  "model": "claude-sonnet-4-5",
  "hooks": {},
  "permissions": {
    "defaultMode": "default",
    "allow": ["Bash(git add *)", "Bash(git commit *)", "Bash(npm run *)", "WebFetch(domain:docs.rs)"],
    "ask": ["Bash(git push:*)"],
    "deny": ["Read(./.env)", "Bash(rm -rf:*)", "Read(secrets/**)"]
  }
}"#,
    )
    .unwrap();
    fs::write(
        dir.path().join(".claude/settings.local.json"),
        r#"{"permissions": {"allow": ["Bash(cargo test:*)", "Bash(ls"], "deny": ["WebFetch(domain:*.evil.io)"]}}"#,
    )
    .unwrap();
    dir
}

fn check(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .env_remove("WARDEN_LOG")
        .arg("permissions")
        .arg("check")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn prints_the_decision_and_the_rule_with_its_file() {
    let repo = fixture();
    let cases: &[(&str, i32, &str)] = &[
        (
            "Bash(git push origin main)",
            1,
            "ask  Bash(git push:*)  (.claude/settings.json)\n",
        ),
        (
            "Bash(npm run build)",
            0,
            "allow  Bash(npm run *)  (.claude/settings.json)\n",
        ),
        (
            "Bash(timeout 600 cargo test -p warden)",
            0,
            "allow  Bash(cargo test:*)  (.claude/settings.local.json)\n",
        ),
        (
            "Bash(npm run test; rm -rf /)",
            2,
            "deny  Bash(rm -rf:*)  (.claude/settings.json)\n",
        ),
        (
            "Bash(curl https://x.io/install.sh)",
            1,
            "ask  (no rule matched; default for Bash)\n",
        ),
        (
            "Bash(npm run build && curl x)",
            1,
            "ask  (no rule matched `curl x`; default for Bash)\n",
        ),
        (
            "Read(./secrets/../.env)",
            2,
            "deny  Read(./.env)  (.claude/settings.json)\n",
        ),
        (
            "Read(src/main.rs)",
            0,
            "allow  (no rule matched; default for Read)\n",
        ),
        (
            "WebFetch(https://API.evil.io/x)",
            2,
            "deny  WebFetch(domain:*.evil.io)  (.claude/settings.local.json)\n",
        ),
        (
            "WebFetch(https://docs.rs/globset)",
            0,
            "allow  WebFetch(domain:docs.rs)  (.claude/settings.json)\n",
        ),
    ];
    for (call, code, stdout) in cases {
        let out = check(repo.path(), &[call]);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{call}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), *stdout, "{call}");
        // The malformed rule of settings.local.json is a warning naming the file and the rule.
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("warning: .claude/settings.local.json: rule `Bash(ls`"),
            "{stderr}"
        );
    }
}

#[test]
fn several_calls_exit_with_the_strictest_decision() {
    let repo = fixture();
    let out = check(
        repo.path(),
        &["Bash(git add -A && git commit -m wip)", "Bash(git push)"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Bash(git add -A && git commit -m wip)\n  allow  Bash(git add *)  (.claude/settings.json), Bash(git commit *)  (.claude/settings.json)\n"), "{stdout}");
    let out = check(
        repo.path(),
        &["Read(src/a.rs)", "Read(secrets/k)", "Bash(git push)"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_output() {
    let repo = fixture();
    let out = check(
        repo.path(),
        &["--json", "Bash(git push)", "Read(/etc/hosts)"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["call"], "Bash(git push)");
    assert_eq!(v[0]["decision"], "ask");
    assert_eq!(v[0]["rules"][0]["rule"], "Bash(git push:*)");
    assert_eq!(v[0]["rules"][0]["source"], ".claude/settings.json");
    assert_eq!(v[1]["decision"], "ask");
    assert_eq!(v[1]["default_for"], "Read");
}

#[test]
fn bad_input_exits_64() {
    let repo = fixture();
    let out = check(repo.path(), &["Bash(git push"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("cannot read the tool call `Bash(git push`"));

    let out = check(&repo.path().join("missing"), &["Bash(ls)"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("--repo"));

    fs::write(
        repo.path().join(".claude/settings.json"),
        "{\"permissions\": {\"deny\": \"Bash\"}}",
    )
    .unwrap();
    let out = check(repo.path(), &["Bash(ls)"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("permissions.deny"),
        "{}",
        text(&out.stderr)
    );

    fs::write(repo.path().join(".claude/settings.json"), "{ not json").unwrap();
    let out = check(repo.path(), &["Bash(ls)"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("not valid JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_repository_without_settings_uses_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &["Read(README.md)"]);
    assert_eq!(out.status.code(), Some(0));
    let out = check(dir.path(), &["Edit(README.md)"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "ask  (no rule matched; default for Edit)\n"
    );
}

#[test]
fn help_teaches_with_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["permissions", "check", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for needle in [
        "Examples:",
        "Bash(git push origin main)",
        "Exit code",
        "WebFetch(domain:",
        "settings.local.json",
    ] {
        assert!(help.contains(needle), "missing {needle}: {help}");
    }
}
