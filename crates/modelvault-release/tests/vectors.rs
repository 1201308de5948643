//! RFC 9180 test vectors for the suite Modelvault uses, and a release
//! opened by an independent implementation of the RFC's steps (x25519-dalek
//! for the DH, ring's HMAC for HKDF, ring's AES-256-GCM), so the sealing is
//! checked against the specification, not only against itself.

use modelvault_format::Dek;
use modelvault_release::{AAD, ClientKey, ReleaseContext, seal};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// RFC 9180 test vector for our suite: mode 0 (base), kem 0x0020, kdf
/// 0x0001, aead 0x0002, from the RFC's test-vectors.json (as carried in Go's
/// crypto/internal/hpke/testdata/rfc9180.json): DeriveKeyPair of ikmR gives
/// skRm and pkRm, of ikmE gives the ephemeral key whose public half is enc.
#[test]
fn rfc9180_base_x25519_sha256_aes256gcm_key_derivation() {
    let receiver = ClientKey::derive(&h(
        "dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee",
    ));
    // The crate keeps the scalar clamped (RFC 7748); the vector's skRm is
    // the unclamped DeriveKeyPair output.
    let mut clamped = h("497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d");
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    assert_eq!(receiver.private_bytes_for_tests(), clamped);
    assert_eq!(
        receiver.public_bytes(),
        h("430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c")
    );
    let ephemeral = ClientKey::derive(&h(
        "2cd7c601cefb3d42a62b04b7a9041494c06c7843818e0ce28a8f704ae7ab20f9",
    ));
    assert_eq!(
        ephemeral.public_bytes(),
        h("6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256")
    );
    // The independent implementation derives the same receiver key.
    assert_eq!(
        independent::derive_sk(&h(
            "dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee"
        )),
        h("497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d")
    );
}

#[test]
fn a_release_opens_with_an_independent_implementation() {
    let dek = Dek::generate().unwrap();
    let client = ClientKey::generate();
    let ctx = ReleaseContext {
        request_id: "0194-req",
        namespace: "nlp",
        model: "bert",
        version: "7",
        dek_generation: 3,
    };
    let sealed = seal(&client.public_bytes(), &dek, &ctx).unwrap();
    let (key, nonce) =
        independent::key_schedule(&client.private_bytes_for_tests(), &sealed.enc, &ctx.info());
    let opened = independent::open(&key, &nonce, AAD, &sealed.ciphertext).unwrap();
    assert_eq!(opened.as_slice(), dek.expose_secret());
}

/// RFC 9180 §4.1 and §5.1, written out step by step.
mod independent {
    use ring::hmac;

    const KEM_SUITE: &[u8] = b"KEM\x00\x20";
    const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x02";

    fn extract(salt: &[u8], ikm: &[u8]) -> Vec<u8> {
        let salt = if salt.is_empty() {
            &[0u8; 32][..]
        } else {
            salt
        };
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm)
            .as_ref()
            .to_vec()
    }

    fn expand(prk: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        assert!(len <= 32);
        let mut msg = info.to_vec();
        msg.push(1);
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk), &msg).as_ref()[..len].to_vec()
    }

    fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Vec<u8> {
        extract(salt, &[b"HPKE-v1", suite, label, ikm].concat())
    }

    fn labeled_expand(suite: &[u8], prk: &[u8], label: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let l = (len as u16).to_be_bytes();
        expand(prk, &[&l[..], b"HPKE-v1", suite, label, info].concat(), len)
    }

    /// DeriveKeyPair(ikm) for X25519: the private key.
    pub fn derive_sk(ikm: &[u8]) -> Vec<u8> {
        let prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm);
        labeled_expand(KEM_SUITE, &prk, b"sk", b"", 32)
    }

    /// Decap + KeySchedule in base mode: (key, base_nonce).
    pub fn key_schedule(sk_r: &[u8], enc: &[u8], info: &[u8]) -> ([u8; 32], [u8; 12]) {
        let sk = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(sk_r).unwrap());
        let pk_r = x25519_dalek::PublicKey::from(&sk);
        let pk_e = x25519_dalek::PublicKey::from(<[u8; 32]>::try_from(enc).unwrap());
        let dh = sk.diffie_hellman(&pk_e);
        let kem_context = [enc, pk_r.as_bytes()].concat();
        let eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh.as_bytes());
        let shared = labeled_expand(KEM_SUITE, &eae_prk, b"shared_secret", &kem_context, 32);
        let psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"");
        let info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info);
        let ksc = [&[0u8][..], &psk_id_hash, &info_hash].concat();
        let secret = labeled_extract(HPKE_SUITE, &shared, b"secret", b"");
        let key = labeled_expand(HPKE_SUITE, &secret, b"key", &ksc, 32);
        let nonce = labeled_expand(HPKE_SUITE, &secret, b"base_nonce", &ksc, 12);
        (key.try_into().unwrap(), nonce.try_into().unwrap())
    }

    /// AES-256-GCM open of the first message (sequence number 0).
    pub fn open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
        let mut buf = ct.to_vec();
        let plain = k
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}
