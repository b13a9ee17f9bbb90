//! `grants.toml`, the security team's file, and the policy it yields.
//!
//! Grants are per plugin name. The effective policy of a plugin version is
//! what its manifest requests ∩ what is granted, computed once per version
//! into one object per capability; every capability checks calls against it
//! and nothing else. A plugin that requests anything not granted is
//! `pending-approval` and does not run. Nothing is granted by default.
//!
//! [`edit`] changes the file for `causeway grants approve|revoke` keeping its
//! comments; [`changes`] records every change, however made, in the audit log.

pub mod changes;
pub mod edit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::caps::http::{HttpLimits, HttpPolicy, HttpRule};
use crate::caps::storage::StorageGrant;
use crate::config::{self, FileError, LimitsConfig};
use crate::manifest::{self, Manifest};
use crate::sandbox::Limits;
use crate::secrets::SecretRef;

/// How the host puts a credential into a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Injection {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<secret>)`, the secret being `user:password`.
    Basic,
    /// A header of this name carries the secret.
    Header(String),
    /// A query parameter of this name carries the secret.
    Query(String),
    /// A field of this name in the request's JSON object body carries the
    /// secret (APIs that take their key in the body).
    Json(String),
}

impl TryFrom<String> for Injection {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let named = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        match text.split_once(':') {
            None if text == "bearer" => Ok(Injection::Bearer),
            None if text == "basic" => Ok(Injection::Basic),
            Some(("header", name)) if named(name) => Ok(Injection::Header(name.to_string())),
            Some(("query", name)) if named(name) => Ok(Injection::Query(name.to_string())),
            Some(("json", name)) if named(name) => Ok(Injection::Json(name.to_string())),
            _ => Err(format!(
                "inject {text:?} must be \"bearer\", \"basic\", \"header:NAME\", \"query:NAME\" or \"json:NAME\""
            )),
        }
    }
}

impl From<Injection> for String {
    fn from(i: Injection) -> String {
        match i {
            Injection::Bearer => "bearer".into(),
            Injection::Basic => "basic".into(),
            Injection::Header(name) => format!("header:{name}"),
            Injection::Query(name) => format!("query:{name}"),
            Injection::Json(name) => format!("json:{name}"),
        }
    }
}

/// A credential bound to a secret and to the hosts it may be sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { secret = \"env:NAME\", hosts = [\"api.example.com\"], inject = \"bearer\" }"
)]
pub struct CredentialBinding {
    /// Where the value comes from.
    pub secret: SecretRef,
    /// The hosts (exact or `*.suffix`) it may be sent to; never any other.
    pub hosts: Vec<String>,
    /// How it is injected (default `bearer`).
    #[serde(default = "bearer")]
    pub inject: Injection,
    /// An OAuth 2.0 access token is injected instead, obtained with
    /// `secret` as the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<crate::caps::http::OAuth2>,
}

fn bearer() -> Injection {
    Injection::Bearer
}

impl CredentialBinding {
    /// One line, as `causeway grants` and the audit log show it: the secret
    /// referenced (never its value), the hosts, how it is sent.
    pub fn describe(&self) -> String {
        let inject = String::from(self.inject.clone());
        let how = match &self.oauth2 {
            None => inject,
            Some(oauth) => format!(
                "{inject}: {}; the secret is its {}",
                oauth.describe(),
                match oauth.secret_is_key() {
                    true => "private key",
                    false => "client secret",
                }
            ),
        };
        format!("{} to {} ({how})", self.secret, self.hosts.join(", "))
    }

    /// Whether the credential may be sent to `host` (lower case).
    pub fn binds(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
                }
                None => host == pattern,
            }
        })
    }
}

/// Who approved a plugin, when, and for which file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table { by = \"NAME\", at = \"RFC 3339 TIME\", digest = \"sha256:...\" }, as `causeway grants approve` writes it"
)]
pub struct Approval {
    /// Who approved.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// The digest of the plugin file approved.
    pub digest: String,
}

/// Who took grants back, when, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table { by = \"NAME\", at = \"RFC 3339 TIME\", what = \"all\" }, as `causeway grants revoke` writes it"
)]
pub struct Revocation {
    /// Who revoked.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// What: `all`, `http`, `http:HOST`, `credential:NAME`, `storage`.
    pub what: String,
}

/// Everything granted to one plugin name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of what the plugin may do (http, credentials, storage, http-limits, limits)"
)]
pub struct PluginGrant {
    /// Outbound HTTP allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRule>,
    /// Credentials bound, by the name the plugin uses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, CredentialBinding>,
    /// Private storage and its quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageGrant>,
    /// Limits on outbound HTTP (sizes, timeout, redirects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_limits: Option<HttpLimits>,
    /// Limits overriding the host's defaults for this plugin.
    #[serde(default, skip_serializing)]
    pub limits: LimitsConfig,
    /// The last approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The last revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    plugins: BTreeMap<toml::Spanned<String>, PluginGrant>,
}

/// The line of `[plugins.PLUGIN.credentials.CREDENTIAL]` in grants `text`,
/// when the binding has a table of its own.
pub fn credential_line(text: &str, plugin: &str, credential: &str) -> Option<usize> {
    config::header_lines(text, &format!("plugins.{plugin}.credentials.{credential}")).next()
}

/// The grants file, parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Where it was read from.
    pub file: PathBuf,
    plugins: BTreeMap<String, (PluginGrant, usize)>,
}

impl Grants {
    /// Loads `file`; a missing file grants nothing.
    pub fn load(file: &Path) -> Result<Grants, FileError> {
        if !file.exists() {
            return Ok(Grants {
                file: file.to_path_buf(),
                plugins: BTreeMap::new(),
            });
        }
        let text = config::read_file(file)?;
        Grants::parse(&text, file)
    }

    /// Parses grants text read from `file`.
    pub fn parse(text: &str, file: &Path) -> Result<Grants, FileError> {
        let name = file.display().to_string();
        let parsed: GrantsFile = config::parse_toml(text, &name)?;
        let mut plugins = BTreeMap::new();
        for (key, grant) in parsed.plugins {
            let line = config::line_of(text, key.span().start);
            let plugin = key.into_inner();
            let fail = |message: String| FileError::at(name.clone(), Some(line), message);
            if !manifest::is_plugin_name(&plugin) {
                return Err(fail(format!(
                    "plugins.{plugin:?} is not a valid plugin name"
                )));
            }
            // A rule's or a credential's own table, when it has one (not
            // written inline): its line, else the plugin's.
            let rules: Vec<usize> =
                config::header_lines(text, &format!("plugins.{plugin}.http")).collect();
            for (i, rule) in grant.http.iter().enumerate() {
                let at = rules.get(i).copied().unwrap_or(line);
                let fail = |message: String| FileError::at(name.clone(), Some(at), message);
                rule.validate(&format!("plugins.{plugin}.http[{i}]"))
                    .map_err(fail)?;
                if rule.host == "*" {
                    return Err(fail(format!(
                        "plugins.{plugin}.http[{i}].host: a grant must name a host or *.suffix, not *"
                    )));
                }
                if rule.scheme == "*" {
                    return Err(fail(format!(
                        "plugins.{plugin}.http[{i}].scheme: a grant must name \"https\" or \"http\", not *"
                    )));
                }
            }
            for (credential, binding) in &grant.credentials {
                if binding.hosts.is_empty() {
                    let at = credential_line(text, &plugin, credential).unwrap_or(line);
                    return Err(FileError::at(
                        name.clone(),
                        Some(at),
                        format!(
                            "plugins.{plugin}.credentials.{credential}.hosts is empty: a credential must be bound to the hosts it may be sent to"
                        ),
                    ));
                }
            }
            plugins.insert(plugin, (grant, line));
        }
        Ok(Grants {
            file: file.to_path_buf(),
            plugins,
        })
    }

    /// The grant for `plugin`.
    pub fn get(&self, plugin: &str) -> Option<&PluginGrant> {
        self.plugins.get(plugin).map(|(grant, _)| grant)
    }

    /// What is wrong with each grant's `fuel` limit on a host whose engine
    /// does not count fuel (`counted` false): by plugin name, the message.
    pub fn uncounted_fuel(&self, counted: bool) -> Vec<(&str, String)> {
        if counted {
            return Vec::new();
        }
        self.fuel_limits()
            .map(|(name, units)| {
                (
                    name,
                    format!(
                        "plugins.{name}.limits.fuel = {units}: {} (until then, each call of {name} fails saying so)",
                        crate::config::FUEL_UNCOUNTED
                    ),
                )
            })
            .collect()
    }

    /// Each plugin whose grant limits its fuel, with the limit.
    pub fn fuel_limits(&self) -> impl Iterator<Item = (&str, u64)> {
        self.plugins
            .iter()
            .filter_map(|(name, (grant, _))| Some((name.as_str(), grant.limits.fuel?)))
    }

    /// Every granted plugin name with the line its section starts on.
    pub fn names(&self) -> impl Iterator<Item = (&str, usize)> {
        self.plugins
            .iter()
            .map(|(name, (_, line))| (name.as_str(), *line))
    }
}

/// The effective policy of one plugin version: one object per capability.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Policy {
    /// What outbound HTTP is allowed.
    pub http: HttpPolicy,
    /// What the manifest requested, to tell a request never asked for from
    /// one not granted.
    pub requested_http: Vec<HttpRule>,
    /// Credentials both requested and bound.
    pub credentials: BTreeMap<String, CredentialBinding>,
    /// Storage, if requested and granted.
    pub storage: Option<StorageGrant>,
    /// Limits on outbound HTTP.
    pub http_limits: HttpLimits,
    /// The limits of each call.
    #[serde(skip)]
    pub limits: Limits,
}

impl Policy {
    /// Computes requested ∩ granted, and lists what is requested but not
    /// granted (an empty list means the plugin may run).
    pub fn evaluate(
        manifest: &Manifest,
        grant: Option<&PluginGrant>,
        defaults: Limits,
    ) -> (Policy, Vec<String>) {
        let empty = PluginGrant::default();
        let grant = grant.unwrap_or(&empty);
        let requested = &manifest.capabilities;
        let mut missing = Vec::new();
        for rule in &requested.http {
            if !grant.http.iter().any(|g| rule.covered_by(g)) {
                // What an upgrade asks beyond a rule it was granted, so a
                // reviewer need not compare the two by eye.
                let beyond = grant.http.iter().find_map(|g| rule.beyond(g));
                missing.push(match beyond {
                    Some(beyond) => format!("http {} ({beyond})", rule.to_inline_toml()),
                    None => format!("http {}", rule.to_inline_toml()),
                });
            }
        }
        let mut credentials = BTreeMap::new();
        for credential in &requested.credentials {
            match grant.credentials.get(&credential.name) {
                Some(binding) => {
                    credentials.insert(credential.name.clone(), binding.clone());
                }
                None => missing.push(format!("credential {}", credential.name)),
            }
        }
        let storage = if requested.storage {
            if grant.storage.is_none() {
                missing.push("storage".to_string());
            }
            grant.storage.clone()
        } else {
            None
        };
        let policy = Policy {
            http: HttpPolicy::effective(&requested.http, &grant.http),
            requested_http: requested.http.clone(),
            credentials,
            storage,
            http_limits: grant.http_limits.unwrap_or_default(),
            limits: grant.limits.apply(defaults),
        };
        (policy, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
contract = "0.1.0"
name = "crm-source"
version = "0.1.0"
[[capabilities.http]]
host = "*"
methods = ["GET"]
path-prefix = "/v1/contacts"
[[capabilities.credentials]]
name = "crm-token"
"#;

    const GRANTS: &str = r#"
# Reviewed by security.
[plugins.crm-source]
limits = { memory-mb = 8 }

[[plugins.crm-source.http]]
host = "crm.example.com"
methods = ["GET"]
path-prefix = "/v1/"

[plugins.crm-source.credentials.crm-token]
secret = "env:CRM_TOKEN"
hosts = ["crm.example.com"]
"#;

    #[test]
    fn a_plugin_with_requests_and_no_grant_is_pending_with_each_request_listed() {
        let manifest = Manifest::parse(MANIFEST, "m").unwrap();
        let (policy, missing) = Policy::evaluate(&manifest, None, Limits::default());
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("http"));
        assert_eq!(missing[1], "credential crm-token");
        assert!(policy.http.rules.is_empty());
    }

    #[test]
    fn a_full_grant_yields_the_intersection_and_the_grant_limits() {
        let manifest = Manifest::parse(MANIFEST, "m").unwrap();
        let grants = Grants::parse(GRANTS, Path::new("grants.toml")).unwrap();
        let (policy, missing) =
            Policy::evaluate(&manifest, grants.get("crm-source"), Limits::default());
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(policy.http.rules.len(), 1);
        assert_eq!(policy.http.rules[0].host, "crm.example.com");
        assert_eq!(policy.http.rules[0].path_prefix, "/v1/contacts");
        assert_eq!(policy.limits.memory_bytes, 8 * 1024 * 1024);
        assert_eq!(policy.credentials["crm-token"].inject, Injection::Bearer);
    }

    #[test]
    fn http_limits_no_request_could_go_under_are_refused_naming_key_and_line() {
        for (line, expected) in [
            (
                "requests-per-second = 0",
                "g.toml line 3: requests-per-second = 0: must be at least 1 (at a rate of none no request could go; 0 is not \"no limit\")",
            ),
            ("burst = 0", "g.toml line 3: burst = 0: must be at least 1"),
            (
                "max-concurrent = 0",
                "g.toml line 3: max-concurrent = 0: must be at least 1",
            ),
            (
                "max-request-bytes = 0",
                "g.toml line 3: max-request-bytes = 0: must be at least 1",
            ),
            (
                "max-response-bytes = 0",
                "g.toml line 3: max-response-bytes = 0: must be at least 1",
            ),
            (
                "timeout = \"0s\"",
                "g.toml line 3: timeout = \"0s\": must be from 1ms to 24h",
            ),
        ] {
            let text = format!("[plugins.a.http-limits]\nmax-redirects = 0\n{line}\n");
            let err = Grants::parse(&text, Path::new("g.toml")).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{err}");
        }
        // No redirects followed is a limit a plugin can run under.
        let grants = Grants::parse(
            "[plugins.a.http-limits]\nmax-redirects = 0\nrequests-per-second = 1\n",
            Path::new("g.toml"),
        )
        .unwrap();
        let limits = grants.get("a").and_then(|g| g.http_limits).unwrap();
        assert_eq!(limits.max_redirects, 0);
        assert_eq!((limits.requests_per_second, limits.burst), (1, 20));
        // A storage quota of nothing is not.
        for line in ["quota-bytes = 0", "quota-keys = 0"] {
            let text = format!("[plugins.a.storage]\n{line}\n");
            let err = Grants::parse(&text, Path::new("g.toml")).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("g.toml line 2: {line}: must be at least 1")),
                "{err}"
            );
        }
    }

    #[test]
    fn grant_errors_name_file_line_and_key() {
        let err = Grants::parse(
            "[plugins.a]\nhttp = []\nstorage = { quota-bytes = \"x\" }\n",
            Path::new("grants.toml"),
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = Grants::parse("[plugins.a]\nbogus = 1\n", Path::new("grants.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("grants.toml line 2: unknown field `bogus`"),
            "{err}"
        );
        let err = Grants::parse(
            "[plugins.a.credentials.t]\nsecret = \"plaintext\"\nhosts = [\"x\"]\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("never the value itself"), "{err}");
        // A credential written as its secret alone says what a binding is.
        let err = Grants::parse(
            "[plugins.a.credentials]\nt = \"env:T\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "g.toml line 2: t: invalid type: string \"env:T\", expected a table such as { secret = \"env:NAME\", hosts = [\"api.example.com\"], inject = \"bearer\" }"
        );
        let err = Grants::parse(
            "[[plugins.a.http]]\nhost = \"*\"\nmethods = [\"GET\"]\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not *"), "{err}");
        let err = Grants::parse(
            "[[plugins.a.http]]\nscheme = \"*\"\nhost = \"a.example\"\nmethods = [\"GET\"]\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("http[0].scheme"), "{err}");
        // A rule or a credential with a table of its own is named at its
        // table's line, not the plugin's first.
        let err = Grants::parse(
            "[[plugins.a.http]]\nhost = \"a.example\"\nmethods = [\"GET\"]\n\n[[plugins.a.http]]\nhost = \"*\"\nmethods = [\"GET\"]\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("g.toml line 5: plugins.a.http[1].host"),
            "{err}"
        );
        let err = Grants::parse(
            "[plugins.a]\nhttp = []\n\n[plugins.a.credentials.t]\nsecret = \"env:T\"\nhosts = []\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("g.toml line 4: plugins.a.credentials.t.hosts is empty"),
            "{err}"
        );
    }

    #[test]
    fn section_lines_are_kept_for_messages() {
        let grants = Grants::parse(GRANTS, Path::new("grants.toml")).unwrap();
        assert_eq!(grants.names().collect::<Vec<_>>(), [("crm-source", 3)]);
    }
}
