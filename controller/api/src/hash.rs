//! The one stable hash of the workspace: FNV-1a. Everything stored on objects or in the
//! account and compared later — NodePool and EC2NodeClass hashes (drift), karpctl's spec
//! hashes, deterministic resource names, Event action digests — must give the same value on
//! every machine, replica and Rust release, which std's randomly seeded hasher does not.
//! Changing these functions changes every stored hash: bump the hash versions when doing so.

const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0000_0100_0000_01b3;
const OFFSET_32: u32 = 0x811c_9dc5;
const PRIME_32: u32 = 0x0100_0193;

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: impl AsRef<[u8]>) -> u64 {
    bytes
        .as_ref()
        .iter()
        .fold(OFFSET_64, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME_64))
}

/// 32-bit FNV-1a (short name suffixes).
pub fn fnv1a32(bytes: impl AsRef<[u8]>) -> u32 {
    bytes
        .as_ref()
        .iter()
        .fold(OFFSET_32, |h, b| (h ^ u32::from(*b)).wrapping_mul(PRIME_32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}
