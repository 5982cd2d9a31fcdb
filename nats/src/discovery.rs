//! Subject discovery for `splitBy: Subject`: the splits are the distinct subjects a stream
//! holds under the source's filters. One definition for the operator (which lists the splits in
//! a Pipeline's status and makes their consumers) and the worker (which starts and retires
//! splits as subjects come and go), so both see the same split set.
//!
//! The subjects come from the stream info with a subjects filter (one request per filter, paged
//! by the client); a subject that holds no message any more (removed, purged, aged out) is not
//! a split.

use std::collections::BTreeSet;

use async_nats::jetstream::stream::{InfoError, Stream};
use futures::TryStreamExt;
use jetflow_crds::split::Split;

/// Why the subjects of a stream could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list the subjects of stream {stream} under {filter}: {source}")]
pub struct ListSubjectsError {
    /// The stream.
    pub stream: String,
    /// The subject filter.
    pub filter: String,
    /// The client's error.
    pub source: InfoError,
}

/// One split per subject holding messages in `stream` under `filters` (the whole stream when
/// there are none), in name order.
pub async fn subjects(
    stream: &Stream,
    filters: &[String],
) -> Result<Vec<Split>, ListSubjectsError> {
    let whole = [">".to_owned()];
    let filters = if filters.is_empty() { &whole } else { filters };
    let name = &stream.cached_info().config.name;
    let mut found = BTreeSet::new();
    for filter in filters {
        let list_error = |source| ListSubjectsError {
            stream: name.clone(),
            filter: filter.clone(),
            source,
        };
        let mut listing = stream
            .info_with_subjects(filter)
            .await
            .map_err(list_error)?;
        while let Some((subject, count)) = listing.try_next().await.map_err(list_error)? {
            if count > 0 {
                found.insert(subject);
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|subject| Split {
            name: subject.clone(),
            subject,
        })
        .collect())
}
