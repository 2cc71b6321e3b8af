//! The on-disk cache of compiled code.
//!
//! An entry is keyed by the artifact's sha256 and the engine's compatibility
//! hash (wasmtime version, target, and every setting that changes generated
//! code, fuel metering included), so a changed file or engine never meets a
//! stale entry. Entries are written atomically (temp file, rename) and
//! end with a trailer holding an xxh3-128 checksum of the payload, so a
//! truncated or corrupted entry is detected, removed and compiled again
//! rather than handed to wasmtime, which trusts serialized code.
//!
//! Layout: `<payload> <xxh3-128: 16 bytes LE> <payload length: u64 LE> <b"SKIFFCW1">`.
//!
//! A hit is handed over as the open file, which wasmtime maps rather than
//! copies (the payload is an ELF object; the trailer after it is not read).
//! That is sound because an entry's file is never written once it has its
//! name: a new entry is a new file renamed over the old one, so a mapping
//! keeps the bytes that were checked.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

const MAGIC: &[u8; 8] = b"SKIFFCW1";
const TRAILER: usize = 16 + 8 + 8;

/// A directory of compiled artifacts for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
    /// How many bytes of entries the directory may hold (see
    /// [`CompileCache::prune`]).
    limit: u64,
}

/// What pruning removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// A temp file older than this was left by a write a crash interrupted.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a cache lookup found.
pub(crate) enum Lookup {
    /// A valid entry, open for reading; its payload is checked.
    Hit(fs::File),
    Miss,
    /// An entry existed but failed its checksum; it has been removed.
    Corrupt,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine, limit: u64) -> Self {
        let mut hasher = Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
            limit,
        }
    }

    /// The file an artifact with this sha256 (hex) compiles to.
    pub(crate) fn entry_path(&self, sha256_hex: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256_hex}-{}.cwasm", self.engine_hash))
    }

    pub(crate) fn lookup(&self, sha256_hex: &str) -> Lookup {
        let path = self.entry_path(sha256_hex);
        let Ok(file) = fs::File::open(&path) else {
            return Lookup::Miss;
        };
        // The file opened, not the name: it could be replaced in between.
        match file.metadata() {
            Ok(meta) if !trusted(&meta) => {
                // Loading compiled code runs it: never take it from a file
                // someone else could have written.
                tracing::warn!(path = %path.display(), "ignoring a compiled-code cache entry not owned by this user or writable by others");
                return Lookup::Miss;
            }
            Ok(_) => {}
            Err(_) => return Lookup::Miss,
        }
        // SAFETY: skiff never writes an entry's file after naming it (see
        // the module's comment); another user's process could, but the
        // file is this user's and writable by nobody else (checked above).
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return Lookup::Miss;
        };
        match payload_len(&map) {
            Some(_) => {
                // Marks it used: pruning removes the least recently used.
                // (Its times only: its bytes are never written again.)
                let _ = file.set_modified(std::time::SystemTime::now());
                Lookup::Hit(file)
            }
            None => {
                tracing::warn!(path = %path.display(), "corrupt compiled-code cache entry; recompiling");
                let _ = fs::remove_file(&path);
                Lookup::Corrupt
            }
        }
    }

    /// Removes an entry that wasmtime refused to load.
    pub(crate) fn evict(&self, sha256_hex: &str) {
        let _ = fs::remove_file(self.entry_path(sha256_hex));
    }

    pub(crate) fn store(&self, sha256_hex: &str, payload: &[u8]) -> io::Result<()> {
        // Private to this user: entries are native code skiff will run.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.entry_path(sha256_hex);
        let mut trailer = [0u8; TRAILER];
        trailer[..16].copy_from_slice(&xxh3_128(payload).to_le_bytes());
        trailer[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        trailer[24..].copy_from_slice(MAGIC);
        write_atomically(&path, &[payload, &trailer])
    }

    /// Keeps the directory within its limit, as wasmtime's own cache does:
    /// once its entries (of every engine, so code of an older wasmtime goes
    /// first, never being used) pass the limit, the least recently used go
    /// until they take 70% of it, never one whose binary's sha256 (hex)
    /// `in_use` says is loaded. Temp files older than an hour, left by
    /// writes a crash interrupted, go too. Removing an entry a task has
    /// mapped is safe: the mapping keeps its bytes.
    pub(crate) fn prune(&self, in_use: &dyn Fn(&str) -> bool) -> io::Result<Pruned> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        let mut pruned = Pruned::default();
        let now = std::time::SystemTime::now();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let modified = meta.modified().unwrap_or(now);
            if name.starts_with(".tmp") {
                if now.duration_since(modified).unwrap_or_default() > ABANDONED_AFTER
                    && fs::remove_file(entry.path()).is_ok()
                {
                    pruned.entries += 1;
                    pruned.bytes += meta.len();
                }
            } else if name.ends_with(".cwasm") && meta.is_file() {
                total += meta.len();
                let sha = name.split('-').next().unwrap_or_default();
                if !in_use(sha) {
                    entries.push((modified, meta.len(), entry.path()));
                }
            }
        }
        if total <= self.limit {
            return Ok(pruned);
        }
        let target = self.limit / 10 * 7;
        entries.sort();
        for (_, len, path) in entries {
            if total <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
                pruned.entries += 1;
                pruned.bytes += len;
            }
        }
        Ok(pruned)
    }
}

/// Owned by this user and writable by nobody else.
fn trusted(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    meta.uid() == me && meta.mode() & 0o022 == 0
}

/// Validates the trailer and returns the payload length.
fn payload_len(data: &[u8]) -> Option<usize> {
    let body_len = data.len().checked_sub(TRAILER)?;
    let trailer = &data[body_len..];
    if &trailer[24..] != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(trailer[16..24].try_into().ok()?);
    if usize::try_from(len).ok()? != body_len {
        return None;
    }
    let sum = u128::from_le_bytes(trailer[..16].try_into().ok()?);
    (xxh3_128(&data[..body_len]) == sum).then_some(body_len)
}

/// Writes `parts` to a temporary file beside `path` and renames it into
/// place, so readers see either nothing or a whole file. There is no fsync:
/// an entry torn by a power cut fails its checksum and is compiled again,
/// which is cheaper than making every first start wait for the disk.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    for part in parts {
        tmp.write_all(part)?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(dir.path().to_path_buf(), &engine, u64::MAX);
        cache.store("abc", b"compiled bytes").unwrap();
        let Lookup::Hit(mut file) = cache.lookup("abc") else {
            panic!("a stored entry is a hit");
        };
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut file, &mut raw).unwrap();
        assert!(raw.starts_with(b"compiled bytes"), "the hit is the entry");

        // Flip one payload byte: the checksum catches it and the entry goes.
        let path = cache.entry_path("abc");
        let mut raw = fs::read(&path).unwrap();
        raw[3] ^= 0xff;
        fs::write(&path, &raw).unwrap();
        assert!(matches!(cache.lookup("abc"), Lookup::Corrupt));
        assert!(!path.exists());

        // A truncated entry is corrupt too, and a missing one is a miss.
        cache.store("abc", b"compiled bytes").unwrap();
        let raw = fs::read(&path).unwrap();
        fs::write(&path, &raw[..raw.len() - 5]).unwrap();
        assert!(matches!(cache.lookup("abc"), Lookup::Corrupt));
        assert!(matches!(cache.lookup("abc"), Lookup::Miss));

        // An empty one (a write torn before its first byte) too.
        fs::write(&path, b"").unwrap();
        assert!(matches!(cache.lookup("abc"), Lookup::Corrupt));
        assert!(!path.exists());
    }

    #[test]
    fn entries_others_could_have_written_are_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache/compiled");
        let cache = CompileCache::new(cache_dir.clone(), &Engine::default(), u64::MAX);
        cache.store("abc", b"code").unwrap();
        let path = cache.entry_path("abc");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(cache.lookup("abc"), Lookup::Miss));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(cache.lookup("abc"), Lookup::Hit(_)));
        for d in [&cache_dir, &dir.path().join("cache")] {
            let mode = fs::metadata(d).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is private", d.display());
        }
    }

    /// Past its limit the cache keeps the most recently used entries (a
    /// hit counts as a use) and the one just written, down to 70% of the
    /// limit; temp files a crash left go after an hour, a write in
    /// progress stays.
    #[test]
    fn past_its_limit_the_least_recently_used_code_goes() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        // Each entry: 968 bytes of payload and the 32-byte trailer.
        let payload = vec![7u8; 968];
        let cache = CompileCache::new(dir.path().to_path_buf(), &engine, 4_500);
        let age = |name: &str, secs: u64| {
            let f = fs::File::options()
                .write(true)
                .open(cache.entry_path(name))
                .unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(secs))
                .unwrap();
        };
        for (name, secs) in [("a", 400), ("b", 300), ("c", 200), ("d", 100)] {
            cache.store(name, &payload).unwrap();
            age(name, secs);
        }
        let abandoned = dir.path().join(".tmpOLD123");
        fs::write(&abandoned, b"half a write").unwrap();
        fs::File::options()
            .write(true)
            .open(&abandoned)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        let writing = dir.path().join(".tmpNEW456");
        fs::write(&writing, b"a write in progress").unwrap();
        // "a" is the oldest but used now: it stays.
        assert!(matches!(cache.lookup("a"), Lookup::Hit(_)));
        // A fifth entry passes 4,500 bytes: down to 3,150, so two go —
        // the least recently used, "b" and "c" — but "b" is loaded, so
        // "c" and "d"; not "e", just written (and loaded).
        cache.store("e", &payload).unwrap();
        let loaded = |sha: &str| sha == "b" || sha == "e";
        assert_eq!(
            cache.prune(&loaded).unwrap(),
            Pruned {
                entries: 3,
                bytes: 2_000 + 12
            }
        );
        let left = |name: &str| cache.entry_path(name).exists();
        assert_eq!(
            ["a", "b", "c", "d", "e"].map(left),
            [true, true, false, false, true]
        );
        assert!(!abandoned.exists(), "an abandoned temp file goes");
        assert!(writing.exists(), "a write in progress stays");
        // Within the limit nothing more goes.
        assert_eq!(cache.prune(&loaded).unwrap(), Pruned::default());
    }

    #[test]
    fn key_depends_on_engine_settings() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Engine::default();
        let mut fuel = wasmtime::Config::new();
        fuel.consume_fuel(true);
        let fuel = Engine::new(&fuel).unwrap();
        let a = CompileCache::new(dir.path().to_path_buf(), &plain, u64::MAX);
        let b = CompileCache::new(dir.path().to_path_buf(), &fuel, u64::MAX);
        assert_ne!(a.entry_path("abc"), b.entry_path("abc"));
    }
}
