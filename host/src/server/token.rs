//! The operator API's token: 32 random bytes as hex in
//! `DATA_DIR/operator.token`, owner-only, made by the first `causeway run`.
//! Every operator request must carry it (`Authorization: Bearer TOKEN`), so
//! the API answers whoever may read the data folder and no one else: not
//! another account on the machine, and not a web page in the operator's
//! browser (a cross-site form, or a name rebound to 127.0.0.1), which can
//! reach loopback but cannot read the file or make the browser send it.

use std::path::{Path, PathBuf};

use crate::keyfile::{self, Form};

/// The token's file name inside the data folder.
pub const FILE: &str = "operator.token";

/// The token a running host expects, or a client sends.
pub struct OperatorToken {
    hex: String,
    path: PathBuf,
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
        Ok(OperatorToken {
            hex: keyfile::hex(&key),
            path,
        })
    }

    /// The token of the host whose data folder is `data_dir` (a client of
    /// its API): an error naming the file if there is none.
    pub fn load(data_dir: &Path) -> Result<OperatorToken, String> {
        let path = data_dir.join(FILE);
        match keyfile::load_as(&path, Form::Hex)? {
            Some(key) => Ok(OperatorToken {
                hex: keyfile::hex(&key),
                path,
            }),
            None => Err(format!(
                "there is no operator token at {}: the host makes it when it starts",
                path.display()
            )),
        }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `Authorization` header's value a client sends.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.hex)
    }

    /// Whether an `Authorization` header's value carries this token. The
    /// comparison takes as long wherever the first difference is.
    pub fn admits(&self, authorization: &[u8]) -> bool {
        let Some(sent) = strip_bearer(authorization) else {
            return false;
        };
        let expected = self.hex.as_bytes();
        sent.len() == expected.len()
            && sent
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
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
}
