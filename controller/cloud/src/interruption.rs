//! Interruption messages as the core sees them: what happened to which instances, and when,
//! read from a queue of cloud events (on AWS: EventBridge events in SQS). The queue and the
//! event format belong to the provider crate; the controller only reads [`Received`] and
//! decides what to do ([`InterruptionKind::action`]).

use std::future::Future;
use std::time::SystemTime;

/// What a message says happened, with upstream Karpenter's `message_type` metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterruptionKind {
    /// A spot instance will be reclaimed in two minutes.
    SpotInterruption,
    /// A spot instance is at elevated risk of interruption (advice only).
    RebalanceRecommendation,
    /// A scheduled change (retirement, maintenance) for the instance.
    ScheduledChange,
    /// The instance changed state (`pending`, `running`, `stopping`, `stopped`,
    /// `shutting-down`, `terminated`).
    StateChange(String),
    /// A capacity reservation the instance runs in is being reclaimed.
    CapacityReservationInterruption,
    /// An event nothing is done about.
    NoOp,
}

/// What the controller does about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptionAction {
    /// Replace the node: delete its NodeClaim (drained before the instance goes).
    CordonAndDrain,
    /// Tell people (an event), change nothing.
    Notify,
    None,
}

impl InterruptionKind {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::SpotInterruption => "spot_interrupted",
            Self::RebalanceRecommendation => "rebalance_recommendation",
            Self::ScheduledChange => "scheduled_change",
            Self::StateChange(s) => match s.as_str() {
                "stopping" => "instance_stopping",
                "stopped" => "instance_stopped",
                "shutting-down" => "instance_shutting_down",
                "terminated" => "instance_terminated",
                _ => "no_op",
            },
            Self::CapacityReservationInterruption => "capacity_reservation_interrupted",
            Self::NoOp => "no_op",
        }
    }

    pub fn action(&self) -> InterruptionAction {
        match self {
            Self::SpotInterruption
            | Self::ScheduledChange
            | Self::CapacityReservationInterruption => InterruptionAction::CordonAndDrain,
            Self::StateChange(s) => match s.as_str() {
                "stopping" | "stopped" | "shutting-down" | "terminated" => {
                    InterruptionAction::CordonAndDrain
                }
                _ => InterruptionAction::None,
            },
            Self::RebalanceRecommendation => InterruptionAction::Notify,
            Self::NoOp => InterruptionAction::None,
        }
    }
}

/// One parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterruptionMessage {
    /// The event's own id.
    pub id: String,
    pub kind: InterruptionKind,
    /// EC2 instance ids (`i-...`) the event is about.
    pub instance_ids: Vec<String>,
    /// When the event happened (the notice time).
    pub time: Option<SystemTime>,
    /// When the announced change takes effect, if the event says: a spot interruption two
    /// minutes after its notice, a scheduled change at its start time.
    pub effective_at: Option<SystemTime>,
}

/// One message taken off the queue: its handle for deletion and what it says (or why it
/// could not be read).
#[derive(Clone, Debug)]
pub struct Received {
    pub receipt: String,
    pub message: Result<InterruptionMessage, String>,
}

/// The queue interruption events arrive on.
pub trait InterruptionQueue: Send + Sync + 'static {
    /// The queue's name, for logs.
    fn name(&self) -> &str;
    /// Wait (long poll, up to 20 s) for up to 10 messages.
    fn receive(&self) -> impl Future<Output = Result<Vec<Received>, String>> + Send;
    /// Remove a handled (or unusable) message.
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), String>> + Send;
}
