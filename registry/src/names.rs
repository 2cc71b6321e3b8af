//! Repository names and tags, validated as the OCI distribution spec says.

/// Is `name` a valid repository name? Path components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`, at most 255 bytes.
/// This also rules out `..`, empty components and absolute paths, so a name
/// is always safe to use as a relative path.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators: `.`, `_`, `__`, or any run of `-`, always between
    // alphanumerics.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i >= b.len() || !alnum(b[i]) || i == start {
            return false;
        }
    }
    true
}

/// Is `tag` a valid tag? `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// An image reference taken apart: `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceParts {
    /// `host[:port]`; `docker.io` when the reference names none.
    pub registry: String,
    /// The repository, `library/` added to a Docker Hub official image.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// The digest, `algorithm:hex`.
    pub digest: Option<String>,
}

/// Takes an image reference apart as Docker's (and the OCI distribution's)
/// reference grammar does, with Docker's normalisation (no host means
/// Docker Hub; its one-component names are under `library/`).
///
/// Hand-written: oci-spec's parser compiles a regular expression whose
/// Unicode tag class, repeated 128 times, took 40–70 ms and 16 MB the first
/// time any reference was parsed in a process — every `skiff pull`, `push`
/// and `run REF`, and every agent's first task.
pub fn parse_reference(reference: &str) -> Result<ReferenceParts, String> {
    if reference.is_empty() {
        return Err("the reference is empty".into());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    // A tag follows the last `:` after the last `/` (one before it is a
    // registry's port).
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last..].rfind(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(format!(
            "the tag {tag:?} is not one (letters, digits, _ . and -, at most 128, not starting with . or -)"
        ));
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((host, path)) if host.contains(['.', ':']) || host == "localhost" => {
            if !valid_host(host) {
                return Err(format!(
                    "the registry {host:?} is not a host name or address (with an optional :port)"
                ));
            }
            (host.to_string(), path.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if !valid_repository(&repository) {
        return Err(format!(
            "the repository {repository:?} is not a repository name (lowercase letters and digits, separated by . _ __ or -, in components joined by /)"
        ));
    }
    if registry == "index.docker.io" {
        registry = "docker.io".into();
    }
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if repository.len() > 255 {
        return Err(format!(
            "the repository name is {} bytes, more than 255",
            repository.len()
        ));
    }
    Ok(ReferenceParts {
        registry,
        repository,
        tag: tag
            .or(digest.is_none().then_some("latest"))
            .map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// `host[:port]`: DNS-like components of letters, digits and inner `-`,
/// joined by `.` (an IPv4 address is one), then digits after a `:`.
fn valid_host(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    name.split('.').all(component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `algorithm:hex`: sha256, sha384 or sha512, with as many hex digits as
/// each has.
fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("the digest {digest:?} is not algorithm:hex"));
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "the digest's algorithm {algorithm:?} is not sha256, sha384 or sha512"
            ));
        }
    };
    if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the digest {digest:?} is not {algorithm}: and {want} hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written parser agrees with oci-spec's regular expression
    /// (the grammar it replaces) on what is a reference and what it names,
    /// except where noted.
    #[test]
    fn references_parse_as_the_distribution_grammar_says() {
        let hex = "0123456789abcdef".repeat(4);
        let long_tag = "t".repeat(128);
        let cases = [
            "hello".to_string(),
            "hello:v1".into(),
            "library/hello".into(),
            "team/app/web:1.2.3".into(),
            "127.0.0.1:5050/hello:v1".into(),
            "127.0.0.1:5050/hello".into(),
            "localhost/app".into(),
            "localhost:5000".into(),
            "localhost:5000/a/b:c".into(),
            "registry.example.com/x".into(),
            "Registry.Example.com:443/x_y__z-w:T_a.g-1".into(),
            "index.docker.io/hello".into(),
            "docker.io/team/app".into(),
            "my-host.local:5000/app@sha256:".to_string() + &hex,
            "my-host.local:5000/app:v2@sha256:".to_string() + &hex,
            "app@sha512:".to_string() + &hex.repeat(2),
            format!("app:{long_tag}"),
            // Not references.
            "".into(),
            "App".into(),
            "127.0.0.1:5050/App:v1".into(),
            "host:/x".into(),
            "-host.com/x".into(),
            "a:b:c".into(),
            "a@".into(),
            "a:".into(),
            "a:-x".into(),
            "a/".into(),
            "/a".into(),
            "a//b".into(),
            "a..b".into(),
            format!("app:{long_tag}x"),
            "app@sha256:abc".into(),
            "app@md5:".to_string() + &hex[..32],
            "app@sha256:".to_string() + &hex + "0",
            "[::1]:5000/app".into(),
        ];
        for case in &cases {
            let ours = parse_reference(case);
            let theirs = case.parse::<oci_client::Reference>();
            match (&ours, &theirs) {
                (Ok(o), Ok(t)) => {
                    assert_eq!(o.registry, t.registry(), "{case}");
                    assert_eq!(o.repository, t.repository(), "{case}");
                    assert_eq!(o.tag.as_deref(), t.tag(), "{case}");
                    assert_eq!(o.digest.as_deref(), t.digest(), "{case}");
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{case:?}: ours {ours:?}, oci-spec's {theirs:?}"),
            }
        }
        // Stricter, on purpose: a first component that is no host and no
        // repository name (the regex takes it for a host, then Docker Hub
        // for a repository no registry accepts), and a tag outside ASCII
        // (the grammar's \w is ASCII in Go, where it comes from).
        for case in ["Foo/bar", "app:caf\u{e9}"] {
            assert!(parse_reference(case).is_err(), "{case}");
        }
        let e = parse_reference("127.0.0.1:5050/App:v1").unwrap_err();
        assert!(e.contains("\"App\" is not a repository name"), "{e}");
    }

    #[test]
    fn repository_names() {
        for good in [
            "a",
            "hello",
            "library/hello",
            "a.b/c_d/e__f",
            "x-y",
            "x---y",
            "ab/cd/ef/gh",
            "0",
        ] {
            assert!(valid_repository(good), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "..", "a/./b", "A", "a_", "_a", "a___b", "a..b",
            "a.-b", "a b", "a:b", "a@b", "-a",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(!valid_repository(&"a".repeat(256)));
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", &"t".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
