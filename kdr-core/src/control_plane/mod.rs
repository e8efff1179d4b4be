//! Bringing up a control plane on the restored data: `ControlPlaneInit` and `KubeadmInit`.
