//! The local image store: what `skiff pull` brought down, by reference.
//!
//! `DATA_DIR/images/wasm/<sha256>.wasm` holds binaries (shared between
//! references); `DATA_DIR/images/refs/<sha256 of the reference>.json` holds
//! one record per reference. Every file is written whole (temp + rename).

use crate::digest::Digest;
use crate::remote::{self, Pulled, RemoteError, RemoteOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One pulled image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// The reference, normalised.
    pub reference: String,
    /// The manifest it resolved to.
    pub manifest_digest: String,
    /// The digest the reference named when it was pulled: the manifest's,
    /// or the index's it was picked from (empty in records written before
    /// skiff kept it, which a tag's check then finds stale).
    #[serde(default)]
    pub reference_digest: String,
    /// The Wasm binary's sha256.
    pub wasm_digest: String,
    /// The binary's size.
    pub size: u64,
    /// Arguments from the image config.
    pub args: Vec<String>,
    /// Environment from the image config.
    pub env: Vec<(String, String)>,
    /// When it was pulled (seconds since the epoch).
    pub pulled_at: i64,
}

/// Where an image a task asked for came from, and how long each part
/// took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullReport {
    /// Fetched from its registry now (else read from the store).
    pub pulled: bool,
    /// The binary's bytes that came over the network (0 from the store).
    pub bytes: u64,
    /// Resolving the reference: manifests and the image config.
    pub resolve: std::time::Duration,
    /// The layer's download, its digest checked as it arrives.
    pub download: std::time::Duration,
    /// Writing it to the store (fsynced), or, from the store, reading it
    /// back and checking its digest.
    pub store: std::time::Duration,
}

/// The store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// Records read, by reference, with the file they were read from: a
    /// task start looks its image's record up, and a `stat` says whether
    /// the file is still the one read (every write replaces it whole)
    /// where reading and parsing it again cost ten times as much.
    read: Arc<Mutex<HashMap<String, (FileId, ImageRecord)>>>,
}

/// Which file, as written: a rename puts another inode in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    inode: u64,
    device: u64,
    modified_ns: i128,
    len: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            inode: meta.ino(),
            device: meta.dev(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        }
    }
}

/// How many records [`ImageStore::get`] keeps (it starts over when full).
const RECORDS_KEPT: usize = 4_096;

fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Links `file` (a registry's blob file, immutable) at `path`, if the two
/// are on one filesystem: the binary is then stored without writing it
/// again. The link appears whole or not at all. False if it cannot be
/// made (another filesystem, a filesystem without links); the caller
/// writes a copy.
fn link(file: &Path, path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("."));
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    match std::fs::hard_link(file, path) {
        Ok(()) => true,
        // Linked (or written) by another pull meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => true,
        Err(_) => false,
    }
}

impl ImageStore {
    /// The store under `root` (`DATA_DIR/images`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ImageStore {
            root: root.into(),
            read: Arc::default(),
        }
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let key = Digest::sha256_of(reference.as_bytes());
        self.root.join("refs").join(format!("{}.json", key.hex()))
    }

    /// Where a binary with this sha256 (hex) lives.
    pub fn wasm_path(&self, wasm_hex: &str) -> PathBuf {
        self.root.join("wasm").join(format!("{wasm_hex}.wasm"))
    }

    /// The record for a (normalised) reference, if pulled.
    pub fn get(&self, reference: &str) -> std::io::Result<Option<ImageRecord>> {
        let path = self.record_path(reference);
        let missing = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(None),
            _ => Err(e),
        };
        let now = match std::fs::metadata(&path) {
            Ok(meta) => FileId::of(&meta),
            Err(e) => return missing(e),
        };
        if let Some((_, record)) = self
            .read
            .lock()
            .ok()
            .and_then(|r| r.get(reference).filter(|(was, _)| *was == now).cloned())
        {
            return Ok(Some(record));
        }
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return missing(e),
        };
        // (What is read is this file's, whatever the path held before.)
        let id = FileId::of(&file.metadata()?);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        let Ok(record) = serde_json::from_slice::<ImageRecord>(&bytes) else {
            return Ok(None);
        };
        if let Ok(mut read) = self.read.lock() {
            if read.len() >= RECORDS_KEPT {
                read.clear();
            }
            read.insert(reference.to_string(), (id, record.clone()));
        }
        Ok(Some(record))
    }

    /// Reads a stored image's binary, checking it against its digest.
    pub fn read_wasm(&self, record: &ImageRecord) -> std::io::Result<Vec<u8>> {
        let hex = record.wasm_digest.trim_start_matches("sha256:");
        let bytes = std::fs::read(self.wasm_path(hex))?;
        if Digest::sha256_of(&bytes).to_string() != record.wasm_digest {
            return Err(std::io::Error::other(format!(
                "the stored binary of {} is damaged; pull it again",
                record.reference
            )));
        }
        Ok(bytes)
    }

    /// Stores a pulled image.
    pub fn put(&self, pulled: &Pulled, now: i64) -> std::io::Result<ImageRecord> {
        let wasm_digest = pulled.wasm_digest.clone();
        let path = self.wasm_path(wasm_digest.hex());
        if !path.exists() && !pulled.layer_file.as_deref().is_some_and(|f| link(f, &path)) {
            write_whole(&path, &pulled.wasm)?;
        }
        let record = ImageRecord {
            reference: pulled.reference.clone(),
            manifest_digest: pulled.manifest_digest.to_string(),
            reference_digest: pulled.reference_digest.to_string(),
            wasm_digest: wasm_digest.to_string(),
            size: pulled.wasm.len() as u64,
            args: pulled.run.args.clone(),
            env: pulled.run.env.clone(),
            pulled_at: now,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        write_whole(&self.record_path(&record.reference), &json)?;
        Ok(record)
    }

    /// A stored image of `registry`/`repository` (under any tag or
    /// digest) whose reference named `digest`, or whose manifest is it.
    pub fn find(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
    ) -> std::io::Result<Option<ImageRecord>> {
        Ok(self.list()?.into_iter().find(|r| {
            (r.reference_digest == digest || r.manifest_digest == digest)
                && crate::names::parse_reference(&r.reference)
                    .is_ok_and(|p| p.registry == registry && p.repository == repository)
        }))
    }

    /// Records `image` under `reference` too (another name of the same
    /// image: no binary is written).
    pub fn alias(&self, image: &ImageRecord, reference: &str) -> std::io::Result<ImageRecord> {
        let record = ImageRecord {
            reference: reference.to_string(),
            ..image.clone()
        };
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        write_whole(&self.record_path(reference), &json)?;
        Ok(record)
    }

    /// Every pulled image, by reference.
    pub fn list(&self) -> std::io::Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(self.root.join("refs")) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in dir.flatten() {
            if let Ok(record) = serde_json::from_slice::<ImageRecord>(&std::fs::read(entry.path())?)
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Forgets a reference, and its binary if no other reference uses it.
    /// False if it was not pulled.
    pub fn remove(&self, reference: &str) -> std::io::Result<bool> {
        let Some(record) = self.get(reference)? else {
            return Ok(false);
        };
        std::fs::remove_file(self.record_path(reference))?;
        if !self
            .list()?
            .iter()
            .any(|r| r.wasm_digest == record.wasm_digest)
        {
            let hex = record.wasm_digest.trim_start_matches("sha256:");
            let _ = std::fs::remove_file(self.wasm_path(hex));
        }
        Ok(true)
    }
}

/// Whether a task's image is pulled again when the store holds it: the
/// ECS agent's `ECS_IMAGE_PULL_BEHAVIOR`, with its values and meanings.
/// A reference by digest names one image forever, so in every mode it is
/// pulled only if the store lacks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullBehavior {
    /// `default`: at every start the registry is asked what the tag names
    /// now (a manifest HEAD; `skiff serve`'s agent asks its own registry
    /// in-process), and the image is pulled if that moved. If the registry
    /// cannot be reached, the stored image is used.
    #[default]
    Default,
    /// `always`: as `default`, but a registry that cannot be reached fails
    /// the task.
    Always,
    /// `once`: pulled only if the store does not hold it. (ECS tells this
    /// apart from `prefer-cached` by who pulled an image; skiff's store
    /// holds only what skiff pulled, so here they are the same.)
    Once,
    /// `prefer-cached`: the stored image if there is one, else pulled.
    PreferCached,
}

impl PullBehavior {
    /// Every value, as ECS spells them.
    pub const VALUES: [&'static str; 4] = ["default", "always", "once", "prefer-cached"];

    /// As ECS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullBehavior::Default => "default",
            PullBehavior::Always => "always",
            PullBehavior::Once => "once",
            PullBehavior::PreferCached => "prefer-cached",
        }
    }

    /// Whether a start asks the registry what a tag names.
    fn asks(self) -> bool {
        matches!(self, PullBehavior::Default | PullBehavior::Always)
    }
}

impl std::fmt::Display for PullBehavior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PullBehavior {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(PullBehavior::Default),
            "always" => Ok(PullBehavior::Always),
            "once" => Ok(PullBehavior::Once),
            "prefer-cached" => Ok(PullBehavior::PreferCached),
            _ => Err(format!(
                "{s:?} is not an image pull behavior (it is one of {})",
                PullBehavior::VALUES.join(", ")
            )),
        }
    }
}

/// Says what a tag of a repository names now, without HTTP: how `skiff
/// serve`'s agent asks the registry in its own process (given the
/// repository and the tag, the manifest digest). `None` sends the
/// question over HTTP, as to any other registry.
pub type TagResolver = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// Gives the file of a blob of a registry in this process (given the
/// repository and the blob's digest), read in place of its download:
/// how `skiff serve`'s agent takes the images pushed to its own registry.
/// `None` downloads it over HTTP, as from any other registry.
pub type BlobFiles = Arc<dyn Fn(&str, &str) -> Option<PathBuf> + Send + Sync>;

/// A hook of a registry in this process ([`TagResolver`], [`BlobFiles`]):
/// which registry (`host[:port]`), and the hook.
struct InProcess<T>(std::sync::RwLock<Option<(String, T)>>);

impl<T> Default for InProcess<T> {
    fn default() -> Self {
        InProcess(std::sync::RwLock::new(None))
    }
}

impl<T: Clone> InProcess<T> {
    /// Sets it for `registry`, replacing any set before.
    fn set(&self, registry: &str, hook: T) {
        if let Ok(mut h) = self.0.write() {
            *h = Some((registry.to_string(), hook));
        }
    }

    /// The hook, if it is `registry`'s.
    fn of(&self, registry: &str) -> Option<T> {
        self.0.read().ok().and_then(|h| {
            h.as_ref()
                .filter(|(r, _)| r == registry)
                .map(|(_, hook)| hook.clone())
        })
    }
}

/// A reference, parsed.
#[derive(Debug)]
struct Named {
    /// Registry, repository, tag (and digest, if given).
    whole: String,
    registry: String,
    repository: String,
    /// The tag, if the reference gives no digest: a name that may move.
    tag: Option<String>,
    /// The digest, if given: a name for one image forever.
    digest: Option<String>,
}

/// What a task start's [`PullBehavior`] made of the stored image (see
/// [`Puller::check`]).
#[derive(Debug, Clone)]
pub struct Checked {
    named: Arc<Named>,
    /// The stored image, if the start may use it.
    pub current: Option<ImageRecord>,
    /// What the tag names now, if the registry was asked and answered.
    names: Option<String>,
    /// How long asking the registry took.
    pub resolve: std::time::Duration,
}

/// Pulls into an [`ImageStore`]; pulls of one reference that overlap (two
/// tasks starting at once) download it once.
pub struct Puller {
    store: ImageStore,
    options: std::sync::RwLock<RemoteOptions>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// References as given, parsed: oci-client parses with a regex, which
    /// was 4% of an agent's CPU starting warm tasks, every one of them
    /// naming the same few images.
    parsed: Mutex<HashMap<String, Arc<Named>>>,
    /// A registry asked in-process what its tags name, and how.
    tag_resolver: InProcess<TagResolver>,
    /// A registry whose blob files are read in-process, and how.
    blob_files: InProcess<BlobFiles>,
    /// Questions over HTTP of what a reference names (see
    /// [`Puller::resolve`]).
    asked: Questions<Result<String, RemoteError>>,
}

/// Questions shared by whoever asks them at once: one at a time per key,
/// and a caller takes the answer of a question asked after it arrived
/// (one asked before may predate what it must see), asking it itself if
/// it is first in line.
struct Questions<T> {
    /// Per key, the last question's answer and when it was asked.
    slots: Mutex<HashMap<String, Slot<T>>>,
}

/// One key's last question: when it was asked, and its answer.
type Slot<T> = Arc<tokio::sync::Mutex<Option<(std::time::Instant, T)>>>;

impl<T: Clone> Questions<T> {
    fn new() -> Self {
        Questions {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// `ask`'s answer for `key`, or that of a question of `key` another
    /// caller asked after this one arrived.
    async fn ask<F: std::future::Future<Output = T>>(
        &self,
        key: &str,
        ask: impl FnOnce() -> F,
    ) -> T {
        let arrived = std::time::Instant::now();
        let slot = match self.slots.lock() {
            Ok(mut slots) => {
                if slots.len() >= PARSED_KEPT {
                    slots.clear();
                }
                Arc::clone(slots.entry(key.to_string()).or_default())
            }
            Err(_) => Arc::default(),
        };
        let mut last = slot.lock().await;
        if let Some((asked_at, answer)) = &*last
            && *asked_at >= arrived
        {
            return answer.clone();
        }
        let asked_at = std::time::Instant::now();
        let answer = ask().await;
        *last = Some((asked_at, answer.clone()));
        answer
    }
}

/// How many parsed references a puller remembers (then it starts over).
const PARSED_KEPT: usize = 4096;

impl Puller {
    /// `reference`, parsed once.
    fn named(&self, reference: &str) -> Result<Arc<Named>, RemoteError> {
        if let Some(named) = self
            .parsed
            .lock()
            .ok()
            .and_then(|p| p.get(reference).cloned())
        {
            return Ok(named);
        }
        let parsed = remote::parse_reference(reference)?;
        let named = Arc::new(Named {
            whole: parsed.whole(),
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: match parsed.digest() {
                Some(_) => None,
                None => Some(parsed.tag().unwrap_or("latest").to_string()),
            },
            digest: parsed.digest().map(str::to_string),
        });
        if let Ok(mut p) = self.parsed.lock() {
            if p.len() >= PARSED_KEPT {
                p.clear();
            }
            p.insert(reference.to_string(), Arc::clone(&named));
        }
        Ok(named)
    }

    /// `reference`'s whole form (registry, repository, tag).
    fn whole(&self, reference: &str) -> Result<String, RemoteError> {
        self.named(reference).map(|n| n.whole.clone())
    }

    /// Asks `resolver` instead of `registry` (`host[:port]`) over HTTP
    /// what that registry's tags name, replacing any resolver set before.
    pub fn set_tag_resolver(&self, registry: &str, resolver: TagResolver) {
        self.tag_resolver.set(registry, resolver);
    }

    /// Reads the Wasm layers of `registry`'s (`host[:port]`) images from
    /// the files `blob_files` names rather than downloading them, and
    /// links them into the store rather than writing them again,
    /// replacing any set before. Manifests and configs still come over
    /// HTTP, with the registry's checks.
    pub fn set_blob_files(&self, registry: &str, blob_files: BlobFiles) {
        self.blob_files.set(registry, blob_files);
    }

    /// Sets (or replaces) the credentials for `registry` (`host[:port]`),
    /// for the pulls that start from now: an agent is handed fresh ones
    /// for its cluster's registry whenever its channel opens.
    pub fn set_credentials(&self, registry: &str, credentials: remote::Credentials) {
        if let Ok(mut o) = self.options.write() {
            o.credentials.retain(|(r, _)| r != registry);
            o.credentials.push((registry.to_string(), credentials));
        }
    }

    /// Makes the client for `registry` (`host[:port]`) now, with the
    /// settings and credentials given so far, so the first pull from it
    /// does not ([`remote::prepare_client`]). Call it off the async
    /// threads: it is CPU work.
    pub fn prepare(&self, registry: &str) {
        let options = self.options.read().map(|o| o.clone()).unwrap_or_default();
        if let Err(e) = remote::prepare_client(registry, &options) {
            tracing::debug!("cannot prepare a client for {registry}: {e}");
        }
    }

    /// Speaks plain HTTP to `registry` (`host:port`) from now, as to
    /// loopback ones (a cluster's own registry on its network).
    pub fn allow_plain_http(&self, registry: &str) {
        if let Ok(mut o) = self.options.write()
            && !o.insecure_registries.iter().any(|r| r == registry)
        {
            o.insecure_registries.push(registry.to_string());
        }
    }

    /// A puller into `store`, reaching registries with `options`.
    pub fn new(store: ImageStore, options: RemoteOptions) -> Self {
        Puller {
            store,
            options: std::sync::RwLock::new(options),
            in_flight: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
            tag_resolver: InProcess::default(),
            blob_files: InProcess::default(),
            asked: Questions::new(),
        }
    }

    /// The store it fills.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    fn lock_for(&self, reference: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.in_flight.lock() {
            Ok(mut map) => Arc::clone(map.entry(reference.to_string()).or_default()),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The image, from the store if it was pulled before, else pulled now
    /// (`prefer-cached`).
    pub async fn ensure(
        &self,
        reference: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(ImageRecord, Vec<u8>), RemoteError> {
        let checked = self.check(reference, PullBehavior::PreferCached).await?;
        self.ensure_checked(checked, progress)
            .await
            .map(|(record, wasm, _)| (record, wasm))
    }

    /// Whether a task starting now may use the stored image of
    /// `reference` under `behavior`: asks the registry what the tag names
    /// if the behaviour says to. Fails only if the registry must be asked
    /// and cannot answer (under `default`, only when nothing is stored).
    pub async fn check(
        &self,
        reference: &str,
        behavior: PullBehavior,
    ) -> Result<Checked, RemoteError> {
        let named = self.named(reference)?;
        let stored = self.stored(&named);
        let mut checked = Checked {
            named: Arc::clone(&named),
            current: None,
            names: None,
            resolve: std::time::Duration::ZERO,
        };
        // A tag is asked about under default and always; a digest, which
        // names one image forever, only under always (ECS pulls it then,
        // failing the task if the registry no longer has it).
        let asked = match (&named.tag, &named.digest) {
            (Some(tag), _) if behavior.asks() => tag,
            (None, Some(digest)) if behavior == PullBehavior::Always => digest,
            _ => {
                checked.current = stored;
                return Ok(checked);
            }
        };
        let started = std::time::Instant::now();
        match self.resolve(&named, asked).await {
            Ok(names) if named.tag.is_some() => {
                checked.current = stored.filter(|r| r.reference_digest == names);
                checked.names = Some(names);
            }
            Ok(_) => checked.current = stored,
            Err(e) if behavior == PullBehavior::Default && stored.is_some() => {
                tracing::warn!(reference = %named.whole, "starting from the stored image: {e}");
                checked.current = stored;
            }
            Err(e) => return Err(e),
        }
        checked.resolve = started.elapsed();
        Ok(checked)
    }

    /// The store's record for `named`; for a digest, also the same image
    /// stored under another name of its repository (pulled by tag).
    fn stored(&self, named: &Named) -> Option<ImageRecord> {
        self.store.get(&named.whole).ok().flatten().or_else(|| {
            let digest = named.digest.as_deref()?;
            self.store
                .find(&named.registry, &named.repository, digest)
                .ok()
                .flatten()
        })
    }

    /// Looks at the store again for what `checked` found missing or stale:
    /// another start may have pulled it since.
    pub fn recheck(&self, checked: &mut Checked) {
        if checked.current.is_some() {
            return;
        }
        let stored = self.stored(&checked.named);
        checked.current = match &checked.names {
            Some(names) => stored.filter(|r| r.reference_digest == *names),
            None => stored,
        };
    }

    /// The image `checked` found: from the store if it may be used, else
    /// pulled now; saying where it came from and how long each part took.
    pub async fn ensure_checked(
        &self,
        mut checked: Checked,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(ImageRecord, Vec<u8>, PullReport), RemoteError> {
        let lock = self.lock_for(&checked.named.whole);
        let _one_at_a_time = lock.lock().await;
        let started = std::time::Instant::now();
        self.recheck(&mut checked);
        let named = &checked.named;
        // The stored image the check allows; else, when the tag names an
        // image stored under another of its names, that one (no download).
        let held = checked.current.take().or_else(|| {
            let names = checked.names.as_deref()?;
            self.store
                .find(&named.registry, &named.repository, names)
                .ok()
                .flatten()
        });
        if let Some(mut record) = held
            && let Ok(wasm) = self.store.read_wasm(&record)
        {
            if record.reference != named.whole {
                // Found under another name: recorded under this one too.
                record = self.store.alias(&record, &named.whole).unwrap_or(record);
            }
            let report = PullReport {
                pulled: false,
                bytes: 0,
                resolve: checked.resolve,
                download: std::time::Duration::ZERO,
                // Reading the binary and checking its digest.
                store: started.elapsed(),
            };
            return Ok((record, wasm, report));
        }
        let (record, wasm, mut report) = self.fetch(&checked.named.whole, progress).await?;
        report.resolve += checked.resolve;
        Ok((record, wasm, report))
    }

    /// What `tag` (or digest) of `named`'s repository names now: from the
    /// registry's resolver if it has one, else by HTTP.
    ///
    /// Over HTTP, starts of one reference share questions: a start waits
    /// for the question in flight (asked before it arrived, so its answer
    /// may predate a push it must see), then takes the answer of the next
    /// one, asked after it arrived, by whichever start got there first. A
    /// thousand tasks of one image starting at once ask twice, not a
    /// thousand times (which the registry's per-client connection limit
    /// would refuse).
    async fn resolve(&self, named: &Named, tag: &str) -> Result<String, RemoteError> {
        let resolver = self.tag_resolver.of(&named.registry);
        if let Some(names) = resolver.and_then(|resolve| resolve(&named.repository, tag)) {
            return Ok(names);
        }
        let options = self.options.read().map(|o| o.clone()).unwrap_or_default();
        self.asked
            .ask(&named.whole, || async {
                remote::resolve(&named.whole, &options)
                    .await
                    .map(|d| d.to_string())
            })
            .await
    }

    /// Pulls the image now, whatever the store holds.
    pub async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(ImageRecord, Vec<u8>), RemoteError> {
        let whole = self.whole(reference)?;
        let lock = self.lock_for(&whole);
        let _one_at_a_time = lock.lock().await;
        self.fetch(&whole, progress)
            .await
            .map(|(record, wasm, _)| (record, wasm))
    }

    async fn fetch(
        &self,
        whole: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(ImageRecord, Vec<u8>, PullReport), RemoteError> {
        let options = self.options.read().map(|o| o.clone()).unwrap_or_default();
        let named = self.named(whole)?;
        let local = self.blob_files.of(&named.registry);
        let pulled = remote::pull_from(whole, &options, progress, local.as_ref()).await?;
        let stored = std::time::Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let record = self
            .store
            .put(&pulled, now)
            .map_err(|e| RemoteError::Registry {
                reference: whole.to_string(),
                detail: format!("cannot store the image: {e}"),
            })?;
        let report = PullReport {
            pulled: true,
            bytes: pulled.wasm.len() as u64,
            resolve: pulled.resolve,
            download: pulled.download,
            store: stored.elapsed(),
        };
        Ok((record, pulled.wasm, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled(reference: &str, wasm: &[u8]) -> Pulled {
        Pulled {
            reference: reference.into(),
            manifest_digest: Digest::sha256_of(wasm),
            reference_digest: Digest::sha256_of(wasm),
            wasm: wasm.to_vec(),
            wasm_digest: Digest::sha256_of(wasm),
            layer_file: None,
            run: Default::default(),
            resolve: Default::default(),
            download: Default::default(),
        }
    }

    /// Fifty callers arriving while a question is in flight wait for it,
    /// then share one more, asked after they all arrived: two in all.
    /// Deterministic: one thread, and the first question held open until
    /// every caller is in line.
    #[test]
    fn callers_at_once_share_the_next_question() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let questions = Arc::new(Questions::<usize>::new());
            let asked = Arc::new(AtomicUsize::new(0));
            let in_line = Arc::new(AtomicUsize::new(0));
            let (open, held) = tokio::sync::watch::channel(false);
            let callers: Vec<_> = (0..50)
                .map(|_| {
                    let (questions, asked, in_line) = (
                        Arc::clone(&questions),
                        Arc::clone(&asked),
                        Arc::clone(&in_line),
                    );
                    let mut held = held.clone();
                    tokio::spawn(async move {
                        in_line.fetch_add(1, SeqCst);
                        questions
                            .ask("app:v1", || async move {
                                let n = asked.fetch_add(1, SeqCst) + 1;
                                // The first question stays open until all
                                // fifty are in line.
                                let _ = held.wait_for(|open| *open).await;
                                n
                            })
                            .await
                    })
                })
                .collect();
            while in_line.load(SeqCst) < 50 {
                tokio::task::yield_now().await;
            }
            open.send(true).unwrap();
            let mut answers = Vec::new();
            for caller in callers {
                answers.push(caller.await.unwrap());
            }
            assert_eq!(asked.load(SeqCst), 2, "two questions for fifty callers");
            assert_eq!(
                answers.iter().filter(|a| **a == 1).count(),
                1,
                "{answers:?}"
            );
            assert_eq!(
                answers.iter().filter(|a| **a == 2).count(),
                49,
                "{answers:?}"
            );
            // A caller after them asks again.
            let again = questions.ask("app:v1", || async { 3 }).await;
            assert_eq!(again, 3);
        });
    }

    /// A record read before is given again only while its file is the one
    /// read: a pull that replaces it, or its removal, is seen at once.
    #[test]
    fn a_record_read_again_is_the_files_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        let reference = "127.0.0.1:5050/app:latest";
        assert_eq!(store.get(reference).unwrap(), None);
        let first = store.put(&pulled(reference, b"one"), 1).unwrap();
        assert_eq!(store.get(reference).unwrap().as_ref(), Some(&first));
        assert_eq!(store.get(reference).unwrap().as_ref(), Some(&first));
        let second = store.put(&pulled(reference, b"two"), 2).unwrap();
        assert_ne!(first.wasm_digest, second.wasm_digest);
        assert_eq!(store.get(reference).unwrap(), Some(second));
        // Another process's store (no records read) sees the same.
        let other = ImageStore::new(dir.path());
        other.put(&pulled(reference, b"three"), 3).unwrap();
        assert_eq!(store.get(reference).unwrap().unwrap().pulled_at, 3);
        std::fs::remove_file(store.record_path(reference)).unwrap();
        assert_eq!(store.get(reference).unwrap(), None);
    }
}
