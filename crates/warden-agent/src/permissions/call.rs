//! The tool calls permission rules are checked against, from the model's `tool_use` blocks or
//! from the textual form `Bash(git push origin main)`.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// One tool call the agent wants to make.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    Bash {
        command: String,
    },
    Read {
        path: String,
    },
    Edit {
        path: String,
    },
    Write {
        path: String,
    },
    WebFetch {
        url: String,
    },
    /// Any other tool: `Glob`, `Grep`, `WebSearch`, `mcp__server__tool`, `Skill`, ... with its
    /// input (a JSON object from the model, or a string from the textual form).
    Other {
        tool: String,
        input: Value,
    },
}

/// A tool call that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the tool call `{call}`: {reason}")]
pub struct CallError {
    pub call: String,
    pub reason: String,
}

impl ToolCall {
    /// The tool's name, as rules spell it.
    pub fn tool(&self) -> &str {
        match self {
            ToolCall::Bash { .. } => "Bash",
            ToolCall::Read { .. } => "Read",
            ToolCall::Edit { .. } => "Edit",
            ToolCall::Write { .. } => "Write",
            ToolCall::WebFetch { .. } => "WebFetch",
            ToolCall::Other { tool, .. } => tool,
        }
    }

    /// A call from a model's `tool_use` block, with Claude Code's input fields: `command` for
    /// Bash, `file_path` for Read, Edit and Write, `url` for WebFetch.
    pub fn from_tool_use(name: &str, input: &Value) -> Result<ToolCall, CallError> {
        let field = |key: &str| -> Result<String, CallError> {
            input
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| CallError {
                    call: format!("{name} {input}"),
                    reason: format!("the input has no string field `{key}`"),
                })
        };
        Ok(match name {
            "Bash" => ToolCall::Bash {
                command: field("command")?,
            },
            "Read" => ToolCall::Read {
                path: field("file_path")?,
            },
            "Edit" => ToolCall::Edit {
                path: field("file_path")?,
            },
            "Write" => ToolCall::Write {
                path: field("file_path")?,
            },
            "WebFetch" => ToolCall::WebFetch { url: field("url")? },
            _ => ToolCall::Other {
                tool: name.to_string(),
                input: input.clone(),
            },
        })
    }

    /// The path a file tool acts on, if the call names one: `path` of Read, Edit and Write;
    /// `file_path`, `notebook_path` or `path` of the others (Glob, Grep, LS, MultiEdit, ...).
    pub fn path(&self) -> Option<&str> {
        match self {
            ToolCall::Read { path } | ToolCall::Edit { path } | ToolCall::Write { path } => {
                Some(path)
            }
            ToolCall::Other { input, .. } => match input {
                Value::String(s) => Some(s),
                _ => ["file_path", "notebook_path", "path"]
                    .iter()
                    .find_map(|k| input.get(*k).and_then(Value::as_str)),
            },
            _ => None,
        }
    }
}

impl FromStr for ToolCall {
    type Err = CallError;

    /// `Tool(argument)` or `Tool`: `Bash(git push origin main)`, `Read(./src/main.rs)`,
    /// `Edit(src/lib.rs)`, `Write(out.txt)`, `WebFetch(https://example.com/x)`,
    /// `Grep(src)`, `mcp__github__create_issue`.
    fn from_str(text: &str) -> Result<ToolCall, CallError> {
        let err = |reason: &str| CallError {
            call: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        let (tool, arg) = match trimmed.find('(') {
            None => (trimmed, None),
            Some(open) => {
                let inner = trimmed[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| err("it does not end with `)`"))?;
                (trimmed[..open].trim_end(), Some(inner.to_string()))
            }
        };
        if tool.is_empty()
            || !tool.starts_with(|c: char| c.is_ascii_alphabetic())
            || !tool
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err(
                "write `Tool(argument)`, e.g. `Bash(git status)` or `Read(./src/main.rs)`",
            ));
        }
        let needs = |arg: Option<String>, what: &str| {
            arg.filter(|a| !a.trim().is_empty())
                .ok_or_else(|| err(&format!("{tool} needs {what} in parentheses")))
        };
        Ok(match tool {
            "Bash" => ToolCall::Bash {
                command: needs(arg, "a command")?,
            },
            "Read" => ToolCall::Read {
                path: needs(arg, "a path")?,
            },
            "Edit" => ToolCall::Edit {
                path: needs(arg, "a path")?,
            },
            "Write" => ToolCall::Write {
                path: needs(arg, "a path")?,
            },
            "WebFetch" => ToolCall::WebFetch {
                url: needs(arg, "a URL")?,
            },
            _ => ToolCall::Other {
                tool: tool.to_string(),
                input: arg.map_or(Value::Null, Value::String),
            },
        })
    }
}

impl fmt::Display for ToolCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolCall::Bash { command } => write!(f, "Bash({command})"),
            ToolCall::Read { path } => write!(f, "Read({path})"),
            ToolCall::Edit { path } => write!(f, "Edit({path})"),
            ToolCall::Write { path } => write!(f, "Write({path})"),
            ToolCall::WebFetch { url } => write!(f, "WebFetch({url})"),
            ToolCall::Other { tool, input } => match input {
                Value::Null => f.write_str(tool),
                Value::String(s) => write!(f, "{tool}({s})"),
                other => write!(f, "{tool}({other})"),
            },
        }
    }
}
