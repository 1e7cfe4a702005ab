//! The fractional bin-covering LP: the cheapest mix of instance types whose summed
//! allocatable covers a demand on every resource, when nodes may be bought in fractions.
//!
//! ```text
//! minimize Σ_t price_t · x_t   subject to   Σ_t alloc_{t,r} · x_t ≥ demand_r  ∀r,   x ≥ 0
//! ```
//!
//! Its optimum is a lower bound on any real plan's cost (benchmarks report plans against it),
//! and its dual — a price per unit of each resource — values pods by what their requests
//! cost at the margin, which the packer uses to compare instance types across a whole batch
//! instead of node by node. With a handful of resources and up to a few hundred types after
//! dominance pruning, a dense simplex on the dual (feasible at the origin since prices are
//! non-negative) is small and exact enough.

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
