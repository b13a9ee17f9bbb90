//! Host keys: 32 random bytes in an owner-only file, created on first use.
//! The artifact cache and the audit chain each key their HMACs with one,
//! kept raw; the operator API's token is one kept as hex text, which
//! clients send in a header.

use std::io::{Read, Write};
use std::path::Path;

/// The length of a host key, in bytes.
pub const KEY_LEN: usize = 32;

/// How a key is kept in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The [`KEY_LEN`] bytes themselves.
    Raw,
    /// Lowercase hex, no newline (surrounding whitespace is accepted on read).
    Hex,
}

impl Form {
    fn encode(self, key: &[u8]) -> Vec<u8> {
        match self {
            Form::Raw => key.to_vec(),
            Form::Hex => hex(key).into_bytes(),
        }
    }

    /// The key `stored` holds, if it holds one in this form.
    fn decode(self, stored: &[u8]) -> Option<Vec<u8>> {
        match self {
            Form::Raw => (stored.len() == KEY_LEN).then(|| stored.to_vec()),
            Form::Hex => {
                let text = std::str::from_utf8(stored).ok()?.trim();
                if text.len() != 2 * KEY_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                (0..KEY_LEN)
                    .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect()
            }
        }
    }

    fn expected(self) -> String {
        match self {
            Form::Raw => format!("{KEY_LEN} bytes"),
            Form::Hex => format!("{} hex digits", 2 * KEY_LEN),
        }
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the raw key at `path`; creates it if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Vec<u8>, String> {
    load_or_create_as(path, Form::Raw)
}

/// Reads the key kept in `form` at `path`; creates it if the file does not
/// exist.
///
/// A file that does not hold a key is refused rather than replaced:
/// replacing an audit key would make every row written under the old one
/// unverifiable.
pub fn load_or_create_as(path: &Path, form: Form) -> Result<Vec<u8>, String> {
    if let Some(key) = load_as(path, form)? {
        return Ok(key);
    }
    let key = fresh()?;
    // A partial file of this process's own, published with a hard link,
    // which fails if another process published first: then its key, not
    // ours, is the one (two hosts starting together agree on one key).
    let partial = write_partial(path, form, &key)?;
    let published = std::fs::hard_link(&partial, path);
    let _ = std::fs::remove_file(&partial);
    match published {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match load_as(path, form) {
            Ok(Some(theirs)) => Ok(theirs),
            Ok(None) | Err(_) => Err(format!(
                "the key file {} was created by another process but cannot be read back",
                path.display()
            )),
        },
        Err(e) => Err(format!("cannot write {}: {e}", path.display())),
    }
}

/// Writes a new key kept in `form` at `path` in place of the one there, if
/// any, in one rename: a reader finds the old key or the new one, whole.
/// For the operator token, which is rotated; never for a key that signs
/// what is kept (the audit chain's, the artifact cache's).
pub fn replace_as(path: &Path, form: Form) -> Result<Vec<u8>, String> {
    let key = fresh()?;
    let partial = write_partial(path, form, &key)?;
    let replaced = std::fs::rename(&partial, path).and_then(|()| {
        // The rename is an entry in the folder: syncing it keeps the new key
        // over a power cut.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    });
    if let Err(e) = replaced {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("cannot replace {}: {e}", path.display()));
    }
    Ok(key)
}

/// [`KEY_LEN`] bytes from the kernel's random source.
fn fresh() -> Result<Vec<u8>, String> {
    let mut key = vec![0u8; KEY_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("cannot read /dev/urandom for a host key: {e}"))?;
    Ok(key)
}

/// Writes `key` kept in `form`, owner-only and synced, to a partial file
/// of this process's own beside `path` (its folder made owner-only if it
/// is new), and returns the partial file's path.
fn write_partial(path: &Path, form: Form, key: &[u8]) -> Result<std::path::PathBuf, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A name of its own, and one that says nothing of the key: a folder
    // listing may show it.
    let tag = hex(&fresh()?[..8]);
    let partial = path.with_extension(format!("partial.{}.{tag}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&partial).and_then(|mut file| {
        file.write_all(&form.encode(key))
            .and_then(|()| file.sync_all())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("cannot write {}: {e}", partial.display()));
    }
    Ok(partial)
}

/// Reads the key kept in `form` at `path`: `None` if there is no file.
pub fn load_as(path: &Path, form: Form) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(stored) => form.decode(&stored).map(Some).ok_or_else(|| {
            format!(
                "the key file {} does not hold {} (it holds {} bytes): restore it from a backup, or move it away to start a new key",
                path.display(),
                form.expected(),
                stored.len()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the key file {}: {e}", path.display())),
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
        assert!(
            err.contains("does not hold 32 bytes (it holds 5 bytes)"),
            "{err}"
        );
    }

    #[test]
    fn a_hex_key_is_text_read_back_with_whitespace_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let key = load_or_create_as(&path, Form::Hex).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, hex(&key));
        assert_eq!(text.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
        std::fs::write(&path, format!("  {text}\n")).unwrap();
        assert_eq!(load_as(&path, Form::Hex).unwrap(), Some(key));
        std::fs::write(&path, "zz".repeat(32)).unwrap();
        let err = load_or_create_as(&path, Form::Hex).unwrap_err();
        assert!(err.contains("does not hold 64 hex digits"), "{err}");
        assert_eq!(load_as(&dir.path().join("none"), Form::Hex), Ok(None));
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
