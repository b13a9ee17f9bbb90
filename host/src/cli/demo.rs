//! `causeway demo`: the whole story on one machine. A fake CRM, a fake
//! mailer and a fake calendar start on 127.0.0.1; the example plugins are
//! installed and granted exactly what they need; two pipelines, CRM →
//! map-fullname → mailer and CRM → map-fullname → calendar, run on their
//! schedule while contacts are created and updated in the CRM, until every
//! contact with an email is in the mailer as a subscriber with a
//! `fullName`, and in the calendar as an attendee.
//!
//! The CRM pushes each change by webhook (signed, Standard Webhooks) to the
//! host's server, at one path both pipelines share, and the pipelines also
//! poll it. A pipeline per sink: one system down holds back only its own.
//!
//! The demo writes its configuration to `DATA_DIR/demo/` (`causeway.toml`,
//! `grants.toml`, `secrets.toml`): a working example to read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};

use crate::fakes::{self, FakeCalendar, FakeCrm, FakeMailer};
use crate::files::{self, Durability};
use crate::host::{Claim, Host};
use crate::live::{Live, Snapshot};
use crate::pipeline::{Pipelines, history};
use crate::server::{self, AppState};

/// The example plugins, built by `build.rs` for wasm32-wasip2.
const EXAMPLES: &[(&str, &[u8])] = &[
    (
        "map-fullname.wasm",
        include_bytes!(concat!(
            env!("CAUSEWAY_BUILT_PLUGINS"),
            "/map_fullname.wasm"
        )),
    ),
    (
        "crm-source.wasm",
        include_bytes!(concat!(env!("CAUSEWAY_BUILT_PLUGINS"), "/crm_source.wasm")),
    ),
    (
        "mailer-sink.wasm",
        include_bytes!(concat!(env!("CAUSEWAY_BUILT_PLUGINS"), "/mailer_sink.wasm")),
    ),
    (
        "calendar-sink.wasm",
        include_bytes!(concat!(
            env!("CAUSEWAY_BUILT_PLUGINS"),
            "/calendar_sink.wasm"
        )),
    ),
];

/// Sample CRM contacts, as records.
const CONTACTS: &str = include_str!("../../../examples/contacts.json");

/// The demo's secrets: the fakes accept nothing else.
const CRM_TOKEN: &str = "demo-crm-token";
const MAILER_KEY: &str = "demo-mailer-key";
const CALENDAR_KEY: &str = "demo-calendar-key";
const LIST: &str = "newsletter";
const CALENDAR: &str = "team";
/// The key the fake CRM signs its webhooks with.
const HOOK_KEY: &[u8] = b"the demo CRM's webhook key, 32B!";
const HOOK_PATH: &str = "/hooks/crm";
/// The demo's pipelines, one per sink.
const PIPELINES: [&str; 2] = ["crm-to-mailer", "crm-to-calendar"];

/// Run the main job on one machine: fake CRM, mailer and calendar servers
/// on 127.0.0.1, the example plugins installed and granted, and the
/// pipelines CRM → map-fullname → mailer and → calendar moving contacts
/// until all have arrived.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -- demo")]
pub struct Opts {
    /// The data directory.
    #[arg(long, default_value = "causeway-data")]
    pub data_dir: PathBuf,
    /// How many contacts to create in the CRM, beyond the samples.
    #[arg(long, default_value_t = 40)]
    pub contacts: usize,
}

impl Opts {
    /// Runs the demo.
    pub async fn run(&self) -> anyhow::Result<ExitCode> {
        // Before anything is written into it: another demo or host may be
        // using the folder.
        let _claim = Claim::take(&self.data_dir)?;
        let plugins = self.data_dir.join("plugins");
        install_examples(&plugins)?;
        let crm = FakeCrm::start(CRM_TOKEN, 0).context("cannot start the fake CRM")?;
        let mailer = FakeMailer::start(MAILER_KEY, 0).context("cannot start the fake mailer")?;
        let calendar = FakeCalendar::start(CALENDAR_KEY, &[CALENDAR], 0)
            .context("cannot start the fake calendar")?;
        let systems = Systems {
            crm: &crm,
            mailer: &mailer,
            calendar: &calendar,
        };
        let config_file = write_config(&self.data_dir, &systems)?;
        super::print(&format!(
            "A fake CRM listens on {}, a fake mailer on {} and a fake calendar on {}.\nThe demo's configuration is in {}.\n\n",
            crm.base_url(),
            mailer.base_url(),
            calendar.base_url(),
            config_file.parent().unwrap_or(Path::new(".")).display()
        ))?;

        let host = Host::load(Some(&config_file), None)?.with_artifact_cache();
        let registry = host.registry()?;
        let mut out = format!("Plugins in {}:\n", plugins.display());
        for status in registry.statuses() {
            out.push_str(&format!(
                "  {:<14} {:<8} {:<16} {}\n",
                status.name,
                status.version.as_deref().unwrap_or("-"),
                status
                    .worlds
                    .iter()
                    .map(|w| w.name())
                    .collect::<Vec<_>>()
                    .join("+"),
                status.state.name(),
            ));
        }
        super::print(&out)?;
        let database = host.config.database_file();
        let since = last_run(&database);
        let writer = host.open_database()?;
        // The grants it wrote are in the audit log, as a host records them
        // (each run's fakes listen on new ports: a change each time).
        writer
            .handle()
            .audited(crate::grants::changes::record(&host.grants));
        // The fakes start empty every time: so do the pipelines.
        writer
            .handle()
            .transact(|conn| {
                for pipeline in PIPELINES {
                    history::reset(conn, pipeline)?;
                }
                Ok::<_, crate::db::DbError>(())
            })
            .await?;
        let live = Arc::new(Live::new(Snapshot {
            config: host.config.clone(),
            grants: host.grants.clone(),
            registry,
        }));
        let pipelines = Pipelines::start(
            live.clone(),
            host.runtime.clone(),
            host.secrets.clone(),
            writer.handle(),
        );
        // The host's server, for the CRM's webhooks.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let address = listener.local_addr()?;
        let state = Arc::new(AppState {
            runtime: host.runtime.clone(),
            secrets: host.secrets.clone(),
            live,
            db: writer.handle(),
            database: host.config.database_file(),
            pipelines: pipelines.control(),
            refusals: server::Refusals::new(writer.handle()),
            token: Arc::new(
                server::OperatorToken::load_or_create(&host.config.data_dir)
                    .map_err(anyhow::Error::msg)?,
            ),
            certificate: None,
        });
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, server::router(state), async {
            let _ = server_stopped.await;
        }));
        crm.send_webhooks(&format!("http://{address}{HOOK_PATH}"), HOOK_KEY)
            .map_err(anyhow::Error::msg)?;

        super::print(&format!(
            "\nPipelines crm-to-mailer (crm-source → map-fullname → mailer-sink) and crm-to-calendar (crm-source → map-fullname → calendar-sink), on each CRM webhook (to http://{address}{HOOK_PATH}, which both take) and every 3 s.\n"
        ))?;
        // Two waves, and an update in between: each run reads only what
        // changed since the checkpoint.
        let half = self.contacts / 2;
        let mut expected = Vec::new();
        let mut wave = samples()?;
        wave.extend(people(0, half));
        feed(&crm, wave, &mut expected);
        let mut outcome = watch(&systems, &expected, &database, since).await;
        if outcome.is_ok() {
            super::print("  … more contacts, and Grace Hopper changes her name in the CRM:\n")?;
            feed(&crm, people(half, self.contacts), &mut expected);
            if let Some((id, name)) = expected.iter_mut().find(|(_, n)| n == "Grace Hopper") {
                let mut change = Map::new();
                change.insert("lastName".into(), "Hopper-Murray".into());
                crm.update(id, change);
                *name = "Grace Hopper-Murray".to_string();
            }
            outcome = watch(&systems, &expected, &database, since).await;
        }
        let _ = stop_server.send(());
        let _ = server.await;
        pipelines.stop(Duration::from_secs(5)).await;
        writer.close();
        outcome?;

        let runs = demo_runs(&database, since);
        for pipeline in PIPELINES {
            let runs: Vec<_> = runs.iter().filter(|r| r.pipeline == pipeline).collect();
            super::print(&format!(
                "  {pipeline}: {} runs read {} records and wrote {} ({} dropped by map-fullname, {} rejected)\n",
                runs.len(),
                runs.iter().map(|r| r.read).sum::<i64>(),
                runs.iter().map(|r| r.written).sum::<i64>(),
                runs.iter().filter_map(|r| r.dropped).sum::<i64>(),
                runs.iter().map(|r| r.rejected).sum::<i64>(),
            ))?;
        }
        let subscribers = mailer.subscribers(LIST);
        let sample: Vec<&Value> = subscribers.values().take(3).collect();
        let mut out = format!(
            "\nAll {} contacts with an email are in the mailer as subscribers (contacts without one are dropped by map-fullname). A few:\n",
            subscribers.len()
        );
        out.push_str(&serde_json::to_string_pretty(&sample)?);
        let attendees = calendar.attendees(CALENDAR);
        out.push_str(&format!(
            "\n\nAnd in the calendar, as {} attendees a meeting can be sent to. A few:\n",
            attendees.len()
        ));
        let sample: Vec<_> = attendees.values().take(3).collect();
        out.push_str(&serde_json::to_string_pretty(&sample)?);
        out.push_str(&format!(
            "\n\nThe calendar takes OAuth 2.0 access tokens, which live {} s: the host fetched {} of them with calendar-sink's client secret and sent them for it (the plugin never held one; `causeway audit --capability http` lists each fetch).",
            fakes::TOKEN_LIFETIME.as_secs(),
            calendar.tokens_issued()
        ));
        out.push_str("\n\nSee what happened: causeway --config-file ");
        out.push_str(&config_file.display().to_string());
        out.push_str(" runs\n");
        super::print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The id of the latest run so far (0 if none).
fn last_run(database: &Path) -> i64 {
    crate::db::open_read_only(database)
        .ok()
        .flatten()
        .and_then(|conn| history::runs(&conn, None, 1).ok())
        .and_then(|runs| runs.first().map(|r| r.id))
        .unwrap_or(0)
}

/// The demo's pipelines' runs after run `since`, newest first.
fn demo_runs(database: &Path, since: i64) -> Vec<history::RunRow> {
    crate::db::open_read_only(database)
        .ok()
        .flatten()
        .and_then(|conn| history::runs(&conn, None, 1000).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.id > since && PIPELINES.contains(&r.pipeline.as_str()))
        .collect()
}

/// Copies the example plugins into `plugins`, each by write-and-rename so a
/// running host never sees half a file.
fn install_examples(plugins: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins)
        .with_context(|| format!("cannot create the plugins folder {}", plugins.display()))?;
    for (file, bytes) in EXAMPLES {
        let path = plugins.join(file);
        // A hidden partial: the host's watcher ignores it.
        let partial = plugins.join(format!(".{file}.partial"));
        files::replace(&path, &partial, bytes, Durability::Contents)
            .with_context(|| format!("cannot install {}", path.display()))?;
    }
    Ok(())
}

/// The demo's third-party systems.
struct Systems<'a> {
    crm: &'a FakeCrm,
    mailer: &'a FakeMailer,
    calendar: &'a FakeCalendar,
}

/// Writes the demo's `causeway.toml`, `grants.toml` and `secrets.toml`.
fn write_config(data_dir: &Path, systems: &Systems) -> anyhow::Result<PathBuf> {
    let Systems {
        crm,
        mailer,
        calendar,
    } = systems;
    let dir = data_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = format!(
        r#"# Written by `causeway demo`: the fakes' ports change every run.
data-dir = ".."
plugins-dir = "../plugins"
grants = "grants.toml"
secrets-file = "secrets.toml"

{connectors}
{calendar}
# Pushed by webhook as contacts change, and polled every few seconds for
# anything a webhook missed: a contact may arrive both ways, harmlessly.
# A pipeline per sink: each keeps its own checkpoint, retries and circuit,
# so a mailer that is down does not hold back the calendar. Both take the
# CRM's webhooks at one path (a CRM may have room for one URL): each
# delivery is stored for both.
[pipelines.crm-to-mailer]
every = "3s"
webhook = {{ path = "{HOOK_PATH}", scheme = "standard-webhooks", secret = "file:crm-webhook" }}
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "mailer-sink" }}]

[pipelines.crm-to-calendar]
every = "3s"
webhook = {{ path = "{HOOK_PATH}", scheme = "standard-webhooks", secret = "file:crm-webhook" }}
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "calendar-sink" }}]
"#,
        connectors = fakes::connector_config(crm, mailer, LIST, 10),
        calendar = fakes::calendar_config(calendar, CALENDAR),
    );
    let grants = format!(
        "# Written by `causeway demo`: each connector may reach its own fake, and\n# nothing else; its credential is sent only there.\n{}\n{}",
        fakes::connector_grants(crm, mailer, "file:crm-token", "file:mailer-key"),
        fakes::calendar_oauth_grants(calendar, "file:calendar-key"),
    );
    let hook_secret = format!(
        "whsec_{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, HOOK_KEY)
    );
    let secrets = format!(
        "crm-token = \"{CRM_TOKEN}\"\nmailer-key = \"{MAILER_KEY}\"\ncalendar-key = \"{CALENDAR_KEY}\"\ncrm-webhook = \"{hook_secret}\"\n"
    );
    let file = dir.join("causeway.toml");
    std::fs::write(&file, config).with_context(|| format!("cannot write {}", file.display()))?;
    let grants_file = dir.join("grants.toml");
    std::fs::write(&grants_file, grants)
        .with_context(|| format!("cannot write {}", grants_file.display()))?;
    write_private(&dir.join("secrets.toml"), &secrets)?;
    Ok(file)
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The sample contacts, as CRM fields.
fn samples() -> anyhow::Result<Vec<Map<String, Value>>> {
    let samples: Vec<Value> =
        serde_json::from_str(CONTACTS).context("the sample contacts are not JSON")?;
    Ok(samples
        .into_iter()
        .filter(|r| r["op"] != "delete")
        .filter_map(|r| r["data"].as_object().cloned())
        .map(|mut data| {
            data.remove("id");
            data
        })
        .collect())
}

/// Generated contacts `from..to`.
fn people(from: usize, to: usize) -> Vec<Map<String, Value>> {
    (from..to)
        .map(|i| {
            let mut person = Map::new();
            person.insert("firstName".into(), format!("Person{i:03}").into());
            person.insert("lastName".into(), "Example".into());
            person.insert("email".into(), format!("person{i:03}@example.com").into());
            person
        })
        .collect()
}

/// Creates `people` in the CRM; adds the `fullName` each one with an email
/// should arrive with to `expected`, by id.
fn feed(crm: &FakeCrm, people: Vec<Map<String, Value>>, expected: &mut Vec<(String, String)>) {
    for person in people {
        let full = format!(
            "{} {}",
            person["firstName"].as_str().unwrap_or_default(),
            person["lastName"].as_str().unwrap_or_default()
        );
        let has_email = person.contains_key("email");
        let contact = crm.create(person);
        if has_email {
            expected.push((contact.id, full));
        }
    }
    expected.sort();
}

/// Shows progress until the mailer and the calendar hold `expected`,
/// within a minute; runs are counted from after run `since`.
async fn watch(
    systems: &Systems<'_>,
    expected: &[(String, String)],
    database: &Path,
    since: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        let subscribers = systems.mailer.subscribers(LIST);
        let in_mailer: Vec<(String, String)> = subscribers
            .iter()
            .map(|(k, v)| (k.clone(), v["fullName"].as_str().unwrap_or("").to_string()))
            .collect();
        let attendees = systems.calendar.attendees(CALENDAR);
        let in_calendar: Vec<(String, String)> = attendees
            .iter()
            .map(|(k, a)| (k.clone(), a.display_name.clone()))
            .collect();
        let runs = demo_runs(database, since);
        let by_hook = runs.iter().filter(|r| r.trigger == "webhook").count();
        let line = format!(
            "  CRM: {} contacts · mailer: {} subscribers · calendar: {} attendees · pipeline runs: {by_hook} on webhooks, {} polling\n",
            systems.crm.contacts().len(),
            subscribers.len(),
            attendees.len(),
            runs.len() - by_hook,
        );
        if line != last {
            super::print(&line)?;
            last = line;
        }
        if in_mailer == expected && in_calendar == expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the mailer and the calendar did not receive every contact within a minute; see `causeway runs` and the log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
