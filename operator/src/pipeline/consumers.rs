//! The durable pull consumer behind each JetStream split.
//!
//! One consumer per split, named by `jetflow_crds::split::consumer_name`, acknowledged
//! cumulatively (`AckPolicy::All`) at each checkpoint: the ack wait is longer than the
//! checkpoint interval with margin and max ack pending is high, so that what a worker read since
//! the last checkpoint is neither redelivered nor stalled while it waits for the next one. A new
//! consumer starts after the checkpointed position when there is one, else at the spec's start.
//! Consumers of splits that are gone, and all of a pipeline's consumers when it is deleted, are
//! removed.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::consumer::{AckPolicy, Config, DeliverPolicy, Info};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use futures::TryStreamExt;
use jetflow_crds::PipelineSpec;
use jetflow_crds::pipeline::StartFrom;
use jetflow_crds::split::{Split, consumer_name};

use crate::{Error, Result};

pub use jetflow_nats::consumer::{MAX_ACK_PENDING, ack_wait};

/// The consumer configuration of `split`; `position` is the split's checkpointed position.
pub fn config(
    namespace: &str,
    pipeline: &str,
    spec: &PipelineSpec,
    split: &Split,
    position: Option<u64>,
) -> Config {
    let name = consumer_name(namespace, pipeline, &split.name);
    let deliver_policy = match (position, spec.source.jetstream.as_ref()) {
        (Some(p), _) if p > 0 => DeliverPolicy::ByStartSequence {
            start_sequence: p + 1,
        },
        (_, Some(js)) => match js.start.from {
            StartFrom::All => DeliverPolicy::All,
            StartFrom::New => DeliverPolicy::New,
            StartFrom::Sequence => DeliverPolicy::ByStartSequence {
                start_sequence: js.start.sequence.unwrap_or(1),
            },
            StartFrom::Time => match js.start.time.as_ref().and_then(|t| {
                time::OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
            }) {
                Some(start_time) => DeliverPolicy::ByStartTime { start_time },
                None => DeliverPolicy::All,
            },
        },
        (_, None) => DeliverPolicy::All,
    };
    Config {
        name: Some(name.clone()),
        durable_name: Some(name),
        description: Some(format!(
            "jetflow pipeline {namespace}/{pipeline}, split {}",
            split.name
        )),
        deliver_policy,
        ack_policy: AckPolicy::All,
        ack_wait: ack_wait(spec.checkpoint.interval.get()),
        max_ack_pending: MAX_ACK_PENDING,
        // ">" is the whole stream: no filter.
        filter_subject: if split.subject == ">" {
            String::new()
        } else {
            split.subject.clone()
        },
        ..Default::default()
    }
}

/// Whether a live consumer honours what the operator relies on.
fn conforms(live: &Config, desired: &Config) -> bool {
    live.ack_policy == desired.ack_policy
        && live.ack_wait == desired.ack_wait
        && live.max_ack_pending == desired.max_ack_pending
        && live.filter_subject == desired.filter_subject
}

fn consumer_error(
    stream: &str,
    consumer: &str,
    action: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
    let stream = stream.to_owned();
    let consumer = consumer.to_owned();
    move |source| Error::Consumer {
        stream,
        consumer,
        action,
        source,
    }
}

/// What [`ensure`] did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// Each split's consumer, by split name.
    pub infos: BTreeMap<String, Info>,
    /// Consumers created.
    pub created: Vec<String>,
}

/// Makes sure every desired consumer exists and conforms, creating or updating it.
pub async fn ensure(
    stream: &async_nats::jetstream::stream::Stream,
    stream_name: &str,
    desired: &BTreeMap<String, Config>,
) -> Result<Ensured> {
    let mut out = Ensured::default();
    for (split, want) in desired {
        let name = want.durable_name.clone().unwrap_or_default();
        let info = match stream.consumer_info(&name).await {
            Ok(info) if conforms(&info.config, want) => info,
            Ok(info) => {
                let mut config = info.config.clone();
                config.ack_policy = want.ack_policy;
                config.ack_wait = want.ack_wait;
                config.max_ack_pending = want.max_ack_pending;
                config.filter_subject = want.filter_subject.clone();
                stream
                    .update_consumer(config)
                    .await
                    .map_err(|e| consumer_error(stream_name, &name, "update")(Box::new(e)))?;
                stream
                    .consumer_info(&name)
                    .await
                    .map_err(|e| consumer_error(stream_name, &name, "read")(Box::new(e)))?
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let _: async_nats::jetstream::consumer::Consumer<Config> = stream
                    .create_consumer(want.clone())
                    .await
                    .map_err(|e| consumer_error(stream_name, &name, "create")(Box::new(e)))?;
                out.created.push(name.clone());
                stream
                    .consumer_info(&name)
                    .await
                    .map_err(|e| consumer_error(stream_name, &name, "read")(Box::new(e)))?
            }
            Err(e) => return Err(consumer_error(stream_name, &name, "read")(Box::new(e))),
        };
        out.infos.insert(split.clone(), info);
    }
    Ok(out)
}

/// Whether `consumer` belongs to the pipeline: its name prefix followed by exactly the 16 hex
/// digits of a split hash (so pipeline `a` never claims the consumers of pipeline `a_b`).
pub fn belongs(namespace: &str, pipeline: &str, consumer: &str) -> bool {
    let probe = consumer_name(namespace, pipeline, "");
    let prefix = &probe[..probe.len() - 16];
    consumer
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 16 && rest.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Deletes the pipeline's consumers on `stream` that are not in `keep`; returns their names.
pub async fn remove_others(
    stream: &async_nats::jetstream::stream::Stream,
    stream_name: &str,
    namespace: &str,
    pipeline: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|e| consumer_error(stream_name, "*", "list")(Box::new(e)))?;
    let mut removed = Vec::new();
    for name in names {
        if belongs(namespace, pipeline, &name) && !keep.contains(&name) {
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| consumer_error(stream_name, &name, "delete")(Box::new(e)))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// A split's lag from its consumer: messages not yet delivered plus delivered but not yet
/// acknowledged (acknowledged means checkpointed).
pub fn lag(info: &Info) -> u64 {
    info.num_pending + info.num_ack_pending as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures;

    #[test]
    fn consumers_ack_all_with_a_wait_longer_than_the_interval() {
        let p = fixtures::pipeline();
        let split = Split {
            name: "orders.eu".into(),
            subject: "orders.eu".into(),
        };
        let c = config("shop", "orders-copy", &p.spec, &split, None);
        assert_eq!(c.ack_policy, AckPolicy::All);
        assert!(c.ack_wait > p.spec.checkpoint.interval.get() * 2);
        assert_eq!(c.deliver_policy, DeliverPolicy::All);
        assert_eq!(c.filter_subject, "orders.eu");
        let resumed = config("shop", "orders-copy", &p.spec, &split, Some(41));
        assert_eq!(
            resumed.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
    }

    #[test]
    fn consumer_ownership_is_exact() {
        let mine = consumer_name("ns", "a", "x.y");
        let other = consumer_name("ns", "a_b", "x.y");
        assert!(belongs("ns", "a", &mine));
        assert!(!belongs("ns", "a", &other));
        assert!(belongs("ns", "a_b", &other));
    }
}
