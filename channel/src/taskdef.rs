//! The ECS task definition as a task payload carries it, in the JSON shape
//! DescribeTaskDefinition returns (validated and normalised by the control
//! plane when it was registered).

use crate::task::{KeyValue, Tag};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A registered task definition, as DescribeTaskDefinition returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub task_definition_arn: String,
    pub container_definitions: Vec<ContainerDefinition>,
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    pub revision: u32,
    pub volumes: Vec<Volume>,
    pub status: String,
    pub requires_attributes: Vec<Attribute>,
    pub placement_constraints: Vec<TaskDefinitionPlacementConstraint>,
    pub compatibilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    pub registered_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<f64>,
    /// When DeleteTaskDefinitions was asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_requested_at: Option<f64>,
    /// The tags given at registration (stored; returned beside the
    /// definition, not in it).
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// One container of a task definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    /// Empty when not given: registration refuses it in ECS's words.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub cpu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default = "yes")]
    pub essential: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    #[serde(default)]
    pub volumes_from: Vec<VolumeFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub system_controls: Vec<Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFrom {
    pub source_container: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    pub log_driver: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A container health check. A Wasm container has no shell and no other
/// programs, so `["CMD", arg0, args...]` starts a fresh instance of the
/// container's own module with that argv (and the container's environment,
/// mounts and network); exit status 0 within `timeout` is a pass. The
/// exception is the HTTP probe web containers' definitions write with
/// `curl` or `wget` (also as `CMD-SHELL`): skiff sends that request to the
/// container itself ([`HealthCheck::http_probe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub command: Vec<String>,
    #[serde(default = "thirty")]
    pub interval: u32,
    #[serde(default = "five")]
    pub timeout: u32,
    #[serde(default = "three")]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u32>,
}

/// A health check that is an HTTP request of the container itself, as
/// ECS task definitions of web containers write it: `curl -f
/// http://localhost:8080/health`, `wget -q --spider http://localhost/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// The port, on the container's own address.
    pub port: u16,
    /// The request's path and query.
    pub path: String,
    /// A HEAD request (`curl -I`, `wget --spider`), not a GET.
    pub head: bool,
    /// Whether a status of 400 or more fails the check (`curl -f`; `wget`
    /// always): else any answer passes, as for `curl` without `-f`.
    pub fail_on_error_status: bool,
    /// `curl -m`/`--max-time`, `wget -T`/`--timeout`, in seconds: the
    /// request's own limit, within the check's `timeout`.
    pub max_time: Option<u32>,
}

impl HealthCheck {
    /// The check's HTTP probe, if its command is one: `["CMD", "curl",
    /// ...]`, `["CMD", "wget", ...]`, or `["CMD-SHELL", "curl ... || exit
    /// 1"]`. `Ok(None)` for any other `CMD`, which runs the container's
    /// module. An error says what skiff does not understand: a shell
    /// command other than such a probe (there is no shell), or a probe's
    /// flag or address it would not honour.
    pub fn http_probe(&self) -> Result<Option<HttpProbe>, String> {
        let (shell, argv): (bool, Vec<String>) = match self.command.first().map(String::as_str) {
            Some("CMD") => (false, self.command[1..].to_vec()),
            Some("CMD-SHELL") => {
                let line = self.command[1..].join(" ");
                let probe = match line.split_once("||") {
                    Some((probe, rest)) if rest.trim() == "exit 1" => probe,
                    Some(_) => return Err(NO_SHELL.into()),
                    None => line.as_str(),
                };
                if probe.contains(|c: char| ";&|$`'\"\\<>(){}*~!#\n".contains(c)) {
                    return Err(NO_SHELL.into());
                }
                (true, probe.split_whitespace().map(str::to_string).collect())
            }
            _ => return Ok(None),
        };
        let program = argv.first().map(|p| p.rsplit('/').next().unwrap_or(p));
        match program {
            Some("curl") => probe_of(&argv[1..], Tool::Curl).map(Some),
            Some("wget") => probe_of(&argv[1..], Tool::Wget).map(Some),
            _ if shell => Err(NO_SHELL.into()),
            _ => Ok(None),
        }
    }
}

const NO_SHELL: &str = "CMD-SHELL needs a shell, which a Wasm container does not have: skiff understands a `curl` or `wget` request of the container itself (`curl -f http://localhost:PORT/PATH || exit 1`), or use [\"CMD\", argv0, args...] to run the container's module with those arguments";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Curl,
    Wget,
}

/// A `curl` or `wget` command line (without the program), as a probe.
fn probe_of(args: &[String], tool: Tool) -> Result<HttpProbe, String> {
    let name = if tool == Tool::Curl { "curl" } else { "wget" };
    let mut probe = HttpProbe {
        port: 80,
        path: "/".into(),
        head: false,
        fail_on_error_status: tool == Tool::Wget,
        max_time: None,
    };
    let mut url = None;
    let mut args = args.iter().map(String::as_str);
    let seconds = |v: Option<&str>, flag: &str| {
        v.and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("{name} {flag} needs a whole number of seconds"))
    };
    let discarded = |v: Option<&str>, flag: &str| match v {
        Some("/dev/null" | "-") => Ok(()),
        _ => Err(format!(
            "{name} {flag}: a health check's output can only go to /dev/null or -"
        )),
    };
    while let Some(arg) = args.next() {
        match (tool, arg) {
            (Tool::Curl, "--fail" | "--fail-with-body") => probe.fail_on_error_status = true,
            (Tool::Curl, "--head") | (Tool::Wget, "--spider") => probe.head = true,
            (Tool::Curl, "--silent" | "--show-error")
            | (Tool::Wget, "--quiet" | "--no-verbose") => {}
            (Tool::Curl, "--max-time") => probe.max_time = Some(seconds(args.next(), arg)?),
            (Tool::Curl, "--output") => discarded(args.next(), arg)?,
            (Tool::Wget, "--output-document") => discarded(args.next(), arg)?,
            (Tool::Wget, a) if a.starts_with("--timeout=") => {
                probe.max_time = Some(seconds(a.strip_prefix("--timeout="), "--timeout")?);
            }
            (Tool::Wget, a) if a.starts_with("--output-document=") => {
                discarded(a.strip_prefix("--output-document="), "--output-document")?;
            }
            (_, a) if a.starts_with("--") => {
                return Err(format!("{name} {a} is not supported in a health check"));
            }
            (_, a) if a.starts_with('-') && a.len() > 1 => {
                let flags: Vec<char> = a[1..].chars().collect();
                for (i, flag) in flags.iter().enumerate() {
                    let last = i + 1 == flags.len();
                    // A flag's value: the rest of this word, or the next.
                    let rest: String = flags[i + 1..].iter().collect();
                    let value = |args: &mut dyn Iterator<Item = &str>| -> Option<String> {
                        if last {
                            args.next().map(str::to_string)
                        } else {
                            Some(rest.clone())
                        }
                    };
                    match (tool, flag) {
                        (Tool::Curl, 'f') => probe.fail_on_error_status = true,
                        (Tool::Curl, 's' | 'S') | (Tool::Wget, 'q') => {}
                        (Tool::Curl, 'I') => probe.head = true,
                        (Tool::Curl, 'm') | (Tool::Wget, 'T') => {
                            let v = value(&mut args);
                            probe.max_time = Some(seconds(v.as_deref(), &format!("-{flag}"))?);
                            break;
                        }
                        (Tool::Curl, 'o') | (Tool::Wget, 'O') => {
                            let v = value(&mut args);
                            discarded(v.as_deref(), &format!("-{flag}"))?;
                            break;
                        }
                        _ => {
                            return Err(format!(
                                "{name} -{flag} is not supported in a health check"
                            ));
                        }
                    }
                }
            }
            (_, a) => {
                if url.replace(a).is_some() {
                    return Err(format!("{name}: a health check requests one URL"));
                }
            }
        }
    }
    let url = url.ok_or_else(|| format!("{name}: the health check names no URL"))?;
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{name} {url}: a health check requests http://localhost[:PORT]/PATH of the container itself (no TLS)"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{name} {url}: {port:?} is not a port"))?;
            (host, port)
        }
        _ => (authority, 80),
    };
    if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return Err(format!(
            "{name} {url}: a health check requests the container itself: localhost, 127.0.0.1 or [::1], not {host}"
        ));
    }
    probe.port = port;
    probe.path = path.to_string();
    Ok(probe)
}

fn thirty() -> u32 {
    30
}
fn five() -> u32 {
    5
}
fn three() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

/// A skiff-managed volume: `scope` `task` is scratch space removed when the
/// task stops; `shared` lives on under the data dir (`volumes/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerVolumeConfiguration {
    #[serde(default = "task_scope")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprovision: Option<bool>,
    #[serde(default = "local_driver")]
    pub driver: String,
}

fn task_scope() -> String {
    "task".into()
}
fn local_driver() -> String {
    "local".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionPlacementConstraint {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &[&str]) -> Result<Option<HttpProbe>, String> {
        HealthCheck {
            command: command.iter().map(|s| s.to_string()).collect(),
            interval: 30,
            timeout: 5,
            retries: 3,
            start_period: None,
        }
        .http_probe()
    }

    fn probe(port: u16, path: &str, head: bool, fail: bool, max_time: Option<u32>) -> HttpProbe {
        HttpProbe {
            port,
            path: path.into(),
            head,
            fail_on_error_status: fail,
            max_time,
        }
    }

    #[test]
    fn curl_and_wget_requests_of_the_container_are_probes() {
        let cases: &[(&[&str], HttpProbe)] = &[
            (
                &["CMD", "curl", "-f", "http://localhost:8080/health"],
                probe(8080, "/health", false, true, None),
            ),
            (
                &["CMD-SHELL", "curl -fsS http://localhost/ || exit 1"],
                probe(80, "/", false, true, None),
            ),
            (
                &[
                    "CMD-SHELL",
                    "curl",
                    "-so",
                    "/dev/null",
                    "-m3",
                    "http://127.0.0.1:9000/?q=1",
                ],
                probe(9000, "/?q=1", false, false, Some(3)),
            ),
            (
                &[
                    "CMD",
                    "/usr/bin/curl",
                    "-I",
                    "--max-time",
                    "2",
                    "http://[::1]:81",
                ],
                probe(81, "/", true, false, Some(2)),
            ),
            (
                &["CMD", "wget", "-qO-", "http://localhost:8080/ping"],
                probe(8080, "/ping", false, true, None),
            ),
            (
                &[
                    "CMD-SHELL",
                    "wget --spider -T 4 http://localhost:3000/ready||exit 1",
                ],
                probe(3000, "/ready", true, true, Some(4)),
            ),
        ];
        for (command, want) in cases {
            assert_eq!(check(command), Ok(Some(want.clone())), "{command:?}");
        }
        // Any other CMD runs the container's module.
        assert_eq!(check(&["CMD", "my-app", "--check"]), Ok(None));
    }

    #[test]
    fn what_a_probe_would_not_honour_is_refused_saying_what() {
        let cases: &[(&[&str], &str)] = &[
            (&["CMD-SHELL", "test -f /tmp/ok"], "needs a shell"),
            (
                &["CMD-SHELL", "curl -f http://localhost/ && echo ok"],
                "needs a shell",
            ),
            (
                &["CMD-SHELL", "curl -f http://localhost/ || exit 2"],
                "needs a shell",
            ),
            (
                &["CMD", "curl", "-fL", "http://localhost/"],
                "curl -L is not supported",
            ),
            (
                &["CMD", "curl", "-o", "/tmp/out", "http://localhost/"],
                "/dev/null",
            ),
            (&["CMD", "curl", "-f", "https://localhost/"], "no TLS"),
            (
                &["CMD", "curl", "-f", "http://example.com/"],
                "not example.com",
            ),
            (
                &["CMD", "curl", "-f", "http://localhost:0/"],
                "is not a port",
            ),
            (&["CMD", "curl", "-f"], "names no URL"),
            (
                &["CMD", "wget", "--tries=3", "http://localhost/"],
                "wget --tries=3 is not supported",
            ),
            (
                &["CMD", "curl", "-m", "soon", "http://localhost/"],
                "whole number of seconds",
            ),
        ];
        for (command, says) in cases {
            let e = check(command).expect_err(&format!("{command:?}"));
            assert!(e.contains(says), "{command:?}: {e}");
        }
    }
}
