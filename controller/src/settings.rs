//! The controller's configuration, read once at start from the environment variables the
//! Deployment sets (upstream Karpenter's names, so its docs and the chart's values carry over)
//! or the equivalent flags. Everything is validated here, so a bad value is one clear error at
//! start naming the variable, never a surprise deep inside a reconciler.

use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// Everything the controller is told by its Deployment. `Default` is the Deployment's
/// defaults with an example cluster name, for tests.
#[derive(Clone, Debug, PartialEq, Parser)]
#[command(
    name = "karpctl-controller",
    version,
    about = "The bundled Karpenter-compatible node autoscaling controller."
)]
pub struct Settings {
    /// The EKS cluster's name: instances are tagged and discovered by it.
    #[arg(long, env = "CLUSTER_NAME", value_parser = non_empty)]
    pub cluster_name: String,

    /// The cluster's API server endpoint, written into node user data; looked up from EKS
    /// when absent.
    #[arg(long, env = "CLUSTER_ENDPOINT", value_parser = non_empty)]
    pub cluster_endpoint: Option<String>,

    /// The SQS queue carrying spot interruption and rebalance events; none disables the
    /// interruption controller.
    #[arg(long, env = "INTERRUPTION_QUEUE", value_parser = non_empty)]
    pub interruption_queue: Option<String>,

    /// The namespace the controller runs in: its Lease and Events live there.
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = "kube-system", value_parser = non_empty)]
    pub system_namespace: String,

    /// This replica's name, its identity in leader election; the host name when absent.
    #[arg(long, env = "POD_NAME", value_parser = non_empty)]
    pub pod_name: Option<String>,

    /// The AWS region; the SDK's own resolution (profile, IMDS) when absent.
    #[arg(long, env = "AWS_REGION", value_parser = non_empty)]
    pub aws_region: Option<String>,

    /// How long the provisioner waits after the last new pending pod before it plans.
    #[arg(long, env = "BATCH_IDLE_DURATION", default_value = defaults::BATCH_IDLE, value_parser = parse_duration)]
    pub batch_idle_duration: Duration,

    /// The longest the provisioner keeps batching while pods keep arriving.
    #[arg(long, env = "BATCH_MAX_DURATION", default_value = defaults::BATCH_MAX, value_parser = parse_duration)]
    pub batch_max_duration: Duration,

    #[arg(long, env = "LOG_LEVEL", default_value = "info", ignore_case = true)]
    pub log_level: LogLevel,

    /// Port of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// The address the metrics and probe listeners bind (karpctl's own; local runs use
    /// 127.0.0.1).
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,

    /// Port of the `/healthz` and `/readyz` probes.
    #[arg(long, env = "HEALTH_PROBE_PORT", default_value_t = 8081)]
    pub health_probe_port: u16,

    /// The share of an instance type's memory the hypervisor keeps, as a fraction in [0, 1).
    #[arg(long, env = "VM_MEMORY_OVERHEAD_PERCENT", default_value_t = 0.075, value_parser = parse_fraction)]
    pub vm_memory_overhead_percent: f64,

    /// Network interfaces per instance kept away from pods (upstream `RESERVED_ENIS`).
    #[arg(long, env = "RESERVED_ENIS", default_value_t = 0)]
    pub reserved_enis: u32,

    /// No route to the Pricing API: use the shipped prices (upstream `ISOLATED_VPC`).
    #[arg(long, env = "ISOLATED_VPC", default_value_t = false, action = ArgAction::Set)]
    pub isolated_vpc: bool,

    /// Reconcile without a Lease (a single replica, or a local run).
    #[arg(long, env = "DISABLE_LEADER_ELECTION", default_value_t = false, action = ArgAction::Set)]
    pub disable_leader_election: bool,

    /// The Lease replicas compete for, in the system namespace.
    #[arg(
        long,
        env = "LEADER_ELECTION_NAME",
        default_value = "karpenter-leader-election",
        value_parser = non_empty
    )]
    pub leader_election_name: String,

    /// A NodeClaim whose instance has not launched by then is deleted.
    #[arg(long, env = "LAUNCH_TTL", default_value = defaults::LAUNCH_TTL, value_parser = parse_duration)]
    pub launch_ttl: Duration,

    /// A launched NodeClaim whose Node has not registered by then is deleted.
    #[arg(long, env = "REGISTRATION_TTL", default_value = defaults::REGISTRATION_TTL, value_parser = parse_duration)]
    pub registration_ttl: Duration,

    /// Upstream's feature gates, `Name=true,Other=false`; read: `SpotToSpotConsolidation`
    /// (default false). Unknown gates are accepted and ignored, as upstream.
    #[arg(long, env = "FEATURE_GATES", default_value = "SpotToSpotConsolidation=false", value_parser = parse_feature_gates)]
    pub feature_gates: FeatureGates,

    /// karpctl's churn guard: consolidation replaces nodes only when the replacement costs at
    /// least this fraction less (0.05 = 5%). The default, 0, is upstream's: any strictly
    /// cheaper replacement.
    #[arg(long, env = "CONSOLIDATION_MIN_SAVINGS", default_value = "0", value_parser = parse_fraction)]
    pub consolidation_min_savings: f64,
}

/// The feature gates the controller reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates {
    pub spot_to_spot_consolidation: bool,
}

fn parse_feature_gates(value: &str) -> Result<FeatureGates, String> {
    let mut gates = FeatureGates::default();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, on) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not Name=true or Name=false"))?;
        let on: bool = on
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the value must be true or false"))?;
        if name.trim() == "SpotToSpotConsolidation" {
            gates.spot_to_spot_consolidation = on;
        }
    }
    Ok(gates)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

/// The one home of the controller's defaults: the flags' default values and the `Default`
/// impls (here and in `ReconcilerSettings`) read them from here.
pub mod defaults {
    use std::time::Duration;

    pub const BATCH_IDLE: &str = "1s";
    pub const BATCH_MAX: &str = "10s";
    pub const LAUNCH_TTL: &str = "5m";
    pub const REGISTRATION_TTL: &str = "15m";

    /// A default above as a duration (they are literals, checked by a test).
    pub fn duration(text: &str) -> Duration {
        super::parse_duration(text).unwrap_or_default()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_name: "test-cluster".to_string(),
            cluster_endpoint: None,
            interruption_queue: None,
            system_namespace: "kube-system".to_string(),
            pod_name: None,
            aws_region: None,
            batch_idle_duration: defaults::duration(defaults::BATCH_IDLE),
            batch_max_duration: defaults::duration(defaults::BATCH_MAX),
            log_level: LogLevel::Info,
            metrics_port: 8080,
            health_probe_port: 8081,
            bind_address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            vm_memory_overhead_percent: 0.075,
            reserved_enis: 0,
            isolated_vpc: false,
            disable_leader_election: false,
            leader_election_name: "karpenter-leader-election".to_string(),
            launch_ttl: defaults::duration(defaults::LAUNCH_TTL),
            registration_ttl: defaults::duration(defaults::REGISTRATION_TTL),
            feature_gates: FeatureGates::default(),
            consolidation_min_savings: 0.0,
        }
    }
}

/// A settings problem found after each value parsed on its own.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error(
        "BATCH_IDLE_DURATION ({idle:?}) must not exceed BATCH_MAX_DURATION ({max:?}): the batch \
         would always end at the maximum"
    )]
    BatchIdleExceedsMax { idle: Duration, max: Duration },
    #[error("{variable} must be longer than zero")]
    Zero { variable: &'static str },
}

impl Settings {
    /// Parses the process's flags and environment, exiting with clap's message (which names
    /// the variable) on a bad value, then checks what spans several values.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let settings = Settings::parse();
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field checks; each value was already parsed and checked on its own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (variable, value) in [
            ("BATCH_IDLE_DURATION", self.batch_idle_duration),
            ("BATCH_MAX_DURATION", self.batch_max_duration),
            ("LAUNCH_TTL", self.launch_ttl),
            ("REGISTRATION_TTL", self.registration_ttl),
        ] {
            if value.is_zero() {
                return Err(SettingsError::Zero { variable });
            }
        }
        if self.batch_idle_duration > self.batch_max_duration {
            return Err(SettingsError::BatchIdleExceedsMax {
                idle: self.batch_idle_duration,
                max: self.batch_max_duration,
            });
        }
        Ok(())
    }

    /// This replica's leader-election identity: `POD_NAME`, else the host name, else a
    /// process-unique fallback so two local replicas never share one.
    pub fn identity(&self) -> String {
        if let Some(name) = &self.pod_name {
            return name.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("karpctl-controller-{}", std::process::id()))
    }
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(value.to_string())
    }
}

fn parse_fraction(value: &str) -> Result<f64, String> {
    let parsed: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..1.0).contains(&parsed) {
        Ok(parsed)
    } else {
        Err(format!("{value} is not a fraction in [0, 1), e.g. 0.075"))
    }
}

/// Parses a duration the way Go's `time.ParseDuration` does (Karpenter's settings are Go
/// durations): a sequence of decimal numbers each with a unit, `ns`, `us`/`µs`, `ms`, `s`,
/// `m`, `h` — `1s`, `500ms`, `1h30m`, `1.5h`. A bare `0` is zero; negative durations are
/// refused (none of the settings means anything negative).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let text = value.trim();
    let invalid = || {
        format!("{value:?} is not a duration: use a number and a unit, e.g. 1s, 500ms, 5m, 1h30m")
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return Err(invalid());
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let number: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        Settings::try_parse_from(
            ["karpctl-controller", "--cluster-name", "demo"]
                .iter()
                .chain(args),
        )
    }

    #[test]
    fn go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("1s", Duration::from_secs(1)),
            ("500ms", Duration::from_millis(500)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("2m3s", Duration::from_secs(123)),
            ("100us", Duration::from_micros(100)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in ["", "1", "s", "1x", "-1s", "1s2", "1..5s", "ms", "1 s"] {
            assert!(parse_duration(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn defaults_match_the_deployment_contract() {
        let parsed = parse(&[]).unwrap();
        let expected = Settings {
            cluster_name: "demo".to_string(),
            ..Settings::default()
        };
        // POD_NAME and AWS_REGION may be set in the test's environment; the rest may not.
        assert_eq!(
            Settings {
                pod_name: None,
                aws_region: None,
                ..parsed
            },
            expected
        );
        assert_eq!(expected.validate(), Ok(()));
        for d in [
            defaults::BATCH_IDLE,
            defaults::BATCH_MAX,
            defaults::LAUNCH_TTL,
            defaults::REGISTRATION_TTL,
        ] {
            assert!(parse_duration(d).is_ok_and(|d| d > Duration::ZERO), "{d}");
        }
        let reconcilers = crate::provisioning::ReconcilerSettings::default();
        assert_eq!(reconcilers.batch_idle, expected.batch_idle_duration);
        assert_eq!(reconcilers.registration_ttl, expected.registration_ttl);
    }

    #[test]
    fn flags_override_defaults() {
        let s = parse(&[
            "--batch-idle-duration",
            "500ms",
            "--batch-max-duration",
            "1m",
            "--log-level",
            "DEBUG",
            "--metrics-port",
            "9000",
            "--disable-leader-election",
            "true",
            "--vm-memory-overhead-percent",
            "0.1",
            "--launch-ttl",
            "1h30m",
        ])
        .unwrap();
        assert_eq!(s.batch_idle_duration, Duration::from_millis(500));
        assert_eq!(s.batch_max_duration, Duration::from_secs(60));
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.metrics_port, 9000);
        assert!(s.disable_leader_election);
        assert_eq!(s.vm_memory_overhead_percent, 0.1);
        assert_eq!(s.launch_ttl, Duration::from_secs(5400));
    }

    #[test]
    fn a_bad_duration_names_its_variable() {
        let err = parse(&["--batch-idle-duration", "1x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BATCH_IDLE_DURATION"), "{err}");
        assert!(err.contains("\"1x\" is not a duration"), "{err}");
    }

    #[test]
    fn out_of_range_overhead_is_refused() {
        let err = parse(&["--vm-memory-overhead-percent", "7.5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VM_MEMORY_OVERHEAD_PERCENT"), "{err}");
    }

    #[test]
    fn cross_field_checks() {
        let idle_over_max = Settings {
            batch_idle_duration: Duration::from_secs(20),
            ..Settings::default()
        };
        assert!(matches!(
            idle_over_max.validate(),
            Err(SettingsError::BatchIdleExceedsMax { .. })
        ));
        let zero_ttl = Settings {
            launch_ttl: Duration::ZERO,
            ..Settings::default()
        };
        assert_eq!(
            zero_ttl.validate(),
            Err(SettingsError::Zero {
                variable: "LAUNCH_TTL"
            })
        );
    }

    #[test]
    fn identity_prefers_pod_name() {
        let s = Settings {
            pod_name: Some("karpenter-0".to_string()),
            ..Settings::default()
        };
        assert_eq!(s.identity(), "karpenter-0");
    }
}
