//! The server's state, shared by every protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use warden_jail::spawn::Confinement;

use crate::exec::Input;
use crate::fs::Root;

/// Output kept per stream by a buffered exec; the rest is dropped and `truncated` set.
pub const DEFAULT_OUTPUT_CAP: usize = 16 << 20;

/// Everything a request may touch.
#[derive(Debug)]
pub struct Sandboxd {
    pub root: Root,
    /// Total size the regular files beneath the root may reach through uploads.
    pub quota: Option<u64>,
    pub confinement: Confinement,
    /// Variables set for every child on top of sandboxd's environment.
    pub child_env: Vec<(String, String)>,
    pub output_cap: usize,
    pub started: Instant,
    /// Inputs of commands started with gRPC `Start`, by pid, for `WriteStdin`,
    /// `SendSignal` and `ResizeTTY`.
    pub processes: Mutex<HashMap<i32, mpsc::Sender<Input>>>,
    /// Uploads are serialized while a quota applies, so two cannot both fit the last room.
    pub write_lock: tokio::sync::Mutex<()>,
}

impl Sandboxd {
    pub fn new(root: Root, confinement: Confinement) -> Sandboxd {
        Sandboxd {
            root,
            quota: None,
            confinement,
            child_env: Vec::new(),
            output_cap: DEFAULT_OUTPUT_CAP,
            started: Instant::now(),
            processes: Mutex::new(HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }
}

pub type State = Arc<Sandboxd>;
