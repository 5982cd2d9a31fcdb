//! `jetflow-devcluster`: starts the local API server and the local kubelet.
//!
//! `jetflow-devcluster up --dir DIR [--listen ADDR] [--crds PATH]... [--bin-dir DIR]...` serves
//! the API, writes `DIR/kubeconfig` and `DIR/url`, runs the kubelet under `DIR/kubelet`, and
//! on SIGTERM or SIGINT stops the kubelet (and so every pod), then the server, and exits 0.
//!
//! Each `--bin-dir` is made absolute against the folder `up` starts in, before anything
//! starts: the kubelet runs every pod in a folder of its own, where a relative folder would
//! name nothing. A `--bin-dir` that is not a folder is refused with its name. The log is text,
//! coloured only when standard error is a terminal (as the operator's and the worker's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jetflow_devcluster::apiserver::{Config, Server};
use jetflow_devcluster::kubelet::{self, KubeletConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "jetflow-devcluster",
    about = "jetflow's local control plane: an in-memory Kubernetes API and a local kubelet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the API and runs the kubelet until SIGTERM or SIGINT.
    Up {
        /// Folder for the kubeconfig, the URL and the kubelet's files (created).
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// CRD YAML files or folders of them.
        #[arg(long)]
        crds: Vec<PathBuf>,
        /// Folders where the kubelet looks for container commands.
        #[arg(long = "bin-dir")]
        bin_dirs: Vec<PathBuf>,
    },
}

/// Every CRD in the YAML documents of `path` (a file, or the .yaml/.yml/.json files of a folder).
fn read_crds(path: &Path) -> Result<Vec<Value>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let p = entry?.path();
            if p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            if value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
                crds.push(value);
            }
        }
    }
    Ok(crds)
}

/// What is wrong with a `--bin-dir`.
#[derive(Debug, thiserror::Error)]
enum BinDirError {
    /// The folder cannot be resolved (it does not exist, or a component cannot be read).
    #[error("--bin-dir {given}: {source} (looked for it from {cwd})")]
    Resolve {
        given: PathBuf,
        cwd: String,
        source: std::io::Error,
    },
    /// The path names something that is not a folder.
    #[error("--bin-dir {given}: {resolved} is not a folder")]
    NotAFolder { given: PathBuf, resolved: PathBuf },
}

/// Each of `bin_dirs` as an absolute folder (see the module doc).
fn resolve_bin_dirs(bin_dirs: &[PathBuf]) -> Result<Vec<PathBuf>, BinDirError> {
    bin_dirs
        .iter()
        .map(|given| {
            let resolved = given
                .canonicalize()
                .map_err(|source| BinDirError::Resolve {
                    given: given.clone(),
                    cwd: std::env::current_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|e| format!("an unknown folder: {e}")),
                    source,
                })?;
            if !resolved.is_dir() {
                return Err(BinDirError::NotAFolder {
                    given: given.clone(),
                    resolved,
                });
            }
            Ok(resolved)
        })
        .collect()
}

async fn up(
    dir: PathBuf,
    listen: SocketAddr,
    crd_paths: Vec<PathBuf>,
    bin_dirs: Vec<PathBuf>,
) -> Result<()> {
    let bin_dirs = resolve_bin_dirs(&bin_dirs)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mut crds = Vec::new();
    for p in &crd_paths {
        crds.extend(read_crds(p)?);
    }
    let kubelet_root = dir.join("kubelet");
    std::fs::create_dir_all(&kubelet_root)?;
    let handle = Server::start(Config {
        listen,
        crds,
        kubelet_root: Some(kubelet_root.clone()),
        ..Config::default()
    })
    .await?;
    let kubeconfig = dir.join("kubeconfig");
    handle.write_kubeconfig(&kubeconfig)?;
    std::fs::write(dir.join("url"), format!("{}\n", handle.url))?;
    println!(
        "jetflow-devcluster: API at {}, kubeconfig {}",
        handle.url,
        kubeconfig.display()
    );

    let stop = CancellationToken::new();
    let client = handle.admin_client()?;
    let config = KubeletConfig {
        root: kubelet_root,
        bin_dirs,
        server_url: handle.url.clone(),
    };
    let mut kubelet = tokio::spawn(kubelet::run(client, config, stop.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let kubelet_result = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        r = &mut kubelet => Some(r),
    };
    stop.cancel();
    let result = match kubelet_result {
        Some(r) => r,
        None => kubelet.await,
    };
    handle.shutdown().await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("the kubelet failed"),
        Err(e) => Err(e).context("the kubelet panicked"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    jetflow_logs::init(jetflow_logs::LogFormat::Text, jetflow_logs::Output::Stderr);
    match Cli::parse().command {
        Command::Up {
            dir,
            listen,
            crds,
            bin_dirs,
        } => up(dir, listen, crds, bin_dirs).await,
    }
}
