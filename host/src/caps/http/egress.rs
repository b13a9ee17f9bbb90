//! How every plugin's requests leave the machine, from causeway.toml and
//! read once at start (but the proxy's password, read at each request):
//! the certificates trusted beside the bundled roots (`ca-file`), and the
//! egress proxy (`[proxy]`) for networks whose only way out is one.
//!
//! The proxy is the operator's, never the environment's: proxy variables
//! would let whoever sets the host's environment redirect its plugins'
//! traffic, so they are ignored, and `[proxy]` says where it goes.

use std::sync::Arc;

use serde::Deserialize;

use crate::secrets::{SecretRef, Secrets};

/// How outbound connections are made, the same for every plugin.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Certificates trusted beside the bundled roots (`ca-file`).
    pub roots: ExtraRoots,
    /// The proxy requests go through (`[proxy]`), if any.
    pub proxy: Option<Arc<ProxyRoute>>,
}

/// Certificates trusted for outbound HTTPS beside the bundled (Mozilla's)
/// roots: `ca-file` in causeway.toml, for APIs behind a private
/// certificate authority. Read once, at start.
#[derive(Debug, Clone, Default)]
pub struct ExtraRoots(Arc<[reqwest::Certificate]>);

impl ExtraRoots {
    /// The certificates of the PEM file at `file`: at least one, each one
    /// whole, or an error saying what is wrong.
    pub fn load(file: &std::path::Path) -> Result<ExtraRoots, String> {
        let pem = crate::files::read_regular(file, crate::config::MAX_TEXT_FILE_BYTES)
            .map_err(crate::config::unread)?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("is not a PEM file of certificates: {e}"))?;
        if roots.is_empty() {
            return Err("holds no certificate (-----BEGIN CERTIFICATE-----)".to_string());
        }
        Ok(ExtraRoots(roots.into()))
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none (no `ca-file`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The certificates.
    pub(super) fn certificates(&self) -> &[reqwest::Certificate] {
        &self.0
    }
}

/// `[proxy]` in causeway.toml: the proxy every plugin request goes through
/// but those to the hosts in `direct`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ProxyFile")]
pub struct ProxyConfig {
    /// `http://` or `https://` host and port, nothing else.
    pub url: url::Url,
    /// Hosts reached directly: a name, `*.suffix` (any subdomain) or an IP
    /// address, as grants write hosts; lower case.
    pub direct: Vec<String>,
    /// Basic authentication: the user, and a reference to the password.
    pub login: Option<(String, SecretRef)>,
}

/// `[proxy]` as written.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { url = \"http://proxy.example.com:3128\", direct = [\"*.corp.example\"] }"
)]
struct ProxyFile {
    url: String,
    #[serde(default)]
    direct: Vec<String>,
    user: Option<String>,
    password: Option<SecretRef>,
}

impl TryFrom<ProxyFile> for ProxyConfig {
    type Error = String;

    fn try_from(file: ProxyFile) -> Result<ProxyConfig, String> {
        let url = proxy_url(&file.url)?;
        let direct = file
            .direct
            .iter()
            .map(|host| direct_host(host))
            .collect::<Result<_, _>>()?;
        let login = match (file.user, file.password) {
            (Some(user), Some(password)) if !user.is_empty() && !user.contains(':') => {
                Some((user, password))
            }
            (Some(_), Some(_)) => {
                return Err("proxy.user must be a non-empty name without ':'".to_string());
            }
            (None, None) => None,
            _ => {
                return Err(
                    "proxy.user and proxy.password go together: the user's name, and a reference to the password (\"env:NAME\" or \"file:KEY\")"
                        .to_string(),
                );
            }
        };
        Ok(ProxyConfig { url, direct, login })
    }
}

/// The proxy's address: scheme, host and port. The URL is shown in logs and
/// in `causeway check`, so credentials in it are refused without repeating
/// it.
fn proxy_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| {
        format!("proxy.url is not a URL such as \"http://proxy.example.com:3128\": {e}")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "proxy.url holds credentials: write the user as proxy.user and the password as a reference, proxy.password = \"env:NAME\" or \"file:KEY\" (causeway.toml is not a secret)"
                .to_string(),
        );
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "proxy.url {text:?}: the scheme must be http or https (the scheme the proxy itself is spoken to in; a SOCKS proxy is not supported)"
        ));
    }
    if url.host().is_none() {
        return Err(format!("proxy.url {text:?} names no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "proxy.url {text:?}: a proxy is a host and a port, without a path, query or fragment"
        ));
    }
    Ok(url)
}

/// One entry of `direct`, checked and lower-cased.
fn direct_host(text: &str) -> Result<String, String> {
    let host = text.to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'));
    if !ok {
        return Err(format!(
            "proxy.direct: {text:?} must be a host name, *.suffix or an IP address (written without brackets or port)"
        ));
    }
    Ok(host)
}

/// The proxy as the clients use it. Its password is read through the
/// host's secrets at each request, so a rotation in the secrets file is
/// taken as a credential's is.
#[derive(Debug)]
pub struct ProxyRoute {
    url: url::Url,
    direct: Vec<String>,
    login: Option<(String, SecretRef)>,
    secrets: Arc<Secrets>,
}

impl ProxyRoute {
    /// The route `config` describes, its password read through `secrets`:
    /// one that does not resolve now is an error.
    pub fn resolve(config: &ProxyConfig, secrets: Arc<Secrets>) -> Result<ProxyRoute, String> {
        if let Some((_, password)) = &config.login {
            secrets
                .resolve(password)
                .map_err(|e| format!("proxy.password: {e}"))?;
        }
        Ok(ProxyRoute {
            url: config.url.clone(),
            direct: config.direct.clone(),
            login: config.login.clone(),
            secrets,
        })
    }

    /// The proxy's URL with its login as it stands now. One whose password
    /// no longer resolves goes without, and the proxy's 407 says so.
    fn url_with_login(&self) -> url::Url {
        let mut url = self.url.clone();
        if let Some((user, password)) = &self.login
            && let Ok(password) = self.secrets.resolve(password)
        {
            // Percent-encoded here, decoded by the client into the header.
            let _ = url.set_username(user);
            let _ = url.set_password(Some(password.expose()));
        }
        url
    }

    /// Whether a request to `host` (lower case, IPv6 without brackets) goes
    /// directly rather than through the proxy.
    pub fn goes_direct(&self, host: &str) -> bool {
        self.direct
            .iter()
            .any(|pattern| super::rule::host_matches(pattern, host))
    }

    /// The proxy's host, which may resolve to a non-public address: a
    /// proxy is most often on the company's own network.
    pub(super) fn host(&self) -> Option<String> {
        self.url.host_str().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
    }

    /// The proxy's URL, as written.
    pub fn url(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// What a request that went through the proxy and failed is told:
    /// the failure may be the proxy's, not the API's.
    pub(super) fn failed(&self, status: Option<u16>) -> String {
        match (status, &self.login) {
            (Some(_), Some(_)) => format!(
                "the proxy {} refused its login (407): check user and password under [proxy] in causeway.toml",
                self.url()
            ),
            (Some(_), None) => format!(
                "the proxy {} asks for a login (407): set user and password under [proxy] in causeway.toml",
                self.url()
            ),
            (None, _) => format!("through the proxy {}", self.url()),
        }
    }

    /// For a log line: the proxy's URL and the hosts reached directly.
    pub fn describe(&self) -> String {
        let url = self.url();
        let login = match &self.login {
            Some((user, _)) => format!(" as {user}"),
            None => String::new(),
        };
        if self.direct.is_empty() {
            format!("{url}{login}")
        } else {
            format!("{url}{login} (directly: {})", self.direct.join(", "))
        }
    }

    /// The reqwest proxy: every request but those to `direct` hosts, with
    /// the login as it stands at that request.
    pub(super) fn reqwest(self: &Arc<Self>) -> reqwest::Proxy {
        let route = self.clone();
        reqwest::Proxy::custom(move |target| {
            let host = match target.host()? {
                url::Host::Domain(name) => name.to_ascii_lowercase(),
                url::Host::Ipv4(a) => a.to_string(),
                url::Host::Ipv6(a) => a.to_string(),
            };
            (!route.goes_direct(&host)).then(|| route.url_with_login())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(table: &str) -> Result<ProxyConfig, String> {
        #[derive(Deserialize)]
        struct File {
            proxy: ProxyConfig,
        }
        toml::from_str::<File>(table)
            .map(|f| f.proxy)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn a_proxy_is_a_host_and_port_with_its_login_by_reference() {
        let config = parse(
            "[proxy]\nurl = \"http://proxy.corp.example:3128\"\ndirect = [\"CRM.corp.example\", \"*.internal\", \"10.0.0.7\", \"fd00::1\"]\nuser = \"causeway\"\npassword = \"env:PROXY_PASSWORD\"\n",
        )
        .unwrap();
        assert_eq!(config.url.as_str(), "http://proxy.corp.example:3128/");
        assert_eq!(
            config.direct,
            ["crm.corp.example", "*.internal", "10.0.0.7", "fd00::1"]
        );
        assert_eq!(
            config.login,
            Some(("causeway".into(), SecretRef::Env("PROXY_PASSWORD".into())))
        );
        for (table, says) in [
            (
                "url = \"http://bob:hunter2@proxy:3128\"",
                "holds credentials",
            ),
            ("url = \"socks5://proxy:1080\"", "SOCKS"),
            ("url = \"http://proxy:3128/path\"", "without a path"),
            ("url = \"proxy:3128\"", "the scheme must be http or https"),
            ("url = \"not a url\"", "is not a URL"),
            ("url = \"http://p\"\ndirect = [\"a b\"]", "proxy.direct"),
            (
                "url = \"http://p\"\ndirect = [\"[::1]\"]",
                "without brackets",
            ),
            ("url = \"http://p\"\nuser = \"bob\"", "go together"),
            ("url = \"http://p\"\npassword = \"env:P\"", "go together"),
            (
                "url = \"http://p\"\nuser = \"bob\"\npassword = \"hunter2\"",
                "never the value itself",
            ),
            ("url = \"http://p\"\nport = 3", "unknown field `port`"),
        ] {
            let error = parse(&format!("[proxy]\n{table}\n")).unwrap_err();
            assert!(error.contains(says), "{table}: {error}");
            assert!(!error.contains("hunter2"), "{table}: {error}");
        }
    }

    #[test]
    fn direct_hosts_are_matched_as_grants_match_hosts() {
        let config = parse(
            "[proxy]\nurl = \"http://p:3128\"\ndirect = [\"crm.corp\", \"*.internal\", \"::1\"]\n",
        )
        .unwrap();
        let route = ProxyRoute::resolve(&config, Arc::default()).unwrap();
        for host in ["crm.corp", "a.internal", "b.a.internal", "::1"] {
            assert!(route.goes_direct(host), "{host}");
        }
        for host in ["internal", "x.crm.corp", "api.example.com", "127.0.0.1"] {
            assert!(!route.goes_direct(host), "{host}");
        }
        assert_eq!(route.host().as_deref(), Some("p"));
        assert_eq!(
            route.describe(),
            "http://p:3128 (directly: crm.corp, *.internal, ::1)"
        );
    }

    #[test]
    fn the_password_is_resolved_at_each_request_and_never_shown() {
        let config =
            parse("[proxy]\nurl = \"http://p:3128\"\nuser = \"bob\"\npassword = \"file:proxy\"\n")
                .unwrap();
        let error = ProxyRoute::resolve(&config, Arc::default()).unwrap_err();
        assert!(
            error.starts_with("proxy.password: secret file:proxy"),
            "{error}"
        );
        let secrets = Arc::new(Secrets::in_memory(
            "secrets.toml",
            [("proxy".to_string(), Secrets::value("hunter2 :@/".into()))].into(),
        ));
        let route = ProxyRoute::resolve(&config, secrets).unwrap();
        assert_eq!(route.describe(), "http://p:3128 as bob");
        assert!(!format!("{route:?}").contains("hunter2"));
        assert_eq!(
            route.url_with_login().as_str(),
            "http://bob:hunter2%20%3A%40%2F@p:3128/"
        );
        assert_eq!(route.url(), "http://p:3128");
    }
}
