//! An in-memory [`CloudProvider`] for the reconcilers' unit tests: launches are recorded,
//! instances live in a map, and tests script failures (insufficient capacity for chosen
//! offerings, a node class that is not ready, any error on the next call).
//!
//! It chooses like the real provider does — the cheapest available offering the claim's
//! requirements allow — so tests of provisioning see realistic instance types.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use karpctl_api::labels;
use karpctl_api::v1::{EC2NodeClass, EC2NodeClassStatus, NodeClaim, NodePool};

use crate::instancetype::{CapacityType, InstanceType};
use crate::provider::{
    CloudError, CloudProvider, CloudResult, DriftReason, Instance, InstanceState, Launched,
    OfferingKey,
};

/// Which call a scripted failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Create,
    Delete,
    Get,
    List,
    InstanceTypes,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, Instance>,
    next_id: u64,
    unavailable: BTreeSet<OfferingKey>,
    failures: BTreeMap<Call, VecDeque<CloudError>>,
    creates: Vec<String>,
    deletes: Vec<String>,
}

pub struct FakeCloud {
    instance_types: Vec<InstanceType>,
    state: Mutex<State>,
}

impl FakeCloud {
    pub fn new(instance_types: Vec<InstanceType>) -> Self {
        Self {
            instance_types,
            state: Mutex::new(State::default()),
        }
    }

    /// Every later launch of this offering fails with insufficient capacity.
    pub fn make_unavailable(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.lock().unavailable.insert(OfferingKey {
            instance_type: instance_type.to_owned(),
            zone: zone.to_owned(),
            capacity_type,
        });
    }

    /// The next call of `call` fails with `error`.
    pub fn fail_next(&self, call: Call, error: CloudError) {
        self.lock()
            .failures
            .entry(call)
            .or_default()
            .push_back(error);
    }

    /// Names of the claims launched, in order.
    pub fn created(&self) -> Vec<String> {
        self.lock().creates.clone()
    }

    /// Provider IDs deleted, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.lock().deletes.clone()
    }

    /// Add an instance as if launched out of band (for garbage-collection tests).
    pub fn insert(&self, instance: Instance) {
        self.lock()
            .instances
            .insert(instance.provider_id.clone(), instance);
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scripted(&self, call: Call) -> CloudResult<()> {
        match self
            .lock()
            .failures
            .get_mut(&call)
            .and_then(VecDeque::pop_front)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Values a claim's requirements allow for `key`: `None` when unconstrained.
fn allowed(claim: &NodeClaim, key: &str) -> Option<BTreeSet<String>> {
    let mut out: Option<BTreeSet<String>> = None;
    for r in &claim.spec.requirements {
        if r.key == key && r.operator == "In" {
            let values: BTreeSet<String> = r.values.iter().cloned().collect();
            out = Some(match out {
                Some(prev) => prev.intersection(&values).cloned().collect(),
                None => values,
            });
        }
    }
    out
}

impl CloudProvider for FakeCloud {
    async fn create(&self, claim: &NodeClaim, _node_class: &EC2NodeClass) -> CloudResult<Launched> {
        self.scripted(Call::Create)?;
        let name = claim.metadata.name.clone().unwrap_or_default();
        let types = allowed(claim, labels::INSTANCE_TYPE);
        let zones = allowed(claim, labels::TOPOLOGY_ZONE);
        let capacity_types = allowed(claim, labels::CAPACITY_TYPE);
        let mut state = self.lock();
        if let Some(existing) = state
            .instances
            .values()
            .find(|i| i.node_claim() == Some(name.as_str()) && !i.state.is_gone())
        {
            let it = self
                .instance_types
                .iter()
                .find(|t| t.name == existing.instance_type);
            let instance = existing.clone();
            return Ok(launched(instance, it));
        }
        let mut candidates = Vec::new();
        let mut refused = Vec::new();
        for it in &self.instance_types {
            if types.as_ref().is_some_and(|t| !t.contains(&it.name)) {
                continue;
            }
            for o in &it.offerings {
                if zones.as_ref().is_some_and(|z| !z.contains(&o.zone))
                    || capacity_types
                        .as_ref()
                        .is_some_and(|c| !c.contains(o.capacity_type.as_str()))
                {
                    continue;
                }
                let key = OfferingKey {
                    instance_type: it.name.clone(),
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type,
                };
                if state.unavailable.contains(&key) || !o.available {
                    refused.push(key);
                } else {
                    candidates.push((o.price, it, o, key));
                }
            }
        }
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, it, offering, _)) = candidates.into_iter().next() else {
            return Err(CloudError::InsufficientCapacity {
                message: format!("no offering allowed by nodeclaim {name} has capacity"),
                offerings: refused,
            });
        };
        state.next_id += 1;
        let id = format!("i-{:017x}", state.next_id);
        let mut tags = BTreeMap::from([(labels::NODECLAIM_TAG.to_owned(), name.clone())]);
        if let Some(pool) = claim
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::NODE_POOL))
        {
            tags.insert(labels::NODE_POOL.to_owned(), pool.clone());
        }
        let instance = Instance {
            provider_id: format!("aws:///{}/{id}", offering.zone),
            id,
            instance_type: it.name.clone(),
            zone: offering.zone.clone(),
            capacity_type: offering.capacity_type,
            image_id: "ami-fake".to_owned(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            state: InstanceState::Running,
            launch_time: Some(SystemTime::now()),
            tags,
        };
        state
            .instances
            .insert(instance.provider_id.clone(), instance.clone());
        state.creates.push(name);
        Ok(launched(instance, Some(it)))
    }

    async fn delete(&self, provider_id: &str) -> CloudResult<()> {
        self.scripted(Call::Delete)?;
        let mut state = self.lock();
        match state.instances.get_mut(provider_id) {
            Some(i) if !i.state.is_gone() => {
                i.state = InstanceState::Terminated;
                state.deletes.push(provider_id.to_owned());
                Ok(())
            }
            _ => Err(CloudError::NodeClaimNotFound(provider_id.to_owned())),
        }
    }

    async fn get(&self, provider_id: &str) -> CloudResult<Instance> {
        self.scripted(Call::Get)?;
        match self.lock().instances.get(provider_id) {
            Some(i) if !i.state.is_gone() => Ok(i.clone()),
            _ => Err(CloudError::NodeClaimNotFound(provider_id.to_owned())),
        }
    }

    async fn list(&self) -> CloudResult<Vec<Instance>> {
        self.scripted(Call::List)?;
        Ok(self
            .lock()
            .instances
            .values()
            .filter(|i| !i.state.is_gone())
            .cloned()
            .collect())
    }

    async fn instance_types(
        &self,
        _node_pool: &NodePool,
        _node_class: &EC2NodeClass,
    ) -> CloudResult<Vec<InstanceType>> {
        self.scripted(Call::InstanceTypes)?;
        let state = self.lock();
        Ok(self
            .instance_types
            .iter()
            .map(|it| {
                let mut it = it.clone();
                for o in &mut it.offerings {
                    let key = OfferingKey {
                        instance_type: it.name.clone(),
                        zone: o.zone.clone(),
                        capacity_type: o.capacity_type,
                    };
                    if state.unavailable.contains(&key) {
                        o.available = false;
                    }
                }
                it
            })
            .collect())
    }

    async fn is_drifted(
        &self,
        _claim: &NodeClaim,
        _node_class: &EC2NodeClass,
    ) -> CloudResult<Option<DriftReason>> {
        Ok(None)
    }

    async fn reconcile_node_class(
        &self,
        node_class: &EC2NodeClass,
    ) -> CloudResult<EC2NodeClassStatus> {
        Ok(node_class.status.clone().unwrap_or_default())
    }

    async fn finalize_node_class(&self, _node_class: &EC2NodeClass) -> CloudResult<()> {
        Ok(())
    }
}

fn launched(instance: Instance, it: Option<&InstanceType>) -> Launched {
    let (capacity, allocatable) = match it {
        Some(it) => (it.capacity.clone(), it.allocatable.clone()),
        None => Default::default(),
    };
    let mut labels = it.map(|it| it.labels.clone()).unwrap_or_default();
    labels.insert(
        labels::INSTANCE_TYPE.to_owned(),
        instance.instance_type.clone(),
    );
    labels.insert(labels::TOPOLOGY_ZONE.to_owned(), instance.zone.clone());
    labels.insert(
        labels::CAPACITY_TYPE.to_owned(),
        instance.capacity_type.as_str().to_owned(),
    );
    Launched {
        instance,
        capacity,
        allocatable,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instancetype::Offering;
    use crate::resources::Resources;
    use karpctl_api::v1::{
        NodeClaimSpec, NodeClassReference, NodeSelectorRequirementWithMinValues,
    };

    fn instance_type(name: &str, prices: &[(&str, f64)]) -> InstanceType {
        InstanceType {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            capacity: Resources::new(2000, 8 << 30),
            overhead: Default::default(),
            allocatable: Resources::new(1900, 7 << 30),
            offerings: prices
                .iter()
                .map(|(zone, price)| Offering {
                    zone: (*zone).to_owned(),
                    capacity_type: CapacityType::OnDemand,
                    price: *price,
                    available: true,
                })
                .collect(),
        }
    }

    fn claim(name: &str, types: &[&str]) -> NodeClaim {
        let mut c = NodeClaim::new(
            name,
            NodeClaimSpec {
                taints: vec![],
                startup_taints: vec![],
                requirements: vec![NodeSelectorRequirementWithMinValues {
                    key: labels::INSTANCE_TYPE.to_owned(),
                    operator: "In".to_owned(),
                    values: types.iter().map(|t| (*t).to_owned()).collect(),
                    min_values: None,
                }],
                resources: Default::default(),
                node_class_ref: NodeClassReference::ec2_node_class("default"),
                termination_grace_period: None,
                expire_after: None,
            },
        );
        c.metadata.labels = Some([(labels::NODE_POOL.to_owned(), "default".to_owned())].into());
        c
    }

    fn node_class() -> EC2NodeClass {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {"role": "r", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                     "subnetSelectorTerms": [{"tags": {"a": "b"}}],
                     "securityGroupSelectorTerms": [{"tags": {"a": "b"}}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn launches_the_cheapest_allowed_offering_once_per_claim() {
        let cloud = FakeCloud::new(vec![
            instance_type("m5.large", &[("a", 0.096), ("b", 0.090)]),
            instance_type("c5.large", &[("a", 0.085)]),
        ]);
        let first = cloud
            .create(&claim("c1", &["m5.large"]), &node_class())
            .await
            .unwrap();
        assert_eq!(
            (
                first.instance.instance_type.as_str(),
                first.instance.zone.as_str()
            ),
            ("m5.large", "b")
        );
        assert_eq!(first.instance.node_claim(), Some("c1"));
        let again = cloud
            .create(&claim("c1", &["m5.large"]), &node_class())
            .await
            .unwrap();
        assert_eq!(
            again.instance.id, first.instance.id,
            "a retried create must not launch twice"
        );
        assert_eq!(cloud.created(), vec!["c1".to_owned()]);
    }

    #[tokio::test]
    async fn unavailable_offerings_fall_back_then_fail_with_insufficient_capacity() {
        let cloud = FakeCloud::new(vec![instance_type("m5.large", &[("a", 0.09), ("b", 0.1)])]);
        cloud.make_unavailable("m5.large", "a", CapacityType::OnDemand);
        let l = cloud
            .create(&claim("c1", &["m5.large"]), &node_class())
            .await
            .unwrap();
        assert_eq!(l.instance.zone, "b");
        cloud.make_unavailable("m5.large", "b", CapacityType::OnDemand);
        let err = cloud
            .create(&claim("c2", &["m5.large"]), &node_class())
            .await
            .unwrap_err();
        match err {
            CloudError::InsufficientCapacity { offerings, .. } => assert_eq!(offerings.len(), 2),
            other => panic!("expected insufficient capacity, got {other}"),
        }
    }

    #[tokio::test]
    async fn deleting_twice_is_not_found_and_gone_instances_are_not_listed() {
        let cloud = FakeCloud::new(vec![instance_type("m5.large", &[("a", 0.09)])]);
        let l = cloud
            .create(&claim("c1", &["m5.large"]), &node_class())
            .await
            .unwrap();
        cloud.delete(&l.instance.provider_id).await.unwrap();
        assert!(matches!(
            cloud.delete(&l.instance.provider_id).await,
            Err(CloudError::NodeClaimNotFound(_))
        ));
        assert!(cloud.list().await.unwrap().is_empty());
        assert_eq!(cloud.deleted(), vec![l.instance.provider_id]);
    }
}
