//! Task definitions: the ECS JSON document, validated and normalised the
//! way ECS does it (defaults filled in, so a tool that registers a
//! definition and describes it back sees no difference).
//!
//! Every field ECS defines is either honoured or refused with an
//! `InvalidParameterException` naming it; fields ECS does not define are
//! ignored, as the AWS SDKs expect of a service.

use crate::core::model::Tag;
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;

pub use skiff_channel::taskdef::*;

/// Task-definition fields ECS defines that skiff does not (yet) honour:
/// refused when given a value other than their neutral one.
const UNSUPPORTED_TASK_FIELDS: &[&str] = &[
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
    "enableFaultInjection",
];

/// The same for container definitions.
const UNSUPPORTED_CONTAINER_FIELDS: &[&str] = &[
    "repositoryCredentials",
    "links",
    "restartPolicy",
    "environmentFiles",
    "linuxParameters",
    "secrets",
    "startTimeout",
    "versionConsistency",
    "hostname",
    "user",
    "workingDirectory",
    "disableNetworking",
    "privileged",
    "dnsServers",
    "dnsSearchDomains",
    "extraHosts",
    "dockerSecurityOptions",
    "interactive",
    "pseudoTerminal",
    "ulimits",
    "resourceRequirements",
    "firelensConfiguration",
    "credentialSpecs",
    "systemControls",
];

/// Neutral values: absent, null, false, "", [], {}.
fn is_neutral(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

fn refuse_unsupported(
    obj: &serde_json::Map<String, Value>,
    fields: &[&str],
    at: &str,
    found: &mut Vec<String>,
) {
    for field in fields {
        if let Some(v) = obj.get(*field).filter(|v| !is_neutral(v)) {
            found.push(format!("{at}{field} is not supported by skiff (given {v})"));
        }
    }
}

/// All the fields [`refuse_unsupported`] found, in one error: a
/// definition written for ECS is fixed in one pass, not one field a try.
fn unsupported_fields(found: Vec<String>) -> Result<(), ApiError> {
    match found.as_slice() {
        [] => Ok(()),
        [one] => Err(ApiError::invalid_parameter(format!("{one}; remove it"))),
        many => Err(ApiError::invalid_parameter(format!(
            "{} fields are not supported by skiff; remove them: {}",
            many.len(),
            many.join("; ")
        ))),
    }
}

/// A RegisterTaskDefinition request, before normalisation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Register {
    family: Option<String>,
    task_role_arn: Option<String>,
    execution_role_arn: Option<String>,
    network_mode: Option<String>,
    container_definitions: Option<Vec<ContainerDefinition>>,
    #[serde(default)]
    volumes: Vec<RegisterVolume>,
    #[serde(default)]
    placement_constraints: Vec<TaskDefinitionPlacementConstraint>,
    #[serde(default)]
    requires_compatibilities: Vec<String>,
    cpu: Option<String>,
    memory: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterVolume {
    name: Option<String>,
    host: Option<HostVolume>,
    docker_volume_configuration: Option<DockerVolumeConfiguration>,
    efs_volume_configuration: Option<Value>,
    fsx_windows_file_server_volume_configuration: Option<Value>,
    configured_at_launch: Option<bool>,
}

pub use crate::core::task_size::{check_fargate_size, parse_task_cpu, parse_task_memory};

/// The network modes skiff runs.
pub const NETWORK_MODES: &[&str] = &["none", "host", "bridge", "awsvpc"];

/// ECS's quota on a task definition's size: its JSON, as registered.
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;

/// The most cpu units one container may reserve (10 vCPU), as ECS takes.
const MAX_CONTAINER_CPU: u32 = 10 * 1024;

/// The most memory (MiB) a container or task may have: 1 TiB, more than
/// any host skiff runs on; beyond it a definition could never be placed.
pub(crate) const MAX_MEMORY_MIB: u32 = 1 << 20;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Validates and normalises a task definition document (what
/// RegisterTaskDefinition takes: the definition itself) into the
/// definition to store, without its ARN, revision and timestamps.
pub fn parse_register(document: &Value) -> Result<TaskDefinition, ApiError> {
    let obj = document
        .as_object()
        .ok_or_else(|| ApiError::serialization("the request body must be a JSON object"))?;
    let size = serde_json::to_vec(document).map_or(0, |v| v.len());
    if size > MAX_TASK_DEFINITION_BYTES {
        return Err(ApiError::client(format!(
            "The task definition is {size} bytes; ECS's limit is {MAX_TASK_DEFINITION_BYTES} bytes (64 KiB)."
        )));
    }
    let mut found = Vec::new();
    refuse_unsupported(obj, UNSUPPORTED_TASK_FIELDS, "", &mut found);
    if let Some(Value::Array(containers)) = obj.get("containerDefinitions") {
        for (i, c) in containers.iter().enumerate() {
            if let Some(c) = c.as_object() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                let at = format!("containerDefinitions[{i}] ({name}): ");
                refuse_unsupported(c, UNSUPPORTED_CONTAINER_FIELDS, &at, &mut found);
                if let Some(Value::Array(ports)) = c.get("portMappings") {
                    for p in ports.iter().filter_map(Value::as_object) {
                        refuse_unsupported(
                            p,
                            &["appProtocol", "containerPortRange", "hostPortRange"],
                            &format!("{at}portMappings "),
                            &mut found,
                        );
                    }
                }
                if let Some(Value::Object(log)) = c.get("logConfiguration") {
                    refuse_unsupported(
                        log,
                        &["secretOptions"],
                        &format!("{at}logConfiguration "),
                        &mut found,
                    );
                }
            }
        }
    }
    if let Some(Value::Array(volumes)) = obj.get("volumes") {
        for v in volumes {
            if let Some(Value::Object(d)) = v.get("dockerVolumeConfiguration") {
                refuse_unsupported(
                    d,
                    &["driverOpts", "labels"],
                    "volumes dockerVolumeConfiguration ",
                    &mut found,
                );
            }
        }
    }
    unsupported_fields(found)?;
    let req: Register = crate::error::from_request(document, None)?;

    let family = req
        .family
        .ok_or_else(|| ApiError::client("Family should not be null or empty."))?;
    if !valid_name(&family) {
        return Err(ApiError::client(format!(
            "Family {family:?} is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
        )));
    }
    let containers = req
        .container_definitions
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::client("Container list cannot be empty."))?;
    if containers.len() > 10 {
        return Err(ApiError::client(format!(
            "A task definition can have at most 10 containers, not {}.",
            containers.len()
        )));
    }

    let network_mode = match req.network_mode.as_deref() {
        // ECS's default for EC2.
        None => "bridge".to_string(),
        Some(m) if NETWORK_MODES.contains(&m) => m.to_string(),
        Some(m) => {
            return Err(ApiError::client(format!(
                "networkMode {m:?} is invalid: expected none, host, bridge or awsvpc"
            )));
        }
    };

    for compat in &req.requires_compatibilities {
        match compat.as_str() {
            "EC2" => {}
            "FARGATE" if network_mode != "awsvpc" => {
                return Err(ApiError::client(format!(
                    "Fargate only supports network mode 'awsvpc', and this definition uses {network_mode}."
                )));
            }
            "FARGATE" => {}
            "EXTERNAL" | "MANAGED_INSTANCES" => {
                return Err(ApiError::invalid_parameter(format!(
                    "requiresCompatibilities {compat} is not supported by skiff: use EC2 or FARGATE"
                )));
            }
            other => {
                return Err(ApiError::client(format!(
                    "requiresCompatibilities {other:?} is invalid: expected EC2, FARGATE, EXTERNAL or MANAGED_INSTANCES"
                )));
            }
        }
    }

    let cpu = req.cpu.as_deref().map(parse_task_cpu).transpose()?;
    let memory = req.memory.as_deref().map(parse_task_memory).transpose()?;
    if req.requires_compatibilities.iter().any(|c| c == "FARGATE") {
        check_fargate_size(cpu, memory)?;
    }
    // What the definition can run on, as ECS reports it: Fargate needs
    // awsvpc and a size from its table.
    let mut compatibilities = vec!["EC2".to_string()];
    if network_mode == "awsvpc" && check_fargate_size(cpu, memory).is_ok() {
        compatibilities.push("FARGATE".into());
    }

    let volumes = req
        .volumes
        .into_iter()
        .map(normalise_volume)
        .collect::<Result<Vec<_>, _>>()?;
    let mut volume_names = HashSet::new();
    for v in &volumes {
        if !volume_names.insert(v.name.as_str()) {
            return Err(ApiError::client(format!(
                "Volume name {:?} is used more than once.",
                v.name
            )));
        }
    }

    let mut names = HashSet::new();
    let mut normalised = Vec::with_capacity(containers.len());
    for c in &containers {
        if !names.insert(c.name.as_str()) {
            return Err(ApiError::client(format!(
                "Container name {:?} is used more than once.",
                c.name
            )));
        }
    }
    for c in containers.iter() {
        normalised.push(normalise_container(
            c.clone(),
            &network_mode,
            memory.is_some(),
            &volume_names,
            &names,
        )?);
    }
    if !normalised.iter().any(|c| c.essential) {
        return Err(ApiError::client(
            "A task definition must have at least one essential container.",
        ));
    }
    check_dependency_cycles(&normalised)?;
    for c in &normalised {
        for d in &c.depends_on {
            let Some(target) = normalised.iter().find(|t| t.name == d.container_name) else {
                continue;
            };
            if matches!(d.condition.as_str(), "COMPLETE" | "SUCCESS") && target.essential {
                return Err(ApiError::client(format!(
                    "Container '{}': dependsOn {} {} needs {} to be non-essential (an essential container's exit stops the task).",
                    c.name, d.condition, target.name, target.name
                )));
            }
            if d.condition == "HEALTHY" && target.health_check.is_none() {
                return Err(ApiError::client(format!(
                    "Container '{}': dependsOn HEALTHY {} needs {} to have a healthCheck.",
                    c.name, target.name, target.name
                )));
            }
        }
    }
    if let (Some(task_mem), sum) = (
        memory,
        normalised
            .iter()
            .map(|c| u64::from(c.memory.or(c.memory_reservation).unwrap_or(0)))
            .sum::<u64>(),
    ) && sum > u64::from(task_mem)
    {
        return Err(ApiError::client(format!(
            "The containers' memory ({sum} MiB) is more than the task's memory ({task_mem} MiB)."
        )));
    }
    if let Some(task_cpu) = cpu {
        let sum: u64 = normalised.iter().map(|c| u64::from(c.cpu)).sum();
        if sum > u64::from(task_cpu) {
            return Err(ApiError::client(format!(
                "The containers' cpu ({sum} units) is more than the task's cpu ({task_cpu} units)."
            )));
        }
    }

    for pc in &req.placement_constraints {
        if pc.kind != "memberOf" {
            return Err(ApiError::client(format!(
                "Task definition placement constraints must be of type memberOf, not {:?}.",
                pc.kind
            )));
        }
        let expr = pc.expression.as_deref().unwrap_or("");
        crate::core::placement::Expression::parse(expr).map_err(|e| {
            ApiError::client(format!(
                "Invalid placement constraint expression {expr:?}: {e}"
            ))
        })?;
    }
    if req.placement_constraints.len() > 10 {
        return Err(ApiError::client(
            "A task definition can have at most 10 placement constraints.",
        ));
    }
    crate::core::model::check_tags(&req.tags)?;

    let requires_attributes = requires_attributes(&normalised, req.task_role_arn.is_some());
    Ok(TaskDefinition {
        task_definition_arn: String::new(),
        container_definitions: normalised,
        family,
        task_role_arn: req.task_role_arn,
        execution_role_arn: req.execution_role_arn,
        network_mode: Some(network_mode),
        revision: 0,
        volumes,
        status: "ACTIVE".into(),
        requires_attributes,
        placement_constraints: req.placement_constraints,
        compatibilities,
        requires_compatibilities: req.requires_compatibilities,
        cpu: cpu.map(|c| c.to_string()),
        memory: memory.map(|m| m.to_string()),
        registered_at: 0.0,
        registered_by: None,
        deregistered_at: None,
        delete_requested_at: None,
        tags: req.tags,
    })
}

fn normalise_volume(v: RegisterVolume) -> Result<Volume, ApiError> {
    let name = v
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::client("Volume name should not be null or empty."))?;
    if !valid_name(&name) {
        return Err(ApiError::client(format!(
            "Volume name {name:?} is invalid: up to 255 letters, numbers, hyphens and underscores."
        )));
    }
    for (field, given) in [
        (
            "efsVolumeConfiguration",
            v.efs_volume_configuration.is_some(),
        ),
        (
            "fsxWindowsFileServerVolumeConfiguration",
            v.fsx_windows_file_server_volume_configuration.is_some(),
        ),
        ("configuredAtLaunch", v.configured_at_launch == Some(true)),
    ] {
        if given {
            return Err(ApiError::invalid_parameter(format!(
                "volumes ({name}): {field} is not supported by skiff; use host.sourcePath or dockerVolumeConfiguration"
            )));
        }
    }
    if v.host.is_some() && v.docker_volume_configuration.is_some() {
        return Err(ApiError::client(format!(
            "Volume {name:?} cannot have both host and dockerVolumeConfiguration."
        )));
    }
    if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.as_deref())
        && !path.starts_with('/')
    {
        return Err(ApiError::client(format!(
            "Volume {name:?}: host.sourcePath {path:?} must be an absolute path."
        )));
    }
    if let Some(d) = &v.docker_volume_configuration {
        if !matches!(d.scope.as_str(), "task" | "shared") {
            return Err(ApiError::client(format!(
                "Volume {name:?}: scope {:?} is invalid: expected task or shared.",
                d.scope
            )));
        }
        if d.driver != "local" {
            return Err(ApiError::invalid_parameter(format!(
                "Volume {name:?}: driver {:?} is not supported by skiff: only local",
                d.driver
            )));
        }
        if d.autoprovision.is_some() && d.scope == "task" {
            return Err(ApiError::client(format!(
                "Volume {name:?}: autoprovision applies only to shared volumes."
            )));
        }
    }
    Ok(Volume {
        name,
        // ECS returns `host: {}` for a bind volume with no source path.
        host: match (&v.host, &v.docker_volume_configuration) {
            (None, None) => Some(HostVolume { source_path: None }),
            (h, _) => h.clone(),
        },
        docker_volume_configuration: v.docker_volume_configuration,
    })
}

fn normalise_container(
    mut c: ContainerDefinition,
    network_mode: &str,
    task_memory: bool,
    volumes: &HashSet<&str>,
    containers: &HashSet<&str>,
) -> Result<ContainerDefinition, ApiError> {
    let name = c.name.clone();
    if !valid_name(&name) {
        return Err(ApiError::client(format!(
            "Container name {name:?} is invalid: up to 255 letters, numbers, hyphens and underscores."
        )));
    }
    if c.image.trim().is_empty() {
        return Err(ApiError::client(format!(
            "Container.image should not be null or empty (container {name})."
        )));
    }
    // ECS's rule for the field: up to 255 letters, digits, hyphens,
    // underscores, colons, periods, slashes and number signs (and `@` of
    // a digest). Whether it names an image is found at the pull.
    if !c
        .image
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_:./#@".contains(&b))
    {
        return Err(ApiError::client(format!(
            "Container.image contains invalid characters (container {name}: {:?}); letters, numbers, hyphens, underscores, colons, periods, forward slashes and number signs are allowed.",
            c.image
        )));
    }
    if c.memory.is_none() && c.memory_reservation.is_none() && !task_memory {
        return Err(ApiError::client(format!(
            "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
        )));
    }
    if let Some(m) = c.memory
        && m < 6
    {
        return Err(ApiError::client(format!(
            "Invalid 'memory' setting for container '{name}'. The memory must be at least 6 MiB."
        )));
    }
    for (field, v) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(v) = v
            && v > MAX_MEMORY_MIB
        {
            return Err(ApiError::client(format!(
                "Invalid '{field}' setting for container '{name}'. {v} MiB is more than {MAX_MEMORY_MIB} MiB (1 TiB)."
            )));
        }
    }
    if c.image.len() > 255 {
        return Err(ApiError::client(format!(
            "Container '{name}': image is {} characters; at most 255 are allowed.",
            c.image.len()
        )));
    }
    if let (Some(hard), Some(soft)) = (c.memory, c.memory_reservation)
        && soft > hard
    {
        return Err(ApiError::client(format!(
            "Invalid setting for container '{name}'. 'memoryReservation' ({soft}) must be less than or equal to 'memory' ({hard})."
        )));
    }
    if !c.port_mappings.is_empty() && network_mode == "none" {
        return Err(ApiError::client(format!(
            "Container '{name}' has portMappings, but networkMode none gives a task no network."
        )));
    }
    let mut ports = HashSet::new();
    for p in &mut c.port_mappings {
        if p.container_port == 0 {
            return Err(ApiError::client(format!(
                "Container '{name}': containerPort must be between 1 and 65535."
            )));
        }
        if !matches!(p.protocol.as_str(), "tcp" | "udp") {
            return Err(ApiError::client(format!(
                "Container '{name}': protocol {:?} is invalid: expected tcp or udp.",
                p.protocol
            )));
        }
        if network_mode == "bridge" {
            if p.protocol == "udp" {
                return Err(ApiError::client(format!(
                    "Container '{name}': skiff does not publish UDP ports in networkMode bridge (port {}/udp); use awsvpc, where the task's own address serves UDP.",
                    p.container_port
                )));
            }
            // hostPort 0 or absent: a dynamic port, chosen at start.
            p.host_port.get_or_insert(0);
            if !ports.insert((p.container_port, p.protocol.clone())) {
                return Err(ApiError::client(format!(
                    "Container '{name}' maps port {}/{} twice.",
                    p.container_port, p.protocol
                )));
            }
            continue;
        }
        // In host and awsvpc mode a container port is the host port.
        match p.host_port {
            None => p.host_port = Some(p.container_port),
            Some(h) if h == p.container_port => {}
            Some(h) => {
                return Err(ApiError::client(format!(
                    "Container '{name}': with networkMode {network_mode} the hostPort ({h}) must equal the containerPort ({}).",
                    p.container_port
                )));
            }
        }
        if !ports.insert((p.container_port, p.protocol.clone())) {
            return Err(ApiError::client(format!(
                "Container '{name}' maps port {}/{} twice.",
                p.container_port, p.protocol
            )));
        }
    }
    for m in &c.mount_points {
        if !volumes.contains(m.source_volume.as_str()) {
            return Err(ApiError::client(format!(
                "Container '{name}': mountPoints sourceVolume {:?} is not a volume of this task definition.",
                m.source_volume
            )));
        }
        if !m.container_path.starts_with('/') {
            return Err(ApiError::client(format!(
                "Container '{name}': mountPoints containerPath {:?} must be an absolute path.",
                m.container_path
            )));
        }
    }
    for v in &c.volumes_from {
        if v.source_container == name || !containers.contains(v.source_container.as_str()) {
            return Err(ApiError::client(format!(
                "Container '{name}': volumesFrom sourceContainer {:?} is not another container of this task definition.",
                v.source_container
            )));
        }
    }
    for d in &c.depends_on {
        if d.container_name == name || !containers.contains(d.container_name.as_str()) {
            return Err(ApiError::client(format!(
                "Container '{name}': dependsOn containerName {:?} is not another container of this task definition.",
                d.container_name
            )));
        }
        if !matches!(
            d.condition.as_str(),
            "START" | "COMPLETE" | "SUCCESS" | "HEALTHY"
        ) {
            return Err(ApiError::client(format!(
                "Container '{name}': dependsOn condition {:?} is invalid: expected START, COMPLETE, SUCCESS or HEALTHY.",
                d.condition
            )));
        }
    }
    if let Some(log) = &c.log_configuration {
        if log.log_driver != "awslogs" {
            return Err(ApiError::invalid_parameter(format!(
                "Container '{name}': logDriver {:?} is not supported by skiff: use awslogs",
                log.log_driver
            )));
        }
        for key in log.options.keys() {
            if !matches!(
                key.as_str(),
                "awslogs-group"
                    | "awslogs-region"
                    | "awslogs-stream-prefix"
                    | "awslogs-create-group"
                    | "mode"
                    | "max-buffer-size"
            ) {
                return Err(ApiError::invalid_parameter(format!(
                    "Container '{name}': awslogs option {key:?} is not supported by skiff"
                )));
            }
        }
        if log
            .options
            .get("awslogs-group")
            .is_none_or(|g| g.is_empty())
        {
            return Err(ApiError::client(format!(
                "Container '{name}': the awslogs log driver needs the option awslogs-group."
            )));
        }
    }
    if let Some(h) = &c.health_check {
        match h.command.first().map(String::as_str) {
            Some("CMD" | "CMD-SHELL") if h.command.len() > 1 => {
                // A curl or wget request of the container is sent by skiff;
                // what it could not honour is refused here.
                h.http_probe().map_err(|e| {
                    ApiError::invalid_parameter(format!("Container '{name}': healthCheck: {e}"))
                })?;
            }
            _ => {
                return Err(ApiError::client(format!(
                    "Container '{name}': healthCheck.command must be [\"CMD\", argv0, args...] or [\"CMD-SHELL\", \"curl -f http://localhost:PORT/PATH || exit 1\"]."
                )));
            }
        }
        let ranges = [
            ("interval", h.interval, 5, 300),
            ("timeout", h.timeout, 2, 60),
            ("retries", h.retries, 1, 10),
            ("startPeriod", h.start_period.unwrap_or(0), 0, 300),
        ];
        for (field, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(ApiError::client(format!(
                    "Container '{name}': healthCheck.{field} must be between {lo} and {hi}, not {v}."
                )));
            }
        }
    }
    if let Some(t) = c.stop_timeout
        && t > 120
    {
        return Err(ApiError::client(format!(
            "Container '{name}': stopTimeout must be at most 120 seconds, not {t}."
        )));
    }
    if c.cpu > MAX_CONTAINER_CPU {
        return Err(ApiError::client(format!(
            "Invalid 'cpu' setting for container '{name}'. Max value for cpu units is {MAX_CONTAINER_CPU}, not {}.",
            c.cpu
        )));
    }
    Ok(c)
}

fn check_dependency_cycles(containers: &[ContainerDefinition]) -> Result<(), ApiError> {
    // Depth-first search for a cycle; at most 10 containers.
    fn visit<'a>(
        name: &'a str,
        containers: &'a [ContainerDefinition],
        path: &mut Vec<&'a str>,
    ) -> Result<(), ApiError> {
        if path.contains(&name) {
            return Err(ApiError::client(format!(
                "Container dependencies form a cycle: {} -> {name}.",
                path.join(" -> ")
            )));
        }
        path.push(name);
        if let Some(c) = containers.iter().find(|c| c.name == name) {
            for d in &c.depends_on {
                visit(&d.container_name, containers, path)?;
            }
        }
        path.pop();
        Ok(())
    }
    for c in containers {
        visit(&c.name, containers, &mut Vec::new())?;
    }
    Ok(())
}

fn requires_attributes(containers: &[ContainerDefinition], task_role: bool) -> Vec<Attribute> {
    let mut names = Vec::new();
    if containers.iter().any(|c| c.log_configuration.is_some()) {
        names.push("com.amazonaws.ecs.capability.logging-driver.awslogs");
    }
    if containers.iter().any(|c| c.health_check.is_some()) {
        names.push("ecs.capability.container-health-check");
    }
    if containers.iter().any(|c| !c.depends_on.is_empty()) {
        names.push("ecs.capability.container-ordering");
    }
    if task_role {
        names.push("com.amazonaws.ecs.capability.task-iam-role");
    }
    names
        .into_iter()
        .map(|n| Attribute {
            name: n.into(),
            value: None,
            target_type: None,
            target_id: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn register(v: Value) -> Result<TaskDefinition, ApiError> {
        parse_register(&v)
    }

    #[test]
    fn defaults_are_filled_in_the_way_ecs_returns_them() {
        let td = register(json!({
            "family": "web",
            "networkMode": "host",
            "containerDefinitions": [{"name": "app", "image": "hello:v1", "memory": 64,
                                      "portMappings": [{"containerPort": 8080}]}],
        }))
        .unwrap();
        let c = serde_json::to_value(&td.container_definitions[0]).unwrap();
        assert_eq!(
            c,
            json!({
                "name": "app", "image": "hello:v1", "cpu": 0, "memory": 64,
                "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}],
                "essential": true, "environment": [], "mountPoints": [], "volumesFrom": [],
                "systemControls": [],
            })
        );
        assert_eq!(td.compatibilities, ["EC2"]);
        assert_eq!(td.status, "ACTIVE");
    }

    #[test]
    fn fields_skiff_cannot_honour_are_refused_by_name() {
        let err = register(json!({
            "family": "x", "networkMode": "none",
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 8, "privileged": true}],
        }))
        .unwrap_err();
        assert_eq!(err.kind, "InvalidParameterException");
        assert!(err.message.contains("privileged"), "{}", err.message);
        // A neutral value is no request at all.
        register(json!({
            "family": "x", "networkMode": "none",
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 8, "privileged": false, "links": []}],
        }))
        .unwrap();
        let err = register(json!({
            "family": "x", "networkMode": "none", "pidMode": "host",
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 8}],
        }))
        .unwrap_err();
        assert!(err.message.contains("pidMode"));
        // Fields ECS does not define are ignored.
        register(json!({
            "family": "x", "networkMode": "none", "somethingNew": 1,
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 8}],
        }))
        .unwrap();
    }

    #[test]
    fn ecs_quotas_and_bounds() {
        let with = |c: Value| {
            register(json!({"family": "f", "networkMode": "none", "containerDefinitions": [c]}))
        };
        // 64 KiB of JSON is the most a task definition may be.
        let padded = |n: usize| {
            json!({"name": "a", "image": "i", "memory": 8,
                   "environment": [{"name": "PAD", "value": "x".repeat(n)}]})
        };
        let fits = padded(MAX_TASK_DEFINITION_BYTES - 200);
        assert!(with(fits).is_ok());
        let e = with(padded(MAX_TASK_DEFINITION_BYTES)).unwrap_err();
        assert_eq!(e.kind, "ClientException");
        assert!(e.message.contains("limit is 65536 bytes"), "{}", e.message);
        // Container cpu: at most 10 vCPU.
        assert!(with(json!({"name": "a", "image": "i", "memory": 8, "cpu": 10240})).is_ok());
        let e = with(json!({"name": "a", "image": "i", "memory": 8, "cpu": 10241})).unwrap_err();
        assert!(
            e.message.contains("Max value for cpu units is 10240"),
            "{}",
            e.message
        );
        // Memory no host has.
        for field in ["memory", "memoryReservation"] {
            let e = with(json!({"name": "a", "image": "i", field: 2147483648u64})).unwrap_err();
            assert!(
                e.message.contains(&format!("Invalid '{field}'")),
                "{}",
                e.message
            );
        }
        let e = with(json!({"name": "a", "image": "i".repeat(256), "memory": 8})).unwrap_err();
        assert!(e.message.contains("at most 255"), "{}", e.message);
    }

    #[test]
    fn ecs_validation_rules() {
        let base =
            |c: Value| json!({"family": "f", "networkMode": "none", "containerDefinitions": [c]});
        let msg = |v| register(v).unwrap_err().message;
        assert!(msg(base(json!({"name": "a", "image": "i"}))).contains("memoryReservation"));
        assert!(msg(base(json!({"name": "a", "image": "", "memory": 8}))).contains("image"));
        assert!(
            msg(base(
                json!({"name": "a", "image": "i", "memory": 8, "memoryReservation": 9})
            ))
            .contains("less than or equal")
        );
        assert!(
            msg(base(
                json!({"name": "a", "image": "i", "memory": 8, "essential": false})
            ))
            .contains("essential")
        );
        assert!(
            msg(base(json!({"name": "a", "image": "i", "memory": 8,
                           "portMappings": [{"containerPort": 80}]})))
            .contains("networkMode none")
        );
        assert!(
            msg(base(json!({"name": "a", "image": "i", "memory": 8,
                           "mountPoints": [{"sourceVolume": "nope", "containerPath": "/d"}]})))
            .contains("nope")
        );
        assert!(
            msg(base(json!({"name": "a", "image": "i", "memory": 8,
                           "healthCheck": {"command": ["CMD-SHELL", "true"]}})))
            .contains("shell")
        );
        // Every unsupported field at once, not one a try.
        let two = json!({"family": "f", "networkMode": "none", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8, "secrets": [{"name": "S", "valueFrom": "arn"}]},
            {"name": "b", "image": "i", "memory": 8, "ulimits": [{"name": "nofile", "softLimit": 1, "hardLimit": 1}]}]});
        let m = msg(two);
        assert!(
            m.starts_with("2 fields are not supported by skiff; remove them: ")
                && m.contains("containerDefinitions[0] (a): secrets")
                && m.contains("containerDefinitions[1] (b): ulimits"),
            "{m}"
        );
        for image in ["UPPER CASE::x", "app:v1;rm"] {
            assert!(
                msg(base(json!({"name": "a", "image": image, "memory": 8})))
                    .contains("Container.image contains invalid characters"),
                "{image}"
            );
        }
        assert!(
            register(base(json!({"name": "a", "memory": 8,
                "image": "registry.example:5000/team/app@sha256:0123abcd"})))
            .is_ok()
        );
        let no_mode = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 8}]});
        // ECS's default network mode.
        assert_eq!(
            parse_register(&no_mode).unwrap().network_mode.as_deref(),
            Some("bridge")
        );
        let bridge_udp = json!({"family": "f", "networkMode": "bridge", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8, "portMappings": [{"containerPort": 53, "protocol": "udp"}]}]});
        assert!(msg(bridge_udp).contains("UDP"));
        let fargate_bridge = json!({"family": "f", "networkMode": "bridge", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": [{"name": "a", "image": "i"}]});
        assert!(msg(fargate_bridge).contains("awsvpc"));
        let fargate = json!({"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512", "containerDefinitions": [{"name": "a", "image": "i",
            "portMappings": [{"containerPort": 80}]}]});
        let td = parse_register(&fargate).unwrap();
        assert_eq!(td.compatibilities, ["EC2", "FARGATE"]);
        assert_eq!(
            td.container_definitions[0].port_mappings[0].host_port,
            Some(80)
        );
        let cycle = json!({"family": "f", "networkMode": "none", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8, "dependsOn": [{"containerName": "b", "condition": "START"}]},
            {"name": "b", "image": "i", "memory": 8, "dependsOn": [{"containerName": "a", "condition": "START"}]},
        ]});
        assert!(msg(cycle).contains("cycle"));
        let eleven: Vec<Value> = (0..11)
            .map(|i| json!({"name": format!("c{i}"), "image": "i", "memory": 8}))
            .collect();
        assert!(
            msg(json!({"family": "f", "networkMode": "none", "containerDefinitions": eleven}))
                .contains("at most 10")
        );
    }

    #[test]
    fn dependency_conditions_must_be_meetable_and_unknown_sub_fields_refused() {
        let two = |cond: &str, a_essential: bool, a_health: bool| {
            let mut a = json!({"name": "a", "image": "i", "memory": 8, "essential": a_essential});
            if a_health {
                a["healthCheck"] = json!({"command": ["CMD", "a"]});
            }
            json!({"family": "f", "networkMode": "none", "containerDefinitions": [a,
                {"name": "b", "image": "i", "memory": 8,
                 "dependsOn": [{"containerName": "a", "condition": cond}]}]})
        };
        assert!(
            register(two("SUCCESS", true, false))
                .unwrap_err()
                .message
                .contains("non-essential")
        );
        register(two("SUCCESS", false, false)).unwrap();
        assert!(
            register(two("HEALTHY", true, false))
                .unwrap_err()
                .message
                .contains("healthCheck")
        );
        register(two("HEALTHY", true, true)).unwrap();
        let ranged = json!({"family": "f", "networkMode": "host", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8,
             "portMappings": [{"containerPort": 80, "appProtocol": "http"}]}]});
        assert!(
            register(ranged)
                .unwrap_err()
                .message
                .contains("appProtocol")
        );
    }

    #[test]
    fn task_sizes_parse_in_both_notations() {
        assert_eq!(parse_task_cpu("256").unwrap(), 256);
        assert_eq!(parse_task_cpu("0.25 vCPU").unwrap(), 256);
        assert_eq!(parse_task_cpu("1 vcpu").unwrap(), 1024);
        assert!(parse_task_cpu("lots").is_err());
        assert_eq!(parse_task_memory("1 GB").unwrap(), 1024);
        assert_eq!(parse_task_memory("0.5GB").unwrap(), 512);
        assert_eq!(parse_task_memory("2048").unwrap(), 2048);
        assert!(parse_task_memory("2").is_err());
    }

    #[test]
    fn fargate_sizes_follow_the_table() {
        check_fargate_size(Some(256), Some(512)).unwrap();
        check_fargate_size(Some(4096), Some(30720)).unwrap();
        check_fargate_size(Some(8192), Some(20480)).unwrap();
        assert!(check_fargate_size(Some(256), Some(4096)).is_err());
        assert!(check_fargate_size(Some(8192), Some(17408)).is_err());
        assert!(check_fargate_size(Some(300), Some(512)).is_err());
        assert!(check_fargate_size(None, Some(512)).is_err());
    }
}
