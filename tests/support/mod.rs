//! Shared plumbing for the integration tests: bring the sandbox up once per test binary and
//! hand out SDK and kube clients pointed at it. Clients are configured explicitly from the
//! sandbox's own `env` output rather than the process environment, so a developer's real
//! AWS profile or kubeconfig can never be reached from a test.

#![allow(dead_code)]

pub mod controller;
pub mod footprint;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct Sandbox {
    pub env: HashMap<String, String>,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The controller binary the sandbox runner starts. It is another package's binary, so
/// `cargo test` of this one does not build it: built here once per test binary.
pub fn controller_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| {
                    if t.is_absolute() {
                        t
                    } else {
                        repo_root().join(t)
                    }
                })
                .unwrap_or_else(|| repo_root().join("target"));
            let out = Command::new(env!("CARGO"))
                .args(["build", "--locked", "-q", "-p", "karpctl-controller"])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(repo_root())
                .output()
                .expect("running cargo build");
            assert!(
                out.status.success(),
                "building karpctl-controller: {}",
                text(&out.stderr)
            );
            target.join("debug/karpctl-controller")
        })
        .clone()
}

/// Starts the sandbox (a no-op when it is already up) and reads its environment. Called by
/// every test; only the first call in a binary does any work.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let script = repo_root().join("sandbox/sandbox");
        let up = Command::new(&script)
            .arg("up")
            .output()
            .expect("running sandbox/sandbox up");
        assert!(
            up.status.success(),
            "sandbox/sandbox up failed:\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let out = Command::new(&script)
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
        self.aws_in(self.var("AWS_REGION")).await
    }

    pub async fn aws_in(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.aws_endpoint())
            .region(Region::new(region.to_string()))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "testing", "testing", None, None, "sandbox",
            ))
            .load()
            .await
    }

    pub fn kubeconfig_path(&self) -> &Path {
        Path::new(self.var("KUBECONFIG"))
    }

    pub async fn kube_config(&self) -> kube::Config {
        let kubeconfig =
            Kubeconfig::read_from(self.kubeconfig_path()).expect("reading the sandbox kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("building a kube config from the sandbox kubeconfig")
    }

    pub async fn kube(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config().await).expect("kube client")
    }

    /// Runs `sandbox/sandbox <args>` and returns its stdout; panics with stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.sandbox_command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "sandbox {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the karpctl binary with only the sandbox's environment (less `unset`), an empty
    /// HOME (so no real ~/.aws/config or kubeconfig can be read) and stdin closed (no
    /// terminal).
    pub fn karpctl_without(&self, unset: &[&str], args: &[&str]) -> std::process::Output {
        let home = std::env::temp_dir().join("karpctl-test-home");
        std::fs::create_dir_all(&home).unwrap();
        Command::new(env!("CARGO_BIN_EXE_karpctl"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| !unset.contains(&k.as_str())),
            )
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running karpctl")
    }

    /// Runs karpctl in a real pseudo-terminal (tests/pty/drive.py) from `dir`, with the
    /// sandbox's environment, answering prompts as `script` says: `(expect regex, keys)`.
    /// Returns the exit code and the transcript.
    pub fn karpctl_in_terminal(
        &self,
        dir: &Path,
        script: &[(&str, &str)],
        args: &[&str],
    ) -> (Option<i32>, String) {
        let home = std::env::temp_dir().join("karpctl-test-home");
        std::fs::create_dir_all(&home).unwrap();
        let script = serde_json::to_string(script).unwrap();
        let out = Command::new("python3")
            .arg(repo_root().join("tests/pty/drive.py"))
            .arg(script)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_karpctl"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .envs(self.env.iter())
            .output()
            .expect("running tests/pty/drive.py");
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    }

    /// Runs karpctl with the sandbox's environment but signed with other AWS keys (a
    /// principal the endpoint's authorizer evaluates, e.g. an IAM user's).
    pub fn karpctl_as(&self, key_id: &str, secret: &str, args: &[&str]) -> std::process::Output {
        let home = std::env::temp_dir().join("karpctl-test-home");
        std::fs::create_dir_all(&home).unwrap();
        Command::new(env!("CARGO_BIN_EXE_karpctl"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .envs(self.env.iter())
            .env("AWS_ACCESS_KEY_ID", key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running karpctl")
    }

    /// The authorizer's denials so far (`/_sandbox/denials`): principal, action, resource.
    pub async fn aws_denials(&self) -> Vec<serde_json::Value> {
        let body = http_get(&format!("{}/_sandbox/denials", self.aws_endpoint())).await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["denials"].as_array().cloned().unwrap_or_default()
    }

    /// [`Sandbox::karpctl_without`] with the whole sandbox environment.
    pub fn karpctl(&self, args: &[&str]) -> std::process::Output {
        self.karpctl_without(&[], args)
    }

    /// Runs karpctl and asserts success; returns stdout.
    pub fn karpctl_ok(&self, args: &[&str]) -> String {
        let out = self.karpctl(args);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "karpctl {args:?} failed\n{stdout}\n{}",
            text(&out.stderr)
        );
        stdout
    }

    /// The mutating calls among `operations` answered since call number `since`: what a
    /// command wrote, without the registrar's and other tests' traffic.
    pub async fn writes_since(&self, since: usize, operations: &[&str]) -> Vec<String> {
        self.aws_calls()
            .await
            .into_iter()
            .skip(since)
            .filter(|c| c["mutating"].as_bool() == Some(true))
            .filter_map(|c| c["operation"].as_str().map(str::to_string))
            .filter(|op| operations.contains(&op.as_str()))
            .collect()
    }

    /// The calls the AWS endpoint has answered (`/_sandbox/calls`).
    pub async fn aws_calls(&self) -> Vec<serde_json::Value> {
        let body = http_get(&format!("{}/_sandbox/calls", self.aws_endpoint())).await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["calls"].as_array().unwrap().clone()
    }

    /// Makes the next `count` calls of `service:operation` fail with `code`/`status`.
    pub async fn inject_fault(
        &self,
        service: &str,
        operation: &str,
        code: &str,
        status: u16,
        count: u32,
    ) {
        let body = serde_json::json!({"service": service, "operation": operation, "code": code, "status": status, "count": count});
        http_post(
            &format!("{}/_sandbox/faults", self.aws_endpoint()),
            &body.to_string(),
        )
        .await;
    }

    /// The injected faults not consumed yet.
    pub async fn pending_faults(&self) -> Vec<serde_json::Value> {
        let body = http_get(&format!("{}/_sandbox/faults", self.aws_endpoint())).await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["faults"].as_array().unwrap().clone()
    }

    /// Drops every injected fault not consumed yet (a failed test's leftovers).
    pub async fn clear_faults(&self) {
        http(
            &format!("{}/_sandbox/faults", self.aws_endpoint()),
            "DELETE",
            None,
        )
        .await;
    }

    /// Sets the EKS cluster's authentication mode (`CONFIG_MAP`, `API_AND_CONFIG_MAP` or
    /// `API`) through the sandbox's test-only route, which, unlike EKS, can also move it back.
    pub async fn set_auth_mode(&self, mode: &str) {
        let body = serde_json::json!({"region": self.var("AWS_REGION"), "cluster": self.cluster(), "mode": mode});
        let answer = http_post(
            &format!("{}/_sandbox/auth-mode", self.aws_endpoint()),
            &body.to_string(),
        )
        .await;
        assert!(answer.contains(mode), "{answer}");
    }
}

/// A sandbox of a test's own (its own state directory and ports), for a test that changes
/// the cluster too much to share it (`tests/migrate.rs` adds a node group and workloads);
/// stopped when dropped.
pub struct Isolated {
    pub sandbox: &'static Sandbox,
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = self.sandbox.sandbox_command().arg("down").output();
    }
}

/// Brings up a sandbox in `.sandbox-<name>` with ports `offset` above this run's base
/// (`KARPCTL_SANDBOX_PORT_BASE`, default 18400).
pub fn isolated_sandbox(name: &str, offset: u16) -> Isolated {
    let base: u16 = std::env::var("KARPCTL_SANDBOX_PORT_BASE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(18400)
        + offset;
    let dir = repo_root().join(format!(".sandbox-{name}"));
    let setup = |args: &[&str]| {
        Command::new(repo_root().join("sandbox/sandbox"))
            .args(args)
            .env("KARPCTL_SANDBOX_DIR", &dir)
            .env("KARPCTL_SANDBOX_PORT_BASE", base.to_string())
            .output()
            .expect("running sandbox/sandbox")
    };
    let up = setup(&["up"]);
    assert!(
        up.status.success(),
        "sandbox up ({name}) failed:\n{}",
        text(&up.stderr)
    );
    let out = setup(&["env"]);
    let mut env: HashMap<String, String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("KARPCTL_SANDBOX_PORT_BASE".into(), base.to_string());
    Isolated {
        sandbox: Box::leak(Box::new(Sandbox { env })),
    }
}

impl Sandbox {
    /// `sandbox/sandbox` aimed at this sandbox (its state directory and ports).
    pub fn sandbox_command(&self) -> Command {
        let mut cmd = Command::new(repo_root().join("sandbox/sandbox"));
        for key in ["KARPCTL_SANDBOX_DIR", "KARPCTL_SANDBOX_PORT_BASE"] {
            if let Some(v) = self.env.get(key) {
                cmd.env(key, v);
            }
        }
        cmd
    }

    /// [`Sandbox::inject_fault`] with the error message the fault answers.
    pub async fn inject_fault_with_message(
        &self,
        service: &str,
        operation: &str,
        code: &str,
        status: u16,
        count: u32,
        message: &str,
    ) {
        let body = serde_json::json!({"service": service, "operation": operation, "code": code, "status": status, "count": count, "message": message});
        http_post(
            &format!("{}/_sandbox/faults", self.aws_endpoint()),
            &body.to_string(),
        )
        .await;
    }
}

/// Command output as text, for assertions and failure messages.
pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A unique suffix for the objects one test creates, so tests can share one sandbox.
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

async fn http_get(url: &str) -> String {
    http(url, "GET", None).await
}

async fn http_post(url: &str, body: &str) -> String {
    http(url, "POST", Some(body)).await
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
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// `/metrics` of the first running controller replica that `sandbox/sandbox controller`
/// started (its metrics port from `controller status -o json`).
pub async fn controller_metrics() -> String {
    let out = Command::new(repo_root().join("sandbox/sandbox"))
        .args(["controller", "status", "-o", "json"])
        .output()
        .expect("running sandbox/sandbox controller status");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("controller status JSON: {e}: {}", text(&out.stdout)));
    let port = doc["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["running"] == true)
        .and_then(|r| r["metrics_port"].as_u64())
        .expect("a running controller replica");
    http_get(&format!("http://127.0.0.1:{port}/metrics")).await
}

/// The `karpenter_pods_state` series of one pod, as `label -> value`, from a scrape.
pub fn pod_state_series(
    metrics: &str,
    namespace: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("karpenter_pods_state{"))
        .filter_map(|l| l.split_once("} "))
        .map(|(labels, _)| {
            labels
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .find(|m| {
            m.get("namespace").map(String::as_str) == Some(namespace)
                && m.get("name").map(String::as_str) == Some(name)
        })
}
