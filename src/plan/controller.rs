//! What `init` puts into Kubernetes beyond the CRDs, as plain objects: the controller
//! (namespace, ServiceAccount, RBAC, Deployment, PDB, metrics Service) rendered from
//! `templates/controller/*.yaml.hbs`, and the default EC2NodeClass and NodePool built from the
//! typed v1 API so they are valid by construction. Each object carries a hash of its content
//! (annotation `karpctl.sh/spec-hash`): a later run re-applies only what karpctl's desired
//! content changed, and leaves alone edits users made to objects whose desired content did not.

use std::collections::BTreeMap;

use handlebars::Handlebars;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use karpctl_api::labels;

use super::init::MANAGED_BY;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const SPEC_HASH_ANNOTATION: &str = "karpctl.sh/spec-hash";

const TEMPLATES: &[(&str, &str)] = &[
    (
        "namespace",
        include_str!("../../templates/controller/namespace.yaml.hbs"),
    ),
    (
        "serviceaccount",
        include_str!("../../templates/controller/serviceaccount.yaml.hbs"),
    ),
    (
        "rbac",
        include_str!("../../templates/controller/rbac.yaml.hbs"),
    ),
    (
        "service",
        include_str!("../../templates/controller/service.yaml.hbs"),
    ),
    (
        "pdb",
        include_str!("../../templates/controller/pdb.yaml.hbs"),
    ),
    (
        "deployment",
        include_str!("../../templates/controller/deployment.yaml.hbs"),
    ),
];

/// The controller's deployment settings (karpctl.yaml `controller:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerSettings {
    pub image: String,
    pub replicas: u32,
    pub log_level: String,
    pub batch_idle_duration: String,
    pub batch_max_duration: String,
    pub launch_ttl: String,
    pub registration_ttl: String,
    pub cpu: String,
    pub memory: String,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/karpctl/karpctl-controller:{}",
                env!("CARGO_PKG_VERSION")
            ),
            replicas: 2,
            log_level: "info".into(),
            batch_idle_duration: "1s".into(),
            batch_max_duration: "10s".into(),
            launch_ttl: "5m".into(),
            registration_ttl: "15m".into(),
            cpu: "500m".into(),
            memory: "512Mi".into(),
        }
    }
}

/// The cluster facts the manifests need.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub cluster: &'a str,
    pub region: &'a str,
    pub endpoint: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub interruption_queue: &'a str,
    /// Set for IRSA: the ServiceAccount's `eks.amazonaws.com/role-arn` annotation.
    pub irsa_role_arn: Option<&'a str>,
    pub node_role: &'a str,
}

/// One Kubernetes object karpctl applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The content hash, also set as the `karpctl.sh/spec-hash` annotation of `body`.
    pub hash: String,
    /// Wait for this object to be ready after applying it (Deployments: rolled out).
    pub wait: bool,
    /// An object users are expected to edit (the default NodePool): one that exists without
    /// karpctl's label is left alone instead of being an error.
    pub user_owned: bool,
    #[serde(skip)]
    pub body: Value,
}

impl KubeObject {
    fn new(body: Value, wait: bool, user_owned: bool) -> Result<Self, ManifestError> {
        let field = |k: &str| body.pointer(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind), Some(name)) = (
            field("/apiVersion"),
            field("/kind"),
            field("/metadata/name"),
        ) else {
            return Err(ManifestError::Shape(body.to_string()));
        };
        let mut obj = Self {
            api_version,
            kind,
            namespace: field("/metadata/namespace"),
            name,
            hash: String::new(),
            wait,
            user_owned,
            body,
        };
        let meta = obj.body["metadata"]
            .as_object_mut()
            .ok_or_else(|| ManifestError::Shape(obj.name.clone()))?;
        meta.entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| ManifestError::Shape(obj.name.clone()))?
            .insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        obj.hash = content_hash(&obj.body);
        obj.body["metadata"]
            .as_object_mut()
            .expect("checked above")
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| ManifestError::Shape(obj.name.clone()))?
            .insert(SPEC_HASH_ANNOTATION.into(), obj.hash.clone().into());
        Ok(obj)
    }

    /// `kind namespace/name` in plan lines: `deployment kube-system/karpenter`.
    pub fn plan_kind(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The resource's plural, as the API path names it.
    pub fn plural(&self) -> String {
        plural(&self.kind)
    }
}

pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("class") || lower.ends_with("ss") {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("rendering template {name}: {source}")]
    Render {
        name: &'static str,
        #[source]
        source: Box<handlebars::RenderError>,
    },
    #[error("template {name} is not valid YAML: {message}")]
    Yaml { name: &'static str, message: String },
    #[error("a manifest lacks apiVersion, kind or metadata.name: {0}")]
    Shape(String),
    #[error("building the default {kind}: {message}")]
    Default { kind: &'static str, message: String },
}

/// FNV-1a over the canonical JSON (object keys sorted by serde_json's map): stable across
/// machines and releases.
pub fn content_hash(body: &Value) -> String {
    let json = serde_json::to_vec(body).expect("a Value serializes");
    format!("{:016x}", karpctl_api::hash::fnv1a64(json))
}

/// The controller's objects in apply order (namespace, identity, RBAC, Service, PDB, and
/// the Deployment last, waited on).
pub fn controller_objects(
    ctx: &Context<'_>,
    settings: &ControllerSettings,
) -> Result<Vec<KubeObject>, ManifestError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("json", Box::new(json_helper));
    hb.register_partial(
        "labels",
        include_str!("../../templates/controller/labels.hbs"),
    )
    .expect("the labels partial parses");
    let data = json!({
        "create_namespace": ctx.namespace != "kube-system" && ctx.namespace != "default",
        "namespace": ctx.namespace,
        "service_account": ctx.service_account,
        "irsa_role_arn": ctx.irsa_role_arn,
        "cluster_name": ctx.cluster,
        "cluster_endpoint": ctx.endpoint,
        "interruption_queue": ctx.interruption_queue,
        "region": ctx.region,
        "image": settings.image,
        "replicas": settings.replicas,
        "log_level": settings.log_level,
        "batch_idle_duration": settings.batch_idle_duration,
        "batch_max_duration": settings.batch_max_duration,
        "launch_ttl": settings.launch_ttl,
        "registration_ttl": settings.registration_ttl,
        "cpu": settings.cpu,
        "memory": settings.memory,
        "memory_limit": settings.memory,
    });
    let mut out = Vec::new();
    for (name, template) in TEMPLATES {
        let text = hb
            .render_template(template, &data)
            .map_err(|e| ManifestError::Render {
                name,
                source: Box::new(e),
            })?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| ManifestError::Yaml {
                name,
                message: e.to_string(),
            })?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            out.push(KubeObject::new(doc, *name == "deployment", false)?);
        }
    }
    Ok(out)
}

fn json_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
    out.write(&value.to_string())?;
    Ok(())
}

/// A NodePool and its EC2NodeClass as `init` creates them (karpctl.yaml `nodePools:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodePoolSettings {
    pub name: String,
    /// `on-demand` and/or `spot`.
    pub capacity_types: Vec<String>,
    /// `karpenter.k8s.aws/instance-category` values.
    pub instance_categories: Vec<String>,
    /// Instance generations above this (upstream's default NodePool: `Gt 2`).
    pub min_generation_above: u32,
    pub architectures: Vec<String>,
    /// Exact instance types; empty for any the other requirements allow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<karpctl_api::v1::Taint>,
    /// Resource limits of the pool (`cpu`, `memory`).
    pub limits: BTreeMap<String, String>,
    /// `WhenEmptyOrUnderutilized` (consolidation on) or `WhenEmpty`.
    pub consolidation_policy: String,
    pub consolidate_after: String,
    pub expire_after: String,
    pub node_class: NodeClassSettings,
}

impl Default for NodePoolSettings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            capacity_types: vec!["on-demand".into()],
            instance_categories: vec!["c".into(), "m".into(), "r".into()],
            min_generation_above: 2,
            architectures: vec!["amd64".into()],
            instance_types: vec![],
            labels: BTreeMap::new(),
            taints: vec![],
            limits: BTreeMap::from([("cpu".into(), "1000".into())]),
            consolidation_policy: "WhenEmptyOrUnderutilized".into(),
            consolidate_after: "1m".into(),
            expire_after: "720h".into(),
            node_class: NodeClassSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeClassSettings {
    /// Defaults to the NodePool's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ami_alias: String,
    pub volume_size: String,
    /// Security groups (ids) beyond the discovery-tagged ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_security_groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl Default for NodeClassSettings {
    fn default() -> Self {
        Self {
            name: None,
            ami_alias: "al2023@latest".into(),
            volume_size: "20Gi".into(),
            extra_security_groups: vec![],
            tags: BTreeMap::new(),
        }
    }
}

impl NodePoolSettings {
    pub fn node_class_name(&self) -> &str {
        self.node_class.name.as_deref().unwrap_or(&self.name)
    }
}

/// The EC2NodeClass and NodePool of one pool setting, validated as the API server would
/// (the typed v1 structs reject what upstream rejects).
pub fn node_pool_objects(
    ctx: &Context<'_>,
    pool: &NodePoolSettings,
) -> Result<Vec<KubeObject>, ManifestError> {
    let bad = |what: &str, value: &str, allowed: &[&str]| ManifestError::Default {
        kind: "NodePool",
        message: format!(
            "nodePools[{}]: {what} {value:?} is not one of {}",
            pool.name,
            allowed.join(", ")
        ),
    };
    const CAPACITY_TYPES: &[&str] = &["on-demand", "spot", "reserved"];
    const ARCHITECTURES: &[&str] = &["amd64", "arm64"];
    if let Some(c) = pool
        .capacity_types
        .iter()
        .find(|c| !CAPACITY_TYPES.contains(&c.as_str()))
    {
        return Err(bad("capacity type", c, CAPACITY_TYPES));
    }
    if let Some(a) = pool
        .architectures
        .iter()
        .find(|a| !ARCHITECTURES.contains(&a.as_str()))
    {
        return Err(bad("architecture", a, ARCHITECTURES));
    }
    let nc = &pool.node_class;
    let discovery = json!({labels_discovery(): ctx.cluster});
    let mut sg_terms = vec![json!({"tags": discovery})];
    sg_terms.extend(nc.extra_security_groups.iter().map(|id| json!({"id": id})));
    let node_class = json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": pool.node_class_name()},
        "spec": {
            "role": ctx.node_role,
            "amiSelectorTerms": [{"alias": nc.ami_alias}],
            "subnetSelectorTerms": [{"tags": discovery}],
            "securityGroupSelectorTerms": sg_terms,
            "blockDeviceMappings": [{
                "deviceName": "/dev/xvda",
                "ebs": {"volumeSize": nc.volume_size, "volumeType": "gp3", "encrypted": true, "deleteOnTermination": true}
            }],
            "metadataOptions": {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 1, "httpTokens": "required"},
            "tags": nc.tags,
        }
    });
    let mut requirements = vec![
        json!({"key": labels::CAPACITY_TYPE, "operator": "In", "values": pool.capacity_types}),
        json!({"key": labels::ARCH, "operator": "In", "values": pool.architectures}),
        json!({"key": labels::OS, "operator": "In", "values": ["linux"]}),
    ];
    if !pool.instance_categories.is_empty() {
        requirements.push(json!({"key": labels::INSTANCE_CATEGORY, "operator": "In", "values": pool.instance_categories}));
    }
    if pool.min_generation_above > 0 {
        requirements.push(json!({"key": labels::INSTANCE_GENERATION, "operator": "Gt", "values": [pool.min_generation_above.to_string()]}));
    }
    if !pool.instance_types.is_empty() {
        requirements.push(
            json!({"key": labels::INSTANCE_TYPE, "operator": "In", "values": pool.instance_types}),
        );
    }
    let mut template = json!({
        "spec": {
            "nodeClassRef": {"group": labels::AWS_GROUP, "kind": "EC2NodeClass", "name": pool.node_class_name()},
            "requirements": requirements,
            "expireAfter": pool.expire_after,
        }
    });
    if !pool.labels.is_empty() {
        template["metadata"] = json!({"labels": pool.labels});
    }
    if !pool.taints.is_empty() {
        template["spec"]["taints"] = serde_json::to_value(&pool.taints).expect("taints serialize");
    }
    let node_pool = json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": pool.name},
        "spec": {
            "template": template,
            "limits": pool.limits,
            "disruption": {"consolidationPolicy": pool.consolidation_policy, "consolidateAfter": pool.consolidate_after},
        }
    });
    // Through the typed API: an invalid requirement or a misspelt policy is caught here, with
    // the field named, before anything is applied.
    let typed: karpctl_api::v1::NodePool =
        serde_json::from_value(node_pool.clone()).map_err(|e| ManifestError::Default {
            kind: "NodePool",
            message: e.to_string(),
        })?;
    karpctl_api::validation::node_pool(&typed).map_err(|e| ManifestError::Default {
        kind: "NodePool",
        message: e.to_string(),
    })?;
    let typed: karpctl_api::v1::EC2NodeClass =
        serde_json::from_value(node_class.clone()).map_err(|e| ManifestError::Default {
            kind: "EC2NodeClass",
            message: e.to_string(),
        })?;
    karpctl_api::validation::ec2_node_class(&typed).map_err(|e| ManifestError::Default {
        kind: "EC2NodeClass",
        message: e.to_string(),
    })?;
    Ok(vec![
        KubeObject::new(node_class, false, true)?,
        KubeObject::new(node_pool, false, true)?,
    ])
}

fn labels_discovery() -> &'static str {
    super::init::DISCOVERY_TAG
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            cluster: "prod",
            region: "eu-west-1",
            endpoint: "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            namespace: "kube-system",
            service_account: "karpenter",
            interruption_queue: "Karpenter-prod",
            irsa_role_arn: None,
            node_role: "KarpenterNodeRole-prod",
        }
    }

    fn find<'a>(objs: &'a [KubeObject], kind: &str, name: &str) -> &'a KubeObject {
        objs.iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn the_deployment_carries_upstream_labels_settings_and_placement() {
        let objs = controller_objects(&ctx(), &ControllerSettings::default()).unwrap();
        let d = &find(&objs, "Deployment", "karpenter").body;
        assert_eq!(d["spec"]["replicas"], 2);
        let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["app.kubernetes.io/name"], "karpenter");
        assert_eq!(pod_labels["app.kubernetes.io/instance"], "karpenter");
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["priorityClassName"], "system-cluster-critical");
        let expr = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(expr["key"], "karpenter.sh/nodepool");
        assert_eq!(expr["operator"], "DoesNotExist");
        assert_eq!(
            spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                [0]["topologyKey"],
            "kubernetes.io/hostname"
        );
        let c = &spec["containers"][0];
        assert_eq!(c["securityContext"]["runAsNonRoot"], true);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let env: BTreeMap<String, Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].clone()))
            .collect();
        assert_eq!(env["CLUSTER_NAME"], "prod");
        assert_eq!(
            env["CLUSTER_ENDPOINT"],
            "https://ABC.gr7.eu-west-1.eks.amazonaws.com"
        );
        assert_eq!(env["INTERRUPTION_QUEUE"], "Karpenter-prod");
        assert_eq!(env["BATCH_IDLE_DURATION"], "1s");
        assert!(d["metadata"]["annotations"][SPEC_HASH_ANNOTATION].is_string());
        assert_eq!(d["metadata"]["labels"][MANAGED_BY_LABEL], "karpctl");
        assert!(find(&objs, "Deployment", "karpenter").wait);
    }

    #[test]
    fn kube_system_is_not_created_but_another_namespace_is_and_irsa_annotates_the_account() {
        let objs = controller_objects(&ctx(), &ControllerSettings::default()).unwrap();
        assert!(objs.iter().all(|o| o.kind != "Namespace"));
        let sa = &find(&objs, "ServiceAccount", "karpenter").body;
        assert!(
            sa["metadata"]["annotations"]
                .get("eks.amazonaws.com/role-arn")
                .is_none()
        );

        let mut c = ctx();
        c.namespace = "karpenter";
        c.irsa_role_arn = Some("arn:aws:iam::1:role/KarpenterControllerRole-prod");
        let objs = controller_objects(&c, &ControllerSettings::default()).unwrap();
        assert_eq!(objs[0].kind, "Namespace", "the namespace comes first");
        let sa = &find(&objs, "ServiceAccount", "karpenter").body;
        assert_eq!(sa["metadata"]["namespace"], "karpenter");
        assert_eq!(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::1:role/KarpenterControllerRole-prod"
        );
        let binding = &find(&objs, "ClusterRoleBinding", "karpenter-core").body;
        assert_eq!(binding["subjects"][0]["namespace"], "karpenter");
    }

    #[test]
    fn values_with_yaml_metacharacters_stay_strings() {
        let mut c = ctx();
        c.cluster = "yes";
        let s = ControllerSettings {
            log_level: "debug: x".into(),
            ..Default::default()
        };
        let objs = controller_objects(&c, &s).unwrap();
        let env = &find(&objs, "Deployment", "karpenter").body["spec"]["template"]["spec"]["containers"]
            [0]["env"];
        assert_eq!(env[0]["value"], "yes");
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["value"] == "debug: x")
        );
    }

    #[test]
    fn hashes_change_with_content_only() {
        let a = controller_objects(&ctx(), &ControllerSettings::default()).unwrap();
        let b = controller_objects(&ctx(), &ControllerSettings::default()).unwrap();
        assert_eq!(a, b);
        let c = controller_objects(
            &ctx(),
            &ControllerSettings {
                replicas: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let changed: Vec<_> = a
            .iter()
            .zip(&c)
            .filter(|(x, y)| x.hash != y.hash)
            .map(|(x, _)| x.id())
            .collect();
        assert_eq!(changed, vec!["kube-system/karpenter".to_owned()]);
        assert_eq!(find(&a, "Deployment", "karpenter").plural(), "deployments");
        assert_eq!(plural("EC2NodeClass"), "ec2nodeclasses");
        assert_eq!(plural("PodDisruptionBudget"), "poddisruptionbudgets");
    }

    #[test]
    fn the_default_node_pool_is_upstreams_with_discovery_selectors_and_the_node_role() {
        let objs = node_pool_objects(&ctx(), &NodePoolSettings::default()).unwrap();
        let nc = &find(&objs, "EC2NodeClass", "default").body;
        assert_eq!(nc["spec"]["role"], "KarpenterNodeRole-prod");
        assert_eq!(nc["spec"]["amiSelectorTerms"][0]["alias"], "al2023@latest");
        assert_eq!(
            nc["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"],
            "prod"
        );
        let np = &find(&objs, "NodePool", "default").body;
        let reqs = np["spec"]["template"]["spec"]["requirements"]
            .as_array()
            .unwrap();
        let get = |k: &str| reqs.iter().find(|r| r["key"] == k).unwrap();
        assert_eq!(get(labels::CAPACITY_TYPE)["values"], json!(["on-demand"]));
        assert_eq!(
            get(labels::INSTANCE_CATEGORY)["values"],
            json!(["c", "m", "r"])
        );
        assert_eq!(get(labels::INSTANCE_GENERATION)["operator"], "Gt");
        assert_eq!(np["spec"]["limits"]["cpu"], "1000");
        assert_eq!(
            np["spec"]["disruption"]["consolidationPolicy"],
            "WhenEmptyOrUnderutilized"
        );
        assert!(objs.iter().all(|o| o.user_owned));
    }

    #[test]
    fn an_invalid_pool_setting_is_an_error_naming_the_field() {
        let pool = NodePoolSettings {
            consolidation_policy: "Sometimes".into(),
            ..Default::default()
        };
        let err = node_pool_objects(&ctx(), &pool).unwrap_err().to_string();
        assert!(err.contains("Sometimes"), "{err}");
        let pool = NodePoolSettings {
            capacity_types: vec!["cheap".into()],
            ..Default::default()
        };
        let err = node_pool_objects(&ctx(), &pool).unwrap_err().to_string();
        assert!(err.contains("cheap"), "{err}");
    }
}
