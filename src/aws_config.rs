//! What the AWS SDKs read for a client's keys and region, read the same
//! way for skiff's own clients: the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_DEFAULT_REGION`), then the
//! profile `AWS_PROFILE` names (else `default`) in the shared credentials
//! file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and
//! config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, where the
//! profile's section is `[profile NAME]`, `[default]` for the default).

use std::path::PathBuf;

/// A client's keys and region, as far as they are configured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
}

/// The settings from this process's environment and files.
pub fn settings() -> Settings {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    resolve(
        &env,
        &file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        &file("AWS_CONFIG_FILE", "config"),
    )
}

/// [`settings`] from an environment and the two files' text.
fn resolve(env: &dyn Fn(&str) -> Option<String>, credentials: &str, config: &str) -> Settings {
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let from_credentials = |key: &str| value(credentials, &profile, key);
    let from_config = |key: &str| value(config, &config_section, key);
    Settings {
        access_key_id: env("AWS_ACCESS_KEY_ID")
            .or_else(|| from_credentials("aws_access_key_id"))
            .or_else(|| from_config("aws_access_key_id")),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY")
            .or_else(|| from_credentials("aws_secret_access_key"))
            .or_else(|| from_config("aws_secret_access_key")),
        region: env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| from_config("region")),
    }
}

/// `key` in INI `section` of `text`.
fn value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_string()).filter(|v| !v.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n[work]\naws_access_key_id=AKIA2\naws_secret_access_key=s2\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile work]\nregion=ap-south-1\n";

    #[test]
    fn profiles_are_read_as_the_sdks_read_them() {
        let none = |_: &str| None;
        let s = resolve(&none, CREDENTIALS, CONFIG);
        assert_eq!(s.access_key_id.as_deref(), Some("AKIA1"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let work = |k: &str| (k == "AWS_PROFILE").then(|| "work".to_string());
        let s = resolve(&work, CREDENTIALS, CONFIG);
        assert_eq!(s.access_key_id.as_deref(), Some("AKIA2"));
        assert_eq!(s.secret_access_key.as_deref(), Some("s2"));
        assert_eq!(s.region.as_deref(), Some("ap-south-1"));
        // The environment first.
        let env = |k: &str| match k {
            "AWS_PROFILE" => Some("work".to_string()),
            "AWS_DEFAULT_REGION" => Some("us-west-2".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("AKIAENV".to_string()),
            _ => None,
        };
        let s = resolve(&env, CREDENTIALS, CONFIG);
        assert_eq!(s.access_key_id.as_deref(), Some("AKIAENV"));
        assert_eq!(s.region.as_deref(), Some("us-west-2"));
        assert_eq!(resolve(&none, "", ""), Settings::default());
    }
}
