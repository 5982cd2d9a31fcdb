//! A pod's status, built from what the kubelet knows of its containers: phase, conditions
//! (`PodScheduled`, `Initialized`, `ContainersReady`, `Ready`, each `lastTransitionTime` kept
//! while its status stays), container statuses, pod IP, host IP and start time. Pure: the pod
//! worker writes it through the status subresource only when it differs from what it wrote
//! last.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition,
    PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::container::ContainerRuntime;

/// What a pod's status is built from.
pub(crate) struct PodView<'a> {
    pub(crate) pod: &'a Pod,
    pub(crate) pod_ip: &'a str,
    pub(crate) start_time: &'a Time,
    pub(crate) init: &'a [ContainerRuntime],
    pub(crate) containers: &'a [ContainerRuntime],
    /// Why the pod's containers cannot be created yet (volumes, token), if so.
    pub(crate) creating: Option<&'a str>,
    /// The status written last, for the conditions' transition times.
    pub(crate) previous: Option<&'a PodStatus>,
}

fn condition(
    previous: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
    }
}

fn container_status(
    spec: &Container,
    rt: &ContainerRuntime,
    creating: Option<&str>,
) -> ContainerStatus {
    let state = match (creating, &rt.state.waiting) {
        (Some(message), Some(_)) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: Some(message.to_owned()),
            }),
            ..Default::default()
        },
        _ => rt.state.clone(),
    };
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: rt.image_id.clone(),
        container_id: rt.container_id.clone(),
        ready: rt.ready,
        started: Some(rt.started),
        restart_count: rt.restart_count,
        state: Some(state),
        last_state: rt.last_state.clone(),
        ..Default::default()
    }
}

fn names(
    specs: &[Container],
    rts: &[ContainerRuntime],
    pick: impl Fn(&ContainerRuntime) -> bool,
) -> Vec<String> {
    specs
        .iter()
        .zip(rts)
        .filter(|(_, rt)| pick(rt))
        .map(|(s, _)| s.name.clone())
        .collect()
}

/// The status of the pod described by `view`.
pub(crate) fn build(view: &PodView<'_>) -> PodStatus {
    let spec = view.pod.spec.clone().unwrap_or_default();
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let specs = &spec.containers;
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");

    let init_done = view.init.iter().all(|c| c.done && c.exit_code() == Some(0));
    let init_failed = view
        .init
        .iter()
        .any(|c| c.done && c.exit_code().is_some_and(|e| e != 0));
    let all_done = !view.containers.is_empty() && view.containers.iter().all(|c| c.done);
    let any_ran = view.containers.iter().any(|c| {
        c.state.running.is_some() || c.state.terminated.is_some() || c.last_state.is_some()
    });
    let phase = if init_failed && policy == "Never" {
        "Failed"
    } else if !init_done {
        "Pending"
    } else if all_done {
        if view.containers.iter().all(|c| c.exit_code() == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if any_ran {
        "Running"
    } else {
        "Pending"
    };

    let unready = names(specs, view.containers, |c| !c.ready);
    let incomplete = names(&init_specs, view.init, |c| {
        !(c.done && c.exit_code() == Some(0))
    });
    let completed = phase == "Succeeded" || phase == "Failed";
    let ready = unready.is_empty() && !completed;
    let (ready_reason, ready_message) = if ready {
        (None, None)
    } else if completed {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let previous = view.previous;
    let conditions = vec![
        condition(previous, "PodScheduled", true, None, None),
        condition(
            previous,
            "Initialized",
            incomplete.is_empty(),
            (!incomplete.is_empty()).then_some("ContainersNotInitialized"),
            (!incomplete.is_empty()).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )
            }),
        ),
        condition(
            previous,
            "ContainersReady",
            ready,
            ready_reason,
            ready_message.clone(),
        ),
        condition(previous, "Ready", ready, ready_reason, ready_message),
    ];

    let statuses = |specs: &[Container], rts: &[ContainerRuntime]| {
        specs
            .iter()
            .zip(rts)
            .map(|(s, rt)| container_status(s, rt, view.creating))
            .collect::<Vec<_>>()
    };
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(statuses(specs, view.containers)),
        init_container_statuses: (!init_specs.is_empty()).then(|| statuses(&init_specs, view.init)),
        host_ip: Some("127.0.0.1".into()),
        host_ips: Some(vec![HostIP {
            ip: "127.0.0.1".into(),
        }]),
        pod_ip: Some(view.pod_ip.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: view.pod_ip.to_owned(),
        }]),
        start_time: Some(view.start_time.clone()),
        qos_class: Some("BestEffort".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStateRunning, PodSpec};

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "worker".into(),
                    image: Some("jetflow:dev".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn a_running_ready_container_makes_a_running_ready_pod_and_times_stay() {
        let pod = pod();
        let start = Time(jiff::Timestamp::now());
        let mut rt = ContainerRuntime::waiting("ContainerCreating");
        let view = |rts: &[ContainerRuntime], prev: Option<&PodStatus>| {
            build(&PodView {
                pod: &pod,
                pod_ip: "127.0.1.1",
                start_time: &start,
                init: &[],
                containers: rts,
                creating: None,
                previous: prev,
            })
        };
        let pending = view(std::slice::from_ref(&rt), None);
        assert_eq!(pending.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&pending, "Ready").status, "False");
        rt.state = ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(start.clone()),
            }),
            ..Default::default()
        };
        rt.ready = true;
        rt.started = true;
        let running = view(std::slice::from_ref(&rt), Some(&pending));
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&running, "Ready").status, "True");
        assert_eq!(
            cond(&running, "PodScheduled").last_transition_time,
            cond(&pending, "PodScheduled").last_transition_time
        );
        let again = view(std::slice::from_ref(&rt), Some(&running));
        assert_eq!(again, running, "an unchanged pod gives an equal status");
    }
}
