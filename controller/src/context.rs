//! What every reconciler shares, built once by [`crate::wiring`]: the API clients, the cluster
//! state the watches keep, the cloud provider, events, metrics, settings and the clock.
//! Reconcilers hold an `Arc<Context<C>>` instead of each carrying its own copies.

use std::sync::Arc;

use kube::Client;

use crate::clock::Clock;
use crate::events::{Events, MetricsSink};
use crate::provisioning::ReconcilerSettings;
use crate::state::SharedState;

pub struct Context<C> {
    pub client: Client,
    /// The same API server without kube's automatic retry of 429/503: an eviction that a
    /// PodDisruptionBudget refuses answers 429, and the drain must see that at once (to
    /// report the PDB and try the next pod) instead of blocking for minutes in the client.
    pub eviction_client: Client,
    pub cloud: Arc<C>,
    pub state: SharedState,
    pub events: Events,
    pub metrics: Arc<dyn MetricsSink>,
    pub settings: ReconcilerSettings,
    pub clock: Clock,
}

impl<C> Context<C> {
    /// Time a cloud call and count its errors under `controller`/`method`, as upstream's
    /// `karpenter_cloudprovider_*` series do.
    pub async fn cloud_call<T, E: CloudReason>(
        &self,
        controller: &str,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let result = call.await;
        self.metrics.cloud_call(
            controller,
            method,
            started.elapsed().as_secs_f64(),
            result.as_ref().err().map(|e| e.reason()),
        );
        result
    }
}

/// An error that names its metric reason.
pub trait CloudReason {
    fn reason(&self) -> &'static str;
}

impl CloudReason for karpctl_cloud::CloudError {
    fn reason(&self) -> &'static str {
        karpctl_cloud::CloudError::reason(self)
    }
}

/// A client that does not retry 429/503 (see [`Context::eviction_client`]).
pub async fn client_without_retries() -> anyhow::Result<Client> {
    let mut config = kube::Config::infer().await?;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}
