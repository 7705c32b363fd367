//! The only module that calls libsodium and the only one that holds key material.
//!
//! Everything here is I/O-free: callers hand in bytes and get bytes back. The
//! file format that strings these pieces together lives in `store::sealed`.

use std::fmt;

use libsodium_rs::crypto_box;
use libsodium_rs::crypto_hash::sha256;
use libsodium_rs::crypto_pwhash;
use libsodium_rs::crypto_scalarmult::curve25519;
use libsodium_rs::crypto_secretbox;
use libsodium_rs::crypto_secretstream::xchacha20poly1305 as secretstream;
use libsodium_rs::{random, utils};
use zeroize::{Zeroize, Zeroizing};

/// Bytes of an X25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Bytes of a KDF salt.
pub const SALT_BYTES: usize = 16;
/// Bytes of a secretbox nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes of the secret key wrapped with secretbox (32 + 16 MAC).
pub const WRAPPED_KEY_BYTES: usize = 48;
/// Bytes of `crypto_box_seal(K)` for a 32-byte stream key.
pub const SEALED_STREAM_KEY_BYTES: usize = 32 + 48;
/// Bytes of a secretstream header.
pub const STREAM_HEADER_BYTES: usize = 24;
/// Bytes secretstream adds to every record.
pub const STREAM_ABYTES: usize = 17;
/// Smallest opslimit (passes) libsodium's Argon2id accepts.
pub const OPSLIMIT_MIN: u64 = 1;
/// Smallest memlimit (bytes) libsodium's Argon2id accepts.
pub const MEMLIMIT_MIN: u64 = 8 * 1024;

/// What can go wrong in this module, in words a mail administrator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The password does not unwrap the key (or the key file was altered).
    WrongPassword,
    /// The unwrapped secret key does not belong to the stored public key.
    KeyMismatch,
    /// The KDF parameters are outside what libsodium accepts, or memory ran out.
    Kdf(String),
    /// A sealed stream key could not be opened: not for this key, or damaged.
    SealedKey,
    /// A record failed authentication or has an unknown tag.
    Record,
    /// A value is not valid base64 or has the wrong length.
    Encoding(String),
    /// libsodium could not be initialised.
    Init,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::WrongPassword => f.write_str("wrong password"),
            CryptoError::KeyMismatch => {
                f.write_str("the secret key does not match the mailbox public key")
            }
            CryptoError::Kdf(why) => write!(f, "key derivation failed: {why}"),
            CryptoError::SealedKey => f.write_str("the message key cannot be opened"),
            CryptoError::Record => f.write_str("a record failed authentication"),
            CryptoError::Encoding(why) => f.write_str(why),
            CryptoError::Init => f.write_str("libsodium could not be initialised"),
        }
    }
}

impl std::error::Error for CryptoError {}

fn init() -> Result<(), CryptoError> {
    libsodium_rs::ensure_init().map_err(|_| CryptoError::Init)
}

/// A password: zeroized on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Takes ownership of the text; the caller's copy is moved, not duplicated.
    pub fn new(text: String) -> Password {
        Password(Zeroizing::new(text))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// An X25519 public key, safe to show and store.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    /// Parses the 32 raw bytes of a key.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, CryptoError> {
        let array: [u8; PUBLIC_KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| CryptoError::Encoding("a public key must be 32 bytes".into()))?;
        Ok(PublicKey(array))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", base64_encode(&self.0))
    }
}

/// A mailbox key pair. The secret half never leaves this module in the clear
/// except wrapped; it is zeroized on drop and has no `Debug`.
pub struct KeyPair {
    public: PublicKey,
    secret: crypto_box::SecretKey,
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Result<KeyPair, CryptoError> {
        init()?;
        let pair = crypto_box::KeyPair::generate();
        let (public, secret) = pair.into_tuple();
        Ok(KeyPair {
            public: PublicKey(*public.as_bytes()),
            secret,
        })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyPair {{ public: {:?}, secret: <redacted> }}",
            self.public
        )
    }
}

/// Argon2id cost parameters, as libsodium takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Passes over memory.
    pub opslimit: u64,
    /// Memory in bytes.
    pub memlimit: u64,
}

/// A secret key wrapped under a password: safe to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The cost the key was wrapped with.
    pub params: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; SALT_BYTES],
    /// secretbox nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// `crypto_secretbox_easy(secret key)`.
    pub wrapped: [u8; WRAPPED_KEY_BYTES],
}

fn derive_wrapping_key(
    password: &Password,
    salt: &[u8; SALT_BYTES],
    params: KdfParams,
) -> Result<crypto_secretbox::Key, CryptoError> {
    init()?;
    let memlimit = usize::try_from(params.memlimit)
        .map_err(|_| CryptoError::Kdf("memlimit is too large for this machine".into()))?;
    let derived = Zeroizing::new(
        crypto_pwhash::pwhash(
            crypto_secretbox::KEYBYTES,
            password.expose().as_bytes(),
            salt,
            params.opslimit,
            memlimit,
            crypto_pwhash::ALG_ARGON2ID13,
        )
        .map_err(|e| CryptoError::Kdf(e.to_string()))?,
    );
    crypto_secretbox::Key::from_bytes(&derived).map_err(|e| CryptoError::Kdf(e.to_string()))
}

/// Wraps the secret key of `pair` under `password` with a fresh salt and nonce.
pub fn wrap_secret_key(
    pair: &KeyPair,
    password: &Password,
    params: KdfParams,
) -> Result<WrappedKey, CryptoError> {
    let mut salt = [0u8; SALT_BYTES];
    random::fill_bytes(&mut salt);
    let key = derive_wrapping_key(password, &salt, params)?;
    let nonce = crypto_secretbox::Nonce::generate();
    let sealed = crypto_secretbox::seal(pair.secret.as_bytes(), &nonce, &key);
    let wrapped = sealed
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Kdf("unexpected wrapped key length".into()))?;
    Ok(WrappedKey {
        params,
        salt,
        nonce: *nonce.as_bytes(),
        wrapped,
    })
}

/// Unwraps a secret key and checks that it belongs to `public`.
///
/// A wrong password and an altered key file look the same: both fail the
/// secretbox MAC.
pub fn unwrap_secret_key(
    wrapped: &WrappedKey,
    password: &Password,
    public: &PublicKey,
) -> Result<KeyPair, CryptoError> {
    let key = derive_wrapping_key(password, &wrapped.salt, wrapped.params)?;
    let nonce = crypto_secretbox::Nonce::from_bytes(wrapped.nonce);
    let secret = Zeroizing::new(
        crypto_secretbox::open(&wrapped.wrapped, &nonce, &key)
            .map_err(|_| CryptoError::WrongPassword)?,
    );
    let derived_public =
        curve25519::scalarmult_base(&secret).map_err(|_| CryptoError::KeyMismatch)?;
    if !utils::memcmp(&derived_public, public.as_bytes()) {
        return Err(CryptoError::KeyMismatch);
    }
    let secret =
        crypto_box::SecretKey::from_bytes(&secret).map_err(|_| CryptoError::KeyMismatch)?;
    Ok(KeyPair {
        public: public.clone(),
        secret,
    })
}

/// Runs one key derivation whose result is thrown away, so that a login for
/// an unknown mailbox costs the same time and memory as a real one.
pub fn burn_key_derivation(password: &Password, params: KdfParams) {
    let salt = [0u8; SALT_BYTES];
    let _ = derive_wrapping_key(password, &salt, params);
}

/// An Argon2id password hash in libsodium's string form
/// (`$argon2id$v=19$m=…,t=…,p=1$salt$hash`, `crypto_pwhash_str`), which
/// carries its own salt and cost: for the console's administrator password.
pub fn hash_password(password: &Password, params: KdfParams) -> Result<String, CryptoError> {
    init()?;
    let memlimit = usize::try_from(params.memlimit)
        .map_err(|_| CryptoError::Kdf("memlimit is too large for this machine".into()))?;
    crypto_pwhash::argon2id::pwhash_str(password.expose().as_bytes(), params.opslimit, memlimit)
        .map_err(|e| CryptoError::Kdf(e.to_string()))
}

/// Whether `password` matches a hash made by [`hash_password`] (in constant
/// time, inside libsodium); a malformed hash matches nothing.
pub fn verify_password_hash(hash: &str, password: &Password) -> bool {
    init().is_ok()
        && hash.starts_with("$argon2id$")
        && crypto_pwhash::argon2id::pwhash_str_verify(hash, password.expose().as_bytes())
}

/// A secretstream key for one message file or spool file; no `Debug`.
pub struct StreamKey(secretstream::Key);

impl StreamKey {
    /// A fresh random key.
    pub fn generate() -> Result<StreamKey, CryptoError> {
        init()?;
        Ok(StreamKey(secretstream::Key::generate()))
    }

    /// `crypto_box_seal(K, public)`: what goes at offset 8 of a message file.
    pub fn seal_to(
        &self,
        public: &PublicKey,
    ) -> Result<[u8; SEALED_STREAM_KEY_BYTES], CryptoError> {
        let pk = crypto_box::PublicKey::from_bytes_exact(*public.as_bytes());
        let sealed =
            crypto_box::seal_box(self.0.as_bytes(), &pk).map_err(|_| CryptoError::SealedKey)?;
        sealed
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::SealedKey)
    }

    /// Opens a sealed stream key with the mailbox key pair.
    pub fn open_sealed(sealed: &[u8], pair: &KeyPair) -> Result<StreamKey, CryptoError> {
        init()?;
        let pk = crypto_box::PublicKey::from_bytes_exact(*pair.public.as_bytes());
        let mut key = crypto_box::open_sealed_box(sealed, &pk, &pair.secret)
            .map_err(|_| CryptoError::SealedKey)?;
        let parsed = secretstream::Key::from_bytes(&key).map_err(|_| CryptoError::SealedKey);
        key.zeroize();
        Ok(StreamKey(parsed?))
    }
}

/// Encrypting side of a secretstream.
pub struct Encryptor(secretstream::PushState);

impl Encryptor {
    /// Starts a stream; the returned header must precede the first record.
    pub fn start(key: &StreamKey) -> Result<(Encryptor, [u8; STREAM_HEADER_BYTES]), CryptoError> {
        let (state, header) =
            secretstream::PushState::init_push(&key.0).map_err(|_| CryptoError::Record)?;
        Ok((Encryptor(state), header))
    }

    /// Encrypts one record; `last` tags it TAG_FINAL.
    pub fn push(&mut self, plain: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        let tag = if last {
            secretstream::TAG_FINAL
        } else {
            secretstream::TAG_MESSAGE
        };
        self.0
            .push(plain, None, tag)
            .map_err(|_| CryptoError::Record)
    }
}

/// Decrypting side of a secretstream.
pub struct Decryptor(secretstream::PullState);

impl Decryptor {
    /// Starts pulling a stream from its header.
    pub fn start(
        key: &StreamKey,
        header: &[u8; STREAM_HEADER_BYTES],
    ) -> Result<Decryptor, CryptoError> {
        let state =
            secretstream::PullState::init_pull(header, &key.0).map_err(|_| CryptoError::Record)?;
        Ok(Decryptor(state))
    }

    /// Decrypts one record; returns the plaintext and whether it was the final one.
    /// Any tag other than MESSAGE or FINAL is refused: we never write them.
    pub fn pull(&mut self, record: &[u8]) -> Result<(Vec<u8>, bool), CryptoError> {
        let (plain, tag) = self.0.pull(record, None).map_err(|_| CryptoError::Record)?;
        match tag {
            secretstream::TAG_MESSAGE => Ok((plain, false)),
            secretstream::TAG_FINAL => Ok((plain, true)),
            _ => Err(CryptoError::Record),
        }
    }
}

/// Cryptographically secure random bytes.
pub fn random_bytes(buf: &mut [u8]) {
    let _ = init();
    random::fill_bytes(buf);
}

/// `bytes` random bytes as lowercase hex: ids, names and tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    random_bytes(&mut buf);
    hex(&buf)
}

/// A uniformly random number below `upper` (no modulo bias).
pub fn random_below(upper: u32) -> u32 {
    let _ = init();
    random::uniform(upper)
}

/// A 32-byte BLAKE2b hash of `parts` keyed with a mailbox's public key: an
/// index entry that says "this was archived" without holding the parts in
/// plaintext (used for the POP3 proxy's account, host and UIDL).
pub fn index_hash(public: &PublicKey, parts: &[&str]) -> [u8; 32] {
    let _ = init();
    let mut state = libsodium_rs::crypto_generichash::State::new(Some(public.as_bytes()), 32)
        .expect("BLAKE2b accepts a 32-byte key and 32-byte output");
    for part in parts {
        state.update(&(part.len() as u64).to_be_bytes());
        state.update(part.as_bytes());
    }
    let out = state.finalize();
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&out[..32]);
    hash
}

/// SHA-256 of `data`, for certificate fingerprints.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let _ = init();
    sha256::hash(data)
}

/// SHA-256 of everything read from `input` (a merged message file, whose
/// digest goes into the merge receipt).
pub fn sha256_of(input: impl std::io::Read) -> std::io::Result<[u8; 32]> {
    copy_with_sha256(input, std::io::sink())
}

/// Copies `input` to `output` whole and returns the SHA-256 of what was copied.
pub fn copy_with_sha256(
    mut input: impl std::io::Read,
    mut output: impl std::io::Write,
) -> std::io::Result<[u8; 32]> {
    let _ = init();
    let mut state = sha256::State::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(state.finalize()),
            Ok(n) => {
                state.update(&buf[..n]);
                output.write_all(&buf[..n])?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// SHA-256 computed piece by piece as bytes pass through a reader or a
/// writer (a message's plaintext and its sealed file, for the custody log;
/// ring's, the fast one on ARM, as both are hashed on the delivery path).
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Sha256 {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything added.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// `crypto_box_seal(data, public)`: readable only with the mailbox's secret
/// key (the plaintext digest in a custody entry).
pub fn seal_to(data: &[u8], public: &PublicKey) -> Result<Vec<u8>, CryptoError> {
    init()?;
    let pk = crypto_box::PublicKey::from_bytes_exact(*public.as_bytes());
    crypto_box::seal_box(data, &pk).map_err(|_| CryptoError::SealedKey)
}

/// Opens what [`seal_to`] sealed to `pair`'s public key.
pub fn open_sealed(sealed: &[u8], pair: &KeyPair) -> Result<Vec<u8>, CryptoError> {
    init()?;
    let pk = crypto_box::PublicKey::from_bytes_exact(*pair.public.as_bytes());
    crypto_box::open_sealed_box(sealed, &pk, &pair.secret).map_err(|_| CryptoError::SealedKey)
}

/// The bytes of an even number of hex digits; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with padding, as the key files use.
pub fn base64_encode(data: &[u8]) -> String {
    let _ = init();
    utils::bin2base64(data, utils::BASE64_VARIANT_ORIGINAL)
}

/// Decodes standard padded base64 (SASL responses, key files). The result
/// may hold a password: callers that know it does wrap it in `Zeroizing`.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, CryptoError> {
    let _ = init();
    utils::base642bin(text, utils::BASE64_VARIANT_ORIGINAL)
        .map_err(|_| CryptoError::Encoding("not valid base64".into()))
}

/// Decodes standard padded base64 and checks the length.
pub fn base64_decode_exact<const N: usize>(text: &str) -> Result<[u8; N], CryptoError> {
    let bytes = base64_decode(text)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Encoding(format!("expected {N} bytes, found {}", bytes.len())))
}

/// Constant-time comparison of two byte strings of equal length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && utils::memcmp(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_administrator_hash_is_argon2id_and_checks_only_its_password() {
        let params = KdfParams {
            opslimit: 1,
            memlimit: 8 * 1024 * 1024,
        };
        let right = Password::new("correct horse battery staple 42".into());
        let hash = hash_password(&right, params).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8192,t=1,"), "{hash}");
        assert!(verify_password_hash(&hash, &right));
        assert!(!verify_password_hash(&hash, &Password::new("wrong".into())));
        assert!(!verify_password_hash("$argon2id$broken", &right));
        assert!(!verify_password_hash("", &right));
    }

    const FAST: KdfParams = KdfParams {
        opslimit: 1,
        memlimit: 8 * 1024 * 1024,
    };

    fn password(text: &str) -> Password {
        Password::new(text.to_string())
    }

    #[test]
    fn wrapped_key_unwraps_with_the_right_password_only() {
        let pair = KeyPair::generate().unwrap();
        let wrapped = wrap_secret_key(&pair, &password("right horse battery"), FAST).unwrap();
        let back =
            unwrap_secret_key(&wrapped, &password("right horse battery"), pair.public()).unwrap();
        assert_eq!(back.public(), pair.public());
        let wrong = unwrap_secret_key(&wrapped, &password("wrong horse battery"), pair.public());
        assert_eq!(wrong.err(), Some(CryptoError::WrongPassword));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_the_wrapped_key_is_refused() {
        let pair = KeyPair::generate().unwrap();
        let pw = password("pw");
        let wrapped = wrap_secret_key(&pair, &pw, FAST).unwrap();
        for i in 0..WRAPPED_KEY_BYTES {
            let mut bad = wrapped.clone();
            bad.wrapped[i] ^= 1;
            assert!(
                unwrap_secret_key(&bad, &pw, pair.public()).is_err(),
                "byte {i}"
            );
        }
        let mut bad = wrapped.clone();
        bad.salt[0] ^= 1;
        assert_eq!(
            unwrap_secret_key(&bad, &pw, pair.public()).err(),
            Some(CryptoError::WrongPassword)
        );
        let mut bad = wrapped;
        bad.nonce[0] ^= 1;
        assert_eq!(
            unwrap_secret_key(&bad, &pw, pair.public()).err(),
            Some(CryptoError::WrongPassword)
        );
    }

    #[test]
    fn a_key_that_belongs_to_another_public_key_is_a_mismatch() {
        let pair = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let pw = password("pw");
        let wrapped = wrap_secret_key(&pair, &pw, FAST).unwrap();
        let result = unwrap_secret_key(&wrapped, &pw, other.public());
        assert_eq!(result.err(), Some(CryptoError::KeyMismatch));
    }

    #[test]
    fn impossible_kdf_parameters_are_an_error_not_a_panic() {
        let pair = KeyPair::generate().unwrap();
        let params = KdfParams {
            opslimit: 0,
            memlimit: 1,
        };
        assert!(matches!(
            wrap_secret_key(&pair, &password("pw"), params),
            Err(CryptoError::Kdf(_))
        ));
    }

    #[test]
    fn sealed_stream_key_opens_only_with_its_key_pair() {
        let pair = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let key = StreamKey::generate().unwrap();
        let sealed = key.seal_to(pair.public()).unwrap();
        let opened = StreamKey::open_sealed(&sealed, &pair).unwrap();
        assert_eq!(opened.0.as_bytes(), key.0.as_bytes());
        assert!(StreamKey::open_sealed(&sealed, &other).is_err());
        let mut damaged = sealed;
        damaged[40] ^= 0x80;
        assert!(StreamKey::open_sealed(&damaged, &pair).is_err());
        assert!(StreamKey::open_sealed(&sealed[..79], &pair).is_err());
    }

    #[test]
    fn stream_records_round_trip_and_report_the_final_tag() {
        let key = StreamKey::generate().unwrap();
        let (mut enc, header) = Encryptor::start(&key).unwrap();
        let first = enc.push(b"one", false).unwrap();
        let last = enc.push(b"two", true).unwrap();
        assert_eq!(first.len(), 3 + STREAM_ABYTES);
        let mut dec = Decryptor::start(&key, &header).unwrap();
        assert_eq!(dec.pull(&first).unwrap(), (b"one".to_vec(), false));
        assert_eq!(dec.pull(&last).unwrap(), (b"two".to_vec(), true));
    }

    #[test]
    fn stream_records_out_of_order_or_altered_fail() {
        let key = StreamKey::generate().unwrap();
        let (mut enc, header) = Encryptor::start(&key).unwrap();
        let first = enc.push(b"one", false).unwrap();
        let second = enc.push(b"two", true).unwrap();
        let mut dec = Decryptor::start(&key, &header).unwrap();
        assert_eq!(dec.pull(&second).err(), Some(CryptoError::Record));
        let mut dec = Decryptor::start(&key, &header).unwrap();
        let mut altered = first.clone();
        altered[0] ^= 1;
        assert_eq!(dec.pull(&altered).err(), Some(CryptoError::Record));
        let mut dec = Decryptor::start(&key, &header).unwrap();
        assert_eq!(dec.pull(&first[..5]).err(), Some(CryptoError::Record));
    }

    #[test]
    fn base64_is_standard_and_padded() {
        assert_eq!(base64_encode(b"\xff\xfe"), "//4=");
        assert_eq!(base64_decode_exact::<2>("//4=").unwrap(), [0xff, 0xfe]);
        assert!(base64_decode_exact::<3>("//4=").is_err());
        assert!(base64_decode_exact::<2>("not base64!").is_err());
    }

    #[test]
    fn index_hashes_depend_on_every_part_and_the_key() {
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        let h = index_hash(a.public(), &["anna", "mail.example.com:995", "UID1"]);
        assert_eq!(
            h,
            index_hash(a.public(), &["anna", "mail.example.com:995", "UID1"])
        );
        assert_ne!(
            h,
            index_hash(b.public(), &["anna", "mail.example.com:995", "UID1"])
        );
        assert_ne!(
            h,
            index_hash(a.public(), &["anna", "mail.example.com:995", "UID2"])
        );
        // Lengths are part of the input: moving a character between parts changes the hash.
        assert_ne!(
            index_hash(a.public(), &["ab", "c"]),
            index_hash(a.public(), &["a", "bc"])
        );
    }

    #[test]
    fn random_below_stays_below() {
        for _ in 0..1000 {
            assert!(random_below(32) < 32);
        }
    }
}
