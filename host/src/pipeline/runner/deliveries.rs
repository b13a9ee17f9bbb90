//! Webhook deliveries: the pending ones handled by the source, in
//! batches, and those arriving while a read waits to be retried.

use std::time::Duration;

use crate::bindings::Record;
use crate::db::DbError;
use crate::operation::FailureKind;
use crate::operation::{Answer, Operation};
use crate::pipeline::config::PipelineConfig;
use crate::pipeline::retry::{GaveUp, retry};
use crate::pipeline::{dlq, history};
use crate::sandbox::{CallContext, CallError};
use crate::webhook::inbox;

use super::stage::Stages;
use super::{
    BYTES_PER_BATCH, DELIVERIES_PER_BATCH, RECORDS_PER_BATCH, RunEnd, Runner, Stop, ThisRun,
    WEBHOOK, ended, unexpected,
};

impl Runner {
    /// Waits `wait`, handling the webhook deliveries waiting (some may
    /// have come before the wait began) or arriving meanwhile, as runs of
    /// their own.
    pub(super) async fn deliveries_meanwhile(
        &self,
        wait: Duration,
        stop: &Stop,
    ) -> Result<(), GaveUp> {
        let until = tokio::time::Instant::now() + wait;
        // A pause comes through a long wait, as in `wait_out`.
        let looked_for = wait >= super::stage::PAUSE_LOOKED_FOR_EVERY;
        let paused_before = looked_for && self.paused().await;
        loop {
            if crate::pipeline::task::has_pending(&self.db, &self.name).await {
                match Box::pin(self.run(WEBHOOK, stop)).await {
                    Ok(RunEnd::Done) => {}
                    Ok(end) => return Err(GaveUp::Meanwhile(end)),
                    Err(e) => {
                        return Err(GaveUp::Meanwhile(RunEnd::Exhausted(format!(
                            "cannot record a webhook run: {e}"
                        ))));
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(()),
                () = stop.wait() => return Err(GaveUp::Interrupted),
                () = self.arrivals.notified() => {}
                () = self.paused_since(paused_before), if looked_for => {
                    return Err(GaveUp::Meanwhile(RunEnd::Paused));
                }
            }
        }
    }

    /// The oldest pending webhook deliveries, handled together: each turned
    /// into records by the source, then all their records transformed and
    /// written as one batch, and the deliveries marked done in one commit.
    /// A burst of deliveries costs the sinks a request per batch, not one
    /// per delivery (against a rate limit of 20 a second, the difference
    /// between keeping up and falling behind). Whether there may be more.
    pub(super) async fn deliveries(&self, run: &mut ThisRun, stop: &Stop) -> Result<bool, RunEnd> {
        let snapshot = self.live.snapshot();
        self.running_on(&snapshot);
        let (pipeline, stages) = self.stages(&snapshot)?;
        let name = self.name.clone();
        let up_to = run.deliveries_up_to;
        let may_take_newer = run
            .newer_until
            .is_some_and(|until| tokio::time::Instant::now() < until);
        let (pending, paused, newer, letters) = self
            .db
            .transact(move |conn| {
                let paused = history::paused(conn, &name)?;
                let letters = dlq::queued(conn, &name)?;
                let pending =
                    inbox::pending(conn, &name, up_to, DELIVERIES_PER_BATCH, BYTES_PER_BATCH)?;
                let newer = if pending.is_empty() && may_take_newer {
                    inbox::newest_pending(conn, &name)?.filter(|&newest| newest > up_to)
                } else {
                    None
                };
                Ok::<_, DbError>((pending, paused, newer, letters))
            })
            .await
            .map_err(|e| RunEnd::Exhausted(format!("cannot read the webhook inbox: {e}")))?;
        run.pause_taken(paused)?;
        let run_id = run.id;
        if pending.is_empty() {
            // Those that came meanwhile, while the run may take them.
            let Some(newest) = newer else {
                return Ok(false);
            };
            run.deliveries_up_to = newest;
            return Ok(true);
        }
        let context = self.context(&stages.source);
        let mut records = Vec::new();
        let mut done = Vec::new();
        for delivery in pending {
            // What was handled and not committed is handled again later.
            if stop.is_set() {
                return Err(RunEnd::Interrupted);
            }
            // The rest stay pending for the next batch.
            if records.len() >= RECORDS_PER_BATCH {
                break;
            }
            if let Some(handled) = self
                .handle(pipeline, &stages, &context, &delivery, stop)
                .await?
            {
                records.extend(handled);
                done.push(delivery.id);
            }
        }
        if done.is_empty() {
            // Every one was set aside: look for more.
            return Ok(true);
        }
        let delivered = self.flow(pipeline, &stages, records, letters, stop).await?;
        self.commit(pipeline, run_id, None, done, delivered).await?;
        Ok(true)
    }

    /// One delivery turned into records by the source; `None` when the
    /// plugin cannot make sense of it, and it is set aside, visibly, for
    /// the others to go on.
    async fn handle(
        &self,
        pipeline: &PipelineConfig,
        stages: &Stages<'_>,
        context: &CallContext,
        delivery: &inbox::Delivery,
        stop: &Stop,
    ) -> Result<Option<Vec<Record>>, RunEnd> {
        let what = format!(
            "pipeline {}: handle webhook {} with {}",
            self.name, delivery.delivery_id, pipeline.source.plugin
        );
        let installed = &stages.source.installed;
        let handled = retry(&pipeline.retry, &what, stop, || {
            installed.call_warm(
                &self.runtime.engine,
                Operation::Handle(delivery.request.clone()),
                context,
            )
        })
        .await;
        match handled {
            Ok(Answer::Records(records)) => Ok(Some(records)),
            Ok(other) => Err(unexpected(&pipeline.source.plugin, &other)),
            Err(GaveUp::Stopped(CallError::Plugin { error, .. }))
                if error.kind == FailureKind::Fatal =>
            {
                let reason = format!("{what}: {error}");
                tracing::warn!("{reason}: the delivery is set aside");
                let id = delivery.id;
                self.db
                    .transact(move |conn| Ok::<_, DbError>(inbox::finish(conn, id, Some(&reason))?))
                    .await
                    .map_err(|e| RunEnd::Exhausted(e.to_string()))?;
                Ok(None)
            }
            Err(gave_up) => Err(ended(&what, gave_up)),
        }
    }
}
