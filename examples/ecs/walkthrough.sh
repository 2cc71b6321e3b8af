#!/usr/bin/env bash
# An ECS walkthrough driven only by the AWS CLI: a cluster, a task
# definition from a JSON file, a job run to completion, its exit code and
# its log lines; then a service kept at two tasks, one task stopped and
# replaced, a new revision rolled out, and the service deleted. Needs a
# running `skiff serve` (API on $SKIFF_API, default http://127.0.0.1:7700)
# with the images `hello:v1` and `sleeper:v1` pushed to its registry:
#
#   skiff serve &
#   skiff push hello.wasm 127.0.0.1:5050/hello:v1
#   skiff push sleeper.wasm 127.0.0.1:5050/sleeper:v1
#   bash examples/ecs/walkthrough.sh
#
# (`pip install awscli` gives the `aws` command.)
set -euo pipefail
cd "$(dirname "$0")"
# skiff accepts any signature when it has no credentials configured; the
# CLI still wants some, and a region.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-skiff}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-skiff}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_PAGER=""
ecs() { echo "\$ aws ecs $*" >&2; aws ecs "$@" --endpoint-url "${SKIFF_API:-http://127.0.0.1:7700}"; }
logs() { echo "\$ aws logs $*" >&2; aws logs "$@" --endpoint-url "${SKIFF_API:-http://127.0.0.1:7700}"; }

ecs create-cluster --cluster-name walkthrough --query 'cluster.[clusterName,status]' --output text
ecs register-task-definition --cli-input-json file://hello-job.json \
    --query 'taskDefinition.taskDefinitionArn' --output text
task=$(ecs run-task --task-definition hello-job --query 'tasks[0].taskArn' --output text)
echo "$task"
ecs wait tasks-stopped --tasks "$task"
ecs describe-tasks --tasks "$task" \
    --query 'tasks[0].{status:lastStatus,stopCode:stopCode,exitCode:containers[0].exitCode}' --output table
logs get-log-events --log-group-name /ecs/hello-job \
    --log-stream-name "job/hello/${task##*/}" --start-from-head \
    --query 'events[].message' --output text | tr '\t' '\n'
ecs describe-tasks --tasks no-such-task --query 'failures' --output text
ecs delete-cluster --cluster walkthrough --query 'cluster.[clusterName,status]' --output text

# A service: two copies of web, kept running by the service scheduler in
# cluster default (where the local container instance is).
ecs register-task-definition --cli-input-json file://web-service.json \
    --query 'taskDefinition.taskDefinitionArn' --output text
ecs create-service --service-name web --task-definition web --desired-count 2 \
    --query 'service.[serviceName,status,desiredCount]' --output text
ecs wait services-stable --services web
first=$(ecs list-tasks --service-name web --query 'taskArns[0]' --output text)
ecs stop-task --task "$first" --reason "walkthrough: show a replacement" \
    --query 'task.desiredStatus' --output text
ecs wait tasks-stopped --tasks "$first"
ecs wait services-stable --services web
# A new revision (same JSON, registered again) rolls out.
ecs register-task-definition --cli-input-json file://web-service.json \
    --query 'taskDefinition.taskDefinitionArn' --output text
ecs update-service --service web --task-definition web \
    --query 'service.deployments[].[status,taskDefinition]' --output text
ecs wait services-stable --services web
ecs describe-services --services web \
    --query 'services[0].{running:runningCount,desired:desiredCount,deployments:length(deployments),rollout:deployments[0].rolloutState}' \
    --output table
ecs describe-services --services web --query 'services[0].events[:4].message' --output text | tr '\t' '\n'
ecs delete-service --service web --force --query 'service.status' --output text
ecs wait services-inactive --services web
