//! Segment sealing and opening. Segment `i` of `n` is sealed under the file
//! key with nonce `nonce_for(i, i == n - 1)` and the serialized header as
//! associated data. Only the final segment may be shorter than the segment
//! size, and it is empty only when the whole file is.

use std::ops::Range;

use ring::aead::{Aad, NONCE_LEN, Nonce, Tag};

use crate::{FileKey, FormatError, HEADER_LEN, Header, SegmentSize};

/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// The nonce of segment `index` (12 bytes): three zero bytes, the index as
/// u64 big-endian, then the last-segment flag (0x00 or 0x01).
pub fn nonce_for(index: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Ciphertext length (header included) of a plaintext of `len` bytes.
pub fn ciphertext_len(len: u64, segment_size: SegmentSize) -> u64 {
    let s = segment_size.bytes() as u64;
    let segments = len.div_ceil(s).max(1);
    HEADER_LEN as u64 + len + segments * TAG_LEN as u64
}

/// Plaintext length and segment count of a ciphertext of `ct_len` bytes
/// (header included), or the structural error.
pub fn plaintext_len(ct_len: u64, segment_size: SegmentSize) -> Result<(u64, u64), FormatError> {
    let body = ct_len
        .checked_sub(HEADER_LEN as u64)
        .ok_or(FormatError::TruncatedHeader)?;
    if body < TAG_LEN as u64 {
        return Err(FormatError::Truncated);
    }
    let full = (segment_size.bytes() + TAG_LEN) as u64;
    let segments = body.div_ceil(full);
    let last = body - (segments - 1) * full;
    if last < TAG_LEN as u64 || (segments > 1 && last == TAG_LEN as u64) {
        return Err(FormatError::InvalidLength);
    }
    Ok((body - segments * TAG_LEN as u64, segments))
}

/// Seals one segment in place; returns its tag.
pub fn seal_segment_in_place(
    key: &FileKey,
    header_bytes: &[u8; HEADER_LEN],
    index: u64,
    last: bool,
    data: &mut [u8],
) -> Result<[u8; TAG_LEN], FormatError> {
    let tag: Tag = key
        .key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_for(index, last)),
            Aad::from(header_bytes),
            data,
        )
        .map_err(|_| FormatError::Crypto("seal"))?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens one segment (`ciphertext || tag`) in place; returns the plaintext
/// length. On failure the buffer is zeroed (ring's behaviour).
pub fn open_segment_in_place(
    key: &FileKey,
    header_bytes: &[u8; HEADER_LEN],
    index: u64,
    last: bool,
    data: &mut [u8],
) -> Result<usize, FormatError> {
    key.key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce_for(index, last)),
            Aad::from(header_bytes),
            data,
        )
        .map(|p| p.len())
        .map_err(|_| FormatError::SegmentAuthFailed { index })
}

/// Streaming encryptor. Feed plaintext with [`Encryptor::update`] or whole
/// segments with [`Encryptor::seal_segment`]; [`Encryptor::finish`] seals
/// the final segment. The header bytes are written by the caller first.
pub struct Encryptor<'k> {
    key: &'k FileKey,
    header: [u8; HEADER_LEN],
    segment: usize,
    index: u64,
    buf: Vec<u8>,
    finished: bool,
}

impl<'k> Encryptor<'k> {
    /// An encryptor for a file with `header`.
    pub fn new(key: &'k FileKey, header: Header) -> Self {
        let segment = header.segment_size.bytes();
        Self {
            key,
            header: header.to_bytes(),
            segment,
            index: 0,
            buf: Vec::new(),
            finished: false,
        }
    }

    /// The serialized header.
    pub fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// Plaintext bytes per full segment.
    pub fn segment_len(&self) -> usize {
        self.segment
    }

    /// Seals one segment in place, appending its tag to `data`. Non-final
    /// segments must be exactly one segment long; the final one at most.
    pub fn seal_segment(&mut self, data: &mut Vec<u8>, last: bool) -> Result<(), FormatError> {
        if self.finished {
            return Err(FormatError::Misuse("segment after the final one"));
        }
        if (!last && data.len() != self.segment) || data.len() > self.segment {
            return Err(FormatError::Misuse("segment of the wrong length"));
        }
        if last && data.is_empty() && self.index > 0 {
            // An empty final segment only ever appears alone (empty file).
            return Err(FormatError::Misuse("empty final segment after data"));
        }
        let tag = seal_segment_in_place(self.key, &self.header, self.index, last, data)?;
        data.extend_from_slice(&tag);
        self.index += 1;
        self.finished = last;
        Ok(())
    }

    /// Buffers plaintext, appending every completed non-final segment to
    /// `out`. A full segment is held back until more data shows it is not
    /// the last one.
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        if self.finished {
            return Err(FormatError::Misuse("update after finish"));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.segment + TAG_LEN);
        }
        while !data.is_empty() {
            if self.buf.len() == self.segment {
                let mut seg = std::mem::take(&mut self.buf);
                self.seal_segment(&mut seg, false)?;
                out.extend_from_slice(&seg);
                seg.clear();
                self.buf = seg;
            }
            let take = (self.segment - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the buffered tail as the final segment into `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let mut seg = std::mem::take(&mut self.buf);
        if seg.is_empty() && self.index > 0 {
            return Err(FormatError::Misuse("finish with nothing buffered"));
        }
        self.seal_segment(&mut seg, true)?;
        out.extend_from_slice(&seg);
        Ok(())
    }
}

/// Random-access decryptor over a ciphertext of known length.
pub struct Decryptor<'k> {
    key: &'k FileKey,
    header: [u8; HEADER_LEN],
    segment: u64,
    segments: u64,
    plaintext_len: u64,
}

impl<'k> Decryptor<'k> {
    /// A decryptor for a ciphertext of `ct_len` bytes (header included).
    pub fn new(key: &'k FileKey, header: Header, ct_len: u64) -> Result<Self, FormatError> {
        let (plaintext_len, segments) = plaintext_len(ct_len, header.segment_size)?;
        Ok(Self {
            key,
            header: header.to_bytes(),
            segment: header.segment_size.bytes() as u64,
            segments,
            plaintext_len,
        })
    }

    /// Plaintext bytes in the file.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Number of segments (at least one).
    pub fn segment_count(&self) -> u64 {
        self.segments
    }

    /// Plaintext bytes per full segment.
    pub fn segment_len(&self) -> u64 {
        self.segment
    }

    /// Byte range of segment `index` in the ciphertext (header included).
    pub fn segment_ciphertext_range(&self, index: u64) -> Range<u64> {
        let full = self.segment + TAG_LEN as u64;
        let start = HEADER_LEN as u64 + index * full;
        let plain = self.segment_plaintext_range(index);
        start..start + (plain.end - plain.start) + TAG_LEN as u64
    }

    /// Byte range of segment `index` in the plaintext.
    pub fn segment_plaintext_range(&self, index: u64) -> Range<u64> {
        let start = (index * self.segment).min(self.plaintext_len);
        let end = (start + self.segment).min(self.plaintext_len);
        start..end
    }

    /// The segments covering plaintext bytes `range` (empty for an empty
    /// range).
    pub fn segments_for(&self, range: Range<u64>) -> Range<u64> {
        if range.start >= range.end {
            return 0..0;
        }
        let end = range.end.min(self.plaintext_len);
        (range.start / self.segment)..end.div_ceil(self.segment)
    }

    /// Opens segment `index` from `buf`, which holds exactly its ciphertext
    /// and tag; returns the plaintext, a prefix of `buf`. A final segment
    /// that authenticates only as a non-final one is reported as
    /// [`FormatError::Truncated`].
    pub fn open_segment<'b>(&self, index: u64, buf: &'b mut [u8]) -> Result<&'b [u8], FormatError> {
        if index >= self.segments {
            return Err(FormatError::SegmentOutOfRange { index });
        }
        let expected = self.segment_ciphertext_range(index);
        if buf.len() as u64 != expected.end - expected.start {
            return Err(FormatError::SegmentLength { index });
        }
        let last = index + 1 == self.segments;
        // The final segment is read once per file: keep a copy so a failure
        // can be told apart from a truncation at a segment boundary.
        let copy = last.then(|| buf.to_vec());
        match open_segment_in_place(self.key, &self.header, index, last, buf) {
            Ok(len) => Ok(&buf[..len]),
            Err(err) => match copy {
                Some(mut copy) => Err(self.diagnose(index, &mut copy).unwrap_or(err)),
                None => Err(err),
            },
        }
    }

    /// Explains a failed segment from a fresh copy of its ciphertext: a
    /// final segment that opens as non-final means truncation; a non-final
    /// one that opens as final means data was appended. `None` when
    /// neither holds.
    pub fn diagnose(&self, index: u64, ciphertext: &mut [u8]) -> Option<FormatError> {
        let last = index + 1 == self.segments;
        open_segment_in_place(self.key, &self.header, index, !last, ciphertext)
            .ok()
            .map(|_| {
                if last {
                    FormatError::Truncated
                } else {
                    FormatError::TrailingData
                }
            })
    }
}
