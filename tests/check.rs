//! `causeway check`: every file validated, problems named by file, line and key.

use crate::support;

use support::{Scratch, run, run_json};

fn check(scratch: &Scratch) -> serde_json::Value {
    let out = run(scratch.causeway().args(["check", "--json"]));
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr))
}

/// The messages of the report's errors.
fn error_messages(report: &serde_json::Value) -> Vec<&str> {
    messages(report, "error")
}

/// The messages of the report's findings of `severity`.
fn messages<'a>(report: &'a serde_json::Value, severity: &str) -> Vec<&'a str> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["message"].as_str().unwrap())
        .collect()
}

fn first_error(report: &serde_json::Value) -> String {
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["severity"] == "error")
        .unwrap_or_else(|| panic!("no error in {report:#}"));
    format!(
        "{} line {}: {}",
        finding["file"].as_str().unwrap(),
        finding["line"],
        finding["message"].as_str().unwrap()
    )
}

#[test]
fn an_unknown_key_in_causeway_toml_is_named_with_file_and_line() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "listen = \"127.0.0.1:0\"\n\nlisen = \"x\"\n",
    )
    .unwrap();
    let report = check(&scratch);
    assert_eq!(report["ok"], false);
    let error = first_error(&report);
    assert!(
        error.starts_with("causeway.toml line 3: unknown field `lisen`"),
        "{error}"
    );
    let out = run(scratch.causeway().arg("check"));
    assert!(!out.success, "check must fail");
    assert!(
        out.stdout
            .contains("error: causeway.toml line 3: unknown field `lisen`"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_bad_type_in_grants_toml_is_named_with_file_line_and_key() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path().join("grants.toml"),
        "# security team\n[plugins.crm-source]\nstorage = { quota-bytes = \"ten\" }\n",
    )
    .unwrap();
    let error = first_error(&check(&scratch));
    assert!(error.starts_with("./grants.toml line 3:"), "{error}");
    assert!(
        error.contains("quota-bytes") || error.contains("invalid type"),
        "{error}"
    );
}

#[test]
fn a_grant_for_a_plugin_that_does_not_exist_is_named_with_file_line_and_key() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    std::fs::write(
        scratch.path().join("grants.toml"),
        "# security team\n\n[plugins.crm-sorce]\nstorage = {}\n\n[plugins.map-fulname]\nstorage = {}\n",
    )
    .unwrap();
    let report = check(&scratch);
    let error = first_error(&report);
    assert!(
        error.starts_with(
            "./grants.toml line 3: plugins.crm-sorce: grants a plugin that is not installed"
        ),
        "{error}"
    );
    // A name close to an installed plugin's says which.
    let messages = error_messages(&report);
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("plugins.map-fulname: grants a plugin")
                && m.ends_with("(a typo, or a plugin removed) (did you mean \"map-fullname\"?)")),
        "{messages:#?}"
    );
}

#[test]
fn a_credential_whose_secret_is_not_set_is_named_at_its_own_table() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    std::fs::write(
        scratch.path().join("grants.toml"),
        "[[plugins.crm-source.http]]\nhost = \"crm.example.com\"\nmethods = [\"GET\"]\n\n\
         [plugins.crm-source.credentials.crm-token]\nsecret = \"env:CAUSEWAY_TEST_NEVER_SET\"\n\
         hosts = [\"crm.example.com\"]\n",
    )
    .unwrap();
    let error = first_error(&check(&scratch));
    assert!(
        error.starts_with(
            "./grants.toml line 5: plugins.crm-source.credentials.crm-token: secret env:CAUSEWAY_TEST_NEVER_SET"
        ),
        "{error}"
    );
}

#[test]
fn a_clean_setup_checks_ok_and_lists_the_plugins() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let report = run_json(scratch.causeway().args(["check", "--json"]));
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["plugins"][0]["state"], "active");
}

#[cfg(unix)]
#[test]
fn a_data_folder_open_to_other_accounts_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let report = check(&scratch);
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");
    let data = scratch.path().join("causeway-data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = check(&scratch);
    assert_eq!(report["ok"], true, "a warning: {report:#}");
    let finding = &report["findings"][0];
    assert_eq!(finding["severity"], "warning", "{report:#}");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message.contains("open to other accounts (mode 755)") && message.contains("chmod 700"),
        "{message}"
    );
}

#[test]
fn an_operator_token_file_the_host_could_not_read_is_an_error() {
    let scratch = Scratch::new();
    let data = scratch.path().join("causeway-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("operator.token"), "hunter2\n").unwrap();
    let report = check(&scratch);
    assert_eq!(report["ok"], false, "{report:#}");
    let error = first_error(&report);
    assert!(
        error.contains("operator.token") && error.contains("does not hold 64 hex digits"),
        "{error}"
    );
    assert!(
        !error.contains("hunter2"),
        "the file's content is not shown: {error}"
    );
}

#[test]
fn a_credential_whose_secret_cannot_be_resolved_is_an_error() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    std::fs::write(
        scratch.path().join("grants.toml"),
        "[plugins.crm-source.credentials.crm-token]\nsecret = \"env:CAUSEWAY_TEST_UNSET_SECRET\"\nhosts = [\"crm.example\"]\n",
    )
    .unwrap();
    let error = first_error(&check(&scratch));
    assert!(
        error.contains("plugins.crm-source.credentials.crm-token: secret env:CAUSEWAY_TEST_UNSET_SECRET: the environment variable"),
        "{error}"
    );
}

#[test]
fn a_plugin_requesting_http_with_no_grant_is_pending_approval_everywhere_and_cannot_be_invoked() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    let report = check(&scratch);
    assert_eq!(
        report["plugins"][0]["state"], "pending-approval",
        "{report:#}"
    );
    let warning = &report["findings"][0];
    assert_eq!(warning["severity"], "warning");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("credential crm-token"),
        "{warning:#}"
    );

    let rows = run_json(scratch.causeway().args(["plugins", "--json"]));
    assert_eq!(rows[0]["state"], "pending-approval");
    assert!(
        rows[0]["not_granted"][0]
            .as_str()
            .unwrap()
            .starts_with("http"),
        "{rows:#}"
    );
    // The listing of grants says it; the log does not say it again.
    let grants = run(scratch.causeway().arg("grants"));
    assert!(
        grants.stdout.contains("! not granted: http"),
        "{}",
        grants.stdout
    );
    assert!(grants.stderr.is_empty(), "{}", grants.stderr);

    let out = run(scratch
        .causeway()
        .args(["invoke", "crm-source", "discover"]));
    assert!(!out.success);
    assert!(
        out.stderr.contains("is pending approval and does not run"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_plugin_config_is_checked_against_its_schema_naming_the_key() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[plugins.map-fullname.config]\n# the stream the mapped records go to\ntarget_stream = 5\n",
    )
    .unwrap();
    let error = first_error(&check(&scratch));
    assert!(
        error.contains("plugins.map-fullname.config.target_stream: expected string, found integer"),
        "{error}"
    );
    // At the key's own line.
    assert!(error.starts_with("causeway.toml line 3: "), "{error}");
}

/// A config field the schema marks secret, at the top, nested or as a
/// list's items, is refused in clear by `check`, and whatever was written
/// there never reaches the plugin.
#[test]
fn a_secret_config_field_is_refused_in_clear_and_never_reaches_the_plugin() {
    let scratch = Scratch::new();
    scratch.install("test-no-manifest", "echo.wasm");
    scratch.write(
        "echo.toml",
        r#"
contract = "0.1.0"
name = "echo"
version = "1.0.0"
[config-schema.properties.token]
type = "string"
secret = true
[config-schema.properties.auth.properties.password]
type = "string"
secret = true
[config-schema.properties.keys]
type = "array"
items = { type = "string", secret = true }
"#,
    );
    std::fs::write(
        scratch.path().join("causeway.toml"),
        r#"[plugins.echo.config]
token = "hunter2"
auth = { user = "me", password = "pa55word" }
keys = ["k3y-in-clear", "env:KEY"]
"#,
    )
    .unwrap();
    let report = check(&scratch);
    let errors = error_messages(&report);
    for key in ["token", "auth.password", "keys[0]"] {
        let said = format!("plugins.echo.config.{key}: is a secret and must be a reference");
        assert!(
            errors.iter().any(|e| e.contains(&said)),
            "{said} not in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for value in ["hunter2", "pa55word", "k3y-in-clear"] {
        assert!(
            !report.to_string().contains(value),
            "the value leaked into the report"
        );
    }
    // Run anyway, the plugin reads its configuration without them.
    let input = scratch.path().join("config.json");
    std::fs::write(
        &input,
        r#"[{"stream": "s", "key": "config", "op": "upsert", "data": "{}"}]"#,
    )
    .unwrap();
    let out = run(scratch
        .causeway()
        .args(["invoke", "echo", "transform", "--input"])
        .arg(&input));
    assert!(out.success, "{}", out.stderr);
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        answer[0]["data"],
        serde_json::json!({"auth": {"user": "me"}})
    );
}

#[test]
fn a_pipeline_stage_that_is_missing_or_of_the_wrong_kind_is_named() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        r#"
[pipelines.p]
every = "1m"
source = { plugin = "map-fullname", stream = "contacts" }
transforms = [{ plugin = "map-fullname", config = { target_stream = 5 } }]
sinks = [{ plugin = "no-such-sink" }, { plugin = "map-fulname" }]

[pipelines.q]
every = "1m"
webhook = { path = "/h", scheme = "github", secret = "env:PATH" }
source = { plugin = "crm-sorce", stream = "contacts" }
sinks = [{ plugin = "map-fullname" }]
"#,
    )
    .unwrap();
    let report = check(&scratch);
    let messages = error_messages(&report);
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    // Once, though a webhook pipeline's source is two stages (it reads
    // and it handles deliveries).
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.contains("pipelines.q.source: plugin \"crm-sorce\" is not installed"))
            .count(),
        1,
        "{messages:#?}"
    );
    assert!(
        has("pipelines.p.source: plugin map-fullname@0.1.0 does not implement source"),
        "{messages:#?}"
    );
    assert!(
        has("pipelines.p.sinks[0]: plugin \"no-such-sink\" is not installed"),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m
            .starts_with("pipelines.p.sinks[1]: plugin \"map-fulname\" is not installed in")
            && m.ends_with("(did you mean \"map-fullname\"?)")),
        "{messages:#?}"
    );
    assert!(
        has("pipelines.p.transforms[0].config.target_stream: expected string"),
        "{messages:#?}"
    );
    // Each at the line of its stage in the pipeline's table.
    assert_eq!(
        first_error(&report),
        "causeway.toml line 4: pipelines.p.source: plugin map-fullname@0.1.0 does not implement source (it implements: transform)"
    );
    let lines: Vec<(u64, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let message = f["message"].as_str().unwrap();
            let at = message.split(':').next().unwrap();
            (f["line"].as_u64().unwrap_or(0), at)
        })
        .collect();
    for stage in [
        (4, "pipelines.p.source"),
        (5, "pipelines.p.transforms[0].config.target_stream"),
        (6, "pipelines.p.sinks[0]"),
    ] {
        assert!(lines.contains(&stage), "{stage:?} in {lines:?}");
    }
}

/// A stage names only the keys it changes: the plugin's configuration
/// with them laid over is what the schema checks (and the stage gets).
#[test]
fn a_stages_config_is_checked_laid_over_its_plugins() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("mailer-sink", "mailer-sink.wasm");
    let write = |list_id: &str| {
        std::fs::write(
            scratch.path().join("causeway.toml"),
            format!(
                r#"
[plugins.mailer-sink.config]
base_url = "https://mailer.example"
list_id = "subscribers"

[pipelines.p]
every = "1m"
source = {{ plugin = "crm-source", stream = "contacts" }}
sinks = [{{ plugin = "mailer-sink", config = {{ list_id = {list_id} }} }}]
"#
            ),
        )
        .unwrap();
    };
    let about_the_sink = |report: &serde_json::Value| -> Vec<String> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["message"].as_str().unwrap().contains("sinks[0]"))
            .map(|f| format!("line {}: {}", f["line"], f["message"]))
            .collect()
    };
    write("\"customers\"");
    let findings = about_the_sink(&check(&scratch));
    assert!(findings.is_empty(), "{findings:#?}");
    write("5");
    let findings = about_the_sink(&check(&scratch));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(
        findings[0].starts_with("line 9: ")
            && findings[0].contains("pipelines.p.sinks[0].config.list_id: expected string"),
        "{findings:#?}"
    );
}

#[test]
fn a_webhook_secret_the_host_could_not_use_is_an_error() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("mailer-sink", "mailer-sink.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        r#"
[pipelines.unset]
webhook = { path = "/hooks/a", scheme = "standard-webhooks", secret = "env:CAUSEWAY_TEST_UNSET_SECRET" }
source = { plugin = "crm-source", stream = "contacts" }
sinks = [{ plugin = "mailer-sink" }]
[pipelines.garbled]
webhook = { path = "/hooks/b", scheme = "standard-webhooks", secret = "env:CAUSEWAY_TEST_GARBLED_SECRET" }
source = { plugin = "crm-source", stream = "contacts" }
sinks = [{ plugin = "mailer-sink" }]
"#,
    )
    .unwrap();
    let out = run(scratch
        .causeway()
        .env("CAUSEWAY_TEST_GARBLED_SECRET", "whsec_not base64!")
        .args(["check", "--json"]));
    assert!(!out.success, "{}", out.stdout);
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    let messages = error_messages(&report);
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    assert!(
        has(
            "pipelines.unset.webhook: secret env:CAUSEWAY_TEST_UNSET_SECRET: the environment variable"
        ),
        "{messages:#?}"
    );
    assert!(
        has(
            "pipelines.garbled.webhook: secret env:CAUSEWAY_TEST_GARBLED_SECRET: the whsec_ secret is not base64"
        ),
        "{messages:#?}"
    );
    // Nothing of the secret: base64's own error names the bad symbol and
    // its offset ("Invalid symbol 32, offset 3.").
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("symbol") || m.contains("offset")),
        "{messages:#?}"
    );
}

#[test]
fn a_broken_plugin_file_is_reported_once_naming_the_file_once() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let file = scratch.write("broken.wasm", "not wasm");
    let out = run(scratch.causeway().arg("check"));
    assert!(!out.success, "check must fail");
    let problem = "is not a WebAssembly file";
    assert_eq!(
        out.stdout.matches(problem).count(),
        1,
        "stdout:\n{}",
        out.stdout
    );
    let line = format!("error: {}: {problem}\n", file.display());
    assert!(out.stdout.contains(&line), "{line} in:\n{}", out.stdout);
    // The listing says it; the log does not say it again.
    assert!(!out.stderr.contains(problem), "stderr:\n{}", out.stderr);
    assert!(out.stdout.contains("map-fullname"), "{}", out.stdout);
}

#[test]
fn a_limit_no_plugin_could_run_under_is_refused_naming_file_line_and_key() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    std::fs::write(
        scratch.path().join("grants.toml"),
        "# security team\n[plugins.map-fullname]\nlimits = { memory-mb = 0 }\n",
    )
    .unwrap();
    let error = first_error(&check(&scratch));
    assert!(
        error.starts_with("./grants.toml line 3: memory-mb = 0: must be from 1 to 4096"),
        "{error}"
    );
    // Said once, even where the error passes through several layers.
    let out = run(scratch.causeway().arg("grants"));
    assert!(!out.success);
    assert_eq!(
        out.stderr.matches("memory-mb = 0").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn a_plugin_file_over_the_size_limit_is_refused_unread_naming_its_size_and_the_setting() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    // Sparse: 65 MiB long, nothing on disk. Read, it would be zeros: not wasm.
    let huge = scratch.plugins().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let refused = "is 65.0 MiB, over the 64 MiB a plugin file may be: not read (raise `max-plugin-mb` under `[engine]` in causeway.toml to load it)";
    let out = run(scratch.causeway().arg("check"));
    assert!(!out.success, "check must fail");
    let line = format!("error: {}: {refused}\n", huge.display());
    assert!(out.stdout.contains(&line), "{line} in:\n{}", out.stdout);
    assert!(out.stdout.contains("map-fullname"), "{}", out.stdout);
    let out = run(scratch.causeway().args(["inspect"]).arg(&huge));
    assert!(!out.success);
    assert!(out.stderr.contains(refused), "{}", out.stderr);

    // Raised, the limit lets the file be read (and found not to be wasm);
    // lowered below a real plugin's size, it refuses that one.
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[engine]\nmax-plugin-mb = 66\n",
    )
    .unwrap();
    let out = run(scratch.causeway().args(["inspect"]).arg(&huge));
    assert!(
        out.stderr.contains("is not a WebAssembly file"),
        "{}",
        out.stderr
    );
    let out = run(scratch.causeway().arg("check"));
    assert!(
        out.stdout.contains("huge.wasm: is not a WebAssembly file"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("over the"), "{}", out.stdout);
}

/// A plugin that would have the compiler take more memory than the host
/// allows (many functions, or one huge function: a small file can ask for
/// gigabytes) is refused before it is compiled, naming the setting; the
/// others load. Raised, the settings let the same files be compiled.
#[test]
fn a_plugin_over_the_compile_limits_is_refused_before_it_is_compiled() {
    let scratch = Scratch::new();
    scratch.install("map-fullname", "map-fullname.wasm");
    let sidecar =
        |name: &str| format!("contract = \"0.1.0\"\nname = \"{name}\"\nversion = \"1.0.0\"\n");
    for (name, file) in [
        // The defaults: 50,000 functions, 1 MiB a function.
        ("many", support::component_of_functions(50_001, 2)),
        ("huge", support::component_of_functions(1, (1 << 20) + 1)),
        // Lowered below.
        ("few", support::component_of_functions(101, 2)),
        ("big", support::component_of_functions(1, 2049)),
    ] {
        scratch.write(&format!("{name}.wasm"), file);
        scratch.write(&format!("{name}.toml"), sidecar(name));
    }
    let config = scratch.path().join("causeway.toml");
    std::fs::write(
        &config,
        "[engine]\nmax-functions = 100\nmax-function-kb = 2\n",
    )
    .unwrap();
    let out = run(scratch.causeway().arg("check"));
    assert!(!out.success, "check must fail");
    for (name, says) in [
        (
            "many",
            "defines 50001 functions, over the 100 a plugin may have: not compiled",
        ),
        (
            "huge",
            "has a function of 1025 KiB (function 0 of its core module 0), over the 2 KiB a function may be: not compiled",
        ),
        (
            "few",
            "defines 101 functions, over the 100 a plugin may have: not compiled (compiling takes memory by the function; raise `max-functions` under `[engine]` in causeway.toml to load it)",
        ),
        (
            "big",
            "has a function of 3 KiB (function 0 of its core module 0), over the 2 KiB a function may be: not compiled (compiling takes memory by the function's size; raise `max-function-kb` under `[engine]` in causeway.toml to load it)",
        ),
    ] {
        let line = format!(
            "error: {}: {says}",
            scratch.plugins().join(format!("{name}.wasm")).display()
        );
        assert!(out.stdout.contains(&line), "{line} in:\n{}", out.stdout);
    }
    assert!(out.stdout.contains("map-fullname"), "{}", out.stdout);
    let inspected = run(scratch
        .causeway()
        .args(["inspect"])
        .arg(scratch.plugins().join("few.wasm")));
    assert!(
        inspected
            .stderr
            .contains("defines 101 functions, over the 100"),
        "{}",
        inspected.stderr
    );

    // The defaults take the lowered ones: compiled, they are found to
    // export no world. The others are still refused.
    std::fs::remove_file(&config).unwrap();
    let out = run(scratch.causeway().arg("check"));
    for name in ["few", "big"] {
        let line = format!(
            "error: {}: exports no Causeway world",
            scratch.plugins().join(format!("{name}.wasm")).display()
        );
        assert!(out.stdout.contains(&line), "{line} in:\n{}", out.stdout);
    }
    assert!(
        out.stdout
            .contains("defines 50001 functions, over the 50000"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("has a function of 1025 KiB"),
        "{}",
        out.stdout
    );
}

/// A file named on the command line is said to be missing only when it is:
/// one that is there but no plugin file is named for what it is.
#[test]
fn a_plugin_named_by_a_path_that_is_no_regular_file_is_named_for_what_it_is() {
    let scratch = Scratch::new();
    let folder = scratch.path().join("folder.wasm");
    std::fs::create_dir(&folder).unwrap();
    for (path, says) in [
        (folder.as_path(), "is not a regular file but a folder"),
        (
            std::path::Path::new("/dev/null"),
            "is not a regular file but a device",
        ),
        (
            &scratch.path().join("missing.wasm"),
            "missing.wasm: no such plugin file",
        ),
    ] {
        let path = path.as_os_str();
        let commands: [&[&std::ffi::OsStr]; 2] = [
            &["inspect".as_ref(), path],
            &[
                "invoke".as_ref(),
                path,
                "transform".as_ref(),
                "--input".as_ref(),
                "/dev/null".as_ref(),
            ],
        ];
        for command in commands {
            let out = run(scratch.causeway().args(command));
            assert!(!out.success);
            assert!(out.stderr.contains(says), "{command:?}: {}", out.stderr);
        }
    }
}

/// A configuration, grants, secrets or CA file that is not a regular file
/// is an error naming what it is: a FIFO (opening one waits for a writer)
/// hung `check` and the host before, and a folder named causeway.toml was
/// passed over for the embedded defaults.
#[test]
fn a_file_the_host_reads_that_is_no_regular_file_is_named_for_what_it_is() {
    let scratch = Scratch::new();
    let fifo = |name: &str| {
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(scratch.path().join(name))
            .status()
            .unwrap();
        assert!(made.success());
    };
    let config = scratch.path().join("causeway.toml");
    std::fs::create_dir(&config).unwrap();
    for (setup, says) in [
        (
            None,
            "causeway.toml: cannot read: it is not a regular file but a folder",
        ),
        (
            Some(("causeway.toml", "")),
            "causeway.toml: cannot read: it is not a regular file but a FIFO",
        ),
        (
            Some(("grants.toml", "")),
            "grants.toml: cannot read: it is not a regular file but a FIFO",
        ),
        (
            Some(("secrets.toml", "secrets-file = \"secrets.toml\"\n")),
            "secrets.toml: cannot read: it is not a regular file but a FIFO",
        ),
        (
            Some(("ca.pem", "ca-file = \"ca.pem\"\n")),
            "ca.pem: cannot read: it is not a regular file but a FIFO (ca-file in",
        ),
    ] {
        if let Some((name, text)) = setup {
            let _ = std::fs::remove_dir(&config);
            let _ = std::fs::remove_file(&config);
            if name != "causeway.toml" {
                std::fs::write(&config, text).unwrap();
            }
            fifo(name);
        }
        // Bounded: one that waited on the FIFO would hang the test.
        let out = support::run_within(scratch.causeway().arg("check"), 30);
        assert!(!out.success);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains(says), "{says}: {said}");
        if let Some((name, _)) = setup
            && name != "causeway.toml"
        {
            std::fs::remove_file(scratch.path().join(name)).unwrap();
        }
    }
}

/// What the network would do to a webhook is said: a token or a Basic
/// login (the secret itself) taken in plain HTTP on an address others
/// reach, unless TLS is in front (`[tls]`) or the host listens on loopback
/// (behind a proxy); and an `allow-from` on a loopback listener, where
/// every delivery comes from the proxy's address.
#[test]
fn a_webhook_the_network_would_defeat_is_warned_of() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("mailer-sink", "mailer-sink.wasm");
    let tls = support::repo_root().join("tests/fixtures/tls");
    let warned = |listen: &str, scheme: &str, tls_table: &str| {
        std::fs::write(
            scratch.path().join("causeway.toml"),
            format!(
                "listen = \"{listen}\"\n\n[pipelines.p]\nwebhook = {{ path = \"/h\", secret = \"env:PATH\", {scheme} }}\n\
                 source = {{ plugin = \"crm-source\", stream = \"contacts\" }}\nsinks = [{{ plugin = \"mailer-sink\" }}]\n{tls_table}"
            ),
        )
        .unwrap();
        messages(&check(&scratch), "warning")
            .into_iter()
            .find(|m| m.contains("in plain HTTP"))
            .map(str::to_string)
    };
    // allow-from on a loopback listener: every delivery would come from
    // the proxy in front.
    let proxied = |networks: &str| {
        std::fs::write(
            scratch.path().join("causeway.toml"),
            format!(
                "[pipelines.p]\nwebhook = {{ path = \"/h\", secret = \"env:PATH\", scheme = \"github\", allow-from = [{networks}] }}\n\
                 source = {{ plugin = \"crm-source\", stream = \"contacts\" }}\nsinks = [{{ plugin = \"mailer-sink\" }}]\n"
            ),
        )
        .unwrap();
        messages(&check(&scratch), "warning")
            .into_iter()
            .any(|m| m.contains("allow-from names no loopback address"))
    };
    assert!(proxied("\"192.30.252.0/22\""));
    assert!(!proxied("\"192.30.252.0/22\", \"127.0.0.1\""));
    let token = "scheme = \"token\", query = \"key\"";
    let said = warned("0.0.0.0:8700", token, "").expect("warned");
    assert!(
        said.starts_with("pipelines.p.webhook: scheme \"token\" has senders send the secret itself, and listen = \"0.0.0.0:8700\" takes it in plain HTTP"),
        "{said}"
    );
    assert!(warned("0.0.0.0:8700", "scheme = \"basic\"", "").is_some());
    // Mailgun signs a nonce, not the event: it could be changed on the way.
    let said = warned("0.0.0.0:8700", "scheme = \"mailgun\"", "").expect("warned");
    assert!(
        said.starts_with(
            "pipelines.p.webhook: scheme \"mailgun\" signs who sent a delivery, not what it says"
        ),
        "{said}"
    );
    // Signed deliveries carry no secret; loopback is a proxy's to face; TLS.
    assert_eq!(warned("0.0.0.0:8700", "scheme = \"github\"", ""), None);
    assert_eq!(warned("127.0.0.1:8700", token, ""), None);
    let with_tls = format!(
        "\n[tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"{}\"\nkey = \"{}\"\n",
        tls.join("server.pem").display(),
        tls.join("server.key").display()
    );
    assert_eq!(warned("0.0.0.0:8700", token, &with_tls), None);
}

/// A certificate that has expired (or will within two weeks) is said
/// before a webhook sender refuses it.
#[test]
fn a_tls_certificate_that_has_expired_is_warned_of() {
    let scratch = Scratch::new();
    let tls = support::repo_root().join("tests/fixtures/tls");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
            tls.join("expired.pem").display(),
            tls.join("expired.key").display()
        ),
    )
    .unwrap();
    let report = check(&scratch);
    let warned = messages(&report, "warning");
    assert!(
        warned.iter().any(
            |m| m.contains("expired.pem, valid until 2021-01-01T00:00:00Z")
                && m.contains("has expired: webhook senders refuse it")
        ),
        "{warned:#?}"
    );
}

/// A webhook token or login is guessed online, a request a try: one short
/// enough to guess is said, by its length, never its value.
#[test]
fn a_webhook_token_short_enough_to_guess_is_warned_of() {
    let scratch = Scratch::new();
    scratch.install("crm-source", "crm-source.wasm");
    scratch.install("mailer-sink", "mailer-sink.wasm");
    std::fs::write(
        scratch.path().join("causeway.toml"),
        "[pipelines.p]\nwebhook = { path = \"/h\", scheme = \"token\", header = \"X-Token\", secret = \"env:HOOK_TOKEN\" }\n\
         source = { plugin = \"crm-source\", stream = \"contacts\" }\nsinks = [{ plugin = \"mailer-sink\" }]\n",
    )
    .unwrap();
    let warned = |token: &str| {
        let out = run(scratch
            .causeway()
            .env("HOOK_TOKEN", token)
            .args(["check", "--json"]));
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert!(
            !out.stdout.contains(token),
            "the token was shown: {}",
            out.stdout
        );
        messages(&report, "warning")
            .into_iter()
            .find(|m| m.contains("anyone who can reach the path may guess it"))
            .map(str::to_string)
    };
    let said = warned("hunter2").expect("warned");
    assert!(
        said.starts_with("pipelines.p.webhook: secret env:HOOK_TOKEN is 7 characters"),
        "{said}"
    );
    assert_eq!(warned("0123456789abcdef0123456789abcdef"), None);
}
