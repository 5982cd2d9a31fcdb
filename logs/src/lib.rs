//! jetflow's logs, the one setup of the operator and the worker: human text on a terminal, one
//! JSON object per line in a pod.
//!
//! Colour codes are written only when the log's stream is a terminal, so a log file or a pod's
//! log never holds escape sequences. A JSON line is flat: the process's fields (the worker's
//! `namespace`, `pipeline` and `worker`, set once the manifest is loaded,
//! [`set_process_fields`]), the fields of every span the event happened in (`split` in a
//! worker's split tasks, the object in an operator's reconcile) and the event's own fields sit
//! at the top level beside `timestamp`, `level`, `target` and `message`, so that a log query
//! selects on them without knowing the span structure. An inner span's field wins over an
//! outer one's, and the event's own fields win over both.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human text (coloured only on a terminal).
    Text,
    /// One flat JSON object per line.
    Json,
}

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output (the operator).
    Stdout,
    /// Standard error (the worker, whose standard output a command may use).
    Stderr,
}

/// Installs the global subscriber writing to `output`; the filter comes from `RUST_LOG`
/// (default `info`).
pub fn init(format: LogFormat, output: Output) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match output {
        Output::Stdout => install(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stdout)
                .with_ansi(std::io::stdout().is_terminal()),
            format,
        ),
        Output::Stderr => install(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
            format,
        ),
    }
}

fn install<W>(
    builder: tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        tracing_subscriber::EnvFilter,
        W,
    >,
    format: LogFormat,
) where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Fields on every JSON line of this process.
static PROCESS_FIELDS: OnceLock<Map<String, Value>> = OnceLock::new();

/// Sets the fields every later JSON line carries: a worker process runs one pipeline as one
/// worker, so these hold for all its tasks, spawned or not. Only the first call counts.
pub fn set_process_fields(namespace: &str, pipeline: &str, worker: &str) {
    let fields = [
        ("namespace", namespace),
        ("pipeline", pipeline),
        ("worker", worker),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
    .collect();
    let _ = PROCESS_FIELDS.set(fields);
}

/// Formats an event as one flat JSON object (see the module doc).
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(jiff::Timestamp::now().to_string()),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(fields) = PROCESS_FIELDS.get() {
            line.extend(fields.clone());
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // With `JsonFields` a span's recorded fields are kept as a JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn a_json_line_carries_the_fields_of_its_spans_and_its_own() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", pipeline = "orders", worker = "w-1");
            let _run = run.enter();
            let split = tracing::info_span!("split", split = "orders.eu");
            let _split = split.enter();
            tracing::warn!(seq = 7u64, "message failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["pipeline"], "orders", "{text}");
        assert_eq!(line["worker"], "w-1", "{text}");
        assert_eq!(line["split"], "orders.eu", "{text}");
        assert_eq!(line["seq"], 7, "{text}");
        assert_eq!(line["message"], "message failed", "{text}");
        assert_eq!(line["level"], "WARN", "{text}");
    }
}
