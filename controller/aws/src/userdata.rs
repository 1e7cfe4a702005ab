//! The user data a node boots with, in each EKS AMI family's own format: AL2023's nodeadm
//! `NodeConfig` in MIME multipart, AL2's `/etc/eks/bootstrap.sh` call, Bottlerocket's TOML
//! settings. It is the only way the node learns its labels, taints (including
//! `karpenter.sh/unregistered`), max pods and kubelet settings, so what is rendered here is
//! what the Node will say.
//!
//! A node class's own `spec.userData` is merged as upstream does: AL2023 and AL2 keep the
//! user's MIME parts (or the whole script as one part) before Karpenter's; Bottlerocket puts
//! the user's TOML first; Custom uses the user's data alone.

use std::collections::BTreeMap;

use karpctl_api::v1::{AmiFamily, KubeletConfiguration, Taint};

const BOUNDARY: &str = "//";

/// What every node of the cluster needs to find and trust the apiserver.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterInfo {
    pub name: String,
    pub endpoint: String,
    /// Base64 PEM, as DescribeCluster gives it.
    pub certificate_authority: String,
    pub service_cidr: Option<String>,
}

impl ClusterInfo {
    /// The cluster DNS service address: the tenth address of the service CIDR (EKS's
    /// convention, `172.20.0.10` for `172.20.0.0/16`).
    pub fn dns_ip(&self) -> Option<String> {
        let cidr = self.service_cidr.as_deref()?;
        let base: std::net::Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
        Some(std::net::Ipv4Addr::from(u32::from(base) + 10).to_string())
    }
}

/// What one node is told at boot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bootstrap {
    pub labels: BTreeMap<String, String>,
    /// Taints, startup taints and `karpenter.sh/unregistered:NoExecute`.
    pub taints: Vec<Taint>,
    pub kubelet: Option<KubeletConfiguration>,
    /// The node class's `spec.userData`.
    pub custom: Option<String>,
}

/// The user data (not yet base64) for `family`.
pub fn render(family: AmiFamily, cluster: &ClusterInfo, node: &Bootstrap) -> String {
    match family {
        AmiFamily::Al2023 => al2023(cluster, node),
        AmiFamily::Al2 => al2(cluster, node),
        AmiFamily::Bottlerocket => bottlerocket(cluster, node),
        AmiFamily::Custom | AmiFamily::Windows2019 | AmiFamily::Windows2022 => {
            node.custom.clone().unwrap_or_default()
        }
    }
}

fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn taint_text(t: &Taint) -> String {
    match &t.value {
        Some(v) => format!("{}={v}:{}", t.key, t.effect.as_str()),
        None => format!("{}:{}", t.key, t.effect.as_str()),
    }
}

fn label_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The MIME parts of the user's data: its own parts when it is multipart, else the whole of
/// it as one part of `default_type`.
fn user_parts(custom: Option<&str>, default_type: &str) -> Vec<String> {
    let Some(custom) = custom.map(str::trim).filter(|c| !c.is_empty()) else {
        return Vec::new();
    };
    let head = &custom[..custom.len().min(500)];
    if custom.starts_with("MIME-Version") || head.contains("multipart/") {
        let boundary = head
            .split("boundary=")
            .nth(1)
            .map(|b| {
                b.trim_start_matches('"')
                    .split(['"', '\r', '\n', ';'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default();
        if !boundary.is_empty() {
            let delimiter = format!("--{boundary}");
            return custom
                .split(delimiter.as_str())
                .skip(1)
                .map(|p| p.trim_matches(['\r', '\n']).to_owned())
                .filter(|p| !p.is_empty() && !p.starts_with("--"))
                .collect();
        }
    }
    let content_type = if custom.contains("kind: NodeConfig") {
        "application/node.eks.aws"
    } else {
        default_type
    };
    vec![format!("Content-Type: {content_type}\n\n{custom}")]
}

fn mime(parts: Vec<String>) -> String {
    let mut out =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for part in parts {
        out.push_str(&format!("--{BOUNDARY}\n{part}\n\n"));
    }
    out.push_str(&format!("--{BOUNDARY}--\n"));
    out
}

fn al2023(cluster: &ClusterInfo, node: &Bootstrap) -> String {
    let mut config = match &node.kubelet {
        Some(k) => serde_json::to_value(k).unwrap_or_default(),
        None => serde_json::json!({}),
    };
    let config = config
        .as_object_mut()
        .expect("kubelet settings are an object");
    if !config.contains_key("clusterDNS")
        && let Some(dns) = cluster.dns_ip()
    {
        config.insert("clusterDNS".into(), serde_json::json!([dns]));
    }
    if !node.taints.is_empty() {
        let taints = node
            .taints
            .iter()
            .map(|t| {
                let mut taint = serde_json::json!({"key": t.key, "effect": t.effect.as_str()});
                if let Some(v) = &t.value {
                    taint["value"] = serde_json::json!(v);
                }
                taint
            })
            .collect::<Vec<_>>();
        config.insert("registerWithTaints".into(), serde_json::json!(taints));
    }
    let mut doc = vec![
        "---".to_owned(),
        "apiVersion: node.eks.aws/v1alpha1".to_owned(),
        "kind: NodeConfig".to_owned(),
        "spec:".to_owned(),
        "  cluster:".to_owned(),
        format!("    apiServerEndpoint: {}", quoted(&cluster.endpoint)),
        format!(
            "    certificateAuthority: {}",
            quoted(&cluster.certificate_authority)
        ),
    ];
    if let Some(cidr) = &cluster.service_cidr {
        doc.push(format!("    cidr: {}", quoted(cidr)));
    }
    doc.push(format!("    name: {}", quoted(&cluster.name)));
    doc.push("  kubelet:".to_owned());
    // JSON is YAML: the kubelet config block is written as one flow mapping.
    doc.push(format!(
        "    config: {}",
        serde_json::Value::Object(config.clone())
    ));
    if !node.labels.is_empty() {
        doc.push("    flags:".to_owned());
        doc.push(format!(
            "    - {}",
            quoted(&format!("--node-labels={}", label_text(&node.labels)))
        ));
    }
    let mut parts = user_parts(node.custom.as_deref(), "text/x-shellscript");
    parts.push(format!(
        "Content-Type: application/node.eks.aws\n\n{}",
        doc.join("\n")
    ));
    mime(parts)
}

fn al2(cluster: &ClusterInfo, node: &Bootstrap) -> String {
    let mut extra = Vec::new();
    if !node.labels.is_empty() {
        extra.push(format!("--node-labels=\"{}\"", label_text(&node.labels)));
    }
    if !node.taints.is_empty() {
        let taints = node.taints.iter().map(taint_text).collect::<Vec<_>>();
        extra.push(format!("--register-with-taints=\"{}\"", taints.join(",")));
    }
    let kubelet = node.kubelet.clone().unwrap_or_default();
    if let Some(max_pods) = kubelet.max_pods {
        extra.push(format!("--max-pods={max_pods}"));
    }
    if let Some(per_core) = kubelet.pods_per_core {
        extra.push(format!("--pods-per-core={per_core}"));
    }
    for (flag, map) in [
        ("--system-reserved", &kubelet.system_reserved),
        ("--kube-reserved", &kubelet.kube_reserved),
        ("--eviction-hard", &kubelet.eviction_hard),
    ] {
        if !map.is_empty() {
            let pairs = map
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>();
            extra.push(format!("{flag}=\"{}\"", pairs.join(",")));
        }
    }
    let mut script = vec![
        "#!/bin/bash -xe".to_owned(),
        "exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1"
            .to_owned(),
        format!(
            "/etc/eks/bootstrap.sh '{}' --apiserver-endpoint '{}' --b64-cluster-ca '{}' \\",
            cluster.name, cluster.endpoint, cluster.certificate_authority
        ),
    ];
    let dns = kubelet
        .cluster_dns
        .first()
        .cloned()
        .or_else(|| cluster.dns_ip());
    if let Some(dns) = dns {
        script.push(format!("--dns-cluster-ip '{dns}' \\"));
    }
    if kubelet.max_pods.is_some() {
        script.push("--use-max-pods false \\".to_owned());
    }
    script.push(format!("--kubelet-extra-args '{}'", extra.join(" ")));
    let mut parts = user_parts(
        node.custom.as_deref(),
        "text/x-shellscript; charset=\"us-ascii\"",
    );
    parts.push(format!(
        "Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{}",
        script.join("\n")
    ));
    mime(parts)
}

fn bottlerocket(cluster: &ClusterInfo, node: &Bootstrap) -> String {
    let mut out = String::new();
    if let Some(custom) = node.custom.as_deref().filter(|c| !c.trim().is_empty()) {
        out.push_str(custom.trim_end());
        out.push_str("\n\n");
    }
    let kubelet = node.kubelet.clone().unwrap_or_default();
    out.push_str("[settings.kubernetes]\n");
    out.push_str(&format!("api-server = {}\n", quoted(&cluster.endpoint)));
    out.push_str(&format!(
        "cluster-certificate = {}\n",
        quoted(&cluster.certificate_authority)
    ));
    out.push_str(&format!("cluster-name = {}\n", quoted(&cluster.name)));
    if let Some(dns) = kubelet
        .cluster_dns
        .first()
        .cloned()
        .or_else(|| cluster.dns_ip())
    {
        out.push_str(&format!("cluster-dns-ip = {}\n", quoted(&dns)));
    }
    if let Some(max_pods) = kubelet.max_pods {
        out.push_str(&format!("max-pods = {max_pods}\n"));
    }
    if !node.labels.is_empty() {
        out.push_str("\n[settings.kubernetes.node-labels]\n");
        for (k, v) in &node.labels {
            out.push_str(&format!("{} = {}\n", quoted(k), quoted(v)));
        }
    }
    if !node.taints.is_empty() {
        let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in &node.taints {
            let value = match &t.value {
                Some(v) => format!("{v}:{}", t.effect.as_str()),
                None => format!(":{}", t.effect.as_str()),
            };
            by_key.entry(&t.key).or_default().push(quoted(&value));
        }
        out.push_str("\n[settings.kubernetes.node-taints]\n");
        for (k, values) in by_key {
            out.push_str(&format!("{} = [{}]\n", quoted(k), values.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use karpctl_api::v1::TaintEffect;

    use super::*;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "sandbox".into(),
            endpoint: "https://127.0.0.1:6443".into(),
            certificate_authority: "Q0E=".into(),
            service_cidr: Some("172.20.0.0/16".into()),
        }
    }

    fn node() -> Bootstrap {
        Bootstrap {
            labels: BTreeMap::from([
                ("karpenter.sh/nodepool".to_owned(), "default".to_owned()),
                ("team".to_owned(), "a".to_owned()),
            ]),
            taints: vec![
                Taint::new("dedicated", TaintEffect::NoSchedule).value("gpu"),
                Taint::new("karpenter.sh/unregistered", TaintEffect::NoExecute),
            ],
            kubelet: Some(KubeletConfiguration {
                max_pods: Some(42),
                ..KubeletConfiguration::default()
            }),
            custom: None,
        }
    }

    #[test]
    fn dns_ip_is_the_tenth_service_address() {
        assert_eq!(cluster().dns_ip().as_deref(), Some("172.20.0.10"));
        let none = ClusterInfo {
            service_cidr: None,
            ..cluster()
        };
        assert_eq!(none.dns_ip(), None);
    }

    #[test]
    fn al2023_is_a_node_config_in_mime() {
        let text = render(AmiFamily::Al2023, &cluster(), &node());
        assert!(text.starts_with("MIME-Version: 1.0\n"), "{text}");
        assert!(text.contains("Content-Type: application/node.eks.aws"));
        assert!(text.contains("kind: NodeConfig"));
        assert!(text.contains("apiServerEndpoint: \"https://127.0.0.1:6443\""));
        assert!(text.contains("cidr: \"172.20.0.0/16\""));
        assert!(text.contains("- \"--node-labels=karpenter.sh/nodepool=default,team=a\""));
        assert!(text.contains(r#""maxPods":42"#), "{text}");
        assert!(text.contains(r#""clusterDNS":["172.20.0.10"]"#), "{text}");
        assert!(
            text.contains(r#"{"effect":"NoSchedule","key":"dedicated","value":"gpu"}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"effect":"NoExecute","key":"karpenter.sh/unregistered"}"#));
        assert!(text.trim_end().ends_with("--//--"));
    }

    #[test]
    fn al2023_keeps_the_users_parts_first() {
        let custom = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUND\"\n\n--BOUND\nContent-Type: text/x-shellscript\n\necho hi\n--BOUND--\n";
        let text = render(
            AmiFamily::Al2023,
            &cluster(),
            &Bootstrap {
                custom: Some(custom.into()),
                ..node()
            },
        );
        let user = text.find("echo hi").unwrap();
        let ours = text.find("kind: NodeConfig").unwrap();
        assert!(user < ours, "{text}");
        assert_eq!(text.matches("--//\n").count(), 2, "{text}");

        let script = render(
            AmiFamily::Al2023,
            &cluster(),
            &Bootstrap {
                custom: Some("#!/bin/bash\necho plain".into()),
                ..node()
            },
        );
        assert!(script.contains("Content-Type: text/x-shellscript\n\n#!/bin/bash\necho plain"));
    }

    #[test]
    fn al2_passes_kubelet_flags_to_bootstrap_sh() {
        let text = render(AmiFamily::Al2, &cluster(), &node());
        assert!(text.contains("/etc/eks/bootstrap.sh 'sandbox' --apiserver-endpoint 'https://127.0.0.1:6443' --b64-cluster-ca 'Q0E=' \\"), "{text}");
        assert!(text.contains("--dns-cluster-ip '172.20.0.10' \\"));
        assert!(text.contains("--use-max-pods false \\"));
        assert!(text.contains("--kubelet-extra-args '--node-labels=\"karpenter.sh/nodepool=default,team=a\" --register-with-taints=\"dedicated=gpu:NoSchedule,karpenter.sh/unregistered:NoExecute\" --max-pods=42'"), "{text}");
    }

    #[test]
    fn bottlerocket_is_toml_settings() {
        let text = render(AmiFamily::Bottlerocket, &cluster(), &node());
        let want = [
            "[settings.kubernetes]",
            "cluster-name = \"sandbox\"",
            "max-pods = 42",
            "[settings.kubernetes.node-labels]",
            "\"team\" = \"a\"",
            "[settings.kubernetes.node-taints]",
            "\"dedicated\" = [\"gpu:NoSchedule\"]",
            "\"karpenter.sh/unregistered\" = [\":NoExecute\"]",
        ];
        for line in want {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn custom_family_uses_the_users_data_alone() {
        let text = render(
            AmiFamily::Custom,
            &cluster(),
            &Bootstrap {
                custom: Some("echo mine".into()),
                ..node()
            },
        );
        assert_eq!(text, "echo mine");
    }
}
