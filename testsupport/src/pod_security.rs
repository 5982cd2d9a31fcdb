//! The `restricted` Pod Security Standard (Kubernetes 1.32), written out as the rules of its
//! document (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>): every
//! control of the `baseline` profile, then the ones `restricted` adds. [`restricted`] checks a
//! pod spec (JSON, as the API serves it) against them and returns every violation, each
//! naming the control and the field, so that a test prints what to change.

use serde_json::Value;

/// Capabilities `baseline` lets a container add.
const BASELINE_CAPABILITIES: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
    "",
];

/// Sysctls `baseline` allows.
const SAFE_SYSCTLS: [&str; 9] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
];

/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// SELinux types `baseline` allows (besides none).
const SELINUX_TYPES: [&str; 3] = ["container_t", "container_init_t", "container_kvm_t"];

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

/// The violations of the `restricted` profile in `pod` (a PodSpec); empty when it complies.
pub fn restricted(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut bad = |control: &str, field: String, what: &str| {
        out.push(format!("{control}: {field} {what}"));
    };
    let psc = &pod["securityContext"];
    let containers: Vec<(String, &Value)> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|kind| {
            pod[*kind]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(move |(i, c)| (format!("spec.{kind}[{i}]"), c))
        })
        .collect();

    // baseline: HostProcess.
    if is_true(&psc["windowsOptions"]["hostProcess"]) {
        bad(
            "HostProcess",
            "spec.securityContext.windowsOptions.hostProcess".into(),
            "must not be true",
        );
    }
    // baseline: Host Namespaces.
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(&pod[field]) {
            bad(
                "Host Namespaces",
                format!("spec.{field}"),
                "must not be true",
            );
        }
    }
    // baseline: HostPath Volumes; restricted: Volume Types.
    for (i, volume) in pod["volumes"].as_array().into_iter().flatten().enumerate() {
        let kinds: Vec<&String> = volume
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| *k != "name")
            .collect();
        for kind in kinds {
            if kind == "hostPath" {
                bad(
                    "HostPath Volumes",
                    format!("spec.volumes[{i}].hostPath"),
                    "is forbidden",
                );
            } else if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
                bad(
                    "Volume Types",
                    format!("spec.volumes[{i}].{kind}"),
                    "is not an allowed volume type",
                );
            }
        }
    }
    // baseline: Sysctls.
    for (i, sysctl) in psc["sysctls"].as_array().into_iter().flatten().enumerate() {
        let name = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&name) {
            bad(
                "Sysctls",
                format!("spec.securityContext.sysctls[{i}] {name}"),
                "is not a safe sysctl",
            );
        }
    }
    let selinux = |field: &str, se: &Value, out: &mut dyn FnMut(&str, String, &str)| {
        if let Some(t) = se["type"].as_str()
            && !t.is_empty()
            && !SELINUX_TYPES.contains(&t)
        {
            out(
                "SELinux",
                format!("{field}.seLinuxOptions.type"),
                "is not an allowed type",
            );
        }
        for key in ["user", "role"] {
            if se[key].as_str().is_some_and(|v| !v.is_empty()) {
                out(
                    "SELinux",
                    format!("{field}.seLinuxOptions.{key}"),
                    "must be unset",
                );
            }
        }
    };
    selinux("spec.securityContext", &psc["seLinuxOptions"], &mut bad);
    let apparmor_ok = |v: &Value| {
        v.is_null() || matches!(v["type"].as_str(), Some("RuntimeDefault" | "Localhost"))
    };
    if !apparmor_ok(&psc["appArmorProfile"]) {
        bad(
            "AppArmor",
            "spec.securityContext.appArmorProfile.type".into(),
            "must be RuntimeDefault or Localhost",
        );
    }
    // restricted: Running as Non-root (pod level, or every container).
    let pod_non_root = is_true(&psc["runAsNonRoot"]);
    if psc["runAsUser"].as_i64() == Some(0) {
        bad(
            "Running as Non-root user",
            "spec.securityContext.runAsUser".into(),
            "must not be 0",
        );
    }
    // baseline and restricted: Seccomp (pod level, or every container).
    let pod_seccomp = psc["seccompProfile"]["type"].as_str();
    if pod_seccomp == Some("Unconfined") {
        bad(
            "Seccomp",
            "spec.securityContext.seccompProfile.type".into(),
            "must not be Unconfined",
        );
    }
    let pod_seccomp_ok = matches!(pod_seccomp, Some("RuntimeDefault" | "Localhost"));

    for (field, c) in &containers {
        let sc = &c["securityContext"];
        if is_true(&sc["windowsOptions"]["hostProcess"]) {
            bad(
                "HostProcess",
                format!("{field}.securityContext.windowsOptions.hostProcess"),
                "must not be true",
            );
        }
        // baseline: Privileged Containers.
        if is_true(&sc["privileged"]) {
            bad(
                "Privileged Containers",
                format!("{field}.securityContext.privileged"),
                "must not be true",
            );
        }
        // baseline: Host Ports.
        for (i, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
            if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                bad(
                    "Host Ports",
                    format!("{field}.ports[{i}].hostPort"),
                    "must be unset or 0",
                );
            }
        }
        selinux(
            &format!("{field}.securityContext"),
            &sc["seLinuxOptions"],
            &mut bad,
        );
        if !apparmor_ok(&sc["appArmorProfile"]) {
            bad(
                "AppArmor",
                format!("{field}.securityContext.appArmorProfile.type"),
                "must be RuntimeDefault or Localhost",
            );
        }
        // baseline: /proc Mount Type.
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            bad(
                "/proc Mount Type",
                format!("{field}.securityContext.procMount"),
                "must be Default",
            );
        }
        // restricted: Privilege Escalation.
        if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
            bad(
                "Privilege Escalation",
                format!("{field}.securityContext.allowPrivilegeEscalation"),
                "must be false",
            );
        }
        // restricted: Running as Non-root.
        match sc["runAsNonRoot"].as_bool() {
            Some(false) => bad(
                "Running as Non-root",
                format!("{field}.securityContext.runAsNonRoot"),
                "must not be false",
            ),
            None if !pod_non_root => bad(
                "Running as Non-root",
                format!("{field}.securityContext.runAsNonRoot"),
                "must be true (here or in spec.securityContext)",
            ),
            _ => {}
        }
        if sc["runAsUser"].as_i64() == Some(0) {
            bad(
                "Running as Non-root user",
                format!("{field}.securityContext.runAsUser"),
                "must not be 0",
            );
        }
        // Seccomp.
        match sc["seccompProfile"]["type"].as_str() {
            Some("RuntimeDefault" | "Localhost") => {}
            Some(other) => bad(
                "Seccomp",
                format!("{field}.securityContext.seccompProfile.type"),
                &format!("is {other}, must be RuntimeDefault or Localhost"),
            ),
            None if !pod_seccomp_ok => bad(
                "Seccomp",
                format!("{field}.securityContext.seccompProfile.type"),
                "must be RuntimeDefault or Localhost (here or in spec.securityContext)",
            ),
            None => {}
        }
        // baseline and restricted: Capabilities.
        let caps = &sc["capabilities"];
        let drops: Vec<&str> = caps["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !drops.contains(&"ALL") {
            bad(
                "Capabilities",
                format!("{field}.securityContext.capabilities.drop"),
                "must contain ALL",
            );
        }
        for add in caps["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if add != "NET_BIND_SERVICE" {
                let baseline = if BASELINE_CAPABILITIES.contains(&add) {
                    ""
                } else {
                    " (not even baseline allows it)"
                };
                bad(
                    "Capabilities",
                    format!("{field}.securityContext.capabilities.add {add}"),
                    &format!("is not allowed{baseline}; only NET_BIND_SERVICE"),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compliant() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
            "volumes": [{"name": "config", "configMap": {"name": "x"}}, {"name": "tmp", "emptyDir": {}}],
        })
    }

    #[test]
    fn a_compliant_pod_has_no_violations() {
        assert_eq!(restricted(&compliant()), Vec::<String>::new());
    }

    #[test]
    fn each_rule_catches_its_violation() {
        type Mutation = fn(&mut Value);
        let cases: [(&str, Mutation); 10] = [
            ("Host Namespaces", |p| p["hostNetwork"] = json!(true)),
            ("HostPath Volumes", |p| {
                p["volumes"][0] = json!({"name": "h", "hostPath": {"path": "/"}})
            }),
            ("Volume Types", |p| {
                p["volumes"][0] = json!({"name": "n", "nfs": {"server": "s", "path": "/"}})
            }),
            ("Privileged Containers", |p| {
                p["containers"][0]["securityContext"]["privileged"] = json!(true)
            }),
            ("Host Ports", |p| {
                p["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}])
            }),
            ("Privilege Escalation", |p| {
                p["containers"][0]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            }),
            ("Running as Non-root", |p| {
                p["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("runAsNonRoot");
            }),
            ("Running as Non-root user", |p| {
                p["containers"][0]["securityContext"]["runAsUser"] = json!(0)
            }),
            ("Seccomp", |p| {
                p["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("seccompProfile");
            }),
            ("Capabilities", |p| {
                p["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"])
            }),
        ];
        for (control, mutate) in cases {
            let mut pod = compliant();
            mutate(&mut pod);
            let violations = restricted(&pod);
            assert!(
                violations
                    .iter()
                    .any(|v| v.starts_with(&format!("{control}:"))),
                "{control} not caught: {violations:?}"
            );
        }
    }
}
