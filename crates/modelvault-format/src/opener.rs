//! [`StreamOpener`]: opens a whole sealed file as its ciphertext arrives in
//! chunks of any size (a network stream), for clients that hold the DEK
//! (a key release). It keeps at most one segment of ciphertext pending and
//! returns plaintext only from segments that authenticated.

use crate::{Decryptor, Dek, FileIdentity, FileKey, FormatError, HEADER_LEN, Header};

/// Opens one sealed file, chunk by chunk.
pub struct StreamOpener {
    dek: Dek,
    namespace: String,
    model: String,
    version: String,
    path: String,
    dek_generation: u32,
    ct_len: u64,
    expected_salt: Option<[u8; crate::SALT_LEN]>,
    opened: Option<(FileKey, Header)>,
    /// Ciphertext received and not yet opened.
    pending: Vec<u8>,
    /// Ciphertext bytes before `pending`.
    consumed: u64,
    /// The next segment to open.
    index: u64,
    received: u64,
}

impl StreamOpener {
    /// An opener for the file `identity` names, `ct_len` bytes of
    /// ciphertext (header included), sealed under `dek`. With
    /// `expected_salt` the header must carry that salt (the blob the
    /// server's release named).
    pub fn new(
        dek: &Dek,
        identity: &FileIdentity<'_>,
        ct_len: u64,
        expected_salt: Option<[u8; crate::SALT_LEN]>,
    ) -> Self {
        Self {
            dek: Dek::from_bytes(*dek.expose_secret()),
            namespace: identity.namespace.to_owned(),
            model: identity.model.to_owned(),
            version: identity.version.to_owned(),
            path: identity.path.to_owned(),
            dek_generation: identity.dek_generation,
            ct_len,
            expected_salt,
            opened: None,
            pending: Vec::new(),
            consumed: 0,
            index: 0,
            received: 0,
        }
    }

    /// Takes the next chunk of ciphertext and appends to `out` the
    /// plaintext of every segment it completes.
    pub fn update(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.received += chunk.len() as u64;
        if self.received > self.ct_len {
            return Err(FormatError::TrailingData);
        }
        self.pending.extend_from_slice(chunk);
        if self.opened.is_none() {
            if self.pending.len() < HEADER_LEN {
                return Ok(());
            }
            let header = Header::parse(&self.pending[..HEADER_LEN])?;
            if let Some(salt) = self.expected_salt
                && salt != header.salt
            {
                return Err(FormatError::InvalidHeader);
            }
            let identity = FileIdentity {
                namespace: &self.namespace,
                model: &self.model,
                version: &self.version,
                path: &self.path,
                dek_generation: self.dek_generation,
            };
            let key = FileKey::derive(&self.dek, &header, &identity)?;
            self.opened = Some((key, header));
        }
        let Some((key, header)) = &self.opened else {
            return Ok(());
        };
        let d = Decryptor::new(key, *header, self.ct_len)?;
        let mut start_of_rest = 0usize;
        while self.index < d.segment_count() {
            let r = d.segment_ciphertext_range(self.index);
            if self.consumed + (self.pending.len() as u64) < r.end {
                break;
            }
            let a = (r.start - self.consumed) as usize;
            let b = (r.end - self.consumed) as usize;
            let plain = d.open_segment(self.index, &mut self.pending[a..b])?;
            out.extend_from_slice(plain);
            start_of_rest = b;
            self.index += 1;
        }
        if start_of_rest > 0 {
            self.pending.drain(..start_of_rest);
            self.consumed += start_of_rest as u64;
        }
        Ok(())
    }

    /// Checks that the whole file arrived and every segment opened.
    pub fn finish(&self) -> Result<(), FormatError> {
        let Some((key, header)) = &self.opened else {
            return Err(FormatError::TruncatedHeader);
        };
        let d = Decryptor::new(key, *header, self.ct_len)?;
        if self.index < d.segment_count() || self.received != self.ct_len {
            return Err(FormatError::Truncated);
        }
        Ok(())
    }

    /// The plaintext length the ciphertext length implies, once the header
    /// has arrived.
    pub fn plaintext_len(&self) -> Option<u64> {
        let (key, header) = self.opened.as_ref()?;
        Decryptor::new(key, *header, self.ct_len)
            .ok()
            .map(|d| d.plaintext_len())
    }
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("path", &self.path)
            .field("ct_len", &self.ct_len)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentSize;

    #[test]
    fn opens_in_any_chunking_and_refuses_tampering() {
        let dek = Dek::generate().unwrap();
        let id = FileIdentity {
            namespace: "ns",
            model: "m",
            version: "v",
            path: "f",
            dek_generation: 1,
        };
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let header = Header::new(1, SegmentSize::K64).unwrap();
        let key = FileKey::derive(&dek, &header, &id).unwrap();
        let sealed = crate::seal_to_vec(&key, &header, &plain).unwrap();
        for chunk in [1usize, 7, 4096, 65_536 + 16, 1 << 20] {
            let mut o = StreamOpener::new(&dek, &id, sealed.len() as u64, None);
            let mut out = Vec::new();
            for c in sealed.chunks(chunk) {
                o.update(c, &mut out).unwrap();
            }
            o.finish().unwrap();
            assert_eq!(out, plain, "chunk {chunk}");
        }
        let mut bad = sealed.clone();
        bad[HEADER_LEN + 70_000] ^= 1;
        let mut o = StreamOpener::new(&dek, &id, bad.len() as u64, None);
        let mut out = Vec::new();
        assert!(o.update(&bad, &mut out).is_err());
        assert_eq!(out.len(), 65_536, "only the authenticated first segment");
        let mut o = StreamOpener::new(&dek, &id, sealed.len() as u64, None);
        o.update(&sealed[..sealed.len() - 1], &mut Vec::new())
            .unwrap();
        assert!(o.finish().is_err(), "a short stream does not finish");
        let other = FileIdentity { path: "g", ..id };
        let mut o = StreamOpener::new(&dek, &other, sealed.len() as u64, None);
        assert!(o.update(&sealed, &mut Vec::new()).is_err(), "moved file");
    }
}
