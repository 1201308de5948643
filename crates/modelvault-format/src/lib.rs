//! The Modelvault encrypted file format (specified in `docs/FORMAT.md`).
//!
//! A file is a 48-byte header followed by AES-256-GCM segments sealed with a
//! per-file subkey derived (HKDF-SHA256) from the version's DEK, the header's
//! random salt and a length-prefixed identity. Every segment's nonce is the
//! segment index plus a last-segment flag, and every segment authenticates the
//! header as associated data.
//!
//! Invariants a reader must keep:
//! - no plaintext is ever returned from a segment that did not authenticate;
//! - key material lives only in [`Dek`] / [`FileKey`] / [`SealKey`], which
//!   never print their bytes; derived raw key bytes are zeroized as soon as
//!   ring has expanded them (ring's own key schedule is not zeroized by
//!   ring: a documented limit, see `docs/FORMAT.md`);
//! - nonces are derived, never random, and never reused under one file key
//!   (the salt is fresh per file, so the file key is).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod header;
mod keys;
mod opener;
mod stream;

pub use error::FormatError;
pub use header::{FORMAT_VERSION, HEADER_LEN, Header, MAGIC, SALT_LEN, SegmentSize};
pub use keys::{Dek, FileIdentity, FileKey, KEY_LEN, SealKey, hkdf_sha256};
pub use opener::StreamOpener;
pub use stream::{
    Decryptor, Encryptor, TAG_LEN, ciphertext_len, nonce_for, open_segment_in_place, plaintext_len,
    seal_segment_in_place,
};

/// Seals a whole plaintext in one call (tests, small files).
pub fn seal_to_vec(
    key: &FileKey,
    header: &Header,
    plaintext: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let mut enc = Encryptor::new(key, *header);
    let mut out =
        Vec::with_capacity(ciphertext_len(plaintext.len() as u64, header.segment_size) as usize);
    out.extend_from_slice(&header.to_bytes());
    enc.update(plaintext, &mut out)?;
    enc.finish(&mut out)?;
    Ok(out)
}

/// Opens a whole ciphertext in one call, checking that its header names
/// the identity's DEK generation.
pub fn open_to_vec(
    dek: &Dek,
    identity: &FileIdentity<'_>,
    ciphertext: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let header = Header::parse(ciphertext)?;
    let key = FileKey::derive(dek, &header, identity)?;
    let dec = Decryptor::new(&key, header, ciphertext.len() as u64)?;
    let mut out = Vec::with_capacity(dec.plaintext_len() as usize);
    let mut buf = Vec::new();
    for index in 0..dec.segment_count() {
        let range = dec.segment_ciphertext_range(index);
        buf.clear();
        buf.extend_from_slice(&ciphertext[range.start as usize..range.end as usize]);
        match dec.open_segment(index, &mut buf) {
            Ok(plain) => out.extend_from_slice(plain),
            Err(err) => {
                let mut fresh = ciphertext[range.start as usize..range.end as usize].to_vec();
                return Err(dec.diagnose(index, &mut fresh).unwrap_or(err));
            }
        }
    }
    Ok(out)
}

/// The fuzz target's entry point (also replayed over the seed corpus as an
/// ordinary test): parse a header, then open every segment under a fixed
/// key. It must return an error or plaintext for any input, never panic.
#[doc(hidden)]
pub fn fuzz_parse_and_open(data: &[u8]) {
    let dek = Dek::from_bytes([7u8; KEY_LEN]);
    let identity = FileIdentity {
        namespace: "fuzz",
        model: "m",
        version: "1",
        path: "f",
        dek_generation: Header::parse(data).map(|h| h.dek_generation).unwrap_or(0),
    };
    let _ = open_to_vec(&dek, &identity, data);
    if let Ok(header) = Header::parse(data) {
        let _ = plaintext_len(data.len() as u64, header.segment_size);
        let _ = Header::parse(&header.to_bytes());
    }
}
