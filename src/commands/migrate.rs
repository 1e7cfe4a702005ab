//! `karpctl migrate-from-cas`: read the node groups and the cluster, ask the pure plan
//! (`plan::migrate`) for the preflight, the NodePools and the waves, print them, and — unless
//! `--plan` — run them: init with the proposed NodePools (init's engine: Cluster Autoscaler to
//! 0 with its replicas recorded, the controller, CRDs, EC2NodeClasses and NodePools), each
//! group's scaling config recorded before it is touched, then per group, wave by wave:
//! cordon, drain with the controller's rules, health gate, lower the group. Each wave is
//! chosen again from the nodes that are left (cordoned ones first), so a re-run after an
//! interruption or a failure resumes where it stopped. `--rollback` undoes it from any state.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::aws::Aws;
use crate::cli::{InitArgs, MigrateArgs, OutputFormat};
use crate::kube::cluster_state;
use crate::kube::config_map as kube_config;
use crate::kube::nodes::{self as kube_nodes, Eviction};
use crate::plan::controller::NodePoolSettings;
use crate::plan::migrate::{self, Inputs, Migration, NODEGROUP_LABEL, Scaling};
use crate::printer::{Printer, schema};
use crate::setup::SetupFile;
use karpctl_scheduling::drain::{self, DrainPod, Holding, PodAction};

/// karpctl-state keys: one per node group (its scaling config before the migration), the
/// NodePools the migration created, and progress for `karpctl status`.
const GROUP_KEY_PREFIX: &str = "migration.nodegroup.";
const POOLS_KEY: &str = "migration.nodepools";
pub const PROGRESS_KEY: &str = "migration.progress";
/// How often waits look again, and how often they say they are still waiting.
const POLL: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long a group's instances take to come back (rollback) or go (a wave).
const NODES_TIMEOUT: Duration = Duration::from_secs(600);

/// Progress as recorded in karpctl-state and shown by `karpctl status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub groups: BTreeMap<String, GroupProgress>,
    pub pods_moved: usize,
    pub done: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupProgress {
    pub waves_done: usize,
    pub nodes_left: usize,
    pub floor: i32,
}

/// `-o json`: the preflight and plan.
#[derive(Serialize)]
struct Document<'a> {
    cluster: &'a str,
    #[serde(flatten)]
    migration: &'a Migration,
    /// Auto Scaling groups Cluster Autoscaler discovers that are no managed node group
    /// (self-managed groups are not migrated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unmanaged_autoscaler_groups: Vec<String>,
}

pub fn run(args: &MigrateArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args, printer))
}

async fn run_async(args: &MigrateArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let aws = Aws::connect(args.profile.as_deref(), args.region.as_deref())
        .await
        .context("resolving AWS configuration")?;
    let kube = kube_config::client(args.context.as_deref()).await?;
    if args.rollback {
        return rollback(&aws, &kube, args, printer).await;
    }
    printer.progress(format!(
        "Reading node groups of EKS cluster {} in {}...",
        args.cluster, aws.region
    ));
    let recorded = cluster_state::recorded_state(&kube).await?;
    let (inputs, unmanaged) = read_inputs(&aws, &kube, args, &recorded).await?;
    let migration = migrate::plan(&inputs)?;

    match printer.format() {
        OutputFormat::Yaml if args.plan => {
            print_manifests(&aws, args, &migration).await?;
            return Ok(ExitCode::SUCCESS);
        }
        OutputFormat::Text => {
            printer.result(schema::MIGRATE, &(), |_| {
                let mut text = migrate::render(&migration);
                if !unmanaged.is_empty() {
                    text.push_str(&format!(
                        "\nAuto Scaling groups Cluster Autoscaler discovers that are no managed node group (not migrated; scale them yourself): {}\n",
                        unmanaged.join(", ")
                    ));
                }
                text
            })?;
        }
        _ => {
            printer.result(
                schema::MIGRATE,
                &Document {
                    cluster: &args.cluster,
                    migration: &migration,
                    unmanaged_autoscaler_groups: unmanaged.clone(),
                },
                |_| String::new(),
            )?;
        }
    }
    if args.plan {
        return Ok(ExitCode::SUCCESS);
    }
    let blockers: Vec<String> = migration
        .blockers()
        .map(|f| format!("{} ({})", f.subject, migrate::problem_name(&f.problem)))
        .collect();
    if !blockers.is_empty() && !args.accept_blockers {
        bail!(
            "the preflight found {} blocker(s): {}; fix them (each has its fix above) or pass --accept-blockers; nothing was changed",
            blockers.len(),
            blockers.join(", ")
        );
    }
    if !args.yes {
        super::init::confirm()?;
    }

    // 1. init with the proposed NodePools (and Cluster Autoscaler to 0, recorded).
    let setup = setup_for(args, &recorded, &migration.node_pools)?;
    let existing_pools = existing_node_pools(&kube).await?;
    let created: BTreeSet<String> = recorded
        .get(POOLS_KEY)
        .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .chain(
            migration
                .node_pools
                .iter()
                .filter(|p| !existing_pools.contains(&p.name))
                .map(|p| p.name.clone()),
        )
        .collect();
    // Recorded before they exist, so a rollback after a failure halfway still removes them.
    cluster_state::record(&kube, POOLS_KEY, &serde_json::to_string(&created)?).await?;
    printer.progress("Running init with the proposed NodePools...");
    let init_args = InitArgs {
        settings: crate::cli::SettingsArgs {
            cluster: Some(args.cluster.clone()),
            file: None,
            region: args.region.clone(),
            profile: args.profile.clone(),
            context: args.context.clone(),
            identity: None,
            namespace: None,
            service_account: None,
            image: None,
            capacity_types: None,
            instance_categories: None,
            cpu_limit: None,
        },
        plan: false,
        yes: true,
        detailed_exitcode: false,
        print_installer_policy: false,
        adopt: false,
    };
    super::init::apply_setup(&aws, &setup, &init_args, &printer.nested())
        .await
        .context("init (the migration's first step)")?;

    // 2. Each group's scaling config, recorded once, before it is touched.
    for g in &inputs.node_groups {
        let key = format!("{GROUP_KEY_PREFIX}{}", g.name);
        if !recorded.contains_key(&key) {
            cluster_state::record(&kube, &key, &serde_json::to_string(&g.scaling)?).await?;
            printer.progress(format!(
                "Recorded node group {}: min {} / desired {} / max {}",
                g.name, g.scaling.min_size, g.scaling.desired_size, g.scaling.max_size
            ));
        }
    }

    // 3. Waves, group by group: the groups that go to 0 first, the kept ones last.
    let eviction_client = kube_nodes::client_without_retries(args.context.as_deref()).await?;
    let mut progress: Progress = recorded
        .get(PROGRESS_KEY)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    progress.done = false;
    let mut order: Vec<&migrate::GroupPlan> = migration.groups.iter().collect();
    order.sort_by_key(|g| (g.floor, g.name.clone()));
    for group in order {
        let Some(ng) = inputs.node_groups.iter().find(|n| n.name == group.name) else {
            continue;
        };
        migrate_group(
            &aws,
            &kube,
            &eviction_client,
            args,
            printer,
            ng,
            group.floor,
            &mut progress,
        )
        .await?;
    }
    progress.done = true;
    cluster_state::record(&kube, PROGRESS_KEY, &serde_json::to_string(&progress)?).await?;
    printer.progress(format!(
        "Migration complete: {} pod(s) moved; {}.",
        progress.pods_moved,
        progress
            .groups
            .iter()
            .map(|(g, p)| format!("node group {g} at {} node(s)", p.nodes_left))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(ExitCode::SUCCESS)
}

/// The migration's inputs as the cluster and the account are now, and the CAS-discovered
/// Auto Scaling groups that are no managed node group.
async fn read_inputs(
    aws: &Aws,
    kube: &kube::Client,
    args: &MigrateArgs,
    recorded: &BTreeMap<String, String>,
) -> anyhow::Result<(Inputs, Vec<String>)> {
    let node_groups = aws
        .node_groups(&args.cluster)
        .await
        .context("reading the managed node groups")?;
    let managed: BTreeSet<&String> = node_groups
        .iter()
        .flat_map(|g| &g.auto_scaling_groups)
        .collect();
    let unmanaged = aws
        .autoscaler_groups()
        .await
        .context("reading the Auto Scaling groups Cluster Autoscaler discovers")?
        .into_iter()
        .filter(|(name, tags)| {
            !managed.contains(name)
                && tags
                    .get("eks:cluster-name")
                    .or(tags.get(&format!("kubernetes.io/cluster/{}", args.cluster)))
                    .is_some()
        })
        .map(|(name, _)| name)
        .collect();
    let catalogue =
        karpctl_cloud::Catalogue::shipped(&karpctl_cloud::CatalogueOptions::new(&aws.region))
            .context("loading the shipped instance-type data")?;
    let instance_sizes = catalogue
        .instance_types
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (
                    u32::try_from(t.capacity.cpu / 1000).unwrap_or(0),
                    u64::try_from(t.capacity.memory / (1024 * 1024)).unwrap_or(0),
                ),
            )
        })
        .collect();
    let settings: serde_json::Value = recorded
        .get(crate::plan::init::SETTINGS_KEY)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let controller_namespace = settings["namespace"]
        .as_str()
        .unwrap_or("kube-system")
        .to_string();
    let controller_replicas = settings["controller"]["replicas"]
        .as_i64()
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or_else(|| {
            i32::try_from(crate::plan::controller::ControllerSettings::default().replicas)
                .unwrap_or(2)
        });
    let inputs = Inputs {
        node_groups,
        nodes: kube_nodes::nodes(kube, None).await?,
        pods: kube_nodes::pods(kube).await?,
        pdbs: kube_nodes::pdbs(kube).await?,
        instance_sizes,
        controller_namespace,
        controller_replicas,
        keep: args.keep.clone(),
        wave_size: args.wave_size,
    };
    Ok((inputs, unmanaged))
}

/// init's settings for this run: a karpctl.yaml when given, else what init recorded, else
/// init's defaults without its default NodePool; plus every proposed NodePool the settings do
/// not already name (a NodePool of the same name in karpctl.yaml wins).
fn setup_for(
    args: &MigrateArgs,
    recorded: &BTreeMap<String, String>,
    proposed: &[NodePoolSettings],
) -> anyhow::Result<SetupFile> {
    let mut setup = match &args.file {
        Some(path) => SetupFile::load(path)?,
        None => {
            let mut setup = SetupFile::new(&args.cluster);
            match recorded
                .get(crate::plan::init::SETTINGS_KEY)
                .map(|v| serde_json::from_str::<serde_json::Value>(v))
            {
                Some(Ok(v)) => {
                    if let Some(ns) = v["namespace"].as_str() {
                        setup.namespace = ns.into();
                    }
                    if let Some(sa) = v["serviceAccount"].as_str() {
                        setup.service_account = sa.into();
                    }
                    setup.identity = serde_json::from_value(v["identity"].clone()).ok();
                    if let Ok(c) = serde_json::from_value(v["controller"].clone()) {
                        setup.controller = c;
                    }
                    setup.node_pools =
                        serde_json::from_value(v["nodePools"].clone()).unwrap_or_default();
                }
                Some(Err(e)) => bail!(
                    "kube-system/karpctl-state[{}] is not valid JSON ({e}); run `karpctl init` to rewrite it",
                    crate::plan::init::SETTINGS_KEY
                ),
                // Not initialised: the proposed pools replace init's default one, so the
                // moved pods land on nodes like the ones they left.
                None => setup.node_pools.clear(),
            }
            setup
        }
    };
    setup.cluster = args.cluster.clone();
    setup.region = args.region.clone().or(setup.region);
    setup.profile = args.profile.clone().or(setup.profile);
    setup.context = args.context.clone().or(setup.context);
    for pool in proposed {
        if !setup.node_pools.iter().any(|p| p.name == pool.name) {
            setup.node_pools.push(pool.clone());
        }
    }
    Ok(setup)
}

async fn existing_node_pools(kube: &kube::Client) -> anyhow::Result<BTreeSet<String>> {
    let api: Api<karpctl_api::v1::NodePool> = Api::all(kube.clone());
    match api.list(&Default::default()).await {
        Ok(list) => Ok(list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()),
        // No CRD yet: init has not run, so there are none.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(BTreeSet::new()),
        Err(e) => Err(e).context("listing NodePools"),
    }
}

/// `--plan -o yaml`: the proposed EC2NodeClasses and NodePools as init would apply them.
async fn print_manifests(aws: &Aws, args: &MigrateArgs, m: &Migration) -> anyhow::Result<()> {
    let cluster = aws
        .discover(&args.cluster)
        .await
        .context("discovering the cluster")?;
    let options = crate::plan::init::Options {
        node_pools: m.node_pools.clone(),
        ..Default::default()
    };
    let desired = crate::plan::init::Desired::new(cluster, &options)?;
    let mut out = String::new();
    for object in desired
        .objects
        .iter()
        .filter(|o| matches!(o.kind.as_str(), "NodePool" | "EC2NodeClass"))
    {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(&object.body)
                .map_err(|e| anyhow::anyhow!("writing YAML: {e}"))?,
        );
    }
    print!("{out}");
    Ok(())
}

fn instance_id(node: &Node) -> Option<String> {
    node.spec
        .as_ref()?
        .provider_id
        .as_deref()?
        .rsplit('/')
        .next()
        .filter(|id| id.starts_with("i-"))
        .map(str::to_string)
}

fn name_of(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn migrate_group(
    aws: &Aws,
    kube: &kube::Client,
    eviction_client: &kube::Client,
    args: &MigrateArgs,
    printer: &Printer,
    ng: &migrate::NodeGroup,
    floor: i32,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let selector = format!("{NODEGROUP_LABEL}={}", ng.name);
    {
        let nodes = kube_nodes::nodes(kube, Some(&selector)).await?;
        let pods = kube_nodes::pods(kube).await?;
        let refs: Vec<&Node> = nodes.iter().collect();
        let going = migrate::to_drain(&refs, floor, &pods);
        let fresh: Vec<&String> = going
            .iter()
            .filter(|n| {
                nodes
                    .iter()
                    .find(|x| &&name_of(x) == n)
                    .and_then(|x| x.spec.as_ref()?.unschedulable)
                    != Some(true)
            })
            .collect();
        if !fresh.is_empty() {
            printer.progress(format!(
                "Node group {}: cordoning the {} node(s) it will lose, so moved pods do not land on them: {}",
                ng.name,
                fresh.len(),
                fresh.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ));
            for n in fresh {
                kube_nodes::cordon(kube, n, true).await?;
            }
        }
    }
    loop {
        let nodes = kube_nodes::nodes(kube, Some(&selector)).await?;
        let pods = kube_nodes::pods(kube).await?;
        let refs: Vec<&Node> = nodes.iter().collect();
        let entry = progress.groups.entry(ng.name.clone()).or_default();
        entry.nodes_left = nodes.len();
        entry.floor = floor;
        let Some(wave) = migrate::next_wave(&refs, floor, args.wave_size, &pods) else {
            printer.progress(format!(
                "Node group {}: {} node(s) left (floor {floor}); done.",
                ng.name,
                nodes.len()
            ));
            break;
        };
        let wave_no = entry.waves_done + 1;
        printer.progress(format!(
            "Node group {} wave {wave_no}: cordoning {}",
            ng.name,
            wave.join(", ")
        ));
        for n in &wave {
            kube_nodes::cordon(kube, n, true).await?;
        }
        let moved = drain_nodes(kube, eviction_client, args, printer, &wave).await?;
        health_gate(kube, args, printer, &ng.name, wave_no).await?;

        // Lower the group by exactly the drained instances: min first (so the group may
        // shrink), then each instance terminated with the desired capacity decremented, then
        // the node group's desired size set to match.
        let remaining = i32::try_from(nodes.len() - wave.len()).unwrap_or(0);
        let current = aws
            .node_groups(&args.cluster)
            .await?
            .into_iter()
            .find(|g| g.name == ng.name)
            .map(|g| g.scaling)
            .unwrap_or(ng.scaling);
        if current.min_size > remaining {
            printer.progress(format!(
                "Node group {}: min size {} -> {remaining}",
                ng.name, current.min_size
            ));
            aws.update_scaling(&args.cluster, &ng.name, Some(remaining), None, None)
                .await
                .with_context(|| format!("lowering node group {}'s min size", ng.name))?;
        }
        for n in &wave {
            let node = nodes.iter().find(|x| &name_of(x) == n);
            if let Some(id) = node.and_then(instance_id) {
                printer.progress(format!("Terminating instance {id} (node {n})"));
                aws.terminate_in_group(&id)
                    .await
                    .with_context(|| format!("terminating instance {id} of node {n}"))?;
            }
        }
        aws.update_scaling(&args.cluster, &ng.name, None, None, Some(remaining))
            .await
            .with_context(|| format!("setting node group {}'s desired size", ng.name))?;
        wait_nodes_gone(kube, printer, &wave).await?;
        let entry = progress.groups.entry(ng.name.clone()).or_default();
        entry.waves_done = wave_no;
        entry.nodes_left = usize::try_from(remaining).unwrap_or(0);
        progress.pods_moved += moved;
        cluster_state::record(kube, PROGRESS_KEY, &serde_json::to_string(&progress)?).await?;
        printer.progress(format!(
            "Node group {} wave {wave_no} done: {moved} pod(s) moved, desired size {remaining}",
            ng.name
        ));
        if !args.pause.is_zero() {
            printer.progress(format!(
                "Pausing {}s before the next wave",
                args.pause.as_secs()
            ));
            tokio::time::sleep(args.pause).await;
        }
    }
    Ok(())
}

/// Drains the wave's nodes with the controller's rules: kubelet shutdown order, PDBs through
/// the Eviction API, do-not-disrupt and `safe-to-evict: "false"` held until `--hold-timeout`
/// (then evicted, within their PDBs). Returns how many pods were moved.
async fn drain_nodes(
    kube: &kube::Client,
    eviction_client: &kube::Client,
    args: &MigrateArgs,
    printer: &Printer,
    wave: &[String],
) -> anyhow::Result<usize> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut moved: BTreeSet<String> = BTreeSet::new();
    let mut refusals: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let holding_allowed = started.elapsed() < args.hold_timeout;
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut holding: Vec<(String, Holding)> = Vec::new();
        for node in wave {
            let pods = kube_nodes::pods_on(kube, node).await?;
            let drain_pods: Vec<DrainPod> = pods
                .iter()
                .map(|p| {
                    let d = DrainPod::from_pod(p);
                    if holding_allowed {
                        d.with_cas_safe_to_evict(p)
                    } else {
                        DrainPod {
                            do_not_disrupt: false,
                            ..d
                        }
                    }
                })
                .collect();
            let decision = drain::decide(&drain_pods, now, None);
            for action in &decision.actions {
                match action {
                    PodAction::Evict { namespace, name } => {
                        let key = format!("{namespace}/{name}");
                        match kube_nodes::evict(eviction_client, namespace, name).await? {
                            Eviction::Evicted => {
                                refusals.remove(&key);
                                if moved.insert(key.clone()) {
                                    printer.progress(format!("  evicted {key} from {node}"));
                                }
                            }
                            Eviction::Refused(why) => {
                                refusals.insert(key, why);
                            }
                        }
                    }
                    PodAction::Delete {
                        namespace,
                        name,
                        grace_seconds,
                    } => {
                        kube_nodes::delete_pod(kube, namespace, name, *grace_seconds).await?;
                        moved.insert(format!("{namespace}/{name}"));
                    }
                }
            }
            holding.extend(decision.holding);
        }
        if holding.is_empty() {
            return Ok(moved.len());
        }
        let describe = |holding: &[(String, Holding)]| {
            holding
                .iter()
                .map(|(k, h)| match h {
                    Holding::DoNotDisrupt => format!(
                        "{k} (do-not-disrupt / safe-to-evict false, held until --hold-timeout)"
                    ),
                    Holding::Evicting => match refusals.get(k) {
                        Some(why) => format!("{k} (eviction refused: {why})"),
                        None => format!("{k} (evicted, terminating)"),
                    },
                    Holding::Queued => format!("{k} (queued behind earlier pods)"),
                    Holding::Terminating => format!("{k} (terminating)"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if started.elapsed() >= args.drain_timeout {
            bail!(
                "nodes {} were not drained within --drain-timeout {}s: {}; the nodes stay cordoned and a re-run continues this wave (or `--rollback` undoes the migration)",
                wave.join(", "),
                args.drain_timeout.as_secs(),
                describe(&holding)
            );
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            printer.progress(format!(
                "  draining {} ({}s): {} pod(s) left: {}",
                wave.join(", "),
                started.elapsed().as_secs(),
                holding.len(),
                describe(&holding)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The health gate after a drain: every non-DaemonSet pod Running and Ready again, none
/// Pending longer than `--pending-limit`, no container restarting in a crash loop.
async fn health_gate(
    kube: &kube::Client,
    args: &MigrateArgs,
    printer: &Printer,
    group: &str,
    wave: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let pods = kube_nodes::pods(kube).await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut waiting = Vec::new();
        for p in &pods {
            if p.metadata.deletion_timestamp.is_some() || is_daemon(p) {
                continue;
            }
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            );
            let status = p.status.clone().unwrap_or_default();
            if let Some(looping) = status.container_statuses.iter().flatten().find(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            }) {
                bail!(
                    "health gate after node group {group} wave {wave}: pod {key} container {} is in CrashLoopBackOff; the run stops here (a re-run continues, `--rollback` undoes)",
                    looping.name
                );
            }
            match status.phase.as_deref() {
                Some("Pending") => {
                    let since = p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| now.as_second() - t.0.as_second())
                        .unwrap_or(0);
                    if since > i64::try_from(args.pending_limit.as_secs()).unwrap_or(i64::MAX) {
                        let why = status
                            .conditions
                            .iter()
                            .flatten()
                            .find(|c| c.type_ == "PodScheduled")
                            .and_then(|c| c.message.clone())
                            .unwrap_or_else(|| "no scheduling message".into());
                        bail!(
                            "health gate after node group {group} wave {wave}: pod {key} has been Pending for {since}s (limit {}s): {why}; the run stops here (a re-run continues, `--rollback` undoes)",
                            args.pending_limit.as_secs()
                        );
                    }
                    waiting.push(format!("{key} (Pending {since}s)"));
                }
                Some("Running") => {
                    let ready = status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if !ready {
                        waiting.push(format!("{key} (not Ready)"));
                    }
                }
                _ => {}
            }
        }
        if waiting.is_empty() {
            printer.progress(format!(
                "  health gate passed ({}s): every pod is Running and Ready",
                started.elapsed().as_secs()
            ));
            return Ok(());
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            printer.progress(format!(
                "  waiting for {} pod(s) to run on NodePool nodes ({}s): {}",
                waiting.len(),
                started.elapsed().as_secs(),
                waiting.join(", ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn is_daemon(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

async fn wait_nodes_gone(
    kube: &kube::Client,
    printer: &Printer,
    names: &[String],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let present: Vec<String> = kube_nodes::nodes(kube, None)
            .await?
            .iter()
            .map(name_of)
            .filter(|n| names.contains(n))
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= NODES_TIMEOUT {
            bail!(
                "nodes {} are still registered {}s after their instances were terminated",
                present.join(", "),
                NODES_TIMEOUT.as_secs()
            );
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            printer.progress(format!(
                "  waiting for nodes {} to leave ({}s)",
                present.join(", "),
                started.elapsed().as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `--rollback`: every recorded node group back to its scaling config (and its nodes
/// waited for, then uncordoned), Cluster Autoscaler back to its recorded replicas, then the
/// NodePools the migration created deleted (the controller drains their nodes onto the
/// groups) and waited on. Idempotent: what is already restored is left alone.
async fn rollback(
    aws: &Aws,
    kube: &kube::Client,
    args: &MigrateArgs,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let recorded = cluster_state::recorded_state(kube).await?;
    let groups: BTreeMap<String, Scaling> = recorded
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(GROUP_KEY_PREFIX)?;
            Some(
                serde_json::from_str::<Scaling>(v)
                    .map(|s| (name.to_string(), s))
                    .with_context(|| {
                        format!("kube-system/karpctl-state[{k}] is not a scaling config")
                    }),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let pools: Vec<String> = match recorded.get(POOLS_KEY) {
        Some(v) => serde_json::from_str(v)
            .with_context(|| format!("kube-system/karpctl-state[{POOLS_KEY}] is not a list"))?,
        None => vec![],
    };
    if groups.is_empty() && pools.is_empty() && !recorded.contains_key(PROGRESS_KEY) {
        printer.result(
            schema::MIGRATE,
            &serde_json::json!({"rolledBack": false}),
            |_| {
                "No migration recorded in kube-system/karpctl-state: nothing to roll back.\n".into()
            },
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    printer.progress(format!(
        "Rolling back the migration of cluster {}: {} node group(s), {} NodePool(s)",
        args.cluster,
        groups.len(),
        pools.len()
    ));
    let current = aws
        .node_groups(&args.cluster)
        .await
        .context("reading the managed node groups")?;
    for (name, scaling) in &groups {
        let Some(now) = current.iter().find(|g| &g.name == name) else {
            printer.progress(format!("Node group {name} no longer exists; skipped"));
            continue;
        };
        if now.scaling != *scaling {
            printer.progress(format!(
                "Node group {name}: min {} / desired {} / max {} -> min {} / desired {} / max {}",
                now.scaling.min_size,
                now.scaling.desired_size,
                now.scaling.max_size,
                scaling.min_size,
                scaling.desired_size,
                scaling.max_size
            ));
            // The max first when it grows, so min <= desired <= max holds at every step.
            aws.update_scaling(
                &args.cluster,
                name,
                Some(scaling.min_size),
                Some(scaling.max_size.max(now.scaling.max_size)),
                Some(scaling.desired_size),
            )
            .await
            .with_context(|| format!("restoring node group {name}'s scaling config"))?;
            if scaling.max_size < now.scaling.max_size {
                aws.update_scaling(&args.cluster, name, None, Some(scaling.max_size), None)
                    .await
                    .with_context(|| format!("restoring node group {name}'s max size"))?;
            }
        }
        wait_group_ready(kube, printer, name, scaling.desired_size).await?;
        for n in kube_nodes::nodes(kube, Some(&format!("{NODEGROUP_LABEL}={name}"))).await? {
            if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
                kube_nodes::cordon(kube, &name_of(&n), false).await?;
                printer.progress(format!("Uncordoned node {}", name_of(&n)));
            }
        }
    }
    // Cluster Autoscaler back to what init recorded.
    for (key, value) in recorded
        .iter()
        .filter(|(k, _)| k.starts_with("cluster-autoscaler."))
    {
        #[derive(Deserialize)]
        struct Recorded {
            namespace: String,
            name: String,
            replicas: i32,
        }
        let r: Recorded = serde_json::from_str(value).with_context(|| {
            format!("kube-system/karpctl-state[{key}] is not a recorded Cluster Autoscaler")
        })?;
        let api: Api<Deployment> = Api::namespaced(kube.clone(), &r.namespace);
        let now = api
            .get_opt(&r.name)
            .await
            .with_context(|| format!("reading Deployment {}/{}", r.namespace, r.name))?
            .and_then(|d| d.spec.replicas);
        if now != Some(r.replicas) {
            printer.progress(format!(
                "Cluster Autoscaler {}/{}: replicas -> {}",
                r.namespace, r.name, r.replicas
            ));
            cluster_state::scale(kube, &r.namespace, &r.name, r.replicas).await?;
        }
        cluster_state::forget(kube, key).await?;
    }
    // The NodePools (and their EC2NodeClasses) the migration created.
    delete_pools(kube, printer, &pools).await?;
    forget_pools_in_init_record(kube, &recorded, &pools).await?;
    for name in groups.keys() {
        cluster_state::forget(kube, &format!("{GROUP_KEY_PREFIX}{name}")).await?;
    }
    cluster_state::forget(kube, POOLS_KEY).await?;
    cluster_state::forget(kube, PROGRESS_KEY).await?;
    printer.result(
        schema::MIGRATE,
        &serde_json::json!({"rolledBack": true, "nodeGroups": groups, "nodePools": pools}),
        |_| "Rollback complete: node groups, Cluster Autoscaler and NodePools are as before the migration.\n".into(),
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_group_ready(
    kube: &kube::Client,
    printer: &Printer,
    group: &str,
    desired: i32,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let want = usize::try_from(desired).unwrap_or(0);
    loop {
        let nodes = kube_nodes::nodes(kube, Some(&format!("{NODEGROUP_LABEL}={group}"))).await?;
        let ready = nodes
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= want {
            printer.progress(format!("Node group {group}: {ready} node(s) Ready"));
            return Ok(());
        }
        if started.elapsed() >= NODES_TIMEOUT {
            bail!(
                "node group {group}: only {ready} of {want} node(s) Ready after {}s; its instances may not be joining (check the group in the EKS console); re-run --rollback to continue",
                NODES_TIMEOUT.as_secs()
            );
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            printer.progress(format!(
                "  waiting for node group {group}: {ready} of {want} node(s) Ready ({}s)",
                started.elapsed().as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn delete_pools(
    kube: &kube::Client,
    printer: &Printer,
    pools: &[String],
) -> anyhow::Result<()> {
    if pools.is_empty() {
        return Ok(());
    }
    let api: Api<karpctl_api::v1::NodePool> = Api::all(kube.clone());
    let classes: Api<karpctl_api::v1::EC2NodeClass> = Api::all(kube.clone());
    let claims: Api<karpctl_api::v1::NodeClaim> = Api::all(kube.clone());
    for pool in pools {
        let class = match api.get_opt(pool).await {
            Ok(Some(p)) => Some(p.spec.template.spec.node_class_ref.name.clone()),
            Ok(None) => None,
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e).with_context(|| format!("reading NodePool {pool}")),
        };
        if class.is_some() {
            printer.progress(format!("Deleting NodePool {pool}"));
            match api.delete(pool, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e).with_context(|| format!("deleting NodePool {pool}")),
            }
        }
    }
    // The controller drains and terminates the pools' nodes; wait for their NodeClaims.
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let left: Vec<String> = match claims.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|c| {
                    c.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(karpctl_api::labels::NODE_POOL))
                        .is_some_and(|p| pools.contains(p))
                })
                .filter_map(|c| c.metadata.name)
                .collect(),
            Err(kube::Error::Api(s)) if s.code == 404 => vec![],
            Err(e) => return Err(e).context("listing NodeClaims"),
        };
        let pools_left: Vec<String> = {
            let mut v = Vec::new();
            for p in pools {
                if matches!(api.get_opt(p).await, Ok(Some(_))) {
                    v.push(p.clone());
                }
            }
            v
        };
        if left.is_empty() && pools_left.is_empty() {
            break;
        }
        if started.elapsed() >= NODES_TIMEOUT {
            bail!(
                "NodePools {} still have NodeClaims {} after {}s; is the controller running? re-run --rollback to continue",
                pools_left.join(", "),
                left.join(", "),
                NODES_TIMEOUT.as_secs()
            );
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            printer.progress(format!(
                "  waiting for the controller to drain and terminate NodeClaims {} ({}s)",
                left.join(", "),
                started.elapsed().as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    for pool in pools {
        match classes.delete(pool, &Default::default()).await {
            Ok(_) => printer.progress(format!("Deleted EC2NodeClass {pool}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting EC2NodeClass {pool}")),
        }
    }
    Ok(())
}

/// init's recorded settings without the migration's NodePools, so a later `karpctl init`
/// does not create them again.
async fn forget_pools_in_init_record(
    kube: &kube::Client,
    recorded: &BTreeMap<String, String>,
    pools: &[String],
) -> anyhow::Result<()> {
    let key = crate::plan::init::SETTINGS_KEY;
    let Some(Ok(mut settings)) = recorded
        .get(key)
        .map(|v| serde_json::from_str::<serde_json::Value>(v))
    else {
        return Ok(());
    };
    if let Some(list) = settings["nodePools"].as_array_mut() {
        let before = list.len();
        list.retain(|p| {
            !p["name"]
                .as_str()
                .is_some_and(|n| pools.iter().any(|x| x == n))
        });
        if list.len() != before {
            cluster_state::record(kube, key, &serde_json::to_string(&settings)?).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(provider: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"}, "spec": {"providerID": provider}
        }))
        .unwrap()
    }

    #[test]
    fn the_instance_id_comes_from_the_provider_id() {
        assert_eq!(
            instance_id(&node("aws:///us-west-2a/i-0abc")).as_deref(),
            Some("i-0abc")
        );
        assert_eq!(instance_id(&node("kwok://n")), None);
    }
}
