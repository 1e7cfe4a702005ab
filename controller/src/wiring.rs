//! The controller's wiring: one [`Context`] shared by every reconciler, the watches that keep
//! the cluster state, and the list of controllers that run while this replica leads. Reading
//! [`run_with`] is reading what the controller does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use karpctl_cloud::CloudProvider;
use kube::Client;

use crate::clock::Clock;
use crate::context::Context;
use crate::events::{Events, MetricsSink};
use crate::interruption::Interruption;
use crate::node::termination::Termination;
use crate::nodeclaim::expiration::Expiration;
use crate::provisioning::{Provisioner, ReconcilerSettings};
use crate::reconcile::{DriverSettings, drive};
use crate::state::{self, SharedState};
use karpctl_cloud::InterruptionQueue;

/// The controller's reconcilers, until the client goes away or one of them fails. `ready` is
/// set once the cluster state has synced (for /readyz). Call it only while leading; dropping
/// the future stops every reconciler.
pub async fn run<C: CloudProvider, Q: InterruptionQueue>(
    client: Client,
    cloud: Arc<C>,
    queue: Option<Q>,
    settings: &crate::settings::Settings,
    metrics: crate::metrics::Metrics,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let eviction_client = crate::context::client_without_retries()
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "building a client without retries failed; evictions use the default client");
            client.clone()
        });
    run_with(
        client,
        eviction_client,
        cloud,
        queue,
        ReconcilerSettings::from(settings),
        Arc::new(metrics),
        ready,
    )
    .await
}

/// [`run`] with the reconcilers' own settings and any metrics sink.
pub async fn run_with<C: CloudProvider, Q: InterruptionQueue>(
    client: Client,
    eviction_client: Client,
    cloud: Arc<C>,
    queue: Option<Q>,
    settings: ReconcilerSettings,
    metrics: Arc<dyn MetricsSink>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let shared: SharedState = SharedState::default();
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let tx = Arc::new(tx);
    let events = Events::new(client.clone(), settings.pod_name.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        eviction_client,
        cloud: cloud.clone(),
        state: shared.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        clock: Clock::system(),
    });

    // Pending pods to NodeClaims.
    let provisioner = Arc::new(Provisioner {
        client: client.clone(),
        cloud: cloud.clone(),
        state: shared.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
    });
    // NodeClaims: launch, register, initialize, liveness, garbage collection, finalizer.
    let lifecycle = Arc::new(crate::nodeclaim::Lifecycle {
        client: client.clone(),
        cloud: cloud.clone(),
        state: shared.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
    });
    // NodeClaims past their expireAfter.
    let expiration = Arc::new(Expiration { ctx: ctx.clone() });
    // Nodes being deleted: drain, volumes, instance, finalizer.
    let termination = Arc::new(Termination::new(ctx.clone()));
    // Emptiness, drift and consolidation within budgets.
    let disruption = Arc::new(crate::disruption::Disruption::new(ctx.clone()));
    // Spot interruptions and instance events from the interruption queue.
    let interruption = queue.map(|q| Interruption::new(ctx.clone(), q));
    // EC2NodeClass and NodePool status.
    let node_classes = crate::nodeclass::NodeClassReconciler {
        client: client.clone(),
        cloud: cloud.clone(),
        state: shared.clone(),
        events: events.clone(),
    };
    let node_pools = crate::nodepool::NodePoolReconciler {
        client: client.clone(),
        state: shared.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
    };
    metrics.pods_state(crate::podstate::collector(shared.clone()));
    let synced = {
        let shared = shared.clone();
        let metrics = metrics.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (synced, nodes) = {
                    let s = state::read(&shared);
                    (s.synced(), s.nodes().count())
                };
                ready.store(synced, Ordering::Relaxed);
                metrics.cluster_state(nodes, synced);
            }
        }
    };
    let interruptions = async move {
        match interruption {
            Some(i) => i.run().await,
            None => std::future::pending().await,
        }
    };
    let driver = DriverSettings::default();
    tokio::select! {
        _ = state::watch(client.clone(), shared.clone(), tx.clone()) => anyhow::bail!("cluster watches ended"),
        _ = provisioner.run(rx.clone()) => anyhow::bail!("provisioner ended"),
        _ = lifecycle.clone().run(rx.clone()) => anyhow::bail!("nodeclaim lifecycle ended"),
        _ = lifecycle.run_garbage_collection() => anyhow::bail!("garbage collection ended"),
        _ = drive(expiration, shared.clone(), rx.clone(), driver) => anyhow::bail!("nodeclaim expiration ended"),
        _ = drive(termination, shared.clone(), rx.clone(), driver) => anyhow::bail!("node termination ended"),
        _ = interruptions => anyhow::bail!("interruption ended"),
        _ = disruption.run() => anyhow::bail!("disruption ended"),
        _ = node_classes.run(rx.clone()) => anyhow::bail!("ec2nodeclass reconciler ended"),
        _ = node_pools.run(rx.clone()) => anyhow::bail!("nodepool reconciler ended"),
        _ = synced => anyhow::bail!("sync reporter ended"),
    }
}
