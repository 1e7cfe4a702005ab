//! The interruption queue on AWS: EventBridge events (spot interruption warnings, rebalance
//! recommendations, instance state changes, AWS Health scheduled changes, capacity
//! reservation interruptions) that the rules `karpctl init` creates deliver to an SQS queue.
//! [`parse`] reads one message body into the core's [`InterruptionMessage`]; [`SqsQueue`]
//! long-polls the queue.

use std::time::{Duration, SystemTime};

use aws_sdk_sqs::primitives::{DateTime, DateTimeFormat};
use karpctl_cloud::{InterruptionKind, InterruptionMessage, InterruptionQueue, Received};
use serde_json::Value;

/// How long after its notice EC2 reclaims a spot instance (or a capacity reservation's).
pub const SPOT_NOTICE: Duration = Duration::from_secs(120);

fn time(text: &str) -> Option<SystemTime> {
    DateTime::from_str(text, DateTimeFormat::DateTime)
        .or_else(|_| DateTime::from_str(text, DateTimeFormat::HttpDate))
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// One EventBridge event as delivered to SQS, read into what the controller acts on. Events
/// of a kind nothing is done about read as [`InterruptionKind::NoOp`]; a body that is not an
/// EventBridge event, or lacks the fields its kind needs, is an error naming what is wrong.
pub fn parse(body: &str) -> Result<InterruptionMessage, String> {
    let event: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let source = str_at(&event, "source").ok_or("not an EventBridge event: no \"source\"")?;
    let detail_type =
        str_at(&event, "detail-type").ok_or("not an EventBridge event: no \"detail-type\"")?;
    let detail = event
        .get("detail")
        .ok_or("not an EventBridge event: no \"detail\"")?;
    let id = str_at(&event, "id").unwrap_or_default().to_owned();
    let at = str_at(&event, "time").and_then(time);
    let instance = || -> Result<Vec<String>, String> {
        str_at(detail, "instance-id")
            .map(|i| vec![i.to_owned()])
            .ok_or_else(|| format!("{detail_type} event without detail.instance-id"))
    };
    let (kind, instance_ids, effective_at) = match (source, detail_type) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => (
            InterruptionKind::SpotInterruption,
            instance()?,
            at.map(|t| t + SPOT_NOTICE),
        ),
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            (InterruptionKind::RebalanceRecommendation, instance()?, None)
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = str_at(detail, "state")
                .ok_or("EC2 Instance State-change Notification without detail.state")?;
            (
                InterruptionKind::StateChange(state.to_owned()),
                instance()?,
                None,
            )
        }
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning") => (
            InterruptionKind::CapacityReservationInterruption,
            instance()?,
            at.map(|t| t + SPOT_NOTICE),
        ),
        ("aws.health", "AWS Health Event") => {
            let ec2 = str_at(detail, "service") == Some("EC2");
            let scheduled = str_at(detail, "eventTypeCategory") == Some("scheduledChange");
            if !(ec2 && scheduled) {
                (InterruptionKind::NoOp, Vec::new(), None)
            } else {
                let ids: Vec<String> = detail
                    .get("affectedEntities")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| str_at(e, "entityValue"))
                    .filter(|v| v.starts_with("i-"))
                    .map(str::to_owned)
                    .collect();
                if ids.is_empty() {
                    return Err("AWS Health scheduled change without affected instances".into());
                }
                (
                    InterruptionKind::ScheduledChange,
                    ids,
                    str_at(detail, "startTime").and_then(time),
                )
            }
        }
        _ => (InterruptionKind::NoOp, Vec::new(), None),
    };
    Ok(InterruptionMessage {
        id,
        kind,
        instance_ids,
        time: at,
        effective_at,
    })
}

/// The queue by its name (as `INTERRUPTION_QUEUE` gives it), its URL, or its ARN (a common
/// mistake upstream users make; the name is its last part).
pub fn queue_name(setting: &str) -> &str {
    if setting.starts_with("arn:")
        || setting.starts_with("https://")
        || setting.starts_with("http://")
    {
        setting.rsplit(['/', ':']).next().unwrap_or(setting)
    } else {
        setting
    }
}

/// The interruption queue on SQS, its URL looked up on first use.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    url: tokio::sync::OnceCell<String>,
}

impl SqsQueue {
    pub fn new(config: &aws_config::SdkConfig, setting: &str) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            name: queue_name(setting).to_owned(),
            url: tokio::sync::OnceCell::new(),
        }
    }

    async fn url(&self) -> Result<String, String> {
        self.url
            .get_or_try_init(|| async {
                self.client
                    .get_queue_url()
                    .queue_name(&self.name)
                    .send()
                    .await
                    .map_err(|e| {
                        let e = aws_sdk_sqs::error::DisplayErrorContext(e);
                        format!("looking up interruption queue {}: {e}", self.name)
                    })?
                    .queue_url
                    .ok_or_else(|| format!("interruption queue {} has no URL", self.name))
            })
            .await
            .cloned()
    }
}

impl InterruptionQueue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(&self) -> Result<Vec<Received>, String> {
        let url = self.url().await?;
        let out = self
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .visibility_timeout(20)
            .send()
            .await
            .map_err(|e| {
                let e = aws_sdk_sqs::error::DisplayErrorContext(e);
                format!("receiving from interruption queue {}: {e}", self.name)
            })?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receipt = m.receipt_handle?;
                let message = m
                    .body
                    .as_deref()
                    .ok_or_else(|| "message without a body".to_owned())
                    .and_then(parse);
                Some(Received { receipt, message })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), String> {
        let url = self.url().await?;
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let e = aws_sdk_sqs::error::DisplayErrorContext(e);
                format!(
                    "deleting a message from interruption queue {}: {e}",
                    self.name
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(source: &str, detail_type: &str, detail: Value) -> String {
        json!({
            "version": "0", "id": "7a7f9c1e-0000-0000-0000-000000000000",
            "detail-type": detail_type, "source": source, "account": "123456789012",
            "time": "2026-12-07T12:00:00Z", "region": "us-west-2",
            "resources": ["arn:aws:ec2:us-west-2:123456789012:instance/i-0abc"],
            "detail": detail
        })
        .to_string()
    }

    fn at(s: &str) -> SystemTime {
        time(s).unwrap()
    }

    #[test]
    fn the_five_kinds_upstream_handles_are_read() {
        let spot = parse(&event(
            "aws.ec2",
            "EC2 Spot Instance Interruption Warning",
            json!({"instance-id": "i-0abc", "instance-action": "terminate"}),
        ))
        .unwrap();
        assert_eq!(spot.kind, InterruptionKind::SpotInterruption);
        assert_eq!(spot.instance_ids, vec!["i-0abc"]);
        assert_eq!(spot.time, Some(at("2026-12-07T12:00:00Z")));
        assert_eq!(
            spot.effective_at,
            Some(at("2026-12-07T12:02:00Z")),
            "two minutes after the notice"
        );
        assert_eq!(spot.kind.metric_label(), "spot_interrupted");

        let rebalance = parse(&event(
            "aws.ec2",
            "EC2 Instance Rebalance Recommendation",
            json!({"instance-id": "i-0abc"}),
        ))
        .unwrap();
        assert_eq!(
            rebalance.kind.action(),
            karpctl_cloud::InterruptionAction::Notify
        );

        let stopping = parse(&event(
            "aws.ec2",
            "EC2 Instance State-change Notification",
            json!({"instance-id": "i-0abc", "state": "stopping"}),
        ))
        .unwrap();
        assert_eq!(
            stopping.kind,
            InterruptionKind::StateChange("stopping".into())
        );
        assert_eq!(
            stopping.kind.action(),
            karpctl_cloud::InterruptionAction::CordonAndDrain
        );
        let running = parse(&event(
            "aws.ec2",
            "EC2 Instance State-change Notification",
            json!({"instance-id": "i-0abc", "state": "running"}),
        ))
        .unwrap();
        assert_eq!(
            running.kind.action(),
            karpctl_cloud::InterruptionAction::None
        );

        let health = parse(&event(
            "aws.health",
            "AWS Health Event",
            json!({"service": "EC2", "eventTypeCategory": "scheduledChange",
                   "eventTypeCode": "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
                   "startTime": "Mon, 14 Dec 2026 10:00:00 GMT",
                   "affectedEntities": [{"entityValue": "i-0abc"}, {"entityValue": "i-0def"}]}),
        ))
        .unwrap();
        assert_eq!(health.kind, InterruptionKind::ScheduledChange);
        assert_eq!(health.instance_ids, vec!["i-0abc", "i-0def"]);
        assert_eq!(health.effective_at, Some(at("2026-12-14T10:00:00Z")));

        let reservation = parse(&event(
            "aws.ec2",
            "EC2 Capacity Reservation Instance Interruption Warning",
            json!({"instance-id": "i-0abc"}),
        ))
        .unwrap();
        assert_eq!(
            reservation.kind.action(),
            karpctl_cloud::InterruptionAction::CordonAndDrain
        );
    }

    #[test]
    fn other_events_are_no_ops_and_broken_ones_say_what_is_wrong() {
        let other = parse(&event(
            "aws.health",
            "AWS Health Event",
            json!({"service": "RDS", "eventTypeCategory": "scheduledChange"}),
        ))
        .unwrap();
        assert_eq!(other.kind, InterruptionKind::NoOp);
        let unknown = parse(&event("aws.s3", "Object Created", json!({}))).unwrap();
        assert_eq!(unknown.kind, InterruptionKind::NoOp);
        assert!(parse("{not json").unwrap_err().starts_with("not JSON"));
        assert!(parse("{}").unwrap_err().contains("no \"source\""));
        let no_id = parse(&event(
            "aws.ec2",
            "EC2 Spot Instance Interruption Warning",
            json!({}),
        ))
        .unwrap_err();
        assert!(no_id.contains("detail.instance-id"), "{no_id}");
    }

    #[test]
    fn a_queue_given_as_an_arn_or_url_is_found_by_its_name() {
        assert_eq!(queue_name("Karpenter-sandbox"), "Karpenter-sandbox");
        assert_eq!(
            queue_name("arn:aws:sqs:us-west-2:123456789012:Karpenter-sandbox"),
            "Karpenter-sandbox"
        );
        assert_eq!(
            queue_name("https://sqs.us-west-2.amazonaws.com/123456789012/Karpenter-sandbox"),
            "Karpenter-sandbox"
        );
    }
}
