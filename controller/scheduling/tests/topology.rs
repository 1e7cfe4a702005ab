//! Topology spread as the kube-scheduler checks it (the cases its documentation walks
//! through), bad input that must be reported quickly without holding up the rest of the
//! batch, and NodePool limits that never bind.

mod fixtures;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fixtures::{Case, nodepool, replicas};
use karpctl_cloud::labels;
use karpctl_scheduling::kubernetes::pod_from_spec;
use karpctl_scheduling::{
    ExistingNode, LabelSelector, Operator, Pod, Resources, Results, Scheduler, pod,
};

fn app(name: &str) -> LabelSelector {
    LabelSelector::labels([("app", name)])
}

/// A node in `zone` running `matching` pods labelled `app=web` (no constraints of their
/// own) and `others` pods labelled `app=other`; with room for a 500m pod or not.
fn node(name: &str, zone: &str, matching: usize, others: usize, room: bool) -> ExistingNode {
    let mut pods: Vec<Pod> = (0..matching)
        .map(|i| pod().name(&format!("{name}-web-{i}")).label("app", "web"))
        .collect();
    pods.extend((0..others).map(|i| {
        pod()
            .name(&format!("{name}-other-{i}"))
            .label("app", "other")
    }));
    ExistingNode {
        name: name.into(),
        labels: [
            (labels::ZONE.to_string(), zone.to_string()),
            (labels::HOSTNAME.to_string(), name.to_string()),
        ]
        .into(),
        allocatable: Resources {
            cpu: if room { 4000 } else { 100 },
            memory: 8 << 30,
            pods: 110,
            ..Default::default()
        },
        pods: pods.into_iter().map(std::sync::Arc::new).collect(),
        ..Default::default()
    }
}

fn web() -> Pod {
    pod().name("incoming").label("app", "web").cpu("500m")
}

fn landed(case: &Case, r: &Results) -> Result<String, String> {
    if let Some(u) = r.unschedulable.first() {
        return Err(u.reason.clone());
    }
    let e = r.existing.first().expect("placed on an existing node");
    Ok(case
        .nodes
        .iter()
        .find(|n| n.name == e.node)
        .unwrap()
        .name
        .clone())
}

/// Each case: the cluster (no NodePools: only these nodes), the incoming pod, and where the
/// kube-scheduler lets it go — one of these nodes, or nowhere (with words of the reason).
#[test]
fn topology_spread_follows_the_kube_scheduler() {
    type Expect = Result<&'static [&'static str], &'static str>;
    let cases: Vec<(&str, Vec<ExistingNode>, Pod, Expect)> = vec![
        (
            "maxSkew 1: zone a holds 2 matching pods, b 1, so the pod goes to b",
            vec![
                node("a1", "a", 1, 0, true),
                node("a2", "a", 1, 0, true),
                node("b1", "b", 1, 0, true),
            ],
            web().spread(labels::ZONE, 1, app("web")),
            Ok(&["b1"]),
        ),
        (
            "maxSkew 1: a 2, b 1, room only in a: a would make the skew 2",
            vec![node("a1", "a", 2, 0, true), node("b1", "b", 1, 0, false)],
            web().spread(labels::ZONE, 1, app("web")),
            Err("maxSkew 1"),
        ),
        (
            "maxSkew 2: a 2, b 1, room only in a: a is within skew",
            vec![node("a1", "a", 2, 0, true), node("b1", "b", 1, 0, false)],
            web().spread(labels::ZONE, 2, app("web")),
            Ok(&["a1"]),
        ),
        (
            "pods without the constraint count: a holds 2 plain matching pods, b none",
            vec![node("a1", "a", 2, 0, true), node("b1", "b", 0, 0, true)],
            web().spread(labels::ZONE, 1, app("web")),
            Ok(&["b1"]),
        ),
        (
            "pods not matching the selector do not count",
            vec![node("a1", "a", 0, 5, true), node("b1", "b", 0, 0, false)],
            web().spread(labels::ZONE, 1, app("web")),
            Ok(&["a1"]),
        ),
        (
            "a pod matching a selector but carrying no constraint is not held to it",
            vec![node("a1", "a", 3, 0, true), node("b1", "b", 0, 0, false)],
            web(),
            Ok(&["a1"]),
        ),
        (
            "minDomains above the eligible domains makes the global minimum 0",
            vec![node("a1", "a", 1, 0, true), node("b1", "b", 1, 0, true)],
            {
                let mut p = web().spread(labels::ZONE, 1, app("web"));
                p.topology_spread[0].min_domains = Some(3);
                p
            },
            Err("minDomains 3"),
        ),
        (
            "minDomains met: the minimum is the emptiest domain's count",
            vec![node("a1", "a", 1, 0, true), node("b1", "b", 1, 0, false)],
            {
                let mut p = web().spread(labels::ZONE, 1, app("web"));
                p.topology_spread[0].min_domains = Some(2);
                p
            },
            Ok(&["a1"]),
        ),
        (
            "nodeAffinityPolicy Honor: a domain the pod's node affinity excludes is not counted",
            vec![
                node("a1", "a", 1, 0, true),
                node("b1", "b", 1, 0, false),
                node("c1", "c", 0, 0, true),
            ],
            web().spread(labels::ZONE, 1, app("web")).require(
                labels::ZONE,
                Operator::In,
                &["a", "b"],
            ),
            Ok(&["a1"]),
        ),
        (
            "without that node affinity the empty zone c counts and is the only choice",
            vec![
                node("a1", "a", 1, 0, true),
                node("b1", "b", 1, 0, false),
                node("c1", "c", 0, 0, true),
            ],
            web().spread(labels::ZONE, 1, app("web")),
            Ok(&["c1"]),
        ),
        (
            "ScheduleAnyway: the pod is placed even where the skew is exceeded",
            vec![node("a1", "a", 2, 0, true), node("b1", "b", 0, 0, false)],
            web().spread_anyway(labels::ZONE, 1, app("web")),
            Ok(&["a1"]),
        ),
        (
            "hostname spread: a node already holding maxSkew matching pods is skipped",
            vec![node("a1", "a", 1, 0, true), node("a2", "a", 0, 0, true)],
            web().spread(labels::HOSTNAME, 1, app("web")),
            Ok(&["a2"]),
        ),
    ];
    for (name, nodes, incoming, expect) in cases {
        let mut case = Case::new(vec![incoming]);
        case.pools = Vec::new();
        case.nodes = nodes;
        let got = landed(&case, &case.solve());
        match (expect, got) {
            (Ok(allowed), Ok(node)) => {
                assert!(allowed.contains(&node.as_str()), "{name}: placed on {node}")
            }
            (Err(words), Err(reason)) => {
                assert!(reason.contains(words), "{name}: reason {reason:?}")
            }
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
}

/// `matchLabelKeys` (converted at the edge) narrows the selector to the incoming pod's own
/// values: pods of an older revision do not count.
#[test]
fn match_label_keys_count_only_the_pods_own_revision() {
    let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(serde_json::json!({
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}],
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": labels::ZONE,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
            "matchLabelKeys": ["pod-template-hash"]
        }]
    }))
    .unwrap();
    let own: BTreeMap<String, String> = [
        ("app".to_string(), "web".to_string()),
        ("pod-template-hash".to_string(), "v2".to_string()),
    ]
    .into();
    let incoming = pod_from_spec("default", "incoming", &own, &spec, "spec").unwrap();
    // Zone a runs two pods of revision v1 (matching `app=web` but not the hash); only a
    // has room: the old revision must not push the new pod out.
    let mut case = Case::new(vec![incoming]);
    case.pools = Vec::new();
    let mut a = node("a1", "a", 0, 0, true);
    a.pods = (0..2)
        .map(|i| {
            pod()
                .name(&format!("old-{i}"))
                .label("app", "web")
                .label("pod-template-hash", "v1")
                .into()
        })
        .collect();
    case.nodes = vec![a, node("b1", "b", 0, 0, false)];
    assert_eq!(landed(&case, &case.solve()), Ok("a1".to_string()));
}

/// Regression (upstream's benchmark mix): plain pods matching a zone spread's selector were
/// balanced with the carriers and the carriers then taken back to keep the final skew, so
/// pods any first fit places were left Pending.
#[test]
fn plain_pods_matching_a_spread_selector_do_not_leave_carriers_pending() {
    let carriers = replicas(
        6,
        pod()
            .name("spread")
            .label("my-label", "a")
            .cpu("1")
            .memory("1Gi")
            .spread(labels::ZONE, 1, LabelSelector::labels([("my-label", "a")])),
    );
    let plain = replicas(
        20,
        pod()
            .name("plain")
            .label("my-label", "a")
            .cpu("1500m")
            .memory("2Gi"),
    );
    let r = Case::new([plain, carriers].concat()).solve();
    assert!(r.unschedulable.is_empty(), "{:?}", r.unschedulable);
}

/// Bad input: each contradictory pod is reported unschedulable with its constraint named,
/// quickly, and the rest of the batch (plain pods) is still planned.
#[test]
fn contradictory_constraints_are_reported_and_the_rest_is_planned() {
    let plain = replicas(5, pod().name("plain").cpu("500m").memory("512Mi"));
    /// (what, the contradictory pods, the cluster's nodes, how many are refused, words of
    /// the reason)
    type BadCase = (
        &'static str,
        Vec<Pod>,
        Vec<ExistingNode>,
        usize,
        &'static str,
    );
    let cases: Vec<BadCase> = vec![
        (
            "required anti-affinity with itself, every replica pinned to one hostname",
            replicas(
                3,
                pod()
                    .name("pinned")
                    .label("app", "pinned")
                    .cpu("100m")
                    .node_selector(labels::HOSTNAME, "only-node")
                    .anti_affinity(labels::HOSTNAME, app("pinned")),
            ),
            vec![{
                let mut n = node("only-node", "us-east-1a", 0, 0, true);
                n.labels.insert(labels::ARCH.into(), "amd64".into());
                n
            }],
            2,
            "anti-affinity",
        ),
        (
            "a spread on a key no node or NodePool has",
            replicas(
                3,
                pod()
                    .name("racked")
                    .label("app", "racked")
                    .cpu("100m")
                    .spread("example.com/rack", 1, app("racked")),
            ),
            Vec::new(),
            3,
            "example.com/rack",
        ),
        (
            "minDomains above the three zones the NodePool offers",
            replicas(
                6,
                pod().name("wide").label("app", "wide").cpu("100m").spread(
                    labels::ZONE,
                    1,
                    app("wide"),
                ),
            )
            .into_iter()
            .map(|mut p| {
                p.topology_spread[0].min_domains = Some(5);
                p
            })
            .collect(),
            Vec::new(),
            3,
            "minDomains 5",
        ),
    ];
    for (name, bad, nodes, refused, words) in cases {
        let mut case = Case::new([bad.clone(), plain.clone()].concat());
        case.nodes = nodes;
        let start = Instant::now();
        let r = case.solve();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
        assert_eq!(
            r.unschedulable.len(),
            refused,
            "{name}: {:?}",
            r.unschedulable
        );
        for u in &r.unschedulable {
            assert!(u.pod < bad.len(), "{name}: a plain pod was refused: {u:?}");
            assert!(u.reason.contains(words), "{name}: reason {:?}", u.reason);
        }
    }
}

/// Regression: a NodePool with any `limits` got a slightly dearer plan (+0.6–0.7%) even when
/// the limit was far away, because limited pools keep fewer options and never step a node up
/// when merging. A limit that cannot bind must change nothing.
#[test]
fn a_limit_that_never_binds_does_not_change_the_plan() {
    let sizes = [
        ("250m", "512Mi"),
        ("1", "2Gi"),
        ("1500m", "1Gi"),
        ("500m", "3Gi"),
    ];
    let pods: Vec<Pod> = (0..60)
        .map(|i| {
            let (cpu, memory) = sizes[i % sizes.len()];
            pod().name(&format!("p-{i}")).cpu(cpu).memory(memory)
        })
        .collect();
    let plan = |limits: BTreeMap<String, i64>| {
        let mut pool = nodepool("default");
        pool.limits = limits;
        let scheduler = Scheduler::new(vec![pool], Vec::new(), Vec::new());
        // Long enough for the cost plans, which the limits used to change.
        scheduler.solve_within(&pods, Duration::from_secs(120))
    };
    let free = plan(BTreeMap::new());
    let far = plan(
        [
            ("cpu".to_string(), 1_000_000_000),
            ("memory".to_string(), 1 << 50),
            ("nodes".to_string(), 1_000_000),
        ]
        .into(),
    );
    let shape = |r: &Results| -> Vec<(String, Vec<usize>)> {
        r.node_claims
            .iter()
            .map(|c| (c.instance_type.clone(), c.pods.clone()))
            .collect()
    };
    assert!(free.unschedulable.is_empty());
    assert_eq!(shape(&far), shape(&free));
    assert!((far.total_price() - free.total_price()).abs() < 1e-9);
}
