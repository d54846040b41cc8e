//! Server keys: one master key (`VOXANNE_SECRET_KEY`, or a key file the server makes on first start)
//! from which the token-signing key and the secrets key are derived, plus previous keys kept for
//! rotation. Secrets clinics give us are sealed with AES-256-GCM (random 96-bit nonce stored beside
//! the ciphertext, the organisation and the secret's name as associated data, so a ciphertext copied
//! to another row does not open).
//!
//! Rotation: put the new key in `VOXANNE_SECRET_KEY`, the old one in `VOXANNE_SECRET_KEYS_PREVIOUS`
//! (comma-separated), restart, run `voxanne secrets rotate` (re-seals every secret with the new
//! key), then drop the old key. Access tokens signed with a previous key stay valid until they
//! expire (15 minutes).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes in a master key.
pub const KEY_BYTES: usize = 32;

/// Name of the key file in the data directory when `VOXANNE_SECRET_KEY` is not set.
pub const KEY_FILE: &str = "secret.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("VOXANNE_SECRET_KEY must be {KEY_BYTES} bytes, base64 or hex ({0})")]
    BadKey(String),
    #[error("key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("secret sealed with key {0}, which is neither the current key nor a previous one")]
    UnknownKey(String),
    #[error("secret does not open: wrong key, or the stored bytes were changed")]
    Corrupt,
}

/// A sealed secret as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Clone)]
struct Key {
    id: String,
    master: [u8; KEY_BYTES],
}

impl Key {
    fn new(master: [u8; KEY_BYTES]) -> Self {
        let id = hex(&Sha256::digest(master)[..6]);
        Self { id, master }
    }
    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.master).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The server's keys. Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes.
        f.debug_struct("Keys")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_key(text: &str) -> Result<[u8; KEY_BYTES], KeyError> {
    let t = text.trim();
    let bytes = if t.len() == 2 * KEY_BYTES && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_BYTES)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    } else {
        STANDARD
            .decode(t)
            .or_else(|_| URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| KeyError::BadKey("neither hex nor base64".into()))?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| KeyError::BadKey(format!("{} bytes", b.len())))
}

/// A new random master key, base64.
pub fn generate_key() -> String {
    let mut k = [0u8; KEY_BYTES];
    getrandom::fill(&mut k).expect("the OS random source");
    STANDARD.encode(k)
}

/// `n` random bytes, URL-safe base64 (tokens, API key secrets).
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source");
    URL_SAFE_NO_PAD.encode(b)
}

/// Lower-case hex HMAC-SHA256 of `data` under `key` as given (no derivation): outgoing webhook
/// signatures, keyed by the endpoint's own secret.
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    hex(&m.finalize().into_bytes())
}

/// Whether `sig_hex` is [`hmac_sha256_hex`] of `data` under `key` (constant time over the MAC).
pub fn hmac_sha256_verify_hex(key: &[u8], data: &[u8], sig_hex: &str) -> bool {
    let s = sig_hex.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let sig: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.verify_slice(&sig).is_ok()
}

/// Hex SHA-256 (stored form of refresh tokens and API key secrets).
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

impl Keys {
    /// From configuration: `current` (`VOXANNE_SECRET_KEY`) or, when unset, the key file in
    /// `data_dir` (created with mode 0600 on first start); `previous` keys for rotation.
    pub fn load(
        current: Option<&str>,
        previous: &[String],
        data_dir: &Path,
    ) -> Result<Self, KeyError> {
        let master = match current {
            Some(k) => parse_key(k)?,
            None => {
                let path = data_dir.join(KEY_FILE);
                let err = |source| KeyError::File {
                    path: path.display().to_string(),
                    source,
                };
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse_key(&text)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(data_dir).map_err(err)?;
                        let key = generate_key();
                        write_private(&path, &key).map_err(err)?;
                        parse_key(&key)?
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        };
        let previous = previous
            .iter()
            .map(|k| parse_key(k).map(Key::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            current: Key::new(master),
            previous,
        })
    }

    /// Keys for tests.
    pub fn from_bytes(current: [u8; KEY_BYTES], previous: &[[u8; KEY_BYTES]]) -> Self {
        Self {
            current: Key::new(current),
            previous: previous.iter().copied().map(Key::new).collect(),
        }
    }

    /// The current key's id (stored beside what it sealed).
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// HMAC-SHA256 of `data` with the signing key derived for `purpose` from the current key.
    pub fn sign(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        mac(&self.current, purpose, data)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `sig` is `data`'s signature for `purpose` under the current or a previous key
    /// (constant time).
    pub fn verify(&self, purpose: &str, data: &[u8], sig: &[u8]) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| mac(k, purpose, data).verify_slice(sig).is_ok())
    }

    /// Seals `plaintext`, bound to `context` (e.g. `org/<id>/secret/<name>`).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let ciphertext = cipher(&self.current)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM seals any length we store");
        Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens what [`Keys::seal`] made with the same `context`.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, KeyError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| KeyError::UnknownKey(sealed.key_id.clone()))?;
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Corrupt)?;
        cipher(key)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Corrupt)
    }
}

/// HMAC-SHA256 over `data` with `key`'s sub-key for `purpose`, ready to finalise or verify.
fn mac(key: &Key, purpose: &str, data: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(&key.derive(purpose)).expect("any key length");
    m.update(data);
    m
}

/// The AES-256-GCM cipher of `key`'s secrets sub-key.
fn cipher(key: &Key) -> Aes256Gcm {
    Aes256Gcm::new((&key.derive("voxanne secrets v1")).into())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_context_and_an_intact_ciphertext() {
        let keys = Keys::from_bytes([7; 32], &[]);
        let s = keys.seal("org/1/secret/twilio", b"auth-token");
        assert_ne!(s.ciphertext, b"auth-token");
        assert_eq!(keys.open("org/1/secret/twilio", &s).unwrap(), b"auth-token");
        assert!(matches!(
            keys.open("org/2/secret/twilio", &s),
            Err(KeyError::Corrupt)
        ));
        let mut bad = s.clone();
        bad.ciphertext[0] ^= 1;
        assert!(matches!(
            keys.open("org/1/secret/twilio", &bad),
            Err(KeyError::Corrupt)
        ));
    }

    #[test]
    fn after_rotation_old_secrets_open_and_old_signatures_verify_but_new_ones_use_the_new_key() {
        let old = Keys::from_bytes([1; 32], &[]);
        let sealed = old.seal("c", b"x");
        let sig = old.sign("tokens", b"data");
        let rotated = Keys::from_bytes([2; 32], &[[1; 32]]);
        assert_eq!(rotated.open("c", &sealed).unwrap(), b"x");
        assert!(rotated.verify("tokens", b"data", &sig));
        assert_ne!(rotated.seal("c", b"x").key_id, sealed.key_id);
        let forgotten = Keys::from_bytes([2; 32], &[]);
        assert!(matches!(
            forgotten.open("c", &sealed),
            Err(KeyError::UnknownKey(_))
        ));
        assert!(!forgotten.verify("tokens", b"data", &sig));
        assert!(!rotated.verify("other purpose", b"data", &sig));
    }

    #[test]
    fn the_key_file_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load(None, &[], dir.path()).unwrap();
        let b = Keys::load(None, &[], dir.path()).unwrap();
        assert_eq!(a.current_id(), b.current_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            Keys::load(Some("short"), &[], dir.path()),
            Err(KeyError::BadKey(_))
        ));
        let hex_key = "ab".repeat(32);
        Keys::load(Some(&hex_key), &[], dir.path()).unwrap();
    }
}
