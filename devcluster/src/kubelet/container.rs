//! One container of a pod, supervised: resolve its environment, start its process, probe it,
//! restart it when it exits (restart policy, back-off), stop it when the pod terminates.
//!
//! Back-off before a restart starts at 1 s, doubles, is capped at 20 s (a real kubelet: 10 s
//! to 5 min; faster here so that tests and demos recover quickly) and is reset once a container
//! ran 10 s. While waiting, the state is `waiting: CrashLoopBackOff` with the real kubelet's
//! message; `restartCount` counts the restarts done; `lastState.terminated` keeps the previous
//! run's exit code and reason (`Completed` for 0, `Error` otherwise). A failed liveness (or
//! startup) probe stops the process like a termination (SIGTERM, grace, SIGKILL) and restarts
//! it the same way.
//!
//! Shutdown: when the pod's termination deadline is set, the process group gets SIGTERM, then
//! SIGKILL at the deadline; the task returns once the process is reaped. The task owns its
//! process: it never returns with the process alive.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Shared;
use super::env::{self, Sources, expand};
use super::probes::{self, ProbeTarget};
use super::process::{self, Launch};
use super::volumes::MountMap;

/// First back-off before a restart.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest back-off before a restart.
const BACKOFF_CAP: Duration = Duration::from_secs(20);
/// A container that ran this long restarts after [`BACKOFF_START`] again.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// What the kubelet knows of one container, as its status reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ContainerRuntime {
    pub(crate) state: ContainerState,
    pub(crate) last_state: Option<ContainerState>,
    pub(crate) ready: bool,
    pub(crate) started: bool,
    pub(crate) restart_count: i32,
    pub(crate) container_id: Option<String>,
    pub(crate) image_id: String,
    /// Will not run again: an init container that completed, or a container that terminated
    /// under restart policy Never/OnFailure.
    pub(crate) done: bool,
}

impl ContainerRuntime {
    /// A container that waits for `reason`.
    pub(crate) fn waiting(reason: &str) -> Self {
        Self {
            state: waiting(reason, None),
            last_state: None,
            ready: false,
            started: false,
            restart_count: 0,
            container_id: None,
            image_id: String::new(),
            done: false,
        }
    }

    /// The exit code if the container terminated.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        self.state.terminated.as_ref().map(|t| t.exit_code)
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message,
        }),
        ..Default::default()
    }
}

/// Everything a container task needs.
pub(crate) struct ContainerTask {
    pub(crate) shared: Arc<Shared>,
    pub(crate) pod: Pod,
    pub(crate) container: Container,
    pub(crate) init: bool,
    pub(crate) pod_dir: PathBuf,
    pub(crate) ip: Ipv4Addr,
    pub(crate) state: watch::Sender<ContainerRuntime>,
    pub(crate) notify: Arc<Notify>,
    /// The termination deadline, once the pod terminates.
    pub(crate) term: watch::Receiver<Option<Instant>>,
}

/// Replaces `0.0.0.0` (as a whole address) in `value` by `ip`.
pub(crate) fn bind_to(value: &str, ip: &str) -> String {
    const ANY: &str = "0.0.0.0";
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut prev: Option<char> = None;
    while let Some(at) = rest.find(ANY) {
        let before = rest[..at].chars().last().or(prev);
        let after = rest[at + ANY.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_digit() || c == '.');
        out.push_str(&rest[..at]);
        if boundary(before) && boundary(after) {
            out.push_str(ip);
        } else {
            out.push_str(ANY);
        }
        prev = Some('0');
        rest = &rest[at + ANY.len()..];
    }
    out.push_str(rest);
    out
}

enum Outcome {
    Exited(std::process::ExitStatus),
    Killed(std::process::ExitStatus, String),
    Terminated(std::process::ExitStatus),
}

impl ContainerTask {
    fn set(&self, f: impl FnOnce(&mut ContainerRuntime)) {
        self.state.send_modify(f);
        self.notify.notify_one();
    }

    fn pod_ref(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.uid.as_deref().unwrap_or_default()
        )
    }

    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    /// Resolves what to start; `Err((reason, message))` when it cannot start now.
    async fn prepare(&self) -> Result<Launch, (&'static str, String)> {
        let ip = self.ip.to_string();
        let namespace = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut sources = Sources::new(self.shared.client.clone(), namespace);
        let declared = env::resolve(&mut sources, &self.pod, &self.container, &ip)
            .await
            .map_err(|e| ("CreateContainerConfigError", e.to_string()))?;
        let mounts = MountMap::new(&self.pod, &self.container, &self.pod_dir);
        mounts
            .link()
            .map_err(|e| ("CreateContainerError", format!("linking the mounts: {e}")))?;
        let lookup: BTreeMap<&str, &str> = declared
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let vars = |name: &str| lookup.get(name).map(|v| (*v).to_owned());
        let fix = |value: &str| bind_to(&mounts.rewrite(&expand(value, &vars)), &ip);
        let command = self
            .container
            .command
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or((
                "CreateContainerError",
                process::ProcessError::NoCommand.to_string(),
            ))?;
        let program = process::resolve_program(&command[0], &self.shared.config.bin_dirs)
            .map_err(|e| ("RunContainerError", e.to_string()))?;
        let args = command[1..]
            .iter()
            .chain(self.container.args.iter().flatten())
            .map(|a| fix(a))
            .collect();
        let mut env = vec![
            (
                "HOSTNAME".to_owned(),
                self.pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "KUBECONFIG".to_owned(),
                self.pod_dir
                    .join("kubeconfig")
                    .to_string_lossy()
                    .into_owned(),
            ),
        ];
        for (k, v) in &declared {
            env.retain(|(n, _)| n != k);
            env.push((k.clone(), bind_to(&mounts.rewrite(v), &ip)));
        }
        let cwd = self
            .container
            .working_dir
            .as_deref()
            .map(|d| PathBuf::from(mounts.rewrite(d)))
            .filter(|d| d.is_dir())
            .unwrap_or_else(|| self.pod_dir.clone());
        Ok(Launch {
            program,
            args,
            env,
            cwd,
            log: self
                .pod_dir
                .join("logs")
                .join(format!("{}.log", self.container.name)),
        })
    }

    /// Waits for the termination deadline.
    async fn terminating(term: &mut watch::Receiver<Option<Instant>>) -> Instant {
        match term.wait_for(Option::is_some).await {
            Ok(deadline) => deadline.unwrap_or_else(Instant::now),
            // The pod worker is gone: stop now.
            Err(_) => Instant::now(),
        }
    }

    /// The probes of a running container; returns when liveness or startup fails.
    async fn probe(&self, target: ProbeTarget) -> String {
        let c = &self.container;
        if let Some(startup) = &c.startup_probe {
            let (ok, message) = probes::run(&target, startup, false, |_| true).await;
            if !ok {
                return format!("Startup probe failed: {message}");
            }
        }
        let readiness = c.readiness_probe.is_some();
        self.set(|s| {
            s.started = true;
            s.ready = !readiness;
        });
        let ready = async {
            if let Some(probe) = &c.readiness_probe {
                probes::run(&target, probe, false, |ok| {
                    self.set(|s| s.ready = ok);
                    false
                })
                .await;
            }
            std::future::pending::<()>().await
        };
        let live = async {
            match &c.liveness_probe {
                Some(probe) => probes::run(&target, probe, true, |ok| !ok).await.1,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ready => String::new(),
            message = live => format!("Liveness probe failed: {message}"),
        }
    }

    /// Runs the container until the pod terminates (or, when it will not restart, until it
    /// exits and then the pod terminates).
    pub(crate) async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        let name = self.container.name.clone();
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        loop {
            let launch = match self.prepare().await {
                Ok(launch) => launch,
                Err((reason, message)) => {
                    tracing::warn!(container = %name, pod = %self.pod_ref(), %reason, %message, "container cannot start");
                    self.set(|s| {
                        s.state = waiting(reason, Some(message));
                        s.ready = false;
                    });
                    let mut term = self.term.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = Self::terminating(&mut term) => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    continue;
                }
            };
            if self.term.borrow().is_some() {
                return;
            }
            let mut child = match process::spawn(&launch) {
                Ok(child) => child,
                Err(e) => {
                    tracing::warn!(container = %name, pod = %self.pod_ref(), error = %e, "container cannot start");
                    self.set(|s| s.state = waiting("RunContainerError", Some(e.to_string())));
                    let mut term = self.term.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = Self::terminating(&mut term) => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    continue;
                }
            };
            let Some(pid) = child.id() else {
                continue;
            };
            let started_at = jiff::Timestamp::now();
            let began = Instant::now();
            let container_id = format!("local://{pid}");
            tracing::info!(container = %name, pod = %self.pod_ref(), pid, program = %launch.program.display(), "container started");
            let no_startup = self.container.startup_probe.is_none();
            let no_readiness = self.container.readiness_probe.is_none();
            let init = self.init;
            self.set(|s| {
                s.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(started_at)),
                    }),
                    ..Default::default()
                };
                s.container_id = Some(container_id.clone());
                s.image_id = format!("local://{}", launch.program.display());
                s.started = !init && no_startup;
                s.ready = !init && no_startup && no_readiness;
            });
            let target = ProbeTarget {
                pod_ip: self.ip.to_string(),
                container: self.container.clone(),
                exec: launch.clone(),
                bin_dirs: self.shared.config.bin_dirs.clone(),
                rewrite: MountMap::new(&self.pod, &self.container, &self.pod_dir),
            };
            let mut term = self.term.clone();
            let outcome = {
                let probing = async {
                    if init {
                        std::future::pending().await
                    } else {
                        self.probe(target).await
                    }
                };
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => Outcome::Exited(status),
                        Err(_) => Outcome::Terminated(process::terminate(&mut child, pid, Instant::now()).await),
                    },
                    message = probing => {
                        tracing::info!(container = %name, pod = %self.pod_ref(), %message, "container failed a probe; restarting it");
                        let status = process::terminate(&mut child, pid, Instant::now() + self.grace()).await;
                        Outcome::Killed(status, message)
                    }
                    deadline = Self::terminating(&mut term) => {
                        Outcome::Terminated(process::terminate(&mut child, pid, deadline).await)
                    }
                }
            };
            let (status, message, terminated) = match outcome {
                Outcome::Exited(status) => {
                    process::kill_leftovers(pid);
                    (status, None, false)
                }
                Outcome::Killed(status, message) => (status, Some(message), false),
                Outcome::Terminated(status) => (status, None, true),
            };
            let code = process::exit_code(status);
            tracing::info!(container = %name, pod = %self.pod_ref(), pid, exit_code = code, "container exited");
            let last = ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.to_owned()),
                    message,
                    started_at: Some(Time(started_at)),
                    finished_at: Some(Time(jiff::Timestamp::now())),
                    container_id: Some(container_id.clone()),
                    signal: None,
                }),
                ..Default::default()
            };
            let restart = !terminated
                && match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => !init || code != 0,
                };
            if !restart {
                self.set(|s| {
                    s.state = last;
                    s.ready = false;
                    s.started = false;
                    s.done = !terminated;
                });
                if !terminated {
                    Self::terminating(&mut self.term).await;
                }
                return;
            }
            if began.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_START;
            }
            let pod_ref = self.pod_ref();
            self.set(|s| {
                s.state = waiting(
                    "CrashLoopBackOff",
                    Some(format!(
                        "back-off {}s restarting failed container={name} pod={pod_ref}",
                        backoff.as_secs()
                    )),
                );
                s.last_state = Some(last);
                s.ready = false;
                s.started = false;
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = Self::terminating(&mut term) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
            self.set(|s| s.restart_count += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_any_address_is_bound_to_the_pod_ip() {
        let ip = "127.0.1.7";
        assert_eq!(bind_to("0.0.0.0:8080", ip), "127.0.1.7:8080");
        assert_eq!(
            bind_to("--metrics-addr=0.0.0.0:9090", ip),
            "--metrics-addr=127.0.1.7:9090"
        );
        assert_eq!(bind_to("10.0.0.0/8", ip), "10.0.0.0/8");
        assert_eq!(bind_to("0.0.0.01", ip), "0.0.0.01");
        assert_eq!(
            bind_to("a=0.0.0.0,b=0.0.0.0", ip),
            "a=127.0.1.7,b=127.0.1.7"
        );
    }
}
