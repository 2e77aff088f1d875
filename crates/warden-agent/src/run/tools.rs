//! The built-in tools, with Claude Code's names and input fields: Bash, Read, Write, Edit,
//! Glob, Grep (run in the sandbox through the [`ToolHost`]), and Skill, TodoWrite and Task
//! (handled by the loop itself, see `agent.rs`).
//!
//! Every file and command touches the sandbox only: Read and Write of workspace files go
//! through the runtime's file API (confined beneath the workspace), Read of any other path,
//! Glob and Grep run `cat`, `find` and `grep` inside the sandbox, whose own layers decide
//! what they may see.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use warden_sandbox::DriverError;
use warden_sandboxd::proto::{Command, ExecRequest};

use super::host::{ToolHost, inside_workspace};
use crate::model::ToolDefinition;

pub const BASH: &str = "Bash";
pub const READ: &str = "Read";
pub const WRITE: &str = "Write";
pub const EDIT: &str = "Edit";
pub const GLOB: &str = "Glob";
pub const GREP: &str = "Grep";
pub const SKILL: &str = "Skill";
pub const TODO: &str = "TodoWrite";
pub const TASK: &str = "Task";

/// Every built-in tool, in the order they are offered.
pub const ALL_TOOLS: &[&str] = &[BASH, READ, WRITE, EDIT, GLOB, GREP, SKILL, TODO, TASK];

/// Bash's timeout when the model gives none, and the most it may ask for.
pub const BASH_DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
pub const BASH_MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Lines Read returns when the model gives no limit, and the longest line it shows whole.
pub const READ_DEFAULT_LINES: usize = 2000;
pub const READ_MAX_LINE: usize = 2000;
/// The largest file Read, Edit or Write handles.
pub const MAX_FILE: usize = 10 * 1024 * 1024;
/// Entries Glob returns at most.
pub const GLOB_MAX: usize = 100;

/// A tool's answer to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }
    pub fn error(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: true,
        }
    }
}

/// The definitions of the named tools (unknown names are skipped).
pub fn definitions(names: &[&str]) -> Vec<ToolDefinition> {
    names.iter().filter_map(|n| definition(n)).collect()
}

fn definition(name: &str) -> Option<ToolDefinition> {
    let (description, schema) = match name {
        BASH => (
            "Runs a shell command (bash -c) in the sandbox, in the workspace directory, and returns its output and exit code. Each call starts a new shell. The sandbox reaches the network only through its allowlist proxy.",
            json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The command line."},
                "timeout": {"type": "integer", "description": "Milliseconds before the command is killed (default 120000, at most 600000)."},
                "description": {"type": "string", "description": "What the command does, in a few words."}
            }, "required": ["command"]}),
        ),
        READ => (
            "Reads a text file and returns its lines numbered from 1 (cat -n style). Use offset and limit for long files.",
            json!({"type": "object", "properties": {
                "file_path": {"type": "string", "description": "Absolute path (or relative to the workspace)."},
                "offset": {"type": "integer", "description": "The first line to return (1-based)."},
                "limit": {"type": "integer", "description": "How many lines (default 2000)."}
            }, "required": ["file_path"]}),
        ),
        WRITE => (
            "Creates or replaces a file in the workspace with the given content.",
            json!({"type": "object", "properties": {
                "file_path": {"type": "string"},
                "content": {"type": "string"}
            }, "required": ["file_path", "content"]}),
        ),
        EDIT => (
            "Replaces an exact string in a workspace file. old_string must occur exactly once unless replace_all is true.",
            json!({"type": "object", "properties": {
                "file_path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean", "default": false}
            }, "required": ["file_path", "old_string", "new_string"]}),
        ),
        GLOB => (
            "Finds files by glob pattern (`**/*.rs`, `src/*.ts`) below a directory, newest first.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "The directory to search (default: the workspace)."}
            }, "required": ["pattern"]}),
        ),
        GREP => (
            "Searches file contents with a Perl-compatible regular expression.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "File or directory to search (default: the workspace)."},
                "glob": {"type": "string", "description": "Only files whose name matches, e.g. `*.rs`."},
                "type": {"type": "string", "description": "Only files of this type: rust, py, js, ts, go, java, c, cpp, md, json, toml, yaml, sh."},
                "output_mode": {"type": "string", "enum": ["files_with_matches", "content", "count"], "default": "files_with_matches"},
                "-i": {"type": "boolean", "description": "Ignore case."},
                "-n": {"type": "boolean", "description": "Line numbers (content mode; default true)."},
                "-A": {"type": "integer"}, "-B": {"type": "integer"}, "-C": {"type": "integer"},
                "head_limit": {"type": "integer", "description": "Return only the first N lines or files."}
            }, "required": ["pattern"]}),
        ),
        SKILL => (
            "Loads a skill's full instructions by name (see the Skills section of the system prompt). Use it before acting on a task the skill covers.",
            json!({"type": "object", "properties": {
                "skill": {"type": "string", "description": "The skill's name."},
                "args": {"type": "string", "description": "Arguments for the skill, if it takes any."}
            }, "required": ["skill"]}),
        ),
        TODO => (
            "Writes the plan: the whole to-do list, replacing the previous one.",
            json!({"type": "object", "properties": {
                "todos": {"type": "array", "items": {"type": "object", "properties": {
                    "content": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                    "activeForm": {"type": "string"}
                }, "required": ["content", "status"]}}
            }, "required": ["todos"]}),
        ),
        TASK => (
            "Hands a self-contained task to a sub-agent, which works with its own tools and context and returns its final answer.",
            json!({"type": "object", "properties": {
                "description": {"type": "string", "description": "A short label (3-5 words)."},
                "prompt": {"type": "string", "description": "The whole task."},
                "subagent_type": {"type": "string", "description": "A subagent's name, or general-purpose."}
            }, "required": ["description", "prompt"]}),
        ),
        _ => return None,
    };
    Some(ToolDefinition {
        name: name.to_string(),
        description: description.to_string(),
        input_schema: schema,
    })
}

/// The arguments of a call, or a message naming the bad field.
pub fn parse_args<T: for<'de> Deserialize<'de>>(tool: &str, input: &Value) -> Result<T, String> {
    if !input.is_object() {
        return Err(format!(
            "invalid arguments for {tool}: expected a JSON object, got {}",
            shorten(&input.to_string(), 200)
        ));
    }
    serde_json::from_value(input.clone()).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

#[derive(Debug, Deserialize)]
pub struct BashArgs {
    pub command: String,
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct ReadArgs {
    pub file_path: String,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct WriteArgs {
    pub file_path: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
pub struct EditArgs {
    pub file_path: String,
    pub old_string: String,
    pub new_string: String,
    #[serde(default)]
    pub replace_all: bool,
}

#[derive(Debug, Deserialize)]
pub struct GlobArgs {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct GrepArgs {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub glob: Option<String>,
    #[serde(default, rename = "type")]
    pub file_type: Option<String>,
    #[serde(default)]
    pub output_mode: Option<String>,
    #[serde(default, rename = "-i")]
    pub ignore_case: bool,
    #[serde(default = "yes", rename = "-n")]
    pub line_numbers: bool,
    #[serde(default, rename = "-A")]
    pub after: Option<u32>,
    #[serde(default, rename = "-B")]
    pub before: Option<u32>,
    #[serde(default, rename = "-C")]
    pub context: Option<u32>,
    #[serde(default)]
    pub head_limit: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct SkillArgs {
    #[serde(alias = "command", alias = "name")]
    pub skill: String,
    #[serde(default)]
    pub args: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize, Clone, PartialEq)]
pub struct Todo {
    pub content: String,
    pub status: TodoStatus,
    #[serde(
        default,
        rename = "activeForm",
        skip_serializing_if = "Option::is_none"
    )]
    pub active_form: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TodoStatus {
    Pending,
    InProgress,
    Completed,
}

#[derive(Debug, Deserialize)]
pub struct TodoArgs {
    pub todos: Vec<Todo>,
}

#[derive(Debug, Deserialize)]
pub struct TaskArgs {
    #[serde(default)]
    pub description: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub subagent_type: Option<String>,
}

/// `path` made absolute against the workspace, `..` resolved lexically.
pub fn absolute(host: &dyn ToolHost, path: &str) -> PathBuf {
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        host.workspace().join(p)
    };
    crate::permissions::normalize(&joined)
}

fn driver_error(what: &str, e: DriverError) -> ToolOutput {
    ToolOutput::error(format!("{what}: {e}"))
}

/// Bash: `bash -c COMMAND` in the workspace.
pub async fn bash(host: &dyn ToolHost, args: &BashArgs) -> ToolOutput {
    let timeout = args
        .timeout
        .map(Duration::from_millis)
        .unwrap_or(BASH_DEFAULT_TIMEOUT)
        .min(BASH_MAX_TIMEOUT);
    let mut request = ExecRequest::new(Command::Argv(vec![
        "/bin/bash".into(),
        "-c".into(),
        args.command.clone(),
    ]));
    request.timeout_ms = Some(timeout.as_millis() as u64);
    match host.exec(request).await {
        Ok(r) => {
            let mut out = r.stdout;
            if !r.stderr.is_empty() {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&r.stderr);
            }
            if r.truncated {
                out.push_str("\n[output past the sandbox's per-stream limit was dropped]");
            }
            if r.timed_out {
                out.push_str(&format!(
                    "\n[killed after {} s: the command timed out]",
                    timeout.as_secs()
                ));
            } else if r.exit_code != 0 {
                out.push_str(&format!("\n[exit code {}]", r.exit_code));
            }
            if out.is_empty() {
                out = "(no output)".into();
            }
            ToolOutput {
                content: out,
                is_error: r.exit_code != 0,
            }
        }
        Err(e) => driver_error("the command could not run in the sandbox", e),
    }
}

/// The bytes of a file: through the file API inside the workspace, `head -c` in the sandbox
/// elsewhere.
async fn read_bytes(host: &dyn ToolHost, path: &Path) -> Result<(Vec<u8>, bool), String> {
    match inside_workspace(host.workspace(), path) {
        Some(rel) if rel.is_empty() => Err(format!(
            "{} is a directory: use Glob or Bash `ls` to list it",
            path.display()
        )),
        Some(rel) => host.read_file(&rel, MAX_FILE).await.map_err(|e| match e {
            e if e.code() == warden_sandboxd::proto::ErrorCode::NotFound => {
                format!("{} does not exist", path.display())
            }
            e => format!("cannot read {}: {e}", path.display()),
        }),
        None => {
            let mut request = ExecRequest::new(Command::Argv(vec![
                "head".into(),
                "-c".into(),
                (MAX_FILE + 1).to_string(),
                "--".into(),
                path.to_string_lossy().into_owned(),
            ]));
            request.timeout_ms = Some(30_000);
            let r = host
                .exec(request)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if r.exit_code != 0 {
                return Err(format!(
                    "cannot read {} in the sandbox: {}",
                    path.display(),
                    r.stderr.trim()
                ));
            }
            let mut bytes = r.stdout.into_bytes();
            let more = bytes.len() > MAX_FILE || r.truncated;
            bytes.truncate(MAX_FILE);
            Ok((bytes, more))
        }
    }
}

/// Read: numbered lines.
pub async fn read(host: &dyn ToolHost, args: &ReadArgs) -> ToolOutput {
    let path = absolute(host, &args.file_path);
    let (bytes, more) = match read_bytes(host, &path).await {
        Ok(b) => b,
        Err(e) => return ToolOutput::error(e),
    };
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return ToolOutput::ok(format!(
            "{} is a binary file ({} bytes{}); it is not shown",
            path.display(),
            bytes.len(),
            if more { " or more" } else { "" }
        ));
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.is_empty() {
        return ToolOutput::ok(format!("{} is empty", path.display()));
    }
    let offset = args.offset.unwrap_or(1).max(1);
    let limit = args.limit.unwrap_or(READ_DEFAULT_LINES).max(1);
    let total = text.lines().count();
    if offset > total {
        return ToolOutput::error(format!(
            "{} has {total} lines; offset {offset} is past its end",
            path.display()
        ));
    }
    let mut out = String::new();
    for (i, line) in text.lines().enumerate().skip(offset - 1).take(limit) {
        let mut line = line.to_string();
        if line.len() > READ_MAX_LINE {
            cut(&mut line, READ_MAX_LINE);
            line.push_str("… [line cut]");
        }
        out.push_str(&format!("{:>6}\t{line}\n", i + 1));
    }
    let shown_to = (offset - 1 + limit).min(total);
    if shown_to < total || more {
        out.push_str(&format!(
            "[lines {offset}-{shown_to} of {total}{}; read on with offset {}]\n",
            if more {
                "+ (the file is larger than 10 MiB)"
            } else {
                ""
            },
            shown_to + 1
        ));
    }
    ToolOutput::ok(out)
}

/// Refuses a change outside the workspace, which the sandbox only shows read-only.
fn workspace_file(host: &dyn ToolHost, file_path: &str) -> Result<(PathBuf, String), ToolOutput> {
    let path = absolute(host, file_path);
    match inside_workspace(host.workspace(), &path) {
        Some(rel) if !rel.is_empty() => Ok((path, rel)),
        _ => Err(ToolOutput::error(format!(
            "{} is outside the workspace {}: only workspace files can be changed (the sandbox shows the rest read-only)",
            path.display(),
            host.workspace().display()
        ))),
    }
}

/// Write: the whole file.
pub async fn write(host: &dyn ToolHost, args: &WriteArgs) -> ToolOutput {
    let (path, rel) = match workspace_file(host, &args.file_path) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let n = args.content.len();
    match host
        .write_file(&rel, args.content.clone().into_bytes())
        .await
    {
        Ok(()) => ToolOutput::ok(format!("wrote {n} bytes to {}", path.display())),
        Err(e) => driver_error(&format!("cannot write {}", path.display()), e),
    }
}

/// Edit: exact string replacement.
pub async fn edit(host: &dyn ToolHost, args: &EditArgs) -> ToolOutput {
    let (path, rel) = match workspace_file(host, &args.file_path) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if args.old_string.is_empty() {
        return ToolOutput::error("old_string is empty: use Write to create a file");
    }
    if args.old_string == args.new_string {
        return ToolOutput::error("old_string and new_string are the same: nothing to change");
    }
    let (bytes, more) = match read_bytes(host, &path).await {
        Ok(b) => b,
        Err(e) => return ToolOutput::error(e),
    };
    if more {
        return ToolOutput::error(format!(
            "{} is larger than 10 MiB: edit it with Bash instead",
            path.display()
        ));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return ToolOutput::error(format!(
            "{} is not UTF-8 text: edit it with Bash instead",
            path.display()
        ));
    };
    let count = text.matches(&args.old_string).count();
    let new_text = match count {
        0 => {
            return ToolOutput::error(format!(
                "old_string was not found in {}: read the file again and copy the text exactly, whitespace included",
                path.display()
            ));
        }
        1 => text.replacen(&args.old_string, &args.new_string, 1),
        _ if args.replace_all => text.replace(&args.old_string, &args.new_string),
        n => {
            return ToolOutput::error(format!(
                "old_string occurs {n} times in {}: give more surrounding text to pick one, or set replace_all to change all {n}",
                path.display()
            ));
        }
    };
    match host.write_file(&rel, new_text.into_bytes()).await {
        Ok(()) => ToolOutput::ok(format!(
            "replaced {} occurrence{} in {}",
            count,
            if count == 1 { "" } else { "s" },
            path.display()
        )),
        Err(e) => driver_error(&format!("cannot write {}", path.display()), e),
    }
}

/// Glob: `find` in the sandbox, filtered with the pattern here, newest first. Returns the
/// paths found (before any permission filtering) or an error.
pub async fn glob(
    host: &dyn ToolHost,
    args: &GlobArgs,
) -> Result<(PathBuf, Vec<PathBuf>), ToolOutput> {
    let base = absolute(host, args.path.as_deref().unwrap_or("."));
    let matcher = globset::GlobBuilder::new(args.pattern.trim_start_matches("./"))
        .literal_separator(true)
        .build()
        .map_err(|e| ToolOutput::error(format!("invalid glob pattern `{}`: {e}", args.pattern)))?
        .compile_matcher();
    let mut request = ExecRequest::new(Command::Argv(vec![
        "find".into(),
        base.to_string_lossy().into_owned(),
        "-name".into(),
        ".git".into(),
        "-prune".into(),
        "-o".into(),
        "-type".into(),
        "f".into(),
        "-printf".into(),
        "%T@ %p\\0".into(),
    ]));
    request.timeout_ms = Some(60_000);
    let r = host
        .exec(request)
        .await
        .map_err(|e| driver_error("Glob could not run in the sandbox", e))?;
    if r.exit_code != 0 && r.stdout.is_empty() {
        return Err(ToolOutput::error(format!(
            "cannot search {}: {}",
            base.display(),
            r.stderr.trim()
        )));
    }
    let mut found: Vec<(f64, PathBuf)> = r
        .stdout
        .split('\0')
        .filter_map(|entry| {
            let (time, path) = entry.split_once(' ')?;
            let path = PathBuf::from(path);
            let rel = path.strip_prefix(&base).ok()?;
            matcher
                .is_match(rel)
                .then(|| (time.parse().unwrap_or(0.0), path))
        })
        .collect();
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok((base, found.into_iter().map(|(_, p)| p).collect()))
}

/// What a Grep run produced: the raw output lines with the file each belongs to.
#[derive(Debug)]
pub struct GrepHits {
    pub mode: GrepMode,
    /// (file, the rest of the line after the file name) in output order.
    pub lines: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrepMode {
    Files,
    Content,
    Count,
}

const GREP_TYPES: &[(&str, &[&str])] = &[
    ("rust", &["*.rs"]),
    ("rs", &["*.rs"]),
    ("py", &["*.py"]),
    ("python", &["*.py"]),
    ("js", &["*.js", "*.mjs", "*.cjs", "*.jsx"]),
    ("ts", &["*.ts", "*.tsx"]),
    ("go", &["*.go"]),
    ("java", &["*.java"]),
    ("c", &["*.c", "*.h"]),
    ("cpp", &["*.cpp", "*.cc", "*.hpp", "*.hh", "*.h"]),
    ("md", &["*.md", "*.markdown"]),
    ("json", &["*.json"]),
    ("toml", &["*.toml"]),
    ("yaml", &["*.yaml", "*.yml"]),
    ("sh", &["*.sh", "*.bash"]),
];

/// Grep: GNU grep (-P) in the sandbox, file names NUL-terminated so they can be re-checked.
pub async fn grep(host: &dyn ToolHost, args: &GrepArgs) -> Result<(PathBuf, GrepHits), ToolOutput> {
    let base = absolute(host, args.path.as_deref().unwrap_or("."));
    let mode = match args.output_mode.as_deref().unwrap_or("files_with_matches") {
        "files_with_matches" => GrepMode::Files,
        "content" => GrepMode::Content,
        "count" => GrepMode::Count,
        other => {
            return Err(ToolOutput::error(format!(
                "invalid arguments for Grep: output_mode `{other}`: use files_with_matches, content or count"
            )));
        }
    };
    let mut argv: Vec<String> = vec![
        "grep".into(),
        "-r".into(),
        "-I".into(),
        "-P".into(),
        "-Z".into(),
        "-H".into(),
        "--exclude-dir=.git".into(),
    ];
    if args.ignore_case {
        argv.push("-i".into());
    }
    match mode {
        GrepMode::Files => argv.push("-l".into()),
        GrepMode::Count => argv.push("-c".into()),
        GrepMode::Content => {
            if args.line_numbers {
                argv.push("-n".into());
            }
            for (flag, n) in [
                ("-A", args.after),
                ("-B", args.before),
                ("-C", args.context),
            ] {
                if let Some(n) = n {
                    argv.push(format!("{flag}{n}"));
                }
            }
        }
    }
    if let Some(g) = &args.glob {
        argv.push(format!("--include={g}"));
    }
    if let Some(t) = &args.file_type {
        let Some((_, globs)) = GREP_TYPES.iter().find(|(name, _)| name == t) else {
            let names: Vec<&str> = GREP_TYPES.iter().map(|(n, _)| *n).collect();
            return Err(ToolOutput::error(format!(
                "invalid arguments for Grep: type `{t}`: use one of {}, or a glob",
                names.join(", ")
            )));
        };
        for g in *globs {
            argv.push(format!("--include={g}"));
        }
    }
    argv.push("-e".into());
    argv.push(args.pattern.clone());
    argv.push("--".into());
    argv.push(base.to_string_lossy().into_owned());
    let mut request = ExecRequest::new(Command::Argv(argv));
    request.timeout_ms = Some(60_000);
    let r = host
        .exec(request)
        .await
        .map_err(|e| driver_error("Grep could not run in the sandbox", e))?;
    if r.exit_code == 2 && r.stdout.is_empty() {
        return Err(ToolOutput::error(format!(
            "grep failed: {}",
            r.stderr.trim()
        )));
    }
    let mut lines = Vec::new();
    match mode {
        GrepMode::Files => {
            for name in r.stdout.split('\0').filter(|s| !s.is_empty()) {
                lines.push((PathBuf::from(name.trim_start_matches('\n')), String::new()));
            }
        }
        GrepMode::Count | GrepMode::Content => {
            for line in r.stdout.lines() {
                if let Some((file, rest)) = line.split_once('\0') {
                    if mode == GrepMode::Count && rest == "0" {
                        continue;
                    }
                    lines.push((PathBuf::from(file), rest.to_string()));
                } else if line == "--" {
                    // The separator between context groups.
                    if let Some((file, _)) = lines.last().cloned() {
                        lines.push((file, "--".into()));
                    }
                }
            }
        }
    }
    Ok((base, GrepHits { mode, lines }))
}

impl GrepHits {
    /// The text for the model, at most `head_limit` entries.
    pub fn render(&self, head_limit: Option<usize>) -> String {
        let mut out = String::new();
        let limit = head_limit.unwrap_or(usize::MAX);
        for (shown, (file, rest)) in self.lines.iter().enumerate() {
            if shown >= limit {
                out.push_str(&format!("[cut at head_limit {limit}]\n"));
                break;
            }
            match self.mode {
                GrepMode::Files => out.push_str(&format!("{}\n", file.display())),
                GrepMode::Count => out.push_str(&format!("{}:{rest}\n", file.display())),
                GrepMode::Content if rest == "--" => out.push_str("--\n"),
                GrepMode::Content => out.push_str(&format!("{}:{rest}\n", file.display())),
            }
        }
        if out.is_empty() {
            out.push_str("No matches found");
        }
        out
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// `s` cut to `max` bytes with an ellipsis.
pub fn shorten(s: &str, max: usize) -> String {
    let mut s = s.to_string();
    if s.len() > max {
        cut(&mut s, max);
        s.push('…');
    }
    s
}
