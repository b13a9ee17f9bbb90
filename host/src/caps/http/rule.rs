//! The HTTP allowlist: one rule shape for what a manifest requests and what
//! `grants.toml` grants, their intersection (the effective policy), and the
//! check every request passes through.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One kind of request: scheme, host pattern, port, methods, path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { host = \"api.example.com\", methods = [\"GET\"], path-prefix = \"/v1/\" }"
)]
pub struct HttpRule {
    /// `https` (the default) or `http`; `http` only when named. In a
    /// manifest, `*` means "the scheme the operator grants".
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// An exact host (name or IP address), `*.suffix` (any subdomain), or `*`
    /// (in a manifest: "whatever host the operator grants").
    pub host: String,
    /// A port; absent: any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Methods, upper case.
    pub methods: Vec<String>,
    /// A path prefix, matched on whole segments (`/v1/contacts` allows
    /// `/v1/contacts` and `/v1/contacts/7`, not `/v1/contactsX`).
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
}

fn default_scheme() -> String {
    "https".to_string()
}

fn default_path_prefix() -> String {
    "/".to_string()
}

/// One request, as the check sees it (after URL parsing and normalisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower case; IPv6 without brackets.
    pub host: String,
    /// The port (explicit or the scheme's default).
    pub port: u16,
    /// The method, upper case.
    pub method: String,
    /// The normalised path, without the query.
    pub path: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{} {}://{}:{}{}",
            self.method, self.scheme, host, self.port, self.path
        )
    }
}

impl HttpRule {
    /// Checks the rule's fields; `at` names it in the message
    /// (e.g. `plugins.crm-source.http[0]`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if !matches!(self.scheme.as_str(), "https" | "http" | "*") {
            return Err(format!(
                "{at}.scheme {:?} must be \"https\", \"http\" or *",
                self.scheme
            ));
        }
        let host_ok = self.host == "*"
            || (!self.host.is_empty()
                && self
                    .host
                    .trim_start_matches("*.")
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'))
                && !self.host.trim_start_matches("*.").contains('*'));
        if !host_ok {
            return Err(format!(
                "{at}.host {:?} must be a host name, an IP address, *.suffix or *",
                self.host
            ));
        }
        if self.methods.is_empty() {
            return Err(format!("{at}.methods is empty"));
        }
        if let Some(m) = self
            .methods
            .iter()
            .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(format!(
                "{at}.methods: {m:?} is not an upper-case HTTP method"
            ));
        }
        if !self.path_prefix.starts_with('/') || self.path_prefix.split('/').any(|s| s == "..") {
            return Err(format!(
                "{at}.path-prefix {:?} must start with '/' and contain no '..'",
                self.path_prefix
            ));
        }
        // No request path holds them (they are percent-encoded), and a
        // prefix is shown on a line of what is requested and granted.
        if self
            .path_prefix
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "{at}.path-prefix {:?} holds a space or a control character: write it percent-encoded, as a request's path has it",
                self.path_prefix
            ));
        }
        Ok(())
    }

    /// The requests both `self` and `other` allow, if any.
    pub fn intersect(&self, other: &HttpRule) -> Option<HttpRule> {
        let scheme = match (self.scheme.as_str(), other.scheme.as_str()) {
            ("*", s) | (s, "*") => s.to_string(),
            (a, b) if a == b => a.to_string(),
            _ => return None,
        };
        let host = intersect_hosts(&self.host, &other.host)?;
        let port = match (self.port, other.port) {
            (Some(a), Some(b)) if a != b => return None,
            (a, b) => a.or(b),
        };
        let mine: BTreeSet<&String> = self.methods.iter().collect();
        let methods: Vec<String> = other
            .methods
            .iter()
            .filter(|m| mine.contains(m))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if methods.is_empty() {
            return None;
        }
        let path_prefix = if path_within(&self.path_prefix, &other.path_prefix) {
            self.path_prefix.clone()
        } else if path_within(&other.path_prefix, &self.path_prefix) {
            other.path_prefix.clone()
        } else {
            return None;
        };
        Some(HttpRule {
            scheme,
            host,
            port,
            methods,
            path_prefix,
        })
    }

    /// Whether a grant `granted` satisfies this requested rule: same scheme,
    /// every requested method, and a host, port and path they share.
    pub fn covered_by(&self, granted: &HttpRule) -> bool {
        self.intersect(granted).is_some_and(|both| {
            both.methods.len() == self.methods.iter().collect::<BTreeSet<_>>().len()
        })
    }

    /// What this request asks beyond `granted`, a rule it overlaps (the
    /// methods, or paths outside its prefix); `None` when they do not
    /// overlap, or when `granted` covers it.
    pub fn beyond(&self, granted: &HttpRule) -> Option<String> {
        let both = self.intersect(granted)?;
        let mut more = Vec::new();
        let methods: Vec<&str> = self
            .methods
            .iter()
            .filter(|m| !both.methods.contains(m))
            .map(String::as_str)
            .collect();
        if !methods.is_empty() {
            more.push(format!("methods {}", methods.join(", ")));
        }
        if both.path_prefix != self.path_prefix {
            more.push(format!(
                "paths under {} outside {}",
                self.path_prefix, both.path_prefix
            ));
        }
        (!more.is_empty()).then(|| format!("beyond the grant: {}", more.join("; ")))
    }

    /// Whether this rule allows `target`.
    pub fn allows(&self, target: &Target) -> bool {
        (self.scheme == target.scheme || self.scheme == "*")
            && host_matches(&self.host, &target.host)
            && self.port.is_none_or(|p| p == target.port)
            && self.methods.contains(&target.method)
            && path_within(&target.path, &self.path_prefix)
    }

    /// The rule as a one-line TOML inline table, for messages.
    pub fn to_inline_toml(&self) -> String {
        let mut out = format!("{{ scheme = {:?}, host = {:?}", self.scheme, self.host);
        if let Some(port) = self.port {
            out.push_str(&format!(", port = {port}"));
        }
        out.push_str(&format!(
            ", methods = {:?}, path-prefix = {:?} }}",
            self.methods, self.path_prefix
        ));
        out
    }
}

/// A host pattern matches a host: exact (case-insensitive), `*.suffix`
/// (strict subdomains), or `*`.
pub(super) fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => host == pattern,
    }
}

fn intersect_hosts(a: &str, b: &str) -> Option<String> {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == "*" {
        return Some(b);
    }
    if b == "*" {
        return Some(a);
    }
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => (a == b).then_some(a),
        (Some(_), None) => host_matches(&a, &b).then_some(b),
        (None, Some(_)) => host_matches(&b, &a).then_some(a),
        (Some(sa), Some(sb)) => {
            if sa == sb || sa.ends_with(&format!(".{sb}")) {
                Some(a)
            } else if sb.ends_with(&format!(".{sa}")) {
                Some(b)
            } else {
                None
            }
        }
    }
}

/// Whether `path` lies within `prefix`, on whole segments.
fn path_within(path: &str, prefix: &str) -> bool {
    path == prefix
        || (prefix.ends_with('/') && path.starts_with(prefix))
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The effective HTTP policy of one plugin version: requested ∩ granted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpPolicy {
    /// The rules a request must match one of.
    pub rules: Vec<HttpRule>,
}

/// Why a request was refused, for the plugin and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The operator granted nothing that matches.
    #[error(
        "plugin {plugin} may not {target}: no grant allows it; to allow it, add to grants.toml [[plugins.{plugin}.http]] {rule}"
    )]
    NotGranted {
        /// The plugin's name.
        plugin: String,
        /// The refused request, as `METHOD scheme://host:port/path`.
        target: String,
        /// The rule that would allow it.
        rule: String,
    },
    /// The plugin's manifest does not request it: a grant alone cannot allow it.
    #[error(
        "plugin {plugin} may not {target}: its manifest does not request it (a new plugin version must request it, then be approved)"
    )]
    NotRequested {
        /// The plugin's name.
        plugin: String,
        /// The refused request, as `METHOD scheme://host:port/path`.
        target: String,
    },
}

impl HttpPolicy {
    /// Intersects every requested rule with every granted rule.
    pub fn effective(requested: &[HttpRule], granted: &[HttpRule]) -> HttpPolicy {
        let rules = requested
            .iter()
            .flat_map(|r| granted.iter().filter_map(move |g| r.intersect(g)))
            .collect();
        HttpPolicy { rules }
    }

    /// The one check every request passes through. `requested` tells apart a
    /// request the manifest never asked for from one the operator did not grant.
    pub fn check(
        &self,
        plugin: &str,
        requested: &[HttpRule],
        target: &Target,
    ) -> Result<(), Denial> {
        if self.rules.iter().any(|rule| rule.allows(target)) {
            return Ok(());
        }
        if !requested.iter().any(|rule| rule.allows(target)) {
            return Err(Denial::NotRequested {
                plugin: plugin.to_string(),
                target: target.to_string(),
            });
        }
        let rule = HttpRule {
            scheme: target.scheme.clone(),
            host: target.host.clone(),
            port: Some(target.port),
            methods: vec![target.method.clone()],
            path_prefix: target.path.clone(),
        };
        Err(Denial::NotGranted {
            plugin: plugin.to_string(),
            target: target.to_string(),
            rule: rule.to_inline_toml(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(scheme: &str, host: &str, port: Option<u16>, methods: &[&str], path: &str) -> HttpRule {
        HttpRule {
            scheme: scheme.into(),
            host: host.into(),
            port,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path_prefix: path.into(),
        }
    }

    fn target(method: &str, scheme: &str, host: &str, port: u16, path: &str) -> Target {
        Target {
            scheme: scheme.into(),
            host: host.into(),
            port,
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn a_wildcard_request_takes_the_granted_host() {
        let requested = rule("https", "*", None, &["GET"], "/v1/contacts");
        let granted = rule("https", "crm.example.com", Some(443), &["GET", "POST"], "/");
        let both = requested.intersect(&granted).unwrap();
        assert_eq!(
            both,
            rule(
                "https",
                "crm.example.com",
                Some(443),
                &["GET"],
                "/v1/contacts"
            )
        );
        assert!(requested.covered_by(&granted));
    }

    #[test]
    fn a_method_not_granted_is_not_covered() {
        let requested = rule("https", "*", None, &["GET", "DELETE"], "/");
        let granted = rule("https", "a.example", None, &["GET"], "/");
        assert!(!requested.covered_by(&granted));
    }

    #[test]
    fn what_a_request_asks_beyond_an_overlapping_grant_is_named() {
        let granted = rule("http", "127.0.0.1", None, &["GET", "PUT"], "/api/attendees");
        let more = rule("*", "*", None, &["GET", "PUT", "PATCH", "DELETE"], "/api");
        assert_eq!(
            more.beyond(&granted).as_deref(),
            Some(
                "beyond the grant: methods PATCH, DELETE; paths under /api outside /api/attendees"
            )
        );
        let one_more = rule("*", "*", None, &["GET", "PATCH"], "/api/attendees");
        assert_eq!(
            one_more.beyond(&granted).as_deref(),
            Some("beyond the grant: methods PATCH")
        );
        // Covered, or not overlapping at all: nothing to name.
        let same = rule("*", "*", None, &["GET"], "/api/attendees/1");
        assert_eq!(same.beyond(&granted), None);
        let elsewhere = rule("*", "*", None, &["GET"], "/v2");
        assert_eq!(elsewhere.beyond(&granted), None);
    }

    #[test]
    fn schemes_must_match() {
        let requested = rule("https", "*", None, &["GET"], "/");
        assert!(
            requested
                .intersect(&rule("http", "a.example", None, &["GET"], "/"))
                .is_none()
        );
    }

    #[test]
    fn a_requested_any_scheme_takes_the_granted_one() {
        let requested = rule("*", "*", None, &["GET"], "/v1/contacts");
        let granted = rule("http", "127.0.0.1", Some(8080), &["GET"], "/v1/");
        assert!(requested.covered_by(&granted));
        let both = requested.intersect(&granted).unwrap();
        assert_eq!(both.scheme, "http");
        assert!(both.allows(&target("GET", "http", "127.0.0.1", 8080, "/v1/contacts")));
        assert!(!both.allows(&target("GET", "https", "127.0.0.1", 8080, "/v1/contacts")));
        let https = rule("https", "crm.example", None, &["GET"], "/");
        assert_eq!(requested.intersect(&https).unwrap().scheme, "https");
    }

    #[test]
    fn suffix_patterns_match_strict_subdomains_only() {
        let r = rule("https", "*.example.com", None, &["GET"], "/");
        assert!(r.allows(&target("GET", "https", "api.example.com", 443, "/")));
        assert!(!r.allows(&target("GET", "https", "example.com", 443, "/")));
        assert!(!r.allows(&target("GET", "https", "evilexample.com", 443, "/")));
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let r = rule("https", "a.example", None, &["GET"], "/v1/contacts");
        assert!(r.allows(&target("GET", "https", "a.example", 443, "/v1/contacts")));
        assert!(r.allows(&target("GET", "https", "a.example", 443, "/v1/contacts/7")));
        assert!(!r.allows(&target("GET", "https", "a.example", 443, "/v1/contactsX")));
        assert!(!r.allows(&target("GET", "https", "a.example", 443, "/v1")));
    }

    #[test]
    fn denied_host_method_path_port_and_scheme_each_fail() {
        let requested = [rule("https", "*", None, &["GET"], "/v1/")];
        let policy = HttpPolicy::effective(
            &requested,
            &[rule("https", "a.example", Some(443), &["GET"], "/v1/")],
        );
        assert!(
            policy
                .check(
                    "p",
                    &requested,
                    &target("GET", "https", "a.example", 443, "/v1/x")
                )
                .is_ok()
        );
        for bad in [
            target("GET", "https", "b.example", 443, "/v1/x"),
            target("POST", "https", "a.example", 443, "/v1/x"),
            target("GET", "https", "a.example", 443, "/v2/x"),
            target("GET", "https", "a.example", 8443, "/v1/x"),
            target("GET", "http", "a.example", 443, "/v1/x"),
        ] {
            assert!(policy.check("p", &requested, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_denial_names_the_rule_to_add_or_says_the_manifest_lacks_it() {
        let requested = [rule("https", "*", None, &["GET"], "/v1/")];
        let policy = HttpPolicy::effective(&requested, &[]);
        let err = policy
            .check(
                "crm",
                &requested,
                &target("GET", "https", "a.example", 443, "/v1/x"),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[[plugins.crm.http]]") && err.contains("host = \"a.example\""),
            "{err}"
        );
        let err = policy
            .check(
                "crm",
                &requested,
                &target("DELETE", "https", "a.example", 443, "/v1/x"),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest does not request it"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let err = rule("ftp", "a", None, &["GET"], "/")
            .validate("plugins.x.http[0]")
            .unwrap_err();
        assert!(err.starts_with("plugins.x.http[0].scheme"), "{err}");
        assert!(
            rule("https", "a", None, &["get"], "/")
                .validate("r")
                .is_err()
        );
        assert!(
            rule("https", "a*b", None, &["GET"], "/")
                .validate("r")
                .is_err()
        );
        assert!(
            rule("https", "a", None, &["GET"], "/a/../b")
                .validate("r")
                .is_err()
        );
        for prefix in ["/a b", "/a\n  + http", "/a\t", "/a\u{7f}"] {
            let err = rule("https", "a", None, &["GET"], prefix)
                .validate("r")
                .unwrap_err();
            assert!(
                err.starts_with("r.path-prefix") && err.contains("percent-encoded"),
                "{prefix:?}: {err}"
            );
        }
        assert!(
            rule("https", "a", None, &["GET"], "/a%20b/%E2%82%AC")
                .validate("r")
                .is_ok()
        );
    }
}
