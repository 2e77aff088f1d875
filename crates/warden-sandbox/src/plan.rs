//! The local driver's decisions as pure functions: how many pool members to start next,
//! which to delete when a pool shrinks, and when a sandbox ends. The driver acts on them.

use std::time::{Duration, SystemTime};

use crate::driver::Phase;

/// The largest slow-start batch.
pub const MAX_BATCH: u32 = 64;

/// Slow start, as upstream warm pools refill: after a batch in which every member came up,
/// the next may be twice as large (1, 2, 4, ...); after a failure it starts again at 1.
pub fn next_batch(last: u32, all_ready: bool) -> u32 {
    if all_ready {
        last.saturating_mul(2).clamp(1, MAX_BATCH)
    } else {
        1
    }
}

/// How many members to start now: the shortfall, at most one batch.
pub fn to_create(replicas: u32, members: u32, batch: u32) -> u32 {
    replicas.saturating_sub(members).min(batch)
}

/// An unclaimed pool member, as the pool sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub ready: bool,
    pub created_at: SystemTime,
}

/// Which members to delete when a pool has more than `replicas`: the unready ones first
/// (they cost the least to give up), then the youngest.
pub fn select_excess(members: &[Member], replicas: u32) -> Vec<String> {
    let excess = members.len().saturating_sub(replicas as usize);
    if excess == 0 {
        return Vec::new();
    }
    let mut order: Vec<&Member> = members.iter().collect();
    // Unready before ready; within each, youngest first; ids break ties for determinism.
    order.sort_by(|a, b| {
        a.ready
            .cmp(&b.ready)
            .then(b.created_at.cmp(&a.created_at))
            .then(a.id.cmp(&b.id))
    });
    order
        .into_iter()
        .take(excess)
        .map(|m| m.id.clone())
        .collect()
}

/// Why a sandbox ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Its shutdown time passed.
    Shutdown,
    /// No exec or file call for its idle timeout.
    Idle,
}

impl Expiry {
    /// The event kind.
    pub fn kind(self) -> &'static str {
        match self {
            Expiry::Shutdown => "expired",
            Expiry::Idle => "idle",
        }
    }
}

/// What the reaper needs to know about one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub phase: Phase,
    /// An unclaimed pool member: the pool manages it, timers do not run.
    pub pool_member: bool,
    pub shutdown_at: Option<SystemTime>,
    pub idle_timeout: Option<Duration>,
    pub last_activity: SystemTime,
    /// Exec and file calls in progress: a sandbox busy with a long command is not idle.
    pub active_calls: u32,
}

/// Whether a sandbox should end now. The shutdown time holds in every live phase,
/// suspended included; the idle timeout only while it runs (a suspended sandbox is kept on
/// purpose) and not while a call is in progress.
pub fn expiry(now: SystemTime, c: &Clock) -> Option<Expiry> {
    if !matches!(c.phase, Phase::Ready | Phase::Suspended) || c.pool_member {
        return None;
    }
    if c.shutdown_at.is_some_and(|at| now >= at) {
        return Some(Expiry::Shutdown);
    }
    if c.phase == Phase::Ready
        && c.active_calls == 0
        && let Some(idle) = c.idle_timeout
        && now.duration_since(c.last_activity).unwrap_or_default() >= idle
    {
        return Some(Expiry::Idle);
    }
    None
}

/// Whether the record of an ended sandbox (Stopped or Failed) is kept any longer, so that
/// its owner can still read why it ended.
pub fn keep_finished(now: SystemTime, finished_at: SystemTime, retain: Duration) -> bool {
    now.duration_since(finished_at).unwrap_or_default() < retain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_batches() {
        let cases = [
            (0, true, 1),
            (1, true, 2),
            (2, true, 4),
            (4, true, 8),
            (32, true, 64),
            (64, true, 64),
            (8, false, 1),
            (1, false, 1),
        ];
        for (last, ok, want) in cases {
            assert_eq!(next_batch(last, ok), want, "next_batch({last}, {ok})");
        }
        let creates = [
            (5, 0, 1, 1),
            (5, 0, 4, 4),
            (5, 3, 4, 2),
            (5, 5, 4, 0),
            (5, 7, 4, 0),
            (0, 0, 8, 0),
        ];
        for (replicas, members, batch, want) in creates {
            assert_eq!(
                to_create(replicas, members, batch),
                want,
                "to_create({replicas}, {members}, {batch})"
            );
        }
    }

    fn m(id: &str, ready: bool, secs: u64) -> Member {
        Member {
            id: id.into(),
            ready,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn excess_unready_first_then_youngest() {
        let members = vec![
            m("a", true, 1),
            m("b", false, 2),
            m("c", true, 3),
            m("d", false, 4),
            m("e", true, 5),
        ];
        let cases: &[(u32, &[&str])] = &[
            (5, &[]),
            (9, &[]),
            (4, &["d"]),
            (3, &["d", "b"]),
            (2, &["d", "b", "e"]),
            (0, &["d", "b", "e", "c", "a"]),
        ];
        for (replicas, want) in cases {
            assert_eq!(select_excess(&members, *replicas), *want, "{replicas}");
        }
    }

    #[test]
    fn expiry_decisions() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let base = Clock {
            phase: Phase::Ready,
            pool_member: false,
            shutdown_at: Some(t(100)),
            idle_timeout: Some(Duration::from_secs(10)),
            last_activity: t(50),
            active_calls: 0,
        };
        let cases: Vec<(&str, Clock, u64, Option<Expiry>)> = vec![
            ("fresh", base, 55, None),
            ("idle", base, 60, Some(Expiry::Idle)),
            (
                "busy is not idle",
                Clock {
                    active_calls: 1,
                    ..base
                },
                70,
                None,
            ),
            ("shutdown", base, 100, Some(Expiry::Shutdown)),
            ("shutdown beats idle", base, 200, Some(Expiry::Shutdown)),
            (
                "busy still expires",
                Clock {
                    active_calls: 2,
                    ..base
                },
                100,
                Some(Expiry::Shutdown),
            ),
            (
                "no timers",
                Clock {
                    shutdown_at: None,
                    idle_timeout: None,
                    ..base
                },
                1000,
                None,
            ),
            (
                "suspended not idle",
                Clock {
                    phase: Phase::Suspended,
                    ..base
                },
                70,
                None,
            ),
            (
                "suspended expires",
                Clock {
                    phase: Phase::Suspended,
                    ..base
                },
                100,
                Some(Expiry::Shutdown),
            ),
            (
                "pool member",
                Clock {
                    pool_member: true,
                    ..base
                },
                1000,
                None,
            ),
            (
                "starting",
                Clock {
                    phase: Phase::Starting,
                    ..base
                },
                1000,
                None,
            ),
            (
                "stopped",
                Clock {
                    phase: Phase::Stopped,
                    ..base
                },
                1000,
                None,
            ),
            (
                "failed",
                Clock {
                    phase: Phase::Failed,
                    ..base
                },
                1000,
                None,
            ),
            (
                "clock behind",
                Clock {
                    last_activity: t(500),
                    ..base
                },
                60,
                None,
            ),
        ];
        for (name, clock, now, want) in cases {
            assert_eq!(expiry(t(now), &clock), want, "{name}");
        }
    }

    #[test]
    fn finished_records_are_kept_a_while() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let keep = Duration::from_secs(60);
        assert!(keep_finished(t(100), t(100), keep));
        assert!(keep_finished(t(159), t(100), keep));
        assert!(!keep_finished(t(160), t(100), keep));
        assert!(keep_finished(t(50), t(100), keep));
    }
}
