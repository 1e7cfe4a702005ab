//! The controller's two benchmarks from issue #5, run against this checkout's sandbox and
//! printed, never asserted on (timings on a shared 2-core machine are figures, not facts):
//!
//! - `latency`: how long a pending pod waits for the CreateFleet call that launches its
//!   capacity, over many scale-ups. Each round creates a few pods that fit no node, the
//!   kube-scheduler marks them `PodScheduled=False/Unschedulable` (seen here on a watch, so
//!   with millisecond precision), the controller batches, plans, creates a NodeClaim and
//!   launches it; the sandbox AWS endpoint records when the CreateFleet call arrived and the
//!   NodeClaim it was for (its instance tags). The pod's `Nominated` event names its claim.
//!   Between rounds the pods and claims are deleted, so every round needs a fresh launch.
//! - `memory`: the controller's resident memory with 1,000 Nodes and 10,000 pods in the
//!   cluster. The Nodes are kwok's (fake kubelets: kwok keeps them Ready and runs the pods
//!   bound to them), created in parallel with realistic capacity and labels; then the
//!   controller starts, its watches sync the whole cluster, and `VmRSS`/`VmHWM` are read from
//!   `/proc/<pid>/status` when idle and again after a scheduling pass in that big cluster.
//!   Everything it created is deleted afterwards.
//!
//! The controller is the binary this bench was built with (`cargo bench` builds it with the
//! release profile, as users run it), started by `sandbox/sandbox controller start` as its
//! Deployment's ServiceAccount with the Deployment's env.
//!
//! ```sh
//! export KARPCTL_SANDBOX_PORT_BASE=18500 KARPCTL_SANDBOX_DIR=/tmp/sb-bench   # optional
//! cargo bench -p karpctl-controller --bench controller -- all
//! cargo bench -p karpctl-controller --bench controller -- latency --rounds 40 --batch-idle 100ms
//! cargo bench -p karpctl-controller --bench controller -- memory --nodes 1000 --pods 10000
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, ServiceAccount};
use karpctl_api::v1::{NodeClaim, NodePool};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const SYSTEM_NAMESPACE: &str = "kube-system";
const LEASE: &str = "karpenter-leader-election";
/// Every object the bench creates carries this label (value: the benchmark's name).
const BENCH_LABEL: &str = "bench.karpctl.dev/run";
const LATENCY_POOL: &str = "bench-latency";
const MEMORY_POOL: &str = "bench-memory";
const MEMORY_NAMESPACE: &str = "karpctl-bench";
/// The demo's instance types (examples/demo/nodepool.yaml).
const INSTANCE_TYPES: [&str; 5] = [
    "m5.large",
    "m5.xlarge",
    "c5.xlarge",
    "r5.large",
    "r5.xlarge",
];

#[derive(Debug)]
struct Options {
    latency: bool,
    memory: bool,
    /// Only delete what an interrupted run left behind.
    clean: bool,
    /// Measured scale-ups (a warm-up round runs first and is reported apart).
    rounds: usize,
    pods_per_round: usize,
    /// `BATCH_IDLE_DURATION` for this run (the Deployment's own value is restored after).
    batch_idle: Option<String>,
    nodes: usize,
    pods: usize,
    /// Pending pods of the scheduling pass in the big cluster.
    pending: usize,
    /// Seconds the controller is left idle after its watches synced.
    idle: u64,
    /// Keep the memory run's big cluster afterwards, and measure in the one a previous
    /// `--reuse` run left if it has the asked-for size (saves creating 11,000 objects when
    /// comparing builds). `clean` deletes it.
    reuse: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            latency: true,
            memory: true,
            clean: false,
            rounds: 40,
            pods_per_round: 3,
            batch_idle: None,
            nodes: 1000,
            pods: 10_000,
            pending: 50,
            idle: 30,
            reuse: false,
        };
        let mut it = args.iter().filter(|a| *a != "--bench");
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{arg} needs a value"))
            };
            match arg.as_str() {
                "latency" => (o.latency, o.memory) = (true, false),
                "memory" => (o.latency, o.memory) = (false, true),
                "all" => (o.latency, o.memory) = (true, true),
                "clean" => (o.latency, o.memory, o.clean) = (false, false, true),
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--pods-per-round" => {
                    o.pods_per_round = value()?.parse().context("--pods-per-round")?
                }
                "--batch-idle" => o.batch_idle = Some(value()?),
                "--nodes" => o.nodes = value()?.parse().context("--nodes")?,
                "--pods" => o.pods = value()?.parse().context("--pods")?,
                "--pending" => o.pending = value()?.parse().context("--pending")?,
                "--idle" => o.idle = value()?.parse().context("--idle")?,
                "--reuse" => o.reuse = true,
                other => bail!(
                    "unknown argument {other}; usage: [latency|memory|all|clean] [--rounds N] \
                     [--pods-per-round N] [--batch-idle DURATION] [--nodes N] [--pods N] \
                     [--pending N] [--idle SECONDS] [--reuse]"
                ),
            }
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("controller bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controller bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<()> {
    let sandbox = Sandbox::up()?;
    let client = sandbox.kube().await?;
    sandbox.ensure_init(&client).await?;
    println!(
        "controller bench: {} on {} ({} CPUs), controller {}",
        utc_now(),
        hostname(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        controller_binary().display()
    );
    if options.latency {
        let result = latency(&sandbox, &client, &options).await;
        sandbox.stop_controller();
        result?;
    }
    if options.memory {
        let result = memory(&sandbox, &client, &options).await;
        sandbox.stop_controller();
        if options.reuse {
            eprintln!("memory: --reuse: the bench cluster stays (`-- clean` deletes it)");
            result?;
        } else {
            let cleaned = retried(|| clean_memory_objects(&client)).await;
            result?;
            cleaned?;
        }
    }
    if options.clean {
        // The controller finalizes the bench pools' NodeClaims, so it runs for the cleanup.
        sandbox.start_controller()?;
        retried(|| clean_latency_objects(&client)).await?;
        retried(|| delete_pool(&client, MEMORY_POOL)).await?;
        sandbox.stop_controller();
        retried(|| clean_memory_objects(&client)).await?;
    }
    Ok(())
}

/// Cleanup survives the API server dropping a connection under the big cluster's load.
async fn retried<F, Fut>(mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 4 => {
                eprintln!("cleanup failed ({e:#}), retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

// Latency ---------------------------------------------------------------------------------

/// When this bench first saw each pod `PodScheduled=False/Unschedulable` (Unix seconds).
type Seen = Arc<Mutex<HashMap<String, f64>>>;

async fn latency(sandbox: &Sandbox, client: &Client, options: &Options) -> Result<()> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get("karpenter")
        .await?;
    let env = |name: &str| {
        deployment
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.env.as_ref())
            .and_then(|e| e.iter().find(|v| v.name == name))
            .and_then(|v| v.value.clone())
    };
    let original_idle = env("BATCH_IDLE_DURATION");
    let idle = options
        .batch_idle
        .clone()
        .or_else(|| original_idle.clone())
        .unwrap_or_else(|| "1s".into());
    let max = env("BATCH_MAX_DURATION").unwrap_or_else(|| "10s".into());
    if let Some(wanted) = &options.batch_idle {
        sandbox.kubectl(&[
            "-n",
            SYSTEM_NAMESPACE,
            "set",
            "env",
            "deployment/karpenter",
            &format!("BATCH_IDLE_DURATION={wanted}"),
        ])?;
    }
    let result = latency_rounds(sandbox, client, options).await;
    if options.batch_idle.is_some() {
        let restore = match &original_idle {
            Some(v) => format!("BATCH_IDLE_DURATION={v}"),
            None => "BATCH_IDLE_DURATION-".into(),
        };
        sandbox.kubectl(&[
            "-n",
            SYSTEM_NAMESPACE,
            "set",
            "env",
            "deployment/karpenter",
            &restore,
        ])?;
    }
    let (warmup, samples) = result?;
    println!();
    println!(
        "latency: pending pod -> CreateFleet call, BATCH_IDLE_DURATION={idle} BATCH_MAX_DURATION={max}{}",
        if options.batch_idle.is_some() {
            " (set for this run)"
        } else {
            " (the Deployment's settings)"
        }
    );
    println!(
        "  {} rounds of {} pods each (pods with nodeSelector karpenter.sh/nodepool={LATENCY_POOL}, 100m/1Gi), \
         plus one warm-up round",
        options.rounds, options.pods_per_round
    );
    print_stats(
        "from Unschedulable (watch saw PodScheduled=False)",
        &samples
            .iter()
            .map(|s| s.from_unschedulable)
            .collect::<Vec<_>>(),
    );
    print_stats(
        "from pod created (create call sent)",
        &samples.iter().map(|s| s.from_created).collect::<Vec<_>>(),
    );
    print_stats(
        "each round's longest wait, from Unschedulable",
        &longest_per_round(&samples),
    );
    if let Some(w) = warmup {
        println!(
            "  warm-up round (first launch after start, not counted): {w:.3} s from Unschedulable"
        );
    }
    Ok(())
}

struct Sample {
    round: usize,
    from_unschedulable: f64,
    from_created: f64,
}

/// Each round's longest wait: its first pending pod's, the one that opened the batch.
fn longest_per_round(samples: &[Sample]) -> Vec<f64> {
    let mut by_round: BTreeMap<usize, f64> = BTreeMap::new();
    for s in samples {
        let e = by_round.entry(s.round).or_insert(f64::MIN);
        *e = e.max(s.from_unschedulable);
    }
    by_round.into_values().collect()
}

async fn latency_rounds(
    sandbox: &Sandbox,
    client: &Client,
    options: &Options,
) -> Result<(Option<f64>, Vec<Sample>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    clean_latency_objects(client).await?;
    create_pool(client, LATENCY_POOL).await?;
    sandbox.start_controller()?;

    let seen: Seen = Arc::default();
    let watch = tokio::spawn(watch_unschedulable(pods.clone(), seen.clone()));
    let mut samples = Vec::new();
    let mut warmup = None;
    let result: Result<()> = async {
        for round in 0..=options.rounds {
            let got = latency_round(sandbox, client, &pods, &seen, round, options).await?;
            if round == 0 {
                warmup = got.iter().map(|s| s.from_unschedulable).reduce(f64::max);
            } else {
                samples.extend(got);
            }
            clean_latency_round(client, &pods).await?;
            if round.is_multiple_of(10) {
                eprintln!("latency: round {round}/{} done", options.rounds);
            }
        }
        Ok(())
    }
    .await;
    watch.abort();
    let cleaned = clean_latency_objects(client).await;
    result?;
    cleaned?;
    Ok((warmup, samples))
}

async fn watch_unschedulable(pods: Api<Pod>, seen: Seen) {
    let config = watcher::Config::default().labels(&format!("{BENCH_LABEL}=latency"));
    let mut stream = watcher(pods, config).boxed();
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let unschedulable = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            });
        if unschedulable {
            let now = unix_now();
            seen.lock().unwrap().entry(pod.name_any()).or_insert(now);
        }
    }
}

async fn latency_round(
    sandbox: &Sandbox,
    client: &Client,
    pods: &Api<Pod>,
    seen: &Seen,
    round: usize,
    options: &Options,
) -> Result<Vec<Sample>> {
    let mut created = BTreeMap::new();
    let mut uids: HashMap<String, String> = HashMap::new();
    for i in 0..options.pods_per_round {
        let name = format!("bench-latency-{round:03}-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "latency"}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "nodeSelector": {"karpenter.sh/nodepool": LATENCY_POOL},
                "containers": [{
                    "name": "inflate",
                    "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
                    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}
                }]
            }
        }))?;
        let sent = unix_now();
        let pod = pods
            .create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
        // Events outlive pods: an earlier run's pod of the same name is told apart by uid.
        uids.insert(pod.uid().unwrap_or_default(), name.clone());
        created.insert(name, sent);
    }

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Pod -> the claim its Nominated event names -> that claim's CreateFleet call.
        let mut claim_of: HashMap<String, String> = HashMap::new();
        for e in events
            .list(&ListParams::default().fields("reason=Nominated"))
            .await?
        {
            let Some(pod) = e
                .involved_object
                .uid
                .as_ref()
                .and_then(|u| uids.get(u))
                .cloned()
            else {
                continue;
            };
            if let Some(claim) = e
                .message
                .as_deref()
                .and_then(|m| m.rsplit_once("nodeclaim/"))
                .map(|(_, c)| c.trim().to_owned())
                && created.contains_key(&pod)
            {
                claim_of.insert(pod, claim);
            }
        }
        let fleets: HashMap<String, f64> = sandbox
            .aws_calls()
            .await?
            .into_iter()
            .filter(|c| c["operation"] == "CreateFleet")
            .filter_map(|c| {
                let claim = c["tags"]["karpenter.sh/nodeclaim"].as_str()?.to_owned();
                let at = c["received"].as_f64().or_else(|| c["time"].as_f64())?;
                Some((claim, at))
            })
            .fold(HashMap::new(), |mut m, (claim, at)| {
                let e = m.entry(claim).or_insert(at);
                *e = e.min(at);
                m
            });
        let seen_now = seen.lock().unwrap().clone();
        let done: Vec<Sample> = created
            .iter()
            .filter_map(|(pod, sent)| {
                let fleet = fleets.get(claim_of.get(pod)?)?;
                let unschedulable = seen_now.get(pod)?;
                Some(Sample {
                    round,
                    from_unschedulable: fleet - unschedulable,
                    from_created: fleet - sent,
                })
            })
            .collect();
        if done.len() == created.len() {
            return Ok(done);
        }
        if Instant::now() > deadline {
            bail!(
                "round {round}: only {} of {} pods got a CreateFleet within 90 s (nominated: {:?})",
                done.len(),
                created.len(),
                claim_of
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Delete the round's pods and the pool's claims, and wait until their Nodes are gone, so
/// the next round needs a fresh launch.
async fn clean_latency_round(client: &Client, pods: &Api<Pod>) -> Result<()> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete_collection(
        &now,
        &ListParams::default().labels(&format!("{BENCH_LABEL}=latency")),
    )
    .await?;
    delete_pool_claims(client, LATENCY_POOL).await
}

async fn delete_pool_claims(client: &Client, pool: &str) -> Result<()> {
    let selector = format!("karpenter.sh/nodepool={pool}");
    let claims: Api<NodeClaim> = Api::all(client.clone());
    claims
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left_claims = claims
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
            .len();
        let left_nodes = nodes
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
            .len();
        if left_claims == 0 && left_nodes == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{left_claims} NodeClaim(s) and {left_nodes} Node(s) of NodePool {pool} still there after 180 s"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn clean_latency_objects(client: &Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete_collection(
        &now,
        &ListParams::default().labels(&format!("{BENCH_LABEL}=latency")),
    )
    .await?;
    delete_pool(client, LATENCY_POOL).await
}

async fn create_pool(client: &Client, name: &str) -> Result<()> {
    let pool: NodePool = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": name, "labels": {BENCH_LABEL: name}},
        "spec": {
            "template": {"spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": INSTANCE_TYPES},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}
                ]
            }},
            "limits": {"cpu": "1000"}
        }
    }))?;
    Api::<NodePool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .with_context(|| format!("creating NodePool {name}"))?;
    Ok(())
}

/// Delete a bench NodePool after its claims (and so its instances and Nodes) are gone.
async fn delete_pool(client: &Client, name: &str) -> Result<()> {
    let pools: Api<NodePool> = Api::all(client.clone());
    if pools.get_opt(name).await?.is_none() {
        return Ok(());
    }
    delete_pool_claims(client, name).await?;
    pools.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

// Memory ----------------------------------------------------------------------------------

async fn memory(sandbox: &Sandbox, client: &Client, options: &Options) -> Result<()> {
    // What an interrupted run left: the pool's claims need the controller to go.
    sandbox.start_controller()?;
    retried(|| delete_pool(client, MEMORY_POOL)).await?;
    sandbox.stop_controller();
    let reused =
        options.reuse && bench_cluster_size(client).await? == (options.nodes, options.pods);
    let started = Instant::now();
    if reused {
        eprintln!("memory: --reuse: measuring in the bench cluster a previous run left");
    } else {
        retried(|| clean_memory_objects(client)).await?;
        create_fake_cluster(client, options).await?;
    }
    let total_pods = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let total_nodes = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    eprintln!(
        "memory: cluster has {total_nodes} nodes and {total_pods} pods ({:.0} s to create)",
        started.elapsed().as_secs_f64()
    );

    let (pid, metrics_port) = sandbox.start_controller()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    loop {
        if metric(metrics_port, "karpenter_cluster_state_synced")
            .await
            .unwrap_or(0.0)
            == 1.0
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the controller did not report karpenter_cluster_state_synced 1 within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let synced_after = started.elapsed().as_secs_f64();
    let at_sync = proc_memory(pid)?;
    let node_count = metric(metrics_port, "karpenter_cluster_state_node_count")
        .await
        .unwrap_or(f64::NAN);
    let mut idle_max = at_sync.rss_kib;
    let idle_until = Instant::now() + Duration::from_secs(options.idle);
    while Instant::now() < idle_until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle_max = idle_max.max(proc_memory(pid)?.rss_kib);
    }
    let idle = proc_memory(pid)?;
    let idle_where = smaps_breakdown(pid)?;

    // A scheduling pass in the big cluster: pending pods only a new NodePool's capacity fits.
    create_pool(client, MEMORY_POOL).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), MEMORY_NAMESPACE);
    let pass_started = Instant::now();
    for i in 0..options.pending {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("bench-pending-{i:03}"), "labels": {BENCH_LABEL: "memory-pending"}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "nodeSelector": {"karpenter.sh/nodepool": MEMORY_POOL},
                "containers": [{"name": "inflate", "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
                                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]
            }
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    let mut pass_max = idle.rss_kib;
    let deadline = Instant::now() + Duration::from_secs(300);
    let selector = format!("{BENCH_LABEL}=memory-pending");
    loop {
        pass_max = pass_max.max(proc_memory(pid)?.rss_kib);
        let not_running = pods
            .list(
                &ListParams::default()
                    .labels(&selector)
                    .fields("status.phase!=Running"),
            )
            .await?
            .items
            .len();
        if not_running == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{not_running} of {} pending pods not running after 300 s",
                options.pending
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pass_secs = pass_started.elapsed().as_secs_f64();
    let claims = Api::<NodeClaim>::all(client.clone())
        .list_metadata(
            &ListParams::default().labels(&format!("karpenter.sh/nodepool={MEMORY_POOL}")),
        )
        .await?
        .items
        .len();
    let after_pass = proc_memory(pid)?;
    let after_pass_where = smaps_breakdown(pid)?;
    // The pass's claims are finalized by the controller, so they go while it still runs.
    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
        &ListParams::default().labels(&selector),
    )
    .await?;
    retried(|| delete_pool(client, MEMORY_POOL)).await?;

    println!();
    println!(
        "memory: controller with {total_nodes} nodes and {total_pods} pods in the cluster \
         ({} bench nodes, {} bench pods; the rest are the sandbox's own and DaemonSet pods)",
        options.nodes, options.pods
    );
    println!(
        "  watches synced after {synced_after:.1} s (karpenter_cluster_state_synced 1, node_count {node_count})"
    );
    println!(
        "  at sync:                    VmRSS {:>7.1} MiB  VmHWM {:>7.1} MiB  ({})",
        mib(at_sync.rss_kib),
        mib(at_sync.hwm_kib),
        split(&at_sync)
    );
    println!(
        "  idle {:>3} s later:          VmRSS {:>7.1} MiB  VmHWM {:>7.1} MiB  ({}; max VmRSS sampled {:.1} MiB)",
        options.idle,
        mib(idle.rss_kib),
        mib(idle.hwm_kib),
        split(&idle),
        mib(idle_max)
    );
    println!("      resident: {idle_where}");
    println!(
        "  after scheduling {} pending pods onto {claims} new NodeClaim(s) ({pass_secs:.1} s to all Running):",
        options.pending
    );
    println!(
        "                              VmRSS {:>7.1} MiB  VmHWM {:>7.1} MiB  ({}; max VmRSS sampled {:.1} MiB)",
        mib(after_pass.rss_kib),
        mib(after_pass.hwm_kib),
        split(&after_pass),
        mib(pass_max)
    );
    println!("      resident: {after_pass_where}");
    Ok(())
}

/// `options.nodes` kwok Nodes shaped like EKS nodes of three instance types across three
/// zones (half of them labelled as a Karpenter NodePool's), and `options.pods` pods bound to
/// them round-robin; waits until kwok runs them all.
async fn create_fake_cluster(client: &Client, options: &Options) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": MEMORY_NAMESPACE, "labels": {BENCH_LABEL: "memory"}}
    }))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    // The ServiceAccount admission plugin refuses pods until the namespace's default SA exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), MEMORY_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("namespace {MEMORY_NAMESPACE} has no default ServiceAccount after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..options.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let node: Node = serde_json::from_value(fake_node(i))?;
                nodes
                    .create(&PostParams::default(), &node)
                    .await
                    .with_context(|| format!("creating node {i}"))?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!("memory: created {} nodes", options.nodes);

    let pods: Api<Pod> = Api::namespaced(client.clone(), MEMORY_NAMESPACE);
    let nodes_count = options.nodes.max(1);
    futures::stream::iter(0..options.pods)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(fake_pod(i, i % nodes_count))?;
                for attempt in 0..5 {
                    match pods.create(&PostParams::default(), &pod).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                        Err(e) if attempt == 4 => {
                            return Err(anyhow!(e).context(format!("creating pod {i}")));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "memory: created {} pods, waiting for kwok to run them",
        options.pods
    );

    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let waiting = pods
            .list_metadata(
                &ListParams::default()
                    .fields("status.phase!=Running")
                    .limit(1),
            )
            .await?;
        let left = waiting.items.len() as i64 + waiting.metadata.remaining_item_count.unwrap_or(0);
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} bench pods still not Running after 600 s");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

const FAKE_TYPES: [(&str, &str, &str, &str); 3] = [
    // (type, cpu, memory capacity, max pods) as the EKS AMI reports them.
    ("m5.2xlarge", "8", "32386348Ki", "58"),
    ("c5.2xlarge", "8", "15834956Ki", "58"),
    ("r5.xlarge", "4", "32386348Ki", "58"),
];

fn fake_node(i: usize) -> Value {
    let name = format!("bench-node-{i:04}");
    let (instance_type, cpu, memory, pods) = FAKE_TYPES[i % FAKE_TYPES.len()];
    let zone = ["us-west-2a", "us-west-2b", "us-west-2c"][i % 3];
    let (family, size) = instance_type.split_once('.').unwrap_or((instance_type, ""));
    let mut labels = json!({
        BENCH_LABEL: "memory",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": "us-west-2",
        "topology.kubernetes.io/zone": zone,
        "failure-domain.beta.kubernetes.io/region": "us-west-2",
        "failure-domain.beta.kubernetes.io/zone": zone,
        "topology.k8s.aws/zone-id": format!("usw2-az{}", i % 3 + 1),
        "k8s.io/cloud-provider-aws": "a94967527effcefb5f5829f529c0a1b9",
        "type": "kwok",
    });
    if i.is_multiple_of(2) {
        // Shaped like a node a Karpenter NodePool launched (no NodeClaim: the controller
        // would garbage-collect a claim whose instance does not exist).
        let extra = json!({
            "karpenter.sh/nodepool": "bench-fake",
            "karpenter.sh/capacity-type": "on-demand",
            "karpenter.sh/registered": "true",
            "karpenter.sh/initialized": "true",
            "karpenter.k8s.aws/ec2nodeclass": "default",
            "karpenter.k8s.aws/instance-category": &family[..1],
            "karpenter.k8s.aws/instance-family": family,
            "karpenter.k8s.aws/instance-generation": "5",
            "karpenter.k8s.aws/instance-size": size,
            "karpenter.k8s.aws/instance-cpu": cpu,
            "karpenter.k8s.aws/instance-hypervisor": "nitro",
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            labels[k] = v.clone();
        }
    } else {
        labels["eks.amazonaws.com/nodegroup"] = json!("bench-fake");
        labels["eks.amazonaws.com/capacityType"] = json!("ON_DEMAND");
    }
    let resources = json!({"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "20959212Ki",
                           "hugepages-1Gi": "0", "hugepages-2Mi": "0"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake",
                            "alpha.kubernetes.io/provided-node-ip": format!("10.0.{}.{}", 128 + i / 250, i % 250 + 1)}
        },
        // Not `aws:///...`: the sandbox registrar deletes aws Nodes whose instance is gone.
        "spec": {"providerID": format!("kwok://{name}")},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.37.2-eks-5c3fd20",
                         "kubeProxyVersion": "", "containerRuntimeVersion": "containerd://2.1.4",
                         "kernelVersion": "6.12.40-63.114.amzn2023.x86_64", "osImage": "Amazon Linux 2023.9.20250929",
                         "bootID": "", "machineID": "", "systemUUID": ""}
        }
    })
}

fn fake_pod(i: usize, node: usize) -> Value {
    let app = format!("svc-{:03}", i % 200);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{app}-{i:05}"),
            "labels": {BENCH_LABEL: "memory", "app.kubernetes.io/name": app,
                       "app.kubernetes.io/part-of": "bench", "pod-template-hash": format!("{:08x}", i % 200 * 7919)},
            "annotations": {"kubectl.kubernetes.io/default-container": "app"}
        },
        "spec": {
            "nodeName": format!("bench-node-{node:04}"),
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "app",
                "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "SERVICE_NAME", "value": app}, {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}
            }],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": app}}}]
        }
    })
}

/// Bench nodes, and bench pods kwok runs, in the cluster now.
async fn bench_cluster_size(client: &Client) -> Result<(usize, usize)> {
    let selector = format!("{BENCH_LABEL}=memory");
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
        .items
        .len();
    let pods = Api::<Pod>::namespaced(client.clone(), MEMORY_NAMESPACE)
        .list_metadata(
            &ListParams::default()
                .labels(&selector)
                .fields("status.phase=Running"),
        )
        .await?
        .items
        .len();
    Ok((nodes, pods))
}

/// Everything the memory benchmark creates, deleted (idempotent; also run before it starts).
async fn clean_memory_objects(client: &Client) -> Result<()> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(MEMORY_NAMESPACE).await?.is_some() {
        let pods: Api<Pod> = Api::namespaced(client.clone(), MEMORY_NAMESPACE);
        pods.delete_collection(&now, &ListParams::default()).await?;
    }
    delete_pool(client, MEMORY_POOL).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = format!("{BENCH_LABEL}=memory");
    nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await?;
    if namespaces.get_opt(MEMORY_NAMESPACE).await?.is_some() {
        namespaces
            .delete(MEMORY_NAMESPACE, &DeleteParams::default())
            .await?;
    }
    // The DaemonSets' pods on the deleted nodes (in kube-system) are force-deleted here rather
    // than left to the pod garbage collector; wait for them and for the namespace, so the next
    // run (and other tests) see a normal cluster.
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left_ns = namespaces.get_opt(MEMORY_NAMESPACE).await?.is_some();
        let left_nodes = nodes
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
            .len();
        let orphans: Vec<String> = system_pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| n.starts_with("bench-node-"))
            })
            .map(|p| p.name_any())
            .collect();
        if !left_ns && left_nodes == 0 && orphans.is_empty() {
            return Ok(());
        }
        if left_nodes == 0 {
            futures::stream::iter(orphans.iter())
                .for_each_concurrent(8, |name| {
                    let (pods, now) = (system_pods.clone(), now.clone());
                    async move {
                        let _ = pods.delete(name, &now).await;
                    }
                })
                .await;
        }
        if Instant::now() > deadline {
            bail!(
                "cleanup: namespace left {left_ns}, {left_nodes} bench nodes, {} pods on bench nodes after 300 s",
                orphans.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct ProcMemory {
    rss_kib: u64,
    hwm_kib: u64,
    /// The heap and stacks (what the controller allocated and the allocator kept).
    anon_kib: u64,
    /// Pages of the binary and its libraries (the code the controller ran).
    file_kib: u64,
}

fn proc_memory(pid: u32) -> Result<ProcMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (did the controller exit?)"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))
    };
    Ok(ProcMemory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
        file_kib: field("RssFile:")?,
    })
}

/// Where the resident pages are, from `/proc/<pid>/smaps`: the binary's code, the rest of the
/// binary (read-only data, relocation tables, and the pages relocations or writes dirtied),
/// shared libraries, and everything anonymous (the allocator's heap, thread stacks).
fn smaps_breakdown(pid: u32) -> Result<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let exe = exe.to_string_lossy();
    let (mut code, mut binary, mut binary_dirty, mut libs, mut anon) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut current: Option<(bool, bool, bool)> = None; // (is binary, is code, is file)
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            && fields.len() >= 5
        {
            let path = fields.get(5).copied().unwrap_or("");
            let is_binary = path == exe;
            let is_file = path.starts_with('/');
            current = Some((is_binary, fields[1].contains('x'), is_file));
            continue;
        }
        let Some((is_binary, is_code, is_file)) = current else {
            continue;
        };
        let kib = || {
            fields
                .get(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match fields.first().copied() {
            Some("Rss:") if is_binary && is_code => code += kib(),
            Some("Rss:") if is_binary => binary += kib(),
            Some("Rss:") if is_file => libs += kib(),
            Some("Rss:") => anon += kib(),
            Some("Anonymous:") if is_binary => binary_dirty += kib(),
            _ => {}
        }
    }
    Ok(format!(
        "binary code {:.1} MiB, binary data {:.1} MiB ({:.1} written), libraries {:.1} MiB, heap and stacks {:.1} MiB",
        mib(code),
        mib(binary),
        mib(binary_dirty),
        mib(libs),
        mib(anon)
    ))
}

/// `anon X MiB + file Y MiB`: heap and stacks, and code, of a resident size.
fn split(m: &ProcMemory) -> String {
    format!(
        "anon {:.1} MiB + file {:.1} MiB",
        mib(m.anon_kib),
        mib(m.file_kib)
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One unlabelled sample from the controller's `/metrics`.
async fn metric(port: u16, name: &str) -> Result<f64> {
    let body = http("GET", &format!("http://127.0.0.1:{port}/metrics")).await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no {name} in /metrics"))
}

// Figures ---------------------------------------------------------------------------------

fn print_stats(what: &str, values: &[f64]) {
    if values.is_empty() {
        println!("  {what}: no samples");
        return;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pct = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "  {what}: n={} p50 {:.3} s  p90 {:.3} s  p99 {:.3} s  max {:.3} s  min {:.3} s",
        v.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        v[v.len() - 1],
        v[0]
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this machine".into())
}

// The sandbox -----------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the controller crate lives in the workspace")
        .to_path_buf()
}

fn controller_binary() -> PathBuf {
    // Another build, or a wrapper such as a heap profiler, to measure instead.
    if let Some(path) = std::env::var_os("KARPCTL_BENCH_CONTROLLER") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_karpctl-controller"))
}

/// This checkout's sandbox (`KARPCTL_SANDBOX_PORT_BASE`/`KARPCTL_SANDBOX_DIR` choose which),
/// reached only through its own `env` output: no developer kubeconfig or AWS profile is read.
struct Sandbox {
    env: HashMap<String, String>,
}

impl Sandbox {
    fn up() -> Result<Sandbox> {
        let script = repo_root().join("sandbox/sandbox");
        let up = Command::new(&script)
            .arg("up")
            .output()
            .context("running sandbox/sandbox up")?;
        if !up.status.success() {
            bail!(
                "sandbox/sandbox up failed: {}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
        let out = Command::new(&script)
            .arg("env")
            .output()
            .context("running sandbox/sandbox env")?;
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        Ok(Sandbox { env })
    }

    fn var(&self, key: &str) -> Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("sandbox env has no {key}"))
    }

    async fn kube(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.var("KUBECONFIG")?)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.read_timeout = Some(Duration::from_secs(300));
        Ok(Client::try_from(config)?)
    }

    /// Runs `sandbox/sandbox <args>`, returning stdout.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(repo_root().join("sandbox/sandbox"))
            .args(args)
            .output()
            .context("running sandbox/sandbox")?;
        if !out.status.success() {
            bail!(
                "sandbox/sandbox {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["kubectl"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `karpctl init --cluster <sandbox> --yes` unless the controller's Deployment exists.
    async fn ensure_init(&self, client: &Client) -> Result<()> {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
        if deployments.get_opt("karpenter").await?.is_some() {
            return Ok(());
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| {
                if t.is_absolute() {
                    t
                } else {
                    repo_root().join(t)
                }
            })
            .unwrap_or_else(|| repo_root().join("target"));
        eprintln!("bench: building karpctl to run `karpctl init`");
        let built = Command::new(env!("CARGO"))
            .args(["build", "--locked", "-q", "-p", "karpctl"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(repo_root())
            .status()
            .context("running cargo build -p karpctl")?;
        if !built.success() {
            bail!("cargo build -p karpctl failed");
        }
        let home = std::env::temp_dir().join("karpctl-bench-home");
        std::fs::create_dir_all(&home)?;
        let out = Command::new(target.join("debug/karpctl"))
            .args([
                "init",
                "--cluster",
                self.var("KARPCTL_SANDBOX_CLUSTER")?,
                "--yes",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .envs(self.env.iter())
            .stdin(std::process::Stdio::null())
            .output()
            .context("running karpctl init")?;
        if !out.status.success() {
            bail!(
                "karpctl init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// One replica of the bench's controller binary, as the Deployment's ServiceAccount; its
    /// pid and metrics port.
    fn start_controller(&self) -> Result<(u32, u16)> {
        self.stop_controller();
        let binary = controller_binary();
        self.run(&[
            "controller",
            "start",
            "--replicas",
            "1",
            "--binary",
            binary.to_str().context("binary path")?,
        ])?;
        let status: Value =
            serde_json::from_str(&self.run(&["controller", "status", "-o", "json"])?)?;
        let replica = &status["replicas"][0];
        let pid = replica["pid"]
            .as_u64()
            .context("controller status has no pid")? as u32;
        let port = replica["metrics_port"]
            .as_u64()
            .context("controller status has no metrics port")? as u16;
        Ok((pid, port))
    }

    /// Stops the replicas and forgets the Lease, so the next start leads at once.
    fn stop_controller(&self) {
        let _ = self.run(&["controller", "stop"]);
        let _ = self.kubectl(&[
            "-n",
            SYSTEM_NAMESPACE,
            "delete",
            "lease",
            LEASE,
            "--ignore-not-found",
        ]);
    }

    /// The calls the sandbox AWS endpoint has answered (`/_sandbox/calls`).
    async fn aws_calls(&self) -> Result<Vec<Value>> {
        let body = http(
            "GET",
            &format!("{}/_sandbox/calls", self.var("AWS_ENDPOINT_URL")?),
        )
        .await?;
        let doc: Value = serde_json::from_str(&body)?;
        Ok(doc["calls"].as_array().cloned().unwrap_or_default())
    }
}

/// A minimal HTTP/1.1 GET for loopback plain-HTTP endpoints (the sandbox's control routes,
/// the controller's /metrics).
async fn http(method: &str, url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only plain http on loopback"))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, payload) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{url}: not an HTTP response"))?;
    if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
        bail!("{method} {url}: {}", head.lines().next().unwrap_or(head));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut body = payload;
        let mut out = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            body = rest[n..].trim_start_matches("\r\n");
        }
        Ok(out)
    } else {
        Ok(payload.to_owned())
    }
}
