use std::fs;
use std::os::unix::fs::symlink;

use super::*;

/// A repository in a temporary directory (with `.git`), and a fake home beside it.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("repo");
        let home = base.join("home");
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::create_dir_all(&home).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            home,
        }
    }

    fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn write_home(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.home.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn load_at(&self, cwd: &str) -> Instructions {
        let wd = self.root.join(cwd);
        fs::create_dir_all(&wd).unwrap();
        load_instructions(&InstructionSource {
            repo_root: self.root.clone(),
            working_dir: wd,
            home: Some(self.home.clone()),
        })
        .unwrap()
    }

    fn load(&self) -> Instructions {
        self.load_at("")
    }
}

/// The parts as `path relative to the repository (or ~/...)`.
fn names(ins: &Instructions, fx: &Fixture) -> Vec<String> {
    ins.parts
        .iter()
        .map(|p| display_path(&p.path, &fx.root, Some(&fx.home)))
        .collect()
}

fn warnings(ins: &Instructions) -> String {
    ins.warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn walk_goes_root_to_leaf_with_dot_claude_and_local_files() {
    let fx = Fixture::new();
    fx.write("CLAUDE.md", "root");
    fx.write(".claude/CLAUDE.md", "root dot-claude");
    fx.write("CLAUDE.local.md", "root local");
    fx.write("a/CLAUDE.md", "a");
    fx.write("a/b/.claude/CLAUDE.md", "b dot-claude");
    fx.write("a/b/c/CLAUDE.local.md", "c local");
    fx.write("a/b/c/d/CLAUDE.md", "below the working dir: never read");
    fx.write("other/CLAUDE.md", "a sibling: never read");
    let ins = fx.load_at("a/b/c");
    assert_eq!(
        names(&ins, &fx),
        [
            "CLAUDE.md",
            ".claude/CLAUDE.md",
            "CLAUDE.local.md",
            "a/CLAUDE.md",
            "a/b/.claude/CLAUDE.md",
            "a/b/c/CLAUDE.local.md"
        ]
    );
    let kinds: Vec<_> = ins.parts.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            PartKind::Project,
            PartKind::Project,
            PartKind::Local,
            PartKind::Project,
            PartKind::Project,
            PartKind::Local
        ]
    );
    assert!(ins.warnings.is_empty(), "{}", warnings(&ins));
    assert_eq!(ins.files.len(), 6);
    let rendered = ins.render();
    let root_at = rendered
        .find("<instructions path=\"CLAUDE.md\">\nroot\n")
        .unwrap();
    let leaf_at = rendered
        .find("<instructions path=\"a/b/c/CLAUDE.local.md\">\nc local\n")
        .unwrap();
    assert!(root_at < leaf_at);
}

#[test]
fn agents_md_is_the_fallback_only_without_claude_md() {
    /// (files, working dir, expected parts, expected warning substring)
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a [&'a str],
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (
            &[("AGENTS.md", "root"), ("x/AGENTS.md", "x")],
            "x",
            &["AGENTS.md", "x/AGENTS.md"],
            None,
        ),
        (
            &[("AGENTS.md", "root"), ("x/CLAUDE.md", "x")],
            "x",
            &["x/CLAUDE.md"],
            Some("AGENTS.md: not loaded: the repository has CLAUDE.md"),
        ),
        (
            &[("AGENTS.md", "root"), (".claude/CLAUDE.md", "dot")],
            "",
            &[".claude/CLAUDE.md"],
            Some("not loaded"),
        ),
        // CLAUDE.local.md is personal: AGENTS.md still loads, and the local file too.
        (
            &[("AGENTS.md", "root"), ("CLAUDE.local.md", "mine")],
            "",
            &["AGENTS.md", "CLAUDE.local.md"],
            None,
        ),
        // Imported by CLAUDE.md: loaded once, no warning.
        (
            &[("AGENTS.md", "shared"), ("CLAUDE.md", "@AGENTS.md")],
            "",
            &["CLAUDE.md", "AGENTS.md"],
            None,
        ),
        // AGENTS.md is plain Markdown: `@` is not an import there.
        (
            &[("AGENTS.md", "see @other.md"), ("other.md", "x")],
            "",
            &["AGENTS.md"],
            None,
        ),
        (&[], "", &[], None),
    ];
    for (files, cwd, want, warning) in cases {
        let fx = Fixture::new();
        for (p, t) in *files {
            fx.write(p, t);
        }
        let ins = fx.load_at(cwd);
        assert_eq!(names(&ins, &fx), *want, "files {files:?}");
        match warning {
            Some(w) => assert!(warnings(&ins).contains(w), "{}", warnings(&ins)),
            None => assert!(ins.warnings.is_empty(), "{}", warnings(&ins)),
        }
    }
}

#[test]
fn import_resolution_table() {
    struct Case {
        what: &'static str,
        files: &'static [(&'static str, &'static str)],
        home: &'static [(&'static str, &'static str)],
        want: &'static [&'static str],
        warning: Option<&'static str>,
    }
    let cases = [
        Case {
            what: "relative to the importing file",
            files: &[
                ("CLAUDE.md", "@docs/a.md"),
                ("docs/a.md", "@b.md"),
                ("docs/b.md", "b"),
            ],
            home: &[],
            want: &["CLAUDE.md", "docs/a.md", "docs/b.md"],
            warning: None,
        },
        Case {
            what: "~ with a fake HOME",
            files: &[("CLAUDE.md", "@~/.claude/mine.md")],
            home: &[(".claude/mine.md", "@other.md"), (".claude/other.md", "o")],
            want: &["CLAUDE.md", "~/.claude/mine.md", "~/.claude/other.md"],
            warning: None,
        },
        Case {
            what: "~user is refused",
            files: &[("CLAUDE.md", "@~root/x.md")],
            home: &[],
            want: &["CLAUDE.md"],
            warning: Some("only `~/`"),
        },
        Case {
            what: "relative out of the repository",
            files: &[("CLAUDE.md", "@../home/secret.md")],
            home: &[("secret.md", "s")],
            want: &["CLAUDE.md"],
            warning: Some("outside the repository"),
        },
        Case {
            what: "home file importing outside home",
            files: &[("CLAUDE.md", "@~/a.md")],
            home: &[("a.md", "@../repo/CLAUDE.md @../elsewhere.md")],
            want: &["CLAUDE.md", "~/a.md"],
            warning: Some("is outside your home directory"),
        },
        Case {
            what: "missing file",
            files: &[("CLAUDE.md", "see @nope.md.")],
            home: &[],
            want: &["CLAUDE.md"],
            warning: Some("line 1: import @nope.md: missing file"),
        },
        Case {
            what: "code spans and fences are ignored",
            files: &[
                ("CLAUDE.md", "`@a.md`\n```\n@a.md\n```\n~~~\n@a.md\n~~~\n"),
                ("a.md", "a"),
            ],
            home: &[],
            want: &["CLAUDE.md"],
            warning: None,
        },
        Case {
            what: "cycle",
            files: &[("CLAUDE.md", "@a.md"), ("a.md", "@b.md"), ("b.md", "@a.md")],
            home: &[],
            want: &["CLAUDE.md", "a.md", "b.md"],
            warning: Some("import cycle a.md -> b.md -> a.md: not followed"),
        },
        Case {
            what: "self import",
            files: &[("CLAUDE.md", "@CLAUDE.md")],
            home: &[],
            want: &["CLAUDE.md"],
            warning: Some("import cycle CLAUDE.md -> CLAUDE.md"),
        },
        Case {
            what: "four hops are followed, the fifth is not",
            files: &[
                ("CLAUDE.md", "@1.md"),
                ("1.md", "@2.md"),
                ("2.md", "@3.md"),
                ("3.md", "@4.md"),
                ("4.md", "@5.md"),
                ("5.md", "too deep"),
            ],
            home: &[],
            want: &["CLAUDE.md", "1.md", "2.md", "3.md", "4.md"],
            warning: Some("4.md: line 1: import @5.md: not followed: imports nest at most 4 hops"),
        },
        Case {
            what: "a diamond loads the shared file once",
            files: &[
                ("CLAUDE.md", "@a.md @b.md"),
                ("a.md", "@c.md"),
                ("b.md", "@c.md"),
                ("c.md", "c"),
            ],
            home: &[],
            want: &["CLAUDE.md", "a.md", "c.md", "b.md"],
            warning: None,
        },
        Case {
            what: "a directory is not a file",
            files: &[("CLAUDE.md", "@docs"), ("docs/x.md", "x")],
            home: &[],
            want: &["CLAUDE.md"],
            warning: Some("not a regular file"),
        },
    ];
    for case in &cases {
        let fx = Fixture::new();
        for (p, t) in case.files {
            fx.write(p, t);
        }
        for (p, t) in case.home {
            fx.write_home(p, t);
        }
        let ins = fx.load();
        assert_eq!(names(&ins, &fx), case.want, "{}", case.what);
        match case.warning {
            Some(w) => assert!(
                warnings(&ins).contains(w),
                "{}: want {w:?} in\n{}",
                case.what,
                warnings(&ins)
            ),
            None => assert!(ins.warnings.is_empty(), "{}: {}", case.what, warnings(&ins)),
        }
    }
}

#[test]
fn imported_parts_record_where_they_came_from() {
    let fx = Fixture::new();
    fx.write("CLAUDE.md", "@a.md");
    fx.write("a.md", "@b.md");
    fx.write("b.md", "b");
    let ins = fx.load();
    let b = &ins.parts[2];
    assert_eq!(b.depth, 2);
    assert_eq!(
        b.imported_from.as_deref(),
        Some(fx.root.join("a.md").as_path())
    );
    assert_eq!(
        ins.import_chain(b),
        [fx.root.join("a.md"), fx.root.join("CLAUDE.md")]
    );
    assert!(
        ins.render()
            .contains("<instructions path=\"b.md\" imported-from=\"a.md\">")
    );
    // Files in the home directory are labelled `~/...`, not with the host's home path.
    fx.write("CLAUDE.local.md", "@~/mine.md");
    fx.write_home("mine.md", "mine");
    let rendered = fx.load().render();
    assert!(
        rendered.contains("<instructions path=\"~/mine.md\" imported-from=\"CLAUDE.local.md\">"),
        "{rendered}"
    );
}

#[test]
fn absolute_imports_only_inside_the_repository() {
    let fx = Fixture::new();
    let inside_file = fx.write("docs/in.md", "in");
    let outside_file = fx.write_home("out.md", "out");
    fx.write(
        "CLAUDE.md",
        format!("@{} @{}", inside_file.display(), outside_file.display()),
    );
    let ins = fx.load();
    assert_eq!(names(&ins, &fx), ["CLAUDE.md", "docs/in.md"]);
    assert!(
        warnings(&ins).contains("absolute imports must lie inside the repository"),
        "{}",
        warnings(&ins)
    );
}

#[test]
fn symlinks_out_of_the_repository_are_refused() {
    let fx = Fixture::new();
    let secret = fx.write_home("secret.md", "secret");
    symlink(&secret, fx.root.join("CLAUDE.md")).unwrap();
    symlink(&secret, fx.root.join("linked.md")).unwrap();
    fx.write("CLAUDE.local.md", "@linked.md");
    let ins = fx.load();
    assert_eq!(names(&ins, &fx), ["CLAUDE.local.md"]);
    let w = warnings(&ins);
    assert!(
        w.contains("CLAUDE.md: not loaded: it is a symlink to"),
        "{w}"
    );
    assert!(w.contains("import @linked.md: refused"), "{w}");
    assert!(!ins.render().contains("secret"));
}

#[test]
fn huge_files_are_truncated_with_a_warning_and_hashed_whole() {
    let fx = Fixture::new();
    let big = "x".repeat(MAX_FILE_BYTES + 10);
    fx.write("CLAUDE.md", &big);
    let ins = fx.load();
    let part = &ins.parts[0];
    assert!(part.truncated);
    assert!(part.text.starts_with(&"x".repeat(MAX_FILE_BYTES)));
    assert!(part.text.contains("[warden: the rest of this file was cut"));
    assert!(
        warnings(&ins).contains(&format!(
            "truncated: the file is {} bytes and only the first {MAX_FILE_BYTES}",
            MAX_FILE_BYTES + 10
        )),
        "{}",
        warnings(&ins)
    );
    use sha2::Digest as _;
    let want: [u8; 32] = sha2::Sha256::digest(big.as_bytes()).into();
    assert_eq!(ins.files[0].sha256, want);
}

#[test]
fn the_total_limit_cuts_and_then_skips() {
    let fx = Fixture::new();
    // Five files of 250 KiB: four fit (1000 KiB), the fifth is cut at 24 KiB, a sixth skipped.
    let chunk = "y".repeat(250 * 1024);
    let mut claude = String::new();
    for i in 0..6 {
        fx.write(&format!("p{i}.md"), &chunk);
        claude.push_str(&format!("@p{i}.md\n"));
    }
    fx.write("CLAUDE.md", &claude);
    let ins = fx.load();
    let total: usize = ins.parts.iter().map(|p| p.text.len()).sum();
    assert!(total <= MAX_TOTAL_BYTES + 200, "{total}");
    assert_eq!(ins.parts.len(), 6, "CLAUDE.md and five imports");
    assert!(ins.parts[5].truncated);
    let w = warnings(&ins);
    assert!(
        w.contains("p4.md: truncated:") && w.contains("of the total limit"),
        "{w}"
    );
    assert!(
        w.contains("p5.md: not loaded: the instruction files already reached the total limit"),
        "{w}"
    );
}

#[test]
fn bom_crlf_and_invalid_utf8() {
    let fx = Fixture::new();
    fx.write("CLAUDE.md", "\u{feff}hello\r\n@a.md\r\n");
    fx.write("a.md", b"bad \xff byte");
    let ins = fx.load();
    assert_eq!(ins.parts[0].text, "hello\r\n@a.md\r\n");
    assert_eq!(names(&ins, &fx), ["CLAUDE.md", "a.md"]);
    assert!(warnings(&ins).contains("a.md: not valid UTF-8"));
}

#[test]
fn working_dir_outside_the_repository_is_an_error() {
    let fx = Fixture::new();
    let err = load_instructions(&InstructionSource {
        repo_root: fx.root.clone(),
        working_dir: fx.home.clone(),
        home: None,
    })
    .unwrap_err();
    assert!(
        matches!(err, InstructionsError::WorkingDirOutside { .. }),
        "{err}"
    );
    let err = load_instructions(&InstructionSource {
        repo_root: fx.root.join("missing"),
        working_dir: fx.root.clone(),
        home: None,
    })
    .unwrap_err();
    assert!(matches!(err, InstructionsError::RepoRoot { .. }), "{err}");
}

#[test]
fn repo_root_is_the_nearest_git_directory() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.root.join("a/b")).unwrap();
    assert_eq!(find_repo_root(&fx.root.join("a/b")), Some(fx.root.clone()));
    // A worktree or submodule has a `.git` file.
    fx.write("a/.git", "gitdir: elsewhere");
    assert_eq!(
        find_repo_root(&fx.root.join("a/b")),
        Some(fx.root.join("a"))
    );
}

#[test]
fn without_home_tilde_imports_are_refused() {
    let fx = Fixture::new();
    fx.write("CLAUDE.md", "@~/x.md");
    let ins = load_instructions(&InstructionSource {
        repo_root: fx.root.clone(),
        working_dir: fx.root.clone(),
        home: None,
    })
    .unwrap();
    assert!(warnings(&ins).contains("no home directory is known"));
}

#[test]
fn secrets_on_the_blocklist_are_never_imported() {
    let fx = Fixture::new();
    fx.write_home(".ssh/id_rsa", "-----BEGIN PRIVATE KEY----- secret");
    fx.write_home(".aws/credentials", "aws_secret_access_key = secret");
    fx.write_home(".claude/notes.md", "team notes");
    fx.write(
        "CLAUDE.md",
        "@~/.ssh/id_rsa\n@~/.aws/credentials\n@~/.claude/notes.md\n",
    );
    let ins = load_instructions(&InstructionSource {
        repo_root: fx.root.clone(),
        working_dir: fx.root.clone(),
        home: Some(fx.home.clone()),
    })
    .unwrap();
    let text = ins.render();
    assert!(
        !text.contains("secret"),
        "a secret reached the prompt: {text}"
    );
    assert!(text.contains("team notes"), "{text}");
    let w = warnings(&ins);
    assert!(w.contains("sensitive-path blocklist"), "{w}");
    assert!(w.contains(".ssh") && w.contains(".aws"), "{w}");
    assert!(
        ins.files
            .iter()
            .all(|f| !f.path.starts_with(fx.home.join(".ssh"))),
        "a refused file was read"
    );
}
