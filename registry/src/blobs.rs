//! Blob files: content-addressed, immutable, written atomically.
//!
//! Layout under the registry's root: `blobs/<algorithm>/<first two hex>/<hex>`
//! for committed content and `uploads/<id>` for uploads in progress. A blob
//! becomes visible only by a rename of a complete, fsynced file whose digest
//! was checked, so a crash or a dropped connection never leaves a partial
//! blob where a reader could find it.

use crate::digest::{Algorithm, Digest, Hasher};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The blob files of one registry.
#[derive(Debug, Clone)]
pub(crate) struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub(crate) fn open(root: &Path) -> io::Result<Blobs> {
        for dir in ["blobs/sha256", "blobs/sha512", "uploads"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Blobs {
            root: root.to_path_buf(),
        })
    }

    /// Where a committed blob lives.
    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// Where an upload's bytes accumulate.
    pub(crate) fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub(crate) fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Makes a finished upload the blob `digest`: fsync, then rename into
    /// place (if another push committed the same content meanwhile, the
    /// upload is simply dropped), then fsync the directory.
    pub(crate) fn commit(&self, upload: &Path, digest: &Digest) -> io::Result<()> {
        File::open(upload)?.sync_all()?;
        let target = self.path(digest);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        if target.exists() {
            fs::remove_file(upload)?;
            return Ok(());
        }
        fs::rename(upload, &target)?;
        File::open(&dir)?.sync_all()
    }

    /// Stores `bytes` (a manifest) as the blob `digest`, atomically.
    pub(crate) fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        if self.exists(digest) {
            return Ok(());
        }
        let tmp = self
            .root
            .join("uploads")
            .join(format!(".put-{}", uuid::Uuid::new_v4()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            drop(f);
            self.commit(&tmp, digest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a whole blob (manifests: small).
    pub(crate) fn read(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.path(digest))
    }

    /// Bytes of a blob from `start` (`len` of them, or to its end),
    /// mapped rather than read: layers may be large. Only those bytes are
    /// mapped, populated up front: one call instead of a page fault every
    /// 4 KiB as they are written out.
    pub(crate) fn map(
        &self,
        digest: &Digest,
        start: u64,
        len: Option<u64>,
    ) -> io::Result<bytes::Bytes> {
        let file = File::open(self.path(digest))?;
        let len = match len {
            Some(len) => len,
            None => file.metadata()?.len().saturating_sub(start),
        };
        if len == 0 {
            return Ok(bytes::Bytes::new());
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::other(format!("a {len}-byte blob does not fit in memory")))?;
        // SAFETY: blob files are immutable once committed, and a removed
        // file stays mapped until the mapping is dropped.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(len)
                .populate()
                .map(&file)?
        };
        Ok(bytes::Bytes::from_owner(map))
    }

    /// Removes a blob's file. Readers that have it open keep their copy.
    pub(crate) fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Hashes a file from disk (an upload whose digest uses another
    /// algorithm than the one hashed on the fly).
    pub(crate) fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
        let mut f = File::open(path)?;
        let mut h = Hasher::new(algorithm);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finish())
    }

    /// Every committed blob's digest (for garbage collection).
    pub(crate) fn all(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let base = self.root.join("blobs").join(alg);
            let Ok(prefixes) = fs::read_dir(&base) else {
                continue;
            };
            for prefix in prefixes.flatten() {
                let Ok(files) = fs::read_dir(prefix.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    if let Ok(d) = format!("{alg}:{}", file.file_name().to_string_lossy()).parse() {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes uploads left by a crash or abandoned by their clients.
    pub(crate) fn clear_uploads(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join("uploads"))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(())
    }
}

/// Starts writing `len` bytes at `offset` of an upload to the disk now,
/// without waiting: the fsync that commits the blob then has little left
/// to do, and the disk works while the rest of the upload arrives. Only a
/// hint; failure changes nothing.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a valid open descriptor; the call only schedules I/O.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}
