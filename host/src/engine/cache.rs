//! The precompiled-artifact cache: compiled components in the data
//! directory, so a restart or a reload of a version seen before skips
//! Cranelift.
//!
//! An artifact is keyed by the plugin file's digest, under a folder named by
//! the engine's compatibility hash (target, flags, wasmtime version). The
//! host deserializes only what it wrote itself: each artifact carries an
//! HMAC-SHA256, keyed with a host key kept beside the cache (created on first
//! use, owner-only), over the plugin digest, the engine hash and the
//! artifact; it is checked before the unsafe load. A missing, corrupted or
//! foreign artifact is recompiled, never trusted. Files in the plugins folder
//! are never deserialized: they must be components, compiled here.
//!
//! The cache is bounded: after each store the least recently used artifacts
//! (a load counts as a use) are removed until it fits its size, across engine
//! folders, so an upgrade's old folder ages out.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::files::{self, Durability};

type HmacSha256 = Hmac<Sha256>;

/// Where compiled components are kept.
#[derive(Debug)]
pub struct ArtifactCache {
    root: PathBuf,
    dir: PathBuf,
    engine_hash: String,
    key: Vec<u8>,
    max_bytes: u64,
}

/// The default bound of a cache folder: about fifty CPython plugins.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// How a component was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Deserialized from the cache.
    Cached,
    /// Compiled now (and stored, if it could be).
    Compiled,
}

/// A `Hasher` over SHA-256: unlike `DefaultHasher`, stable across Rust
/// releases, so a stored hash stays meaningful.
#[derive(Default)]
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

impl ArtifactCache {
    /// The cache under `dir` for `engine`, created if need be.
    pub fn open(engine: &Engine, dir: &Path) -> Result<ArtifactCache, String> {
        let mut hasher = StableHasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());
        let folder = dir.join(&engine_hash);
        // Usually inside the data folder, which this may be the first to make.
        crate::files::create_private_dir(&folder)
            .map_err(|e| format!("cannot create the cache {}: {e}", folder.display()))?;
        let key = crate::keyfile::load_or_create(&dir.join("host.key"))?;
        Ok(ArtifactCache {
            root: dir.to_path_buf(),
            dir: folder,
            engine_hash,
            key,
            max_bytes: DEFAULT_MAX_BYTES,
        })
    }

    /// The same cache, bounded to `max_bytes` of artifacts.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> ArtifactCache {
        self.max_bytes = max_bytes;
        self
    }

    /// Removes the least recently used artifacts until the cache fits,
    /// never `keep` (the one just stored). Best effort: a file another host
    /// removed first, or one it is writing, is skipped.
    fn evict(&self, keep: &Path) {
        let mut artifacts = Vec::new();
        let folders = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten();
        for folder in folders.filter(|f| f.path().is_dir()) {
            for file in std::fs::read_dir(folder.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "cwasm")
                    && let Ok(meta) = file.metadata()
                {
                    let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    artifacts.push((used, meta.len(), path));
                }
            }
        }
        let mut total: u64 = artifacts.iter().map(|(_, size, _)| size).sum();
        artifacts.sort();
        for (_, size, path) in artifacts {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                tracing::debug!("evicted {} from the precompiled cache", path.display());
                total -= size;
                if let Some(folder) = path.parent()
                    && folder != self.dir
                {
                    // An old engine's folder goes once it is empty.
                    let _ = std::fs::remove_dir(folder);
                }
            }
        }
    }

    fn tag(&self, digest: &str, artifact: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(digest.as_bytes());
        mac.update(b"\n");
        mac.update(self.engine_hash.as_bytes());
        mac.update(b"\n");
        mac.update(artifact);
        mac
    }

    /// The artifact file of the plugin file whose digest is `digest`.
    pub fn path_of(&self, digest: &str) -> PathBuf {
        let name: String = digest
            .strip_prefix("sha256:")
            .unwrap_or(digest)
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The component of `bytes` (whose digest is `digest`): from the cache
    /// when a verified artifact is there, else compiled and stored.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
        label: &str,
    ) -> wasmtime::Result<(Component, Origin)> {
        let path = self.path_of(digest);
        if let Ok(stored) = std::fs::read(&path) {
            match stored.split_at_checked(32) {
                Some((tag, artifact)) if self.tag(digest, artifact).verify_slice(tag).is_ok() => {
                    // SAFETY: wasmtime requires that deserialized bytes are
                    // an artifact it produced for a compatible engine. This
                    // one carries this host's MAC over this engine's hash and
                    // this plugin's digest, so this host wrote it with
                    // `Component::serialize` for such an engine, and it is
                    // unchanged since.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(component) => {
                            tracing::debug!(plugin = label, "loaded from the precompiled cache");
                            // A use: eviction goes by modification time.
                            let _ = std::fs::File::options()
                                .write(true)
                                .open(&path)
                                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                            return Ok((component, Origin::Cached));
                        }
                        Err(e) => tracing::warn!(
                            plugin = label,
                            "the cached artifact {} cannot be loaded ({e}): recompiling",
                            path.display()
                        ),
                    }
                }
                _ => tracing::warn!(
                    plugin = label,
                    "the cached artifact {} does not verify (corrupted, or not written by this host): recompiling",
                    path.display()
                ),
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(engine, bytes)?;
        tracing::debug!(
            plugin = label,
            "compiled in {} ms",
            started.elapsed().as_millis()
        );
        if let Err(e) = self.store(&path, digest, &component) {
            tracing::warn!(plugin = label, "not cached: {e}");
        }
        Ok((component, Origin::Compiled))
    }

    fn store(&self, path: &Path, digest: &str, component: &Component) -> Result<(), String> {
        let artifact = component.serialize().map_err(|e| e.to_string())?;
        let tag = self.tag(digest, &artifact).finalize().into_bytes();
        let mut stored = Vec::with_capacity(32 + artifact.len());
        stored.extend_from_slice(&tag);
        stored.extend_from_slice(&artifact);
        // A crash never leaves half an artifact under the real name; a
        // power cut might, but half a one does not verify and is recompiled,
        // so it is not worth a sync on every compile.
        files::replace(
            path,
            &path.with_extension("partial"),
            &stored,
            Durability::Unsynced,
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.evict(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_is_stored_then_loaded_and_a_corrupted_one_is_recompiled() {
        let engine = crate::engine::new_engine(&Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bytes = wat_free_component();
        let cache = ArtifactCache::open(&engine, dir.path()).unwrap();
        let digest = crate::plugin::digest(&bytes);
        let (_, origin) = cache.component(&engine, &digest, &bytes, "t").unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = cache.component(&engine, &digest, &bytes, "t").unwrap();
        assert_eq!(origin, Origin::Cached);

        // One flipped byte: it does not verify, so it is recompiled (and
        // stored afresh).
        let path = cache.path_of(&digest);
        let mut stored = std::fs::read(&path).unwrap();
        let last = stored.len() - 1;
        stored[last] ^= 0xff;
        std::fs::write(&path, &stored).unwrap();
        let (_, origin) = cache.component(&engine, &digest, &bytes, "t").unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = cache.component(&engine, &digest, &bytes, "t").unwrap();
        assert_eq!(origin, Origin::Cached);

        // Another host's key: its artifacts are not trusted here.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(other.path().join(&cache.engine_hash)).unwrap();
        std::fs::copy(
            &path,
            other
                .path()
                .join(&cache.engine_hash)
                .join(path.file_name().unwrap()),
        )
        .unwrap();
        let foreign = ArtifactCache::open(&engine, other.path()).unwrap();
        let (_, origin) = foreign.component(&engine, &digest, &bytes, "t").unwrap();
        assert_eq!(origin, Origin::Compiled);
    }

    #[test]
    fn the_least_recently_used_artifacts_go_when_the_cache_is_full() {
        let engine = crate::engine::new_engine(&Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bytes = wat_free_component();
        let probe = ArtifactCache::open(&engine, dir.path()).unwrap();
        probe.component(&engine, "sha256:00", &bytes, "t").unwrap();
        let size = std::fs::metadata(probe.path_of("sha256:00")).unwrap().len();
        // Room for two artifacts; an old engine's folder holds one more.
        let cache = ArtifactCache::open(&engine, dir.path())
            .unwrap()
            .with_max_bytes(2 * size + size / 2);
        let old = dir.path().join("0123456789abcdef");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::copy(cache.path_of("sha256:00"), old.join("aa.cwasm")).unwrap();
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(old.join("aa.cwasm"))
            .unwrap()
            .set_modified(stale)
            .unwrap();

        // Storing a second one: the old engine's artifact is the least
        // recently used, and its folder goes with it.
        cache.component(&engine, "sha256:01", &bytes, "t").unwrap();
        assert!(!old.exists());
        // 00 is used again, so storing 02 evicts 01, not 00.
        let (_, origin) = cache.component(&engine, "sha256:00", &bytes, "t").unwrap();
        assert_eq!(origin, Origin::Cached);
        cache.component(&engine, "sha256:02", &bytes, "t").unwrap();
        let kept = |d: &str| cache.path_of(d).exists();
        assert_eq!(
            (kept("sha256:00"), kept("sha256:01"), kept("sha256:02")),
            (true, false, true)
        );
    }

    /// The smallest component: the binary preamble and nothing else.
    fn wat_free_component() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
