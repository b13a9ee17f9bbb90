//! Pipelines end to end: the real host runs CRM → map-fullname → mailer
//! (and calendar) against the fakes on 127.0.0.1, by polling and by webhook,
//! through outages, rate limits, rejections, crashes and forged deliveries.

use crate::support;

use std::time::Duration;

use causeway::fakes::{FakeCrm, Fault};
use serde_json::{Value, json};
use support::connectors::{CRM_TOKEN, LIST, MAILER_KEY, World, person};
use support::{Metrics, RunningHost, audit_rows, run, run_json, wait_until};

fn world(retry: &str) -> World {
    world_with("every = \"200ms\"", retry)
}

/// The pipeline CRM → map-fullname → mailer with `trigger` and `retry`.
fn world_with(trigger: &str, retry: &str) -> World {
    World::new(
        3,
        "",
        &format!(
            r#"
[pipelines.contacts-to-mailer]
{trigger}
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "mailer-sink" }}]

[pipelines.contacts-to-mailer.retry]
{retry}
"#
        ),
    )
}

/// The pipeline CRM → map-fullname → mailer every 200 ms, on a host whose
/// `[engine]` holds `engine`, crm-source reading pages of `page_size`, and
/// `grants` added to grants.toml.
fn on_engine(page_size: u32, grants: &str, engine: &str) -> World {
    World::new(
        page_size,
        grants,
        &format!(
            r#"
[engine]
{engine}

[pipelines.contacts-to-mailer]
every = "200ms"
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "mailer-sink" }}]
"#
        ),
    )
}

impl World {
    /// `causeway runs --json`: the runs, newest first.
    fn runs(&self) -> Value {
        run_json(self.scratch.causeway().args(["runs", "--json"]))
    }

    /// `causeway pipeline ACTION contacts-to-mailer`, which must succeed;
    /// what it printed.
    fn lever(&self, action: &str) -> String {
        let out = run(self
            .causeway()
            .args(["pipeline", action, "contacts-to-mailer"]));
        assert!(out.success, "{action}: {}{}", out.stdout, out.stderr);
        out.stdout
    }

    /// The keys test-kv stores for `pipeline`, in order.
    fn kv_stored(&self, pipeline: &str) -> Vec<String> {
        let stored = run_json(self.scratch.causeway().args([
            "storage",
            "test-kv",
            "--pipeline",
            pipeline,
            "--json",
        ]));
        let keys = stored.as_array().unwrap().iter();
        keys.map(|k| k["key"].as_str().unwrap().to_string())
            .collect()
    }

    /// The operator's acts of `capability` on record in the audit log
    /// (`pipeline` for the levers, `dlq`), oldest first: each action,
    /// target and detail.
    fn acts_on_record(&self, capability: &str) -> Vec<[String; 3]> {
        let rows = run_json(
            self.causeway()
                .args(["audit", "--plugin", "causeway", "--json"]),
        );
        let rows = rows.as_array().unwrap().iter();
        rows.filter(|r| r["capability"] == capability)
            .map(|r| ["action", "target", "detail"].map(|f| r[f].as_str().unwrap().to_string()))
            .collect()
    }

    /// The runs' counts summed: read, written, rejected, skipped, dropped.
    fn run_totals(&self) -> [i64; 5] {
        let runs = self.runs();
        let runs = runs.as_array().unwrap();
        ["read", "written", "rejected", "skipped", "dropped"]
            .map(|what| runs.iter().map(|r| r[what].as_i64().unwrap()).sum())
    }

    /// How many runs failed so far.
    fn failed_runs(&self) -> usize {
        let runs = self.runs();
        runs.as_array().map_or(0, |runs| {
            runs.iter().filter(|r| r["outcome"] == "failed").count()
        })
    }

    /// `causeway dlq list --json`: the dead letters.
    fn dead_letters(&self) -> Value {
        run_json(self.scratch.causeway().args(["dlq", "list", "--json"]))
    }

    /// `causeway dlq replay --pipeline contacts-to-mailer`, which must
    /// succeed: what it printed.
    fn replay_all(&self) -> String {
        self.replay_pipeline("contacts-to-mailer")
    }

    /// `causeway dlq replay --pipeline NAME`, which must succeed: what it
    /// printed.
    fn replay_pipeline(&self, name: &str) -> String {
        let out = run(self.causeway().args(["dlq", "replay", "--pipeline", name]));
        assert!(out.success, "{}{}", out.stdout, out.stderr);
        out.stdout
    }

    /// Waits until `causeway pipelines` shows the pipeline idle.
    fn wait_until_idle(&self) {
        wait_until("the pipeline idle again", Duration::from_secs(10), || {
            let pipelines = run_json(self.scratch.causeway().args(["pipelines", "--json"]));
            (pipelines[0]["state"] == "idle").then_some(())
        });
    }

    /// Waits until the mailer's list holds exactly `expected` (key →
    /// fullName).
    fn wait_for_subscribers(&self, expected: &[(String, String)], within: Duration) {
        self.wait_for_subscribers_in(LIST, expected, within);
    }

    /// Waits until the calendar holds exactly `expected` (key →
    /// displayName).
    fn wait_for_attendees(&self, expected: &[(String, String)], within: Duration) {
        wait_until("the calendar to hold every contact", within, || {
            let got: Vec<(String, String)> = self
                .calendar()
                .attendees(support::connectors::CALENDAR)
                .into_iter()
                .map(|(k, a)| (k, a.display_name))
                .collect();
            (got == expected).then_some(())
        });
    }

    /// [`World::wait_for_subscribers`] in the mailer's `list`.
    fn wait_for_subscribers_in(&self, list: &str, expected: &[(String, String)], within: Duration) {
        wait_until("the mailer to hold every contact", within, || {
            let subscribers = self.mailer.subscribers(list);
            let got: Vec<(String, String)> = subscribers
                .iter()
                .map(|(k, v)| (k.clone(), v["fullName"].as_str().unwrap_or("").to_string()))
                .collect();
            (got == expected).then_some(())
        });
    }
}

/// `runs` (`causeway runs --json`) went on: none stopped the pipeline or failed.
fn assert_none_stopped_or_failed(runs: &Value) {
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] != "stopped" && r["outcome"] != "failed"),
        "{runs:#?}"
    );
}

/// The keys of `letters` (`causeway dlq list --json`), in order.
fn keys_of(letters: &Value) -> Vec<&str> {
    letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect()
}

/// A contact's key and the fullName it should reach the mailer with.
type Subscriber = (String, String);

fn create(crm: &FakeCrm, n: usize) -> Vec<Subscriber> {
    (0..n)
        .map(|i| {
            let first = format!("First{i}");
            let contact = crm.create(person(&first, "Last", &format!("p{i}@example.com")));
            (contact.id, format!("{first} Last"))
        })
        .collect()
}

/// A second pipeline into the same mailer account names only the list it
/// writes to: its stage's `config` is laid over the plugin's, which gives
/// the account's URL.
#[test]
fn a_stage_naming_one_key_of_its_config_gets_the_plugins_others() {
    let w = World::new(
        3,
        "",
        r#"
[pipelines.contacts-to-customers]
every = "200ms"
source = { plugin = "crm-source", stream = "contacts" }
transforms = [{ plugin = "map-fullname" }]
sinks = [{ plugin = "mailer-sink", config = { list_id = "customers" } }]
"#,
    );
    let expected = create(&w.crm, 2);
    let _host = w.start();
    w.wait_for_subscribers_in("customers", &expected, Duration::from_secs(20));
    assert!(
        w.mailer.subscribers(LIST).is_empty(),
        "the plugin's own list"
    );
}

#[test]
fn a_host_with_one_instance_slot_still_runs_every_stage() {
    // Idle warm instances never hold the slots calls need: with one slot,
    // no stage keeps one, and each stage in turn gets it.
    let w = on_engine(3, "", "max-instances = 1");
    let expected = create(&w.crm, 7);
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
}

#[test]
fn created_and_updated_contacts_arrive_in_the_mailer_mapped() {
    let w = world("");
    let mut expected = create(&w.crm, 7);
    let host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    // The log tells what a run moved (and polls that find nothing are no
    // news at the default level).
    host.wait_for_log("run ok: read 7, written 7, rejected 0", 20);

    // More contacts and an update, while it runs.
    expected.extend(create(&w.crm, 2));
    w.crm
        .update(&expected[0].0, person("Ada", "Lovelace", "ada@example.com"));
    expected[0].1 = "Ada Lovelace".to_string();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));

    // The mailer holds the records once the sink answered; the run's counts
    // commit with the page's checkpoint just after: wait for them.
    let sums = |runs: &[Value]| -> (i64, i64) {
        let sum = |field: &str| runs.iter().map(|r| r[field].as_i64().unwrap()).sum();
        (sum("read"), sum("written"))
    };
    let runs = wait_until(
        "the runs' counts committed",
        Duration::from_secs(20),
        || {
            let runs = w.runs();
            let runs = runs.as_array().unwrap().clone();
            let (read, written) = sums(&runs);
            (read >= 10 && written >= 10).then_some(runs)
        },
    );
    assert!(runs.iter().all(|r| r["outcome"] != "failed"), "{runs:#?}");
    // 9 created and 1 updated, each read and written once: the checkpoint
    // never lets a page be read twice when nothing failed.
    assert_eq!(sums(&runs), (10, 10), "{runs:#?}");
    let logs = host.logs();
    assert!(!logs.contains("nothing new"), "{logs}");
    // Each request a stage made is on record with the run it was made in
    // (the runs listed after the rows were read: polls go on meanwhile).
    // Every row and every run, however many polls a slow machine made.
    let all = ["--limit", "1000000", "--json"];
    let requests = run_json(
        w.causeway()
            .args(["audit", "--capability", "http"])
            .args(all),
    );
    let requests = requests.as_array().unwrap();
    let ids: Vec<String> = run_json(w.causeway().arg("runs").args(all))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("contacts-to-mailer#{}", r["id"]))
        .collect();
    for plugin in ["crm-source", "mailer-sink"] {
        assert!(
            requests.iter().any(|r| r["plugin"] == plugin),
            "{plugin}: {requests:#?}"
        );
    }
    for request in requests {
        let run = request["run_id"].as_str().unwrap_or("-").to_string();
        assert!(
            ids.contains(&run),
            "{run} is not one of {ids:?}: {request:#}"
        );
    }
    // And one run's uses are picked out by it.
    let first = requests[0]["run_id"].as_str().unwrap();
    let of_first = run_json(w.causeway().args(["audit", "--run", first]).args(all));
    let of_first = of_first.as_array().unwrap();
    let made = requests.iter().filter(|r| r["run_id"] == first).count();
    assert!(made > 0 && of_first.len() >= made, "{of_first:#?}");
    assert!(
        of_first.iter().all(|r| r["run_id"] == first),
        "{of_first:#?}"
    );
    // Each stage's instance read its configuration, on record with the
    // pipeline it read it in.
    let reads = support::config_and_log_rows(&w.scratch.path().join("causeway-data"));
    for plugin in ["crm-source", "map-fullname", "mailer-sink"] {
        assert!(
            reads.iter().any(|r| r.0 == plugin
                && r.1 == "config"
                && r.3 == "its configuration in pipeline contacts-to-mailer"),
            "{plugin}: {reads:#?}"
        );
    }
}

#[test]
fn with_the_mailer_down_for_a_while_nothing_is_lost() {
    let w = world(
        "initial = \"50ms\"\nmax = \"100ms\"\nbudget = \"300ms\"\ncircuit-cooldown = \"300ms\"\n",
    );
    w.mailer.faults().set_down(true);
    let expected = create(&w.crm, 5);
    let host = w.start();
    // The budget runs out, the circuit opens, and it probes.
    host.wait_for_log("circuit open", 20);
    wait_until(
        "a second failed run (a probe)",
        Duration::from_secs(20),
        || (w.failed_runs() >= 2).then_some(()),
    );
    // Between probes the circuit is open (during one, the run shows).
    wait_until(
        "the circuit open between probes",
        Duration::from_secs(10),
        || {
            let pipelines = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
            (pipelines[0]["state"] == "circuit-open").then_some(())
        },
    );
    assert!(w.mailer.subscribers(LIST).is_empty());

    w.mailer.faults().set_down(false);
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    w.wait_until_idle();
}

/// A run backing off says so where operators look, with the error it
/// backs off from, not only once the budget is spent.
#[test]
fn a_run_backing_off_shows_why_and_until_when_in_causeway_pipelines() {
    let w = world("initial = \"1s\"\nmax = \"2s\"\nbudget = \"1m\"\n");
    w.mailer.faults().set_down(true);
    let expected = create(&w.crm, 3);
    let _host = w.start();
    let reason = wait_until(
        "the pipeline saying it backs off",
        Duration::from_secs(20),
        || {
            let pipelines = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
            let reason = pipelines[0]["reason"].as_str()?.to_string();
            (pipelines[0]["state"] == "running" && reason.contains("backing off")).then_some(reason)
        },
    );
    assert!(
        reason.contains("write mailer-sink")
            && reason.contains("retrying at ")
            && reason.contains("503"),
        "{reason}"
    );
    let shown = run(w.scratch.causeway().arg("pipelines"));
    assert!(shown.stdout.contains("backing off"), "{}", shown.stdout);

    // Once the mailer is back, the note goes with the wait.
    w.mailer.faults().set_down(false);
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    w.wait_until_idle();
    let pipelines = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
    assert_eq!(pipelines[0]["reason"], Value::Null, "{pipelines:#}");
}

/// Against an API that fails slowly (each call cut off by its deadline),
/// the note stays through the calls it waited for, not only the waits.
#[test]
fn a_backoff_note_stays_through_the_slow_calls_it_waits_for() {
    let w = World::new(
        3,
        "[plugins.mailer-sink.limits]\ncall-timeout = \"1s\"\n",
        r#"
[pipelines.contacts-to-mailer]
every = "200ms"
source = { plugin = "crm-source", stream = "contacts" }
transforms = [{ plugin = "map-fullname" }]
sinks = [{ plugin = "mailer-sink" }]

[pipelines.contacts-to-mailer.retry]
initial = "2s"
max = "2s"
budget = "1m"
"#,
    );
    w.mailer
        .faults()
        .inject(Fault::Slow(Duration::from_secs(5)), 3);
    let expected = create(&w.crm, 3);
    let _host = w.start();
    let reason = || {
        let pipelines = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
        pipelines[0]["reason"].as_str().map(str::to_string)
    };
    wait_until("the first backoff noted", Duration::from_secs(20), || {
        reason().filter(|r| r.contains("backing off"))
    });
    // The next slow call (1 s) and the wait after it (1 to 2 s, jittered).
    let start = std::time::Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        let now = reason();
        assert!(
            now.as_deref().is_some_and(|r| r.contains("backing off")),
            "after {:?}, {samples} samples: {now:?}",
            start.elapsed()
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    w.wait_until_idle();
    assert_eq!(reason(), None);
}

/// The mission's shape: one source, two sinks that speak unlike APIs (the
/// mailer's batches, the calendar's request per record).
#[test]
fn contacts_reach_the_mailer_and_the_calendar_through_the_calendars_rate_limit() {
    let w = World::with_calendar(
        3,
        "",
        r#"
[pipelines.contacts]
every = "200ms"
source = { plugin = "crm-source", stream = "contacts" }
transforms = [{ plugin = "map-fullname" }]
sinks = [{ plugin = "mailer-sink" }, { plugin = "calendar-sink" }]
"#,
    );
    let expected = create(&w.crm, 7);
    // The calendar takes a write, then asks to wait; later, once more.
    let faults = w.calendar().faults();
    faults.inject(Fault::Slow(Duration::ZERO), 1);
    faults.inject(
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    faults.inject(Fault::Slow(Duration::ZERO), 3);
    faults.inject(
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    w.wait_for_attendees(&expected, Duration::from_secs(20));
    w.wait_until_idle();
    assert_none_stopped_or_failed(&w.runs());
    assert_eq!(w.dead_letters(), json!([]));
    // Both waits were the calendar's answers, seen by the audit log.
    let rate_limited = audit_rows(&w.scratch.path().join("causeway-data"))
        .into_iter()
        .filter(|(plugin, .., detail)| plugin == "calendar-sink" && detail.contains("status 429"))
        .count();
    assert_eq!(rate_limited, 2);
}

/// The pipeline CRM → map-fullname → calendar every 200 ms, crm-source
/// reading pages of `page_size`, `grants` added to grants.toml and `retry`
/// as the pipeline's retry table.
fn calendar_world(page_size: u32, grants: &str, retry: &str) -> World {
    World::with_calendar(
        page_size,
        grants,
        &format!(
            r#"
[pipelines.contacts]
every = "200ms"
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "calendar-sink" }}]

[pipelines.contacts.retry]
{retry}
"#
        ),
    )
}

/// Backoffs short enough, and a budget small enough, that a test sees a
/// run give up within seconds; a cooldown longer than the test.
const QUICK_RETRY: &str =
    "initial = \"50ms\"\nmax = \"400ms\"\nbudget = \"1s\"\ncircuit-cooldown = \"30s\"\n";

/// A sink writing a request per record, paced by its grant's rate limit:
/// each call writes what the rate allows before its deadline and asks to
/// retry the rest, and the host calls it again. Both sides of that matter:
/// a sink failing the batch instead would write the same first records
/// again and again, and never the last; a host spending the retry budget
/// on answers that took records would fail the run after a few calls and
/// wait ever longer between them.
#[test]
fn a_page_larger_than_a_calls_share_of_the_rate_limit_is_written_over_several_calls() {
    let w = calendar_world(
        40,
        r#"
[plugins.calendar-sink.http-limits]
requests-per-second = 10
burst = 2

[plugins.calendar-sink.limits]
call-timeout = "300ms"
"#,
        QUICK_RETRY,
    );
    let expected = create(&w.crm, 40);
    let _host = w.start();
    w.wait_for_attendees(&expected, Duration::from_secs(30));
    w.wait_until_idle();
    assert_none_stopped_or_failed(&w.runs());
    assert_eq!(w.dead_letters(), json!([]));
    // Each record was sent once or, when a call ran out of time while its
    // request was in flight, twice: never page after page.
    assert!(
        w.calendar().faults().requests() < 60,
        "{} requests for 40 records",
        w.calendar().faults().requests()
    );
}

/// Four contacts, the mailer refusing the second: once the others are in
/// the mailer and a dead letter is queued, the host, the others (key →
/// fullName), the refused one and the letters.
fn one_refused(w: &World) -> (RunningHost, Vec<Subscriber>, Subscriber, Value) {
    let mut expected = create(&w.crm, 4);
    let blocked = expected.remove(1);
    w.mailer.reject_key(&blocked.0);
    let host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let letters = wait_until("a dead letter", Duration::from_secs(10), || {
        let letters = w.dead_letters();
        (!letters.as_array().unwrap().is_empty()).then_some(letters)
    });
    (host, expected, blocked, letters)
}

#[test]
fn a_rejected_record_goes_to_the_dead_letter_queue_while_the_rest_flow_and_replays_once_fixed() {
    let w = world("");
    let (_host, mut expected, blocked, letters) = one_refused(&w);
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["key"], blocked.0.as_str());
    assert_eq!(letters[0]["sink"], "mailer-sink");
    assert!(letters[0]["reason"].as_str().unwrap().contains("blocked"));

    // Still blocked: a replay keeps it, counting the attempt.
    let id = letters[0]["id"].to_string();
    let out = run(w
        .scratch
        .causeway()
        .env("MAILER_KEY", MAILER_KEY)
        .args(["dlq", "replay", &id]));
    assert!(
        out.stdout.contains("rejected again"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let letters = w.dead_letters();
    assert_eq!(letters[0]["attempts"], 2);

    // Fixed: the replay writes it and empties the queue.
    w.mailer.accept_key(&blocked.0);
    let replayed = w.replay_all();
    assert!(replayed.contains("1 written"), "{replayed}");
    let letters = w.dead_letters();
    assert_eq!(letters, json!([]));
    expected.insert(1, blocked);
    w.wait_for_subscribers(&expected, Duration::from_secs(5));
}

/// A letter holds one version of a record: set aside again, the newer
/// version replaces it; written, the newer version makes it stale, and it
/// is forgotten (a replay would have written the old data over the new).
#[test]
fn a_dead_letter_gives_way_to_newer_versions_of_its_record() {
    let w = world("");
    let (host, mut expected, blocked, letters) = one_refused(&w);
    assert_eq!(letters[0]["key"], blocked.0.as_str());

    // Edited at the CRM, still refused: one letter, the new version.
    w.crm
        .update(&blocked.0, person("Grace", "Hopper", "grace@example.com"));
    let letters = wait_until(
        "the letter's second attempt",
        Duration::from_secs(20),
        || {
            let letters = w.dead_letters();
            letters
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["attempts"] == 2)
                .then_some(letters)
        },
    );
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["key"], blocked.0.as_str());
    let data: Value = serde_json::from_str(letters[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["fullName"], "Grace Hopper", "{data}");
    host.wait_for_log("1 dead letters replaced by a newer version", 10);

    // Edited again and taken: the letter is stale and goes by itself.
    w.mailer.accept_key(&blocked.0);
    w.crm
        .update(&blocked.0, person("Grace", "Brewster", "grace@example.com"));
    expected.insert(1, (blocked.0.clone(), "Grace Brewster".to_string()));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    wait_until(
        "the stale letter forgotten",
        Duration::from_secs(10),
        || (w.dead_letters() == json!([])).then_some(()),
    );
    host.wait_for_log("1 dead letters forgotten", 10);
    // Nothing left to replay over the newer version.
    assert!(w.replay_all().contains("0 written"));
    w.wait_for_subscribers(&expected, Duration::from_secs(1));
}

/// A newer version of a record that stops before the stage holding an
/// older one's letter makes that letter stale too: set aside by a
/// transform, or dropped by it, the newer version is what the pipeline
/// says now, and a replay of the old letter would write data it would not.
#[test]
fn a_newer_version_set_aside_or_dropped_before_a_letters_stage_forgets_it() {
    let w = world("");
    let (host, expected, blocked, letters) = one_refused(&w);
    assert_eq!(letters[0]["stage"], "sink");
    assert_eq!(letters[0]["origin"], "contacts", "{letters:#}");

    // Edited so that map-fullname cannot map it: the transform's letter,
    // and the mailer's is forgotten.
    let mut shape = serde_json::Map::new();
    shape.insert("firstName".into(), json!(42));
    w.crm.update(&blocked.0, shape);
    let letter = wait_until(
        "the transform's letter alone",
        Duration::from_secs(20),
        || {
            let letters = w.dead_letters();
            let letters = letters.as_array().unwrap();
            (letters.len() == 1 && letters[0]["stage"] == "transform").then(|| letters[0].clone())
        },
    );
    assert_eq!(letter["key"], blocked.0.as_str());
    assert_eq!(letter["origin"], "contacts");
    host.wait_for_log("1 dead letters forgotten", 10);

    // Mended, still refused by the mailer: the mailer's letter again.
    w.crm
        .update(&blocked.0, person("Grace", "Hopper", "grace@example.com"));
    wait_until("the mailer's letter alone", Duration::from_secs(20), || {
        let letters = w.dead_letters();
        let letters = letters.as_array().unwrap();
        (letters.len() == 1 && letters[0]["stage"] == "sink").then_some(())
    });

    // Its email removed, map-fullname drops it: no letter is left to write
    // the contact to the mailer.
    w.mailer.accept_key(&blocked.0);
    w.crm.update(&blocked.0, person("Grace", "Hopper", ""));
    wait_until(
        "the mailer's letter forgotten",
        Duration::from_secs(20),
        || (w.dead_letters() == json!([])).then_some(()),
    );
    // Counted as dropped, in the commit that forgot the letter.
    assert_eq!(w.run_totals()[4], 1, "{:#}", w.runs());
    // And on /metrics, just after that commit.
    let dropped = |m: &Metrics| {
        m.value(
            "causeway_pipeline_records_total",
            &[("pipeline", "contacts-to-mailer"), ("stage", "dropped")],
        )
    };
    wait_until("the drop counted", Duration::from_secs(10), || {
        (dropped(&Metrics::scrape(&host)) == Some(1.0)).then_some(())
    });
    assert!(w.replay_all().contains("0 written"));
    w.wait_for_subscribers(&expected, Duration::from_secs(1));
}

/// Quick retries, so three budgets and their cooldowns pass in a second.
const QUICK_RETRIES: &str =
    "initial = \"20ms\"\nmax = \"40ms\"\nbudget = \"120ms\"\ncircuit-cooldown = \"150ms\"\n";

/// A record the mailer fails on every time (`retry`, as a 500 for that
/// one record would be) while it takes the rest of the page: after three
/// retry budgets in a row it is set aside as a dead letter, and the pages
/// behind it flow instead of waiting for it for ever.
#[test]
fn a_record_the_sink_always_asks_to_retry_is_set_aside_and_the_pages_behind_it_flow() {
    let w = world(QUICK_RETRIES);
    // Pages of three: the failing record is in the first, c3 behind it.
    let mut expected = create(&w.crm, 4);
    let failing = expected.remove(1);
    w.mailer.fail_key(&failing.0);
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(30));
    let letters = w.dead_letters();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["key"], failing.0.as_str());
    assert_eq!(letters[0]["sink"], "mailer-sink");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("set aside") && reason.contains("3 retry budgets in a row"),
        "{reason}"
    );
    assert!(
        reason.contains("internal error, try again later"),
        "{reason}"
    );
    // It took failed runs (the circuit opened twice), then the pipeline
    // went on by itself.
    assert!(w.failed_runs() >= 2, "{:#?}", w.runs());
    w.wait_until_idle();

    // Fixed, it replays like any dead letter.
    w.mailer.accept_key(&failing.0);
    let replayed = w.replay_all();
    assert!(replayed.contains("1 written"), "{replayed}");
    expected.insert(1, failing);
    w.wait_for_subscribers(&expected, Duration::from_secs(5));
}

/// The count of budgets a record spent is saved: run by one-off `causeway
/// pipeline run-now`s (no host, a process each), a record the sink always
/// asks to retry spends one budget per run and is set aside by the third.
#[test]
fn a_record_the_sink_always_asks_to_retry_is_set_aside_by_one_off_runs_too() {
    let w = world(QUICK_RETRIES);
    let mut expected = create(&w.crm, 4);
    let failing = expected.remove(1);
    w.mailer.fail_key(&failing.0);
    let run_now = || {
        run(w
            .causeway()
            .args(["pipeline", "run-now", "contacts-to-mailer"]))
    };
    for spent in 1..3 {
        let out = run_now();
        assert!(!out.success, "run {spent}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("still asked to be retried"),
            "{}",
            out.stderr
        );
        assert_eq!(w.dead_letters(), json!([]), "run {spent}");
    }
    let out = run_now();
    assert!(out.success, "the third: {}{}", out.stdout, out.stderr);
    // Idle, with no reason to give: the table alone, no blank line after.
    let out = run(w.causeway().args(["pipelines"]));
    assert!(out.stdout.ends_with('\n'), "{:?}", out.stdout);
    assert!(!out.stdout.ends_with("\n\n"), "{:?}", out.stdout);
    // The failed runs' errors under the table, after a blank line; the
    // dead letters' table alone.
    let out = run(w.causeway().args(["runs"]));
    assert!(out.stdout.contains("\n\n#"), "{:?}", out.stdout);
    assert!(!out.stdout.ends_with("\n\n"), "{:?}", out.stdout);
    let out = run(w.causeway().args(["dlq", "list"]));
    assert!(out.stdout.contains(&failing.0), "{:?}", out.stdout);
    assert!(!out.stdout.ends_with("\n\n"), "{:?}", out.stdout);
    w.wait_for_subscribers(&expected, Duration::from_secs(5));
    let letter = one_dead_letter(&w);
    assert_eq!(letter["key"], failing.0.as_str());
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason.contains("3 retry budgets in a row"), "{reason}");
}

/// The same answer for every record of a page is the sink's trouble, not
/// the records': however many budgets it lasts, nothing is set aside, and
/// everything arrives once the mailer takes them again.
#[test]
fn records_a_sink_asks_to_retry_all_together_are_never_set_aside() {
    let w = world(QUICK_RETRIES);
    let expected = create(&w.crm, 3);
    for (key, _) in &expected {
        w.mailer.fail_key(key);
    }
    let _host = w.start();
    // Well past three budgets.
    wait_until("five failed runs", Duration::from_secs(30), || {
        (w.failed_runs() >= 5).then_some(())
    });
    for (key, _) in &expected {
        w.mailer.accept_key(key);
    }
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let letters = w.dead_letters();
    assert_eq!(letters, json!([]));
}

/// A sink that takes a few records with each answer makes progress: it is
/// called again until it has taken the whole page, the run does not fail
/// for it, and no record it had not reached yet is set aside.
#[test]
fn records_a_slow_sink_has_not_reached_yet_are_never_set_aside() {
    // One record an answer, and a budget two backoffs exceed (waits of
    // 10-20 ms, then 20-40 ms): were the budget spent across answers that
    // took records, the third of a page would never be reached.
    let w = world(
        "initial = \"20ms\"\nmax = \"40ms\"\nbudget = \"25ms\"\ncircuit-cooldown = \"100ms\"\n",
    );
    let expected = create(&w.crm, 9);
    w.mailer.take_at_most(Some(1));
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    w.wait_until_idle();
    assert_eq!(w.failed_runs(), 0, "{:#}", w.runs());
    assert_eq!(w.dead_letters(), json!([]));
}

/// Waits until the pipeline's dead-letter queue holds exactly one letter.
fn one_dead_letter(w: &World) -> Value {
    let letters = wait_until("a dead letter", Duration::from_secs(10), || {
        let letters = w.dead_letters();
        (!letters.as_array().unwrap().is_empty()).then_some(letters)
    });
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters:#?}");
    letters[0].clone()
}

/// map-fullname under a fuel limit that holds about twenty contacts: a
/// page of sixty is split until its parts fit and all of them flow, and a
/// contact too large to map within the limit even alone is set aside
/// (fuel, like memory, grows with the batch: `isolate::may_be_a_record`).
#[test]
fn a_batch_over_a_transforms_fuel_is_split_until_it_fits_and_a_record_that_never_fits_is_set_aside()
{
    let w = on_engine(
        100,
        "[plugins.map-fullname]\nlimits = { fuel = 200000 }\n",
        "fuel = true",
    );
    let mut expected = create(&w.crm, 60);
    let huge = expected.remove(7);
    w.crm
        .update(
            &huge.0,
            person("First7", &"L".repeat(300_000), "p7@example.com"),
        )
        .unwrap();
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(30));
    let letter = one_dead_letter(&w);
    assert_eq!(letter["key"], huge.0.as_str());
    assert_eq!(letter["stage"], "transform");
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason.contains("burned its fuel, 200000 units"), "{reason}");
    w.wait_until_idle();
    let runs = w.runs();
    assert_none_stopped_or_failed(&runs);
}

/// A contact map-fullname cannot read (its first name is a number) among
/// good ones: the transform fails the whole batch, as its contract allows
/// no other answer. The host splits the batch until it finds the record,
/// sets it aside as a dead letter, and the rest of the page flows; the
/// pipeline goes on. Fixed in the CRM, the contact arrives.
#[test]
fn a_record_a_transform_cannot_map_is_set_aside_and_the_rest_of_its_batch_flows() {
    let w = world("");
    // Pages of three: the odd contact shares its page with others.
    let mut expected = create(&w.crm, 5);
    let odd = expected.remove(1);
    let mut shape = serde_json::Map::new();
    shape.insert("firstName".into(), json!(42));
    w.crm.update(&odd.0, shape).unwrap();
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));

    let letter = one_dead_letter(&w);
    assert_eq!(letter["key"], odd.0.as_str());
    assert_eq!(letter["stage"], "transform");
    assert_eq!(letter["sink"], "map-fullname");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("set aside") && reason.contains("does not match the expected shape"),
        "{reason}"
    );
    w.wait_until_idle();
    let runs = w.runs();
    let counted = |field: &str| -> i64 {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        (counted("read"), counted("written"), counted("rejected")),
        (5, 4, 1),
        "{runs:#?}"
    );
    assert_none_stopped_or_failed(&runs);
    let pipelines = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
    assert_eq!(pipelines[0]["dead_letters"], 1, "{pipelines:#}");
    let table = run(w.scratch.causeway().args(["dlq", "list"]));
    assert!(
        table.stdout.contains("map-fullname (transform)"),
        "{}",
        table.stdout
    );

    // Replayed as it is, it fails in the transform again and stays.
    let replayed = w.replay_all();
    assert!(replayed.contains("1 rejected again"), "{replayed}");
    let letter = one_dead_letter(&w);
    assert_eq!(letter["attempts"], 2);
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("transform map-fullname"),
        "{letter:#}"
    );

    // Looked at and not to be written as it is, it is dropped, on the
    // record.
    let id = letter["id"].to_string();
    let dropped = run(w.scratch.causeway().args(["dlq", "drop", &id]));
    assert!(
        dropped.success && dropped.stdout.contains("1 dead letters dropped"),
        "{}{}",
        dropped.stdout,
        dropped.stderr
    );
    assert_eq!(w.dead_letters(), json!([]));
    let audit = run_json(
        w.scratch
            .causeway()
            .args(["audit", "--plugin", "causeway", "--json"]),
    );
    let drop = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["action"] == "drop")
        .unwrap_or_else(|| panic!("no drop row: {audit:#}"));
    assert_eq!(drop["target"], "pipeline contacts-to-mailer");
    let detail = drop["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{id} ({}, map-fullname)", odd.0)),
        "{detail}"
    );
    let again = run(w.scratch.causeway().args(["dlq", "drop", &id]));
    assert!(
        !again.success
            && again
                .stderr
                .contains(&format!("no dead letter with id {id}"))
    );

    // Mended at the source, it arrives like any update.
    w.crm
        .update(&odd.0, person("Grace", "Last", "odd@example.com"))
        .unwrap();
    expected.insert(1, (odd.0.clone(), "Grace Last".into()));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    assert_eq!(w.dead_letters(), json!([]));
}

/// The connectors' world with test-picky installed too; its pipeline is
/// written by [`picky_refuses`] once the contacts' keys are known.
fn picky_world() -> World {
    let w = World::new(3, "", "");
    w.scratch.install("test-picky", "picky.wasm");
    w
}

/// Writes into causeway.toml the pipeline CRM → `transforms` (a TOML
/// list of stages) → mailer, polled every 200 ms.
fn pipeline_through(w: &World, transforms: &str) {
    let path = w.scratch.path().join("causeway.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let connectors = config.split("\n[pipelines.").next().unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{connectors}
[pipelines.contacts-to-mailer]
every = "200ms"
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = {transforms}
sinks = [{{ plugin = "mailer-sink" }}]
"#
        ),
    )
    .unwrap();
}

/// [`pipeline_through`] test-picky (refusing the keys `refuse`) and
/// map-fullname.
fn picky_refuses(w: &World, refuse: &[&str]) {
    pipeline_through(
        w,
        &format!(
            r#"[{{ plugin = "test-picky", config = {{ refuse = {refuse:?} }} }}, {{ plugin = "map-fullname" }}]"#
        ),
    );
}

/// A letter a transform set aside replays from that transform on: through
/// the transforms after it, into every sink. What a sink rejects then
/// becomes that sink's letter, which replays like any other.
#[test]
fn a_record_a_transform_set_aside_replays_through_the_rest_of_the_pipeline() {
    let w = picky_world();
    let mut expected = create(&w.crm, 5);
    let refused = expected.remove(1);
    picky_refuses(&w, &[&refused.0]);
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let letter = one_dead_letter(&w);
    assert_eq!(
        (&letter["stage"], &letter["sink"]),
        (&json!("transform"), &json!("test-picky"))
    );
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("refused by configuration"),
        "{letter:#}"
    );

    // Without that transform in the pipeline any more, it cannot be
    // replayed: the letter stays as it was, and the command says why.
    pipeline_through(&w, r#"[{ plugin = "map-fullname" }]"#);
    let out = run(w
        .causeway()
        .args(["dlq", "replay", "--pipeline", "contacts-to-mailer"]));
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("0 written, 0 rejected again, 1 left for a later replay"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("transform test-picky is no longer a stage of pipeline contacts-to-mailer"),
        "{}",
        out.stderr
    );
    assert_eq!(one_dead_letter(&w)["attempts"], 1);

    // Let through, but the mailer refuses it: it becomes the mailer's.
    picky_refuses(&w, &[]);
    w.mailer.reject_key(&refused.0);
    let replayed = w.replay_all();
    assert!(replayed.contains("1 rejected again"), "{replayed}");
    let letter = one_dead_letter(&w);
    assert_eq!(
        (&letter["stage"], &letter["sink"]),
        (&json!("sink"), &json!("mailer-sink"))
    );
    assert_eq!(
        letter["stream"], "subscribers",
        "mapped by map-fullname: {letter:#}"
    );
    // Still a version of the CRM's contact: a newer one read forgets it.
    assert_eq!(letter["origin"], "contacts", "{letter:#}");

    w.mailer.accept_key(&refused.0);
    let replayed = w.replay_all();
    assert!(replayed.contains("1 written"), "{replayed}");
    assert_eq!(w.dead_letters(), json!([]));
    expected.insert(1, refused);
    w.wait_for_subscribers(&expected, Duration::from_secs(5));
}

/// A transform's letter that the transforms after it drop on replay
/// (map-fullname: a contact without an email) leaves the queue, and the
/// replay says it was dropped, not written.
#[test]
fn a_transform_letter_dropped_on_replay_is_told_as_dropped_not_written() {
    let w = picky_world();
    let expected = create(&w.crm, 3);
    let emailless = w.crm.create(person("No", "Email", ""));
    picky_refuses(&w, &[&emailless.id]);
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    assert_eq!(one_dead_letter(&w)["stage"], "transform");

    picky_refuses(&w, &[]);
    let replayed = w.replay_all();
    assert!(
        replayed.contains("0 written, 1 dropped by a transform, 0 rejected again"),
        "{replayed}"
    );
    assert_eq!(w.dead_letters(), json!([]));
    // The replay is on record, with what it did.
    let acts = w.acts_on_record("dlq");
    let [[action, target, detail]] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(
        (action.as_str(), target.as_str()),
        ("replay", "pipeline contacts-to-mailer")
    );
    assert!(
        detail.contains("replayed 1 dead letters (") && detail.contains("1 dropped by a transform"),
        "{detail}"
    );
    w.wait_for_subscribers(&expected, Duration::from_secs(1));
}

/// A transform's letter is forgotten once that transform maps a newer
/// version of its record: mended at its source, it arrives by itself.
#[test]
fn a_transform_letter_is_forgotten_once_the_transform_maps_a_newer_version() {
    let w = picky_world();
    let mut expected = create(&w.crm, 4);
    let refused = expected.remove(1);
    picky_refuses(&w, &[&refused.0]);
    let host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    assert_eq!(one_dead_letter(&w)["stage"], "transform");

    picky_refuses(&w, &[]);
    host.wait_for_log("reloaded", 10);
    w.crm.update(
        &refused.0,
        person("Mended", "Contact", "mended@example.com"),
    );
    expected.insert(1, (refused.0.clone(), "Mended Contact".to_string()));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    wait_until(
        "the stale letter forgotten",
        Duration::from_secs(10),
        || (w.dead_letters() == json!([])).then_some(()),
    );
}

/// The pipeline CRM → test-hostile → map-fullname → mailer, pages of
/// three, with a contact telling test-hostile `mode` opening the second
/// page and two more behind it. Once every other contact is in the mailer
/// (and the pipeline idle): that contact's key and its dead letter, which
/// must be test-hostile's, and the mailer's keys.
fn hostile_sets_one_aside(mode: &str) -> (String, Value, Vec<String>) {
    let w = World::new(3, "", "");
    w.scratch.install("test-hostile", "hostile.wasm");
    let mut expected = create(&w.crm, 3);
    let mut odd = person("Odd", "Last", "odd@example.com");
    odd.insert("mode".into(), json!(mode));
    let odd = w.crm.create(odd).id;
    for i in 4..6 {
        let first = format!("First{i}");
        let contact = person(&first, "Last", &format!("p{i}@example.com"));
        expected.push((w.crm.create(contact).id, format!("{first} Last")));
    }
    pipeline_through(
        &w,
        r#"[{ plugin = "test-hostile" }, { plugin = "map-fullname" }]"#,
    );
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let letter = one_dead_letter(&w);
    assert_eq!(letter["key"], odd.as_str());
    assert_eq!(
        (&letter["stage"], &letter["sink"]),
        (&json!("transform"), &json!("test-hostile"))
    );
    w.wait_until_idle();
    (
        odd,
        letter,
        w.mailer.subscribers(LIST).into_keys().collect(),
    )
}

/// A transform that crashes on one record (test-hostile panics when the
/// first record of its batch says `"mode": "panic"`): the crash is looked
/// into like a `fatal` answer, the record is set aside with the panic's
/// message, and the instances after the crash map the rest.
#[test]
fn a_record_a_transform_crashes_on_is_set_aside_and_the_rest_flow() {
    let (_, letter, _) = hostile_sets_one_aside("panic");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("crashed") && reason.contains("panic"),
        "{reason}"
    );
}

/// A transform answering against the contract (test-hostile, told by the
/// first record of its batch, answers the batch without keys): its answer
/// is never passed on; the record it answers that way alone is set aside,
/// naming what was wrong, and the rest of the batch flows.
#[test]
fn a_record_a_transform_answers_against_the_contract_for_is_set_aside() {
    let (odd, letter, written) = hostile_sets_one_aside("keyless");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("answered against the contract: its record 0 has an empty key"),
        "{reason}"
    );
    assert_eq!(written.len(), 5, "{written:?}");
    assert!(!written.contains(&odd) && !written.contains(&String::new()));
}

/// One source into two systems, as the mission has it: each sink gets
/// every record. One the mailer refuses is the mailer's dead letter alone
/// (test-kv took it), is not written (not every sink took it), and a
/// replay writes it to the mailer only.
#[test]
fn two_sinks_each_get_every_record_and_a_refusal_is_the_refusing_sinks_alone() {
    let w = World::new(
        3,
        "[plugins.test-kv]\nstorage = { quota-bytes = 65536 }\n",
        r#"
[pipelines.contacts-to-both]
every = "200ms"
source = { plugin = "crm-source", stream = "contacts" }
transforms = [{ plugin = "map-fullname" }]
sinks = [{ plugin = "mailer-sink" }, { plugin = "test-kv" }]
"#,
    );
    w.scratch.install("test-kv", "kv.wasm");
    let mut expected = create(&w.crm, 5);
    let refused = expected.remove(2);
    w.mailer.reject_key(&refused.0);
    let stored = || w.kv_stored("contacts-to-both");
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    wait_until("every contact stored", Duration::from_secs(20), || {
        (stored().len() == 5).then_some(())
    });
    assert!(stored().contains(&refused.0), "{:?}", stored());
    let letter = one_dead_letter(&w);
    assert_eq!(
        (&letter["sink"], &letter["key"]),
        (&json!("mailer-sink"), &json!(refused.0))
    );
    assert_eq!(w.run_totals(), [5, 4, 1, 0, 0], "{:#}", w.runs());

    w.mailer.accept_key(&refused.0);
    let replayed = w.replay_pipeline("contacts-to-both");
    assert!(replayed.contains("1 written"), "{replayed}");
    expected.insert(2, refused);
    w.wait_for_subscribers(&expected, Duration::from_secs(5));
    assert_eq!(w.dead_letters(), json!([]));
    assert_eq!(stored().len(), 5);
}

/// Two sinks share a pipeline's checkpoint: while the mailer is down,
/// test-kv (written first) keeps the first page, taken again at each
/// retry, and nothing behind it; once the mailer is back, both have every
/// contact.
#[test]
fn a_sink_that_is_down_holds_back_the_other_and_both_catch_up() {
    let w = World::new(
        3,
        "[plugins.test-kv]\nstorage = { quota-bytes = 65536 }\n",
        &format!(
            r#"
[pipelines.contacts-to-both]
every = "200ms"
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "test-kv" }}, {{ plugin = "mailer-sink" }}]

[pipelines.contacts-to-both.retry]
{QUICK_RETRIES}"#
        ),
    );
    w.scratch.install("test-kv", "kv.wasm");
    let expected = create(&w.crm, 6);
    w.mailer.faults().set_down(true);
    let stored = || w.kv_stored("contacts-to-both").len();
    let _host = w.start();
    wait_until("runs failed on the mailer", Duration::from_secs(20), || {
        (w.failed_runs() >= 2).then_some(())
    });
    assert_eq!(stored(), 3, "the first page only");
    assert!(w.mailer.subscribers(LIST).is_empty());
    assert_eq!(w.run_totals()[0], 0, "{:#}", w.runs());

    w.mailer.faults().set_down(false);
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    wait_until("every contact stored", Duration::from_secs(10), || {
        (stored() == 6).then_some(())
    });
    assert_eq!(w.dead_letters(), json!([]));
}

/// A sink fails its whole batch for one record it cannot write: test-kv
/// stores a batch atomically, and a contact too big for its storage quota
/// fails the batch (`fatal`, before anything is stored). The records are
/// found the same way, set aside as the sink's dead letters, and the rest
/// are stored. A replay the sink fails as a whole is tried letter by
/// letter, so the one that fits is written.
#[test]
fn records_a_sink_fails_its_batch_on_are_set_aside_and_the_rest_are_written() {
    let w = World::new(
        3,
        "[plugins.test-kv]\nstorage = { quota-bytes = 4096 }\n",
        r#"
[pipelines.contacts-to-kv]
every = "200ms"
source = { plugin = "crm-source", stream = "contacts" }
sinks = [{ plugin = "test-kv" }]
"#,
    );
    w.scratch.install("test-kv", "kv.wasm");
    let mut keys: Vec<String> = create(&w.crm, 6).into_iter().map(|(k, _)| k).collect();
    let big = [keys.remove(4), keys.remove(1)];
    for key in &big {
        let mut note = serde_json::Map::new();
        note.insert("note".into(), json!("x".repeat(8192)));
        w.crm.update(key, note).unwrap();
    }
    let stored = || w.kv_stored("contacts-to-kv");
    let host = w.start();
    wait_until("the other contacts stored", Duration::from_secs(20), || {
        (stored().len() == keys.len()).then_some(())
    });
    assert_eq!(stored(), keys);
    let letters = wait_until("two dead letters", Duration::from_secs(10), || {
        let letters = w.dead_letters();
        (letters.as_array().unwrap().len() == 2).then_some(letters)
    });
    for letter in letters.as_array().unwrap() {
        assert!(
            big.contains(&letter["key"].as_str().unwrap().to_string()),
            "{letter:#}"
        );
        assert_eq!(
            (&letter["stage"], &letter["sink"]),
            (&json!("sink"), &json!("test-kv"))
        );
        let reason = letter["reason"].as_str().unwrap();
        assert!(
            reason.contains("set aside: sink test-kv fails on this record alone")
                && reason.contains("quota"),
            "{reason}"
        );
    }
    w.wait_until_idle();
    drop(host);

    // Room for one of them, not both: the replay's batch fails, and the
    // letters are written one at a time.
    let grants = w.scratch.path().join("grants.toml");
    let text = std::fs::read_to_string(&grants).unwrap();
    std::fs::write(
        &grants,
        text.replace("quota-bytes = 4096", "quota-bytes = 12288"),
    )
    .unwrap();
    let replayed = w.replay_pipeline("contacts-to-kv");
    assert!(
        replayed.contains("1 written, 1 rejected again"),
        "{replayed}"
    );
    let letters = w.dead_letters();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters:#}");
    assert_eq!(letters[0]["attempts"], 2);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("quota"),
        "{letters:#}"
    );
    assert_eq!(stored().len(), keys.len() + 1);
}

/// The last page of a read holds one record, which the transform fails
/// on: nothing beside it tells it from a broken transform, but the
/// transform mapped the pages before, so the record is set aside.
#[test]
fn a_record_alone_in_its_batch_is_set_aside_once_the_stage_has_taken_others() {
    let w = picky_world();
    // Pages of three: the refused contact is the fourth, alone.
    let mut expected = create(&w.crm, 4);
    let last = expected.pop().unwrap();
    picky_refuses(&w, &[&last.0]);
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    set_aside_alone_and_idle(&w, &last.0);
}

/// Waits for the one dead letter, `key`'s, set aside alone in its batch by
/// a transform that mapped others before, and for the pipeline idle.
fn set_aside_alone_and_idle(w: &World, key: &str) {
    let letter = one_dead_letter(w);
    assert_eq!(letter["key"], key);
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("alone in its batch, though it mapped others before"),
        "{reason}"
    );
    w.wait_until_idle();
}

/// What a stage showed is kept across a restart: a record alone in the
/// first batch after it is set aside by the stage that took batches
/// before, instead of stopping the pipeline.
#[test]
fn a_record_alone_in_the_first_batch_after_a_restart_is_set_aside_by_a_stage_proven_before() {
    let w = picky_world();
    // The fourth contact, made while the host is down, is refused.
    picky_refuses(&w, &["c000004"]);
    let expected = create(&w.crm, 3);
    let mut host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    w.wait_until_idle();
    host.kill();
    let refused = w
        .crm
        .create(person("Refused", "Alone", "refused@example.com"));
    assert_eq!(refused.id, "c000004");

    let _host = w.start();
    set_aside_alone_and_idle(&w, "c000004");
}

/// So it is across one-off runs: a `causeway pipeline run-now` (no host)
/// knows what the runs before it showed.
#[test]
fn a_record_alone_in_the_first_batch_of_a_one_off_run_is_set_aside_by_a_stage_proven_before() {
    let w = picky_world();
    picky_refuses(&w, &["c000004"]);
    let expected = create(&w.crm, 3);
    assert!(w.lever("run-now").contains("run ok"));
    w.wait_for_subscribers(&expected, Duration::from_secs(5));
    let refused = w
        .crm
        .create(person("Refused", "Alone", "refused@example.com"));
    assert_eq!(refused.id, "c000004");

    assert!(w.lever("run-now").contains("run ok"));
    let letter = one_dead_letter(&w);
    assert_eq!(letter["key"], "c000004");
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("alone in its batch, though it mapped others before"),
        "{reason}"
    );
}

/// ... but a first batch of one record the transform fails on is not
/// taken for the record's: the pipeline stops, nothing is set aside.
#[test]
fn a_first_batch_of_one_record_a_transform_fails_on_stops_the_pipeline() {
    let w = picky_world();
    let only = create(&w.crm, 1);
    picky_refuses(&w, &[&only[0].0]);
    let _host = w.start();
    wait_until("the pipeline stopped", Duration::from_secs(20), || {
        let p = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
        (p[0]["state"] == "stopped").then_some(())
    });
    assert_eq!(w.dead_letters(), json!([]));
}

/// A transform that fails every record of its batch, each alone too, is
/// not taken for bad records: nothing is set aside, and the pipeline stops
/// with the plugin's reason, as for any fatal error.
#[test]
fn a_transform_failing_every_record_stops_the_pipeline_and_sets_nothing_aside() {
    let w = picky_world();
    let contacts = create(&w.crm, 3);
    let keys: Vec<&str> = contacts.iter().map(|(k, _)| k.as_str()).collect();
    picky_refuses(&w, &keys);
    let _host = w.start();
    let pipelines = wait_until("the pipeline stopped", Duration::from_secs(20), || {
        let p = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
        (p[0]["state"] == "stopped").then_some(p)
    });
    let reason = pipelines[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("test-picky")
            && reason.contains("refused by configuration")
            && reason.contains("fails its records alone too"),
        "{reason}"
    );
    assert_eq!(w.dead_letters(), json!([]));
    assert!(w.mailer.subscribers(LIST).is_empty());
}

#[test]
fn the_metrics_page_counts_the_calls_records_and_dead_letters_a_run_made() {
    let w = world("");
    let mut expected = create(&w.crm, 4);
    let blocked = expected.remove(1);
    w.mailer.reject_key(&blocked.0);
    let host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));

    let pipeline = ("pipeline", "contacts-to-mailer");
    let records = |m: &Metrics, stage: &str| {
        m.value(
            "causeway_pipeline_records_total",
            &[pipeline, ("stage", stage)],
        )
    };
    // The counts move when the page's bookkeeping commits, just after the
    // sink answered.
    let m = wait_until("the page counted", Duration::from_secs(20), || {
        let m = Metrics::scrape(&host);
        (records(&m, "written") == Some(3.0)).then_some(m)
    });
    assert_eq!(records(&m, "read"), Some(4.0), "{}", m.page);
    assert_eq!(records(&m, "rejected"), Some(1.0), "{}", m.page);
    assert_eq!(
        m.value("causeway_pipeline_dead_letters", &[pipeline]),
        Some(1.0),
        "{}",
        m.page
    );
    assert_eq!(
        m.value("causeway_pipeline_paused", &[pipeline]),
        Some(0.0),
        "{}",
        m.page
    );
    // Each stage's plugin: active, called, and (the connector) its HTTP
    // uses counted as allowed.
    for (plugin, operation) in [
        ("crm-source", "read"),
        ("map-fullname", "transform"),
        ("mailer-sink", "write"),
    ] {
        let of = ("plugin", plugin);
        assert_eq!(
            m.value("causeway_plugin_state", &[of, ("state", "active")]),
            Some(1.0),
            "{}",
            m.page
        );
        let ok = m
            .value(
                "causeway_plugin_calls_total",
                &[of, ("operation", operation), ("outcome", "ok")],
            )
            .unwrap_or(0.0);
        assert!(ok >= 1.0, "{plugin} {operation}: {}", m.page);
        let timed = m
            .value(
                "causeway_plugin_call_duration_seconds_count",
                &[of, ("operation", operation)],
            )
            .unwrap_or(0.0);
        assert!(timed >= ok, "every call timed: {}", m.page);
    }
    let allowed = |plugin: &str| {
        m.value(
            "causeway_capability_uses_total",
            &[
                ("plugin", plugin),
                ("capability", "http"),
                ("decision", "allowed"),
            ],
        )
        .unwrap_or(0.0)
    };
    assert!(allowed("crm-source") >= 1.0, "{}", m.page);
    assert!(allowed("mailer-sink") >= 1.0, "{}", m.page);
    assert_eq!(
        m.value(
            "causeway_capability_uses_total",
            &[("plugin", "map-fullname"), ("capability", "http")]
        ),
        None,
        "a transform has no HTTP: {}",
        m.page
    );
    // The run itself is counted when it ends.
    let m = wait_until("a run counted", Duration::from_secs(20), || {
        let m = Metrics::scrape(&host);
        m.value(
            "causeway_pipeline_last_success_timestamp_seconds",
            &[pipeline],
        )
        .is_some()
        .then_some(m)
    });
    let ok = m
        .value(
            "causeway_pipeline_runs_total",
            &[pipeline, ("outcome", "ok")],
        )
        .unwrap_or(0.0);
    assert!(ok >= 1.0, "{}", m.page);
    // Every HTTP use is an audit event the writer commits (within its
    // linger of a few milliseconds: the pipeline keeps polling meanwhile).
    wait_until(
        "the uses' audit events committed",
        Duration::from_secs(10),
        || {
            let m = Metrics::scrape(&host);
            let uses: f64 = ["crm-source", "mailer-sink"]
                .iter()
                .filter_map(|p| {
                    m.value(
                        "causeway_capability_uses_total",
                        &[("plugin", p), ("capability", "http")],
                    )
                })
                .sum();
            let audited = m.value("causeway_audit_events_total", &[])?;
            let commits = m.value("causeway_database_commits_total", &[])?;
            (uses >= 2.0 && audited >= uses && commits >= 1.0).then_some(())
        },
    );
}

#[test]
fn a_source_announcing_more_without_moving_on_ends_the_run_instead_of_looping() {
    let w = world("circuit-cooldown = \"300ms\"\n");
    let expected = create(&w.crm, 3);
    // The CRM lies three times: no contacts, and more to come.
    w.crm
        .faults()
        .inject(Fault::Lie(r#"{"contacts": [], "has_more": true}"#), 3);
    let _host = w.start();
    // Each lie ends its run, and the circuit paces the next; then the
    // truth gets through.
    w.wait_for_subscribers(&expected, Duration::from_secs(30));
    let runs = wait_until("a run that ends ok", Duration::from_secs(10), || {
        let runs = w.runs();
        let runs = runs.as_array().unwrap().clone();
        runs.iter().any(|r| r["outcome"] == "ok").then_some(runs)
    });
    let failed: Vec<&Value> = runs.iter().filter(|r| r["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 3, "one failed run per lie: {runs:#?}");
    for run in &failed {
        let error = run["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("read crm-source")
                && error.contains("says more follows but keeps the checkpoint (none)"),
            "{error}"
        );
    }
}

#[test]
fn a_source_sent_back_to_a_checkpoint_it_read_from_ends_the_run_instead_of_circling() {
    let w = world("circuit-cooldown = \"300ms\"\n");
    let expected = create(&w.crm, 7);
    // Pages of 3: the first two reads are answered truly (the cursor moves
    // to c3, then c6); the third, from c6, gets the first page again with
    // more to come, which sends the next read back to c3.
    let first_page = json!({ "contacts": &w.crm.contacts()[..3], "has_more": true });
    w.crm.faults().inject(Fault::Slow(Duration::ZERO), 2);
    w.crm
        .faults()
        .inject(Fault::Lie(first_page.to_string().leak()), 1);
    let _host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(30));
    let runs = w.runs();
    let runs = runs.as_array().unwrap();
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .map(|r| r["error"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(failed.len(), 1, "{runs:#?}");
    assert!(
        failed[0].contains("sends the next read back to checkpoint")
            && failed[0].contains("c000003")
            && failed[0].contains("read from before"),
        "{}",
        failed[0]
    );
}

#[test]
fn a_429_with_retry_after_is_honoured_without_spending_the_budget() {
    // A budget far smaller than the wait asked for: only a wait that does
    // not count against the budget lets the run through.
    let w = world("initial = \"10ms\"\nmax = \"20ms\"\nbudget = \"50ms\"\n");
    let expected = create(&w.crm, 2);
    w.crm.faults().inject(
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    let host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    assert!(
        host.logs().contains("waiting 1s as asked"),
        "{}",
        host.logs()
    );
    let runs = w.runs();
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] != "failed"),
        "{runs:#?}"
    );
}

/// The pipeline contacts-to-api: crm-source → test-rest-sink writing to
/// `api`, polled every 200 ms, with a retry budget of 50 ms; and the keys
/// of the `contacts` created in the CRM, sorted.
fn rest_sink_world(api: &support::FakeServer, contacts: usize) -> (World, Vec<String>) {
    let w = World::new(
        3,
        &format!(
            "[[plugins.test-rest-sink.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {}\nmethods = [\"PUT\", \"DELETE\"]\npath-prefix = \"/items/\"\n",
            api.addr.rsplit(':').next().unwrap()
        ),
        &format!(
            r#"
[plugins.test-rest-sink.config]
base_url = "http://{}"

[pipelines.contacts-to-api]
every = "200ms"
source = {{ plugin = "crm-source", stream = "contacts" }}
sinks = [{{ plugin = "test-rest-sink" }}]

[pipelines.contacts-to-api.retry]
initial = "10ms"
max = "20ms"
budget = "50ms"
"#,
            api.addr
        ),
    );
    w.scratch.install("test-rest-sink", "rest-sink.wasm");
    let mut keys: Vec<String> = create(&w.crm, contacts)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    keys.sort();
    (w, keys)
}

/// A CRM lying with a contact id of `..`: the sink's `PUT /items/..` would
/// be a `PUT /` once its URL is parsed. The host refuses it, the stage's
/// isolation sets that record aside with the reason, and every other
/// contact is written.
#[test]
fn a_record_whose_id_would_step_out_of_the_sinks_path_is_set_aside_and_the_rest_are_written() {
    let (api, items) = items_api(|_| None);
    let (w, expected) = rest_sink_world(&api, 3);
    w.crm
        .create_with_id("..", person("Dot", "Dot", "dots@example.com"));
    let _host = w.start();
    let letters = wait_until(
        "the others written, the lie set aside",
        Duration::from_secs(30),
        || {
            let letters = w.dead_letters();
            let written = items.lock().unwrap().stored.clone();
            (letters.as_array()?.len() == 1 && same_keys(written, &expected)).then_some(letters)
        },
    );
    assert_eq!(letters[0]["key"], "..", "{letters:#}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("holds the segment \"..\", which the URL parser resolves"),
        "{letters:#}"
    );
    let targets: Vec<String> = api.received().into_iter().map(|r| r.target).collect();
    assert!(
        targets
            .iter()
            .all(|t| t.starts_with("/items/") && t.len() > "/items/".len()),
        "{targets:?}"
    );
}

/// Gives [`rest_sink_world`]'s pipeline the retry policy `retry` (the
/// lines of its `retry` table) instead of its quick one.
fn retry_policy(w: &World, retry: &str) {
    let config = w.scratch.path().join("causeway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let quick = "initial = \"10ms\"\nmax = \"20ms\"\nbudget = \"50ms\"";
    assert!(text.contains(quick), "{text}");
    std::fs::write(&config, text.replace(quick, retry)).unwrap();
}

/// What a fake items API for test-rest-sink saw: each request, noted by
/// its throttle, and the keys it stored.
#[derive(Debug, Default)]
struct Items {
    throttle: support::Throttle,
    stored: Vec<String>,
}

/// A fake items API: `refuse` answers a request instead (a 429, a 503, a
/// 500) when it returns an answer; otherwise the record is stored by key.
fn items_api(
    refuse: impl Fn(&mut Items) -> Option<support::Answer> + Send + Sync + 'static,
) -> (support::FakeServer, std::sync::Arc<std::sync::Mutex<Items>>) {
    let items = std::sync::Arc::new(std::sync::Mutex::new(Items::default()));
    let api = support::FakeServer::start({
        let items = items.clone();
        move |request| {
            let mut seen = items.lock().unwrap();
            seen.throttle.arrived();
            if let Some(refused) = refuse(&mut seen) {
                return refused;
            }
            let key = request.target.trim_start_matches("/items/").to_string();
            seen.stored.push(key);
            support::Answer::ok("{}")
        }
    });
    (api, items)
}

/// Whether `written` (in any order, some perhaps twice) are the `expected`
/// keys, sorted.
fn same_keys(mut written: Vec<String>, expected: &[String]) -> bool {
    written.sort();
    written.dedup();
    written == expected
}

/// `causeway pipelines --json`: the first pipeline's reason, if any.
fn first_reason(w: &World) -> Option<String> {
    let pipelines = run_json(w.causeway().args(["pipelines", "--json"]));
    pipelines[0]["reason"].as_str().map(str::to_string)
}

/// An API with a quota of two writes a second, answering 429 with
/// `Retry-After: 2` beyond it, written record by record by a sink that
/// answers `retry` for what it could not write (the shape `causeway new`
/// scaffolds): the retries are the sink's answers, not an error with a
/// delay, yet the host reads the 429's `Retry-After` itself and waits as
/// asked, without spending the budget. Every record arrives, no run fails,
/// and no retry comes before the API said.
#[test]
fn records_a_sink_retries_after_a_429_wait_as_its_retry_after_asks() {
    use std::sync::Mutex;
    use std::time::Instant;

    // The window's start, and the writes it took.
    let window: Mutex<(Option<Instant>, u32)> = Mutex::default();
    let (api, quota) = items_api(move |items| {
        let mut window = window.lock().unwrap();
        let now = Instant::now();
        if window
            .0
            .is_none_or(|start| now >= start + Duration::from_secs(1))
        {
            *window = (Some(now), 0);
        }
        window.1 += 1;
        (window.1 > 2).then(|| items.throttle.refuse(2))
    });
    // A budget far smaller than the waits asked for: only waits that do
    // not count against it let the runs through.
    let (w, expected) = rest_sink_world(&api, 5);
    let host = w.start();
    // While the run waits, `causeway pipelines` says so, and until when.
    let reason = wait_until("the wait shown", Duration::from_secs(30), || {
        let pipelines = run_json(w.causeway().args(["pipelines", "--json"]));
        let reason = pipelines[0]["reason"].as_str()?.to_string();
        reason
            .contains("as the API asked (Retry-After)")
            .then_some(reason)
    });
    assert!(
        reason.starts_with("pipeline contacts-to-api: write test-rest-sink: waiting until 20"),
        "{reason}"
    );
    wait_until("every contact written", Duration::from_secs(30), || {
        same_keys(quota.lock().unwrap().stored.clone(), &expected).then_some(())
    });
    let throttle = &quota.lock().unwrap().throttle;
    assert!(
        throttle.refused >= 2,
        "five writes, two a window: {throttle:?}"
    );
    assert_eq!(
        throttle.early, 0,
        "writes sent before the Retry-After passed"
    );
    assert_eq!(w.failed_runs(), 0, "{:#}", w.runs());
    assert!(
        host.logs()
            .contains("as the API's Retry-After asked: the API answered 429"),
        "{}",
        host.logs()
    );
}

/// An API down for maintenance answers 503 with `Retry-After`: the sink
/// answers `retry` for its records (as the scaffold does for any 5xx), and
/// the pipeline backs off at least as long as the API said, within its
/// retry budget, instead of knocking on its own short backoff.
#[test]
fn a_sink_retrying_into_a_503_backs_off_at_least_its_retry_after() {
    let (api, down) =
        items_api(|items| (items.throttle.refused < 2).then(|| items.throttle.unavailable(1)));
    // Three contacts, one batch: after a 503 the sink sends nothing more
    // of it (`asks_to_wait`), so every request after the first is a retry.
    let (w, expected) = rest_sink_world(&api, 3);
    // A budget the waits fit in (the world's 50 ms would end the run).
    retry_policy(&w, "initial = \"10ms\"\nmax = \"20ms\"\nbudget = \"10s\"");
    let host = w.start();
    wait_until("every contact written", Duration::from_secs(30), || {
        same_keys(down.lock().unwrap().stored.clone(), &expected).then_some(())
    });
    let throttle = &down.lock().unwrap().throttle;
    assert_eq!(throttle.refused, 2, "{throttle:?}");
    assert_eq!(
        throttle.early, 0,
        "writes sent before the 503's Retry-After passed"
    );
    assert_eq!(w.failed_runs(), 0, "{:#}", w.runs());
    assert!(
        host.logs().contains("its 503's Retry-After asked 1s"),
        "{}",
        host.logs()
    );
}

/// An API down for maintenance longer than the retry budget: the run
/// fails at its first 503 (no retry could come before the API's
/// `Retry-After`), and the circuit stays open until then, not for the
/// shorter cooldown: the maintenance is not probed every cooldown.
#[test]
fn a_maintenance_past_the_budget_holds_the_circuit_until_its_retry_after() {
    let (api, items) = items_api(|items| Some(items.throttle.unavailable(600)));
    let (w, _) = rest_sink_world(&api, 1);
    retry_policy(
        &w,
        "initial = \"10ms\"\nmax = \"20ms\"\nbudget = \"1s\"\ncircuit-cooldown = \"1s\"",
    );
    let mut host = w.start();
    let until = wait_until("the circuit open", Duration::from_secs(30), || {
        let pipelines = run_json(w.causeway().args(["pipelines", "--json"]));
        (pipelines[0]["state"] == "circuit-open")
            .then(|| pipelines[0]["circuit_until"].as_str().map(str::to_string))
            .flatten()
    });
    let open_for = humantime::parse_rfc3339(&until)
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        open_for > Duration::from_secs(500),
        "open for {open_for:?}, not until the 503's Retry-After of 600 s"
    );
    let counts = || {
        let t = &items.lock().unwrap().throttle;
        (t.refused, t.early)
    };
    assert_eq!(counts(), (1, 0));
    // The table says when, too.
    let shown = run(w.causeway().arg("pipelines"));
    assert!(
        shown
            .stdout
            .contains(&format!("(the circuit lets a run try again at {until})")),
        "{}",
        shown.stdout
    );

    // A restarted host (say, upgraded) holds the circuit too: it does not
    // pull at start into the maintenance.
    host.terminate();
    assert!(host.wait_exit(20), "{}", host.logs());
    let host = w.start();
    host.wait_for_log("the pipeline is held until", 20);
    // Nothing to wait on but time: the pipeline's schedule (200 ms) and
    // the held task's rechecks (1 s) come round a few times in 3 s.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(counts(), (1, 0), "{}", host.logs());
    let pipelines = run_json(w.causeway().args(["pipelines", "--json"]));
    assert_eq!(pipelines[0]["state"], "circuit-open");
    assert_eq!(pipelines[0]["circuit_until"], until.as_str());
}

/// A source read waiting out the CRM's ten-minute `Retry-After` ends at
/// once when an operator pauses the pipeline, and goes on when resumed.
#[test]
fn a_pause_ends_a_run_whose_source_waits_out_a_retry_after() {
    let w = world("");
    let expected = create(&w.crm, 2);
    w.crm.faults().inject(
        Fault::RateLimited {
            retry_after_secs: 600,
        },
        1,
    );
    let host = w.start();
    host.wait_for_log("waiting 600s as asked", 20);
    w.lever("pause");
    wait_until("the run paused", Duration::from_secs(10), || {
        let runs = w.runs();
        (runs[0]["outcome"] == "paused").then_some(())
    });
    w.lever("resume");
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
}

/// An operator's pause comes through a long wait an API asked for: the
/// run ends at once, paused, its page not committed, nothing more written;
/// resumed, it writes every record.
#[test]
fn a_pause_ends_a_run_waiting_out_an_apis_retry_after() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let limiting = Arc::new(AtomicBool::new(true));
    let (api, state) = items_api({
        let limiting = limiting.clone();
        move |items| {
            (limiting.load(Ordering::Relaxed) && !items.stored.is_empty())
                .then(|| items.throttle.refuse(600))
        }
    });
    let (w, expected) = rest_sink_world(&api, 3);
    let _host = w.start();
    wait_until("the ten-minute wait", Duration::from_secs(30), || {
        first_reason(&w).filter(|r| r.contains("as the API asked"))
    });
    let out = run(w.causeway().args(["pipeline", "pause", "contacts-to-api"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    wait_until("the run paused", Duration::from_secs(10), || {
        let runs = w.runs();
        (runs[0]["outcome"] == "paused").then_some(())
    });
    assert_eq!(state.lock().unwrap().throttle.early, 0);

    limiting.store(false, Ordering::Relaxed);
    let out = run(w.causeway().args(["pipeline", "resume", "contacts-to-api"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    wait_until("every contact written", Duration::from_secs(20), || {
        same_keys(state.lock().unwrap().stored.clone(), &expected).then_some(())
    });
}

/// A host killed while a sink's write waits out an API's ten-minute
/// `Retry-After`: the next host holds the pipeline until then, recorded
/// as a circuit, rather than writing into the quota at start.
#[test]
fn a_host_killed_during_a_wait_as_asked_waits_it_out_when_started_again() {
    killed_during_a_ten_minute_wait(false);
}

/// The same for a maintenance's 503 with `Retry-After`, within a retry
/// budget long enough to wait it out.
#[test]
fn a_host_killed_during_a_maintenance_backoff_waits_it_out_when_started_again() {
    killed_during_a_ten_minute_wait(true);
}

/// A host killed while the sink's write waits ten minutes as its API
/// asked: a rate limit's 429, or an `unavailable` API's 503.
fn killed_during_a_ten_minute_wait(unavailable: bool) {
    let (api, state) = items_api(move |items| {
        (!items.stored.is_empty()).then(|| match unavailable {
            true => items.throttle.unavailable(600),
            false => items.throttle.refuse(600),
        })
    });
    let (w, _) = rest_sink_world(&api, 3);
    retry_policy(&w, "initial = \"10ms\"\nmax = \"20ms\"\nbudget = \"20m\"");
    let mut host = w.start();
    wait_until("the ten-minute wait", Duration::from_secs(30), || {
        first_reason(&w).filter(|r| r.contains("as the API asked"))
    });
    let counts = || {
        let t = &state.lock().unwrap().throttle;
        (t.refused, t.early)
    };
    assert_eq!(counts(), (1, 0));
    host.kill();

    let host = w.start();
    host.wait_for_log("the pipeline is held until", 20);
    // Nothing to wait on but time: the pipeline's schedule (200 ms) and
    // the held task's rechecks (1 s) come round a few times in 3 s.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(counts(), (1, 0), "{}", host.logs());
    let pipelines = run_json(w.causeway().args(["pipelines", "--json"]));
    assert_eq!(pipelines[0]["state"], "circuit-open", "{pipelines:#}");
    // Which stage waited, as the killed host recorded it.
    let reason = pipelines[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("write test-rest-sink: waiting until")
            && reason.contains("; held since the host restarted: no call before"),
        "{reason}"
    );
    let until = humantime::parse_rfc3339(pipelines[0]["circuit_until"].as_str().unwrap()).unwrap();
    let left = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(left > Duration::from_secs(500), "held for {left:?}");
    // The operator's lever still lifts it.
    let out = run(w.causeway().args(["pipeline", "resume", "contacts-to-api"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    wait_until("a write after the resume", Duration::from_secs(20), || {
        (counts().0 > 1).then_some(())
    });
}

/// A scratch host mirroring test-kv's stored records (a source that reads
/// its stream whole: every record on every run) through test-picky into
/// test-rest-sink (a write per record) at the first of `apis`, all
/// granted, skipping unchanged records.
fn mirror(apis: &[&support::FakeServer]) -> support::Scratch {
    let scratch = support::Scratch::new();
    scratch.install("test-kv", "kv.wasm");
    scratch.install("test-rest-sink", "rest-sink.wasm");
    scratch.install("test-picky", "picky.wasm");
    let mut grants = "[plugins.test-kv.storage]\nquota-keys = 100\n".to_string();
    for api in apis {
        grants.push_str(&format!(
            "[[plugins.test-rest-sink.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nmethods = [\"PUT\", \"DELETE\"]\npath-prefix = \"/items/\"\nport = {}\n",
            api.addr.rsplit(':').next().unwrap()
        ));
    }
    scratch.grants(&grants);
    configure_mirror(&scratch, &apis[0].addr, true, &[]);
    scratch
}

/// The mirror's pipeline writing to `addr`, skipping unchanged records as
/// `skip` says, its transform refusing the keys `refuse`.
fn configure_mirror(scratch: &support::Scratch, addr: &str, skip: bool, refuse: &[&str]) {
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!(
            r#"
[pipelines.mirror]
every = "1h"
skip-unchanged = {skip}
source = {{ plugin = "test-kv", stream = "c" }}
transforms = [{{ plugin = "test-picky", config = {{ refuse = {refuse:?} }} }}]
sinks = [{{ plugin = "test-rest-sink", config = {{ base_url = "http://{addr}" }} }}]
"#
        ),
    )
    .unwrap();
}

/// Stores `items` (key, value) in test-kv's storage for the pipeline
/// `mirror`, where its reads find them.
fn store(scratch: &support::Scratch, items: &[(&str, &str)]) {
    let batch: Vec<Value> = items
        .iter()
        .map(|(k, v)| json!({"stream": "c", "key": k, "data": {"v": v}}))
        .collect();
    let input = scratch.path().join("batch.json");
    std::fs::write(&input, Value::from(batch).to_string()).unwrap();
    let out = run(scratch
        .causeway()
        .args([
            "invoke",
            "test-kv",
            "write",
            "--pipeline",
            "mirror",
            "--input",
        ])
        .arg(&input));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
}

/// `causeway pipeline run-now mirror`: the records the API received
/// during it (`key=v`, in order), and the run's counts (read, written,
/// rejected, unchanged).
fn mirrored(scratch: &support::Scratch, api: &support::FakeServer) -> (Vec<String>, [i64; 4]) {
    let before = api.received().len();
    let out = run(scratch
        .causeway()
        .env("CAUSEWAY_LOG", "info")
        .args(["pipeline", "run-now", "mirror"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    let puts = api.received()[before..]
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let key = r.target.trim_start_matches("/items/");
            format!("{key}={}", body["v"].as_str().unwrap_or_default())
        })
        .collect();
    let runs = run_json(scratch.causeway().args(["runs", "--json"]));
    let counts = ["read", "written", "rejected", "unchanged"].map(|n| runs[0][n].as_i64().unwrap());
    // A run that found everything unchanged is no news at `info`.
    let told = out.stderr.contains("run ok: read");
    assert_eq!(told, counts[0] != counts[3], "{}", out.stderr);
    (puts, counts)
}

/// A source that can only read its stream whole answers every record on
/// every run. With `skip-unchanged`, a sink is given only what it has not
/// written as it is: a run writes what changed, and counts the rest
/// `unchanged`. What may no longer match what the sink holds is written
/// again: a record it refused, once replayed; everything after a reset,
/// or once the sink is pointed elsewhere; and everything once a pipeline
/// that stopped skipping skips again.
#[test]
fn a_pipeline_skipping_unchanged_records_writes_only_what_changed() {
    use std::sync::{Arc, Mutex};
    use support::{Answer, FakeServer};

    // The API refuses for good what it is told to, while told so.
    let refuse: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = |refuse: Arc<Mutex<Vec<String>>>| {
        move |request: &support::Received| {
            let key = request.target.trim_start_matches("/items/");
            if refuse.lock().unwrap().iter().any(|k| k == key) {
                return Answer {
                    status: 422,
                    ..Answer::ok(r#"{"error":"invalid"}"#)
                };
            }
            Answer::ok("{}")
        }
    };
    let api = FakeServer::start(handler(refuse.clone()));
    let other = FakeServer::start(handler(Arc::default()));
    let scratch = mirror(&[&api, &other]);
    store(&scratch, &[("c1", "a"), ("c2", "a"), ("c3", "a")]);
    let all = ["c1=a", "c2=a", "c3=a"].map(String::from).to_vec();
    assert_eq!(mirrored(&scratch, &api), (all.clone(), [3, 3, 0, 0]));
    // Read whole again: nothing written, every record counted unchanged.
    assert_eq!(mirrored(&scratch, &api), (vec![], [3, 0, 0, 3]));
    store(&scratch, &[("c2", "b")]);
    assert_eq!(
        mirrored(&scratch, &api),
        (vec!["c2=b".to_string()], [3, 1, 0, 2])
    );

    // A record the sink refuses is given again on every run, and once
    // the dead letter is replayed, again on the next: what the sink
    // holds of it is no longer known.
    refuse.lock().unwrap().push("c3".into());
    store(&scratch, &[("c3", "b")]);
    assert_eq!(
        mirrored(&scratch, &api),
        (vec!["c3=b".to_string()], [3, 0, 1, 2])
    );
    assert_eq!(
        mirrored(&scratch, &api),
        (vec!["c3=b".to_string()], [3, 0, 1, 2])
    );
    refuse.lock().unwrap().clear();
    let out = run(scratch
        .causeway()
        .args(["dlq", "replay", "--pipeline", "mirror"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        mirrored(&scratch, &api),
        (vec!["c3=b".to_string()], [3, 1, 0, 2])
    );
    assert_eq!(mirrored(&scratch, &api), (vec![], [3, 0, 0, 3]));

    // A reset writes everything again, as an operator resetting for a
    // destination that lost data expects.
    let now = ["c1=a", "c2=b", "c3=b"].map(String::from).to_vec();
    let out = run(scratch.causeway().args(["pipeline", "reset", "mirror"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(mirrored(&scratch, &api), (now.clone(), [3, 3, 0, 0]));

    // The sink pointed at another API holds nothing there yet.
    configure_mirror(&scratch, &other.addr, true, &[]);
    let out = run(scratch.causeway().args(["pipeline", "run-now", "mirror"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(other.received().len(), 3, "everything, at the new API");
    // What a sink was given is known for its last configuration only.
    configure_mirror(&scratch, &api.addr, true, &[]);
    assert_eq!(mirrored(&scratch, &api), (now.clone(), [3, 3, 0, 0]));

    // Not skipping, a pipeline writes everything every run and keeps
    // nothing of it: skipping again, it writes everything once.
    configure_mirror(&scratch, &api.addr, false, &[]);
    assert_eq!(mirrored(&scratch, &api), (now.clone(), [3, 3, 0, 0]));
    configure_mirror(&scratch, &api.addr, true, &[]);
    assert_eq!(mirrored(&scratch, &api), (now, [3, 3, 0, 0]));
    assert_eq!(mirrored(&scratch, &api), (vec![], [3, 0, 0, 3]));

    // A newer version a transform set aside, replayed, reaches the sink
    // past the runs: what the sink was given before is forgotten, so a
    // source going back to that version is written, not skipped.
    configure_mirror(&scratch, &api.addr, true, &["c1"]);
    store(&scratch, &[("c1", "z")]);
    assert_eq!(mirrored(&scratch, &api), (vec![], [3, 0, 1, 2]));
    configure_mirror(&scratch, &api.addr, true, &[]);
    let before = api.received().len();
    let out = run(scratch
        .causeway()
        .args(["dlq", "replay", "--pipeline", "mirror"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert_eq!(api.received().len(), before + 1, "c1=z replayed");
    store(&scratch, &[("c1", "a")]);
    assert_eq!(
        mirrored(&scratch, &api),
        (vec!["c1=a".to_string()], [3, 1, 0, 2])
    );
}

/// A sink answering `retry` for its records (an API failing with 500s)
/// backs off on the pipeline's own clock; a pause meanwhile ends the run
/// within a second of a long backoff, not after the whole budget.
#[test]
fn a_pause_ends_a_run_backing_off_a_sinks_retry_records() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let failing = Arc::new(AtomicBool::new(true));
    let (api, items) = items_api({
        let failing = failing.clone();
        move |_| {
            failing.load(Ordering::Relaxed).then(|| support::Answer {
                status: 500,
                ..support::Answer::ok(r#"{"error":"boom"}"#)
            })
        }
    });
    let (w, expected) = rest_sink_world(&api, 1);
    // Backoffs of 20 s, within a budget of 10 minutes.
    retry_policy(&w, "initial = \"20s\"\nmax = \"20s\"\nbudget = \"10m\"");
    let host = w.start();
    host.wait_for_log("to retry in", 30);
    let out = run(w.causeway().args(["pipeline", "pause", "contacts-to-api"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    wait_until("the run paused", Duration::from_secs(10), || {
        let runs = w.runs();
        (runs[0]["outcome"] == "paused").then_some(())
    });
    failing.store(false, Ordering::Relaxed);
    let out = run(w.causeway().args(["pipeline", "resume", "contacts-to-api"]));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    wait_until("the contact written", Duration::from_secs(20), || {
        same_keys(items.lock().unwrap().stored.clone(), &expected).then_some(())
    });
}

#[test]
fn operators_pause_resume_run_now_and_reset_a_pipeline() {
    let w = world("");
    let mut expected = create(&w.crm, 2);
    let triggers = || -> Vec<String> {
        let runs = w.runs();
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["trigger"].as_str().unwrap().to_string())
            .collect()
    };

    // No host: run-now runs in this process.
    assert!(w.lever("run-now").contains("run ok"));
    w.wait_for_subscribers(&expected, Duration::from_secs(1));

    // Paused: the host's schedule skips it, but run-now still runs it.
    w.lever("pause");
    let _host = w.start();
    expected.extend(create(&w.crm, 1));
    assert!(w.lever("run-now").contains("running host started a run"));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    assert_eq!(
        triggers(),
        ["run-now", "run-now"],
        "a paused pipeline ran on schedule"
    );

    // Resumed: scheduled runs again.
    w.lever("resume");
    wait_until("a scheduled run", Duration::from_secs(20), || {
        triggers().contains(&"schedule".to_string()).then_some(())
    });

    // Reset: the next run reads every contact again.
    w.lever("pause");
    wait_until(
        "the run in progress to end",
        Duration::from_secs(20),
        || {
            let p = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
            (p[0]["state"] != "running").then_some(())
        },
    );
    w.lever("reset");
    w.lever("run-now");
    wait_until(
        "a run reading all three again",
        Duration::from_secs(20),
        || {
            let runs = w.runs();
            (runs[0]["read"] == 3 && runs[0]["outcome"] == "ok").then_some(())
        },
    );
    assert_eq!(
        w.mailer.subscribers(LIST).len(),
        3,
        "replayed upserts are idempotent"
    );

    // Its runs by name; a name no pipeline has is an error, not an empty list.
    let runs =
        run_json(
            w.scratch
                .causeway()
                .args(["runs", "--pipeline", "contacts-to-mailer", "--json"]),
        );
    assert!(runs.as_array().is_some_and(|r| !r.is_empty()), "{runs}");
    let out = run(w
        .scratch
        .causeway()
        .args(["runs", "--pipeline", "contacts-to-mailr"]));
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("no pipeline named \"contacts-to-mailr\" in the configuration")
            && out
                .stderr
                .contains("(did you mean \"contacts-to-mailer\"?)"),
        "{}",
        out.stderr
    );
    // So for every command taking a pipeline's name: none answers an empty
    // list, or "0 written", for a typo.
    for args in [
        &["pipeline", "pause", "contacts-to-mailr"][..],
        &["dlq", "list", "--pipeline", "contacts-to-mailr"],
        &["dlq", "replay", "--pipeline", "contacts-to-mailr"],
        &["dlq", "drop", "--pipeline", "contacts-to-mailr"],
        &["storage", "crm-source", "--pipeline", "contacts-to-mailr"],
    ] {
        let out = run(w.causeway().args(args));
        assert!(!out.success, "{args:?}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("(did you mean \"contacts-to-mailer\"?)"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // The audit log's filter answers its empty table, with a note.
    let out = run(w.causeway().args(["audit", "--run", "contacts-to-mailr#1"]));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "note: no pipeline named \"contacts-to-mailr\" has runs on record (did you mean \"contacts-to-mailer\"?)"
        ),
        "{}",
        out.stderr
    );
    let out = run(w.causeway().args(["audit", "--run", "contacts-to-mailer"]));
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stderr.contains("write PIPELINE#ID"), "{}", out.stderr);
}

/// Sixty contacts in twenty pages of three, each read slowly, so the run
/// is still going when the test acts: the host, once the first page is
/// in, and the contacts.
fn a_slow_run_under_way(w: &World) -> (RunningHost, Vec<Subscriber>) {
    let expected = create(&w.crm, 60);
    w.crm
        .faults()
        .inject(Fault::Slow(Duration::from_millis(300)), 20);
    let host = w.start();
    wait_until("the run under way", Duration::from_secs(20), || {
        (w.runs()[0]["read"].as_i64() >= Some(3)).then_some(())
    });
    (host, expected)
}

#[test]
fn a_pause_stops_a_run_between_pages_and_resume_goes_on_from_its_checkpoint() {
    let w = world("");
    let (_host, expected) = a_slow_run_under_way(&w);
    w.lever("pause");
    let paused = wait_until("the run paused", Duration::from_secs(20), || {
        let run = w.runs()[0].clone();
        (run["outcome"] == "paused").then_some(run)
    });
    assert_eq!(paused["error"], "paused by an operator", "{paused:#}");
    assert!(paused["read"].as_i64() < Some(60), "{paused:#}");
    assert!(w.mailer.subscribers(LIST).len() < 60);
    // The state is recorded just after the run ends.
    let pipeline = wait_until("the pipeline idle", Duration::from_secs(10), || {
        let p = run_json(w.scratch.causeway().args(["pipelines", "--json"]))[0].clone();
        (p["state"] == "idle").then_some(p)
    });
    assert_eq!(pipeline["paused"], true, "{pipeline:#}");

    w.lever("resume");
    w.wait_for_subscribers(&expected, Duration::from_secs(30));
    // Each lever is on record, by the host, with what it did.
    let levers: Vec<[String; 2]> = (w.acts_on_record("pipeline").into_iter())
        .map(|[action, target, _]| [action, target])
        .collect();
    let target = "pipeline contacts-to-mailer";
    assert_eq!(levers, [["pause", target], ["resume", target]]);
    // Each contact was read once: the paused run read no page it did not
    // deliver, and the next went on from its checkpoint. (A page's counts
    // commit just after its sink write: wait for the last.)
    let read = wait_until("every page counted", Duration::from_secs(10), || {
        let read: i64 = w
            .runs()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["read"].as_i64().unwrap_or(0))
            .sum();
        (read >= 60).then_some(read)
    });
    assert_eq!(read, 60);
}

/// A run stopped by a change made while it ran (its sink's file removed)
/// is stopped on that change: the task does not take the stop for the
/// configuration it woke on, try once more at its next tick, and stop
/// again. Put back, the sink's file is a change worth a try.
#[test]
fn a_run_stopped_by_a_change_made_while_it_ran_stops_the_pipeline_once() {
    let w = world("");
    let (host, expected) = a_slow_run_under_way(&w);
    let sink = w.scratch.plugins().join("mailer-sink.wasm");
    let kept = std::fs::read(&sink).unwrap();
    std::fs::remove_file(&sink).unwrap();
    host.wait_for_log("stopped: ", 20);
    let stopped = |w: &World| {
        let runs = w.runs();
        let runs = runs.as_array().unwrap().iter();
        runs.filter(|r| r["outcome"] == "stopped").count()
    };
    // What must not happen has no event to wait on: the task ticks every
    // 200 ms, and a second try would come at the first tick, so five
    // ticks' time shows it (and a slow machine can only hide it, never
    // fail a host without it).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stopped(&w), 1, "{:#}", w.runs());
    assert_eq!(
        host.logs().matches("stopped: ").count(),
        1,
        "{}",
        host.logs()
    );

    std::fs::write(&sink, kept).unwrap();
    w.wait_for_subscribers(&expected, Duration::from_secs(30));
    assert_eq!(stopped(&w), 1, "{:#}", w.runs());
}

#[test]
fn runs_dead_letters_and_deliveries_past_their_retention_are_forgotten_when_the_host_starts() {
    let w = world_with("every = \"1h\"\nruns-retention = \"1day\"", "");
    create(&w.crm, 1);
    // Old runs, as a host years ago would have left them.
    let db = w.scratch.path().join("causeway-data/causeway.db");
    let out = run(w
        .scratch
        .causeway()
        .env("CRM_TOKEN", CRM_TOKEN)
        .env("MAILER_KEY", MAILER_KEY)
        .args(["pipeline", "run-now", "contacts-to-mailer"]));
    assert!(out.success, "{}", out.stderr);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        for outcome in ["ok", "failed", "failed"] {
            conn.execute(
                "INSERT INTO pipeline_run (pipeline, trigger, started_at, finished_at, outcome)
                 VALUES ('contacts-to-mailer', 'schedule', '2020-01-01T00:00:00Z', '2020-01-01T00:00:01Z', ?1)",
                [outcome],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO pipeline_run (pipeline, trigger, started_at, finished_at, outcome)
             VALUES ('a-removed-pipeline', 'schedule', '2020-01-01T00:00:00Z', '2020-01-01T00:00:01Z', 'ok')",
            [],
        )
        .unwrap();
        // Dead letters, one old and one recent, and an old delivery.
        for (key, at) in [
            ("old", "2020-01-01T00:00:00Z"),
            ("new", "2099-01-01T00:00:00Z"),
        ] {
            conn.execute(
                "INSERT INTO dead_letter (pipeline, sink, stream, key, op, data, reason, created_at)
                 VALUES ('contacts-to-mailer', 'mailer-sink', 'subscribers', ?1, 'upsert', '{}', 'r', ?2)",
                [key, at],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO webhook_inbox (pipeline, delivery_id, received_at, method, path, query, headers, body, state)
             VALUES ('a-removed-pipeline', 'd1', '2020-01-01T00:00:00Z', 'POST', '/h', '', '[]', x'', 'done')",
            [],
        )
        .unwrap();
    }
    let count = |table: &str| -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    let started = |runs: &Value, at: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["started_at"].as_str().unwrap().starts_with(at))
            .count()
    };
    // A run of today after them: the newest, and the newest good one.
    let out = run(w
        .scratch
        .causeway()
        .env("CRM_TOKEN", CRM_TOKEN)
        .env("MAILER_KEY", MAILER_KEY)
        .args(["pipeline", "run-now", "contacts-to-mailer"]));
    assert!(out.success, "{}", out.stderr);
    let runs = w.runs();
    assert_eq!(started(&runs, "2020"), 4, "{runs:#}");

    // The host forgets them when it starts (and every hour): the
    // removed pipeline's go too, but not a run or a dead letter of today.
    let _host = w.start();
    let runs = wait_until("the old runs forgotten", Duration::from_secs(20), || {
        let runs = w.runs();
        (started(&runs, "2020") == 0).then_some(runs)
    });
    let letters = w.dead_letters();
    let keys = keys_of(&letters);
    assert_eq!(keys, ["new"], "{letters:#}");
    assert_eq!(count("webhook_inbox"), 0);
    let today = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "run-now" && r["outcome"] == "ok")
        .count();
    assert_eq!(today, 2, "{runs:#}");
}

#[test]
fn runs_past_the_count_a_pipeline_keeps_are_forgotten_when_the_host_starts() {
    let w = world_with("every = \"1h\"\nruns-keep = 2", "");
    let ids = |runs: &Value| -> Vec<i64> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    for _ in 0..4 {
        w.lever("run-now");
    }
    let before = ids(&w.runs());
    assert_eq!(before.len(), 4, "{before:?}");
    let (newest, oldest) = (before.iter().max().copied(), before.iter().min().copied());

    // Recent as they are, the host keeps the newest two when it starts
    // (its own first run may come before or after).
    let _host = w.start();
    let kept = wait_until(
        "runs past the newest two forgotten",
        Duration::from_secs(20),
        || {
            let now = ids(&w.runs());
            (now.len() <= 3 && !now.contains(&oldest?)).then_some(now)
        },
    );
    assert!(kept.contains(&newest.unwrap()), "{kept:?} of {before:?}");
    assert!(
        before.iter().filter(|id| kept.contains(id)).count() <= 2,
        "{kept:?} of {before:?}"
    );
}

#[test]
fn an_edited_schedule_applies_at_once_not_after_the_old_interval() {
    let w = world_with("every = \"1h\"", "");
    let mut expected = create(&w.crm, 1);
    let host = w.start();
    // The first run, at start; the next would be an hour away.
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let config = w.scratch.path().join("causeway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let edited = config.with_extension("toml.partial");
    std::fs::write(&edited, text.replace("every = \"1h\"", "every = \"200ms\"")).unwrap();
    std::fs::rename(&edited, &config).unwrap();
    host.wait_for_log("reloaded", 10);
    // The command line's --listen is not taken for an edit of the file's.
    assert!(
        !host.logs().contains("takes effect when the host restarts"),
        "{}",
        host.logs()
    );
    expected.extend(create(&w.crm, 1));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));

    // Removed from the configuration, it says so.
    let text = std::fs::read_to_string(&config).unwrap();
    let without: String = text
        .split("[pipelines.contacts-to-mailer")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&edited, without).unwrap();
    std::fs::rename(&edited, &config).unwrap();
    wait_until(
        "the pipeline shown removed",
        Duration::from_secs(20),
        || {
            let db = w.scratch.path().join("causeway-data/causeway.db");
            let conn = rusqlite::Connection::open(db).ok()?;
            let state: String = conn
                .query_row(
                    "SELECT state FROM pipeline_state WHERE pipeline = 'contacts-to-mailer'",
                    [],
                    |r| r.get(0),
                )
                .ok()?;
            (state == "removed").then_some(())
        },
    );
}

#[test]
fn an_auth_error_stops_the_pipeline_with_a_visible_reason() {
    let w = world("");
    create(&w.crm, 1);
    let host = RunningHost::start(
        w.scratch
            .causeway()
            .env("CRM_TOKEN", CRM_TOKEN)
            .env("MAILER_KEY", "a-wrong-key")
            .args(["run", "--listen", "127.0.0.1:0"]),
    );
    let pipelines = wait_until("the pipeline stopped", Duration::from_secs(20), || {
        let p = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
        (p[0]["state"] == "stopped").then_some(p)
    });
    let reason = pipelines[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("mailer-sink") && reason.contains("auth"),
        "{reason}"
    );
    host.wait_for_log("stopped:", 10);
    // Told once, as what it did to the pipeline.
    let logs = host.logs();
    let told: Vec<&str> = logs.lines().filter(|l| l.contains(reason)).collect();
    assert_eq!(told.len(), 1, "{logs}");
    assert!(told[0].contains("ERROR"), "{}", told[0]);
    let out = run(w.scratch.causeway().args(["pipelines"]));
    assert!(
        out.stdout
            .contains("\n\ncontacts-to-mailer: write mailer-sink"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.ends_with("\n\n"), "{:?}", out.stdout);
    // Stopped means no more attempts: the run count stays put.
    let runs = w.runs();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["outcome"], "stopped");
}

/// The committed checkpoint of the pipeline, as `(updated_at, id)`.
fn committed_cursor(w: &World) -> Option<(i64, String)> {
    let db = w.scratch.path().join("causeway-data/causeway.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let text: String = conn
        .query_row(
            "SELECT checkpoint FROM checkpoint WHERE pipeline = 'contacts-to-mailer'",
            [],
            |row| row.get(0),
        )
        .ok()?;
    let cursor: Value = serde_json::from_str(&text).unwrap();
    Some((
        cursor["updated_at"].as_i64().unwrap(),
        cursor["id"].as_str().unwrap().to_string(),
    ))
}

/// A page whose commit fails (a trigger makes the checkpoint's write
/// fail): the run fails saying the page will be read again, nothing of
/// the page's bookkeeping stays, and once commits work the page is read
/// and written again. What the stages showed on the failed page is put
/// back and saved with the next commit that works.
#[test]
fn a_page_whose_commit_fails_is_read_again_and_what_it_showed_is_saved_later() {
    let w = world(QUICK_RETRIES);
    // The database, made by a run with nothing to read.
    w.lever("run-now");
    let db = w.scratch.path().join("causeway-data/causeway.db");
    let sql = |statement: &str| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(statement)
            .unwrap();
    };
    sql(
        "CREATE TRIGGER refuse_checkpoints BEFORE INSERT ON checkpoint
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    );
    let expected = create(&w.crm, 2);
    let host = w.start();
    let failed = wait_until(
        "a run failed on its commit",
        Duration::from_secs(20),
        || {
            let runs = w.runs();
            runs.as_array()
                .unwrap()
                .iter()
                .find(|r| r["outcome"] == "failed")
                .cloned()
        },
    );
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("the page's bookkeeping was not committed")
            && error.contains("refused by the test")
            && error.contains("it will be read again"),
        "{error}"
    );
    // The page's counts went with its commit.
    assert_eq!(
        (&failed["read"], &failed["written"]),
        (&json!(0), &json!(0))
    );
    let proven = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM stage_proven", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(proven(), 0);
    assert_eq!(committed_cursor(&w), None);

    sql("DROP TRIGGER refuse_checkpoints;");
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    wait_until("the page committed", Duration::from_secs(20), || {
        committed_cursor(&w).map(|_| ())
    });
    // map-fullname and mailer-sink took their first batches in the page
    // that failed: saved with a later commit all the same.
    assert_eq!(proven(), 2);
    // Read twice, counted once: in the runs, and on /metrics (which move
    // just after the commit the runs show).
    assert_eq!(w.run_totals()[0], 2, "{:#}", w.runs());
    let counted = |m: &Metrics| {
        m.value(
            "causeway_pipeline_records_total",
            &[("pipeline", "contacts-to-mailer"), ("stage", "read")],
        )
    };
    let m = wait_until("the reads counted", Duration::from_secs(10), || {
        let m = Metrics::scrape(&host);
        (counted(&m) >= Some(2.0)).then_some(m)
    });
    assert_eq!(counted(&m), Some(2.0), "{}", m.page);
}

#[test]
fn killed_at_any_point_of_a_run_the_host_loses_nothing_and_never_checkpoints_ahead() {
    let w = world("initial = \"20ms\"\nmax = \"50ms\"\n");
    let expected = create(&w.crm, 30);
    // Every mailer write takes 150 ms: a window to be killed in.
    w.mailer
        .faults()
        .inject(Fault::Slow(Duration::from_millis(150)), 10_000);
    for round in 0..9 {
        let mut host = w.start();
        let before = w.mailer.faults().requests();
        match round % 3 {
            // During a sink write: the request has arrived, no answer yet.
            0 => {
                wait_until("a sink write", Duration::from_secs(20), || {
                    (w.mailer.faults().requests() > before).then_some(())
                });
            }
            // Just after a write was answered: around the checkpoint commit.
            1 => {
                wait_until("a sink write", Duration::from_secs(20), || {
                    (w.mailer.faults().requests() > before).then_some(())
                });
                std::thread::sleep(Duration::from_millis(150 + 5 * round as u64));
            }
            // Before any write: while the first page is read.
            _ => {}
        }
        host.kill();
        // Whatever the point, everything at or before the committed
        // checkpoint is in the mailer.
        if let Some(cursor) = committed_cursor(&w) {
            let delivered = w.mailer.subscribers(LIST);
            for contact in w.crm.contacts() {
                if (contact.updated_at, contact.id.clone()) <= cursor {
                    assert!(
                        delivered.contains_key(&contact.id),
                        "round {round}: the checkpoint passed {} before the mailer had it",
                        contact.id
                    );
                }
            }
        }
    }
    // Restarted for good: every contact arrives.
    let mut host = w.start();
    w.wait_for_subscribers(&expected, Duration::from_secs(60));
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
    let runs = w.runs();
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"] == "interrupted"),
        "the killed runs show as interrupted: {runs:#?}"
    );
    // Every request the hosts made is in the audit log, however soon after
    // it the host was killed, but the one a kill cut short (a run makes
    // one at a time): a use the host saw answered was journaled first.
    let verify = run(w.causeway().args(["audit", "verify"]));
    assert!(verify.success, "{}{}", verify.stdout, verify.stderr);
    let requests = w.crm.faults().requests() + w.mailer.faults().requests();
    let audited = audit_rows(&w.scratch.path().join("causeway-data"))
        .iter()
        .filter(|r| r.1 == "http")
        .count() as u64;
    assert!(
        audited <= requests && audited + 9 >= requests,
        "{audited} audited of {requests} requests"
    );
}

const HOOK_KEY: &[u8] = b"a 32-byte key for the crm hooks!";

fn hook_secret() -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(HOOK_KEY)
    )
}

fn webhook_world(retry: &str) -> World {
    world_with(
        "webhook = { path = \"/hooks/crm\", scheme = \"standard-webhooks\", secret = \"env:CRM_HOOK_SECRET\", max-body-bytes = 4096 }",
        retry,
    )
}

fn start_with_hooks(w: &World) -> RunningHost {
    RunningHost::start(w.causeway().env("CRM_HOOK_SECRET", hook_secret()).args([
        "run",
        "--listen",
        "127.0.0.1:0",
    ]))
}

/// A contact event as the CRM would post it, signed; its status and body.
fn deliver(host: &RunningHost, id: &str, body: &[u8], signed_body: &[u8]) -> (u16, String) {
    let headers = signed_headers(id, signed_body);
    support::try_http_with(&host.addr, "POST", "/hooks/crm", &as_pairs(&headers), body).unwrap()
}

/// The headers a Standard Webhooks sender signs `body` with, now, under
/// [`HOOK_KEY`].
fn signed_headers(id: &str, body: &[u8]) -> [(&'static str, String); 4] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    [
        ("content-type", "application/json".to_string()),
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", now.to_string()),
        (
            "webhook-signature",
            causeway::webhook::verify::sign_standard(HOOK_KEY, id, now, body),
        ),
    ]
}

/// `headers` as the request helpers take them.
fn as_pairs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn contact_event(id: &str, first: &str) -> Vec<u8> {
    json!({
        "event": "contact.created",
        "contact": {
            "id": id, "updated_at": 1_700_000_000_000i64,
            "firstName": first, "lastName": "Hook", "email": format!("{id}@example.com"),
        },
    })
    .to_string()
    .into_bytes()
}

/// A contact event (`contact.created`, `.updated` or `.deleted`) as the CRM
/// would post it, the contact changed at `at` (ms).
fn event_at(event: &str, id: &str, first: &str, at: i64) -> Vec<u8> {
    json!({
        "event": event,
        "contact": {
            "id": id, "updated_at": at,
            "firstName": first, "lastName": "Hook", "email": format!("{id}@example.com"),
        },
    })
    .to_string()
    .into_bytes()
}

/// Webhook deliveries arrive out of order (a vendor retries those an outage
/// refused after newer ones went through): one older than a version of its
/// contact already let through is skipped, so it neither writes old data
/// over new nor brings a deleted contact back. A reset trusts the source
/// again.
#[test]
fn a_late_webhook_delivery_never_writes_an_older_version_over_a_newer_one() {
    let w = webhook_world("");
    let host = start_with_hooks(&w);
    let push = |n: usize, body: Vec<u8>| {
        assert_eq!(deliver(&host, &format!("msg_{n}"), &body, &body).0, 202);
        wait_until("the delivery read", Duration::from_secs(20), || {
            (webhook_runs_read(&w) == n as i64).then_some(())
        });
    };
    push(1, event_at("contact.created", "k1", "Kim", 1_000));
    w.wait_for_subscribers(&[("k1".into(), "Kim Hook".into())], Duration::from_secs(20));

    push(2, event_at("contact.updated", "k1", "Old", 900));
    host.wait_for_log(
        "1 records skipped, each older than a version of it already let through",
        10,
    );
    w.wait_for_subscribers(&[("k1".into(), "Kim Hook".into())], Duration::from_secs(1));

    // Deleted, then an update from before the delete arrives.
    push(3, event_at("contact.deleted", "k1", "Kim", 2_000));
    w.wait_for_subscribers(&[], Duration::from_secs(20));
    push(4, event_at("contact.updated", "k1", "Ghost", 1_500));
    w.wait_for_subscribers(&[], Duration::from_secs(1));
    assert_eq!(w.dead_letters(), json!([]));
    // Counted as read and skipped, never as written (the counts move just
    // after the commit the run history shows).
    let counted = |m: &Metrics| {
        ["read", "written", "skipped"].map(|stage| {
            m.value(
                "causeway_pipeline_records_total",
                &[("pipeline", "contacts-to-mailer"), ("stage", stage)],
            )
        })
    };
    let m = wait_until("the records counted", Duration::from_secs(10), || {
        let m = Metrics::scrape(&host);
        (counted(&m)[0] == Some(4.0)).then_some(m)
    });
    assert_eq!(counted(&m), [Some(4.0), Some(2.0), Some(2.0)], "{}", m.page);
    // And in the runs' history, where they add up.
    assert_eq!(w.run_totals(), [4, 2, 0, 2, 0], "{:#}", w.runs());

    // After a reset the source is taken as it comes.
    w.lever("pause");
    wait_until(
        "the reset taken (refused while a run is in progress)",
        Duration::from_secs(10),
        || {
            let out = run(w
                .causeway()
                .args(["pipeline", "reset", "contacts-to-mailer"]));
            out.success.then_some(())
        },
    );
    w.lever("resume");
    // A reset refused while a run was in progress left no row.
    let actions: Vec<String> = (w.acts_on_record("pipeline").into_iter())
        .map(|[action, ..]| action)
        .collect();
    assert_eq!(actions, ["pause", "reset", "resume"]);
    push(5, event_at("contact.updated", "k1", "Back", 1_200));
    w.wait_for_subscribers(
        &[("k1".into(), "Back Hook".into())],
        Duration::from_secs(20),
    );

    // A stamp in microseconds (years ahead) is taken as none, with a
    // warning: it goes through, and does not hold back the versions after.
    push(
        6,
        event_at("contact.updated", "k1", "Far", 1_700_000_000_000_000),
    );
    w.wait_for_subscribers(&[("k1".into(), "Far Hook".into())], Duration::from_secs(20));
    host.wait_for_log("records carry a timestamp more than a day ahead", 10);
    push(7, event_at("contact.updated", "k1", "Later", 1_300));
    w.wait_for_subscribers(
        &[("k1".into(), "Later Hook".into())],
        Duration::from_secs(20),
    );
}

fn webhook_runs_read(w: &World) -> i64 {
    let runs = w.runs();
    runs.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "webhook")
        .map(|r| r["read"].as_i64().unwrap())
        .sum()
}

#[test]
fn deliveries_stored_while_paused_are_processed_once_resumed() {
    let w = webhook_world("");
    w.lever("pause");
    let host = start_with_hooks(&w);
    let body = contact_event("p1", "Paula");
    // Stored before the 202, and waiting: a paused pipeline takes none.
    assert_eq!(deliver(&host, "msg_p1", &body, &body).0, 202);
    // A webhook-only pipeline has no schedule to notice the resume by.
    w.lever("resume");
    w.wait_for_subscribers(
        &[("p1".into(), "Paula Hook".into())],
        Duration::from_secs(20),
    );
}

/// `causeway pipelines --json`'s row for `name`.
fn pipeline_row(w: &World, name: &str) -> Option<Value> {
    let rows = run_json(w.scratch.causeway().args(["pipelines", "--json"]));
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[test]
fn deliveries_of_a_removed_pipeline_are_shown_waiting_and_processed_once_it_is_back_without_its_trigger()
 {
    let w = webhook_world("");
    w.lever("pause");
    let mut host = start_with_hooks(&w);
    let body = contact_event("r1", "Rita");
    assert_eq!(deliver(&host, "msg_r1", &body, &body).0, 202);
    let row = pipeline_row(&w, "contacts-to-mailer").unwrap();
    assert_eq!(row["trigger"], "webhook /hooks/crm", "{row:#}");
    assert_eq!(row["pending_deliveries"], 1, "{row:#}");
    let table = run(w.scratch.causeway().arg("pipelines"));
    assert!(table.stdout.contains("INBOX"), "{}", table.stdout);
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());

    // Removed from the configuration, with a delivery it accepted waiting.
    let config = w.scratch.path().join("causeway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("[pipelines.contacts-to-mailer]").unwrap();
    std::fs::write(&config, &text[..start]).unwrap();
    let row = pipeline_row(&w, "contacts-to-mailer")
        .expect("a removed pipeline with work waiting is listed");
    assert_eq!(row["state"], "removed", "{row:#}");
    assert_eq!(row["pending_deliveries"], 1, "{row:#}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 webhook deliveries it accepted wait unprocessed")
            && reason.contains("configure it again"),
        "{reason}"
    );
    let check = run(w.scratch.causeway().args(["check"]));
    assert!(
        check.stdout.contains(
            "pipelines.contacts-to-mailer is not configured, yet 1 webhook deliveries it accepted wait"
        ),
        "{}",
        check.stdout
    );

    // Back, without its webhook trigger now, and resumed: the delivery it
    // accepted is processed all the same, and nothing waits.
    let hook = text.lines().find(|l| l.starts_with("webhook = ")).unwrap();
    std::fs::write(&config, text.replace(hook, "every = \"1h\"")).unwrap();
    let _host = start_with_hooks(&w);
    w.lever("resume");
    w.wait_for_subscribers(
        &[("r1".into(), "Rita Hook".into())],
        Duration::from_secs(20),
    );
    wait_until(
        "the delivery marked processed",
        Duration::from_secs(10),
        || {
            let row = pipeline_row(&w, "contacts-to-mailer")?;
            (row["pending_deliveries"] == 0 && row["state"] != "removed").then_some(())
        },
    );
}

/// Delivers a signed event for contact `id` and waits until the mailer
/// holds it.
fn push_through(w: &World, host: &RunningHost, id: &str, first: &str) {
    let body = contact_event(id, first);
    assert_eq!(deliver(host, &format!("msg_{id}"), &body, &body).0, 202);
    wait_until(
        "the delivery in the mailer",
        Duration::from_secs(20),
        || w.mailer.subscribers(LIST).contains_key(id).then_some(()),
    );
}

/// The runs, and the newest scheduled one among them.
fn with_the_poll(w: &World) -> (Value, Value) {
    let all = w.runs();
    let poll = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"] == "schedule")
        .cloned()
        .unwrap_or_default();
    (all, poll)
}

#[test]
fn a_delivery_is_processed_between_the_pages_of_a_long_poll_not_after_it() {
    let w = world_with(
        "every = \"1h\"\nwebhook = { path = \"/hooks/crm\", scheme = \"standard-webhooks\", secret = \"env:CRM_HOOK_SECRET\" }",
        "",
    );
    create(&w.crm, 60);
    // Twenty pages of three, each read slowly: an initial sync of about
    // six seconds.
    w.crm
        .faults()
        .inject(Fault::Slow(Duration::from_millis(300)), 20);
    let host = start_with_hooks(&w);
    wait_until("the sync under way", Duration::from_secs(20), || {
        (w.runs()[0]["read"].as_i64() >= Some(3)).then_some(())
    });
    push_through(&w, &host, "w1", "Wanda");
    let (all, sync) = with_the_poll(&w);
    assert_eq!(
        sync["outcome"], "running",
        "the delivery waited for the whole sync: {all:#}"
    );
    assert!(sync["read"].as_i64() < Some(60), "{all:#}");
    // The sync goes on to the end after it.
    wait_until("the sync done", Duration::from_secs(30), || {
        (with_the_poll(&w).1["outcome"] == "ok").then_some(())
    });
    assert_eq!(w.mailer.subscribers(LIST).len(), 61);
    let webhook_runs: Vec<Value> = w
        .runs()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "webhook")
        .cloned()
        .collect();
    assert_eq!(webhook_runs.len(), 1, "{webhook_runs:#?}");
    assert_eq!(webhook_runs[0]["outcome"], "ok");
    assert_eq!(webhook_runs[0]["read"], 1);
}

/// The pipeline polled every 200 ms and pushed by the CRM's webhook, with
/// `retry`.
fn pushed_and_polled_world(retry: &str) -> World {
    world_with(
        "every = \"200ms\"\nwebhook = { path = \"/hooks/crm\", scheme = \"standard-webhooks\", secret = \"env:CRM_HOOK_SECRET\" }",
        retry,
    )
}

#[test]
fn a_delivery_is_processed_while_a_read_waits_out_a_rate_limit() {
    let w = pushed_and_polled_world("");
    // The CRM's API asks the first read to come back in ten minutes.
    w.crm.faults().inject(
        Fault::RateLimited {
            retry_after_secs: 600,
        },
        1,
    );
    let host = start_with_hooks(&w);
    host.wait_for_log("waiting 600s as asked", 20);
    // The delivery's own write waits out the mailer's rate limit too.
    w.mailer.faults().inject(
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );
    push_through(&w, &host, "r1", "Rita");
    let (all, poll) = with_the_poll(&w);
    assert_eq!(poll["outcome"], "running", "{all:#}");
    assert_eq!(w.crm.faults().requests(), 1, "the read still waits");
    // Once the delivery's wait is over, the read's is shown again.
    let row = pipeline_row(&w, "contacts-to-mailer").unwrap();
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("read crm-source: waiting until") && reason.contains("as the API asked"),
        "{row:#}"
    );

    // An upgrade of the host meanwhile: the next one does not read before
    // the ten minutes are up either, and deliveries still go on.
    let mut host = host;
    host.terminate();
    assert!(host.wait_exit(20), "{}", host.logs());
    let host = start_with_hooks(&w);
    host.wait_for_log("the source's reads are held until", 20);
    push_through(&w, &host, "r2", "Rhea");
    assert_eq!(w.crm.faults().requests(), 1, "no read after the restart");
    let row = pipeline_row(&w, "contacts-to-mailer").unwrap();
    assert_eq!(row["state"], "circuit-open", "{row:#}");
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("read crm-source: waiting until")
            && reason.contains("(the host stopped); held since the host restarted: no call before")
            && reason.contains("webhook deliveries go on"),
        "{row:#}"
    );
}

#[test]
fn deliveries_go_on_while_the_source_api_is_down_and_its_reads_wait_for_the_circuit() {
    let w = pushed_and_polled_world(
        "initial = \"50ms\"\nmax = \"100ms\"\nbudget = \"300ms\"\ncircuit-cooldown = \"1h\"\n",
    );
    let expected = create(&w.crm, 3);
    w.crm.faults().set_down(true);
    let host = start_with_hooks(&w);
    let state = || pipeline_row(&w, "contacts-to-mailer").unwrap();
    wait_until(
        "the circuit open on the failing reads",
        Duration::from_secs(20),
        || (state()["state"] == "circuit-open").then_some(()),
    );
    let reads = w.crm.faults().requests();
    push_through(&w, &host, "d1", "Dora");
    // The reads still wait for the cooldown, and say deliveries do not.
    let row = state();
    assert_eq!(row["state"], "circuit-open", "{row:#}");
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("read crm-source"), "{reason}");
    assert!(reason.contains("webhook deliveries go on"), "{reason}");
    assert_eq!(w.crm.faults().requests(), reads, "no read in the cooldown");
    assert_eq!(w.failed_runs(), 1);

    // A restarted host holds the reads as the one before did, and only
    // them: no read at start, and the deliveries still go on.
    let mut host = host;
    host.terminate();
    assert!(host.wait_exit(20), "{}", host.logs());
    let host = start_with_hooks(&w);
    host.wait_for_log("the source's reads are held until", 20);
    push_through(&w, &host, "d2", "Dina");
    assert_eq!(
        w.crm.faults().requests(),
        reads,
        "no read after the restart"
    );
    let row = state();
    assert_eq!(row["state"], "circuit-open", "{row:#}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("webhook deliveries go on")
    );
    assert_eq!(w.failed_runs(), 1);

    // Back up, and resumed by the operator: the polls catch up.
    w.crm.faults().set_down(false);
    w.lever("resume");
    let mut all = expected;
    all.push(("d1".into(), "Dora Hook".into()));
    all.push(("d2".into(), "Dina Hook".into()));
    all.sort();
    w.wait_for_subscribers(&all, Duration::from_secs(20));
    w.wait_until_idle();
}

/// A host whose CRM token the CRM refuses, once that stopped the reads.
fn reads_stopped_by_an_expired_token(w: &World) -> RunningHost {
    let host = RunningHost::start(
        w.causeway()
            .env("CRM_TOKEN", "an-expired-token")
            .env("CRM_HOOK_SECRET", hook_secret())
            .args(["run", "--listen", "127.0.0.1:0"]),
    );
    wait_until("the reads stopped", Duration::from_secs(20), || {
        let row = pipeline_row(w, "contacts-to-mailer")?;
        (row["state"] == "stopped").then_some(())
    });
    host
}

#[test]
fn an_expired_source_token_stops_the_reads_and_deliveries_go_on() {
    let w = pushed_and_polled_world("");
    let host = reads_stopped_by_an_expired_token(&w);
    let state = || pipeline_row(&w, "contacts-to-mailer").unwrap();
    let reads = w.crm.faults().requests();
    push_through(&w, &host, "t1", "Tess");
    let row = state();
    assert_eq!(row["state"], "stopped", "{row:#}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("read crm-source") && reason.contains("auth"),
        "{reason}"
    );
    assert!(reason.contains("webhook deliveries go on"), "{reason}");
    // Stopped: no read is tried again, whatever the schedule.
    assert_eq!(w.crm.faults().requests(), reads);
}

#[test]
fn the_reads_stay_stopped_through_a_circuit_the_sink_opens_meanwhile() {
    let w = pushed_and_polled_world(
        "initial = \"50ms\"\nmax = \"100ms\"\nbudget = \"300ms\"\ncircuit-cooldown = \"2s\"\n",
    );
    let host = reads_stopped_by_an_expired_token(&w);
    let state = || pipeline_row(&w, "contacts-to-mailer").unwrap();
    let reads = w.crm.faults().requests();
    // The mailer goes down under a delivery: the whole pipeline's circuit
    // opens, over the stop of the reads.
    w.mailer.faults().set_down(true);
    let body = contact_event("m1", "Mona");
    assert_eq!(deliver(&host, "msg_m1", &body, &body).0, 202);
    wait_until(
        "the circuit open on the mailer",
        Duration::from_secs(20),
        || {
            let row = state();
            (row["state"] == "circuit-open").then_some(row)
        },
    );
    w.mailer.faults().set_down(false);
    // After the cooldown the delivery goes through, and the reads are still
    // stopped: the token has not changed.
    wait_until(
        "the delivery in the mailer",
        Duration::from_secs(20),
        || w.mailer.subscribers(LIST).contains_key("m1").then_some(()),
    );
    let row = wait_until(
        "the reads' stop recorded again",
        Duration::from_secs(20),
        || {
            let row = state();
            (row["state"] == "stopped").then_some(row)
        },
    );
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("read crm-source"), "{reason}");
    assert_eq!(w.crm.faults().requests(), reads, "a read was tried again");
}

#[test]
fn a_resume_while_deliveries_run_lifts_the_stop_on_the_reads() {
    let w = pushed_and_polled_world("");
    let host = reads_stopped_by_an_expired_token(&w);
    let reads = w.crm.faults().requests();
    // The mailer's next writes take three seconds each: the operator's
    // resume comes while a run of deliveries goes on.
    w.mailer
        .faults()
        .inject(Fault::Slow(Duration::from_secs(3)), 2);
    let body = contact_event("r1", "Rosa");
    assert_eq!(deliver(&host, "msg_r1", &body, &body).0, 202);
    wait_until(
        "the delivery's run under way",
        Duration::from_secs(20),
        || {
            w.runs()
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["trigger"] == "webhook" && r["outcome"] == "running")
                .then_some(())
        },
    );
    w.lever("resume");
    // The run ends after the resume, and does not write the stop back over
    // it: the reads are tried again.
    wait_until("a read after the resume", Duration::from_secs(20), || {
        (w.crm.faults().requests() > reads).then_some(())
    });
}

#[test]
fn a_steady_stream_of_deliveries_does_not_hold_the_polls_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Ends the stream however the test ends, so the scope can join it.
    struct EndStream<'a>(&'a AtomicBool);
    impl Drop for EndStream<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }
    let w = pushed_and_polled_world("");
    let host = start_with_hooks(&w);
    let streaming = AtomicBool::new(true);
    let sent = std::thread::scope(|scope| {
        let _end = EndStream(&streaming);
        let sender = scope.spawn(|| {
            let mut i = 0;
            while streaming.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("s{i}");
                let body = contact_event(&id, "Stream");
                assert_eq!(deliver(&host, &format!("msg_{id}"), &body, &body).0, 202);
                std::thread::sleep(Duration::from_millis(5));
            }
            i
        });
        wait_until("the stream flowing", Duration::from_secs(20), || {
            (w.mailer.subscribers(LIST).len() >= 20).then_some(())
        });
        // Changes no webhook announces: only a poll finds them.
        let polled = create(&w.crm, 3);
        wait_until(
            "the polled contacts in the mailer, the stream still flowing",
            Duration::from_secs(20),
            || {
                let subscribers = w.mailer.subscribers(LIST);
                polled
                    .iter()
                    .all(|(key, _)| subscribers.contains_key(key))
                    .then_some(())
            },
        );
        streaming.store(false, Ordering::SeqCst);
        sender.join().unwrap()
    });
    // Runs of deliveries end: none takes the stream for ever.
    let all = w.runs();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "webhook" && r["outcome"] == "ok"),
        "{all:#}"
    );
    assert!(sent > 0);
}

#[test]
fn deliveries_arriving_while_a_run_writes_are_taken_by_that_run() {
    let w = webhook_world("");
    // The first write takes three seconds: the deliveries after the first
    // arrive while it runs.
    w.mailer
        .faults()
        .inject(Fault::Slow(Duration::from_secs(3)), 1);
    let host = start_with_hooks(&w);
    let first = contact_event("b1", "First");
    assert_eq!(deliver(&host, "msg_b1", &first, &first).0, 202);
    wait_until("the first write", Duration::from_secs(20), || {
        (w.mailer.faults().requests() > 0).then_some(())
    });
    for i in 2..=5 {
        let body = contact_event(&format!("b{i}"), "Next");
        assert_eq!(deliver(&host, &format!("msg_b{i}"), &body, &body).0, 202);
    }
    wait_until("all five in the mailer", Duration::from_secs(20), || {
        (w.mailer.subscribers(LIST).len() == 5).then_some(())
    });
    w.wait_until_idle();
    let runs = w.runs();
    assert_eq!(runs.as_array().unwrap().len(), 1, "one run: {runs:#}");
    assert_eq!(runs[0]["read"], 5, "{runs:#}");
    assert_eq!(w.mailer.batches(), [1, 4], "two writes");
}

#[test]
fn a_signed_delivery_sent_three_times_is_processed_once_and_forgeries_are_refused() {
    let w = webhook_world("");
    let mut host = start_with_hooks(&w);
    let body = contact_event("h1", "Webby");
    let statuses: Vec<u16> = (0..3)
        .map(|_| deliver(&host, "msg_1", &body, &body).0)
        .collect();
    assert_eq!(statuses, [202, 200, 200], "stored once, then recognised");
    w.wait_for_subscribers(
        &[("h1".into(), "Webby Hook".into())],
        Duration::from_secs(20),
    );
    wait_until("the webhook run recorded", Duration::from_secs(10), || {
        (webhook_runs_read(&w) == 1).then_some(())
    });

    // Tampered: the body differs from what was signed.
    let forged = contact_event("h2", "Mallory");
    let (status, answer) = deliver(&host, "msg_2", &forged, &body);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("bad-signature"), "{answer}");
    // Oversized: refused before anything is verified or stored.
    let (status, _) = deliver(&host, "msg_3", &vec![b' '; 5000], &vec![b' '; 5000]);
    assert_eq!(status, 413);
    // Unknown path: nothing there.
    let (status, _) = support::try_http(&host.addr, "POST", "/hooks/other", Some("{}")).unwrap();
    assert_eq!(status, 404);

    // Each answer counted by its kind; nothing left waiting.
    let m = Metrics::scrape(&host);
    let pipeline = ("pipeline", "contacts-to-mailer");
    for (outcome, n) in [
        ("accepted", 1.0),
        ("duplicate", 2.0),
        ("not-allowed", 0.0),
        ("bad-signature", 1.0),
        ("too-large", 1.0),
        ("too-slow", 0.0),
        ("unavailable", 0.0),
    ] {
        assert_eq!(
            m.value(
                "causeway_webhook_deliveries_total",
                &[pipeline, ("outcome", outcome)]
            ),
            Some(n),
            "{outcome}: {}",
            m.page
        );
    }
    assert_eq!(
        m.value("causeway_webhook_deliveries_pending", &[pipeline]),
        Some(0.0),
        "{}",
        m.page
    );

    // A clean stop flushes the audit log before it is read.
    host.terminate();
    assert!(host.wait_exit(30));
    let rows = audit_rows(&w.scratch.path().join("causeway-data"));
    let hooks: Vec<_> = rows.iter().filter(|r| r.1 == "webhook").collect();
    assert!(
        hooks
            .iter()
            .any(|r| r.4 == "denied" && r.5.contains("no signature matches")),
        "{hooks:#?}"
    );
    assert!(
        hooks
            .iter()
            .any(|r| r.4 == "denied" && r.5.contains("over 4096 bytes")),
        "{hooks:#?}"
    );
    assert_eq!(
        hooks.iter().filter(|r| r.4 == "allowed").count(),
        3,
        "{hooks:#?}"
    );
    assert!(!w.mailer.subscribers(LIST).contains_key("h2"));
    assert_eq!(
        webhook_runs_read(&w),
        1,
        "the duplicates were not processed"
    );
}

/// A pipeline CRM → map-fullname → mailer fed by deliveries, `webhook`
/// being the inside of its webhook table.
fn hook_pipeline(name: &str, webhook: &str) -> String {
    format!(
        "[pipelines.{name}]\nwebhook = {{ {webhook} }}\n\
         source = {{ plugin = \"crm-source\", stream = \"contacts\" }}\n\
         transforms = [{{ plugin = \"map-fullname\" }}]\n\
         sinks = [{{ plugin = \"mailer-sink\" }}]\n"
    )
}

/// One JSON POST to `target` on `host`: status, head, body.
fn post(
    host: &RunningHost,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    support::try_http_answer(&host.addr, "POST", target, &all, body).unwrap()
}

/// A signature [`causeway::webhook::verify::sign_hex`] wrote, in base64,
/// as most senders write theirs.
fn hex_to_base64(hex: &str) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The webhook rows of the audit log of a host that stopped.
fn webhook_rows(
    data_dir: &std::path::Path,
) -> Vec<(String, String, String, String, String, String)> {
    audit_rows(data_dir)
        .into_iter()
        .filter(|r| r.1 == "webhook")
        .collect()
}

/// Senders that are not Standard Webhooks, GitHub or Stripe and sign each
/// their own way: the body in a header of its own (Shopify; Xero, whose
/// "intent to receive" check takes only 200 and no body), the URL it
/// called too (HubSpot), with a private key of its own (SendGrid). Each is
/// verified as its table says, its retries recognised, and flows on.
#[test]
fn senders_that_sign_their_own_way_are_verified_and_their_retries_recognised() {
    const SHOP_KEY: &str = "shpss_0123456789abcdef";
    const HUBSPOT_SECRET: &str = "hubspot-client-secret";
    const XERO_KEY: &str = "xero-webhooks-key";
    const MAILGUN_KEY: &str = "key-mailgun-webhook-signing";
    const ZENDESK_KEY: &str = "zendesk-webhook-signing-secret";
    let w = World::new(
        3,
        "",
        &[
            hook_pipeline(
                "shop",
                "path = \"/hooks/shop\", scheme = \"hmac-sha256\", secret = \"env:SHOP_KEY\", \
                 header = \"X-Shop-Hmac-Sha256\", encoding = \"base64\", id-header = \"X-Shop-Webhook-Id\"",
            ),
            hook_pipeline(
                "hubspot",
                "path = \"/hooks/hubspot\", scheme = \"hubspot\", secret = \"env:HUBSPOT_SECRET\"",
            ),
            hook_pipeline(
                "xero",
                "path = \"/hooks/xero\", scheme = \"hmac-sha256\", secret = \"env:XERO_KEY\", \
                 header = \"x-xero-signature\", encoding = \"base64\", answer = \"empty\"",
            ),
            hook_pipeline(
                "sendgrid",
                "path = \"/hooks/sendgrid\", scheme = \"sendgrid\", secret = \"env:SENDGRID_KEY\"",
            ),
            hook_pipeline(
                "mailgun",
                "path = \"/hooks/mailgun\", scheme = \"mailgun\", secret = \"env:MAILGUN_KEY\"",
            ),
            hook_pipeline(
                "resend",
                "path = \"/hooks/resend\", scheme = \"standard-webhooks\", secret = \"env:RESEND_KEY\"",
            ),
            hook_pipeline(
                "zendesk",
                "path = \"/hooks/zendesk\", scheme = \"hmac-sha256\", secret = \"env:ZENDESK_KEY\", \
                 header = \"X-Zendesk-Webhook-Signature\", encoding = \"base64\", \
                 signed = \"{timestamp}{body}\", timestamp-header = \"X-Zendesk-Webhook-Signature-Timestamp\"",
            ),
        ]
        .concat(),
    );
    // SendGrid's key pair: the host is given the public half, as SendGrid's
    // settings show it (base64 of its SubjectPublicKeyInfo).
    let (sendgrid, sendgrid_public) = {
        use base64::Engine as _;
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let spki = [causeway::der::P256_SPKI_PREFIX, pair.public_key().as_ref()].concat();
        (pair, base64::engine::general_purpose::STANDARD.encode(spki))
    };
    let with_secrets = |sendgrid_key: &str| {
        let mut command = w.causeway();
        command
            .env("SHOP_KEY", SHOP_KEY)
            .env("HUBSPOT_SECRET", HUBSPOT_SECRET)
            .env("XERO_KEY", XERO_KEY)
            .env("MAILGUN_KEY", MAILGUN_KEY)
            .env("ZENDESK_KEY", ZENDESK_KEY)
            .env("RESEND_KEY", hook_secret())
            .env("SENDGRID_KEY", sendgrid_key);
        command
    };
    // A key that is none is found before a delivery is refused for it.
    let checked = run(with_secrets("MFkwEwYHKoZIzj0CAQ==").arg("check"));
    assert!(
        !checked.success
            && checked.stdout.contains(
                "pipelines.sendgrid.webhook: secret env:SENDGRID_KEY: is not a P-256 public key in base64"
            ),
        "{}",
        checked.stdout
    );
    let checked = run(with_secrets(&sendgrid_public).arg("check"));
    assert!(checked.success, "{}{}", checked.stdout, checked.stderr);
    let mut host =
        RunningHost::start(with_secrets(&sendgrid_public).args(["run", "--listen", "127.0.0.1:0"]));

    // The body signed in the sender's header, in base64; its id header
    // recognises the sender's retry.
    let order = contact_event("s1", "Shopper");
    let signature = hex_to_base64(&causeway::webhook::verify::sign_hex(
        SHOP_KEY.as_bytes(),
        &[&order],
    ));
    let shop = |id: &str, signature: &str, body: &[u8]| {
        post(
            &host,
            "/hooks/shop",
            &[("X-Shop-Hmac-Sha256", signature), ("X-Shop-Webhook-Id", id)],
            body,
        )
    };
    let (status, _, answer) = shop("order-1", &signature, &order);
    assert_eq!(status, 202, "{answer}");
    assert!(answer.contains("\"id\":\"order-1\""), "{answer}");
    let (status, _, answer) = shop("order-1", &signature, &order);
    assert_eq!(status, 200, "the retry is recognised: {answer}");
    let forged = contact_event("s2", "Mallory");
    let (status, _, answer) = shop("order-2", &signature, &forged);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("no signature matches"), "{answer}");
    let (status, _, answer) = post(&host, "/hooks/shop", &[], &forged);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("the x-shop-hmac-sha256 header is missing"),
        "{answer}"
    );

    // HubSpot signs the method, the URL it called (as the Host header and
    // the target say, its query's ':' written encoded), the body and the
    // time in milliseconds.
    let hubspot = |called: &str, body: &[u8]| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string();
        let signature = hex_to_base64(&causeway::webhook::verify::sign_hex(
            HUBSPOT_SECRET.as_bytes(),
            &[b"POST", called.as_bytes(), body, millis.as_bytes()],
        ));
        post(
            &host,
            "/hooks/hubspot?portal=1%3A2",
            &[
                ("X-HubSpot-Signature-v3", &signature),
                ("X-HubSpot-Request-Timestamp", &millis),
            ],
            body,
        )
    };
    let called = format!("https://{}/hooks/hubspot?portal=1:2", host.addr);
    let (status, _, answer) = hubspot(&called, &contact_event("h1", "Hubspot"));
    assert_eq!(status, 202, "{answer}");
    let elsewhere = "https://evil.example/hooks/hubspot?portal=1:2";
    let (status, _, answer) = hubspot(elsewhere, &contact_event("h2", "Elsewhere"));
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("no signature matches"), "{answer}");

    // Xero's "intent to receive": 200 and no body for a payload signed
    // right, 401 for one signed wrong; the same for the events after.
    let xero = |signed_with: &str, body: &[u8]| {
        let signature = hex_to_base64(&causeway::webhook::verify::sign_hex(
            signed_with.as_bytes(),
            &[body],
        ));
        post(
            &host,
            "/hooks/xero",
            &[("x-xero-signature", &signature)],
            body,
        )
    };
    let intent =
        br#"{"events":[],"lastEventSequence":0,"firstEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}"#;
    let (status, head, answer) = xero(XERO_KEY, intent);
    assert_eq!((status, answer.as_str()), (200, ""), "{head}");
    assert!(head.to_lowercase().contains("content-length: 0"), "{head}");
    assert_eq!(
        xero(XERO_KEY, intent).0,
        200,
        "answered as the first (recognised: the audit below)"
    );
    assert_eq!(xero("another key", intent).0, 401);
    let (status, _, answer) = xero(XERO_KEY, &contact_event("x1", "Xero"));
    assert_eq!((status, answer.as_str()), (200, ""));

    // SendGrid signs the timestamp and the body with its private key.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let event = contact_event("g1", "Sendgrid");
    let signature = {
        use base64::Engine as _;
        let rng = ring::rand::SystemRandom::new();
        let signed = sendgrid
            .sign(&rng, &[now.as_bytes(), &event].concat())
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(signed)
    };
    let sendgrid_hook = |body: &[u8]| {
        post(
            &host,
            "/hooks/sendgrid",
            &[
                ("X-Twilio-Email-Event-Webhook-Signature", &signature),
                ("X-Twilio-Email-Event-Webhook-Timestamp", &now),
            ],
            body,
        )
    };
    let (status, _, answer) = sendgrid_hook(&event);
    assert_eq!(status, 202, "{answer}");
    let (status, _, answer) = sendgrid_hook(&contact_event("g2", "Forged"));
    assert_eq!(status, 401, "{answer}");

    // Mailgun signs a timestamp and a token, in the body beside the event;
    // without an event id, the token names the delivery. It sends again
    // whatever is not a 200, so a 200 it is.
    let mailgun = |key: &str, event: &[u8]| {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
        let signature =
            causeway::webhook::verify::sign_hex(key.as_bytes(), &[at.as_bytes(), token.as_bytes()]);
        let mut body: Value = serde_json::from_slice(event).unwrap();
        body["signature"] = json!({ "timestamp": at, "token": token, "signature": signature });
        post(&host, "/hooks/mailgun", &[], body.to_string().as_bytes())
    };
    let (status, _, answer) = mailgun(MAILGUN_KEY, &contact_event("mg1", "Mailgun"));
    assert_eq!((status, answer.as_str()), (200, ""));
    let (status, _, answer) = mailgun("another key", &contact_event("mg2", "Forged"));
    assert_eq!(status, 401, "{answer}");

    // Resend's deliveries come from Svix: Standard Webhooks under svix-*
    // names, its retries known by svix-id.
    let resend = |body: &[u8]| {
        let signed = signed_headers("msg_resend_1", body);
        let renamed: Vec<(String, &str)> = signed
            .iter()
            .map(|(name, value)| (name.replace("webhook-", "svix-"), value.as_str()))
            .collect();
        let svix: Vec<(&str, &str)> = renamed.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        post(&host, "/hooks/resend", &svix, body)
    };
    let sent = contact_event("rs1", "Resend");
    let (status, _, answer) = resend(&sent);
    assert_eq!(status, 202, "{answer}");
    assert!(answer.contains("\"id\":\"msg_resend_1\""), "{answer}");
    assert_eq!(resend(&sent).0, 200, "the retry is recognised");

    // Zendesk signs the time it sent (RFC 3339) with the body: a delivery
    // sent again later, or with another time, is refused.
    let zendesk = |sent: std::time::SystemTime, body: &[u8]| {
        let at = humantime::format_rfc3339_seconds(sent).to_string();
        let signature = hex_to_base64(&causeway::webhook::verify::sign_hex(
            ZENDESK_KEY.as_bytes(),
            &[at.as_bytes(), body],
        ));
        post(
            &host,
            "/hooks/zendesk",
            &[
                ("X-Zendesk-Webhook-Signature", &signature),
                ("X-Zendesk-Webhook-Signature-Timestamp", &at),
            ],
            body,
        )
    };
    let (status, _, answer) = zendesk(
        std::time::SystemTime::now(),
        &contact_event("zd1", "Zendesk"),
    );
    assert_eq!(status, 202, "{answer}");
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let (status, _, answer) = zendesk(an_hour_ago, &contact_event("zd2", "Replayed"));
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("beyond the tolerance"), "{answer}");

    // What each let through flows on; what each refused does not.
    w.wait_for_subscribers(
        &[
            ("g1".into(), "Sendgrid Hook".into()),
            ("h1".into(), "Hubspot Hook".into()),
            ("mg1".into(), "Mailgun Hook".into()),
            ("rs1".into(), "Resend Hook".into()),
            ("s1".into(), "Shopper Hook".into()),
            ("x1".into(), "Xero Hook".into()),
            ("zd1".into(), "Zendesk Hook".into()),
        ],
        Duration::from_secs(20),
    );
    host.terminate();
    assert!(host.wait_exit(30));
    let hooks = webhook_rows(&host.data_dir);
    for recorded in [
        "delivery e0b5477167110d68991efc6b9f89f0a11066af27834600e123 stored",
        "delivery order-1 already stored",
        "no signature matches",
        "the x-shop-hmac-sha256 header is missing",
    ] {
        assert!(
            hooks.iter().any(|r| r.5.contains(recorded)),
            "{recorded}: {hooks:#?}"
        );
    }
    // Xero's second intent payload was recognised, though answered as the
    // first was.
    assert!(
        hooks
            .iter()
            .any(|r| r.3 == "pipeline xero /hooks/xero" && r.5.contains("already stored")),
        "{hooks:#?}"
    );
    let everything = format!("{hooks:?}{}", host.logs());
    for secret in [SHOP_KEY, HUBSPOT_SECRET, XERO_KEY, MAILGUN_KEY, ZENDESK_KEY] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
}

/// A webhook secret rotated: while the sender may still sign with the
/// secret before, `previous-secret` takes those deliveries too, and each
/// row says so, so the operator sees when the sender has moved on and the
/// old secret can go. A signature under neither is refused.
#[test]
fn a_webhook_secret_is_rotated_without_refusing_what_the_sender_still_signs_the_old_way() {
    const NEW: &str = "the-new-github-webhook-secret";
    const OLD: &str = "the-old-github-webhook-secret";
    let w = World::new(
        3,
        "",
        &[
            hook_pipeline(
                "repo",
                "path = \"/hooks/repo\", scheme = \"github\", secret = \"env:HOOK_NEW\", \
                 previous-secret = \"env:HOOK_OLD\"",
            ),
            hook_pipeline(
                "meetings",
                "path = \"/hooks/meetings\", scheme = \"zoom\", secret = \"env:HOOK_NEW\", \
                 previous-secret = \"env:HOOK_OLD\"",
            ),
        ]
        .concat(),
    );
    let with_secrets = |old: Option<&str>| {
        let mut command = w.causeway();
        command.env("HOOK_NEW", NEW).env_remove("HOOK_OLD");
        if let Some(old) = old {
            command.env("HOOK_OLD", old);
        }
        command
    };
    let checked = run(with_secrets(None).arg("check"));
    assert!(
        !checked.success
            && checked.stdout.contains(
                "pipelines.repo.webhook.previous-secret: secret env:HOOK_OLD: the environment variable HOOK_OLD is not set; deliveries the sender still proves with it would be refused"
            ),
        "{}",
        checked.stdout
    );
    // The old value written over before the sender moved: said.
    let checked = run(with_secrets(Some(NEW)).arg("check"));
    assert!(
        checked.stdout.contains(
            "pipelines.repo.webhook: previous-secret env:HOOK_OLD holds the same value as secret env:HOOK_NEW"
        ) && !checked.stdout.contains(NEW),
        "{}",
        checked.stdout
    );
    let checked = run(with_secrets(Some(OLD)).arg("check"));
    assert!(
        checked.success && !checked.stdout.contains("same value"),
        "{}",
        checked.stdout
    );
    let grants = run(with_secrets(Some(OLD)).arg("grants"));
    assert!(
        grants.stdout.contains(
            "  /hooks/repo: scheme github (secret env:HOOK_NEW, previous env:HOOK_OLD), from anywhere"
        ),
        "{}",
        grants.stdout
    );
    let mut host =
        RunningHost::start(with_secrets(Some(OLD)).args(["run", "--listen", "127.0.0.1:0"]));
    let push = |key: &str, id: &str, body: &[u8]| {
        let signature = format!(
            "sha256={}",
            causeway::webhook::verify::sign_hex(key.as_bytes(), &[body])
        );
        post(
            &host,
            "/hooks/repo",
            &[
                ("X-Hub-Signature-256", &signature),
                ("X-GitHub-Delivery", id),
            ],
            body,
        )
    };
    assert_eq!(push(OLD, "d-old", &contact_event("r1", "Before")).0, 202);
    assert_eq!(push(NEW, "d-new", &contact_event("r2", "After")).0, 202);
    let (status, _, answer) = push("neither", "d-forged", &contact_event("r3", "Forged"));
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("no signature matches"), "{answer}");
    // Zoom's check signed the old way is answered under the old secret,
    // the key it proved itself with.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let validation = br#"{"payload":{"plainToken":"tok"},"event":"endpoint.url_validation"}"#;
    let signature = format!(
        "v0={}",
        causeway::webhook::verify::sign_hex(
            OLD.as_bytes(),
            &[b"v0:", at.as_bytes(), b":", validation]
        )
    );
    let (status, _, answer) = post(
        &host,
        "/hooks/meetings",
        &[
            ("x-zm-request-timestamp", &at),
            ("x-zm-signature", &signature),
        ],
        validation,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["encryptedToken"],
        causeway::webhook::verify::sign_hex(OLD.as_bytes(), &[b"tok"])
    );
    w.wait_for_subscribers(
        &[
            ("r1".into(), "Before Hook".into()),
            ("r2".into(), "After Hook".into()),
        ],
        Duration::from_secs(20),
    );
    host.terminate();
    assert!(host.wait_exit(30));
    let hooks = webhook_rows(&host.data_dir);
    let row = |id: &str| {
        hooks
            .iter()
            .find(|r| r.5.starts_with(&format!("delivery {id} stored")))
            .map(|r| r.5.clone())
            .unwrap_or_else(|| panic!("{id}: {hooks:#?}"))
    };
    assert!(row("d-old").ends_with(
        "(proven with previous-secret: the sender has not moved to the new secret yet)"
    ));
    assert_eq!(row("d-new"), "delivery d-new stored");
    assert!(
        hooks.iter().any(|r| r.5
            == "Zoom's endpoint.url_validation answered; nothing stored (proven with previous-secret: the sender has not moved to the new secret yet)"),
        "{hooks:#?}"
    );
    let everything = format!("{hooks:?}{}", host.logs());
    for secret in [NEW, OLD] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
}

/// Senders that sign nothing but send a secret: a token the operator chose
/// in a header (Google Calendar's channel token), or in the query of the
/// URL it was given (Mailchimp, which checks that URL with a GET first), or
/// an HTTP Basic login (Pipedrive, Postmark); and one whose address
/// `allow-from` does not name. Each is verified as its table says and
/// flows on; the token or login, the secret itself, is neither stored nor
/// handed to the plugin, and shows nowhere.
#[test]
fn senders_that_send_a_token_or_a_login_are_verified_and_it_never_reaches_the_plugin() {
    const CHANNEL_TOKEN: &str = "a channel token the operator chose";
    const MAILING_TOKEN: &str = "a-mailing-token";
    const LOGIN: &str = "pipedrive:s3cret pass";
    let w = World::new(
        3,
        "",
        &[
            hook_pipeline(
                "channel",
                "path = \"/hooks/channel\", scheme = \"token\", secret = \"env:CHANNEL_TOKEN\", \
                 header = \"X-Goog-Channel-Token\", id-header = \"X-Goog-Message-Number\", \
                 allow-from = [\"127.0.0.0/8\", \"::1\"]",
            ),
            hook_pipeline(
                "office",
                "path = \"/hooks/office\", scheme = \"token\", secret = \"env:CHANNEL_TOKEN\", \
                 header = \"X-Goog-Channel-Token\", allow-from = [\"192.0.2.0/24\"]",
            ),
            hook_pipeline(
                "mailing",
                "path = \"/hooks/mailing\", scheme = \"token\", secret = \"env:MAILING_TOKEN\", query = \"key\"",
            ),
            hook_pipeline(
                "login",
                "path = \"/hooks/login\", scheme = \"basic\", secret = \"env:HOOK_LOGIN\"",
            ),
            hook_pipeline(
                "salesforce",
                "path = \"/hooks/salesforce\", scheme = \"token\", secret = \"env:MAILING_TOKEN\", \
                 query = \"key\", answer = \"salesforce-ack\"",
            ),
        ]
        .concat(),
    );
    let with_secrets = |login: &str| {
        let mut command = w.causeway();
        command
            .env("CHANNEL_TOKEN", CHANNEL_TOKEN)
            .env("MAILING_TOKEN", MAILING_TOKEN)
            .env("HOOK_LOGIN", login);
        command
    };
    // A login without its user is found before a delivery is refused for it.
    let checked = run(with_secrets("s3cret pass").arg("check"));
    assert!(
        !checked.success
            && checked.stdout.contains(
                "pipelines.login.webhook: secret env:HOOK_LOGIN: the basic scheme's secret is user:password, and it has no ':'"
            )
            && !checked.stdout.contains("s3cret"),
        "{}",
        checked.stdout
    );
    // The security team's one view says what comes in, and from where.
    let grants = run(with_secrets(LOGIN).arg("grants"));
    for line in [
        "inbound webhooks, on http://127.0.0.1:8700:\n",
        "  /hooks/channel: scheme token (secret env:CHANNEL_TOKEN), from 127.0.0.0/8, ::1/128, handed to crm-source (pipeline channel)\n",
        "  /hooks/office: scheme token (secret env:CHANNEL_TOKEN), from 192.0.2.0/24, handed to crm-source (pipeline office)\n",
        "  /hooks/login: scheme basic (secret env:HOOK_LOGIN), from anywhere, handed to crm-source (pipeline login)\n",
    ] {
        assert!(grants.stdout.contains(line), "{line}: {}", grants.stdout);
    }
    let mut host = RunningHost::start(with_secrets(LOGIN).args(["run", "--listen", "127.0.0.1:0"]));

    // The token the operator chose, as the header carries it.
    let channel = |token: &str, number: &str, body: &[u8]| {
        post(
            &host,
            "/hooks/channel",
            &[
                ("X-Goog-Channel-Token", token),
                ("X-Goog-Message-Number", number),
            ],
            body,
        )
    };
    let (status, _, answer) = channel(CHANNEL_TOKEN, "1", &contact_event("c1", "Channel"));
    assert_eq!(status, 202, "{answer}");
    let (status, _, answer) = channel("a guess", "2", &contact_event("c2", "Guess"));
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("the token does not match"), "{answer}");
    // From an address its allow-from does not name: refused, right token
    // or not, before the body is read.
    let (status, _, answer) = post(
        &host,
        "/hooks/office",
        &[("X-Goog-Channel-Token", CHANNEL_TOKEN)],
        &contact_event("o1", "Office"),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("\"not-allowed\""), "{answer}");

    // A token in the query of the URL the sender was given; the sender
    // checks that URL with a GET before saving it.
    let mailing = |method: &str, key: &str, body: &[u8]| {
        let target = format!("/hooks/mailing?list=7&key={key}");
        support::try_http_answer(&host.addr, method, &target, &[], body).unwrap()
    };
    let (status, _, answer) = mailing("GET", MAILING_TOKEN, b"");
    assert_eq!((status, answer.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, _, answer) = mailing("GET", "a-guess", b"");
    assert_eq!(status, 401, "{answer}");
    let (status, _, answer) = mailing("POST", MAILING_TOKEN, &contact_event("m1", "Mailing"));
    assert_eq!(status, 202, "{answer}");

    // Salesforce's outbound messages (a token in the URL, as it signs
    // nothing) wait for its SOAP acknowledgement, retries too.
    let outbound = format!("/hooks/salesforce?key={MAILING_TOKEN}");
    let soap =
        br#"<soapenv:Envelope><soapenv:Body><notifications/></soapenv:Body></soapenv:Envelope>"#;
    for _ in 0..2 {
        let (status, head, answer) = support::try_http_answer(
            &host.addr,
            "POST",
            &outbound,
            &[("content-type", "text/xml")],
            soap,
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(
            head.to_lowercase().contains("content-type: text/xml"),
            "{head}"
        );
        assert!(
            answer.contains(
                r#"<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#
            ) && answer.contains("<Ack>true</Ack>"),
            "{answer}"
        );
    }

    // HTTP Basic: a client that logs in only when asked is asked.
    let basic = |login: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(login)
        )
    };
    let login = |authorization: &[(&str, &str)], body: &[u8]| {
        post(&host, "/hooks/login", authorization, body)
    };
    let (status, head, answer) = login(&[], &contact_event("b2", "Anon"));
    assert_eq!(status, 401, "{answer}");
    assert!(
        head.to_lowercase()
            .contains("www-authenticate: basic realm=\"causeway webhook\""),
        "{head}"
    );
    let wrong = basic("pipedrive:wrong");
    let (status, _, answer) = login(&[("Authorization", &wrong)], &contact_event("b3", "Wrong"));
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("the login does not match"), "{answer}");
    let right = basic(LOGIN);
    let (status, _, answer) = login(&[("Authorization", &right)], &contact_event("b1", "Basic"));
    assert_eq!(status, 202, "{answer}");

    // What each let through flows on; what each refused does not.
    w.wait_for_subscribers(
        &[
            ("b1".into(), "Basic Hook".into()),
            ("c1".into(), "Channel Hook".into()),
            ("m1".into(), "Mailing Hook".into()),
        ],
        Duration::from_secs(20),
    );
    // A sender whose news is all in its headers sends empty bodies: with
    // no id header, none is taken for another's duplicate.
    for _ in 0..2 {
        let (status, _, answer) = login(&[("Authorization", &right)], b"");
        assert_eq!(status, 202, "{answer}");
    }
    // Deliveries crm-source refuses are set aside with what they came
    // with (headers, query), to be sent again: all but the secrets.
    assert_eq!(channel(CHANNEL_TOKEN, "3", b"").0, 202);
    assert_eq!(mailing("POST", MAILING_TOKEN, b"").0, 202);
    host.terminate();
    assert!(host.wait_exit(30));
    let hooks = webhook_rows(&host.data_dir);
    for refusal in [
        "the token does not match",
        "the login does not match",
        "the authorization header is missing",
        "from 127.0.0.1, which allow-from does not name",
    ] {
        assert!(
            hooks
                .iter()
                .any(|r| r.4 == "denied" && r.5.contains(refusal)),
            "{refusal}: {hooks:#?}"
        );
    }
    // The GET that guessed is recorded as one, and the one that was right.
    for (decision, detail) in [
        ("denied", "the token does not match"),
        ("allowed", "a URL check answered"),
    ] {
        assert!(
            hooks.iter().any(|r| r.2 == "GET"
                && r.3 == "pipeline mailing /hooks/mailing"
                && r.4 == decision
                && r.5.contains(detail)),
            "{detail}: {hooks:#?}"
        );
    }
    let conn = rusqlite::Connection::open(host.data_dir.join("causeway.db")).unwrap();
    let kept: Vec<(String, String, String)> = conn
        .prepare("SELECT pipeline, query, headers FROM webhook_inbox ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for pipeline in ["channel", "login", "mailing"] {
        assert!(
            kept.iter()
                .any(|(p, _, headers)| p == pipeline && headers.contains("content-length")),
            "{pipeline}: {kept:#?}"
        );
    }
    assert!(
        kept.iter()
            .any(|(p, query, _)| p == "mailing" && query == "list=7"),
        "{kept:#?}"
    );
    let everything = format!("{hooks:?}{}{kept:?}", host.logs());
    for secret in [CHANNEL_TOKEN, MAILING_TOKEN, "s3cret", &right] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
}

/// Senders that check the URL before they deliver anything, each its own
/// way: Slack (a signed `url_verification`, echoed), Zoom (a signed
/// `endpoint.url_validation`, answered with the token signed under the
/// secret), Meta (a `GET` with the operator's verify token), Dropbox (a
/// `GET` challenge anyone may send). The host answers each itself, stores
/// none, and audits those the sender proved itself in; the deliveries that
/// follow are verified and flow on, answered 200 as those senders ask.
#[test]
fn senders_that_check_the_url_first_are_answered_by_the_host_and_deliver_after() {
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const ZOOM_SECRET: &str = "zoom-secret-token";
    const META_SECRET: &str = "meta-app-secret";
    const META_VERIFY: &str = "meta-verify-token-typed-in-the-dashboard";
    const DROPBOX_SECRET: &str = "dropbox-app-secret";
    let w = World::new(
        3,
        "",
        &[
            hook_pipeline(
                "slack",
                "path = \"/hooks/slack\", scheme = \"slack\", secret = \"env:SLACK_SECRET\"",
            ),
            hook_pipeline(
                "zoom",
                "path = \"/hooks/zoom\", scheme = \"zoom\", secret = \"env:ZOOM_SECRET\"",
            ),
            hook_pipeline(
                "meta",
                "path = \"/hooks/meta\", scheme = \"meta\", secret = \"env:META_SECRET\", \
                 verify-token = \"env:META_VERIFY\"",
            ),
            hook_pipeline(
                "dropbox",
                "path = \"/hooks/dropbox\", scheme = \"dropbox\", secret = \"env:DROPBOX_SECRET\"",
            ),
        ]
        .concat(),
    );
    let with_secrets = |verify: Option<&str>| {
        let mut command = w.causeway();
        command
            .env("SLACK_SECRET", SLACK_SECRET)
            .env("ZOOM_SECRET", ZOOM_SECRET)
            .env("META_SECRET", META_SECRET)
            .env("DROPBOX_SECRET", DROPBOX_SECRET)
            .env_remove("META_VERIFY");
        if let Some(verify) = verify {
            command.env("META_VERIFY", verify);
        }
        command
    };
    // Without its verify token Meta's check could never pass: said first.
    let checked = run(with_secrets(None).arg("check"));
    assert!(
        !checked.success
            && checked.stdout.contains(
                "pipelines.meta.webhook.verify-token: secret env:META_VERIFY: the environment variable META_VERIFY is not set"
            ),
        "{}",
        checked.stdout
    );
    let checked = run(with_secrets(Some(META_VERIFY)).arg("check"));
    assert!(checked.success, "{}{}", checked.stdout, checked.stderr);
    let grants = run(with_secrets(Some(META_VERIFY)).arg("grants"));
    let line = "  /hooks/meta: scheme meta (secret env:META_SECRET, verify token env:META_VERIFY), from anywhere, handed to crm-source (pipeline meta)\n";
    assert!(grants.stdout.contains(line), "{}", grants.stdout);
    let view = run_json(with_secrets(Some(META_VERIFY)).args(["grants", "--json"]));
    assert_eq!(
        view["inbound"]["listeners"],
        json!(["http://127.0.0.1:8700"])
    );
    let meta = view["inbound"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["path"] == "/hooks/meta");
    assert_eq!(
        meta,
        Some(&json!({
            "path": "/hooks/meta",
            "scheme": "meta",
            "secret": "env:META_SECRET",
            "previous-secret": null,
            "verify-token": "env:META_VERIFY",
            "allow-from": null,
            "handed-to": [{ "plugin": "crm-source", "pipeline": "meta" }],
        })),
        "{view:#}"
    );
    let mut host = RunningHost::start(with_secrets(Some(META_VERIFY)).args([
        "run",
        "--listen",
        "127.0.0.1:0",
    ]));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string()
    };
    let sign =
        |key: &str, parts: &[&[u8]]| causeway::webhook::verify::sign_hex(key.as_bytes(), parts);

    // Slack: the url_verification, signed, is echoed; its events are known
    // by their event_id, so a retry is recognised.
    let slack = |key: &str, body: &[u8]| {
        let at = now();
        let signature = format!("v0={}", sign(key, &[b"v0:", at.as_bytes(), b":", body]));
        post(
            &host,
            "/hooks/slack",
            &[
                ("X-Slack-Request-Timestamp", &at),
                ("X-Slack-Signature", &signature),
            ],
            body,
        )
    };
    let verification = br#"{"token":"legacy","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, _, answer) = slack(SLACK_SECRET, verification);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" })
    );
    let (status, _, answer) = slack("not slack's", verification);
    assert_eq!(status, 401, "a forged check is refused: {answer}");
    // The certificate check slash commands make: answered, not stored.
    let (status, _, answer) = slack(SLACK_SECRET, b"ssl_check=1&token=legacy");
    assert_eq!((status, answer.as_str()), (200, ""));
    let mut event: Value = serde_json::from_slice(&contact_event("k1", "Slack")).unwrap();
    event["event_id"] = json!("Ev0PV52K21");
    let event = event.to_string();
    let (status, _, answer) = slack(SLACK_SECRET, event.as_bytes());
    assert_eq!((status, answer.as_str()), (200, ""), "200, as Slack asks");
    let (status, _, _) = slack(SLACK_SECRET, event.as_bytes());
    assert_eq!(status, 200, "the retry, recognised below");

    // Zoom: the validation answered with the plain token signed under the
    // secret token; an event after it is answered 200 (Zoom counts a 202
    // as failed).
    let zoom = |body: &[u8]| {
        let at = now();
        let signature = format!(
            "v0={}",
            sign(ZOOM_SECRET, &[b"v0:", at.as_bytes(), b":", body])
        );
        post(
            &host,
            "/hooks/zoom",
            &[
                ("x-zm-request-timestamp", &at),
                ("x-zm-signature", &signature),
            ],
            body,
        )
    };
    let validation = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let (status, _, answer) = zoom(validation);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": sign(ZOOM_SECRET, &[b"qgg8vlvZRS6UYooatFL8Aw"]),
        })
    );
    let (status, _, answer) = zoom(&contact_event("z1", "Zoom"));
    assert_eq!((status, answer.as_str()), (200, ""));

    // Meta: a GET carrying the verify token gets its challenge back, as
    // text; one without it is refused. Its events are signed as GitHub's.
    let meta_check = |token: &str| {
        let target = format!(
            "/hooks/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}"
        );
        support::try_http_answer(&host.addr, "GET", &target, &[], b"").unwrap()
    };
    let (status, head, answer) = meta_check(META_VERIFY);
    assert_eq!((status, answer.as_str()), (200, "1158201444"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    let (status, _, answer) = meta_check("a-guess");
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("the verify token does not match"),
        "{answer}"
    );
    let body = contact_event("m1", "Meta");
    let signature = format!("sha256={}", sign(META_SECRET, &[&body]));
    let (status, _, answer) = post(
        &host,
        "/hooks/meta",
        &[("X-Hub-Signature-256", &signature)],
        &body,
    );
    assert_eq!((status, answer.as_str()), (200, ""));

    // Dropbox: anyone may send the challenge, so only what looks like one
    // is echoed, as text browsers are told not to sniff.
    let dropbox_check = |challenge: &str| {
        let target = format!("/hooks/dropbox?challenge={challenge}");
        support::try_http_answer(&host.addr, "GET", &target, &[], b"").unwrap()
    };
    let (status, head, answer) = dropbox_check("3hbwRJZrbB1VhmUgXNJfUXh2FkfmjAdZzQ9ocMMQH4g");
    assert_eq!(
        (status, answer.as_str()),
        (200, "3hbwRJZrbB1VhmUgXNJfUXh2FkfmjAdZzQ9ocMMQH4g"),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{head}"
    );
    let (status, _, answer) = dropbox_check("%3Chtml%3E");
    assert_eq!(status, 401, "{answer}");
    let body = contact_event("d1", "Dropbox");
    let signature = sign(DROPBOX_SECRET, &[&body]);
    let (status, _, _) = post(
        &host,
        "/hooks/dropbox",
        &[("X-Dropbox-Signature", &signature)],
        &body,
    );
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &host,
        "/hooks/dropbox",
        &[("X-Dropbox-Signature", &signature)],
        &contact_event("d2", "Forged"),
    );
    assert_eq!(status, 401);

    // The deliveries flow on; the handshakes were none of them.
    w.wait_for_subscribers(
        &[
            ("d1".into(), "Dropbox Hook".into()),
            ("k1".into(), "Slack Hook".into()),
            ("m1".into(), "Meta Hook".into()),
            ("z1".into(), "Zoom Hook".into()),
        ],
        Duration::from_secs(20),
    );
    let m = Metrics::scrape(&host);
    for (pipeline, handshakes) in [
        ("slack", 2.0),
        ("zoom", 1.0),
        ("meta", 1.0),
        ("dropbox", 1.0),
    ] {
        assert_eq!(
            m.value(
                "causeway_webhook_deliveries_total",
                &[("pipeline", pipeline), ("outcome", "handshake")]
            ),
            Some(handshakes),
            "{pipeline}"
        );
    }
    host.terminate();
    assert!(host.wait_exit(30));
    let conn = rusqlite::Connection::open(host.data_dir.join("causeway.db")).unwrap();
    let stored: Vec<(String, String)> = conn
        .prepare("SELECT pipeline, delivery_id FROM webhook_inbox ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        stored.len(),
        4,
        "one delivery each, no handshake: {stored:#?}"
    );
    assert!(
        stored.contains(&("slack".into(), "Ev0PV52K21".into())),
        "{stored:#?}"
    );
    let hooks = webhook_rows(&host.data_dir);
    for (target, answered) in [
        (
            "pipeline slack /hooks/slack",
            "Slack's url_verification answered",
        ),
        (
            "pipeline zoom /hooks/zoom",
            "Zoom's endpoint.url_validation answered",
        ),
        (
            "pipeline meta /hooks/meta",
            "Meta's subscription check answered",
        ),
        (
            "pipeline slack /hooks/slack",
            "delivery Ev0PV52K21 already stored",
        ),
    ] {
        assert!(
            hooks
                .iter()
                .any(|r| r.3 == target && r.4 == "allowed" && r.5.contains(answered)),
            "{answered}: {hooks:#?}"
        );
    }
    // Anyone may send Dropbox's challenge: counted, not audited.
    assert!(
        !hooks.iter().any(|r| r.5.contains("Dropbox's challenge")),
        "{hooks:#?}"
    );
    let everything = format!("{hooks:?}{}", host.logs());
    for secret in [
        SLACK_SECRET,
        ZOOM_SECRET,
        META_SECRET,
        META_VERIFY,
        DROPBOX_SECRET,
    ] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
}

/// Webhook senders on the internet require HTTPS: `[tls]` serves the
/// webhook paths (and nothing of the operator API) over TLS, from the PEM
/// files an ACME client writes, and a renewal written over them is served
/// without a restart; half a renewal keeps the last good pair.
#[test]
fn webhooks_arrive_over_tls_and_a_renewed_certificate_is_served_without_a_restart() {
    let fixtures = support::repo_root().join("tests/fixtures/tls");
    let w = world_with(
        "webhook = { path = \"/hooks/crm\", scheme = \"standard-webhooks\", secret = \"env:CRM_HOOK_SECRET\" }",
        "\n[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n",
    );
    let folder = w.scratch.path();
    let (cert, key) = (folder.join("tls/cert.pem"), folder.join("tls/key.pem"));
    std::fs::create_dir_all(folder.join("tls")).unwrap();
    // Replaced by a rename, as an ACME client does.
    let put = |file: &std::path::Path, from: &str| {
        let partial = file.with_extension("partial");
        std::fs::copy(fixtures.join(from), &partial).unwrap();
        std::fs::set_permissions(
            &partial,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::rename(&partial, file).unwrap();
    };
    let with_secret = || {
        let mut command = w.causeway();
        command.env("CRM_HOOK_SECRET", hook_secret());
        command
    };

    // A key that is not the certificate's stops check and the host, naming it.
    put(&cert, "server.pem");
    put(&key, "renewed.key");
    for command in [vec!["check"], vec!["run", "--listen", "127.0.0.1:0"]] {
        let out = run(with_secret().args(&command));
        assert!(!out.success, "{command:?}");
        assert!(
            format!("{}{}", out.stdout, out.stderr)
                .contains("tls/key.pem (tls.key) is not the key of the certificate in"),
            "{command:?}: {}{}",
            out.stdout,
            out.stderr
        );
    }
    put(&key, "server.key");
    // Readable by every account: said.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run(with_secret().arg("check"));
    assert!(
        out.success
            && out
                .stdout
                .contains("(tls.key) may be read by every account"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let host = RunningHost::start(with_secret().args(["run", "--listen", "127.0.0.1:0"]));
    let line = host.stdout_line(10);
    let public = line
        .strip_prefix("causeway listening for webhooks on https://")
        .unwrap_or_else(|| panic!("{line}"))
        .trim()
        .to_string();
    let (first_ca, renewed_ca) = (fixtures.join("ca.pem"), fixtures.join("renewed-ca.pem"));
    let both = [first_ca.as_path(), renewed_ca.as_path()];
    let https =
        |roots: &[&std::path::Path],
         method: &str,
         path: &str,
         headers: &[(&str, &str)],
         body: &[u8]| { support::try_https(&public, roots, method, path, headers, body) };
    let deliver = |id: &str, body: &[u8]| {
        let headers = signed_headers(id, body);
        https(&both, "POST", "/hooks/crm", &as_pairs(&headers), body).unwrap()
    };
    let (status, answer, presented) = deliver("msg_1", &contact_event("t1", "Secure"));
    assert_eq!(status, 202, "{answer}");
    let first = presented;
    w.wait_for_subscribers(
        &[("t1".into(), "Secure Hook".into())],
        Duration::from_secs(20),
    );
    // The operator API is not there, token or not; /healthz is.
    let token = std::fs::read_to_string(host.data_dir.join("operator.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    for path in ["/api/plugins", "/metrics"] {
        let (status, answer, _) =
            https(&both, "GET", path, &[("authorization", &bearer)], b"").unwrap();
        assert_eq!(status, 404, "{path}: {answer}");
    }
    assert_eq!(https(&both, "GET", "/healthz", &[], b"").unwrap().0, 200);
    // A client trusting only the renewal's authority is refused for now.
    assert!(https(&[renewed_ca.as_path()], "GET", "/healthz", &[], b"").is_err());
    // When the certificate expires, for an alert (openssl x509 -enddate:
    // Nov 13 17:25:53 2126 GMT).
    let expiry = || Metrics::scrape(&host).value("causeway_tls_certificate_expiry_seconds", &[]);
    assert_eq!(expiry(), Some(4_950_264_353.0));

    // Half a renewal (the certificate, not yet its key): the last good
    // pair goes on being served.
    put(&cert, "renewed.pem");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    host.wait_for_log("the TLS certificate changed and cannot be used", 30);
    assert_eq!(https(&both, "GET", "/healthz", &[], b"").unwrap().2, first);
    // The whole renewal: served from the next connection, no signal needed.
    put(&key, "renewed.key");
    wait_until(
        "the renewed certificate served",
        Duration::from_secs(30),
        || {
            let (_, _, presented) =
                https(&[renewed_ca.as_path()], "GET", "/healthz", &[], b"").ok()?;
            (presented != first).then_some(())
        },
    );
    host.wait_for_log("reloaded: the TLS certificate", 5);
    assert_eq!(expiry(), Some(4_950_279_710.0), "Nov 13 21:41:50 2126 GMT");
    let (status, answer, _) = deliver("msg_2", &contact_event("t2", "Renewed"));
    assert_eq!(status, 202, "{answer}");
    w.wait_for_subscribers(
        &[
            ("t1".into(), "Secure Hook".into()),
            ("t2".into(), "Renewed Hook".into()),
        ],
        Duration::from_secs(20),
    );
}

#[test]
fn a_delivery_stored_before_a_crash_is_processed_after_restart_and_its_redelivery_deduplicated() {
    let w = webhook_world("initial = \"100ms\"\nmax = \"200ms\"\nbudget = \"1m\"\n");
    // The mailer is down: the delivery is stored, answered, and stuck.
    w.mailer.faults().set_down(true);
    let mut host = start_with_hooks(&w);
    let body = contact_event("h9", "Crashy");
    assert_eq!(deliver(&host, "msg_9", &body, &body).0, 202);
    wait_until("a write attempt", Duration::from_secs(20), || {
        (w.mailer.faults().requests() > 0).then_some(())
    });
    host.kill();
    assert!(w.mailer.subscribers(LIST).is_empty());

    w.mailer.faults().set_down(false);
    let host = start_with_hooks(&w);
    w.wait_for_subscribers(
        &[("h9".into(), "Crashy Hook".into())],
        Duration::from_secs(20),
    );
    // Sent again after the restart: recognised, not processed again.
    let batches = w.mailer.batches().len();
    assert_eq!(deliver(&host, "msg_9", &body, &body).0, 200);
    wait_until(
        "the delivery processed once",
        Duration::from_secs(10),
        || (webhook_runs_read(&w) == 1).then_some(()),
    );
    assert_eq!(
        w.mailer.batches().len(),
        batches,
        "a duplicate reached the mailer"
    );
}

#[test]
fn deliveries_waiting_together_reach_the_sink_in_one_write_and_one_it_cannot_parse_is_set_aside() {
    let w = webhook_world("initial = \"100ms\"\nmax = \"200ms\"\nbudget = \"1m\"\n");
    // The mailer is down: the first deliveries' run retries its write, and
    // the rest wait in the inbox meanwhile.
    w.mailer.faults().set_down(true);
    let host = start_with_hooks(&w);
    let mut expected = Vec::new();
    for i in 0..30 {
        let id = format!("b{i:02}");
        let body = contact_event(&id, "Batch");
        assert_eq!(deliver(&host, &format!("msg_{id}"), &body, &body).0, 202);
        expected.push((id, "Batch Hook".to_string()));
        if i == 10 {
            // Signed, but no contact event: set aside, and the rest go on.
            let junk = b"not a contact event";
            assert_eq!(deliver(&host, "msg_junk", junk, junk).0, 202);
        }
    }
    wait_until("a write attempt", Duration::from_secs(20), || {
        (w.mailer.faults().requests() > 0).then_some(())
    });
    w.mailer.faults().set_down(false);
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    // The run's first batch held what was stored when it started; the next
    // takes everything that arrived while it waited.
    let batches = w.mailer.batches();
    assert!(
        batches.len() <= 2,
        "30 deliveries took {} writes: {batches:?}",
        batches.len()
    );
    assert_eq!(batches.iter().sum::<usize>(), 30, "{batches:?}");
    wait_until("the runs recorded", Duration::from_secs(10), || {
        (webhook_runs_read(&w) == 30).then_some(())
    });
    // The log is read by another thread: wait for the line, then check it.
    host.wait_for_log("the delivery is set aside", 10);
    let logs = host.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("webhook msg_junk") && l.contains("the delivery is set aside")),
        "{logs}"
    );
    let m = Metrics::scrape(&host);
    let pipeline = [("pipeline", "contacts-to-mailer")];
    assert_eq!(
        m.value("causeway_webhook_deliveries_pending", &pipeline),
        Some(0.0),
        "{}",
        m.page
    );
    // Set aside, and shown as such: not lost from sight.
    assert_eq!(
        m.value("causeway_webhook_deliveries_set_aside", &pipeline),
        Some(1.0),
        "{}",
        m.page
    );
    let row = pipeline_row(&w, "contacts-to-mailer").unwrap();
    assert_eq!(row["failed_deliveries"], 1, "{row:#}");
    // Queued again (as after fixing the plugin), the running host reads it
    // at once; this plugin still cannot, so it is set aside again.
    let set_aside = || host.logs().matches("msg_junk with crm-source").count();
    let before = set_aside();
    let out = w.lever("redeliver");
    assert!(out.contains("1 webhook deliveries queued again"), "{out}");
    wait_until("the delivery read again", Duration::from_secs(20), || {
        (set_aside() > before).then_some(())
    });
    wait_until("set aside again", Duration::from_secs(10), || {
        let row = pipeline_row(&w, "contacts-to-mailer")?;
        (row["failed_deliveries"] == 1 && row["pending_deliveries"] == 0).then_some(())
    });
    assert!(
        w.lever("redeliver")
            .contains("1 webhook deliveries queued again")
    );
}

/// A pushed contact map-fullname cannot read, delivered alone: its batch
/// holds no other record, but the transform mapped an earlier delivery, so
/// the record is set aside and the deliveries after it flow.
#[test]
fn a_pushed_record_a_transform_cannot_map_is_set_aside_though_alone_in_its_batch() {
    let w = webhook_world("");
    let host = start_with_hooks(&w);
    let first = contact_event("w1", "Ada");
    assert_eq!(deliver(&host, "msg_w1", &first, &first).0, 202);
    let mut expected = vec![("w1".to_string(), "Ada Hook".to_string())];
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let odd = json!({
        "event": "contact.created",
        "contact": {
            "id": "w2", "updated_at": 1_700_000_000_000i64,
            "firstName": 42, "lastName": "Hook", "email": "w2@example.com",
        },
    })
    .to_string()
    .into_bytes();
    assert_eq!(deliver(&host, "msg_w2", &odd, &odd).0, 202);
    let letter = one_dead_letter(&w);
    assert_eq!(letter["key"], "w2");
    assert_eq!(letter["stage"], "transform");
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason.contains("alone in its batch"), "{reason}");
    let third = contact_event("w3", "Grace");
    assert_eq!(deliver(&host, "msg_w3", &third, &third).0, 202);
    expected.push(("w3".to_string(), "Grace Hook".to_string()));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    // Written before its run commits: the delivery is done a moment later.
    let row = wait_until("the delivery done", Duration::from_secs(10), || {
        let row = pipeline_row(&w, "contacts-to-mailer").unwrap();
        (row["pending_deliveries"] == 0).then_some(row)
    });
    assert_ne!(row["state"], "stopped", "{row:#}");
}

/// test-nonconformant as a pipeline's source (told to `break` a rule) and
/// its sink (which takes everything).
fn nonconformant_world(broken: &str) -> World {
    let w = World::new(3, "", &nonconformant_pipeline(broken));
    w.scratch
        .install("test-nonconformant", "nonconformant.wasm");
    w
}

/// Tells the pipeline's test-nonconformant to break `to` where it broke
/// `from`.
fn break_instead(w: &World, from: &str, to: &str) {
    let file = w.scratch.path().join("causeway.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace(from, to)).unwrap();
}

fn nonconformant_pipeline(broken: &str) -> String {
    format!(
        r#"
[pipelines.items]
every = "1h"
source = {{ plugin = "test-nonconformant", stream = "items", config = {{ break = "{broken}" }} }}
sinks = [{{ plugin = "test-nonconformant", config = {{ break = "none" }} }}]
"#
    )
}

/// A source answering records that break the contract (here data that is
/// not JSON, the first of each page): they are set aside as the source's
/// dead letters, never handed to a sink, and the rest flow. A replay
/// finds them as broken as before; the source mended and read again, they
/// arrive and their letters go.
#[test]
fn records_a_source_answers_breaking_the_contract_are_set_aside_and_never_written() {
    let w = nonconformant_world("records-valid");
    let items = |w: &World, action: &str| {
        let out = run(w.causeway().args(["pipeline", action, "items"]));
        assert!(out.success, "{action}: {}{}", out.stdout, out.stderr);
    };
    items(&w, "run-now");
    let runs = w.runs();
    let counts = (&runs[0]["read"], &runs[0]["written"], &runs[0]["rejected"]);
    assert_eq!(counts, (&json!(5), &json!(2), &json!(3)), "{runs:#}");
    let letters = w.dead_letters();
    let letters = letters.as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = letters
        .iter()
        .map(|l| {
            let field = |name: &str| l[name].as_str().unwrap();
            (field("key"), field("stage"), field("sink"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("item-0", "source", "test-nonconformant"),
            ("item-2", "source", "test-nonconformant"),
            ("item-4", "source", "test-nonconformant"),
        ]
    );
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "set aside: source test-nonconformant answered it breaking the contract: the record has data that is not JSON"
        ),
        "{reason}"
    );
    let table = run(w.causeway().args(["dlq", "list"]));
    assert!(
        table.stdout.contains("test-nonconformant (source)"),
        "{}",
        table.stdout
    );

    // Replayed as they are, they are as broken as before.
    let replayed = w.replay_pipeline("items");
    assert!(
        replayed.contains("0 written, 3 rejected again"),
        "{replayed}"
    );
    assert!(
        w.dead_letters()
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["attempts"] == 2)
    );

    // Mended, and read again from the start: the records arrive, and the
    // letters they supersede go.
    break_instead(&w, "records-valid", "none");
    items(&w, "reset");
    items(&w, "run-now");
    assert_eq!(w.dead_letters(), json!([]));
    let runs = w.runs();
    let counts = (&runs[0]["read"], &runs[0]["written"], &runs[0]["rejected"]);
    assert_eq!(counts, (&json!(5), &json!(5), &json!(0)), "{runs:#}");
}

/// A source answering keys over the 1 KiB a key may have: set aside at the
/// source, shown cut short, and the rest flow. Then one whose second page's
/// checkpoint is over 64 KiB: that page is not delivered, its checkpoint
/// not stored, and the source stops, saying why.
#[test]
fn a_key_or_a_checkpoint_too_long_is_refused_naming_its_length() {
    let w = nonconformant_world("long-key");
    let items = |w: &World, action: &str| run(w.causeway().args(["pipeline", action, "items"]));
    let out = items(&w, "run-now");
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    let runs = w.runs();
    let counts = (&runs[0]["read"], &runs[0]["written"], &runs[0]["rejected"]);
    assert_eq!(counts, (&json!(5), &json!(2), &json!(3)), "{runs:#}");
    let letters = w.dead_letters();
    let reasons: Vec<&str> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "{letters:#}");
    for reason in reasons {
        assert!(
            reason.ends_with("the record has a key of 2007 bytes, over the 1024 a key may have"),
            "{reason}"
        );
    }
    let table = run(w.causeway().args(["dlq", "list"])).stdout;
    assert!(table.contains("… (2007 bytes)"), "{table}");
    assert!(table.lines().all(|l| l.len() < 600), "{table}");

    break_instead(&w, "long-key", "long-checkpoint");
    assert!(items(&w, "reset").success);
    let out = items(&w, "run-now");
    assert!(!out.success, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "read test-nonconformant: plugin test-nonconformant@0.1.0 answered against the contract: its page's checkpoint is 71680 bytes, over the 64 KiB a checkpoint may have"
        ),
        "{}",
        out.stderr
    );
    let run = &w.runs()[0];
    let counts = (&run["outcome"], &run["read"], &run["written"]);
    assert_eq!(counts, (&json!("stopped"), &json!(2), &json!(2)), "{run:#}");
    // The first page's checkpoint stands.
    let db = w.scratch.path().join("causeway-data/causeway.db");
    let stored: String = rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT checkpoint FROM checkpoint WHERE pipeline = 'items'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(stored.len() < 100, "{} bytes", stored.len());
}

/// A pushed contact whose id is empty, and one whose id is over the 1 KiB
/// a key may have: crm-source turns each into a record whose key breaks
/// the contract, which the host sets aside as the source's dead letter
/// instead of handing it to the mailer (the long one leaving no version
/// behind); the delivery beside them flows.
#[test]
fn a_pushed_record_without_a_key_is_set_aside_at_the_source() {
    let w = webhook_world("");
    w.lever("pause");
    let host = start_with_hooks(&w);
    let long_id = "l".repeat(1500);
    let (keyless, long, named) = (
        contact_event("", "Nobody"),
        contact_event(&long_id, "Lee"),
        contact_event("k1", "Kim"),
    );
    assert_eq!(deliver(&host, "msg_keyless", &keyless, &keyless).0, 202);
    assert_eq!(deliver(&host, "msg_long", &long, &long).0, 202);
    assert_eq!(deliver(&host, "msg_named", &named, &named).0, 202);
    w.lever("resume");
    w.wait_for_subscribers(&[("k1".into(), "Kim Hook".into())], Duration::from_secs(20));
    let letters = wait_until("the dead letters", Duration::from_secs(10), || {
        let letters = w.dead_letters();
        (letters.as_array().unwrap().len() == 2).then_some(letters)
    });
    let mut keys = keys_of(&letters);
    keys.sort();
    assert_eq!(keys, ["", long_id.as_str()], "{letters:#}");
    for letter in letters.as_array().unwrap() {
        assert_eq!(
            (&letter["stage"], &letter["sink"]),
            (&json!("source"), &json!("crm-source"))
        );
        let reason = letter["reason"].as_str().unwrap();
        let why = match letter["key"].as_str().unwrap() {
            "" => "the record has an empty key",
            _ => "the record has a key of 1500 bytes, over the 1024 a key may have",
        };
        assert!(
            reason.contains(&format!("answered it breaking the contract: {why}")),
            "{reason}"
        );
    }
    // The table shows the empty key as such, and the long one cut.
    let table = run(w.causeway().args(["dlq", "list"])).stdout;
    assert!(table.contains(" \"\" "), "{table}");
    assert!(table.contains("… (1500 bytes)"), "{table}");
    // Only the contact let through left a version of itself.
    let db = w.scratch.path().join("causeway-data/causeway.db");
    let versions: Vec<String> = rusqlite::Connection::open(db)
        .unwrap()
        .prepare("SELECT key FROM record_version")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(versions, ["k1"]);
}

/// Two versions of a contact pushed before the pipeline takes either: the
/// older one a transform cannot map, beside the newer one it maps, is no
/// dead letter (a replay would write it over the newer); the newer one it
/// cannot map, beside an older one it maps, is; of two the mailer refuses,
/// the newer. Each version refused counts as rejected all the same.
#[test]
fn of_two_versions_pushed_together_only_the_newer_is_ever_a_dead_letter() {
    let w = webhook_world("");
    w.mailer.reject_key("v");
    w.lever("pause");
    let host = start_with_hooks(&w);
    // Each version changed after the one before it, as the CRM stamps them.
    let odd = |id: &str, at: i64| {
        json!({
            "event": "contact.updated",
            "contact": {
                "id": id, "updated_at": at,
                "firstName": 42, "lastName": "Hook", "email": format!("{id}@example.com"),
            },
        })
        .to_string()
        .into_bytes()
    };
    let deliveries = [
        ("x", odd("x", 1)),
        ("x", event_at("contact.updated", "x", "Mended", 2)),
        ("y", event_at("contact.updated", "y", "Yara", 1)),
        ("y", odd("y", 2)),
        ("z", contact_event("z", "Zoe")),
        ("v", event_at("contact.updated", "v", "Vic", 1)),
        ("v", event_at("contact.updated", "v", "Vera", 2)),
    ];
    for (i, (_, body)) in deliveries.iter().enumerate() {
        assert_eq!(deliver(&host, &format!("msg_{i}"), body, body).0, 202);
    }
    w.lever("resume");
    let expected = [("x", "Mended Hook"), ("y", "Yara Hook"), ("z", "Zoe Hook")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    wait_until("the deliveries done", Duration::from_secs(10), || {
        (webhook_runs_read(&w) == 7).then_some(())
    });
    let letters = w.dead_letters();
    let keys = keys_of(&letters);
    assert_eq!(keys, ["y", "v"], "{letters:#}");
    let data: Value = serde_json::from_str(letters[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["firstName"], 42, "{data}");
    let data: Value = serde_json::from_str(letters[1]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["fullName"], "Vera Hook", "{data}");
    // x's newer, y's older and z's versions written; x's older, y's newer
    // and both of v's refused: every record read accounted for.
    assert_eq!(w.run_totals(), [7, 3, 4, 0, 0], "{:#}", w.runs());
}

#[test]
fn sigterm_during_a_backoff_stops_the_host_promptly_and_the_run_shows_interrupted() {
    let w = world("initial = \"20s\"\nmax = \"20s\"\nbudget = \"1h\"\n");
    w.mailer.faults().set_down(true);
    create(&w.crm, 1);
    let mut host = w.start();
    host.wait_for_log("retrying in", 20);
    let asked = std::time::Instant::now();
    host.terminate();
    // Well inside the backoff (10-20 s) and the drain bound (35 s).
    assert!(host.wait_exit(10), "{}", host.logs());
    assert!(asked.elapsed() < Duration::from_secs(10));
    let runs = w.runs();
    assert_eq!(runs[0]["outcome"], "interrupted", "{runs:#}");
    // Stopping is not a problem to act on: no warning for it.
    let logs = host.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("run interrupted"))
        .unwrap_or_else(|| panic!("the interrupted run is not logged:\n{logs}"));
    assert!(line.contains(" INFO "), "logged as a problem: {line}");
}

#[test]
fn a_stream_the_source_does_not_offer_stops_its_reads_naming_the_likely_one_until_fixed() {
    let w = world("");
    let config = w.scratch.path().join("causeway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let typo = text.replace("stream = \"contacts\"", "stream = \"contact\"");
    assert_ne!(typo, text);
    std::fs::write(&config, typo).unwrap();
    let expected = create(&w.crm, 2);
    let host = w.start();
    let row = wait_until(
        "the source's reads stopped",
        Duration::from_secs(20),
        || pipeline_row(&w, "contacts-to-mailer").filter(|p| p["state"] == "stopped"),
    );
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "source.stream \"contact\" is not a stream crm-source offers: its discover lists contacts (did you mean `contacts`?)"
        ),
        "{reason}"
    );
    host.wait_for_log("reads stopped:", 10);
    // Asked before any read: the CRM's API saw no request.
    assert_eq!(w.crm.faults().requests(), 0);
    assert!(w.mailer.subscribers(LIST).is_empty());

    // Fixed in the file, the pipeline reads.
    let edited = config.with_extension("toml.partial");
    std::fs::write(&edited, text).unwrap();
    std::fs::rename(&edited, &config).unwrap();
    w.wait_for_subscribers(&expected, Duration::from_secs(20));
    let row = pipeline_row(&w, "contacts-to-mailer").unwrap();
    assert_ne!(row["state"], "stopped", "{row:#}");
}

/// A sender with room for one URL (many CRMs have one per app) feeds a
/// pipeline per sink: every pipeline at the path gets each delivery, so a
/// mailer that is down holds back only its own pipeline.
#[test]
fn pipelines_sharing_a_webhook_path_each_get_every_delivery_and_go_at_their_own_pace() {
    let hook = r#"webhook = { path = "/hooks/crm", scheme = "standard-webhooks", secret = "env:CRM_HOOK_SECRET" }"#;
    let w = World::with_calendar(
        3,
        "",
        &format!(
            r#"
[pipelines.crm-to-mailer]
{hook}
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "mailer-sink" }}]

[pipelines.crm-to-mailer.retry]
initial = "50ms"
max = "100ms"
budget = "300ms"
circuit-cooldown = "300ms"

[pipelines.crm-to-calendar]
{hook}
source = {{ plugin = "crm-source", stream = "contacts" }}
transforms = [{{ plugin = "map-fullname" }}]
sinks = [{{ plugin = "calendar-sink" }}]
"#
        ),
    );
    w.mailer.faults().set_down(true);
    let host = start_with_hooks(&w);
    for (id, first) in [("h1", "Hana"), ("h2", "Hugo")] {
        let body = contact_event(id, first);
        let (status, answer) = deliver(&host, &format!("msg_{id}"), &body, &body);
        assert_eq!(status, 202, "{answer}");
    }
    // Sent again: already stored for both.
    let body = contact_event("h1", "Hana");
    let (status, answer) = deliver(&host, "msg_h1", &body, &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("duplicate"), "{answer}");

    let expected: Vec<Subscriber> = vec![
        ("h1".into(), "Hana Hook".into()),
        ("h2".into(), "Hugo Hook".into()),
    ];
    w.wait_for_attendees(&expected, Duration::from_secs(20));
    assert!(w.mailer.subscribers(LIST).is_empty());
    w.mailer.faults().set_down(false);
    w.wait_for_subscribers(&expected, Duration::from_secs(20));

    // Each pipeline's source stored each delivery once, and saw the
    // duplicate as one.
    let rows = audit_rows(&w.scratch.path().join("causeway-data"));
    for pipeline in ["crm-to-mailer", "crm-to-calendar"] {
        let details: Vec<&str> = rows
            .iter()
            .filter(|(_, capability, .., target, _, _)| {
                capability == "webhook" && target == &format!("pipeline {pipeline} /hooks/crm")
            })
            .map(|(.., detail)| detail.as_str())
            .collect();
        assert_eq!(
            details,
            [
                "delivery msg_h1 stored",
                "delivery msg_h2 stored",
                "delivery msg_h1 already stored: not processed again"
            ],
            "{pipeline}"
        );
    }
}

/// The operator's walk when a sink's API reads its key from its own
/// header and the grant sends a bearer token: the pipeline stops on the
/// API's 401, saying so; `grants approve --inject` changes the binding, and
/// the pipeline goes on by itself with what it had not written.
#[test]
fn a_credential_sent_the_wrong_way_stops_the_pipeline_until_the_grant_says_how() {
    let w = calendar_world(10, "", "");
    let grants = w.scratch.path().join("grants.toml");
    let text = std::fs::read_to_string(&grants).unwrap();
    std::fs::write(
        &grants,
        text.replace("inject = \"header:x-api-key\"", "inject = \"bearer\""),
    )
    .unwrap();
    let expected = create(&w.crm, 3);
    let _host = w.start();
    wait_until("the pipeline stopped", Duration::from_secs(20), || {
        let row = pipeline_row(&w, "contacts")?;
        (row["state"] == "stopped").then_some(row)
    });
    let row = pipeline_row(&w, "contacts").unwrap();
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("calendar-sink") && reason.contains("auth") && reason.contains("401"),
        "{row:#}"
    );
    assert!(
        w.calendar()
            .attendees(support::connectors::CALENDAR)
            .is_empty()
    );

    let out = run(w.causeway().args([
        "grants",
        "approve",
        "calendar-sink",
        "--by",
        "ops",
        "--inject",
        "calendar-key=header:x-api-key",
    ]));
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("~ credential calendar-key: sent as header:x-api-key, in place of bearer"),
        "{}",
        out.stdout
    );
    w.wait_for_attendees(&expected, Duration::from_secs(20));
}

/// A delivery id is the sender's to choose: its audit row keeps 4 KiB of it.
#[test]
fn a_delivery_ids_audit_row_is_cut_to_a_few_kib() {
    let w = webhook_world("");
    let host = start_with_hooks(&w);
    let id = format!("msg_{}", "x".repeat(10_000));
    let body = contact_event("long", "Lena");
    let (status, answer) = deliver(&host, &id, &body, &body);
    assert_eq!(status, 202, "{answer}");
    let detail = wait_until("the delivery's audit row", Duration::from_secs(10), || {
        audit_rows(&w.scratch.path().join("causeway-data"))
            .into_iter()
            .find(|(_, capability, ..)| capability == "webhook")
            .map(|(.., detail)| detail)
    });
    assert!(
        detail.len() < 4200 && detail.ends_with("more bytes)"),
        "{} bytes: {}",
        detail.len(),
        &detail[detail.len().saturating_sub(40)..]
    );
}

/// A slow API: each request takes long enough that a call's deadline falls
/// while one is in flight. The records written before it stay written, and
/// the host goes on with the rest.
#[test]
fn a_slow_api_cut_off_by_the_calls_deadline_still_gets_the_whole_page() {
    let w = calendar_world(
        10,
        "[plugins.calendar-sink.limits]\ncall-timeout = \"1500ms\"\n",
        QUICK_RETRY,
    );
    w.calendar()
        .faults()
        .inject(Fault::Slow(Duration::from_millis(300)), 1000);
    let expected = create(&w.crm, 10);
    let _host = w.start();
    w.wait_for_attendees(&expected, Duration::from_secs(30));
    w.wait_until_idle();
    assert_none_stopped_or_failed(&w.runs());
    assert_eq!(w.dead_letters(), json!([]));
}
