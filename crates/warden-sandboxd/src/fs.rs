//! File access confined to the root.
//!
//! Every path a client names is first parsed ([`parse`], pure: no `..`, no NUL, absolute
//! paths only inside the root), then opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` relative to a descriptor of the root, so a symlink planted by
//! sandboxed code cannot lead outside it, not even one swapped in between two requests.
//! Changes happen through `*at` calls on a directory descriptor obtained that way: a write
//! goes to a temporary file in the target's directory and is renamed over the target, a
//! removal never follows a symlink.
//!
//! Where the kernel has no `openat2` (gVisor implements none; it answers `ENOSYS`), the same
//! rule is kept in user space ([`Root::resolve_stepwise`]): the path is walked one component
//! at a time with `openat(O_NOFOLLOW)` relative to descriptors already held, a symlink is
//! read and its target walked the same way, `..` pops a descriptor this walk pushed (never
//! the kernel's `..`), and an absolute target or a `..` above the root fails with `EXDEV`,
//! as `RESOLVE_BENEATH` does. The kernel never follows a link on our behalf, so a symlink
//! swapped in mid-walk is read as text and checked, not traversed.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::ApiError;
use crate::proto::{EntryType, FileEntry};

/// Parses a client's path into components beneath `root`. Empty, `.` and `/`-only paths
/// name the root itself. An absolute path must lie inside `root`.
pub fn parse(root: &Path, raw: &str) -> Result<Vec<String>, ApiError> {
    if raw.contains('\0') {
        return Err(ApiError::invalid("path: contains a NUL byte"));
    }
    let rel = if raw.starts_with('/') {
        let root_s = root.to_string_lossy();
        let root_s = root_s.trim_end_matches('/');
        if root_s.is_empty() {
            raw
        } else if let Some(rest) = raw.strip_prefix(root_s)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            rest
        } else {
            return Err(ApiError::denied(format!(
                "path: `{raw}` is outside the sandbox root; use a path relative to the root or beneath `{root_s}`"
            )));
        }
    } else {
        raw
    };
    let mut out = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ApiError::denied(format!(
                    "path: `{raw}` contains `..`; paths must stay beneath the sandbox root"
                )));
            }
            p => out.push(p.to_string()),
        }
    }
    Ok(out)
}

fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Maps a system error on `what` to the API error a client sees.
pub fn map_errno(e: Errno, what: &str) -> ApiError {
    match e {
        Errno::ENOENT => ApiError::not_found(format!("path: `{what}` does not exist")),
        Errno::ENOTDIR => {
            ApiError::not_found(format!("path: a parent of `{what}` is not a directory"))
        }
        Errno::EXDEV | Errno::ELOOP => ApiError::denied(format!(
            "path: `{what}` resolves outside the sandbox root (through a symlink)"
        )),
        Errno::EACCES | Errno::EPERM | Errno::EROFS => {
            ApiError::denied(format!("path: `{what}`: permission denied"))
        }
        Errno::EISDIR => ApiError::invalid(format!("path: `{what}` is a directory")),
        Errno::ENOTEMPTY | Errno::EEXIST => ApiError::new(
            crate::proto::ErrorCode::Conflict,
            format!("path: `{what}` is a non-empty directory; pass recursive=true to remove it"),
        ),
        Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG => ApiError::new(
            crate::proto::ErrorCode::ResourceExhausted,
            format!("path: `{what}`: no space left ({e})"),
        ),
        Errno::ENAMETOOLONG => ApiError::invalid(format!("path: `{what}` is too long")),
        other => ApiError::internal(format!("path: `{what}`: {}", other.desc())),
    }
}

fn io_to_api(e: io::Error, what: &str) -> ApiError {
    match e.raw_os_error() {
        Some(n) => map_errno(Errno::from_raw(n), what),
        None => ApiError::internal(format!("path: `{what}`: {e}")),
    }
}

/// Metadata of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: EntryType,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl Meta {
    fn from_stat(st: &FileStat) -> Meta {
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let kind = if fmt == SFlag::S_IFREG {
            EntryType::File
        } else if fmt == SFlag::S_IFDIR {
            EntryType::Directory
        } else if fmt == SFlag::S_IFLNK {
            EntryType::Symlink
        } else {
            EntryType::Other
        };
        Meta {
            kind,
            size: st.st_size.max(0) as u64,
            mode: st.st_mode & 0o7777,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }
    /// The modification time as RFC 3339 in UTC.
    pub fn modified_rfc3339(&self) -> String {
        rfc3339(self.mtime)
    }
    pub fn mtime_f64(&self) -> f64 {
        self.mtime as f64 + self.mtime_nsec as f64 / 1e9
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The sandbox root: a directory descriptor every access is resolved beneath.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    path: PathBuf,
}

/// A write in progress: a temporary file next to the target, renamed over it on commit and
/// removed otherwise.
#[derive(Debug)]
pub struct PendingWrite {
    dir: OwnedFd,
    tmp: String,
    name: String,
    display: String,
    pub file: Option<File>,
    committed: bool,
}

impl PendingWrite {
    /// Renames the temporary file over the target.
    pub fn commit(mut self) -> Result<(), ApiError> {
        if let Some(f) = self.file.take() {
            f.sync_data().map_err(|e| io_to_api(e, &self.display))?;
        }
        renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())
            .map_err(|e| map_errno(e, &self.display))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if !self.committed {
            let _ = unlinkat(&self.dir, self.tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

impl Root {
    /// Opens `path` (which must be an existing directory) as the root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let canonical = std::fs::canonicalize(path)?;
        let dir: OwnedFd = nix::fcntl::open(
            &canonical,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(Root {
            dir,
            path: canonical,
        })
    }

    /// The root directory has been removed (its link count fell to zero): whoever owned it
    /// is gone, and so should this server be.
    pub fn is_removed(&self) -> bool {
        fstat(&self.dir).is_ok_and(|st| st.st_nlink == 0)
    }

    /// The root's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Parses a client's path.
    pub fn parse(&self, raw: &str) -> Result<Vec<String>, ApiError> {
        parse(&self.path, raw)
    }

    /// Opens `parts` beneath the root, with `flags` (never `O_CREAT`): `openat2` with
    /// `RESOLVE_BENEATH`, or the step-by-step walk where the kernel has no `openat2`.
    pub fn open_beneath(&self, parts: &[String], flags: OFlag) -> Result<OwnedFd, ApiError> {
        let rel = join(parts);
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.resolve_openat2(parts, flags) {
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        "this kernel has no openat2 (gVisor?): paths are resolved step by step"
                    );
                }
                other => return other.map_err(|e| map_errno(e, &rel)),
            }
        }
        self.resolve_stepwise(parts, flags)
            .map_err(|e| map_errno(e, &rel))
    }

    fn resolve_openat2(&self, parts: &[String], flags: OFlag) -> Result<OwnedFd, Errno> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.dir, join(parts).as_str(), how)
    }

    /// `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` in user space, for kernels without
    /// `openat2`: see the module's documentation. Errors as `openat2`'s: `EXDEV` for an
    /// escape, `ELOOP` after [`MAX_SYMLINKS`] links.
    pub(crate) fn resolve_stepwise(
        &self,
        parts: &[String],
        flags: OFlag,
    ) -> Result<OwnedFd, Errno> {
        // Directories entered below the root; the root itself is `self.dir`.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut queue: VecDeque<String> = parts.iter().cloned().collect();
        let mut links = 0u32;
        let final_flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        loop {
            let Some(name) = queue.pop_front() else {
                // The path ended on a directory already entered (or the root).
                let cur = stack.last().unwrap_or(&self.dir);
                return openat(cur, ".", flags | OFlag::O_CLOEXEC, Mode::empty());
            };
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    if stack.pop().is_none() {
                        return Err(Errno::EXDEV);
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().unwrap_or(&self.dir);
            let last = queue.is_empty();
            let how = if last {
                final_flags
            } else {
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
            };
            let opened = openat(cur, name.as_str(), how, Mode::empty());
            // `O_NOFOLLOW` gives ELOOP (or, with O_DIRECTORY, ENOTDIR) on a symlink, and
            // with O_PATH the link itself: either way, read it and walk its target.
            let is_link = match &opened {
                Ok(fd) => fstat(fd).is_ok_and(|st| {
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                }),
                Err(Errno::ELOOP | Errno::ENOTDIR) => true,
                Err(_) => false,
            };
            if is_link {
                match readlinkat(cur, name.as_str()) {
                    Ok(target) => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(Errno::ELOOP);
                        }
                        let target = target.to_string_lossy().into_owned();
                        if target.starts_with('/') {
                            return Err(Errno::EXDEV);
                        }
                        for part in target.split('/').rev() {
                            queue.push_front(part.to_string());
                        }
                        continue;
                    }
                    // Not a link after all (or swapped back): the open's own answer stands.
                    Err(Errno::EINVAL | Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
            let fd = opened?;
            if last {
                return Ok(fd);
            }
            stack.push(fd);
        }
    }

    /// Metadata of `parts` (a final symlink inside the root is followed).
    pub fn stat(&self, parts: &[String]) -> Result<Meta, ApiError> {
        let fd = self.open_beneath(parts, OFlag::O_PATH)?;
        let st = fstat(&fd).map_err(|e| map_errno(e, &join(parts)))?;
        Ok(Meta::from_stat(&st))
    }

    /// Whether `parts` exists beneath the root. A path that would resolve outside is an
    /// error, not `false`.
    pub fn exists(&self, parts: &[String]) -> Result<bool, ApiError> {
        match self.stat(parts) {
            Ok(_) => Ok(true),
            Err(e) if e.code == crate::proto::ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens a regular file for reading.
    pub fn open_read(&self, parts: &[String]) -> Result<(File, Meta), ApiError> {
        let fd = self.open_beneath(parts, OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)?;
        let st = fstat(&fd).map_err(|e| map_errno(e, &join(parts)))?;
        let meta = Meta::from_stat(&st);
        if meta.kind == EntryType::Directory {
            return Err(ApiError::invalid(format!(
                "path: `{}` is a directory",
                join(parts)
            )));
        }
        if meta.kind != EntryType::File {
            return Err(ApiError::invalid(format!(
                "path: `{}` is not a regular file",
                join(parts)
            )));
        }
        let file = File::from(fd);
        // Regular files ignore O_NONBLOCK; it only kept a FIFO from blocking the open.
        Ok((file, meta))
    }

    /// Lists a directory, sorted by name.
    pub fn list(&self, parts: &[String]) -> Result<Vec<(String, Meta)>, ApiError> {
        let what = join(parts);
        let fd = self.open_beneath(parts, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| map_errno(e, &what))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| map_errno(e, &what))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        let dirfd = self.open_beneath(parts, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let mut out = Vec::new();
        for name in names {
            match fstatat(&dirfd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name, Meta::from_stat(&st))),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(map_errno(e, &what)),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// `FileEntry`s of a directory.
    pub fn list_entries(&self, parts: &[String]) -> Result<Vec<FileEntry>, ApiError> {
        Ok(self
            .list(parts)?
            .into_iter()
            .map(|(name, m)| FileEntry {
                name,
                size: m.size,
                kind: m.kind,
                modified_at: m.modified_rfc3339(),
                mode: format!("{:04o}", m.mode),
            })
            .collect())
    }

    /// Creates `parts` and its missing parents (`mkdir -p`), each `0755`.
    pub fn mkdir_p(&self, parts: &[String]) -> Result<(), ApiError> {
        for i in 0..parts.len() {
            let parent = self.open_beneath(&parts[..i], OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            match mkdirat(&parent, parts[i].as_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(map_errno(e, &join(&parts[..=i]))),
            }
        }
        // What is there now must be a directory beneath the root.
        self.open_beneath(parts, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map(drop)
    }

    /// Starts writing `parts`: parents are created, the data goes to a temporary file in
    /// the target's directory (created with `mode`).
    pub fn begin_write(&self, parts: &[String], mode: u32) -> Result<PendingWrite, ApiError> {
        let Some((name, parents)) = parts.split_last() else {
            return Err(ApiError::invalid(
                "path: names the root directory; give a file path",
            ));
        };
        self.mkdir_p(parents)?;
        let dir = self.open_beneath(parents, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let display = join(parts);
        if let Ok(st) = fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            && Meta::from_stat(&st).kind == EntryType::Directory
        {
            return Err(ApiError::new(
                crate::proto::ErrorCode::Conflict,
                format!("path: `{display}` is a directory"),
            ));
        }
        let mut attempt = 0u32;
        loop {
            let tmp = format!(
                ".{}.warden-{}-{}.tmp",
                name.chars().take(64).collect::<String>(),
                std::process::id(),
                unique()
            );
            match openat(
                &dir,
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode & 0o777),
            ) {
                Ok(fd) => {
                    let file = File::from(fd);
                    // The umask must not change the mode the client asked for.
                    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                        .map_err(|e| io_to_api(e, &display))?;
                    return Ok(PendingWrite {
                        dir,
                        tmp,
                        name: name.clone(),
                        display,
                        file: Some(file),
                        committed: false,
                    });
                }
                Err(Errno::EEXIST) if attempt < 16 => attempt += 1,
                Err(e) => return Err(map_errno(e, &display)),
            }
        }
    }

    /// Removes `parts`; a non-empty directory only with `recursive`. Symlinks are removed,
    /// never followed.
    pub fn remove(&self, parts: &[String], recursive: bool) -> Result<(), ApiError> {
        let Some((name, parents)) = parts.split_last() else {
            return Err(ApiError::denied("path: the sandbox root cannot be removed"));
        };
        let what = join(parts);
        let dir = self.open_beneath(parents, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        let st = fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| map_errno(e, &what))?;
        if Meta::from_stat(&st).kind != EntryType::Directory {
            return unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| map_errno(e, &what));
        }
        match unlinkat(&dir, name.as_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(()),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) if recursive => {
                remove_tree(&dir, name.as_str(), &what)
            }
            Err(e) => Err(map_errno(e, &what)),
        }
    }

    /// Total size of the regular files beneath the root (symlinks not followed).
    pub fn usage(&self) -> Result<u64, ApiError> {
        let fd = self.open_beneath(&[], OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        tree_size(fd, 0).map_err(|e| map_errno(e, "."))
    }
}

/// Set once `openat2` has answered `ENOSYS`: every later path takes the step-by-step walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Symlinks one resolution follows at most, as the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (N.fetch_add(1, Ordering::Relaxed) << 32) ^ t
}

fn remove_tree<N: ?Sized + nix::NixPath>(
    parent: &impl AsFd,
    name: &N,
    what: &str,
) -> Result<(), ApiError> {
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| map_errno(e, what))?;
    let handle = fd.try_clone().map_err(|e| io_to_api(e, what))?;
    let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| map_errno(e, what))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| map_errno(e, what))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(entry.file_name().to_owned());
        }
    }
    for n in names {
        let st = match fstatat(&handle, n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(map_errno(e, what)),
        };
        if Meta::from_stat(&st).kind == EntryType::Directory {
            remove_tree(&handle, n.as_c_str(), what)?;
        } else {
            match unlinkat(&handle, n.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(map_errno(e, what)),
            }
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| map_errno(e, what))
}

fn tree_size(fd: OwnedFd, depth: u32) -> Result<u64, Errno> {
    if depth > 256 {
        return Err(Errno::ELOOP);
    }
    let handle = fd.try_clone().map_err(|_| Errno::EMFILE)?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut total = 0u64;
    let mut subdirs = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let name = entry.file_name().to_owned();
        match fstatat(&handle, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => match Meta::from_stat(&st).kind {
                EntryType::File => total += st.st_size.max(0) as u64,
                EntryType::Directory => subdirs.push(name),
                _ => {}
            },
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    for name in subdirs {
        match openat(
            &handle,
            name.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(sub) => total += tree_size(sub, depth + 1)?,
            Err(Errno::ENOENT | Errno::EACCES) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let root = Path::new("/work/ws");
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            (".", &[]),
            ("/work/ws", &[]),
            ("/work/ws/", &[]),
            ("a/b.txt", &["a", "b.txt"]),
            ("./a//b/", &["a", "b"]),
            ("/work/ws/a", &["a"]),
            ("a/./b", &["a", "b"]),
        ];
        for (raw, want) in ok {
            let got = parse(root, raw).unwrap();
            assert_eq!(
                got,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{raw}"
            );
        }
        for raw in [
            "..",
            "a/../b",
            "../x",
            "/etc/passwd",
            "/",
            "/work/wsx/a",
            "/work",
        ] {
            let e = parse(root, raw).unwrap_err();
            assert_eq!(e.code, crate::proto::ErrorCode::PermissionDenied, "{raw}");
        }
        let e = parse(root, "a\0b").unwrap_err();
        assert_eq!(e.code, crate::proto::ErrorCode::InvalidArgument);
        // With `/` as the root every absolute path is inside.
        assert_eq!(parse(Path::new("/"), "/etc/x").unwrap(), ["etc", "x"]);
        assert_eq!(parse(Path::new("/"), "/").unwrap(), Vec::<String>::new());
    }

    /// The step-by-step walk (gVisor's path) answers as `openat2(RESOLVE_BENEATH)` does,
    /// case by case: the same file, or the same errno, for every way out we could think of.
    #[test]
    fn stepwise_resolution_matches_openat2() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let root_dir = tmp.path().join("root");
        std::fs::create_dir_all(root_dir.join("a/b")).unwrap();
        std::fs::write(root_dir.join("a/b/file.txt"), "inside").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), "outside").unwrap();
        let links: &[(&str, &str)] = &[
            ("in", "a/b"),
            ("in_file", "a/b/file.txt"),
            ("abs", "/etc"),
            ("abs_self", "/proc/self/root"),
            ("up", ".."),
            ("sibling", "../secret.txt"),
            ("a/stays", "../a/b"),
            ("a/b/deep_up", "../../.."),
            ("a/b/deep_ok", "../../a/./b//file.txt"),
            ("chain1", "chain2"),
            ("chain2", "a/stays"),
            ("loop1", "loop2"),
            ("loop2", "loop1"),
            ("dangling", "nothing/here"),
            ("via_link_up", "in/../../.."),
        ];
        for (at, to) in links {
            symlink(to, root_dir.join(at)).unwrap();
        }
        let root = Root::open(&root_dir).unwrap();
        let paths: &[&str] = &[
            "",
            "a",
            "a/b/file.txt",
            "in",
            "in/file.txt",
            "in_file",
            "abs",
            "abs/passwd",
            "abs_self",
            "up",
            "up/secret.txt",
            "sibling",
            "a/stays",
            "a/stays/file.txt",
            "a/b/deep_up",
            "a/b/deep_ok",
            "chain1/file.txt",
            "loop1",
            "loop1/x",
            "dangling",
            "missing",
            "a/b/file.txt/x",
            "via_link_up",
        ];
        let flag_sets = [
            OFlag::O_PATH,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            OFlag::O_RDONLY,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        ];
        let id = |r: Result<OwnedFd, Errno>| {
            r.map(|fd| {
                let st = fstat(&fd).unwrap();
                (st.st_dev, st.st_ino)
            })
        };
        let mut escapes = 0;
        for raw in paths {
            let parts = root.parse(raw).unwrap();
            for flags in flag_sets {
                let kernel = id(root.resolve_openat2(&parts, flags));
                let ours = id(root.resolve_stepwise(&parts, flags));
                assert_eq!(ours, kernel, "`{raw}` with {flags:?}");
                if kernel == Err(Errno::EXDEV) {
                    escapes += 1;
                }
            }
        }
        // The table does try to get out: abs, abs_self, up, sibling, deep_up, via_link_up.
        assert!(escapes >= 6 * flag_sets.len(), "{escapes}");
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
