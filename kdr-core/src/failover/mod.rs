//! The failover decision: `FailoverDetector`, a pure state machine, and `DetectorPolicy`.
