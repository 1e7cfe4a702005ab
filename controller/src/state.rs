//! The cluster as the reconcilers see it: one in-memory copy of the objects they decide on
//! (pods, nodes, NodeClaims, NodePools, EC2NodeClasses, DaemonSets, PDBs), kept current by
//! kube watches rather than by polling the API server, plus the indexes the decisions need
//! (pods by node, nodes and claims by provider ID) and the in-memory pod nominations.
//!
//! [`ClusterState`] is plain data — `apply`/`delete` in, queries out — so it is unit-tested
//! without a cluster; [`watch`] is the thin edge that feeds it from watch streams.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, Taint};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use karpctl_api::v1::{EC2NodeClass, NodeClaim, NodePool};
use karpctl_scheduling::Pod as SchedulingPod;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch as tokio_watch;
use tokio::time::Instant;

use crate::intern::Interner;

/// The kinds the state tracks; each reports "synced" once its first full list arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Node,
    NodeClaim,
    NodePool,
    EC2NodeClass,
    DaemonSet,
    PodDisruptionBudget,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Pod,
        Kind::Node,
        Kind::NodeClaim,
        Kind::NodePool,
        Kind::EC2NodeClass,
        Kind::DaemonSet,
        Kind::PodDisruptionBudget,
    ];
}

/// Where pods placed on in-flight capacity are expected to land, so the next batch does not
/// plan them again. Expires so a claim that never comes up does not hold pods forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nomination {
    /// The NodeClaim (or Node) name.
    pub target: String,
    pub until: Instant,
}

/// `namespace/name` for namespaced objects, `name` otherwise.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// An object kind the state stores.
pub trait Tracked: Resource + Clone + Sized {
    const KIND: Kind;
    /// What the state keeps of one object: the object [`trim`]med, or for pods a
    /// [`PodRecord`].
    type Stored: 'static;
    fn store(self) -> Self::Stored;
    fn map(state: &mut ClusterState) -> &mut BTreeMap<Arc<str>, Self::Stored>;
    /// Swap values the state already holds a copy of for that copy (see [`Interner`]).
    fn intern(_stored: &mut Self::Stored, _interner: &mut Interner) {}
}

macro_rules! tracked {
    ($ty:ty, $kind:ident, $field:ident) => {
        impl Tracked for $ty {
            const KIND: Kind = Kind::$kind;
            type Stored = $ty;
            fn store(mut self) -> Self {
                trim(&mut self);
                self
            }
            fn map(state: &mut ClusterState) -> &mut BTreeMap<Arc<str>, Self> {
                &mut state.$field
            }
        }
    };
}

impl Tracked for Pod {
    const KIND: Kind = Kind::Pod;
    type Stored = PodRecord;
    fn store(self) -> PodRecord {
        PodRecord::new(self)
    }
    fn map(state: &mut ClusterState) -> &mut BTreeMap<Arc<str>, PodRecord> {
        &mut state.pods
    }
    fn intern(pod: &mut PodRecord, interner: &mut Interner) {
        pod.intern(interner);
    }
}

/// What the state keeps of a pod: the few facts the reconcilers read, and the scheduler's
/// own view of the pod computed once when the pod changes rather than on every batch.
///
/// Pods are most of a cluster's objects, and a `k8s_openapi` `Pod` is wide: `PodSpec`,
/// `Container` and `PodStatus` hold dozens of optional fields inline, several KB per pod
/// even after trimming. A record is about a hundred bytes plus its name, and the values pods
/// repeat (namespace, node, phase, owner, a bound pod's scheduling view) are shared through
/// the state's [`Interner`]; that is what keeps the state of a cluster with 10,000 pods in a
/// few MB (docs/benchmarks.md).
#[derive(Clone, Debug, PartialEq)]
pub struct PodRecord {
    pub namespace: Arc<str>,
    pub name: Box<str>,
    /// For events about the pod.
    pub uid: Option<Box<str>>,
    pub node_name: Option<Arc<str>>,
    pub phase: Option<Arc<str>>,
    /// It has a deletion timestamp.
    pub deleting: bool,
    /// The first owner reference as upstream's pod metrics label it (a self link such as
    /// `/apis/apps/v1/namespaces/default/replicasets/web-abc`).
    pub owner: Option<Arc<str>>,
    /// A DaemonSet controls it: it follows nodes, it does not ask for them.
    pub daemon_set: bool,
    /// `PodScheduled=False` with reason `Unschedulable`: the scheduler found no node.
    pub unschedulable: bool,
    /// A static (mirror) pod: its kubelet runs it, it never moves.
    pub static_pod: bool,
    /// The value of its `karpenter.sh/do-not-disrupt` annotation, if any.
    pub do_not_disrupt: Option<Box<str>>,
    /// `status.startTime`, for `karpenter.sh/do-not-disrupt` given as a duration.
    pub started: Option<k8s_openapi::jiff::Timestamp>,
    /// A bound pod's full scheduling view without its name and owner, for disruption to
    /// simulate moving it (`scheduling` keeps only what binds others). Replicas of a workload
    /// share one through the [`Interner`].
    pub movable: Option<Arc<SchedulingPod>>,
    /// The pod as the scheduling core sees it (requests, selectors, affinity, tolerations,
    /// spread, host ports, labels), or why its spec cannot be read. Bound pods keep only what
    /// binds others ([`keep_what_binds_others`]), so the pods of one workload share one view.
    pub scheduling: Result<Arc<SchedulingPod>, Arc<str>>,
}

/// A bound pod's scheduling view cut to what constrains *other* pods: its requests (node
/// usage), labels (other pods' spread and affinity count it), required anti-affinity
/// (symmetric: it keeps matching pods off its domain) and host ports. Its own node selector,
/// node affinity, tolerations, topology spread and pod affinity only decided where it went,
/// and it is already there; a bound pod is most of a cluster, so this is most of the state.
/// Its name and owner go too (the scheduler places pods onto nodes, it never reports which
/// bound pod is where), so every replica of a workload has the same view and shares it.
/// (Moving bound pods, as consolidation does, needs their full constraints: read them from
/// the API server when it comes to that.)
fn keep_what_binds_others(pod: &mut SchedulingPod) {
    pod.name = String::new();
    pod.owner = None;
    pod.node_selector = BTreeMap::new();
    pod.required_terms = Vec::new();
    pod.preferred_terms = Vec::new();
    pod.tolerations = Vec::new();
    pod.topology_spread = Vec::new();
    pod.affinity = Vec::new();
    pod.preferred_affinity = Vec::new();
    pod.preferred_anti_affinity = Vec::new();
}

/// Upstream's `owner` label value for an owner reference.
fn owner_link(namespace: &str, o: &OwnerReference) -> String {
    format!(
        "/apis/{}/namespaces/{namespace}/{}s/{}",
        o.api_version,
        o.kind.to_lowercase(),
        o.name
    )
}

impl PodRecord {
    pub fn new(pod: Pod) -> Self {
        let Pod {
            metadata,
            spec,
            status,
        } = pod;
        let namespace = metadata.namespace.unwrap_or_else(|| "default".to_owned());
        let name = metadata.name.unwrap_or_default();
        let spec = spec.unwrap_or_default();
        let labels = metadata.labels.unwrap_or_default();
        let mut scheduling = karpctl_scheduling::kubernetes::pod_from_spec(
            &namespace, &name, &labels, &spec, "spec",
        )
        .map_err(|e| Arc::from(e.to_string()));
        let mut movable = None;
        if spec.node_name.is_some()
            && let Ok(placed) = &mut scheduling
        {
            let mut full = placed.clone();
            full.name = String::new();
            full.owner = None;
            movable = Some(Arc::new(full));
            keep_what_binds_others(placed);
        }
        let annotations = metadata.annotations.unwrap_or_default();
        let owners = metadata.owner_references.unwrap_or_default();
        let daemon_set = owners
            .iter()
            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
        let status = status.unwrap_or_default();
        let unschedulable = status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        PodRecord {
            owner: owners.first().map(|o| Arc::from(owner_link(&namespace, o))),
            namespace: Arc::from(namespace),
            name: name.into_boxed_str(),
            uid: metadata.uid.map(String::into_boxed_str),
            node_name: spec.node_name.map(Arc::from),
            phase: status.phase.map(Arc::from),
            deleting: metadata.deletion_timestamp.is_some(),
            daemon_set,
            unschedulable,
            static_pod: owners.iter().any(|o| o.kind == "Node")
                || annotations.contains_key("kubernetes.io/config.mirror"),
            do_not_disrupt: annotations
                .get(karpctl_api::labels::DO_NOT_DISRUPT)
                .map(|v| v.clone().into_boxed_str()),
            started: status.start_time.map(|t| t.0),
            scheduling: scheduling.map(Arc::new),
            movable,
        }
    }

    /// Whether it would have to move if its node went: bound, still running, not a
    /// DaemonSet's, not static.
    pub fn reschedulable(&self) -> bool {
        self.node_name.is_some() && is_active(self) && !self.daemon_set && !self.static_pod
    }

    /// Share the values other pods repeat. A pending pod's scheduling view keeps its name
    /// and all its constraints, so it is its own.
    fn intern(&mut self, interner: &mut Interner) {
        self.namespace = interner.str(&self.namespace);
        for shared in [&mut self.node_name, &mut self.phase, &mut self.owner]
            .into_iter()
            .flatten()
        {
            *shared = interner.str(shared);
        }
        if self.node_name.is_some()
            && let Ok(view) = &mut self.scheduling
        {
            *view = interner.view(view);
        }
        if let Some(view) = &mut self.movable {
            *view = interner.view(view);
        }
    }

    /// `namespace/name`, the state's key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A pod carrying only the identity events need (`involvedObject`).
    pub fn event_target(&self) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(self.namespace.to_string()),
                name: Some(self.name.to_string()),
                uid: self.uid.as_deref().map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}
impl Tracked for Node {
    const KIND: Kind = Kind::Node;
    type Stored = NodeRecord;
    fn store(self) -> NodeRecord {
        NodeRecord::new(self)
    }
    fn map(state: &mut ClusterState) -> &mut BTreeMap<Arc<str>, NodeRecord> {
        &mut state.nodes
    }
    fn intern(node: &mut NodeRecord, interner: &mut Interner) {
        node.intern(interner);
    }
}

/// String pairs (labels, annotations, resource quantities) in key order, each string shared
/// through the state's [`Interner`].
pub type Pairs = Box<[(Arc<str>, Arc<str>)]>;

/// `entries` must come in key order (a `BTreeMap`'s), which [`get`] relies on.
fn pairs(entries: impl IntoIterator<Item = (String, String)>) -> Pairs {
    entries
        .into_iter()
        .map(|(k, v)| (Arc::from(k), Arc::from(v)))
        .collect()
}

/// The pairs as a map with values made by `value`, or `None` when there are none (as the API
/// leaves an empty map out).
fn to_map<V>(pairs: &Pairs, value: impl Fn(&str) -> V) -> Option<BTreeMap<String, V>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), value(v)))
            .collect()
    })
}

fn get<'a>(pairs: &'a Pairs, key: &str) -> Option<&'a str> {
    pairs
        .binary_search_by(|(k, _)| k.as_ref().cmp(key))
        .ok()
        .map(|i| pairs[i].1.as_ref())
}

/// What the state keeps of a Node: what the reconcilers read (identity, labels, annotations,
/// finalizers, owner, provider ID, taints, capacity, allocatable, the Ready condition),
/// with every label, annotation and quantity string shared through the [`Interner`]. Nodes
/// of one shape repeat nearly all of them (zone, instance type, arch, capacities), and as
/// `k8s_openapi` Nodes with a map of owned strings each they were the state's largest part
/// after pods (about 4 KB a node; docs/benchmarks.md). [`NodeRecord::to_node`] gives the
/// Node back, trimmed, for the code that works on Nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    pub name: Arc<str>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Pairs,
    annotations: Pairs,
    finalizers: Box<[Arc<str>]>,
    owner_references: Option<Box<[OwnerReference]>>,
    provider_id: Option<Box<str>>,
    taints: Option<Box<[Taint]>>,
    unschedulable: Option<bool>,
    capacity: Pairs,
    allocatable: Pairs,
    /// The kubelet's `Ready` condition (pressure conditions reach the scheduler as taints).
    ready: Option<Box<NodeCondition>>,
}

impl NodeRecord {
    pub fn new(node: Node) -> Self {
        let Node {
            metadata,
            spec,
            status,
        } = node;
        let spec = spec.unwrap_or_default();
        let status = status.unwrap_or_default();
        let mut annotations = metadata.annotations.unwrap_or_default();
        annotations.remove(LAST_APPLIED);
        NodeRecord {
            name: Arc::from(metadata.name.unwrap_or_default()),
            uid: metadata.uid.map(String::into_boxed_str),
            resource_version: metadata.resource_version.map(String::into_boxed_str),
            creation_timestamp: metadata.creation_timestamp,
            deletion_timestamp: metadata.deletion_timestamp,
            labels: pairs(metadata.labels.into_iter().flatten()),
            annotations: pairs(annotations),
            finalizers: metadata
                .finalizers
                .into_iter()
                .flatten()
                .map(Arc::from)
                .collect(),
            owner_references: metadata.owner_references.map(Vec::into_boxed_slice),
            provider_id: spec.provider_id.map(String::into_boxed_str),
            taints: spec.taints.map(Vec::into_boxed_slice),
            unschedulable: spec.unschedulable,
            capacity: pairs(status.capacity.into_iter().flatten().map(|(k, q)| (k, q.0))),
            allocatable: pairs(
                status
                    .allocatable
                    .into_iter()
                    .flatten()
                    .map(|(k, q)| (k, q.0)),
            ),
            ready: status
                .conditions
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .map(Box::new),
        }
    }

    fn intern(&mut self, interner: &mut Interner) {
        self.name = interner.str(&self.name);
        for (k, v) in self
            .labels
            .iter_mut()
            .chain(self.annotations.iter_mut())
            .chain(self.capacity.iter_mut())
            .chain(self.allocatable.iter_mut())
        {
            *k = interner.str(k);
            *v = interner.str(v);
        }
        for f in self.finalizers.iter_mut() {
            *f = interner.str(f);
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        get(&self.labels, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        get(&self.annotations, key)
    }

    pub fn labels_map(&self) -> BTreeMap<String, String> {
        to_map(&self.labels, str::to_owned).unwrap_or_default()
    }

    pub fn has_taint(&self, key: &str) -> bool {
        self.taints.iter().flatten().any(|t| t.key == key)
    }

    pub fn taints(&self) -> &[Taint] {
        self.taints.as_deref().unwrap_or_default()
    }

    pub fn provider_id(&self) -> Option<&str> {
        self.provider_id.as_deref()
    }

    /// It has a deletion timestamp.
    pub fn deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f.as_ref() == finalizer)
    }

    /// The scheduler's view of this node with `pods` bound to it, built straight from the
    /// record (labels, taints, allocatable) without rebuilding the API Node first.
    pub fn existing_node(
        &self,
        pods: Vec<Arc<SchedulingPod>>,
    ) -> Result<karpctl_scheduling::ExistingNode, String> {
        if self.allocatable.is_empty() {
            return Err(
                "status.allocatable: missing: an existing node must say what it can hold".into(),
            );
        }
        let allocatable = karpctl_cloud::Resources::from_quantities(
            self.allocatable
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref())),
        )
        .map_err(|e| format!("status.allocatable: {e}"))?;
        let mut taints = Vec::new();
        for (i, t) in self.taints.iter().flatten().enumerate() {
            taints.push(
                karpctl_scheduling::kubernetes::taint(t, &format!("spec.taints[{i}]"))
                    .map_err(|e| e.to_string())?,
            );
        }
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels
            .entry(karpctl_api::labels::HOSTNAME.to_owned())
            .or_insert_with(|| self.name.to_string());
        Ok(karpctl_scheduling::ExistingNode {
            name: self.name.to_string(),
            labels,
            taints,
            allocatable,
            pods,
            in_flight: false,
        })
    }

    /// The Node as stored: [`trim`]med, conditions other than `Ready` left out.
    pub fn to_node(&self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                uid: self.uid.as_deref().map(str::to_owned),
                resource_version: self.resource_version.as_deref().map(str::to_owned),
                creation_timestamp: self.creation_timestamp.clone(),
                deletion_timestamp: self.deletion_timestamp.clone(),
                labels: to_map(&self.labels, str::to_owned),
                annotations: to_map(&self.annotations, str::to_owned),
                finalizers: (!self.finalizers.is_empty())
                    .then(|| self.finalizers.iter().map(|f| f.to_string()).collect()),
                owner_references: self.owner_references.as_deref().map(<[_]>::to_vec),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: self.provider_id.as_deref().map(str::to_owned),
                taints: self.taints.as_deref().map(<[_]>::to_vec),
                unschedulable: self.unschedulable,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                capacity: to_map(&self.capacity, |q| Quantity(q.to_owned())),
                allocatable: to_map(&self.allocatable, |q| Quantity(q.to_owned())),
                conditions: self.ready.as_deref().map(|c| vec![c.clone()]),
                ..Default::default()
            }),
        }
    }
}

tracked!(NodeClaim, NodeClaim, node_claims);
tracked!(NodePool, NodePool, node_pools);
tracked!(EC2NodeClass, EC2NodeClass, node_classes);
tracked!(DaemonSet, DaemonSet, daemon_sets);
tracked!(PodDisruptionBudget, PodDisruptionBudget, pdbs);

#[derive(Default, Debug)]
pub struct ClusterState {
    pods: BTreeMap<Arc<str>, PodRecord>,
    nodes: BTreeMap<Arc<str>, NodeRecord>,
    node_claims: BTreeMap<Arc<str>, NodeClaim>,
    node_pools: BTreeMap<Arc<str>, NodePool>,
    node_classes: BTreeMap<Arc<str>, EC2NodeClass>,
    daemon_sets: BTreeMap<Arc<str>, DaemonSet>,
    pdbs: BTreeMap<Arc<str>, PodDisruptionBudget>,
    /// Node name → keys of the pods bound to it (the same `Arc`s as the pods map's keys).
    pods_by_node: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Provider ID → node name.
    nodes_by_provider_id: BTreeMap<String, String>,
    /// Provider ID → claim name.
    claims_by_provider_id: BTreeMap<String, String>,
    nominations: BTreeMap<String, Nomination>,
    /// Node name → when a pod last started or stopped using it (after the pod watch synced),
    /// for `consolidateAfter`; persisted as the claim's `status.lastPodEventTime`.
    pod_events: BTreeMap<Arc<str>, k8s_openapi::jiff::Timestamp>,
    synced: BTreeSet<Kind>,
    interner: Interner,
}

fn claim_provider_id(claim: &NodeClaim) -> Option<&str> {
    claim.status.as_ref().and_then(|s| s.provider_id.as_deref())
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace one object (stored as [`Tracked::store`] keeps it).
    pub fn apply<K: Tracked + 'static>(&mut self, obj: K) {
        let key = key_of(&obj);
        self.insert::<K>(key, obj.store());
    }

    fn insert<K: Tracked + 'static>(&mut self, key: String, mut stored: K::Stored) {
        let key: Arc<str> = Arc::from(key);
        if K::KIND == Kind::Pod && self.synced.contains(&Kind::Pod) {
            let any: &dyn std::any::Any = &stored;
            if let Some(new) = any.downcast_ref::<PodRecord>() {
                let using = |p: &PodRecord| p.node_name.clone().filter(|_| is_active(p));
                let before = self.pods.get(&key).and_then(using);
                let after = using(new);
                if before != after {
                    self.pod_event(before);
                    self.pod_event(after);
                }
            }
        }
        K::intern(&mut stored, &mut self.interner);
        self.unindex::<K>(&key);
        self.index::<K>(&key, &stored);
        K::map(self).insert(key, stored);
    }

    pub fn delete<K: Tracked + 'static>(&mut self, obj: &K) {
        let key = key_of(obj);
        if K::KIND == Kind::Pod && self.synced.contains(&Kind::Pod) {
            let node = self
                .pods
                .get(key.as_str())
                .and_then(|p| p.node_name.clone());
            self.pod_event(node);
        }
        self.unindex::<K>(&key);
        K::map(self).remove(key.as_str());
        match K::KIND {
            Kind::Pod => {
                self.nominations.remove(&key);
            }
            Kind::Node => {
                self.pod_events.remove(key.as_str());
            }
            // Pods waiting for a claim that went away are planned again at once.
            Kind::NodeClaim => self.nominations.retain(|_, n| n.target != key),
            _ => {}
        }
    }

    /// Replace every object of one kind (a watch's initial list) and mark it synced.
    pub fn replace<K: Tracked + 'static>(&mut self, objs: Vec<K>) {
        self.replace_stored::<K>(objs.into_iter().map(|o| (key_of(&o), o.store())).collect());
    }

    /// [`Self::replace`] with objects already stored (the watch stores each page as it
    /// arrives).
    pub fn replace_stored<K: Tracked + 'static>(&mut self, objs: Vec<(String, K::Stored)>) {
        let old: Vec<Arc<str>> = K::map(self).keys().cloned().collect();
        for key in old {
            self.unindex::<K>(&key);
        }
        K::map(self).clear();
        for (key, stored) in objs {
            self.insert::<K>(key, stored);
        }
        self.synced.insert(K::KIND);
    }

    fn index<K: Tracked + 'static>(&mut self, key: &Arc<str>, obj: &K::Stored) {
        let any: &dyn std::any::Any = obj;
        if let Some(pod) = any.downcast_ref::<PodRecord>() {
            if let Some(node) = &pod.node_name {
                self.pods_by_node
                    .entry(node.clone())
                    .or_default()
                    .insert(key.clone());
            }
        } else if let Some(node) = any.downcast_ref::<NodeRecord>() {
            if let Some(id) = node.provider_id() {
                self.nodes_by_provider_id
                    .insert(id.to_owned(), key.to_string());
            }
        } else if let Some(claim) = any.downcast_ref::<NodeClaim>()
            && let Some(id) = claim_provider_id(claim)
        {
            self.claims_by_provider_id
                .insert(id.to_owned(), key.to_string());
        }
    }

    fn unindex<K: Tracked + 'static>(&mut self, key: &str) {
        match K::KIND {
            Kind::Pod => {
                if let Some(node) = self.pods.get(key).and_then(|p| p.node_name.clone())
                    && let Some(set) = self.pods_by_node.get_mut(&node)
                {
                    set.remove(key);
                    if set.is_empty() {
                        self.pods_by_node.remove(&node);
                    }
                }
            }
            Kind::Node => {
                if let Some(id) = self.nodes.get(key).and_then(NodeRecord::provider_id) {
                    let id = id.to_owned();
                    self.nodes_by_provider_id.remove(&id);
                }
            }
            Kind::NodeClaim => {
                if let Some(id) = self.node_claims.get(key).and_then(claim_provider_id) {
                    let id = id.to_owned();
                    self.claims_by_provider_id.remove(&id);
                }
            }
            _ => {}
        }
    }

    fn pod_event(&mut self, node: Option<Arc<str>>) {
        if let Some(node) = node {
            self.pod_events
                .insert(node, k8s_openapi::jiff::Timestamp::now());
        }
    }

    /// When a pod last started or stopped using `node`, as this replica saw it.
    pub fn last_pod_event(&self, node: &str) -> Option<k8s_openapi::jiff::Timestamp> {
        self.pod_events.get(node).copied()
    }

    /// Every kind has delivered its initial list (for /readyz and before garbage collection).
    pub fn synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn mark_synced(&mut self, kind: Kind) {
        self.synced.insert(kind);
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodRecord> {
        self.pods.values()
    }

    pub fn pod(&self, key: &str) -> Option<&PodRecord> {
        self.pods.get(key)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }

    pub fn node_claims(&self) -> impl Iterator<Item = &NodeClaim> {
        self.node_claims.values()
    }

    pub fn node_claim(&self, name: &str) -> Option<&NodeClaim> {
        self.node_claims.get(name)
    }

    pub fn node_pools(&self) -> impl Iterator<Item = &NodePool> {
        self.node_pools.values()
    }

    pub fn node_pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.get(name)
    }

    pub fn node_classes(&self) -> impl Iterator<Item = &EC2NodeClass> {
        self.node_classes.values()
    }

    pub fn node_class(&self, name: &str) -> Option<&EC2NodeClass> {
        self.node_classes.get(name)
    }

    pub fn daemon_sets(&self) -> impl Iterator<Item = &DaemonSet> {
        self.daemon_sets.values()
    }

    pub fn pdbs(&self) -> impl Iterator<Item = &PodDisruptionBudget> {
        self.pdbs.values()
    }

    /// Pods bound to `node`, terminal ones included (callers filter).
    pub fn pods_on_node(&self, node: &str) -> Vec<&PodRecord> {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .collect()
    }

    pub fn node_for_provider_id(&self, provider_id: &str) -> Option<&NodeRecord> {
        self.nodes_by_provider_id
            .get(provider_id)
            .and_then(|n| self.nodes.get(n.as_str()))
    }

    pub fn claim_for_provider_id(&self, provider_id: &str) -> Option<&NodeClaim> {
        self.claims_by_provider_id
            .get(provider_id)
            .and_then(|n| self.node_claims.get(n.as_str()))
    }

    /// The Node a claim launched, once it registered.
    pub fn node_for_claim(&self, claim: &NodeClaim) -> Option<&NodeRecord> {
        claim_provider_id(claim).and_then(|id| self.node_for_provider_id(id))
    }

    /// Claims still coming up: not being deleted and with no Node yet.
    pub fn in_flight_claims(&self) -> Vec<&NodeClaim> {
        self.node_claims
            .values()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter(|c| self.node_for_claim(c).is_none())
            .collect()
    }

    pub fn nominate(&mut self, pod_key: &str, target: &str, until: Instant) {
        self.nominations.insert(
            pod_key.to_owned(),
            Nomination {
                target: target.to_owned(),
                until,
            },
        );
    }

    /// Where `pod_key` is nominated, unless that has expired.
    pub fn nomination(&self, pod_key: &str, now: Instant) -> Option<&str> {
        self.nominations
            .get(pod_key)
            .filter(|n| n.until > now)
            .map(|n| n.target.as_str())
    }

    /// Whether pending pods were nominated to `target` (a node or claim name) and the
    /// nomination still holds: disruption leaves such capacity alone.
    pub fn is_nominated(&self, target: &str, now: Instant) -> bool {
        self.nominations
            .values()
            .any(|n| n.target == target && n.until > now)
    }

    /// Keys of pending pods nominated to `target` (not expired).
    pub fn nominated_to(&self, target: &str, now: Instant) -> Vec<String> {
        self.nominations
            .iter()
            .filter(|(_, n)| n.target == target && n.until > now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Pods the provisioner should plan capacity for: unschedulable, and not already
    /// nominated to capacity that is on its way.
    pub fn provisionable_pods(&self, now: Instant) -> Vec<&PodRecord> {
        self.pods
            .iter()
            .filter(|(key, pod)| is_provisionable(pod) && self.nomination(key, now).is_none())
            .map(|(_, p)| p)
            .collect()
    }
}

/// kubectl's copy of the whole object it last applied, in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what no reconciler reads before an object is stored, so the state of a big cluster
/// stays small: every object's `managedFields` and kubectl's last-applied copy, and in
/// DaemonSet pod templates the container details only a kubelet needs (env,
/// commands, probes, mounts, security contexts). What scheduling (`pod_from_spec`:
/// resources, init containers and their restart policy, overhead, node selectors, affinity,
/// tolerations, topology spread, host ports, PVC volumes) reads is kept. Pods and Nodes are
/// not trimmed but reduced to a [`PodRecord`] or a [`NodeRecord`].
pub fn trim<K: Resource + 'static>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    let any: &mut dyn std::any::Any = obj;
    if let Some(ds) = any.downcast_mut::<DaemonSet>() {
        if let Some(spec) = ds.spec.template.spec.as_mut() {
            trim_pod_spec(spec);
        }
        if let Some(meta) = ds.spec.template.metadata.as_mut() {
            meta.managed_fields = None;
        }
    }
}

fn trim_pod_spec(spec: &mut PodSpec) {
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.env = None;
        c.env_from = None;
        c.command = None;
        c.args = None;
        c.liveness_probe = None;
        c.readiness_probe = None;
        c.startup_probe = None;
        c.lifecycle = None;
        c.volume_mounts = None;
        c.volume_devices = None;
        c.security_context = None;
        c.working_dir = None;
        c.termination_message_path = None;
        c.termination_message_policy = None;
        c.image_pull_policy = None;
        c.ports = c
            .ports
            .take()
            .map(|ports| {
                ports
                    .into_iter()
                    .filter(|p| p.host_port.is_some_and(|h| h > 0))
                    .collect::<Vec<_>>()
            })
            .filter(|ports| !ports.is_empty());
    }
    spec.ephemeral_containers = None;
    spec.security_context = None;
    spec.dns_config = None;
    spec.host_aliases = None;
    spec.image_pull_secrets = None;
    // Only volumes that can constrain placement (their claims carry topology) are kept.
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
    }
}

/// `PodScheduled=False` with reason `Unschedulable`, not bound, not terminal, not being
/// deleted, and not a DaemonSet's pod (those follow nodes, they do not ask for them).
pub fn is_provisionable(pod: &PodRecord) -> bool {
    !pod.deleting
        && pod.node_name.is_none()
        && !pod.daemon_set
        && is_active(pod)
        && pod.unschedulable
}

/// Whether a pod still uses its node's resources.
pub fn is_active(pod: &PodRecord) -> bool {
    !matches!(pod.phase.as_deref(), Some("Succeeded") | Some("Failed"))
}

/// The state shared by the watches and the reconcilers. Never held across an `.await`.
pub type SharedState = Arc<RwLock<ClusterState>>;

pub fn read(state: &SharedState) -> std::sync::RwLockReadGuard<'_, ClusterState> {
    state.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write(state: &SharedState) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
    state.write().unwrap_or_else(|e| e.into_inner())
}

/// Bumped after every change the watches apply; reconcilers wait on it.
pub type Changes = tokio_watch::Sender<u64>;

/// Feed `state` from one watch per kind until the client goes away. Each change bumps
/// `changes` so reconcilers wake up.
pub async fn watch(client: Client, state: SharedState, changes: Arc<Changes>) {
    futures::join!(
        feed(Api::<Pod>::all(client.clone()), &state, &changes),
        feed(Api::<Node>::all(client.clone()), &state, &changes),
        feed(Api::<NodeClaim>::all(client.clone()), &state, &changes),
        feed(Api::<NodePool>::all(client.clone()), &state, &changes),
        feed(Api::<EC2NodeClass>::all(client.clone()), &state, &changes),
        feed(Api::<DaemonSet>::all(client.clone()), &state, &changes),
        feed(Api::<PodDisruptionBudget>::all(client), &state, &changes),
    );
}

async fn feed<K>(api: Api<K>, state: &SharedState, changes: &Changes)
where
    K: Tracked + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::Stored: Send,
    K::DynamicType: Default,
{
    use kube::runtime::WatchStreamExt;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut initial: Vec<(String, K::Stored)> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            // Stored as each page arrives, so a big cluster's first list never sits in
            // memory whole as API objects.
            Ok(watcher::Event::InitApply(obj)) => {
                initial.push((key_of(&obj), obj.store()));
            }
            Ok(watcher::Event::InitDone) => {
                write(state).replace_stored::<K>(std::mem::take(&mut initial));
                tracing::debug!(kind = ?K::KIND, "cluster state synced");
            }
            Ok(watcher::Event::Apply(obj)) => write(state).apply(obj),
            Ok(watcher::Event::Delete(obj)) => write(state).delete(&obj),
            Err(e) => {
                tracing::warn!(kind = ?K::KIND, error = %e, "watch failed, retrying");
                continue;
            }
        }
        changes.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pending(ns: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn bound(ns: &str, name: &str, node: &str) -> Pod {
        let mut p = pending(ns, name);
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        p
    }

    fn node(name: &str, provider_id: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(provider_id.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn claim(name: &str, provider_id: Option<&str>) -> NodeClaim {
        let mut c: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name},
            "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .unwrap();
        if let Some(id) = provider_id {
            c.status = Some(karpctl_api::v1::NodeClaimStatus {
                provider_id: Some(id.into()),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn a_node_record_gives_back_what_the_reconcilers_read_and_shares_repeated_strings() {
        let node = |name: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": name, "uid": format!("uid-{name}"), "resourceVersion": "7",
                    "creationTimestamp": "2026-12-01T00:00:00Z",
                    "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "us-west-2a",
                               "node.kubernetes.io/instance-type": "m5.large"},
                    "annotations": {"karpenter.sh/nodepool-hash": "123",
                                    LAST_APPLIED: "{\"big\": true}"},
                    "finalizers": ["karpenter.sh/termination"],
                    "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "name": "c", "uid": "u"}],
                    "managedFields": [{"manager": "kubelet"}]
                },
                "spec": {"providerID": format!("aws:///us-west-2a/i-{name}"), "unschedulable": true,
                         "taints": [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]},
                "status": {
                    "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
                    "allocatable": {"cpu": "1930m", "memory": "7Gi", "pods": "29"},
                    "conditions": [
                        {"type": "MemoryPressure", "status": "False"},
                        {"type": "Ready", "status": "True", "reason": "KubeletReady"}
                    ],
                    "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6",
                                 "osImage": "al2023", "containerRuntimeVersion": "containerd", "kubeletVersion": "v1.37",
                                 "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
                    "images": [{"names": ["pause"], "sizeBytes": 1}]
                }
            }))
            .unwrap()
        };
        let mut s = ClusterState::new();
        s.apply(node("n1"));
        s.apply(node("n2"));
        let n1 = s.node("n1").unwrap();
        assert!(!n1.deleting());
        assert!(n1.has_finalizer("karpenter.sh/termination"));
        assert_eq!(n1.label("topology.kubernetes.io/zone"), Some("us-west-2a"));
        assert_eq!(n1.label("missing"), None);
        assert_eq!(n1.provider_id(), Some("aws:///us-west-2a/i-n1"));
        let back = n1.to_node();
        let mut expected = node("n1");
        expected.metadata.managed_fields = None;
        expected
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(LAST_APPLIED);
        let status = expected.status.as_mut().unwrap();
        status.node_info = None;
        status.images = None;
        status
            .conditions
            .as_mut()
            .unwrap()
            .retain(|c| c.type_ == "Ready");
        assert_eq!(back, expected);
        // The two nodes' equal strings are one allocation each.
        let n2 = s.node("n2").unwrap();
        let zone = |n: &NodeRecord| {
            n.labels
                .iter()
                .find(|(k, _)| k.as_ref() == "topology.kubernetes.io/zone")
                .unwrap()
                .clone()
        };
        let (k1, v1) = zone(n1);
        let (k2, v2) = zone(n2);
        assert!(Arc::ptr_eq(&k1, &k2) && Arc::ptr_eq(&v1, &v2));
        assert!(Arc::ptr_eq(&n1.allocatable[0].1, &n2.allocatable[0].1));
        assert_eq!(
            s.node_for_provider_id("aws:///us-west-2a/i-n2")
                .map(|n| n.name.as_ref()),
            Some("n2")
        );
    }

    #[test]
    fn pods_are_indexed_by_node_and_follow_rebinding_and_deletion() {
        let mut s = ClusterState::new();
        s.apply(bound("a", "p1", "n1"));
        s.apply(bound("a", "p2", "n1"));
        assert_eq!(s.pods_on_node("n1").len(), 2);
        s.apply(bound("a", "p2", "n2"));
        assert_eq!(s.pods_on_node("n1").len(), 1);
        assert_eq!(s.pods_on_node("n2").len(), 1);
        s.delete(&bound("a", "p1", "n1"));
        assert!(s.pods_on_node("n1").is_empty());
    }

    #[test]
    fn claims_and_nodes_are_found_by_provider_id() {
        let mut s = ClusterState::new();
        s.apply(claim("c1", None));
        assert_eq!(s.in_flight_claims().len(), 1);
        s.apply(claim("c1", Some("aws:///z/i-1")));
        assert_eq!(
            s.claim_for_provider_id("aws:///z/i-1")
                .map(|c| c.name_any()),
            Some("c1".into())
        );
        assert_eq!(s.in_flight_claims().len(), 1, "launched but no node yet");
        s.apply(node("n1", "aws:///z/i-1"));
        assert!(s.in_flight_claims().is_empty());
        assert_eq!(
            s.node_for_claim(s.node_claim("c1").unwrap())
                .map(|n| n.name.to_string()),
            Some("n1".into())
        );
        s.delete(&node("n1", "aws:///z/i-1"));
        assert!(s.node_for_provider_id("aws:///z/i-1").is_none());
        s.delete(&claim("c1", Some("aws:///z/i-1")));
        assert!(s.claim_for_provider_id("aws:///z/i-1").is_none());
    }

    #[test]
    fn provisionable_pods_exclude_bound_terminal_daemonset_and_nominated_ones() {
        let now = Instant::now();
        let mut s = ClusterState::new();
        s.apply(pending("a", "wants-capacity"));
        s.apply(bound("a", "running", "n1"));
        let mut done = pending("a", "done");
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        s.apply(done);
        let mut ds = pending("a", "ds-pod");
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            name: "ds".into(),
            api_version: "apps/v1".into(),
            uid: "u".into(),
            ..Default::default()
        }]);
        s.apply(ds);
        let mut scheduled = pending("a", "not-yet-tried");
        scheduled.status.as_mut().unwrap().conditions = None;
        s.apply(scheduled);
        s.apply(pending("a", "nominated"));
        s.nominate(
            "a/nominated",
            "c1",
            now + std::time::Duration::from_secs(10),
        );
        let names: Vec<String> = s
            .provisionable_pods(now)
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(names, vec!["wants-capacity"]);
        // Once the nomination expires the pod is planned again.
        let later = now + std::time::Duration::from_secs(11);
        assert_eq!(s.provisionable_pods(later).len(), 2);
        assert_eq!(s.nominated_to("c1", now), vec!["a/nominated".to_string()]);
    }

    #[test]
    fn a_stored_pod_keeps_what_the_reconcilers_read_and_schedules_the_same() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": "a", "name": "web", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "karpenter.sh/do-not-disrupt": "true"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r1", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "nodeSelector": {"karpenter.sh/nodepool": "p"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                "initContainers": [{"name": "sidecar", "restartPolicy": "Always", "env": [{"name": "X", "value": "y"}],
                    "resources": {"requests": {"cpu": "50m"}}}],
                "containers": [{
                    "name": "app", "image": "web:1", "command": ["/web"], "args": ["--port=8080"],
                    "env": [{"name": "A", "value": "b"}],
                    "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9090}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets"}],
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
                }],
                "volumes": [{"name": "token", "projected": {"sources": []}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web"}}]
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
                "containerStatuses": [{"name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 0}]
            }
        }))
        .unwrap();
        let mut s = ClusterState::new();
        s.apply(pod.clone());
        let stored = s.pod("a/web").unwrap();
        assert_eq!(stored.key(), "a/web");
        assert_eq!(stored.uid.as_deref(), Some("u1"));
        assert_eq!(stored.phase.as_deref(), Some("Pending"));
        assert_eq!(
            stored.owner.as_deref(),
            Some("/apis/apps/v1/namespaces/a/replicasets/web-1")
        );
        assert!(!stored.daemon_set && !stored.deleting && stored.unschedulable);
        assert!(is_provisionable(stored));
        let full = karpctl_scheduling::kubernetes::pod_from_spec(
            "a",
            "web",
            pod.metadata.labels.as_ref().unwrap(),
            pod.spec.as_ref().unwrap(),
            "spec",
        )
        .unwrap();
        assert_eq!(stored.scheduling.as_deref().ok(), Some(&full));
        let target = stored.event_target();
        assert_eq!(
            (target.name_any(), target.namespace(), target.uid()),
            (
                "web".to_owned(),
                Some("a".to_owned()),
                Some("u1".to_owned())
            )
        );

        // Binding moves it out of the provisionable set; a spec the scheduler cannot read
        // is kept with the reason.
        let mut running = pod.clone();
        running.spec.as_mut().unwrap().node_name = Some("n1".into());
        s.apply(running);
        let placed = s.pod("a/web").unwrap();
        assert!(!is_provisionable(placed));
        assert_eq!(s.pods_on_node("n1").len(), 1);
        // Bound, it keeps only what constrains other pods.
        let view = placed.scheduling.as_ref().unwrap();
        assert_eq!(
            (
                &view.requests,
                &view.labels,
                &view.anti_affinity,
                &view.host_ports
            ),
            (
                &full.requests,
                &full.labels,
                &full.anti_affinity,
                &full.host_ports
            )
        );
        assert!(view.tolerations.is_empty() && view.topology_spread.is_empty());
        assert!(view.node_selector.is_empty() && view.required_terms.is_empty());
        let mut broken = pod;
        broken.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("lots".into()));
        s.apply(broken);
        let err = s.pod("a/web").unwrap().scheduling.clone().unwrap_err();
        assert!(err.contains("\"lots\""), "{err}");
    }

    #[test]
    fn bound_replicas_of_one_workload_share_one_scheduling_view_until_they_go() {
        let replica = |name: &str, node: Option<&str>| -> Pod {
            let mut p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "shop", "name": name, "labels": {"app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r1"}]},
                "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}]},
                "status": {"phase": "Running"}
            }))
            .unwrap();
            p.spec.as_mut().unwrap().node_name = node.map(str::to_owned);
            p
        };
        let mut s = ClusterState::new();
        s.apply(replica("web-a", Some("n1")));
        s.apply(replica("web-b", Some("n2")));
        s.apply(replica("web-c", None));
        let view = |name: &str| {
            s.pod(&format!("shop/{name}"))
                .unwrap()
                .scheduling
                .clone()
                .unwrap()
        };
        let (a, b, c) = (view("web-a"), view("web-b"), view("web-c"));
        assert!(Arc::ptr_eq(&a, &b), "bound replicas share their view");
        assert!(
            !Arc::ptr_eq(&a, &c),
            "a pending pod keeps its own, name included"
        );
        assert_eq!((a.name.as_str(), c.name.as_str()), ("", "web-c"));
        assert_eq!(a.requests, c.requests);
        let (pa, pb) = (s.pod("shop/web-a").unwrap(), s.pod("shop/web-b").unwrap());
        assert!(Arc::ptr_eq(&pa.namespace, &pb.namespace));
        assert!(Arc::ptr_eq(
            pa.owner.as_ref().unwrap(),
            pb.owner.as_ref().unwrap()
        ));

        // Once the pods are gone, a sweep leaves nothing behind.
        drop((a, b, c));
        for name in ["web-a", "web-b", "web-c"] {
            s.delete(&replica(name, None));
        }
        s.apply(node("n1", "aws:///z/i-1"));
        s.delete(&node("n1", "aws:///z/i-1"));
        s.interner.sweep();
        assert!(s.interner.is_empty(), "{:?}", s.interner.len());
    }

    #[test]
    fn trimmed_daemon_set_templates_schedule_the_same() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "kube-system", "name": "agent",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{
                            "name": "agent", "image": "agent:1",
                            "env": [{"name": "A", "value": "b"}],
                            "ports": [{"containerPort": 9100, "hostPort": 9100}, {"containerPort": 8080}],
                            "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
                        }]
                    }
                }
            }
        }))
        .unwrap();
        let mut s = ClusterState::new();
        s.apply(ds.clone());
        let stored = s.daemon_sets().next().unwrap();
        assert!(stored.metadata.managed_fields.is_none());
        let spec = stored.spec.template.spec.as_ref().unwrap();
        let agent = &spec.containers[0];
        assert!(agent.env.is_none() && agent.liveness_probe.is_none());
        assert_eq!(
            agent.ports.as_ref().map(Vec::len),
            Some(1),
            "only host ports"
        );
        let scheduled = |d: &DaemonSet| {
            let t = &d.spec.template;
            karpctl_scheduling::kubernetes::pod_from_spec(
                "kube-system",
                "agent",
                t.metadata.as_ref().unwrap().labels.as_ref().unwrap(),
                t.spec.as_ref().unwrap(),
                "spec.template.spec",
            )
            .unwrap()
        };
        assert_eq!(scheduled(stored), scheduled(&ds));
    }

    #[test]
    fn replace_drops_objects_missing_from_the_new_list_and_marks_synced() {
        let mut s = ClusterState::new();
        s.apply(node("old", "aws:///z/i-old"));
        assert!(!s.synced());
        s.replace(vec![node("new", "aws:///z/i-new")]);
        assert!(s.node("old").is_none());
        assert!(s.node_for_provider_id("aws:///z/i-old").is_none());
        assert!(s.node_for_provider_id("aws:///z/i-new").is_some());
        for k in Kind::ALL {
            s.mark_synced(k);
        }
        assert!(s.synced());
    }
}
