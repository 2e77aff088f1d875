//! [`MemoryStore`]: a [`SandboxStore`] in memory, for tests and for drivers that need no
//! persistence. `warden serve` uses its SQLite store instead.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::driver::{SandboxRecord, SandboxStore};

/// Sandbox records kept in memory. Clone the `Arc` holding it to share one store between
/// two drivers (a restart in tests).
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<String, SandboxRecord>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

#[async_trait::async_trait]
impl SandboxStore for MemoryStore {
    async fn put(&self, record: &SandboxRecord) -> Result<(), String> {
        self.records
            .lock()
            .map_err(|_| "store lock poisoned".to_string())?
            .insert(record.info.id.clone(), record.clone());
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        self.records
            .lock()
            .map_err(|_| "store lock poisoned".to_string())?
            .remove(id);
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<SandboxRecord>, String> {
        Ok(self
            .records
            .lock()
            .map_err(|_| "store lock poisoned".to_string())?
            .values()
            .cloned()
            .collect())
    }
}
