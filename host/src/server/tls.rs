//! The webhook listener over TLS (`[tls]` in causeway.toml): webhook
//! senders on the internet require HTTPS, and a token or a Basic login
//! (the `token` and `basic` schemes) must not cross it in clear.
//!
//! The certificate chain and its key are PEM files, as an ACME client such
//! as certbot writes them. They are read at start (one that cannot be used
//! stops the host, naming the file), and read again when either changes —
//! checked every [`CHECK_EVERY`] and on SIGHUP — so a renewal is served
//! from the next handshake without a restart. A pair that cannot be used
//! (half written, a key that does not match) is logged and the last good
//! one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are checked for a renewal.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// A certificate this close to its expiry is warned of (once a day): an
/// ACME client renews a month ahead, so one this close is not renewing.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// What a file looked like when read: a change of any is a new file.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(file: &Path) -> Stamp {
    let meta = std::fs::metadata(file).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// The certificate the listener presents, and the files it comes from.
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Served>,
}

struct Served {
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
    /// When the server's certificate expires, in seconds since the epoch.
    expires: Option<i64>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert_file)
            .field("key", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Reads the chain in `cert` and the private key in `key`: an error
    /// names the file and says what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Certificate, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = (stamp(cert), stamp(key));
        let certified = read(cert, key, &provider)?;
        Ok(Certificate {
            cert_file: cert.to_path_buf(),
            key_file: key.to_path_buf(),
            provider,
            current: RwLock::new(Served::new(stamps, certified)),
        })
    }

    /// When the certificate served now expires, in seconds since the
    /// epoch (`None` if its validity could not be read).
    pub fn expires(&self) -> Option<i64> {
        self.served().expires
    }

    /// What is served now, for the log: where from, and until when.
    pub fn describe(&self) -> String {
        let until = self
            .expires()
            .and_then(|at| u64::try_from(at).ok())
            .map(|at| {
                humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(at))
            });
        match until {
            Some(until) => format!("{}, valid until {until}", self.cert_file.display()),
            None => format!(
                "{} (its expiry could not be read)",
                self.cert_file.display()
            ),
        }
    }

    /// A warning if the certificate served expires within
    /// [`EXPIRY_WARNING`] of `now` (seconds since the epoch), or expired.
    pub fn expiry_warning(&self, now: i64) -> Option<String> {
        let expires = self.expires()?;
        let left = expires.saturating_sub(now);
        if left > EXPIRY_WARNING.as_secs() as i64 {
            return None;
        }
        Some(if left <= 0 {
            format!(
                "the TLS certificate {} has expired: webhook senders refuse it; renew it (it is read again as it changes)",
                self.describe()
            )
        } else {
            format!(
                "the TLS certificate {} expires in {} days: check that its renewal runs",
                self.describe(),
                left / (24 * 60 * 60)
            )
        })
    }

    /// Reads the files again if either changed since they were last read:
    /// `Ok(true)` when a new pair is served from now on, `Ok(false)` when
    /// nothing changed, an error (the last good pair kept) when the new
    /// files cannot be used.
    pub fn refresh(&self) -> Result<bool, String> {
        let stamps = (stamp(&self.cert_file), stamp(&self.key_file));
        if self.served().stamps == stamps {
            return Ok(false);
        }
        let read = read(&self.cert_file, &self.key_file, &self.provider);
        let mut served = self.current.write().unwrap_or_else(|p| p.into_inner());
        // Tried once per change: a broken pair is not reread, nor logged,
        // every few seconds until it changes again.
        served.stamps = stamps;
        *served = Served::new(stamps, read?);
        Ok(true)
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS configuration serving it: TLS 1.2 and 1.3, HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Checks the files on [`CHECK_EVERY`] and on SIGHUP, for as long as
    /// the host runs, saying what each change did.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut hangup = crate::reload::hangup();
        let mut warned: Option<std::time::Instant> = None;
        loop {
            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(24 * 60 * 60))
                && let Some(warning) = self.expiry_warning(now())
            {
                tracing::warn!("{warning}");
                warned = Some(std::time::Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = crate::reload::hung_up(&mut hangup) => {}
            }
            let this = self.clone();
            let refreshed = tokio::task::spawn_blocking(move || this.refresh()).await;
            match refreshed {
                Ok(Ok(true)) => {
                    tracing::info!(
                        "reloaded: the TLS certificate {}, served from the next connection",
                        self.describe()
                    );
                    // A renewal that did not renew is said at once.
                    warned = None;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    "the TLS certificate changed and cannot be used: {e}; keeping the last good one"
                ),
                Err(e) => tracing::error!("checking the TLS certificate failed: {e}"),
            }
        }
    }
}

/// Why the key file at `key` is too open, if it is: every account on the
/// machine may read it.
pub fn key_exposure(key: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).ok()?.permissions().mode() & 0o777;
        (mode & 0o004 != 0).then(|| {
            format!(
                "{} (tls.key) may be read by every account on the machine (mode {mode:o}): whoever reads it can pose as this host; run chmod 600 {} (or 640, with the host's group)",
                key.display(),
                key.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = key;
        None
    }
}

impl Served {
    fn new(stamps: (Stamp, Stamp), key: CertifiedKey) -> Served {
        let expires = key.cert.first().and_then(|cert| not_after(cert));
        Served {
            stamps,
            key: Arc::new(key),
            expires,
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The `notAfter` of an X.509 certificate, in seconds since the epoch
/// (RFC 5280 §4.1: Certificate → TBSCertificate → [version], serial,
/// signature, issuer, validity { notBefore, notAfter }).
fn not_after(der: &[u8]) -> Option<i64> {
    use crate::der::element;
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // The version is the optional explicit [0].
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    for _ in 0..3 {
        rest = element(rest)?.2; // serial, signature, issuer
    }
    let (SEQUENCE, validity, _) = element(rest)? else {
        return None;
    };
    let after = element(element(validity)?.2)?;
    let text = std::str::from_utf8(after.1).ok()?;
    // UTCTime YYMMDDHHMMSSZ (years 1950–2049), GeneralizedTime YYYYMMDDHHMMSSZ.
    let (year, rest) = match after.0 {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let of_era = year - era * 400;
    let of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let of_era_days = of_era * 365 + of_era / 4 - of_era / 100 + of_year;
    era * 146_097 + of_era_days - 719_468
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served().key.clone())
    }
}

/// The chain in `cert` and the key in `key`, checked to belong together.
fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let bytes = |file: &Path, what: &str| {
        crate::files::read_regular(file, crate::config::MAX_TEXT_FILE_BYTES)
            .map_err(|e| format!("{} ({what}): {}", file.display(), crate::config::unread(e)))
    };
    let chain = CertificateDer::pem_slice_iter(&bytes(cert, "tls.cert")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{} (tls.cert): is not a PEM file of certificates: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{} (tls.cert): holds no certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    }
    // Its own error would quote nothing of the key, but say it plainly.
    let private = PrivateKeyDer::from_pem_slice(&bytes(key, "tls.key")?).map_err(|_| {
        format!(
            "{} (tls.key): holds no private key in PEM (-----BEGIN PRIVATE KEY-----, RSA or EC)",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} (tls.key) is not the key of the certificate in {} (tls.cert): give the pair an ACME client wrote together",
            key.display(),
            cert.display()
        ),
        e => format!(
            "{} (tls.key) and {} (tls.cert) cannot be used: {e}",
            key.display(),
            cert.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls")
    }

    #[test]
    fn a_pair_is_read_and_a_broken_one_named_for_what_is_wrong() {
        let dir = fixtures();
        let cert = Certificate::load(&dir.join("server.pem"), &dir.join("server.key")).unwrap();
        assert_eq!(cert.served().key.cert.len(), 1);

        let scratch = tempfile::tempdir().unwrap();
        let other_key = scratch.path().join("other.key");
        std::fs::copy(dir.join("renewed.key"), &other_key).unwrap();
        let empty = scratch.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let garbage = scratch.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let missing = scratch.path().join("missing.pem");
        for (cert, key, expected) in [
            (
                dir.join("server.pem"),
                other_key.clone(),
                "other.key (tls.key) is not the key of the certificate in",
            ),
            (
                empty.clone(),
                dir.join("server.key"),
                "empty.pem (tls.cert): holds no certificate",
            ),
            (
                garbage,
                dir.join("server.key"),
                "garbage.pem (tls.cert): is not a PEM file of certificates",
            ),
            (
                dir.join("server.pem"),
                empty,
                "empty.pem (tls.key): holds no private key in PEM",
            ),
            (
                dir.join("server.pem"),
                dir.join("server.pem"),
                "server.pem (tls.key): holds no private key",
            ),
            (missing, dir.join("server.key"), "missing.pem (tls.cert): "),
        ] {
            let err = Certificate::load(&cert, &key).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn a_renewal_is_taken_and_a_broken_one_leaves_the_last_good_pair() {
        let dir = fixtures();
        let scratch = tempfile::tempdir().unwrap();
        let (cert, key) = (
            scratch.path().join("cert.pem"),
            scratch.path().join("key.pem"),
        );
        std::fs::copy(dir.join("server.pem"), &cert).unwrap();
        std::fs::copy(dir.join("server.key"), &key).unwrap();
        let served = Certificate::load(&cert, &key).unwrap();
        let first = served.served().key.cert[0].clone();
        assert_eq!(served.refresh(), Ok(false), "nothing changed");

        // Half a renewal: the new certificate, the old key. Kept as it was.
        let renewed = std::fs::read(dir.join("renewed.pem")).unwrap();
        write_anew(&cert, &renewed);
        let err = served.refresh().unwrap_err();
        assert!(err.contains("is not the key of the certificate"), "{err}");
        assert_eq!(served.served().key.cert[0], first);
        assert_eq!(served.refresh(), Ok(false), "a broken pair is tried once");

        // The whole renewal.
        write_anew(&key, &std::fs::read(dir.join("renewed.key")).unwrap());
        assert_eq!(served.refresh(), Ok(true));
        assert_ne!(served.served().key.cert[0], first);
    }

    #[test]
    fn the_expiry_is_read_from_the_certificate_and_warned_of_when_close() {
        let dir = fixtures();
        let served = Certificate::load(&dir.join("server.pem"), &dir.join("server.key")).unwrap();
        // openssl x509 -enddate: notAfter=Nov 13 17:25:53 2126 GMT
        // (GeneralizedTime); date -d '2126-11-13 17:25:53Z' +%s.
        assert_eq!(served.expires(), Some(4_950_264_353));
        assert!(
            served
                .describe()
                .ends_with("valid until 2126-11-13T17:25:53Z"),
            "{}",
            served.describe()
        );
        assert_eq!(served.expiry_warning(4_950_264_353 - 15 * 86_400), None);
        let close = served
            .expiry_warning(4_950_264_353 - 3 * 86_400 - 5)
            .unwrap();
        assert!(close.contains("expires in 3 days"), "{close}");
        let past = served.expiry_warning(4_950_264_353 + 1).unwrap();
        assert!(past.contains("has expired"), "{past}");
        // A UTCTime, and the epoch's own days.
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let utc = [
            0x30, 0x1e, 0x17, 0x0d, b'2', b'6', b'1', b'2', b'0', b'7', b'0', b'0', b'0', b'0',
            b'0', b'0', b'Z', 0x17, 0x0d, b'4', b'9', b'1', b'2', b'3', b'1', b'2', b'3', b'5',
            b'9', b'5', b'9', b'Z',
        ];
        let after = crate::der::element(crate::der::element(&utc).unwrap().1)
            .unwrap()
            .2;
        let (tag, text, _) = crate::der::element(after).unwrap();
        assert_eq!((tag, text), (0x17, &b"491231235959Z"[..]));
        // Truncated or not a certificate: no date, no panic.
        let der = served.served().key.cert[0].to_vec();
        for cut in [0, 1, 2, 10, 100, der.len() / 2] {
            assert_eq!(not_after(&der[..cut]), None, "{cut}");
        }
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    /// Replaces `file` by a rename, as an ACME client does: a new inode.
    fn write_anew(file: &Path, bytes: &[u8]) {
        let partial = file.with_extension("partial");
        std::fs::write(&partial, bytes).unwrap();
        std::fs::rename(&partial, file).unwrap();
    }
}
