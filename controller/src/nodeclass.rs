//! EC2NodeClass status: the cloud resolves the class's selector terms (subnets, security
//! groups, AMIs, instance profile) and this reconciler writes what it found, a condition per
//! part and `Ready`, with the cloud's message naming the term that matched nothing. It holds
//! the `karpenter.k8s.aws/termination` finalizer so the class's cloud resources are cleaned
//! up (`finalize_node_class`) only once no NodeClaim uses it.
//!
//! Also the node class hash written onto NodeClaims for drift detection ([`hash`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpctl_api::v1::condition_types::ec2_node_class as cond;
use karpctl_api::v1::{
    Condition, ConditionStatus, Conditions, EC2NodeClass, EC2NodeClassStatus, READY,
};
use karpctl_cloud::{CloudError, CloudProvider};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use tokio::time::Instant;

use crate::events::Events;
use crate::nodeclaim::set_condition;
use crate::state::{self, SharedState};

pub const FINALIZER: &str = "karpenter.k8s.aws/termination";

/// How often a Ready class is resolved again when nothing changed (subnets and AMIs change
/// outside the cluster).
const RESOLVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// `karpenter.k8s.aws/ec2nodeclass-hash`: FNV-1a (64-bit) of the class's spec serialized as
/// JSON with sorted keys, leaving out the selector terms (what they resolve to is compared
/// separately, through status), printed in decimal. Stable across restarts and replicas;
/// bump `EC2_NODE_CLASS_HASH_VERSION` when this recipe changes.
pub fn hash(class: &EC2NodeClass) -> String {
    let mut spec = serde_json::to_value(&class.spec).unwrap_or_default();
    if let Some(map) = spec.as_object_mut() {
        for ignored in [
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "amiSelectorTerms",
            "capacityReservationSelectorTerms",
        ] {
            map.remove(ignored);
        }
    }
    crate::nodepool::fnv1a64(spec.to_string().as_bytes()).to_string()
}

pub use karpctl_aws::nodeclass::not_found_reason;

/// The parts a node class resolves, each with its condition type, in resolution order.
const PARTS: [(&str, &str); 4] = [
    (cond::SUBNETS_READY, "subnet"),
    (cond::SECURITY_GROUPS_READY, "security group"),
    (cond::AMIS_READY, "ami"),
    (cond::INSTANCE_PROFILE_READY, "instance profile"),
];

/// `Ready` from the parts' conditions: True when none is False, else False with the first
/// failing part's reason and every failing part's message (so the one condition users look
/// at names exactly what is wrong).
fn set_ready(conditions: &mut Vec<Condition>, now: Timestamp) {
    let failing: Vec<(String, String)> = conditions
        .iter()
        .filter(|c| c.type_ != READY && c.status == ConditionStatus::False)
        .map(|c| (c.reason.clone(), format!("{}: {}", c.type_, c.message)))
        .collect();
    match failing.first() {
        None => set_condition(conditions, READY, ConditionStatus::True, "Ready", "", now),
        Some((reason, _)) => {
            let message: Vec<&str> = failing.iter().map(|(_, m)| m.as_str()).collect();
            let reason = reason.clone();
            set_condition(
                conditions,
                READY,
                ConditionStatus::False,
                &reason,
                &message.join("; "),
                now,
            );
        }
    }
}

/// The status to write, recomputed from what this resolution observed and nothing else: the
/// values the cloud resolved, a condition per part, and `Ready`. The old status only lends
/// its transition times to conditions whose status did not change; its values and
/// conditions are never carried forward (a class that failed once would otherwise stay
/// failed, and show stale subnets and parts never checked as True).
pub fn status(
    old: Option<&EC2NodeClassStatus>,
    resolved: Result<EC2NodeClassStatus, &CloudError>,
    now: Timestamp,
) -> EC2NodeClassStatus {
    let error: Option<&CloudError> = resolved.as_ref().err().copied();
    let mut conditions: Vec<Condition> = Vec::new();
    let mut out = match resolved {
        Ok(new) => {
            let present = [
                !new.subnets.is_empty(),
                !new.security_groups.is_empty(),
                !new.amis.is_empty(),
                new.instance_profile.is_some(),
            ];
            for ((type_, what), ok) in PARTS.iter().zip(present) {
                // A condition the cloud set for the part wins over one derived here.
                if let Some(c) = new.conditions.iter().find(|c| c.type_ == *type_) {
                    set_condition(&mut conditions, type_, c.status, &c.reason, &c.message, now);
                } else if ok {
                    set_condition(
                        &mut conditions,
                        type_,
                        ConditionStatus::True,
                        type_,
                        "",
                        now,
                    );
                } else {
                    let msg = format!("no {what} matched the selector terms");
                    set_condition(
                        &mut conditions,
                        type_,
                        ConditionStatus::False,
                        not_found_reason(type_),
                        &msg,
                        now,
                    );
                }
            }
            for c in new
                .conditions
                .iter()
                .filter(|c| c.type_ != READY && !PARTS.iter().any(|(t, _)| *t == c.type_))
            {
                set_condition(
                    &mut conditions,
                    &c.type_,
                    c.status,
                    &c.reason,
                    &c.message,
                    now,
                );
            }
            EC2NodeClassStatus {
                conditions: Vec::new(),
                ..new
            }
        }
        Err(e) => {
            // The whole resolution failed. If the cloud named the part, that part is False;
            // the others were not observed this time and are Unknown.
            let failed_part = match e {
                CloudError::NodeClassNotReady { reason, .. } => PARTS.iter().find_map(|(t, _)| {
                    reason
                        .strip_prefix(t)
                        .and_then(|r| r.strip_prefix(": "))
                        .map(|message| (*t, message))
                }),
                _ => None,
            };
            for (type_, _) in PARTS {
                match failed_part {
                    Some((failed, message)) if failed == type_ => set_condition(
                        &mut conditions,
                        type_,
                        ConditionStatus::False,
                        not_found_reason(type_),
                        message,
                        now,
                    ),
                    _ => set_condition(
                        &mut conditions,
                        type_,
                        ConditionStatus::Unknown,
                        e.reason(),
                        &e.to_string(),
                        now,
                    ),
                }
            }
            EC2NodeClassStatus::default()
        }
    };
    set_ready(&mut conditions, now);
    if let Some(e) = error
        && !conditions
            .iter()
            .any(|c| c.type_ != READY && c.status == ConditionStatus::False)
    {
        set_condition(
            &mut conditions,
            READY,
            ConditionStatus::False,
            e.reason(),
            &e.to_string(),
            now,
        );
    }
    // Keep when each condition last changed, where it did not change now.
    for c in &mut conditions {
        if let Some(before) = old.and_then(|o| o.condition(&c.type_))
            && before.status == c.status
        {
            c.last_transition_time = before.last_transition_time.clone();
        }
    }
    out.conditions = conditions;
    out
}

/// Whether two statuses differ in anything but transition times.
fn differs(a: &EC2NodeClassStatus, b: &EC2NodeClassStatus) -> bool {
    let strip = |s: &EC2NodeClassStatus| {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conds {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    strip(a) != strip(b)
}

pub struct NodeClassReconciler<C> {
    pub client: Client,
    pub cloud: Arc<C>,
    pub state: SharedState,
    pub events: Events,
}

/// The Warning Event to publish when a class's `Ready` condition turns False or says
/// something new: (reason, note). Nothing while it stays the same, so a class that stays
/// broken is not re-announced on every resolution.
pub fn readiness_event(
    old: Option<&EC2NodeClassStatus>,
    new: &EC2NodeClassStatus,
) -> Option<(String, String)> {
    let now = new
        .condition(READY)
        .filter(|c| c.status == ConditionStatus::False)?;
    let before = old.and_then(|s| s.condition(READY));
    if before.is_some_and(|b| {
        b.status == ConditionStatus::False && b.reason == now.reason && b.message == now.message
    }) {
        return None;
    }
    Some((now.reason.clone(), now.message.clone()))
}

impl<C: CloudProvider> NodeClassReconciler<C> {
    async fn reconcile(&self, class: &EC2NodeClass) -> Result<(), kube::Error> {
        let api: Api<EC2NodeClass> = Api::all(self.client.clone());
        let name = class.name_any();
        let has_finalizer = class.finalizers().iter().any(|f| f == FINALIZER);
        if class.metadata.deletion_timestamp.is_some() {
            let in_use = state::read(&self.state)
                .node_claims()
                .any(|c| c.spec.node_class_ref.name == name);
            if in_use || !has_finalizer {
                return Ok(());
            }
            if let Err(e) = self.cloud.finalize_node_class(class).await {
                tracing::warn!(controller = "nodeclass", EC2NodeClass = %json!({"name": name}), error = %e, "finalizing node class failed, will retry");
                return Ok(());
            }
            let finalizers: Vec<&String> = class
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .collect();
            api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": class.resource_version(), "finalizers": finalizers}})))
                .await?;
            tracing::info!(controller = "nodeclass", EC2NodeClass = %json!({"name": name}), "deleted nodeclass");
            return Ok(());
        }
        let mut current = class.clone();
        if !has_finalizer {
            let mut finalizers = class.finalizers().to_vec();
            finalizers.push(FINALIZER.to_owned());
            current = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": class.resource_version(), "finalizers": finalizers}})))
                .await?;
        }
        let resolved = self.cloud.reconcile_node_class(&current).await;
        if let Err(e) = &resolved {
            tracing::error!(controller = "nodeclass", EC2NodeClass = %json!({"name": name}), error = %e, "resolving node class failed");
        }
        let new = status(
            current.status.as_ref(),
            match &resolved {
                Ok(s) => Ok(s.clone()),
                Err(e) => Err(e),
            },
            Timestamp::now(),
        );
        if let Some((reason, note)) = readiness_event(current.status.as_ref(), &new) {
            tracing::error!(controller = "nodeclass", EC2NodeClass = %json!({"name": name}), reason, message = %note, "nodeclass not ready");
            self.events.warning(&current, &reason, note).await;
        }
        if current.status.as_ref().is_none_or(|old| differs(old, &new)) {
            let updated = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": current.resource_version()}, "status": new})))
                .await?;
            state::write(&self.state).apply(updated);
        }
        Ok(())
    }

    /// Reconcile a class when its generation changes, when it is being deleted, and every
    /// few minutes; looked at after every change (at most once a second).
    pub async fn run(self, mut changes: tokio::sync::watch::Receiver<u64>) {
        let mut done: BTreeMap<String, (Option<i64>, Instant, bool)> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tick.tick() => {},
            }
            let classes: Vec<EC2NodeClass> =
                state::read(&self.state).node_classes().cloned().collect();
            let now = Instant::now();
            for class in classes {
                let name = class.name_any();
                let deleting = class.metadata.deletion_timestamp.is_some();
                let ready = class.status.as_ref().is_some_and(|s| {
                    use karpctl_api::v1::Conditions;
                    s.is_true(READY)
                });
                let due = match done.get(&name) {
                    None => true,
                    Some((generation, at, _)) => {
                        deleting
                            || *generation != class.metadata.generation
                            || now.duration_since(*at)
                                > if ready {
                                    RESOLVE_EVERY
                                } else {
                                    Duration::from_secs(30)
                                }
                    }
                };
                if !due {
                    continue;
                }
                match self.reconcile(&class).await {
                    Ok(()) => {
                        done.insert(name, (class.metadata.generation, now, ready));
                    }
                    Err(e) => {
                        tracing::warn!(controller = "nodeclass", EC2NodeClass = %json!({"name": name}), error = %e, "reconciling node class failed, will retry")
                    }
                }
            }
            let live: Vec<String> = state::read(&self.state)
                .node_classes()
                .map(|c| c.name_any())
                .collect();
            done.retain(|k, _| live.contains(k));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpctl_api::v1::{Conditions, Subnet};

    fn class(json: serde_json::Value) -> EC2NodeClass {
        serde_json::from_value(json).unwrap()
    }

    fn default_class() -> serde_json::Value {
        json!({
            "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {
                "role": "KarpenterNodeRole",
                "amiSelectorTerms": [{"alias": "al2023@latest"}],
                "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}],
                "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}]
            }
        })
    }

    #[test]
    fn hash_ignores_selector_terms_but_not_the_role() {
        let a = class(default_class());
        let mut v = default_class();
        v["spec"]["subnetSelectorTerms"] = json!([{"id": "subnet-1"}]);
        let b = class(v);
        assert_eq!(hash(&a), hash(&b));
        let mut v = default_class();
        v["spec"]["role"] = json!("OtherRole");
        assert_ne!(hash(&a), hash(&class(v)));
        assert_eq!(hash(&a), hash(&a.clone()), "stable");
    }

    #[test]
    fn status_names_the_part_that_matched_nothing() {
        let now = Timestamp::now();
        let resolved = EC2NodeClassStatus {
            subnets: vec![Subnet {
                id: "subnet-1".into(),
                zone: "us-west-2a".into(),
                zone_id: None,
            }],
            instance_profile: Some("p".into()),
            ..Default::default()
        };
        let s = status(None, Ok(resolved), now);
        assert!(s.is_true(cond::SUBNETS_READY));
        assert!(!s.is_true(cond::SECURITY_GROUPS_READY));
        assert!(!s.is_true(READY));
        let ready = s.condition(READY).unwrap();
        assert!(
            ready.message.contains("SecurityGroupsReady"),
            "{}",
            ready.message
        );
        assert!(ready.message.contains("AMIsReady"), "{}", ready.message);

        assert_eq!(s.condition(cond::AMIS_READY).unwrap().reason, "AMINotFound");
        assert_eq!(s.condition(READY).unwrap().reason, "SecurityGroupsNotFound");

        let err = CloudError::NodeClassNotReady {
            name: "default".into(),
            reason: "SubnetsReady: no subnet matched: subnetSelectorTerms[0] {\"tags\":{\"karpenter.sh/discovery\":\"c\"}}".into(),
        };
        let s = status(Some(&s), Err(&err), now);
        let subnets = s.condition(cond::SUBNETS_READY).unwrap();
        assert_eq!(subnets.status, ConditionStatus::False);
        assert_eq!(subnets.reason, "SubnetsNotFound");
        assert!(
            subnets
                .message
                .starts_with("no subnet matched: subnetSelectorTerms[0]")
        );
        let ready = s.condition(READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::False);
        assert!(
            ready.message.contains("karpenter.sh/discovery"),
            "{}",
            ready.message
        );
        assert!(
            s.subnets.is_empty(),
            "values resolved before are not carried forward"
        );
    }

    fn part(type_: &str, status: ConditionStatus, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
        }
    }

    fn resolved_ok() -> EC2NodeClassStatus {
        EC2NodeClassStatus {
            subnets: vec![Subnet {
                id: "subnet-1".into(),
                zone: "us-west-2a".into(),
                zone_id: None,
            }],
            security_groups: vec![karpctl_api::v1::SecurityGroup {
                id: "sg-1".into(),
                name: None,
            }],
            amis: vec![karpctl_api::v1::Ami {
                id: "ami-1".into(),
                name: None,
                deprecated: false,
                requirements: Vec::new(),
            }],
            instance_profile: Some("p".into()),
            conditions: PARTS
                .iter()
                .map(|(t, _)| part(t, ConditionStatus::True, t, ""))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_class_that_failed_once_is_ready_again_when_its_parts_resolve() {
        let then: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-12-01T00:05:00Z".parse().unwrap();
        // A transient NoSuchEntity right after the role was created.
        let mut failed = resolved_ok();
        failed.instance_profile = None;
        failed.conditions[3] = part(
            cond::INSTANCE_PROFILE_READY,
            ConditionStatus::False,
            "InstanceProfileNotReady",
            "role R cannot be added to instance profile p: NoSuchEntity",
        );
        let broken = status(None, Ok(failed), then);
        assert!(!broken.is_true(READY));
        assert_eq!(broken.instance_profile, None);
        let healed = status(Some(&broken), Ok(resolved_ok()), now);
        assert!(healed.is_true(READY), "{:?}", healed.conditions);
        assert!(healed.is_true(cond::INSTANCE_PROFILE_READY));
        assert_eq!(healed.instance_profile.as_deref(), Some("p"));
        // Unchanged parts keep when they last changed; the healed ones changed now.
        assert_eq!(
            healed
                .condition(cond::SUBNETS_READY)
                .unwrap()
                .last_transition_time
                .0,
            then
        );
        assert_eq!(healed.condition(READY).unwrap().last_transition_time.0, now);
    }

    #[test]
    fn a_part_that_fails_now_is_false_whatever_it_was_before() {
        let now = Timestamp::now();
        let ok = status(None, Ok(resolved_ok()), now);
        assert!(ok.is_true(READY));
        let mut wrong_role = resolved_ok();
        wrong_role.instance_profile = None;
        wrong_role.subnets = Vec::new();
        wrong_role.conditions[0] = part(
            cond::SUBNETS_READY,
            ConditionStatus::False,
            "SubnetsNotFound",
            "no subnet matched: subnetSelectorTerms[0] {}",
        );
        wrong_role.conditions[3] = part(
            cond::INSTANCE_PROFILE_READY,
            ConditionStatus::False,
            "InstanceProfileNotReady",
            "role Wrong cannot be added to instance profile p: NoSuchEntity",
        );
        let s = status(Some(&ok), Ok(wrong_role), now);
        assert!(!s.is_true(cond::INSTANCE_PROFILE_READY));
        assert!(!s.is_true(cond::SUBNETS_READY));
        assert!(s.subnets.is_empty(), "no stale subnets");
        assert!(s.is_true(cond::AMIS_READY));
        let ready = s.condition(READY).unwrap();
        assert_eq!(ready.reason, "SubnetsNotFound");
        assert!(ready.message.contains("role Wrong"), "{}", ready.message);
    }

    #[test]
    fn a_failed_call_leaves_the_parts_unknown_and_ready_false() {
        let now = Timestamp::now();
        let mut old = EC2NodeClassStatus::default();
        set_condition(
            &mut old.conditions,
            cond::SUBNETS_READY,
            ConditionStatus::True,
            "SubnetsReady",
            "",
            now,
        );
        let err = CloudError::Throttled("DescribeSubnets: Throttling".into());
        let s = status(Some(&old), Err(&err), now);
        assert_eq!(
            s.condition(cond::SUBNETS_READY).unwrap().status,
            ConditionStatus::Unknown,
            "not observed this time"
        );
        let ready = s.condition(READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "Throttled")
        );
    }

    #[test]
    fn a_role_that_cannot_be_added_names_the_instance_profile_part() {
        let now = Timestamp::now();
        let err = CloudError::NodeClassNotReady {
            name: "broken".into(),
            reason: "InstanceProfileReady: role NoPass cannot be added to instance profile p: AccessDenied: not authorized to perform: iam:PassRole".into(),
        };
        let s = status(None, Err(&err), now);
        let part = s.condition(cond::INSTANCE_PROFILE_READY).unwrap();
        assert_eq!(part.reason, "InstanceProfileNotReady");
        let ready = s.condition(READY).unwrap();
        assert_eq!(ready.reason, "InstanceProfileNotReady");
        assert!(ready.message.contains("iam:PassRole"), "{}", ready.message);
    }

    #[test]
    fn readiness_events_announce_changes_only() {
        let now = Timestamp::now();
        let broken = |message: &str| {
            let mut s = EC2NodeClassStatus::default();
            set_condition(
                &mut s.conditions,
                READY,
                ConditionStatus::False,
                "SubnetsNotFound",
                message,
                now,
            );
            s
        };
        let mut ready = EC2NodeClassStatus::default();
        set_condition(
            &mut ready.conditions,
            READY,
            ConditionStatus::True,
            "Ready",
            "",
            now,
        );
        assert_eq!(
            readiness_event(None, &broken("a")),
            Some(("SubnetsNotFound".into(), "a".into()))
        );
        assert_eq!(
            readiness_event(Some(&ready), &broken("a")).map(|e| e.0),
            Some("SubnetsNotFound".into())
        );
        assert_eq!(readiness_event(Some(&broken("a")), &broken("a")), None);
        assert!(readiness_event(Some(&broken("a")), &broken("b")).is_some());
        assert_eq!(readiness_event(Some(&broken("a")), &ready), None);
    }
}
