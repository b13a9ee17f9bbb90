//! What a page's records went through: skipped, set aside at the source,
//! transformed and written, and the counts of each.

use std::borrow::Cow;

use crate::bindings::Record;
use crate::db::DbError;
use crate::pipeline::config::PipelineConfig;
use crate::pipeline::isolate::Proven;
use crate::pipeline::{dlq, history, unchanged, versions};

use super::stage::Stages;
use super::{RunEnd, Runner, Stop, some_keys};

/// Counts of one page.
#[derive(Debug, Default)]
pub(super) struct PageCounts {
    read: usize,
    written: usize,
    rejected: usize,
    /// Older than a version let through before ([`versions`]).
    skipped: usize,
    /// Given to a transform that answered nothing for them.
    dropped: usize,
    /// Given to no sink: each had written them as they are.
    unchanged: usize,
}

impl PageCounts {
    /// As the run's history adds them up.
    pub(super) fn moved(&self) -> history::Moved {
        let n = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        history::Moved {
            read: n(self.read),
            written: n(self.written),
            rejected: n(self.rejected),
            skipped: n(self.skipped),
            dropped: n(self.dropped),
            unchanged: n(self.unchanged),
        }
    }
}

/// Adds to `unwritten` the records of `rejected` (one sink's) that no
/// sink before refused: a record two sinks refuse is one record not
/// written. Compared whole, since one batch may hold several versions of
/// a record.
fn not_written(unwritten: &mut Vec<Record>, rejected: &[(Record, String)]) {
    let fresh: Vec<Record> = {
        // The earlier sinks' by key, so a page all sinks refuse is not
        // compared record by record against each other.
        let mut earlier: std::collections::HashMap<(&str, &str), Vec<&Record>> =
            std::collections::HashMap::new();
        for r in unwritten.iter() {
            earlier.entry((&r.stream, &r.key)).or_default().push(r);
        }
        rejected
            .iter()
            .map(|(r, _)| r)
            .filter(|r| {
                earlier
                    .get(&(r.stream.as_str(), r.key.as_str()))
                    .is_none_or(|versions| !versions.contains(r))
            })
            .cloned()
            .collect()
    };
    unwritten.extend(fresh);
}

/// How many of the records with keys `given` a transform answered
/// nothing for: neither a record (it may answer several for one) nor a
/// rejection. A filter drops records so.
fn answered_nothing(given: &[String], mapped: &[Record], aside: &[(Record, String)]) -> usize {
    let answered: std::collections::HashSet<&str> = mapped
        .iter()
        .chain(aside.iter().map(|(r, _)| r))
        .map(|r| r.key.as_str())
        .collect();
    given
        .iter()
        .filter(|k| !answered.contains(k.as_str()))
        .count()
}

/// What one page or batch of deliveries did.
pub(super) struct Delivered {
    pub(super) dead: Vec<SetAside>,
    /// What each stage took of the records it had dead letters of: those
    /// letters are superseded ([`dlq::supersede`]).
    pub(super) took: Vec<Took>,
    /// The source's records of the page, by key: what each letter set
    /// aside is a version of.
    pub(super) origins: dlq::Origins,
    /// Those of them that may have letters of older versions, at any
    /// stage: forgotten ([`dlq::forget_older`]).
    pub(super) older: Vec<(String, String)>,
    /// The versions let through, when the pipeline keeps them
    /// ([`versions`]).
    pub(super) versions: Vec<versions::Versioned>,
    /// What each sink wrote, when the pipeline skips unchanged records
    /// ([`unchanged`]).
    pub(super) writes: Vec<unchanged::Writes>,
    pub(super) counts: PageCounts,
}

/// The records (streams and keys) one stage took from a page: mapped (or
/// dropped) by a transform, written by a sink.
pub(super) struct Took {
    pub(super) plugin: String,
    pub(super) stage: dlq::Stage,
    pub(super) records: Vec<(String, String)>,
}

impl Took {
    /// The records `plugin` was given (of those it has letters of), but
    /// for those it set `aside`; nothing when it was given none.
    fn all_but<'a>(
        plugin: &str,
        stage: dlq::Stage,
        mut given: Vec<(String, String)>,
        aside: impl IntoIterator<Item = &'a Record>,
    ) -> Option<Took> {
        if given.is_empty() {
            return None;
        }
        let aside: std::collections::HashSet<(&str, &str)> = aside
            .into_iter()
            .map(|r| (r.stream.as_str(), r.key.as_str()))
            .collect();
        given.retain(|(stream, key)| !aside.contains(&(stream.as_str(), key.as_str())));
        Some(Took {
            plugin: plugin.to_string(),
            stage,
            records: given,
        })
    }
}

/// A record a stage set aside, for the dead-letter queue.
pub(super) struct SetAside {
    /// The stage's plugin, and its kind.
    pub(super) plugin: String,
    pub(super) stage: dlq::Stage,
    pub(super) record: Record,
    pub(super) reason: String,
}

impl Runner {
    /// Transforms `records` and writes them to every sink: what was
    /// rejected, and the counts; and what each stage took of the records
    /// it has `letters` of.
    pub(super) async fn flow(
        &self,
        pipeline: &PipelineConfig,
        stages: &Stages<'_>,
        mut records: Vec<Record>,
        letters: dlq::Queued,
        stop: &Stop,
    ) -> Result<Delivered, RunEnd> {
        let mut counts = PageCounts {
            read: records.len(),
            ..PageCounts::default()
        };
        let source = &pipeline.source.plugin;
        let (through, versions) = self.skip_older(pipeline, records).await?;
        counts.skipped = counts.read.saturating_sub(through.len());
        records = through;
        let origins = dlq::Origins::of(&records);
        let older = letters.older_versions(&records, &origins);
        let (valid, mut dead) = self.against_the_contract(source, records);
        records = valid;
        // Each record a stage refused counts, though of several versions
        // of one record in the batch only the newest stays a letter.
        let mut refused = dead.len();
        let mut took = Vec::new();
        took.extend(Took::all_but(
            source,
            dlq::Stage::Source,
            letters.of((source, dlq::Stage::Source), &records),
            [],
        ));
        for (stage, transform) in pipeline.transforms.iter().zip(&stages.transforms) {
            if records.is_empty() {
                break;
            }
            let given = letters.of((&stage.plugin, dlq::Stage::Transform), &records);
            let repeated = dlq::repeated(&records);
            let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
            let (mapped, aside) = self
                .transform(pipeline, &stage.plugin, transform, records, stop)
                .await?;
            counts.dropped += answered_nothing(&keys, &mapped, &aside);
            refused += aside.len();
            let aside = dlq::newest_only(&repeated, aside);
            took.extend(Took::all_but(
                &stage.plugin,
                dlq::Stage::Transform,
                given,
                aside.iter().map(|(r, _)| r),
            ));
            records = mapped;
            dead.extend(aside.into_iter().map(|(record, reason)| SetAside {
                plugin: stage.plugin.clone(),
                stage: dlq::Stage::Transform,
                record,
                reason,
            }));
        }
        // The records some sink refused: not written.
        let mut unwritten: Vec<Record> = Vec::new();
        // What the sinks hold already, when the pipeline skips it; which
        // records some sink was given.
        let known = self.written_before(pipeline, &records).await?;
        let mut given_to_any = vec![known.is_none(); records.len()];
        let mut writes = Vec::new();
        for (stage, sink) in pipeline.sinks.iter().zip(&stages.sinks) {
            if records.is_empty() {
                break;
            }
            let (given, digests) = match &known {
                None => (Cow::Borrowed(records.as_slice()), None),
                Some(known) => {
                    let sink_as = Proven::key(&sink.installed.plugin.info.digest, &sink.config);
                    let (given, digests, same) = known.split(&stage.plugin, &sink_as, &records);
                    for (any, same) in given_to_any.iter_mut().zip(same) {
                        *any |= !same;
                    }
                    (Cow::Owned(given), Some(digests))
                }
            };
            let rejected = if given.is_empty() {
                Vec::new()
            } else {
                self.write(pipeline, &stage.plugin, sink, &given, stop)
                    .await?
            };
            if let (Some(digests), Some(known)) = (digests, &known) {
                writes.push(unchanged::Writes::of(
                    (&stage.plugin, &known.since),
                    &given,
                    &digests,
                    &rejected,
                ));
            }
            not_written(&mut unwritten, &rejected);
            let rejected = if rejected.is_empty() {
                rejected
            } else {
                dlq::newest_only(&dlq::repeated(&records), rejected)
            };
            took.extend(Took::all_but(
                &stage.plugin,
                dlq::Stage::Sink,
                letters.of((&stage.plugin, dlq::Stage::Sink), &records),
                rejected.iter().map(|(r, _)| r),
            ));
            for (record, reason) in rejected {
                dead.push(SetAside {
                    plugin: stage.plugin.clone(),
                    stage: dlq::Stage::Sink,
                    record,
                    reason,
                });
            }
        }
        counts.unchanged = given_to_any.iter().filter(|given| !**given).count();
        counts.written = records
            .len()
            .saturating_sub(unwritten.len() + counts.unchanged);
        counts.rejected = refused + unwritten.len();
        Ok(Delivered {
            dead,
            took,
            origins,
            older,
            versions,
            writes,
            counts,
        })
    }

    /// What the sinks hold of `records` already, when the pipeline skips
    /// unchanged records ([`unchanged`]).
    async fn written_before(
        &self,
        pipeline: &PipelineConfig,
        records: &[Record],
    ) -> Result<Option<unchanged::Known>, RunEnd> {
        if !pipeline.skip_unchanged || records.is_empty() {
            return Ok(None);
        }
        let name = self.name.clone();
        let sinks: Vec<String> = pipeline.sinks.iter().map(|s| s.plugin.clone()).collect();
        let ids: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.stream.clone(), r.key.clone()))
            .collect();
        let known = self
            .db
            .transact(move |conn| Ok::<_, DbError>(unchanged::known(conn, &name, &sinks, &ids)?))
            .await
            .map_err(|e| {
                RunEnd::Exhausted(format!(
                    "pipeline {}: cannot read what its sinks were last given: {e}",
                    self.name
                ))
            })?;
        Ok(Some(known))
    }

    /// The records of `records` to let through: in a pipeline with a
    /// webhook trigger, those older (by the source's timestamp) than a
    /// version of them let through before are skipped and logged
    /// ([`versions`]). With the versions to remember.
    async fn skip_older(
        &self,
        pipeline: &PipelineConfig,
        records: Vec<Record>,
    ) -> Result<(Vec<Record>, Vec<versions::Versioned>), RunEnd> {
        // A polled pipeline's page copies no keys for it.
        if pipeline.webhook.is_none() {
            return Ok((records, Vec::new()));
        }
        let timestamped = versions::timestamped(&records);
        if timestamped.is_empty() {
            return Ok((records, Vec::new()));
        }
        let name = self.name.clone();
        let mut known = self
            .db
            .transact(move |conn| Ok::<_, DbError>(versions::known(conn, &name, timestamped)?))
            .await
            .map_err(|e| {
                RunEnd::Exhausted(format!(
                    "pipeline {}: cannot read the versions of records let through: {e}",
                    self.name
                ))
            })?;
        let (through, older) = known.skip_older(records);
        if !known.ahead().is_empty() {
            tracing::warn!(
                pipeline = %self.name,
                "source {}: {} records carry a timestamp more than a day ahead of this host's clock ({}): taken as having none, so they skip nothing later; the plugin may stamp microseconds or nanoseconds where the contract wants milliseconds",
                pipeline.source.plugin,
                known.ahead().len(),
                some_keys(known.ahead())
            );
        }
        if !older.is_empty() {
            tracing::info!(
                pipeline = %self.name,
                "{} records skipped, each older than a version of it already let through (a late webhook delivery, or a read of a lagging source): {}",
                older.len(),
                some_keys(&older)
            );
        }
        Ok((through, known.newer()))
    }

    /// The records of `records` that keep the contract, and those the
    /// source `plugin` answered breaking it (no key, data that is not a
    /// JSON object), set aside: passed on, they would reach every sink
    /// (all of a page's keyless records written over one another).
    fn against_the_contract(
        &self,
        plugin: &str,
        records: Vec<Record>,
    ) -> (Vec<Record>, Vec<SetAside>) {
        let problems: Vec<_> = records
            .iter()
            .map(crate::contract::record_problems)
            .collect();
        if problems.iter().all(Vec::is_empty) {
            return (records, Vec::new());
        }
        // Of versions of one record in the batch, only the newest is a
        // letter (dlq::newest_only).
        let repeated = dlq::repeated(&records);
        let mut broken = Vec::new();
        let mut valid = Vec::with_capacity(records.len());
        for (record, problems) in records.into_iter().zip(problems) {
            if problems.is_empty() {
                valid.push(record);
            } else {
                broken.push((record, dlq::broken_by_source(plugin, &problems)));
            }
        }
        let aside: Vec<SetAside> = dlq::newest_only(&repeated, broken)
            .into_iter()
            .map(|(record, reason)| SetAside {
                plugin: plugin.to_string(),
                stage: dlq::Stage::Source,
                reason,
                record,
            })
            .collect();
        if !aside.is_empty() {
            tracing::warn!(
                "pipeline {}: source {plugin}: {} records ({}) set aside as dead letters, the first {}; `causeway test` checks what a record must be (records-valid)",
                self.name,
                aside.len(),
                some_keys(aside.iter().map(|a| &a.record)),
                aside[0].reason.trim_start_matches("set aside: "),
            );
        }
        (valid, aside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::runner::tests::keyed;

    #[test]
    fn a_record_two_sinks_refuse_is_one_record_not_written_and_each_version_counts() {
        let versioned = |key: &str, data: &str| Record {
            data: data.into(),
            ..keyed(key)
        };
        let refused = |records: &[Record]| -> Vec<(Record, String)> {
            records.iter().map(|r| (r.clone(), "no".into())).collect()
        };
        let (a, b1, b2) = (keyed("a"), versioned("b", "1"), versioned("b", "2"));
        let mut unwritten = Vec::new();
        not_written(&mut unwritten, &refused(&[a.clone(), b1.clone()]));
        assert_eq!(unwritten.len(), 2);
        // The second sink refuses a and b1 again, and b's other version.
        not_written(&mut unwritten, &refused(&[a, b1, b2.clone()]));
        assert_eq!(unwritten.len(), 3);
        assert_eq!(unwritten[2], b2);
        // One sink refusing two versions of one record: two records.
        let mut unwritten = Vec::new();
        not_written(
            &mut unwritten,
            &refused(&[versioned("c", "1"), versioned("c", "2")]),
        );
        assert_eq!(unwritten.len(), 2);
    }

    #[test]
    fn a_record_a_transform_answers_nothing_for_is_dropped() {
        let given = ["a", "b", "c", "d"].map(String::from);
        // a mapped into two records, b set aside, c and d answered nothing.
        let mapped = [keyed("a"), keyed("a")];
        let aside = [(keyed("b"), "no".to_string())];
        assert_eq!(answered_nothing(&given, &mapped, &aside), 2);
        assert_eq!(answered_nothing(&given[..2], &mapped, &aside), 0);
    }
}
