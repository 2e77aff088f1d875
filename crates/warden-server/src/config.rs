//! `warden serve --config FILE`: templates and pools declared in TOML, upserted into the
//! store at every start.
//!
//! ```toml
//! [templates.python]
//! shutdown_after = "1h"
//! idle_timeout = "15m"
//! workspace_quota = 1073741824
//! [templates.python.policy]          # the policy-file format of `warden run --policy`
//! profile = "default"
//! network = { mode = "proxy", allow_domains = ["pypi.org", "*.pythonhosted.org"] }
//!
//! [pools.python]
//! template = "python"
//! replicas = 4
//!
//! [schedules.nightly]                # a cron schedule (`schedules`), created or replaced
//! cron = "0 3 * * MON-FRI"
//! timezone = "Europe/Berlin"
//! [schedules.nightly.task]           # the body of POST /v1/tasks
//! repo = "https://github.com/org/app.git"
//! task = "Update the dependencies"
//! ```

use std::path::Path;

use warden_sandbox::{PoolSpec, Template};

use crate::sandbox_router::is_dns_label;

/// The parsed config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServeConfig {
    pub templates: Vec<Template>,
    pub pools: Vec<PoolSpec>,
    /// `[schedules.NAME]`: cron schedules, created or replaced at start.
    pub schedules: Vec<crate::schedules::ScheduleSpec>,
    /// `[webhooks]`: sources, their secrets' whereabouts, and rules.
    pub webhooks: Option<crate::webhooks::WebhooksConfig>,
    /// `[a2a]`: the agent card, the default repository, peer agents.
    pub a2a: Option<crate::a2a::A2aConfig>,
}

/// Reads and validates a config file; the error names the file and the field.
pub fn load(path: &Path) -> Result<ServeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the TOML text of a config file.
pub fn parse(text: &str) -> Result<ServeConfig, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut config = ServeConfig::default();
    for (key, value) in table {
        match key.as_str() {
            "templates" => {
                for (name, body) in section(&key, value)? {
                    config.templates.push(entry(&key, &name, body)?);
                }
            }
            "pools" => {
                for (name, body) in section(&key, value)? {
                    config.pools.push(entry(&key, &name, body)?);
                }
            }
            "schedules" => {
                for (name, body) in section(&key, value)? {
                    config.schedules.push(entry(&key, &name, body)?);
                }
            }
            "webhooks" => config.webhooks = Some(crate::webhooks::config::parse(value)?),
            "a2a" => config.a2a = Some(crate::a2a::A2aConfig::parse(value)?),
            other => {
                return Err(format!(
                    "unknown key `{other}`; the allowed keys are `templates`, `pools`, `schedules`, `webhooks` and `a2a`"
                ));
            }
        }
    }
    Ok(config)
}

fn section(key: &str, value: toml::Value) -> Result<toml::Table, String> {
    match value {
        toml::Value::Table(t) => Ok(t),
        _ => Err(format!("`{key}` must be a table: [{key}.NAME]")),
    }
}

fn entry<T: serde::de::DeserializeOwned>(
    section: &str,
    name: &str,
    body: toml::Value,
) -> Result<T, String> {
    let at = format!("{section}.{name}");
    if !is_dns_label(name) {
        return Err(format!(
            "[{at}]: `{name}` is not a valid name; use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
        ));
    }
    let toml::Value::Table(mut table) = body else {
        return Err(format!("`{at}` must be a table: [{at}]"));
    };
    match table.get("name") {
        None => {
            table.insert("name".into(), toml::Value::String(name.into()));
        }
        Some(toml::Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(format!(
                "[{at}]: `name` = {other} differs from the table's name `{name}`; leave it out"
            ));
        }
    }
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            format!("[{at}]: {inner}")
        } else {
            format!("[{at}]: `{path}`: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_pools() {
        let c = parse(
            r#"
            [templates.py]
            shutdown_after = "30m"
            [templates.py.policy]
            profile = "default"
            [pools.py-warm]
            template = "py"
            replicas = 3
            "#,
        )
        .unwrap();
        assert_eq!(c.templates.len(), 1);
        assert_eq!(c.templates[0].name, "py");
        assert_eq!(
            c.templates[0].shutdown_after,
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(c.pools[0].name, "py-warm");
        assert_eq!(c.pools[0].replicas, 3);
    }

    #[test]
    fn schedules() {
        let c = parse(
            r#"
            [schedules.nightly]
            cron = "0 3 * * *"
            timezone = "Europe/Berlin"
            missed = "run-once"
            [schedules.nightly.task]
            repo = "https://example.com/org/app.git"
            task = "Update the dependencies"
            "#,
        )
        .unwrap();
        assert_eq!(c.schedules.len(), 1);
        let s = &c.schedules[0];
        assert_eq!(s.name.as_deref(), Some("nightly"));
        assert_eq!(s.missed, crate::schedules::MissedPolicy::RunOnce);
        assert_eq!(s.task.task, "Update the dependencies");
        let e = parse(
            "[schedules.x]\ncron = \"* * * * *\"\nmissed = \"all\"\n\
             [schedules.x.task]\nrepo = \"https://e.com/r\"\ntask = \"t\"\n",
        )
        .unwrap_err();
        assert!(e.contains("schedules.x") && e.contains("missed"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("[templates.py]\nshutdown_after = \"soon\"\n").unwrap_err();
        assert!(
            e.contains("templates.py") && e.contains("shutdown_after"),
            "{e}"
        );
        let e = parse("[templates.py]\nreplicas = 2\n").unwrap_err();
        assert!(e.contains("unknown field `replicas`"), "{e}");
        let e = parse("[pools.p]\ntemplate = \"t\"\nreplicas = \"many\"\n").unwrap_err();
        assert!(e.contains("pools.p") && e.contains("replicas"), "{e}");
        let e = parse("[sandboxes.x]\n").unwrap_err();
        assert!(e.contains("`templates`, `pools`"), "{e}");
        let e = parse("[templates.Bad_Name]\n").unwrap_err();
        assert!(e.contains("Bad_Name"), "{e}");
        let e = parse("[templates.a]\nname = \"b\"\n").unwrap_err();
        assert!(e.contains("differs"), "{e}");
    }
}
