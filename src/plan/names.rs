//! Names of a cluster's AWS resources, kept within each service's length limit. EKS allows
//! 100-character cluster names; IAM role and EventBridge rule names stop at 64, SQS queue
//! names at 80, IAM policy names at 128. A name that would not fit keeps the start of the
//! cluster name and adds a short hash of all of it, so it stays recognisable, stable across
//! machines and runs, and distinct between clusters.

/// IAM role names and EventBridge rule names.
pub const ROLE_OR_RULE: usize = 64;
pub const QUEUE: usize = 80;
pub const POLICY: usize = 128;

/// `{prefix}{cluster}{suffix}`, shortened to at most `max` characters when needed.
pub fn fit(prefix: &str, cluster: &str, suffix: &str, max: usize) -> String {
    let plain = format!("{prefix}{cluster}{suffix}");
    if plain.len() <= max {
        return plain;
    }
    let hash = format!("{:08x}", fnv1a(cluster));
    let room = max.saturating_sub(prefix.len() + suffix.len() + hash.len() + 1);
    // Cluster names are ASCII ([0-9A-Za-z][A-Za-z0-9-_]*), so byte slicing is safe; the
    // guard keeps it safe if that ever changes.
    let mut cut = room.min(cluster.len());
    while !cluster.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{prefix}{}-{hash}{suffix}", &cluster[..cut])
}

/// FNV-1a: a hash whose value never depends on the Rust version or the machine.
fn fnv1a(s: &str) -> u32 {
    karpctl_api::hash::fnv1a32(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_left_alone() {
        assert_eq!(
            fit("KarpenterNodeRole-", "demo", "", ROLE_OR_RULE),
            "KarpenterNodeRole-demo"
        );
    }

    #[test]
    fn long_cluster_names_are_shortened_stably_and_distinctly() {
        let a = "a".repeat(60) + "-production-eu";
        let b = "a".repeat(60) + "-production-us";
        let na = fit(
            "Karpenter-",
            &a,
            "-CapacityReservationInterruption",
            ROLE_OR_RULE,
        );
        let nb = fit(
            "Karpenter-",
            &b,
            "-CapacityReservationInterruption",
            ROLE_OR_RULE,
        );
        assert_eq!(na.len(), ROLE_OR_RULE);
        assert!(
            na.starts_with("Karpenter-aaa") && na.ends_with("-CapacityReservationInterruption"),
            "{na}"
        );
        assert_ne!(na, nb);
        assert_eq!(
            na,
            fit(
                "Karpenter-",
                &a,
                "-CapacityReservationInterruption",
                ROLE_OR_RULE
            )
        );
        // A pinned value: the hash must never change between releases.
        assert_eq!(fnv1a("demo"), 0xaefd_3536);
    }
}
