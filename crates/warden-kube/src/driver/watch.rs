//! The driver's events from watching what it manages: the Sandboxes labelled
//! `app.kubernetes.io/managed-by=warden` (phase changes: ready, suspended, resumed, failed,
//! expired, deleted) and its SandboxClaims (expired). What exists when a watch (re)starts is
//! taken as the starting point, not reported.

use std::collections::HashMap;

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use warden_sandbox::{Phase, SandboxEvent};

use super::mapping::{self, MANAGED_SELECTOR};
use crate::crd::conditions::{claim as claim_reason, types};
use crate::crd::{Sandbox, SandboxClaim};

/// Starts the watches; they run until aborted.
pub(super) fn spawn(
    sandboxes: Api<Sandbox>,
    claims: Api<SandboxClaim>,
    events: broadcast::Sender<SandboxEvent>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(watch_sandboxes(sandboxes, events.clone())),
        tokio::spawn(watch_claims(claims, events)),
    ]
}

/// The event for a sandbox going from `before` (unknown when first seen) to `after`.
pub(super) fn transition(
    before: Option<Phase>,
    after: Phase,
    message: Option<&str>,
) -> Option<(&'static str, String)> {
    if before == Some(after) {
        return None;
    }
    let message = message.unwrap_or_default().to_string();
    let kind = match (before, after) {
        (Some(Phase::Suspended), Phase::Ready) => "resumed",
        (_, Phase::Ready) => "ready",
        (_, Phase::Suspended) => "suspended",
        (_, Phase::Failed) => "failed",
        (_, Phase::Stopped) if message.contains("SandboxExpired") => "expired",
        (_, Phase::Stopped) => "stopped",
        (_, Phase::Starting) => return None,
    };
    let message = match (kind, message.is_empty()) {
        ("ready", true) => "answering".to_string(),
        ("resumed", true) => "running again".to_string(),
        ("suspended", true) => "pod deleted; workspace volumes kept".to_string(),
        _ => message,
    };
    Some((kind, message))
}

async fn watch_sandboxes(api: Api<Sandbox>, events: broadcast::Sender<SandboxEvent>) {
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut phases: HashMap<String, Phase> = HashMap::new();
    let mut relist: Option<HashMap<String, Phase>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes driver: cannot watch sandboxes; retrying");
                continue;
            }
        };
        match event {
            Event::Init => relist = Some(HashMap::new()),
            Event::InitApply(s) => {
                if let (Some(buf), Some(name)) = (relist.as_mut(), s.metadata.name.clone()) {
                    let phase = mapping::phase(&s).0;
                    if phase != Phase::Starting {
                        buf.insert(name, phase);
                    }
                }
            }
            Event::InitDone => {
                if let Some(all) = relist.take() {
                    phases = all;
                }
            }
            Event::Apply(s) => {
                let Some(name) = s.metadata.name.clone() else {
                    continue;
                };
                let (after, message) = mapping::phase(&s);
                // Only settled phases are kept, so that Suspended → Starting → Ready reads as
                // resumed.
                let before = if after == Phase::Starting {
                    phases.get(&name).copied()
                } else {
                    phases.insert(name.clone(), after)
                };
                if let Some((kind, message)) = transition(before, after, message.as_deref()) {
                    let _ = events.send(SandboxEvent::now(&name, kind, message));
                }
            }
            Event::Delete(s) => {
                let Some(name) = s.metadata.name.clone() else {
                    continue;
                };
                phases.remove(&name);
                let _ = events.send(SandboxEvent::now(
                    &name,
                    "deleted",
                    "the Sandbox is gone; nothing of it remains",
                ));
            }
        }
    }
}

/// Whether a claim's `Ready` condition says it expired.
fn expired(claim: &SandboxClaim) -> bool {
    claim.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == types::READY && c.reason == claim_reason::CLAIM_EXPIRED)
    })
}

async fn watch_claims(api: Api<SandboxClaim>, events: broadcast::Sender<SandboxEvent>) {
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut seen_expired: HashMap<String, bool> = HashMap::new();
    let mut initial = true;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes driver: cannot watch claims; retrying");
                continue;
            }
        };
        match event {
            Event::Init => initial = true,
            Event::InitApply(c) => {
                if let Some(name) = c.metadata.name.clone() {
                    seen_expired.insert(name, expired(&c));
                }
            }
            Event::InitDone => initial = false,
            Event::Apply(c) => {
                let Some(name) = c.metadata.name.clone() else {
                    continue;
                };
                let now = expired(&c);
                let before = seen_expired.insert(name.clone(), now).unwrap_or(false);
                if now && !before && !initial {
                    let sandbox = c
                        .status
                        .as_ref()
                        .map(|s| s.sandbox.name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or(name.clone());
                    let _ = events.send(SandboxEvent::now(
                        &sandbox,
                        "expired",
                        format!("claim {name} reached its shutdown time"),
                    ));
                }
            }
            Event::Delete(c) => {
                if let Some(name) = c.metadata.name {
                    seen_expired.remove(&name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use Phase::*;
        let cases = [
            (None, Starting, None, None),
            (None, Ready, None, Some("ready")),
            (Some(Starting), Ready, None, Some("ready")),
            (Some(Ready), Ready, None, None),
            (Some(Ready), Suspended, None, Some("suspended")),
            (Some(Ready), Starting, Some("suspending"), None),
            (Some(Suspended), Ready, None, Some("resumed")),
            (
                Some(Ready),
                Failed,
                Some("PodFailed: OOMKilled"),
                Some("failed"),
            ),
            (
                Some(Ready),
                Stopped,
                Some("SandboxExpired: shutdown time passed"),
                Some("expired"),
            ),
            (Some(Ready), Stopped, Some("being deleted"), Some("stopped")),
        ];
        for (before, after, message, want) in cases {
            assert_eq!(
                transition(before, after, message).map(|(k, _)| k),
                want,
                "{before:?} -> {after:?}"
            );
        }
        assert_eq!(
            transition(Some(Ready), Failed, Some("PodFailed: OOMKilled"))
                .unwrap()
                .1,
            "PodFailed: OOMKilled"
        );
    }
}
