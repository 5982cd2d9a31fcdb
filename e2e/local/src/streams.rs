//! Creating the JetStream streams that an example's `Stream` manifests declare, as the
//! operator would: the same configuration (`jetflow_nats::stream_config`), the same connection
//! (the Stream's `connection`, with Secrets read from a local folder), created or updated in
//! place.

use std::path::Path;

use jetflow_crds::Stream;
use jetflow_crds::manifest;
use jetflow_nats::Secrets;

use crate::{Error, Result};

/// The Streams of a manifest file, validated.
pub fn load(path: &Path) -> Result<Vec<Stream>> {
    manifest::load_streams(path).map_err(|source| Error::Manifest {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}

/// Creates (or updates) every Stream of the manifest at `path` on the server at `url`, and
/// returns the JetStream stream names in manifest order. Each Stream connects with its own
/// `connection`, its Secrets read from `secrets` (`<dir>/<secret name>/<key>`).
pub async fn apply_manifest(path: &Path, url: &str, secrets: &Secrets) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for stream in load(path)? {
        names.push(apply(&stream, url, secrets).await?);
    }
    Ok(names)
}

/// Creates (or updates) one Stream and returns its JetStream name.
pub async fn apply(stream: &Stream, url: &str, secrets: &Secrets) -> Result<String> {
    let name = stream.stream_name();
    let client = jetflow_nats::connect(
        stream.spec.connection.as_ref(),
        url,
        secrets,
        "jetflow-demo-tools",
    )
    .await?;
    let js = async_nats::jetstream::new(client);
    js.create_or_update_stream(jetflow_nats::stream_config(&name, &stream.spec))
        .await
        .map_err(|source| Error::ApplyStream {
            stream: name.clone(),
            source,
        })?;
    Ok(name)
}
