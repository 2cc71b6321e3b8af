//! Tags on load balancers, target groups, listeners and rules: given at
//! creation (`Tags.member.N`), then AddTags, RemoveTags and DescribeTags,
//! with ELB's limits and error codes.

use super::{Config, finish, response};
use crate::api::protocol::query::{Params, Xml};
use crate::error::ApiError;

pub use crate::plane::elb::config::Tags;

/// ELB's limit per resource.
const MAX_TAGS: usize = 50;

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::coded("ValidationError", message)
}

/// The tags of a request (`PREFIX.member.N.Key`/`.Value`), checked.
pub fn parse(p: &Params, prefix: &str) -> Result<Tags, ApiError> {
    let mut tags: Tags = Vec::new();
    for t in p.list(&format!("{prefix}.member")) {
        let key = t.required("Key")?.to_string();
        let value = t.get("Value").unwrap_or_default().to_string();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(validation(format!(
                "the tag key {key:?} must be 1 to 128 characters"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(validation(format!(
                "the tag key {key:?} uses the prefix aws:, which is reserved"
            )));
        }
        if value.chars().count() > 256 {
            return Err(validation(format!(
                "the value of tag {key:?} is longer than 256 characters"
            )));
        }
        if tags.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::coded(
                "DuplicateTagKeys",
                format!("Tag key '{key}' is given more than once"),
            ));
        }
        tags.push((key, value));
    }
    within_limit(&tags)?;
    Ok(tags)
}

fn within_limit(tags: &Tags) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::coded(
            "TooManyTags",
            format!(
                "A resource has at most {MAX_TAGS} tags; this would have {}",
                tags.len()
            ),
        ));
    }
    Ok(())
}

/// The tags of the resource `arn`, whatever kind it is.
fn of<'a>(cfg: &'a mut Config, arn: &str) -> Result<&'a mut Tags, ApiError> {
    let found = if arn.contains(":loadbalancer/") {
        cfg.load_balancers.get_mut(arn).map(|r| &mut r.tags)
    } else if arn.contains(":targetgroup/") {
        cfg.target_groups.get_mut(arn).map(|r| &mut r.tags)
    } else if arn.contains(":listener-rule/") {
        cfg.rules.get_mut(arn).map(|r| &mut r.tags)
    } else if arn.contains(":listener/") {
        cfg.listeners.get_mut(arn).map(|r| &mut r.tags)
    } else {
        return Err(validation(format!(
            "'{arn}' is not the ARN of a load balancer, target group, listener or rule"
        )));
    };
    found.ok_or_else(|| {
        let (code, what) = if arn.contains(":loadbalancer/") {
            ("LoadBalancerNotFound", "Load balancer")
        } else if arn.contains(":targetgroup/") {
            ("TargetGroupNotFound", "Target groups")
        } else if arn.contains(":listener-rule/") {
            ("RuleNotFound", "Rule")
        } else {
            ("ListenerNotFound", "Listener")
        };
        ApiError::coded(code, format!("{what} '{arn}' not found"))
    })
}

fn arns(p: &Params) -> Result<Vec<String>, ApiError> {
    let arns = p.strings("ResourceArns.member");
    if arns.is_empty() {
        return Err(validation("ResourceArns must name at least one resource"));
    }
    Ok(arns)
}

/// AddTags: each tag added, or its value replaced.
pub fn add(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let new = parse(p, "Tags")?;
    if new.is_empty() {
        return Err(validation("Tags must hold at least one tag"));
    }
    for arn in arns(p)? {
        let tags = of(cfg, &arn)?;
        for (k, v) in &new {
            match tags.iter_mut().find(|(key, _)| key == k) {
                Some(t) => t.1 = v.clone(),
                None => tags.push((k.clone(), v.clone())),
            }
        }
        within_limit(tags)?;
    }
    Ok(finish(response("AddTagsResponse", "AddTagsResult")))
}

/// RemoveTags: the keys given, where present.
pub fn remove(cfg: &mut Config, p: &Params) -> Result<String, ApiError> {
    let keys = p.strings("TagKeys.member");
    if keys.is_empty() {
        return Err(validation("TagKeys must hold at least one key"));
    }
    for arn in arns(p)? {
        of(cfg, &arn)?.retain(|(k, _)| !keys.contains(k));
    }
    Ok(finish(response("RemoveTagsResponse", "RemoveTagsResult")))
}

/// DescribeTags: each resource's tags.
pub fn describe(cfg: &Config, p: &Params) -> Result<String, ApiError> {
    let arns = arns(p)?;
    if arns.len() > 20 {
        return Err(validation("DescribeTags takes at most 20 resources"));
    }
    let mut cfg = cfg.clone();
    let mut x = response("DescribeTagsResponse", "DescribeTagsResult");
    x.open("TagDescriptions");
    for arn in arns {
        let tags = of(&mut cfg, &arn)?.clone();
        x.open("member").text("ResourceArn", &arn).open("Tags");
        write(&mut x, &tags);
        x.close().close();
    }
    x.close();
    Ok(finish(x))
}

fn write(x: &mut Xml, tags: &Tags) {
    for (k, v) in tags {
        x.open("member").text("Key", k).text("Value", v).close();
    }
}
