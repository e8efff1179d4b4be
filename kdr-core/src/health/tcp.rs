//! [`TcpProbe`]: can a TCP connection to `host:port` be opened?
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

use super::{HealthProbe, ProbeResult};

/// Up when a TCP connection to the target opens within the timeout (the connection is closed
/// at once). Name resolution counts against the same timeout.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    name: String,
    target: String,
    timeout: Duration,
}

impl TcpProbe {
    /// A probe of `target` (`10.0.0.10:6443`, `primary.example:22`).
    pub fn new(target: impl Into<String>, timeout: Duration) -> Self {
        let target = target.into();
        Self { name: format!("tcp {target}"), target, timeout }
    }
}

#[async_trait]
impl HealthProbe for TcpProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn probe(&self) -> ProbeResult {
        match tokio::time::timeout(self.timeout, TcpStream::connect(self.target.as_str())).await {
            Ok(Ok(_stream)) => ProbeResult::up(format!("{}: connected", self.name)),
            Ok(Err(e)) => ProbeResult::down(format!("{}: {e}", self.name)),
            Err(_) => ProbeResult::down(format!("{}: no answer within {:?}", self.name, self.timeout)),
        }
    }
}
