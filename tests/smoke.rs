//! Smoke tests for the test fixtures: each one talks to a real server in a container, and stops
//! working when that container is stopped. Needs Docker and the local test images (`make test`
//! builds them); without Docker these tests fail with an error that says so.
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion, S3Container, SshNodeContainer};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

#[tokio::test]
async fn etcd_3_5_over_tls_put_get_then_fails_when_stopped() {
    let etcd = EtcdContainer::start_tls(EtcdVersion::V3_5_16).await.unwrap();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"), "{}", etcd.endpoint());
    let tls = etcd.tls().expect("TLS container has certs");
    assert!(tls.pki_dir.join("ca.crt").exists() && tls.pki_dir.join("healthcheck-client.key").exists());

    let mut client = etcd.client().await.unwrap();
    client.put("/registry/pods/default/smoke", "v1", None).await.unwrap();
    let resp = client.get("/registry/pods/default/smoke", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value(), b"v1");
    let status = client.status().await.unwrap();
    assert_eq!(status.version(), "3.5.16");

    // Without a client certificate the server refuses us: TLS is really enforced.
    let ca = std::fs::read(&tls.ca_cert).unwrap();
    let no_cert = etcd_client::ConnectOptions::new()
        .with_tls(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)))
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3));
    let refused = async {
        let mut c = etcd_client::Client::connect([etcd.endpoint()], Some(no_cert)).await?;
        c.get("/registry/pods/default/smoke", None).await
    }
    .await;
    assert!(refused.is_err(), "etcd accepted a client without a certificate");

    etcd.stop().await.unwrap();
    let after =
        tokio::time::timeout(Duration::from_secs(10), client.get("/registry/pods/default/smoke", None))
            .await
            .map(|r| r.is_err())
            .unwrap_or(true);
    assert!(after, "etcd still answered after its container was stopped");
}

#[tokio::test]
async fn etcd_3_4_plain_put_get() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_4_23).await.unwrap();
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    let mut client = etcd.client().await.unwrap();
    client.put("k", "v", None).await.unwrap();
    assert_eq!(client.get("k", None).await.unwrap().kvs()[0].value(), b"v");
    assert_eq!(client.status().await.unwrap().version(), "3.4.23");
}

#[tokio::test]
async fn s3_multipart_round_trip_over_10_mib_then_fails_when_stopped() {
    let s3 = S3Container::start().await.unwrap();
    let store = s3.object_store(s3.bucket()).unwrap();
    let path = ObjectPath::from("smoke/multipart.bin");

    // Three 5 MiB parts (the S3 minimum for all but the last) of distinct content.
    let part = |i: u8| Bytes::from((0..5 * 1024 * 1024).map(|j: usize| (j as u8) ^ i).collect::<Vec<u8>>());
    let mut upload = store.put_multipart(&path).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..3u8 {
        let p = part(i);
        expected.extend_from_slice(&p);
        upload.put_part(PutPayload::from(p)).await.unwrap();
    }
    upload.complete().await.unwrap();

    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), 15 * 1024 * 1024);
    assert!(got == expected, "multipart object differs from what was uploaded");
    // The server really stores it on disk, where tests can tamper with it.
    let on_disk = s3.data_dir().join("kdr/smoke/multipart.bin");
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), 15 * 1024 * 1024);

    // Create-only writes are honoured (kdr commits manifests and claims this way).
    let once = ObjectPath::from("smoke/once");
    let opts = || object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
    store.put_opts(&once, PutPayload::from_static(b"1"), opts()).await.unwrap();
    let again = store.put_opts(&once, PutPayload::from_static(b"2"), opts()).await;
    assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");

    s3.stop().await.unwrap();
    assert!(store.get(&path).await.is_err(), "S3 still answered after its container was stopped");
}

#[tokio::test]
async fn s3_wrong_secret_is_refused() {
    let s3 = S3Container::shared().await.unwrap();
    let bad = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_region(s3.region())
        .with_bucket_name(s3.bucket())
        .with_access_key_id(s3.access_key())
        .with_secret_access_key("not-the-secret")
        .build()
        .unwrap();
    let err = bad.put(&ObjectPath::from("smoke/denied"), PutPayload::from_static(b"x")).await;
    assert!(err.is_err(), "S3 accepted a request signed with the wrong secret");
}

fn ssh(node: &SshNodeContainer, remote_cmd: &str) -> std::process::Output {
    Command::new("ssh")
        .args(["-i"])
        .arg(node.private_key_path())
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", node.known_hosts_path().display()))
        .args(["-p", &node.port().to_string()])
        .arg(format!("{}@{}", node.user(), node.host()))
        .arg(remote_cmd)
        .output()
        .expect("run the ssh client (apt-get install openssh-client)")
}

#[tokio::test]
async fn ssh_command_exit_code_stderr_sudo_and_recorders_then_fails_when_stopped() {
    let node = SshNodeContainer::start().await.unwrap();

    let out = ssh(&node, "echo to-stdout; echo to-stderr >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));

    // Passwordless sudo, as seed 000 configures its workers.
    let out = ssh(&node, "sudo -n id -u");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

    // Recording stand-ins log each call with its arguments and exit as configured.
    node.install_recorders(&["kubeadm", "systemctl", "kubectl", "crictl"]).await.unwrap();
    node.set_recorder_exit("kubeadm", 7).await.unwrap();
    node.set_recorder_output("systemctl", "active\n").await.unwrap();
    let out = ssh(&node, "sudo -n kubeadm reset -f");
    assert_eq!(out.status.code(), Some(7));
    let out = ssh(&node, "systemctl is-active kubelet");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "active\n");
    assert_eq!(node.recorded_calls().await.unwrap(), vec!["kubeadm reset -f", "systemctl is-active kubelet"]);

    // The host key is verified: a known_hosts entry with another key makes the client refuse.
    let other = tempfile::tempdir().unwrap();
    let kh = other.path().join("known_hosts");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("k"))
        .status()
        .unwrap();
    assert!(keygen.success());
    let wrong = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let wrong = wrong.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {wrong}\n", node.port())).unwrap();
    let out = Command::new("ssh")
        .arg("-i")
        .arg(node.private_key_path())
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args(["-p", &node.port().to_string(), "kube@127.0.0.1", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"));

    node.stop().await.unwrap();
    let out = ssh(&node, "true");
    assert_ne!(out.status.code(), Some(0), "sshd still answered after its container was stopped");
}
