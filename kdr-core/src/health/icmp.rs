//! [`IcmpProbe`]: does the machine answer an ICMP echo (ping)?
//!
//! surge-ping (maintained, tokio-based, no external binary): it opens an unprivileged ICMP
//! datagram socket where `net.ipv4.ping_group_range` allows it and falls back to a raw socket
//! (root or `CAP_NET_RAW`). The system `ping` is not used: it is not installed everywhere
//! (minimal images lack it), its output differs between iputils and busybox, and each run forks
//! a process.
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use surge_ping::{Client, Config, ICMP, PingIdentifier, PingSequence, SurgeError};

use super::{HealthProbe, ProbeResult};

/// Up when `ip` answers one echo request within the timeout. A socket that cannot be opened
/// (no permission) is [`Unknown`](super::ProbeStatus::Unknown), not "down".
#[derive(Debug, Clone)]
pub struct IcmpProbe {
    name: String,
    ip: IpAddr,
    timeout: Duration,
}

impl IcmpProbe {
    /// A probe of `ip`.
    pub fn new(ip: IpAddr, timeout: Duration) -> Self {
        Self { name: format!("icmp {ip}"), ip, timeout }
    }
}

#[async_trait]
impl HealthProbe for IcmpProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn probe(&self) -> ProbeResult {
        let kind = if self.ip.is_ipv4() { ICMP::V4 } else { ICMP::V6 };
        let client = match Client::new(&Config::builder().kind(kind).build()) {
            Ok(c) => c,
            Err(e) => {
                return ProbeResult::unknown(format!(
                    "{}: cannot open an ICMP socket ({e}); run as root, grant CAP_NET_RAW, or allow the \
                     monitor's group in net.ipv4.ping_group_range",
                    self.name
                ));
            }
        };
        let mut pinger = client.pinger(self.ip, PingIdentifier(rand::random())).await;
        pinger.timeout(self.timeout);
        match pinger.ping(PingSequence(0), &[0u8; 16]).await {
            Ok((_, rtt)) => ProbeResult::up(format!("{}: echo reply in {rtt:?}", self.name)),
            Err(SurgeError::Timeout { .. }) => {
                ProbeResult::down(format!("{}: no echo reply within {:?}", self.name, self.timeout))
            }
            Err(e) => ProbeResult::down(format!("{}: {e}", self.name)),
        }
    }
}
