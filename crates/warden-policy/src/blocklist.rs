//! The sensitive-path blocklist: paths a sandbox never sees, whatever a policy says.
//!
//! The jail masks every one of these that exists (an empty, read-only file or directory
//! takes its place) and leaves them out of the Landlock allowlist, so each is denied by two
//! independent mechanisms. A policy cannot remove an entry; it can only add `hidden` paths.

use std::path::{Path, PathBuf};

/// Credential stores, shell histories and browser profiles, relative to a home directory.
pub const HOME_RELATIVE: &[&str] = &[
    // keys and cloud credentials
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".oci",
    ".config/doctl",
    ".config/hcloud",
    ".s3cfg",
    ".boto",
    ".databrickscfg",
    ".terraform.d/credentials.tfrc.json",
    ".vault-token",
    ".password-store",
    ".local/share/keyrings",
    ".pki",
    ".config/op",
    // forge and package-registry tokens
    ".git-credentials",
    ".config/git/credentials",
    ".config/gh",
    ".config/hub",
    ".netrc",
    ".npmrc",
    ".yarnrc.yml",
    ".pypirc",
    ".gem/credentials",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".m2/settings-security.xml",
    ".gradle/gradle.properties",
    ".config/ngrok",
    // coding agents' own logins
    ".claude/.credentials.json",
    ".claude.json",
    ".codex/auth.json",
    ".config/anthropic",
    ".config/openai",
    // shell and REPL histories
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".sh_history",
    ".history",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".irb_history",
    ".lesshst",
    ".viminfo",
    // browser and mail profiles
    ".mozilla",
    ".thunderbird",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    ".config/opera",
    "snap/firefox",
    "snap/chromium",
];

/// System secrets, container-runtime sockets and root's home. Several of these are readable
/// only by root, so they matter most when warden itself runs as root.
pub const ABSOLUTE: &[&str] = &[
    "/root",
    "/var/run/secrets",
    "/run/secrets",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_dsa_key",
    "/etc/ssl/private",
    "/etc/krb5.keytab",
    "/etc/ipsec.secrets",
    "/etc/ppp/chap-secrets",
    "/etc/ppp/pap-secrets",
    "/etc/wireguard",
    "/etc/NetworkManager/system-connections",
    "/etc/letsencrypt",
    "/etc/kubernetes",
    "/etc/rancher",
    "/etc/docker",
    "/var/lib/kubelet",
    "/var/lib/docker",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/run/podman",
    "/run/crio",
];

/// Expands the blocklist for the given home directories (the invoking user's, root's and
/// every other user's, so that a sandbox started by root cannot read another user's keys).
/// The result is sorted and free of duplicates; entries need not exist.
pub fn expand(homes: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ABSOLUTE.iter().map(PathBuf::from).collect();
    for home in homes {
        out.extend(HOME_RELATIVE.iter().map(|rel| home.join(rel)));
    }
    sort_dedup(&mut out);
    out
}

/// Expands the blocklist like [`expand`], but asks `exists(dir, name)` before producing a
/// home-relative entry, one directory level at a time, so that a caller can answer from
/// one directory listing instead of a `stat` per entry. Homes inside an absolute entry
/// (`/root`) are covered whole and not expanded.
pub fn expand_existing(
    homes: &[PathBuf],
    exists: &mut dyn FnMut(&Path, &str) -> bool,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ABSOLUTE.iter().map(PathBuf::from).collect();
    let absolute: Vec<PathBuf> = out.clone();
    for home in homes {
        if covering(&absolute, home).is_some() {
            continue;
        }
        'entry: for rel in HOME_RELATIVE {
            let mut dir = home.clone();
            for part in Path::new(rel).iter() {
                let Some(part) = part.to_str() else {
                    continue 'entry;
                };
                if !exists(&dir, part) {
                    continue 'entry;
                }
                dir.push(part);
            }
            out.push(dir);
        }
    }
    sort_dedup(&mut out);
    out
}

/// The blocklisted path that `path` is, or lies inside, if any.
pub fn covering<'a>(blocklist: &'a [PathBuf], path: &Path) -> Option<&'a Path> {
    blocklist
        .iter()
        .map(PathBuf::as_path)
        .find(|blocked| path.starts_with(blocked))
}

/// Sorts by bytes (comparing paths component by component is ten times slower, and this runs
/// on every sandbox start) and removes duplicates.
fn sort_dedup(paths: &mut Vec<PathBuf>) {
    use std::os::unix::ffi::OsStrExt;
    paths.sort_unstable_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    paths.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_what_the_issue_names() {
        let list = expand(&[PathBuf::from("/home/alice")]);
        for needed in [
            "/home/alice/.ssh",
            "/home/alice/.gnupg",
            "/home/alice/.aws",
            "/home/alice/.azure",
            "/home/alice/.config/gcloud",
            "/home/alice/.kube",
            "/home/alice/.docker",
            "/home/alice/.git-credentials",
            "/home/alice/.netrc",
            "/home/alice/.npmrc",
            "/home/alice/.pypirc",
            "/home/alice/.vault-token",
            "/home/alice/.bash_history",
            "/home/alice/.zsh_history",
            "/home/alice/.mozilla",
            "/home/alice/.config/google-chrome",
            "/var/run/secrets",
            "/run/secrets",
            "/etc/shadow",
            "/etc/gshadow",
            "/root",
        ] {
            assert!(list.contains(&PathBuf::from(needed)), "{needed} missing");
        }
    }

    #[test]
    fn expands_every_home_without_duplicates() {
        let list = expand(&[
            PathBuf::from("/home/a"),
            PathBuf::from("/home/b"),
            PathBuf::from("/home/a"),
        ]);
        assert!(list.contains(&PathBuf::from("/home/b/.aws")));
        let mut sorted = list.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), list.len());
    }

    #[test]
    fn expand_existing_asks_level_by_level_and_skips_covered_homes() {
        let present = [
            "/home/a/.ssh",
            "/home/a/.config",
            "/home/a/.config/gcloud",
            "/root/.ssh",
        ];
        let mut asked = Vec::new();
        let list = expand_existing(
            &[PathBuf::from("/home/a"), PathBuf::from("/root")],
            &mut |dir, name| {
                let p = dir.join(name);
                asked.push(p.clone());
                present.iter().any(|x| Path::new(x) == p)
            },
        );
        assert!(list.contains(&PathBuf::from("/home/a/.ssh")));
        assert!(list.contains(&PathBuf::from("/home/a/.config/gcloud")));
        assert!(!list.contains(&PathBuf::from("/home/a/.aws")));
        assert!(list.contains(&PathBuf::from("/root")));
        // /root is blocked whole: nothing under it is asked about
        assert!(asked.iter().all(|p| !p.starts_with("/root")));
        // .config/gh is only asked about after .config was found
        assert!(asked.contains(&PathBuf::from("/home/a/.config/gh")));
        assert!(!asked.contains(&PathBuf::from("/home/a/.gnupg/x")));
    }

    #[test]
    fn finds_the_covering_entry() {
        let list = expand(&[PathBuf::from("/home/a")]);
        assert_eq!(
            covering(&list, Path::new("/home/a/.ssh/id_ed25519")),
            Some(Path::new("/home/a/.ssh"))
        );
        assert_eq!(
            covering(&list, Path::new("/root/project")),
            Some(Path::new("/root"))
        );
        assert_eq!(covering(&list, Path::new("/home/a/src")), None);
        // a prefix of a name is not containment
        assert_eq!(covering(&list, Path::new("/rootfs")), None);
    }
}
