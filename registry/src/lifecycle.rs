//! ECR lifecycle policies: the JSON schema, validated as ECR validates it,
//! and evaluated as ECR evaluates it (rules in priority order; an image a
//! rule's selection matches is that rule's alone; at most one rule expires
//! an image).

use crate::repos::{Image, wildcard_match};
use serde::Deserialize;

/// A parsed, valid policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecyclePolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    priority: u32,
    tag_status: TagStatus,
    /// Every entry must match one of the image's tags (by prefix).
    prefixes: Vec<String>,
    /// Every entry must match one of the image's tags (by wildcard).
    patterns: Vec<String>,
    count: Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Keep the newest N.
    MoreThan(u64),
    /// Expire what was pushed more than N days ago.
    SincePushedDays(u64),
}

/// An image a policy expires, and the rule that did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The manifest digest.
    pub digest: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// When it was pushed.
    pub pushed_at: i64,
    /// The rule's `rulePriority`.
    pub rule_priority: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    rule_priority: i64,
    #[serde(default)]
    description: Option<String>,
    selection: RawSelection,
    action: RawAction,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelection {
    tag_status: String,
    #[serde(default)]
    tag_prefix_list: Option<Vec<String>>,
    #[serde(default)]
    tag_pattern_list: Option<Vec<String>>,
    count_type: String,
    #[serde(default)]
    count_unit: Option<String>,
    count_number: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
}

impl LifecyclePolicy {
    /// Parses and validates ECR's lifecycle policy JSON.
    pub fn parse(text: &str) -> Result<LifecyclePolicy, String> {
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|e| format!("invalid lifecycle policy: {e}"))?;
        if raw.rules.is_empty() {
            return Err("a lifecycle policy needs at least one rule".into());
        }
        let mut rules = Vec::new();
        for r in raw.rules {
            let _ = r.description;
            let priority = u32::try_from(r.rule_priority)
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| {
                    format!(
                        "rulePriority must be a positive integer, not {}",
                        r.rule_priority
                    )
                })?;
            if r.action.kind != "expire" {
                return Err(format!(
                    "rule {priority}: the only action is \"expire\", not {:?}",
                    r.action.kind
                ));
            }
            let s = r.selection;
            let tag_status = match s.tag_status.as_str() {
                "tagged" => TagStatus::Tagged,
                "untagged" => TagStatus::Untagged,
                "any" => TagStatus::Any,
                other => {
                    return Err(format!(
                        "rule {priority}: tagStatus must be tagged, untagged or any, not {other:?}"
                    ));
                }
            };
            let prefixes = s.tag_prefix_list.unwrap_or_default();
            let patterns = s.tag_pattern_list.unwrap_or_default();
            match tag_status {
                TagStatus::Tagged if prefixes.is_empty() && patterns.is_empty() => {
                    return Err(format!(
                        "rule {priority}: tagStatus tagged needs tagPrefixList or tagPatternList"
                    ));
                }
                TagStatus::Tagged if !prefixes.is_empty() && !patterns.is_empty() => {
                    return Err(format!(
                        "rule {priority}: use tagPrefixList or tagPatternList, not both"
                    ));
                }
                TagStatus::Untagged | TagStatus::Any
                    if !prefixes.is_empty() || !patterns.is_empty() =>
                {
                    return Err(format!(
                        "rule {priority}: tag lists go only with tagStatus tagged"
                    ));
                }
                _ => {}
            }
            if patterns.iter().any(|p| p.matches('*').count() > 4) {
                return Err(format!(
                    "rule {priority}: a tag pattern may have at most 4 wildcards"
                ));
            }
            let number = u64::try_from(s.count_number)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("rule {priority}: countNumber must be at least 1"))?;
            let count = match (s.count_type.as_str(), s.count_unit.as_deref()) {
                ("imageCountMoreThan", None) => Count::MoreThan(number),
                ("imageCountMoreThan", Some(_)) => {
                    return Err(format!(
                        "rule {priority}: countUnit goes only with sinceImagePushed"
                    ));
                }
                ("sinceImagePushed", Some("days")) => Count::SincePushedDays(number),
                ("sinceImagePushed", _) => {
                    return Err(format!(
                        "rule {priority}: sinceImagePushed needs countUnit \"days\""
                    ));
                }
                (other, _) => {
                    return Err(format!(
                        "rule {priority}: countType must be imageCountMoreThan or sinceImagePushed, not {other:?}"
                    ));
                }
            };
            rules.push(Rule {
                priority,
                tag_status,
                prefixes,
                patterns,
                count,
            });
        }
        rules.sort_by_key(|r| r.priority);
        if rules.windows(2).any(|w| w[0].priority == w[1].priority) {
            return Err("two rules have the same rulePriority".into());
        }
        if let Some(pos) = rules.iter().position(|r| r.tag_status == TagStatus::Any)
            && pos != rules.len() - 1
        {
            return Err("a rule with tagStatus any must have the highest rulePriority".into());
        }
        Ok(LifecyclePolicy { rules })
    }

    /// The images the policy expires now, in rule order.
    ///
    /// As ECR does: each rule counts every image its selection matches,
    /// newest first, but never expires one a higher-priority rule's
    /// selection matched ("rules can never mark images that are marked by
    /// higher priority rules, but can still identify them as if they
    /// haven't been expired").
    pub fn evaluate(&self, images: &[Image], now: i64) -> Vec<Expiry> {
        let mut claimed = vec![false; images.len()];
        let mut expired = Vec::new();
        for rule in &self.rules {
            // Newest first, as ECR counts; a stable sort, so images pushed
            // within the same second keep the order they were given in
            // (the registry lists them newest first).
            let mut matched: Vec<usize> = (0..images.len())
                .filter(|&i| rule.selects(&images[i]))
                .collect();
            matched.sort_by(|&a, &b| images[b].pushed_at.cmp(&images[a].pushed_at));
            let doomed: Vec<usize> = match rule.count {
                Count::MoreThan(n) => matched
                    .iter()
                    .copied()
                    .skip(usize::try_from(n).unwrap_or(usize::MAX))
                    .collect(),
                Count::SincePushedDays(days) => {
                    let cutoff =
                        now - i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX);
                    matched
                        .iter()
                        .copied()
                        .filter(|&i| images[i].pushed_at < cutoff)
                        .collect()
                }
            };
            let doomed: Vec<usize> = doomed.into_iter().filter(|&i| !claimed[i]).collect();
            for &i in &matched {
                claimed[i] = true;
            }
            expired.extend(doomed.into_iter().map(|i| Expiry {
                digest: images[i].digest.clone(),
                tags: images[i].tags.clone(),
                pushed_at: images[i].pushed_at,
                rule_priority: rule.priority,
            }));
        }
        expired
    }
}

impl Rule {
    fn selects(&self, image: &Image) -> bool {
        match self.tag_status {
            TagStatus::Untagged => image.tags.is_empty(),
            TagStatus::Any => true,
            TagStatus::Tagged => {
                !image.tags.is_empty()
                    && self
                        .prefixes
                        .iter()
                        .all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
                    && self
                        .patterns
                        .iter()
                        .all(|p| image.tags.iter().any(|t| wildcard_match(p, t)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &str, tags: &[&str], pushed_at: i64) -> Image {
        Image {
            digest: digest.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            media_type: String::new(),
            artifact_type: None,
            size: 0,
            pushed_at,
            subject: None,
        }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn validation_follows_ecr() {
        let ok = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
        assert!(LifecyclePolicy::parse(ok).is_ok());
        for (bad, says) in [
            (r#"{"rules":[]}"#, "at least one rule"),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
                "tagPrefixList or tagPatternList",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},{"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
                "highest rulePriority",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countNumber":1},"action":{"type":"expire"}}]}"#,
                "countUnit",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}]}"#,
                "countNumber",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"delete"}}]}"#,
                "expire",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1,"bogus":1},"action":{"type":"expire"}}]}"#,
                "invalid lifecycle policy",
            ),
        ] {
            let err = LifecyclePolicy::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn evaluation_follows_ecr() {
        let policy = LifecyclePolicy::parse(
            r#"{"rules":[
                {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}},
                {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}},
                {"rulePriority":3,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}
            ]}"#,
        )
        .unwrap();
        let now = 100 * DAY;
        let images = [
            image("p1", &["prod-1"], now - 30 * DAY),
            image("p2", &["prod-2"], now - 20 * DAY),
            image("p3", &["prod-3", "latest"], now - 10 * DAY),
            image("u-old", &[], now - 8 * DAY),
            image("u-new", &[], now - DAY),
            image("dev-a", &["dev-a"], now - 5 * DAY),
            image("dev-b", &["dev-b"], now - 2 * DAY),
        ];
        let expired = policy.evaluate(&images, now);
        let got: Vec<(&str, u32)> = expired
            .iter()
            .map(|e| (e.digest.as_str(), e.rule_priority))
            .collect();
        // Rule 1 keeps the newest two prod images; rule 2 takes the week-old
        // untagged one. Rule 3 counts all seven and keeps the newest
        // (u-new), but may expire only what no earlier rule matched.
        assert_eq!(got, [("p1", 1), ("u-old", 2), ("dev-b", 3), ("dev-a", 3)]);
    }

    #[test]
    fn lower_rules_count_what_higher_rules_protect() {
        // ECR's own example of the rule: images tagged 16.x are kept by
        // rule 10; rule 20 keeps 2 of the 16_ images, counting the ones
        // also tagged 16.x, and expires only the unprotected rest.
        let policy = LifecyclePolicy::parse(
            r#"{"rules":[
                {"rulePriority":10,"selection":{"tagStatus":"tagged","tagPrefixList":["16."],"countType":"imageCountMoreThan","countNumber":9999},"action":{"type":"expire"}},
                {"rulePriority":20,"selection":{"tagStatus":"tagged","tagPrefixList":["16_"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}
            ]}"#,
        )
        .unwrap();
        let images = [
            image("a", &["16_a", "16.1"], 5),
            image("b", &["16_b", "16.2"], 4),
            image("c", &["16_c"], 3),
            image("d", &["16_d"], 2),
        ];
        let got: Vec<String> = policy
            .evaluate(&images, 10)
            .into_iter()
            .map(|e| e.digest)
            .collect();
        assert_eq!(got, ["c", "d"]);
    }

    #[test]
    fn several_prefixes_must_all_be_present() {
        let policy = LifecyclePolicy::parse(
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["prod*","*-signed"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
        )
        .unwrap();
        let images = [
            image("a", &["prod-1", "x-signed"], 3),
            image("b", &["prod-2", "y-signed"], 2),
            image("c", &["prod-3"], 1),
        ];
        let got: Vec<String> = policy
            .evaluate(&images, 10)
            .into_iter()
            .map(|e| e.digest)
            .collect();
        assert_eq!(got, ["b"]);
    }
}
