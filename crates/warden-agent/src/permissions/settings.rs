//! Reading the `permissions` of a repository's `.claude/settings.json` and
//! `.claude/settings.local.json`.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::rule::{Author, Origin, RuleSource};

/// The settings files read, in order.
pub const SETTINGS_FILES: &[&str] = &[".claude/settings.json", ".claude/settings.local.json"];

/// A settings file that exists but cannot be used. Unlike a malformed rule (a warning), this
/// stops the run: deciding without the file could drop its deny rules.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid JSON: {source}; fix the file or remove it")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: `{field}` must be {expected}; write {{\"permissions\": {{\"allow\": [\"Bash(npm test)\"], \"ask\": [], \"deny\": []}}}}"
    )]
    Shape {
        path: PathBuf,
        field: String,
        expected: &'static str,
    },
}

/// The rule sources of the repository at `root`: one per settings file present, in
/// [`SETTINGS_FILES`] order. Other top-level keys are ignored (the files hold other
/// settings), and so are the other keys of `permissions` (`defaultMode`, ...).
pub fn load_repository_rules(root: &Path) -> Result<Vec<RuleSource>, SettingsError> {
    let mut sources = Vec::new();
    for name in SETTINGS_FILES {
        let path = root.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        let origin = Origin {
            author: Author::Repository,
            label: (*name).to_string(),
        };
        sources.push(parse_settings(&text, &path, origin, root)?);
    }
    Ok(sources)
}

/// The rules of one settings file's text (`path` names it in errors).
pub fn parse_settings(
    text: &str,
    path: &Path,
    origin: Origin,
    root: &Path,
) -> Result<RuleSource, SettingsError> {
    let value: Value = serde_json::from_str(text).map_err(|source| SettingsError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let shape = |field: &str, expected| SettingsError::Shape {
        path: path.to_path_buf(),
        field: field.to_string(),
        expected,
    };
    let Value::Object(top) = &value else {
        return Err(shape("(top level)", "an object"));
    };
    let mut source = RuleSource {
        origin,
        root: root.to_path_buf(),
        allow: Vec::new(),
        ask: Vec::new(),
        deny: Vec::new(),
    };
    let Some(permissions) = top.get("permissions") else {
        return Ok(source);
    };
    let Value::Object(permissions) = permissions else {
        return Err(shape("permissions", "an object"));
    };
    for (key, list) in [
        ("allow", &mut source.allow),
        ("ask", &mut source.ask),
        ("deny", &mut source.deny),
    ] {
        let Some(value) = permissions.get(key) else {
            continue;
        };
        let field = format!("permissions.{key}");
        let Value::Array(items) = value else {
            return Err(shape(&field, "an array of strings"));
        };
        for item in items {
            let Value::String(s) = item else {
                return Err(shape(&field, "an array of strings"));
            };
            list.push(s.clone());
        }
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            author: Author::Repository,
            label: ".claude/settings.json".into(),
        }
    }

    #[test]
    fn reads_rules_and_ignores_other_settings() {
        let s = parse_settings(
            r#"{"model": "x", "hooks": {}, "permissions": {"defaultMode": "plan", "allow": ["Bash(ls *)"], "deny": ["Read(.env)"]}}"#,
            Path::new("s.json"),
            origin(),
            Path::new("/r"),
        )
        .unwrap();
        assert_eq!(s.allow, ["Bash(ls *)"]);
        assert_eq!(s.deny, ["Read(.env)"]);
        assert!(s.ask.is_empty());
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "[]",
            "{",
            r#"{"permissions": []}"#,
            r#"{"permissions": {"allow": "Bash"}}"#,
            r#"{"permissions": {"deny": [1]}}"#,
        ] {
            assert!(
                parse_settings(bad, Path::new("s.json"), origin(), Path::new("/r")).is_err(),
                "{bad}"
            );
        }
    }
}
