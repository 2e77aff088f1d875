//! Where a valid target goes: the `X-Sandbox-Pod-IP` header, else the index of ready pods,
//! else the DNS name of the sandbox's headless Service. DNS is behind [`Resolve`] so that
//! tests (and embedders) can answer it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use warden_policy::sandbox_router::Target;

use super::index::SandboxIndex;

/// Resolves a host name to one address.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<SocketAddr>> + Send + 'a>>;
}

/// The system resolver (`getaddrinfo`, on tokio's blocking pool): in a cluster, the pod's
/// `/etc/resolv.conf` points at cluster DNS.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<SocketAddr>> + Send + 'a>> {
        Box::pin(async move {
            tokio::net::lookup_host((host, port))
                .await?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        })
    }
}

/// How a target was found (a label of the route metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PodIpHeader,
    Index,
    Dns,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::PodIpHeader => "pod_ip_header",
            Route::Index => "index",
            Route::Dns => "dns",
        }
    }
}

/// The DNS name of a sandbox's headless Service, `<id>.<namespace>.svc.<cluster-domain>.`,
/// fully qualified (the trailing dot) so that the resolver does not first try each search
/// domain of a pod's `resolv.conf` (`ndots:5`).
pub fn service_host(target: &Target, cluster_domain: &str) -> String {
    format!(
        "{}.{}.svc.{}.",
        target.id,
        target.namespace,
        cluster_domain.trim_end_matches('.')
    )
}

/// The address without DNS, if the header or the index has one.
pub fn without_dns(target: &Target, index: &SandboxIndex) -> Option<(SocketAddr, Route)> {
    if let Some(ip) = target.pod_ip {
        return Some((SocketAddr::new(ip, target.port), Route::PodIpHeader));
    }
    index
        .get(&target.namespace, &target.id)
        .map(|ip| (SocketAddr::new(ip, target.port), Route::Index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pod_ip: Option<&str>) -> Target {
        Target {
            id: "sbx-1".into(),
            namespace: "team-a".into(),
            port: 9090,
            pod_ip: pod_ip.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn order_is_header_then_index() {
        let index = SandboxIndex::new();
        assert_eq!(without_dns(&target(None), &index), None);
        index.insert("team-a", "sbx-1", "10.0.0.7".parse().unwrap());
        index.insert("team-b", "sbx-1", "10.0.0.8".parse().unwrap());
        assert_eq!(
            without_dns(&target(None), &index),
            Some(("10.0.0.7:9090".parse().unwrap(), Route::Index))
        );
        assert_eq!(
            without_dns(&target(Some("fd00::9")), &index),
            Some(("[fd00::9]:9090".parse().unwrap(), Route::PodIpHeader))
        );
    }

    #[test]
    fn service_names() {
        assert_eq!(
            service_host(&target(None), "cluster.local"),
            "sbx-1.team-a.svc.cluster.local."
        );
        assert_eq!(
            service_host(&target(None), "corp.example."),
            "sbx-1.team-a.svc.corp.example."
        );
    }
}
