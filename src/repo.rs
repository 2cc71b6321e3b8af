//! `skiff repo`: ECR's repository management against the local registry
//! (the data dir's `registry/`), whether or not `skiff registry` is
//! serving it.

use crate::images::tokio;
use clap::{Args, Subcommand};
use skiff_registry::repos::{Repository, RepositorySettings, TagMutability};
use skiff_registry::scan::{ScanReport, ScanStatus};
use skiff_registry::{AdminError, Registry, RegistryConfig};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RepoArgs {
    #[command(subcommand)]
    command: RepoCommand,
}

#[derive(Subcommand, Debug)]
enum RepoCommand {
    /// Create a repository.
    Create {
        /// Its name (`team/app`).
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List repositories.
    Ls,
    /// Delete a repository (one with images only with --force).
    Rm {
        name: String,
        /// Delete its images too.
        #[arg(long)]
        force: bool,
    },
    /// Change a repository's tag mutability or scan on push.
    Set {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List a repository's images, newest first.
    Images { name: String },
    /// Manage the repository's lifecycle policy (ECR's JSON).
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
    },
    /// Scan an image now and print its findings.
    Scan {
        name: String,
        /// A tag or a digest.
        reference: String,
        /// Print ECR's DescribeImageScanFindings JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the findings of an image's last scan.
    Findings {
        name: String,
        /// A tag or a digest.
        reference: String,
        /// Print ECR's DescribeImageScanFindings JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LifecycleCommand {
    /// Set the policy from a file (`-` for stdin).
    Put { name: String, file: PathBuf },
    /// Print the policy.
    Get { name: String },
    /// Remove the policy.
    Rm { name: String },
    /// Show what the policy would expire now, changing nothing.
    Preview { name: String },
    /// Expire what the policy selects now, and collect the freed blobs.
    Apply { name: String },
}

#[derive(Args, Debug)]
struct SettingsArgs {
    /// MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION.
    #[arg(long, value_name = "MODE", value_parser = TagMutability::parse)]
    tag_mutability: Option<TagMutability>,
    /// A tag filter (`*` wildcards) excepted from the mutability; repeat.
    #[arg(long = "exclude", value_name = "FILTER")]
    exclude: Vec<String>,
    /// Scan every pushed image (true or false).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    scan_on_push: Option<bool>,
}

impl SettingsArgs {
    /// The settings these flags make of `base`.
    fn apply(&self, mut base: RepositorySettings) -> RepositorySettings {
        if let Some(m) = self.tag_mutability {
            base.tag_mutability = m;
            base.mutability_filters.clear();
        }
        if !self.exclude.is_empty() {
            base.mutability_filters = self.exclude.clone();
        }
        if let Some(scan) = self.scan_on_push {
            base.scan_on_push = scan;
        }
        base
    }
}

fn open(data_dir: &Path) -> Result<Registry, String> {
    Registry::open(RegistryConfig::new(data_dir.join("registry"))).map_err(|e| e.to_string())
}

fn when(epoch: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.to_string(),
    }
}

fn print_repository(r: &Repository) {
    let filters = if r.settings.mutability_filters.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.settings.mutability_filters.join(", "))
    };
    println!(
        "{:<40} {:<45} {:<5} {}",
        r.name,
        format!("{}{filters}", r.settings.tag_mutability.as_str()),
        if r.settings.scan_on_push { "yes" } else { "no" },
        when(r.created_at)
    );
}

fn print_findings(report: &ScanReport, json: bool) -> Result<(), String> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "{}@{}: {} — {}",
        report.repository_name,
        report.image_digest,
        report.image_scan_status.status.as_str(),
        report.image_scan_status.description
    );
    if let Some(findings) = &report.image_scan_findings {
        for f in &findings.findings {
            println!(
                "{:<14} {:<22} {}",
                f.severity.as_str(),
                f.name,
                f.description
            );
        }
    }
    Ok(())
}

fn admin(e: AdminError) -> String {
    e.to_string()
}

pub fn run(args: RepoArgs, data_dir: &Path) -> i32 {
    let result = (|| -> Result<(), String> {
        let registry = open(data_dir)?;
        match args.command {
            RepoCommand::Create { name, settings } => {
                let r = registry
                    .create_repository(&name, &settings.apply(RepositorySettings::default()))
                    .map_err(admin)?;
                println!("Created repository {}", r.name);
            }
            RepoCommand::Ls => {
                println!(
                    "{:<40} {:<45} {:<5} CREATED",
                    "NAME", "TAG MUTABILITY", "SCAN"
                );
                for r in registry.repositories().map_err(admin)? {
                    print_repository(&r);
                }
            }
            RepoCommand::Rm { name, force } => {
                tokio()?
                    .block_on(registry.delete_repository(&name, force))
                    .map_err(admin)?;
                println!("Deleted repository {name}");
            }
            RepoCommand::Set { name, settings } => {
                let current = registry.repository(&name).map_err(admin)?;
                let r = registry
                    .set_settings(&name, &settings.apply(current.settings))
                    .map_err(admin)?;
                println!(
                    "{:<40} {:<45} {:<5} CREATED",
                    "NAME", "TAG MUTABILITY", "SCAN"
                );
                print_repository(&r);
            }
            RepoCommand::Images { name } => {
                println!(
                    "{:<20} {:<30} {:>10}  {:<20} TYPE",
                    "DIGEST", "TAGS", "SIZE", "PUSHED"
                );
                for i in registry.images(&name).map_err(admin)? {
                    let tags = if i.tags.is_empty() {
                        "<untagged>".to_string()
                    } else {
                        i.tags.join(",")
                    };
                    let kind = match (&i.subject, &i.artifact_type) {
                        (Some(subject), Some(t)) => format!("{t} → {}", short(subject)),
                        (None, Some(t)) => t.clone(),
                        (_, None) => i.media_type.clone(),
                    };
                    println!(
                        "{:<20} {:<30} {:>10}  {:<20} {kind}",
                        short(&i.digest),
                        tags,
                        skiff_runtime::format_bytes(i.size),
                        when(i.pushed_at)
                    );
                }
            }
            RepoCommand::Lifecycle { command } => lifecycle(&registry, command)?,
            RepoCommand::Scan {
                name,
                reference,
                json,
            } => {
                let report = tokio()?
                    .block_on(registry.scan(&name, &reference))
                    .map_err(admin)?;
                print_findings(&report, json)?;
                if report.image_scan_status.status == ScanStatus::Failed {
                    return Err(format!(
                        "the scan failed: {}",
                        report.image_scan_status.description
                    ));
                }
            }
            RepoCommand::Findings {
                name,
                reference,
                json,
            } => {
                let report = registry.scan_findings(&name, &reference).map_err(admin)?;
                print_findings(&report, json)?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            say!("error: {e}");
            1
        }
    }
}

fn lifecycle(registry: &Registry, command: LifecycleCommand) -> Result<(), String> {
    let print = |expired: &[skiff_registry::lifecycle::Expiry]| {
        println!("{:<20} {:<30} {:<20} RULE", "DIGEST", "TAGS", "PUSHED");
        for e in expired {
            let tags = if e.tags.is_empty() {
                "<untagged>".to_string()
            } else {
                e.tags.join(",")
            };
            println!(
                "{:<20} {:<30} {:<20} {}",
                short(&e.digest),
                tags,
                when(e.pushed_at),
                e.rule_priority
            );
        }
    };
    match command {
        LifecycleCommand::Put { name, file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| format!("cannot read the policy from stdin: {e}"))?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
            };
            registry
                .put_lifecycle_policy(&name, text.trim())
                .map_err(admin)?;
            println!("Lifecycle policy set on {name}");
        }
        LifecycleCommand::Get { name } => {
            println!("{}", registry.lifecycle_policy(&name).map_err(admin)?);
        }
        LifecycleCommand::Rm { name } => {
            registry.delete_lifecycle_policy(&name).map_err(admin)?;
            println!("Lifecycle policy removed from {name}");
        }
        LifecycleCommand::Preview { name } => {
            print(&registry.lifecycle_preview(&name).map_err(admin)?);
        }
        LifecycleCommand::Apply { name } => {
            let (expired, gc) = tokio()?
                .block_on(registry.apply_lifecycle(&name))
                .map_err(admin)?;
            print(&expired);
            if gc.deferred {
                println!(
                    "Expired {} image(s); the running registry will free their blobs",
                    expired.len()
                );
            } else {
                println!(
                    "Expired {} image(s), freed {}",
                    expired.len(),
                    skiff_runtime::format_bytes(gc.bytes_freed)
                );
            }
        }
    }
    Ok(())
}
