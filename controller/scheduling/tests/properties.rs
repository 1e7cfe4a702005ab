//! Property tests: on random clusters and workloads, every plan passes the independent
//! checker — every placement satisfies every constraint, no node is over capacity, no
//! NodePool limit is exceeded, and every pod is either placed or reported with a reason —
//! and the plan never places fewer pods, nor costs more, than the first-fit plan alone.

mod fixtures;

use fixtures::types;
use karpctl_cloud::{Resources, labels};
use karpctl_scheduling::checker::{Input, verify};
use karpctl_scheduling::{
    Effect, ExistingNode, LabelSelector, NodePool, Operator, Pod, Requirement, Requirements,
    Scheduler, Taint, pod,
};
use proptest::prelude::*;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Rule {
    None,
    ZoneSpread(u32),
    HostnameSpread(u32),
    HostnameAnti,
    ZoneAffinity,
    ZoneAnti,
    HostPort,
    Arm,
    Tolerates,
    PreferZone,
    Gpu,
    CapacityTypeSpread,
    HostnameAffinityToFirst,
    ZoneAntiToFirst,
    HostnameAntiToFirst,
    /// A zone spread whose selector matches the first deployment's pods, which do not carry
    /// it (upstream's benchmark mix has many such).
    ZoneSpreadOnFirst,
    HostnameSpreadOnFirst,
}

fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        3 => Just(Rule::None),
        1 => (1u32..3).prop_map(Rule::ZoneSpread),
        1 => (1u32..3).prop_map(Rule::HostnameSpread),
        1 => Just(Rule::HostnameAnti),
        1 => Just(Rule::ZoneAffinity),
        1 => Just(Rule::ZoneAnti),
        1 => Just(Rule::HostPort),
        1 => Just(Rule::Arm),
        1 => Just(Rule::Tolerates),
        1 => Just(Rule::PreferZone),
        1 => Just(Rule::Gpu),
        1 => Just(Rule::CapacityTypeSpread),
        1 => Just(Rule::HostnameAffinityToFirst),
        1 => Just(Rule::ZoneAntiToFirst),
        1 => Just(Rule::HostnameAntiToFirst),
        2 => Just(Rule::ZoneSpreadOnFirst),
        1 => Just(Rule::HostnameSpreadOnFirst),
    ]
}

const CPUS: &[&str] = &["100m", "250m", "500m", "1", "2", "3500m"];
const MEMS: &[&str] = &["64Mi", "256Mi", "1Gi", "3Gi", "7Gi"];

fn deployment(i: usize, replicas: usize, cpu: usize, mem: usize, rules: &[Rule]) -> Vec<Pod> {
    let name = format!("app{i}");
    let me = LabelSelector::labels([("app", name.as_str())]);
    let mut template = pod()
        .name(&name)
        .label("app", &name)
        .cpu(CPUS[cpu])
        .memory(MEMS[mem]);
    for r in rules {
        template = match r {
            Rule::None => template,
            Rule::ZoneSpread(s) => template.spread(labels::ZONE, *s, me.clone()),
            Rule::HostnameSpread(s) => template.spread(labels::HOSTNAME, *s, me.clone()),
            Rule::HostnameAnti => template.anti_affinity(labels::HOSTNAME, me.clone()),
            Rule::ZoneAffinity => template.affinity(labels::ZONE, me.clone()),
            Rule::ZoneAnti => template.anti_affinity(labels::ZONE, me.clone()),
            Rule::HostPort => template.host_port(9000),
            Rule::Arm => template.node_selector(labels::ARCH, "arm64"),
            Rule::Tolerates => template.tolerate("dedicated"),
            Rule::PreferZone => template.prefer(5, labels::ZONE, Operator::In, &["us-east-1b"]),
            Rule::Gpu => template.resource("nvidia.com/gpu", "1"),
            Rule::CapacityTypeSpread => template.spread(labels::CAPACITY_TYPE, 1, me.clone()),
            Rule::HostnameAffinityToFirst => {
                template.affinity(labels::HOSTNAME, LabelSelector::labels([("app", "app0")]))
            }
            Rule::ZoneAntiToFirst => {
                template.anti_affinity(labels::ZONE, LabelSelector::labels([("app", "app0")]))
            }
            Rule::HostnameAntiToFirst => {
                template.anti_affinity(labels::HOSTNAME, LabelSelector::labels([("app", "app0")]))
            }
            Rule::ZoneSpreadOnFirst => {
                template.spread(labels::ZONE, 1, LabelSelector::labels([("app", "app0")]))
            }
            Rule::HostnameSpreadOnFirst => template.spread(
                labels::HOSTNAME,
                1,
                LabelSelector::labels([("app", "app0")]),
            ),
        };
    }
    (0..replicas)
        .map(|r| template.clone().name(&format!("{name}-{r}")))
        .collect()
}

#[derive(Clone, Debug)]
struct Scenario {
    deployments: Vec<(usize, usize, usize, Vec<Rule>)>,
    second_pool: bool,
    taint_first: bool,
    cpu_limit: Option<i64>,
    existing: usize,
    daemon_set: bool,
    spot: bool,
    /// Residents with required anti-affinity to the first and second deployments (zone,
    /// then hostname), which pending pods must respect (the symmetric check).
    guarded_residents: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(
            (
                1usize..8,
                0..CPUS.len(),
                0..MEMS.len(),
                prop::collection::vec(rule(), 0..3),
            ),
            1..5,
        ),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(4i64..40),
        0usize..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                deployments,
                second_pool,
                taint_first,
                cpu_limit,
                existing,
                daemon_set,
                spot,
                guarded_residents,
            )| {
                Scenario {
                    deployments,
                    second_pool,
                    taint_first,
                    cpu_limit: cpu_limit.map(|c| c * 1000),
                    existing,
                    daemon_set,
                    spot,
                    guarded_residents,
                }
            },
        )
}

fn build(s: &Scenario) -> (Vec<NodePool>, Vec<ExistingNode>, Vec<Pod>, Vec<Pod>) {
    let mut first = NodePool::new("general", types(fixtures::SMALL, s.spot));
    if s.taint_first {
        first.taints = vec![Taint::new("dedicated", "x", Effect::NoSchedule)];
    }
    if let Some(limit) = s.cpu_limit {
        first.limits = [("cpu".to_string(), limit)].into();
    }
    let mut pools = vec![first];
    if s.second_pool {
        let mut arm = NodePool::new(
            "arm",
            types(
                &["m6g.large", "m6g.xlarge", "c6g.xlarge", "t3.large"],
                s.spot,
            ),
        );
        arm.weight = 10;
        arm.requirements =
            Requirements::from_iter([
                Requirement::new(labels::ARCH, Operator::In, &["arm64"]).unwrap()
            ]);
        pools.push(arm);
    }
    let nodes = (0..s.existing)
        .map(|i| ExistingNode {
            name: format!("existing-{i}"),
            labels: [
                (
                    labels::ZONE.to_string(),
                    format!("us-east-1{}", ["a", "b", "c"][i % 3]),
                ),
                (labels::ARCH.to_string(), "amd64".to_string()),
                (labels::HOSTNAME.to_string(), format!("existing-{i}")),
            ]
            .into(),
            allocatable: Resources {
                cpu: 3920,
                memory: 14 << 30,
                pods: 58,
                ephemeral_storage: 18 << 30,
                ..Default::default()
            },
            pods: vec![{
                let resident = pod()
                    .name(&format!("resident-{i}"))
                    .label("app", "resident")
                    .cpu("1")
                    .memory("1Gi");
                match (s.guarded_residents, i % 2) {
                    (false, _) => resident,
                    (true, 0) => resident
                        .anti_affinity(labels::ZONE, LabelSelector::labels([("app", "app0")])),
                    (true, _) => resident
                        .anti_affinity(labels::HOSTNAME, LabelSelector::labels([("app", "app1")])),
                }
                .into()
            }],
            ..Default::default()
        })
        .collect();
    let daemon_sets = if s.daemon_set {
        vec![pod().name("agent").cpu("100m").memory("128Mi")]
    } else {
        Vec::new()
    };
    let pods = s
        .deployments
        .iter()
        .enumerate()
        .flat_map(|(i, (replicas, cpu, mem, rules))| deployment(i, *replicas, *cpu, *mem, rules))
        .collect();
    (pools, nodes, daemon_sets, pods)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_plan_passes_the_checker(s in scenario()) {
        let (pools, nodes, daemon_sets, pods) = build(&s);
        let scheduler = Scheduler::new(pools.clone(), nodes.clone(), daemon_sets.clone());
        let results = scheduler.solve(&pods);
        let input = Input { pods: &pods, node_pools: &pools, nodes: &nodes, daemon_sets: &daemon_sets };
        let violations = verify(&input, &results);
        prop_assert!(violations.is_empty(), "{:#?}\n{:#?}", violations, results.unschedulable);
        // Deterministic when timing cannot decide which plans finish: first fit alone, and
        // every cost plan run to the end.
        for budget in [Duration::ZERO, Duration::from_secs(60)] {
            let once = scheduler.solve_within(&pods, budget);
            let again = scheduler.solve_within(&pods, budget);
            prop_assert_eq!(serde_json::to_string(&once).unwrap(), serde_json::to_string(&again).unwrap());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Whenever first fit alone places every pod, so does the solve with all the time it
    /// wants for cost; and it never places fewer, nor costs more at the same count.
    #[test]
    fn the_plan_places_every_pod_first_fit_places(s in scenario()) {
        let (pools, nodes, daemon_sets, pods) = build(&s);
        let scheduler = Scheduler::new(pools.clone(), nodes.clone(), daemon_sets.clone());
        let first = scheduler.solve_within(&pods, Duration::ZERO);
        let full = scheduler.solve_within(&pods, Duration::from_secs(60));
        let input = Input { pods: &pods, node_pools: &pools, nodes: &nodes, daemon_sets: &daemon_sets };
        for (name, r) in [("first fit", &first), ("full", &full)] {
            let violations = verify(&input, r);
            prop_assert!(violations.is_empty(), "{}: {:#?}", name, violations);
        }
        if first.unschedulable.is_empty() {
            prop_assert!(full.unschedulable.is_empty(), "{:#?}", full.unschedulable);
        }
        prop_assert!(full.unschedulable.len() <= first.unschedulable.len());
        if full.unschedulable.len() == first.unschedulable.len() {
            prop_assert!(full.total_price() <= first.total_price() + 1e-9);
        }
    }
}
