//! Plumbing for this crate's integration tests: bring up the sandbox (a no-op when it is
//! up) through `sandbox/sandbox`, read its `env`, and build SDK and kube clients from that
//! output only, so no real AWS profile or kubeconfig can be reached. Set
//! `KARPCTL_SANDBOX_PORT_BASE` / `KARPCTL_SANDBOX_DIR` to use a sandbox of your own.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct Sandbox {
    pub env: HashMap<String, String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sandbox/sandbox")
}

pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let up = Command::new(script())
            .arg("up")
            .output()
            .expect("running sandbox/sandbox up");
        assert!(
            up.status.success(),
            "sandbox/sandbox up failed:\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let out = Command::new(script())
            .arg("env")
            .output()
            .expect("running sandbox/sandbox env");
        assert!(out.status.success(), "sandbox/sandbox env failed");
        let env = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sandbox { env }
    })
}

impl Sandbox {
    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("sandbox env has no {key}"))
    }

    pub fn cluster(&self) -> &str {
        self.var("KARPCTL_SANDBOX_CLUSTER")
    }

    pub fn aws_endpoint(&self) -> &str {
        self.var("AWS_ENDPOINT_URL")
    }

    pub async fn aws(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.aws_endpoint())
            .region(Region::new(self.var("AWS_REGION").to_string()))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "sandbox",
            ))
            .load()
            .await
    }

    pub async fn kube(&self) -> kube::Client {
        let kubeconfig =
            Kubeconfig::read_from(self.var("KUBECONFIG")).expect("reading the sandbox kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("a kube config from the sandbox kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// The calls the AWS endpoint has answered (`/_sandbox/calls`).
    pub async fn aws_calls(&self) -> Vec<serde_json::Value> {
        let body = http(
            &format!("{}/_sandbox/calls", self.aws_endpoint()),
            "GET",
            None,
        )
        .await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["calls"].as_array().unwrap().clone()
    }

    /// Registers a fault (`/_sandbox/faults`), e.g. CreateFleet capacity errors.
    pub async fn inject_fault(&self, fault: serde_json::Value) {
        http(
            &format!("{}/_sandbox/faults", self.aws_endpoint()),
            "POST",
            Some(&fault.to_string()),
        )
        .await;
    }
}

/// A unique name for the objects one test creates, so tests can share one sandbox.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:x}{}", nanos, N.fetch_add(1, Ordering::SeqCst))
}

/// Polls `check` until it returns Some, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A minimal HTTP/1.1 client for the sandbox's control routes (plain HTTP on loopback).
async fn http(url: &str, method: &str, body: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .expect("control routes are plain http");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connecting to the sandbox AWS endpoint");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, payload) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{method} {url}: {head}"
    );
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
