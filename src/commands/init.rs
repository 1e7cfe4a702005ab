//! `karpctl init`: discovery, then a plan of everything the cluster needs on the AWS side
//! (node role, interruption queue and rules, controller policies, role and identity, Spot
//! service-linked role, node access, discovery tags) and in Kubernetes (CRDs, the Cluster
//! Autoscaler scaled to 0 with its replicas recorded), shown Terraform-style; with `--plan`
//! that is all, otherwise it asks (or takes `--yes`) and applies with progress. Every resource
//! is tagged as karpctl's, so the next run — from any machine — plans only what is missing.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::aws::Aws;
use crate::cli::{InitArgs, SettingsArgs};
use crate::kube::aws_auth::MapRole;
use crate::kube::cluster_state;
use crate::kube::config_map as kube_config;
use crate::plan::init::{self, Desired, IdentityMode};
use crate::plan::{self, Applied, Executor, PlanDocument};
use crate::printer::{Printer, schema};
use crate::setup::SetupFile;

/// `--output json` for an apply: the plan and what was applied, in one document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitResult<'a> {
    cluster: &'a init::Cluster,
    identity: IdentityMode,
    plan: PlanDocument<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<&'a Applied>,
}

pub fn run(args: &InitArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args, printer))
}

async fn run_async(args: &InitArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let setup = settings(&args.settings, printer, true).await?;
    let aws = Aws::connect(setup.profile.as_deref(), setup.region.as_deref())
        .await
        .context("resolving AWS configuration")?;
    if args.print_installer_policy {
        let (account, partition) = aws.caller_account().await.context("finding the account")?;
        let policy = crate::plan::installer_policy::installer_policy(
            &crate::plan::installer_policy::InstallerScope {
                partition,
                region: aws.region.clone(),
                account,
                cluster: setup.cluster.clone(),
            },
        );
        println!("{}", serde_json::to_string_pretty(&policy)?);
        return Ok(ExitCode::SUCCESS);
    }
    apply_setup(&aws, &setup, args, printer).await
}

/// Plans and (unless `--plan`) applies one setup: what `init` does once its settings are
/// known, and what `migrate-from-cas` runs with the NodePools it proposes.
pub(super) async fn apply_setup(
    aws: &Aws,
    setup: &SetupFile,
    args: &InitArgs,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let desired = desired(setup, aws, args.adopt, printer).await?;
    let mut current = aws
        .current(&desired)
        .await
        .context("reading the current state of karpctl's resources")?;
    let kube = kube_config::client(setup.context.as_deref()).await?;
    // Only CONFIG_MAP clusters need aws-auth: nodes join through it there.
    if !desired.cluster.api_access() {
        current.aws_auth = Some(kube_config::map_roles(&kube).await?.unwrap_or_default());
    }
    current.crds =
        cluster_state::crd_hashes(&kube, desired.crds.keys().map(String::as_str)).await?;
    current.autoscalers = cluster_state::autoscalers(&kube).await?;
    current.recorded = cluster_state::recorded_state(&kube).await?;
    current.objects = crate::kube::objects::current(&kube, &desired.objects).await?;
    let plan = init::plan(&desired, &current)?;

    fn result<'a>(
        desired: &'a Desired,
        plan: &'a plan::Plan<init::InitOp>,
        applied: Option<&'a Applied>,
    ) -> InitResult<'a> {
        InitResult {
            cluster: &desired.cluster,
            identity: desired.identity,
            plan: plan.document(),
            applied,
        }
    }

    if args.plan {
        printer.result(schema::INIT, &result(&desired, &plan, None), |_| {
            plan.render()
        })?;
        return Ok(if args.detailed_exitcode && plan.has_changes() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }

    printer.text(plan.render())?;
    if !plan.has_changes() {
        if printer.is_json() {
            printer.result(schema::INIT, &result(&desired, &plan, None), |_| {
                String::new()
            })?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        confirm()?;
    }
    let executor = InitExecutor { aws, kube, printer };
    let applied = plan::apply(&plan, &executor, |line| printer.progress(line)).await?;
    printer.result(
        schema::INIT,
        &result(&desired, &plan, Some(&applied)),
        |_| format!("\n{}", applied.render()),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// init's settings: a karpctl.yaml (`-f`) with flags on top, or flags alone, or — in a
/// terminal without `--cluster` and when `guided` — the guided setup.
pub async fn settings(
    args: &SettingsArgs,
    printer: &Printer,
    guided: bool,
) -> anyhow::Result<SetupFile> {
    Ok(match &args.file {
        Some(path) => {
            let mut setup = SetupFile::load(path)?;
            setup.apply_flags(args);
            setup
        }
        None => match &args.cluster {
            Some(cluster) => {
                let mut setup = SetupFile::new(cluster);
                setup.apply_flags(args);
                setup
            }
            None if guided && std::io::stdin().is_terminal() && !printer.is_json() => {
                crate::guide::run(args, printer).await?
            }
            None if guided => bail!(
                "no cluster given: pass --cluster NAME, or -f karpctl.yaml; run `karpctl init` in a terminal for the guided setup"
            ),
            None => bail!("no cluster given: pass --cluster NAME, or -f karpctl.yaml"),
        },
    })
}

/// Discovery (read-only), then everything init wants the cluster and account to hold: the
/// one desired state `init` plans from and `render` writes out.
pub async fn desired(
    setup: &SetupFile,
    aws: &Aws,
    adopt: bool,
    printer: &Printer,
) -> anyhow::Result<Desired> {
    printer.progress(format!(
        "Discovering EKS cluster {} in {}...",
        setup.cluster, aws.region
    ));
    let cluster = aws
        .discover(&setup.cluster)
        .await
        .context("discovering the cluster")?;
    printer.progress(format!(
        "Cluster {} (Kubernetes {}, authentication mode {}) in account {} as {}; {} node group{}.",
        cluster.name,
        cluster.version,
        cluster.authentication_mode,
        cluster.account,
        cluster.caller_arn,
        cluster.node_groups.len(),
        if cluster.node_groups.len() == 1 {
            ""
        } else {
            "s"
        }
    ));
    let mut options = setup.options();
    options.adopt = adopt;
    let desired = Desired::new(cluster, &options)?;
    printer.progress(format!(
        "Controller identity: {}{} for {}/{}.",
        desired.identity,
        if options.identity.is_some() {
            ""
        } else {
            " (chosen automatically; --identity overrides)"
        },
        desired.namespace,
        desired.service_account
    ));
    Ok(desired)
}

/// AWS calls go to AWS; the aws-auth row, CRDs, the karpctl-state record and the Cluster
/// Autoscaler's scale go through Kubernetes.
struct InitExecutor<'a> {
    aws: &'a Aws,
    kube: kube::Client,
    printer: &'a Printer,
}

impl Executor<init::InitOp> for InitExecutor<'_> {
    async fn execute(&self, op: &init::InitOp) -> anyhow::Result<()> {
        use init::InitOp;
        let client = &self.kube;
        match op {
            InitOp::MapNodeRole { rolearn } => {
                kube_config::add_role(client, &MapRole::node(rolearn)).await
            }
            InitOp::ApplyCrd { name } => {
                cluster_state::apply_crd(client, name, &|line| self.printer.progress(line)).await
            }
            InitOp::Record { key, value } => cluster_state::record(client, key, value).await,
            InitOp::ScaleDeployment {
                namespace,
                name,
                replicas,
            } => cluster_state::scale(client, namespace, name, *replicas).await,
            InitOp::ApplyObject { object } => {
                crate::kube::objects::apply(client, object, &|line| self.printer.progress(line))
                    .await
            }
            _ => self.aws.execute(op).await,
        }
    }
}

/// Terraform's confirmation: only `yes` goes ahead. Without a terminal there is no one to
/// ask, so `--yes` must say it.
pub(super) fn confirm() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "there are changes to apply and no terminal to confirm them on; pass --yes to apply without asking, or --plan to only show the plan"
        );
    }
    eprint!(
        "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("apply cancelled; nothing was changed");
    }
    Ok(())
}
