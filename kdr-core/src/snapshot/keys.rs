//! Encryption keys for backup sets: [`EncryptionKey`] (reading, parsing and generating age key
//! files) and [`check_key`] (whether a key decrypts a set, checked before any download).
//!
//! Encryption uses [age](https://age-encryption.org) with an X25519 identity file, as written by
//! `age-keygen` or [`EncryptionKey::generate_file`] (`kdr keygen`). Backups need only the public
//! recipient: [`EncryptionKey::from_file`] accepts a file holding either the identity
//! (`AGE-SECRET-KEY-1...`) or a recipient (`age1...`), so a backup host does not have to hold
//! the secret. A set's manifest records only the recipient, so
//! [`decode`](super::codec::decode) reports a wrong key file as such before reading any byte.
//! Keys are never logged, passed in argv, or stored.
use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use super::Encryption;
use crate::error::{Error, Result};

/// An age X25519 key: the identity (secret) when known, and always the recipient (public).
#[derive(Clone)]
pub struct EncryptionKey {
    pub(super) identity: Option<age::x25519::Identity>,
    pub(super) recipient: age::x25519::Recipient,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("EncryptionKey")
            .field("recipient", &self.recipient.to_string())
            .field("has_identity", &self.identity.is_some())
            .finish()
    }
}

impl EncryptionKey {
    /// Reads a key file: an age identity file (`AGE-SECRET-KEY-1...`, comments allowed, as
    /// `age-keygen` writes) or a file holding just a recipient (`age1...`), which is enough to
    /// encrypt backups but not to read them.
    ///
    /// Errors name the file: [`Error::NotFound`] if it is missing, [`Error::Config`] if it holds
    /// no usable key. A key file readable by group or others is accepted with a warning.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("encryption key file {}", path.display()),
                    hint: Some("create one with `kdr keygen --out FILE` or fix the path".into()),
                }
            } else {
                Error::io(format!("failed to read encryption key file {}", path.display()), e)
            }
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
                && text.contains("AGE-SECRET-KEY-")
            {
                tracing::warn!(path = %path.display(), "encryption key file is readable by group or others; chmod 600 it");
            }
        }
        Self::parse(&text)
            .map_err(|reason| Error::config(format!("encryption key file {}", path.display()), reason))
    }

    /// Parses the text of a key file (see [`from_file`](Self::from_file)).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("AGE-SECRET-KEY-") {
                let identity = age::x25519::Identity::from_str(line)
                    .map_err(|e| format!("the AGE-SECRET-KEY line is not a valid age identity ({e})"))?;
                let recipient = identity.to_public();
                return Ok(Self { identity: Some(identity), recipient });
            }
            if line.starts_with("age1") {
                let recipient = age::x25519::Recipient::from_str(line)
                    .map_err(|e| format!("the age1... line is not a valid age recipient ({e})"))?;
                return Ok(Self { identity: None, recipient });
            }
        }
        Err("no age identity (AGE-SECRET-KEY-1...) or recipient (age1...) found; \
             generate a key with `kdr keygen --out FILE` or age-keygen"
            .into())
    }

    /// A new random identity.
    pub fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        Self { identity: Some(identity), recipient }
    }

    /// Generates a new identity and writes it to `path` in age-keygen's format, with mode 0600.
    /// Refuses to overwrite an existing file ([`Error::AlreadyExists`]). Returns the key.
    pub fn generate_file(path: &Path, created: chrono::DateTime<chrono::Utc>) -> Result<Self> {
        let key = Self::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::AlreadyExists { what: format!("key file {}", path.display()) }
            } else {
                Error::io(format!("failed to create key file {}", path.display()), e)
            }
        })?;
        let identity = key.identity.as_ref().map(|i| i.to_string()).unwrap_or_default();
        let text = format!(
            "# created: {}\n# public key: {}\n{}\n",
            created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            key.recipient,
            identity.expose_secret()
        );
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("failed to write key file {}", path.display()), e))?;
        Ok(key)
    }

    /// The public recipient (`age1...`), safe to print and to store in manifests.
    pub fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    /// Whether the secret identity is known (needed to decrypt).
    pub fn can_decrypt(&self) -> bool {
        self.identity.is_some()
    }
}

/// Checks, before any download, that `key` can decrypt a set with `encryption`. Returns the
/// identity to use, if any.
///
/// Errors: [`Error::Config`] naming the encryption key file when the set is encrypted and no key
/// (or only a recipient) was given, or when the key's recipient is not the set's.
pub fn check_key(encryption: &Encryption, key: Option<&EncryptionKey>) -> Result<Option<EncryptionKey>> {
    match (encryption, key) {
        (Encryption::None, _) => Ok(None),
        (Encryption::AgeX25519 { recipient }, None) => Err(Error::config(
            "--encryption-key-file",
            format!(
                "the backup set is encrypted to age recipient {recipient}; pass the matching identity \
                 file with --encryption-key-file (or KDR_ENCRYPTION_KEY_FILE)"
            ),
        )),
        (Encryption::AgeX25519 { recipient }, Some(k)) => {
            if k.recipient() != *recipient {
                return Err(Error::config(
                    "--encryption-key-file",
                    format!(
                        "wrong key: the key file's public key is {} but the backup set is encrypted to {recipient}",
                        k.recipient()
                    ),
                ));
            }
            if !k.can_decrypt() {
                return Err(Error::config(
                    "--encryption-key-file",
                    format!(
                        "the key file holds only the public recipient {recipient}; decrypting needs the \
                         identity file (AGE-SECRET-KEY-1...)"
                    ),
                ));
            }
            Ok(Some(k.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_roundtrip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let key = EncryptionKey::generate_file(&path, chrono::DateTime::UNIX_EPOCH).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let read = EncryptionKey::from_file(&path).unwrap();
        assert_eq!(read.recipient(), key.recipient());
        assert!(read.can_decrypt());
        assert!(!format!("{read:?}").contains("AGE-SECRET"));
        assert!(matches!(
            EncryptionKey::generate_file(&path, chrono::DateTime::UNIX_EPOCH),
            Err(Error::AlreadyExists { .. })
        ));
        let missing = EncryptionKey::from_file(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, Error::NotFound { .. }) && missing.to_string().contains("nope"));
        std::fs::write(dir.path().join("bad"), "hello\n").unwrap();
        let bad = EncryptionKey::from_file(&dir.path().join("bad")).unwrap_err();
        assert!(bad.is_usage(), "{bad}");
    }
}
