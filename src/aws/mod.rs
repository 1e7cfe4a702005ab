//! The AWS boundary. Configuration is resolved exactly as the AWS CLI resolves it (the SDK's
//! default chain: environment, profile, SSO, web identity, container and instance
//! credentials; `AWS_ENDPOINT_URL` honoured), with `--profile` and `--region` on top. [`Aws`]
//! names only the calls karpctl makes; every method returns domain types and [`AwsError`],
//! so no SDK type leaks inward.

pub mod apply;
pub mod discovery;
pub mod error;
pub mod node_groups;
pub mod state;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::ProvideCredentials;

pub use error::{AwsError, Result};

/// The clients for every service `init` uses, built from one resolved configuration.
pub struct Aws {
    pub region: String,
    iam: aws_sdk_iam::Client,
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    eks: aws_sdk_eks::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    sts: aws_sdk_sts::Client,
}

impl Aws {
    /// Resolves configuration as the AWS CLI does, then checks that credentials load and have
    /// not expired, so the first real call does not fail with a less helpful message.
    pub async fn connect(profile: Option<&str>, region: Option<&str>) -> Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_string()));
        }
        let config = loader.load().await;
        let region = config.region().ok_or(AwsError::NoRegion)?.to_string();
        check_credentials(&config, profile).await?;
        Ok(Self::from_config(&config, region))
    }

    /// The region as `connect` resolves it, for commands that only need its name (pricing,
    /// zones): `--region`, then `AWS_REGION`/`AWS_DEFAULT_REGION`, then the profile's
    /// `region` (`--profile`, else `AWS_PROFILE`, else `default`). Never asks the instance
    /// metadata service, so offline commands stay offline and fast. None when nothing says.
    pub async fn region_name(profile: Option<&str>, region: Option<&str>) -> Option<String> {
        use aws_config::meta::region::RegionProviderChain;
        if let Some(region) = region {
            return Some(region.to_string());
        }
        let mut profile_region = aws_config::profile::ProfileFileRegionProvider::builder();
        if let Some(profile) = profile {
            profile_region = profile_region.profile_name(profile);
        }
        RegionProviderChain::first_try(
            aws_config::environment::EnvironmentVariableRegionProvider::new(),
        )
        .or_else(profile_region.build())
        .region()
        .await
        .map(|r| r.to_string())
    }

    fn from_config(config: &SdkConfig, region: String) -> Self {
        Self {
            region,
            iam: aws_sdk_iam::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            events: aws_sdk_eventbridge::Client::new(config),
            eks: aws_sdk_eks::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
        }
    }
}

async fn check_credentials(config: &SdkConfig, profile: Option<&str>) -> Result<()> {
    let Some(provider) = config.credentials_provider() else {
        return Err(AwsError::NoCredentials {
            detail: "no credentials provider is configured".into(),
        });
    };
    let credentials = provider.provide_credentials().await.map_err(|e| {
        let detail = error::chain(&e);
        let detail = match profile {
            Some(p) => format!("profile {p}: {detail}"),
            None => detail,
        };
        if detail.to_ascii_lowercase().contains("expired") {
            AwsError::ExpiredCredentials { detail }
        } else {
            AwsError::NoCredentials { detail }
        }
    })?;
    if let Some(expiry) = credentials.expiry()
        && expiry <= std::time::SystemTime::now()
    {
        return Err(AwsError::ExpiredCredentials {
            detail: format!(
                "they expired {}s ago",
                expiry.elapsed().map(|d| d.as_secs()).unwrap_or_default()
            ),
        });
    }
    Ok(())
}

/// The partition of a region, for ARNs.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986); this decodes them.
pub fn url_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a policy document as IAM returns it: URL-encoded or plain JSON.
pub fn parse_policy(doc: &str) -> serde_json::Value {
    serde_json::from_str(doc)
        .or_else(|_| serde_json::from_str(&url_decode(doc)))
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_url_encoded_policy_documents() {
        assert_eq!(url_decode("%7B%22a%22%3A%20%22b%22%7D"), "{\"a\": \"b\"}");
        assert_eq!(
            parse_policy("%7B%22a%22%3A1%7D"),
            serde_json::json!({"a": 1})
        );
        assert_eq!(parse_policy("{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(url_decode("100%"), "100%");
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition("us-west-2"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }
}
