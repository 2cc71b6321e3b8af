//! ECS tags: TagResource, UntagResource, ListTagsForResource, on
//! clusters, task definitions, tasks, services, task sets and container
//! instances.

use crate::api::protocol::json::{parse_member, required, string_list, to_value};
use crate::core::Core;
use crate::core::model::{Cluster, ContainerInstance, Tag, Task, check_tags, merge_tags};
use crate::core::services::Service;
use crate::core::state::{State, Write};
use crate::core::taskdef::TaskDefinition;
use crate::core::tasks::DELETED;
use crate::error::ApiError;
use serde_json::{Value, json};

pub(crate) async fn tag_resource(
    core: &Core,
    body: &Value,
    remove: bool,
) -> Result<Value, ApiError> {
    let resource = required(body, "resourceArn")?;
    let (new, keys): (Vec<Tag>, Vec<String>) = if remove {
        (Vec::new(), string_list(body, "tagKeys")?)
    } else {
        let tags: Vec<Tag> = parse_member(body, "tags")?;
        check_tags(&tags)?;
        (tags, Vec::new())
    };
    let edit = |tags: &mut Vec<Tag>| -> Result<(), ApiError> {
        if remove {
            tags.retain(|t| !keys.contains(&t.key));
        } else {
            merge_tags(tags, &new);
            check_tags(tags)?;
        }
        Ok(())
    };
    let mut state = core.state.lock().await;
    let write = match locate(&state, resource)? {
        Located::Cluster(mut c) => {
            edit(&mut c.tags)?;
            Write::Cluster(c)
        }
        Located::TaskDef(mut td) => {
            edit(&mut td.tags)?;
            Write::TaskDef(*td)
        }
        Located::Task(mut t) => {
            edit(&mut t.tags)?;
            Write::Task(*t)
        }
        Located::Instance(mut i) => {
            edit(&mut i.tags)?;
            Write::Instance(*i)
        }
        Located::Service(mut s) => {
            edit(&mut s.tags)?;
            Write::Service(s)
        }
        Located::TaskSet(mut s, i) => {
            edit(&mut s.task_sets[i].tags)?;
            Write::Service(s)
        }
    };
    state.apply(core.store.as_ref(), vec![write]).await?;
    Ok(json!({}))
}

pub(crate) async fn list_tags(core: &Core, body: &Value) -> Result<Value, ApiError> {
    let resource = required(body, "resourceArn")?;
    let state = core.state.lock().await;
    let tags = match locate(&state, resource)? {
        Located::Cluster(c) => c.tags,
        Located::TaskDef(td) => td.tags,
        Located::Task(t) => t.tags,
        Located::Instance(i) => i.tags,
        Located::Service(s) => s.tags,
        Located::TaskSet(s, i) => s.task_sets[i].tags.clone(),
    };
    Ok(json!({ "tags": to_value(&tags) }))
}

pub(crate) enum Located {
    Cluster(Cluster),
    TaskDef(Box<TaskDefinition>),
    Task(Box<Task>),
    Instance(Box<ContainerInstance>),
    Service(Box<Service>),
    /// A service's task set, by its index.
    TaskSet(Box<Service>, usize),
}

pub(crate) fn locate(state: &State, resource: &str) -> Result<Located, ApiError> {
    let not_found = || {
        ApiError::not_found(
            "ResourceNotFoundException",
            format!("The specified resource {resource} is not found."),
        )
    };
    let path = resource
        .strip_prefix("arn:")
        .and_then(|r| r.splitn(5, ':').nth(4))
        .ok_or_else(|| ApiError::invalid_parameter(format!("{resource:?} is not an ARN.")))?;
    let (kind, rest) = path.split_once('/').ok_or_else(not_found)?;
    let found = match kind {
        "cluster" => state
            .clusters
            .get(rest)
            .filter(|c| c.value.status == "ACTIVE")
            .map(|c| Located::Cluster(c.value.clone())),
        "task-definition" => {
            let (family, rev) = rest.split_once(':').ok_or_else(not_found)?;
            rev.parse::<u32>()
                .ok()
                .and_then(|r| state.taskdefs.get(family)?.get(&r))
                .filter(|t| t.value.status != DELETED)
                .map(|t| Located::TaskDef(Box::new(t.value.clone())))
        }
        "task" => state
            .tasks
            .get(rest.rsplit('/').next().unwrap_or(rest))
            .map(|t| Located::Task(Box::new(t.value.clone()))),
        "service" => {
            // New-style ARNs name the cluster: service/CLUSTER/NAME.
            let key = if rest.contains('/') {
                rest.to_string()
            } else {
                format!("default/{rest}")
            };
            state
                .services
                .get(&key)
                .filter(|s| s.value.status != "INACTIVE")
                .map(|s| Located::Service(Box::new(s.value.clone())))
        }
        "task-set" => state
            .services
            .values()
            .map(|s| &s.value)
            .filter(|s| s.status != "INACTIVE")
            .find_map(|s| {
                let i = s
                    .task_sets
                    .iter()
                    .position(|t| t.task_set_arn == resource)?;
                Some(Located::TaskSet(Box::new(s.clone()), i))
            }),
        "container-instance" => state
            .instances
            .values()
            .find(|i| i.value.container_instance_arn == resource)
            .map(|i| Located::Instance(Box::new(i.value.clone()))),
        _ => None,
    };
    found.ok_or_else(not_found)
}
