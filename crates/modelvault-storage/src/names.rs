//! Name rules. Everything that becomes part of an object key passes one of
//! these checks first, so keys never hold `.`/`..` segments or separators.

use crate::StorageError;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Namespace and model names: `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), StorageError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if is_lower_alnum(c))
        && name.len() <= 63
        && chars.all(|c| is_lower_alnum(c) || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidInput(format!(
            "invalid {kind} name {name:?}: use 1-63 characters from a-z 0-9 . _ -, starting with a letter or digit"
        )))
    }
}

/// Version names: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`. `latest` is reserved.
pub fn validate_version(version: &str) -> Result<(), StorageError> {
    let mut chars = version.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && version.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && version != "latest"
        && !version.starts_with("deployed-");
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidInput(format!(
            "invalid version {version:?}: use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit (\"latest\" and \"deployed-*\" are reserved)"
        )))
    }
}

/// File paths inside a version: relative, `/`-separated, no empty, `.` or
/// `..` segments, no backslashes or control characters, at most 1024 bytes.
pub fn validate_file_path(path: &str) -> Result<(), StorageError> {
    let bad = |why: &str| {
        Err(StorageError::InvalidInput(format!(
            "invalid file path {path:?}: {why}"
        )))
    };
    if path.is_empty() || path.len() > 1024 {
        return bad("must be 1-1024 bytes");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return bad("control characters and backslashes are not allowed");
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' and '..' segments are not allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "nlp", "bert-base.v2_x", "0"] {
            validate_name("model", ok).unwrap();
        }
        let long = "a".repeat(64);
        for bad in ["", "A", "-a", ".a", "a/b", "a b", long.as_str(), "é"] {
            assert!(validate_name("model", bad).is_err(), "{bad}");
        }
        for ok in ["1", "v1.0.0", "A_b-c", "2024.01"] {
            validate_version(ok).unwrap();
        }
        for bad in [
            "",
            ".1",
            "latest",
            "deployed-production",
            "a/b",
            "1 2",
            &"1".repeat(65),
        ] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
        for ok in ["a", "config/model.json", "x/.hidden", "a..b"] {
            validate_file_path(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "a\u{0}b",
        ] {
            assert!(validate_file_path(bad).is_err(), "{bad:?}");
        }
    }
}
