//! Facts about the host that shape a sandbox: who is running warden, where the homes are,
//! and which isolation mechanisms the kernel offers.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// The invoking user and the places whose secrets must stay hidden.
#[derive(Debug, Clone)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
    /// The invoking user's home directory.
    pub home: PathBuf,
    /// Every home directory on the host: the user's, root's and each directory in /home.
    pub homes: Vec<PathBuf>,
}

impl HostUser {
    pub fn current(env_home: Option<OsString>) -> HostUser {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let home = env_home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut homes = vec![home.clone(), PathBuf::from("/root")];
        if let Ok(entries) = fs::read_dir("/home") {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    homes.push(e.path());
                }
            }
        }
        // The canonical form too: /home may be a symlink (e.g. to /var/home).
        let canonical: Vec<PathBuf> = homes
            .iter()
            .filter_map(|h| fs::canonicalize(h).ok())
            .collect();
        homes.extend(canonical);
        homes.retain(|h| h != Path::new("/"));
        homes.sort();
        homes.dedup();
        HostUser {
            uid,
            gid,
            home,
            homes,
        }
    }
}

/// Reads a /proc or /sys file whole. Those files report a size of 0, so std's reads would
/// start at 32 bytes and double, and the kernel generates the file again for every read
/// (eight reads of `/proc/self/mountinfo` on a small host); one buffer takes it in one.
pub fn read_kernel_file(path: impl AsRef<Path>) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(16 * 1024);
    fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The highest capability number the kernel knows.
pub fn cap_last_cap() -> u32 {
    read_kernel_file("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Whether this process may create a user namespace, and why not. A cheap reading of the
/// sysctls; the clone itself is the final word.
pub fn user_namespaces() -> Result<(), String> {
    let read = |p: &str| read_kernel_file(p).ok().map(|s| s.trim().to_string());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err("user.max_user_namespaces is 0".into());
    }
    let root = nix::unistd::geteuid().is_root();
    if !root {
        if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
            return Err(
                "kernel.unprivileged_userns_clone is 0 (unprivileged user namespaces are disabled)"
                    .into(),
            );
        }
        if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
            return Err("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)".into());
        }
    }
    Ok(())
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Paths of gVisor's runsc, if installed (for the optional runtime layer).
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
