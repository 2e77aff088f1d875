//! The `[a2a]` section of `warden serve --config`: the card's name and description, the
//! default repository, the skills checkout, the public URL, and the peer agents tasks may
//! delegate to. Checked without I/O here; `A2aServer::new` reads the skills at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::tasks::model::check_repo_url;

/// How long a blocking `SendMessage` waits for the task to finish or ask for input, unless
/// `[a2a] send_wait` says otherwise; then it answers with the task as it is.
pub const DEFAULT_SEND_WAIT: Duration = Duration::from_secs(60);

/// The `[a2a]` section of `warden serve --config`.
///
/// ```toml
/// [a2a]
/// name = "warden"                              # the card's name
/// description = "Fixes bugs in app"            # the card's description
/// repo = "https://git.example/org/app.git"     # tasks' repository unless a message names one
/// skills_dir = "/srv/checkouts/app"            # a checkout whose .claude/skills the card lists
/// public_url = "https://warden.example"        # the base URL in the card (default: the Host)
/// send_wait = "60s"                            # how long a blocking SendMessage waits
/// [a2a.peers.reviewer]                         # agents this server's tasks may delegate to
/// url = "http://127.0.0.1:7071"
/// token_file = "/etc/warden/reviewer-token"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct A2aConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub skills_dir: Option<PathBuf>,
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub send_wait: Option<String>,
    #[serde(default)]
    pub peers: BTreeMap<String, PeerConfig>,
}

/// A peer A2A agent: its base URL (where its card is) and the file holding its bearer token.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub url: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub description: Option<String>,
}

fn check_base_url(url: &str) -> Result<(), String> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && !url.contains(['?', '#', '@']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{url}` is not a base URL; give http(s)://host[:port][/path] without credentials, query or fragment"
        ))
    }
}

impl A2aConfig {
    /// Checks every field that can be checked without I/O; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = &self.name
            && (n.trim().is_empty() || n.len() > 200)
        {
            return Err("[a2a]: `name` must be 1 to 200 characters".into());
        }
        if let Some(d) = &self.description
            && d.len() > 4096
        {
            return Err("[a2a]: `description` is longer than 4096 bytes".into());
        }
        if let Some(r) = &self.repo {
            check_repo_url(r).map_err(|m| format!("[a2a]: `repo`: {m}"))?;
        }
        if let Some(u) = &self.public_url {
            check_base_url(u).map_err(|m| format!("[a2a]: `public_url`: {m}"))?;
        }
        if let Some(w) = &self.send_wait {
            humantime::parse_duration(w).map_err(|e| {
                format!(
                    "[a2a]: `send_wait`: `{w}` is not a duration ({e}); such as \"60s\" or \"5m\""
                )
            })?;
        }
        for (name, peer) in &self.peers {
            if !crate::sandbox_router::is_dns_label(name) {
                return Err(format!(
                    "[a2a.peers.{name}]: not a valid name; use lowercase letters, digits and `-`"
                ));
            }
            check_base_url(&peer.url).map_err(|m| format!("[a2a.peers.{name}]: `url`: {m}"))?;
        }
        Ok(())
    }

    /// Parses the `[a2a]` table of the config file.
    pub fn parse(value: toml::Value) -> Result<A2aConfig, String> {
        let cfg: A2aConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path.is_empty() || path == "." {
                format!("[a2a]: {}", e.inner())
            } else {
                format!("[a2a]: `{path}`: {}", e.inner())
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn send_wait(&self) -> Duration {
        self.send_wait
            .as_deref()
            .and_then(|w| humantime::parse_duration(w).ok())
            .unwrap_or(DEFAULT_SEND_WAIT)
    }
}
