use std::fs;
use std::os::unix::fs::symlink;
use std::time::Instant;

use super::*;

struct Repo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join("repo");
        fs::create_dir_all(&root).unwrap();
        Repo { _tmp: tmp, root }
    }

    fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn skills(&self) -> SkillSet {
        discover_skills(&self.root).unwrap()
    }
}

/// Discovers one skill written to `<source>/<dir>/SKILL.md`.
fn one(source: &str, dir: &str, text: &str) -> (Result<Skill, Rejected>, Vec<Warning>) {
    let repo = Repo::new();
    repo.write(&format!("{source}/{dir}/SKILL.md"), text);
    let mut set = repo.skills();
    assert_eq!(set.skills.len() + set.rejected.len(), 1, "{set:?}");
    match set.rejected.pop() {
        Some(r) => (Err(r), set.warnings),
        None => (Ok(set.skills.pop().unwrap()), set.warnings),
    }
}

fn fm(body: &str) -> String {
    format!("---\n{body}---\n# Body\n")
}

#[test]
fn frontmatter_validation_table() {
    let d1024 = "d".repeat(1024);
    let d1025 = "d".repeat(1025);
    let c500 = "c".repeat(500);
    let c501 = "c".repeat(501);
    let n64 = "n".repeat(64);
    let n65 = "n".repeat(65);
    // (what, source, dir name, file text, Ok or Err((field, rule substring)))
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        String,
        Result<(), (Option<&'a str>, &'a str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "minimal",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\n"),
            Ok(()),
        ),
        (
            "every field",
            ".claude/skills",
            "pdf",
            fm(concat!(
                "name: pdf\ndescription: Extract text\nlicense: MIT\ncompatibility: needs python3\n",
                "metadata:\n  author: me\n  version: 1.0\nallowed-tools: Read Bash(python3 *)\n",
                "when_to_use: for PDFs\nargument-hint: '[file]'\ndisable-model-invocation: false\n",
                "user-invocable: true\ndisallowed-tools: [Write, Edit]\nmodel: sonnet\npaths: '*.pdf, docs/**'\n"
            )),
            Ok(()),
        ),
        (
            "name boundary 64",
            ".claude/skills",
            &n64,
            fm(&format!("name: {n64}\ndescription: d\n")),
            Ok(()),
        ),
        (
            "name 65",
            ".claude/skills",
            &n65,
            fm(&format!("name: {n65}\ndescription: d\n")),
            Err((Some("name"), "1 to 64 characters, found 65")),
        ),
        (
            "name uppercase",
            ".claude/skills",
            "Pdf",
            fm("name: Pdf\ndescription: d\n"),
            Err((Some("name"), "lowercase letters")),
        ),
        (
            "name underscore",
            ".claude/skills",
            "p_df",
            fm("name: p_df\ndescription: d\n"),
            Err((Some("name"), "found '_'")),
        ),
        (
            "name leading hyphen",
            ".claude/skills",
            "-pdf",
            fm("name: -pdf\ndescription: d\n"),
            Err((Some("name"), "start or end with a hyphen")),
        ),
        (
            "name trailing hyphen",
            ".claude/skills",
            "pdf-",
            fm("name: pdf-\ndescription: d\n"),
            Err((Some("name"), "start or end with a hyphen")),
        ),
        (
            "name double hyphen",
            ".claude/skills",
            "p--df",
            fm("name: p--df\ndescription: d\n"),
            Err((Some("name"), "two hyphens")),
        ),
        (
            "name empty string",
            ".claude/skills",
            "pdf",
            fm("name: ''\ndescription: d\n"),
            Err((Some("name"), "found 0")),
        ),
        (
            "name not the dir",
            ".claude/skills",
            "pdf",
            fm("name: docx\ndescription: d\n"),
            Err((Some("name"), "must equal the directory name \"pdf\"")),
        ),
        (
            "name a number",
            ".claude/skills",
            "123",
            fm("name: 123\ndescription: d\n"),
            Err((Some("name"), "must be a string, found a number")),
        ),
        (
            "name absent in .claude",
            ".claude/skills",
            "pdf",
            fm("description: d\n"),
            Ok(()),
        ),
        (
            "name absent, bad dir",
            ".claude/skills",
            "My_Skill",
            fm("description: d\n"),
            Err((Some("name"), "the directory name is the name")),
        ),
        (
            "name absent in .agents",
            ".agents/skills",
            "pdf",
            fm("description: d\n"),
            Err((Some("name"), "is required in .agents/skills")),
        ),
        (
            "description missing",
            ".claude/skills",
            "pdf",
            fm("name: pdf\n"),
            Err((Some("description"), "is required")),
        ),
        (
            "description null",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription:\n"),
            Err((Some("description"), "is required")),
        ),
        (
            "description blank",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: '  '\n"),
            Err((Some("description"), "only whitespace")),
        ),
        (
            "description 1024",
            ".claude/skills",
            "pdf",
            fm(&format!("name: pdf\ndescription: {d1024}\n")),
            Ok(()),
        ),
        (
            "description 1025",
            ".claude/skills",
            "pdf",
            fm(&format!("name: pdf\ndescription: {d1025}\n")),
            Err((Some("description"), "1 to 1024 characters, found 1025")),
        ),
        (
            "description a list",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: [a]\n"),
            Err((Some("description"), "found a list")),
        ),
        (
            "description multi-line",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: |\n  line one\n  line two\n"),
            Ok(()),
        ),
        (
            "compatibility 500",
            ".claude/skills",
            "pdf",
            fm(&format!(
                "name: pdf\ndescription: d\ncompatibility: {c500}\n"
            )),
            Ok(()),
        ),
        (
            "compatibility 501",
            ".claude/skills",
            "pdf",
            fm(&format!(
                "name: pdf\ndescription: d\ncompatibility: {c501}\n"
            )),
            Err((Some("compatibility"), "found 501")),
        ),
        (
            "license a number",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nlicense: 2\n"),
            Err((Some("license"), "must be a string")),
        ),
        (
            "metadata a list",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nmetadata: [a]\n"),
            Err((Some("metadata"), "mapping of strings to strings")),
        ),
        (
            "metadata nested",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nmetadata:\n  a:\n    b: c\n"),
            Err((Some("metadata.a"), "must be a string, found a mapping")),
        ),
        (
            "allowed-tools unbalanced",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nallowed-tools: Bash(git\n"),
            Err((Some("allowed-tools"), "unclosed `(`")),
        ),
        (
            "allowed-tools a number",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nallowed-tools: 3\n"),
            Err((Some("allowed-tools"), "found a number")),
        ),
        (
            "allowed-tools list item",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nallowed-tools: [Read, 3]\n"),
            Err((Some("allowed-tools[1]"), "must be a string")),
        ),
        (
            "bool as yes",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\ndisable-model-invocation: yes\n"),
            Err((
                Some("disable-model-invocation"),
                "must be true or false, found the string \"yes\"",
            )),
        ),
        (
            "bool as number",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nuser-invocable: 1\n"),
            Err((Some("user-invocable"), "found a number")),
        ),
        (
            "when_to_use empty",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nwhen_to_use: ''\n"),
            Err((Some("when_to_use"), "found 0")),
        ),
        (
            "paths a mapping",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: d\npaths: {a: b}\n"),
            Err((Some("paths"), "comma-separated string or a list")),
        ),
        (
            "bad YAML",
            ".claude/skills",
            "pdf",
            fm("name: pdf\ndescription: [unclosed\n"),
            Err((None, "not valid YAML")),
        ),
        (
            "duplicate key",
            ".claude/skills",
            "pdf",
            fm("name: pdf\nname: pdf\ndescription: d\n"),
            Err((None, "not valid YAML")),
        ),
        (
            "YAML list",
            ".claude/skills",
            "pdf",
            fm("- name\n- description\n"),
            Err((None, "must be a YAML mapping")),
        ),
        (
            "no frontmatter",
            ".claude/skills",
            "pdf",
            "# Just Markdown\n".into(),
            Err((None, "no frontmatter")),
        ),
        (
            "empty file",
            ".claude/skills",
            "pdf",
            String::new(),
            Err((None, "no frontmatter")),
        ),
        (
            "unclosed",
            ".claude/skills",
            "pdf",
            "---\nname: pdf\ndescription: d\n# Body\n".into(),
            Err((None, "no closing line `---`")),
        ),
        (
            "BOM",
            ".claude/skills",
            "pdf",
            format!("\u{feff}{}", fm("name: pdf\ndescription: d\n")),
            Ok(()),
        ),
        (
            "CRLF",
            ".claude/skills",
            "pdf",
            "---\r\nname: pdf\r\ndescription: d\r\n---\r\nbody\r\n".into(),
            Ok(()),
        ),
        (
            "unknown key only warns",
            ".agents/skills",
            "pdf",
            fm("name: pdf\ndescription: d\nhooks: x\n"),
            Ok(()),
        ),
    ];
    for (what, source, dir, text, want) in cases {
        let (got, _) = one(source, dir, &text);
        match (want, got) {
            (Ok(()), Ok(skill)) => assert_eq!(skill.name, dir, "{what}"),
            (Err((field, rule)), Err(r)) => {
                assert_eq!(r.field.as_deref(), field, "{what}: {r}");
                assert!(r.reason.contains(rule), "{what}: want {rule:?} in {r}");
                assert!(r.path.ends_with(format!("{dir}/SKILL.md")), "{what}: {r}");
                assert!(r.to_string().contains("SKILL.md"), "{what}: {r}");
            }
            (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn every_field_is_read() {
    let text = fm(concat!(
        "name: pdf\ndescription: Extract text\nlicense: MIT\ncompatibility: needs python3\n",
        "metadata:\n  author: me\n  version: 1.0\nallowed-tools: Read Bash(python3 *)\n",
        "when_to_use: for PDFs\nargument-hint: '[file]'\ndisable-model-invocation: true\n",
        "user-invocable: false\ndisallowed-tools: [Write, Edit]\nmodel: sonnet\npaths: '*.pdf, docs/**'\n"
    ));
    let (skill, warnings) = one(".claude/skills", "pdf", &text);
    let s = skill.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.description, "Extract text");
    assert_eq!(s.license.as_deref(), Some("MIT"));
    assert_eq!(s.compatibility.as_deref(), Some("needs python3"));
    assert_eq!(s.metadata.get("author").map(String::as_str), Some("me"));
    assert_eq!(s.metadata.get("version").map(String::as_str), Some("1.0"));
    assert_eq!(
        s.allowed_tools,
        Some(vec!["Read".to_string(), "Bash(python3 *)".to_string()])
    );
    assert_eq!(
        s.disallowed_tools,
        Some(vec!["Write".to_string(), "Edit".to_string()])
    );
    assert_eq!(s.when_to_use.as_deref(), Some("for PDFs"));
    assert_eq!(s.argument_hint.as_deref(), Some("[file]"));
    assert!(s.disable_model_invocation);
    assert!(!s.user_invocable);
    assert_eq!(s.model.as_deref(), Some("sonnet"));
    assert_eq!(s.paths, ["*.pdf", "docs/**"]);
    assert_eq!(s.source, SkillSource::Claude);
}

#[test]
fn unknown_keys_are_warnings_naming_the_key() {
    let (skill, warnings) = one(
        ".claude/skills",
        "pdf",
        &fm("name: pdf\ndescription: d\ncontext: fork\n"),
    );
    assert!(skill.is_ok());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .message
            .contains("unknown frontmatter key `context` ignored")
    );
    assert!(warnings[0].path.ends_with("pdf/SKILL.md"));
}

#[test]
fn discovery_does_not_read_the_body() {
    let repo = Repo::new();
    // 200 MiB of body: far more than anything warden reads whole (64 MiB), so a discovery
    // that read it would fail or take long.
    let p = repo.write(
        ".claude/skills/big/SKILL.md",
        fm("name: big\ndescription: a big one\n"),
    );
    let f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.set_len(200 * 1024 * 1024).unwrap();
    let start = Instant::now();
    let set = repo.skills();
    assert!(start.elapsed().as_secs() < 5);
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    let skill = set.get("big").unwrap();
    assert_eq!(skill.description, "a big one");
    // The discovered skill holds no body: its serialized form has only frontmatter fields.
    let json = serde_json::to_string(skill).unwrap();
    assert!(json.len() < 1000, "{json}");
    assert!(!json.contains("# Body"));
    // Loading the body is what fails: the file is too large to read.
    let err = skill.load_body().unwrap_err();
    assert!(err.to_string().contains("more than the 64 MiB"), "{err}");
}

#[test]
fn load_body_reads_after_the_frontmatter_and_caps_it() {
    let repo = Repo::new();
    repo.write(
        ".claude/skills/pdf/SKILL.md",
        "---\r\nname: pdf\r\ndescription: d\r\n---\r\n# Use it\r\nstep 1\r\n",
    );
    let big_body = "z".repeat(MAX_FILE_BYTES * 2);
    repo.write(
        ".claude/skills/huge/SKILL.md",
        format!("---\nname: huge\ndescription: d\n---\n{big_body}"),
    );
    let set = repo.skills();
    let body = set.get("pdf").unwrap().load_body().unwrap();
    assert_eq!(body.text, "# Use it\r\nstep 1\r\n");
    assert_eq!(body.file.digest.sha256_hex().len(), 64);
    let huge = set.get("huge").unwrap().load_body().unwrap();
    assert!(huge.file.truncated_from.is_some());
    assert!(huge.text.len() < MAX_FILE_BYTES + 200);
    assert!(huge.text.contains("[warden: SKILL.md is"));
}

#[test]
fn claude_skill_wins_over_agents_skill_of_the_same_name() {
    let repo = Repo::new();
    repo.write(
        ".claude/skills/pdf/SKILL.md",
        fm("name: pdf\ndescription: from claude\n"),
    );
    repo.write(
        ".agents/skills/pdf/SKILL.md",
        fm("name: pdf\ndescription: from agents\n"),
    );
    repo.write(
        ".agents/skills/docx/SKILL.md",
        fm("name: docx\ndescription: only agents\n"),
    );
    let set = repo.skills();
    let names: Vec<_> = set
        .skills
        .iter()
        .map(|s| (s.name.as_str(), s.source))
        .collect();
    assert_eq!(
        names,
        [("pdf", SkillSource::Claude), ("docx", SkillSource::Agents)]
    );
    assert_eq!(set.get("pdf").unwrap().description, "from claude");
    assert_eq!(set.warnings.len(), 1);
    assert!(set.warnings[0].path.starts_with(repo.root.join(".agents")));
    assert!(set.warnings[0].message.contains(".claude/skills wins"));
}

#[test]
fn directories_without_skill_md_and_stray_files() {
    let repo = Repo::new();
    repo.write(".claude/skills/README.md", "not a skill");
    repo.write(".claude/skills/empty/notes.txt", "x");
    repo.write(".claude/skills/.hidden/SKILL.md", "x");
    let set = repo.skills();
    assert!(set.skills.is_empty());
    assert_eq!(set.rejected.len(), 1, "{:?}", set.rejected);
    assert!(set.rejected[0].reason.contains("has no SKILL.md"));
}

#[test]
fn skills_leading_out_of_the_repository_are_rejected() {
    let repo = Repo::new();
    let outside = repo.root.parent().unwrap().join("outside");
    fs::create_dir_all(outside.join("evil")).unwrap();
    fs::write(
        outside.join("evil/SKILL.md"),
        fm("name: evil\ndescription: d\n"),
    )
    .unwrap();
    fs::write(outside.join("SKILL.md"), fm("name: link\ndescription: d\n")).unwrap();
    fs::create_dir_all(repo.root.join(".claude/skills/link")).unwrap();
    symlink(outside.join("evil"), repo.root.join(".claude/skills/evil")).unwrap();
    symlink(
        outside.join("SKILL.md"),
        repo.root.join(".claude/skills/link/SKILL.md"),
    )
    .unwrap();
    let set = repo.skills();
    assert!(set.skills.is_empty(), "{:?}", set.skills);
    let reasons: Vec<String> = set.rejected.iter().map(|r| r.to_string()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("evil: resolves to") && reasons[0].contains("outside the repository"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("link/SKILL.md: resolves to")
            && reasons[1].contains("outside the skill directory"),
        "{reasons:?}"
    );
}

#[test]
fn supporting_files_are_listed_and_confined() {
    let repo = Repo::new();
    repo.write(
        ".claude/skills/pdf/SKILL.md",
        fm("name: pdf\ndescription: d\n"),
    );
    repo.write(".claude/skills/pdf/scripts/extract.py", "print(1)");
    repo.write(".claude/skills/pdf/references/api.md", "api");
    repo.write(".claude/skills/pdf/assets/template.txt", "t");
    repo.write(".claude/skills/pdf/notes.md", "n");
    let secret = repo.write("secret.txt", "top secret");
    let skill_dir = repo.root.join(".claude/skills/pdf");
    symlink(&secret, skill_dir.join("references/leak.md")).unwrap();
    symlink(skill_dir.join("notes.md"), skill_dir.join("alias.md")).unwrap();
    symlink(repo.root.clone(), skill_dir.join("assets/repo")).unwrap();
    let set = repo.skills();
    let skill = set.get("pdf").unwrap();
    let listed = skill.supporting_files().unwrap();
    let files: Vec<_> = listed
        .files
        .iter()
        .map(|f| (f.path.to_str().unwrap(), f.kind))
        .collect();
    assert_eq!(
        files,
        [
            ("alias.md", SupportingKind::Other),
            ("assets/template.txt", SupportingKind::Asset),
            ("notes.md", SupportingKind::Other),
            ("references/api.md", SupportingKind::Reference),
            ("scripts/extract.py", SupportingKind::Script),
        ]
    );
    let w: Vec<String> = listed.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|w| w.contains("not listed")), "{w:?}");

    assert_eq!(
        skill
            .read_supporting_file(Path::new("references/api.md"))
            .unwrap()
            .text,
        "api"
    );
    assert_eq!(
        skill
            .read_supporting_file(Path::new("./alias.md"))
            .unwrap()
            .text,
        "n"
    );
    let refused = [
        ("references/leak.md", "outside the skill directory"),
        ("assets/repo/secret.txt", "outside the skill directory"),
        ("../../../secret.txt", "`..` is refused"),
        ("scripts/../../pdf/notes.md", "`..` is refused"),
        ("/etc/passwd", "an absolute path is refused"),
        ("", "an empty path"),
        ("scripts", "not a regular file"),
        ("nope.md", "cannot be resolved"),
    ];
    for (rel, msg) in refused {
        let err = skill.read_supporting_file(Path::new(rel)).unwrap_err();
        assert!(err.to_string().contains(msg), "{rel}: {err}");
    }
}

#[test]
fn system_prompt_lists_names_and_descriptions_only() {
    let repo = Repo::new();
    repo.write(".claude/skills/pdf/SKILL.md", "---\nname: pdf\ndescription: |\n  Extract text\n  from PDFs.\nwhen_to_use: a PDF is mentioned\n---\nSECRET BODY\n");
    repo.write(
        ".claude/skills/deploy/SKILL.md",
        fm("name: deploy\ndescription: Ship it\ndisable-model-invocation: true\n"),
    );
    repo.write(
        ".claude/skills/lint/SKILL.md",
        fm("name: lint\ndescription: Lint code\nuser-invocable: false\n"),
    );
    let set = repo.skills();
    let section = system_prompt_section(&set.skills);
    assert!(
        section.contains("- pdf: Extract text from PDFs. When to use: a PDF is mentioned\n"),
        "{section}"
    );
    assert!(section.contains("- lint: Lint code\n"), "{section}");
    assert!(!section.contains("deploy"), "{section}");
    assert!(!section.contains("SECRET BODY"), "{section}");
    assert_eq!(system_prompt_section(&[]), "");
    let only_hidden: Vec<Skill> = set
        .skills
        .iter()
        .filter(|s| s.name == "deploy")
        .cloned()
        .collect();
    assert_eq!(system_prompt_section(&only_hidden), "");
}

#[test]
fn a_missing_repository_is_an_error_and_no_skills_is_empty() {
    let repo = Repo::new();
    assert!(discover_skills(&repo.root.join("missing")).is_err());
    let set = repo.skills();
    assert!(set.skills.is_empty() && set.rejected.is_empty() && set.warnings.is_empty());
}
