//! The fractional bin-covering LP: the cheapest mix of instance types whose summed
//! allocatable covers a demand on every resource, when nodes may be bought in fractions.
//!
//! ```text
//! minimize Σ_t price_t · x_t   subject to   Σ_t alloc_{t,r} · x_t ≥ demand_r  ∀r,   x ≥ 0
//! ```
//!
//! Its optimum is a lower bound on any real plan's cost, but a weak one: it lets the CPU of
//! one tiny type and the memory of another cover the same pod. [`configuration_bound`] is
//! the tight one benchmarks report against: the same LP over *packings* (how many pods of
//! each class one node of a type holds, fractionally), priced by column generation, with
//! Farley's bound making every iteration's figure a valid lower bound;
//! [`integer_configuration_bound`] tightens it further by pricing *whole* packings with an
//! exact integer knapsack (slower; the benchmarks' cost figures use it). The resource dual
//! — a price per unit of each resource — values pods by what their requests
//! cost at the margin, which the packer uses to compare instance types across a whole batch
//! instead of node by node. With a handful of resources and up to a few hundred types after
//! dominance pruning, a dense simplex on the dual (feasible at the origin since prices are
//! non-negative) is small and exact enough.

use std::time::Instant;

/// One candidate column: an instance type's price and what it offers per resource row.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub price: f64,
    pub supply: Vec<f64>,
}

/// The LP's optimum.
#[derive(Clone, Debug, PartialEq)]
pub struct Cover {
    /// Minimum fractional cost.
    pub cost: f64,
    /// Marginal price of one unit of each resource row.
    pub resource_prices: Vec<f64>,
    /// Fractional amount of each column in the optimum (same order as the input).
    pub amounts: Vec<f64>,
}

/// Solve the covering LP. `None` when some demanded resource is offered by no column.
pub fn cover(columns: &[Column], demand: &[f64]) -> Option<Cover> {
    cover_counted(columns, demand, &mut 0)
}

/// [`cover`], adding its work (tableau cells updated, in thousands) to `work`.
fn cover_counted(columns: &[Column], demand: &[f64], work: &mut usize) -> Option<Cover> {
    let rows = demand.len();
    for (r, d) in demand.iter().enumerate() {
        if *d > 0.0
            && !columns
                .iter()
                .any(|c| c.supply[r] > 0.0 && c.price.is_finite())
        {
            return None;
        }
    }
    // Prune columns dominated on the demanded rows (at least as much of everything for no
    // more money) — they never enter an optimal basis and make the tableau much smaller.
    let active: Vec<usize> = (0..rows).filter(|r| demand[*r] > 0.0).collect();
    if active.is_empty() {
        return Some(Cover {
            cost: 0.0,
            resource_prices: vec![0.0; rows],
            amounts: vec![0.0; columns.len()],
        });
    }
    let mut order: Vec<usize> = (0..columns.len())
        .filter(|i| columns[*i].price.is_finite())
        .collect();
    order.sort_by(|a, b| columns[*a].price.total_cmp(&columns[*b].price));
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        let c = &columns[i];
        if active.iter().all(|r| c.supply[*r] <= 0.0) {
            continue;
        }
        let dominated = kept.iter().any(|&k| {
            let o = &columns[k];
            o.price <= c.price && active.iter().all(|r| o.supply[*r] >= c.supply[*r])
        });
        if !dominated {
            kept.push(i);
        }
    }
    // Dual: maximize demand·y subject to supply_t·y ≤ price_t for every kept column, y ≥ 0.
    // Rows are scaled so every resource is in units of its demand (well-conditioned pivots).
    let n = active.len();
    let m = kept.len();
    let width = n + m + 1;
    let mut tab = vec![0.0f64; (m + 1) * width];
    for (i, &k) in kept.iter().enumerate() {
        for (j, &r) in active.iter().enumerate() {
            tab[i * width + j] = columns[k].supply[r] / demand[r];
        }
        tab[i * width + n + i] = 1.0;
        tab[i * width + width - 1] = columns[k].price;
    }
    let obj = m * width;
    for j in 0..n {
        tab[obj + j] = -1.0;
    }
    let mut basis: Vec<usize> = (n..n + m).collect();
    const EPS: f64 = 1e-12;
    for _ in 0..10_000 {
        // Bland's rule: first improving column, first minimum-ratio row; never cycles.
        let Some(enter) = (0..n + m).find(|j| tab[obj + j] < -1e-10) else {
            break;
        };
        let mut leave = None;
        let mut best = f64::INFINITY;
        for i in 0..m {
            let a = tab[i * width + enter];
            if a > EPS {
                let ratio = tab[i * width + width - 1] / a;
                if ratio < best - 1e-12
                    || (ratio <= best + 1e-12 && leave.is_some_and(|l: usize| basis[i] < basis[l]))
                {
                    best = ratio;
                    leave = Some(i);
                }
            }
        }
        let leave = leave?;
        *work += (m + 1) * width / 1000 + 1;
        let pivot = tab[leave * width + enter];
        for j in 0..width {
            tab[leave * width + j] /= pivot;
        }
        for i in 0..=m {
            if i != leave {
                let f = tab[i * width + enter];
                if f != 0.0 {
                    for j in 0..width {
                        tab[i * width + j] -= f * tab[leave * width + j];
                    }
                }
            }
        }
        basis[leave] = enter;
    }
    let cost = tab[obj + width - 1];
    let mut resource_prices = vec![0.0; rows];
    for (i, &b) in basis.iter().enumerate() {
        if b < n {
            let r = active[b];
            resource_prices[r] = tab[i * width + width - 1] / demand[r];
        }
    }
    let mut amounts = vec![0.0; columns.len()];
    for (i, &k) in kept.iter().enumerate() {
        amounts[k] = tab[obj + n + i].max(0.0);
    }
    Some(Cover {
        cost,
        resource_prices,
        amounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(price: f64, supply: &[f64]) -> Column {
        Column {
            price,
            supply: supply.to_vec(),
        }
    }

    #[test]
    fn covering_table() {
        // (columns, demand, optimal cost)
        let cases: Vec<(Vec<Column>, Vec<f64>, f64)> = vec![
            // One resource: the best price per unit wins.
            (vec![col(1.0, &[2.0]), col(1.5, &[4.0])], vec![8.0], 3.0),
            // Two resources needing a mix: cpu-heavy and memory-heavy types.
            (
                vec![col(1.0, &[4.0, 1.0]), col(1.0, &[1.0, 4.0])],
                vec![5.0, 5.0],
                2.0,
            ),
            // A balanced type beats mixing.
            (
                vec![
                    col(1.0, &[4.0, 1.0]),
                    col(1.0, &[1.0, 4.0]),
                    col(1.1, &[4.0, 4.0]),
                ],
                vec![4.0, 4.0],
                1.1,
            ),
            // Zero demand costs nothing.
            (vec![col(1.0, &[1.0])], vec![0.0], 0.0),
        ];
        for (columns, demand, want) in cases {
            let got = cover(&columns, &demand).unwrap();
            assert!(
                (got.cost - want).abs() < 1e-9,
                "{columns:?} {demand:?}: {} != {want}",
                got.cost
            );
            // Strong duality: the resource prices value the demand at the optimal cost.
            let dual: f64 = got
                .resource_prices
                .iter()
                .zip(&demand)
                .map(|(y, d)| y * d)
                .sum();
            assert!((dual - want).abs() < 1e-9);
            let primal: f64 = got
                .amounts
                .iter()
                .zip(&columns)
                .map(|(x, c)| x * c.price)
                .sum();
            assert!((primal - want).abs() < 1e-9);
        }
    }

    #[test]
    fn uncoverable_demand() {
        assert!(cover(&[col(1.0, &[1.0, 0.0])], &[1.0, 1.0]).is_none());
    }
}

/// Maximize `c·x` subject to `A x ≤ b`, `x ≥ 0`, with `b ≥ 0` (so the origin is feasible).
/// Returns the optimum and `x`. Dense tableau, Bland's rule.
pub fn maximize(c: &[f64], a: &[Vec<f64>], b: &[f64]) -> Option<(f64, Vec<f64>)> {
    maximize_with_duals(c, a, b, &mut 0).map(|(v, x, _)| (v, x))
}

/// [`maximize`], also returning the optimal dual price of every row of `A`, and adding its
/// work (tableau cells updated, in thousands) to `work`.
fn maximize_with_duals(
    c: &[f64],
    a: &[Vec<f64>],
    b: &[f64],
    work: &mut usize,
) -> Option<(f64, Vec<f64>, Vec<f64>)> {
    let n = c.len();
    let m = a.len();
    let width = n + m + 1;
    *work += (m + 1) * width / 1000 + 1;
    let mut tab = vec![0.0f64; (m + 1) * width];
    for i in 0..m {
        tab[i * width..i * width + n].copy_from_slice(&a[i]);
        tab[i * width + n + i] = 1.0;
        tab[i * width + width - 1] = b[i].max(0.0);
    }
    let obj = m * width;
    for j in 0..n {
        tab[obj + j] = -c[j];
    }
    let mut basis: Vec<usize> = (n..n + m).collect();
    for _ in 0..50_000 {
        let Some(enter) = (0..n + m).find(|j| tab[obj + j] < -1e-10) else {
            break;
        };
        let mut leave: Option<usize> = None;
        let mut best = f64::INFINITY;
        for i in 0..m {
            let v = tab[i * width + enter];
            if v > 1e-12 {
                let ratio = tab[i * width + width - 1] / v;
                if ratio < best - 1e-12
                    || (ratio <= best + 1e-12 && leave.is_some_and(|l| basis[i] < basis[l]))
                {
                    best = ratio;
                    leave = Some(i);
                }
            }
        }
        let leave = leave?;
        *work += (m + 1) * width / 1000 + 1;
        let pivot = tab[leave * width + enter];
        for j in 0..width {
            tab[leave * width + j] /= pivot;
        }
        for i in 0..=m {
            if i != leave {
                let f = tab[i * width + enter];
                if f != 0.0 {
                    for j in 0..width {
                        tab[i * width + j] -= f * tab[leave * width + j];
                    }
                }
            }
        }
        basis[leave] = enter;
    }
    let mut x = vec![0.0; n];
    for (i, &bv) in basis.iter().enumerate() {
        if bv < n {
            x[bv] = tab[i * width + width - 1];
        }
    }
    // The objective row's entry under a row's slack is that row's dual price.
    let duals = (0..m).map(|i| tab[obj + n + i].max(0.0)).collect();
    Some((tab[obj + width - 1], x, duals))
}

/// A node type for [`configuration_bound`]: price and allocatable per resource.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeType {
    pub price: f64,
    pub allocatable: Vec<f64>,
}

/// A class of identical pods: how many, the request per resource, and at most how many may
/// share one node (hostname anti-affinity: 1).
#[derive(Clone, Debug, PartialEq)]
pub struct PodClass {
    pub count: f64,
    pub request: Vec<f64>,
    pub max_per_node: Option<f64>,
}

/// Lower bound on the cost of hosting every pod: the LP where each node of a type holds a
/// fractional mix of pods that fits its allocatable, and a class can only use types a pod of
/// it fits on. Returns the bound and the per-class marginal costs (duals). `None` when some
/// class fits no type.
pub fn configuration_bound(
    types: &[NodeType],
    classes: &[PodClass],
    max_iterations: usize,
) -> Option<(f64, Vec<f64>)> {
    configuration_bound_until(types, classes, max_iterations, None)
}

/// [`configuration_bound`], stopping at `deadline` with the best figure so far.
pub(crate) fn configuration_bound_until(
    types: &[NodeType],
    classes: &[PodClass],
    max_iterations: usize,
    deadline: Option<Instant>,
) -> Option<(f64, Vec<f64>)> {
    column_generation(
        types,
        classes,
        max_iterations,
        Pricing {
            integer: false,
            budget: 0,
            work: 0,
            deadline,
        },
    )
    .map(|b| (b.value, b.duals))
}

/// Which figure a [`Bound`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundKind {
    /// The fractional configuration LP (whole packings never beat it, or were not priced).
    Fractional,
    /// The LP over whole packings, converged.
    WholePackings,
    /// The LP over whole packings, stopped by its work budget (or iteration cap): Farley's
    /// figure at the best iteration reached, valid but not converged.
    WholePackingsBudgeted,
}

/// A lower bound with its dual prices and how it was obtained.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub value: f64,
    /// Per class: the marginal cost of one pod (scaled to be dual feasible).
    pub duals: Vec<f64>,
    pub kind: BoundKind,
    /// The final master LP's solution, a near-optimal fractional plan the packer can round:
    /// nodes of a type holding so many pods of each class. Whole numbers of pods after
    /// the integer phase; the fractional phase's packings may hold fractions.
    pub packings: Vec<Packing>,
}

/// One packing the LP buys: `nodes` (fractional) nodes of `types[type_index]`, each
/// holding `pods[c]` pods of class `c`.
#[derive(Clone, Debug, PartialEq)]
pub struct Packing {
    pub type_index: usize,
    pub pods: Vec<f64>,
    pub nodes: f64,
}

/// Work [`integer_configuration_bound`] may do in all, by default (knapsack nodes plus
/// thousands of tableau cells): about half a minute at most on the benchmark's workloads
/// on a 2-core machine.
pub const DEFAULT_WORK_BUDGET: usize = 150_000_000;

/// [`configuration_bound`] over *whole* packings: a real node holds an integer number of
/// pods of each class, so every real plan is a combination of integer packings and the LP
/// over those columns (the Gilmore–Gomory bound) is still a lower bound on its cost, and a
/// tighter one than the fractional LP, markedly so on small types that hold a few pods
/// each (two 1.5-CPU pods do not fit 2 vCPU however the LP splits them).
///
/// Validity: column generation prices each type with an exact integer knapsack
/// ([`integer_knapsack`]), or with its LP relaxation (an upper bound on it) when the
/// search exceeds its budget or cannot raise the worst ratio; Farley's scaling of the
/// master duals by the worst `value / price` over all types then gives dual prices that
/// no integer packing of any type exceeds, so their value of the demand is a lower bound
/// at every iteration, converged or not.
///
/// `work` caps the effort of the whole run (knapsack nodes searched plus thousands of
/// simplex tableau cells updated): once it is spent, the types not yet searched are priced
/// at their LP optimum (still valid) and the best figure so far is returned — from the
/// fractional phase ([`BoundKind::Fractional`]) if the budget ran out there or whole
/// packings never beat it, else [`BoundKind::WholePackingsBudgeted`] unless converged.
pub fn integer_configuration_bound(
    types: &[NodeType],
    classes: &[PodClass],
    max_iterations: usize,
    work: usize,
) -> Option<Bound> {
    integer_configuration_bound_until(types, classes, max_iterations, work, None)
}

/// [`integer_configuration_bound`], also stopping at `deadline` with the best figure so far.
pub(crate) fn integer_configuration_bound_until(
    types: &[NodeType],
    classes: &[PodClass],
    max_iterations: usize,
    work: usize,
    deadline: Option<Instant>,
) -> Option<Bound> {
    column_generation(
        types,
        classes,
        max_iterations,
        Pricing {
            integer: true,
            budget: 20_000,
            work,
            deadline,
        },
    )
}

/// How [`column_generation`] prices types: their fractional packings, or their integer
/// packings by branch and bound with at most `budget` nodes per type.
#[derive(Clone, Copy)]
struct Pricing {
    integer: bool,
    budget: usize,
    /// Knapsack nodes for the whole run.
    work: usize,
    /// When to stop with the best figure so far (a scheduler's time budget).
    deadline: Option<Instant>,
}

impl Pricing {
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

fn column_generation(
    types: &[NodeType],
    classes: &[PodClass],
    max_iterations: usize,
    pricing: Pricing,
) -> Option<Bound> {
    let g = classes.len();
    if g == 0 {
        return Some(Bound {
            value: 0.0,
            duals: Vec::new(),
            kind: BoundKind::Fractional,
            packings: Vec::new(),
        });
    }
    // Drop types dominated by a cheaper-or-equal type with at least as much of everything.
    let mut order: Vec<usize> = (0..types.len())
        .filter(|t| types[*t].price.is_finite() && types[*t].price > 0.0)
        .collect();
    order.sort_by(|a, b| types[*a].price.total_cmp(&types[*b].price));
    let mut kept: Vec<&NodeType> = Vec::new();
    let mut kept_index: Vec<usize> = Vec::new();
    for &t in &order {
        let c = &types[t];
        if !kept.iter().any(|o| {
            o.allocatable
                .iter()
                .zip(&c.allocatable)
                .all(|(a, b)| a >= b)
        }) {
            kept.push(c);
            kept_index.push(t);
        }
    }
    let fits = |t: &NodeType, c: &PodClass| -> f64 {
        let mut m = f64::INFINITY;
        for (a, r) in t.allocatable.iter().zip(&c.request) {
            if *r > 0.0 {
                m = m.min((a / r).floor());
            }
        }
        if let Some(cap) = c.max_per_node {
            m = m.min(cap);
        }
        if m.is_finite() { m.max(0.0) } else { 1e9 }
    };
    let caps: Vec<Vec<f64>> = kept
        .iter()
        .map(|t| classes.iter().map(|c| fits(t, c)).collect())
        .collect();
    let demand: Vec<f64> = classes.iter().map(|c| c.count).collect();
    let mut columns: Vec<Column> = Vec::new();
    // The type (index into `types`) of each column.
    let mut column_type: Vec<usize> = Vec::new();
    for (ci, _) in classes.iter().enumerate() {
        let best = (0..kept.len())
            .filter(|t| caps[*t][ci] >= 1.0)
            .min_by(|a, b| {
                (kept[*a].price / caps[*a][ci]).total_cmp(&(kept[*b].price / caps[*b][ci]))
            })?;
        let mut supply = vec![0.0; g];
        supply[ci] = caps[best][ci].min(1e6);
        columns.push(Column {
            price: kept[best].price,
            supply,
        });
        column_type.push(kept_index[best]);
    }
    let mut best_bound: f64 = 0.0;
    let mut duals = vec![0.0; g];
    let mut kind = BoundKind::Fractional;
    let mut spent = 0usize;
    // Integer pricing starts from the fractional phase's columns (rounded down to whole
    // packings), which converges in far fewer of its costly iterations. Both phases' bounds
    // are valid, so the best of them is kept.
    let phases: &[bool] = if pricing.integer {
        &[false, true]
    } else {
        &[false]
    };
    for &integer in phases {
        if integer {
            for c in &mut columns {
                for s in &mut c.supply {
                    *s = (*s + 1e-9).floor();
                }
            }
            let (kept_columns, kept_types): (Vec<Column>, Vec<usize>) = columns
                .drain(..)
                .zip(column_type.drain(..))
                .filter(|(c, _)| c.supply.iter().any(|s| *s > 0.0))
                .unzip();
            columns = kept_columns;
            column_type = kept_types;
        }
        let mut exhausted = false;
        let mut converged = false;
        let mut stalled = 0;
        for _ in 0..max_iterations {
            // Rounded-down columns may leave a class uncovered: keep the figure so far.
            // Out of work, or the fractional phase (only a warm start here) past its share
            // or stalled: the best figure so far stands (every one is valid). Its master
            // LP degrades numerically over many columns, so stalls are common.
            let share = if integer {
                pricing.work
            } else {
                pricing.work / 2
            };
            if pricing.integer && (spent >= share || (!integer && stalled >= 20)) {
                break;
            }
            if pricing.past_deadline() {
                break;
            }
            let Some(master) = cover_counted(&columns, &demand, &mut spent) else {
                break;
            };
            // Prices the pricing step ignores (≤ 1e-12: zero, or negative from a degenerate
            // master) are taken as zero here too, so Farley's scaling stays exact for the
            // prices actually used: a valid bound even when the master's numerics fail.
            let y: Vec<f64> = master
                .resource_prices
                .iter()
                .map(|v| if *v > 1e-12 { *v } else { 0.0 })
                .collect();
            let total: f64 = y.iter().zip(&demand).map(|(a, b)| a * b).sum();
            // Pricing: the most valuable fractional packing of each type at prices y.
            let mut worst_ratio: f64 = 1.0;
            let mut new_columns: Vec<(f64, Column, usize)> = Vec::new();
            let mut relaxed: Vec<(f64, usize, Vec<usize>, Vec<f64>)> = Vec::new();
            let mut aborted = false;
            for (t, nt) in kept.iter().enumerate() {
                if (pricing.integer && spent >= pricing.work) || pricing.past_deadline() {
                    // Out of work or time before every type is priced: no valid figure from
                    // this iteration.
                    aborted = true;
                    break;
                }
                let vars: Vec<usize> = (0..g)
                    .filter(|c| y[*c] > 1e-12 && caps[t][*c] >= 1.0)
                    .collect();
                if vars.is_empty() {
                    continue;
                }
                let obj: Vec<f64> = vars.iter().map(|c| y[*c]).collect();
                let mut rows: Vec<Vec<f64>> = Vec::new();
                let mut rhs: Vec<f64> = Vec::new();
                for (r, a) in nt.allocatable.iter().enumerate() {
                    rows.push(vars.iter().map(|c| classes[*c].request[r]).collect());
                    rhs.push(*a);
                }
                for (i, c) in vars.iter().enumerate() {
                    let mut row = vec![0.0; vars.len()];
                    row[i] = 1.0;
                    rows.push(row);
                    rhs.push(caps[t][*c].min(1e6));
                }
                let Some((value, k, row_duals)) =
                    maximize_with_duals(&obj, &rows, &rhs, &mut spent)
                else {
                    continue;
                };
                let ratio = value / nt.price;
                if integer {
                    // Solved exactly below, most promising types first.
                    let surrogate = row_duals[..nt.allocatable.len()].to_vec();
                    relaxed.push((ratio, t, vars, surrogate));
                    continue;
                }
                worst_ratio = worst_ratio.max(ratio);
                if ratio > 1.0 + 1e-7 {
                    let mut supply = vec![0.0; g];
                    for (i, c) in vars.iter().enumerate() {
                        supply[*c] = k[i];
                    }
                    new_columns.push((
                        ratio,
                        Column {
                            price: nt.price,
                            supply,
                        },
                        kept_index[t],
                    ));
                }
            }
            if aborted {
                break;
            }
            if integer {
                // Every type's integer optimum is at most its LP optimum, so once the next
                // type's LP ratio cannot beat the worst integer ratio found, none after it can
                // either; the bound stays valid. The best few improving types are also solved
                // for columns.
                relaxed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                for (solved, (lp_ratio, t, vars, surrogate)) in relaxed.into_iter().enumerate() {
                    if lp_ratio <= worst_ratio && (solved >= 25 || lp_ratio <= 1.0 + 1e-7) {
                        break;
                    }
                    if solved >= 60 || spent >= pricing.work {
                        // Left unsolved: its LP optimum bounds its integer optimum (and
                        // every later type's, sorted by it).
                        worst_ratio = worst_ratio.max(lp_ratio);
                        exhausted |= spent >= pricing.work;
                        break;
                    }
                    let nt = kept[t];
                    let items: Vec<Item> = vars
                        .iter()
                        .map(|c| Item {
                            value: y[*c],
                            request: classes[*c].request.clone(),
                            most: caps[t][*c].min(1e6),
                        })
                        .collect();
                    let budget = pricing.budget.min(pricing.work.saturating_sub(spent));
                    let (upper, k, nodes) =
                        integer_knapsack(&items, &nt.allocatable, &surrogate, budget);
                    spent += nodes;
                    worst_ratio = worst_ratio.max(upper.min(lp_ratio * nt.price) / nt.price);
                    let value: f64 = items.iter().zip(&k).map(|(it, k)| it.value * k).sum();
                    let ratio = value / nt.price;
                    if ratio > 1.0 + 1e-7 {
                        let mut supply = vec![0.0; g];
                        for (i, c) in vars.iter().enumerate() {
                            supply[*c] = k[i];
                        }
                        new_columns.push((
                            ratio,
                            Column {
                                price: nt.price,
                                supply,
                            },
                            kept_index[t],
                        ));
                    }
                }
            }
            // Farley: scaling y down by the best ratio makes it dual feasible.
            let bound = total / worst_ratio;
            stalled += 1;
            if bound > best_bound {
                stalled = 0;
                best_bound = bound;
                duals = y.iter().map(|v| v / worst_ratio).collect();
                if integer {
                    kind = BoundKind::WholePackingsBudgeted;
                }
            }
            if new_columns.is_empty() {
                converged = true;
                break;
            }
            if exhausted {
                break;
            }
            new_columns.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (_, c, t) in new_columns.into_iter().take(25) {
                columns.push(c);
                column_type.push(t);
            }
        }
        if integer && converged && kind == BoundKind::WholePackingsBudgeted {
            kind = BoundKind::WholePackings;
        }
    }
    // The last master's solution: how many nodes of each packing the LP buys.
    let packings = cover(&columns, &demand)
        .map(|master| {
            columns
                .iter()
                .zip(&column_type)
                .zip(&master.amounts)
                .filter(|(_, x)| **x > 1e-9)
                .map(|((c, t), x)| Packing {
                    type_index: *t,
                    pods: c.supply.clone(),
                    nodes: *x,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Bound {
        value: best_bound,
        duals,
        kind,
        packings,
    })
}

/// One kind of item for [`integer_knapsack`].
struct Item {
    value: f64,
    request: Vec<f64>,
    most: f64,
}

/// Maximize `Σ value·k` over integers `0 ≤ k ≤ most` with `Σ request·k ≤ capacity` on every
/// resource, by depth-first branch and bound. Each subproblem is bounded by the fractional
/// knapsack on the surrogate constraint `Σ (u·request)·k ≤ u·capacity` (`u ≥ 0`: the LP's
/// resource duals), a relaxation of it, so pruning never loses the optimum. Returns an upper
/// bound on the optimum (the optimum itself when the search finished within `budget`
/// nodes; otherwise the root bound), the best packing found and the nodes searched.
fn integer_knapsack(
    items: &[Item],
    capacity: &[f64],
    surrogate: &[f64],
    budget: usize,
) -> (f64, Vec<f64>, usize) {
    const EPS: f64 = 1e-9;
    let weight: Vec<f64> = items
        .iter()
        .map(|it| it.request.iter().zip(surrogate).map(|(r, u)| r * u).sum())
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    let density = |i: usize| {
        if weight[i] > 0.0 {
            items[i].value / weight[i]
        } else {
            f64::INFINITY
        }
    };
    order.sort_by(|a, b| density(*b).total_cmp(&density(*a)).then(a.cmp(b)));
    let total: f64 = capacity.iter().zip(surrogate).map(|(a, u)| a * u).sum();
    // Fractional surrogate knapsack over order[from..] with `room` left.
    let bound = |from: usize, mut room: f64| -> f64 {
        let mut v = 0.0;
        for &i in &order[from..] {
            let it = &items[i];
            if weight[i] <= 0.0 {
                v += it.value * it.most;
                continue;
            }
            let take = it.most.min(room.max(0.0) / weight[i]);
            v += it.value * take;
            room -= take * weight[i];
            if take < it.most {
                break;
            }
        }
        v
    };
    let root = bound(0, total);
    struct Search<'a> {
        items: &'a [Item],
        order: &'a [usize],
        weight: &'a [f64],
        k: Vec<f64>,
        best: f64,
        best_k: Vec<f64>,
        nodes: usize,
        budget: usize,
    }
    fn dive(
        s: &mut Search,
        depth: usize,
        value: f64,
        left: &mut [f64],
        room: f64,
        bound: &dyn Fn(usize, f64) -> f64,
    ) -> bool {
        s.nodes += 1;
        if s.nodes > s.budget {
            return false;
        }
        if value > s.best + EPS {
            s.best = value;
            s.best_k = s.k.clone();
        }
        if depth == s.order.len() || value + bound(depth, room) <= s.best + EPS {
            return true;
        }
        let i = s.order[depth];
        let it = &s.items[i];
        let mut most = it.most;
        for (r, l) in it.request.iter().zip(left.iter()) {
            if *r > 0.0 {
                most = most.min(((l + EPS) / r).floor());
            }
        }
        let mut k = most.max(0.0);
        loop {
            for (l, r) in left.iter_mut().zip(&it.request) {
                *l -= k * r;
            }
            s.k[i] = k;
            let ok = dive(
                s,
                depth + 1,
                value + k * it.value,
                left,
                room - k * s.weight[i],
                bound,
            );
            s.k[i] = 0.0;
            for (l, r) in left.iter_mut().zip(&it.request) {
                *l += k * r;
            }
            if !ok {
                return false;
            }
            if k < 1.0 {
                return true;
            }
            k -= 1.0;
            // Taking fewer of this item: the rest must make up for it.
            if value + k * it.value + bound(depth + 1, room - k * s.weight[i]) <= s.best + EPS {
                return true;
            }
        }
    }
    let mut search = Search {
        items,
        order: &order,
        weight: &weight,
        k: vec![0.0; items.len()],
        best: 0.0,
        best_k: vec![0.0; items.len()],
        nodes: 0,
        budget,
    };
    let mut left = capacity.to_vec();
    let finished = dive(&mut search, 0, 0.0, &mut left, total, &bound);
    let upper = if finished { search.best } else { root };
    (upper, search.best_k, search.nodes.min(budget))
}

#[cfg(test)]
mod configuration_tests {
    use super::*;

    #[test]
    fn tiny_types_do_not_lend_cpu_to_big_pods() {
        // A nano with lots of cheap CPU but no memory cannot host the 1-CPU/1-GiB pods.
        let types = vec![
            NodeType {
                price: 0.01,
                allocatable: vec![2.0, 0.1],
            },
            NodeType {
                price: 1.0,
                allocatable: vec![4.0, 4.0],
            },
        ];
        let classes = vec![PodClass {
            count: 8.0,
            request: vec![1.0, 1.0],
            max_per_node: None,
        }];
        let (bound, _) = configuration_bound(&types, &classes, 20).unwrap();
        assert!((bound - 2.0).abs() < 1e-6, "{bound}");
        let weak = cover(
            &types
                .iter()
                .map(|t| Column {
                    price: t.price,
                    supply: t.allocatable.clone(),
                })
                .collect::<Vec<_>>(),
            &[8.0, 8.0],
        )
        .unwrap();
        assert!(weak.cost < bound);
    }

    #[test]
    fn whole_packings_tighten_the_bound_but_stay_below_the_optimum() {
        // Two 1.5-CPU pods and one 1-CPU pod on 2-CPU nodes. Fractionally a node holds a
        // 1.5 and half a 1 (2.0 nodes in all); whole, a 1.5 never shares, two 1s do (2.5);
        // the best real plan needs 3.
        let types = vec![NodeType {
            price: 1.0,
            allocatable: vec![2.0],
        }];
        let classes = vec![
            PodClass {
                count: 2.0,
                request: vec![1.5],
                max_per_node: None,
            },
            PodClass {
                count: 1.0,
                request: vec![1.0],
                max_per_node: None,
            },
        ];
        let (fractional, _) = configuration_bound(&types, &classes, 20).unwrap();
        let Bound {
            value: whole,
            duals,
            kind,
            ..
        } = integer_configuration_bound(&types, &classes, 20, DEFAULT_WORK_BUDGET).unwrap();
        assert_eq!(kind, BoundKind::WholePackings);
        assert!((fractional - 2.0).abs() < 1e-6, "{fractional}");
        assert!((whole - 2.5).abs() < 1e-6, "{whole}");
        assert!(
            (duals[0] - 1.0).abs() < 1e-6 && (duals[1] - 0.5).abs() < 1e-6,
            "{duals:?}"
        );
    }

    #[test]
    fn an_exhausted_work_budget_still_returns_a_valid_bound() {
        // Many small classes on a few types: the exact search needs thousands of nodes.
        let types: Vec<NodeType> = (1..=6)
            .map(|i| NodeType {
                price: i as f64 * 0.9 + 0.05 * (i * i) as f64,
                allocatable: vec![2.0 * i as f64, 3.7 * i as f64],
            })
            .collect();
        let classes: Vec<PodClass> = (0..12)
            .map(|i| PodClass {
                count: 7.0 + i as f64,
                request: vec![0.3 + 0.17 * i as f64, 0.25 + 0.29 * ((i * 5) % 12) as f64],
                max_per_node: None,
            })
            .collect();
        let (fractional, _) = configuration_bound(&types, &classes, 60).unwrap();
        let full = integer_configuration_bound(&types, &classes, 60, DEFAULT_WORK_BUDGET).unwrap();
        assert_eq!(full.kind, BoundKind::WholePackings);
        assert!(full.value >= fractional - 1e-9);
        let mut cut_short = false;
        for work in [0, 1, 20, 200, 2_000] {
            let cut = integer_configuration_bound(&types, &classes, 60, work).unwrap();
            // Valid: never above the converged optimum of the same LP.
            assert!(cut.value >= 0.0, "{work}: {cut:?}");
            assert!(cut.value <= full.value + 1e-9, "{work}: {cut:?} > {full:?}");
            cut_short |= cut.kind != BoundKind::WholePackings;
        }
        assert!(
            cut_short,
            "no budget was small enough to stop the search early"
        );
    }

    #[test]
    fn knapsack_table() {
        // (values, requests, most, capacity, optimum)
        type Case = (Vec<f64>, Vec<Vec<f64>>, Vec<f64>, Vec<f64>, f64);
        let cases: Vec<Case> = vec![
            // Greedy by density takes the 3-CPU item and wastes a CPU; two 2s are better.
            (
                vec![3.2, 2.0],
                vec![vec![3.0], vec![2.0]],
                vec![1.0, 2.0],
                vec![4.0],
                4.0,
            ),
            // Two resources: the CPU-heavy and memory-heavy items share the node (the one
            // balanced item is worth more alone, but leaves room for neither).
            (
                vec![1.0, 1.0, 1.5],
                vec![vec![3.0, 1.0], vec![1.0, 3.0], vec![2.0, 2.0]],
                vec![2.0, 2.0, 1.0],
                vec![4.0, 4.0],
                2.0,
            ),
            // Bounded: at most one of the valuable item.
            (
                vec![5.0, 1.0],
                vec![vec![1.0], vec![1.0]],
                vec![1.0, 10.0],
                vec![3.0],
                7.0,
            ),
        ];
        for (values, requests, most, capacity, want) in cases {
            let items: Vec<Item> = values
                .iter()
                .zip(&requests)
                .zip(&most)
                .map(|((v, r), m)| Item {
                    value: *v,
                    request: r.clone(),
                    most: *m,
                })
                .collect();
            let surrogate = vec![1.0; capacity.len()];
            let (upper, k, _) = integer_knapsack(&items, &capacity, &surrogate, 10_000);
            let value: f64 = items.iter().zip(&k).map(|(it, k)| it.value * k).sum();
            assert!((upper - want).abs() < 1e-9, "{values:?}: {upper} != {want}");
            assert!((value - want).abs() < 1e-9, "{values:?}: {k:?}");
            for (d, cap) in capacity.iter().enumerate() {
                let used: f64 = items.iter().zip(&k).map(|(it, k)| it.request[d] * k).sum();
                assert!(used <= cap + 1e-9);
            }
        }
    }

    #[test]
    fn anti_affinity_needs_a_node_each() {
        let types = vec![NodeType {
            price: 1.0,
            allocatable: vec![8.0, 8.0],
        }];
        let classes = vec![PodClass {
            count: 5.0,
            request: vec![1.0, 1.0],
            max_per_node: Some(1.0),
        }];
        let (bound, _) = configuration_bound(&types, &classes, 20).unwrap();
        assert!((bound - 5.0).abs() < 1e-6, "{bound}");
    }

    #[test]
    fn mixing_is_allowed() {
        // CPU-heavy and memory-heavy pods share the balanced type.
        let types = vec![NodeType {
            price: 1.0,
            allocatable: vec![4.0, 4.0],
        }];
        let classes = vec![
            PodClass {
                count: 4.0,
                request: vec![3.0, 1.0],
                max_per_node: None,
            },
            PodClass {
                count: 4.0,
                request: vec![1.0, 3.0],
                max_per_node: None,
            },
        ];
        let (bound, _) = configuration_bound(&types, &classes, 20).unwrap();
        assert!((bound - 4.0).abs() < 1e-6, "{bound}");
    }
}
