//! A clock the controller tests move by hand (expiry, TTLs), as the controller's `Clock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::jiff::Timestamp;
use warden_kube::controller::Clock;

/// Whole seconds since the epoch, shared by its clones.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    /// Starts at the wall clock's current second.
    pub fn new() -> TestClock {
        TestClock(Arc::new(AtomicI64::new(Timestamp::now().as_second())))
    }

    /// Moves the time on by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The controller's view of this clock.
    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Clock::from_fn(move || Timestamp::from_second(at.load(Ordering::SeqCst)).unwrap())
    }

    /// The time `offset` seconds from now on this clock, as RFC 3339.
    pub fn rfc3339(&self, offset: i64) -> String {
        Timestamp::from_second(self.0.load(Ordering::SeqCst) + offset)
            .unwrap()
            .to_string()
    }
}
