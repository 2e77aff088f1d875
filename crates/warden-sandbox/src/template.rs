//! Checking templates and pools before the driver keeps them, and turning a template into
//! the policy file of one sandbox.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use warden_policy::{PolicyFile, Profile};

use crate::driver::{DriverError, PoolSpec, Template};
use crate::names::{MEMBER_SUFFIX, check_label, check_label_max};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DriverError {
    DriverError::InvalidArgument {
        field: field.into(),
        message: message.into(),
    }
}

/// The policy text of a template, with `env` added to `environment.set` (the variables of
/// one sandbox, on top of the policy's own).
pub fn policy_text(
    template: &Template,
    env: &BTreeMap<String, String>,
) -> Result<String, DriverError> {
    let mut table = template.policy.clone();
    if !env.is_empty() {
        let environment = table
            .entry("environment")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(environment) = environment else {
            return Err(invalid(
                "policy.environment",
                "must be a table with `pass` and `set`",
            ));
        };
        let set = environment
            .entry("set")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(set) = set else {
            return Err(invalid(
                "policy.environment.set",
                "must be a table of NAME = \"value\"",
            ));
        };
        for (k, v) in env {
            set.insert(k.clone(), toml::Value::String(v.clone()));
        }
    }
    toml::to_string(&table).map_err(|e| invalid("policy", format!("cannot be written: {e}")))
}

/// Checks a policy text as `warden run` will read it: the file format, then the policy
/// built on top of its profile. Every error names its field (`policy.<field>`, or
/// `<prefix>.<field>` for variables given by the request).
pub fn check_policy(text: &str) -> Result<(), DriverError> {
    let file = PolicyFile::from_toml(text).map_err(|e| policy_error("policy", &e))?;
    if file.filesystem.workspace.is_some() {
        return Err(invalid(
            "policy.filesystem.workspace",
            "must be unset: every sandbox gets a workspace of its own",
        ));
    }
    // Relative paths in a template resolve against `/`; `~` against the server's home.
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/".into());
    let policy = file
        .apply(Profile::Default, Path::new("/"), &home)
        .map_err(|e| policy_error("policy", &e))?;
    policy.validate().map_err(|e| policy_error("policy", &e))
}

fn policy_error(prefix: &str, e: &warden_policy::PolicyError) -> DriverError {
    let first = &e.errors[0];
    let field = if first.field == "policy file" {
        prefix.to_string()
    } else {
        format!("{prefix}.{}", first.field)
    };
    let mut message = first.message.clone();
    for more in &e.errors[1..] {
        message.push_str(&format!("; {}.{}: {}", prefix, more.field, more.message));
    }
    invalid(field, message)
}

/// Checks a template: its name, its policy, its timers and quota.
pub fn check_template(t: &Template) -> Result<(), DriverError> {
    check_label("name", &t.name)?;
    check_policy(&policy_text(t, &BTreeMap::new())?)?;
    check_positive("shutdown_after", t.shutdown_after)?;
    check_positive("idle_timeout", t.idle_timeout)?;
    if t.workspace_quota == Some(0) {
        return Err(invalid(
            "workspace_quota",
            "must be at least 1 byte; leave it unset for the default (1 GiB)",
        ));
    }
    Ok(())
}

/// A duration given by a caller must be positive.
pub fn check_positive(field: &str, d: Option<Duration>) -> Result<(), DriverError> {
    if d == Some(Duration::ZERO) {
        return Err(invalid(
            field,
            "must be longer than zero, e.g. 30m; leave it unset for the default",
        ));
    }
    Ok(())
}

/// Checks a pool: its name leaves room for the members' `-xxxxx`, its template is named.
pub fn check_pool(p: &PoolSpec) -> Result<(), DriverError> {
    check_label_max("name", &p.name, 63 - 1 - MEMBER_SUFFIX)?;
    check_label("template", &p.template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(policy: &str) -> Template {
        Template {
            name: "py".into(),
            policy: toml::from_str(policy).unwrap(),
            shutdown_after: None,
            idle_timeout: None,
            workspace_quota: None,
        }
    }

    fn field_of(r: Result<(), DriverError>) -> String {
        match r {
            Err(DriverError::InvalidArgument { field, message }) => {
                assert!(!message.is_empty());
                field
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn templates() {
        check_template(&template("")).unwrap();
        check_template(&template(
            "profile = \"default\"\n[resources]\nmemory = \"512M\"\npids = 64\n[network]\nmode = \"proxy\"\nallow_domains = [\"pypi.org\"]",
        ))
        .unwrap();
        let cases = [
            (
                "[filesystem]\nworkspace = \"/srv\"",
                "policy.filesystem.workspace",
            ),
            ("[resources]\nmemory = \"lots\"", "policy.resources.memory"),
            ("bogus = 1", "policy"),
            ("profile = \"nope\"", "policy"),
            (
                "[environment]\nset = { LD_PRELOAD = \"x.so\" }",
                "policy.environment.set",
            ),
        ];
        for (policy, want) in cases {
            let got = field_of(check_template(&template(policy)));
            assert!(
                got.starts_with(want),
                "{policy:?}: field {got}, wanted {want}"
            );
        }
        let mut t = template("");
        t.name = "Py".into();
        assert_eq!(field_of(check_template(&t)), "name");
        let mut t = template("");
        t.idle_timeout = Some(Duration::ZERO);
        assert_eq!(field_of(check_template(&t)), "idle_timeout");
        let mut t = template("");
        t.workspace_quota = Some(0);
        assert_eq!(field_of(check_template(&t)), "workspace_quota");
    }

    #[test]
    fn request_env_goes_into_the_policy() {
        let t = template("[environment]\nset = { A = \"1\" }");
        let env = BTreeMap::from([("B".to_string(), "2".to_string())]);
        let text = policy_text(&t, &env).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let set = table["environment"]["set"].as_table().unwrap();
        assert_eq!(set["A"].as_str(), Some("1"));
        assert_eq!(set["B"].as_str(), Some("2"));
        check_policy(&text).unwrap();
        let env = BTreeMap::from([("LD_PRELOAD".to_string(), "/x.so".to_string())]);
        let got = field_of(check_policy(&policy_text(&t, &env).unwrap()));
        assert!(got.starts_with("policy.environment"), "{got}");
    }

    #[test]
    fn pools() {
        let p = |name: &str, template: &str| PoolSpec {
            name: name.into(),
            template: template.into(),
            replicas: 1,
        };
        check_pool(&p("py", "py")).unwrap();
        assert_eq!(field_of(check_pool(&p(&"a".repeat(58), "py"))), "name");
        assert_eq!(field_of(check_pool(&p("py", "P"))), "template");
    }
}
