//! Pending pods to NodeClaims. Pods the kube-scheduler marked `Unschedulable` open a batch
//! window (closed after `batch_idle` without new pods, or `batch_max` after it opened); the
//! batch is simulated by `karpctl_scheduling::Scheduler` against the NodePools (each with the
//! instance types its EC2NodeClass can launch), the existing nodes and the claims already in
//! flight; the plan's new claims are created, pods placed on in-flight capacity are
//! nominated (so the next batch does not plan them twice), and pods that fit nothing get a
//! `FailedScheduling` Event saying why.
//!
//! Decide in pure code ([`plan`]), act in the reconciler ([`Provisioner`]). NodePool limits
//! hold across batches because the capacity of a pool's existing claims is taken off its
//! limits before the scheduler sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use karpctl_api::labels;
use karpctl_api::v1::{
    EC2NodeClass, NodeClaim, NodeClaimSpec, NodePool as ApiNodePool,
    NodeSelectorRequirementWithMinValues, Quantity, ResourceList, ResourceRequirements,
};
use karpctl_cloud::{CloudProvider, InstanceType, Resources};
use karpctl_scheduling::kubernetes::{pod_from_spec, requirement};
use karpctl_scheduling::{
    Effect, ExistingNode, NodeClaimPlan, NodePool, Pod, Requirements, Scheduler, Taint,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::{Events, MetricsSink, reasons};
use crate::state::{self, ClusterState, NodeRecord, PodRecord, SharedState, is_active};

/// What the reconcilers are tuned by (the operations layer fills it from the environment).
#[derive(Clone, Debug)]
pub struct ReconcilerSettings {
    pub cluster_name: String,
    /// `BATCH_IDLE_DURATION`: close a batch this long after the last new pending pod.
    pub batch_idle: Duration,
    /// `BATCH_MAX_DURATION`: close a batch at the latest this long after it opened.
    pub batch_max: Duration,
    /// `LAUNCH_TTL`: a claim not launched by then is deleted.
    pub launch_ttl: Duration,
    /// `REGISTRATION_TTL`: a launched claim whose Node has not appeared by then is deleted.
    pub registration_ttl: Duration,
    /// Instances younger than this are never garbage-collected (their claim may not be
    /// visible yet).
    pub instance_gc_grace: Duration,
    /// How long a nomination of a pod to in-flight capacity holds.
    pub nomination_ttl: Duration,
    /// `POD_NAME`, reported as the Events' reporting instance.
    pub pod_name: Option<String>,
    /// How often disruption looks for work (upstream: 10 s).
    pub disruption_poll: Duration,
    /// How long a consolidation decision waits before it is re-checked and acted on
    /// (upstream: 15 s).
    pub disruption_validation: Duration,
    /// How long disruption waits for replacements to initialize before giving up.
    pub replacement_timeout: Duration,
    /// Upstream's `SpotToSpotConsolidation` feature gate.
    pub spot_to_spot: bool,
    /// `CONSOLIDATION_MIN_SAVINGS` (karpctl's churn guard).
    pub consolidation_min_savings: f64,
}

impl From<&crate::settings::Settings> for ReconcilerSettings {
    fn from(s: &crate::settings::Settings) -> Self {
        Self {
            cluster_name: s.cluster_name.clone(),
            batch_idle: s.batch_idle_duration,
            batch_max: s.batch_max_duration,
            launch_ttl: s.launch_ttl,
            registration_ttl: s.registration_ttl,
            pod_name: s.pod_name.clone(),
            spot_to_spot: s.feature_gates.spot_to_spot_consolidation,
            consolidation_min_savings: s.consolidation_min_savings,
            ..Self::default()
        }
    }
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        use crate::settings::defaults;
        Self {
            cluster_name: String::new(),
            batch_idle: defaults::duration(defaults::BATCH_IDLE),
            batch_max: defaults::duration(defaults::BATCH_MAX),
            launch_ttl: defaults::duration(defaults::LAUNCH_TTL),
            registration_ttl: defaults::duration(defaults::REGISTRATION_TTL),
            instance_gc_grace: Duration::from_secs(30),
            nomination_ttl: Duration::from_secs(20),
            pod_name: None,
            disruption_poll: Duration::from_secs(10),
            disruption_validation: Duration::from_secs(15),
            replacement_timeout: Duration::from_secs(600),
            spot_to_spot: false,
            consolidation_min_savings: 0.0,
        }
    }
}

/// Wait for the first trigger, then keep the window open while triggers keep coming within
/// `idle` of each other, but no longer than `max` in all. Returns false once the sender is
/// gone.
pub async fn batch_window(
    triggers: &mut mpsc::Receiver<()>,
    idle: Duration,
    max: Duration,
) -> bool {
    if triggers.recv().await.is_none() {
        return false;
    }
    let opened = Instant::now();
    let mut idle_until = opened + idle;
    loop {
        let close = idle_until.min(opened + max);
        tokio::select! {
            more = triggers.recv() => match more {
                Some(()) => idle_until = Instant::now() + idle,
                None => return true,
            },
            _ = tokio::time::sleep_until(close) => return true,
        }
    }
}

/// A NodePool that can take part in a batch: its object, its node class and what it can
/// launch.
#[derive(Clone)]
pub struct ReadyPool {
    pub pool: ApiNodePool,
    pub node_class: EC2NodeClass,
    pub instance_types: Arc<Vec<InstanceType>>,
}

/// What one batch decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// New claims (named by `generateName`) with the keys of the pods planned onto each.
    pub node_claims: Vec<(NodeClaim, Vec<String>)>,
    /// Existing or in-flight capacity (claim name or node name) → pod keys placed there.
    pub nominations: Vec<(String, Vec<String>)>,
    /// Pod key → why it fits nothing.
    pub unschedulable: Vec<(String, String)>,
    /// Pod keys considered.
    pub pods: usize,
}

/// Whether a NodePool's EC2NodeClass exists and is Ready (`None`) or why not.
pub fn node_class_problem(pool: &ApiNodePool, state: &ClusterState) -> Option<String> {
    node_class_readiness(pool, state).map(|(_, message)| message)
}

/// Why a NodePool's EC2NodeClass is not usable, as upstream's `NodeClassReady` condition says
/// it: (reason, message) — `NodeClassNotFound`, `NodeClassTerminating`,
/// `NodeClassReadinessUnknown`, or the class's own `Ready` reason (e.g. `SubnetsNotFound`).
pub fn node_class_readiness(pool: &ApiNodePool, state: &ClusterState) -> Option<(String, String)> {
    use karpctl_api::v1::Conditions;
    let name = &pool.spec.template.spec.node_class_ref.name;
    match state.node_class(name) {
        None => Some((
            "NodeClassNotFound".to_owned(),
            format!("EC2NodeClass {name} not found"),
        )),
        Some(class) if class.metadata.deletion_timestamp.is_some() => Some((
            "NodeClassTerminating".to_owned(),
            format!("EC2NodeClass {name} is being deleted"),
        )),
        Some(class) => {
            let status = class.status.clone().unwrap_or_default();
            match status.condition(karpctl_api::v1::READY) {
                Some(c) if c.status == karpctl_api::v1::ConditionStatus::True => None,
                Some(c) if c.status == karpctl_api::v1::ConditionStatus::False => Some((
                    c.reason.clone(),
                    format!(
                        "EC2NodeClass {name} is not ready: {}",
                        if c.message.is_empty() {
                            &c.reason
                        } else {
                            &c.message
                        }
                    ),
                )),
                _ => Some((
                    "NodeClassReadinessUnknown".to_owned(),
                    format!("EC2NodeClass {name} is not ready: readiness unknown"),
                )),
            }
        }
    }
}

/// The capacity a pool's claims hold (or will hold): `status.capacity` once launched, else
/// the largest capacity among the instance types the claim allows, plus the claim count.
pub fn pool_usage(state: &ClusterState, pool: &str, types: &[InstanceType]) -> (Resources, i64) {
    let mut used = Resources::default();
    let mut count = 0;
    for claim in state.node_claims() {
        if claim.labels().get(labels::NODE_POOL).map(String::as_str) != Some(pool) {
            continue;
        }
        count += 1;
        used.add(&claim_capacity(claim, types));
    }
    (used, count)
}

fn claim_capacity(claim: &NodeClaim, types: &[InstanceType]) -> Resources {
    if let Some(capacity) = claim
        .status
        .as_ref()
        .map(|s| &s.capacity)
        .filter(|c| !c.is_empty())
        && let Ok(r) = resources_from_list(capacity)
    {
        return r;
    }
    let allowed = allowed_instance_types(claim);
    types
        .iter()
        .filter(|t| allowed.as_ref().is_none_or(|a| a.contains(&t.name)))
        .fold(Resources::default(), |acc, t| acc.max(&t.capacity))
}

fn allowed_instance_types(claim: &NodeClaim) -> Option<BTreeSet<String>> {
    claim
        .spec
        .requirements
        .iter()
        .find(|r| r.key == labels::INSTANCE_TYPE && r.operator == "In")
        .map(|r| r.values.iter().cloned().collect())
}

pub fn resources_from_list(list: &ResourceList) -> Result<Resources, String> {
    Resources::from_quantities(list.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| e.to_string())
}

/// Exact quantities: cpu in millicores, memory and storage in bytes (Mi when whole).
pub fn resources_to_list(r: &Resources) -> ResourceList {
    let mut out = ResourceList::new();
    let mut put = |name: &str, text: String| {
        if let Ok(q) = text.parse::<Quantity>() {
            out.insert(name.to_owned(), q);
        }
    };
    let bytes = |b: i64| {
        if b % (1 << 20) == 0 {
            format!("{}Mi", b >> 20)
        } else {
            b.to_string()
        }
    };
    if r.cpu != 0 {
        put(
            "cpu",
            if r.cpu % 1000 == 0 {
                (r.cpu / 1000).to_string()
            } else {
                format!("{}m", r.cpu)
            },
        );
    }
    if r.memory != 0 {
        put("memory", bytes(r.memory));
    }
    if r.ephemeral_storage != 0 {
        put("ephemeral-storage", bytes(r.ephemeral_storage));
    }
    if r.pods != 0 {
        put("pods", r.pods.to_string());
    }
    for (k, v) in &r.extended {
        if *v != 0 {
            put(k, v.to_string());
        }
    }
    out
}

fn api_taints(list: &[karpctl_api::v1::Taint]) -> Result<Vec<Taint>, String> {
    list.iter()
        .map(|t| {
            let effect: Effect = t.effect.as_str().parse()?;
            Ok(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect,
            })
        })
        .collect()
}

/// A NodePool as the scheduler sees it, with `usage` (its existing claims) taken off its
/// limits so they hold across batches.
pub fn scheduling_pool(
    pool: &ApiNodePool,
    types: Arc<Vec<InstanceType>>,
    usage: &(Resources, i64),
) -> Result<NodePool, String> {
    let name = pool.name_any();
    let spec = &pool.spec.template.spec;
    let mut requirements = Requirements::new();
    for (i, r) in spec.requirements.iter().enumerate() {
        let field = format!("spec.template.spec.requirements[{i}]");
        let mut req =
            requirement(&r.key, &r.operator, &r.values, &field).map_err(|e| e.to_string())?;
        if let Some(min) = r.min_values {
            req = req
                .with_min_values(Some(min.max(0) as usize))
                .map_err(|e| e.to_string())?;
        }
        requirements.add(req);
    }
    let mut limits = BTreeMap::new();
    for (resource, quantity) in &pool.spec.limits {
        let limit = if resource == "nodes" {
            quantity
                .as_str()
                .parse::<i64>()
                .map_err(|e| format!("spec.limits.nodes: {e}"))?
        } else {
            Resources::from_quantities([(resource.as_str(), quantity.as_str())])
                .map_err(|e| format!("spec.limits.{resource}: {e}"))?
                .get(resource)
        };
        let used = if resource == "nodes" {
            usage.1
        } else {
            usage.0.get(resource)
        };
        limits.insert(resource.clone(), (limit - used).max(0));
    }
    Ok(NodePool {
        name,
        weight: pool.spec.weight.unwrap_or(0),
        requirements,
        labels: pool.spec.template.metadata.labels.clone(),
        taints: api_taints(&spec.taints)?,
        startup_taints: api_taints(&spec.startup_taints)?,
        limits,
        instance_types: types,
    })
}

/// A claim not yet initialized still carries startup/unregistered taints that will go away;
/// the scheduler must see its node as it will be.
fn in_flight_node(
    node: &NodeRecord,
    claim: Option<&NodeClaim>,
    pods: Vec<Arc<Pod>>,
) -> Option<ExistingNode> {
    let mut existing = node.existing_node(pods).ok()?;
    let initialized = node.label(labels::NODE_INITIALIZED) == Some("true");
    if let Some(claim) = claim
        && !initialized
    {
        existing.in_flight = true;
        existing.taints.retain(|t| {
            t.key != labels::UNREGISTERED_TAINT
                && !claim.spec.startup_taints.iter().any(|s| s.key == t.key)
        });
    }
    Some(existing)
}

/// A claim with no Node yet, as the scheduler's in-flight node.
fn in_flight_claim(claim: &NodeClaim, types: &[InstanceType], pods: Vec<Arc<Pod>>) -> ExistingNode {
    let name = claim.name_any();
    let mut node_labels = claim.labels().clone();
    for r in &claim.spec.requirements {
        if r.operator == "In" && r.values.len() == 1 {
            node_labels
                .entry(r.key.clone())
                .or_insert_with(|| r.values[0].clone());
        }
    }
    node_labels.insert(labels::HOSTNAME.to_owned(), name.clone());
    let allocatable = claim
        .status
        .as_ref()
        .map(|s| &s.allocatable)
        .filter(|a| !a.is_empty())
        .and_then(|a| resources_from_list(a).ok())
        .unwrap_or_else(|| {
            // Not launched yet: assume the smallest option, so nothing is promised that the
            // launch may not deliver.
            let allowed = allowed_instance_types(claim);
            types
                .iter()
                .filter(|t| allowed.as_ref().is_none_or(|a| a.contains(&t.name)))
                .map(|t| t.allocatable.clone())
                .min_by_key(|r| (r.cpu, r.memory))
                .unwrap_or_default()
        });
    ExistingNode {
        name,
        labels: node_labels,
        taints: api_taints(&claim.spec.taints).unwrap_or_default(),
        allocatable,
        pods,
        in_flight: true,
    }
}

/// The NodePools a pod pins itself to with `karpenter.sh/nodepool`: its nodeSelector, or
/// the values of a required node affinity `In` term on that key.
pub fn pinned_pools(pod: &PodRecord) -> BTreeSet<String> {
    let Ok(pod) = &pod.scheduling else {
        return BTreeSet::new();
    };
    if let Some(pool) = pod.node_selector.get(labels::NODE_POOL) {
        return BTreeSet::from([pool.clone()]);
    }
    pod.required_terms
        .iter()
        .filter_map(|t| t.get(labels::NODE_POOL))
        .filter(|r| r.operator() == karpctl_scheduling::Operator::In)
        .flat_map(|r| r.values().map(str::to_owned))
        .collect()
}

/// Why a pod that fits nothing could not get capacity, when it is pinned to NodePools that
/// exist but were left out of the batch because their EC2NodeClass is not usable: the
/// scheduler only saw the other pools, so its own reason would not name the problem.
fn unready_pool_reason(
    pod: &PodRecord,
    state: &ClusterState,
    pools: &[ReadyPool],
) -> Option<String> {
    let pinned = pinned_pools(pod);
    if pinned.is_empty() || pools.iter().any(|p| pinned.contains(&p.pool.name_any())) {
        return None;
    }
    let reasons: Vec<String> = pinned
        .iter()
        .filter_map(|name| {
            let pool = state.node_pool(name)?;
            let (_, why) = node_class_readiness(pool, state)?;
            Some(format!("nodepool {name} is not ready: {why}"))
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// How long the scheduling core may improve a batch's cost beyond its first-fit plan. A
/// small batch's cost planning finishes far sooner; the core's own default (25 ms + 100 µs a
/// pod) returns the first-fit plan for most batches of 100 to 10,000 pods, 60-80% dearer on
/// the real catalogue (docs/benchmarks.md), so the provisioner gives it more.
pub const SOLVE_BUDGET: Duration = Duration::from_secs(2);

/// What the scheduling core simulates against, from the cluster state: the NodePools (each
/// with its claims' capacity taken off its limits), every node not being deleted with its
/// bound and nominated pods (in-flight ones as they will be once initialized), the claims
/// still coming up, and the DaemonSets. Provisioning and disruption both plan on it.
pub fn scheduling_inputs(
    state: &ClusterState,
    pools: &[ReadyPool],
    now: Instant,
) -> (Vec<NodePool>, Vec<ExistingNode>, Vec<Pod>) {
    let all_types: Vec<InstanceType> = pools
        .iter()
        .flat_map(|p| p.instance_types.iter().cloned())
        .collect();
    // Bound and nominated pods' views are shared with the state, not copied per batch.
    let nominated_pods = |target: &str| -> Vec<Arc<Pod>> {
        state
            .nominated_to(target, now)
            .iter()
            .filter_map(|k| state.pod(k))
            .filter(|p| state::is_provisionable(p))
            .filter_map(|p| p.scheduling.as_ref().ok().cloned())
            .collect()
    };
    let mut existing = Vec::new();
    for record in state.nodes() {
        if record.deleting() {
            continue;
        }
        let claim = record
            .provider_id()
            .and_then(|id| state.claim_for_provider_id(id));
        if claim.is_some_and(|c| c.metadata.deletion_timestamp.is_some()) {
            continue;
        }
        let mut bound: Vec<Arc<Pod>> = state
            .pods_on_node(&record.name)
            .into_iter()
            .filter(|p| is_active(p))
            .filter_map(|p| p.scheduling.as_ref().ok().cloned())
            .collect();
        if let Some(c) = claim {
            bound.extend(nominated_pods(&c.name_any()));
        }
        if let Some(n) = in_flight_node(record, claim, bound) {
            existing.push(n);
        }
    }
    for claim in state.in_flight_claims() {
        existing.push(in_flight_claim(
            claim,
            &all_types,
            nominated_pods(&claim.name_any()),
        ));
    }
    let daemon_sets: Vec<Pod> = state
        .daemon_sets()
        .filter_map(|ds| {
            let template = ds.spec.template.clone();
            let spec = template.spec?;
            pod_from_spec(
                ds.metadata.namespace.as_deref().unwrap_or("default"),
                &ds.name_any(),
                &template.metadata.and_then(|m| m.labels).unwrap_or_default(),
                &spec,
                "spec.template.spec",
            )
            .ok()
        })
        .collect();
    let mut scheduling_pools = Vec::new();
    for p in pools {
        let name = p.pool.name_any();
        let usage = pool_usage(state, &name, &p.instance_types);
        match scheduling_pool(&p.pool, p.instance_types.clone(), &usage) {
            Ok(sp) => scheduling_pools.push(sp),
            Err(e) => tracing::error!(NodePool = %name, error = %e, "skipping nodepool"),
        }
    }
    (scheduling_pools, existing, daemon_sets)
}

/// Decide one batch: which claims to create, which pods to nominate to capacity already
/// there or coming, which pods fit nothing and why.
pub fn plan(state: &ClusterState, pools: &[ReadyPool], now: Instant) -> Plan {
    let mut out = Plan::default();
    let pending: Vec<&PodRecord> = state.provisionable_pods(now);
    let mut pods = Vec::new();
    let mut keys = Vec::new();
    for p in pending {
        match &p.scheduling {
            Ok(sp) => {
                pods.push(Pod::clone(sp));
                keys.push(p.key());
            }
            Err(e) => out.unschedulable.push((p.key(), e.to_string())),
        }
    }
    out.pods = keys.len() + out.unschedulable.len();
    if pods.is_empty() {
        return out;
    }
    let (scheduling_pools, existing, daemon_sets) = scheduling_inputs(state, pools, now);
    let results =
        Scheduler::new(scheduling_pools, existing, daemon_sets).solve_within(&pods, SOLVE_BUDGET);
    for placement in &results.existing {
        out.nominations.push((
            placement.node.clone(),
            placement.pods.iter().map(|i| keys[*i].clone()).collect(),
        ));
    }
    for u in &results.unschedulable {
        let reason = state
            .pod(&keys[u.pod])
            .and_then(|p| unready_pool_reason(p, state, pools))
            .unwrap_or_else(|| u.reason.clone());
        out.unschedulable.push((keys[u.pod].clone(), reason));
    }
    for c in &results.node_claims {
        let Some(ready) = pools.iter().find(|p| p.pool.name_any() == c.node_pool) else {
            continue;
        };
        out.node_claims.push((
            node_claim(c, &ready.pool, &ready.node_class),
            c.pods.iter().map(|i| keys[*i].clone()).collect(),
        ));
    }
    out
}

/// The NodeClaim for one planned claim: the NodePool's template (labels, annotations,
/// taints, node class, expiry) narrowed to the plan's instance types (cheapest first) and the
/// values it pinned, with the hashes drift detection compares later.
pub fn node_claim(
    plan: &NodeClaimPlan,
    pool: &ApiNodePool,
    node_class: &EC2NodeClass,
) -> NodeClaim {
    let pool_name = pool.name_any();
    let template = &pool.spec.template;
    let mut claim_labels = template.metadata.labels.clone();
    claim_labels.insert(labels::NODE_POOL.to_owned(), pool_name.clone());
    let mut annotations = template.metadata.annotations.clone();
    annotations.insert(
        labels::NODE_POOL_HASH.to_owned(),
        crate::nodepool::hash(pool),
    );
    annotations.insert(
        labels::NODE_POOL_HASH_VERSION.to_owned(),
        karpctl_api::v1::NODE_POOL_HASH_VERSION.to_owned(),
    );
    annotations.insert(
        labels::EC2_NODE_CLASS_HASH.to_owned(),
        crate::nodeclass::hash(node_class),
    );
    annotations.insert(
        labels::EC2_NODE_CLASS_HASH_VERSION.to_owned(),
        karpctl_api::v1::EC2_NODE_CLASS_HASH_VERSION.to_owned(),
    );
    // The template's requirements as written, with what the plan narrowed replacing them.
    let narrowed: BTreeMap<String, Vec<String>> = plan
        .requirements
        .iter()
        .filter(|r| {
            r.operator() == karpctl_scheduling::Operator::In
                && r.key != labels::INSTANCE_TYPE
                && r.key != labels::HOSTNAME
                && r.key != labels::NODE_POOL
        })
        .map(|r| (r.key.clone(), r.values().map(str::to_owned).collect()))
        .collect();
    let mut requirements: Vec<NodeSelectorRequirementWithMinValues> = template
        .spec
        .requirements
        .iter()
        .filter(|r| {
            r.key != labels::INSTANCE_TYPE
                && r.key != labels::NODE_POOL
                && !narrowed.contains_key(&r.key)
        })
        .cloned()
        .collect();
    let min_values = |key: &str| {
        template
            .spec
            .requirements
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| r.min_values)
    };
    let req = |key: &str, values: Vec<String>| NodeSelectorRequirementWithMinValues {
        key: key.to_owned(),
        operator: "In".to_owned(),
        values,
        min_values: min_values(key),
    };
    requirements.push(req(labels::NODE_POOL, vec![pool_name.clone()]));
    requirements.push(req(
        labels::INSTANCE_TYPE,
        plan.instance_type_options
            .iter()
            .map(|o| o.name.clone())
            .collect(),
    ));
    for (key, values) in narrowed {
        requirements.push(req(&key, values));
    }
    let requests = plan.requests.plus(&plan.daemon_overhead);
    NodeClaim {
        metadata: ObjectMeta {
            generate_name: Some(format!("{pool_name}-")),
            labels: Some(claim_labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "karpenter.sh/v1".to_owned(),
                kind: "NodePool".to_owned(),
                name: pool_name,
                uid: pool.metadata.uid.clone().unwrap_or_default(),
                block_owner_deletion: Some(true),
                controller: None,
            }]),
            finalizers: Some(vec![labels::TERMINATION_FINALIZER.to_owned()]),
            ..Default::default()
        },
        spec: NodeClaimSpec {
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            requirements,
            resources: ResourceRequirements {
                requests: resources_to_list(&requests),
            },
            node_class_ref: template.spec.node_class_ref.clone(),
            termination_grace_period: template.spec.termination_grace_period.clone(),
            expire_after: Some(template.spec.expire_after_or_default()),
        },
        status: None,
    }
}

/// Pools whose node class is ready, with their instance types from the cloud.
pub async fn ready_pools<C: CloudProvider>(
    cloud: &C,
    state: &SharedState,
    metrics: &dyn MetricsSink,
    controller: &str,
) -> Vec<ReadyPool> {
    let candidates: Vec<(ApiNodePool, EC2NodeClass)> = {
        let s = state::read(state);
        s.node_pools()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && p.spec.replicas.is_none())
            .filter(|p| node_class_problem(p, &s).is_none())
            .filter_map(|p| {
                let class = s.node_class(&p.spec.template.spec.node_class_ref.name)?;
                Some((p.clone(), class.clone()))
            })
            .collect()
    };
    let mut out = Vec::new();
    for (pool, class) in candidates {
        let started = std::time::Instant::now();
        let result = cloud.instance_types(&pool, &class).await;
        metrics.cloud_call(
            controller,
            "GetInstanceTypes",
            started.elapsed().as_secs_f64(),
            result.as_ref().err().map(|e| e.reason()),
        );
        match result {
            Ok(types) => out.push(ReadyPool {
                pool,
                node_class: class,
                instance_types: Arc::new(types),
            }),
            Err(e) => tracing::error!(
                NodePool = %pool.name_any(), error = %e,
                "skipping nodepool, listing its instance types failed"
            ),
        }
    }
    out
}

/// The provisioning reconciler: runs batches and acts on their plans.
pub struct Provisioner<C> {
    pub client: Client,
    pub cloud: Arc<C>,
    pub state: SharedState,
    pub events: Events,
    pub metrics: Arc<dyn MetricsSink>,
    pub settings: ReconcilerSettings,
}

impl<C: CloudProvider> Provisioner<C> {
    /// Run one batch now.
    pub async fn provision(&self) -> anyhow::Result<()> {
        // Until every watch has listed, claims already in flight (e.g. made before a restart)
        // may be missing from the state, and planning would create them a second time.
        if !state::read(&self.state).synced() {
            tracing::debug!(controller = "provisioner", "waiting on cluster sync");
            return Ok(());
        }
        let pools = ready_pools(&*self.cloud, &self.state, &*self.metrics, "provisioner").await;
        let started = std::time::Instant::now();
        let decided = {
            let s = state::read(&self.state);
            plan(&s, &pools, Instant::now())
        };
        if decided.pods == 0 {
            return Ok(());
        }
        self.metrics
            .scheduled(started.elapsed().as_secs_f64(), decided.pods);
        tracing::info!(
            controller = "provisioner",
            pods = decided.pods,
            duration = ?started.elapsed(),
            "found provisionable pod(s)"
        );
        if !decided.node_claims.is_empty() {
            let planned: usize = decided.node_claims.iter().map(|(_, p)| p.len()).sum();
            tracing::info!(
                controller = "provisioner",
                nodeclaims = decided.node_claims.len(),
                pods = planned,
                "computed new nodeclaim(s) to fit pod(s)"
            );
        }
        let until = Instant::now() + self.settings.nomination_ttl;
        // Events wait until every claim is created: each is an API call, and a claim's
        // launch (and so the pending pod -> CreateFleet latency) starts only once it exists.
        let mut nominated = Vec::new();
        for (target, pod_keys) in &decided.nominations {
            nominated.extend(self.nominate(target, pod_keys, until));
        }
        let api: Api<NodeClaim> = Api::all(self.client.clone());
        for (claim, pod_keys) in decided.node_claims {
            let pool = claim
                .labels()
                .get(labels::NODE_POOL)
                .cloned()
                .unwrap_or_default();
            match api.create(&PostParams::default(), &claim).await {
                Ok(created) => {
                    let name = created.name_any();
                    tracing::info!(
                        controller = "provisioner",
                        NodeClaim = %serde_json::json!({"name": name}),
                        NodePool = %serde_json::json!({"name": pool}),
                        requests = %serde_json::json!(claim.spec.resources.requests),
                        "instance-types" = %summarize_types(&claim),
                        "created nodeclaim"
                    );
                    self.metrics.node_claim_created(&pool, "provisioning");
                    state::write(&self.state).apply(created);
                    nominated.extend(self.nominate(&name, &pod_keys, until));
                }
                Err(e) => {
                    tracing::error!(controller = "provisioner", NodePool = %pool, error = %e, "creating nodeclaim failed");
                }
            }
        }
        for (pod, target) in nominated {
            self.events
                .normal(
                    &pod,
                    reasons::NOMINATED,
                    format!("Pod should schedule on: nodeclaim/{target}"),
                )
                .await;
        }
        for (pod_key, reason) in decided.unschedulable {
            let pod = state::read(&self.state)
                .pod(&pod_key)
                .map(PodRecord::event_target);
            if let Some(pod) = pod {
                tracing::info!(controller = "provisioner", Pod = %pod_key, reason, "could not schedule pod");
                self.events
                    .warning(
                        &pod,
                        reasons::FAILED_SCHEDULING,
                        format!("Failed to schedule pod, {reason}"),
                    )
                    .await;
            }
        }
        Ok(())
    }

    /// Record in the state that `pod_keys` will land on `target`; returns the pods to tell.
    fn nominate(
        &self,
        target: &str,
        pod_keys: &[String],
        until: Instant,
    ) -> Vec<(k8s_openapi::api::core::v1::Pod, String)> {
        let mut s = state::write(&self.state);
        pod_keys
            .iter()
            .filter_map(|key| {
                s.nominate(key, target, until);
                s.pod(key).map(|p| (p.event_target(), target.to_owned()))
            })
            .collect()
    }

    /// Trigger batches when new provisionable pods appear (and every `retry` while some
    /// remain), and run a batch whenever the window closes.
    pub async fn run(self: Arc<Self>, mut changes: tokio::sync::watch::Receiver<u64>) {
        let (tx, mut rx) = mpsc::channel::<()>(16);
        let me = self.clone();
        let watcher = async move {
            let mut trigger = BatchTrigger::default();
            let mut retry = tokio::time::interval(Duration::from_secs(10));
            loop {
                let periodic = tokio::select! {
                    r = changes.changed() => { if r.is_err() { return; } false }
                    _ = retry.tick() => true,
                };
                let (synced, pending): (bool, BTreeSet<String>) = {
                    let s = state::read(&me.state);
                    let pending = s
                        .provisionable_pods(Instant::now())
                        .iter()
                        .map(|p| p.key())
                        .collect();
                    (s.synced(), pending)
                };
                if trigger.observe(synced, pending, periodic) {
                    let _ = tx.try_send(());
                }
            }
        };
        let batches = async move {
            while batch_window(&mut rx, self.settings.batch_idle, self.settings.batch_max).await {
                if let Err(e) = self.provision().await {
                    tracing::error!(controller = "provisioner", error = %format!("{e:#}"), "provisioning failed");
                }
            }
        };
        futures::join!(watcher, batches);
    }
}

/// When pending pods open a batch: some are new since the last look, or the periodic retry
/// finds some still pending. Nothing is looked at before the cluster state has synced (a
/// batch then is refused, see [`Provisioner::provision`]), and pods seen before the sync are
/// still new after it — so a new leader plans the pods it finds pending as soon as its
/// watches have listed, instead of dropping its first batch and waiting for the retry timer
/// (5.4 s to the first NodeClaim after a failover, where ~1 s is the batch window).
#[derive(Debug, Default)]
pub struct BatchTrigger {
    seen: BTreeSet<String>,
}

impl BatchTrigger {
    pub fn observe(&mut self, synced: bool, pending: BTreeSet<String>, periodic: bool) -> bool {
        if !synced {
            return false;
        }
        let open =
            pending.iter().any(|k| !self.seen.contains(k)) || (periodic && !pending.is_empty());
        self.seen = pending;
        open
    }
}

fn summarize_types(claim: &NodeClaim) -> String {
    let types = allowed_instance_types(claim)
        .map(|t| t.into_iter().collect::<Vec<_>>())
        .unwrap_or_default();
    let shown: Vec<&str> = types.iter().take(5).map(String::as_str).collect();
    if types.len() > 5 {
        format!("{} and {} other(s)", shown.join(", "), types.len() - 5)
    } else {
        shown.join(", ")
    }
}
