//! Probes: `httpGet` (to `http://<podIP>:<port><path>`, port by number or by the container
//! port's name; 200-399 is a success), `tcpSocket` (a connection) and `exec` (exit code 0, run
//! with the container's environment); `grpc` is not supported and always succeeds (logged).
//! A probe that takes longer than `timeoutSeconds` fails; an `exec` probe's process is then
//! killed with SIGKILL (`kill_on_drop`; what it started itself may outlive it).
//!
//! [`run`] applies `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `successThreshold` and `failureThreshold` and reports each change of the probe's verdict.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::{self, Launch};
use super::volumes::MountMap;

/// What a probe needs besides its spec.
#[derive(Clone, Debug)]
pub(crate) struct ProbeTarget {
    pub(crate) pod_ip: String,
    pub(crate) container: Container,
    /// How the container was started: an `exec` probe's command runs with its environment,
    /// working directory and bin folders, its arguments rewritten the same way, and its
    /// output appended to `<container>.probe.log` beside the container's log.
    pub(crate) exec: Launch,
    pub(crate) bin_dirs: Vec<PathBuf>,
    pub(crate) rewrite: MountMap,
}

async fn exec(target: &ProbeTarget, command: &[String]) -> Result<(), String> {
    let first = command.first().ok_or("exec probe without a command")?;
    let program = process::resolve_program(first, &target.bin_dirs).map_err(|e| e.to_string())?;
    let mut launch = target.exec.clone();
    launch.program = program;
    launch.args = command[1..]
        .iter()
        .map(|a| target.rewrite.rewrite(a))
        .collect();
    launch.log = launch.log.with_extension("probe.log");
    let mut child = process::spawn(&launch).map_err(|e| e.to_string())?;
    let pid = child.id();
    let status = child.wait().await.map_err(|e| e.to_string());
    if let Some(pid) = pid {
        process::kill_leftovers(pid);
    }
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "command exited with {}",
            process::exit_code(status)
        ))
    }
}

fn port(target: &ProbeTarget, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => target
            .container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a port of the container")),
    }
}

async fn http_get(target: &ProbeTarget, probe: &Probe) -> Result<(), String> {
    let Some(get) = &probe.http_get else {
        return Err("no httpGet".into());
    };
    let port = port(target, &get.port)?;
    let host = get.host.clone().unwrap_or_else(|| target.pod_ip.clone());
    let path = get.path.clone().unwrap_or_else(|| "/".into());
    let mut stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in get.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response: {:?}", line.lines().next()))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Runs `probe` once.
pub(crate) async fn probe_once(target: &ProbeTarget, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let check = async {
        if probe.http_get.is_some() {
            http_get(target, probe).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = port(target, &tcp.port)?;
            let host = tcp.host.clone().unwrap_or_else(|| target.pod_ip.clone());
            TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(action) = &probe.exec {
            exec(target, action.command.as_deref().unwrap_or_default()).await
        } else {
            tracing::warn!(container = %target.container.name, "unsupported probe kind; counted as a success");
            Ok(())
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// Runs `probe`: after `initialDelaySeconds`, every `periodSeconds`; calls `verdict` with
/// `true` once `successThreshold` successes follow each other and with `false` (and the last
/// failure) once `failureThreshold` failures do, each time the verdict changes. `initial` is the
/// verdict before the first probe. Returns the verdict and message for which `verdict` returned
/// `true` (stop); runs forever otherwise.
pub(crate) async fn run(
    target: &ProbeTarget,
    probe: &Probe,
    initial: bool,
    mut verdict: impl FnMut(bool) -> bool,
) -> (bool, String) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let mut current = initial;
    let (mut successes, mut failures) = (0, 0);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match probe_once(target, probe).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if !current && successes >= success_threshold {
                    current = true;
                    if verdict(true) {
                        return (true, String::new());
                    }
                }
            }
            Err(message) => {
                failures += 1;
                successes = 0;
                if (current && failures >= failure_threshold)
                    || (!current && failures == failure_threshold)
                {
                    current = false;
                    if verdict(false) {
                        return (false, message);
                    }
                }
            }
        }
    }
}
