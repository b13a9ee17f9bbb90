//! The grant a plugin is tested under: what its manifest requests, as an
//! operator would grant it for the test configuration.
//!
//! A request for `host = "*"` (the operator's choice) is granted for the hosts
//! the configuration's URLs name, with their scheme — exactly what `causeway
//! grants approve --host` would write for that configuration — so a plugin
//! configured for a local server may reach it, and nothing else. Credentials
//! are bound to the granted hosts, their secrets held in memory by the suite.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::caps::http::HttpRule;
use crate::caps::storage::StorageGrant;
use crate::grants::{CredentialBinding, Injection, PluginGrant};
use crate::manifest::Manifest;
use crate::secrets::SecretRef;

/// The in-memory secrets key holding credential `name`'s value.
pub fn secret_key(name: &str) -> String {
    format!("causeway-test-{name}")
}

/// Every http(s) URL among the configuration's string values, at any depth.
fn urls(config: &Value, out: &mut Vec<url::Url>) {
    match config {
        Value::String(text) => {
            if let Ok(url) = url::Url::parse(text)
                && matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
            {
                out.push(url);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| urls(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| urls(v, out)),
        _ => {}
    }
}

/// The grant for `manifest` under `config`; a credential is injected as
/// `injections` says, else as a bearer token.
pub fn suite_grant(
    manifest: &Manifest,
    config: &Value,
    injections: &BTreeMap<String, Injection>,
) -> PluginGrant {
    let mut found = Vec::new();
    urls(config, &mut found);
    let mut http = Vec::new();
    for rule in &manifest.capabilities.http {
        if rule.host != "*" {
            http.push(rule.clone());
            continue;
        }
        for url in &found {
            let (Some(host), scheme) = (url.host_str(), url.scheme()) else {
                continue;
            };
            if rule.scheme != "*" && rule.scheme != scheme {
                continue;
            }
            let granted = HttpRule {
                scheme: scheme.to_string(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                ..rule.clone()
            };
            if !http.contains(&granted) {
                http.push(granted);
            }
        }
    }
    let hosts: Vec<String> = http
        .iter()
        .map(|r| r.host.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let credentials: BTreeMap<String, CredentialBinding> = manifest
        .capabilities
        .credentials
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                CredentialBinding {
                    secret: SecretRef::File(secret_key(&c.name)),
                    hosts: hosts.clone(),
                    inject: injections
                        .get(&c.name)
                        .cloned()
                        .unwrap_or(Injection::Bearer),
                    oauth2: None,
                },
            )
        })
        .collect();
    PluginGrant {
        http,
        credentials,
        storage: manifest.capabilities.storage.then(StorageGrant::default),
        ..PluginGrant::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANIFEST: &str = r#"
contract = "0.1.0"
name = "crm-source"
version = "0.1.0"
[capabilities]
storage = true
[[capabilities.http]]
scheme = "*"
host = "*"
methods = ["GET"]
path-prefix = "/v1/contacts"
[[capabilities.http]]
host = "auth.example.com"
methods = ["POST"]
[[capabilities.credentials]]
name = "crm-token"
"#;

    #[test]
    fn a_wildcard_request_is_granted_for_the_configured_hosts_only() {
        let manifest = Manifest::parse(MANIFEST, "m").unwrap();
        let config =
            json!({"base_url": "http://127.0.0.1:8080", "page_size": 5, "other": ["not a url"]});
        let grant = suite_grant(&manifest, &config, &BTreeMap::new());
        let shown: Vec<(String, String, String)> = grant
            .http
            .iter()
            .map(|r| (r.scheme.clone(), r.host.clone(), r.path_prefix.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                ("http".into(), "127.0.0.1".into(), "/v1/contacts".into()),
                ("https".into(), "auth.example.com".into(), "/".into()),
            ]
        );
        let binding = &grant.credentials["crm-token"];
        assert_eq!(binding.hosts, ["127.0.0.1", "auth.example.com"]);
        assert_eq!(
            binding.secret,
            SecretRef::File("causeway-test-crm-token".into())
        );
        assert!(grant.storage.is_some());
        let (_, missing) = crate::grants::Policy::evaluate(
            &manifest,
            Some(&grant),
            crate::sandbox::Limits::default(),
        );
        assert!(missing.is_empty(), "{missing:?}");
    }
}
