//! Replacing a file so that a reader, a crash or a power cut finds the old
//! contents or the new, never a mix or an empty file.
//!
//! The new bytes go to a partial file beside the target (same folder, so
//! the rename stays on one filesystem), are synced, and the partial is
//! renamed over the target. Callers name the partial: a file the host
//! watches (the plugins folder) needs a name the watcher ignores.
//!
//! And the folders the host makes for its own data: owner-only; and
//! reading a file the host is pointed at without waiting on what is not one.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and any missing parents, owner-only (`0700` on Unix): the
/// data folder holds the database (stored records, plugins' storage), the
/// keys and the operator token, none of them for other accounts. An
/// existing folder keeps its permissions: they are the operator's choice.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// How far a replacement must reach the disk before [`replace`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing is synced: a crash of this process leaves the old file or
    /// the new one, a power cut may leave an empty or partial one. For files
    /// checked when read and rebuilt when wrong (compiled artifacts).
    Unsynced,
    /// The new bytes are on disk before the rename: after a power cut the
    /// file is the old one or the new one, either whole.
    Contents,
    /// The rename is on disk too: for a file that must be in place before
    /// whatever the caller does next (a grant approval before its audit
    /// row, a pruning base before the rows it cuts are deleted).
    Rename,
}

/// Replaces `path` with `bytes` through `partial`, keeping `path`'s
/// permissions if it exists. On failure `path` is untouched and `partial`
/// removed.
pub fn replace(
    path: &Path,
    partial: &Path,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let written = write_partial(path, partial, bytes, durability)
        .and_then(|()| std::fs::rename(partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    written?;
    if durability == Durability::Rename {
        // A rename is an entry in the folder: syncing the folder keeps it.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn write_partial(
    path: &Path,
    partial: &Path,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let mut file = File::create(partial)?;
    if let Ok(meta) = std::fs::metadata(path) {
        file.set_permissions(meta.permissions())?;
    }
    file.write_all(bytes)?;
    if durability != Durability::Unsynced {
        file.sync_all()?;
    }
    Ok(())
}

/// Why [`read_regular`] read no file.
#[derive(Debug)]
pub(crate) enum Unread {
    /// It could not be opened or read (it is not there, say).
    Io(std::io::Error),
    /// It is not a regular file but this (`a FIFO`, `a folder`).
    Kind(&'static str),
    /// It is this many bytes (as far as read), over the bound.
    TooLarge(u64),
}

/// The contents of the regular file at `path` (a link is followed), at
/// most `max` bytes. Opened without waiting, and checked before anything
/// is read: a FIFO named like a plugin or its sidecar would otherwise hold
/// the open, and the reload, until someone wrote to it. A file over `max`
/// is refused unread, and read through a bound, so one that grows after
/// its size was checked is refused all the same.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, Unread> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        rustix::fs::OFlags::NONBLOCK.bits() as i32,
    );
    let file = options.open(path).map_err(Unread::Io)?;
    let metadata = file.metadata().map_err(Unread::Io)?;
    if !metadata.is_file() {
        return Err(Unread::Kind(kind_of(&metadata.file_type())));
    }
    let size = metadata.len();
    if size > max {
        return Err(Unread::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Unread::Io)?;
    let read = bytes.len() as u64;
    if read > max {
        return Err(Unread::TooLarge(read));
    }
    Ok(bytes)
}

/// What a file that is not a regular one is, as an error names it.
fn kind_of(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_block_device() || kind.is_char_device() {
            return "a device";
        }
    }
    if kind.is_dir() {
        "a folder"
    } else {
        "something else"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_private_folder_and_its_new_parents_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        create_private_dir(&dir.path().join("a/b")).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        // An existing folder is left as the operator made it.
        std::fs::set_permissions(dir.path().join("a/b"), PermissionsExt::from_mode(0o750)).unwrap();
        create_private_dir(&dir.path().join("a/b")).unwrap();
        assert_eq!(mode(&dir.path().join("a/b")), 0o750);
    }

    #[test]
    fn the_file_is_replaced_whole_and_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.toml");
        let partial = dir.path().join("grants.toml.partial");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, &partial, b"new", Durability::Rename).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!partial.exists(), "the partial file is gone");
    }

    #[test]
    fn a_failed_replacement_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.head");
        std::fs::write(&path, "old").unwrap();
        // The partial cannot be created: its folder does not exist.
        let partial = dir.path().join("missing/audit.partial");
        assert!(replace(&path, &partial, b"new", Durability::Contents).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        // The rename fails (a folder is in the way): no partial is left.
        let folder = dir.path().join("in-the-way");
        std::fs::create_dir_all(folder.join("inside")).unwrap();
        let partial = dir.path().join("in-the-way.partial");
        assert!(replace(&folder, &partial, b"new", Durability::Contents).is_err());
        assert!(!partial.exists(), "the partial file is removed");
        assert!(folder.join("inside").is_dir());
    }
}
