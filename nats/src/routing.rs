//! The routing check of a pipeline ([`jetflow_crds::routing`]) against the streams as NATS
//! has them: their subjects, and whether they store messages under other subjects than
//! published (a subject transform, a mirror, sources).

use async_nats::jetstream::{self, stream};
use jetflow_crds::Pipeline;
use jetflow_crds::routing::{StreamSubjects, Streams};
use jetflow_crds::validate::FieldError;

/// What the routing check needs of a JetStream stream's configuration.
pub fn stream_subjects(config: &stream::Config) -> StreamSubjects {
    StreamSubjects {
        name: config.name.clone(),
        subjects: config.subjects.clone(),
        stores_as_captured: config.subject_transform.is_none()
            && config.mirror.is_none()
            && config.sources.as_ref().is_none_or(Vec::is_empty),
    }
}

/// Looks up the pipeline's source and sink streams and checks its routing against them. A
/// stream that cannot be looked up now (missing, or NATS not answering) is left out: the
/// readers and the sink wait for it and report it.
pub async fn check(js: &jetstream::Context, p: &Pipeline) -> Vec<FieldError> {
    let lookup = |name: Option<String>| async move {
        let name = name?;
        let stream = js.get_stream(&name).await.ok()?;
        Some(stream_subjects(&stream.cached_info().config))
    };
    let source = lookup(p.spec.source.jetstream.as_ref().map(|s| s.stream.clone())).await;
    let sink = lookup(p.spec.sink.jetstream.as_ref().map(|s| s.stream.clone())).await;
    jetflow_crds::routing::check_streams(
        p,
        Streams {
            source: source.as_ref(),
            sink: sink.as_ref(),
        },
    )
}
