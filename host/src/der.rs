//! Reading the few DER structures the host needs: a certificate's expiry
//! (server::tls) and a P-256 public key (a webhook sender's,
//! webhook::verify). Enough of X.690 for them, not a general parser: every
//! read is bounded by the input and an unexpected shape is `None`.

/// A DER element at the start of `der`: its tag, its contents, and what
/// follows it.
pub fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (bytes, rest) = rest.split_at(octets);
        (
            bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)),
            rest,
        )
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// A P-256 public key's SubjectPublicKeyInfo (RFC 5480) up to its point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }. DER
/// writes each value one way only, so every such key begins with it.
pub const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The uncompressed point of a P-256 public key written as a
/// SubjectPublicKeyInfo: what ring verifies signatures with.
pub fn p256_point(spki: &[u8]) -> Option<&[u8]> {
    spki.strip_prefix(P256_SPKI_PREFIX)
        .filter(|point| point.len() == 65 && point[0] == 0x04)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_p256_key_is_read_and_anything_else_is_not() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let spki = [P256_SPKI_PREFIX, point].concat();
        assert_eq!(p256_point(&spki), Some(point));
        // Cut short, one byte more, another curve's OID: not a P-256 key.
        assert_eq!(p256_point(&spki[..spki.len() - 1]), None);
        assert_eq!(p256_point(&[&spki[..], &[0]].concat()), None);
        let mut other = spki.clone();
        other[20] ^= 1;
        assert_eq!(p256_point(&other), None);
        assert_eq!(p256_point(b""), None);
        assert_eq!(element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
