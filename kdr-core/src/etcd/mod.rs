//! Restoring etcd from a snapshot: `EtcdRestorer` and `EtcdutlRestorer`.
