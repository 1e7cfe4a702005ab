//! Reading manifests the way every karpctl command does: multi-document YAML (or `kind: List`),
//! v1beta1 Karpenter objects converted to v1 with notes, unknown fields and impossible
//! requirements refused with the file, document, object and field named.
//!
//! Objects that are not Karpenter's (Deployments, Pods...) pass through untouched for the
//! caller to interpret.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::convert::{self, DisplacedKubelet, Kind, Note};
use crate::labels;
use crate::requirements::parse_requirements;
use crate::v1::{EC2NodeClass, NodeClaim, NodePool};
use crate::validation::{self, FieldError, FieldErrors};

/// One object read from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    NodePool(Box<NodePool>),
    NodeClaim(Box<NodeClaim>),
    EC2NodeClass(Box<EC2NodeClass>),
    /// Anything that is not a Karpenter object, as written.
    Other(Value),
}

impl Object {
    /// The object as it would be written back (v1 for Karpenter objects).
    pub fn to_value(&self) -> Value {
        let value = match self {
            Self::NodePool(o) => serde_json::to_value(o),
            Self::NodeClaim(o) => serde_json::to_value(o),
            Self::EC2NodeClass(o) => serde_json::to_value(o),
            Self::Other(value) => return value.clone(),
        };
        value.unwrap_or(Value::Null)
    }
}

/// Everything read from a set of files, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    pub objects: Vec<Object>,
    /// Where each object was read from, parallel to `objects`, so errors found later (a
    /// NodePool naming an unknown instance type) can name the file and line too.
    pub origins: Vec<Origin>,
    /// One per change made converting v1beta1 objects.
    pub notes: Vec<Note>,
}

impl Manifests {
    pub fn node_pools(&self) -> impl Iterator<Item = &NodePool> {
        self.objects.iter().filter_map(|o| match o {
            Object::NodePool(pool) => Some(pool.as_ref()),
            _ => None,
        })
    }

    pub fn node_claims(&self) -> impl Iterator<Item = &NodeClaim> {
        self.objects.iter().filter_map(|o| match o {
            Object::NodeClaim(claim) => Some(claim.as_ref()),
            _ => None,
        })
    }

    pub fn ec2_node_classes(&self) -> impl Iterator<Item = &EC2NodeClass> {
        self.objects.iter().filter_map(|o| match o {
            Object::EC2NodeClass(class) => Some(class.as_ref()),
            _ => None,
        })
    }

    /// Non-Karpenter objects (workloads, nodes...).
    pub fn others(&self) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter_map(|o| match o {
            Object::Other(value) => Some(value),
            _ => None,
        })
    }

    /// Every object with where it was read from.
    pub fn with_origins(&self) -> impl Iterator<Item = (&Object, &Origin)> {
        self.objects.iter().zip(&self.origins)
    }
}

/// Where an object came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file name as the user gave it (or `<stdin>`).
    pub source: String,
    /// 1-based document index within the file.
    pub document: usize,
    /// 1-based line the document starts on, when known.
    pub line: Option<u64>,
    /// `NodePool/default`, once known.
    pub object: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if let Some(line) = self.line.filter(|l| *l > 0) {
            write!(f, " (line {line})")?;
        }
        if let Some(object) = &self.object {
            write!(f, ", {object}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: invalid YAML: {error}")]
    Yaml {
        file: String,
        error: Box<serde_saphyr::Error>,
    },
    #[error("{origin}: {errors}")]
    Invalid { origin: Origin, errors: FieldErrors },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Read one YAML text (`source` names it in errors).
pub fn read(source: &str, yaml: &str) -> Result<Manifests> {
    read_all(&[(source, yaml)])
}

/// Read several files as one batch, so a v1beta1 NodePool's kubelet block can move to an
/// EC2NodeClass defined in another file.
pub fn read_all(files: &[(&str, &str)]) -> Result<Manifests> {
    let mut documents = Vec::new();
    for (source, yaml) in files {
        let parsed: Vec<serde_saphyr::Spanned<Value>> =
            serde_saphyr::from_multiple(yaml).map_err(|error| Error::Yaml {
                file: (*source).to_owned(),
                error: Box::new(error),
            })?;
        for (i, document) in parsed.into_iter().enumerate() {
            let origin = Origin {
                source: (*source).to_owned(),
                document: i + 1,
                line: Some(document.referenced.line()),
                object: None,
            };
            expand_lists(document.value, origin, &mut documents)?;
        }
    }
    read_values(documents)
}

/// Split `kind: List` (what `kubectl get -o yaml` prints) into its items.
fn expand_lists(value: Value, origin: Origin, out: &mut Vec<(Value, Origin)>) -> Result<()> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref object) if object.get("kind").and_then(Value::as_str) == Some("List") => {
            for item in object
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                expand_lists(item.clone(), origin.clone(), out)?;
            }
            Ok(())
        }
        Value::Object(_) => {
            out.push((value, origin));
            Ok(())
        }
        _ => Err(invalid(
            origin,
            "",
            "expected a Kubernetes object (a mapping with apiVersion and kind)",
        )),
    }
}

fn invalid(origin: Origin, path: &str, message: impl Into<String>) -> Error {
    let mut errors = FieldErrors::default();
    errors.push(FieldError::new(
        if path.is_empty() { "(document)" } else { path },
        message,
    ));
    Error::Invalid { origin, errors }
}

/// Convert, then strictly decode, already-parsed documents.
pub fn read_values(documents: Vec<(Value, Origin)>) -> Result<Manifests> {
    let mut converted = Vec::with_capacity(documents.len());
    let mut notes = Vec::new();
    let mut displaced = Vec::new();
    for (value, mut origin) in documents {
        origin.object = Some(convert::object_name(&value));
        let result =
            convert::convert(value).map_err(|e| invalid(origin.clone(), &e.path, e.message))?;
        notes.extend(result.notes);
        displaced.extend(result.kubelet);
        converted.push((result.value, origin));
    }
    move_kubelets(&mut converted, displaced, &mut notes);

    let mut objects = Vec::with_capacity(converted.len());
    let mut origins = Vec::with_capacity(converted.len());
    for (value, origin) in converted {
        objects.push(decode(value).map_err(|errors| Error::Invalid {
            origin: origin.clone(),
            errors,
        })?);
        origins.push(origin);
    }
    Ok(Manifests {
        objects,
        origins,
        notes,
    })
}

/// Give each EC2NodeClass the kubelet block its v1beta1 NodePools carried, where that is
/// unambiguous, and drop the compatibility annotation from those NodePools.
fn move_kubelets(
    objects: &mut [(Value, Origin)],
    displaced: Vec<DisplacedKubelet>,
    notes: &mut Vec<Note>,
) {
    for moved in &displaced {
        let conflicting = displaced
            .iter()
            .filter(|other| other.node_class == moved.node_class && other.kubelet != moved.kubelet)
            .map(|other| format!("NodePool/{}", other.node_pool))
            .collect::<Vec<_>>();
        let class = objects.iter_mut().map(|(v, _)| v).find(|v| {
            v["kind"] == "EC2NodeClass"
                && v["metadata"]["name"].as_str() == Some(moved.node_class.as_str())
        });
        let pool_name = format!("NodePool/{}", moved.node_pool);
        let Some(class) = class else {
            notes.push(Note {
                object: pool_name,
                message: format!(
                    "EC2NodeClass/{} is not among the inputs: copy the kubelet block into its spec.kubelet, then remove the {} annotation",
                    moved.node_class,
                    labels::KUBELET_COMPATIBILITY
                ),
            });
            continue;
        };
        let existing = class["spec"].get("kubelet").cloned();
        if !conflicting.is_empty() || existing.as_ref().is_some_and(|k| k != &moved.kubelet) {
            notes.push(Note {
                object: pool_name,
                message: format!(
                    "kubelet differs from what other NodePools ({}) or EC2NodeClass/{} set; kept in the {} annotation — give this NodePool its own EC2NodeClass",
                    conflicting.join(", "),
                    moved.node_class,
                    labels::KUBELET_COMPATIBILITY
                ),
            });
            continue;
        }
        if existing.is_none() {
            if let Some(spec) = class["spec"].as_object_mut() {
                spec.insert("kubelet".into(), moved.kubelet.clone());
            }
            notes.push(Note {
                object: format!("EC2NodeClass/{}", moved.node_class),
                message: format!("spec.kubelet: moved here from {pool_name}"),
            });
        }
        let pool = objects.iter_mut().map(|(v, _)| v).find(|v| {
            v["kind"] == "NodePool"
                && v["metadata"]["name"].as_str() == Some(moved.node_pool.as_str())
        });
        if let Some(pool) = pool
            && let Some(annotations) = pool["metadata"]["annotations"].as_object_mut()
        {
            annotations.remove(labels::KUBELET_COMPATIBILITY);
            if annotations.is_empty()
                && let Some(metadata) = pool["metadata"].as_object_mut()
            {
                metadata.remove("annotations");
            }
        }
    }
}

const OBJECT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const METADATA_KEYS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// Strictly decode a (converted) document and check what the API server would check.
fn decode(value: Value) -> Result<Object, FieldErrors> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    let Some((kind, _)) = Kind::of(api_version, kind) else {
        return Ok(Object::Other(value));
    };
    let mut errors = FieldErrors::default();
    // The derived root types ignore unknown top-level and metadata fields; refuse them here.
    unknown_keys(&value, "", OBJECT_KEYS, &mut errors);
    unknown_keys(&value["metadata"], "metadata", METADATA_KEYS, &mut errors);
    if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        errors.push(FieldError::new("metadata.name", "required"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let object = match kind {
        Kind::NodePool => {
            let pool: NodePool = typed(value)?;
            validation::node_pool(&pool)?;
            Object::NodePool(Box::new(pool))
        }
        Kind::NodeClaim => {
            let claim: NodeClaim = typed(value)?;
            parse_requirements(&claim.spec.requirements, "spec.requirements")?;
            Object::NodeClaim(Box::new(claim))
        }
        Kind::EC2NodeClass => {
            let class: EC2NodeClass = typed(value)?;
            validation::ec2_node_class(&class)?;
            Object::EC2NodeClass(Box::new(class))
        }
    };
    Ok(object)
}

fn unknown_keys(value: &Value, path: &str, known: &[&str], errors: &mut FieldErrors) {
    for key in value.as_object().into_iter().flat_map(|o| o.keys()) {
        if !known.contains(&key.as_str()) {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            errors.push(FieldError::new(field, format!("unknown field `{key}`")));
        }
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, FieldErrors> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let mut errors = FieldErrors::default();
        errors.push(FieldError::new(
            if path == "." {
                "(object)".to_owned()
            } else {
                path
            },
            err.into_inner().to_string(),
        ));
        errors
    })
}

/// Render objects as a multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String, serde_saphyr::SerializeError> {
    objects
        .iter()
        .map(|o| Ok(format!("---\n{}", serde_saphyr::to_string(o)?)))
        .collect()
}

/// The JSON document `karpctl convert --output json` prints.
pub fn to_json(manifests: &Manifests) -> Value {
    json!({
        "objects": manifests.objects.iter().map(Object::to_value).collect::<Vec<_>>(),
        "notes": manifests.notes,
    })
}
