//! End-to-end tests of the `skiff` binary: what a user types, what they see.
//! One test binary (faster to link), one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api_table;
mod bad_input;
mod bench_cli;
mod bench_density;
mod cloudmap_api;
mod ec2_api;
mod ecr_cache;
mod ecr_cli;
mod ecr_images;
mod ecr_replication;
mod ecr_templates;
mod ecs_account;
mod ecs_cli;
mod ecs_deployments;
mod ecs_elb;
mod ecs_express;
mod ecs_fargate;
mod ecs_metrics;
mod ecs_network;
mod ecs_phases;
mod ecs_scale;
mod ecs_services;
mod ecs_task_sets;
mod elb_modify;
mod exit_status;
mod fleet;
mod hostile;
mod http;
mod images;
mod limits;
mod logs_api;
mod network;
mod people_cli;
mod readme;
mod regions;
mod registry_peers;
mod repo_cli;
mod run_flags;
mod sandbox;
mod soak;
mod streaming;
mod support;
