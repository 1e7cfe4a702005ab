//! One scenario per scheduling constraint, each checked by the independent checker and by
//! what the constraint implies for the plan.

mod fixtures;

use std::collections::{BTreeMap, BTreeSet};

use fixtures::{Case, nodepool, replicas, types};
use karpctl_cloud::labels;
use karpctl_scheduling::{
    Effect, ExistingNode, LabelSelector, Operator, Requirement, Requirements, Resources, Results,
    Taint, pod,
};

fn app(name: &str) -> LabelSelector {
    LabelSelector::labels([("app", name)])
}

fn zones(r: &Results) -> BTreeSet<String> {
    r.node_claims.iter().map(|c| c.zone.clone()).collect()
}

type Check = fn(&Results);

#[test]
fn constraints_table() {
    let web = pod().name("web").label("app", "web").cpu("1").memory("1Gi");
    let cases: Vec<(&str, Case, Check)> = vec![
        (
            "plain pods all fit at the cheapest price per pod",
            Case::new(replicas(10, web.clone())),
            |r| {
                assert!(r.unschedulable.is_empty());
                // t3.medium ($0.0416/h) holds one such pod: nothing in the catalogue is cheaper per pod.
                assert!(
                    r.total_price() <= 10.0 * 0.0416 + 1e-9,
                    "{}",
                    r.total_price()
                );
            },
        ),
        (
            "small pods share nodes",
            Case::new(replicas(20, web.clone().cpu("250m").memory("256Mi"))),
            |r| {
                assert!(r.unschedulable.is_empty());
                assert!(r.node_claims.len() <= 4, "{}", r.node_claims.len());
            },
        ),
        (
            "node selector on arch",
            Case::new(replicas(
                3,
                web.clone().node_selector(labels::ARCH, "arm64"),
            )),
            |r| {
                assert!(r.unschedulable.is_empty());
                assert!(
                    r.node_claims.iter().all(|c| c.instance_type.contains('g')),
                    "{:?}",
                    r.node_claims[0].instance_type
                );
            },
        ),
        (
            "required terms are ORed: an impossible first term falls back to the second",
            Case::new(vec![
                web.clone()
                    .require(labels::INSTANCE_FAMILY, Operator::In, &["x9"])
                    .require_term(
                        [
                            Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &["c5"])
                                .unwrap(),
                        ]
                        .into_iter()
                        .collect(),
                    ),
            ]),
            |r| {
                assert!(r.unschedulable.is_empty(), "{:?}", r.unschedulable);
                assert!(r.node_claims[0].instance_type.starts_with("c5."));
            },
        ),
        (
            "an impossible preference is relaxed",
            Case::new(vec![web.clone().prefer(
                10,
                labels::ZONE,
                Operator::In,
                &["mars-1a"],
            )]),
            |r| assert!(r.unschedulable.is_empty(), "{:?}", r.unschedulable),
        ),
        (
            "a satisfiable preference is honoured",
            Case::new(vec![web.clone().prefer(
                10,
                labels::INSTANCE_FAMILY,
                Operator::In,
                &["r5"],
            )]),
            |r| assert!(r.node_claims[0].instance_type.starts_with("r5.")),
        ),
        (
            "custom labels must be defined by the NodePool",
            Case::new(vec![web.clone().node_selector("team", "a")]),
            |r| {
                assert_eq!(r.unschedulable.len(), 1);
                assert!(
                    r.unschedulable[0].reason.contains("team"),
                    "{}",
                    r.unschedulable[0].reason
                );
            },
        ),
        (
            "hostname anti-affinity puts each replica on its own node",
            Case::new(replicas(
                4,
                web.clone().anti_affinity(labels::HOSTNAME, app("web")),
            )),
            |r| {
                assert!(r.unschedulable.is_empty());
                assert_eq!(r.node_claims.len(), 4);
            },
        ),
        (
            "zone spread balances replicas across zones",
            Case::new(replicas(9, web.clone().spread(labels::ZONE, 1, app("web")))),
            |r| {
                assert!(r.unschedulable.is_empty());
                let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
                for c in &r.node_claims {
                    *per_zone.entry(c.zone.clone()).or_default() += c.pods.len();
                }
                assert_eq!(
                    per_zone.values().copied().collect::<Vec<_>>(),
                    vec![3, 3, 3]
                );
            },
        ),
        (
            "hostname spread with maxSkew 2",
            Case::new(replicas(
                6,
                web.clone()
                    .cpu("100m")
                    .spread(labels::HOSTNAME, 2, app("web")),
            )),
            |r| {
                assert!(r.unschedulable.is_empty());
                assert!(r.node_claims.iter().all(|c| c.pods.len() <= 2));
            },
        ),
        (
            "capacity-type spread",
            {
                let mut case = Case::new(replicas(
                    4,
                    web.clone().spread(labels::CAPACITY_TYPE, 1, app("web")),
                ));
                case.pools[0].instance_types = types(fixtures::SMALL, true);
                case
            },
            |r| {
                let kinds: BTreeSet<_> = r.node_claims.iter().map(|c| c.capacity_type).collect();
                assert_eq!(kinds.len(), 2);
            },
        ),
        (
            "zone self-affinity keeps replicas in one zone",
            Case::new(replicas(6, web.clone().affinity(labels::ZONE, app("web")))),
            |r| {
                assert!(r.unschedulable.is_empty());
                assert_eq!(zones(r).len(), 1);
            },
        ),
        (
            "zone self-anti-affinity allows one replica per zone",
            Case::new(replicas(
                4,
                web.clone().anti_affinity(labels::ZONE, app("web")),
            )),
            |r| {
                assert_eq!(r.unschedulable.len(), 1);
                assert!(
                    r.unschedulable[0].reason.contains("anti-affinity"),
                    "{}",
                    r.unschedulable[0].reason
                );
            },
        ),
        (
            "hostname affinity to another workload co-locates",
            Case::new(
                [
                    replicas(2, pod().name("db").label("app", "db").cpu("1")),
                    replicas(
                        2,
                        pod()
                            .name("cache")
                            .label("app", "cache")
                            .cpu("100m")
                            .affinity(labels::HOSTNAME, app("db")),
                    ),
                ]
                .concat(),
            ),
            |r| {
                assert!(r.unschedulable.is_empty(), "{:?}", r.unschedulable);
            },
        ),
        (
            "host ports keep pods apart",
            Case::new(replicas(3, web.clone().cpu("100m").host_port(8080))),
            |r| assert_eq!(r.node_claims.len(), 3),
        ),
        (
            "extended resources pick GPU types",
            Case::new(vec![web.clone().resource("nvidia.com/gpu", "1")]),
            |r| {
                assert!(r.unschedulable.is_empty());
                assert_eq!(r.node_claims[0].instance_type, "g4dn.xlarge");
            },
        ),
        (
            "too large for any type",
            Case::new(vec![web.clone().cpu("500")]),
            |r| {
                assert_eq!(r.unschedulable.len(), 1);
                assert!(
                    r.unschedulable[0].reason.contains("too small"),
                    "{}",
                    r.unschedulable[0].reason
                );
            },
        ),
        (
            "untolerated taint",
            {
                let mut case = Case::new(vec![web.clone()]);
                case.pools[0].taints = vec![Taint::new("dedicated", "gpu", Effect::NoSchedule)];
                case
            },
            |r| {
                assert_eq!(r.unschedulable.len(), 1);
                assert!(
                    r.unschedulable[0].reason.contains("taint"),
                    "{}",
                    r.unschedulable[0].reason
                );
            },
        ),
        (
            "tolerated taint; startup taints need no toleration",
            {
                let mut case = Case::new(vec![web.clone().tolerate("dedicated")]);
                case.pools[0].taints = vec![Taint::new("dedicated", "gpu", Effect::NoSchedule)];
                case.pools[0].startup_taints = vec![Taint::new("init", "", Effect::NoSchedule)];
                case
            },
            |r| assert!(r.unschedulable.is_empty()),
        ),
        (
            "NodePool weight wins over price",
            {
                let mut case = Case::new(vec![web.clone()]);
                let mut heavy = nodepool("preferred");
                heavy.weight = 10;
                heavy
                    .requirements
                    .add(Requirement::new(labels::INSTANCE_FAMILY, Operator::In, &["r5"]).unwrap());
                case.pools.push(heavy);
                case
            },
            |r| assert_eq!(r.node_claims[0].node_pool, "preferred"),
        ),
        (
            "NodePool limits cap the plan",
            {
                let mut case = Case::new(replicas(8, web.clone().cpu("1500m")));
                case.pools[0].limits = [("cpu".to_string(), 8000)].into();
                case
            },
            |r| {
                assert!(!r.unschedulable.is_empty());
                assert!(
                    r.unschedulable[0].reason.contains("limits"),
                    "{}",
                    r.unschedulable[0].reason
                );
            },
        ),
        (
            "existing capacity is used first",
            {
                let mut case = Case::new(replicas(2, web.clone()));
                case.nodes = vec![ExistingNode {
                    name: "node-1".into(),
                    labels: [(labels::ZONE.to_string(), "us-east-1a".to_string())].into(),
                    allocatable: Resources {
                        cpu: 4000,
                        memory: 8 << 30,
                        pods: 29,
                        ephemeral_storage: 10 << 30,
                        ..Default::default()
                    },
                    ..Default::default()
                }];
                case
            },
            |r| {
                assert!(r.node_claims.is_empty());
                assert_eq!(r.existing[0].pods.len(), 2);
            },
        ),
        (
            "DaemonSet overhead is reserved on every new node",
            {
                let mut case = Case::new(vec![web.clone().cpu("1800m").memory("1Gi")]);
                case.daemon_sets = vec![pod().name("ds").cpu("500m").memory("256Mi")];
                case
            },
            |r| {
                // 1.8 + 0.5 CPU does not fit a 2-vCPU type (1.93 allocatable).
                assert!(
                    r.node_claims[0].allocatable.cpu >= 2300,
                    "{}",
                    r.node_claims[0].instance_type
                );
                assert_eq!(r.node_claims[0].daemon_overhead.cpu, 500);
            },
        ),
        (
            "minValues keeps enough instance types",
            {
                let mut case = Case::new(vec![web.clone()]);
                let r = Requirement::new(labels::INSTANCE_FAMILY, Operator::Exists, &[] as &[&str])
                    .unwrap()
                    .with_min_values(Some(3))
                    .unwrap();
                case.pools[0].requirements = Requirements::from_iter([r]);
                case
            },
            |r| {
                let families: BTreeSet<_> = r.node_claims[0]
                    .instance_type_options
                    .iter()
                    .map(|o| o.name.split('.').next().unwrap().to_string())
                    .collect();
                assert!(families.len() >= 3, "{families:?}");
            },
        ),
    ];
    for (name, case, check) in cases {
        let results = case.solve();
        eprintln!(
            "{name}: {} claims, ${:.4}/h",
            results.node_claims.len(),
            results.total_price()
        );
        check(&results);
    }
}

#[test]
fn options_are_sorted_and_capped() {
    let case = Case::new(replicas(3, pod().name("a").cpu("1").memory("1Gi")));
    let r = case.solve();
    for c in &r.node_claims {
        assert!(
            c.instance_type_options
                .windows(2)
                .all(|w| w[0].price <= w[1].price)
        );
        assert!(c.instance_type_options.len() <= 60);
        assert_eq!(c.instance_type_options[0].name, c.instance_type);
    }
}

/// Regression: a preferred zone was treated as the only spread domain, so every replica was
/// pinned there and the spread's maxSkew was exceeded against the other zones.
#[test]
fn preferred_zone_does_not_shrink_spread_domains() {
    let web = pod()
        .name("web")
        .label("app", "web")
        .cpu("1")
        .memory("1Gi")
        .prefer(5, labels::ZONE, Operator::In, &["us-east-1b"])
        .spread(labels::ZONE, 1, app("web"));
    let r = Case::new(replicas(3, web)).solve();
    assert!(r.unschedulable.is_empty());
    assert_eq!(zones(&r).len(), 3, "{:?}", zones(&r));
}

/// Regression: replicas pinned to a capacity type that a NodePool limit then refused left the
/// other domain more than maxSkew ahead; those extra replicas must be reported instead.
#[test]
fn spread_pods_whose_siblings_cannot_launch_are_taken_back() {
    let gpu = pod()
        .name("g")
        .label("app", "g")
        .cpu("100m")
        .memory("64Mi")
        .resource("nvidia.com/gpu", "1")
        .spread(labels::CAPACITY_TYPE, 1, app("g"));
    let mut case = Case::new(replicas(5, gpu));
    case.pools[0].instance_types = types(fixtures::SMALL, true);
    case.pools[0].limits = [("cpu".to_string(), 14000)].into();
    case.daemon_sets = vec![pod().name("agent").cpu("100m").memory("128Mi")];
    let r = case.solve();
    assert!(!r.unschedulable.is_empty());
}

fn node_in(name: &str, zone: &str, pods: Vec<karpctl_scheduling::Pod>) -> ExistingNode {
    ExistingNode {
        name: name.into(),
        labels: [
            (labels::ZONE.to_string(), zone.to_string()),
            (labels::HOSTNAME.to_string(), name.to_string()),
            (labels::ARCH.to_string(), "amd64".to_string()),
        ]
        .into(),
        allocatable: Resources {
            cpu: 4000,
            memory: 8 << 30,
            pods: 29,
            ephemeral_storage: 10 << 30,
            ..Default::default()
        },
        pods: pods.into_iter().map(std::sync::Arc::new).collect(),
        ..Default::default()
    }
}

/// What every placed pod of `r` sits in: (zone, node or claim).
fn placements(case: &Case, r: &Results) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (i, c) in r.node_claims.iter().enumerate() {
        for p in &c.pods {
            out.push((
                case.pods[*p].name.clone(),
                c.zone.clone(),
                format!("claim-{i}"),
            ));
        }
    }
    for e in &r.existing {
        let node = case.nodes.iter().find(|n| n.name == e.node).unwrap();
        for p in &e.pods {
            out.push((
                case.pods[*p].name.clone(),
                node.labels[labels::ZONE].clone(),
                e.node.clone(),
            ));
        }
    }
    out
}

/// Regression: the kube-scheduler refuses a pod a node or zone where an existing pod's
/// required anti-affinity selects it (the symmetric check); the plan put such pods there.
#[test]
fn existing_pods_anti_affinity_keeps_matching_pods_out() {
    let web = pod()
        .name("web")
        .label("app", "web")
        .cpu("500m")
        .memory("512Mi");
    let guard = |key: &str| {
        pod()
            .name("guard")
            .label("app", "guard")
            .cpu("100m")
            .anti_affinity(key, app("web"))
    };
    for key in [labels::HOSTNAME, labels::ZONE] {
        let mut case = Case::new(replicas(3, web.clone()));
        // The guarded node has room for every web pod and existing capacity is used first.
        case.nodes = vec![node_in("guarded", "us-east-1a", vec![guard(key)])];
        let r = case.solve();
        assert!(r.unschedulable.is_empty(), "{key}: {:?}", r.unschedulable);
        for (pod, zone, node) in placements(&case, &r) {
            assert_ne!(node, "guarded", "{key}: {pod} placed next to the guard");
            if key == labels::ZONE {
                assert_ne!(
                    zone, "us-east-1a",
                    "{key}: {pod} placed in the guard's zone"
                );
            }
        }
    }
}

/// Regression: a pod planned earlier in the batch with required anti-affinity did not keep
/// pods its selector matches (pinned later for their own rules) out of its domain.
#[test]
fn batch_pods_anti_affinity_keeps_later_matching_pods_out() {
    let guard = |key: &str| {
        pod()
            .name("guard")
            .label("app", "guard")
            .cpu("100m")
            .anti_affinity(key, app("web"))
    };
    let web = pod()
        .name("web")
        .label("app", "web")
        .cpu("100m")
        .memory("128Mi")
        .spread(labels::ZONE, 1, app("web"));
    for key in [labels::HOSTNAME, labels::ZONE] {
        let case = Case::new([vec![guard(key)], replicas(2, web.clone())].concat());
        let r = case.solve();
        let placed = placements(&case, &r);
        let (_, guard_zone, guard_node) = placed.iter().find(|p| p.0 == "guard").unwrap().clone();
        for (pod, zone, node) in placed.iter().filter(|p| p.0 != "guard") {
            assert_ne!(node, &guard_node, "{key}: {pod} shares the guard's node");
            if key == labels::ZONE {
                assert_ne!(zone, &guard_zone, "{key}: {pod} shares the guard's zone");
            }
        }
    }
}
