//! `karpctl.yaml`: everything `init` decides, as one declarative file that can live in a
//! repository next to the rest of a cluster's infrastructure code. `init -f` plans and
//! applies it, the guided setup writes it, and flags given next to it win over it. Unknown
//! or malformed fields are errors naming the file, line and column, never silently ignored.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::{IdentityArg, SettingsArgs};
use crate::plan::controller::{ControllerSettings, NodePoolSettings};
use crate::plan::init::{IdentityMode, Options};

pub const API_VERSION: &str = "karpctl.sh/v1alpha1";
pub const KIND: &str = "Setup";

/// The file, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetupFile {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `pod-identity` or `irsa`; chosen from the cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default = "namespace")]
    pub namespace: String,
    #[serde(default = "service_account")]
    pub service_account: String,
    #[serde(default)]
    pub controller: ControllerSettings,
    #[serde(default = "node_pools")]
    pub node_pools: Vec<NodePoolSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    PodIdentity,
    Irsa,
}

fn api_version() -> String {
    API_VERSION.into()
}
fn kind() -> String {
    KIND.into()
}
fn namespace() -> String {
    "kube-system".into()
}
fn service_account() -> String {
    "karpenter".into()
}
fn node_pools() -> Vec<NodePoolSettings> {
    vec![NodePoolSettings::default()]
}

impl SetupFile {
    pub fn new(cluster: &str) -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            cluster: cluster.into(),
            region: None,
            profile: None,
            context: None,
            identity: None,
            namespace: namespace(),
            service_account: service_account(),
            controller: ControllerSettings::default(),
            node_pools: node_pools(),
        }
    }

    /// Parses the file's text; errors name the line and column (`name` is the path shown).
    pub fn parse(name: &str, text: &str) -> anyhow::Result<Self> {
        let file: SetupFile = serde_saphyr::from_str(text)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))
            .context("reading the karpctl setup file")?;
        if file.api_version != API_VERSION || file.kind != KIND {
            anyhow::bail!(
                "{name}: apiVersion/kind must be {API_VERSION}/{KIND}, found {}/{}",
                file.api_version,
                file.kind
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for pool in &file.node_pools {
            if !names.insert(pool.name.as_str()) {
                anyhow::bail!("{name}: nodePools: {:?} appears twice", pool.name);
            }
        }
        Ok(file)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("a SetupFile serializes");
        format!(
            "# karpctl setup: `karpctl init -f <this file>` plans and applies it; re-applying an\n# edited file changes only what changed.\n{body}"
        )
    }

    /// Flags given on the command line win over the file.
    pub fn apply_flags(&mut self, args: &SettingsArgs) {
        if let Some(c) = &args.cluster {
            self.cluster = c.clone();
        }
        if args.region.is_some() {
            self.region = args.region.clone();
        }
        if args.profile.is_some() {
            self.profile = args.profile.clone();
        }
        if args.context.is_some() {
            self.context = args.context.clone();
        }
        if let Some(i) = args.identity {
            self.identity = Some(match i {
                IdentityArg::PodIdentity => Identity::PodIdentity,
                IdentityArg::Irsa => Identity::Irsa,
            });
        }
        if let Some(ns) = &args.namespace {
            self.namespace = ns.clone();
        }
        if let Some(sa) = &args.service_account {
            self.service_account = sa.clone();
        }
        if let Some(image) = &args.image {
            self.controller.image = image.clone();
        }
        if let Some(pool) = self.node_pools.first_mut() {
            if let Some(c) = &args.capacity_types {
                pool.capacity_types = c.clone();
            }
            if let Some(c) = &args.instance_categories {
                pool.instance_categories = c.clone();
            }
            if let Some(cpu) = &args.cpu_limit {
                pool.limits.insert("cpu".into(), cpu.clone());
            }
        }
    }

    pub fn options(&self) -> Options {
        Options {
            identity: self.identity.map(|i| match i {
                Identity::PodIdentity => IdentityMode::PodIdentity,
                Identity::Irsa => IdentityMode::Irsa,
            }),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            controller: self.controller.clone(),
            node_pools: self.node_pools.clone(),
            adopt: false,
        }
    }

    /// The `karpctl init` command line that decides the same as this file (for the settings
    /// flags can express; the rest needs the file).
    pub fn command_line(&self) -> String {
        let mut cmd = vec![
            "karpctl".to_owned(),
            "init".into(),
            "--cluster".into(),
            self.cluster.clone(),
        ];
        let mut flag = |name: &str, value: &str| {
            cmd.push(format!("--{name}"));
            cmd.push(value.to_owned());
        };
        if let Some(r) = &self.region {
            flag("region", r);
        }
        if let Some(p) = &self.profile {
            flag("profile", p);
        }
        if let Some(c) = &self.context {
            flag("context", c);
        }
        if let Some(i) = self.identity {
            flag(
                "identity",
                match i {
                    Identity::PodIdentity => "pod-identity",
                    Identity::Irsa => "irsa",
                },
            );
        }
        if self.namespace != namespace() {
            flag("namespace", &self.namespace);
        }
        if self.service_account != service_account() {
            flag("service-account", &self.service_account);
        }
        if self.controller.image != ControllerSettings::default().image {
            flag("image", &self.controller.image);
        }
        if let Some(pool) = self.node_pools.first() {
            flag("capacity-types", &pool.capacity_types.join(","));
            flag("instance-categories", &pool.instance_categories.join(","));
            if let Some(cpu) = pool.limits.get("cpu") {
                flag("cpu-limit", cpu);
            }
        }
        cmd.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,@=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_upstreams_defaults() {
        let f = SetupFile::parse("k.yaml", "cluster: prod\n").unwrap();
        assert_eq!(f.namespace, "kube-system");
        assert_eq!(f.node_pools.len(), 1);
        assert_eq!(f.node_pools[0].name, "default");
        assert_eq!(f.node_pools[0].capacity_types, ["on-demand"]);
        assert_eq!(f.controller.replicas, 2);
    }

    #[test]
    fn a_full_file_round_trips() {
        let text = r#"
apiVersion: karpctl.sh/v1alpha1
kind: Setup
cluster: prod
region: eu-west-1
identity: irsa
namespace: karpenter
controller:
  image: registry.example.com/karpenter:1.2.3
  replicas: 3
nodePools:
  - name: general
    capacityTypes: [on-demand, spot]
    instanceCategories: [c, m]
    labels: {team: web}
    taints:
      - key: dedicated
        value: web
        effect: NoSchedule
    limits: {cpu: "200", memory: 800Gi}
    nodeClass:
      volumeSize: 50Gi
      extraSecurityGroups: [sg-0123]
      tags: {cost-center: "42"}
"#;
        let f = SetupFile::parse("k.yaml", text).unwrap();
        assert_eq!(f.identity, Some(Identity::Irsa));
        assert_eq!(f.controller.replicas, 3);
        assert_eq!(f.controller.log_level, "info", "unset fields keep defaults");
        let pool = &f.node_pools[0];
        assert_eq!(pool.node_class.volume_size, "50Gi");
        assert_eq!(pool.node_class_name(), "general");
        assert_eq!(pool.taints[0].key, "dedicated");
        let again = SetupFile::parse("k.yaml", &f.to_yaml()).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn unknown_and_malformed_fields_name_the_line() {
        let err = format!(
            "{:#}",
            SetupFile::parse(
                "k.yaml",
                "cluster: prod\nnodePools:\n  - name: a\n    capacityType: [spot]\n"
            )
            .unwrap_err()
        );
        assert!(err.contains("k.yaml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("capacityType"), "{err}");
        let err = format!(
            "{:#}",
            SetupFile::parse("k.yaml", "cluster: prod\ncontroller:\n  replicas: two\n")
                .unwrap_err()
        );
        assert!(err.contains("line 3"), "{err}");
        let err = format!(
            "{:#}",
            SetupFile::parse(
                "k.yaml",
                "cluster: prod\nnodePools: [{name: a}, {name: a}]\n"
            )
            .unwrap_err()
        );
        assert!(err.contains("\"a\" appears twice"), "{err}");
    }

    #[test]
    fn the_command_line_says_the_same_as_the_file() {
        let mut f = SetupFile::new("prod");
        f.region = Some("eu-west-1".into());
        f.identity = Some(Identity::PodIdentity);
        f.node_pools[0].capacity_types = vec!["on-demand".into(), "spot".into()];
        assert_eq!(
            f.command_line(),
            "karpctl init --cluster prod --region eu-west-1 --identity pod-identity --capacity-types on-demand,spot --instance-categories c,m,r --cpu-limit 1000"
        );
    }
}
