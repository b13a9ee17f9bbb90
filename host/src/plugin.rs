//! One plugin file: inspected (manifest, worlds, imports, exports), validated
//! against the contract, compiled, and linked into a reusable `InstancePre`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::CompileLimits;
use crate::engine::cache::ArtifactCache;
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::bindings::{sink, source, transform, webhook};
use crate::contract::{self, ContractError, World};
use crate::manifest::{Manifest, ManifestError, ManifestOrigin};
use crate::sandbox::StoreState;

/// What is known about a plugin version, without running it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// The manifest's name.
    pub name: String,
    /// The manifest's version.
    pub version: String,
    /// `sha256:` and the hex digest of the file.
    pub digest: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Where the manifest came from.
    pub manifest_origin: ManifestOrigin,
    /// The worlds, from the exports.
    pub worlds: Vec<World>,
    /// Every import name.
    pub imports: Vec<String>,
    /// Every export name.
    pub exports: Vec<String>,
}

impl PluginInfo {
    /// A plugin `name` 1.0.0 whose manifest asks for nothing, from no
    /// file: for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> PluginInfo {
        let manifest = crate::manifest::Manifest::parse(
            &format!("contract = \"0.1.0\"\nname = \"{name}\"\nversion = \"1.0.0\""),
            "test.toml",
        )
        .unwrap();
        PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest: "sha256:00".into(),
            path: format!("{name}.wasm").into(),
            manifest,
            manifest_origin: crate::manifest::ManifestOrigin::Sidecar,
            worlds: Vec::new(),
            imports: Vec::new(),
            exports: Vec::new(),
        }
    }

    /// `name@version`, as logs and errors show a plugin.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Why a plugin file was not loaded. Displays as one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct LoadError {
    /// The plugin file.
    pub file: PathBuf,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a plugin file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    /// Not WebAssembly at all.
    #[error("is not a WebAssembly file")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component does not compile.
    #[error("does not compile: {0}")]
    Compile(String),
    /// The component does not fit the contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The component's imports cannot be satisfied by the host.
    #[error("cannot be linked: {0}")]
    Link(String),
    /// Larger than the host reads (`[engine] max-plugin-mb`).
    #[error(
        "is {} MiB, over the {} MiB a plugin file may be: not read (raise `max-plugin-mb` under `[engine]` in causeway.toml to load it)",
        mib(*.size),
        .max >> 20
    )]
    TooLarge {
        /// The file's size in bytes (as far as it was read).
        size: u64,
        /// The most a plugin file may be, in bytes (a whole number of MiB).
        max: u64,
    },
    /// Another file already provides a plugin of this name.
    #[error(
        "declares plugin name {name:?}, already provided by {other}: a plugin name comes from one file; remove one of the two"
    )]
    DuplicateName {
        /// The plugin name.
        name: String,
        /// The other file.
        other: String,
    },
    /// A FIFO, a device or a socket named `.wasm` (or a link to one).
    #[error("is not a regular file but {0}: a plugin is a .wasm file, or a symbolic link to one")]
    NotAFile(&'static str),
    /// More functions than the host compiles (`[engine] max-functions`).
    #[error(
        "defines {count} functions, over the {max} a plugin may have: not compiled (compiling takes memory by the function; raise `max-functions` under `[engine]` in causeway.toml to load it)"
    )]
    TooManyFunctions {
        /// The functions its core modules define, as far as counted.
        count: u64,
        /// The most a plugin may define.
        max: u64,
    },
    /// A function larger than the host compiles (`[engine] max-function-kb`).
    #[error(
        "has a function of {} KiB (function {index} of its core module {module}), over the {} KiB a function may be: not compiled (compiling takes memory by the function's size; raise `max-function-kb` under `[engine]` in causeway.toml to load it)",
        .size.div_ceil(1024),
        .max >> 10
    )]
    FunctionTooLarge {
        /// The core module, counted from 0 in the order the file holds them.
        module: u64,
        /// The function's index among that module's bodies.
        index: u64,
        /// Its body's size in bytes.
        size: u64,
        /// The most a body may be, in bytes (a whole number of KiB).
        max: u64,
    },
}

/// Checks, before anything is compiled, that the component at `bytes`
/// holds no more functions, and none larger, than `limits` allow. The
/// compiler cannot be stopped or bounded once it runs, and its memory
/// grows with both: a 4 MB file of a million empty functions took 5.5 GB
/// and 44 s, one of a single 7 MB function 2.5 GB. What does not parse is
/// left to the compiler to describe.
pub fn check_compile_limits(bytes: &[u8], limits: CompileLimits) -> Result<(), Problem> {
    let (mut functions, mut modules, mut index) = (0u64, 0u64, 0u64);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::ModuleSection { .. }) => modules += 1,
            Ok(wasmparser::Payload::FunctionSection(section)) => {
                functions += u64::from(section.count());
                if functions > limits.functions {
                    return Err(Problem::TooManyFunctions {
                        count: functions,
                        max: limits.functions,
                    });
                }
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) => index = 0,
            Ok(wasmparser::Payload::CodeSectionEntry(body)) => {
                let size = body.range().len() as u64;
                if size > limits.function_bytes {
                    return Err(Problem::FunctionTooLarge {
                        module: modules.saturating_sub(1),
                        index,
                        size,
                        max: limits.function_bytes,
                    });
                }
                index += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

// Not `#[from]`: the message already carries the error, and a source
// would print it twice.
impl From<std::io::Error> for Problem {
    fn from(e: std::io::Error) -> Self {
        Problem::Io(e)
    }
}

/// A compiled component and what it says about itself, before validation.
pub struct Inspection {
    /// What is known.
    pub info: PluginInfo,
    /// The compiled component.
    pub component: Component,
    /// Why the worlds could not be determined, if they could not.
    pub worlds_error: Option<ContractError>,
}

/// Bytes in MiB, to one decimal place, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}

/// The contents of the plugin file at `path`, or [`Problem::TooLarge`]
/// without reading it when it is over `max` bytes.
pub fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, LoadError> {
    crate::files::read_regular(path, max).map_err(|e| LoadError {
        file: path.to_path_buf(),
        problem: match e {
            crate::files::Unread::Io(e) => Problem::Io(e),
            crate::files::Unread::Kind(kind) => Problem::NotAFile(kind),
            crate::files::Unread::TooLarge(size) => Problem::TooLarge { size, max },
        },
    })
}

/// Reads, digests and compiles a plugin file, and reads its manifest, worlds,
/// imports and exports. Contract problems other than "no world" are left to
/// [`Plugin::from_bytes`]: an inspection shows a reviewer what the file asks for.
/// A file over `max_bytes` is refused unread.
pub fn inspect(
    engine: &Engine,
    path: &Path,
    max_bytes: u64,
    limits: CompileLimits,
) -> Result<Inspection, LoadError> {
    let bytes = read_file(path, max_bytes)?;
    inspect_bytes(engine, None, path, &bytes, limits)
}

/// [`inspect`] for a file already read: `bytes` are the contents of `path`
/// (a sidecar manifest is still read beside it); the component comes from
/// `cache` when it has it, or is compiled if `limits` allow it.
pub fn inspect_bytes(
    engine: &Engine,
    cache: Option<&ArtifactCache>,
    path: &Path,
    bytes: &[u8],
    limits: CompileLimits,
) -> Result<Inspection, LoadError> {
    let fail = |problem: Problem| LoadError {
        file: path.to_path_buf(),
        problem,
    };
    if !wasmparser::Parser::is_component(bytes) {
        return Err(fail(if wasmparser::Parser::is_core_wasm(bytes) {
            Problem::CoreModule
        } else {
            Problem::NotWasm
        }));
    }
    let digest = digest(bytes);
    let (manifest, manifest_origin) = Manifest::load(path, bytes).map_err(|e| fail(e.into()))?;
    let label = format!("{}@{}", manifest.name, manifest.version);
    // Also before a cached artifact is taken: limits lowered since hold.
    check_compile_limits(bytes, limits).map_err(fail)?;
    let component = match cache {
        Some(cache) => cache
            .component(engine, &digest, bytes, &label)
            .map(|(component, _)| component),
        None => Component::new(engine, bytes),
    }
    .map_err(|e| fail(Problem::Compile(format!("{e:#}"))))?;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let (worlds, worlds_error) =
        match contract::worlds_from_exports(exports.iter().map(String::as_str)) {
            Ok(worlds) => (worlds, None),
            Err(e) => (Vec::new(), Some(e)),
        };
    Ok(Inspection {
        info: PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest,
            path: path.to_path_buf(),
            manifest,
            manifest_origin,
            worlds,
            imports,
            exports,
        },
        component,
        worlds_error,
    })
}

/// A file's digest as the host shows it: `sha256:` and hex.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl Inspection {
    /// Checks the inspected component against the contract.
    pub fn validate(&self) -> Result<(), ContractError> {
        if let Some(e) = &self.worlds_error {
            return Err(e.clone());
        }
        let info = &self.info;
        if let Some(claimed) = &info.manifest.worlds {
            contract::check_claims(claimed, &info.worlds)?;
        }
        contract::check_imports(info.imports.iter().map(String::as_str), &info.worlds)
    }
}

/// The export indices of the worlds a plugin implements.
#[derive(Default)]
pub(crate) struct Exports {
    pub(crate) source: Option<source::GuestIndices>,
    pub(crate) sink: Option<sink::GuestIndices>,
    pub(crate) webhook: Option<webhook::GuestIndices>,
    pub(crate) transform: Option<transform::GuestIndices>,
}

/// A loaded, validated plugin version, ready to instantiate.
pub struct Plugin {
    /// What is known about it.
    pub info: Arc<PluginInfo>,
    pub(crate) pre: InstancePre<StoreState>,
    pub(crate) exports: Exports,
    /// What this version's calls and capability uses did (`/metrics`).
    pub stats: Arc<crate::metrics::CallStats>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The size of its compiled code in memory, in bytes.
    pub fn code_bytes(&self) -> usize {
        let range = self.pre.component().image_range();
        range.end as usize - range.start as usize
    }

    /// A fresh instance in a fresh store with `context`'s limits, as each
    /// call starts with; the benchmarks measure and hold these.
    pub async fn instantiate(
        &self,
        engine: &wasmtime::Engine,
        context: &crate::sandbox::CallContext,
    ) -> wasmtime::Result<(wasmtime::Store<StoreState>, wasmtime::component::Instance)> {
        let mut store = crate::sandbox::new_store(engine, self.info.clone(), context);
        crate::sandbox::fill_fuel(&mut store, &context.policy.limits)?;
        let instance = self.pre.instantiate_async(&mut store).await?;
        Ok((store, instance))
    }

    /// Inspects, validates and links the plugin file `path`, already read:
    /// `bytes` are its contents (read with [`read_file`], which bounds
    /// them); compiled through `cache` if given, and if `limits` allow.
    pub fn from_bytes(
        engine: &Engine,
        linker: &Linker<StoreState>,
        cache: Option<&ArtifactCache>,
        path: &Path,
        bytes: &[u8],
        limits: CompileLimits,
    ) -> Result<Plugin, LoadError> {
        let inspection = inspect_bytes(engine, cache, path, bytes, limits)?;
        let fail = |problem: Problem| LoadError {
            file: path.to_path_buf(),
            problem,
        };
        inspection.validate().map_err(|e| fail(e.into()))?;
        let pre = linker
            .instantiate_pre(&inspection.component)
            .map_err(|e| fail(Problem::Link(format!("{e:#}"))))?;
        let link = |e: wasmtime::Error| fail(Problem::Link(format!("{e:#}")));
        let info = inspection.info;
        let has = |w: World| info.worlds.contains(&w);
        let exports = Exports {
            source: has(World::Source)
                .then(|| source::GuestIndices::new(&pre))
                .transpose()
                .map_err(link)?,
            sink: has(World::Sink)
                .then(|| sink::GuestIndices::new(&pre))
                .transpose()
                .map_err(link)?,
            webhook: has(World::Webhook)
                .then(|| webhook::GuestIndices::new(&pre))
                .transpose()
                .map_err(link)?,
            transform: has(World::Transform)
                .then(|| transform::GuestIndices::new(&pre))
                .transpose()
                .map_err(link)?,
        };
        Ok(Plugin {
            info: Arc::new(info),
            pre,
            exports,
            stats: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_naming_it_and_one_within_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wasm");
        std::fs::write(&path, vec![7u8; (1 << 20) + 1]).unwrap();
        let err = read_file(&path, 1 << 20).unwrap_err();
        assert!(
            matches!(err.problem, Problem::TooLarge { size, max } if size == (1 << 20) + 1 && max == 1 << 20),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is 1.0 MiB, over the 1 MiB a plugin file may be: not read (raise `max-plugin-mb` under `[engine]` in causeway.toml to load it)",
                path.display()
            )
        );
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        assert_eq!(read_file(&path, 1 << 20).unwrap().len(), 1 << 20);
        let missing = read_file(&dir.path().join("none.wasm"), 1 << 20).unwrap_err();
        assert!(matches!(missing.problem, Problem::Io(_)), "{missing:?}");
    }
}
