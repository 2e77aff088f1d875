//! Built-in profiles: complete policies that a policy file or flags refine.

use crate::env::EnvironmentPolicy;
use crate::names::named_enum;
use crate::policy::{
    FilesystemPolicy, HomeMode, Isolation, NetworkMode, NetworkPolicy, ReadScope, ResourceLimits,
    SandboxPolicy,
};
use crate::size::ByteSize;

named_enum! {
    /// A built-in policy.
    pub enum Profile {
        /// The workspace read-write, the operating system read-only, a private home and /tmp,
        /// no network, and limits on memory, processes and files.
        Default = "default",
        /// Like `default`, and stays without network when `default` gains the egress proxy.
        Offline = "offline",
        /// Like `default`, but the whole host root is readable (minus the blocklist), home included.
        ReadAnywhere = "read-anywhere",
        /// Isolation as inside an unprivileged Kubernetes pod: Landlock, seccomp, no_new_privs
        /// and rlimits, without namespaces or cgroups.
        Pod = "pod",
    }
}

impl Profile {
    /// One line for `--help` and error messages.
    pub fn summary(self) -> &'static str {
        match self {
            Profile::Default => {
                "workspace rw, system ro, private home and /tmp, no network, 4 GiB, 1024 processes"
            }
            Profile::Offline => "as default, never any network",
            Profile::ReadAnywhere => {
                "as default, but the whole host is readable except the blocklist"
            }
            Profile::Pod => "Landlock + seccomp only, as inside an unprivileged pod",
        }
    }

    pub fn policy(self) -> SandboxPolicy {
        let base = SandboxPolicy {
            isolation: Isolation::Full,
            filesystem: FilesystemPolicy {
                workspace: None,
                read_scope: ReadScope::System,
                home: HomeMode::Private,
                read_only: Vec::new(),
                read_write: Vec::new(),
                hidden: Vec::new(),
                rootfs: None,
                tmp_size: ByteSize::gib(1),
            },
            network: NetworkPolicy {
                mode: NetworkMode::None,
                allow_domains: Vec::new(),
                deny_domains: Vec::new(),
                allow_ports: Vec::new(),
                allow_cidrs: Vec::new(),
                routes: Vec::new(),
            },
            resources: ResourceLimits {
                memory: Some(ByteSize::gib(4)),
                pids: Some(1024),
                cpus: None,
                timeout: None,
                file_size: Some(ByteSize::gib(16)),
                open_files: Some(8192),
            },
            environment: EnvironmentPolicy::default(),
        };
        match self {
            Profile::Default | Profile::Offline => base,
            Profile::ReadAnywhere => SandboxPolicy {
                filesystem: FilesystemPolicy {
                    read_scope: ReadScope::Host,
                    home: HomeMode::ReadOnly,
                    ..base.filesystem
                },
                ..base
            },
            Profile::Pod => SandboxPolicy {
                isolation: Isolation::Pod,
                resources: ResourceLimits {
                    memory: None,
                    pids: None,
                    ..base.resources
                },
                ..base
            },
        }
    }
}
