//! The plan engine: desired state is compared with current state in pure code, which yields a
//! [`Plan`] — one [`Item`] per resource with what would happen to it and why — that is shown
//! Terraform-style (`+ create`, `~ update in-place`, `- destroy`), serialized for `--output
//! json`, and only then applied. Commands that change infrastructure (`init`,
//! `uninstall`; `migrate-from-cas` runs init with the NodePools `migrate` proposes) build a `Plan<Op>` with their own operation type and an [`Executor`] for it.

pub mod controller;
pub mod doctor;
pub mod iam_policies;
pub mod init;
pub mod installer_policy;
pub mod migrate;
pub mod names;
pub mod render;
pub mod uninstall;

use std::fmt::Write as _;

use serde::Serialize;

/// What applying the plan does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    // Planned by `uninstall`; `init` never destroys.
    Delete,
    NoOp,
}

impl Action {
    fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::NoOp => " ",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update in-place",
            Action::Delete => "destroy",
            Action::NoOp => "no changes",
        }
    }

    /// The progress verb while applying (`creating iam-role X`).
    fn progressive(self) -> &'static str {
        match self {
            Action::Create => "creating",
            Action::Update => "updating",
            Action::Delete => "destroying",
            Action::NoOp => "checking",
        }
    }
}

/// One resource in a plan: its kind and id as the user would look them up, the action, why,
/// and the individual attribute changes (for updates; empty for creates and no-ops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub kind: String,
    pub id: String,
    pub action: Action,
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

impl Resource {
    pub fn new(
        kind: impl Into<String>,
        id: impl Into<String>,
        action: Action,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
            action,
            reason: reason.into(),
            changes: Vec::new(),
        }
    }

    pub fn with_changes(mut self, changes: Vec<String>) -> Self {
        self.changes = changes;
        self
    }

    /// `iam-role KarpenterNodeRole-demo`: how progress lines and errors name the resource.
    pub fn address(&self) -> String {
        format!("{} {}", self.kind, self.id)
    }
}

/// A resource and the operations that bring it from its current to its desired state, in
/// order. A no-op carries no operations.
#[derive(Debug, Clone)]
pub struct Item<Op> {
    pub resource: Resource,
    pub ops: Vec<Op>,
}

impl<Op> Item<Op> {
    pub fn noop(kind: impl Into<String>, id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            resource: Resource::new(kind, id, Action::NoOp, reason),
            ops: Vec::new(),
        }
    }

    pub fn change(resource: Resource, ops: Vec<Op>) -> Self {
        debug_assert!(resource.action != Action::NoOp && !ops.is_empty());
        Self { resource, ops }
    }
}

/// Everything one run would do, in the order it would do it.
#[derive(Debug, Clone)]
pub struct Plan<Op> {
    pub items: Vec<Item<Op>>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// The plan as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct PlanDocument<'a> {
    pub resources: Vec<&'a Resource>,
    pub summary: Summary,
    pub changes: bool,
}

impl<Op> Plan<Op> {
    pub fn new(items: Vec<Item<Op>>) -> Self {
        Self { items }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for item in &self.items {
            match item.resource.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
                Action::NoOp => {}
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.items.iter().any(|i| i.resource.action != Action::NoOp)
    }

    pub fn document(&self) -> PlanDocument<'_> {
        PlanDocument {
            resources: self.items.iter().map(|i| &i.resource).collect(),
            summary: self.summary(),
            changes: self.has_changes(),
        }
    }

    /// Terraform-style text: one line per changing resource with its reason, the attribute
    /// changes indented under it, then the summary line — or "No changes." when idempotent.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.has_changes() {
            let n = self.items.len();
            let _ = writeln!(
                out,
                "No changes. {n} resource{} already match the desired state.",
                if n == 1 { "" } else { "s" }
            );
            return out;
        }
        out.push_str("karpctl will perform the following actions:\n\n");
        for item in &self.items {
            let r = &item.resource;
            if r.action == Action::NoOp {
                continue;
            }
            let _ = writeln!(
                out,
                "  {} {} {}  ({}: {})",
                r.action.symbol(),
                r.kind,
                r.id,
                r.action.verb(),
                r.reason
            );
            for change in &r.changes {
                let _ = writeln!(out, "        {change}");
            }
        }
        let s = self.summary();
        let unchanged = self.items.len() - s.add - s.change - s.destroy;
        let _ = writeln!(
            out,
            "\nPlan: {} to add, {} to change, {} to destroy.{}",
            s.add,
            s.change,
            s.destroy,
            if unchanged > 0 {
                format!(" ({unchanged} unchanged)")
            } else {
                String::new()
            }
        );
        out
    }
}

/// Carries out one operation of a plan.
pub trait Executor<Op> {
    fn execute(&self, op: &Op) -> impl std::future::Future<Output = anyhow::Result<()>>;
}

/// What was applied, for `--output json` and the final line.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub applied: Vec<Resource>,
    pub summary: Summary,
}

/// Applies every changing item in order, reporting progress through `progress`. The first
/// failure stops the run; the error names the resource and step ("step 3/12: creating
/// sqs-queue X"). Everything before it stays applied, and a re-run plans only the rest.
pub async fn apply<Op, E: Executor<Op>>(
    plan: &Plan<Op>,
    executor: &E,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Applied> {
    let changing: Vec<&Item<Op>> = plan
        .items
        .iter()
        .filter(|i| i.resource.action != Action::NoOp)
        .collect();
    let total = changing.len();
    let mut applied = Vec::new();
    for (n, item) in changing.into_iter().enumerate() {
        let r = &item.resource;
        let step = format!(
            "step {}/{total}: {} {}",
            n + 1,
            r.action.progressive(),
            r.address()
        );
        progress(&format!("{step}..."));
        let started = std::time::Instant::now();
        for op in &item.ops {
            executor
                .execute(op)
                .await
                .map_err(|e| e.context(step.clone()))?;
        }
        progress(&format!(
            "{} {}: {} ({:.1}s)",
            r.kind,
            r.id,
            match r.action {
                Action::Create => "created",
                Action::Update => "updated",
                Action::Delete => "destroyed",
                Action::NoOp => "unchanged",
            },
            started.elapsed().as_secs_f64()
        ));
        applied.push(r.clone());
    }
    let summary = plan.summary();
    Ok(Applied { applied, summary })
}

impl Applied {
    pub fn render(&self) -> String {
        if self.applied.is_empty() {
            return "No changes. Nothing to apply.\n".into();
        }
        format!(
            "Apply complete! Resources: {} added, {} changed, {} destroyed.\n",
            self.summary.add, self.summary.change, self.summary.destroy
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(items: Vec<Item<&'static str>>) -> Plan<&'static str> {
        Plan::new(items)
    }

    fn create(kind: &str, id: &str, reason: &str) -> Item<&'static str> {
        Item::change(Resource::new(kind, id, Action::Create, reason), vec!["op"])
    }

    #[test]
    fn renders_creates_updates_and_destroys_with_reasons_and_summary() {
        let p = plan(vec![
            create("iam-role", "KarpenterNodeRole-demo", "not found"),
            Item::noop("sqs-queue", "Karpenter-demo", "matches"),
            Item::change(
                Resource::new(
                    "ec2-tags",
                    "subnet-1",
                    Action::Update,
                    "discovery tag missing",
                )
                .with_changes(vec!["+ karpenter.sh/discovery = \"demo\"".into()]),
                vec!["op"],
            ),
            Item::change(
                Resource::new("eks-access-entry", "old", Action::Delete, "replaced"),
                vec!["op"],
            ),
        ]);
        assert_eq!(
            p.render(),
            "karpctl will perform the following actions:

  + iam-role KarpenterNodeRole-demo  (create: not found)
  ~ ec2-tags subnet-1  (update in-place: discovery tag missing)
        + karpenter.sh/discovery = \"demo\"
  - eks-access-entry old  (destroy: replaced)

Plan: 1 to add, 1 to change, 1 to destroy. (1 unchanged)
"
        );
    }

    #[test]
    fn renders_no_changes_when_everything_matches() {
        let p = plan(vec![
            Item::noop("iam-role", "a", "matches"),
            Item::noop("sqs-queue", "b", "matches"),
        ]);
        assert_eq!(
            p.render(),
            "No changes. 2 resources already match the desired state.\n"
        );
        assert!(!p.has_changes());
    }

    #[test]
    fn json_document_lists_every_resource_with_its_action() {
        let p = plan(vec![
            create("iam-role", "r", "not found"),
            Item::noop("sqs-queue", "q", "matches"),
        ]);
        let json = serde_json::to_value(p.document()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "resources": [
                    {"kind": "iam-role", "id": "r", "action": "create", "reason": "not found"},
                    {"kind": "sqs-queue", "id": "q", "action": "no-op", "reason": "matches"}
                ],
                "summary": {"add": 1, "change": 0, "destroy": 0},
                "changes": true
            })
        );
    }

    struct Recorder {
        fail_on: Option<&'static str>,
        seen: std::sync::Mutex<Vec<&'static str>>,
    }

    impl Executor<&'static str> for Recorder {
        async fn execute(&self, op: &&'static str) -> anyhow::Result<()> {
            self.seen.lock().unwrap().push(op);
            if Some(*op) == self.fail_on {
                anyhow::bail!("boom");
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn apply_runs_changing_items_in_order_and_names_the_failing_step() {
        let p = plan(vec![
            Item::change(
                Resource::new("k", "a", Action::Create, "r"),
                vec!["a1", "a2"],
            ),
            Item::noop("k", "skip", "r"),
            Item::change(Resource::new("k", "b", Action::Update, "r"), vec!["b1"]),
            Item::change(Resource::new("k", "c", Action::Create, "r"), vec!["c1"]),
        ]);
        let exec = Recorder {
            fail_on: Some("b1"),
            seen: Default::default(),
        };
        let mut lines = Vec::new();
        let err = apply(&p, &exec, |l| lines.push(l.to_string()))
            .await
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "step 2/3: updating k b: boom");
        assert_eq!(*exec.seen.lock().unwrap(), vec!["a1", "a2", "b1"]);
        assert_eq!(lines[0], "step 1/3: creating k a...");
        assert!(lines[1].starts_with("k a: created ("), "{}", lines[1]);
    }
}
