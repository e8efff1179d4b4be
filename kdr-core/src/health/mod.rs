//! Health probes: `HealthProbe` and the API server, TCP, ICMP, witness and self probes.
