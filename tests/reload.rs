//! Hot reload through the real host: files replaced by atomic rename and by
//! slow writes in place while calls keep coming, broken and over-reaching
//! upgrades, grants and configuration edited while the host runs.

use crate::support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Answer, FakeServer, RunningHost, Scratch, patched, test_version, wait_until};

const A: &str = support::TEST_VERSION_BUILD;
const B: &str = "build-bbbb";
const FILE: &str = "test-version.wasm";

/// Writes beside and renames into place: the folder never shows half a file.
fn replace_atomically(scratch: &Scratch, bytes: &[u8]) {
    let partial = scratch.plugins().join(format!(".{FILE}.partial"));
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(&partial, scratch.plugins().join(FILE)).unwrap();
}

/// Writes the file in place in eight chunks, 40 ms apart, like a slow copy.
fn write_slowly(scratch: &Scratch, bytes: &[u8]) {
    let mut file = std::fs::File::create(scratch.plugins().join(FILE)).unwrap();
    for chunk in bytes.chunks(bytes.len().div_ceil(8)) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
}

fn setup(spin_ms: u64, extra_config: &str) -> Scratch {
    let scratch = Scratch::new();
    std::fs::write(scratch.plugins().join(FILE), test_version(A)).unwrap();
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!("{extra_config}\n[plugins.test-version.config]\nspin_ms = {spin_ms}\n"),
    )
    .unwrap();
    scratch
}

fn start(scratch: &Scratch) -> RunningHost {
    RunningHost::start(scratch.causeway().args(["run", "--listen", "127.0.0.1:0"]))
}

/// One transform call: the build that answered, or the failure.
fn call(host: &RunningHost) -> Result<String, String> {
    let body = json!({
        "operation": "transform",
        "input": [{ "stream": "s", "key": "k", "data": {} }],
    })
    .to_string();
    let (status, answer) = host
        .try_api("POST", "/api/plugins/test-version/invoke", Some(&body))
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {answer}"));
    }
    let answer: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
    answer[0]["data"]["build"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no build in {answer}"))
}

fn plugin_rows(host: &RunningHost) -> Vec<Value> {
    let (status, body) = host.api("GET", "/api/plugins", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap()
}

/// Waits until calls answer from `marker`; how long that took.
fn wait_for_build(host: &RunningHost, marker: &str, within: Duration) -> Duration {
    let started = Instant::now();
    wait_until(&format!("calls answering from {marker}"), within, || {
        (call(host).ok().as_deref() == Some(marker)).then_some(())
    });
    started.elapsed()
}

#[test]
fn twenty_swaps_under_load_never_fail_a_call_and_the_last_is_live_within_a_second() {
    let scratch = setup(5, "");
    let host = Arc::new(start(&scratch));
    assert_eq!(call(&host), Ok(A.to_string()));

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (host, stop, answers) = (host.clone(), stop.clone(), answers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let answer = call(&host);
                    answers.lock().unwrap().push(answer);
                }
            })
        })
        .collect();
    // Meanwhile, nothing may ever be reported failed: a new version shows
    // as compiling, beside the version still serving, then active.
    let failed_seen = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (host, stop, failed_seen) = (host.clone(), stop.clone(), failed_seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let rows = plugin_rows(&host);
                let serving = rows.iter().any(|row| row["state"] == "active");
                for row in rows {
                    let compiling = row["state"] == "compiling";
                    if !(row["state"] == "active" || compiling && serving) {
                        failed_seen.lock().unwrap().push(row);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut last_latency = Duration::ZERO;
    for i in 0..20 {
        let marker = if i % 2 == 0 { B } else { A };
        let bytes = test_version(marker);
        // Two renames, two slow writes, and again: each kind with each build.
        if i % 4 < 2 {
            replace_atomically(&scratch, &bytes);
        } else {
            write_slowly(&scratch, &bytes);
        }
        last_latency = wait_for_build(&host, marker, Duration::from_secs(10));
    }
    assert!(
        last_latency < Duration::from_secs(1),
        "the last version answered {last_latency:?} after its file was complete"
    );
    // From then on every call answers from the final build (A).
    for _ in 0..10 {
        assert_eq!(call(&host), Ok(A.to_string()));
    }

    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.join().unwrap();
    }
    poller.join().unwrap();
    let answers = answers.lock().unwrap();
    assert!(
        answers.len() > 20,
        "the callers barely called: {}",
        answers.len()
    );
    let failures: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "calls failed during swaps: {failures:?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| matches!(a.as_deref(), Ok(A) | Ok(B))),
        "an answer came from neither build"
    );
    let failed_seen = failed_seen.lock().unwrap();
    assert!(
        failed_seen.is_empty(),
        "a state other than active (or compiling beside it) was reported: {failed_seen:?}"
    );
    // Each version is told once, as it starts serving: not again at every
    // reload after it.
    let logs = host.logs();
    let told = logs.lines().filter(|l| l.contains("plugin loaded")).count();
    assert_eq!(told, 21, "{logs}");
}

#[test]
fn a_call_in_flight_during_a_swap_answers_from_the_old_version() {
    let scratch = setup(3000, "");
    let host = Arc::new(start(&scratch));
    let in_flight = {
        let host = host.clone();
        std::thread::spawn(move || call(&host))
    };
    host.wait_for_log(&format!("call started on {A}"), 30);
    replace_atomically(&scratch, &test_version(B));
    host.wait_for_log("reloaded", 10);
    assert!(
        !in_flight.is_finished(),
        "the swap must happen while the call is in flight"
    );
    assert_eq!(in_flight.join().unwrap(), Ok(A.to_string()));
    assert_eq!(call(&host), Ok(B.to_string()));
}

#[test]
fn a_broken_upgrade_leaves_the_old_version_answering_and_shows_the_failure() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    replace_atomically(&scratch, b"\0asm this is not a plugin");
    let rows = wait_until("a failed row", Duration::from_secs(10), || {
        let rows = plugin_rows(&host);
        rows.iter().any(|r| r["state"] == "failed").then_some(rows)
    });
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["active", "failed"], "{rows:?}");
    assert!(
        rows[1]["error"].as_str().unwrap().contains(FILE),
        "{rows:?}"
    );
    assert_eq!(
        call(&host),
        Ok(A.to_string()),
        "the old version must keep answering"
    );
    host.wait_for_log("the version loaded before keeps serving", 5);
    // Told once: not again at the next reload, for an edit of something else.
    let reloads = |host: &RunningHost| {
        host.logs()
            .lines()
            .filter(|l| l.contains("reloaded"))
            .count()
    };
    let before = reloads(&host);
    let config = scratch.path().join("causeway.toml");
    let edited = std::fs::read_to_string(&config).unwrap() + "# edited\n";
    std::fs::write(&config, edited).unwrap();
    wait_until("another reload", Duration::from_secs(10), || {
        (reloads(&host) > before).then_some(())
    });
    let logs = host.logs();
    let told = logs.matches("plugin not loaded").count();
    assert_eq!(told, 1, "{logs}");
    // Each reload names what it read again.
    assert!(logs.contains(&format!("reloaded: {FILE}")), "{logs}");
    assert!(logs.contains("reloaded: causeway.toml"), "{logs}");

    // A good file again: it serves, and the failure is gone.
    replace_atomically(&scratch, &test_version(B));
    wait_for_build(&host, B, Duration::from_secs(10));
    // The API answers from the plugins serving: no lag behind the swap.
    let rows = plugin_rows(&host);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "active", "{rows:?}");
}

#[test]
fn a_second_file_of_a_serving_plugin_fails_and_the_serving_file_keeps_answering() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    // Another build under a name that sorts first, like a copy kept beside
    // the plugin: it must not swap versions behind the operator's back.
    let copy = "test-version-backup.wasm";
    std::fs::write(scratch.plugins().join(copy), test_version(B)).unwrap();
    let rows = wait_until("a failed row", Duration::from_secs(10), || {
        let rows = plugin_rows(&host);
        rows.iter().any(|r| r["state"] == "failed").then_some(rows)
    });
    let failed = rows.iter().find(|r| r["state"] == "failed").unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains(copy)
            && error.contains(&format!(
                "already provided by {}",
                scratch.plugins().join(FILE).display()
            )),
        "{error}"
    );
    assert_eq!(call(&host), Ok(A.to_string()), "the serving file answers");

    // The serving file removed: the other one takes over.
    std::fs::remove_file(scratch.plugins().join(FILE)).unwrap();
    wait_for_build(&host, B, Duration::from_secs(10));
}

#[test]
fn an_upgrade_asking_for_more_is_held_pending_until_granted_while_the_old_serves() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    let greedy = patched(&test_version(B), "storage = false", "storage = true ");
    replace_atomically(&scratch, &greedy);
    let rows = wait_until("a pending row", Duration::from_secs(10), || {
        let rows = plugin_rows(&host);
        rows.iter()
            .any(|r| r["state"] == "pending-approval")
            .then_some(rows)
    });
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["active", "pending-approval"], "{rows:?}");
    assert_eq!(rows[1]["not_granted"], json!(["storage"]), "{rows:?}");
    assert_eq!(call(&host), Ok(A.to_string()));
    host.wait_for_log("upgrade held back, pending approval", 5);
    assert!(
        host.logs().contains("test-version@0.1.0 keeps serving"),
        "{}",
        host.logs()
    );

    // Granting it (grants.toml edited while the host runs) swaps it in.
    scratch.grants("[plugins.test-version.storage]\nquota-bytes = 1024\n");
    wait_for_build(&host, B, Duration::from_secs(10));
    // The API answers from the plugins serving: no lag behind the swap.
    let rows = plugin_rows(&host);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "active", "{rows:?}");
}

/// A grants file that is a link through a folder's `..data` link, as a
/// Kubernetes volume lays out a ConfigMap: an update switches `..data` and
/// never touches `grants.toml` itself, and is taken all the same.
#[test]
fn a_grants_file_updated_by_switching_a_link_in_its_folder_is_taken() {
    let scratch = setup(0, "grants = \"conf/grants.toml\"");
    let conf = scratch.path().join("conf");
    std::fs::create_dir_all(conf.join("..v1")).unwrap();
    std::fs::write(conf.join("..v1/grants.toml"), "").unwrap();
    std::os::unix::fs::symlink("..v1", conf.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/grants.toml", conf.join("grants.toml")).unwrap();
    let host = start(&scratch);
    let greedy = patched(&test_version(B), "storage = false", "storage = true ");
    replace_atomically(&scratch, &greedy);
    wait_until("a pending row", Duration::from_secs(10), || {
        plugin_rows(&host)
            .iter()
            .any(|r| r["state"] == "pending-approval")
            .then_some(())
    });
    std::fs::create_dir(conf.join("..v2")).unwrap();
    std::fs::write(
        conf.join("..v2/grants.toml"),
        "[plugins.test-version.storage]\nquota-bytes = 1024\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", conf.join("..data_tmp")).unwrap();
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).unwrap();
    wait_for_build(&host, B, Duration::from_secs(10));
}

/// The same for a plugins folder laid out so: `test-version.wasm` is a
/// link through `..data`, which an update switches.
#[test]
fn a_plugin_updated_by_switching_a_link_in_its_folder_is_taken() {
    let scratch = setup(0, "");
    let plugins = scratch.plugins();
    std::fs::create_dir(plugins.join("..v1")).unwrap();
    std::fs::rename(plugins.join(FILE), plugins.join("..v1").join(FILE)).unwrap();
    std::os::unix::fs::symlink("..v1", plugins.join("..data")).unwrap();
    std::os::unix::fs::symlink(format!("..data/{FILE}"), plugins.join(FILE)).unwrap();
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    std::fs::create_dir(plugins.join("..v2")).unwrap();
    std::fs::write(plugins.join("..v2").join(FILE), test_version(B)).unwrap();
    std::os::unix::fs::symlink("..v2", plugins.join("..data_tmp")).unwrap();
    std::fs::rename(plugins.join("..data_tmp"), plugins.join("..data")).unwrap();
    wait_for_build(&host, B, Duration::from_secs(10));
}

#[test]
fn sighup_reads_a_grants_file_the_watcher_could_not_see_and_watches_it_from_then_on() {
    // The grants file's folder does not exist when the host starts, so
    // nothing can watch it: the storage the plugin asks for is not granted.
    let scratch = Scratch::new();
    scratch.install("test-kv", "kv.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "grants = \"policy/grants.toml\"\n",
    )
    .unwrap();
    let mut host = start(&scratch);
    let state = |host: &RunningHost| plugin_rows(host)[0]["state"].clone();
    assert_eq!(state(&host), "pending-approval");
    let policy = scratch.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(policy.join("grants.toml"), "[plugins.test-kv.storage]\n").unwrap();

    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    wait_until("the grant read", Duration::from_secs(10), || {
        (state(&host) == "active").then_some(())
    });
    host.wait_for_log("SIGHUP: reading", 10);

    // From then on the folder is watched: a revocation needs no signal.
    std::fs::write(policy.join("grants.toml"), "").unwrap();
    wait_until("the revocation taken", Duration::from_secs(10), || {
        (state(&host) == "pending-approval").then_some(())
    });
    host.terminate();
    assert!(host.wait_exit(30), "{}", host.logs());
}

#[test]
fn a_plugin_linked_into_the_folder_loads_and_switching_the_link_upgrades_it() {
    let scratch = setup(0, "");
    let releases = scratch.path().join("releases");
    std::fs::create_dir(&releases).unwrap();
    for (build, file) in [(A, "a.wasm"), (B, "b.wasm")] {
        std::fs::write(releases.join(file), test_version(build)).unwrap();
    }
    let link = scratch.plugins().join(FILE);
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(releases.join("a.wasm"), &link).unwrap();
    // A FIFO named like a plugin fails, saying what it is, and holds
    // nothing up (opening one waits for a writer).
    let fifo = scratch.plugins().join("pipe.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    let rows = plugin_rows(&host);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r["state"] == "failed")
        .filter_map(|r| r["error"].as_str())
        .collect();
    assert!(
        matches!(failed.as_slice(), [one] if one.contains("pipe.wasm") && one.contains("is not a regular file but a FIFO")),
        "{rows:?}"
    );
    // A deployment switches versions by replacing the link at once.
    let next = scratch.plugins().join(".next-link");
    std::os::unix::fs::symlink(releases.join("b.wasm"), &next).unwrap();
    std::fs::rename(&next, &link).unwrap();
    wait_for_build(&host, B, Duration::from_secs(10));
}

#[test]
fn a_sidecar_that_is_a_fifo_or_too_long_fails_its_plugin_and_holds_up_no_reload() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    // A plugin dropped in with a FIFO for its sidecar manifest (opening
    // one waits for a writer), and one whose sidecar is megabytes.
    let made = std::process::Command::new("mkfifo")
        .arg(scratch.plugins().join("piped.toml"))
        .status()
        .unwrap();
    assert!(made.success());
    scratch.write("long.toml", "#".repeat(10 << 20));
    scratch.install("test-kv", "piped.wasm");
    scratch.install("test-echo", "long.wasm");
    // The folder's reloads go on: an upgrade is taken.
    replace_atomically(&scratch, &test_version(B));
    wait_for_build(&host, B, Duration::from_secs(20));
    let failed = |file: &str| {
        plugin_rows(&host)
            .iter()
            .find(|r| r["file"].as_str().is_some_and(|f| f.ends_with(file)))
            .and_then(|r| r["error"].as_str().map(str::to_string))
    };
    wait_until("both failed", Duration::from_secs(20), || {
        Some((failed("piped.wasm")?, failed("long.wasm")?))
    });
    let (piped, long) = (failed("piped.wasm").unwrap(), failed("long.wasm").unwrap());
    assert!(
        piped.contains("piped.toml") && piped.contains("is not a regular file but a FIFO"),
        "{piped}"
    );
    assert!(
        long.contains("long.toml") && long.contains("is 10485760 bytes, over the 64 KiB"),
        "{long}"
    );
    // And after them, too.
    replace_atomically(&scratch, &test_version(A));
    wait_for_build(&host, A, Duration::from_secs(20));
}

/// A grants file or causeway.toml replaced by something that is not a
/// file (a FIFO: opening one waits for a writer, and held the reloader
/// until someone wrote to it) is refused, saying what it is, and holds up
/// no reload; a file put back is taken.
#[test]
fn a_grants_file_or_config_that_is_a_fifo_is_refused_and_holds_up_no_reload() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    let fifo_as = |name: &str| {
        let fifo = scratch.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::rename(&fifo, scratch.path().join(name)).unwrap();
    };
    fifo_as("grants.toml");
    host.wait_for_log(
        "grants.toml: cannot read: it is not a regular file but a FIFO",
        20,
    );
    fifo_as("causeway.toml");
    host.wait_for_log(
        "causeway.toml: cannot read: it is not a regular file but a FIFO",
        20,
    );
    replace_atomically(&scratch, &test_version(B));
    wait_for_build(&host, B, Duration::from_secs(20));
    // What was kept is not said to be reloaded.
    let logs = host.logs();
    assert!(
        !logs.contains("reloaded: grants.toml") && !logs.contains("reloaded: causeway.toml"),
        "{logs}"
    );
    // Files again: an edit of the config is taken (a call timeout shorter
    // than the plugin's spin).
    std::fs::remove_file(scratch.path().join("grants.toml")).unwrap();
    let next = scratch.path().join("causeway.toml.next");
    std::fs::write(
        &next,
        "[limits]\ncall-timeout = \"100ms\"\n[plugins.test-version.config]\nspin_ms = 2000\n",
    )
    .unwrap();
    std::fs::rename(&next, scratch.path().join("causeway.toml")).unwrap();
    wait_until("the edit taken", Duration::from_secs(20), || {
        call(&host).err().filter(|e| e.starts_with("504"))
    });
    // Said, this time (with the grants file's removal, if one reload took both).
    wait_until("the edit said", Duration::from_secs(10), || {
        host.logs()
            .lines()
            .any(|l| l.contains("reloaded: ") && l.contains("causeway.toml"))
            .then_some(())
    });
}

/// A deployment that replaces the whole plugins folder (a new one renamed
/// into place), or removes it and makes it again, is followed: the new
/// folder is watched, and a folder that is gone keeps its plugins loaded.
#[test]
fn a_plugins_folder_replaced_whole_or_made_again_is_watched_anew() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    let plugins = scratch.plugins();
    let next = scratch.path().join("plugins.next");
    std::fs::create_dir(&next).unwrap();
    std::fs::write(next.join(FILE), test_version(B)).unwrap();
    std::fs::rename(&plugins, scratch.path().join("plugins.old")).unwrap();
    std::fs::rename(&next, &plugins).unwrap();
    wait_for_build(&host, B, Duration::from_secs(10));
    // The new folder is the one watched.
    replace_atomically(&scratch, &test_version(A));
    wait_for_build(&host, A, Duration::from_secs(10));

    // Gone (moved away whole): what was loaded keeps serving, and the log
    // says why.
    std::fs::rename(&plugins, scratch.path().join("plugins.older")).unwrap();
    host.wait_for_log(
        "keeping the plugins loaded (a folder made again there is watched)",
        10,
    );
    assert_eq!(call(&host), Ok(A.to_string()));
    // A configuration edit meanwhile waits for the folder, and is not lost:
    // a call timeout shorter than the plugin's spin.
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[limits]\ncall-timeout = \"100ms\"\n[plugins.test-version.config]\nspin_ms = 2000\n",
    )
    .unwrap();
    host.wait_for_log("it applies once the plugins folder can be read", 10);
    // Made again: watched from then on, and read with the edit.
    std::fs::create_dir(&plugins).unwrap();
    replace_atomically(&scratch, &test_version(B));
    wait_until(
        "the plugin back, under the new timeout",
        Duration::from_secs(10),
        || call(&host).err().filter(|e| e.starts_with("504")),
    );
}

/// A plugins folder that is a symbolic link, switched to another release's
/// folder by renaming a new link over it, is followed.
#[test]
fn a_plugins_folder_linked_elsewhere_is_followed_when_the_link_is_switched() {
    let scratch = setup(0, "");
    let releases = scratch.path().join("releases");
    std::fs::create_dir(&releases).unwrap();
    let plugins = scratch.plugins();
    std::fs::rename(&plugins, releases.join("one")).unwrap();
    std::os::unix::fs::symlink(releases.join("one"), &plugins).unwrap();
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    std::fs::create_dir(releases.join("two")).unwrap();
    std::fs::write(releases.join("two").join(FILE), test_version(B)).unwrap();
    let next = scratch.path().join("plugins.next");
    std::os::unix::fs::symlink(releases.join("two"), &next).unwrap();
    std::fs::rename(&next, &plugins).unwrap();
    wait_for_build(&host, B, Duration::from_secs(10));
    // The folder watched is the one the link points to now.
    replace_atomically(&scratch, &test_version(A));
    wait_for_build(&host, A, Duration::from_secs(10));
}

/// A plugin configuration its schema refuses is said by the running host,
/// at its line in causeway.toml, when the host starts and when an edit
/// brings a new problem; one already said is not said again at every
/// reload.
#[test]
fn a_configuration_its_plugins_schema_refuses_is_logged_at_its_line() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let config = scratch.path().join("causeway.toml");
    std::fs::write(
        &config,
        "[plugins.map-fullname.config]\ntarget_stream = 5\n",
    )
    .unwrap();
    let host = start(&scratch);
    let wrong_type = "causeway.toml line 2: plugins.map-fullname.config.target_stream: expected string, found integer (per the config schema of map-fullname@0.1.0)";
    host.wait_for_log(wrong_type, 10);
    std::fs::write(
        &config,
        "[plugins.map-fullname.config]\ntarget_stream = 5\ncolour = \"red\"\n",
    )
    .unwrap();
    host.wait_for_log(
        "causeway.toml line 3: plugins.map-fullname.config.colour: not a setting of this plugin",
        10,
    );
    assert_eq!(
        host.logs().matches(wrong_type).count(),
        1,
        "{}",
        host.logs()
    );
    // A pipeline stage's own configuration, laid over the plugin's: at the
    // line of its stage.
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("mailer-sink", "mailer-sink.wasm");
    std::fs::write(
        &config,
        r#"[pipelines.p]
every = "1h"
source = { plugin = "crm-source", stream = "contacts" }
transforms = [{ plugin = "map-fullname", config = { target_stream = 6 } }]
sinks = [{ plugin = "mailer-sink" }]
"#,
    )
    .unwrap();
    host.wait_for_log(
        "causeway.toml line 4: pipelines.p.transforms[0].config.target_stream: expected string, found integer (per the config schema of map-fullname@0.1.0)",
        20,
    );
}

#[test]
fn removing_the_file_unloads_the_plugin() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    std::fs::remove_file(scratch.plugins().join(FILE)).unwrap();
    wait_until("the plugin gone", Duration::from_secs(10), || {
        call(&host).err().filter(|e| e.starts_with("404"))
    });
    // The unload is recorded (committed) just after the plugin is dropped
    // from the registry: wait for it, as for a swap's states above.
    wait_until("its state row removed", Duration::from_secs(10), || {
        plugin_rows(&host).is_empty().then_some(())
    });
}

#[test]
fn a_revoked_http_grant_denies_the_next_request() {
    let kept = FakeServer::start(|_| Answer::ok("{}"));
    let revoked = FakeServer::start(|_| Answer::ok("{}"));
    let port = |s: &FakeServer| s.addr.rsplit(':').next().unwrap().to_string();
    let rule = |port: &str| {
        format!(
            "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\nmethods = [\"GET\"]\n"
        )
    };
    let credential =
        "[plugins.test-fetch.credentials.token]\nsecret = \"env:TOKEN\"\nhosts = [\"127.0.0.1\"]\n";
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    scratch.grants(&format!(
        "{}{}{credential}",
        rule(&port(&kept)),
        rule(&port(&revoked))
    ));
    let host = RunningHost::start(scratch.causeway().env("TOKEN", "t").args([
        "run",
        "--listen",
        "127.0.0.1:0",
    ]));
    let fetch = |server: &FakeServer| {
        let stream = json!({ "method": "GET", "url": format!("http://{}/x", server.addr) });
        let body =
            json!({ "operation": "read", "input": { "stream": stream.to_string() } }).to_string();
        host.api("POST", "/api/plugins/test-fetch/invoke", Some(&body))
    };
    assert_eq!(fetch(&revoked).0, 200);

    scratch.grants(&format!("{}{credential}", rule(&port(&kept))));
    let (_, body) = wait_until("the revoked grant denying", Duration::from_secs(10), || {
        let (status, body) = fetch(&revoked);
        body.contains("denied").then_some((status, body))
    });
    assert!(body.contains("no grant allows it"), "{body}");
    // From then on, nothing reaches the revoked server.
    let reached = revoked.received().len();
    let (status, body) = fetch(&revoked);
    assert!(status != 200 && body.contains("denied"), "{status}: {body}");
    assert_eq!(
        revoked.received().len(),
        reached,
        "a denied request reached the server"
    );
    assert_eq!(fetch(&kept).0, 200, "the grant that stays still works");

    // No grants file grants nothing: deny by default, said.
    std::fs::remove_file(scratch.path().join("grants.toml")).unwrap();
    host.wait_for_log("grants.toml is gone: nothing is granted now", 10);
    wait_until("the kept grant gone too", Duration::from_secs(10), || {
        let (status, body) = fetch(&kept);
        (status != 200).then_some(body)
    });
}

#[test]
fn configuration_edits_apply_live_and_an_invalid_edit_keeps_the_last_good_one() {
    let scratch = setup(300, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    let config = scratch.path().join("causeway.toml");

    // Invalid: refused, logged with file and line, the old one kept.
    std::fs::write(&config, "[limits]\ncall-timeout = \"soon\"\n").unwrap();
    host.wait_for_log("keeping the last good configuration", 10);
    assert!(
        host.logs().contains("causeway.toml line 2"),
        "{}",
        host.logs()
    );
    assert_eq!(call(&host), Ok(A.to_string()));

    // Valid: a call timeout shorter than the plugin's spin applies at once.
    std::fs::write(
        &config,
        "[limits]\ncall-timeout = \"100ms\"\n[plugins.test-version.config]\nspin_ms = 2000\n",
    )
    .unwrap();
    wait_until("the new call timeout", Duration::from_secs(10), || {
        call(&host).err().filter(|e| e.starts_with("504"))
    });
}

/// CPython's component (18 MB) compiles for seconds, on its own thread:
/// the folder's other changes do not wait for it.
#[test]
fn a_slow_compile_holds_back_no_other_change_and_a_sidecar_edit_is_taken_live() {
    let scratch = setup(0, "");
    let host = start(&scratch);
    assert_eq!(call(&host), Ok(A.to_string()));
    let guests = support::guest_plugins();
    let python = scratch.plugins().join("map-fullname-py.wasm");
    std::fs::copy(
        guests.join("map-fullname-py.toml"),
        scratch.plugins().join("map-fullname-py.toml"),
    )
    .unwrap();
    let partial = scratch.plugins().join(".map-fullname-py.partial");
    std::fs::copy(guests.join("map-fullname-py.wasm"), &partial).unwrap();
    std::fs::rename(&partial, &python).unwrap();
    // While it compiles, another plugin's upgrade goes live...
    replace_atomically(&scratch, &test_version(B));
    wait_for_build(&host, B, Duration::from_secs(30));
    // ...while the slow one is not live yet (a reload waiting for its
    // compile would have taken it first, and the upgrade after).
    let invoke_python = || {
        let body = json!({
            "operation": "transform",
            "input": [{ "stream": "contacts", "key": "c1", "data": {
                "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"
            }}],
        })
        .to_string();
        host.try_api("POST", "/api/plugins/map-fullname-py/invoke", Some(&body))
            .unwrap_or_else(|e| (0, e.to_string()))
    };
    let (status, answer) = invoke_python();
    assert_eq!(status, 404, "live already: {answer}");
    // Its row says what it is waiting for.
    wait_until(
        "map-fullname-py shown compiling",
        Duration::from_secs(10),
        || {
            plugin_rows(&host)
                .into_iter()
                .find(|row| row["name"] == "map-fullname-py")
                .filter(|row| row["state"] == "compiling" && row["version"] == "0.1.0")
        },
    );
    // Then its compile finishes and it is taken.
    wait_until(
        "map-fullname-py answering",
        Duration::from_secs(180),
        || {
            let (status, answer) = invoke_python();
            (status == 200).then_some(answer)
        },
    );
    let (_, answer) = invoke_python();
    assert!(answer.contains("Ada Lovelace"), "{answer}");
    wait_until(
        "map-fullname-py shown active",
        Duration::from_secs(10),
        || {
            let rows = plugin_rows(&host);
            let python: Vec<_> = rows
                .iter()
                .filter(|row| row["name"] == "map-fullname-py")
                .collect();
            (python.len() == 1 && python[0]["state"] == "active").then_some(())
        },
    );

    // Its sidecar manifest edited, the same component is taken again with it.
    let sidecar = scratch.plugins().join("map-fullname-py.toml");
    let manifest = std::fs::read_to_string(&sidecar).unwrap();
    assert!(manifest.contains("version = \"0.1.0\""), "{manifest}");
    std::fs::write(
        &sidecar,
        manifest.replace("version = \"0.1.0\"", "version = \"0.1.1\""),
    )
    .unwrap();
    wait_until("map-fullname-py at 0.1.1", Duration::from_secs(60), || {
        plugin_rows(&host)
            .iter()
            .any(|row| row["name"] == "map-fullname-py" && row["version"] == "0.1.1")
            .then_some(())
    });
}

#[test]
fn a_rotated_secret_is_used_from_the_next_request_and_a_bad_secrets_file_is_refused() {
    let server = FakeServer::start(|_| Answer::ok("{}"));
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let scratch = Scratch::new();
    scratch.install("test-fetch", "fetch.wasm");
    scratch.grants(&format!(
        "[[plugins.test-fetch.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\nmethods = [\"GET\"]\n\
         [plugins.test-fetch.credentials.token]\nsecret = \"file:crm\"\nhosts = [\"127.0.0.1\"]\n"
    ));
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "secrets-file = \"secrets.toml\"\nreload-settle = \"50ms\"\n",
    )
    .unwrap();
    let secrets = scratch.path().join("secrets.toml");
    let write_secrets = |text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let partial = scratch.path().join(".secrets.partial");
        std::fs::write(&partial, text).unwrap();
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&partial, &secrets).unwrap();
    };
    write_secrets("crm = \"first-s3cret\"\n", 0o600);
    let host = start(&scratch);
    // The credential the server got on a fresh request.
    let sent = || {
        let stream = json!({
            "method": "GET",
            "url": format!("http://{}/x", server.addr),
            "credential": "token",
        });
        let body =
            json!({ "operation": "read", "input": { "stream": stream.to_string() } }).to_string();
        let (status, answer) = host.api("POST", "/api/plugins/test-fetch/invoke", Some(&body));
        assert_eq!(status, 200, "{answer}");
        server.received().last().unwrap().header("authorization")
    };
    assert_eq!(sent(), "Bearer first-s3cret");

    write_secrets("crm = \"second-s3cret\"\n", 0o600);
    wait_until("the rotated secret in use", Duration::from_secs(10), || {
        (sent() == "Bearer second-s3cret").then_some(())
    });
    host.wait_for_log("secrets file reloaded: changed crm", 10);

    // Readable by others: refused, and the last good value stays in use.
    write_secrets("crm = \"third-s3cret\"\n", 0o644);
    host.wait_for_log("keeping the last good secrets", 10);
    assert_eq!(sent(), "Bearer second-s3cret");
    assert!(host.logs().contains("chmod 600"), "{}", host.logs());

    // Audited once committed: by key name, never a value.
    let (out, rows) = wait_until("the reload audited", Duration::from_secs(10), || {
        let out = support::run(
            scratch
                .causeway()
                .args(["audit", "--plugin", "causeway", "--json"]),
        );
        let rows: Vec<Value> = serde_json::from_str(&out.stdout).ok()?;
        rows.iter()
            .any(|r| r["capability"] == "secrets")
            .then_some((out, rows))
    });
    let reloads: Vec<&Value> = rows
        .iter()
        .filter(|r| r["capability"] == "secrets")
        .collect();
    assert_eq!(reloads.len(), 1, "{rows:#?}");
    assert_eq!(reloads[0]["action"], "reload");
    assert_eq!(reloads[0]["detail"], "changed crm");
    for value in ["first-s3cret", "second-s3cret", "third-s3cret"] {
        assert!(!out.stdout.contains(value), "a secret in the audit log");
        assert!(!host.logs().contains(value), "a secret in the log");
    }
}
