//! Which environment variables enter a sandbox.
//!
//! Everything is stripped except the names the policy passes through and the values it sets.
//! Variables that change how loaders, shells and interpreters start (`LD_PRELOAD`, `BASH_ENV`,
//! `NODE_OPTIONS`, ...) never enter, even when a pattern would pass them.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::str::FromStr;

/// Names passed through by the built-in profiles.
pub const DEFAULT_PASS: &[&str] = &[
    "PATH",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "USER",
    "LOGNAME",
    "SHELL",
];

/// Prefixes and names that inject code or configuration into the programs a sandbox runs.
const INJECTION_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG_", "MALLOC_"];
const INJECTION_NAMES: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PROMPT_COMMAND",
    "PS4",
    "IFS",
    "CDPATH",
    "GLOBIGNORE",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "NLSPATH",
    "LOCPATH",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GIT_CONFIG",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_EXEC_PATH",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "SSH_AUTH_SOCK",
];

/// True for variables that must never be passed into a sandbox from the host.
pub fn is_injection_variable(name: &str) -> bool {
    INJECTION_NAMES.contains(&name) || INJECTION_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A variable name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvPattern {
    Name(String),
    Prefix(String),
}

impl EnvPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            EnvPattern::Name(n) => n == name,
            EnvPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a variable name or prefix; write NAME or PREFIX* using letters, digits and `_`"
)]
pub struct EnvPatternError(String);

/// A valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl FromStr for EnvPattern {
    type Err = EnvPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || is_valid_name(prefix) => {
                Ok(EnvPattern::Prefix(prefix.to_string()))
            }
            None if is_valid_name(s) => Ok(EnvPattern::Name(s.to_string())),
            _ => Err(EnvPatternError(s.to_string())),
        }
    }
}

impl fmt::Display for EnvPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvPattern::Name(n) => f.write_str(n),
            EnvPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// The environment part of a [`crate::SandboxPolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentPolicy {
    /// Host variables passed through when their name matches (injection variables never are).
    pub pass: Vec<EnvPattern>,
    /// Variables set to fixed values.
    pub set: BTreeMap<String, String>,
}

impl Default for EnvironmentPolicy {
    fn default() -> Self {
        EnvironmentPolicy {
            pass: DEFAULT_PASS
                .iter()
                .map(|p| p.parse().expect("built-in pattern"))
                .collect(),
            set: BTreeMap::new(),
        }
    }
}

impl EnvironmentPolicy {
    /// The sandbox's environment: passed host variables, then `set`, then `fixed` (values that
    /// warden itself decides, such as HOME and TMPDIR), later entries replacing earlier ones.
    /// Sorted by name.
    pub fn build<'a>(
        &self,
        host: impl IntoIterator<Item = (OsString, OsString)>,
        fixed: impl IntoIterator<Item = (&'a str, &'a OsStr)>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
        for (name, value) in host {
            let Some(n) = name.to_str() else { continue };
            if !is_injection_variable(n) && self.pass.iter().any(|p| p.matches(n)) {
                env.insert(name, value);
            }
        }
        for (name, value) in &self.set {
            env.insert(name.into(), value.into());
        }
        for (name, value) in fixed {
            env.insert(name.into(), value.to_owned());
        }
        env.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn strips_everything_not_passed_and_every_injection_variable() {
        let policy = EnvironmentPolicy::default();
        let env = policy.build(
            host(&[
                ("PATH", "/usr/bin"),
                ("LC_ALL", "C"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
                ("GITHUB_TOKEN", "ghp_x"),
                ("LD_PRELOAD", "/tmp/evil.so"),
                ("BASH_ENV", "/tmp/evil.sh"),
                ("BASH_FUNC_ls%%", "() { evil; }"),
                ("NODE_OPTIONS", "--require /tmp/evil.js"),
            ]),
            [("HOME", OsStr::new("/home/u"))],
        );
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["HOME", "LC_ALL", "PATH"]);
    }

    #[test]
    fn a_prefix_pattern_cannot_smuggle_an_injection_variable() {
        let policy = EnvironmentPolicy {
            pass: vec!["*".parse().unwrap()],
            set: BTreeMap::new(),
        };
        let env = policy.build(
            host(&[
                ("LD_LIBRARY_PATH", "/x"),
                ("PYTHONSTARTUP", "/x"),
                ("FOO", "1"),
            ]),
            [],
        );
        assert_eq!(env, host(&[("FOO", "1")]));
    }

    #[test]
    fn set_and_fixed_values_win_in_order() {
        let mut set = BTreeMap::new();
        set.insert("PATH".to_string(), "/opt/bin".to_string());
        set.insert("HOME".to_string(), "/nope".to_string());
        let policy = EnvironmentPolicy {
            pass: vec!["PATH".parse().unwrap()],
            set,
        };
        let env = policy.build(
            host(&[("PATH", "/usr/bin")]),
            [("HOME", OsStr::new("/home/u"))],
        );
        assert_eq!(env, host(&[("HOME", "/home/u"), ("PATH", "/opt/bin")]));
    }

    #[test]
    fn patterns_parse_and_reject() {
        assert_eq!("LC_*".parse(), Ok(EnvPattern::Prefix("LC_".into())));
        assert_eq!("*".parse(), Ok(EnvPattern::Prefix(String::new())));
        assert_eq!("TERM".parse(), Ok(EnvPattern::Name("TERM".into())));
        for bad in ["", "1A", "A-B", "A*B", "**", "A B"] {
            assert!(bad.parse::<EnvPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn injection_table() {
        for name in [
            "LD_PRELOAD",
            "LD_AUDIT",
            "DYLD_INSERT_LIBRARIES",
            "BASH_ENV",
            "BASH_FUNC_x%%",
            "GLIBC_TUNABLES",
            "NODE_OPTIONS",
            "GIT_SSH_COMMAND",
            "GIT_CONFIG_COUNT",
            "PYTHONSTARTUP",
        ] {
            assert!(is_injection_variable(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "LANG",
            "TERM",
            "GIT_AUTHOR_NAME",
            "PYTHONUNBUFFERED",
        ] {
            assert!(!is_injection_variable(name), "{name}");
        }
    }
}
