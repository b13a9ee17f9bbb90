//! `causeway run`: the long-running host.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::host::Claim;
use crate::live::{Live, Snapshot};
use crate::pipeline::Pipelines;
use crate::reload::Reloader;
use crate::server::{self, AppState};

/// Extra time, past the longest call's deadline, that stopping waits for calls
/// in flight before it gives up on them.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How often the host prunes audit rows past `[audit] retention`.
const AUDIT_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Run the host: load the plugins, record their states, serve /healthz and the
/// status API on the listen address, reload plugins, grants and configuration
/// when their files change, until SIGTERM or Ctrl-C; then stop
/// taking new work, let calls in flight finish (within a bound), flush the
/// audit log and exit 0.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  causeway run\n  causeway --config-file /etc/causeway/causeway.toml run\n  causeway run --listen 127.0.0.1:0"
)]
pub struct Opts {
    /// Listen here instead of the configured address (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

impl Opts {
    /// Runs the host until it is told to stop.
    pub async fn run(&self, cli: &super::Cli) -> anyhow::Result<ExitCode> {
        let mut host = cli.host()?.with_artifact_cache();
        if let Some(listen) = self.listen {
            host.config.listen_on(listen);
        }
        // Listened for from the start: the server would set up its stop
        // signal only when it first polls it, and a SIGTERM before that
        // killed the host without its clean stop (seen in CI, under load).
        let mut stop = StopSignal::listen()?;
        let _claim = Claim::take(&host.config.data_dir)?;
        if let Some(exposed) = crate::host::data_dir_exposure(&host.config.data_dir) {
            tracing::warn!("{exposed}");
        }
        for (_, message) in host.grants.uncounted_fuel(host.config.engine.fuel) {
            tracing::error!("{}: {message}", host.config.grants_file.display());
        }
        let token = server::OperatorToken::load_or_create(&host.config.data_dir)
            .map_err(anyhow::Error::msg)?;
        // Before anything starts: a certificate that cannot be served
        // stops the host, naming its file.
        let certificate = match &host.config.tls {
            Some(tls) => {
                if let Some(exposed) = server::tls::key_exposure(&tls.key) {
                    tracing::warn!("{exposed}");
                }
                Some(Arc::new(
                    server::tls::Certificate::load(&tls.cert, &tls.key)
                        .map_err(anyhow::Error::msg)?,
                ))
            }
            None => None,
        };
        let writer = host.open_database()?;
        tracing::info!(folder = %host.config.plugins_dir.display(), "loading the plugins");
        let registry = tokio::select! {
            loaded = host.registry_apart() => loaded?,
            () = stop.wait() => {
                // Nothing has started that must be drained; the compile in
                // progress ends with the process.
                writer.close();
                tracing::info!("stopped before the plugins had loaded");
                return Ok(ExitCode::SUCCESS);
            }
        };
        let listener = tokio::net::TcpListener::bind(host.config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", host.config.listen))?;
        let address = listener.local_addr()?;
        let public = match (&host.config.tls, &certificate) {
            (Some(tls), Some(certificate)) => {
                let listener = tokio::net::TcpListener::bind(tls.listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (tls.listen)", tls.listen))?;
                let config = certificate.server_config().map_err(anyhow::Error::msg)?;
                Some((listener, config, certificate.clone()))
            }
            _ => None,
        };
        let handle = writer.handle();
        handle.host_started(std::process::id(), address.to_string());
        // Grants changed while no host ran are recorded now.
        handle.audited(crate::grants::changes::record(&host.grants));
        handle.plugin_states(registry.statuses().iter().map(|s| s.to_row()).collect());
        handle.flush().await?;
        let drain_bound = host.config.limits.call_timeout + DRAIN_GRACE;
        let live = Arc::new(Live::new(Snapshot {
            config: host.config.clone(),
            grants: host.grants.clone(),
            registry,
        }));
        let _reloader = Reloader::start(
            live.clone(),
            host.secrets.clone(),
            host.runtime.clone(),
            handle.clone(),
        )
        .with_context(|| {
            format!(
                "cannot watch the plugins folder {}",
                host.config.plugins_dir.display()
            )
        })?;
        let _pruner = host.config.audit.retention.map(|keep| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(AUDIT_PRUNE_EVERY);
                loop {
                    every.tick().await;
                    handle.prune_audit(crate::audit::ago(keep));
                }
            })
        });
        let pipelines = Pipelines::start(
            live.clone(),
            host.runtime.clone(),
            host.secrets.clone(),
            handle.clone(),
        );
        let state = Arc::new(AppState {
            database: host.config.database_file(),
            db: handle.clone(),
            runtime: host.runtime.clone(),
            secrets: host.secrets.clone(),
            live,
            pipelines: pipelines.control(),
            refusals: server::Refusals::new(handle.clone()),
            token: Arc::new(token),
            certificate,
        });

        let draining = Arc::new(Notify::new());
        let notify = draining.clone();
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let operators = server::serve(listener, server::router(state.clone()), async move {
            stop.wait().await;
            tracing::info!("stopping: no new work; draining calls in flight");
            notify.notify_one();
            let _ = stopping.send(true);
        });
        tracing::info!(%address, "causeway listening");
        super::print(&format!("causeway listening on http://{address}\n"))?;
        let webhooks = match public {
            Some((listener, config, certificate)) => {
                let address = listener.local_addr()?;
                tracing::info!(%address, "causeway listening for webhooks over TLS");
                super::print(&format!(
                    "causeway listening for webhooks on https://{address}\n"
                ))?;
                tracing::info!(
                    "webhooks over TLS with the certificate {}",
                    certificate.describe()
                );
                tokio::spawn(certificate.keep_fresh());
                let mut stopped = stopped;
                Some(server::serve::serve_tls(
                    listener,
                    server::public_router(state),
                    async move {
                        let _ = stopped.wait_for(|stopped| *stopped).await;
                    },
                    config,
                ))
            }
            None => None,
        };
        let serve = async {
            match webhooks {
                Some(webhooks) => {
                    tokio::join!(operators, webhooks);
                }
                None => operators.await,
            }
        };
        tokio::select! {
            () = serve => {}
            () = async {
                draining.notified().await;
                tokio::time::sleep(drain_bound).await;
            } => tracing::warn!("calls still in flight after {drain_bound:?}: stopping without them"),
        }
        pipelines.stop(drain_bound).await;
        handle.host_stopped();
        writer.close();
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

/// SIGTERM or Ctrl-C (SIGINT), its handlers installed when made.
struct StopSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    #[cfg(unix)]
    fn listen() -> anyhow::Result<StopSignal> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignal {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    #[cfg(not(unix))]
    fn listen() -> anyhow::Result<StopSignal> {
        Ok(StopSignal {})
    }

    /// The first of them.
    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
