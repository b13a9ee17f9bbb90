//! A page's bookkeeping, committed in one transaction with its checkpoint
//! (or its deliveries marked done).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::pipeline::config::PipelineConfig;
use crate::pipeline::{dlq, history, unchanged, versions};
use crate::webhook::inbox;

use super::flow::Delivered;
use super::{RunEnd, Runner};

impl Runner {
    /// Commits what a page or a batch of deliveries did, in one
    /// transaction: its dead letters and counts, and the new checkpoint or
    /// the deliveries marked done.
    pub(super) async fn commit(
        &self,
        pipeline: &PipelineConfig,
        run_id: i64,
        checkpoint: Option<String>,
        deliveries: Vec<i64>,
        delivered: Delivered,
    ) -> Result<(), RunEnd> {
        let name = self.name.clone();
        let stream = pipeline.source.stream.clone();
        let Delivered {
            dead,
            took,
            origins,
            older,
            versions,
            writes,
            counts,
        } = delivered;
        let skip_unchanged = pipeline.skip_unchanged;
        let moved = counts.moved();
        // Letters superseded and replaced, told once the page commits.
        let tally: Arc<[AtomicUsize; 2]> = Arc::default();
        let told = Arc::clone(&tally);
        // Taken now, put back if the page does not commit.
        let proven = self.proven.changes();
        let saving = proven.clone();
        let bookkeeping = move |conn: &rusqlite::Connection| -> Result<(), String> {
            saving.save(conn, &name).map_err(|e| e.to_string())?;
            versions::remember(conn, &name, &versions).map_err(|e| e.to_string())?;
            // A pipeline that does not skip keeps nothing of what it
            // wrote, so nothing kept before goes stale.
            if skip_unchanged {
                unchanged::remember(conn, &name, &writes)
            } else {
                unchanged::forget(conn, &name).map(drop)
            }
            .map_err(|e| e.to_string())?;
            // Older letters first: a letter this page sets aside replaces
            // its record's older one at that stage itself.
            let mut superseded = 0;
            for t in &took {
                let records = t.records.iter().map(|(s, k)| (s.as_str(), k.as_str()));
                superseded += dlq::supersede(conn, &name, (&t.plugin, t.stage), records)
                    .map_err(|e| e.to_string())?;
            }
            // Only asked for when there are older letters to forget.
            let newest = if older.is_empty() {
                0
            } else {
                dlq::newest(conn).map_err(|e| e.to_string())?
            };
            let mut replaced = 0;
            for d in &dead {
                replaced += usize::from(
                    dlq::insert(
                        conn,
                        &name,
                        (&d.plugin, d.stage),
                        &d.record,
                        origins.of_key(&d.record.key),
                        &d.reason,
                        Some(run_id),
                    )
                    .map_err(|e| e.to_string())?,
                );
            }
            // Then those of other stages: what this page did with each
            // record, at whichever stage, is newer.
            let older = older.iter().map(|(o, k)| (o.as_str(), k.as_str()));
            superseded +=
                dlq::forget_older(conn, &name, older, newest).map_err(|e| e.to_string())?;
            tally[0].store(superseded, Ordering::Relaxed);
            tally[1].store(replaced, Ordering::Relaxed);
            history::count(conn, run_id, moved).map_err(|e| e.to_string())?;
            for &id in &deliveries {
                inbox::finish(conn, id, None).map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        let committed = match checkpoint {
            Some(checkpoint) => {
                crate::checkpoint::commit(&self.db, &self.name, &stream, &checkpoint, bookkeeping)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => self
                .db
                .transact(move |conn| {
                    bookkeeping(conn).map_err(crate::checkpoint::CheckpointError::Bookkeeping)
                })
                .await
                .map_err(|e| e.to_string()),
        };
        if committed.is_err() {
            self.proven.put_back(proven);
        }
        committed.map_err(|e| {
            RunEnd::Exhausted(format!(
                "pipeline {}: the page's bookkeeping was not committed ({e}); it will be read again",
                self.name
            ))
        })?;
        // Counted once committed, as the run's history counts them.
        self.stats.records(&moved);
        let [superseded, replaced] = [0, 1].map(|i| told[i].load(Ordering::Relaxed));
        if superseded > 0 {
            tracing::info!(
                pipeline = %self.name,
                "{superseded} dead letters forgotten: a newer version of each one's record has come through the pipeline since"
            );
        }
        if replaced > 0 {
            tracing::info!(
                pipeline = %self.name,
                "{replaced} dead letters replaced by a newer version of their record, set aside again"
            );
        }
        Ok(())
    }
}
