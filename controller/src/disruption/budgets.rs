//! NodePool disruption budgets as upstream Karpenter reads them: `nodes` is a count or a
//! percentage of the pool's nodes (rounded up), a budget with `schedule` is active for
//! `duration` after each time its cron expression (UTC, five fields or a `@daily`-style
//! descriptor, as robfig/cron's standard parser) fires, `reasons` limits it to some
//! disruption reasons, and the smallest active budget that applies wins. No active budget
//! means no limit. A budget that cannot be read allows nothing, and says which field.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use karpctl_api::v1::{Budget, DisruptionReason, NodePool};

/// A parsed five-field cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// robfig/cron: when either day field is `*`/`?`, both must match; otherwise either.
    day_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + min);
        }
        v.parse::<u32>()
            .map_err(|_| format!("{what} {v:?} is not a number"))
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} step {s:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!(
                "{what} {range:?} is outside {min}-{max} or an empty range"
            ));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expanded = match expr.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, month, dow] = parts[..] else {
            return Err(format!(
                "{expr:?} has {} fields; a schedule has five (minute hour day-of-month month day-of-week) or is a descriptor such as @daily",
                parts.len()
            ));
        };
        let dow_bits = field(dow, 0, 7, &DAYS, "day of week")?;
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(Cron {
            minutes: field(min, 0, 59, &[], "minute")?,
            hours: field(hour, 0, 23, &[], "hour")? as u32,
            days_of_month: field(dom, 1, 31, &[], "day of month")? as u32,
            months: field(month, 1, 12, &MONTHS, "month")? as u16,
            // 7 is Sunday too.
            days_of_week: ((dow_bits | (dow_bits >> 7)) & 0x7f) as u8,
            day_star: star(dom) || star(dow),
        })
    }

    /// Whether it fires at the minute containing `t`.
    pub fn fires_at(&self, t: Timestamp) -> bool {
        let z = t.to_zoned(TimeZone::UTC);
        let dom = self.days_of_month & (1 << z.day()) != 0;
        let dow = self.days_of_week & (1 << z.weekday().to_sunday_zero_offset()) != 0;
        let day = if self.day_star {
            dom && dow
        } else {
            dom || dow
        };
        self.minutes & (1 << z.minute()) != 0
            && self.hours & (1 << z.hour()) != 0
            && self.months & (1 << z.month()) != 0
            && day
    }

    /// Whether it fired in the window `(now - duration, now]` (upstream: the next hit after
    /// `now - duration` is not after `now`).
    pub fn fired_within(&self, now: Timestamp, duration: std::time::Duration) -> bool {
        let minutes = duration.as_secs().div_ceil(60) as i64;
        let now_minute = now.as_second().div_euclid(60) * 60;
        let start = now.as_second() - duration.as_secs() as i64;
        (0..=minutes).any(|i| {
            let t = now_minute - i * 60;
            t > start
                && Timestamp::from_second(t)
                    .ok()
                    .is_some_and(|t| self.fires_at(t))
        })
    }
}

/// How many of a pool's nodes a budget's `nodes` allows to be disrupted at once.
pub fn allowed_nodes(nodes: &str, total: usize) -> Result<usize, String> {
    let text = nodes.trim();
    if let Some(pct) = text.strip_suffix('%') {
        let pct: u64 = pct
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| format!("{text:?} is not a percentage from 0% to 100%"))?;
        Ok((total as u64 * pct).div_ceil(100) as usize)
    } else {
        text.parse::<usize>()
            .map_err(|_| format!("{text:?} is neither a count nor a percentage"))
    }
}

/// Whether a budget is active now.
pub fn is_active(budget: &Budget, now: Timestamp) -> Result<bool, String> {
    match (&budget.schedule, &budget.duration) {
        (None, None) => Ok(true),
        (Some(schedule), Some(duration)) => {
            let cron = Cron::parse(schedule)?;
            Ok(cron.fired_within(now, duration.as_std()))
        }
        _ => Err("schedule and duration must be set together".to_owned()),
    }
}

/// How many more nodes of `pool` may be disrupted for `reason` now: the smallest active
/// budget that applies to the reason, of `total` nodes, minus the `disrupting` ones already
/// going. `Err` names the budget field that cannot be read; such a pool disrupts nothing.
pub fn allowed(
    pool: &NodePool,
    reason: DisruptionReason,
    total: usize,
    disrupting: usize,
    now: Timestamp,
) -> Result<usize, String> {
    let mut allowed = usize::MAX;
    for (i, budget) in pool
        .spec
        .disruption
        .clone()
        .unwrap_or_default()
        .budgets_or_default()
        .iter()
        .enumerate()
    {
        if budget
            .reasons
            .as_ref()
            .is_some_and(|r| !r.is_empty() && !r.contains(&reason))
        {
            continue;
        }
        let at = |field: &str, e: String| format!("spec.disruption.budgets[{i}].{field}: {e}");
        let active = is_active(budget, now).map_err(|e| at("schedule", e))?;
        if !active {
            continue;
        }
        let n = allowed_nodes(&budget.nodes, total).map_err(|e| at("nodes", e))?;
        allowed = allowed.min(n);
    }
    Ok(allowed.saturating_sub(disrupting))
}

/// The reason's name as upstream's metrics and events spell it.
pub fn reason_name(reason: DisruptionReason) -> &'static str {
    match reason {
        DisruptionReason::Underutilized => "Underutilized",
        DisruptionReason::Empty => "Empty",
        DisruptionReason::Drifted => "Drifted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpctl_api::v1::Duration as ApiDuration;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn budget(nodes: &str, schedule: Option<&str>, duration: Option<&str>) -> Budget {
        Budget {
            reasons: None,
            nodes: nodes.to_owned(),
            schedule: schedule.map(str::to_owned),
            duration: duration.map(|d| d.parse::<ApiDuration>().unwrap()),
        }
    }

    fn pool(budgets: Vec<Budget>) -> NodePool {
        let mut p: NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "default"},
            "spec": {"template": {"spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": []}}}
        }))
        .unwrap();
        p.spec.disruption = Some(karpctl_api::v1::Disruption {
            budgets: Some(budgets),
            ..Default::default()
        });
        p
    }

    #[test]
    fn percentages_round_up_and_counts_are_counts() {
        assert_eq!(allowed_nodes("10%", 5), Ok(1));
        assert_eq!(allowed_nodes("10%", 0), Ok(0));
        assert_eq!(allowed_nodes("50%", 3), Ok(2));
        assert_eq!(allowed_nodes("100%", 7), Ok(7));
        assert_eq!(allowed_nodes("0", 7), Ok(0));
        assert_eq!(allowed_nodes("3", 2), Ok(3));
        assert!(allowed_nodes("150%", 2).is_err());
        assert!(allowed_nodes("ten", 2).is_err());
    }

    #[test]
    fn cron_fields_as_robfig_reads_them() {
        // Weekdays 09:00-17:00 UTC.
        let c = Cron::parse("0 9 * * mon-fri").unwrap();
        assert!(c.fires_at(at("2026-12-07T09:00:30Z"))); // a Monday
        assert!(!c.fires_at(at("2026-12-06T09:00:00Z"))); // a Sunday
        assert!(!c.fires_at(at("2026-12-07T09:01:00Z")));
        // Steps, lists, ranges, names, 7 as Sunday.
        let c = Cron::parse("*/15 0,12 1-7 JAN,dec 7").unwrap();
        // Day of month and day of week both restricted: either matches.
        assert!(c.fires_at(at("2026-12-03T12:30:00Z"))); // 3rd, a Thursday
        assert!(c.fires_at(at("2026-12-13T00:45:00Z"))); // a Sunday
        assert!(!c.fires_at(at("2026-12-14T00:45:00Z"))); // a Monday the 14th
        assert!(!c.fires_at(at("2026-11-03T12:30:00Z"))); // November
        assert!(!c.fires_at(at("2026-12-03T12:10:00Z")));
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * * mon-xyz",
            "*/0 * * * *",
            "5-1 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn a_scheduled_budget_is_active_for_its_duration_after_each_hit() {
        let b = budget("0", Some("0 9 * * *"), Some("8h"));
        assert_eq!(is_active(&b, at("2026-12-07T08:59:59Z")), Ok(false));
        assert_eq!(is_active(&b, at("2026-12-07T09:00:00Z")), Ok(true));
        assert_eq!(is_active(&b, at("2026-12-07T16:59:59Z")), Ok(true));
        assert_eq!(is_active(&b, at("2026-12-07T17:00:00Z")), Ok(false));
        // A window across midnight.
        let night = budget("0", Some("0 22 * * *"), Some("4h"));
        assert_eq!(is_active(&night, at("2026-12-08T01:30:00Z")), Ok(true));
        assert_eq!(is_active(&night, at("2026-12-08T02:00:00Z")), Ok(false));
    }

    #[test]
    fn the_smallest_active_budget_for_the_reason_wins_minus_what_is_disrupting() {
        let now = at("2026-12-07T10:00:00Z");
        // Default: 10% of 25 nodes, rounded up = 3.
        let mut p = pool(vec![]);
        p.spec.disruption = None;
        assert_eq!(
            allowed(&p, DisruptionReason::Underutilized, 25, 0, now),
            Ok(3)
        );
        assert_eq!(
            allowed(&p, DisruptionReason::Underutilized, 25, 2, now),
            Ok(1)
        );
        assert_eq!(
            allowed(&p, DisruptionReason::Underutilized, 25, 5, now),
            Ok(0)
        );
        // A zero budget only for drift, during business hours.
        let mut drift_only = budget("0", Some("0 9 * * mon-fri"), Some("8h"));
        drift_only.reasons = Some(vec![DisruptionReason::Drifted]);
        let p = pool(vec![budget("5", None, None), drift_only]);
        assert_eq!(allowed(&p, DisruptionReason::Drifted, 25, 0, now), Ok(0));
        assert_eq!(allowed(&p, DisruptionReason::Empty, 25, 0, now), Ok(5));
        let evening = at("2026-12-07T18:00:00Z");
        assert_eq!(
            allowed(&p, DisruptionReason::Drifted, 25, 0, evening),
            Ok(5)
        );
        // No active budget: no limit.
        let p = pool(vec![budget("0", Some("0 9 * * *"), Some("1h"))]);
        assert_eq!(
            allowed(&p, DisruptionReason::Empty, 4, 0, evening),
            Ok(usize::MAX)
        );
    }

    #[test]
    fn an_unreadable_budget_names_its_field_and_allows_nothing() {
        let p = pool(vec![budget("1", Some("0 25 * * *"), Some("1h"))]);
        let e = allowed(
            &p,
            DisruptionReason::Empty,
            4,
            0,
            at("2026-12-07T10:00:00Z"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("spec.disruption.budgets[0].schedule: hour"),
            "{e}"
        );
        let p = pool(vec![budget("lots", None, None)]);
        let e = allowed(
            &p,
            DisruptionReason::Empty,
            4,
            0,
            at("2026-12-07T10:00:00Z"),
        )
        .unwrap_err();
        assert!(e.starts_with("spec.disruption.budgets[0].nodes"), "{e}");
    }
}
