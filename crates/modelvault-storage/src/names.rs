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
/// `..` segments, no backslashes or control characters, at most 1024 bytes
/// (of the NFC form), and portable: see [`normalize_file_path`]. Accepts any
/// spelling whose NFC form passes.
pub fn validate_file_path(path: &str) -> Result<(), StorageError> {
    normalize_file_path(path).map(|_| ())
}

/// The one spelling under which a file path is stored and looked up: its
/// Unicode NFC form, after checking it against every rule of
/// [`validate_file_path`] and these, so that two spellings of one name
/// cannot become two files and no name hides what it is:
/// - no bidirectional controls, invisible (default-ignorable or format)
///   characters, line or paragraph separators, or unassigned code points;
/// - portable to every common file system: no `< > : " | ? *`, no segment
///   ending in `.` or a space, and no Windows device name (`CON`, `PRN`,
///   `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9`, also with an extension
///   and in any case).
pub fn normalize_file_path(path: &str) -> Result<String, StorageError> {
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc()
        .normalize(path)
        .into_owned();
    let bad = |why: &str| StorageError::InvalidInput(format!("invalid file path {path:?}: {why}"));
    check_structure(&nfc).map_err(bad)?;
    if let Some(c) = nfc.chars().find(|&c| is_hidden(c)) {
        return Err(bad(&format!(
            "U+{:04X} is a bidirectional control, invisible or unassigned character",
            u32::from(c)
        )));
    }
    if nfc
        .chars()
        .any(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'))
    {
        return Err(bad("the characters < > : \" | ? * are not portable"));
    }
    for seg in nfc.split('/') {
        if seg.ends_with('.') || seg.ends_with(' ') {
            return Err(bad("a segment ending in '.' or a space is not portable"));
        }
        if is_device_name(seg) {
            return Err(bad(
                "Windows device names (CON, PRN, AUX, NUL, COM1, LPT1, ...) are not portable",
            ));
        }
    }
    Ok(nfc)
}

/// The NFC form of a path named by a reader, checked only for structure
/// (not for the portability rules of [`normalize_file_path`], so files
/// committed before those rules stay readable).
pub fn lookup_file_path(path: &str) -> Result<String, StorageError> {
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc()
        .normalize(path)
        .into_owned();
    match check_structure(&nfc) {
        Ok(()) => Ok(nfc),
        Err(why) => Err(StorageError::InvalidInput(format!(
            "invalid file path {path:?}: {why}"
        ))),
    }
}

/// The rules every path, old or new, keeps: object keys never hold `.`,
/// `..` or empty segments, separators other than `/`, or controls.
fn check_structure(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > 1024 {
        return Err("must be 1-1024 bytes");
    }
    if path.starts_with('/') {
        return Err("must be relative");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err("control characters and backslashes are not allowed");
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("empty, '.' and '..' segments are not allowed");
        }
    }
    Ok(())
}

/// Bidi controls, default-ignorable (invisible) code points, format,
/// control, separator and unassigned characters, and private use.
fn is_hidden(c: char) -> bool {
    use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory};
    use icu_properties::{CodePointMapData, CodePointSetData};
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    if CodePointSetData::new::<BidiControl>().contains(c)
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
    {
        return true;
    }
    matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
    )
}

/// A Windows device name: the part before the first `.` (trailing spaces
/// ignored) is `CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9` or `LPT0`-`LPT9`
/// (or with a superscript digit), in any case. `CONIN$` and `CONOUT$` too.
fn is_device_name(seg: &str) -> bool {
    let stem = seg.split('.').next().unwrap_or(seg).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let mut chars = upper.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: String = chars.collect();
    (prefix == "COM" || prefix == "LPT")
        && (matches!(rest.as_str(), "\u{b9}" | "\u{b2}" | "\u{b3}")
            || (rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_digit())))
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

    #[test]
    fn file_paths_are_nfc_and_portable() {
        // Two spellings of one name are one path: the NFC form.
        let nfd = "mode\u{301}le/poids.bin";
        let nfc = "mod\u{e9}le/poids.bin";
        assert_eq!(normalize_file_path(nfd).unwrap(), nfc);
        assert_eq!(normalize_file_path(nfc).unwrap(), nfc);
        assert_eq!(lookup_file_path(nfd).unwrap(), nfc);
        for ok in [
            "a",
            "config/model.json",
            "x/.hidden",
            "a..b",
            "r\u{e9}sum\u{e9}.txt",
            "\u{6a21}\u{578b}/\u{6743}\u{91cd}.bin",
            "CONSOLE.txt",
            "com10",
            "lpt",
            "nul-model",
            ".x",
        ] {
            normalize_file_path(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            // Bidi controls: "evil\u{202e}txt.exe" shows as "evilexe.txt".
            "evil\u{202e}txt.exe",
            "a\u{2066}b",
            "a\u{200f}b",
            "a\u{61c}b",
            // Invisible characters.
            "a\u{200b}b",
            "a\u{200d}b",
            "a\u{feff}b",
            "a\u{ad}b",
            "a\u{2060}b",
            "a\u{34f}b",
            "a\u{fe0f}b",
            "a\u{e0041}b",
            // Separators, private use, unassigned, C1 controls.
            "a\u{2028}b",
            "a\u{e000}b",
            "a\u{378}b",
            "a\u{85}b",
            // Windows device names and what Windows strips.
            "CON",
            "con",
            "dir/Nul.txt",
            "aux.tar.gz",
            "COM1",
            "lpt9.bin",
            "com\u{b9}",
            "PRN /x",
            "a.",
            "dir./x",
            "a ",
            "x/b .",
            // Characters Windows refuses.
            "a:b",
            "a*b",
            "a?b",
            "a|b",
            "a<b",
            "a>b",
            "a\"b",
        ] {
            assert!(normalize_file_path(bad).is_err(), "{bad:?}");
            assert!(validate_file_path(bad).is_err(), "{bad:?}");
        }
        // The byte limit applies to the NFC form.
        let long = "e\u{301}".repeat(400);
        assert!(normalize_file_path(&long).is_ok());
        // Readers of files committed before these rules still find them.
        assert_eq!(lookup_file_path("CON").unwrap(), "CON");
        assert!(lookup_file_path("../x").is_err());
    }
}
