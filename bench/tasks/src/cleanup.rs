//! What a run has to undo if it stops early. The release profile aborts on panic, so no
//! destructor runs then, and Ctrl-C ends the process without them: the PostgreSQL cluster
//! and the sandboxes (detached `warden run` supervisors, by design) would be left behind.
//! Whatever holds such a thing registers how to undo it ([`on_abort`]); a panic hook and a
//! SIGINT/SIGTERM handler ([`install`]) run what is registered. A normal drop undoes the
//! thing itself and removes its entry.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

type Action = Box<dyn Fn() + Send + Sync>;

static ACTIONS: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// An entry of the registry; dropping it removes the entry (without running it).
#[derive(Debug)]
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut actions) = ACTIONS.lock() {
            actions.retain(|(id, _)| *id != self.0);
        }
    }
}

/// Registers `action`, run if the process is interrupted or panics before the returned
/// entry is dropped.
pub fn on_abort(action: impl Fn() + Send + Sync + 'static) -> Registered {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut actions) = ACTIONS.lock() {
        actions.push((id, Box::new(action)));
    }
    Registered(id)
}

/// Runs every registered action, newest first. `try_lock`: a panic while the registry is
/// held must not deadlock its own hook.
fn run_all() {
    let actions = match ACTIONS.try_lock() {
        Ok(mut actions) => std::mem::take(&mut *actions),
        Err(_) => return,
    };
    if !actions.is_empty() {
        // Not eprintln!: stderr may be the broken pipe that caused the panic.
        let _ = writeln!(
            std::io::stderr(),
            "warden-bench-tasks: stopping early; cleaning up"
        );
    }
    for (_, action) in actions.into_iter().rev() {
        action();
    }
}

/// The panic hook and the signal handler.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        run_all();
    }));
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {}
            }
            run_all();
            std::process::exit(130);
        });
    });
}
