//! YAML frontmatter of Markdown files (SKILL.md, agent files): reading it without the body,
//! parsing it, and typed access to its fields with errors that name the field and the rule.
//!
//! The frontmatter is the text between a first line `---` (after an optional UTF-8 byte order
//! mark) and the next line `---`; trailing spaces and CR line ends are allowed. It must be a
//! YAML mapping (empty is an empty mapping) and at most [`MAX_FRONTMATTER_BYTES`]. YAML is read
//! as YAML 1.2: only `true`/`false` are booleans (`yes` is a string), duplicate keys are an
//! error, and the parser's budget stops alias bombs.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Read};

use serde_json::{Map, Value};

/// Frontmatter longer than this is refused (and the rest of the file never read).
pub const MAX_FRONTMATTER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrontmatterError {
    #[error("no frontmatter: the file must start with a line `---`, then YAML, then a line `---`")]
    Missing,
    #[error("the frontmatter has no closing line `---`")]
    Unclosed,
    #[error("the frontmatter is longer than {MAX_FRONTMATTER_BYTES} bytes")]
    TooLarge,
    #[error("the frontmatter is not valid UTF-8")]
    NotUtf8,
    #[error("the frontmatter is not valid YAML: {0}")]
    Yaml(String),
    #[error("the frontmatter must be a YAML mapping of keys to values, found {0}")]
    NotMapping(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The frontmatter's YAML text and where the body starts (a byte offset in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrontmatter {
    pub yaml: String,
    pub body_offset: u64,
}

/// Reads the frontmatter from the start of `input`, and nothing past its closing line.
pub fn read_frontmatter(input: impl Read) -> Result<RawFrontmatter, FrontmatterError> {
    // One byte over the limit tells "too large" from "exactly at the limit"; the frontmatter's
    // closing line itself may end the budget.
    let mut r = io::BufReader::new(input.take(MAX_FRONTMATTER_BYTES as u64 + 8));
    let mut line = Vec::new();
    let mut consumed: usize = 0;
    let mut yaml = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(if first {
                FrontmatterError::Missing
            } else if consumed > MAX_FRONTMATTER_BYTES {
                FrontmatterError::TooLarge
            } else {
                FrontmatterError::Unclosed
            });
        }
        consumed += n;
        let mut content: &[u8] = &line;
        if first {
            content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
        }
        let is_delimiter = trim_line_end(content) == b"---";
        if first {
            if !is_delimiter {
                return Err(FrontmatterError::Missing);
            }
            first = false;
            continue;
        }
        if is_delimiter {
            let yaml = String::from_utf8(yaml).map_err(|_| FrontmatterError::NotUtf8)?;
            return Ok(RawFrontmatter {
                yaml,
                body_offset: consumed as u64,
            });
        }
        if consumed > MAX_FRONTMATTER_BYTES {
            return Err(FrontmatterError::TooLarge);
        }
        yaml.extend_from_slice(content);
    }
}

fn trim_line_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits a whole file's text into its parsed frontmatter and its body.
pub fn split(text: &str) -> Result<(Map<String, Value>, &str), FrontmatterError> {
    let raw = read_frontmatter(text.as_bytes())?;
    let fields = parse_yaml(&raw.yaml)?;
    let body = text.get(raw.body_offset as usize..).unwrap_or("");
    Ok((fields, body))
}

/// Parses frontmatter YAML into a mapping. Line numbers in errors are those of the file (the
/// opening `---` being line 1).
pub fn parse_yaml(yaml: &str) -> Result<Map<String, Value>, FrontmatterError> {
    if yaml.trim().is_empty() {
        return Ok(Map::new());
    }
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    let shifted = format!("\n{yaml}");
    let value: Value = serde_saphyr::from_str_with_options(&shifted, options).map_err(|e| {
        // The parser's hint is for programmers using it, not for the author of the file.
        let msg = e
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        FrontmatterError::Yaml(one_line(&msg))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(FrontmatterError::NotMapping(kind(&other))),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "a string", "a number", ... for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub rule: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.rule)
    }
}

/// Typed, checked access to frontmatter fields. A null value counts as absent.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Fields { map }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The keys not in `known`, in order.
    pub fn unknown(&self, known: &[&str]) -> Vec<&'a str> {
        self.map
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect()
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Invalid::new(
                key,
                format!("must be a string, found {}", kind(other)),
            )),
        }
    }

    pub fn required_string(&self, key: &str) -> Result<&'a str, Invalid> {
        self.string(key)?
            .ok_or_else(|| Invalid::new(key, "is required"))
    }

    /// A string of `min..=max` characters.
    pub fn string_len(
        &self,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<&'a str>, Invalid> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        check_len(key, s, min, max)?;
        Ok(Some(s))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => Err(Invalid::new(
                key,
                format!("must be true or false, found the string {s:?}"),
            )),
            Some(other) => Err(Invalid::new(
                key,
                format!("must be true or false, found {}", kind(other)),
            )),
        }
    }

    /// Tool names: a string separated by spaces or commas (parentheses group, as in
    /// `Bash(git add *)`), or a list of strings.
    pub fn tool_list(&self, key: &str) -> Result<Option<Vec<String>>, Invalid> {
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) => split_tools(s).map_err(|r| Invalid::new(key, r))?,
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let Value::String(s) = item else {
                        return Err(Invalid::new(
                            format!("{key}[{i}]"),
                            format!("must be a string, found {}", kind(item)),
                        ));
                    };
                    out.extend(split_tools(s).map_err(|r| Invalid::new(format!("{key}[{i}]"), r))?);
                }
                out
            }
            Some(other) => {
                return Err(Invalid::new(
                    key,
                    format!(
                        "must be a space-separated string or a list of tool names, found {}",
                        kind(other)
                    ),
                ));
            }
        };
        Ok(Some(items))
    }

    /// Strings: a comma-separated string, or a list of strings.
    pub fn string_list(&self, key: &str) -> Result<Vec<String>, Invalid> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(Invalid::new(
                        format!("{key}[{i}]"),
                        format!("must be a string, found {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(Invalid::new(
                key,
                format!(
                    "must be a comma-separated string or a list of strings, found {}",
                    kind(other)
                ),
            )),
        }
    }

    /// A mapping of strings to strings; numbers and booleans are taken as their text.
    pub fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, Invalid> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Number(n) => Ok((k.clone(), n.to_string())),
                    Value::Bool(b) => Ok((k.clone(), b.to_string())),
                    other => Err(Invalid::new(
                        format!("{key}.{k}"),
                        format!("must be a string, found {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(Invalid::new(
                key,
                format!(
                    "must be a mapping of strings to strings, found {}",
                    kind(other)
                ),
            )),
        }
    }
}

/// `s` has between `min` and `max` characters (not bytes).
pub fn check_len(field: &str, s: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let n = s.chars().count();
    if n < min || n > max || (min > 0 && s.trim().is_empty()) {
        let found = if n > 0 && s.trim().is_empty() {
            "only whitespace".to_string()
        } else {
            format!("{n}")
        };
        return Err(Invalid::new(
            field,
            format!("must be {min} to {max} characters, found {found}"),
        ));
    }
    Ok(())
}

/// The Agent Skills name rule: 1–64 characters of `a-z`, `0-9` and `-`, no hyphen at either
/// end, never two in a row.
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    check_len(field, name, 1, 64)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(Invalid::new(
            field,
            format!(
                "may hold only lowercase letters a-z, digits 0-9 and hyphens, found {c:?} in {name:?}"
            ),
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(Invalid::new(
            field,
            format!("must not start or end with a hyphen, found {name:?}"),
        ));
    }
    if name.contains("--") {
        return Err(Invalid::new(
            field,
            format!("must not contain two hyphens in a row, found {name:?}"),
        ));
    }
    Ok(())
}

/// Splits `Read Grep Bash(git add *), Edit` into tool entries: separators are spaces and commas
/// outside parentheses. Each entry is `Name` or `Name(specifier)`.
pub fn split_tools(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                if depth == 0 {
                    return Err(format!("has an unmatched `)` in {s:?}"));
                }
                depth -= 1;
                cur.push(c);
            }
            c if depth == 0 && (c.is_whitespace() || c == ',') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(format!("has an unclosed `(` in {s:?}"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    for t in &out {
        let name = t.split('(').next().unwrap_or("");
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*' | ':'));
        let shape_ok = !t.contains('(') || t.ends_with(')');
        if !name_ok || !shape_ok {
            return Err(format!(
                "has {t:?}, which is not a tool name (`Name` or `Name(specifier)`)"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_table() {
        // (file, Ok(yaml, body) or Err(debug name))
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let cases: &[Case] = &[
            ("---\nname: a\n---\nbody", Ok(("name: a\n", "body"))),
            (
                "---\r\nname: a\r\n---\r\nbody\r\n",
                Ok(("name: a\r\n", "body\r\n")),
            ),
            ("\u{feff}---\nname: a\n---\n", Ok(("name: a\n", ""))),
            ("---  \nname: a\n---\t\nb", Ok(("name: a\n", "b"))),
            ("---\n---\n", Ok(("", ""))),
            ("---\nname: a\n---", Ok(("name: a\n", ""))),
            (
                "---\na: |\n  x\n  ---x\n---\nb",
                Ok(("a: |\n  x\n  ---x\n", "b")),
            ),
            ("", Err("Missing")),
            ("# Title\n---\nname: a\n---\n", Err("Missing")),
            (" ---\nname: a\n---\n", Err("Missing")),
            ("----\nname: a\n----\n", Err("Missing")),
            ("---\nname: a\n", Err("Unclosed")),
            ("---\nname: a\n--- x\n", Err("Unclosed")),
        ];
        for (text, want) in cases {
            let got = read_frontmatter(text.as_bytes());
            match (want, got) {
                (Ok((yaml, body)), Ok(raw)) => {
                    assert_eq!(raw.yaml, *yaml, "{text:?}");
                    assert_eq!(&text[raw.body_offset as usize..], *body, "{text:?}");
                }
                (Err(name), Err(e)) => {
                    assert!(format!("{e:?}").starts_with(name), "{text:?}: {e:?}")
                }
                (want, got) => panic!("{text:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn too_large_frontmatter_is_refused_without_reading_on() {
        let mut text = String::from("---\n");
        while text.len() <= MAX_FRONTMATTER_BYTES {
            text.push_str("k: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\n");
        }
        text.push_str("---\n");
        assert!(matches!(
            read_frontmatter(text.as_bytes()),
            Err(FrontmatterError::TooLarge)
        ));
        // One line with no newline at all, endless: stops at the budget.
        let endless = format!("---\n{}", "x".repeat(10 * MAX_FRONTMATTER_BYTES));
        assert!(matches!(
            read_frontmatter(endless.as_bytes()),
            Err(FrontmatterError::TooLarge)
        ));
    }

    #[test]
    fn yaml_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("name: a\n", Ok(r#"{"name":"a"}"#)),
            ("", Ok("{}")),
            ("# only a comment\n", Ok("{}")),
            ("flag: yes\n", Ok(r#"{"flag":"yes"}"#)),
            ("flag: true\n", Ok(r#"{"flag":true}"#)),
            ("n: 1.5\n", Ok(r#"{"n":1.5}"#)),
            (
                "- a\n- b\n",
                Err("must be a YAML mapping of keys to values, found a list"),
            ),
            ("just text\n", Err("found a string")),
            (
                "a: 1\na: 2\n",
                Err("not valid YAML: duplicate mapping key: a at line 3, column 1"),
            ),
            (
                "a: [1, 2\n",
                Err("unclosed bracket '[' at line 2, column 4"),
            ),
            ("a: [1, 2\n", Err("not valid YAML")),
            ("a: b: c\n", Err("not valid YAML")),
            ("a: 'unterminated\n", Err("not valid YAML")),
            ("a: *nowhere\n", Err("not valid YAML")),
        ];
        for (yaml, want) in cases {
            let got = parse_yaml(yaml);
            match (want, got) {
                (Ok(json), Ok(map)) => {
                    assert_eq!(Value::Object(map).to_string(), *json, "{yaml:?}")
                }
                (Err(msg), Err(e)) => {
                    let e = e.to_string();
                    assert!(e.contains(msg), "{yaml:?}: {e}");
                    assert!(!e.contains('\n'), "one line: {e}");
                }
                (want, got) => panic!("{yaml:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn alias_bomb_is_stopped_by_the_budget() {
        let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            yaml.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse_yaml(&yaml).unwrap_err();
        assert!(matches!(err, FrontmatterError::Yaml(_)), "{err}");
    }

    #[test]
    fn name_rule_table() {
        let ok = ["a", "pdf-tools", "a1-b2-c3", &"x".repeat(64), "0"];
        for n in ok {
            assert_eq!(check_name("name", n), Ok(()), "{n}");
        }
        let bad = [
            ("", "must be 1 to 64 characters, found 0"),
            (&"x".repeat(65), "found 65"),
            ("PDF", "lowercase letters"),
            ("pdf_tools", "found '_'"),
            ("pdf tools", "found ' '"),
            ("é", "found 'é'"),
            ("-pdf", "start or end with a hyphen"),
            ("pdf-", "start or end with a hyphen"),
            ("pdf--tools", "two hyphens in a row"),
        ];
        for (n, msg) in bad {
            let e = check_name("name", n).unwrap_err();
            assert_eq!(e.field, "name");
            assert!(e.rule.contains(msg), "{n:?}: {e}");
        }
    }

    #[test]
    fn tool_list_table() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("Read Grep", Ok(&["Read", "Grep"])),
            ("Read, Grep,Glob", Ok(&["Read", "Grep", "Glob"])),
            ("Bash(git add *) Read", Ok(&["Bash(git add *)", "Read"])),
            ("Bash(git diff:*)", Ok(&["Bash(git diff:*)"])),
            (
                "mcp__github__create_issue",
                Ok(&["mcp__github__create_issue"]),
            ),
            ("  ", Ok(&[])),
            ("Bash(git", Err("unclosed `(`")),
            ("Bash)", Err("unmatched `)`")),
            ("Bash(x)y", Err("not a tool name")),
            ("(x)", Err("not a tool name")),
            ("Re/ad", Err("not a tool name")),
        ];
        for (s, want) in cases {
            match (want, split_tools(s)) {
                (Ok(w), Ok(got)) => assert_eq!(got, *w, "{s:?}"),
                (Err(msg), Err(e)) => assert!(e.contains(msg), "{s:?}: {e}"),
                (want, got) => panic!("{s:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(check_len("d", &"é".repeat(1024), 1, 1024).is_ok());
        assert!(check_len("d", &"é".repeat(1025), 1, 1024).is_err());
        assert!(
            check_len("d", "   ", 1, 1024)
                .unwrap_err()
                .rule
                .contains("only whitespace")
        );
    }
}
