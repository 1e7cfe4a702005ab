//! The controller process: read the settings, log in upstream's JSON shape, serve probes and
//! metrics from the first moment, connect to the cluster and AWS, then compete for the Lease
//! and reconcile only while holding it. Every replica, leader or standby, answers `/healthz`
//! and `/metrics`; on SIGTERM/SIGINT the leader stops reconciling and releases the Lease so
//! the standby takes over at once; a lost Lease exits non-zero so the Deployment restarts the
//! replica as a fresh candidate (controller-runtime's behaviour).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::{BehaviorVersion, Region};
use karpctl_aws::{AwsCloud, AwsSettings};
use karpctl_controller::health::{self, Endpoints, Readiness};
use karpctl_controller::leader::{LeaderElector, LeaseConfig};
use karpctl_controller::logging;
use karpctl_controller::metrics::Metrics;
use karpctl_controller::settings::Settings;
use tokio::signal::unix::{SignalKind, signal};

/// jemalloc rather than the platform's malloc: with the settings compiled in from
/// `.cargo/config.toml` (two arenas, a background thread purging freed pages after a second)
/// the memory a burst frees — a watch's first list, a scheduling pass — goes back to the OS
/// instead of staying resident in per-thread arenas, which is most of the difference between
/// the live heap and the resident size in a big cluster (docs/benchmarks.md).
/// (`--features system-allocator` builds with the platform's malloc instead, for heap
/// profilers such as heaptrack that interpose it.)
#[cfg(not(any(target_env = "msvc", feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long the leader may take to release the Lease on shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    // clap prints its own message (naming the variable) and exits 2 on a bad value.
    let settings = <Settings as clap::Parser>::parse();
    if let Err(e) = logging::init(settings.log_level) {
        eprintln!("karpctl-controller: installing the logger: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = settings.validate() {
        tracing::error!(error = %e, "invalid settings");
        return ExitCode::from(2);
    }
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "controller stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> Result<()> {
    let mut shutdown = Shutdown::listen()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        cluster = %settings.cluster_name,
        identity = %settings.identity(),
        "starting controller"
    );

    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let _servers = serve(&settings, &metrics, &readiness).await?;

    let client = kube::Client::try_default()
        .await
        .context("building a Kubernetes client (in-cluster service account or KUBECONFIG)")?;
    let version = client
        .apiserver_version()
        .await
        .context("reaching the Kubernetes API server")?;
    tracing::info!(
        version = format!("{}.{}", version.major, version.minor),
        "connected to the API server"
    );

    let mut aws = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.aws_region {
        aws = aws.region(Region::new(region.clone()));
    }
    let aws = aws.load().await;
    let cloud = AwsCloud::new(
        &aws,
        AwsSettings {
            cluster_name: settings.cluster_name.clone(),
            cluster_endpoint: settings.cluster_endpoint.clone(),
            vm_memory_overhead_percent: settings.vm_memory_overhead_percent,
            reserved_enis: i64::from(settings.reserved_enis),
            isolated_vpc: settings.isolated_vpc,
            ..AwsSettings::default()
        },
    )
    .await
    .context("configuring the AWS provider")?;
    let cloud = Arc::new(cloud);
    readiness.set_started();

    if settings.disable_leader_election {
        tracing::info!("leader election disabled: reconciling");
        readiness.set_leading(true);
        return tokio::select! {
            result = reconcile(&settings, client, cloud, &aws, &metrics, &readiness) => result,
            signal = shutdown.recv() => {
                tracing::info!(signal, "shutting down");
                Ok(())
            }
        };
    }

    let mut elector = LeaderElector::new(
        client.clone(),
        LeaseConfig::new(
            settings.leader_election_name.clone(),
            settings.system_namespace.clone(),
            settings.identity(),
        ),
    );
    tokio::select! {
        () = elector.acquire() => {}
        signal = shutdown.recv() => {
            tracing::info!(signal, "shutting down while standing by");
            return Ok(());
        }
    }
    readiness.set_leading(true);

    // Renewals run on their own task, so a reconciler busy on this one (a long scheduling
    // simulation) cannot starve them past the renew deadline.
    let (stop_renewing, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut renewing = tokio::spawn(async move {
        let lost = tokio::select! {
            lost = elector.keep_renewing() => Some(lost),
            _ = stopped => None,
        };
        (elector, lost)
    });

    enum Outcome {
        Lost(karpctl_controller::leader::LeaseLost),
        Stopped(Result<()>),
        Signal(&'static str),
    }
    let outcome = tokio::select! {
        joined = &mut renewing => match joined {
            Ok((_, Some(lost))) => Outcome::Lost(lost),
            Ok((_, None)) => unreachable!("renewal stopped only after this select"),
            Err(e) => Outcome::Lost(karpctl_controller::leader::LeaseLost(format!("renewal task failed: {e}"))),
        },
        result = reconcile(&settings, client, cloud, &aws, &metrics, &readiness) => Outcome::Stopped(result),
        signal = shutdown.recv() => Outcome::Signal(signal),
    };
    // The reconcilers' futures are dropped here: nothing reconciles past this point.
    readiness.set_leading(false);
    if let Outcome::Lost(lost) = outcome {
        return Err(lost.into());
    }
    let _ = stop_renewing.send(());
    let (mut elector, _) = renewing
        .await
        .context("waiting for the lease renewal to stop")?;
    release(&mut elector).await;
    match outcome {
        Outcome::Stopped(result) => result.and(Err(anyhow::anyhow!("the reconcilers stopped"))),
        Outcome::Signal(signal) => {
            tracing::info!(signal, "shut down: stepped down as leader");
            Ok(())
        }
        Outcome::Lost(_) => unreachable!("returned above"),
    }
}

async fn release(elector: &mut LeaderElector) {
    match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed; it will expire"),
        Err(_) => tracing::warn!("releasing the lease timed out; it will expire"),
    }
}

/// The probe and metrics listeners (one listener when both ports are the same).
async fn serve(
    settings: &Settings,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Result<Vec<health::Server>> {
    let probes = SocketAddr::new(settings.bind_address, settings.health_probe_port);
    let scrape = SocketAddr::new(settings.bind_address, settings.metrics_port);
    let mut servers = Vec::new();
    if probes == scrape {
        let both = Endpoints::Both(readiness.clone(), metrics.clone());
        servers.push(
            health::serve(probes, both)
                .await
                .with_context(|| format!("listening on {probes}"))?,
        );
    } else {
        servers.push(
            health::serve(probes, Endpoints::Probes(readiness.clone()))
                .await
                .with_context(|| format!("listening for probes on {probes}"))?,
        );
        servers.push(
            health::serve(scrape, Endpoints::Metrics(metrics.clone()))
                .await
                .with_context(|| format!("listening for metrics on {scrape}"))?,
        );
    }
    for server in &servers {
        tracing::info!(address = %server.local, "serving probes/metrics");
    }
    Ok(servers)
}

/// The reconcilers, while leading; dropping this future stops them all. `/readyz` waits for
/// their cluster state to sync.
async fn reconcile(
    settings: &Settings,
    client: kube::Client,
    cloud: Arc<AwsCloud>,
    aws: &aws_config::SdkConfig,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Result<()> {
    let queue = settings
        .interruption_queue
        .as_deref()
        .map(|q| karpctl_aws::interruption::SqsQueue::new(aws, q));
    if queue.is_none() {
        tracing::info!(
            "INTERRUPTION_QUEUE is not set: spot interruptions and instance events are not handled"
        );
    }
    karpctl_controller::wiring::run(
        client,
        cloud,
        queue,
        settings,
        metrics.clone(),
        readiness.synced(),
    )
    .await
}

/// SIGTERM (the kubelet stopping the pod) or SIGINT (a local Ctrl-C).
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn listen() -> Result<Shutdown> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
