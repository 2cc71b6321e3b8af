//! Every operation of the services skiff answers, from AWS's own models
//! (`control/models/operations.json`, written by `extract.py` from
//! botocore), and what skiff does with each: honours it, refuses it
//! because it has no meaning on a Wasm host (and says why), or does not
//! serve it yet. The dispatchers consult this before an operation runs,
//! so an operation the table does not call honoured is refused with its
//! reason, never half-answered; `docs/API.md` is this table, rendered
//! and kept true by a test that calls every operation on a live server.

use crate::error::ApiError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A service whose operations the table lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Ecs,
    Ecr,
    Elbv2,
    CloudMap,
    Ec2,
    Logs,
    CloudWatch,
}

impl Service {
    /// All of them, in the order docs/API.md lists them.
    pub const ALL: [Service; 7] = [
        Service::Ecs,
        Service::Ecr,
        Service::Elbv2,
        Service::CloudMap,
        Service::Ec2,
        Service::Logs,
        Service::CloudWatch,
    ];

    /// botocore's name for it.
    pub fn model_name(self) -> &'static str {
        match self {
            Service::Ecs => "ecs",
            Service::Ecr => "ecr",
            Service::Elbv2 => "elbv2",
            Service::CloudMap => "servicediscovery",
            Service::Ec2 => "ec2",
            Service::Logs => "logs",
            Service::CloudWatch => "cloudwatch",
        }
    }

    /// The name people know it by.
    pub fn title(self) -> &'static str {
        match self {
            Service::Ecs => "Amazon ECS",
            Service::Ecr => "Amazon ECR",
            Service::Elbv2 => "Elastic Load Balancing v2",
            Service::CloudMap => "AWS Cloud Map",
            Service::Ec2 => "Amazon EC2 (networking)",
            Service::Logs => "CloudWatch Logs",
            Service::CloudWatch => "CloudWatch (metrics)",
        }
    }
}

/// What skiff does with one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Answered as AWS answers it (the note says what differs, if
    /// anything).
    Honoured(&'static str),
    /// Refused: it has no meaning on a Wasm host, for the reason given.
    Refused(&'static str),
    /// Not served yet.
    NotYet,
}

#[derive(Deserialize)]
struct Listed {
    source: String,
    operations: Vec<String>,
}

static MODELS: LazyLock<BTreeMap<String, Listed>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../models/operations.json")).unwrap_or_default()
});

/// Every operation of `service` in AWS's model, sorted.
pub fn operations(service: Service) -> &'static [String] {
    MODELS
        .get(service.model_name())
        .map(|l| l.operations.as_slice())
        .unwrap_or_default()
}

/// Which botocore model the list comes from.
pub fn source(service: Service) -> &'static str {
    MODELS
        .get(service.model_name())
        .map(|l| l.source.as_str())
        .unwrap_or_default()
}

/// What skiff does with `op` of `service`; `None`: AWS has no such
/// operation.
pub fn status(service: Service, op: &str) -> Option<Status> {
    operations(service).iter().find(|o| *o == op)?;
    let (honoured, refused) = table(service);
    if let Some((_, note)) = honoured.iter().find(|(o, _)| *o == op) {
        return Some(Status::Honoured(note));
    }
    if let Some((_, why)) = refused.iter().find(|(o, _)| *o == op) {
        return Some(Status::Refused(why));
    }
    Some(Status::NotYet)
}

/// The error an operation of the model gets when skiff does not honour
/// it; `Ok` for an honoured one and for names the model does not have
/// (the dispatcher answers those as AWS answers an unknown operation).
pub(crate) fn admit(service: Service, op: &str) -> Result<(), ApiError> {
    match status(service, op) {
        None | Some(Status::Honoured(_)) => Ok(()),
        Some(Status::Refused(why)) => Err(ApiError::coded(
            "UnsupportedOperation",
            format!("skiff does not serve {} {op}: {why}", service.title()),
        )),
        Some(Status::NotYet) => Err(ApiError::coded(
            "UnsupportedOperation",
            format!(
                "skiff does not serve {} {op} yet (docs/API.md lists what it serves)",
                service.title()
            ),
        )),
    }
}

type Table = (
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
);

/// (honoured with a note, refused with the reason) for one service.
fn table(service: Service) -> Table {
    match service {
        Service::Ecs => (ECS_HONOURED, ECS_REFUSED),
        Service::Ecr => (ECR_HONOURED, ECR_REFUSED),
        Service::Elbv2 => (ELBV2_HONOURED, ELBV2_REFUSED),
        Service::CloudMap => (CLOUDMAP_HONOURED, CLOUDMAP_REFUSED),
        Service::Ec2 => (EC2_HONOURED, EC2_REFUSED),
        Service::Logs => (LOGS_HONOURED, LOGS_REFUSED),
        Service::CloudWatch => (CLOUDWATCH_HONOURED, CLOUDWATCH_REFUSED),
    }
}

const NO_IAM: &str = "skiff has no IAM, so there are no identities a policy could name";
const NO_S3: &str = "there is no S3 here to read from or write to";
const NO_KMS: &str = "there is no KMS here; data is stored on the machine's own disk";
const NO_ASG: &str = "a capacity provider of your own manages an EC2 Auto Scaling group or managed instances, and there are none here: machines join with `skiff agent`; FARGATE and FARGATE_SPOT are built in";
const NO_TLS: &str =
    "skiff's load balancers listen in plain HTTP and TCP; there are no certificates to manage";

const ECS_HONOURED: &[(&str, &str)] = &[
    ("CreateCluster", ""),
    ("DeleteCluster", ""),
    ("DeleteAttributes", ""),
    ("DeleteTaskDefinitions", ""),
    ("DeregisterContainerInstance", ""),
    ("DeregisterTaskDefinition", ""),
    ("DescribeClusters", ""),
    ("DescribeContainerInstances", ""),
    ("DescribeServices", ""),
    ("DescribeTaskDefinition", ""),
    ("DescribeTasks", ""),
    (
        "DiscoverPollEndpoint",
        "answers the endpoint `skiff agent` holds its channel on",
    ),
    ("ListAttributes", ""),
    ("ListClusters", ""),
    ("ListContainerInstances", ""),
    ("ListServices", ""),
    ("ListTagsForResource", ""),
    ("ListTaskDefinitionFamilies", ""),
    ("ListTaskDefinitions", ""),
    ("ListTasks", ""),
    ("PutAttributes", ""),
    (
        "RegisterContainerInstance",
        "what `skiff agent` calls to join a cluster",
    ),
    ("RegisterTaskDefinition", ""),
    ("RunTask", ""),
    ("StartTask", ""),
    ("StopTask", ""),
    ("TagResource", ""),
    ("UntagResource", ""),
    ("UpdateContainerInstancesState", ""),
    (
        "ListServicesByNamespace",
        "services registered in the namespace by serviceRegistries",
    ),
    (
        "PutAccountSetting",
        "for the account root (there is no IAM); a value skiff cannot honour is refused with why",
    ),
    ("PutAccountSettingDefault", ""),
    ("DeleteAccountSetting", ""),
    ("ListAccountSettings", ""),
    (
        "UpdateTaskProtection",
        "scale-in and deployments spare a protected task until it expires",
    ),
    ("GetTaskProtection", ""),
    (
        "ListServiceDeployments",
        "each service's last 100 deployments",
    ),
    ("DescribeServiceDeployments", ""),
    (
        "DescribeServiceRevisions",
        "a revision is the service's launch settings when its deployment began",
    ),
    (
        "StopServiceDeployment",
        "ROLLBACK, to the last completed deployment",
    ),
    (
        "UpdateCluster",
        "settings and configuration; execute-command settings are kept as data",
    ),
    (
        "UpdateClusterSettings",
        "containerInsights stays disabled: skiff publishes no Container Insights metrics",
    ),
    (
        "PutClusterCapacityProviders",
        "FARGATE and FARGATE_SPOT, and the cluster's default strategy",
    ),
    (
        "DescribeCapacityProviders",
        "the built-in FARGATE and FARGATE_SPOT",
    ),
    (
        "CreateService",
        "deploymentController ECS (rolling) or EXTERNAL (task sets); CODE_DEPLOY refused: no CodeDeploy",
    ),
    ("UpdateService", ""),
    ("DeleteService", ""),
    (
        "CreateTaskSet",
        "every task set of an EXTERNAL service runs at once, at its share of desiredCount",
    ),
    ("DescribeTaskSets", ""),
    (
        "CreateExpressGatewayService",
        "makes a task definition, a security group, an ALB (its listener on a free port is the http:// endpoint) and a target group; scales by target tracking; repositoryCredentials refused (no Secrets Manager)",
    ),
    ("DescribeExpressGatewayService", ""),
    (
        "UpdateExpressGatewayService",
        "a new revision rolls out when what the tasks run changes; scaling and health check change in place",
    ),
    (
        "DeleteExpressGatewayService",
        "its load balancer goes at once; its target group and security group once its tasks have stopped",
    ),
    ("UpdateTaskSet", ""),
    (
        "DeleteTaskSet",
        "drains it: its targets deregister, its tasks stop",
    ),
    (
        "UpdateServicePrimaryTaskSet",
        "DescribeServices shows the primary task set's settings",
    ),
];

const AGENT_REPORTS: &str = "container instances here report over `skiff agent`'s channel, in these operations' shapes; there is no ECS container agent to call them over HTTP";

const ECS_REFUSED: &[(&str, &str)] = &[
    (
        "ContinueServiceDeployment",
        "skiff's deployments are rolling ones; there is no blue/green deployment paused at a lifecycle hook to continue",
    ),
    ("SubmitTaskStateChange", AGENT_REPORTS),
    ("SubmitContainerStateChange", AGENT_REPORTS),
    ("SubmitAttachmentStateChanges", AGENT_REPORTS),
    ("CreateCapacityProvider", NO_ASG),
    ("UpdateCapacityProvider", NO_ASG),
    ("DeleteCapacityProvider", NO_ASG),
    (
        "ExecuteCommand",
        "a Wasm task has no shell or processes to open a session into",
    ),
    (
        "UpdateContainerAgent",
        "there is no separate container agent to update: an instance runs the `skiff` binary, updated by replacing it",
    ),
    ("CreateDaemon", NO_MANAGED_INSTANCES),
    ("UpdateDaemon", NO_MANAGED_INSTANCES),
    ("DeleteDaemon", NO_MANAGED_INSTANCES),
    ("DescribeDaemon", NO_MANAGED_INSTANCES),
    ("ListDaemons", NO_MANAGED_INSTANCES),
    ("DescribeDaemonDeployments", NO_MANAGED_INSTANCES),
    ("ListDaemonDeployments", NO_MANAGED_INSTANCES),
    ("DescribeDaemonRevisions", NO_MANAGED_INSTANCES),
    ("RegisterDaemonTaskDefinition", NO_MANAGED_INSTANCES),
    ("DescribeDaemonTaskDefinition", NO_MANAGED_INSTANCES),
    ("ListDaemonTaskDefinitions", NO_MANAGED_INSTANCES),
    ("DeleteDaemonTaskDefinition", NO_MANAGED_INSTANCES),
];

const NO_PRINCIPALS: &str = "an exclusion names an IAM principal whose pulls leave an image's last pull time alone; skiff has no IAM principals (pulls are anonymous or by registry token) and records no pull times";

const NO_MANAGED_INSTANCES: &str = "ECS daemons run on the instances of ECS Managed Instances capacity providers, which skiff has none of (CreateCapacityProvider is refused); a service with schedulingStrategy DAEMON runs one task on every container instance";

const ECR_HONOURED: &[(&str, &str)] = &[
    ("BatchDeleteImage", ""),
    ("CreateRepository", ""),
    ("DeleteLifecyclePolicy", ""),
    ("DeleteRepository", ""),
    (
        "DescribeImageScanFindings",
        "a scan checks that the image is a valid Wasm module or component; it finds no CVEs",
    ),
    ("DescribeImages", ""),
    ("DescribeRepositories", ""),
    ("GetAuthorizationToken", ""),
    ("GetLifecyclePolicy", ""),
    ("GetLifecyclePolicyPreview", ""),
    ("ListImages", ""),
    ("PutImageScanningConfiguration", ""),
    ("PutImageTagMutability", ""),
    ("PutLifecyclePolicy", ""),
    ("StartImageScan", ""),
    ("StartLifecyclePolicyPreview", ""),
    (
        "BatchGetImage",
        "through the registry's own API, so the same rules hold as for a push",
    ),
    (
        "PutImage",
        "retags and pushes manifests through the registry's own API (tag immutability, referenced layers)",
    ),
    ("BatchCheckLayerAvailability", ""),
    ("InitiateLayerUpload", ""),
    ("UploadLayerPart", ""),
    ("CompleteLayerUpload", ""),
    ("TagResource", "repositories"),
    ("UntagResource", "repositories"),
    ("ListTagsForResource", "repositories"),
    (
        "SetRepositoryPolicy",
        "validated and kept; skiff has no IAM identities yet for a policy to grant or deny anything to",
    ),
    ("GetRepositoryPolicy", ""),
    ("DeleteRepositoryPolicy", ""),
    (
        "PutRegistryPolicy",
        "validated and kept; skiff has no IAM identities yet for a policy to grant or deny anything to",
    ),
    ("GetRegistryPolicy", ""),
    ("DeleteRegistryPolicy", ""),
    ("DescribeRegistry", "with its replication rules"),
    (
        "PutReplicationConfiguration",
        "a destination is another skiff's registry, named by `skiff serve --replication-peer REGION/ACCOUNT=HOST:PORT`; every image of a matching repository is copied there with all its tags",
    ),
    ("GetRegistryScanningConfiguration", ""),
    (
        "PutRegistryScanningConfiguration",
        "BASIC scan-on-push rules, applied to the repositories they match, now and when made",
    ),
    ("BatchGetRepositoryScanningConfiguration", ""),
    (
        "GetAccountSetting",
        "BASIC_SCAN_TYPE_VERSION and REGISTRY_POLICY_SCOPE",
    ),
    (
        "PutAccountSetting",
        "BASIC_SCAN_TYPE_VERSION stays AWS_NATIVE: skiff's scan is its own",
    ),
    (
        "ListImageReferrers",
        "from the registry's OCI referrers API",
    ),
    (
        "DescribeImageReplicationStatus",
        "COMPLETE, FAILED (with why) or IN_PROGRESS per destination",
    ),
    (
        "CreateRepositoryCreationTemplate",
        "applied to repositories the registry makes on a push, a pull through a cache rule, or another skiff's replication: tag mutability, lifecycle policy, repository policy, tags; AES256 only (no KMS)",
    ),
    ("DescribeRepositoryCreationTemplates", ""),
    ("UpdateRepositoryCreationTemplate", ""),
    (
        "DeleteRepositoryCreationTemplate",
        "repositories made from it keep their settings",
    ),
    (
        "CreatePullThroughCacheRule",
        "the registry fetches PREFIX/REPO from the upstream on its first pull and serves the copy (tags re-checked daily); anonymous upstreams only",
    ),
    ("DescribePullThroughCacheRules", ""),
    ("DeletePullThroughCacheRule", "what was cached stays"),
    ("ValidatePullThroughCacheRule", "asks the upstream now"),
    (
        "GetDownloadUrlForLayer",
        "the registry's blob URL (with the registry's authentication on, fetch it with a registry login)",
    ),
];

const ECR_REFUSED: &[(&str, &str)] = &[
    ("RegisterPullTimeUpdateExclusion", NO_PRINCIPALS),
    ("DeregisterPullTimeUpdateExclusion", NO_PRINCIPALS),
    ("ListPullTimeUpdateExclusions", NO_PRINCIPALS),
    (
        "UpdatePullThroughCacheRule",
        "it changes a rule's upstream credentials (credentialArn, customRoleArn), which live in Secrets Manager and IAM; skiff pulls from upstreams anonymously",
    ),
    (
        "UpdateImageStorageClass",
        "skiff's registry has one storage class: the machine's disk",
    ),
    (
        "DescribeImageSigningStatus",
        "image signing is AWS Signer's, which does not exist here",
    ),
    (
        "GetSigningConfiguration",
        "image signing is AWS Signer's, which does not exist here",
    ),
    (
        "PutSigningConfiguration",
        "image signing is AWS Signer's, which does not exist here",
    ),
    (
        "DeleteSigningConfiguration",
        "image signing is AWS Signer's, which does not exist here",
    ),
];

const ELBV2_HONOURED: &[(&str, &str)] = &[
    ("AddTags", ""),
    (
        "CreateListener",
        "forward (to one target group, or to up to 5 by weight: each request weighed on its own, no group stickiness) or fixed-response",
    ),
    ("CreateLoadBalancer", ""),
    ("CreateRule", ""),
    ("CreateTargetGroup", ""),
    ("DeleteListener", ""),
    ("DeleteLoadBalancer", ""),
    ("DeleteRule", ""),
    ("DeleteTargetGroup", ""),
    ("DeregisterTargets", ""),
    ("DescribeListeners", ""),
    ("DescribeLoadBalancers", ""),
    ("DescribeRules", ""),
    ("DescribeTags", ""),
    ("DescribeTargetGroupAttributes", ""),
    ("DescribeTargetGroups", ""),
    ("DescribeTargetHealth", ""),
    ("ModifyTargetGroupAttributes", ""),
    ("RegisterTargets", ""),
    ("RemoveTags", ""),
    ("ModifyTargetGroup", "its health check"),
    ("DescribeLoadBalancerAttributes", "AWS's full default set"),
    (
        "ModifyLoadBalancerAttributes",
        "deletion protection is enforced; a value skiff cannot honour is refused with why",
    ),
    ("DescribeListenerAttributes", ""),
    ("ModifyListenerAttributes", ""),
    (
        "ModifyListener",
        "port and default actions (HTTP and TCP listeners)",
    ),
    ("ModifyRule", "conditions and actions"),
    ("SetRulePriorities", ""),
    ("SetSecurityGroups", "application load balancers"),
    ("SetSubnets", "subnets are labels"),
    ("SetIpAddressType", "ipv4"),
    (
        "DescribeAccountLimits",
        "AWS's default quotas, for tools that read them; skiff does not count them",
    ),
];

const ELBV2_REFUSED: &[(&str, &str)] = &[
    ("AddListenerCertificates", NO_TLS),
    ("RemoveListenerCertificates", NO_TLS),
    ("DescribeListenerCertificates", NO_TLS),
    ("DescribeSSLPolicies", NO_TLS),
    ("CreateTrustStore", NO_TLS),
    ("DeleteTrustStore", NO_TLS),
    ("ModifyTrustStore", NO_TLS),
    ("DescribeTrustStores", NO_TLS),
    ("DescribeTrustStoreAssociations", NO_TLS),
    ("DeleteSharedTrustStoreAssociation", NO_TLS),
    ("AddTrustStoreRevocations", NO_TLS),
    ("RemoveTrustStoreRevocations", NO_TLS),
    ("DescribeTrustStoreRevocations", NO_TLS),
    ("GetTrustStoreCaCertificatesBundle", NO_TLS),
    ("GetTrustStoreRevocationContent", NO_TLS),
    (
        "DescribeCapacityReservation",
        "a load balancer here is a process on your machine: there is no capacity to reserve",
    ),
    (
        "ModifyCapacityReservation",
        "a load balancer here is a process on your machine: there is no capacity to reserve",
    ),
    (
        "ModifyIpPools",
        "there are no IPAM pools: load balancer addresses come from loopback",
    ),
    ("GetResourcePolicy", NO_IAM),
];

const CLOUDMAP_HONOURED: &[(&str, &str)] = &[
    ("CreateHttpNamespace", ""),
    (
        "CreatePrivateDnsNamespace",
        "names resolve inside tasks through skiff's resolver; there is no Route 53 hosted zone",
    ),
    ("CreateService", ""),
    ("DeleteNamespace", ""),
    ("DeleteService", ""),
    ("DeregisterInstance", ""),
    ("DiscoverInstances", ""),
    ("GetNamespace", ""),
    ("GetOperation", ""),
    ("GetService", ""),
    ("ListInstances", ""),
    ("ListNamespaces", ""),
    ("ListServices", ""),
    ("RegisterInstance", ""),
    ("UpdateHttpNamespace", "its description"),
    ("UpdatePrivateDnsNamespace", "its description"),
    ("UpdateService", "description and the A record's TTL"),
    ("GetServiceAttributes", ""),
    ("UpdateServiceAttributes", ""),
    ("DeleteServiceAttributes", ""),
    ("GetInstance", ""),
    ("GetInstancesHealthStatus", ""),
    (
        "UpdateInstanceCustomHealthStatus",
        "instances registered through the API; an UNHEALTHY one leaves DNS answers and DiscoverInstances",
    ),
    ("TagResource", "namespaces and services"),
    ("UntagResource", "namespaces and services"),
    ("ListTagsForResource", "namespaces and services"),
    ("ListOperations", ""),
    (
        "DiscoverInstancesRevision",
        "changes whenever the instances or their health do",
    ),
];

const NO_PUBLIC_DNS: &str = "skiff's names are never public: tasks resolve them through skiff's resolver, and nothing is published to the internet";

const CLOUDMAP_REFUSED: &[(&str, &str)] = &[
    ("CreatePublicDnsNamespace", NO_PUBLIC_DNS),
    ("UpdatePublicDnsNamespace", NO_PUBLIC_DNS),
];

const EC2_HONOURED: &[(&str, &str)] = &[
    ("AuthorizeSecurityGroupEgress", ""),
    ("AuthorizeSecurityGroupIngress", ""),
    ("CreateSecurityGroup", ""),
    ("DeleteSecurityGroup", ""),
    ("DescribeSecurityGroups", ""),
    (
        "DescribeVpcs",
        "skiff's one VPC: loopback (127.0.0.0/8), where every task address is",
    ),
    (
        "DescribeSubnets",
        "subnets are labels sharing the VPC's range: the default one and each one a task or service names",
    ),
    (
        "DescribeNetworkInterfaces",
        "each live awsvpc task's interface; Association.PublicIp is its machine's address when it asked for assignPublicIp",
    ),
    ("DescribeAvailabilityZones", "one zone per region"),
    ("DescribeRegions", "the region this skiff serve is"),
    (
        "DescribeAccountAttributes",
        "supported-platforms (VPC) and default-vpc",
    ),
    ("DescribeVpcAttribute", "DNS support and hostnames are on"),
    ("CreateTags", "security groups"),
    ("DeleteTags", "security groups"),
    ("DescribeTags", "security groups"),
    ("DescribeSecurityGroupRules", ""),
    ("ModifySecurityGroupRules", ""),
    ("UpdateSecurityGroupRuleDescriptionsIngress", ""),
    ("UpdateSecurityGroupRuleDescriptionsEgress", ""),
    ("RevokeSecurityGroupEgress", ""),
    ("RevokeSecurityGroupIngress", ""),
];

const NO_GATEWAYS: &str = "a task's traffic leaves through its machine's own network stack; there are no gateways or route tables to manage";
const NO_SPARE_ENIS: &str = "a network interface here exists only as a task's awsvpc attachment, made and removed with the task";

const ONE_VPC: &str = "skiff has one VPC, loopback (127.0.0.0/8), where every task address is: there is no other to make, change or remove";
const SUBNET_LABELS: &str = "subnets are labels: name any subnet-... id in awsvpcConfiguration (describe-subnets lists the default one and those in use)";
const ENI_FIXED: &str =
    "a task's interface is made with the task and keeps the groups it was launched with";

const EC2_REFUSED: &[(&str, &str)] = &[
    ("CreateVpc", ONE_VPC),
    ("DeleteVpc", ONE_VPC),
    ("CreateDefaultVpc", ONE_VPC),
    ("ModifyVpcAttribute", ONE_VPC),
    ("CreateSubnet", SUBNET_LABELS),
    ("DeleteSubnet", SUBNET_LABELS),
    ("CreateDefaultSubnet", SUBNET_LABELS),
    ("DescribeInternetGateways", NO_GATEWAYS),
    ("DescribeRouteTables", NO_GATEWAYS),
    (
        "DescribeAddresses",
        "there are no Elastic IPs: a task's public address is its machine's (assignPublicIp)",
    ),
    ("DescribeNetworkInterfaceAttribute", ENI_FIXED),
    ("ModifyNetworkInterfaceAttribute", ENI_FIXED),
    ("CreateInternetGateway", NO_GATEWAYS),
    ("DeleteInternetGateway", NO_GATEWAYS),
    ("AttachInternetGateway", NO_GATEWAYS),
    ("DetachInternetGateway", NO_GATEWAYS),
    ("CreateRouteTable", NO_GATEWAYS),
    ("DeleteRouteTable", NO_GATEWAYS),
    ("AssociateRouteTable", NO_GATEWAYS),
    ("DisassociateRouteTable", NO_GATEWAYS),
    ("CreateNetworkInterface", NO_SPARE_ENIS),
    ("DeleteNetworkInterface", NO_SPARE_ENIS),
    ("AttachNetworkInterface", NO_SPARE_ENIS),
    ("DetachNetworkInterface", NO_SPARE_ENIS),
    ("CreateNetworkInterfacePermission", NO_IAM),
    ("DeleteNetworkInterfacePermission", NO_IAM),
    ("DescribeNetworkInterfacePermissions", NO_IAM),
    (
        "AssignIpv6Addresses",
        "task addresses are IPv4 loopback addresses",
    ),
    (
        "UnassignIpv6Addresses",
        "task addresses are IPv4 loopback addresses",
    ),
    (
        "AssignPrivateIpAddresses",
        "a task has exactly one address, chosen by skiff",
    ),
    (
        "UnassignPrivateIpAddresses",
        "a task has exactly one address, chosen by skiff",
    ),
    (
        "AllocateAddress",
        "there are no Elastic IPs: a task's public address is its machine's (assignPublicIp)",
    ),
    (
        "ReleaseAddress",
        "there are no Elastic IPs: a task's public address is its machine's (assignPublicIp)",
    ),
    (
        "AssociateAddress",
        "there are no Elastic IPs: a task's public address is its machine's (assignPublicIp)",
    ),
    (
        "DisassociateAddress",
        "there are no Elastic IPs: a task's public address is its machine's (assignPublicIp)",
    ),
    (
        "AssociateVpcCidrBlock",
        "skiff's one VPC has the task address range it was started with",
    ),
    (
        "DisassociateVpcCidrBlock",
        "skiff's one VPC has the task address range it was started with",
    ),
    (
        "AssociateSubnetCidrBlock",
        "a subnet's range is fixed by skiff's address plan",
    ),
    (
        "DisassociateSubnetCidrBlock",
        "a subnet's range is fixed by skiff's address plan",
    ),
];

const LOGS_HONOURED: &[(&str, &str)] = &[
    ("CreateLogGroup", ""),
    ("CreateLogStream", ""),
    ("DeleteLogGroup", ""),
    ("DescribeLogGroups", ""),
    ("DescribeLogStreams", ""),
    ("FilterLogEvents", ""),
    ("GetLogEvents", ""),
    ("PutLogEvents", ""),
    ("DeleteLogStream", ""),
    (
        "PutRetentionPolicy",
        "enforced: older events are deleted, never read, and refused by PutLogEvents",
    ),
    ("DeleteRetentionPolicy", ""),
    ("TagLogGroup", ""),
    ("UntagLogGroup", ""),
    ("ListTagsLogGroup", ""),
    ("TagResource", "log groups"),
    ("UntagResource", "log groups"),
    ("ListTagsForResource", "log groups"),
];

const LOGS_REFUSED: &[(&str, &str)] = &[
    ("AssociateKmsKey", NO_KMS),
    ("DisassociateKmsKey", NO_KMS),
    ("CreateExportTask", NO_S3),
    ("CancelExportTask", NO_S3),
    ("DescribeExportTasks", NO_S3),
    ("CreateImportTask", NO_S3),
    ("CancelImportTask", NO_S3),
    ("DescribeImportTasks", NO_S3),
    ("DescribeImportTaskBatches", NO_S3),
    ("AssociateSourceToS3TableIntegration", NO_S3),
    ("DisassociateSourceFromS3TableIntegration", NO_S3),
    ("ListSourcesForS3TableIntegration", NO_S3),
    ("PutResourcePolicy", NO_IAM),
    ("DeleteResourcePolicy", NO_IAM),
    ("DescribeResourcePolicies", NO_IAM),
    ("PutAccountPolicy", NO_IAM),
    ("DeleteAccountPolicy", NO_IAM),
    ("DescribeAccountPolicies", NO_IAM),
    ("PutBearerTokenAuthentication", NO_IAM),
];

const CLOUDWATCH_HONOURED: &[(&str, &str)] = &[
    ("GetMetricData", ""),
    ("GetMetricStatistics", ""),
    ("ListMetrics", ""),
];

const CLOUDWATCH_REFUSED: &[(&str, &str)] = &[(
    "GetMetricWidgetImage",
    "skiff draws no graphs; GetMetricData returns the same figures",
)];

/// docs/API.md: every operation of every service, with its status.
pub fn render_markdown() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    out.push_str(
        "# The AWS operations skiff answers\n\n\
         Generated from `control/src/api/catalog.rs` by the test `api_table_is_true`\n\
         (`SKIFF_BLESS=1 cargo nextest run -E 'test(api_table_is_true)'` rewrites it),\n\
         which also calls every operation below on a running `skiff serve` and fails\n\
         if its answer does not match the status given here. The lists are every\n\
         operation in botocore's service models (EC2: its networking calls).\n\n\
         - **honoured**: answered as AWS answers it (notes say what differs);\n\
         - **refused**: it has no meaning on a Wasm host; the error says why;\n\
         - **not yet**: not served yet; the error (`UnsupportedOperation`, HTTP 400)\n  says so.\n\n",
    );
    out.push_str("| Service | Honoured | Refused | Not yet | Of |\n|---|---:|---:|---:|---:|\n");
    for service in Service::ALL {
        let (mut h, mut r, mut n) = (0, 0, 0);
        for op in operations(service) {
            match status(service, op) {
                Some(Status::Honoured(_)) => h += 1,
                Some(Status::Refused(_)) => r += 1,
                _ => n += 1,
            }
        }
        let _ = writeln!(
            out,
            "| {} | {h} | {r} | {n} | {} |",
            service.title(),
            h + r + n
        );
    }
    for service in Service::ALL {
        let _ = write!(
            out,
            "\n## {}\n\nFrom {}.\n\n| Operation | Status | Notes |\n|---|---|---|\n",
            service.title(),
            source(service)
        );
        for op in operations(service) {
            let (word, note) = match status(service, op) {
                Some(Status::Honoured(note)) => ("honoured", note),
                Some(Status::Refused(why)) => ("refused", why),
                _ => ("not yet", ""),
            };
            let _ = writeln!(out, "| {op} | {word} | {} |", note.replace('|', "\\|"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_is_listed_and_every_entry_is_a_real_operation() {
        for service in Service::ALL {
            assert!(operations(service).len() > 20, "{service:?}");
            let (honoured, refused) = table(service);
            for (op, _) in honoured.iter().chain(refused) {
                assert!(
                    operations(service).iter().any(|o| o == op),
                    "{service:?} has no operation {op}"
                );
                assert!(
                    honoured.iter().filter(|(o, _)| o == op).count()
                        + refused.iter().filter(|(o, _)| o == op).count()
                        == 1,
                    "{service:?} {op} is listed twice"
                );
            }
        }
    }

    #[test]
    fn refusals_name_the_operation_and_why() {
        let e = admit(Service::Ecs, "ExecuteCommand").unwrap_err();
        assert_eq!((e.kind, e.status), ("UnsupportedOperation", 400));
        assert!(e.message.contains("ExecuteCommand") && e.message.contains("no shell"));
        let e = admit(Service::Logs, "CreateDelivery").unwrap_err();
        assert!(e.message.contains("yet"), "{}", e.message);
        admit(Service::Ecs, "RunTask").unwrap();
        admit(Service::Ecs, "NoSuchOperation").unwrap();
    }
}
