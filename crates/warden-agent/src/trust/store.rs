//! Where pins live: the [`TrustStore`] seam, a file per repository under warden's data
//! directory, and an in-memory store for tests and embedders.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{PinSet, RepoIdentity, TrustError};

/// A store file larger than this is not read (text is capped well below it).
pub const MAX_STORE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Pins per repository. `get` returns `None` only when nothing was ever pinned for the
/// repository; a record that exists but cannot be used is an error, never `None`.
pub trait TrustStore: std::fmt::Debug {
    fn get(&self, repo: &RepoIdentity) -> Result<Option<PinSet>, TrustError>;
    fn put(&self, repo: &RepoIdentity, pins: &PinSet) -> Result<(), TrustError>;
}

/// One JSON file per repository, `DIR/<repo id>.json` (see [`RepoIdentity::id`]), mode 0600
/// in a directory of mode 0700, replaced atomically (a temporary file, fsync, rename, fsync of
/// the directory). A file that is a symlink, not a regular file, writable by group or others,
/// unparsable, or recording another repository is refused.
#[derive(Debug, Clone)]
pub struct FileTrustStore {
    dir: PathBuf,
}

impl FileTrustStore {
    /// A store in `dir` itself.
    pub fn new(dir: impl Into<PathBuf>) -> FileTrustStore {
        FileTrustStore { dir: dir.into() }
    }

    /// The store of a warden data directory: `DATA/trust`.
    pub fn in_data_dir(data: &Path) -> FileTrustStore {
        FileTrustStore::new(data.join("trust"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the pins of `repo`.
    pub fn path_for(&self, repo: &RepoIdentity) -> PathBuf {
        self.dir.join(format!("{}.json", repo.id()))
    }
}

impl TrustStore for FileTrustStore {
    fn get(&self, repo: &RepoIdentity) -> Result<Option<PinSet>, TrustError> {
        let path = self.path_for(repo);
        let corrupt = |reason: String| TrustError::CorruptStore {
            path: path.clone(),
            reason,
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TrustError::Store { path, source }),
        };
        if !meta.file_type().is_file() {
            return Err(corrupt(
                "it is not a regular file (a symlink is refused)".into(),
            ));
        }
        let mut file = File::open(&path).map_err(|source| TrustError::Store {
            path: path.clone(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| TrustError::Store {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(corrupt("it is not a regular file".into()));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(corrupt(format!(
                "its mode is {:o}: others could have written pins into it (warden writes 0600)",
                meta.permissions().mode() & 0o777
            )));
        }
        if meta.len() > MAX_STORE_FILE_BYTES {
            return Err(corrupt(format!(
                "it is {} bytes, more than the {MAX_STORE_FILE_BYTES} warden reads",
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_STORE_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| TrustError::Store {
                path: path.clone(),
                source,
            })?;
        let pins: PinSet = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("it is not a valid pin record: {e}")))?;
        pins.validate(repo).map_err(corrupt)?;
        Ok(Some(pins))
    }

    fn put(&self, repo: &RepoIdentity, pins: &PinSet) -> Result<(), TrustError> {
        let store_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrustError::Store { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(store_err(&self.dir))?;
        let path = self.path_for(repo);
        let mut json =
            serde_json::to_vec_pretty(pins).map_err(|e| store_err(&path)(io::Error::other(e)))?;
        json.push(b'\n');
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = self.dir.join(format!(
            ".{}.json.{}.{nanos}.tmp",
            repo.id(),
            std::process::id()
        ));
        let written = (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // The mode given to open is masked by the umask; make sure of 0600.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(TrustError::Store { path, source: e });
        }
        Ok(())
    }
}

/// Pins in memory: for tests, and for embedders that keep pins in their own database.
#[derive(Debug, Default)]
pub struct MemoryTrustStore {
    pins: Mutex<BTreeMap<PathBuf, PinSet>>,
}

impl MemoryTrustStore {
    pub fn new() -> MemoryTrustStore {
        MemoryTrustStore::default()
    }
}

impl TrustStore for MemoryTrustStore {
    fn get(&self, repo: &RepoIdentity) -> Result<Option<PinSet>, TrustError> {
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        Ok(pins.get(&repo.root).cloned())
    }

    fn put(&self, repo: &RepoIdentity, pins: &PinSet) -> Result<(), TrustError> {
        let mut all = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(repo.root.clone(), pins.clone());
        Ok(())
    }
}
