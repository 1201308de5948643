//! The format's single error type. Messages are coarse on purpose: they say
//! which check failed and on which segment, never which byte.

/// Everything that can go wrong reading or writing the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a header.
    #[error("truncated header")]
    TruncatedHeader,
    /// The first eight bytes are not the Modelvault magic.
    #[error("not a modelvault encrypted file (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// A reserved byte is set or the segment-size code is unknown.
    #[error("invalid header")]
    InvalidHeader,
    /// The header names another DEK generation than the key record.
    #[error("header names DEK generation {found}, expected {expected}")]
    GenerationMismatch {
        /// Generation the caller holds a key for.
        expected: u32,
        /// Generation written in the header.
        found: u32,
    },
    /// The ciphertext length cannot be a sequence of whole segments.
    #[error("invalid ciphertext length")]
    InvalidLength,
    /// The stream stops at a segment boundary before its final segment.
    #[error("truncated stream: final segment missing")]
    Truncated,
    /// Data follows the final segment.
    #[error("data after the final segment")]
    TrailingData,
    /// A segment failed authentication (flipped bit, wrong key, moved or
    /// reordered segment).
    #[error("segment {index} failed authentication")]
    SegmentAuthFailed {
        /// Index of the segment that failed.
        index: u64,
    },
    /// A segment index beyond the end of the stream.
    #[error("segment {index} out of range")]
    SegmentOutOfRange {
        /// The requested index.
        index: u64,
    },
    /// A segment buffer of the wrong size was passed in.
    #[error("segment {index} has the wrong length")]
    SegmentLength {
        /// Index of the segment.
        index: u64,
    },
    /// Data was written after `finish`, or a non-final segment was short.
    #[error("encryptor misuse: {0}")]
    Misuse(&'static str),
    /// Sealed metadata failed authentication or is malformed.
    #[error("sealed data failed authentication")]
    SealedAuthFailed,
    /// The system random source or a key derivation failed.
    #[error("cryptographic primitive failed: {0}")]
    Crypto(&'static str),
}
