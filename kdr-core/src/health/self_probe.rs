//! [`SelfProbe`]: can the standby see its own network (its gateway, or its DNS)?
//!
//! When the primary, its machine and the witnesses all look dead at once, the likeliest cause
//! is the standby's own network (Kubernetes' node lifecycle controller reasons the same way).
//! The detector treats a failing self probe as self-isolation and promotes nothing.
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::{HealthProbe, IcmpProbe, ProbeResult, TcpProbe};

#[derive(Debug, Clone)]
enum Target {
    Icmp(IcmpProbe),
    Tcp(TcpProbe),
    Dns(String),
}

/// The standby's own health: its gateway answers ping or a TCP connect, or its resolver
/// resolves a name.
#[derive(Debug, Clone)]
pub struct SelfProbe {
    name: String,
    target: Target,
    timeout: Duration,
}

impl SelfProbe {
    /// Pings the default gateway (or any always-on neighbour).
    pub fn gateway(ip: IpAddr, timeout: Duration) -> Self {
        Self {
            name: format!("self gateway {ip}"),
            target: Target::Icmp(IcmpProbe::new(ip, timeout)),
            timeout,
        }
    }

    /// Connects to `host:port` (a gateway or a DNS server that filters ICMP, e.g. `10.0.0.1:53`).
    pub fn tcp(target: impl Into<String>, timeout: Duration) -> Self {
        let probe = TcpProbe::new(target, timeout);
        Self { name: format!("self {}", probe.name()), target: Target::Tcp(probe), timeout }
    }

    /// Resolves `name` with the system resolver (the standby's `/etc/resolv.conf`). Resolution
    /// runs on tokio's blocking pool; when it outlives the timeout the probe is "down" at once
    /// and the lookup finishes in the background.
    pub fn dns(name: impl Into<String>, timeout: Duration) -> Self {
        let name = name.into();
        Self { name: format!("self dns {name}"), target: Target::Dns(name), timeout }
    }
}

#[async_trait]
impl HealthProbe for SelfProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn probe(&self) -> ProbeResult {
        let inner = match &self.target {
            Target::Icmp(p) => p.probe().await,
            Target::Tcp(p) => p.probe().await,
            Target::Dns(name) => {
                match tokio::time::timeout(self.timeout, tokio::net::lookup_host((name.as_str(), 0))).await {
                    Ok(Ok(mut addrs)) => match addrs.next() {
                        Some(a) => ProbeResult::up(format!("resolved to {}", a.ip())),
                        None => ProbeResult::down("resolved to no address".to_owned()),
                    },
                    Ok(Err(e)) => ProbeResult::down(e.to_string()),
                    Err(_) => ProbeResult::down(format!("no answer within {:?}", self.timeout)),
                }
            }
        };
        // A self probe that cannot run says nothing about the network: keep Unknown.
        ProbeResult { status: inner.status, detail: format!("{}: {}", self.name, inner.detail) }
    }
}
