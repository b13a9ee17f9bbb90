//! Shared helpers for the black-box tests: the real `causeway` binary, the
//! real plugins built by host/build.rs, and a scratch folder per test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The folder the plugins workspace was built into.
pub const BUILT_PLUGINS: &str = env!("CAUSEWAY_BUILT_PLUGINS");

/// The built component of the plugin crate `crate_name` (e.g. `map-fullname`).
pub fn built(crate_name: &str) -> PathBuf {
    let path = Path::new(BUILT_PLUGINS).join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "plugin {crate_name} was not built: {} is missing",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch folder with a plugins folder inside.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// A new, empty scratch folder with an empty `plugins/`.
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir(dir.path().join("plugins")).expect("create plugins/");
        Scratch { dir }
    }

    /// The scratch folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its plugins folder.
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Copies the built plugin `crate_name` into the plugins folder as `file`.
    pub fn install(&self, crate_name: &str, file: &str) -> PathBuf {
        let to = self.plugins().join(file);
        std::fs::copy(built(crate_name), &to).expect("copy plugin");
        to
    }

    /// Writes `contents` to `file` inside the plugins folder.
    pub fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let to = self.plugins().join(file);
        std::fs::write(&to, contents).expect("write file");
        to
    }

    /// `causeway` with this scratch's plugins folder, run in the scratch folder.
    pub fn causeway(&self) -> Command {
        let mut command = causeway();
        command
            .current_dir(self.path())
            .arg("--plugins")
            .arg(self.plugins());
        command
    }
}

/// The real `causeway` binary, with no inherited Causeway settings.
pub fn causeway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_causeway"));
    command
        .env_remove("CAUSEWAY_PLUGINS")
        .env_remove("CAUSEWAY_LOG");
    command
}

/// A finished command's outcome, with its output as text.
pub struct Run {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `command` to completion.
pub fn run(command: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run causeway");
    Run {
        success: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `command`, asserts it succeeded, and parses its stdout as JSON.
pub fn run_json(command: &mut Command) -> serde_json::Value {
    let run = run(command);
    assert!(
        run.success,
        "command failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
}
