#!/usr/bin/env bash
# The README's networking example, run as is by the tests
# (tests/all/readme.rs): a security group, a Cloud Map namespace and
# service, an application load balancer, and an awsvpc service behind
# both, against a running `skiff serve`.
set -euo pipefail
ENDPOINT=${SKIFF_ENDPOINT:-http://127.0.0.1:7700}
REGISTRY=${SKIFF_REGISTRY:-127.0.0.1:5050}
LB_PORT=${LB_PORT:-8000}
export AWS_DISABLE_HOST_PREFIX_INJECTION=true   # Cloud Map's DiscoverInstances, on our endpoint
aws() { command aws --endpoint-url "$ENDPOINT" --output text "$@"; }

skiff push "${HELLO_HTTP:?the path of a wasi:http component}" "$REGISTRY/web:v1"
SG=$(aws ec2 create-security-group --group-name web --description web --query GroupId)
aws ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp --port 80 --cidr 127.0.0.0/8 >/dev/null
VPC=$(aws ec2 describe-vpcs --query 'Vpcs[0].VpcId')
SUBNET=$(aws ec2 describe-subnets --query 'Subnets[0].SubnetId')
OP=$(aws servicediscovery create-private-dns-namespace --name local --vpc "$VPC" --query OperationId)
NS=$(aws servicediscovery get-operation --operation-id "$OP" --query Operation.Targets.NAMESPACE)
REG=$(aws servicediscovery create-service --name web --namespace-id "$NS" \
    --dns-config 'RoutingPolicy=MULTIVALUE,DnsRecords=[{Type=A,TTL=10}]' --query Service.Arn)
LB=$(aws elbv2 create-load-balancer --name shop --subnets "$SUBNET" --query 'LoadBalancers[0].LoadBalancerArn')
TG=$(aws elbv2 create-target-group --name web --protocol HTTP --port 80 --target-type ip \
    --vpc-id "$VPC" --health-check-path /health --query 'TargetGroups[0].TargetGroupArn')
aws elbv2 create-listener --load-balancer-arn "$LB" --protocol HTTP --port "$LB_PORT" \
    --default-actions "Type=forward,TargetGroupArn=$TG" >/dev/null
aws ecs register-task-definition --family web --network-mode awsvpc --container-definitions \
    "[{\"name\": \"web\", \"image\": \"$REGISTRY/web:v1\", \"memory\": 64, \"portMappings\": [{\"containerPort\": 80}]}]" >/dev/null
aws ecs create-service --service-name web --task-definition web --desired-count 2 \
    --network-configuration "awsvpcConfiguration={subnets=[$SUBNET],securityGroups=[$SG]}" \
    --load-balancers "targetGroupArn=$TG,containerName=web,containerPort=80" \
    --service-registries "registryArn=$REG" >/dev/null
aws ecs wait services-stable --services web
curl -fsS "http://127.0.0.1:$LB_PORT/"; echo                       # through the load balancer
aws servicediscovery discover-instances --namespace-name local --service-name web \
    --query 'Instances[].Attributes.AWS_INSTANCE_IPV4'              # web.local's addresses
