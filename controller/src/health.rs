//! The kubelet's probes and Prometheus's scrapes: `GET /healthz` (liveness) and `GET /readyz`
//! (readiness) on `HEALTH_PROBE_PORT`, `GET /metrics` on `METRICS_PORT`, as the Deployment's
//! probes and the metrics Service expect.
//!
//! Three fixed GETs from in-cluster callers need no HTTP framework: each connection reads one
//! request head, answers it and closes (`Connection: close`), with a size and time limit so a
//! slow or hostile client cannot pin a task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::metrics::{self, Metrics};

/// Largest request head read; probes and scrapes send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `/readyz` answers 200. A replica is ready once it has started (connected to the
/// API server); while leading it is ready only once its cluster state has synced, which the
/// reconcilers report through [`Readiness::synced`].
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    leading: Arc<AtomicBool>,
    synced: Arc<AtomicBool>,
}

impl Readiness {
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Becoming leader starts a new sync; stepping down no longer waits for one.
    pub fn set_leading(&self, leading: bool) {
        self.synced.store(false, Ordering::Relaxed);
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// The flag the reconcilers set once their caches have synced.
    pub fn synced(&self) -> Arc<AtomicBool> {
        self.synced.clone()
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if !self.started.load(Ordering::Relaxed) {
            Err("not started: connecting to the API server")
        } else if self.leading.load(Ordering::Relaxed) && !self.synced.load(Ordering::Relaxed) {
            Err("leading, cluster state not synced yet")
        } else {
            Ok(())
        }
    }
}

/// What a listener answers.
#[derive(Clone)]
pub enum Endpoints {
    /// `/healthz` and `/readyz`.
    Probes(Readiness),
    /// `/metrics`.
    Metrics(Metrics),
    /// All three, when both ports are the same.
    Both(Readiness, Metrics),
}

/// Binds `addr` and serves `endpoints` until the returned task is aborted.
pub async fn serve(addr: SocketAddr, endpoints: Endpoints) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let endpoints = endpoints.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &endpoints).await {
                            tracing::debug!(error = %e, "probe connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a probe connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(Server { local, task })
}

/// A running listener; stops when dropped.
pub struct Server {
    pub local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, endpoints: &Endpoints) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match parse_request_line(&head) {
        Some((method, path)) => respond(method, path, endpoints),
        None => (400, "text/plain", "bad request\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head.starts_with(b"HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The method and path (query dropped) of a request head's first line.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

/// Status, content type and body for one request.
fn respond(method: &str, path: &str, endpoints: &Endpoints) -> (u16, &'static str, String) {
    let (probes, metrics) = match endpoints {
        Endpoints::Probes(r) => (Some(r), None),
        Endpoints::Metrics(m) => (None, Some(m)),
        Endpoints::Both(r, m) => (Some(r), Some(m)),
    };
    let known = matches!(
        (path, probes.is_some(), metrics.is_some()),
        ("/healthz" | "/readyz", true, _) | ("/metrics", _, true)
    );
    if !known {
        return (404, "text/plain", "not found\n".to_string());
    }
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "method not allowed\n".to_string());
    }
    match (path, probes, metrics) {
        ("/healthz", Some(_), _) => (200, "text/plain", "ok\n".to_string()),
        ("/readyz", Some(readiness), _) => match readiness.check() {
            Ok(()) => (200, "text/plain", "ok\n".to_string()),
            Err(why) => (503, "text/plain", format!("{why}\n")),
        },
        (_, _, Some(metrics)) => (200, metrics::CONTENT_TYPE, metrics.render()),
        _ => (404, "text/plain", "not found\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    fn status(response: &str) -> &str {
        response.split(' ').nth(1).unwrap()
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").unwrap().1
    }

    async fn probes() -> (Readiness, Server) {
        let readiness = Readiness::default();
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Endpoints::Probes(readiness.clone()),
        )
        .await
        .unwrap();
        (readiness, server)
    }

    #[tokio::test]
    async fn readyz_follows_start_leadership_and_sync() {
        let (readiness, server) = probes().await;
        let ask = || get(server.local, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status(&ask().await), "503");
        readiness.set_started();
        assert_eq!(status(&ask().await), "200");
        readiness.set_leading(true);
        let response = ask().await;
        assert_eq!(status(&response), "503");
        assert_eq!(body(&response), "leading, cluster state not synced yet\n");
        readiness.synced().store(true, Ordering::Relaxed);
        assert_eq!(status(&ask().await), "200");
    }

    #[tokio::test]
    async fn healthz_answers_and_unknown_paths_do_not() {
        let (_, server) = probes().await;
        let response = get(server.local, "GET /healthz?verbose HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&response), "200");
        assert!(response.contains("Connection: close\r\n"));
        assert_eq!(body(&response), "ok\n");
        let response = get(server.local, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&response), "404");
        let response = get(server.local, "POST /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&response), "405");
        let response = get(server.local, "nonsense\r\n\r\n").await;
        assert_eq!(status(&response), "400");
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.nodes_created_total.inc(["default"]);
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Endpoints::Metrics(metrics.clone()),
        )
        .await
        .unwrap();
        let response = get(server.local, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&response), "200");
        assert!(response.contains(&format!("Content-Type: {}\r\n", metrics::CONTENT_TYPE)));
        assert!(
            body(&response).contains("karpenter_nodes_created_total{nodepool=\"default\"} 1\n")
        );
        let head = get(server.local, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(body(&head), "");
    }

    #[tokio::test]
    async fn one_port_can_serve_both() {
        let readiness = Readiness::default();
        readiness.set_started();
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Endpoints::Both(readiness, Metrics::new()),
        )
        .await
        .unwrap();
        for path in ["/healthz", "/readyz", "/metrics"] {
            let response = get(server.local, &format!("GET {path} HTTP/1.1\r\n\r\n")).await;
            assert_eq!(status(&response), "200", "{path}");
        }
    }
}
