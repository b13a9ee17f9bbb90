//! `causeway test`: the conformance suite, run by a plugin author locally.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::caps::http::Tape;
use crate::conformance::{self, Fixtures, Subject, Verdict, fixtures, grant};
use crate::grants::{Injection, Policy};
use crate::plugin::Plugin;
use crate::registry::Installed;
use crate::secrets::{SecretRef, Secrets};

/// Check a plugin against the contract: its manifest and config schema,
/// `check` on a good and a bad configuration, a stable `discover`, complete
/// and resumable reads, a deterministic transform that keeps keys, a sink
/// answering once per record. Each failure names the rule broken.
///
/// The plugin runs exactly as in the host, granted what its manifest requests
/// (a request for any host is granted the hosts the configuration's URLs
/// name). Its HTTP is answered from FIXTURES/http.json; `--record` sends it to
/// the live API instead and writes what came back there (never a secret).
/// Fixtures, all optional: config.json, bad-config.json (a configuration
/// check must refuse), records.json (input for transforms and sinks).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway test target/wasm32-wasip2/release/my_connector.wasm --fixtures fixtures\n  causeway test my-connector --config live.json --record --secret api-token=env:API_TOKEN\n  causeway test my-sink --config live.json --record --secret api-key=env:API_KEY --inject api-key=header:X-Api-Key"
)]
pub struct Opts {
    /// A plugin name from the plugins folder, or a path to a `.wasm` file.
    pub plugin: String,
    /// The plugin's configuration, a JSON file (default: FIXTURES/config.json, else `{}`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The fixtures folder [default: fixtures].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Send HTTP to the live API and record the exchanges into FIXTURES/http.json
    /// (and the configuration into FIXTURES/config.json).
    #[arg(long)]
    pub record: bool,
    /// A credential's secret for recording, `NAME=env:VAR` or `NAME=file:KEY`
    /// (replays inject a placeholder).
    #[arg(long = "secret", value_name = "NAME=REF")]
    pub secrets: Vec<String>,
    /// How a credential goes into a request, `NAME=bearer|basic|header:H|query:Q|json:F`
    /// (default bearer), as the operator's grant will say: an API reading
    /// its key from `X-Api-Key` refuses a bearer token.
    #[arg(long = "inject", value_name = "NAME=HOW")]
    pub injects: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A scratch folder removed when dropped: the suite's database lives there.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("causeway-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create a scratch folder {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Opts {
    /// Runs the command.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let host = cli.host()?.with_artifact_cache();
        let file = super::plugin_path(
            &host.config.plugins_dir,
            &self.plugin,
            host.runtime.max_plugin_bytes,
        )?;
        // Every fixture is optional, so a folder named but missing (a
        // typo) would pass on defaults, testing nothing of the plugin's.
        let dir = match &self.fixtures {
            Some(dir) if !self.record && !dir.is_dir() => anyhow::bail!(
                "--fixtures {}: no such folder (see `causeway test --help` for what it may hold)",
                dir.display()
            ),
            Some(dir) => dir.clone(),
            None => PathBuf::from("fixtures"),
        };
        let fixtures = Fixtures::load(&dir, self.config.as_deref())?;
        let http_file = fixtures.http_file();
        let tape = Arc::new(if self.record {
            Tape::record(&http_file)
        } else {
            Tape::replay(&http_file)?
        });
        let runtime = host.runtime.clone();
        let plugin = match runtime.load_plugin(&file) {
            Ok(plugin) => plugin,
            Err(e) => {
                let mut report = conformance::Report::default();
                report.findings.push(conformance::Finding {
                    rule: conformance::Rule::ManifestValid,
                    verdict: Verdict::Fail,
                    message: format!("the plugin does not load: {e}"),
                });
                self.print(&file.display().to_string(), &report)?;
                return Ok(ExitCode::FAILURE);
            }
        };
        let config = &fixtures.config.0;
        let injections = self.injections(&plugin)?;
        let test_grant = grant::suite_grant(&plugin.info.manifest, config, &injections);
        let (policy, not_granted) =
            Policy::evaluate(&plugin.info.manifest, Some(&test_grant), host.config.limits);
        let secrets = self.secrets(&host.secrets, &plugin)?;
        let label = plugin.info.label();
        let installed = Installed::with_policy(
            Arc::new(plugin),
            policy,
            Vec::new(),
            &host.runtime.egress,
            Some(tape.clone()),
        );
        for missing in &not_granted {
            tracing::warn!(
                "{label}: not granted in this test (give the configuration a URL for it): {missing}"
            );
        }
        let scratch = Scratch::new()?;
        let chain =
            crate::audit::Chain::open(&scratch.0.join("audit.key"), &scratch.0.join("audit.head"))
                .map_err(|e| anyhow::anyhow!("cannot open the suite's audit trail: {e}"))?;
        let writer = crate::db::Writer::start(&scratch.0.join("causeway.db"), chain)?;
        let subject = Subject {
            runtime,
            installed,
            secrets: Arc::new(secrets),
            db: writer.handle(),
        };
        let report = conformance::run(&subject, &fixtures).await;
        drop(subject);
        writer.close();
        if self.record {
            let count = tape.save()?;
            if let Some(path) = &self.config {
                let target = dir.join(fixtures::CONFIG);
                if path != &target {
                    std::fs::write(&target, serde_json::to_string_pretty(config)? + "\n")
                        .with_context(|| format!("cannot write {}", target.display()))?;
                }
            }
            eprintln!(
                "recorded {count} HTTP exchange(s) into {}",
                http_file.display()
            );
        }
        self.print(&label, &report)?;
        Ok(if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// The suite's secrets: each requested credential's value from
    /// `--secret`, or a placeholder when replaying.
    fn secrets(&self, host: &Secrets, plugin: &Plugin) -> anyhow::Result<Secrets> {
        let mut given = BTreeMap::new();
        for pair in &self.secrets {
            let (name, reference) = pair.split_once('=').with_context(|| {
                format!("--secret {pair:?}: expected NAME=env:VAR or NAME=file:KEY")
            })?;
            super::requested_credential(
                "--secret",
                name,
                &plugin.info.label(),
                &plugin.info.manifest,
            )?;
            let reference = SecretRef::try_from(reference.to_string())
                .map_err(|e| anyhow::anyhow!("--secret {name}: {e}"))?;
            given.insert(name.to_string(), reference);
        }
        let mut values = BTreeMap::new();
        for credential in &plugin.info.manifest.capabilities.credentials {
            let name = &credential.name;
            let value = match given.remove(name) {
                Some(reference) => host
                    .resolve(&reference)
                    .map_err(|e| anyhow::anyhow!("--secret {name}: {e}"))?,
                None if self.record => anyhow::bail!(
                    "credential {name:?}: recording talks to the live API, so give its secret with --secret {name}=env:VAR"
                ),
                None => Secrets::value(format!("causeway-test-placeholder-{name}")),
            };
            values.insert(grant::secret_key(name), value);
        }
        Ok(Secrets::in_memory(
            "the secrets given to causeway test",
            values,
        ))
    }

    /// How each credential named by `--inject` goes into a request.
    fn injections(&self, plugin: &Plugin) -> anyhow::Result<BTreeMap<String, Injection>> {
        let mut injections = BTreeMap::new();
        for pair in &self.injects {
            let (name, how) = super::split_pair(pair, "--inject")?;
            super::requested_credential(
                "--inject",
                name,
                &plugin.info.label(),
                &plugin.info.manifest,
            )?;
            let how = Injection::try_from(how.to_string())
                .map_err(|e| anyhow::anyhow!("--inject {name}: {e}"))?;
            injections.insert(name.to_string(), how);
        }
        Ok(injections)
    }

    fn print(&self, plugin: &str, report: &conformance::Report) -> anyhow::Result<()> {
        if self.json {
            return super::print_json(&serde_json::json!({
                "plugin": plugin,
                "passed": report.passed(),
                "findings": report.findings,
            }));
        }
        let width = report
            .findings
            .iter()
            .map(|f| f.rule.name().len())
            .max()
            .unwrap_or(0);
        let mut out = format!("causeway test {plugin}\n");
        for finding in &report.findings {
            let verdict = match finding.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            // On one line, and cut (whole in --json): a message carries
            // the plugin's own text (an error it answered, the streams it
            // lists), whose line breaks could write a verdict.
            let message = crate::contract::shown(&finding.message, 2000);
            out.push_str(&format!(
                "  {verdict}  {:width$}  {}\n",
                finding.rule.name(),
                super::table::printable(&message, false)
            ));
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped\n",
            report.count(Verdict::Pass),
            report.count(Verdict::Fail),
            report.count(Verdict::Skip)
        ));
        super::print(&out)
    }
}
