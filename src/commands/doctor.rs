//! `karpctl doctor`: read-only checks of an installed cluster. It rebuilds the desired state
//! the last `init` recorded (namespace, service account, identity), reads the AWS side as
//! `init` reads it and the cluster's Karpenter objects, then `plan::doctor::checks` decides.
//! One line per check, the fix under each failure; exit code 1 when any fails.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karpctl_api::v1::{EC2NodeClass, NodePool};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::aws::Aws;
use crate::cli::DoctorArgs;
use crate::kube::config_map as kube_config;
use crate::kube::{cluster_state, objects};
use crate::plan::controller::SPEC_HASH_ANNOTATION;
use crate::plan::doctor::{self, Check, Condition, CrdFacts, Facts, NodeClassFacts, NodePoolFacts};
use crate::plan::init::{Desired, IdentityMode, Options, SETTINGS_KEY};
use crate::printer::{Printer, schema};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    cluster: String,
    passed: usize,
    failed: usize,
    checks: Vec<Check>,
}

pub fn run(args: &DoctorArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(read(args))?;
    printer.result(schema::DOCTOR, &report, text)?;
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn text(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let _ = writeln!(
            out,
            "{} {:<20} {}",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        );
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "  {:<20} fix: {fix}", "");
        }
    }
    let _ = writeln!(
        out,
        "\n{} of {} checks passed for cluster {}.",
        r.passed,
        r.checks.len(),
        r.cluster
    );
    out
}

/// What the last init decided, rebuilt: its settings as recorded in karpctl-state.
fn options(recorded: &std::collections::BTreeMap<String, String>) -> anyhow::Result<Options> {
    let Some(settings) = recorded.get(SETTINGS_KEY) else {
        bail!(
            "kube-system/karpctl-state has no `{SETTINGS_KEY}` key: karpctl init has not completed on this cluster"
        );
    };
    let settings: serde_json::Value = serde_json::from_str(settings)
        .context("reading the settings init recorded in kube-system/karpctl-state")?;
    let text = |key: &str, default: &str| settings[key].as_str().unwrap_or(default).to_owned();
    Ok(Options {
        identity: Some(match settings["identity"].as_str() {
            Some("irsa") => IdentityMode::Irsa,
            _ => IdentityMode::PodIdentity,
        }),
        namespace: text("namespace", "kube-system"),
        service_account: text("serviceAccount", "karpenter"),
        ..Options::default()
    })
}

fn ready(conditions: &[karpctl_api::v1::Condition]) -> Option<Condition> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| Condition {
            status: format!("{:?}", c.status),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
}

async fn read(args: &DoctorArgs) -> anyhow::Result<Report> {
    let aws = Aws::connect(args.profile.as_deref(), args.region.as_deref())
        .await
        .context("resolving AWS configuration")?;
    let cluster = aws
        .discover(&args.cluster)
        .await
        .context("discovering the cluster")?;
    let kube = kube_config::client(args.context.as_deref()).await?;
    let Some(recorded) = cluster_state::recorded_state_opt(&kube).await? else {
        bail!(
            "kube-system/karpctl-state does not exist: run `karpctl init --cluster {}` first",
            args.cluster
        );
    };
    let desired = Desired::new(cluster, &options(&recorded)?)?;
    let mut current = aws
        .current(&desired)
        .await
        .context("reading karpctl's AWS resources")?;
    if !desired.cluster.api_access() {
        current.aws_auth = kube_config::map_roles(&kube).await?;
    }

    let mut facts = Facts {
        current,
        crds: Default::default(),
        deployment: None,
        leader: objects::controller_running(&kube).await?,
        service_account_role: None,
        node_pools: Vec::new(),
        node_classes: Vec::new(),
    };
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    for name in desired.crds.keys() {
        if let Some(crd) = crds
            .get_opt(name)
            .await
            .with_context(|| format!("reading CustomResourceDefinition {name}"))?
        {
            facts.crds.insert(
                name.clone(),
                CrdFacts {
                    served: crd
                        .spec
                        .versions
                        .iter()
                        .filter(|v| v.served)
                        .map(|v| v.name.clone())
                        .collect(),
                    storage: crd
                        .spec
                        .versions
                        .iter()
                        .find(|v| v.storage)
                        .map(|v| v.name.clone()),
                    hash: crd
                        .metadata
                        .annotations
                        .and_then(|mut a| a.remove(SPEC_HASH_ANNOTATION))
                        .unwrap_or_default(),
                },
            );
        }
    }
    let deployment = Api::<Deployment>::namespaced(kube.clone(), &desired.namespace)
        .get_opt("karpenter")
        .await
        .context("reading the controller's Deployment")?;
    facts.deployment = deployment.map(|d| {
        (
            d.spec.replicas.unwrap_or(1),
            d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
        )
    });
    if desired.identity == IdentityMode::Irsa {
        facts.service_account_role =
            Api::<ServiceAccount>::namespaced(kube.clone(), &desired.namespace)
                .get_opt(&desired.service_account)
                .await
                .context("reading the controller's ServiceAccount")?
                .and_then(|sa| sa.metadata.annotations)
                .and_then(|mut a| a.remove("eks.amazonaws.com/role-arn"));
    }
    // Without the CRDs there are no NodePools to read; the `crds` check says so.
    if facts.crds.len() == desired.crds.len() {
        for pool in Api::<NodePool>::all(kube.clone())
            .list(&ListParams::default())
            .await
            .context("listing NodePools")?
        {
            facts.node_pools.push(NodePoolFacts {
                name: pool.metadata.name.clone().unwrap_or_default(),
                node_class: pool.spec.template.spec.node_class_ref.name.clone(),
                ready: pool.status.as_ref().and_then(|s| ready(&s.conditions)),
            });
        }
        for class in Api::<EC2NodeClass>::all(kube.clone())
            .list(&ListParams::default())
            .await
            .context("listing EC2NodeClasses")?
        {
            let role = class.spec.role.clone().unwrap_or_default();
            let role_exists = role.is_empty() || aws.role_exists(&role).await?;
            let profile = class
                .status
                .as_ref()
                .and_then(|s| s.instance_profile.clone());
            let instance_profile = match profile {
                Some(p) => {
                    let roles = aws.instance_profile_roles(&p).await?;
                    Some((p, roles))
                }
                None => None,
            };
            facts.node_classes.push(NodeClassFacts {
                name: class.metadata.name.clone().unwrap_or_default(),
                role,
                role_exists,
                instance_profile,
                ready: class.status.as_ref().and_then(|s| ready(&s.conditions)),
            });
        }
    }
    let checks = doctor::checks(&desired, &facts);
    let failed = checks.iter().filter(|c| !c.ok).count();
    Ok(Report {
        cluster: desired.cluster.name.clone(),
        passed: checks.len() - failed,
        failed,
        checks,
    })
}
