//! One shared copy of the values the cluster state would otherwise hold thousands of times:
//! namespaces, node names, phases and owners repeat across pods, and the pods of one
//! workload bound to nodes have the same scheduling view (requests, labels, anti-affinity,
//! host ports). Sharing them is most of what keeps the state of a cluster with 10,000 pods
//! small (docs/benchmarks.md).
//!
//! Values are shared through `Arc`s; an entry only the interner still holds is dropped by a
//! periodic sweep, so the interner never grows past what the state uses.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use karpctl_scheduling::Pod as SchedulingPod;

/// After this many lookups the interner drops the entries nothing else holds any more.
const SWEEP_EVERY: usize = 4096;

#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    /// Scheduling views by a hash of their content; equal hashes are compared in full.
    views: HashMap<u64, Vec<Arc<SchedulingPod>>>,
    lookups: usize,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `s`.
    pub fn str(&mut self, s: &Arc<str>) -> Arc<str> {
        self.lookup();
        match self.strings.get(s.as_ref()) {
            Some(shared) => shared.clone(),
            None => {
                self.strings.insert(s.clone());
                s.clone()
            }
        }
    }

    /// The shared copy of a scheduling view equal to `view`.
    pub fn view(&mut self, view: &Arc<SchedulingPod>) -> Arc<SchedulingPod> {
        self.lookup();
        let bucket = self.views.entry(content_hash(view)).or_default();
        match bucket.iter().find(|v| ***v == **view) {
            Some(shared) => shared.clone(),
            None => {
                bucket.push(view.clone());
                view.clone()
            }
        }
    }

    /// Shared values held (strings, scheduling views), for tests and the benchmark.
    pub fn len(&self) -> (usize, usize) {
        (self.strings.len(), self.views.values().map(Vec::len).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn lookup(&mut self) {
        self.lookups += 1;
        if self.lookups.is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
    }

    /// Drop what only the interner still holds.
    pub fn sweep(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.views.retain(|_, bucket| {
            bucket.retain(|v| Arc::strong_count(v) > 1);
            !bucket.is_empty()
        });
    }
}

/// A hash of everything a view holds, through its serialized form (the scheduling types
/// serialize but do not all implement `Hash`); no allocation.
fn content_hash(view: &SchedulingPod) -> u64 {
    struct Sink(DefaultHasher);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(DefaultHasher::new());
    // Serializing plain data into a hasher cannot fail; if it ever did, every view would
    // share one bucket and still be compared in full.
    let _ = serde_json::to_writer(&mut sink, view);
    sink.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpctl_scheduling::pod;

    #[test]
    fn equal_values_share_one_copy_and_unequal_ones_do_not() {
        let mut i = Interner::new();
        let a = i.str(&Arc::from("kube-system"));
        let b = i.str(&Arc::from("kube-system"));
        let c = i.str(&Arc::from("default"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));

        let web = || Arc::new(pod().cpu("1").memory("1Gi").label("app", "web"));
        let v1 = i.view(&web());
        let v2 = i.view(&web());
        let other = i.view(&Arc::new(pod().cpu("1").memory("1Gi").label("app", "api")));
        assert!(Arc::ptr_eq(&v1, &v2));
        assert!(!Arc::ptr_eq(&v1, &other));
        assert_eq!(*other, pod().cpu("1").memory("1Gi").label("app", "api"));
    }

    #[test]
    fn a_sweep_drops_only_what_nothing_else_holds() {
        let mut i = Interner::new();
        let kept = i.str(&Arc::from("kept"));
        drop(i.str(&Arc::from("gone")));
        let view = i.view(&Arc::new(pod().cpu("1")));
        drop(i.view(&Arc::new(pod().cpu("2"))));
        assert_eq!(i.len(), (2, 2));
        i.sweep();
        assert_eq!(i.len(), (1, 1));
        assert!(Arc::ptr_eq(&kept, &i.str(&Arc::from("kept"))));
        assert!(Arc::ptr_eq(&view, &i.view(&Arc::new(pod().cpu("1")))));
    }
}
