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

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;

/// Where compiled components are kept.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
    key: Vec<u8>,
}

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
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("cannot create the cache {}: {e}", folder.display()))?;
        let key = crate::keyfile::load_or_create(&dir.join("host.key"))?;
        Ok(ArtifactCache {
            dir: folder,
            engine_hash,
            key,
        })
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
        // Write beside, then rename: a crash never leaves half an artifact
        // under the real name (and half a one would not verify anyway).
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &stored)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_is_stored_then_loaded_and_a_corrupted_one_is_recompiled() {
        let engine = crate::engine::new_engine().unwrap();
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

    /// The smallest component: the binary preamble and nothing else.
    fn wat_free_component() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
