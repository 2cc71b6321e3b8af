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

#[cfg(test)]
mod tests {
    use super::*;

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
