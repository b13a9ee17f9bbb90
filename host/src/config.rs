//! `causeway.toml`, the operator's file: where things live, default limits,
//! and each plugin's configuration. Every setting has a default, so with no
//! file at all the host runs on embedded defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::engine::EngineSettings;
use crate::pipeline::PipelineConfig;
use crate::sandbox::Limits;

/// The config file looked for in the working directory when none is named.
pub const DEFAULT_FILE: &str = "causeway.toml";
/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "causeway-data";
/// The default plugins folder.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins";
/// The default settle window for files written in place.
pub const DEFAULT_RELOAD_SETTLE: Duration = Duration::from_millis(300);
/// The grants file's default name, beside `causeway.toml`.
pub const DEFAULT_GRANTS_FILE: &str = "grants.toml";

/// A problem in a TOML file, naming the file, the line and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct FileError {
    /// The file (or `embedded`, for a manifest section).
    pub file: String,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl FileError {
    /// An error at `line` (1-based) of `file`.
    pub fn at(
        file: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> FileError {
        FileError {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

/// Parses TOML into `T`, rejecting unknown keys and ill-typed values with the
/// file, line and key.
pub fn parse_toml<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim();
        // A value's error (`invalid type: ...`) does not say whose it is;
        // one that names its key does so first, or in backticks (a value
        // merely containing the key's word, `"crm-source"` for `source`,
        // does not).
        let message = match e.span().and_then(|span| key_of_value_at(text, span.start)) {
            Some(key) if !message.starts_with(key) && !message.contains(&format!("`{key}`")) => {
                format!("{key}: {message}")
            }
            _ => message.to_string(),
        };
        let message = match did_you_mean(&message) {
            Some(known) => format!("{message} (did you mean `{known}`?)"),
            None => message,
        };
        FileError::at(
            file,
            e.span().map(|span| line_of(text, span.start)),
            message,
        )
    })
}

/// For serde's "unknown field `X`, expected one of `a`, `b`" (or "unknown
/// variant"): the known one `X` is most likely a typo of (`skip_unchanged` for
/// `skip-unchanged`, `lisen` for `listen`), if one is close enough.
fn did_you_mean(message: &str) -> Option<&str> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (unknown, expected) = rest.split_once('`')?;
    closest(unknown, expected.split('`').skip(1).step_by(2))
}

/// The one of `known` that `unknown` is most likely a typo of: at most two
/// edits away (`_` taken for `-`, case ignored), and no more than a third
/// of its length.
pub fn closest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let normal = |s: &str| s.to_lowercase().replace('_', "-");
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(&normal(unknown), &normal(k)), k))
        .filter(|(n, k)| *n <= 2 && *n * 3 <= k.chars().count())
        .min_by_key(|(n, _)| *n)
        .map(|(_, k)| k)
}

/// The key whose value starts at byte `offset` in `text`: the last `key =`
/// on its line before it (inline tables included). None when `offset` is
/// a key itself, or not after a `key =`.
fn key_of_value_at(text: &str, offset: usize) -> Option<&str> {
    // `get`: a span off a character's boundary gives no key, not a panic.
    let (head, tail) = (text.get(..offset)?, text.get(offset..)?);
    let before = &head[head.rfind('\n').map_or(0, |i| i + 1)..];
    let after = tail.split('\n').next().unwrap_or_default();
    let is_key_char = |c: char| c.is_alphanumeric() || "-_.\"".contains(c);
    // A key itself (an unknown field's span) is followed by its `=`.
    let word = after.trim_start_matches(is_key_char);
    if word.len() < after.len() && word.trim_start().starts_with('=') {
        return None;
    }
    let (key, _) = before.rsplit_once('=')?;
    let key = key.rsplit(['{', ',']).next()?.trim();
    (!key.is_empty() && key.chars().all(is_key_char)).then_some(key)
}

/// The 1-based line of the table `key` (e.g. `pipelines.contacts`) in a
/// TOML `text`: its `[key]` header, or the first header of a table inside
/// it (`[key.retry]`). None for a table written inline. A name written
/// quoted (`[pipelines."a b"]`, a name the file then refuses) is found too.
pub fn section_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let unquoted;
            // Only a header is unquoted: `every = "3s"` lines are many.
            let line = if line.starts_with('[') && line.contains('"') {
                unquoted = line.replace('"', "");
                unquoted.as_str()
            } else {
                line
            };
            line.strip_prefix('[')
                .and_then(|rest| rest.strip_prefix('[').or(Some(rest)))
                .and_then(|rest| rest.strip_prefix(key))
                .is_some_and(|rest| rest.starts_with(']') || rest.starts_with('.'))
        })
        .map(|index| index + 1)
}

/// The 1-based lines of the headers of table `key` itself in a TOML
/// `text`, in order: `[key]`, or each `[[key]]` of an array of tables.
pub fn header_lines<'a>(text: &'a str, key: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.lines().enumerate().filter_map(move |(index, line)| {
        let line = line.trim();
        let named = line
            .strip_prefix("[[")
            .and_then(|rest| rest.strip_suffix("]]"))
            .or_else(|| {
                line.strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
            });
        (named.map(str::trim) == Some(key)).then_some(index + 1)
    })
}

/// The 1-based line where `key` of table `table` is written in a TOML
/// `text`: the `n`th `[[table.key]]` (or the `[table.key]` header), else
/// the `key = …` line under the table's own header; else the table's line
/// ([`section_line`]). So a finding about a pipeline's `sinks[1]` names
/// the line of its sinks, not of the pipeline.
pub fn key_line(text: &str, table: &str, key: &str, n: usize) -> Option<usize> {
    let own = format!("{table}.{key}");
    let headers: Vec<usize> = header_lines(text, &own).collect();
    if let Some(line) = headers.get(n).or(headers.first()) {
        return Some(*line);
    }
    let written = header_lines(text, table).next().and_then(|header| {
        text.lines()
            .enumerate()
            .skip(header)
            .map(|(index, line)| (index + 1, line.trim_start()))
            .take_while(|(_, line)| !line.starts_with('['))
            .find(|(_, line)| {
                line.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map(|(line, _)| line)
    });
    written.or_else(|| section_line(text, table))
}

/// The line of the key of `table` that `message` is about, when it starts
/// by naming one (`TABLE.KEY…`): [`key_line`].
pub fn line_named_by(text: &str, table: &str, message: &str) -> Option<usize> {
    let key = message
        .strip_prefix(&format!("{table}."))?
        .split(['.', ':', ' ', '['])
        .next()?;
    key_line(text, table, key, 0)
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    // Bytes: an offset off a character's boundary still has a line.
    let bytes = &text.as_bytes()[..offset.min(text.len())];
    bytes.iter().filter(|b| **b == b'\n').count() + 1
}

/// Reads a file for [`parse_toml`], naming it in the error.
pub fn read_file(path: &Path) -> Result<String, FileError> {
    let at = |message: String| FileError::at(path.display().to_string(), None, message);
    let bytes = crate::files::read_regular(path, MAX_TEXT_FILE_BYTES).map_err(|e| at(unread(e)))?;
    String::from_utf8(bytes).map_err(|e| at(format!("is not UTF-8 text: {e}")))
}

/// The most a file the operator points the host at (causeway.toml,
/// grants.toml, the secrets file, `ca-file`) may hold: read whole, and more
/// than any such file needs.
pub const MAX_TEXT_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why such a file was not read, as its error says it.
pub(crate) fn unread(e: crate::files::Unread) -> String {
    match e {
        crate::files::Unread::Io(e) => format!("cannot read: {e}"),
        crate::files::Unread::Kind(kind) => {
            format!("cannot read: it is not a regular file but {kind}")
        }
        crate::files::Unread::TooLarge(size) => format!(
            "cannot read: it is {size} bytes, over the {} MiB such a file may be",
            MAX_TEXT_FILE_BYTES / (1024 * 1024)
        ),
    }
}

/// A duration written as text: `500ms`, `30s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextDuration(pub Duration);

impl<'de> Deserialize<'de> for TextDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(TextDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration like \"30s\" or \"500ms\": {e}"
                ))
            })
    }
}

/// Why a `fuel` limit on a host that does not count fuel is refused: it
/// would go unenforced.
pub const FUEL_UNCOUNTED: &str =
    "the engine counts fuel only with [engine] fuel = true in causeway.toml (a restart takes it)";

/// Limits as written in a file; absent fields keep the defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { memory-mb = 32, call-timeout = \"10s\" }"
)]
pub struct LimitsConfig {
    /// Linear memory per instance, in MiB.
    #[serde(default, deserialize_with = "range::memory_mb")]
    pub memory_mb: Option<u32>,
    /// Wall-clock time per call.
    #[serde(default, deserialize_with = "range::call_timeout")]
    pub call_timeout: Option<TextDuration>,
    /// Elements one table may grow to.
    #[serde(default, deserialize_with = "range::table_elements")]
    pub table_elements: Option<usize>,
    /// Core instances one call may create.
    #[serde(default, deserialize_with = "range::instances")]
    pub instances: Option<usize>,
    /// Host resources (WASI streams, pollables, HTTP handles) one call may hold.
    #[serde(default, deserialize_with = "range::resources")]
    pub resources: Option<usize>,
    /// Fuel one call may burn, on a host whose `[engine]` counts it.
    #[serde(default, deserialize_with = "range::fuel")]
    pub fuel: Option<u64>,
}

/// `path` as written in a file in `base`: absolute as it is, else joined
/// to `base` with each `..` taken back where the folder it leaves is a
/// real one, so messages say `causeway-data/audit.key`, not
/// `causeway-data/demo/../audit.key`. Out of a symbolic link `..` leads
/// to the target's parent, which only the file system knows: kept there.
fn beside(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    // Beside a file named bare (`--config-file c.toml`), `../plugins` is
    // shown so, not as `./../plugins`; a path into the folder keeps its `./`.
    let here = base == Path::new(".");
    let mut out = if here {
        PathBuf::new()
    } else {
        base.to_path_buf()
    };
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                let real_folder =
                    out.file_name().is_some() && out.symlink_metadata().is_ok_and(|m| m.is_dir());
                if real_folder {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    match out.components().next() {
        None => PathBuf::from("."),
        Some(std::path::Component::Normal(_)) if here => Path::new(".").join(out),
        _ => out,
    }
}

/// The values a limit may take. A limit no plugin could run under (zero
/// memory, a call with no time) or one the engine cannot give (more than
/// wasm32's 4 GiB, more than a pool slot holds) is refused where it is
/// written, naming the key, rather than surfacing later as every call
/// failing.
pub(crate) mod range {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    use serde::de::{Deserialize, Deserializer, Error};

    use super::TextDuration;

    /// A 32-bit memory's whole address space.
    pub const MEMORY_MB: RangeInclusive<u32> = 1..=4096;
    /// Long enough for any one call: one running for a day is stuck, and
    /// holds an instance slot all that time.
    pub const CALL_TIMEOUT: RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(24 * 60 * 60);

    /// A number within `range`, or an error naming `key`, the range and why.
    pub(crate) fn within<'de, D, T>(
        d: D,
        key: &str,
        range: RangeInclusive<T>,
        why: &str,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + PartialOrd + std::fmt::Display,
    {
        let value = T::deserialize(d)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(D::Error::custom(format!(
                "{key} = {value}: must be from {} to {} ({why})",
                range.start(),
                range.end()
            )))
        }
    }

    /// A count or size of at least one, or an error naming `key` and why
    /// none will not do. Zero is refused rather than read: many tools take
    /// it for "no limit", and here it would be a limit nothing fits in.
    pub(crate) fn at_least_one<'de, D, T>(d: D, key: &str, why: &str) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + PartialEq + Default,
    {
        let value = T::deserialize(d)?;
        if value == T::default() {
            return Err(D::Error::custom(format!(
                "{key} = 0: must be at least 1 ({why}; 0 is not \"no limit\")"
            )));
        }
        Ok(value)
    }

    /// `cache-max-mb`: at least one.
    pub fn cache_max_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        at_least_one(
            d,
            "cache-max-mb",
            "with no room the cache keeps one compiled plugin, and a restart compiles the rest again",
        )
        .map(Some)
    }

    /// `memory-mb`: within [`MEMORY_MB`].
    pub fn memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        within(
            d,
            "memory-mb",
            MEMORY_MB,
            "a plugin's memory is 32-bit: 4 GiB at most",
        )
        .map(Some)
    }

    /// How long a plugin file written in place must stay unchanged: past
    /// ten minutes it is more likely "300m" for "300ms" than a wish, and
    /// a file copied in would wait hours to load.
    pub const RELOAD_SETTLE: RangeInclusive<Duration> =
        Duration::ZERO..=Duration::from_secs(10 * 60);

    /// `reload-settle`: within [`RELOAD_SETTLE`].
    pub fn reload_settle<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<TextDuration>, D::Error> {
        within_duration(d, "reload-settle", RELOAD_SETTLE).map(|t| Some(TextDuration(t)))
    }

    /// The shortest `[audit] retention`: the host prunes by it every hour,
    /// and shorter is more likely "90m" (minutes) for "90M" (months) than
    /// a wish to keep what plugins did for less than a day.
    pub const MIN_AUDIT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

    /// `[audit] retention`: at least [`MIN_AUDIT_RETENTION`].
    pub fn audit_retention<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<TextDuration>, D::Error> {
        let retention = TextDuration::deserialize(d)?;
        no_shorter_than(
            "retention",
            retention.0,
            (MIN_AUDIT_RETENTION, "a day"),
            "the audit log would be pruned of it every hour (\"90m\" is ninety minutes, \
             \"90M\" ninety months); `causeway audit prune --older-than` prunes once",
        )
        .map_err(D::Error::custom)?;
        Ok(Some(retention))
    }

    /// `call-timeout`: within [`CALL_TIMEOUT`].
    pub fn call_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TextDuration>, D::Error> {
        within_duration(d, "call-timeout", CALL_TIMEOUT).map(|t| Some(TextDuration(t)))
    }

    /// A duration written as text (`"30s"`) within `range`, or an error
    /// naming `key` and the range.
    pub(crate) fn within_duration<'de, D: Deserializer<'de>>(
        d: D,
        key: &str,
        range: RangeInclusive<Duration>,
    ) -> Result<Duration, D::Error> {
        let TextDuration(value) = TextDuration::deserialize(d)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(D::Error::custom(format!(
                "{key} = {:?}: must be from {} to {}",
                humantime::format_duration(value).to_string(),
                duration_text(*range.start()),
                duration_text(*range.end())
            )))
        }
    }

    /// A bound as a message writes it: in hours past an hour (humantime
    /// writes 24h as "1day").
    pub(crate) fn duration_text(d: Duration) -> String {
        match d.as_secs() {
            s if s > 60 * 60 && s % (60 * 60) == 0 && d.subsec_nanos() == 0 => {
                format!("{}h", s / (60 * 60))
            }
            _ => humantime::format_duration(d).to_string(),
        }
    }

    /// `{key} = "VALUE" is shorter than LEAST: WHY` when `value` is under
    /// `least` (written `least_text`): a duration whose least is more
    /// likely a slip of its unit ("1m" for "1M") than a wish.
    pub(crate) fn no_shorter_than(
        key: &str,
        value: Duration,
        (least, least_text): (Duration, &str),
        why: &str,
    ) -> Result<(), String> {
        if value >= least {
            return Ok(());
        }
        Err(format!(
            "{key} = \"{}\" is shorter than {least_text}: {why}",
            humantime::format_duration(value)
        ))
    }

    /// `table-elements`: at least one, at most a pool slot's tables hold.
    pub fn table_elements<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        let most = crate::engine::MAX_TABLE_ELEMENTS;
        within(
            d,
            "table-elements",
            1..=most,
            "a pool slot's tables hold at most that many",
        )
        .map(Some)
    }

    /// `instances`: at least one, at most a pool slot holds.
    pub fn instances<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        let most = crate::engine::MAX_CORE_INSTANCES;
        within(
            d,
            "instances",
            1..=most,
            "a pool slot holds at most that many core instances",
        )
        .map(Some)
    }

    /// `fuel`: at least one unit.
    pub fn fuel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        at_least_one(d, "fuel", "a call with none could not start").map(Some)
    }

    /// `resources`: at least one.
    pub fn resources<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        at_least_one(
            d,
            "resources",
            "a call holding none could not read its input",
        )
        .map(Some)
    }
}

impl LimitsConfig {
    /// `base` with this file's overrides applied.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            memory_bytes: self
                .memory_mb
                .map(|mb| mb as usize * 1024 * 1024)
                .unwrap_or(base.memory_bytes),
            call_timeout: self.call_timeout.map(|d| d.0).unwrap_or(base.call_timeout),
            table_elements: self.table_elements.unwrap_or(base.table_elements),
            instances: self.instances.unwrap_or(base.instances),
            resources: self.resources.unwrap_or(base.resources),
            fuel: self.fuel.or(base.fuel),
        }
    }
}

/// One plugin's section of `causeway.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as [plugins.NAME] holding the plugin's config = { ... }"
)]
pub struct PluginConfig {
    /// The configuration handed to the plugin (checked against its schema).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `[audit]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { retention = \"365days\" }"
)]
struct AuditFile {
    #[serde(default, deserialize_with = "range::audit_retention")]
    retention: Option<TextDuration>,
    key_file: Option<PathBuf>,
    head_file: Option<PathBuf>,
}

/// Where the audit chain's key and head live, and how long rows are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Rows older than this are pruned (hourly, and at start); `None`
    /// keeps them all.
    pub retention: Option<Duration>,
    /// The HMAC key chaining the rows (created on first use).
    pub key_file: PathBuf,
    /// The chain's head and base, kept outside the database.
    pub head_file: PathBuf,
}

impl AuditConfig {
    /// Opens the chain these files describe.
    pub fn chain(&self) -> Result<crate::audit::Chain, String> {
        crate::audit::Chain::open(&self.key_file, &self.head_file)
    }
}

/// `[tls]`: a second listener, serving the webhook paths and `/healthz`
/// over TLS (webhook senders on the internet require HTTPS), and nothing of
/// the operator API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table such as { listen = \"0.0.0.0:8443\", cert = \"fullchain.pem\", key = \"privkey.pem\" }"
)]
pub struct TlsListen {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The certificate chain, PEM, the server's own first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

/// Where the host listens when `listen` says nothing.
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8700)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default)]
    audit: AuditFile,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "range::cache_max_mb")]
    cache_max_mb: Option<u64>,
    plugins_dir: Option<PathBuf>,
    grants: Option<PathBuf>,
    secrets_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    proxy: Option<crate::caps::http::ProxyConfig>,
    tls: Option<TlsListen>,
    #[serde(default, deserialize_with = "range::reload_settle")]
    reload_settle: Option<TextDuration>,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    engine: EngineSettings,
    #[serde(default)]
    plugins: BTreeMap<String, PluginConfig>,
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineConfig>,
}

/// The operator's configuration, with every default applied and every path
/// resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The config file it came from; `None` on embedded defaults.
    pub file: Option<PathBuf>,
    /// Where the status API and webhooks listen.
    pub listen: SocketAddr,
    /// The data directory: the database and the host's own files.
    pub data_dir: PathBuf,
    /// Where compiled plugins are kept (default `DATA_DIR/cache`); hosts
    /// sharing one compile each plugin once.
    pub cache_dir: PathBuf,
    /// The most the cache may hold; the least recently used artifacts go.
    pub cache_max_bytes: u64,
    /// The plugins folder.
    pub plugins_dir: PathBuf,
    /// The grants file (it need not exist: then nothing is granted).
    pub grants_file: PathBuf,
    /// The secrets file, if any.
    pub secrets_file: Option<PathBuf>,
    /// PEM certificates trusted for outbound HTTPS beside the bundled
    /// (Mozilla's) roots: for APIs behind a private certificate authority.
    pub ca_file: Option<PathBuf>,
    /// The proxy plugins' requests go through (`[proxy]`), for networks
    /// whose only way out is one.
    pub proxy: Option<crate::caps::http::ProxyConfig>,
    /// A listener serving the webhook paths over TLS (`[tls]`).
    pub tls: Option<TlsListen>,
    /// How long a file written in place must stay unchanged before the
    /// running host loads it (an atomic rename is loaded at once).
    pub reload_settle: Duration,
    /// Default per-call limits.
    pub limits: Limits,
    /// How plugin instances are allocated (`[engine]`).
    pub engine: EngineSettings,
    /// The audit trail's files and retention.
    pub audit: AuditConfig,
    /// Per-plugin sections, by plugin name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The pipelines, by name.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// What the command line set over the file.
    pub command_line: CommandLine,
}

/// The fixed settings the command line gave over the file's (`--listen`,
/// `--plugins`): a reload keeps them, and an edit of the file's own value,
/// which they hide, is no news.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `--listen` was given.
    pub listen: bool,
    /// `--plugins` (or `CAUSEWAY_PLUGINS`) was given.
    pub plugins_dir: bool,
}

impl Config {
    /// The command line's `--listen` over the file's.
    pub fn listen_on(&mut self, listen: SocketAddr) {
        self.listen = listen;
        self.command_line.listen = true;
    }

    /// The command line's `--plugins` over the file's.
    pub fn plugins_in(&mut self, dir: PathBuf) {
        self.plugins_dir = dir;
        self.command_line.plugins_dir = true;
    }

    /// Loads `file`, or `./causeway.toml` if it exists, or the embedded defaults.
    pub fn load(file: Option<&Path>) -> Result<Config, FileError> {
        let file = match file {
            Some(file) => Some(file.to_path_buf()),
            // There in any form: one that cannot be read is an error, not
            // a quiet fall back to the defaults.
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|f| f.symlink_metadata().is_ok()),
        };
        let Some(file) = file else {
            return Ok(Config::from_file(
                ConfigFile::default(),
                None,
                Path::new("."),
            ));
        };
        let text = read_file(&file)?;
        let name = file.display().to_string();
        let parsed: ConfigFile = parse_toml(&text, &name)?;
        for (pipeline, config) in &parsed.pipelines {
            let line = section_line(&text, &format!("pipelines.{pipeline}"));
            if !crate::manifest::is_plugin_name(pipeline) {
                return Err(FileError::at(
                    name,
                    line,
                    format!(
                        "pipelines.{pipeline:?}: a pipeline name is lower-case letters, digits and '-'"
                    ),
                ));
            }
            let table = format!("pipelines.{pipeline}");
            config.validate(&table).map_err(|message| {
                // At the line of the key it is about, when it is about one.
                let line = line_named_by(&text, &table, &message).or(line);
                FileError::at(name.clone(), line, message)
            })?;
            // Pipelines sharing a path get each delivery, verified once: by
            // the same scheme and secret.
            if let Some(webhook) = &config.webhook
                && let Some((other, _)) = parsed.pipelines.iter().find(|(other, c)| {
                    *other < pipeline
                        && c.webhook
                            .as_ref()
                            .is_some_and(|w| w.path == webhook.path && w != webhook)
                })
            {
                return Err(FileError::at(
                    name,
                    line,
                    format!(
                        "pipelines.{pipeline}.webhook.path {:?} is also the path of pipelines.{other}, whose webhook differs: pipelines sharing a path each get every delivery, verified once, so give them the same webhook table, every key of it",
                        webhook.path
                    ),
                ));
            }
        }
        if let Some(units) = parsed.limits.fuel
            && !parsed.engine.fuel
        {
            return Err(FileError::at(
                name,
                key_line(&text, "limits", "fuel", 0),
                format!("limits.fuel = {units}: {FUEL_UNCOUNTED}"),
            ));
        }
        // Two listeners on one port: the second could not bind, and the
        // host would not start.
        let listen = parsed.listen.unwrap_or_else(default_listen);
        if let Some(tls) = &parsed.tls
            && tls.listen.port() != 0
            && tls.listen.port() == listen.port()
            && (tls.listen.ip() == listen.ip()
                || tls.listen.ip().is_unspecified()
                || listen.ip().is_unspecified())
        {
            return Err(FileError::at(
                name,
                key_line(&text, "tls", "listen", 0),
                format!(
                    "tls.listen = \"{}\" takes the port of listen = \"{listen}\": give the TLS listener a port of its own",
                    tls.listen
                ),
            ));
        }
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(Config::from_file(parsed, Some(file.clone()), base))
    }

    fn from_file(parsed: ConfigFile, file: Option<PathBuf>, base: &Path) -> Config {
        let resolve = |p: PathBuf| beside(base, p);
        let data_dir = resolve(parsed.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        let audit = AuditConfig {
            retention: parsed.audit.retention.map(|d| d.0),
            key_file: parsed
                .audit
                .key_file
                .map(resolve)
                .unwrap_or_else(|| data_dir.join("audit.key")),
            head_file: parsed
                .audit
                .head_file
                .map(resolve)
                .unwrap_or_else(|| data_dir.join("audit.head")),
        };
        let cache_dir = parsed
            .cache_dir
            .map(resolve)
            .unwrap_or_else(|| data_dir.join("cache"));
        Config {
            file,
            cache_dir,
            cache_max_bytes: parsed
                .cache_max_mb
                .map(|mb| mb.saturating_mul(1024 * 1024))
                .unwrap_or(crate::engine::cache::DEFAULT_MAX_BYTES),
            listen: parsed.listen.unwrap_or_else(default_listen),
            data_dir,
            plugins_dir: resolve(
                parsed
                    .plugins_dir
                    .unwrap_or_else(|| DEFAULT_PLUGINS_DIR.into()),
            ),
            grants_file: resolve(parsed.grants.unwrap_or_else(|| DEFAULT_GRANTS_FILE.into())),
            secrets_file: parsed.secrets_file.map(resolve),
            ca_file: parsed.ca_file.map(resolve),
            proxy: parsed.proxy,
            tls: parsed.tls.map(|tls| TlsListen {
                listen: tls.listen,
                cert: resolve(tls.cert),
                key: resolve(tls.key),
            }),
            reload_settle: parsed
                .reload_settle
                .map(|d| d.0)
                .unwrap_or(DEFAULT_RELOAD_SETTLE),
            limits: parsed.limits.apply(Limits::default()),
            engine: parsed.engine,
            audit,
            plugins: parsed.plugins,
            pipelines: parsed.pipelines,
            command_line: CommandLine::default(),
        }
    }

    /// The configuration a plugin is handed: its `config` table as JSON.
    pub fn plugin_config(&self, plugin: &str) -> serde_json::Value {
        serde_json::Value::Object(
            self.plugins
                .get(plugin)
                .map(|p| p.config.clone())
                .unwrap_or_default(),
        )
    }

    /// The configuration `plugin` gets in a stage: its
    /// `[plugins.NAME.config]`, with each key the stage's own `config`
    /// names replaced by the stage's value. So a pipeline writing to a
    /// second list of the same account names the list alone, not the
    /// account's URL and every other key again.
    pub fn stage_config(
        &self,
        plugin: &str,
        stage: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> serde_json::Value {
        let mut config = self.plugin_config(plugin);
        if let (Some(config), Some(stage)) = (config.as_object_mut(), stage) {
            config.extend(stage.clone());
        }
        config
    }

    /// The database file.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join("causeway.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stages_config_is_laid_over_its_plugins_key_by_key() {
        let file: ConfigFile = toml::from_str(
            "[plugins.k.config]\nurl = \"https://a\"\nlist = \"one\"\nbatch = { size = 10 }\n",
        )
        .unwrap();
        let config = Config::from_file(file, None, Path::new("."));
        let stage = serde_json::json!({ "list": "two", "batch": { "wait": 1 } });
        assert_eq!(
            config.stage_config("k", stage.as_object()),
            // A table the stage names replaces the plugin's whole.
            serde_json::json!({ "url": "https://a", "list": "two", "batch": { "wait": 1 } })
        );
        assert_eq!(config.stage_config("k", None), config.plugin_config("k"));
        assert_eq!(
            config.stage_config("other", stage.as_object()),
            stage,
            "a plugin with no configuration of its own"
        );
    }

    #[test]
    fn no_file_means_embedded_defaults() {
        let config = Config::from_file(ConfigFile::default(), None, Path::new("."));
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.plugins_dir, Path::new("./plugins"));
        assert_eq!(config.cache_dir, Path::new("./causeway-data/cache"));
        assert_eq!(config.data_dir, Path::new("./causeway-data"));
        assert_eq!(config.grants_file, Path::new("./grants.toml"));
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn a_table_is_found_by_its_header_not_by_a_longer_name() {
        let text = "[pipelines.p2]\nevery = \"1s\"\n\n  [pipelines.p.retry]\n[pipelines.p]\n[[plugins.a.http]]\n";
        assert_eq!(section_line(text, "pipelines.p"), Some(4));
        assert_eq!(section_line(text, "pipelines.p2"), Some(1));
        assert_eq!(section_line(text, "plugins.a"), Some(6));
        assert_eq!(section_line(text, "pipelines.q"), None);
        let quoted = "[a]\n[plugins.\"Mail Sink\".config]\n";
        assert_eq!(section_line(quoted, "plugins.Mail Sink"), Some(2));
        let text = "[[plugins.a.http]]\nhost = \"x\"\n[plugins.a.http.y]\n[[ plugins.a.http ]]\n";
        assert_eq!(
            header_lines(text, "plugins.a.http").collect::<Vec<_>>(),
            [1, 4]
        );
    }

    #[test]
    fn an_unknown_field_close_to_a_known_one_is_named_as_a_likely_typo() {
        let typo = |message: &str| did_you_mean(message).map(str::to_string);
        let listed =
            "unknown field `skip_unchanged`, expected one of `every`, `sinks`, `skip-unchanged`";
        assert_eq!(typo(listed).as_deref(), Some("skip-unchanged"));
        let listed = "unknown field `lisen`, expected one of `listen`, `data-dir`";
        assert_eq!(typo(listed).as_deref(), Some("listen"));
        let listed = "unknown field `Every`, expected `every` or `webhook`";
        assert_eq!(typo(listed).as_deref(), Some("every"));
        let listed = "unknown variant `bearr`, expected `bearer` or `basic`";
        assert_eq!(typo(listed).as_deref(), Some("bearer"));
        // Too far from any: no guess.
        let listed = "unknown field `schedule`, expected one of `every`, `webhook`";
        assert_eq!(typo(listed), None);
        assert_eq!(typo("invalid type: integer `3`, expected a string"), None);
    }

    #[test]
    fn a_key_is_found_at_its_own_line_within_its_table() {
        let text = "[pipelines.p]\nevery = \"1s\"\nsource = { plugin = \"s\" }\nsinks = [\n  { plugin = \"k\" },\n]\n\n[pipelines.q]\nsource = { plugin = \"s\" }\n\n[[pipelines.q.sinks]]\nplugin = \"a\"\n[[pipelines.q.sinks]]\nplugin = \"b\"\n";
        assert_eq!(key_line(text, "pipelines.p", "source", 0), Some(3));
        assert_eq!(key_line(text, "pipelines.p", "sinks", 1), Some(4));
        assert_eq!(key_line(text, "pipelines.q", "sinks", 1), Some(13));
        // Not written under the table (or not at all): the table's line.
        assert_eq!(key_line(text, "pipelines.q", "transforms", 0), Some(8));
        assert_eq!(key_line(text, "pipelines.p", "sourcery", 0), Some(1));
        assert_eq!(key_line(text, "pipelines.r", "source", 0), None);
    }

    #[test]
    fn unknown_keys_and_bad_types_name_file_line_and_key() {
        let err =
            parse_toml::<ConfigFile>("listen = \"127.0.0.1:1\"\nlisen = 3\n", "causeway.toml")
                .unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.to_string()
                .starts_with("causeway.toml line 2: unknown field `lisen`"),
            "{err}"
        );
        let err =
            parse_toml::<ConfigFile>("[limits]\nmemory-mb = \"lots\"\n", "c.toml").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(
            err.to_string()
                .starts_with("c.toml line 2: memory-mb: invalid type: string \"lots\""),
            "{err}"
        );
        // In an inline table too; a key's own error is not given a key.
        let err = parse_toml::<ConfigFile>(
            "[pipelines.p]\nevery = \"1s\"\nsource = { plugin = \"s\", stream = 3 }\nsinks = []\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("line 3: stream: invalid type"),
            "{err}"
        );
        let err = parse_toml::<ConfigFile>(
            "[pipelines.p]\nsource = { plugin = \"s\", stream = \"c\", bogus = 1 }\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("line 2: unknown field `bogus`"),
            "{err}"
        );
        let err =
            parse_toml::<ConfigFile>("[limits]\ncall-timeout = \"soon\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
        // A table written as a string says what it should be, in the
        // file's words (not the type's name), and whose value it is even
        // when the value holds the key's word.
        let err = parse_toml::<ConfigFile>(
            "[pipelines.p]\nevery = \"1s\"\nsource = \"crm-source\"\nsinks = []\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.toml line 3: source: invalid type: string \"crm-source\", expected a table such as { plugin = \"NAME\", stream = \"STREAM\" }"
        );
    }

    #[test]
    fn limits_no_call_could_run_under_are_refused_naming_key_and_line() {
        for (text, expected) in [
            ("memory-mb = 0", "memory-mb = 0: must be from 1 to 4096"),
            (
                "memory-mb = 5000",
                "memory-mb = 5000: must be from 1 to 4096",
            ),
            (
                "call-timeout = \"0s\"",
                "call-timeout = \"0s\": must be from 1ms to 24h",
            ),
            (
                "call-timeout = \"2days\"",
                "call-timeout = \"2days\": must be from 1ms to 24h",
            ),
            (
                "table-elements = 0",
                "table-elements = 0: must be from 1 to 50000",
            ),
            (
                "table-elements = 50001",
                "table-elements = 50001: must be from 1 to 50000",
            ),
            ("instances = 0", "instances = 0: must be from 1 to 32"),
            ("instances = 33", "instances = 33: must be from 1 to 32"),
            ("resources = 0", "resources = 0: must be at least 1"),
        ] {
            let err =
                parse_toml::<ConfigFile>(&format!("\n[limits]\n{text}\n"), "c.toml").unwrap_err();
            assert_eq!(err.line, Some(3), "{text}: {err}");
            assert!(err.message.contains(expected), "{text}: {err}");
        }
        for (text, expected) in [
            (
                "max-instances = 0",
                "max-instances = 0: must be from 1 to 10000",
            ),
            (
                "max-instances = 100000",
                "max-instances = 100000: must be from 1 to 10000",
            ),
            (
                "max-plugin-mb = 0",
                "max-plugin-mb = 0: must be from 1 to 4096",
            ),
            (
                "max-plugin-mb = 4097",
                "max-plugin-mb = 4097: must be from 1 to 4096",
            ),
            (
                "max-functions = 0",
                "max-functions = 0: must be from 1 to 10000000",
            ),
            (
                "max-function-kb = 7475",
                "max-function-kb = 7475: must be from 1 to 7474 (no valid function body is larger)",
            ),
        ] {
            let err =
                parse_toml::<ConfigFile>(&format!("[engine]\n{text}\n"), "c.toml").unwrap_err();
            assert_eq!(err.line, Some(2), "{text}: {err}");
            assert!(err.message.contains(expected), "{text}: {err}");
        }
        // The bounds themselves are accepted.
        let parsed: ConfigFile = parse_toml(
            "[limits]\nmemory-mb = 4096\ncall-timeout = \"1ms\"\ntable-elements = 50000\ninstances = 32\nresources = 1\n[engine]\nmax-instances = 10000\nmax-plugin-mb = 4096\nmax-functions = 10000000\nmax-function-kb = 7474\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(
            parsed.engine.compile_limits(),
            crate::engine::CompileLimits {
                functions: 10_000_000,
                function_bytes: 7474 << 10,
            }
        );
        assert_eq!(parsed.limits.memory_mb, Some(4096));
        assert_eq!(parsed.engine.max_instances, 10_000);
        assert_eq!(parsed.engine.max_plugin_bytes(), 4 << 30);
    }

    #[test]
    fn a_parent_folder_is_taken_back_only_out_of_a_real_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data/demo")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere/sub")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere/sub"), root.join("link")).unwrap();
        let demo = root.join("data/demo");
        assert_eq!(
            beside(&demo, "../audit.key".into()),
            root.join("data/audit.key")
        );
        assert_eq!(beside(&demo, "./plugins".into()), demo.join("plugins"));
        assert_eq!(beside(&demo, "/etc/x".into()), PathBuf::from("/etc/x"));
        // Out of a link, `..` is the target's parent: left to the system.
        assert_eq!(
            beside(&root.join("link"), "../x".into()),
            root.join("link/../x")
        );
        assert_eq!(
            beside(&root.join("missing"), "../x".into()),
            root.join("missing/../x")
        );
        // Beside a file in the working folder.
        let here = Path::new(".");
        assert_eq!(beside(here, "../plugins".into()), Path::new("../plugins"));
        assert_eq!(beside(here, "plugins".into()), Path::new("./plugins"));
        assert_eq!(beside(here, ".".into()), Path::new("."));
        assert_eq!(beside(here, "../../x".into()), Path::new("../../x"));
    }

    #[test]
    fn paths_resolve_beside_the_file_and_limits_apply() {
        let parsed: ConfigFile = parse_toml(
            "data-dir = \"d\"\n[limits]\nmemory-mb = 16\ncall-timeout = \"2s\"\ninstances = 4\n[engine]\nmax-instances = 8\n[plugins.x.config]\na = 1\n",
            "c.toml",
        )
        .unwrap();
        let config = Config::from_file(parsed, None, Path::new("/etc/causeway"));
        assert_eq!(config.data_dir, Path::new("/etc/causeway/d"));
        assert_eq!(config.limits.memory_bytes, 16 * 1024 * 1024);
        assert_eq!(config.limits.call_timeout, Duration::from_secs(2));
        assert_eq!(config.limits.instances, 4);
        assert_eq!(
            config.limits.table_elements,
            Limits::default().table_elements
        );
        assert_eq!(
            config.engine,
            EngineSettings {
                pooling: true,
                max_instances: 8,
                max_plugin_mb: 64,
                max_functions: 50_000,
                max_function_kb: 1024,
                fuel: false,
            }
        );
        assert!(
            parse_toml::<ConfigFile>("[engine]\npool = false\n", "c.toml")
                .unwrap_err()
                .to_string()
                .contains("pool")
        );
        assert_eq!(config.plugin_config("x")["a"], 1);
        assert_eq!(config.plugin_config("y"), serde_json::json!({}));
    }

    #[test]
    fn pipeline_errors_name_the_pipeline_the_key_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("causeway.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file)).unwrap_err().to_string()
        };
        let err = load(
            "listen = \"127.0.0.1:1\"\n[pipelines.p]\nevery = \"1s\"\nsource = { plugin = \"s\", stream = \"c\" }\nsinks = []\n",
        );
        // At the line of the key.
        assert!(err.contains("line 5: pipelines.p.sinks is empty"), "{err}");
        let err = load(
            "[pipelines.p]\nsource = { plugin = \"s\", stream = \"c\" }\nsinks = [{ plugin = \"k\" }]\n",
        );
        // About none: at the pipeline's.
        assert!(err.contains("line 1: pipelines.p: no trigger"), "{err}");
        // A name that is not one is written quoted, and found so.
        let err = load(
            "listen = \"127.0.0.1:1\"\n[pipelines.\"a b\"]\nevery = \"1s\"\nsource = { plugin = \"s\", stream = \"c\" }\nsinks = [{ plugin = \"k\" }]\n",
        );
        assert!(
            err.contains("line 2: pipelines.\"a b\": a pipeline name is"),
            "{err}"
        );
        // A plugin is one stage of a list: its letters name it alone.
        let twice =
            "[{ plugin = \"k\" }, { plugin = \"m\" }, { plugin = \"k\", config = { a = 1 } }]";
        let once = "[{ plugin = \"k\" }]";
        for (list, transforms, sinks) in [("transforms", twice, once), ("sinks", once, twice)] {
            let err = load(&format!(
                "[pipelines.p]\nevery = \"1s\"\nsource = {{ plugin = \"s\", stream = \"c\" }}\n\
                 transforms = {transforms}\nsinks = {sinks}\n"
            ));
            assert!(
                err.contains(&format!("pipelines.p.{list} names k twice")),
                "{err}"
            );
        }
        for typo in ["0s", "1ms", "99ms"] {
            let err = load(&format!(
                "[pipelines.p]\nevery = \"{typo}\"\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"k\" }}]\n"
            ));
            assert!(
                err.contains("line 2: pipelines.p.every = ")
                    && err.contains("is shorter than 100ms"),
                "{typo}: {err}"
            );
        }
        // A webhook no delivery could pass, or one open to replays or to
        // bodies held in memory without bound.
        for (webhook, expected) in [
            (
                "tolerance = \"0s\"",
                "tolerance = \"0s\": must be from 1s to 1h",
            ),
            (
                "tolerance = \"2h\"",
                "tolerance = \"2h\": must be from 1s to 1h",
            ),
            (
                "max-body-bytes = 0",
                "max-body-bytes = 0: must be from 1 to 67108864",
            ),
            (
                "max-body-bytes = 67108865",
                "max-body-bytes = 67108865: must be from 1 to 67108864",
            ),
        ] {
            let err = load(&format!(
                "[pipelines.p]\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"k\" }}]\n\
                 webhook = {{ path = \"/h\", scheme = \"github\", secret = \"env:S\", {webhook} }}\n"
            ));
            assert!(
                err.contains(&format!("line 4: {expected}")),
                "{webhook}: {err}"
            );
        }
        // An audit log pruned of what plugins did an hour ago.
        let err = load("[audit]\nretention = \"90m\"\n");
        assert!(
            err.contains("line 2: retention = \"1h 30m\" is shorter than a day"),
            "{err}"
        );
        // Dead letters forgotten before anyone could replay them.
        let err = load(
            "[pipelines.p]\nevery = \"1s\"\nsource = { plugin = \"s\", stream = \"c\" }\nsinks = [{ plugin = \"k\" }]\ndlq-retention = \"30m\"\n",
        );
        assert!(
            err.contains("line 5: dlq-retention = \"30m\" is shorter than an hour"),
            "{err}"
        );
        // The TLS listener on the other listener's port.
        for listen in ["", "listen = \"0.0.0.0:8700\"\n"] {
            let err = load(&format!(
                "{listen}[tls]\nlisten = \"127.0.0.1:8700\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
            ));
            assert!(
                err.contains("tls.listen = \"127.0.0.1:8700\" takes the port of listen"),
                "{err}"
            );
        }
        // A cache with no room: not "no limit".
        let err = load("cache-max-mb = 0\n");
        assert!(
            err.contains("line 1: cache-max-mb = 0: must be at least 1"),
            "{err}"
        );
        // A file written in place that would wait hours to load.
        let err = load("reload-settle = \"300m\"\n");
        assert!(
            err.contains("line 1: reload-settle = \"5h\": must be from 0s to 10m"),
            "{err}"
        );
        // Retries that would call a failing API without pause.
        for (retry, expected) in [
            (
                "retry = { initial = \"0s\" }",
                "line 5: pipelines.p.retry.initial = \"0s\" is shorter than 10ms",
            ),
            (
                "[pipelines.p.retry]\ncircuit-cooldown = \"10ms\"",
                "line 5: pipelines.p.retry.circuit-cooldown = \"10ms\" is shorter than 100ms",
            ),
        ] {
            let err = load(&format!(
                "[pipelines.p]\nevery = \"1s\"\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"k\" }}]\n{retry}\n"
            ));
            assert!(err.contains(expected), "{retry}: {err}");
        }
        let err = load(
            "[pipelines.p]\nevery = \"1s\"\nsource = { plugin = \"s\", stream = \"c\", bogus = 1 }\nsinks = [{ plugin = \"k\" }]\n",
        );
        assert!(err.contains("line 3") && err.contains("bogus"), "{err}");
        let err = load(
            "[pipelines.P]\nevery = \"1s\"\nsource = { plugin = \"s\", stream = \"c\" }\nsinks = [{ plugin = \"k\" }]\n",
        );
        assert!(err.contains("pipelines.\"P\""), "{err}");
        for count in ["0", "-3"] {
            let err = load(&format!(
                "[pipelines.p]\nevery = \"1s\"\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"k\" }}]\nruns-keep = {count}\n"
            ));
            assert!(
                err.contains(&format!(
                    "line 5: runs-keep = {count}: the most runs kept must be at least 1"
                )),
                "{err}"
            );
        }
        // The host's own routes are never a webhook's.
        for path in ["/api/hooks", "/healthz", "/metrics", "/metrics/x"] {
            let err = load(&format!(
                "[pipelines.p]\nwebhook = {{ path = \"{path}\", scheme = \"github\", secret = \"env:S\" }}\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"k\" }}]\n"
            ));
            assert!(
                err.contains("stay out of /api, /healthz and /metrics"),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn a_webhook_takes_the_keys_its_scheme_reads_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("causeway.toml");
        let load = |webhook: &str| {
            std::fs::write(
                &file,
                format!(
                    "[pipelines.p]\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"k\" }}]\n\
                     webhook = {{ path = \"/h\", secret = \"env:S\", {webhook} }}\n"
                ),
            )
            .unwrap();
            Config::load(Some(&file))
        };
        let shop = load(
            "scheme = \"hmac-sha256\", header = \"X-Shopify-Hmac-Sha256\", encoding = \"base64\", id-header = \"X-Shopify-Webhook-Id\"",
        )
        .unwrap();
        let trigger = shop.pipelines["p"].webhook.as_ref().unwrap();
        let method = trigger.method();
        // Kept lower case, as the server looks headers up.
        assert_eq!(method.header, "x-shopify-hmac-sha256");
        assert_eq!(method.id_header, Some("x-shopify-webhook-id"));
        assert_eq!(method.encoding, crate::webhook::verify::Encoding::Base64);
        assert!(load("scheme = \"token\", header = \"X-Goog-Channel-Token\"").is_ok());
        assert!(load("scheme = \"basic\", id-header = \"X-Request-Id\"").is_ok());
        // Calendly signs as Stripe does, in a header of its own.
        let calendly =
            load("scheme = \"stripe\", header = \"Calendly-Webhook-Signature\"").unwrap();
        let trigger = calendly.pipelines["p"].webhook.as_ref().unwrap();
        assert_eq!(trigger.method().header, "calendly-webhook-signature");
        assert!(load("scheme = \"hubspot\"").is_ok());
        let stripe = load("scheme = \"stripe\", tolerance = \"10m\"").unwrap();
        let trigger = stripe.pipelines["p"].webhook.as_ref().unwrap();
        assert_eq!(trigger.tolerance(), Duration::from_secs(600));
        let github = load("scheme = \"github\"").unwrap();
        let trigger = github.pipelines["p"].webhook.as_ref().unwrap();
        assert_eq!(trigger.tolerance(), Duration::from_secs(300), "the default");
        assert!(load("scheme = \"token\", query = \"key\"").is_ok());
        // Zendesk signs the time it sent with the body.
        let zendesk = load(
            "scheme = \"hmac-sha256\", header = \"X-Zendesk-Webhook-Signature\", encoding = \"base64\", \
             signed = \"{timestamp}{body}\", timestamp-header = \"X-Zendesk-Webhook-Signature-Timestamp\", tolerance = \"2m\"",
        )
        .unwrap();
        let trigger = zendesk.pipelines["p"].webhook.as_ref().unwrap();
        assert_eq!(
            trigger.method().timestamp_header,
            Some("x-zendesk-webhook-signature-timestamp")
        );
        assert_eq!(trigger.method().signed, "{timestamp}{body}");
        assert_eq!(trigger.tolerance(), Duration::from_secs(120));
        use crate::pipeline::config::Answer;
        let answer = |webhook: &str| {
            load(webhook).unwrap().pipelines["p"]
                .webhook
                .as_ref()
                .unwrap()
                .answer()
        };
        assert_eq!(
            answer("scheme = \"github\", answer = \"empty\""),
            Answer::Empty
        );
        assert_eq!(answer("scheme = \"github\""), Answer::Json);
        // Slack, Zoom, Meta and Dropbox are answered as their documentation
        // asks (Zoom takes 200 or 204 only), unless the operator says.
        assert_eq!(answer("scheme = \"zoom\""), Answer::Empty);
        assert_eq!(answer("scheme = \"mailgun\""), Answer::Empty);
        assert_eq!(
            answer("scheme = \"slack\", tolerance = \"2m\""),
            Answer::Empty
        );
        assert_eq!(
            answer("scheme = \"dropbox\", answer = \"json\""),
            Answer::Json
        );
        assert_eq!(
            answer("scheme = \"meta\", verify-token = \"env:V\""),
            Answer::Empty
        );
        for (webhook, expected) in [
            (
                "scheme = \"hmac-sha256\"",
                "line 4: pipelines.p.webhook: scheme \"hmac-sha256\" needs header = \"...\": the header the sender puts its signature in",
            ),
            (
                "scheme = \"token\", prefix = \"Bearer \"",
                "pipelines.p.webhook: scheme \"token\" needs header = \"...\" (the header the sender puts its token in) or query = \"...\"",
            ),
            (
                "scheme = \"token\", header = \"X-T\", query = \"key\"",
                "pipelines.p.webhook: scheme \"token\" takes its token from header or from query, not both",
            ),
            (
                "scheme = \"token\", header = \"X-Token\", id-header = \"x-token\"",
                "line 4: pipelines.p.webhook.id-header \"x-token\" is the header the secret comes in",
            ),
            (
                "scheme = \"basic\", id-header = \"Authorization\"",
                "line 4: pipelines.p.webhook.id-header \"authorization\" is the header the secret comes in",
            ),
            (
                "scheme = \"github\", tolerance = \"10m\"",
                "line 4: pipelines.p.webhook.tolerance: scheme \"github\" signs no timestamp; tolerance is for \"standard-webhooks\", \"stripe\", \"hubspot\", \"sendgrid\", \"slack\", \"zoom\" and \"mailgun\"",
            ),
            (
                "scheme = \"github\", allow-from = []",
                "line 4: pipelines.p.webhook.allow-from is empty: no sender could deliver",
            ),
            (
                "scheme = \"github\", allow-from = [\"192.30.252.0/33\"]",
                "line 4: allow-from: \"192.30.252.0/33\": the prefix must be a number from 0 to 32",
            ),
            (
                "scheme = \"token\", query = \"key\", prefix = \"Bearer \"",
                "line 4: pipelines.p.webhook.prefix: a token in the query is the whole parameter",
            ),
            (
                "scheme = \"token\", query = \"key=1\"",
                "line 4: pipelines.p.webhook.query \"key=1\" must be a parameter's name",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-Sig\", query = \"key\"",
                "pipelines.p.webhook.query: scheme \"hmac-sha256\" reads a signature from its header; query is for \"token\"",
            ),
            (
                "scheme = \"github\", header = \"X-Sig\"",
                "pipelines.p.webhook.header: scheme \"github\" reads its own headers; header is for \"hmac-sha256\", \"hmac-sha1\", \"token\" and \"stripe\"",
            ),
            (
                "scheme = \"hubspot\", id-header = \"X-Id\"",
                "pipelines.p.webhook.id-header: scheme \"hubspot\" knows a delivery by its body",
            ),
            (
                "scheme = \"basic\", prefix = \"Basic \"",
                "pipelines.p.webhook.prefix: scheme \"basic\" reads Authorization",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-S\", signed = \"{timestamp}\"",
                "line 4: pipelines.p.webhook.signed \"{timestamp}\": {body} is not in it: a signature must cover the body",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-S\", signed = \"{ts}{body}\"",
                "pipelines.p.webhook.signed \"{ts}{body}\": {ts} is no placeholder: they are {body}, {timestamp}, {id} and {url}",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-S\", signed = \"{timestamp}{body}\"",
                "pipelines.p.webhook.signed \"{timestamp}{body}\" signs {timestamp}: name the header it comes in, timestamp-header",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-S\", signed = \"{id}{body}\"",
                "pipelines.p.webhook.signed \"{id}{body}\" signs {id}: name the header it comes in, id-header",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-S\", timestamp-header = \"X-T\"",
                "pipelines.p.webhook.timestamp-header: a time the sender does not sign proves nothing",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-S\", tolerance = \"1m\"",
                "pipelines.p.webhook.tolerance: scheme \"hmac-sha256\" checks a time only with timestamp-header",
            ),
            (
                "scheme = \"github\", signed = \"{body}\"",
                "pipelines.p.webhook.signed: scheme \"github\" reads its own headers; signed is for \"hmac-sha256\" and \"hmac-sha1\"",
            ),
            (
                "scheme = \"token\", header = \"X-T\", timestamp-header = \"X-Time\"",
                "pipelines.p.webhook.timestamp-header: scheme \"token\" compares a secret, not a signature",
            ),
            (
                "scheme = \"github\", previous-secret = \"env:S\"",
                "line 4: pipelines.p.webhook.previous-secret is the secret itself",
            ),
            (
                "scheme = \"meta\"",
                "line 4: pipelines.p.webhook: scheme \"meta\" needs verify-token = \"env:NAME\": the Verify Token you type in the app's Webhooks settings",
            ),
            (
                "scheme = \"github\", verify-token = \"env:V\"",
                "line 4: pipelines.p.webhook.verify-token: scheme \"github\" makes no subscription check with one; verify-token is for \"meta\"",
            ),
            (
                "scheme = \"dropbox\", tolerance = \"1m\"",
                "pipelines.p.webhook.tolerance: scheme \"dropbox\" signs no timestamp; tolerance is for \"standard-webhooks\", \"stripe\", \"hubspot\", \"sendgrid\", \"slack\", \"zoom\" and \"mailgun\"",
            ),
            (
                "scheme = \"slack\", id-header = \"X-Slack-Retry-Num\"",
                "pipelines.p.webhook.id-header: scheme \"slack\" knows an event by its event_id",
            ),
            (
                "scheme = \"zoom\", header = \"x-zm-signature\"",
                "pipelines.p.webhook.header: scheme \"zoom\" reads its own headers",
            ),
            (
                "scheme = \"token\", header = \"X-T\", encoding = \"hex\"",
                "pipelines.p.webhook.encoding: scheme \"token\" compares a secret, not a signature; encoding is for \"hmac-sha256\"",
            ),
            (
                "scheme = \"stripe\", id-header = \"X-Id\"",
                "pipelines.p.webhook.id-header: scheme \"stripe\" knows a delivery by its event's id",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X Sig\"",
                "line 4: header: \"X Sig\" is not a header name",
            ),
            (
                "scheme = \"hmac-sha256\", header = \"X-Sig\", encoding = \"base32\"",
                "line 4: encoding: unknown variant `base32`, expected `hex` or `base64`",
            ),
        ] {
            let err = load(webhook).unwrap_err().to_string();
            assert!(err.contains(expected), "{webhook}: {err}");
        }
    }

    #[test]
    fn pipelines_may_share_a_webhook_path_only_with_the_same_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("causeway.toml");
        let pipeline = |name: &str, secret: &str| {
            format!(
                "[pipelines.{name}]\nwebhook = {{ path = \"/hooks/crm\", scheme = \"standard-webhooks\", secret = \"{secret}\" }}\nsource = {{ plugin = \"s\", stream = \"c\" }}\nsinks = [{{ plugin = \"{name}\" }}]\n"
            )
        };
        let load = |text: String| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file))
        };
        let shared = load(pipeline("a", "env:S") + &pipeline("b", "env:S")).unwrap();
        assert_eq!(shared.pipelines.len(), 2);
        let err = load(pipeline("a", "env:S") + &pipeline("b", "env:OTHER"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 5: pipelines.b.webhook.path \"/hooks/crm\" is also the path of pipelines.a, whose webhook differs"),
            "{err}"
        );
    }
}
