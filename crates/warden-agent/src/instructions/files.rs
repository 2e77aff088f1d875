//! Reading repository files safely: regular files only, confined to a root after symlinks are
//! resolved, size-capped for the model but hashed whole for pinning.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A file larger than this is not read at all (it is not an instruction file anyone wrote).
pub const MAX_HASHED_BYTES: u64 = 64 * 1024 * 1024;

/// A file warden read, with the SHA-256 of all its bytes: what trust pinning records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDigest {
    /// The path as named (lexically normalized, absolute).
    pub path: PathBuf,
    #[serde(serialize_with = "serialize_hex")]
    pub sha256: [u8; 32],
}

impl FileDigest {
    /// The digest as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

/// The text of a file read under a size cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadedFile {
    /// At most the cap, cut at a character boundary; invalid UTF-8 replaced by U+FFFD.
    pub text: String,
    /// The digest of every byte of the file, not only of the text kept.
    pub digest: FileDigest,
    /// The file's full size when `text` holds only its beginning.
    pub truncated_from: Option<u64>,
    /// Whether the file was not valid UTF-8 (within the part kept).
    pub lossy: bool,
}

/// Reads the regular file `real` (already resolved), hashing all of it and keeping the first
/// `limit` bytes as text. `named` is the path recorded in the digest.
pub fn read_capped(named: &Path, real: &Path, limit: usize) -> io::Result<LoadedFile> {
    // A FIFO or device would block or never end: look before opening, and again after.
    if !fs::metadata(real)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut file = File::open(real)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_HASHED_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file is {} bytes, more than the {} MiB warden reads",
                meta.len(),
                MAX_HASHED_BYTES / (1024 * 1024)
            ),
        ));
    }
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_HASHED_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the file grew past the {} MiB warden reads",
                    MAX_HASHED_BYTES / (1024 * 1024)
                ),
            ));
        }
        hasher.update(&buf[..n]);
        if kept.len() < limit {
            let take = n.min(limit - kept.len());
            kept.extend_from_slice(&buf[..take]);
        }
    }
    let truncated = total > kept.len() as u64;
    let (text, lossy) = decode(kept, truncated);
    Ok(LoadedFile {
        text,
        digest: FileDigest {
            path: named.to_path_buf(),
            sha256: hasher.finalize().into(),
        },
        truncated_from: truncated.then_some(total),
        lossy,
    })
}

/// UTF-8 text from bytes; when the bytes were cut, a character split by the cut is dropped
/// rather than reported as invalid.
fn decode(mut bytes: Vec<u8>, cut: bool) -> (String, bool) {
    if cut
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn cut_at_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// `path` with `.` removed and `..` applied lexically (never above the root).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Where `real` lies relative to `root`, when it lies inside it (both already resolved).
pub fn inside(real: &Path, root: &Path) -> bool {
    real.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_applies_dot_and_dotdot_lexically() {
        let cases = [
            ("/a/b/../c", "/a/c"),
            ("/a/./b", "/a/b"),
            ("/../a", "/a"),
            ("/a/b/../../..", "/"),
            ("a/../../b", "b"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn read_capped_hashes_everything_and_keeps_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // "é" is two bytes: a cap of 3 cuts it in half, and the half is dropped.
        fs::write(&p, "abé and more").unwrap();
        let got = read_capped(&p, &p, 3).unwrap();
        assert_eq!(got.text, "ab");
        assert!(!got.lossy);
        assert_eq!(got.truncated_from, Some("abé and more".len() as u64));
        let whole = read_capped(&p, &p, 1 << 20).unwrap();
        assert_eq!(whole.text, "abé and more");
        assert_eq!(whole.truncated_from, None);
        assert_eq!(got.digest, whole.digest);
        // SHA-256("abé and more"), computed independently.
        assert_eq!(
            whole.digest.sha256_hex(),
            hex(&Sha256::digest("abé and more".as_bytes()))
        );
        // The FIPS 180-2 test vector.
        fs::write(&p, "abc").unwrap();
        assert_eq!(
            read_capped(&p, &p, 1).unwrap().digest.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn read_capped_marks_invalid_utf8_and_refuses_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"ok \xff end").unwrap();
        let got = read_capped(&p, &p, 100).unwrap();
        assert!(got.lossy);
        assert_eq!(got.text, "ok \u{fffd} end");
        let err = read_capped(dir.path(), dir.path(), 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
