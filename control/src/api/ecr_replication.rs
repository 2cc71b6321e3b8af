//! ECR replication: PutReplicationConfiguration, and the loop that copies
//! every image of a matching repository to each destination — the
//! registry of the skiff serving that region and account, which
//! `skiff serve --replication-peer REGION/ACCOUNT=HOST:PORT` names.
//!
//! The loop is level-triggered: whenever the registry stored a manifest,
//! the rules changed, or (while a copy has failed) after [`RETRY_EVERY`]
//! and then less and less often, it looks at every image of every replicated
//! repository and copies those whose destination has not got them with
//! all their current tags. What each copy did is recorded per image and
//! destination in the ECR document (`EcrMeta::replicated`), which
//! DescribeImageReplicationStatus answers from; a copy cut short by a
//! crash is simply done again.

use super::Api;
use crate::api::protocol::json::parse;
use crate::core::Core;
use crate::core::ecr::{Destination, ReplicationRule, ReplicationStatus};
use crate::core::model::account;
use crate::core::state::Write;
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

/// How soon failed copies are tried again: after this, then twice as long
/// after each pass that still fails, up to [`RETRY_AT_MOST`] (a
/// destination that refuses for good is not asked every few seconds);
/// a push or a rule change tries at once and starts over.
pub(crate) const RETRY_EVERY: Duration = Duration::from_secs(10);
const RETRY_AT_MOST: Duration = Duration::from_secs(300);

/// ECR's limit on the destinations of all rules together.
const MAX_DESTINATIONS: usize = 25;

/// PutReplicationConfiguration.
pub(crate) async fn put(core: &Core, body: &Value, region: &str) -> Result<Value, ApiError> {
    let config = body
        .get("replicationConfiguration")
        .ok_or_else(|| ApiError::invalid_parameter("replicationConfiguration is required"))?;
    let rules: Vec<ReplicationRule> = parse(config.get("rules").unwrap_or(&Value::Null))?;
    let mut all = BTreeSet::new();
    for rule in &rules {
        if rule.destinations.is_empty() {
            return Err(ApiError::invalid_parameter(
                "Each replication rule needs at least one destination.",
            ));
        }
        for f in &rule.repository_filters {
            if f.filter_type != "PREFIX_MATCH" {
                return Err(ApiError::invalid_parameter(format!(
                    "filterType must be PREFIX_MATCH, not {:?}.",
                    f.filter_type
                )));
            }
            // A repository name's beginning: lowercase letters, digits,
            // separators.
            let ok = f.filter.len() >= 2
                && f.filter.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, '.' | '_' | '-' | '/')
                });
            if !ok {
                return Err(ApiError::invalid_parameter(format!(
                    "Invalid parameter at 'filter' failed to satisfy constraint: '{:?} is not the beginning of a repository name (lowercase letters, digits, . _ - /)'",
                    f.filter
                )));
            }
        }
        let mut in_rule = BTreeSet::new();
        for d in &rule.destinations {
            if !in_rule.insert(d.clone()) {
                return Err(ApiError::invalid_parameter(format!(
                    "Replication destination {} is named twice in one rule.",
                    d.key()
                )));
            }
            if d.region == region && d.registry_id == account() {
                return Err(ApiError::invalid_parameter(format!(
                    "Replication destination {} is this registry: an image cannot be replicated to where it is.",
                    d.key()
                )));
            }
            if !core.config.replication_peers.contains_key(&d.key()) {
                let known: Vec<&String> = core.config.replication_peers.keys().collect();
                return Err(ApiError::invalid_parameter(format!(
                    "No registry is known for the destination region {} and registry {}: start skiff serve with --replication-peer {}=HOST:PORT (the registry of the skiff serving it){}",
                    d.region,
                    d.registry_id,
                    d.key(),
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!("; known: {known:?}")
                    }
                )));
            }
            all.insert(d.clone());
        }
    }
    if all.len() > MAX_DESTINATIONS {
        return Err(ApiError::invalid_parameter(format!(
            "The replication configuration names {} destinations; ECR allows {MAX_DESTINATIONS}.",
            all.len()
        )));
    }
    let mut state = core.state.lock().await;
    let mut meta = state.ecr.clone();
    meta.replication = rules.clone();
    state
        .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
        .await?;
    Ok(json!({ "replicationConfiguration": { "rules": rules } }))
}

/// The registry's replication configuration, as DescribeRegistry shows it.
pub(crate) fn configuration(rules: &[ReplicationRule]) -> Value {
    json!({ "rules": rules })
}

/// The destinations repository `name` is replicated to.
fn destinations(rules: &[ReplicationRule], name: &str) -> BTreeSet<Destination> {
    rules
        .iter()
        .filter(|r| r.matches(name))
        .flat_map(|r| r.destinations.iter().cloned())
        .collect()
}

/// DescribeImageReplicationStatus's `replicationStatuses` for image
/// `digest` of `repo`: each destination's, IN_PROGRESS until a copy was
/// tried.
pub(crate) async fn statuses(core: &Core, repo: &str, digest: &str) -> Vec<Value> {
    let state = core.state.lock().await;
    let meta = &state.ecr;
    let done = meta.replicated.get(&format!("{repo}@{digest}"));
    destinations(&meta.replication, repo)
        .into_iter()
        .map(|d| {
            let s = done.and_then(|v| v.iter().find(|s| s.is_for(&d)));
            let mut v = json!({
                "region": d.region,
                "registryId": d.registry_id,
                "status": s.map_or("IN_PROGRESS", |s| s.status.as_str()),
            });
            if let Some(code) = s.and_then(|s| s.failure_code.as_ref()) {
                v["failureCode"] = json!(code);
            }
            v
        })
        .collect()
}

/// Follows what the registry stores while the API lives: repositories it
/// made from creation templates get their policy and tags
/// ([`super::ecr_templates::apply`]), and images are copied to their
/// replication destinations.
pub(crate) async fn ecr_loop(api: Weak<Api>) {
    let mut seen: Option<(u64, Vec<ReplicationRule>)> = None;
    let mut last_pass = tokio::time::Instant::now();
    let mut retry_after = RETRY_EVERY;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(api) = api.upgrade() else {
            return;
        };
        let Some(registry) = api.registry.get().cloned() else {
            continue;
        };
        let stored = registry.stats().manifests_stored;
        if seen.as_ref().is_none_or(|(s, _)| *s != stored)
            && let Err(e) = super::ecr_templates::apply(&api.core, &registry).await
        {
            tracing::warn!("giving new repositories their templates' policy and tags failed: {e}");
        }
        let (rules, failing) = {
            let state = api.core.state.lock().await;
            let failing = state
                .ecr
                .replicated
                .values()
                .flatten()
                .any(|s| s.status != "COMPLETE");
            (state.ecr.replication.clone(), failing)
        };
        let changed = seen.as_ref() != Some(&(stored, rules.clone()));
        let retry = failing && last_pass.elapsed() >= retry_after;
        retry_after = next_retry(retry_after, failing, changed, retry);
        if rules.is_empty() || !(changed || retry) {
            seen = Some((stored, rules));
            continue;
        }
        seen = Some((stored, rules.clone()));
        last_pass = tokio::time::Instant::now();
        if let Err(e) = pass(&api, &registry, &rules).await {
            tracing::warn!("an ECR replication pass failed, retrying: {e}");
        }
    }
}

/// How long after this pass the next retry waits: from [`RETRY_EVERY`]
/// again once nothing fails or something changed, twice as long after a
/// retry (a pass that is about to try again what failed).
fn next_retry(after: Duration, failing: bool, changed: bool, retry: bool) -> Duration {
    if !failing || changed {
        RETRY_EVERY
    } else if retry {
        (after * 2).min(RETRY_AT_MOST)
    } else {
        after
    }
}

/// One look at every replicated repository.
async fn pass(
    api: &Api,
    registry: &skiff_registry::Registry,
    rules: &[ReplicationRule],
) -> Result<(), ApiError> {
    let core = &api.core;
    let peers = &core.config.replication_peers;
    let options = skiff_registry::remote::RemoteOptions {
        // skiff's registries serve plain HTTP.
        insecure_registries: peers.values().cloned().collect(),
        // A repository the copy creates there is made from its
        // REPLICATION creation templates.
        user_agent: Some(skiff_registry::templates::REPLICATION_AGENT),
        ..Default::default()
    };
    let repositories = super::ecr::admin(registry, |r| r.repositories()).await?;
    // The images a record may be about: the rest are forgotten.
    let mut live = BTreeSet::new();
    for repo in repositories {
        let dests = destinations(rules, &repo.name);
        if dests.is_empty() {
            continue;
        }
        let name = repo.name.clone();
        let images = super::ecr::admin(registry, move |r| r.images(&name)).await?;
        for image in images {
            let key = format!("{}@{}", repo.name, image.digest);
            live.insert(key.clone());
            let before = core.state.lock().await.ecr.replicated.get(&key).cloned();
            let mut record = before.clone().unwrap_or_default();
            // Destinations no rule names any more are forgotten.
            record.retain(|s| dests.iter().any(|d| s.is_for(d)));
            for d in &dests {
                let current = record.iter().find(|s| s.is_for(d));
                let has_all = current.is_some_and(|s| {
                    s.status == "COMPLETE" && image.tags.iter().all(|t| s.tags.contains(t))
                });
                if has_all {
                    continue;
                }
                let outcome = match peers.get(&d.key()) {
                    None => Err(format!("no --replication-peer names {}", d.key())),
                    Some(addr) => {
                        registry
                            .replicate(&repo.name, &image.digest, &image.tags, addr, &options)
                            .await
                    }
                };
                if let Err(e) = &outcome {
                    tracing::warn!(
                        repository = %repo.name,
                        digest = %image.digest,
                        destination = %d.key(),
                        "replication failed: {e}"
                    );
                }
                record.retain(|s| !s.is_for(d));
                record.push(ReplicationStatus {
                    region: d.region.clone(),
                    registry_id: d.registry_id.clone(),
                    status: if outcome.is_ok() {
                        "COMPLETE"
                    } else {
                        "FAILED"
                    }
                    .into(),
                    failure_code: outcome.err(),
                    tags: image.tags.clone(),
                });
            }
            if Some(&record) != before.as_ref() {
                let mut state = core.state.lock().await;
                let mut meta = state.ecr.clone();
                meta.replicated.insert(key, record);
                state
                    .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
                    .await?;
            }
        }
    }
    let mut state = core.state.lock().await;
    if state.ecr.replicated.keys().any(|k| !live.contains(k)) {
        let mut meta = state.ecr.clone();
        meta.replicated.retain(|k, _| live.contains(k));
        state
            .apply(core.store.as_ref(), vec![Write::Ecr(Box::new(meta))])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_until_something_changes_or_nothing_fails() {
        let mut after = RETRY_EVERY;
        let mut waits = Vec::new();
        for _ in 0..7 {
            after = next_retry(after, true, false, true);
            waits.push(after.as_secs());
        }
        assert_eq!(waits, [20, 40, 80, 160, 300, 300, 300]);
        // Between retries the wait holds.
        assert_eq!(next_retry(after, true, false, false), after);
        // A push or a rule change, or every copy done, starts over.
        assert_eq!(next_retry(after, true, true, false), RETRY_EVERY);
        assert_eq!(next_retry(after, false, false, false), RETRY_EVERY);
    }
}
