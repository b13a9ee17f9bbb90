//! Editing `grants.toml` for `causeway grants approve|revoke`: the security
//! team's file keeps its comments, order and layout (toml_edit); only the
//! plugin's own section changes, and the result is validated as a whole
//! before it is written.

use std::collections::BTreeMap;
use std::path::Path;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use super::{Grants, Injection, PluginGrant, Policy};
use crate::caps::http::HttpRule;
use crate::manifest::Manifest;
use crate::sandbox::Limits;
use crate::secrets::SecretRef;

/// What an approval needs beyond the manifest: the operator's answers to
/// what the manifest leaves open.
#[derive(Debug, Clone, Default)]
pub struct ApproveInput {
    /// Who approves.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// The plugin file's digest.
    pub digest: String,
    /// Hosts to grant where the manifest asks for `host = "*"`.
    pub hosts: Vec<String>,
    /// The scheme to grant where the manifest asks for `scheme = "*"`
    /// (default `https`).
    pub scheme: Option<String>,
    /// Where each requested credential's value comes from.
    pub secrets: BTreeMap<String, SecretRef>,
    /// How each credential is injected (default `bearer`).
    pub injects: BTreeMap<String, Injection>,
}

/// The edited text and one line per change made.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    /// The whole new file.
    pub text: String,
    /// What was added or removed.
    pub changes: Vec<String>,
}

/// Grants `manifest`'s requests that `text` does not yet grant, and records
/// the approval. Fails, changing nothing, when an answer is missing.
pub fn approve(
    text: &str,
    file: &Path,
    manifest: &Manifest,
    input: &ApproveInput,
) -> Result<Edited, String> {
    let name = &manifest.name;
    let current = Grants::parse(text, file)
        .map_err(|e| e.to_string())?
        .get(name)
        .cloned()
        .unwrap_or_default();
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut changes = Vec::new();

    // HTTP: each request not covered, with the operator's host and scheme
    // where the manifest leaves them open.
    let mut granted_rules = current.http.clone();
    // Hosts the operator named that this approval adds, for the
    // credentials already bound.
    let mut new_hosts: Vec<String> = Vec::new();
    // With every request on a host of the operator's choosing granted
    // somewhere, hosts named are hosts to add (a second region, say). Else
    // they go to the requests not granted yet, and only to them.
    let adding_hosts = !input.hosts.is_empty()
        && manifest
            .capabilities
            .http
            .iter()
            .filter(|r| r.host == "*")
            .all(|r| current.http.iter().any(|g| r.covered_by(g)));
    for rule in &manifest.capabilities.http {
        let named = rule.host == "*" && adding_hosts;
        if !named && granted_rules.iter().any(|g| rule.covered_by(g)) {
            continue;
        }
        let hosts = if rule.host == "*" {
            if input.hosts.is_empty() {
                return Err(format!(
                    "{name} asks for http {} on a host of your choosing: name it with --host HOST{}",
                    rule.to_inline_toml(),
                    granted_now(&current.http, rule)
                ));
            }
            input.hosts.clone()
        } else {
            vec![rule.host.clone()]
        };
        let scheme = match rule.scheme.as_str() {
            "*" => input.scheme.clone().unwrap_or_else(|| "https".into()),
            scheme => scheme.to_string(),
        };
        for host in hosts {
            let grant = HttpRule {
                scheme: scheme.clone(),
                host,
                port: rule.port,
                methods: rule.methods.clone(),
                path_prefix: rule.path_prefix.clone(),
            };
            if granted_rules.iter().any(|g| grant.covered_by(g)) {
                continue;
            }
            // A wider request (an upgrade asking one more method, say)
            // replaces the rule it covers, in place: the file keeps one
            // rule for it, and its comments.
            let narrower = granted_rules
                .iter()
                .position(|g| g.covered_by(&grant) && same_place(g, &grant));
            match narrower {
                Some(i) => {
                    changes.push(format!(
                        "+ http {}, in place of {}",
                        grant.to_inline_toml(),
                        granted_rules[i].to_inline_toml()
                    ));
                    set_http_rule(section(&mut doc, name)?, i, &grant)?;
                    granted_rules[i] = grant;
                }
                None => {
                    changes.push(format!("+ http {}", grant.to_inline_toml()));
                    push_http_rule(section(&mut doc, name)?, &grant)?;
                    // Only a host the operator named takes the credentials
                    // already bound: one an upgrade's manifest names itself
                    // (its vendor's, say) gets none without a hand edit.
                    let chosen = rule.host == "*";
                    if chosen && !granted_rules.iter().any(|g| g.host == grant.host) {
                        new_hosts.push(grant.host.clone());
                    }
                    granted_rules.push(grant);
                }
            }
        }
    }

    // Credentials: bound to the hosts the plugin may now reach.
    let granted_hosts: Vec<String> = {
        let mut hosts: Vec<String> = granted_rules.iter().map(|r| r.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        hosts
    };
    for credential in &manifest.capabilities.credentials {
        if let Some(binding) = current.credentials.get(&credential.name) {
            // Bound already: to the hosts added now too, as a first
            // approval binds it to every host granted.
            for host in &new_hosts {
                if binding.binds(host) {
                    continue;
                }
                bind_host(section(&mut doc, name)?, &credential.name, host)?;
                changes.push(format!("+ credential {}: also to {host}", credential.name));
            }
            // Said again otherwise: the operator is changing it (an API
            // that refused a bearer token, a secret moved).
            if let Some(secret) = input.secrets.get(&credential.name)
                && *secret != binding.secret
            {
                let text = secret.to_string();
                set_binding(section(&mut doc, name)?, &credential.name, "secret", &text)?;
                changes.push(format!(
                    "~ credential {}: secret {text}, in place of {}",
                    credential.name, binding.secret
                ));
            }
            if let Some(inject) = input.injects.get(&credential.name)
                && *inject != binding.inject
            {
                let text = String::from(inject.clone());
                set_binding(section(&mut doc, name)?, &credential.name, "inject", &text)?;
                changes.push(format!(
                    "~ credential {}: sent as {text}, in place of {}",
                    credential.name,
                    String::from(binding.inject.clone())
                ));
            }
            continue;
        }
        let secret = input.secrets.get(&credential.name).ok_or_else(|| {
            format!(
                "{name} asks for the credential {:?}: say where its value is with --secret {}=env:VAR (or file:PATH)",
                credential.name, credential.name
            )
        })?;
        if granted_hosts.is_empty() {
            return Err(format!(
                "{name} asks for the credential {:?} but may reach no host to send it to",
                credential.name
            ));
        }
        let inject = input
            .injects
            .get(&credential.name)
            .cloned()
            .unwrap_or(Injection::Bearer);
        let mut binding = Table::new();
        binding.insert("secret", value(secret.to_string()));
        binding.insert("hosts", value(Array::from_iter(granted_hosts.iter())));
        binding.insert("inject", value(String::from(inject.clone())));
        let credentials = section(&mut doc, name)?
            .entry("credentials")
            .or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            })
            .as_table_mut()
            .ok_or_else(|| format!("plugins.{name}.credentials is not a table"))?;
        credentials.insert(&credential.name, Item::Table(binding));
        changes.push(format!(
            "+ credential {}: {secret} to {} ({})",
            credential.name,
            granted_hosts.join(", "),
            String::from(inject)
        ));
    }

    // Storage, with the default quotas written out for the reviewer to see.
    if manifest.capabilities.storage && current.storage.is_none() {
        let defaults = crate::caps::storage::StorageGrant::default();
        let mut storage = InlineTable::new();
        storage.insert("quota-bytes", (defaults.quota_bytes as i64).into());
        storage.insert("quota-keys", (defaults.quota_keys as i64).into());
        section(&mut doc, name)?.insert("storage", value(storage));
        changes.push(format!(
            "+ storage: {} bytes, {} keys",
            defaults.quota_bytes, defaults.quota_keys
        ));
    }

    let already = current
        .approval
        .as_ref()
        .is_some_and(|a| a.digest == input.digest);
    if changes.is_empty() && already {
        return Ok(Edited {
            text: text.to_string(),
            changes,
        });
    }
    let mut approval = InlineTable::new();
    approval.insert("by", input.by.as_str().into());
    approval.insert("at", input.at.as_str().into());
    approval.insert("digest", input.digest.as_str().into());
    section(&mut doc, name)?.insert("approval", value(approval));
    changes.push(format!("approved by {} for {}", input.by, input.digest));

    let text = doc.to_string();
    let grants = Grants::parse(&text, file)
        .map_err(|e| format!("the approval would make {} invalid: {e}", file.display()))?;
    let (_, missing) = Policy::evaluate(manifest, grants.get(name), Limits::default());
    if !missing.is_empty() {
        return Err(format!(
            "{name} would still not be granted: {}",
            missing.join("; ")
        ));
    }
    Ok(Edited { text, changes })
}

/// Takes back `what` (`all`, `http`, `http:HOST`, `credentials`,
/// `credential:NAME`, `storage`) from `name`, and records the revocation.
pub fn revoke(
    text: &str,
    file: &Path,
    name: &str,
    what: &str,
    by: &str,
    at: &str,
) -> Result<Edited, String> {
    let grants = Grants::parse(text, file).map_err(|e| e.to_string())?;
    let current: PluginGrant = grants.get(name).cloned().ok_or_else(|| {
        let likely = crate::config::closest(name, grants.names().map(|(n, _)| n))
            .map(|n| format!(" (did you mean {n:?}?)"))
            .unwrap_or_default();
        format!("{} grants nothing to {name}{likely}", file.display())
    })?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let table = section(&mut doc, name)?;
    let mut changes = Vec::new();
    let http_lines = |rules: &[HttpRule], keep: &dyn Fn(&HttpRule) -> bool| -> Vec<String> {
        rules
            .iter()
            .filter(|r| !keep(r))
            .map(|r| format!("- http {}", r.to_inline_toml()))
            .collect()
    };
    let (kind, arg) = what.split_once(':').unwrap_or((what, ""));
    match (kind, arg) {
        ("all", "") => {
            changes.extend(http_lines(&current.http, &|_| false));
            changes.extend(
                current
                    .credentials
                    .keys()
                    .map(|c| format!("- credential {c}")),
            );
            if current.storage.is_some() {
                changes.push("- storage".into());
            }
            for key in ["http", "credentials", "storage"] {
                table.remove(key);
            }
        }
        ("http", "") => {
            changes.extend(http_lines(&current.http, &|_| false));
            table.remove("http");
        }
        ("http", host) => {
            let keep = |r: &HttpRule| r.host != host;
            changes.extend(http_lines(&current.http, &keep));
            match table.get_mut("http") {
                Some(Item::ArrayOfTables(rules)) => {
                    rules.retain(|t| t.get("host").and_then(|h| h.as_str()) != Some(host))
                }
                Some(item) => {
                    if let Some(rules) = item.as_array_mut() {
                        rules.retain(|v| {
                            v.as_inline_table()
                                .and_then(|t| t.get("host"))
                                .and_then(|h| h.as_str())
                                != Some(host)
                        });
                    }
                }
                None => {}
            }
        }
        ("credentials", "") => {
            changes.extend(
                current
                    .credentials
                    .keys()
                    .map(|c| format!("- credential {c}")),
            );
            table.remove("credentials");
        }
        ("credential", credential) => {
            if current.credentials.contains_key(credential) {
                changes.push(format!("- credential {credential}"));
            }
            if let Some(credentials) = table
                .get_mut("credentials")
                .and_then(|c| c.as_table_like_mut())
            {
                credentials.remove(credential);
            }
        }
        ("storage", "") => {
            if current.storage.is_some() {
                changes.push("- storage".into());
            }
            table.remove("storage");
        }
        _ => {
            return Err(format!(
                "cannot revoke {what:?}: say all, http, http:HOST, credentials, credential:NAME or storage"
            ));
        }
    }
    if changes.is_empty() {
        return Err(format!(
            "{} grants {name} nothing matching {what:?}: see `causeway grants`",
            file.display()
        ));
    }
    let mut revocation = InlineTable::new();
    revocation.insert("by", by.into());
    revocation.insert("at", at.into());
    revocation.insert("what", what.into());
    table.insert("revocation", value(revocation));
    let text = doc.to_string();
    Grants::parse(&text, file)
        .map_err(|e| format!("the revocation would make {} invalid: {e}", file.display()))?;
    Ok(Edited { text, changes })
}

/// `[plugins.NAME]`, created (after the rest of the file) if missing.
fn section<'d>(doc: &'d mut DocumentMut, name: &str) -> Result<&'d mut Table, String> {
    // In a file of comments only, toml_edit keeps them as the document's
    // trailer, which would put them after the first section written: move
    // them before it instead.
    let leading = doc
        .as_table()
        .is_empty()
        .then(|| doc.trailing().as_str().unwrap_or_default().to_string())
        .filter(|text| !text.is_empty());
    if leading.is_some() {
        doc.set_trailing("");
    }
    let plugins = doc
        .as_table_mut()
        .entry("plugins")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or("grants.toml: `plugins` is not a table")?;
    plugins
        .entry(name)
        .or_insert_with(|| {
            let mut table = Table::new();
            if let Some(text) = leading {
                table.decor_mut().set_prefix(text);
            }
            Item::Table(table)
        })
        .as_table_mut()
        .ok_or_else(|| format!("grants.toml: plugins.{name} is not a table"))
}

/// For a request on a host of the operator's choosing: the hosts its
/// narrower grants name now, as the flags that would grant it there.
fn granted_now(granted: &[HttpRule], rule: &HttpRule) -> String {
    let now: Vec<&HttpRule> = granted
        .iter()
        .filter(|g| {
            let there = HttpRule {
                scheme: g.scheme.clone(),
                host: g.host.clone(),
                ..rule.clone()
            };
            g.covered_by(&there)
        })
        .collect();
    let Some(first) = now.first() else {
        return String::new();
    };
    let mut hosts: Vec<&str> = now.iter().map(|g| g.host.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    let mut flags: Vec<String> = hosts.iter().map(|h| format!("--host {h}")).collect();
    if first.scheme != "https" {
        flags.push(format!("--scheme {}", first.scheme));
    }
    format!(
        " (a narrower grant of it names {} now: {})",
        hosts.join(", "),
        flags.join(" ")
    )
}

/// Adds `host` to the hosts credential `credential` is bound to.
fn bind_host(table: &mut Table, credential: &str, host: &str) -> Result<(), String> {
    table
        .get_mut("credentials")
        .and_then(Item::as_table_like_mut)
        .and_then(|credentials| credentials.get_mut(credential))
        .and_then(Item::as_table_like_mut)
        .and_then(|binding| binding.get_mut("hosts"))
        .and_then(Item::as_array_mut)
        .map(|hosts| hosts.push(host))
        .ok_or_else(|| format!("grants.toml: the hosts of credential {credential} are not a list"))
}

/// Sets `key` of credential `credential`'s binding in `table` to `text`.
fn set_binding(table: &mut Table, credential: &str, key: &str, text: &str) -> Result<(), String> {
    table
        .get_mut("credentials")
        .and_then(Item::as_table_like_mut)
        .and_then(|credentials| credentials.get_mut(credential))
        .and_then(Item::as_table_like_mut)
        .map(|binding| binding.insert(key, value(text)))
        .map(drop)
        .ok_or_else(|| format!("grants.toml: credential {credential} is not a table"))
}

/// Whether two rules name the same scheme, host and port.
fn same_place(a: &HttpRule, b: &HttpRule) -> bool {
    (&a.scheme, &a.host, a.port) == (&b.scheme, &b.host, b.port)
}

/// Writes `rule`'s fields into `fields`, keeping its decor.
fn write_http_rule(fields: &mut dyn toml_edit::TableLike, rule: &HttpRule) {
    match rule.scheme.as_str() {
        "https" => {
            fields.remove("scheme");
        }
        scheme => {
            fields.insert("scheme", value(scheme));
        }
    }
    fields.insert("host", value(rule.host.as_str()));
    match rule.port {
        Some(port) => fields.insert("port", value(i64::from(port))),
        None => fields.remove("port"),
    };
    fields.insert("methods", value(Array::from_iter(rule.methods.iter())));
    fields.insert("path-prefix", value(rule.path_prefix.as_str()));
}

/// Replaces the `i`-th `http` rule of `table` (the order grants.toml
/// lists them in) with `rule`.
fn set_http_rule(table: &mut Table, i: usize, rule: &HttpRule) -> Result<(), String> {
    let fields: Option<&mut dyn toml_edit::TableLike> = match table.get_mut("http") {
        Some(Item::ArrayOfTables(rules)) => {
            rules.get_mut(i).map(|t| t as &mut dyn toml_edit::TableLike)
        }
        Some(item) => item
            .as_array_mut()
            .and_then(|rules| rules.get_mut(i))
            .and_then(|v| v.as_inline_table_mut())
            .map(|t| t as &mut dyn toml_edit::TableLike),
        None => None,
    };
    let fields = fields.ok_or("grants.toml: an http rule is not where it was read")?;
    write_http_rule(fields, rule);
    Ok(())
}

fn push_http_rule(table: &mut Table, rule: &HttpRule) -> Result<(), String> {
    let mut fields = Table::new();
    write_http_rule(&mut fields, rule);
    match table
        .entry("http")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
    {
        Item::ArrayOfTables(rules) => {
            rules.push(fields);
            Ok(())
        }
        item => match item.as_array_mut() {
            Some(rules) => {
                rules.push(fields.into_inline_table());
                Ok(())
            }
            None => Err("grants.toml: http is neither an array nor tables".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
contract = "0.1.0"
name = "crm-source"
version = "0.2.0"
[capabilities]
storage = true
[[capabilities.http]]
scheme = "*"
host = "*"
methods = ["GET"]
path-prefix = "/v1/contacts"
[[capabilities.credentials]]
name = "crm-token"
"#;

    const GRANTS: &str = "# Owned by security. Ask #sec-review before editing.\n\
[plugins.mailer-sink] # the mailer\n\
storage = { quota-bytes = 1000 } # small\n\
\n\
# crm-source reviewed 2026-10-01\n\
[plugins.crm-source]\n\
limits = { memory-mb = 16 } # keep it small\n";

    fn input() -> ApproveInput {
        ApproveInput {
            by: "alice".into(),
            at: "2026-11-24T10:00:00Z".into(),
            digest: "sha256:abc".into(),
            hosts: vec!["crm.example.com".into()],
            scheme: None,
            secrets: BTreeMap::from([(
                "crm-token".to_string(),
                SecretRef::try_from("env:CRM_TOKEN".to_string()).unwrap(),
            )]),
            injects: BTreeMap::new(),
        }
    }

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST, "m").unwrap()
    }

    #[test]
    fn approve_grants_every_request_and_keeps_comments_and_layout() {
        let path = Path::new("grants.toml");
        let edited = approve(GRANTS, path, &manifest(), &input()).unwrap();
        for comment in [
            "# Owned by security. Ask #sec-review before editing.",
            "[plugins.mailer-sink] # the mailer",
            "storage = { quota-bytes = 1000 } # small",
            "# crm-source reviewed 2026-10-01",
            "limits = { memory-mb = 16 } # keep it small",
        ] {
            assert!(
                edited.text.contains(comment),
                "lost {comment:?}:\n{}",
                edited.text
            );
        }
        let grants = Grants::parse(&edited.text, path).unwrap();
        let grant = grants.get("crm-source").unwrap();
        assert_eq!(grant.http.len(), 1);
        assert_eq!(grant.http[0].host, "crm.example.com");
        assert_eq!(grant.http[0].scheme, "https");
        assert_eq!(grant.credentials["crm-token"].hosts, ["crm.example.com"]);
        assert!(grant.storage.is_some());
        assert_eq!(grant.limits.memory_mb, Some(16), "existing settings kept");
        let approval = grant.approval.as_ref().unwrap();
        assert_eq!(
            (approval.by.as_str(), approval.digest.as_str()),
            ("alice", "sha256:abc")
        );
        assert_eq!(edited.changes.len(), 4, "{:?}", edited.changes);
        // Approving the same file again changes nothing.
        let again = approve(&edited.text, path, &manifest(), &input()).unwrap();
        assert_eq!(again.text, edited.text);
    }

    #[test]
    fn a_file_of_comments_only_keeps_them_first() {
        let text = "# Owned by security.\n# Review before editing.\n";
        let edited = approve(text, Path::new("g"), &manifest(), &input()).unwrap();
        assert!(edited.text.starts_with(text), "{}", edited.text);
    }

    #[test]
    fn approve_asks_for_what_the_manifest_leaves_open() {
        let path = Path::new("grants.toml");
        let no_host = ApproveInput {
            hosts: vec![],
            ..input()
        };
        let err = approve(GRANTS, path, &manifest(), &no_host).unwrap_err();
        assert!(err.contains("--host"), "{err}");
        let no_secret = ApproveInput {
            secrets: BTreeMap::new(),
            ..input()
        };
        let err = approve(GRANTS, path, &manifest(), &no_secret).unwrap_err();
        assert!(err.contains("--secret crm-token="), "{err}");
    }

    #[test]
    fn an_upgrade_asking_more_of_a_granted_rule_widens_it_in_place() {
        let path = Path::new("grants.toml");
        let approved = approve(GRANTS, path, &manifest(), &input()).unwrap().text;
        // The security team's note on the rule.
        let noted = approved.replace(
            "[[plugins.crm-source.http]]",
            "# read-only until the sync is reviewed\n[[plugins.crm-source.http]]",
        );
        assert_ne!(noted, approved);
        let upgrade =
            Manifest::parse(&MANIFEST.replace(r#"["GET"]"#, r#"["GET", "PUT"]"#), "m").unwrap();

        // Without --host, the error says which host it has now.
        let no_host = ApproveInput {
            hosts: vec![],
            ..input()
        };
        let err = approve(&noted, path, &upgrade, &no_host).unwrap_err();
        assert!(
            err.contains("names crm.example.com now: --host crm.example.com"),
            "{err}"
        );

        let edited = approve(&noted, path, &upgrade, &input()).unwrap();
        let grants = Grants::parse(&edited.text, path).unwrap();
        let http = &grants.get("crm-source").unwrap().http;
        assert_eq!(http.len(), 1, "one rule, widened:\n{}", edited.text);
        assert_eq!(http[0].methods, ["GET", "PUT"]);
        assert_eq!(http[0].host, "crm.example.com");
        assert!(
            edited
                .text
                .contains("# read-only until the sync is reviewed\n[[plugins.crm-source.http]]"),
            "{}",
            edited.text
        );
        assert!(
            edited.changes[0].contains("in place of {"),
            "{:?}",
            edited.changes
        );
    }

    #[test]
    fn a_bound_credential_named_again_otherwise_is_changed_in_place() {
        let path = Path::new("grants.toml");
        let approved = approve(GRANTS, path, &manifest(), &input()).unwrap().text;
        let moved = ApproveInput {
            secrets: BTreeMap::from([(
                "crm-token".to_string(),
                SecretRef::try_from("file:crm".to_string()).unwrap(),
            )]),
            injects: BTreeMap::from([(
                "crm-token".to_string(),
                Injection::Header("X-Api-Key".into()),
            )]),
            ..input()
        };
        let edited = approve(&approved, path, &manifest(), &moved).unwrap();
        assert_eq!(
            edited.changes[..2],
            [
                "~ credential crm-token: secret file:crm, in place of env:CRM_TOKEN",
                "~ credential crm-token: sent as header:X-Api-Key, in place of bearer",
            ],
            "{:?}",
            edited.changes
        );
        let grants = Grants::parse(&edited.text, path).unwrap();
        let binding = &grants.get("crm-source").unwrap().credentials["crm-token"];
        assert_eq!(binding.secret.to_string(), "file:crm");
        assert_eq!(binding.inject, Injection::Header("X-Api-Key".into()));
        assert_eq!(binding.hosts, ["crm.example.com"]);
        // The same again: nothing changes.
        let again = approve(&edited.text, path, &manifest(), &moved).unwrap();
        assert_eq!(again.text, edited.text);
    }

    #[test]
    fn a_host_named_for_a_request_granted_elsewhere_is_added_with_its_credential() {
        let path = Path::new("grants.toml");
        let approved = approve(GRANTS, path, &manifest(), &input()).unwrap().text;
        let second = ApproveInput {
            hosts: vec!["eu.crm.example.com".into()],
            ..input()
        };
        let edited = approve(&approved, path, &manifest(), &second).unwrap();
        assert_eq!(
            edited.changes[..2],
            [
                "+ http { scheme = \"https\", host = \"eu.crm.example.com\", methods = [\"GET\"], path-prefix = \"/v1/contacts\" }",
                "+ credential crm-token: also to eu.crm.example.com",
            ],
            "{:?}",
            edited.changes
        );
        let grants = Grants::parse(&edited.text, path).unwrap();
        let grant = grants.get("crm-source").unwrap();
        let hosts: Vec<&str> = grant.http.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["crm.example.com", "eu.crm.example.com"]);
        assert_eq!(
            grant.credentials["crm-token"].hosts,
            ["crm.example.com", "eu.crm.example.com"]
        );
        // Named again, it is there already: nothing changes.
        let again = approve(&edited.text, path, &manifest(), &second).unwrap();
        assert_eq!(again.text, edited.text);

        // An upgrade asking a new request: a host named goes to it alone,
        // not to the requests granted already.
        let upgrade = Manifest::parse(
            &format!(
                "{MANIFEST}[[capabilities.http]]\nscheme = \"*\"\nhost = \"*\"\nmethods = [\"POST\"]\npath-prefix = \"/v1/notes\"\n"
            ),
            "m",
        )
        .unwrap();
        let notes = ApproveInput {
            hosts: vec!["notes.example.com".into()],
            ..input()
        };
        let upgraded = approve(&edited.text, path, &upgrade, &notes).unwrap();
        let grants = Grants::parse(&upgraded.text, path).unwrap();
        let on_notes: Vec<&str> = grants
            .get("crm-source")
            .unwrap()
            .http
            .iter()
            .filter(|r| r.host == "notes.example.com")
            .map(|r| r.path_prefix.as_str())
            .collect();
        assert_eq!(on_notes, ["/v1/notes"], "{}", upgraded.text);

        // A host the upgrade's manifest names itself is granted, without
        // the credential.
        let vendor = Manifest::parse(
            &format!(
                "{MANIFEST}[[capabilities.http]]\nhost = \"telemetry.vendor.example\"\nmethods = [\"POST\"]\n"
            ),
            "m",
        )
        .unwrap();
        let upgraded = approve(&edited.text, path, &vendor, &input()).unwrap();
        let grants = Grants::parse(&upgraded.text, path).unwrap();
        let grant = grants.get("crm-source").unwrap();
        assert!(
            grant
                .http
                .iter()
                .any(|r| r.host == "telemetry.vendor.example")
        );
        assert_eq!(
            grant.credentials["crm-token"].hosts,
            ["crm.example.com", "eu.crm.example.com"],
            "{:?}",
            upgraded.changes
        );
    }

    #[test]
    fn revoke_takes_back_what_it_names_and_records_who() {
        let path = Path::new("grants.toml");
        let approved = approve(GRANTS, path, &manifest(), &input()).unwrap().text;
        let revoked = revoke(
            &approved,
            path,
            "crm-source",
            "http:crm.example.com",
            "bob",
            "t",
        )
        .unwrap();
        let grants = Grants::parse(&revoked.text, path).unwrap();
        let grant = grants.get("crm-source").unwrap();
        assert!(grant.http.is_empty());
        assert!(grant.storage.is_some(), "only http was revoked");
        assert_eq!(grant.revocation.as_ref().unwrap().by, "bob");
        assert!(revoked.text.contains("# Owned by security."));
        let all = revoke(&approved, path, "crm-source", "all", "bob", "t").unwrap();
        let grants = Grants::parse(&all.text, path).unwrap();
        let grant = grants.get("crm-source").unwrap();
        assert!(grant.http.is_empty() && grant.credentials.is_empty() && grant.storage.is_none());
        let err = revoke(&all.text, path, "crm-source", "storage", "bob", "t").unwrap_err();
        assert!(err.contains("nothing matching"), "{err}");
        let err = revoke(GRANTS, path, "nobody", "all", "bob", "t").unwrap_err();
        assert!(err.contains("grants nothing to nobody"), "{err}");
        let err = revoke(&approved, path, "crm-sourc", "all", "bob", "t").unwrap_err();
        assert!(
            err.ends_with("grants nothing to crm-sourc (did you mean \"crm-source\"?)"),
            "{err}"
        );
    }
}
