//! Plugin configurations checked against the config schema in the plugin's
//! manifest.
//!
//! The supported JSON Schema subset is what configuration needs: `type`,
//! `properties`, `required`, `additionalProperties` (a boolean), `enum`,
//! `minimum`, `maximum`, `minLength`, `maxLength` and `items`; other keywords
//! are ignored. A value whose schema says `secret = true` (a property at any
//! depth, or a list's items) must be given as a secret reference (`env:NAME`
//! or `file:KEY`), never in clear, and is never handed to the plugin: secrets
//! reach third-party APIs only through credentials the host injects.

use serde_json::{Map, Value};

use crate::secrets::SecretRef;

/// Every way `value` breaks `schema`, each naming the key (`at` is the path
/// of `value`, e.g. `plugins.crm-source.config`).
pub fn validate(schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut problems = Vec::new();
    check(schema, value, at, &mut problems);
    problems
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    // A secret anywhere: a property, a nested one, a list's items.
    if is_secret(schema) {
        let reference = value.as_str().map(|s| SecretRef::try_from(s.to_string()));
        if !matches!(reference, Some(Ok(_))) {
            problems.push(format!(
                "{at}: is a secret and must be a reference (\"env:NAME\" or \"file:KEY\"), never the value"
            ));
        }
        return;
    }
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let fits = actual == expected || (expected == "number" && actual == "integer");
        if !fits {
            problems.push(format!("{at}: expected {expected}, found {actual}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        problems.push(format!(
            "{at}: {value} is not one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            problems.push(format!("{at}: {n} is less than the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            problems.push(format!("{at}: {n} is more than the maximum {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            problems.push(format!("{at}: shorter than {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            problems.push(format!("{at}: longer than {max} characters"));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"), problems);
        }
    }
    if let Some(object) = value.as_object() {
        check_object(schema, object, at, problems);
    }
}

fn check_object(
    schema: &Map<String, Value>,
    object: &Map<String, Value>,
    at: &str,
    problems: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(key) = required.as_str()
            && !object.contains_key(key)
        {
            problems.push(format!("{at}.{key}: required but missing"));
        }
    }
    for (key, item) in object {
        let here = format!("{at}.{key}");
        match properties.and_then(|p| p.get(key)) {
            Some(property) => check(property, item, &here, problems),
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                problems.push(format!("{here}: not a setting of this plugin"));
            }
            None => {}
        }
    }
}

/// The keywords this subset understands, plus the annotations it allows.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "items",
    "secret",
    "description",
    "title",
    "default",
    "examples",
];

const TYPES: &[&str] = &[
    "null", "boolean", "integer", "number", "string", "array", "object",
];

/// Every way a manifest's config schema is not a schema this host can check
/// configurations against, each naming its place (`at`, e.g.
/// `config-schema`). The whole schema must describe an object.
pub fn lint(schema: &Value, at: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        problems.push(format!(
            "{at}.type: a configuration is a JSON object, so the schema must say type = \"object\""
        ));
    }
    lint_node(schema, at, &mut problems);
    problems
}

fn lint_node(schema: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        problems.push(format!("{at}: a schema must be a table"));
        return;
    };
    for key in node.keys().filter(|k| !KEYWORDS.contains(&k.as_str())) {
        problems.push(format!(
            "{at}.{key}: not a keyword this host understands ({})",
            KEYWORDS.join(", ")
        ));
    }
    if let Some(kind) = node.get("type")
        && !kind.as_str().is_some_and(|t| TYPES.contains(&t))
    {
        problems.push(format!(
            "{at}.type: {kind} is not one of {}",
            TYPES.join(", ")
        ));
    }
    let properties = node.get("properties");
    match properties {
        Some(Value::Object(properties)) => {
            for (name, property) in properties {
                lint_node(property, &format!("{at}.properties.{name}"), problems);
            }
        }
        Some(_) => problems.push(format!("{at}.properties: must be a table")),
        None => {}
    }
    match node.get("required") {
        Some(Value::Array(names)) => {
            for name in names {
                let known = name
                    .as_str()
                    .is_some_and(|n| properties.and_then(|p| p.get(n)).is_some());
                if !known {
                    problems.push(format!(
                        "{at}.required: {name} is not one of the schema's properties"
                    ));
                }
            }
        }
        Some(_) => problems.push(format!("{at}.required: must be a list of property names")),
        None => {}
    }
    let expect = |key: &str, fits: fn(&Value) -> bool, what: &str, problems: &mut Vec<String>| {
        if let Some(value) = node.get(key)
            && !fits(value)
        {
            problems.push(format!("{at}.{key}: must be {what}"));
        }
    };
    expect(
        "additionalProperties",
        Value::is_boolean,
        "true or false",
        problems,
    );
    expect("secret", Value::is_boolean, "true or false", problems);
    expect("enum", Value::is_array, "a list", problems);
    expect("minimum", Value::is_number, "a number", problems);
    expect("maximum", Value::is_number, "a number", problems);
    expect("minLength", Value::is_u64, "a whole number", problems);
    expect("maxLength", Value::is_u64, "a whole number", problems);
    if let Some(items) = node.get("items") {
        lint_node(items, &format!("{at}.items"), problems);
    }
}

fn is_secret(property: &Value) -> bool {
    property.get("secret") == Some(&Value::Bool(true))
}

/// Each way the configurations `config` gives `plugins` break their config
/// schemas, as `causeway check` and the running host say them: their own
/// (`[plugins.NAME.config]`) and, for each pipeline stage with a `config`
/// of its own, that laid over theirs, as the stage gets it. Each with the
/// line of the config file (whose text is `text`) it is about, if known,
/// and the message, naming the key and the plugin's version.
pub fn plugin_config_problems<'a>(
    config: &crate::config::Config,
    text: &str,
    plugins: impl IntoIterator<Item = &'a crate::plugin::PluginInfo>,
) -> Vec<(Option<usize>, String)> {
    let plugins: Vec<&crate::plugin::PluginInfo> = plugins.into_iter().collect();
    let mut problems = Vec::new();
    let mut check = |info: &crate::plugin::PluginInfo,
                     value: &Value,
                     at: &str,
                     line: &dyn Fn(&str) -> Option<usize>| {
        let Some(schema) = &info.manifest.config_schema else {
            return;
        };
        for problem in validate(schema, value, at) {
            problems.push((
                line(&problem),
                format!("{problem} (per the config schema of {})", info.label()),
            ));
        }
    };
    for info in &plugins {
        let table = format!("plugins.{}.config", info.name);
        // At the line of the key it is about (a missing one: the table's).
        let line = |problem: &str| {
            crate::config::line_named_by(text, &table, problem)
                .or_else(|| crate::config::section_line(text, &format!("plugins.{}", info.name)))
        };
        check(info, &config.plugin_config(&info.name), &table, &line);
    }
    for (name, pipeline) in &config.pipelines {
        let table = format!("pipelines.{name}");
        let stages = std::iter::once((
            "source",
            None,
            &pipeline.source.plugin,
            pipeline.source.config.as_ref(),
        ))
        .chain(
            pipeline
                .transforms
                .iter()
                .enumerate()
                .map(|(i, t)| ("transforms", Some(i), &t.plugin, t.config.as_ref())),
        )
        .chain(
            pipeline
                .sinks
                .iter()
                .enumerate()
                .map(|(i, k)| ("sinks", Some(i), &k.plugin, k.config.as_ref())),
        );
        for (key, index, plugin, own) in stages {
            let (Some(own), Some(info)) = (own, plugins.iter().find(|i| i.name == *plugin)) else {
                continue;
            };
            let at = index.map_or_else(|| key.to_string(), |i| format!("{key}[{i}]"));
            // At the line of its stage in the pipeline's table.
            let line = |_: &str| crate::config::key_line(text, &table, key, index.unwrap_or(0));
            check(
                info,
                &config.stage_config(plugin, Some(own)),
                &format!("{table}.{at}.config"),
                &line,
            );
        }
    }
    problems
}

/// The configuration as the plugin sees it: without its secret fields, at
/// any depth (a list of secrets goes whole). What the operator wrote there,
/// a reference or, against `causeway check`'s error, a value, stays out.
pub fn without_secrets(schema: Option<&Value>, config: &Value) -> Value {
    match schema {
        Some(schema) => visible(schema, config).unwrap_or_else(|| Value::Object(Map::new())),
        None => config.clone(),
    }
}

/// `value` under `schema` without its secrets; `None` if it is one.
fn visible(schema: &Value, value: &Value) -> Option<Value> {
    if is_secret(schema) {
        return None;
    }
    match value {
        Value::Object(object) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            Some(Value::Object(
                object
                    .iter()
                    .filter_map(|(key, item)| match properties.and_then(|p| p.get(key)) {
                        Some(property) => visible(property, item).map(|v| (key.clone(), v)),
                        None => Some((key.clone(), item.clone())),
                    })
                    .collect(),
            ))
        }
        Value::Array(items) => match schema.get("items") {
            Some(each) => items
                .iter()
                .map(|item| visible(each, item))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            None => Some(value.clone()),
        },
        _ => Some(value.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["base_url"],
            "additionalProperties": false,
            "properties": {
                "base_url": {"type": "string", "minLength": 8},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 1000},
                "mode": {"enum": ["full", "incremental"]},
                "webhook_secret": {"type": "string", "secret": true}
            }
        })
    }

    #[test]
    fn a_schema_in_the_supported_subset_lints_clean_and_mistakes_are_named() {
        assert_eq!(lint(&schema(), "config-schema"), Vec::<String>::new());
        let bad = json!({
            "type": "object",
            "required": ["base_url", "missing"],
            "properties": {
                "base_url": {"type": "url"},
                "size": {"type": "integer", "minimum": "1", "pattern": "^x"}
            }
        });
        let problems = lint(&bad, "config-schema");
        for expected in [
            "config-schema.required: \"missing\" is not one of the schema's properties",
            "config-schema.properties.base_url.type: \"url\" is not one of",
            "config-schema.properties.size.minimum: must be a number",
            "config-schema.properties.size.pattern: not a keyword",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(lint(&json!({"type": "string"}), "s")[0].contains("must say type = \"object\""));
    }

    #[test]
    fn a_valid_config_has_no_problems() {
        let config = json!({"base_url": "https://crm.example", "page_size": 10, "webhook_secret": "env:HOOK"});
        assert!(validate(&schema(), &config, "c").is_empty());
    }

    #[test]
    fn each_problem_names_its_key() {
        let config = json!({"page_size": 0, "mode": "sometimes", "colour": 1, "base_url": 5});
        let problems = validate(&schema(), &config, "plugins.crm.config");
        for expected in [
            "plugins.crm.config.page_size: 0 is less than the minimum 1",
            "plugins.crm.config.mode: \"sometimes\" is not one of",
            "plugins.crm.config.colour: not a setting of this plugin",
            "plugins.crm.config.base_url: expected string, found integer",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn a_secret_in_clear_is_refused_and_never_handed_to_the_plugin() {
        let config = json!({"base_url": "https://crm.example", "webhook_secret": "hunter2hunter2"});
        let problems = validate(&schema(), &config, "c");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("must be a reference"));
        assert!(!problems[0].contains("hunter2"));
        let seen = without_secrets(Some(&schema()), &config);
        assert_eq!(seen, json!({"base_url": "https://crm.example"}));
    }

    #[test]
    fn a_secret_at_any_depth_is_refused_in_clear_and_kept_from_the_plugin() {
        let schema = json!({
            "type": "object",
            "properties": {
                "auth": {
                    "type": "object",
                    "properties": {"user": {"type": "string"}, "password": {"type": "string", "secret": true}}
                },
                "keys": {"type": "array", "items": {"type": "string", "secret": true}},
                "hosts": {"type": "array", "items": {"type": "object", "properties": {"token": {"secret": true}}}}
            }
        });
        let config = json!({
            "auth": {"user": "me", "password": "pa55word"},
            "keys": ["k3y", "env:KEY"],
            "hosts": [{"name": "a", "token": "t0ken"}],
            "other": 1
        });
        let problems = validate(&schema, &config, "c");
        assert_eq!(
            problems,
            [
                "c.auth.password: is a secret and must be a reference (\"env:NAME\" or \"file:KEY\"), never the value",
                "c.hosts[0].token: is a secret and must be a reference (\"env:NAME\" or \"file:KEY\"), never the value",
                "c.keys[0]: is a secret and must be a reference (\"env:NAME\" or \"file:KEY\"), never the value",
            ]
        );
        assert_eq!(
            without_secrets(Some(&schema), &config),
            json!({"auth": {"user": "me"}, "hosts": [{"name": "a"}], "other": 1})
        );
    }
}
