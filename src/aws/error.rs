//! SDK errors sorted into the few kinds a person can act on, at the SDK edge, so nothing
//! inward sees an `SdkError`: missing or expired credentials, a denied action (named, so the
//! fix is one policy statement away), a missing cluster, and everything else with the
//! service's own code and message.

use std::error::Error as StdError;
use std::fmt::Debug;

use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "no AWS credentials found ({detail}); set AWS_PROFILE or pass --profile, run `aws configure` or `aws sso login`, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials { detail: String },
    #[error(
        "the AWS credentials have expired or are no longer valid ({detail}); refresh them (`aws sso login`, or new keys) and run again"
    )]
    ExpiredCredentials { detail: String },
    #[error(
        "no AWS region: pass --region, set AWS_REGION, or set `region` for the profile in ~/.aws/config"
    )]
    NoRegion,
    #[error(
        "access denied for {action}: {message}; the caller needs `{action}` (or run karpctl as a principal that has it)"
    )]
    AccessDenied { action: String, message: String },
    #[error(
        "cluster {name} not found in region {region}; `aws eks list-clusters --region {region}` lists the clusters there (or pass --region)"
    )]
    ClusterNotFound { name: String, region: String },
    #[error("{action} failed: {code}: {message}")]
    Service {
        action: String,
        code: String,
        message: String,
    },
    #[error("{action} failed: {detail}")]
    Other { action: String, detail: String },
}

pub type Result<T, E = AwsError> = std::result::Result<T, E>;

const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "AuthorizationError",
];
const EXPIRED: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthFailure",
];

impl AwsError {
    /// The service's error code, for callers that treat one code as an answer (a read's
    /// `NoSuchEntity` is "absent", not a failure).
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is(&self, codes: &[&str]) -> bool {
        self.code().is_some_and(|c| codes.contains(&c))
    }

    pub fn message(&self) -> &str {
        match self {
            AwsError::Service { message, .. } | AwsError::AccessDenied { message, .. } => message,
            _ => "",
        }
    }

    /// Sorts one failed call of `action` (`iam:CreateRole`).
    pub fn from_sdk<E, R>(action: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: Debug + Send + Sync + 'static,
    {
        if let SdkError::ServiceError(service) = &err {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            let message = e.message().unwrap_or("").to_string();
            return Self::from_code(action, code, message);
        }
        let detail = chain(&err);
        let lower = detail.to_ascii_lowercase();
        if lower.contains("credentials")
            && (lower.contains("no providers")
                || lower.contains("not loaded")
                || lower.contains("failed to load"))
        {
            return AwsError::NoCredentials { detail };
        }
        if lower.contains("expired") {
            return AwsError::ExpiredCredentials { detail };
        }
        AwsError::Other {
            action: action.to_string(),
            detail,
        }
    }

    fn from_code(action: &str, code: String, message: String) -> Self {
        if DENIED.contains(&code.as_str()) {
            AwsError::AccessDenied {
                action: action.to_string(),
                message,
            }
        } else if EXPIRED.contains(&code.as_str()) {
            AwsError::ExpiredCredentials {
                detail: format!("{code}: {message}"),
            }
        } else {
            AwsError::Service {
                action: action.to_string(),
                code,
                message,
            }
        }
    }
}

/// An error and its causes as one line of Display messages ("dispatch failure: io error:
/// connection refused"), without the Debug dump the SDK's `DisplayErrorContext` adds.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut detail = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        source = cause.source();
    }
    detail
}

/// Turns `Err(NotFound)` into `Ok(None)` for reads where absence is an answer.
pub fn absent_if<T>(result: Result<T>, codes: &[&str]) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(codes) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_codes_name_the_action() {
        let e = AwsError::from_code(
            "iam:CreateRole",
            "AccessDenied".into(),
            "not allowed".into(),
        );
        assert_eq!(
            e.to_string(),
            "access denied for iam:CreateRole: not allowed; the caller needs `iam:CreateRole` (or run karpctl as a principal that has it)"
        );
        let e = AwsError::from_code("ec2:CreateTags", "UnauthorizedOperation".into(), "".into());
        assert!(matches!(e, AwsError::AccessDenied { .. }));
    }

    #[test]
    fn expired_tokens_say_to_refresh() {
        let e = AwsError::from_code(
            "sts:GetCallerIdentity",
            "ExpiredToken".into(),
            "The security token included in the request is expired".into(),
        );
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(e.to_string().contains("aws sso login"), "{e}");
    }

    #[test]
    fn other_codes_keep_code_and_message() {
        let e = AwsError::from_code("iam:GetRole", "NoSuchEntity".into(), "no role".into());
        assert!(e.is(&["NoSuchEntity"]));
        assert_eq!(e.to_string(), "iam:GetRole failed: NoSuchEntity: no role");
        assert_eq!(absent_if::<()>(Err(e), &["NoSuchEntity"]).unwrap(), None);
    }
}
