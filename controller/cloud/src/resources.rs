//! Resource quantities and their arithmetic: what a pod requests, what an instance type
//! offers, what the kubelet reserves. CPU is kept in millicores and memory/storage in bytes
//! as integers, so sums never drift the way float arithmetic would.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// A vector of resource amounts. Extended resources (`nvidia.com/gpu`, `aws.amazon.com/neuron`,
/// `example.com/foo`, ...) are counted in whole units; absent means zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Bytes.
    pub ephemeral_storage: i64,
    pub pods: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, i64>,
}

impl Resources {
    pub fn new(cpu_millis: i64, memory_bytes: i64) -> Self {
        Self {
            cpu: cpu_millis,
            memory: memory_bytes,
            ..Self::default()
        }
    }

    /// Parse a Kubernetes resource list (`{"cpu": "500m", "memory": "1Gi"}`).
    pub fn from_quantities<'a>(list: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut out = Self::default();
        for (name, quantity) in list {
            let milli = parse_quantity_milli(quantity)?;
            match name {
                CPU => out.cpu = milli_to_i64(milli),
                MEMORY => out.memory = milli_to_i64(ceil_div(milli, 1000)),
                EPHEMERAL_STORAGE => out.ephemeral_storage = milli_to_i64(ceil_div(milli, 1000)),
                PODS => out.pods = milli_to_i64(ceil_div(milli, 1000)),
                other => {
                    let value = milli_to_i64(ceil_div(milli, 1000));
                    if value != 0 {
                        out.extended.insert(other.to_string(), value);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.pods,
            other => self.extended.get(other).copied().unwrap_or(0),
        }
    }

    pub fn set(&mut self, name: &str, value: i64) {
        match name {
            CPU => self.cpu = value,
            MEMORY => self.memory = value,
            EPHEMERAL_STORAGE => self.ephemeral_storage = value,
            PODS => self.pods = value,
            other => {
                if value == 0 {
                    self.extended.remove(other);
                } else {
                    self.extended.insert(other.to_string(), value);
                }
            }
        }
    }

    /// Names of every resource with a non-zero amount, the four core ones first.
    pub fn names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for (name, value) in [
            (CPU, self.cpu),
            (MEMORY, self.memory),
            (EPHEMERAL_STORAGE, self.ephemeral_storage),
            (PODS, self.pods),
        ] {
            if value != 0 {
                names.push(name);
            }
        }
        names.extend(
            self.extended
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, _)| k.as_str()),
        );
        names
    }

    pub fn add(&mut self, other: &Resources) {
        self.add_times(other, 1);
    }

    /// `self += other × times`, used to add a run of identical pods at once.
    pub fn add_times(&mut self, other: &Resources, times: i64) {
        self.cpu += other.cpu * times;
        self.memory += other.memory * times;
        self.ephemeral_storage += other.ephemeral_storage * times;
        self.pods += other.pods * times;
        for (k, v) in &other.extended {
            *self.extended.entry(k.clone()).or_insert(0) += v * times;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.add_times(other, -1);
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        out.add(other);
        out
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        out.sub(other);
        out
    }

    /// Element-wise maximum.
    pub fn max(&self, other: &Resources) -> Resources {
        let mut out = Resources {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
            ephemeral_storage: self.ephemeral_storage.max(other.ephemeral_storage),
            pods: self.pods.max(other.pods),
            extended: self.extended.clone(),
        };
        for (k, v) in &other.extended {
            let e = out.extended.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        out
    }

    /// Whether `self` (a request) fits within `capacity` on every resource.
    pub fn fits(&self, capacity: &Resources) -> bool {
        self.cpu <= capacity.cpu
            && self.memory <= capacity.memory
            && self.ephemeral_storage <= capacity.ephemeral_storage
            && self.pods <= capacity.pods
            && self
                .extended
                .iter()
                .all(|(k, v)| *v <= capacity.extended.get(k).copied().unwrap_or(0))
    }

    /// The resources on which `self` exceeds `capacity`, for error messages.
    pub fn exceeding(&self, capacity: &Resources) -> Vec<String> {
        let mut names = Vec::new();
        for (name, need) in [
            (CPU, self.cpu),
            (MEMORY, self.memory),
            (EPHEMERAL_STORAGE, self.ephemeral_storage),
            (PODS, self.pods),
        ] {
            if need > capacity.get(name) {
                names.push(name.to_string());
            }
        }
        for (k, v) in &self.extended {
            if *v > capacity.get(k) {
                names.push(k.clone());
            }
        }
        names
    }

    /// How many copies of `self` fit in `free` (`i64::MAX` for an all-zero request).
    pub fn copies_within(&self, free: &Resources) -> i64 {
        fn ratio(need: i64, have: i64) -> i64 {
            if need <= 0 {
                i64::MAX
            } else if have < 0 {
                0
            } else {
                have / need
            }
        }
        let mut n = ratio(self.cpu, free.cpu)
            .min(ratio(self.memory, free.memory))
            .min(ratio(self.ephemeral_storage, free.ephemeral_storage))
            .min(ratio(self.pods, free.pods));
        for (k, v) in &self.extended {
            n = n.min(ratio(*v, free.get(k)));
        }
        n
    }

    pub fn is_zero(&self) -> bool {
        self.cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.pods == 0
            && self.extended.values().all(|v| *v == 0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![
            format!("cpu={}", format_cpu(self.cpu)),
            format!("memory={}", format_bytes(self.memory)),
        ];
        if self.ephemeral_storage != 0 {
            parts.push(format!(
                "ephemeral-storage={}",
                format_bytes(self.ephemeral_storage)
            ));
        }
        if self.pods != 0 {
            parts.push(format!("pods={}", self.pods));
        }
        for (k, v) in &self.extended {
            parts.push(format!("{k}={v}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// `1500` → `1.5`, `250` → `250m`.
pub fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else if millis % 100 == 0 {
        format!("{:.1}", millis as f64 / 1000.0)
    } else {
        format!("{millis}m")
    }
}

/// Bytes in the largest binary unit that keeps one decimal: `1.5Gi`, `512Mi`.
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [(&str, i64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes.abs() >= size {
            let v = bytes as f64 / size as f64;
            return if bytes % size == 0 {
                format!("{}{unit}", bytes / size)
            } else {
                format!("{v:.1}{unit}")
            };
        }
    }
    format!("{bytes}")
}

/// Bytes as an exact Kubernetes quantity in the largest binary unit that divides them:
/// `2Gi`, `7824Mi`, `1536Ki`, `1000`. Unlike [`format_bytes`] it never rounds, so scripts
/// reading `--output json` get the amount itself.
pub fn quantity_bytes(bytes: i64) -> String {
    const UNITS: [(&str, i64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, size)| bytes != 0 && bytes % size == 0)
        .map(|(unit, size)| format!("{}{unit}", bytes / size))
        .unwrap_or_else(|| bytes.to_string())
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a >= 0 { (a + b - 1) / b } else { a / b }
}

fn milli_to_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Parse a Kubernetes quantity (`100m`, `1.5`, `2Gi`, `1e3`, `500M`) into thousandths of a
/// unit, rounding up as the API server does for fractional milli-values.
pub fn parse_quantity_milli(quantity: &str) -> Result<i128> {
    let err = |reason| Error::Quantity {
        quantity: quantity.to_string(),
        reason,
    };
    let s = quantity.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("expected a number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.len() + frac_part.len() > 30 {
        return Err(err("too many digits"));
    }
    let digits: i128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| err("expected a number"))?;
    let frac_scale = 10i128.pow(frac_part.len() as u32);
    // value = digits / frac_scale * multiplier; we return value * 1000.
    let (mul_num, mul_den): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000i128 << 40, 1),
        "Pi" => (1000i128 << 50, 1),
        "Ei" => (1000i128 << 60, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| err("bad exponent"))?;
            if !(-3..=18).contains(&e) {
                return Err(err("exponent out of range"));
            }
            if e >= -3 {
                (10i128.pow((e + 3) as u32), 1)
            } else {
                (1, 10i128.pow((-e - 3) as u32))
            }
        }
        _ => return Err(err("unknown suffix")),
    };
    let value = ceil_div(digits * mul_num, frac_scale * mul_den);
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_quantities_are_exact_and_read_back_to_the_same_amount() {
        let cases: &[(i64, &str)] = &[
            (0, "0"),
            (1000, "1000"),
            (1536, "1536"),
            (1536 << 10, "1536Ki"),
            (2 << 30, "2Gi"),
            (7824 << 20, "7824Mi"),
            ((27 << 30) + (800 << 20), "28448Mi"),
            (3 << 40, "3Ti"),
        ];
        for (bytes, want) in cases {
            assert_eq!(quantity_bytes(*bytes), *want, "{bytes}");
            assert_eq!(parse_quantity_milli(want).unwrap(), *bytes as i128 * 1000);
        }
    }

    #[test]
    fn quantities() {
        let cases: &[(&str, i128)] = &[
            ("1", 1000),
            ("100m", 100),
            ("1.5", 1500),
            ("0.1", 100),
            ("1Gi", 1000 << 30),
            ("512Mi", 1000 << 29),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("1e3", 1_000_000),
            ("2.5Ki", 2560 * 1000),
            ("0.0001", 1),
            ("-1", -1000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_quantity_milli(input).unwrap(), *want, "{input}");
        }
        for bad in ["", "abc", "1x", "1.2.3", "Gi"] {
            assert!(parse_quantity_milli(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_lists() {
        let r = Resources::from_quantities([
            ("cpu", "250m"),
            ("memory", "1Gi"),
            ("nvidia.com/gpu", "1"),
            ("ephemeral-storage", "1G"),
        ])
        .unwrap();
        assert_eq!(r.cpu, 250);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.ephemeral_storage, 1_000_000_000);
        assert_eq!(r.get("nvidia.com/gpu"), 1);
    }

    #[test]
    fn fitting_and_copies() {
        let cases: &[(Resources, Resources, bool, i64)] = &[
            (
                Resources::new(500, 1 << 30),
                Resources::new(2000, 4 << 30),
                true,
                4,
            ),
            (
                Resources::new(500, 3 << 30),
                Resources::new(2000, 4 << 30),
                true,
                1,
            ),
            (
                Resources::new(3000, 1),
                Resources::new(2000, 4 << 30),
                false,
                0,
            ),
        ];
        for (req, cap, fits, copies) in cases {
            assert_eq!(req.fits(cap), *fits);
            assert_eq!(req.copies_within(cap), *copies);
        }
        let mut gpu = Resources::new(100, 0);
        gpu.set("nvidia.com/gpu", 1);
        assert!(!gpu.fits(&Resources::new(1000, 1 << 30)));
        assert_eq!(gpu.copies_within(&Resources::new(1000, 1 << 30)), 0);
        assert_eq!(
            gpu.exceeding(&Resources::new(1000, 1 << 30)),
            vec!["nvidia.com/gpu".to_string()]
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format_cpu(1500), "1.5");
        assert_eq!(format_cpu(250), "250m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(3 << 29), "1.5Gi");
    }
}
