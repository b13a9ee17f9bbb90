//! The operator API's token: 32 random bytes as hex in
//! `DATA_DIR/operator.token`, owner-only, made by the first `causeway run`.
//! Every operator request must carry it (`Authorization: Bearer TOKEN`), so
//! the API answers whoever may read the data folder and no one else: not
//! another account on the machine, and not a web page in the operator's
//! browser (a cross-site form, or a name rebound to 127.0.0.1), which can
//! reach loopback but cannot read the file or make the browser send it.
//! `causeway token rotate` replaces it; a running host takes the new one
//! with the next request.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::keyfile::{self, Form};

/// The token's file name inside the data folder.
pub const FILE: &str = "operator.token";

/// The token a running host expects, or a client sends.
///
/// The host's follows its file: each request is checked against what the
/// file holds then, so `causeway token rotate` (or any replacement of the
/// file) takes effect with the next request, and a missing or unreadable
/// file admits no one.
pub struct OperatorToken {
    path: PathBuf,
    current: RwLock<Current>,
}

/// What the file held when last read, and how it looked then.
struct Current {
    /// `None`: the file is gone or holds no token, and nothing is admitted.
    hex: Option<String>,
    stamp: Option<Stamp>,
}

/// What tells that a file was replaced or rewritten: its identity, size
/// and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: (u64, u64),
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    /// The file's stamp; `None` if it cannot be read.
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let inode = (0, 0);
        Some(Stamp {
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl std::fmt::Debug for OperatorToken {
    // Never the token itself: it would reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorToken")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OperatorToken {
    /// The token of the host whose data folder is `data_dir`, made if
    /// there is none yet (the host, at start).
    pub fn load_or_create(data_dir: &Path) -> Result<OperatorToken, String> {
        let path = data_dir.join(FILE);
        let key = keyfile::load_or_create_as(&path, Form::Hex)?;
        // Named in full in refusals, for a client in another folder.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(OperatorToken::holding(path, &key))
    }

    /// The token of the host whose data folder is `data_dir` (a client of
    /// its API): an error naming the file if there is none.
    pub fn load(data_dir: &Path) -> Result<OperatorToken, String> {
        let path = data_dir.join(FILE);
        match keyfile::load_as(&path, Form::Hex)? {
            Some(key) => Ok(OperatorToken::holding(path, &key)),
            None => Err(format!(
                "there is no operator token at {}: the host makes it when it starts",
                path.display()
            )),
        }
    }

    /// Replaces the token of the data folder `data_dir` with a new one; the
    /// old one is refused from a running host's next request on.
    pub fn rotate(data_dir: &Path) -> Result<OperatorToken, String> {
        let path = data_dir.join(FILE);
        let key = keyfile::replace_as(&path, Form::Hex)?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(OperatorToken::holding(path, &key))
    }

    fn holding(path: PathBuf, key: &[u8]) -> OperatorToken {
        let stamp = Stamp::of(&path);
        OperatorToken {
            current: RwLock::new(Current {
                hex: Some(keyfile::hex(key)),
                stamp,
            }),
            path,
        }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `Authorization` header's value a client sends (empty once the
    /// file no longer holds a token).
    pub fn bearer(&self) -> String {
        self.read(|hex| format!("Bearer {}", hex.unwrap_or_default()))
    }

    /// Whether an `Authorization` header's value carries the token the file
    /// holds now. The comparison takes as long wherever the first
    /// difference is.
    pub fn admits(&self, authorization: &[u8]) -> bool {
        self.follow();
        let Some(sent) = strip_bearer(authorization) else {
            return false;
        };
        self.read(|hex| {
            let Some(expected) = hex.map(str::as_bytes) else {
                return false;
            };
            sent.len() == expected.len()
                && sent
                    .iter()
                    .zip(expected)
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        })
    }

    fn read<T>(&self, with: impl FnOnce(Option<&str>) -> T) -> T {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        with(current.hex.as_deref())
    }

    /// Reads the file again if it changed since it was last read.
    fn follow(&self) {
        let stamp = Stamp::of(&self.path);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.stamp == stamp {
                return;
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.stamp == stamp {
            return;
        }
        let had = current.hex.take();
        current.stamp = stamp;
        current.hex = match keyfile::load_as(&self.path, Form::Hex) {
            Ok(Some(key)) => {
                let hex = keyfile::hex(&key);
                if had.as_ref() != Some(&hex) {
                    tracing::info!(
                        "the operator token in {} changed: requests with the one before are refused",
                        self.path.display()
                    );
                }
                Some(hex)
            }
            Ok(None) => {
                if had.is_some() {
                    tracing::warn!(
                        "the operator token {} is gone: the operator API refuses every request until `causeway token rotate` makes a new one",
                        self.path.display()
                    );
                }
                None
            }
            Err(e) => {
                if had.is_some() {
                    tracing::error!(
                        "{e}: the operator API refuses every request until `causeway token rotate` makes a new token"
                    );
                }
                None
            }
        };
    }
}

/// The credentials of a `Bearer` header value (the scheme's case aside).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value[7..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_makes_the_token_a_client_reads_and_only_it_is_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let err = OperatorToken::load(dir.path()).unwrap_err();
        assert!(
            err.contains("operator.token") && err.contains("when it starts"),
            "{err}"
        );
        let host = OperatorToken::load_or_create(dir.path()).unwrap();
        let client = OperatorToken::load(dir.path()).unwrap();
        assert_eq!(host.path(), dir.path().join(FILE).canonicalize().unwrap());
        assert!(host.admits(client.bearer().as_bytes()));
        let token = client.bearer()["Bearer ".len()..].to_string();
        assert!(host.admits(format!("bearer {token}").as_bytes()));
        let mut wrong = token.clone().into_bytes();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        for refused in [
            Vec::new(),
            token.clone().into_bytes(),
            format!("Basic {token}").into_bytes(),
            format!("Bearer {}", &token[..63]).into_bytes(),
            [b"Bearer ".as_slice(), &wrong].concat(),
            format!("Bearer {token}0").into_bytes(),
        ] {
            assert!(
                !host.admits(&refused),
                "{}",
                String::from_utf8_lossy(&refused)
            );
        }
        assert!(
            !format!("{host:?}").contains(&token),
            "Debug shows the token"
        );
        assert_eq!(
            OperatorToken::load_or_create(dir.path()).unwrap().bearer(),
            client.bearer(),
            "a restart keeps the token"
        );
    }

    #[test]
    fn the_host_follows_its_file_a_rotation_refuses_the_old_token_and_no_file_admits_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let host = OperatorToken::load_or_create(dir.path()).unwrap();
        let old = OperatorToken::load(dir.path()).unwrap().bearer();
        assert!(host.admits(old.as_bytes()));
        let rotated = OperatorToken::rotate(dir.path()).unwrap();
        let new = OperatorToken::load(dir.path()).unwrap().bearer();
        assert_eq!(rotated.bearer(), new);
        assert_ne!(new, old);
        assert!(!host.admits(old.as_bytes()), "the old token still admitted");
        assert!(host.admits(new.as_bytes()), "the new token refused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(host.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "a rotated token is the owner's alone");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [FILE], "the rotation left a partial file");
        // Gone or garbled, the file admits no one: the guard fails closed.
        std::fs::remove_file(host.path()).unwrap();
        assert!(!host.admits(new.as_bytes()));
        assert!(!host.admits(b"Bearer "));
        std::fs::write(host.path(), "not a token").unwrap();
        assert!(!host.admits(new.as_bytes()));
        let again = OperatorToken::rotate(dir.path()).unwrap().bearer();
        assert!(host.admits(again.as_bytes()));
        // Written in place by hand, it is taken too.
        let by_hand = format!("{}\n", "ab".repeat(32));
        std::fs::write(host.path(), &by_hand).unwrap();
        assert!(host.admits(format!("Bearer {}", by_hand.trim()).as_bytes()));
        assert!(!host.admits(again.as_bytes()));
    }
}
