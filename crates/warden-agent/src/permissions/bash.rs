//! `Bash(...)` rules: the patterns, the wrappers stripped before matching, and the forms of a
//! simple command that rules are matched against.

use super::shell::{self, Redirect, Script, SimpleCommand, Word};

/// The specifier of a `Bash(...)` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BashPattern {
    /// `Bash(npm run build)`: exactly this command.
    Exact(String),
    /// `Bash(npm run *)`, `Bash(git * main)`, `Bash(git diff:*)`: `*` stands for any text.
    /// When the pattern ends in ` *` (or the legacy `:*`) and has no other `*`, the tail is
    /// optional: `ls *` matches `ls` and `ls -la` but not `lsof`.
    Wildcard {
        parts: Vec<String>,
        optional_tail: bool,
    },
}

impl BashPattern {
    /// Parses a specifier whose whitespace runs have been collapsed to one space.
    pub fn parse(spec: &str) -> BashPattern {
        // The legacy `prefix:*` is the same as `prefix *`.
        let spec = match spec.strip_suffix(":*") {
            Some(prefix) if !prefix.is_empty() => format!("{} *", prefix.trim_end()),
            _ => spec.to_string(),
        };
        if !spec.contains('*') {
            return BashPattern::Exact(spec);
        }
        let parts: Vec<String> = spec.split('*').map(str::to_string).collect();
        let optional_tail = parts.len() == 2 && spec.ends_with(" *");
        BashPattern::Wildcard {
            parts,
            optional_tail,
        }
    }

    pub fn matches(&self, command: &str) -> bool {
        match self {
            BashPattern::Exact(s) => s == command,
            BashPattern::Wildcard {
                parts,
                optional_tail,
            } => {
                if *optional_tail && command == parts[0].trim_end() {
                    return true;
                }
                wildcard_match(parts, command)
            }
        }
    }
}

/// Whether `text` is `parts` joined by runs of any text (a `*`-only glob).
pub(crate) fn wildcard_match(parts: &[String], text: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return text.is_empty();
    };
    let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    // Leftmost match of each middle part is optimal for a `*`-only pattern.
    for part in middle {
        match remaining.find(part.as_str()) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last.as_str())
}

/// Variables that only change how a program reports, never which code runs: a leading
/// `NAME=value` of these is stripped before allow rules are matched. Any other assignment
/// (`PATH=`, `LD_PRELOAD=`, `GIT_SSH_COMMAND=`, ...) must be written in the allow rule itself.
const SAFE_VARIABLES: &[&str] = &[
    "CI",
    "NO_COLOR",
    "FORCE_COLOR",
    "CLICOLOR",
    "CARGO_TERM_COLOR",
    "TERM",
    "COLUMNS",
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "NODE_ENV",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
];

/// Shells whose `-c` string is read as more commands.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash"];

/// A simple command prepared for matching.
#[derive(Debug, Default)]
pub(crate) struct CommandForms {
    /// The command as shown to a person: its words, one space apart.
    pub display: String,
    /// Texts an allow rule may match: the literal command, and the command without its
    /// wrappers (and without its safe assignments).
    pub allow: Vec<String>,
    /// Texts deny and ask rules are matched against: all of the above, plus the forms after
    /// quote removal, without redirections and with the program's directory dropped, so that
    /// `git  'push'`, `/usr/bin/git push` and `FOO=1 git push` are all caught.
    pub check: Vec<String>,
    /// Why no allow rule can vouch for this command, if so.
    pub opaque: Option<String>,
}

/// A command line read into the forms of each of its simple commands.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    pub commands: Vec<CommandForms>,
    pub problems: Vec<String>,
    /// The whole command line with its whitespace collapsed, for deny and ask rules written
    /// over several commands (`Bash(curl * | sh)`).
    pub whole: String,
}

/// Reads a command line, including the strings given to `sh -c` and `eval`.
pub(crate) fn analyse(command: &str) -> Analysis {
    let mut analysis = Analysis {
        whole: command.split_whitespace().collect::<Vec<_>>().join(" "),
        ..Analysis::default()
    };
    let mut script = shell::parse(command);
    analysis.problems.append(&mut script.problems);
    let mut queue: Vec<(SimpleCommand, usize)> =
        script.commands.into_iter().map(|c| (c, 0)).collect();
    let mut i = 0;
    while i < queue.len() {
        let (cmd, depth) = queue[i].clone();
        i += 1;
        let (forms, nested) = command_forms(&cmd);
        analysis.commands.push(forms);
        if let Some(text) = nested {
            let mut inner = Script::default();
            shell::parse_into(&text, depth + 1, &mut inner);
            analysis.problems.append(&mut inner.problems);
            queue.extend(inner.commands.into_iter().map(|c| (c, depth + 1)));
        }
    }
    analysis
}

/// Quotes a value for display so that it reads back as one word.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || "-_./:=@%+,^~*?[]{}!#".contains(c) || !c.is_ascii()
        });
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

fn canonical(w: &Word) -> String {
    if w.dynamic {
        w.raw.clone()
    } else {
        quote(&w.value)
    }
}

fn raw(w: &Word) -> String {
    w.raw.clone()
}

fn plain(w: &Word) -> String {
    w.value.clone()
}

fn is_assignment(w: &Word) -> Option<&str> {
    let name_end = w
        .raw
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let name = &w.raw[..name_end];
    let rest = &w.raw[name_end..];
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && (rest.starts_with('=') || rest.starts_with("+="));
    ok.then_some(name)
}

/// The words after the wrappers, the variables the wrappers set, and why stripping failed.
struct Stripped {
    core_start: usize,
    variables: Vec<String>,
    assignments: Vec<Word>,
    opaque: Option<String>,
}

/// Strips the wrappers `timeout`, `time`, `nice`, `nohup`, `stdbuf`, `env`, `command`,
/// `builtin` and `exec` (each only with the options it is known to take) from `words`.
fn strip_wrappers(words: &[Word]) -> Stripped {
    let mut s = Stripped {
        core_start: 0,
        variables: Vec::new(),
        assignments: Vec::new(),
        opaque: None,
    };
    // Each round strips one wrapper; a wrapper with nothing after it is the command itself.
    for _ in 0..16 {
        let rest = &words[s.core_start..];
        let Some(first) = rest.first() else {
            return s;
        };
        if first.dynamic {
            return s;
        }
        let skip = match first.value.as_str() {
            "timeout" => wrapper_args(
                rest,
                &["-s", "-k", "--signal", "--kill-after"],
                &["--preserve-status", "--foreground", "-v", "--verbose"],
                1,
            ),
            "time" => wrapper_args(rest, &[], &["-p"], 0),
            "nice" => nice_args(rest),
            "nohup" => Ok(1),
            "stdbuf" => wrapper_args(
                rest,
                &["-i", "-o", "-e", "--input", "--output", "--error"],
                &[],
                0,
            ),
            "env" => env_args(rest, &mut s),
            "command" | "builtin" | "exec" => {
                if rest.get(1).is_some_and(|w| w.value.starts_with('-')) {
                    // `command -v git` looks a name up, `exec -a` renames: not wrappers.
                    return s;
                }
                Ok(1)
            }
            _ => return s,
        };
        match skip {
            Ok(n) if n < rest.len() => s.core_start += n,
            Ok(_) => return s,
            Err(why) => {
                s.opaque = Some(format!("`{}` {why}", first.value));
                return s;
            }
        }
    }
    s.opaque = Some("too many nested wrappers".to_string());
    s
}

/// How many words a wrapper takes: its name, options (`with_value` take one), and
/// `positional` operands (the duration of `timeout`).
fn wrapper_args(
    words: &[Word],
    with_value: &[&str],
    flags: &[&str],
    positional: usize,
) -> Result<usize, String> {
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let v = w.value.as_str();
        if w.dynamic && v.starts_with('-') {
            return Err("has an option computed at run time".to_string());
        }
        if v == "--" {
            i += 1;
            break;
        }
        if !v.starts_with('-') || v == "-" {
            break;
        }
        if flags.contains(&v) {
            i += 1;
        } else if with_value.contains(&v) {
            i += 2;
        } else if with_value.iter().any(|o| {
            (o.starts_with("--") && v.starts_with(&format!("{o}=")))
                || (!o.starts_with("--") && v.len() > 2 && v.starts_with(o))
        }) {
            i += 1;
        } else {
            return Err(format!("has an option warden does not know: `{v}`"));
        }
    }
    Ok(i + positional)
}

fn nice_args(words: &[Word]) -> Result<usize, String> {
    match words.get(1).map(|w| w.value.as_str()) {
        Some("-n" | "--adjustment") => Ok(3),
        Some(v) if v.starts_with("--adjustment=") => Ok(2),
        Some(v) if v.starts_with("-n") && v.len() > 2 => Ok(2),
        Some(v) if v.starts_with('-') && v[1..].parse::<i32>().is_ok() => Ok(2),
        Some(v) if v.starts_with('-') => Err(format!("has an option warden does not know: `{v}`")),
        _ => Ok(1),
    }
}

fn env_args(words: &[Word], s: &mut Stripped) -> Result<usize, String> {
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let v = w.value.as_str();
        if w.dynamic && v.starts_with('-') {
            return Err("has an option computed at run time".to_string());
        }
        match v {
            "-i" | "-" | "--ignore-environment" => i += 1,
            "-u" | "--unset" => i += 2,
            _ if v.starts_with("--unset=") || (v.starts_with("-u") && v.len() > 2) => i += 1,
            "--" => {
                i += 1;
                break;
            }
            _ if v.starts_with('-') => {
                return Err(format!("has an option warden does not know: `{v}`"));
            }
            _ => break,
        }
    }
    while let Some(w) = words.get(i) {
        match is_assignment(w) {
            Some(name) => {
                s.variables.push(name.to_string());
                s.assignments.push(w.clone());
                i += 1;
            }
            None => break,
        }
    }
    Ok(i)
}

fn join(words: &[Word], f: fn(&Word) -> String) -> String {
    words.iter().map(f).collect::<Vec<_>>().join(" ")
}

fn with_redirects(base: String, redirects: &[&Redirect], f: fn(&Word) -> String) -> String {
    let mut out = base;
    for r in redirects {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&r.render(f));
    }
    out
}

/// The forms of one simple command, and the script it hands to a shell (`sh -c`, `eval`).
fn command_forms(cmd: &SimpleCommand) -> (CommandForms, Option<String>) {
    let words = &cmd.words;
    let n_assign = words
        .iter()
        .take_while(|w| is_assignment(w).is_some())
        .count();
    let mut variables: Vec<String> = words[..n_assign]
        .iter()
        .filter_map(|w| is_assignment(w).map(str::to_string))
        .collect();
    let after_assign = &words[n_assign..];
    let stripped = strip_wrappers(after_assign);
    variables.extend(stripped.variables.iter().cloned());
    let core = &after_assign[stripped.core_start..];
    let mut assignments: Vec<Word> = words[..n_assign].to_vec();
    assignments.extend(stripped.assignments.iter().cloned());
    let with_assign: Vec<Word> = assignments.iter().chain(core).cloned().collect();

    let all: Vec<&Redirect> = cmd.redirects.iter().collect();
    let kept: Vec<&Redirect> = cmd.redirects.iter().filter(|r| !r.is_harmless()).collect();

    let mut forms = CommandForms {
        display: with_redirects(join(words, raw), &all, raw),
        opaque: stripped.opaque,
        ..CommandForms::default()
    };
    let renders: [fn(&Word) -> String; 2] = [canonical, raw];
    for f in renders {
        // Wrappers are always stripped for allow rules (as Claude Code does), so
        // `Bash(timeout *)` never vouches for `timeout 5 rm -rf /`; assignments are kept
        // unless every one of them is harmless.
        if variables
            .iter()
            .all(|v| SAFE_VARIABLES.contains(&v.as_str()))
        {
            forms.allow.push(with_redirects(join(core, f), &kept, f));
        }
        forms
            .allow
            .push(with_redirects(join(&with_assign, f), &kept, f));
    }
    for f in [canonical, raw, plain] {
        for seq in [words.as_slice(), core, &with_assign] {
            forms.check.push(join(seq, f));
            forms.check.push(with_redirects(join(seq, f), &all, f));
        }
    }
    let mut nested = None;
    if let Some(name) = core.first() {
        if name.dynamic {
            forms.opaque = Some(format!(
                "the program name `{}` is only known at run time",
                name.raw
            ));
        } else if name.glob && name.raw != "[" && name.raw != "[[" {
            forms.opaque = Some(format!(
                "the program name `{}` is a file-name pattern",
                name.raw
            ));
        } else if let Some(base) = name.value.rsplit_once('/').map(|(_, b)| b)
            && !base.is_empty()
        {
            // `/usr/bin/git push` is still `git push` to a deny rule.
            let mut renamed = core.to_vec();
            renamed[0].value = base.to_string();
            forms.check.push(join(&renamed, plain));
        }
        let program = name
            .value
            .rsplit_once('/')
            .map_or(name.value.as_str(), |(_, b)| b);
        if SHELLS.contains(&program) {
            match shell_script(core) {
                Ok(script) => nested = script,
                Err(why) => forms.opaque = Some(why),
            }
        } else if program == "eval" {
            if core[1..].iter().any(|w| w.dynamic) {
                forms.opaque = Some("`eval` of text computed at run time".to_string());
            } else {
                nested = Some(join(&core[1..], plain));
            }
        }
    }
    forms.allow.sort();
    forms.allow.dedup();
    forms.check.sort();
    forms.check.dedup();
    (forms, nested)
}

/// The script of `sh -c SCRIPT`, if the shell is given one.
fn shell_script(core: &[Word]) -> Result<Option<String>, String> {
    let mut i = 1;
    while let Some(w) = core.get(i) {
        let v = w.value.as_str();
        if !v.starts_with('-') && !v.starts_with('+') {
            // `bash script.sh` runs a file warden cannot see into; it needs a rule of its own.
            return Ok(None);
        }
        if w.dynamic {
            return Err("a shell option computed at run time".to_string());
        }
        if v.len() > 1 && v[1..].contains('c') && !v.starts_with("--") {
            return match core.get(i + 1) {
                Some(s) if s.dynamic => Err("a shell script computed at run time".to_string()),
                Some(s) => Ok(Some(s.value.clone())),
                None => Err("`-c` without a script".to_string()),
            };
        }
        if matches!(v, "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") {
            i += 2;
        } else {
            i += 1;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_legacy_patterns() {
        let p = BashPattern::parse("ls *");
        assert!(p.matches("ls") && p.matches("ls -la") && !p.matches("lsof"));
        let p = BashPattern::parse("ls*");
        assert!(p.matches("ls") && p.matches("lsof"));
        let p = BashPattern::parse("git diff:*");
        assert!(p.matches("git diff") && p.matches("git diff HEAD") && !p.matches("git diff-tree"));
        let p = BashPattern::parse("git * main");
        assert!(p.matches("git checkout main") && !p.matches("git checkout main2"));
        let p = BashPattern::parse("* install");
        assert!(p.matches("npm install") && !p.matches("npm install x"));
    }

    #[test]
    fn forms_strip_wrappers_and_keep_unsafe_assignments() {
        let a = analyse("FOO=1 timeout -s KILL 5 nice -n 5 git push");
        assert_eq!(a.commands.len(), 1);
        let c = &a.commands[0];
        assert!(c.check.contains(&"git push".to_string()), "{:?}", c.check);
        assert!(!c.allow.contains(&"git push".to_string()), "{:?}", c.allow);
        assert!(
            c.allow.contains(&"FOO=1 git push".to_string()),
            "{:?}",
            c.allow
        );
        let a = analyse("RUST_LOG=debug cargo test 2>&1");
        assert!(a.commands[0].allow.contains(&"cargo test".to_string()));
    }

    #[test]
    fn shells_and_eval_are_read() {
        let a = analyse("bash -c 'rm -rf /'");
        let names: Vec<&str> = a.commands.iter().map(|c| c.display.as_str()).collect();
        assert_eq!(names, ["bash -c 'rm -rf /'", "rm -rf /"]);
        let a = analyse("sh -c \"$X\"");
        assert!(a.commands[0].opaque.is_some());
    }
}
