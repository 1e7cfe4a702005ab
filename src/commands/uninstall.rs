//! `karpctl uninstall`: discovery as `init` does it, then a plan that removes only what
//! karpctl owns (by its tags, labels and markers) — the Cluster Autoscaler restored first,
//! the node role last — shown Terraform-style; with `--plan` that is all, otherwise it asks
//! (or takes `--yes`) and applies with progress. A final sweep reports (never deletes)
//! anything still tagged for the cluster by karpctl, or launched for it by Karpenter.
//! The controller's namespace and service account come from the flags, else from the
//! settings the last init recorded in the cluster.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::aws::Aws;
use crate::cli::UninstallArgs;
use crate::kube::cluster_state;
use crate::kube::config_map as kube_config;
use crate::kube::objects;
use crate::plan::init::{Desired, IdentityMode, Options, SETTINGS_KEY};
use crate::plan::uninstall::{self, UninstallOp};
use crate::plan::{self, Applied, Executor, PlanDocument};
use crate::printer::{Printer, schema};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UninstallResult<'a> {
    cluster: &'a str,
    plan: PlanDocument<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<&'a Applied>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

pub fn run(args: &UninstallArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args, printer))
}

async fn run_async(args: &UninstallArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let aws = Aws::connect(args.profile.as_deref(), args.region.as_deref())
        .await
        .context("resolving AWS configuration")?;
    printer.progress(format!(
        "Discovering EKS cluster {} in {}...",
        args.cluster, aws.region
    ));
    let cluster = aws
        .discover(&args.cluster)
        .await
        .context("discovering the cluster")?;
    let kube = kube_config::client(args.context.as_deref()).await?;
    let recorded = cluster_state::recorded_state_opt(&kube).await?;
    let (namespace, service_account) = controller_identity(args, recorded.as_ref());
    // Only the names matter here; both identity modes' pieces are looked for.
    let options = Options {
        identity: Some(IdentityMode::PodIdentity),
        namespace,
        service_account,
        ..Options::default()
    };
    let desired = Desired::new(cluster, &options)?;
    let mut found = aws
        .found(&desired)
        .await
        .context("reading what karpctl left in AWS")?;
    if !desired.cluster.api_access() {
        found.aws_auth = kube_config::map_roles(&kube).await?;
    }
    found.crds = cluster_state::owned_crds(&kube).await?;
    found.autoscalers = cluster_state::autoscalers(&kube).await?;
    found.recorded = recorded;
    found.node_pools = objects::names_of(&kube, "karpenter.sh/v1", "NodePool").await?;
    found.node_classes = objects::names_of(&kube, "karpenter.k8s.aws/v1", "EC2NodeClass").await?;
    found.node_claims = objects::names_of(&kube, "karpenter.sh/v1", "NodeClaim")
        .await?
        .len();
    found.objects = objects::controller_objects(&kube).await?;
    let plan = uninstall::plan(&found)?;
    let cluster = desired.cluster.name.as_str();
    let render = || {
        if plan.items.is_empty() {
            format!("No changes. Nothing of karpctl's is left for cluster {cluster}.\n")
        } else {
            plan.render()
        }
    };

    if args.plan {
        printer.result(
            schema::UNINSTALL,
            &UninstallResult {
                cluster,
                plan: plan.document(),
                applied: None,
                warnings: Vec::new(),
            },
            |_| render(),
        )?;
        return Ok(if args.detailed_exitcode && plan.has_changes() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }

    printer.text(render())?;
    let applied = if plan.has_changes() {
        if !args.yes {
            super::init::confirm()?;
        }
        let executor = UninstallExecutor {
            aws: &aws,
            kube,
            printer,
        };
        Some(plan::apply(&plan, &executor, |line| printer.progress(line)).await?)
    } else {
        None
    };
    let warnings = match aws.tagged_leftovers(cluster).await {
        Ok(tagged) => uninstall::leftovers(cluster, &tagged),
        Err(e) => vec![format!("could not sweep for leftovers: {e}")],
    };
    for w in &warnings {
        printer.progress(format!("warning: {w}"));
    }
    let result = UninstallResult {
        cluster,
        plan: plan.document(),
        applied: applied.as_ref(),
        warnings: warnings.clone(),
    };
    if printer.is_json() {
        printer.result(schema::UNINSTALL, &result, |_| String::new())?;
    } else if let Some(applied) = &applied {
        printer.text(format!("\n{}", applied.render()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The controller's namespace and service account: the flags when given, else what the
/// last init recorded (so an uninstall on another machine finds a controller installed with
/// `--namespace`), else init's defaults.
fn controller_identity(
    args: &UninstallArgs,
    recorded: Option<&std::collections::BTreeMap<String, String>>,
) -> (String, String) {
    let settings: serde_json::Value = recorded
        .and_then(|r| r.get(SETTINGS_KEY))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let pick = |flag: &Option<String>, key: &str, default: &str| {
        flag.clone()
            .or_else(|| settings[key].as_str().map(str::to_owned))
            .unwrap_or_else(|| default.to_owned())
    };
    (
        pick(&args.namespace, "namespace", "kube-system"),
        pick(&args.service_account, "serviceAccount", "karpenter"),
    )
}

struct UninstallExecutor<'a> {
    aws: &'a Aws,
    kube: kube::Client,
    printer: &'a Printer,
}

impl Executor<UninstallOp> for UninstallExecutor<'_> {
    async fn execute(&self, op: &UninstallOp) -> anyhow::Result<()> {
        let client = &self.kube;
        match op {
            UninstallOp::ScaleDeployment {
                namespace,
                name,
                replicas,
            } => cluster_state::scale(client, namespace, name, *replicas).await,
            UninstallOp::Forget { key } => cluster_state::forget(client, key).await,
            UninstallOp::DeleteState => cluster_state::delete_state(client).await,
            UninstallOp::DeleteCrd { name } => cluster_state::delete_crd(client, name).await,
            UninstallOp::DeleteObject { object, wait } => {
                objects::delete(client, object, *wait, &|l| self.printer.progress(l)).await
            }
            UninstallOp::WaitNodeClaimsGone => {
                objects::wait_node_claims_gone(client, &|l| self.printer.progress(l)).await
            }
            UninstallOp::UnmapNodeRole { rolearn } => {
                kube_config::remove_role(client, rolearn).await
            }
            _ => self
                .aws
                .run_uninstall(op)
                .await
                .map_err(anyhow::Error::from),
        }
    }
}
