//! Metadata a component carries about itself: a custom section named
//! `modelvault:metadata` ([`METADATA_SECTION`]) holding one UTF-8 JSON
//! object with optional string fields:
//!
//! ```json
//! {"name": "frozen-models", "version": "1.2.0",
//!  "author": "ML platform team <mlp@example.com>",
//!  "description": "Denies frozen models outside exempt environments"}
//! ```
//!
//! Unknown fields, non-string values, control characters (and the Unicode
//! line separators and bidirectional controls, see [`crate::text`]) and
//! values longer than their bound are errors. The section may be at the component's top
//! level (where [`embed`] and `modelvault policy metadata set` put it) or
//! inside one of its core modules (where the Rust SDK's `policy_metadata!`
//! puts it); a top-level section wins. It is informative only: the host
//! never decides anything on it, and it is covered by the component's
//! digest, so a signature covers it too.

use serde::{Deserialize, Serialize};

/// The custom section's name.
pub const METADATA_SECTION: &str = "modelvault:metadata";
/// Largest section accepted.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest `name` and `version`.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest `author`.
pub const MAX_AUTHOR_BYTES: usize = 256;
/// Longest `description`.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// What a component says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMetadata {
    /// The policy's own name (not necessarily the name it is installed as).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A component whose metadata cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The bytes are not a WebAssembly binary.
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    /// The section is there but not valid.
    #[error("invalid {METADATA_SECTION} section: {0}")]
    Invalid(String),
}

impl PolicyMetadata {
    /// Checks the bounds and the characters of every field.
    pub fn check(&self) -> Result<(), MetadataError> {
        let fields = [
            ("name", &self.name, MAX_NAME_BYTES),
            ("version", &self.version, MAX_NAME_BYTES),
            ("author", &self.author, MAX_AUTHOR_BYTES),
            ("description", &self.description, MAX_DESCRIPTION_BYTES),
        ];
        for (field, value, max) in fields {
            let Some(v) = value else { continue };
            if v.len() > max {
                return Err(MetadataError::Invalid(format!(
                    "{field} is {} bytes long (at most {max})",
                    v.len()
                )));
            }
            if crate::text::has_unsafe_chars(v) {
                return Err(MetadataError::Invalid(format!(
                    "{field} contains a control, line-separator or bidirectional-control character"
                )));
            }
        }
        Ok(())
    }

    /// Whether every field is absent.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The section's contents, checked.
    pub fn parse(section: &[u8]) -> Result<Self, MetadataError> {
        if section.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::Invalid(format!(
                "{} bytes (at most {MAX_METADATA_BYTES})",
                section.len()
            )));
        }
        let meta: Self =
            serde_json::from_slice(section).map_err(|e| MetadataError::Invalid(e.to_string()))?;
        meta.check()?;
        Ok(meta)
    }
}

/// The metadata a component carries, if any.
pub fn read(component: &[u8]) -> Result<Option<PolicyMetadata>, MetadataError> {
    let mut depth = 0usize;
    let mut outer: Option<&[u8]> = None;
    let mut inner: Option<&[u8]> = None;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.map_err(|e| MetadataError::NotWasm(e.to_string()))? {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::CustomSection(c) if c.name() == METADATA_SECTION => {
                let slot = if depth <= 1 { &mut outer } else { &mut inner };
                if slot.replace(c.data()).is_some() {
                    return Err(MetadataError::Invalid(format!(
                        "more than one {METADATA_SECTION} section at one level"
                    )));
                }
            }
            _ => {}
        }
    }
    outer.or(inner).map(PolicyMetadata::parse).transpose()
}

fn read_leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7f);
        value |= part.checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_leb_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A copy of `component` carrying `meta` in a top-level
/// `modelvault:metadata` section (any top-level one it had is dropped;
/// nothing else changes). An empty `meta` only drops the section.
pub fn embed(component: &[u8], meta: &PolicyMetadata) -> Result<Vec<u8>, MetadataError> {
    meta.check()?;
    let bad = |what: &str| MetadataError::NotWasm(what.to_string());
    if component.len() < 8 || &component[..4] != b"\0asm" {
        return Err(bad("no \\0asm header"));
    }
    let mut out = component[..8].to_vec();
    let mut pos = 8;
    while pos < component.len() {
        let id = component[pos];
        let (size, n) = component
            .get(pos + 1..)
            .and_then(read_leb_u32)
            .ok_or_else(|| bad("bad section size"))?;
        let start = pos + 1 + n;
        let end = start
            .checked_add(size as usize)
            .filter(|e| *e <= component.len())
            .ok_or_else(|| bad("section runs past the end"))?;
        let ours = id == 0
            && read_leb_u32(&component[start..end]).is_some_and(|(len, m)| {
                component
                    .get(start + m..start + m + len as usize)
                    .is_some_and(|name| name == METADATA_SECTION.as_bytes())
                    && start + m + len as usize <= end
            });
        if !ours {
            out.extend_from_slice(&component[pos..end]);
        }
        pos = end;
    }
    if !meta.is_empty() {
        let json = serde_json::to_vec(meta).map_err(|e| MetadataError::Invalid(e.to_string()))?;
        if json.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::Invalid(format!(
                "{} bytes (at most {MAX_METADATA_BYTES})",
                json.len()
            )));
        }
        let mut body = Vec::new();
        write_leb_u32(&mut body, METADATA_SECTION.len() as u32);
        body.extend_from_slice(METADATA_SECTION.as_bytes());
        body.extend_from_slice(&json);
        out.push(0);
        write_leb_u32(&mut out, body.len() as u32);
        out.extend_from_slice(&body);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An empty component and an empty core module.
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn custom(name: &str, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        write_leb_u32(&mut body, name.len() as u32);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        let mut out = vec![0];
        write_leb_u32(&mut out, body.len() as u32);
        out.extend_from_slice(&body);
        out
    }

    /// A component holding one core module with `module_sections`.
    fn component_with_module(module_sections: &[u8]) -> Vec<u8> {
        let mut module = MODULE.to_vec();
        module.extend_from_slice(module_sections);
        let mut c = COMPONENT.to_vec();
        c.push(1); // core module section
        write_leb_u32(&mut c, module.len() as u32);
        c.extend_from_slice(&module);
        c
    }

    #[test]
    fn embeds_reads_and_replaces() {
        assert_eq!(read(COMPONENT).unwrap(), None);
        let meta = PolicyMetadata {
            name: Some("frozen-models".into()),
            version: Some("1.2.0".into()),
            author: Some("Ada \"the\" Author".into()),
            description: None,
        };
        let with = embed(COMPONENT, &meta).unwrap();
        assert_eq!(read(&with).unwrap(), Some(meta.clone()));
        let other = PolicyMetadata {
            version: Some("2".into()),
            ..PolicyMetadata::default()
        };
        let replaced = embed(&with, &other).unwrap();
        assert_eq!(read(&replaced).unwrap(), Some(other));
        assert_eq!(embed(&with, &PolicyMetadata::default()).unwrap(), COMPONENT);
    }

    #[test]
    fn reads_a_core_module_section_and_prefers_the_top_level() {
        let c = component_with_module(&custom(METADATA_SECTION, br#"{"name":"inner"}"#));
        assert_eq!(read(&c).unwrap().unwrap().name.as_deref(), Some("inner"));
        let top = PolicyMetadata {
            name: Some("outer".into()),
            ..PolicyMetadata::default()
        };
        let c2 = embed(&c, &top).unwrap();
        assert_eq!(read(&c2).unwrap(), Some(top));
        // The inner section is kept (embed only touches the top level).
        assert!(c2.starts_with(&c));
    }

    #[test]
    fn refuses_bad_sections() {
        let mut c = COMPONENT.to_vec();
        c.extend(custom(METADATA_SECTION, br#"{"authors":"x"}"#));
        assert!(read(&c).unwrap_err().to_string().contains("unknown field"));
        let mut c = COMPONENT.to_vec();
        c.extend(custom(METADATA_SECTION, br#"{"name":"a\u001b[31m"}"#));
        assert!(read(&c).unwrap_err().to_string().contains("control"));
        let mut c = COMPONENT.to_vec();
        c.extend(custom(
            METADATA_SECTION,
            "{\"name\":\"a\u{202e}b\"}".as_bytes(),
        ));
        assert!(read(&c).is_err());
        let mut c = COMPONENT.to_vec();
        c.extend(custom(METADATA_SECTION, b"{}"));
        c.extend(custom(METADATA_SECTION, b"{}"));
        assert!(read(&c).is_err());
        let mut c = COMPONENT.to_vec();
        c.extend(custom(
            METADATA_SECTION,
            &vec![b' '; MAX_METADATA_BYTES + 1],
        ));
        assert!(read(&c).is_err());
        let long = PolicyMetadata {
            description: Some("x".repeat(MAX_DESCRIPTION_BYTES + 1)),
            ..PolicyMetadata::default()
        };
        assert!(embed(COMPONENT, &long).is_err());
        assert!(embed(b"junk", &PolicyMetadata::default()).is_err());
        assert!(embed(b"\0asm\x0d\0\x01\0\x00\x05ab", &PolicyMetadata::default()).is_err());
    }
}
