//! Which pods a terminating node still has to lose, in what order and how — upstream
//! Karpenter's drain, decided as plain data.
//!
//! - Pods that do not hold the node: finished pods (Succeeded/Failed), static (mirror) pods,
//!   pods that tolerate `karpenter.sh/disrupted:NoSchedule` (they would come straight back),
//!   and pods stuck terminating (deleted more than a minute past their own grace period).
//! - Order, as the kubelet's graceful node shutdown: non-critical pods, then non-critical
//!   DaemonSet pods, then critical pods, then critical DaemonSet pods (critical =
//!   `system-cluster-critical` / `system-node-critical`). A group is evicted only once every
//!   pod of the groups before it is gone or terminating, so the node keeps its DNS, CNI and
//!   log agents while its workload moves.
//! - `karpenter.sh/do-not-disrupt: "true"` pods are not evicted: they hold the node (and the
//!   groups after them) until the node's termination deadline.
//! - The deadline (`karpenter.sh/nodeclaim-termination-timestamp`, from the NodePool's
//!   `terminationGracePeriod`, or an interruption's announced stop time): a pod is deleted
//!   (not evicted; PodDisruptionBudgets and do-not-disrupt notwithstanding) once the
//!   deadline minus its own grace period has come, with a grace period clamped to what is
//!   left (at least 1 s), so it still finishes by the deadline.
//!
//! The controller's termination uses these rules; so does `karpctl migrate-from-cas` when it
//! drains node-group nodes, with one addition: Cluster Autoscaler's
//! `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` counts as do-not-disrupt there
//! ([`DrainPod::with_cas_safe_to_evict`]), so a migration does not silently drop that promise.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;

/// Priority classes the kubelet and Karpenter treat as critical.
const CRITICAL_PRIORITY_CLASSES: [&str; 2] = ["system-cluster-critical", "system-node-critical"];
/// The pod's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// A terminating pod past its grace period by this much is stuck; it no longer holds the
/// node (its kubelet is gone or wedged).
const STUCK_AFTER_SECONDS: i64 = 60;

/// Cluster Autoscaler's per-pod opt-out of scale-down.
pub const CAS_SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Whether the pod carries `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`.
pub fn cas_safe_to_evict_false(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CAS_SAFE_TO_EVICT))
        .is_some_and(|v| v == "false")
}

/// What the drain needs to know about one pod on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub critical: bool,
    pub daemon_set: bool,
    pub static_pod: bool,
    pub finished: bool,
    pub tolerates_disrupted: bool,
    pub do_not_disrupt: bool,
    /// When its deletion was requested (the API's deletionTimestamp minus its grace).
    pub deleting_since: Option<Timestamp>,
    pub grace_seconds: i64,
}

impl DrainPod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        let grace_seconds = spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let tolerates_disrupted = spec.tolerations.iter().flatten().any(|t| {
            let key_matches = match t.key.as_deref() {
                None | Some("") => t.operator.as_deref() == Some("Exists"),
                Some(k) => k == labels::DISRUPTED_TAINT,
            };
            let effect_matches =
                matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
            let value_matches = t.operator.as_deref() == Some("Exists")
                || t.value.as_deref().unwrap_or_default().is_empty();
            key_matches && effect_matches && value_matches
        });
        DrainPod {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            critical: spec
                .priority_class_name
                .as_deref()
                .is_some_and(|p| CRITICAL_PRIORITY_CLASSES.contains(&p)),
            daemon_set: owners
                .iter()
                .any(|o| o.kind == "DaemonSet" && o.controller == Some(true)),
            static_pod: owners.iter().any(|o| o.kind == "Node")
                || meta
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
            finished: matches!(phase, Some("Succeeded") | Some("Failed")),
            tolerates_disrupted,
            do_not_disrupt: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::DO_NOT_DISRUPT))
                .is_some_and(|v| v == "true"),
            deleting_since: meta.deletion_timestamp.as_ref().map(|t| {
                let grace = meta.deletion_grace_period_seconds.unwrap_or(0);
                t.0.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(grace))
                    .unwrap_or(t.0)
            }),
            grace_seconds,
        }
    }

    /// A migration off Cluster Autoscaler: a pod CAS would never have evicted
    /// (`safe-to-evict: "false"`) holds the node as `karpenter.sh/do-not-disrupt` does.
    pub fn with_cas_safe_to_evict(mut self, pod: &Pod) -> Self {
        self.do_not_disrupt |= cas_safe_to_evict_false(pod);
        self
    }

    fn stuck_terminating(&self, now: Timestamp) -> bool {
        self.deleting_since.is_some_and(|since| {
            now.as_second() - since.as_second() > self.grace_seconds + STUCK_AFTER_SECONDS
        })
    }

    /// Whether the node waits for this pod to go.
    pub fn holds_node(&self, now: Timestamp) -> bool {
        !self.finished
            && !self.static_pod
            && !self.tolerates_disrupted
            && !self.stuck_terminating(now)
    }

    /// 0..=3: the eviction group (non-critical, non-critical DaemonSet, critical, critical
    /// DaemonSet).
    fn group(&self) -> usize {
        usize::from(self.critical) * 2 + usize::from(self.daemon_set)
    }
}

/// One thing to do to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAction {
    /// Through the Eviction API (PodDisruptionBudgets apply).
    Evict { namespace: String, name: String },
    /// Past the deadline minus its grace period: deleted with this grace period.
    Delete {
        namespace: String,
        name: String,
        grace_seconds: i64,
    },
}

/// Why a pod still holds the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holding {
    /// Evicted (or being evicted now): waiting for it to terminate or for its PDB.
    Evicting,
    /// Its group waits for an earlier group.
    Queued,
    /// `karpenter.sh/do-not-disrupt`; held until the deadline (if any).
    DoNotDisrupt,
    /// Already terminating.
    Terminating,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainDecision {
    pub actions: Vec<PodAction>,
    /// Pods still holding the node (`namespace/name`) and why, in eviction order.
    pub holding: Vec<(String, Holding)>,
}

impl DrainDecision {
    pub fn drained(&self) -> bool {
        self.holding.is_empty()
    }
}

/// What to do now about the pods on a terminating node.
pub fn decide(pods: &[DrainPod], now: Timestamp, deadline: Option<Timestamp>) -> DrainDecision {
    let mut out = DrainDecision::default();
    let mut holders: Vec<&DrainPod> = pods.iter().filter(|p| p.holds_node(now)).collect();
    holders.sort_by_key(|p| (p.group(), p.key()));
    // Past the deadline minus its own grace period, a pod is deleted whatever protects it.
    let remaining = deadline.map(|d| d.as_second() - now.as_second());
    let mut deleted = Vec::new();
    for p in &holders {
        if let Some(left) = remaining
            && p.deleting_since.is_none()
            && left <= p.grace_seconds
        {
            out.actions.push(PodAction::Delete {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                grace_seconds: left.clamp(1, p.grace_seconds.max(1)),
            });
            deleted.push(p.key());
        }
    }
    // The first group with a pod not yet terminating is the one evicted now.
    let current = holders
        .iter()
        .filter(|p| p.deleting_since.is_none() && !deleted.contains(&p.key()))
        .map(|p| p.group())
        .min();
    for p in holders {
        let key = p.key();
        let holding = if p.deleting_since.is_some() || deleted.contains(&key) {
            Holding::Terminating
        } else if p.do_not_disrupt {
            Holding::DoNotDisrupt
        } else if Some(p.group()) == current {
            out.actions.push(PodAction::Evict {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            });
            Holding::Evicting
        } else {
            Holding::Queued
        };
        out.holding.push((key, holding));
    }
    out
}

/// The earliest moment the decision changes by time alone: when the next pod is due for
/// deletion before the deadline, or when a terminating pod counts as stuck.
pub fn next_deadline(
    pods: &[DrainPod],
    now: Timestamp,
    deadline: Option<Timestamp>,
) -> Option<Timestamp> {
    let mut times = Vec::new();
    for p in pods.iter().filter(|p| p.holds_node(now)) {
        match p.deleting_since {
            Some(since) => {
                times.push(since.as_second() + p.grace_seconds + STUCK_AFTER_SECONDS + 1)
            }
            None => {
                if let Some(d) = deadline {
                    times.push(d.as_second() - p.grace_seconds);
                }
            }
        }
    }
    times
        .into_iter()
        .filter(|t| *t > now.as_second())
        .min()
        .and_then(|t| Timestamp::from_second(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::ToSpan;

    fn pod(name: &str) -> DrainPod {
        DrainPod {
            namespace: "default".into(),
            name: name.into(),
            labels: BTreeMap::new(),
            critical: false,
            daemon_set: false,
            static_pod: false,
            finished: false,
            tolerates_disrupted: false,
            do_not_disrupt: false,
            deleting_since: None,
            grace_seconds: 30,
        }
    }

    fn now() -> Timestamp {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    fn evicted(d: &DrainDecision) -> Vec<String> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                PodAction::Evict { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn groups_are_evicted_in_the_kubelets_shutdown_order() {
        let mut ds = pod("ds");
        ds.daemon_set = true;
        let mut dns = pod("dns");
        dns.critical = true;
        let mut cni = pod("cni");
        cni.critical = true;
        cni.daemon_set = true;
        let mut pods = vec![cni.clone(), dns.clone(), ds.clone(), pod("web")];
        let d = decide(&pods, now(), None);
        assert_eq!(evicted(&d), vec!["web"]);
        assert_eq!(d.holding.len(), 4);
        assert!(d.holding.contains(&("default/dns".into(), Holding::Queued)));
        // web terminating: the next group goes.
        pods[3].deleting_since = Some(now());
        assert_eq!(evicted(&decide(&pods, now(), None)), vec!["ds"]);
        pods.remove(3);
        pods[2].deleting_since = Some(now());
        assert_eq!(evicted(&decide(&pods, now(), None)), vec!["dns"]);
        pods.remove(2);
        pods.remove(1);
        assert_eq!(evicted(&decide(&pods, now(), None)), vec!["cni"]);
        assert!(decide(&[], now(), None).drained());
    }

    #[test]
    fn pods_that_do_not_hold_the_node_are_not_waited_for() {
        let mut done = pod("job");
        done.finished = true;
        let mut mirror = pod("static");
        mirror.static_pod = true;
        let mut tolerant = pod("agent");
        tolerant.tolerates_disrupted = true;
        let mut stuck = pod("stuck");
        stuck.deleting_since = Some(now().checked_sub(10.minutes()).unwrap());
        let d = decide(&[done, mirror, tolerant, stuck], now(), None);
        assert!(d.drained(), "{d:?}");
        assert!(d.actions.is_empty());
    }

    #[test]
    fn a_do_not_disrupt_pod_holds_the_node_and_later_groups_until_the_deadline() {
        let mut keep = pod("keep");
        keep.do_not_disrupt = true;
        keep.grace_seconds = 10;
        let mut ds = pod("ds");
        ds.daemon_set = true;
        ds.grace_seconds = 5;
        let mut web = pod("web");
        web.grace_seconds = 5;
        let pods = vec![keep, ds, web];
        let d = decide(&pods, now(), None);
        assert_eq!(evicted(&d), vec!["web"], "only web is evicted");
        assert!(
            d.holding
                .contains(&("default/keep".into(), Holding::DoNotDisrupt))
        );
        assert!(d.holding.contains(&("default/ds".into(), Holding::Queued)));
        // 11 s before the deadline: nothing deleted yet (keep's grace is 10 s, the others'
        // 5 s); at 10 s keep is.
        let deadline = now().checked_add(11.seconds()).unwrap();
        assert!(
            !decide(&pods, now(), Some(deadline))
                .actions
                .iter()
                .any(|a| matches!(a, PodAction::Delete { .. }))
        );
        assert_eq!(
            next_deadline(&pods, now(), Some(deadline)),
            Some(now().checked_add(1.seconds()).unwrap()),
            "requeued for the moment keep must go"
        );
        let deadline = now().checked_add(10.seconds()).unwrap();
        let d = decide(&pods, now(), Some(deadline));
        assert!(d.actions.contains(&PodAction::Delete {
            namespace: "default".into(),
            name: "keep".into(),
            grace_seconds: 10
        }));
    }

    #[test]
    fn past_the_deadline_every_pod_is_deleted_with_at_least_one_second() {
        let pods = vec![pod("a"), pod("b")];
        let deadline = now().checked_sub(5.seconds()).unwrap();
        let d = decide(&pods, now(), Some(deadline));
        let deletes: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                PodAction::Delete { grace_seconds, .. } => Some(*grace_seconds),
                _ => None,
            })
            .collect();
        assert_eq!(deletes, vec![1, 1]);
        assert!(evicted(&d).is_empty(), "deleted, not also evicted");
    }

    #[test]
    fn tolerations_are_read_as_the_scheduler_reads_them() {
        let with = |tolerations: serde_json::Value| {
            let p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [], "tolerations": tolerations}
            }))
            .unwrap();
            DrainPod::from_pod(&p).tolerates_disrupted
        };
        assert!(with(serde_json::json!([{"operator": "Exists"}])));
        assert!(with(
            serde_json::json!([{"key": "karpenter.sh/disrupted", "operator": "Exists", "effect": "NoSchedule"}])
        ));
        assert!(!with(
            serde_json::json!([{"key": "karpenter.sh/disrupted", "operator": "Exists", "effect": "NoExecute"}])
        ));
        assert!(!with(
            serde_json::json!([{"key": "other", "operator": "Exists"}])
        ));
        assert!(!with(serde_json::json!([])));
    }

    #[test]
    fn safe_to_evict_false_holds_the_node_only_when_migrating_off_cluster_autoscaler() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "report-1", "namespace": "shop",
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}},
            "spec": {"containers": []}
        }))
        .unwrap();
        assert!(
            !DrainPod::from_pod(&p).do_not_disrupt,
            "the controller keeps upstream's rule"
        );
        let migrating = DrainPod::from_pod(&p).with_cas_safe_to_evict(&p);
        assert!(migrating.do_not_disrupt);
        let d = decide(&[migrating], now(), None);
        assert_eq!(
            d.holding,
            vec![("shop/report-1".into(), Holding::DoNotDisrupt)]
        );
        assert!(d.actions.is_empty());
        let mut other = p.clone();
        other.metadata.annotations =
            Some([(CAS_SAFE_TO_EVICT.to_string(), "true".to_string())].into());
        assert!(
            !DrainPod::from_pod(&other)
                .with_cas_safe_to_evict(&other)
                .do_not_disrupt
        );
    }

    #[test]
    fn pod_facts_come_from_the_api_object() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "coredns-1", "namespace": "kube-system",
                "annotations": {"karpenter.sh/do-not-disrupt": "true"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "u", "controller": true}]
            },
            "spec": {"containers": [], "priorityClassName": "system-cluster-critical", "terminationGracePeriodSeconds": 5},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let d = DrainPod::from_pod(&p);
        assert!(d.critical && d.daemon_set && d.do_not_disrupt && !d.finished && !d.static_pod);
        assert_eq!(d.grace_seconds, 5);
        assert_eq!(d.key(), "kube-system/coredns-1");
    }
}
