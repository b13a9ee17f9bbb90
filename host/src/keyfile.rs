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
    // A partial file of this process's own, published with a hard link,
    // which fails if another process published first: then its key, not
    // ours, is the one (two hosts starting together agree on one key).
    let tag: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
    let partial = path.with_extension(format!("partial.{}.{tag}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&partial)
        .and_then(|mut file| file.write_all(&key).and_then(|()| file.sync_all()))
        .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    let published = std::fs::hard_link(&partial, path);
    let _ = std::fs::remove_file(&partial);
    match published {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::read(path) {
            Ok(theirs) if theirs.len() == KEY_LEN => Ok(theirs),
            Ok(_) | Err(_) => Err(format!(
                "the key file {} was created by another process but cannot be read back",
                path.display()
            )),
        },
        Err(e) => Err(format!("cannot write {}: {e}", path.display())),
    }
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

    #[test]
    fn processes_creating_a_key_at_once_agree_on_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/host.key");
        let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            keys.iter().all(|k| *k == on_disk),
            "threads got different keys"
        );
    }
}
