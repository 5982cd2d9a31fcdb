//! `jetflow-devcluster`: starts the local API server and the local kubelet.
//!
//! `jetflow-devcluster up --dir DIR [--listen ADDR] [--crds PATH]... [--bin-dir DIR]...` serves
//! the API, writes `DIR/kubeconfig` and `DIR/url`, runs the kubelet under `DIR/kubelet`, and
//! on SIGTERM or SIGINT stops the kubelet (and so every pod), then the server, and exits 0.

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

async fn up(
    dir: PathBuf,
    listen: SocketAddr,
    crd_paths: Vec<PathBuf>,
    bin_dirs: Vec<PathBuf>,
) -> Result<()> {
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up {
            dir,
            listen,
            crds,
            bin_dirs,
        } => up(dir, listen, crds, bin_dirs).await,
    }
}
