//! Disruption: the controller's half that shrinks a cluster, as upstream Karpenter's
//! `disruption` controller. Every `disruption_poll` it evaluates every initialized NodeClaim
//! ([`decide::evaluate`]), runs the methods in order — Emptiness, Drift, multi-node then
//! single-node consolidation — within the NodePools' budgets ([`budgets`]) with the
//! scheduling core as the simulator, and acts on the first command found:
//! consolidation commands are re-checked after `disruption_validation` (upstream's 15 s);
//! the candidates' nodes are tainted `karpenter.sh/disrupted:NoSchedule`, replacements are
//! created and waited on until initialized, then the candidates' NodeClaims are deleted and
//! the termination controller drains them within their PodDisruptionBudgets.
//!
//! Each claim looked at carries the verdict in `status.disruption` (karpctl's extension: why
//! it is or is not being disrupted), upstream's `Drifted` and `Consolidatable` conditions,
//! and a `DisruptionBlocked` event when its verdict changes.

pub mod budgets;
pub mod decide;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use karpctl_api::labels;
use karpctl_api::v1::{ConditionStatus, Conditions, DisruptionVerdict, NodeClaim};
use karpctl_cloud::{CloudProvider, Instance};
use karpctl_scheduling::disruption::{Options, Outcome, Simulator};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::context::Context;
use crate::events::reasons;
use crate::nodeclaim::set_condition;
use crate::provisioning::{ReadyPool, ready_pools, scheduling_inputs};
use crate::state::{self, ClusterState};
use decide::{Budgets, Command, Decision, Evaluated, Method, Verdict};

/// A verdict as last written, with the drift reason it was written with.
type Written = (Verdict, Option<(&'static str, String)>);

/// The disruption controller.
pub struct Disruption<C> {
    ctx: Arc<Context<C>>,
    /// The last verdict written per claim, so status and events change only with it.
    written: Mutex<BTreeMap<String, Written>>,
    /// Budget problems already reported per pool and reason.
    reported: Mutex<BTreeMap<(String, String), String>>,
    /// The cluster's instances by provider ID (their subnets and security groups, for drift),
    /// listed at most every [`INSTANCES_EVERY`].
    instances: tokio::sync::Mutex<(Option<Instant>, Instances)>,
}

/// Instances by provider ID.
type Instances = Arc<BTreeMap<String, Instance>>;

/// How often disruption lists the cluster's instances (one paginated DescribeInstances).
const INSTANCES_EVERY: Duration = Duration::from_secs(60);

/// Everything one pass decided, from one snapshot of the state.
struct Pass {
    decision: Decision,
    evaluated: Vec<Evaluated>,
    pools: Vec<ReadyPool>,
}

fn simulator(
    state: &ClusterState,
    pools: &[ReadyPool],
    options: Options,
    now: Instant,
) -> Simulator {
    let (scheduling_pools, existing, daemon_sets) = scheduling_inputs(state, pools, now);
    let pending = state
        .provisionable_pods(now)
        .into_iter()
        .filter_map(|p| p.scheduling.as_ref().ok().map(|s| (**s).clone()))
        .collect();
    Simulator::new(scheduling_pools, existing, daemon_sets, pending, options)
}

fn price(p: Option<f64>) -> Option<String> {
    p.map(|p| format!("{p:.4}"))
}

impl<C: CloudProvider> Disruption<C> {
    pub fn new(ctx: Arc<Context<C>>) -> Self {
        Self {
            ctx,
            written: Mutex::default(),
            reported: Mutex::default(),
            instances: tokio::sync::Mutex::default(),
        }
    }

    fn options(&self) -> Options {
        Options {
            spot_to_spot: self.ctx.settings.spot_to_spot,
            min_savings: self.ctx.settings.consolidation_min_savings,
        }
    }

    /// The cluster's instances, listed again when the last list is older than
    /// [`INSTANCES_EVERY`]; a failed list keeps the last one (drift by subnet or security
    /// group waits, nothing else does).
    async fn instances(&self) -> Instances {
        let mut cached = self.instances.lock().await;
        let now = Instant::now();
        if cached
            .0
            .is_none_or(|at| now.duration_since(at) >= INSTANCES_EVERY)
        {
            match self.ctx.cloud.list().await {
                Ok(list) => {
                    *cached = (
                        Some(now),
                        Arc::new(
                            list.into_iter()
                                .map(|i| (i.provider_id.clone(), i))
                                .collect(),
                        ),
                    );
                }
                Err(e) => {
                    tracing::warn!(controller = "disruption", error = %e, "listing instances for subnet and security-group drift failed, will retry");
                    cached.0 = Some(now);
                }
            }
        }
        cached.1.clone()
    }

    /// Evaluate and decide on one snapshot.
    async fn look(&self) -> Option<Pass> {
        if !state::read(&self.ctx.state).synced() {
            return None;
        }
        let instances = self.instances().await;
        let pools = ready_pools(
            &*self.ctx.cloud,
            &self.ctx.state,
            &*self.ctx.metrics,
            "disruption",
        )
        .await;
        let started = std::time::Instant::now();
        let now = self.ctx.clock.now();
        let (decision, evaluated) = {
            let s = state::read(&self.ctx.state);
            let evaluated = decide::evaluate(&s, &pools, now, Instant::now(), &instances);
            let budgets = Budgets::compute(&s, now);
            for ((pool, reason), allowed) in budgets.iter() {
                self.ctx.metrics.allowed_disruptions(
                    pool,
                    budgets::reason_name(*reason),
                    *allowed.as_ref().unwrap_or(&0),
                );
            }
            self.report_budget_problems(&s, &budgets);
            let sim = simulator(&s, &pools, self.options(), Instant::now());
            (decide::decide(&evaluated, budgets, &sim), evaluated)
        };
        let eligible = |f: &dyn Fn(&Evaluated) -> bool| {
            evaluated
                .iter()
                .filter(|e| e.not_candidate.is_none() && f(e))
                .count()
        };
        self.ctx
            .metrics
            .disruption_eligible("Empty", eligible(&|e| e.empty));
        self.ctx
            .metrics
            .disruption_eligible("Drifted", eligible(&|e| e.drifted.is_some()));
        self.ctx.metrics.disruption_eligible(
            "Underutilized",
            eligible(&|e| !e.empty && e.consolidatable.is_ok()),
        );
        let method = decision.command.as_ref().map(|c| c.method);
        self.ctx.metrics.disruption_evaluated(
            method.map(Method::name).unwrap_or("none"),
            method.map(Method::consolidation_type).unwrap_or(""),
            started.elapsed().as_secs_f64(),
        );
        Some(Pass {
            decision,
            evaluated,
            pools,
        })
    }

    fn report_budget_problems(&self, s: &ClusterState, budgets: &Budgets) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for ((pool, reason), allowed) in budgets.iter() {
            let key = (pool.clone(), budgets::reason_name(*reason).to_owned());
            match allowed {
                Err(e) => {
                    if reported.get(&key) != Some(e) {
                        reported.insert(key, e.clone());
                        tracing::error!(controller = "disruption", NodePool = %json!({"name": pool}), error = %e, "disruption budget cannot be read; the nodepool's nodes are not disrupted");
                        if let Some(p) = s.node_pool(pool).cloned() {
                            let events = self.ctx.events.clone();
                            let note = format!("Disruption is blocked: {e}");
                            tokio::spawn(async move {
                                events.warning(&p, reasons::DISRUPTION_BLOCKED, note).await;
                            });
                        }
                    }
                }
                Ok(_) => {
                    reported.remove(&key);
                }
            }
        }
    }

    /// One pass: decide, write verdicts, and carry out the command if there is one.
    pub async fn pass(&self) -> anyhow::Result<()> {
        let Some(pass) = self.look().await else {
            return Ok(());
        };
        self.write_verdicts(&pass.decision.verdicts, &pass.evaluated)
            .await;
        let Some(command) = pass.decision.command else {
            return Ok(());
        };
        let command = if command.method.validates() {
            tokio::time::sleep(self.ctx.settings.disruption_validation).await;
            match self.validate(&command).await {
                Some(c) => c,
                None => {
                    tracing::info!(controller = "disruption", command = %command.describe(), "abandoning disruption, the cluster changed while it was being validated");
                    return Ok(());
                }
            }
        } else {
            command
        };
        self.execute(command, &pass.pools).await
    }

    /// Re-check a consolidation command after the wait: its candidates are still candidates
    /// with the same pods, and simulating them again still deletes or replaces them.
    async fn validate(&self, command: &Command) -> Option<Command> {
        let pools = ready_pools(
            &*self.ctx.cloud,
            &self.ctx.state,
            &*self.ctx.metrics,
            "disruption",
        )
        .await;
        let instances = self.instances().await;
        let now = self.ctx.clock.now();
        let s = state::read(&self.ctx.state);
        let evaluated = decide::evaluate(&s, &pools, now, Instant::now(), &instances);
        if !decide::same_candidates(command, &evaluated) {
            return None;
        }
        let budgets = Budgets::compute(&s, now);
        let mut per_pool: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &command.candidates {
            *per_pool.entry(c.node_pool.as_str()).or_default() += 1;
        }
        for (pool, n) in per_pool {
            if budgets.get(pool, command.reason).unwrap_or(0) < n {
                return None;
            }
        }
        if command.method == Method::Emptiness {
            return Some(command.clone());
        }
        let sim = simulator(&s, &pools, self.options(), Instant::now());
        let refs: Vec<_> = command.candidates.iter().collect();
        match sim.simulate(&refs) {
            Outcome::Delete => Some(Command {
                replacements: vec![],
                ..command.clone()
            }),
            Outcome::Replace(plan) if !command.replacements.is_empty() => Some(Command {
                replacements: vec![*plan],
                ..command.clone()
            }),
            _ => None,
        }
    }

    async fn execute(&self, command: Command, pools: &[ReadyPool]) -> anyhow::Result<()> {
        let reason = budgets::reason_name(command.reason);
        let pods: usize = command.candidates.iter().map(|c| c.pods.len()).sum();
        tracing::info!(
            controller = "disruption",
            command = %command.describe(),
            decision = command.decision(),
            reason = reason,
            "disrupted-node-count" = command.candidates.len(),
            "replacement-node-count" = command.replacements.len(),
            "pod-count" = pods,
            "disrupting node(s)"
        );
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let claims: Api<NodeClaim> = Api::all(self.ctx.client.clone());
        // Nothing new lands on the candidates while their replacements come up.
        for c in &command.candidates {
            self.taint(&nodes, &c.node, true).await?;
        }
        let mut replacements = Vec::new();
        for plan in &command.replacements {
            let Some(ready) = pools.iter().find(|p| p.pool.name_any() == plan.node_pool) else {
                self.untaint_all(&nodes, &command).await;
                anyhow::bail!("nodepool {} of a replacement is not ready", plan.node_pool);
            };
            let claim = crate::provisioning::node_claim(plan, &ready.pool, &ready.node_class);
            match claims.create(&PostParams::default(), &claim).await {
                Ok(created) => {
                    let name = created.name_any();
                    tracing::info!(controller = "disruption", NodeClaim = %json!({"name": name}), NodePool = %json!({"name": plan.node_pool}), "created nodeclaim");
                    self.ctx
                        .metrics
                        .node_claim_created(&plan.node_pool, &reason.to_lowercase());
                    state::write(&self.ctx.state).apply(created);
                    replacements.push(name);
                }
                Err(e) => {
                    self.untaint_all(&nodes, &command).await;
                    anyhow::bail!("creating a replacement nodeclaim failed: {e}");
                }
            }
        }
        for c in &command.candidates {
            // The state's lock is never held across an await (a waiting writer would block
            // every reader's worker thread).
            let claim = state::read(&self.ctx.state).node_claim(&c.claim).cloned();
            if let Some(claim) = claim {
                let note = if replacements.is_empty() {
                    format!("Disrupting NodeClaim: {reason}/Delete")
                } else {
                    format!(
                        "Launching NodeClaim(s) {} to replace it: {reason}/Replace",
                        replacements.join(", ")
                    )
                };
                let kind = if replacements.is_empty() {
                    reasons::DISRUPTION_TERMINATING
                } else {
                    reasons::DISRUPTION_LAUNCHING
                };
                self.ctx.events.normal(&claim, kind, note).await;
            }
        }
        if !replacements.is_empty() && !self.wait_initialized(&replacements).await {
            tracing::error!(controller = "disruption", command = %command.describe(), replacements = ?replacements, "replacement nodeclaim(s) did not initialize; the candidates are kept");
            self.untaint_all(&nodes, &command).await;
            return Ok(());
        }
        for c in &command.candidates {
            match claims.delete(&c.claim, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::error!(controller = "disruption", NodeClaim = %json!({"name": c.claim}), error = %e, "deleting a disrupted nodeclaim failed");
                    continue;
                }
            }
            self.ctx.metrics.disruption_decision(
                command.decision(),
                reason,
                command.method.consolidation_type(),
            );
            self.ctx
                .metrics
                .node_claim_disrupted(&c.node_pool, &reason.to_lowercase());
            let claim = state::read(&self.ctx.state).node_claim(&c.claim).cloned();
            if !replacements.is_empty()
                && let Some(claim) = claim
            {
                self.ctx
                    .events
                    .normal(
                        &claim,
                        reasons::DISRUPTION_TERMINATING,
                        format!("Disrupting NodeClaim: {reason}/Replace"),
                    )
                    .await;
            }
        }
        Ok(())
    }

    async fn wait_initialized(&self, names: &[String]) -> bool {
        let deadline = Instant::now() + self.ctx.settings.replacement_timeout;
        loop {
            let status: Vec<Option<bool>> = {
                let s = state::read(&self.ctx.state);
                names
                    .iter()
                    .map(|n| {
                        s.node_claim(n)
                            .filter(|c| c.metadata.deletion_timestamp.is_none())
                            .map(|c| {
                                c.status
                                    .as_ref()
                                    .and_then(|st| {
                                        st.condition(karpctl_api::v1::condition_types::node_claim::INITIALIZED)
                                    })
                                    .is_some_and(|c| c.status == ConditionStatus::True)
                            })
                    })
                    .collect()
            };
            if status.iter().all(|s| *s == Some(true)) {
                return true;
            }
            // A replacement that went away (failed launch, deleted) ends the wait.
            if status.iter().any(Option::is_none) || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn untaint_all(&self, nodes: &Api<Node>, command: &Command) {
        for c in &command.candidates {
            if let Err(e) = self.taint(nodes, &c.node, false).await {
                tracing::warn!(controller = "disruption", Node = %json!({"name": c.node}), error = %e, "removing the disrupted taint failed");
            }
        }
    }

    /// Add or remove `karpenter.sh/disrupted:NoSchedule`, guarded by the node's
    /// resourceVersion (retried on conflict).
    async fn taint(&self, nodes: &Api<Node>, name: &str, on: bool) -> anyhow::Result<()> {
        for _ in 0..5 {
            let node = nodes.get(name).await?;
            let mut taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let has = taints.iter().any(|t| t.key == labels::DISRUPTED_TAINT);
            if has == on {
                return Ok(());
            }
            if on {
                taints.push(k8s_openapi::api::core::v1::Taint {
                    key: labels::DISRUPTED_TAINT.to_owned(),
                    effect: "NoSchedule".to_owned(),
                    ..Default::default()
                });
            } else {
                taints.retain(|t| t.key != labels::DISRUPTED_TAINT);
            }
            let patch = json!({
                "metadata": {"resourceVersion": node.resource_version()},
                "spec": {"taints": taints},
            });
            match nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("node {name} kept changing while its taints were updated")
    }

    /// Write each changed verdict into the claim's status (with upstream's `Drifted` and
    /// `Consolidatable` conditions) and publish an event when its outcome changed.
    async fn write_verdicts(&self, verdicts: &BTreeMap<String, Verdict>, evaluated: &[Evaluated]) {
        let now = self.ctx.clock.now();
        let api: Api<NodeClaim> = Api::all(self.ctx.client.clone());
        for e in evaluated {
            let Some(verdict) = verdicts.get(&e.claim) else {
                continue;
            };
            let previous = self
                .written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&e.claim)
                .cloned();
            let current = (verdict.clone(), e.drifted.clone());
            let claim = state::read(&self.ctx.state).node_claim(&e.claim).cloned();
            let Some(claim) = claim else { continue };
            let status = claim.status.clone().unwrap_or_default();
            let stored = status.disruption.as_ref();
            let same_as_stored = stored.is_some_and(|d| {
                d.outcome == verdict.outcome
                    && d.method == verdict.method
                    && d.blockers == verdict.blockers
                    && d.message == verdict.message
                    && d.price == price(verdict.price)
                    && d.replacement_price == price(verdict.replacement_price)
            });
            let event_time_stale = match (e.last_pod_event, status.last_pod_event_time.as_ref()) {
                (Some(t), Some(s)) => t.as_second() - s.0.as_second() >= 5,
                (Some(_), None) => true,
                _ => false,
            };
            let drift_matches = status
                .condition(karpctl_api::v1::condition_types::node_claim::DRIFTED)
                .is_some_and(|c| c.status == ConditionStatus::True)
                == e.drifted.is_some();
            if previous.as_ref() == Some(&current)
                && same_as_stored
                && drift_matches
                && !event_time_stale
            {
                continue;
            }
            let mut conditions = status.conditions.clone();
            match &e.drifted {
                Some((reason, message)) => set_condition(
                    &mut conditions,
                    karpctl_api::v1::condition_types::node_claim::DRIFTED,
                    ConditionStatus::True,
                    reason,
                    message,
                    now,
                ),
                None => conditions
                    .retain(|c| c.type_ != karpctl_api::v1::condition_types::node_claim::DRIFTED),
            }
            match &e.consolidatable {
                Ok(()) => set_condition(
                    &mut conditions,
                    karpctl_api::v1::condition_types::node_claim::CONSOLIDATABLE,
                    ConditionStatus::True,
                    "Consolidatable",
                    "",
                    now,
                ),
                Err(_) => conditions.retain(|c| {
                    c.type_ != karpctl_api::v1::condition_types::node_claim::CONSOLIDATABLE
                }),
            }
            let body = DisruptionVerdict {
                last_evaluated: Some(Time(now)),
                method: verdict.method.to_owned(),
                outcome: verdict.outcome.to_owned(),
                blockers: verdict.blockers.clone(),
                message: verdict.message.clone(),
                price: price(verdict.price),
                replacement_price: price(verdict.replacement_price),
            };
            let mut status_patch = json!({"disruption": body, "conditions": conditions});
            if let Some(t) = e.last_pod_event {
                status_patch["lastPodEventTime"] = json!(Time(t));
            }
            let patch = json!({
                "metadata": {"resourceVersion": claim.resource_version()},
                "status": status_patch,
            });
            match api
                .patch_status(&e.claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    state::write(&self.ctx.state).apply(updated);
                }
                Err(err) => {
                    tracing::debug!(controller = "disruption", NodeClaim = %json!({"name": e.claim}), error = %err, "writing the disruption verdict failed; retried next pass");
                    continue;
                }
            }
            let outcome_changed = previous.as_ref().map(|p| p.0.outcome) != Some(verdict.outcome)
                && stored.map(|d| d.outcome.as_str()) != Some(verdict.outcome);
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(e.claim.clone(), current);
            if outcome_changed && verdict.outcome == "BudgetExhausted" {
                self.budget_event(&e.pool, &verdict.message).await;
            }
            if outcome_changed && verdict.blocked() {
                self.ctx
                    .events
                    .normal(
                        &claim,
                        reasons::DISRUPTION_BLOCKED,
                        format!("Cannot disrupt NodeClaim: {}", verdict.message),
                    )
                    .await;
            }
        }
        // Forget claims that are gone.
        let s = state::read(&self.ctx.state);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| s.node_claim(name).is_some());
    }

    /// Say on the NodePool (once per message) that its budget holds nodes back.
    async fn budget_event(&self, pool: &str, message: &str) {
        let key = (pool.to_owned(), "budget".to_owned());
        {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if reported.get(&key).map(String::as_str) == Some(message) {
                return;
            }
            reported.insert(key, message.to_owned());
        }
        let p = state::read(&self.ctx.state).node_pool(pool).cloned();
        if let Some(p) = p {
            self.ctx
                .events
                .normal(
                    &p,
                    reasons::DISRUPTION_BLOCKED,
                    format!("Nodes are held back: {message}"),
                )
                .await;
        }
    }

    /// Run passes until the future is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.ctx.settings.disruption_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.pass().await {
                tracing::error!(controller = "disruption", error = %format!("{e:#}"), "disruption failed");
            }
        }
    }
}
