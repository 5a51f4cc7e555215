//! The checkpoint signing key: 32 random bytes as 64 lower-case hex digits and a newline, in
//! a file of mode 0600. Created atomically (written to a temporary file, synced, then linked
//! into place, which fails rather than overwrite a key another process just created).

use crate::AuditError;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Loads the signing key at `path`, or creates one there if no file exists.
///
/// Refuses a key file that group or others may read or write (mode `& 0o077 != 0`), and one
/// that is not exactly 64 hex digits (and an optional newline).
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, AuditError> {
    match std::fs::metadata(path) {
        Ok(_) => load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(source) => Err(AuditError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The public key as 64 hex digits (what `kinko audit verify` is given).
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Parses a public key from 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, AuditError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| AuditError::BadPublicKey("not 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| AuditError::BadPublicKey("not an Ed25519 public key".into()))
}

/// The key id a checkpoint names: hex of the first 8 bytes of SHA-256 of the public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

fn key_err(path: &Path, reason: impl Into<String>) -> AuditError {
    AuditError::Key {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

fn load(path: &Path) -> Result<SigningKey, AuditError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_file() {
        return Err(key_err(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_err(
            path,
            format!("mode {mode:04o} lets others read or change the key; it must be 0600"),
        ));
    }
    if meta.len() > 65 {
        return Err(key_err(path, "not 64 hex digits"));
    }
    let mut text = std::fs::read(path).map_err(io(path))?;
    let digits = text.strip_suffix(b"\n").unwrap_or(&text);
    let mut secret = [0u8; 32];
    let decoded = hex::decode_to_slice(digits, &mut secret);
    text.fill(0);
    decoded.map_err(|_| key_err(path, "not 64 hex digits"))?;
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    Ok(key)
}

fn create(path: &Path) -> Result<SigningKey, AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| key_err(path, format!("no randomness: {e}")))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| key_err(path, format!("no randomness: {e}")))?;
    let file_name = path.file_name().ok_or_else(|| key_err(path, "names no file"))?;
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
    let tmp = dir.join(tmp_name);

    let mut text = hex::encode(secret).into_bytes();
    text.push(b'\n');
    secret.fill(0);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()
    })();
    text.fill(0);
    written.map_err(io(&tmp))?;
    // Linking fails if the name exists, so a key created meanwhile is never replaced.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return load(path),
        Err(source) => {
            return Err(AuditError::Io {
                path: path.to_owned(),
                source,
            })
        }
    }
    crate::log::sync_dir(dir)?;
    load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let a = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let vk = a.verifying_key();
        let hex = public_key_hex(&vk);
        assert_eq!(parse_public_key(&hex).unwrap(), vk);
        assert_eq!(key_id(&vk).len(), 16);
        assert!(parse_public_key("zz").is_err());
    }

    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let good = "11".repeat(32);
        for (content, mode) in [
            (format!("{good}\n"), 0o644),
            (format!("{good}\n"), 0o640),
            (good[..62].to_string(), 0o600),
            (format!("{good}\n\n"), 0o600),
            ("zz".repeat(32), 0o600),
        ] {
            std::fs::write(&path, &content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                matches!(load_or_create_key(&path), Err(AuditError::Key { .. })),
                "{content:?} {mode:o}"
            );
        }
        std::fs::write(&path, &good).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_or_create_key(&path).is_ok());
        let missing_dir = dir.path().join("no/such/dir/audit.key");
        assert!(matches!(
            load_or_create_key(&missing_dir),
            Err(AuditError::Io { .. })
        ));
    }
}
