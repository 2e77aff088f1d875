//! A structural checker of Falco rules files, for where Falco itself cannot run: the names a
//! condition or an output uses are fields Falco has (those listed), macros and lists defined
//! before use, operators, or values.

use std::collections::BTreeSet;

/// The Falco fields the rules use (Falco's syscall source and its container plugin).
pub const FALCO_FIELDS: &[&str] = &[
    "evt.type",
    "evt.dir",
    "evt.res",
    "evt.is_open_write",
    "evt.is_open_read",
    "evt.arg.name",
    "proc.name",
    "proc.pname",
    "proc.cmdline",
    "proc.pcmdline",
    "proc.exepath",
    "user.uid",
    "fd.name",
    "fd.typechar",
    "fd.sip",
    "fd.sport",
    "fd.snet",
    "fd.cip",
    "container.name",
    "container.image.repository",
    "k8s.ns.name",
    "k8s.pod.name",
    "k8s.pod.label",
];
/// Falco macros from its default rules file that these rules may use: none, they are
/// self-contained.
pub const FALCO_BUILTIN_MACROS: &[&str] = &[];
pub const FALCO_BOOLEAN: &[&str] = &["and", "or", "not"];
pub const FALCO_UNARY: &[&str] = &["exists"];
pub const FALCO_COMPARISON: &[&str] = &[
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "bstartswith",
    "endswith",
    "glob",
    "iglob",
    "regex",
];
pub const FALCO_LIST_OPERATORS: &[&str] = &["in", "intersects", "pmatch"];
pub const FALCO_PRIORITIES: &[&str] = &[
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFORMATIONAL",
    "INFO",
    "DEBUG",
];

/// A condition's tokens: parentheses and commas alone, quoted strings whole.
pub fn falco_tokens(condition: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = condition.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut s = String::from('"');
                for n in chars.by_ref() {
                    s.push(n);
                    if n == '"' {
                        break;
                    }
                }
                assert!(
                    s.len() > 1 && s.ends_with('"'),
                    "unterminated string in {condition}"
                );
                out.push(s);
            }
            '(' | ')' | ',' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A field reference: `name.name[.name]` with an optional `[argument]`, and whether it is one
/// of [`FALCO_FIELDS`].
pub fn falco_field(token: &str) -> Option<bool> {
    let base = match token.split_once('[') {
        Some((base, rest)) => {
            assert!(
                rest.ends_with(']') && rest.len() > 1,
                "bad field argument: {token}"
            );
            base
        }
        None => token,
    };
    let looks_like_field = base.contains('.')
        && base.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    looks_like_field.then(|| FALCO_FIELDS.contains(&base))
}

/// The problems of one condition: unknown fields, undefined macros or lists, bad syntax.
pub fn falco_condition_problems(
    condition: &str,
    macros: &BTreeSet<String>,
    lists: &BTreeSet<String>,
) -> Vec<String> {
    let tokens = falco_tokens(condition);
    let mut problems = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    // Whether the previous token completed an operand (a field, a comparison, a macro).
    let mut after_field = false;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        i += 1;
        match t {
            "(" => {
                depth += 1;
                after_field = false;
            }
            ")" => {
                depth -= 1;
                after_field = false;
            }
            _ if FALCO_BOOLEAN.contains(&t) => after_field = false,
            _ if FALCO_UNARY.contains(&t) => {
                if !after_field {
                    problems.push(format!("`{t}` does not follow a field"));
                }
                after_field = false;
            }
            _ if FALCO_COMPARISON.contains(&t) => {
                if !after_field {
                    problems.push(format!("`{t}` does not follow a field"));
                }
                match tokens.get(i) {
                    Some(v) if !["(", ")", ","].contains(&v.as_str()) => i += 1,
                    _ => problems.push(format!("`{t}` has no value")),
                }
                after_field = false;
            }
            _ if FALCO_LIST_OPERATORS.contains(&t) => {
                if !after_field {
                    problems.push(format!("`{t}` does not follow a field"));
                }
                if tokens.get(i).map(String::as_str) != Some("(") {
                    problems.push(format!("`{t}` is not followed by a list in parentheses"));
                    continue;
                }
                i += 1;
                let mut items = 0;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        None => {
                            problems.push(format!("`{t} (` is not closed"));
                            break;
                        }
                        Some(")") => {
                            i += 1;
                            break;
                        }
                        Some(",") => i += 1,
                        Some(item) => {
                            items += 1;
                            if item.starts_with("warden_") && !lists.contains(item) {
                                problems.push(format!("list `{item}` is not defined before use"));
                            }
                            i += 1;
                        }
                    }
                }
                if items == 0 {
                    problems.push(format!("`{t} ()` is empty"));
                }
                after_field = false;
            }
            _ => match falco_field(t) {
                Some(true) => after_field = true,
                Some(false) => {
                    problems.push(format!("`{t}` is not a Falco field these rules know"));
                    after_field = true;
                }
                None => {
                    if !macros.contains(t) && !FALCO_BUILTIN_MACROS.contains(&t) {
                        problems.push(format!(
                            "`{t}` is neither a field nor a macro defined before use"
                        ));
                    }
                    after_field = false;
                }
            },
        }
        if depth < 0 {
            problems.push("unbalanced `)`".into());
            depth = 0;
        }
    }
    if depth != 0 {
        problems.push("unbalanced `(`".into());
    }
    problems
}

/// The `%field` references of an output.
pub fn falco_output_fields(output: &str) -> Vec<String> {
    output
        .split('%')
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._[]/-".contains(*c))
                .collect::<String>()
                .trim_end_matches(['.', ')'])
                .to_string()
        })
        .collect()
}
