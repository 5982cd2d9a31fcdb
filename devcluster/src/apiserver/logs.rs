//! Pod logs: served from the files the kubelet writes,
//! `<kubelet root>/pods/<namespace>_<pod>/logs/<container>.log`; `follow=true` streams what is
//! appended until the pod is gone, the client leaves or the server shuts down.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::state::Shared;
use super::status::ApiError;
use super::store::Key;

/// `GET .../pods/{name}/log`.
pub async fn logs(
    state: &Shared,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pod = state
        .store
        .get(&Key::new("", "pods", ns, name))
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let Some(root) = &state.kubelet_root else {
        return Ok(Response::new(Body::empty()));
    };
    let file = root
        .join("pods")
        .join(format!("{ns}_{name}"))
        .join("logs")
        .join(format!("{container}.log"));
    let content = tokio::fs::read(&file).await.unwrap_or_default();
    let mut text = content.clone();
    if let Some(n) = query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let s = String::from_utf8_lossy(&content).to_string();
        let lines: Vec<&str> = s.lines().collect();
        let start = lines.len().saturating_sub(n);
        let mut tail = lines[start..].join("\n");
        if !tail.is_empty() {
            tail.push('\n');
        }
        text = tail.into_bytes();
    }
    let follow = query.get("follow").is_some_and(|f| f == "true");
    let mut response = if follow {
        let state = state.clone();
        let key = Key::new("", "pods", ns, name);
        let offset = content.len() as u64;
        let stream = async_stream::stream! {
            yield Ok::<Bytes, std::convert::Infallible>(Bytes::from(text));
            let mut offset = offset;
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if let Ok(mut f) = tokio::fs::File::open(&file).await
                    && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                        let mut buf = Vec::new();
                        if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                            offset += buf.len() as u64;
                            yield Ok(Bytes::from(buf));
                        }
                    }
                if state.store.get(&key).is_none() {
                    break;
                }
            }
        };
        Response::new(Body::from_stream(stream))
    } else {
        Response::new(Body::from(text))
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}
