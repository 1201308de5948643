//! The 48-byte file header. It is authenticated as the associated data of
//! every segment, so a header edit fails the first segment read after it.

use crate::FormatError;

/// Magic bytes (PNG-style: a high byte and CR LF catch text-mode mangling).
pub const MAGIC: [u8; 8] = *b"\x89MVF\r\n\x1a\n";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the per-file random salt.
pub const SALT_LEN: usize = 32;
/// Length of the serialized header.
pub const HEADER_LEN: usize = 48;

/// Plaintext bytes per segment, from a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentSize {
    /// 64 KiB: fine-grained random access.
    K64,
    /// 256 KiB.
    K256,
    /// 1 MiB: the default, a good balance of throughput and Range cost.
    #[default]
    M1,
    /// 4 MiB: bulk transfer.
    M4,
}

impl SegmentSize {
    /// All sizes, in code order.
    pub const ALL: [SegmentSize; 4] = [Self::K64, Self::K256, Self::M1, Self::M4];

    /// Plaintext bytes in a full segment.
    pub const fn bytes(self) -> usize {
        match self {
            Self::K64 => 64 << 10,
            Self::K256 => 256 << 10,
            Self::M1 => 1 << 20,
            Self::M4 => 4 << 20,
        }
    }

    /// The header code.
    pub const fn code(self) -> u8 {
        match self {
            Self::K64 => 0,
            Self::K256 => 1,
            Self::M1 => 2,
            Self::M4 => 3,
        }
    }

    /// Parses a header code.
    pub fn from_code(code: u8) -> Result<Self, FormatError> {
        Self::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .ok_or(FormatError::InvalidHeader)
    }

    /// Parses a size in bytes (config, bench flags).
    pub fn from_bytes(bytes: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.bytes() == bytes)
    }
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Generation of the version DEK the file key derives from.
    pub dek_generation: u32,
    /// Plaintext bytes per full segment.
    pub segment_size: SegmentSize,
    /// Random per-file HKDF salt.
    pub salt: [u8; SALT_LEN],
}

impl Header {
    /// A header with a fresh random salt.
    pub fn new(dek_generation: u32, segment_size: SegmentSize) -> Result<Self, FormatError> {
        let mut salt = [0u8; SALT_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| FormatError::Crypto("random salt"))?;
        Ok(Self {
            dek_generation,
            segment_size,
            salt,
        })
    }

    /// Serializes: magic, version, segment code, two reserved zero bytes,
    /// DEK generation (u32 big-endian), salt.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8] = FORMAT_VERSION;
        out[9] = self.segment_size.code();
        out[12..16].copy_from_slice(&self.dek_generation.to_be_bytes());
        out[16..].copy_from_slice(&self.salt);
        out
    }

    /// Parses the header at the start of `bytes` (extra bytes are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let bytes = bytes
            .get(..HEADER_LEN)
            .ok_or(FormatError::TruncatedHeader)?;
        if bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if bytes[8] != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(bytes[8]));
        }
        let segment_size = SegmentSize::from_code(bytes[9])?;
        if bytes[10] != 0 || bytes[11] != 0 {
            return Err(FormatError::InvalidHeader);
        }
        let dek_generation = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[16..HEADER_LEN]);
        Ok(Self {
            dek_generation,
            segment_size,
            salt,
        })
    }
}
