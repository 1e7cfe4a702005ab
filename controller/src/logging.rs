//! Log lines in upstream Karpenter's shape (zap's JSON encoder), so what users already run
//! against Karpenter's logs — `kubectl logs ... | jq 'select(.message=="launched nodeclaim")'`
//! — works unchanged:
//!
//! ```json
//! {"level":"INFO","time":"2026-01-01T00:00:00.000Z","logger":"controller","message":"launched nodeclaim","commit":"abc1234","controller":"nodeclaim.lifecycle","NodeClaim":{"name":"default-x7k2p"},"instance-type":"m5.large"}
//! ```
//!
//! `level` is upper case, `time` RFC 3339 in UTC, then `logger`, `message` and `commit`, then
//! the fields of the enclosing spans (outermost first) and of the event, flattened at the top
//! level. A field whose text is a JSON object (see [`json`], [`object_ref`]) is embedded as an
//! object, as zap does for `NodeClaim`/`Node`/`Pod` references.

use std::fmt;
use std::io::Write;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::settings::LogLevel;

/// The commit the binary was built from (`KARPCTL_COMMIT` at build time, as the Dockerfile
/// passes it), or `unknown`.
pub fn commit() -> &'static str {
    option_env!("KARPCTL_COMMIT")
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown")
}

/// Installs the JSON logger on stdout as the process's global subscriber. Karpctl's own
/// targets log at `level`; dependencies (kube, hyper, the AWS SDK) never below `info`, so
/// `LOG_LEVEL=debug` shows the controller's reasoning rather than every HTTP frame.
pub fn init(level: LogLevel) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    tracing::subscriber::set_global_default(subscriber(level, std::io::stdout))
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture it).
pub fn subscriber<W>(level: LogLevel, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let own = LevelFilter::from_level(level.as_tracing());
    let others = own.min(LevelFilter::INFO);
    let filter = Targets::new()
        .with_default(others)
        .with_target("karpctl", own)
        .with_target("karpctl_controller", own)
        .with_target("karpctl_aws", own)
        .with_target("karpctl_cloud", own)
        .with_target("karpctl_scheduling", own);
    tracing_subscriber::registry()
        .with(ZapJson::new(writer))
        .with(filter)
}

/// A field value embedded as JSON in the log line: `NodeClaim = %logging::json(&reference)`.
pub fn json(value: impl serde::Serialize) -> JsonField {
    JsonField(serde_json::to_value(value).unwrap_or(Value::Null))
}

/// `{"name": name}`, zap's shape for a cluster-scoped object (`NodeClaim`, `Node`,
/// `NodePool`): `NodeClaim = %logging::object_ref(None, &name)`. With a namespace,
/// `{"name": name, "namespace": ns}` (a `Pod`).
pub fn object_ref(namespace: Option<&str>, name: &str) -> JsonField {
    let mut map = Map::new();
    map.insert("name".into(), Value::String(name.to_string()));
    if let Some(ns) = namespace {
        map.insert("namespace".into(), Value::String(ns.to_string()));
    }
    JsonField(Value::Object(map))
}

/// A value that displays as its JSON text; the logger parses it back into an object.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonField(pub Value);

impl fmt::Display for JsonField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The layer writing one zap-shaped JSON object per event.
pub struct ZapJson<W> {
    writer: W,
}

impl<W> ZapJson<W> {
    pub fn new(writer: W) -> Self {
        ZapJson { writer }
    }
}

/// A span's fields, kept in its extensions until an event inside it is written.
struct SpanFields(Map<String, Value>);

impl<S, W> Layer<S> for ZapJson<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(Map::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(SpanFields(map)) = extensions.get_mut::<SpanFields>() {
                let mut fields = Fields(std::mem::take(map));
                values.record(&mut fields);
                *map = fields.0;
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));

        // zap's fixed keys first, in its order (serde_json's map would sort them), then the
        // spans' fields outermost first, then the event's; a later field of the same name wins.
        let mut extra = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    extra.extend(span_fields.clone());
                }
            }
        }
        extra.extend(fields);
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let fixed = [
            ("level", Value::from(level_name(*event.metadata().level()))),
            ("time", Value::from(time)),
            ("logger", Value::from("controller")),
            ("message", message),
            ("commit", Value::from(commit())),
        ];
        let mut text = String::from("{");
        let mut first = true;
        let mut push = |key: &str, value: &Value| {
            if !first {
                text.push(',');
            }
            first = false;
            text.push_str(&Value::from(key).to_string());
            text.push(':');
            text.push_str(&value.to_string());
        };
        for (key, value) in &fixed {
            push(key, value);
        }
        for (key, value) in &extra {
            if !fixed.iter().any(|(k, _)| k == key) {
                push(key, value);
            }
        }
        text.push_str("}\n");
        // A log line that cannot be written has nowhere better to go.
        let _ = self.writer.make_writer().write_all(text.as_bytes());
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Collects fields as JSON values: numbers and booleans stay typed, text that is a JSON
/// object is embedded as one, everything else is its text.
struct Fields(Map<String, Value>);

impl Fields {
    fn text(&mut self, field: &Field, text: String) {
        let value = if text.starts_with('{') && text.ends_with('}') {
            match serde_json::from_str::<Value>(&text) {
                Ok(object @ Value::Object(_)) => object,
                _ => Value::String(text),
            }
        } else {
            Value::String(text)
        };
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain, as `{:#}` prints an anyhow error.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().to_string(), Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    fn capture_text(level: LogLevel, log: impl FnOnce()) -> String {
        let out = Captured::default();
        tracing::subscriber::with_default(subscriber(level, out.clone()), log);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    fn capture(level: LogLevel, log: impl FnOnce()) -> Vec<Map<String, Value>> {
        capture_text(level, log)
            .lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(map)) => map,
                other => panic!("not a JSON object: {l} ({other:?})"),
            })
            .collect()
    }

    #[test]
    fn lines_have_zaps_shape_and_key_order() {
        let lines = capture(LogLevel::Info, || {
            let span = tracing::info_span!("reconcile", controller = "nodeclaim.lifecycle");
            let _entered = span.enter();
            tracing::info!(
                NodeClaim = %object_ref(None, "default-x7k2p"),
                provider_id = "aws:///us-west-2a/i-0123",
                allocatable = %json(serde_json::json!({"cpu": "1930m", "pods": "29"})),
                pods = 3u64,
                "launched nodeclaim"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["logger"], "controller");
        assert_eq!(line["message"], "launched nodeclaim");
        assert_eq!(line["commit"], commit());
        assert_eq!(line["controller"], "nodeclaim.lifecycle");
        assert_eq!(
            line["NodeClaim"],
            serde_json::json!({"name": "default-x7k2p"})
        );
        assert_eq!(line["allocatable"]["cpu"], "1930m");
        assert_eq!(line["pods"], 3);
        assert_eq!(line["provider_id"], "aws:///us-west-2a/i-0123");
        let time = line["time"].as_str().unwrap();
        assert!(time.ends_with('Z'), "{time}");
        chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339 time");
    }

    #[test]
    fn log_level_filters_own_and_dependency_events() {
        let lines = capture(LogLevel::Warn, || {
            tracing::info!("hidden");
            tracing::warn!("shown");
            tracing::error!(error = "boom", "failed");
        });
        let messages: Vec<&Value> = lines.iter().map(|l| &l["message"]).collect();
        assert_eq!(messages, ["shown", "failed"]);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[1]["level"], "ERROR");

        let lines = capture(LogLevel::Debug, || {
            tracing::debug!("own debug");
            tracing::debug!(target: "hyper::proto", "frame");
            tracing::info!(target: "kube_runtime", "watching");
        });
        let messages: Vec<&Value> = lines.iter().map(|l| &l["message"]).collect();
        assert_eq!(messages, ["own debug", "watching"]);
        assert_eq!(lines[0]["level"], "DEBUG");
    }

    #[test]
    fn fixed_keys_come_first_in_zaps_order() {
        let text = capture_text(LogLevel::Info, || {
            tracing::info!(aaa = 1, level = "shadow", "hello");
        });
        let want_prefix = r#"{"level":"INFO","time":""#;
        assert!(text.starts_with(want_prefix), "{text}");
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
        let order = ["level", "time", "logger", "message", "commit", "aaa"].map(at);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(text.matches("\"level\":").count(), 1, "{text}");
    }

    #[test]
    fn text_that_only_looks_like_json_stays_text() {
        let lines = capture(LogLevel::Info, || {
            tracing::info!(reason = "{not json}", "odd");
        });
        assert_eq!(lines[0]["reason"], "{not json}");
    }

    #[test]
    fn error_fields_carry_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("launching")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("no capacity"));
        let lines = capture(LogLevel::Info, || {
            tracing::error!(error = &err as &(dyn std::error::Error + 'static), "failed");
        });
        assert_eq!(lines[0]["error"], "launching: no capacity");
    }
}
