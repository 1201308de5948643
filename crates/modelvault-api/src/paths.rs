//! API paths: the one percent-encoding of names and file paths in URLs, the
//! paths of models, versions and their files, and the check a client makes
//! of a file path a server names before writing it.

use std::fmt::Write as _;

/// Percent-encodes one path segment or query value: ASCII letters, digits
/// and `*-._` stay, every other byte becomes `%XX` (a space `%20`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Percent-encodes a `/`-separated file path inside a version, segment by
/// segment, keeping the slashes (the `{*path}` of the file routes).
pub fn file_path(path: &str) -> String {
    path.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// `/v1/models/{ns}/{name}`
pub fn model(namespace: &str, name: &str) -> String {
    format!("/v1/models/{}/{}", segment(namespace), segment(name))
}

/// `/v1/models/{ns}/{name}/versions/{version}`
pub fn version(namespace: &str, name: &str, version: &str) -> String {
    format!("{}/versions/{}", model(namespace, name), segment(version))
}

/// `/v1/models/{ns}/{name}/versions/{version}/uploads`: a draft's uploads.
pub fn version_uploads(namespace: &str, name: &str, version_name: &str) -> String {
    format!("{}/uploads", version(namespace, name, version_name))
}

/// `/v1/models/{ns}/{name}/versions/{version}/files/{*path}`: upload and
/// decrypting download of one file.
pub fn version_file(namespace: &str, name: &str, version_name: &str, path: &str) -> String {
    format!(
        "{}/files/{}",
        version(namespace, name, version_name),
        file_path(path)
    )
}

/// `/v1/models/{ns}/{name}/versions/{version}/ciphertext/{*path}`: the
/// stored ciphertext of one file (after a key release).
pub fn version_ciphertext(namespace: &str, name: &str, version_name: &str, path: &str) -> String {
    format!(
        "{}/ciphertext/{}",
        version(namespace, name, version_name),
        file_path(path)
    )
}

/// A file path a client refuses to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFilePath {
    /// The path.
    pub path: String,
    /// Why.
    pub reason: &'static str,
}

impl std::fmt::Display for InvalidFilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid file path {:?}: {}", self.path, self.reason)
    }
}

impl std::error::Error for InvalidFilePath {}

/// The client's check of a file path inside a version, before it becomes a
/// file under a local directory: relative, `/`-separated, 1-1024 bytes, no
/// empty, `.` or `..` segments, no backslash; no control character, line
/// or paragraph separator or bidirectional control (nothing that could
/// hide what the name is on a terminal); and portable: no `< > : " | ? *`,
/// no segment ending in `.` or a space, no Windows device name (`CON`,
/// `NUL`, `COM1`, `LPT1`, ..., also with an extension, in any case).
///
/// The server applies these rules and more at commit (Unicode
/// normalization, unassigned and invisible code points); a client that
/// only writes what a server names needs these.
pub fn check_file_path(path: &str) -> Result<(), InvalidFilePath> {
    let bad = |reason| {
        Err(InvalidFilePath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() || path.len() > 1024 {
        return bad("must be 1-1024 bytes");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.chars().any(|c| c == '\\' || hides(c)) {
        return bad(
            "control characters, separators, bidirectional controls and backslashes are not allowed",
        );
    }
    if path.contains(['<', '>', ':', '"', '|', '?', '*']) {
        return bad("the characters < > : \" | ? * are not portable");
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' and '..' segments are not allowed");
        }
        if seg.ends_with(['.', ' ']) {
            return bad("a segment ending in '.' or a space is not portable");
        }
        if device_name(seg) {
            return bad(
                "Windows device names (CON, PRN, AUX, NUL, COM1, LPT1, ...) are not portable",
            );
        }
    }
    Ok(())
}

/// Control characters, line and paragraph separators, and the
/// bidirectional marks, embeddings, overrides and isolates.
fn hides(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `CON`, `PRN`, `AUX`, `NUL`, `CONIN$`, `CONOUT$`, `COM0`-`COM9` and
/// `LPT0`-`LPT9` (also with a superscript 1-3), before the first `.` and
/// any trailing spaces, in any case.
fn device_name(seg: &str) -> bool {
    let stem = seg.split('.').next().unwrap_or(seg).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"].contains(&upper.as_str()) {
        return true;
    }
    ["COM", "LPT"].iter().any(|p| {
        upper.strip_prefix(p).is_some_and(|rest| {
            matches!(rest, "\u{b9}" | "\u{b2}" | "\u{b3}")
                || (rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding the server and the CLI have always used (that of
    /// `application/x-www-form-urlencoded`, with `%20` for a space).
    #[test]
    fn segments_encode_as_before() {
        assert_eq!(segment("nlp"), "nlp");
        assert_eq!(segment("A-z_0.9*"), "A-z_0.9*");
        assert_eq!(segment("a b+c/d%e"), "a%20b%2Bc%2Fd%25e");
        assert_eq!(segment("~"), "%7E");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(segment(""), "");
        assert_eq!(file_path("dir/a b.bin"), "dir/a%20b.bin");
    }

    #[test]
    fn routes() {
        assert_eq!(model("nlp", "bert"), "/v1/models/nlp/bert");
        assert_eq!(
            version("nlp", "bert", "1"),
            "/v1/models/nlp/bert/versions/1"
        );
        assert_eq!(
            version_file("nlp", "bert", "1", "config/a b.json"),
            "/v1/models/nlp/bert/versions/1/files/config/a%20b.json"
        );
        assert_eq!(
            version_ciphertext("nlp", "bert", "1", "w.bin"),
            "/v1/models/nlp/bert/versions/1/ciphertext/w.bin"
        );
    }

    #[test]
    fn file_paths() {
        for ok in [
            "a",
            "config/model.json",
            "x/.hidden",
            "a..b",
            "CONFIG",
            "COM10",
        ] {
            assert_eq!(check_file_path(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(1025);
        for bad in [
            "",
            long.as_str(),
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a\\b",
            "a\nb",
            "a\u{202e}b",
            "a\u{2028}b",
            "a:b",
            "a?",
            "dir./x",
            "x ",
            "con",
            "nul.txt",
            "Com1",
            "lpt\u{b9}",
        ] {
            assert!(check_file_path(bad).is_err(), "{bad:?}");
        }
    }
}
