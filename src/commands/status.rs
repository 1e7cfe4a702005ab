//! `karpctl status`: what the controller launched and what it costs — every NodeClaim with
//! its NodePool, instance type, capacity type, zone, node, readiness and hourly price — and how
//! many pods run and wait. Prices are on-demand list prices from the shipped table; spot prices
//! are that table's estimate (the controller itself reads live spot prices from EC2).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use karpctl_api::labels;
use karpctl_api::v1::{NodeClaim, NodePool};
use karpctl_cloud::{CapacityType, Catalogue, CatalogueOptions};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::kube::config_map as kube_config;
use crate::printer::{Printer, schema};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Claim {
    name: String,
    node_pool: String,
    instance_type: String,
    capacity_type: String,
    zone: String,
    node: String,
    ready: String,
    price_per_hour: Option<f64>,
    /// The disruption controller's last verdict (`status.disruption.outcome`), if any.
    disruption: String,
    /// Why (`status.disruption.message`).
    disruption_message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    node_claims: Vec<Claim>,
    ready: usize,
    price_per_hour: f64,
    pods_running: usize,
    pods_pending: usize,
    /// Why the pending pods wait, one entry per reason (most pods first).
    waiting: Vec<Waiting>,
}

/// Pending pods that wait for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub reason: String,
    /// `namespace/name`, sorted.
    pub pods: Vec<String>,
}

/// What the controller last said about one pending pod (its newest Event from `karpenter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVerdict {
    /// `Nominated`: a NodeClaim is being launched for it (the Event's message names it).
    Nominated(String),
    /// `FailedScheduling`: the controller's reason (a NodePool or EC2NodeClass not Ready, a
    /// limit reached, no instance type fits, ...).
    FailedScheduling(String),
}

/// A NodePool that is not Ready, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolProblem {
    pub name: String,
    pub why: String,
}

/// Why each pending pod waits, grouped by reason. The controller's own verdict on a pod wins;
/// a pod it has said nothing about waits because no controller leads, because no NodePool is
/// Ready (each named with its reason), or because its batch has not been planned yet.
pub fn why_waiting(
    pending: &[String],
    verdicts: &std::collections::BTreeMap<String, PodVerdict>,
    controller: &Result<String, String>,
    pools: usize,
    not_ready: &[PoolProblem],
) -> Vec<Waiting> {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for pod in pending {
        let reason = match (verdicts.get(pod), controller) {
            (_, Err(why)) => format!("no controller is running: {why}"),
            (Some(PodVerdict::Nominated(message)), Ok(_)) => {
                format!("a node is being launched for them ({message})")
            }
            (Some(PodVerdict::FailedScheduling(message)), Ok(_)) => message.clone(),
            (None, Ok(_)) if pools == 0 => {
                "no NodePool exists: create one (`kubectl get nodepools`)".to_owned()
            }
            (None, Ok(_)) if not_ready.len() == pools => format!(
                "no NodePool is Ready: {}",
                not_ready
                    .iter()
                    .map(|p| format!("{} ({})", p.name, p.why))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, Ok(_)) => {
                "not yet planned by the controller (it batches pending pods for a few seconds)"
                    .to_owned()
            }
        };
        groups.entry(reason).or_default().push(pod.clone());
    }
    let mut out: Vec<Waiting> = groups
        .into_iter()
        .map(|(reason, mut pods)| {
            pods.sort();
            Waiting { reason, pods }
        })
        .collect();
    out.sort_by(|a, b| {
        b.pods
            .len()
            .cmp(&a.pods.len())
            .then(a.reason.cmp(&b.reason))
    });
    out
}

pub fn run(context: Option<&str>, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let status = runtime.block_on(read(context))?;
    printer.result(schema::STATUS, &status, text)?;
    Ok(ExitCode::SUCCESS)
}

async fn read(context: Option<&str>) -> anyhow::Result<Status> {
    let client = kube_config::client(context).await?;
    let claims = match Api::<NodeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            anyhow::bail!("this cluster has no NodeClaim API; run `karpctl init` first")
        }
        Err(e) => return Err(e).context("listing NodeClaims"),
    };
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Pods")?
        .items;
    let mut catalogues: std::collections::BTreeMap<String, Option<Catalogue>> = Default::default();
    let mut out = Vec::new();
    for c in claims {
        let label = |k: &str| {
            c.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let zone = label(labels::TOPOLOGY_ZONE);
        let instance_type = label(labels::INSTANCE_TYPE);
        let capacity_type = label(labels::CAPACITY_TYPE);
        let region = zone
            .trim_end_matches(|ch: char| ch.is_ascii_lowercase())
            .to_owned();
        let catalogue = catalogues
            .entry(region.clone())
            .or_insert_with(|| {
                (!region.is_empty())
                    .then(|| Catalogue::shipped(&CatalogueOptions::new(&region)).ok())
                    .flatten()
            })
            .as_ref();
        let price = catalogue
            .and_then(|cat| cat.get(&instance_type))
            .and_then(|it| {
                let kind = if capacity_type == labels::CAPACITY_TYPE_SPOT {
                    CapacityType::Spot
                } else {
                    CapacityType::OnDemand
                };
                it.offerings
                    .iter()
                    .find(|o| o.zone == zone && o.capacity_type == kind)
                    .or_else(|| it.offerings.iter().find(|o| o.capacity_type == kind))
                    .map(|o| o.price)
            });
        let status = c.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|cond| cond.type_ == "Ready")
            .map(|cond| format!("{:?}", cond.status))
            .unwrap_or_else(|| "Unknown".into());
        out.push(Claim {
            name: c.metadata.name.clone().unwrap_or_default(),
            node_pool: label(labels::NODE_POOL),
            instance_type,
            capacity_type,
            zone,
            node: status.node_name.clone().unwrap_or_default(),
            ready,
            price_per_hour: price,
            disruption: if c.metadata.deletion_timestamp.is_some() {
                "Deleting".to_owned()
            } else {
                status
                    .disruption
                    .as_ref()
                    .map(|d| d.outcome.clone())
                    .unwrap_or_default()
            },
            disruption_message: status
                .disruption
                .as_ref()
                .map(|d| d.message.clone())
                .unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| (&a.node_pool, &a.name).cmp(&(&b.node_pool, &b.name)));
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let key = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        )
    };
    let pending: Vec<String> = pods
        .iter()
        .filter(|p| phase(p) == "Pending" && p.spec.as_ref().is_none_or(|s| s.node_name.is_none()))
        .map(key)
        .collect();
    let waiting = if pending.is_empty() {
        Vec::new()
    } else {
        let verdicts = verdicts(&client).await?;
        let controller = crate::kube::objects::controller_running(&client).await?;
        let pools = Api::<NodePool>::all(client.clone())
            .list(&ListParams::default())
            .await
            .context("listing NodePools")?
            .items;
        let not_ready: Vec<PoolProblem> = pools
            .iter()
            .filter_map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                match ready {
                    Some(c) if format!("{:?}", c.status) == "True" => None,
                    Some(c) => Some(PoolProblem {
                        name: p.metadata.name.clone().unwrap_or_default(),
                        why: if c.message.is_empty() {
                            c.reason.clone()
                        } else {
                            format!("{}: {}", c.reason, c.message)
                        },
                    }),
                    None => Some(PoolProblem {
                        name: p.metadata.name.clone().unwrap_or_default(),
                        why: "no Ready condition yet".to_owned(),
                    }),
                }
            })
            .collect();
        why_waiting(&pending, &verdicts, &controller, pools.len(), &not_ready)
    };
    Ok(Status {
        waiting,
        ready: out.iter().filter(|c| c.ready == "True").count(),
        price_per_hour: out
            .iter()
            .filter_map(|c| c.price_per_hour)
            .fold(0.0, |a, b| a + b),
        pods_running: pods.iter().filter(|p| phase(p) == "Running").count(),
        pods_pending: pods.iter().filter(|p| phase(p) == "Pending").count(),
        node_claims: out,
    })
}

/// The newest `Nominated` or `FailedScheduling` Event the controller (`karpenter`) wrote
/// about each pod, by `namespace/name`.
async fn verdicts(
    client: &kube::Client,
) -> anyhow::Result<std::collections::BTreeMap<String, PodVerdict>> {
    use k8s_openapi::api::core::v1::Event;
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields("involvedObject.kind=Pod"))
        .await
        .context("listing Events about Pods")?
        .items;
    let when = |e: &Event| {
        [
            e.series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref())
                .map(|t| t.0.as_millisecond()),
            e.event_time.as_ref().map(|t| t.0.as_millisecond()),
            e.last_timestamp.as_ref().map(|t| t.0.as_millisecond()),
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    };
    let mut newest: std::collections::BTreeMap<String, (i64, PodVerdict)> = Default::default();
    for e in &events {
        let from_controller = e.reporting_component.as_deref() == Some("karpenter")
            || e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("karpenter");
        let message = e.message.clone().unwrap_or_default();
        let verdict = match e.reason.as_deref() {
            Some("Nominated") if from_controller => PodVerdict::Nominated(message),
            Some("FailedScheduling") if from_controller => PodVerdict::FailedScheduling(message),
            _ => continue,
        };
        let pod = format!(
            "{}/{}",
            e.involved_object.namespace.as_deref().unwrap_or_default(),
            e.involved_object.name.as_deref().unwrap_or_default()
        );
        let at = when(e);
        if newest.get(&pod).is_none_or(|(t, _)| *t <= at) {
            newest.insert(pod, (at, verdict));
        }
    }
    Ok(newest.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

fn text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<24} {:<14} {:<10} {:<12} {:<44} {:<6} {:>8}  DISRUPTION",
        "NODEPOOL", "NODECLAIM", "TYPE", "CAPACITY", "ZONE", "NODE", "READY", "$/HOUR"
    );
    for c in &s.node_claims {
        let _ = writeln!(
            out,
            "{:<12} {:<24} {:<14} {:<10} {:<12} {:<44} {:<6} {:>8}  {}",
            c.node_pool,
            c.name,
            c.instance_type,
            c.capacity_type,
            c.zone,
            c.node,
            c.ready,
            c.price_per_hour
                .map(|p| format!("{p:.4}"))
                .unwrap_or_else(|| "-".into()),
            if c.disruption.is_empty() {
                "-"
            } else {
                &c.disruption
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{} NodeClaims, {} Ready, ${:.4}/hour. Pods: {} Running, {} Pending.",
        s.node_claims.len(),
        s.ready,
        s.price_per_hour,
        s.pods_running,
        s.pods_pending
    );
    if !s.waiting.is_empty() {
        out.push_str("Why pods are pending:\n");
        for w in &s.waiting {
            let shown: Vec<&str> = w.pods.iter().take(3).map(String::as_str).collect();
            let more = w.pods.len().saturating_sub(shown.len());
            let _ = writeln!(
                out,
                "  {} pod{}: {}\n    {}{}",
                w.pods.len(),
                if w.pods.len() == 1 { "" } else { "s" },
                w.reason,
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pods(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("default/{n}")).collect()
    }

    #[test]
    fn pending_pods_are_grouped_by_why_they_wait() {
        let leader: Result<String, String> = Ok("karpenter-0".into());
        let limit = "Failed to schedule pod, all available instance types exceed limits for nodepool: \"default\"";
        let verdicts = BTreeMap::from([
            (
                "default/a".to_owned(),
                PodVerdict::FailedScheduling(limit.into()),
            ),
            (
                "default/b".to_owned(),
                PodVerdict::FailedScheduling(limit.into()),
            ),
            (
                "default/c".to_owned(),
                PodVerdict::Nominated("Pod should schedule on: nodeclaim/default-x".into()),
            ),
        ]);
        let no_leader: Result<String, String> =
            Err("Lease kube-system/karpenter-leader-election has no holder".into());
        let not_ready = [PoolProblem {
            name: "gpu".into(),
            why: "NodeClassReady: EC2NodeClass gpu is not ready".into(),
        }];
        // (pending pods, NodePools, of which not Ready, controller) -> reasons, most pods first
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            Vec<String>,
            usize,
            &[PoolProblem],
            &Result<String, String>,
            Vec<(&str, usize)>,
        )> = vec![
            (
                pods(&["a", "b", "c", "d"]),
                2,
                &not_ready,
                &leader,
                vec![
                    (limit, 2),
                    (
                        "a node is being launched for them (Pod should schedule on: nodeclaim/default-x)",
                        1,
                    ),
                    (
                        "not yet planned by the controller (it batches pending pods for a few seconds)",
                        1,
                    ),
                ],
            ),
            (
                pods(&["d"]),
                1,
                &not_ready,
                &leader,
                vec![(
                    "no NodePool is Ready: gpu (NodeClassReady: EC2NodeClass gpu is not ready)",
                    1,
                )],
            ),
            (
                pods(&["d"]),
                0,
                &[],
                &leader,
                vec![(
                    "no NodePool exists: create one (`kubectl get nodepools`)",
                    1,
                )],
            ),
            (
                pods(&["a", "d"]),
                1,
                &[],
                &no_leader,
                vec![(
                    "no controller is running: Lease kube-system/karpenter-leader-election has no holder",
                    2,
                )],
            ),
        ];
        for (i, (pending, pools, not_ready, controller, want)) in cases.into_iter().enumerate() {
            let got = why_waiting(&pending, &verdicts, controller, pools, not_ready);
            let got: Vec<(&str, usize)> = got
                .iter()
                .map(|w| (w.reason.as_str(), w.pods.len()))
                .collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn the_text_names_each_reason_with_a_few_of_its_pods() {
        let status = Status {
            node_claims: Vec::new(),
            ready: 0,
            price_per_hour: 0.0,
            pods_running: 0,
            pods_pending: 5,
            waiting: vec![Waiting {
                reason: "no NodePool is Ready: default (NodeClassReady: x)".into(),
                pods: pods(&["a", "b", "c", "d", "e"]),
            }],
        };
        let text = text(&status);
        assert!(text.contains("Why pods are pending:\n  5 pods: no NodePool is Ready: default (NodeClassReady: x)\n    default/a, default/b, default/c and 2 more"), "{text}");
    }
}
