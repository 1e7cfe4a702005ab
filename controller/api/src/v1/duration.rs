//! Go-style durations (`720h`, `1h30m`, `0s`) and `Never`, as Karpenter writes them.
//!
//! Upstream fields such as `expireAfter` are Go `time.Duration` strings, so a manifest only
//! round-trips if we accept the same syntax; the text the user wrote is kept for output so
//! `karpctl convert` does not rewrite `90m` as `1h30m`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative Go duration such as `720h` or `1h30m`.
#[derive(Clone, Debug)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

impl Duration {
    pub fn as_std(&self) -> std::time::Duration {
        self.value
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Duration {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Duration {}

impl From<std::time::Duration> for Duration {
    /// Renders the canonical form Go would print, minus zero components (`1h30m`, not `1h30m0s`).
    fn from(value: std::time::Duration) -> Self {
        let mut secs = value.as_secs();
        let mut text = String::new();
        for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                text.push_str(&format!("{}{unit}", secs / size));
                secs %= size;
            }
        }
        let nanos = value.subsec_nanos();
        if nanos > 0 {
            text.push_str(&format!("{nanos}ns"));
        }
        if text.is_empty() {
            text.push_str("0s");
        }
        Self { text, value }
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {text:?}: expected a sequence of integers with units h, m, s, ms, us or ns, e.g. \"720h\" or \"1h30m\""
)]
pub struct InvalidDuration {
    pub text: String,
}

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDuration {
            text: text.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid());
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(invalid)?;
            if digits == 0 {
                return Err(invalid());
            }
            let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let part = match &rest[..unit_len] {
                "h" => amount.checked_mul(3600).map(std::time::Duration::from_secs),
                "m" => amount.checked_mul(60).map(std::time::Duration::from_secs),
                "s" => Some(std::time::Duration::from_secs(amount)),
                "ms" => Some(std::time::Duration::from_millis(amount)),
                "us" | "µs" => Some(std::time::Duration::from_micros(amount)),
                "ns" => Some(std::time::Duration::from_nanos(amount)),
                _ => None,
            };
            total = total
                .checked_add(part.ok_or_else(invalid)?)
                .ok_or_else(invalid)?;
            rest = &rest[unit_len..];
        }
        Ok(Self {
            text: text.to_owned(),
            value: total,
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// A duration that may be switched off with the literal `Never` (`expireAfter`, `consolidateAfter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NillableDuration {
    Never,
    After(Duration),
}

impl NillableDuration {
    /// `None` for `Never`.
    pub fn as_std(&self) -> Option<std::time::Duration> {
        match self {
            Self::Never => None,
            Self::After(duration) => Some(duration.as_std()),
        }
    }
}

impl FromStr for NillableDuration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "Never" {
            Ok(Self::Never)
        } else {
            text.parse().map(Self::After)
        }
    }
}

impl fmt::Display for NillableDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never => f.write_str("Never"),
            Self::After(duration) => duration.fmt(f),
        }
    }
}

impl Serialize for NillableDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NillableDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for NillableDuration {
    fn schema_name() -> Cow<'static, str> {
        "NillableDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("720h", Some(720 * 3600)),
            ("1h30m", Some(5400)),
            ("90m", Some(5400)),
            ("0s", Some(0)),
            ("30s", Some(30)),
            ("1h1m1s", Some(3661)),
            ("", None),
            ("h", None),
            ("10", None),
            ("10d", None),
            ("1.5h", None),
            ("-1h", None),
            ("Never", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<Duration>().ok().map(|d| d.as_std().as_secs());
            assert_eq!(got, *want, "{text:?}");
        }
    }

    #[test]
    fn keeps_the_text_written() {
        let duration: Duration = "90m".parse().unwrap();
        assert_eq!(duration.to_string(), "90m");
        assert_eq!(
            duration,
            Duration::from(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            Duration::from(std::time::Duration::from_secs(5400)).to_string(),
            "1h30m"
        );
        assert_eq!(Duration::from(std::time::Duration::ZERO).to_string(), "0s");
    }

    #[test]
    fn never_is_nillable() {
        assert_eq!(
            "Never".parse::<NillableDuration>(),
            Ok(NillableDuration::Never)
        );
        assert_eq!(
            "720h".parse::<NillableDuration>().unwrap().as_std(),
            Some(std::time::Duration::from_secs(720 * 3600))
        );
        assert!("never".parse::<NillableDuration>().is_err());
    }
}
