//! The ECS API (`AmazonEC2ContainerServiceV20141113`): one module per
//! object family, each parsing its requests, calling the core and shaping
//! the answers as the AWS CLI and SDKs read them.

mod account;
mod clusters;
mod deployments;
mod instances;
mod launch;
mod service_fields;
pub(crate) mod services;
mod tags;
mod task_sets;
mod taskdefs;
mod tasks;

use crate::api::protocol::json::json_object;
use crate::core::Core;
use crate::error::ApiError;
use clusters::{
    create_cluster, delete_cluster, describe_capacity_providers, describe_clusters, list_clusters,
    put_cluster_capacity_providers, update_cluster, update_cluster_settings,
};
pub(crate) use deployments::arn_of;
use instances::{
    deregister_instance, describe_instances, list_attributes, list_instances, put_attributes,
    update_instances_state,
};
pub(crate) use instances::{discover_poll_endpoint, register_instance, registry_as_seen_from};
use serde_json::Value;
pub(crate) use service_fields::valid_name;
pub(crate) use services::{commit, find_service};
use tags::{list_tags, tag_resource};
use taskdefs::{
    delete_taskdefs, deregister_taskdef, describe_taskdef, list_families, list_taskdefs,
    register_taskdef,
};
use tasks::{
    describe_tasks, list_tasks, parse_network_configuration, run_task, start_task, stop_task,
};

/// Dispatches one ECS operation.
pub(crate) async fn handle(
    core: &Core,
    op: &str,
    body: &Value,
    region: &str,
) -> Result<Value, ApiError> {
    json_object(body)?;
    match op {
        "CreateCluster" => create_cluster(core, body, region).await,
        "DescribeClusters" => describe_clusters(core, body).await,
        "ListClusters" => list_clusters(core, body).await,
        "DeleteCluster" => delete_cluster(core, body).await,
        "UpdateCluster" => update_cluster(core, body).await,
        "UpdateClusterSettings" => update_cluster_settings(core, body).await,
        "PutClusterCapacityProviders" => put_cluster_capacity_providers(core, body).await,
        "DescribeCapacityProviders" => describe_capacity_providers(body, region),
        "ListContainerInstances" => list_instances(core, body).await,
        "DescribeContainerInstances" => describe_instances(core, body, region).await,
        "UpdateContainerInstancesState" => update_instances_state(core, body, region).await,
        "RegisterContainerInstance" => register_instance(core, body, region, None).await,
        "DeregisterContainerInstance" => deregister_instance(core, body, region).await,
        "PutAttributes" => put_attributes(core, body, false).await,
        "DeleteAttributes" => put_attributes(core, body, true).await,
        "ListAttributes" => list_attributes(core, body).await,
        "RegisterTaskDefinition" => register_taskdef(core, body, region).await,
        "DescribeTaskDefinition" => describe_taskdef(core, body).await,
        "ListTaskDefinitions" => list_taskdefs(core, body).await,
        "ListTaskDefinitionFamilies" => list_families(core, body).await,
        "DeregisterTaskDefinition" => deregister_taskdef(core, body).await,
        "DeleteTaskDefinitions" => delete_taskdefs(core, body, region).await,
        "RunTask" => run_task(core, body, region, None).await,
        "StartTask" => start_task(core, body, region).await,
        "StopTask" => stop_task(core, body).await,
        "DescribeTasks" => describe_tasks(core, body, region).await,
        "ListTasks" => list_tasks(core, body).await,
        "CreateService" => services::create_service(core, body, region).await,
        "UpdateService" => services::update_service(core, body).await,
        "DeleteService" => services::delete_service(core, body).await,
        "DescribeServices" => services::describe_services(core, body, region).await,
        "ListServices" => services::list_services(core, body).await,
        "ListServicesByNamespace" => services::list_services_by_namespace(core, body).await,
        "ListServiceDeployments" => deployments::list(core, body).await,
        "DescribeServiceDeployments" => deployments::describe(core, body).await,
        "DescribeServiceRevisions" => deployments::describe_revisions(core, body).await,
        "StopServiceDeployment" => deployments::stop(core, body).await,
        "CreateTaskSet" => task_sets::create(core, body, region).await,
        "DescribeTaskSets" => task_sets::describe(core, body, region).await,
        "UpdateTaskSet" => task_sets::update(core, body).await,
        "DeleteTaskSet" => task_sets::delete(core, body).await,
        "UpdateServicePrimaryTaskSet" => task_sets::make_primary(core, body).await,
        "PutAccountSetting" => account::put_setting(core, body, false).await,
        "PutAccountSettingDefault" => account::put_setting(core, body, true).await,
        "DeleteAccountSetting" => account::delete_setting(core, body).await,
        "ListAccountSettings" => account::list_settings(core, body).await,
        "UpdateTaskProtection" => account::update_task_protection(core, body).await,
        "GetTaskProtection" => account::get_task_protection(core, body).await,
        "TagResource" => tag_resource(core, body, false).await,
        "UntagResource" => tag_resource(core, body, true).await,
        "ListTagsForResource" => list_tags(core, body).await,
        other => Err(ApiError::unknown_operation(&format!(
            "AmazonEC2ContainerServiceV20141113.{other}"
        ))),
    }
}
