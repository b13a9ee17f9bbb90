//! Host keys: 32 random bytes in an owner-only file, created on first use.
//! The artifact cache and the audit chain each key their HMACs with one.

use std::io::{Read, Write};
use std::path::Path;

/// The length of a host key, in bytes.
pub const KEY_LEN: usize = 32;

/// Reads the key at `path`; creates it if the file does not exist.
///
/// A file of the wrong length is refused rather than replaced: replacing an
/// audit key would make every row written under the old one unverifiable.
pub fn load_or_create(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(key) if key.len() == KEY_LEN => return Ok(key),
        Ok(key) => {
            return Err(format!(
                "the key file {} holds {} bytes, not {KEY_LEN}: restore it from a backup, or move it away to start a new key",
                path.display(),
                key.len()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read the key file {}: {e}", path.display())),
    }
    let mut key = vec![0u8; KEY_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("cannot read /dev/urandom for a host key: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&partial)
        .and_then(|mut file| file.write_all(&key).and_then(|()| file.sync_all()))
        .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_then_read_back_and_a_short_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/host.key");
        let key = load_or_create(&path).unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(load_or_create(&path).unwrap(), key);
        std::fs::write(&path, b"short").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.contains("holds 5 bytes"), "{err}");
    }
}
