//! NodePools as the scheduler sees them: the `karpenter.sh/v1` objects converted to
//! `karpctl_scheduling::NodePool`, each with the instance types its EC2NodeClass can launch
//! (allocatable depends on the class's kubelet settings and root volume), drawn from the
//! catalogue the user chose. Every error names the file, line and object the NodePool or
//! EC2NodeClass came from, then the field, as the errors of reading manifests do.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use karpctl_api::v1::{EC2NodeClass, NodePool as ApiNodePool};
use karpctl_cloud::labels;
use karpctl_cloud::{Catalogue, CatalogueOptions, InstanceType, NodeSettings, Resources};
use karpctl_scheduling::kubernetes::requirement;
use karpctl_scheduling::{Effect, NodePool, Requirements, Taint};

use crate::workloads::Sourced;

/// Where instance types come from and how they are offered.
#[derive(Clone, Debug)]
pub struct CatalogueSource {
    pub region: String,
    pub zones: Vec<String>,
    pub spot: bool,
    /// A file in the shipped `instance-types.json` format instead of the shipped data.
    pub file: Option<std::path::PathBuf>,
}

impl CatalogueSource {
    pub fn load(&self, node: NodeSettings) -> anyhow::Result<Catalogue> {
        let mut options = CatalogueOptions::new(&self.region);
        if !self.zones.is_empty() {
            options.zones = self.zones.clone();
        }
        options.spot = self.spot;
        options.node = node;
        match &self.file {
            None => Catalogue::shipped(&options).context("loading the shipped instance-type data"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Catalogue::from_json(&text, None, &options)
                    .with_context(|| format!("{}", path.display()))
            }
        }
    }
}

/// The node settings an EC2NodeClass implies.
pub fn node_settings(class: Option<&Sourced<EC2NodeClass>>) -> anyhow::Result<NodeSettings> {
    let mut settings = NodeSettings::default();
    let Some(Sourced {
        origin,
        object: class,
    }) = class
    else {
        return Ok(settings);
    };
    if let Some(kubelet) = &class.spec.kubelet {
        settings.max_pods = kubelet.max_pods.map(i64::from);
        settings.pods_per_core = kubelet.pods_per_core.map(i64::from);
    }
    let mappings = &class.spec.block_device_mappings;
    let root = mappings
        .iter()
        .position(|m| m.root_volume)
        .or(if mappings.is_empty() { None } else { Some(0) });
    if let Some((i, size)) = root.and_then(|i| {
        mappings[i]
            .ebs
            .as_ref()
            .and_then(|e| e.volume_size.as_ref())
            .map(|size| (i, size))
    }) {
        let bytes = Resources::from_quantities([("ephemeral-storage", size.as_str())])
            .map_err(|e| anyhow!("{origin}: spec.blockDeviceMappings[{i}].ebs.volumeSize: {e}"))?
            .ephemeral_storage;
        settings.root_volume_bytes = bytes;
    }
    Ok(settings)
}

/// Convert every NodePool, loading one catalogue per distinct node class.
pub fn node_pools(
    pools: &[Sourced<ApiNodePool>],
    classes: &[Sourced<EC2NodeClass>],
    source: &CatalogueSource,
) -> anyhow::Result<(Vec<NodePool>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut catalogues: BTreeMap<String, Arc<Vec<InstanceType>>> = BTreeMap::new();
    let mut out = Vec::new();
    for Sourced {
        origin,
        object: pool,
    } in pools
    {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let at = |field: &str, e: &dyn std::fmt::Display| anyhow!("{origin}: {field}: {e}");
        if pool.spec.replicas.is_some() {
            notes.push(format!(
                "NodePool/{name} is static (spec.replicas); it takes no part in provisioning"
            ));
            continue;
        }
        let class_name = &pool.spec.template.spec.node_class_ref.name;
        let class = classes
            .iter()
            .find(|c| c.object.metadata.name.as_deref() == Some(class_name.as_str()));
        if class.is_none() && !classes.is_empty() {
            notes.push(format!(
                "NodePool/{name} refers to EC2NodeClass/{class_name}, which is not in the input; default node settings assumed"
            ));
        }
        let key = class
            .map(|c| c.object.metadata.name.clone().unwrap_or_default())
            .unwrap_or_default();
        let instance_types = match catalogues.get(&key) {
            Some(c) => c.clone(),
            None => {
                let catalogue = source.load(node_settings(class)?)?;
                let c = Arc::new(catalogue.instance_types);
                catalogues.insert(key, c.clone());
                c
            }
        };
        let spec = &pool.spec.template.spec;
        let mut requirements = Requirements::new();
        for (i, r) in spec.requirements.iter().enumerate() {
            let field = format!("spec.template.spec.requirements[{i}]");
            let mut req = requirement(&r.key, &r.operator, &r.values, &field)
                .map_err(|e| anyhow!("{origin}: {e}"))?;
            if let Some(min) = r.min_values {
                req = req
                    .with_min_values(Some(min.max(0) as usize))
                    .map_err(|e| at(&field, &e))?;
            }
            if r.key == labels::INSTANCE_TYPE && r.operator == "In" {
                for v in &r.values {
                    if !instance_types.iter().any(|it| &it.name == v) {
                        bail!(
                            "{origin}: {field}: unknown instance type {v:?} (not in the catalogue for {})",
                            source.region
                        );
                    }
                }
            }
            requirements.add(req);
        }
        let taints = |list: &[karpctl_api::v1::Taint], field: &str| -> anyhow::Result<Vec<Taint>> {
            list.iter()
                .enumerate()
                .map(|(i, t)| {
                    let effect: Effect = t
                        .effect
                        .as_str()
                        .parse()
                        .map_err(|e: String| at(&format!("{field}[{i}].effect"), &e))?;
                    Ok(Taint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect,
                    })
                })
                .collect()
        };
        let mut limits = BTreeMap::new();
        for (resource, quantity) in &pool.spec.limits {
            let parsed = Resources::from_quantities([(resource.as_str(), quantity.as_str())])
                .map_err(|e| at(&format!("spec.limits.{resource}"), &e))?;
            let value = if resource == "nodes" {
                quantity
                    .as_str()
                    .parse::<i64>()
                    .map_err(|e| at("spec.limits.nodes", &e))?
            } else {
                parsed.get(resource)
            };
            limits.insert(resource.clone(), value);
        }
        out.push(NodePool {
            name: name.clone(),
            weight: pool.spec.weight.unwrap_or(0),
            requirements,
            labels: pool.spec.template.metadata.labels.clone(),
            taints: taints(&spec.taints, "spec.template.spec.taints")?,
            startup_taints: taints(&spec.startup_taints, "spec.template.spec.startupTaints")?,
            limits,
            instance_types,
        });
    }
    Ok((out, notes))
}
