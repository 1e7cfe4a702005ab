//! Scheduling benchmarks, printed, never asserted (timings depend on the machine):
//!
//! (a) upstream Karpenter's benchmark shape — the whole shipped catalogue, pods in five
//!     equal groups (plain, zone spread, hostname spread, zone self-affinity, hostname
//!     anti-affinity) from 1 to 40k pods — printing pods/s, nodes and $/h;
//! (b) cost quality on a suite of workloads against the configuration-LP lower bound over
//!     whole (integer) packings, `lowerbound::integer_configuration_bound` ((a)'s column is
//!     the faster fractional bound) within a work budget (`KARPCTL_BENCH_LP_WORK` knapsack
//!     nodes, default `DEFAULT_WORK_BUDGET`); the "bound" column says which figure a row
//!     got: `whole` (converged), `whole/budget` (valid, stopped early) or `fractional`;
//! (c) peak memory (VmHWM) of the process.
//!
//! `cargo bench -p karpctl-scheduling --bench scheduling [-- SIZES... | b]` (`b`: only (b);
//! `KARPCTL_BENCH_ONLY=<prefix>`: only those workloads; `KARPCTL_BENCH_DETAIL=<prefix>`:
//! their chosen types)

use std::sync::Arc;
use std::time::Instant;

use karpctl_cloud::{Catalogue, CatalogueOptions, InstanceType, labels};
use karpctl_scheduling::checker::{Input, verify};
use karpctl_scheduling::lowerbound::{
    BoundKind, DEFAULT_WORK_BUDGET, NodeType, PodClass, configuration_bound,
    integer_configuration_bound,
};
use karpctl_scheduling::{
    LabelSelector, NodePool, Operator, Pod, Requirement, Requirements, Scheduler, pod,
};

/// Deterministic xorshift so every run plans the same pods.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const CPUS: &[&str] = &["100m", "250m", "500m", "1", "1500m", "2"];
const MEMS: &[&str] = &["128Mi", "256Mi", "512Mi", "1Gi", "2Gi", "4Gi"];

fn sized(rng: &mut Rng, name: String) -> Pod {
    pod().name(&name).cpu(rng.pick(CPUS)).memory(rng.pick(MEMS))
}

fn app(name: &str) -> LabelSelector {
    LabelSelector::labels([("app", name)])
}

/// Upstream's diverse pod mix: five equal groups.
fn diverse(n: usize, rng: &mut Rng) -> Vec<Pod> {
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let p = sized(rng, format!("p-{i}"));
        pods.push(match i % 5 {
            0 => p.label("app", "plain"),
            1 => p.label("app", "zs").spread(labels::ZONE, 1, app("zs")),
            2 => p.label("app", "hs").spread(labels::HOSTNAME, 1, app("hs")),
            3 => p.label("app", "za").affinity(labels::ZONE, app("za")),
            _ => p
                .label("app", "ha")
                .anti_affinity(labels::HOSTNAME, app("ha")),
        });
    }
    pods
}

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn pool(name: &str, types: &Arc<Vec<InstanceType>>, requirements: Requirements) -> NodePool {
    NodePool {
        requirements,
        ..NodePool::new(name, types.clone())
    }
}

/// The configuration-LP lower bound over the pools' types for these pods; pods whose
/// `app` label is in `one_per_node` may not share a node with each other. With
/// `whole_packings`, the tighter bound over integer packings (slower to compute, so given
/// a work budget). Also returns which bound the figure is.
fn lower_bound(
    pools: &[NodePool],
    pods: &[Pod],
    one_per_node: &[&str],
    whole_packings: bool,
) -> (f64, &'static str) {
    let dims = ["cpu", "memory", "pods", "nvidia.com/gpu"];
    let scale = |r: &karpctl_cloud::Resources, d: &str| -> f64 {
        match d {
            "cpu" => r.cpu as f64 / 1000.0,
            "memory" => r.memory as f64 / (1u64 << 30) as f64,
            other => r.get(other) as f64,
        }
    };
    let mut classes: std::collections::BTreeMap<(String, bool), PodClass> =
        std::collections::BTreeMap::new();
    for p in pods {
        let mut r = p.requests.clone();
        r.pods = 1;
        let alone = p
            .labels
            .get("app")
            .is_some_and(|a| one_per_node.contains(&a.as_str()));
        let key = (format!("{r:?}"), alone);
        classes
            .entry(key)
            .or_insert_with(|| PodClass {
                count: 0.0,
                request: dims.iter().map(|d| scale(&r, d)).collect(),
                max_per_node: alone.then_some(1.0),
            })
            .count += 1.0;
    }
    let mut types = Vec::new();
    for p in pools {
        for it in p.instance_types.iter() {
            let labels = &it.labels;
            let ok = p.requirements.iter().all(|r| match labels.get(&r.key) {
                Some(v) => r.has(v),
                None => {
                    r.key == labels::ZONE || r.key == labels::CAPACITY_TYPE || r.allows_absent()
                }
            });
            if !ok {
                continue;
            }
            let Some(o) = it.cheapest_offering(|o| {
                p.requirements
                    .allows(labels::CAPACITY_TYPE, o.capacity_type.as_str())
                    && p.requirements.allows(labels::ZONE, &o.zone)
            }) else {
                continue;
            };
            types.push(NodeType {
                price: o.price,
                allocatable: dims
                    .iter()
                    .map(|d| scale(&it.allocatable, d).max(0.0))
                    .collect(),
            });
        }
    }
    let classes: Vec<PodClass> = classes.into_values().collect();
    if whole_packings {
        let work = std::env::var("KARPCTL_BENCH_LP_WORK")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(DEFAULT_WORK_BUDGET);
        match integer_configuration_bound(&types, &classes, 60, work) {
            Some(b) => (
                b.value,
                match b.kind {
                    BoundKind::Fractional => "fractional",
                    BoundKind::WholePackings => "whole",
                    BoundKind::WholePackingsBudgeted => "whole/budget",
                },
            ),
            None => (f64::NAN, "none"),
        }
    } else {
        configuration_bound(&types, &classes, 60)
            .map(|(b, _)| (b, "fractional"))
            .unwrap_or((f64::NAN, "none"))
    }
}

fn main() {
    // `b` alone skips (a); `KARPCTL_BENCH_ONLY=<prefix>` runs only matching (b) workloads.
    let only_b = std::env::args().skip(1).any(|a| a == "b");
    let only = std::env::var("KARPCTL_BENCH_ONLY").ok();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if only_b {
        Vec::new()
    } else if args.is_empty() {
        vec![1, 100, 500, 1_000, 5_000, 10_000, 20_000, 40_000]
    } else {
        args
    };
    let catalogue = Catalogue::shipped(&CatalogueOptions {
        spot: false,
        ..CatalogueOptions::default()
    })
    .unwrap();
    let all: Arc<Vec<InstanceType>> = Arc::new(catalogue.instance_types.clone());
    println!(
        "(a) upstream benchmark shape: {} instance types, 3 zones, on-demand",
        all.len()
    );
    println!(
        "{:>7} {:>9} {:>10} {:>7} {:>10} {:>8} {:>8} {:>10}",
        "pods", "seconds", "pods/s", "nodes", "$/h", "unsched", "LP $/h", "checker"
    );
    for &n in &sizes {
        let mut rng = Rng(0x9E3779B97F4A7C15 ^ n as u64);
        let pods = diverse(n, &mut rng);
        let pools = vec![pool("default", &all, Requirements::new())];
        let scheduler = Scheduler::new(pools.clone(), Vec::new(), Vec::new());
        let start = Instant::now();
        let results = scheduler.solve(&pods);
        let secs = start.elapsed().as_secs_f64();
        let checked = if n <= 5_000 {
            let input = Input {
                pods: &pods,
                node_pools: &pools,
                nodes: &[],
                daemon_sets: &[],
            };
            let v = verify(&input, &results);
            if v.is_empty() {
                "ok".to_string()
            } else {
                format!("{} FAIL: {}", v.len(), v[0])
            }
        } else {
            "skipped".to_string()
        };
        let lb = if n <= 5_000 {
            lower_bound(&pools, &pods, &["hs", "ha"], false).0
        } else {
            f64::NAN
        };
        println!(
            "{:>7} {:>9.3} {:>10.0} {:>7} {:>10.3} {:>8} {:>8.3} {:>10}",
            n,
            secs,
            n as f64 / secs,
            results.node_claims.len(),
            results.total_price(),
            results.unschedulable.len(),
            lb,
            checked
        );
    }

    println!();
    println!(
        "(b) cost quality against the LP lower bound over whole packings (on-demand, whole catalogue unless restricted)"
    );
    println!(
        "{:<24} {:>6} {:>6} {:>9} {:>9} {:>13} {:>7} {:>8} {:>8}",
        "workload", "pods", "nodes", "$/h", "LP $/h", "bound", "ratio", "seconds", "LP secs"
    );
    let mut ratios = Vec::new();
    let restricted = Requirements::from_iter([Requirement::new(
        labels::INSTANCE_FAMILY,
        Operator::In,
        &["m5", "c5", "r5"],
    )
    .unwrap()]);
    type Scenario = (&'static str, Vec<Pod>, Requirements, Vec<&'static str>);
    let mut rng = Rng(42);
    let scenarios: Vec<Scenario> = vec![
        (
            "mixed sizes",
            (0..3000)
                .map(|i| sized(&mut rng, format!("m-{i}")))
                .collect(),
            Requirements::new(),
            vec![],
        ),
        (
            "memory-heavy",
            (0..1000)
                .map(|i| {
                    pod()
                        .name(&format!("mem-{i}"))
                        .cpu("500m")
                        .memory(["6Gi", "8Gi", "12Gi"][i % 3])
                })
                .collect(),
            Requirements::new(),
            vec![],
        ),
        (
            "cpu-heavy",
            (0..1000)
                .map(|i| {
                    pod()
                        .name(&format!("cpu-{i}"))
                        .cpu(["2", "3", "4"][i % 3])
                        .memory("1Gi")
                })
                .collect(),
            Requirements::new(),
            vec![],
        ),
        (
            "gpu + plain",
            (0..40)
                .map(|i| {
                    pod()
                        .name(&format!("gpu-{i}"))
                        .cpu("4")
                        .memory("16Gi")
                        .resource("nvidia.com/gpu", "1")
                })
                .chain((0..400).map(|i| sized(&mut rng, format!("g-{i}"))))
                .collect(),
            Requirements::new(),
            vec![],
        ),
        (
            "zone spread",
            (0..1500)
                .map(|i| {
                    sized(&mut rng, format!("z-{i}")).label("app", "z").spread(
                        labels::ZONE,
                        1,
                        app("z"),
                    )
                })
                .collect(),
            Requirements::new(),
            vec![],
        ),
        (
            "hostname anti-affinity",
            (0..200)
                .map(|i| {
                    pod()
                        .name(&format!("h-{i}"))
                        .cpu("1")
                        .memory("2Gi")
                        .label("app", "h")
                        .anti_affinity(labels::HOSTNAME, app("h"))
                })
                .chain((0..800).map(|i| sized(&mut rng, format!("hp-{i}"))))
                .collect(),
            Requirements::new(),
            vec!["h"],
        ),
        (
            "restricted to m5/c5/r5",
            (0..2000)
                .map(|i| sized(&mut rng, format!("r-{i}")))
                .collect(),
            restricted.clone(),
            vec![],
        ),
    ];
    for (name, pods, requirements, anti) in scenarios {
        if only.as_ref().is_some_and(|o| !name.starts_with(o.as_str())) {
            continue;
        }
        let pools = vec![pool("default", &all, requirements)];
        let scheduler = Scheduler::new(pools.clone(), Vec::new(), Vec::new());
        let start = Instant::now();
        let results = scheduler.solve(&pods);
        let secs = start.elapsed().as_secs_f64();
        let input = Input {
            pods: &pods,
            node_pools: &pools,
            nodes: &[],
            daemon_sets: &[],
        };
        let violations = verify(&input, &results);
        assert!(violations.is_empty(), "{name}: {violations:?}");
        let t = Instant::now();
        let (lb, lb_kind) = lower_bound(&pools, &pods, &anti, true);
        let lb_secs = t.elapsed().as_secs_f64();
        if std::env::var("KARPCTL_BENCH_DETAIL").is_ok_and(|d| name.starts_with(&d)) {
            let mut by_type: std::collections::BTreeMap<String, (usize, f64, f64, f64)> =
                Default::default();
            for c in &results.node_claims {
                let e = by_type.entry(c.instance_type.clone()).or_default();
                e.0 += 1;
                e.1 += c.price;
                e.2 += c.requests.cpu as f64 / c.allocatable.cpu as f64;
                e.3 += c.requests.memory as f64 / c.allocatable.memory as f64;
            }
            for (t, (n, price, cpu, mem)) in by_type {
                println!(
                    "    {t:<16} x{n:<4} ${price:>8.3}  cpu {:>4.0}%  mem {:>4.0}%",
                    cpu / n as f64 * 100.0,
                    mem / n as f64 * 100.0
                );
            }
        }
        let ratio = results.total_price() / lb;
        ratios.push(ratio);
        println!(
            "{:<24} {:>6} {:>6} {:>9.3} {:>9.3} {:>13} {:>7.4} {:>8.3} {:>8.1}{}",
            name,
            pods.len(),
            results.node_claims.len(),
            results.total_price(),
            lb,
            lb_kind,
            ratio,
            secs,
            lb_secs,
            if results.unschedulable.is_empty() {
                String::new()
            } else {
                format!("  ({} unschedulable)", results.unschedulable.len())
            }
        );
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!(
        "mean cost / lower bound: {mean:.4} ({:+.2}%)",
        (mean - 1.0) * 100.0
    );

    println!();
    match peak_memory_mib() {
        Some(mib) => println!("(c) peak memory (VmHWM): {mib:.1} MiB"),
        None => println!("(c) peak memory: /proc/self/status unavailable"),
    }
}
