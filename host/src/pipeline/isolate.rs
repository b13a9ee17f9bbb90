//! Records a transform cannot map, or a sink cannot write. A transform
//! answers for its whole batch, and a sink's error fails its whole batch:
//! one record can make either fail every time. When a stage fails a batch
//! in a way one record can cause (it answers `fatal`, it crashes, it runs
//! out of memory), the batch is split in halves, and halves of those, until
//! the records it fails on alone are found; they are set aside as dead
//! letters and the rest flow. Calling the stage again on part of its batch
//! is safe: transforms are deterministic and touch nothing outside, and a
//! sink's writes are idempotent by key (delivery is at-least-once).
//!
//! A failure is taken for a record's only when the stage takes other
//! records of the same batch: one that fails every record (a bug, a CRM
//! whose every contact changed shape, a sink wired to the wrong stream) is
//! the plugin's trouble, and the pipeline stops with its reason, as
//! before. A record alone in its batch (the last page of a read, a webhook
//! delivery of one contact) has no others beside it: it is set aside only
//! when the same stage (plugin build and stage configuration) took other
//! batches in this pipeline, and has not failed [`GIVE_UP_AFTER`] such
//! records in a row since ([`Proven`], kept across restarts).

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use crate::bindings::Record;
use crate::sandbox::CallError;

/// When this many records in a row failed alone and none was mapped yet,
/// the search stops: the plugin fails everything, and splitting further
/// would only cost calls.
pub const GIVE_UP_AFTER: usize = 16;

/// The most calls one search makes. A few bad records in a batch of 1000
/// take a few dozen; a batch where many records fail alone, or a stage
/// that fails every part of more than one record, is not worth more (and
/// a slow stage's calls add up).
pub const MAX_CALLS: usize = 256;

/// The most stages of one pipeline kept on record: the newest. Each
/// upgrade or configuration edit of a stage adds one; the old ones are
/// never asked about again.
const PROVEN_KEPT: usize = 32;

/// A pipeline's stages that took a batch, each keyed by its plugin's
/// digest and its stage configuration's ([`Proven::key`]), with the
/// records it failed on alone, batch after batch, since. An upgrade or a
/// configuration edit is a new key, proven again by the next batch it
/// takes. Changes are saved with the page that made them, so a restart
/// keeps what the stages showed.
#[derive(Debug, Default)]
pub struct Proven {
    stages: Mutex<Stages>,
}

#[derive(Debug, Default)]
struct Stages {
    failed_alone: HashMap<String, usize>,
    /// Not yet saved: each key's count, or `None` for no longer proven.
    changed: HashMap<String, Option<usize>>,
}

impl Proven {
    /// What `pipeline`'s stages showed, as saved.
    pub fn load(conn: &Connection, pipeline: &str) -> rusqlite::Result<Proven> {
        let mut statement =
            conn.prepare("SELECT stage, failed_alone FROM stage_proven WHERE pipeline = ?1")?;
        let rows = statement.query_map(params![pipeline], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        let mut failed_alone = HashMap::new();
        for row in rows {
            let (stage, failed) = row?;
            failed_alone.insert(stage, usize::try_from(failed).unwrap_or(GIVE_UP_AFTER));
        }
        Ok(Proven {
            stages: Mutex::new(Stages {
                failed_alone,
                changed: HashMap::new(),
            }),
        })
    }

    /// The key of a stage: its plugin's build and its configuration (by
    /// digest: a configuration may be long).
    pub fn key(plugin_digest: &str, config: &serde_json::Value) -> String {
        format!(
            "{plugin_digest}#{}",
            crate::plugin::digest(config.to_string().as_bytes())
        )
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, Stages> {
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `stage` took a batch.
    pub fn took(&self, stage: &str) {
        let mut stages = self.stages();
        if stages.failed_alone.get(stage) != Some(&0) {
            stages.failed_alone.insert(stage.to_string(), 0);
            stages.changed.insert(stage.to_string(), Some(0));
        }
    }

    /// `stage` failed a batch of one record in a way the record can cause:
    /// whether to set that record aside (the stage took batches before,
    /// and fewer than [`GIVE_UP_AFTER`] such records in a row since). Past
    /// that, the stage is no longer taken for proven.
    pub fn failed_alone(&self, stage: &str) -> bool {
        let mut stages = self.stages();
        let now = match stages.failed_alone.get(stage) {
            None => return false,
            Some(failed) if failed + 1 < GIVE_UP_AFTER => Some(failed + 1),
            Some(_) => None,
        };
        match now {
            Some(failed) => stages.failed_alone.insert(stage.to_string(), failed),
            None => stages.failed_alone.remove(stage),
        };
        stages.changed.insert(stage.to_string(), now);
        now.is_some()
    }

    /// What changed since the last save, taken to be saved with a page's
    /// commit ([`Changes::save`]); [`Proven::put_back`] if that commit fails.
    pub fn changes(&self) -> Changes {
        Changes(std::mem::take(&mut self.stages().changed))
    }

    /// Changes whose commit failed, to be saved with the next one (a
    /// change made since wins).
    pub fn put_back(&self, changes: Changes) {
        let mut stages = self.stages();
        for (stage, now) in changes.0 {
            stages.changed.entry(stage).or_insert(now);
        }
    }
}

/// Changes to what a pipeline's stages showed, not yet saved.
#[derive(Debug, Default, Clone)]
pub struct Changes(HashMap<String, Option<usize>>);

impl Changes {
    /// Saves them for `pipeline`, in the transaction `conn` is in.
    pub fn save(&self, conn: &Connection, pipeline: &str) -> rusqlite::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        save_changes(conn, pipeline, &self.0)
    }
}

fn save_changes(
    conn: &Connection,
    pipeline: &str,
    changed: &HashMap<String, Option<usize>>,
) -> rusqlite::Result<()> {
    let now = crate::audit::now();
    for (stage, failed) in changed {
        match failed {
            Some(failed) => conn.execute(
                "INSERT INTO stage_proven (pipeline, stage, failed_alone, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (pipeline, stage) DO UPDATE SET
                     failed_alone = excluded.failed_alone, updated_at = excluded.updated_at",
                params![
                    pipeline,
                    stage,
                    i64::try_from(*failed).unwrap_or(i64::MAX),
                    now
                ],
            )?,
            None => conn.execute(
                "DELETE FROM stage_proven WHERE pipeline = ?1 AND stage = ?2",
                params![pipeline, stage],
            )?,
        };
    }
    conn.execute(
        "DELETE FROM stage_proven WHERE pipeline = ?1 AND stage NOT IN
             (SELECT stage FROM stage_proven WHERE pipeline = ?1 ORDER BY updated_at DESC LIMIT ?2)",
        params![pipeline, PROVEN_KEPT as i64],
    )?;
    Ok(())
}

/// Forgets the stages `pipeline` proved, at most `limit` of them, once it
/// has no run left on record: called for a pipeline no longer configured,
/// whose runs go with their retention. While a run is left, putting the
/// pipeline back keeps what its stages showed.
pub fn expire(conn: &Connection, pipeline: &str, limit: usize) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM stage_proven WHERE pipeline = ?1 AND stage IN
             (SELECT stage FROM stage_proven WHERE pipeline = ?1
              AND NOT EXISTS (SELECT 1 FROM pipeline_run WHERE pipeline = ?1) LIMIT ?2)",
        params![pipeline, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

/// How a call on part of a batch failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// In a way one record can cause: why, to tell in the dead letter.
    Record(String),
    /// In a way that ends the search (and the run), such as the host
    /// stopping or the plugin's configuration being wrong.
    End(E),
}

/// How a search ended.
#[derive(Debug, PartialEq)]
pub enum Search<T> {
    /// The records the stage fails on alone were found.
    Found(Isolated<T>),
    /// The stage took no part (or the first [`GIVE_UP_AFTER`] records
    /// each failed alone before it took any): the failure is the plugin's,
    /// not a record's.
    Plugin,
    /// [`MAX_CALLS`] calls did not find them all.
    TooLong,
}

/// What a search found.
#[derive(Debug, PartialEq)]
pub struct Isolated<T> {
    /// The answers of the parts the stage took, in batch order.
    pub mapped: Vec<T>,
    /// The records it failed on alone, with why.
    pub aside: Vec<(Record, String)>,
}

/// Whether `error` may be one record's doing, so that looking for that
/// record is worth it. Configuration, authorisation and limits the plugin
/// shares with every record are not; nor are waits that spent a budget.
pub fn may_be_a_record(error: &CallError) -> bool {
    match error {
        CallError::Plugin { error, .. } => error.kind == crate::operation::FailureKind::Fatal,
        // A deterministic transform answers the same record the same way.
        // Memory and fuel grow with the batch: halves that fit are mapped,
        // and a record that needs more alone is set aside.
        CallError::Trap { .. }
        | CallError::OutOfMemory { .. }
        | CallError::OutOfFuel { .. }
        | CallError::BrokenAnswer { .. } => true,
        CallError::Timeout { .. }
        | CallError::Busy { .. }
        | CallError::ResourceLimit { .. }
        | CallError::Invalid(_) => false,
    }
}

/// Splits `batch`, which the stage failed as a whole, until the records it
/// fails on alone are found; `call` hands one part to the stage.
pub async fn isolate<T, E, F, Fut>(batch: Vec<Record>, mut call: F) -> Result<Search<T>, E>
where
    F: FnMut(Vec<Record>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, Failure<E>>>,
{
    let mut found = Isolated {
        mapped: Vec::new(),
        aside: Vec::new(),
    };
    let mut mapped_some = false;
    // Parts still to try, the next one last: depth first, left to right,
    // so the answers come in the batch's order.
    let mut parts = halves(batch).into_iter().rev().collect::<Vec<_>>();
    let mut calls = 0;
    while let Some(part) = parts.pop() {
        if calls == MAX_CALLS {
            return Ok(Search::TooLong);
        }
        calls += 1;
        match call(part.clone()).await {
            Ok(answer) => {
                mapped_some = true;
                found.mapped.extend(answer);
            }
            Err(Failure::End(end)) => return Err(end),
            Err(Failure::Record(why)) => {
                if part.len() > 1 {
                    parts.extend(halves(part).into_iter().rev());
                    continue;
                }
                found
                    .aside
                    .extend(part.into_iter().map(|r| (r, why.clone())));
                if !mapped_some && found.aside.len() >= GIVE_UP_AFTER {
                    return Ok(Search::Plugin);
                }
            }
        }
    }
    Ok(if mapped_some {
        Search::Found(found)
    } else {
        Search::Plugin
    })
}

/// The first half and the rest (a part of one record has no second half).
fn halves(mut part: Vec<Record>) -> Vec<Vec<Record>> {
    if part.len() < 2 {
        return vec![part];
    }
    let rest = part.split_off(part.len() / 2);
    vec![part, rest]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Op;
    use std::cell::Cell;

    fn batch(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                stream: "contacts".into(),
                key: format!("c-{i}"),
                op: Op::Upsert,
                data: "{}".into(),
                source_timestamp: None,
            })
            .collect()
    }

    fn keys(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.key.clone()).collect()
    }

    /// A transform that fails any part holding one of `bad`, and else
    /// answers each record twice (so the answers are told from the input);
    /// and the calls it served.
    async fn search(n: usize, bad: &[&str]) -> (Search<Record>, usize) {
        let calls = Cell::new(0);
        let found = isolate::<_, (), _, _>(batch(n), |part| {
            calls.set(calls.get() + 1);
            let failed = part.iter().find(|r| bad.contains(&r.key.as_str()));
            let answer = match failed {
                Some(r) => Err(Failure::Record(format!("cannot map {}", r.key))),
                None => Ok(part.iter().flat_map(|r| [r.clone(), r.clone()]).collect()),
            };
            async move { answer }
        })
        .await;
        (
            found.unwrap_or_else(|()| panic!("no end was given")),
            calls.get(),
        )
    }

    #[tokio::test]
    async fn the_records_a_transform_fails_on_alone_are_set_aside_and_the_rest_mapped_in_order() {
        let (found, calls) = search(1000, &["c-3", "c-500", "c-999"]).await;
        let Search::Found(found) = found else {
            panic!("the rest were mapped: {found:?}")
        };
        let aside: Vec<(String, String)> = found
            .aside
            .iter()
            .map(|(r, why)| (r.key.clone(), why.clone()))
            .collect();
        assert_eq!(
            aside,
            ["c-3", "c-500", "c-999"].map(|k| (k.to_string(), format!("cannot map {k}")))
        );
        let expected: Vec<String> = (0..1000)
            .filter(|i| ![3, 500, 999].contains(i))
            .flat_map(|i| [format!("c-{i}"), format!("c-{i}")])
            .collect();
        assert_eq!(keys(&found.mapped), expected);
        // Three records among 1000: about 2 · 3 · log2(1000) calls, not 1000.
        assert!(calls <= 60, "{calls} calls");
    }

    #[tokio::test]
    async fn a_transform_that_fails_every_record_is_the_plugins_trouble_and_the_search_is_short() {
        let all: Vec<String> = (0..1000).map(|i| format!("c-{i}")).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (found, calls) = search(1000, &all).await;
        assert_eq!(found, Search::Plugin);
        // The left edge down to one record, then the next records alone.
        assert!(calls <= 2 * GIVE_UP_AFTER + 10, "{calls} calls");

        // Fewer records than the give-up count: every one tried alone.
        let (found, _) = search(2, &["c-0", "c-1"]).await;
        assert_eq!(found, Search::Plugin);
    }

    #[tokio::test]
    async fn a_search_that_would_take_too_many_calls_is_cut_short() {
        // Every other record of 1000 fails alone: hundreds of calls to
        // find them all.
        let odd: Vec<String> = (0..1000).step_by(2).map(|i| format!("c-{i}")).collect();
        let odd: Vec<&str> = odd.iter().map(String::as_str).collect();
        let (found, calls) = search(1000, &odd).await;
        assert_eq!(found, Search::TooLong);
        assert_eq!(calls, MAX_CALLS);
    }

    #[tokio::test]
    async fn a_part_it_maps_to_nothing_counts_as_mapped() {
        let found = isolate::<Record, (), _, _>(batch(4), |part| {
            let answer = if part.iter().any(|r| r.key == "c-0") {
                Err(Failure::Record("no".into()))
            } else {
                Ok(Vec::new())
            };
            async move { answer }
        })
        .await
        .unwrap_or_else(|()| panic!("no end was given"));
        let Search::Found(found) = found else {
            panic!("the filter mapped the rest: {found:?}")
        };
        assert_eq!(keys(&found.mapped), Vec::<String>::new());
        assert_eq!(found.aside.len(), 1);
    }

    #[test]
    fn what_the_stages_showed_is_saved_with_a_page_and_known_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let proven = Proven::default();
        proven.took("map@1");
        assert!(proven.failed_alone("map@1"));
        proven.changes().save(&conn, "p").unwrap();

        let restarted = Proven::load(&conn, "p").unwrap();
        assert!(
            !Proven::load(&conn, "q").unwrap().failed_alone("map@1"),
            "another pipeline's stage"
        );
        // One failure alone came before the restart: 14 more are taken.
        for _ in 2..GIVE_UP_AFTER {
            assert!(restarted.failed_alone("map@1"));
        }
        assert!(!restarted.failed_alone("map@1"));
        restarted.changes().save(&conn, "p").unwrap();
        assert!(
            !Proven::load(&conn, "p").unwrap().failed_alone("map@1"),
            "no longer proven, after a restart too"
        );

        // Each upgrade or edit is a stage of its own: the newest are kept.
        for build in 0..PROVEN_KEPT + 8 {
            proven.took(&format!("map@{build}"));
        }
        proven.changes().save(&conn, "p").unwrap();
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM stage_proven", [], |row| row.get(0))
            .unwrap();
        assert_eq!(kept, PROVEN_KEPT as i64);
    }

    #[test]
    fn changes_whose_page_did_not_commit_are_saved_with_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("db")).unwrap();
        let proven = Proven::default();
        proven.took("map@1");
        proven.took("sink@1");
        // The page's commit failed: nothing saved, the changes put back.
        let failed = proven.changes();
        assert!(proven.changes().0.is_empty(), "taken");
        // A change made meanwhile wins over the one put back.
        assert!(proven.failed_alone("map@1"));
        proven.put_back(failed);
        proven.changes().save(&conn, "p").unwrap();
        let restarted = Proven::load(&conn, "p").unwrap();
        let counts = &restarted.stages().failed_alone;
        assert_eq!(counts.get("map@1"), Some(&1));
        assert_eq!(counts.get("sink@1"), Some(&0));
    }

    #[test]
    fn a_record_alone_is_set_aside_only_by_a_stage_that_took_others_and_not_for_ever() {
        let proven = Proven::default();
        assert!(!proven.failed_alone("map@1"), "never took a batch");
        proven.took("map@1");
        assert!(
            !proven.failed_alone("map@2"),
            "another build, or configuration"
        );
        for _ in 1..GIVE_UP_AFTER {
            assert!(proven.failed_alone("map@1"));
        }
        // So many in a row: the stage's trouble; proven again only by a
        // batch it takes.
        assert!(!proven.failed_alone("map@1"));
        assert!(!proven.failed_alone("map@1"));
        proven.took("map@1");
        assert!(proven.failed_alone("map@1"));
        proven.took("map@1");
        for _ in 1..GIVE_UP_AFTER {
            assert!(
                proven.failed_alone("map@1"),
                "a batch taken starts the count over"
            );
        }
    }

    #[tokio::test]
    async fn an_end_ends_the_search_at_once() {
        let calls = Cell::new(0);
        let ended = isolate(batch(8), |_| {
            calls.set(calls.get() + 1);
            async { Err::<Vec<Record>, _>(Failure::End("the host is stopping")) }
        })
        .await;
        assert_eq!(ended, Err("the host is stopping"));
        assert_eq!(calls.get(), 1);
    }
}
