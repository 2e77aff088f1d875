//! `warden skills list` on a fixture repository, as a user meets it: the tables, the JSON, the
//! rejected skills with their reasons, and the exit codes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn warden() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.env_remove("WARDEN_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A repository with two good skills (one in each source, one model-hidden), a bad skill,
/// a duplicate, a subagent, nested instruction files with imports, and a cycle.
fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("repo");
    let home = tmp.path().canonicalize().unwrap().join("home");
    fs::create_dir_all(root.join(".git")).unwrap();
    fs::create_dir_all(&home).unwrap();
    write(&root, "CLAUDE.md", "# Project\nFollow @docs/style.md\n");
    write(&root, "docs/style.md", "Style. See @rules.md\n");
    write(&root, "docs/rules.md", "Rules. Back to @style.md\n");
    write(
        &root,
        "pkg/CLAUDE.md",
        "Package notes, and mine: @~/notes.md\n",
    );
    write(&home, "notes.md", "my own notes\n");
    write(
        &root,
        ".claude/skills/pdf-tools/SKILL.md",
        "---\nname: pdf-tools\ndescription: Extract text and tables from PDF files, fill forms, merge documents, and much more besides\nallowed-tools: Read Bash(python3 *)\n---\n# PDF\nBODY-MARKER\n",
    );
    write(
        &root,
        ".claude/skills/deploy/SKILL.md",
        "---\nname: deploy\ndescription: Deploy to production\ndisable-model-invocation: true\n---\nsteps\n",
    );
    write(
        &root,
        ".claude/skills/broken/SKILL.md",
        "---\nname: Broken_Skill\ndescription: d\n---\n",
    );
    write(
        &root,
        ".agents/skills/pdf-tools/SKILL.md",
        "---\nname: pdf-tools\ndescription: the agents copy\n---\n",
    );
    write(
        &root,
        ".agents/skills/csv/SKILL.md",
        "---\nname: csv\ndescription: Work with CSV files\nflavour: vanilla\n---\n",
    );
    write(
        &root,
        ".claude/agents/reviewer.md",
        "---\nname: reviewer\ndescription: Reviews diffs\ntools: Read, Grep\nmodel: sonnet\n---\nYou are a careful reviewer.\n",
    );
    write(
        &root,
        ".claude/agents/nameless.md",
        "---\ndescription: no name\n---\nprompt\n",
    );
    (tmp, root, home)
}

fn list(root: &Path, home: &Path, cwd: &Path, extra: &[&str]) -> Output {
    warden()
        .args(["skills", "list", "--repo"])
        .arg(root)
        .args(extra)
        .current_dir(cwd)
        .env("HOME", home)
        .output()
        .unwrap()
}

#[test]
fn table_shows_skills_subagents_instructions_and_rejections() {
    let (_tmp, root, home) = fixture();
    let out = list(&root, &home, &root.join("pkg"), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("Repository: {}", root.display())),
        "{stdout}"
    );
    assert!(stdout.contains("Working directory: pkg"), "{stdout}");
    // Skills: the table, flags and a truncated description.
    assert!(stdout.contains("Skills (3)"), "{stdout}");
    let pdf = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("pdf-tools"))
        .unwrap();
    assert!(
        pdf.contains(".claude/skills/pdf-tools") && pdf.contains("tools:2"),
        "{pdf}"
    );
    assert!(
        pdf.contains("Extract text and tables") && pdf.ends_with('…'),
        "{pdf}"
    );
    let deploy = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("deploy"))
        .unwrap();
    assert!(deploy.contains("user-only"), "{deploy}");
    assert!(stdout.contains(".agents/skills/csv"), "{stdout}");
    assert!(
        !stdout.contains("BODY-MARKER"),
        "the body is not read: {stdout}"
    );
    // Subagents.
    assert!(stdout.contains("Subagents (1)"), "{stdout}");
    let rev = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("reviewer"))
        .unwrap();
    assert!(rev.contains("Read,Grep") && rev.contains("sonnet"), "{rev}");
    // Instruction files root first, imports indented with their chain.
    assert!(stdout.contains("Instruction files (5)"), "{stdout}");
    assert!(
        stdout.contains("~/notes.md  (imported from pkg/CLAUDE.md)"),
        "{stdout}"
    );
    let order: Vec<usize> = [
        "  CLAUDE.md",
        "docs/style.md  (imported from CLAUDE.md)",
        "docs/rules.md  (imported from docs/style.md <- CLAUDE.md)",
        "  pkg/CLAUDE.md",
    ]
    .iter()
    .map(|s| stdout.find(s).unwrap_or_else(|| panic!("{s} in {stdout}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    // Rejected and warnings, with file, field and rule.
    assert!(stdout.contains("Rejected (2)"), "{stdout}");
    assert!(
        stdout.contains(".claude/skills/broken/SKILL.md: `name` may hold only lowercase letters"),
        "{stdout}"
    );
    assert!(
        stdout.contains(".claude/agents/nameless.md: `name` is required"),
        "{stdout}"
    );
    assert!(
        stdout.contains("docs/rules.md: line 1: import @style.md: import cycle"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains(".agents/skills/pdf-tools/SKILL.md: not loaded: a skill named \"pdf-tools\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(".agents/skills/csv/SKILL.md: unknown frontmatter key `flavour`"),
        "{stdout}"
    );
}

#[test]
fn json_holds_everything() {
    let (_tmp, root, home) = fixture();
    let out = list(&root, &home, &root, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deploy", "pdf-tools", "csv"]);
    let pdf = &v["skills"][1];
    assert_eq!(pdf["source"], ".claude/skills");
    assert_eq!(pdf["dir"], ".claude/skills/pdf-tools");
    assert_eq!(
        pdf["allowed_tools"],
        serde_json::json!(["Read", "Bash(python3 *)"])
    );
    assert_eq!(v["skills"][0]["disable_model_invocation"], true);
    assert_eq!(v["subagents"][0]["name"], "reviewer");
    assert_eq!(
        v["subagents"][0]["tools"],
        serde_json::json!(["Read", "Grep"])
    );
    // Without the working directory in pkg/, pkg/CLAUDE.md is not read.
    let parts: Vec<&str> = v["instructions"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["CLAUDE.md", "docs/style.md", "docs/rules.md"]);
    assert_eq!(
        v["instructions"]["parts"][2]["import_chain"],
        serde_json::json!(["docs/style.md", "CLAUDE.md"])
    );
    let files = v["instructions"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert!(
        files
            .iter()
            .all(|f| f["sha256"].as_str().unwrap().len() == 64)
    );
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["path"], ".claude/skills/broken/SKILL.md");
    assert_eq!(rejected[0]["field"], "name");
    assert!(v["warnings"].as_array().unwrap().len() >= 3);
}

#[test]
fn repo_defaults_to_the_git_top_level_of_the_current_directory() {
    let (_tmp, root, home) = fixture();
    let out = warden()
        .args(["skills", "list", "--json"])
        .current_dir(root.join("pkg"))
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repo_root"], root.to_str().unwrap());
    assert_eq!(v["instructions"]["parts"][3]["path"], "pkg/CLAUDE.md");
}

#[test]
fn an_empty_repository_lists_nothing_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = list(tmp.path(), tmp.path(), tmp.path(), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("Skills (0)\n  none"), "{stdout}");
    assert!(stdout.contains("Rejected (0)"), "{stdout}");
}

#[test]
fn a_bad_repo_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    for bad in [tmp.path().join("missing"), file] {
        let out = list(&bad, tmp.path(), tmp.path(), &[]);
        assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("--repo"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_teaches_with_examples() {
    let out = warden()
        .args(["skills", "list", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for want in [
        "--repo",
        "--json",
        "Examples:",
        "warden skills list --json",
        "rejected",
        "Exit status",
    ] {
        assert!(help.contains(want), "{want} in {help}");
    }
}
