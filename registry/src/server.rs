//! The OCI distribution API over HTTP: routing, and one handler per
//! endpoint of the spec (v1.1: pull, push, content discovery, content
//! management).

use crate::auth::{Action, Auth, AuthMode, Caller, ChallengeKind};
use crate::blobs::Blobs;
use crate::db::{Db, NewManifest, Recorded};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Code, Error, Failure, Internal, Result};
use crate::manifest::{self, MAX_MANIFEST_BYTES};
use crate::names::{valid_repository, valid_tag};
use crate::repos::RepositorySettings;
use crate::scan::SCAN_REPORT_TYPE;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use skiff_http_server::{CollectError, RequestBody};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The response body of every endpoint.
pub type Body = Full<Bytes>;
type Response = http::Response<Body>;

/// How a registry behaves.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where blobs and metadata live (`DATA_DIR/registry` under skiff).
    pub root: PathBuf,
    /// Create a repository on its first push (ECR creates them only by
    /// API unless configured; skiff defaults to creating them). Default: on.
    pub create_on_push: bool,
    /// How long a blob no manifest references is kept after it was last
    /// uploaded or mounted, so a push in progress never loses its layers to
    /// garbage collection. Default: 1 hour.
    pub gc_grace: Duration,
    /// Who must authenticate. Default: nobody.
    pub auth: AuthMode,
    /// How a 401 asks for credentials. Default: a bearer challenge.
    pub challenge: ChallengeKind,
    /// The settings of repositories created by a push. Default: ECR's
    /// (mutable tags, no scan on push).
    pub default_settings: RepositorySettings,
    /// How often a serving registry applies lifecycle policies and
    /// collects garbage (it also does after every delete). Default: 10
    /// minutes.
    pub maintenance_interval: Duration,
    /// An upload nobody has sent to or asked about for this long is
    /// dropped, with its bytes, at the next maintenance. Default: 24 hours.
    pub upload_idle_limit: Duration,
}

impl RegistryConfig {
    /// Defaults, storing under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            root: root.into(),
            create_on_push: true,
            gc_grace: Duration::from_secs(3600),
            auth: AuthMode::Off,
            challenge: ChallengeKind::Bearer,
            default_settings: RepositorySettings::default(),
            maintenance_interval: Duration::from_secs(600),
            upload_idle_limit: Duration::from_secs(24 * 3600),
        }
    }
}

/// An upload in progress, with the repository it belongs to.
type Session = (String, Arc<tokio::sync::Mutex<Upload>>);

/// An upload in progress.
struct Upload {
    repo: String,
    path: PathBuf,
    file: Option<std::fs::File>,
    offset: u64,
    /// sha256 of everything so far (the common digest).
    hasher: Option<Hasher>,
    /// When a request last used it.
    touched: std::time::Instant,
}

/// How many times an image is handed to the push hook before it is given
/// up on: each time but the last, the process ended before the hook did.
pub(crate) const HAND_OVER_ATTEMPTS: u32 = 3;

pub(crate) struct Inner {
    pub(crate) config: RegistryConfig,
    pub(crate) db: Db,
    pub(crate) blobs: Blobs,
    /// Uploads in progress by id.
    uploads: Mutex<HashMap<String, Session>>,
    /// Commits and manifest pushes hold it shared, garbage collection
    /// exclusively: a blob is never swept between being checked and being
    /// referenced.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    /// Manifests and blobs served (GET), for observing pulls.
    pub(crate) manifests_served: std::sync::atomic::AtomicU64,
    pub(crate) blobs_served: std::sync::atomic::AtomicU64,
    pub(crate) auth: Auth,
    /// Scans run one at a time.
    pub(crate) scan_slots: tokio::sync::Semaphore,
    /// Told of each image pushed ([`crate::Registry::on_push`]), one
    /// image at a time.
    pub(crate) on_push: std::sync::RwLock<Option<crate::PushHook>>,
    pub(crate) push_turns: tokio::sync::Semaphore,
    /// Wakes the maintenance loop (after deletes).
    pub(crate) maintenance: tokio::sync::Notify,
    /// Held while this registry serves: one server per directory, and
    /// other processes leave garbage collection to it.
    pub(crate) serving: Mutex<Option<std::fs::File>>,
}

/// What a push that creates a repository is, for its creation template:
/// another skiff's replication says so in its user agent.
fn push_kind(headers: &HeaderMap) -> &'static str {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if agent.starts_with(crate::templates::REPLICATION_AGENT) {
        crate::templates::REPLICATION
    } else {
        crate::templates::CREATE_ON_PUSH
    }
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub(crate) fn open(config: RegistryConfig) -> std::result::Result<Inner, Internal> {
        std::fs::create_dir_all(&config.root)?;
        let blobs = Blobs::open(&config.root)?;
        let db = Db::open(&config.root.join("registry.db"))?;
        let auth = Auth::open(&config.root, config.auth, config.challenge)?;
        Ok(Inner {
            config,
            db,
            blobs,
            uploads: Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
            manifests_served: Default::default(),
            blobs_served: Default::default(),
            auth,
            scan_slots: tokio::sync::Semaphore::new(1),
            on_push: std::sync::RwLock::new(None),
            push_turns: tokio::sync::Semaphore::new(1),
            maintenance: tokio::sync::Notify::new(),
            serving: Mutex::new(None),
        })
    }

    /// Takes the directory's serve lock: fails if another process serves
    /// it. Uploads a crash interrupted are discarded then (nothing
    /// survives a restart of an upload but its half-written file).
    pub(crate) fn start_serving(&self) -> std::io::Result<()> {
        let Some(file) = self.lock_directory()? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another registry is already serving {}",
                    self.config.root.display()
                ),
            ));
        };
        self.blobs.clear_uploads()?;
        *self
            .serving
            .lock()
            .map_err(|_| std::io::Error::other("serve lock poisoned"))? = Some(file);
        Ok(())
    }

    /// Locks the directory against other processes (an advisory lock on
    /// `serve.lock`), or None if one holds it.
    pub(crate) fn lock_directory(&self) -> std::io::Result<Option<std::fs::File>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.config.root.join("serve.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub(crate) fn stop_serving(&self) {
        if let Ok(mut serving) = self.serving.lock() {
            *serving = None;
        }
    }

    /// Is this process the one serving the directory?
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.lock().is_ok_and(|s| s.is_some())
    }

    /// Runs blocking work (disk, database) off the async threads.
    pub(crate) async fn off_thread<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> std::result::Result<T, Internal> + Send + 'static,
    ) -> std::result::Result<T, Internal> {
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Internal::Other(format!("blocking task: {e}")))?
    }

    fn has_push_hook(&self) -> bool {
        self.on_push.read().is_ok_and(|h| h.is_some())
    }

    /// Hands the Wasm binary of the image just pushed to the push hook,
    /// if there is one and the image holds a binary skiff runs: off the
    /// push's path, which has been answered whatever happens here. Once
    /// the hook is done (or the image turns out to hold nothing to hand
    /// over, or is gone), the image leaves the queue the push put it in.
    fn announce_push(self: &Arc<Self>, repo: &str, digest: &str) {
        let (inner, repo, digest) = (Arc::clone(self), repo.to_string(), digest.to_string());
        tokio::spawn(async move { inner.hand_over(repo, digest).await });
    }

    /// [`Inner::announce_push`]'s work, in the hook's turn.
    async fn hand_over(self: &Arc<Self>, repo: String, digest: String) {
        let Some(hook) = self.on_push.read().ok().and_then(|h| h.clone()) else {
            return;
        };
        let Ok(_turn) = self.push_turns.acquire().await else {
            return;
        };
        // Counted before the hook runs: an image whose hook ends the
        // process (a compile that runs out of memory) is not handed over
        // at every start for ever.
        let (r, d) = (repo.clone(), digest.clone());
        let attempts = match self.off_thread(move |i| i.db.announcing(&r, &d)).await {
            // Handed over and done with since it was queued.
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%repo, %digest, "cannot read the push hook's queue: {e}");
                return;
            }
        };
        if attempts > HAND_OVER_ATTEMPTS {
            tracing::warn!(%repo, %digest, "given up: the process ended each of the last {HAND_OVER_ATTEMPTS} times this pushed image was handed to the push hook (skiff serve: its compile on push; its first task compiles it instead)");
        } else {
            let (r, d) = (repo.clone(), digest.clone());
            match self.off_thread(move |i| i.image_wasm(&r, &d)).await {
                Ok(Some(crate::scan::ImageWasm::Binary(wasm))) => {
                    hook(crate::PushedImage {
                        repository: repo.clone(),
                        digest: digest.clone(),
                        wasm,
                        resumed: attempts > 1,
                    })
                    .await;
                }
                Ok(Some(crate::scan::ImageWasm::Unsupported(why))) => {
                    tracing::debug!(%repo, %digest, "pushed, not a Wasm image skiff runs: {why}");
                }
                Ok(Some(crate::scan::ImageWasm::Unreadable(why))) => {
                    tracing::warn!(%repo, %digest, "pushed, but its Wasm binary cannot be read: {why}");
                }
                // Deleted already.
                Ok(None) => {}
                Err(e) => {
                    // Left queued: tried again when the registry next serves.
                    tracing::warn!(%repo, %digest, "cannot read a pushed image: {e}");
                    return;
                }
            }
        }
        let (r, d) = (repo.clone(), digest.clone());
        if let Err(e) = self.off_thread(move |i| i.db.announced(&r, &d)).await {
            tracing::warn!(%repo, %digest, "cannot take a pushed image off the push hook's queue: {e}");
        }
    }

    /// Hands the push hook, in push order, the images a crash or a restart
    /// kept from it (their pushes were answered; the hook had not finished).
    /// Pushes that arrive meanwhile take their turns among them.
    pub(crate) async fn announce_pending(self: &Arc<Self>) {
        if !self.has_push_hook() {
            return;
        }
        match self.off_thread(|i| i.db.announcements()).await {
            Ok(pending) => {
                // Those about to be given up are not counted: they are not
                // handed over.
                let again = pending
                    .iter()
                    .filter(|(_, _, attempts)| *attempts < HAND_OVER_ATTEMPTS)
                    .count();
                if again > 0 {
                    tracing::info!(
                        images = again,
                        "handing over again the pushed images the push hook (skiff serve: compile on push) had not finished when the registry last stopped"
                    );
                }
                // In push order: one after the other, each in its turn.
                for (repo, digest, _) in pending {
                    self.hand_over(repo, digest).await;
                }
            }
            Err(e) => tracing::warn!("cannot list the push hook's queue: {e}"),
        }
    }

    /// [`Inner::off_thread`], for handlers.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> std::result::Result<T, Internal> + Send + 'static,
    ) -> Result<T> {
        self.off_thread(f).await.map_err(Failure::Internal)
    }

    pub(crate) async fn handle(self: &Arc<Self>, req: skiff_http_server::Request) -> Response {
        let method = req.method().clone();
        let mut response = match self.route(req).await {
            Ok(r) => r,
            Err(Failure::Client(e)) => error_response(&e),
            Err(Failure::Internal(e)) => {
                tracing::error!("registry failure: {e}");
                let e = Error::new(
                    Code::Unsupported,
                    "the registry failed to serve this request",
                )
                .with_status(StatusCode::INTERNAL_SERVER_ERROR);
                error_response(&e)
            }
        };
        response.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        if method == Method::HEAD {
            *response.body_mut() = Full::new(Bytes::new());
        }
        response
    }

    async fn route(self: &Arc<Self>, req: skiff_http_server::Request) -> Result<Response> {
        let path = percent_decode(req.uri().path());
        let mut query = parse_query(req.uri().query());
        let method = req.method().clone();
        if path == "/v2/token" && matches!(method, Method::GET | Method::POST) {
            return self.token(req).await;
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Err(not_found(&path).into());
        };
        if rest.is_empty() {
            self.authorize(req.headers(), None, &[]).await?;
            return Ok(json_response(StatusCode::OK, "{}".into()));
        }
        let route = Route::parse(rest).ok_or_else(|| not_found(&path))?;
        let name = route.name();
        if !valid_repository(name) {
            return Err(Error::new(
                Code::NameInvalid,
                format!("invalid repository name {name:?}"),
            )
            .into());
        }
        let caller = self
            .authorize(req.headers(), Some(name), route.actions(&method))
            .await?;
        // Mounting from a repository the caller may not pull is an
        // ordinary upload instead (as the spec allows). Without `from`
        // the registry looks in every repository, so only a caller who
        // may pull them all gets that.
        let may_mount = match query.get("from") {
            Some(from) => self.auth.allows(&caller, Some(from), Action::Pull),
            None => self.auth.mode() == AuthMode::Off || matches!(caller, Caller::Token),
        };
        if !may_mount {
            query.remove("mount");
        }
        match (route, method) {
            (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => {
                self.get_manifest(name, reference).await
            }
            (Route::Manifest { name, reference }, Method::PUT) => {
                self.put_manifest(name, reference, req).await
            }
            (Route::Manifest { name, reference }, Method::DELETE) => {
                self.delete_manifest(name, reference).await
            }
            (Route::Blob { name, digest }, m @ (Method::GET | Method::HEAD)) => {
                self.get_blob(name, digest, req.headers(), m == Method::HEAD)
                    .await
            }
            (Route::Blob { name, digest }, Method::DELETE) => self.delete_blob(name, digest).await,
            (Route::Uploads { name, id: None }, Method::POST) => {
                self.start_upload(name, &query, req).await
            }
            (Route::Uploads { name, id: Some(id) }, Method::PATCH) => {
                self.patch_upload(name, id, req).await
            }
            (Route::Uploads { name, id: Some(id) }, Method::PUT) => {
                self.finish_upload(name, id, &query, req).await
            }
            (Route::Uploads { name, id: Some(id) }, Method::GET) => {
                self.upload_status(name, id).await
            }
            (Route::Uploads { name, id: Some(id) }, Method::DELETE) => {
                self.cancel_upload(name, id).await
            }
            (Route::Tags { name }, Method::GET) => self.list_tags(name, &query).await,
            (Route::Referrers { name, digest }, Method::GET) => {
                self.referrers(name, digest, &query).await
            }
            (_, method) => Err(Error::new(
                Code::Unsupported,
                format!("{method} is not supported on {path}"),
            )
            .into()),
        }
    }

    // ---- authentication -----------------------------------------------

    /// Who is asking, if they may do `actions` on `repo` (None: `/v2/`);
    /// otherwise the 401 that tells them how to authenticate.
    async fn authorize(
        self: &Arc<Self>,
        headers: &HeaderMap,
        repo: Option<&str>,
        actions: &[Action],
    ) -> Result<Caller> {
        if self.auth.mode() == AuthMode::Off {
            return Ok(Caller::Anonymous);
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let caller = self
            .blocking(move |i| i.auth.caller(&i.db, authorization.as_deref(), now()))
            .await?;
        let caller = match caller {
            Ok(c) => c,
            Err(why) => {
                return Err(self.auth.challenge(&host, repo, actions, why).into());
            }
        };
        let allowed = if actions.is_empty() {
            self.auth.allows(&caller, None, Action::Pull)
        } else {
            actions.iter().all(|a| self.auth.allows(&caller, repo, *a))
        };
        if allowed {
            return Ok(caller);
        }
        let why = match (&caller, repo) {
            (Caller::Anonymous, _) | (_, None) => Error::new(
                Code::Unauthorized,
                "authentication required (user AWS, a token from `skiff registry token`)",
            ),
            (_, Some(repo)) => Error::new(
                Code::Unauthorized,
                format!(
                    "the token does not grant {} on {repo}",
                    actions
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        };
        Err(self.auth.challenge(&host, repo, actions, why).into())
    }

    /// `GET`/`POST /v2/token`: the Docker token endpoint.
    async fn token(self: &Arc<Self>, req: skiff_http_server::Request) -> Result<Response> {
        if self.auth.mode() == AuthMode::Off {
            return Err(not_found("/v2/token (authentication is off)").into());
        }
        let mut params: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        if req.method() == Method::POST {
            let body = read_limited(req.into_body(), 64 << 10).await?;
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
        let answer = self
            .blocking(move |i| {
                i.auth
                    .token_endpoint(&i.db, authorization.as_deref(), &params, now())
            })
            .await?;
        match answer {
            Ok(body) => Ok(json_response(StatusCode::OK, body)),
            Err(e) => Err(e.into()),
        }
    }

    // ---- repositories -------------------------------------------------

    async fn require_repository(self: &Arc<Self>, name: &str) -> Result<()> {
        let n = name.to_string();
        if self.blocking(move |i| i.db.repository_exists(&n)).await? {
            Ok(())
        } else {
            Err(name_unknown(name).into())
        }
    }

    /// A push into `name` may start: the repository exists, or will be
    /// created by the push's first success ([`Inner::created_by_push`]),
    /// so a push that fails leaves no empty repository behind.
    async fn pushable(self: &Arc<Self>, name: &str) -> Result<()> {
        if self.config.create_on_push {
            Ok(())
        } else {
            self.require_repository(name).await
        }
    }

    /// Creates `name` when pushes create repositories (from the creation
    /// template for `kind` that applies); called in the same blocking call
    /// that stores what was pushed into it.
    fn created_by_push(&self, name: &str, kind: &'static str) -> std::result::Result<(), Internal> {
        if self.config.create_on_push {
            self.create_as(name, kind)?;
        }
        Ok(())
    }

    // ---- manifests ----------------------------------------------------

    async fn get_manifest(self: &Arc<Self>, name: &str, reference: &str) -> Result<Response> {
        check_reference(reference)?;
        if let Some(rule) = self.cache_rule_for(name).await? {
            self.pull_through(&rule, name, reference).await?;
        }
        self.require_repository(name).await?;
        let (n, r) = (name.to_string(), reference.to_string());
        let found = self.blocking(move |i| i.db.manifest(&n, &r)).await?;
        let Some(row) = found else {
            return Err(Error::new(
                Code::ManifestUnknown,
                format!("manifest {reference} is not in {name}"),
            )
            .into());
        };
        let digest: Digest = row
            .digest
            .parse()
            .map_err(|e| Internal::Other(format!("stored digest: {e}")))?;
        let bytes = self.blocking(move |i| Ok(i.blobs.read(&digest)?)).await?;
        self.manifests_served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut response = http::Response::new(Full::new(Bytes::from(bytes)));
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, header_value(&row.media_type)?);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(row.size));
        h.insert("docker-content-digest", header_value(&row.digest)?);
        h.insert(header::ETAG, header_value(&format!("\"{}\"", row.digest))?);
        Ok(response)
    }

    async fn put_manifest(
        self: &Arc<Self>,
        name: &str,
        reference: &str,
        req: skiff_http_server::Request,
    ) -> Result<Response> {
        let kind = push_kind(req.headers());
        let by_digest: Option<Digest> = if reference.contains(':') {
            Some(
                reference
                    .parse()
                    .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?,
            )
        } else if valid_tag(reference) {
            None
        } else {
            return Err(
                Error::new(Code::ManifestInvalid, format!("invalid tag {reference:?}")).into(),
            );
        };
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let bytes = read_limited(req.into_body(), MAX_MANIFEST_BYTES).await?;
        let parsed = manifest::parse(&bytes, &content_type)?;
        let digest = match &by_digest {
            Some(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                if &actual != d {
                    return Err(Error::new(
                        Code::DigestInvalid,
                        format!("the manifest's digest is {actual}, not {d}"),
                    )
                    .into());
                }
                actual
            }
            None => Digest::sha256_of(&bytes),
        };
        self.pushable(name).await?;

        let _shared = self.gc_lock.read().await;
        // Everything it references must be here (or embedded, or foreign).
        for (blob, size, elsewhere) in &parsed.blobs {
            if *elsewhere {
                continue;
            }
            let (n, b) = (name.to_string(), blob.clone());
            match self.blocking(move |i| i.db.linked_blob(&n, &b)).await? {
                Some(stored) if stored == *size => {}
                Some(stored) => {
                    return Err(Error::new(
                        Code::ManifestInvalid,
                        format!("blob {blob} has {stored} bytes, not the {size} the manifest says"),
                    )
                    .into());
                }
                None => {
                    return Err(Error::new(
                        Code::ManifestBlobUnknown,
                        format!("blob {blob} is not in {name}"),
                    )
                    .into());
                }
            }
        }
        for child in &parsed.manifests {
            let (n, c) = (name.to_string(), child.clone());
            if !self.blocking(move |i| i.db.has_manifest(&n, &c)).await? {
                return Err(Error::new(
                    Code::ManifestBlobUnknown,
                    format!("manifest {child} is not in {name}"),
                )
                .into());
            }
        }
        let children: Vec<Digest> = parsed
            .blobs
            .iter()
            .map(|(d, _, _)| d.clone())
            .chain(parsed.manifests.iter().cloned())
            .collect();
        let (n, d, tag) = (
            name.to_string(),
            digest.clone(),
            by_digest.is_none().then(|| reference.to_string()),
        );
        let stored = parsed.clone();
        let size = bytes.len() as u64;
        let scan =
            parsed.subject.is_none() && parsed.artifact_type.as_deref() != Some(SCAN_REPORT_TYPE);
        // Queued for the push hook with the manifest, so that a crash before
        // the hook is done leaves it queued (see `Inner::announce_pending`).
        let announce = !parsed.is_index() && parsed.subject.is_none() && self.has_push_hook();
        let (recorded, scan) = self
            .blocking(move |i| {
                i.blobs.put(&d, &bytes)?;
                i.created_by_push(&n, kind)?;
                i.db.put_manifest(&NewManifest {
                    repo: &n,
                    digest: &d,
                    media_type: &stored.media_type,
                    artifact_type: stored.artifact_type.as_deref(),
                    config_media_type: stored.config_media_type.as_deref(),
                    size,
                    subject: stored.subject.as_ref(),
                    annotations: stored.annotations.clone(),
                    children,
                    tag: tag.as_deref(),
                    now: now(),
                    announce,
                })
                .and_then(|recorded| {
                    let scan = scan
                        && recorded == Recorded::Stored
                        && i.db
                            .repository(&n)?
                            .is_some_and(|r| r.settings.scan_on_push);
                    Ok((recorded, scan))
                })
            })
            .await?;
        drop(_shared);
        // The push has succeeded whatever happens to its scan.
        if scan && let Err(e) = self.start_scan(name, &digest.to_string()).await {
            tracing::warn!(repository = name, %digest, "cannot start a scan: {e}");
        }
        if recorded == Recorded::Stored && announce {
            self.announce_push(name, &digest.to_string());
        }
        match recorded {
            Recorded::Stored => {}
            Recorded::TagImmutable => {
                return Err(crate::repos::tag_already_exists(reference, name).into());
            }
            Recorded::NoRepository => return Err(repository_gone(name).into()),
        }

        let mut response = empty(StatusCode::CREATED);
        let h = response.headers_mut();
        h.insert(
            header::LOCATION,
            header_value(&format!("/v2/{name}/manifests/{digest}"))?,
        );
        h.insert("docker-content-digest", header_value(&digest.to_string())?);
        if let Some(subject) = &parsed.subject {
            h.insert("oci-subject", header_value(&subject.to_string())?);
        }
        Ok(response)
    }

    async fn delete_manifest(self: &Arc<Self>, name: &str, reference: &str) -> Result<Response> {
        check_reference(reference)?;
        self.require_repository(name).await?;
        let (n, r) = (name.to_string(), reference.to_string());
        let deleted = if reference.contains(':') {
            let d: Digest = reference
                .parse()
                .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?;
            // As ECR (ImageReferencedByManifestList), and as `skiff repo
            // rmi`: an image an index lists stays until the index goes,
            // so the index never points at nothing.
            let listed = self
                .blocking(move |i| {
                    if i.db.child_manifests(&n)?.contains(&d.to_string()) {
                        return Ok(None);
                    }
                    i.db.delete_manifest(&n, &d).map(Some)
                })
                .await?;
            match listed {
                Some(deleted) => deleted,
                None => {
                    return Err(Error::new(
                        Code::Denied,
                        format!(
                            "manifest {reference} is listed by an image index in {name}: delete the index first"
                        ),
                    )
                    .with_status(StatusCode::CONFLICT)
                    .into());
                }
            }
        } else {
            self.blocking(move |i| i.db.delete_tag(&n, &r)).await?
        };
        if !deleted {
            return Err(Error::new(
                Code::ManifestUnknown,
                format!("manifest {reference} is not in {name}"),
            )
            .into());
        }
        self.maintenance.notify_one();
        Ok(empty(StatusCode::ACCEPTED))
    }

    // ---- blobs --------------------------------------------------------

    async fn get_blob(
        self: &Arc<Self>,
        name: &str,
        digest: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response> {
        let digest: Digest = digest
            .parse()
            .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?;
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Everything a blob request needs from the disk in one trip off the
        // async threads: on a loopback pull of a few MiB, each trip is a
        // measurable share of the time to first byte.
        let (n, d) = (name.to_string(), digest.clone());
        let lookup = self
            .blocking(move |i| {
                if !i.db.repository_exists(&n)? {
                    return Ok(BlobLookup::NoRepository);
                }
                let Some(size) = i.db.linked_blob(&n, &d)? else {
                    return Ok(BlobLookup::NoBlob);
                };
                if head {
                    // A client that finds a blob here skips uploading it and
                    // will reference it soon: keep it from garbage collection
                    // as if it had just been uploaded.
                    i.db.touch_link(&n, &d, now())?;
                }
                let range = match range.as_deref().map(|spec| parse_range(spec, size)) {
                    None | Some(RangeAsk::Whole) => None,
                    Some(RangeAsk::Part(first, last)) => Some((first, last)),
                    Some(RangeAsk::Unsatisfiable) => {
                        let spec = range.unwrap_or_default();
                        return Ok(BlobLookup::Unsatisfiable { spec, size });
                    }
                };
                let (start, len) = range.map_or((0, size), |(start, end)| (start, end - start + 1));
                // A HEAD sends no body, so nothing is read for it.
                let body = if head || len == 0 {
                    Bytes::new()
                } else {
                    match i.blobs.map(&d, start, Some(len)) {
                        Ok(body) => body,
                        // Collected since the lookup: gone, as it would be
                        // for a request a moment later.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Ok(BlobLookup::NoBlob);
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                Ok(BlobLookup::Found {
                    size,
                    range,
                    len,
                    body,
                })
            })
            .await?;
        let (size, range, len, body) = match lookup {
            BlobLookup::NoRepository => return Err(name_unknown(name).into()),
            BlobLookup::NoBlob => {
                return Err(Error::new(
                    Code::BlobUnknown,
                    format!("blob {digest} is not in {name}"),
                )
                .into());
            }
            BlobLookup::Unsatisfiable { spec, size } => {
                let mut response = error_response(&Error::new(
                    Code::RangeInvalid,
                    format!("range {spec} is outside the blob's {size} bytes"),
                ));
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{size}"))?,
                );
                return Ok(response);
            }
            BlobLookup::Found {
                size,
                range,
                len,
                body,
            } => (size, range, len, body),
        };
        self.blobs_served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut response = http::Response::new(Full::new(body));
        if range.is_some() {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert("docker-content-digest", header_value(&digest.to_string())?);
        h.insert(header::ETAG, header_value(&format!("\"{digest}\""))?);
        if let Some((start, end)) = range {
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{size}"))?,
            );
        }
        Ok(response)
    }

    async fn delete_blob(self: &Arc<Self>, name: &str, digest: &str) -> Result<Response> {
        let digest: Digest = digest
            .parse()
            .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?;
        self.require_repository(name).await?;
        let (n, d) = (name.to_string(), digest.clone());
        if !self.blocking(move |i| i.db.unlink_blob(&n, &d)).await? {
            return Err(
                Error::new(Code::BlobUnknown, format!("blob {digest} is not in {name}")).into(),
            );
        }
        self.maintenance.notify_one();
        Ok(empty(StatusCode::ACCEPTED))
    }

    // ---- uploads ------------------------------------------------------

    async fn start_upload(
        self: &Arc<Self>,
        name: &str,
        query: &HashMap<String, String>,
        req: skiff_http_server::Request,
    ) -> Result<Response> {
        self.pushable(name).await?;
        let kind = push_kind(req.headers());
        if let Some(mount) = query.get("mount") {
            let digest: Digest = mount
                .parse()
                .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?;
            let from = query.get("from").cloned();
            if let Some(from) = &from
                && !valid_repository(from)
            {
                return Err(Error::new(
                    Code::NameInvalid,
                    format!("invalid repository name {from:?}"),
                )
                .into());
            }
            let _shared = self.gc_lock.read().await;
            let (n, d) = (name.to_string(), digest.clone());
            let mounted = self
                .blocking(move |i| {
                    let Some(size) = i.db.blob_owner(&d, from.as_deref())? else {
                        return Ok(false);
                    };
                    if !i.blobs.exists(&d) {
                        return Ok(false);
                    }
                    i.created_by_push(&n, kind)?;
                    i.db.link_blob(&n, &d, size, now())
                })
                .await?;
            if mounted {
                tracing::debug!(%digest, into = name, "mounted a blob from another repository");
                return blob_created(name, &digest);
            }
            // Not mountable: an ordinary upload session instead.
        }
        // A single-POST upload's digest, checked before anything is made.
        let single = query
            .get("digest")
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))
            })
            .transpose()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = self.blobs.upload_path(&id);
        let p = path.clone();
        let file = self
            .blocking(move |_| {
                Ok(std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&p)?)
            })
            .await?;
        let upload = Arc::new(tokio::sync::Mutex::new(Upload {
            repo: name.to_string(),
            path,
            file: Some(file),
            offset: 0,
            hasher: Some(Hasher::new(Algorithm::Sha256)),
            touched: std::time::Instant::now(),
        }));
        if let Some(digest) = single {
            // Single-POST monolithic upload.
            let mut up = upload.lock().await;
            let expect = content_length(req.headers());
            let result = async {
                self.receive(&mut up, req.into_body(), expect).await?;
                self.commit(&mut up, &digest, kind).await
            }
            .await;
            if result.is_err() {
                self.discard(&mut up).await;
            }
            result?;
            return blob_created(name, &digest);
        }
        self.uploads_lock()?
            .insert(id.clone(), (name.to_string(), upload));
        let mut response = empty(StatusCode::ACCEPTED);
        let h = response.headers_mut();
        h.insert(
            header::LOCATION,
            header_value(&format!("/v2/{name}/blobs/uploads/{id}"))?,
        );
        h.insert(header::RANGE, HeaderValue::from_static("0-0"));
        h.insert("docker-upload-uuid", header_value(&id)?);
        Ok(response)
    }

    fn uploads_lock(
        &self,
    ) -> std::result::Result<std::sync::MutexGuard<'_, HashMap<String, Session>>, Internal> {
        self.uploads
            .lock()
            .map_err(|_| Internal::Other("uploads lock poisoned".into()))
    }

    /// The upload `id` of `name`, locked. A request that waited for the
    /// lock behind one that closed the upload (a PUT or a DELETE) finds it
    /// gone, as it would had it come after.
    async fn session(&self, name: &str, id: &str) -> Result<tokio::sync::OwnedMutexGuard<Upload>> {
        let unknown = || {
            Error::new(
                Code::BlobUploadUnknown,
                format!("upload {id} is not in progress"),
            )
        };
        let upload = match self.uploads_lock()?.get(id) {
            // An upload belongs to the repository it was started in.
            Some((repo, upload)) if repo == name => Arc::clone(upload),
            _ => return Err(unknown().into()),
        };
        let mut locked = Arc::clone(&upload).lock_owned().await;
        match self.uploads_lock()?.get(id) {
            Some((_, open)) if Arc::ptr_eq(open, &upload) => {
                locked.touched = std::time::Instant::now();
                Ok(locked)
            }
            _ => Err(unknown().into()),
        }
    }

    /// Drops the uploads idle past [`RegistryConfig::upload_idle_limit`]
    /// (a client that went away mid-push), deleting what they received.
    /// One a request is using is never idle.
    pub(crate) async fn drop_idle_uploads(self: &Arc<Self>) -> std::result::Result<(), Internal> {
        let limit = self.config.upload_idle_limit;
        let mut idle = Vec::new();
        self.uploads_lock()?
            .retain(|_, (_, upload)| match Arc::clone(upload).try_lock_owned() {
                Ok(up) if up.touched.elapsed() >= limit => {
                    idle.push(up);
                    false
                }
                _ => true,
            });
        if !idle.is_empty() {
            tracing::info!(uploads = idle.len(), "dropped idle uploads");
        }
        for mut up in idle {
            self.discard(&mut up).await;
        }
        Ok(())
    }

    async fn patch_upload(
        self: &Arc<Self>,
        name: &str,
        id: &str,
        req: skiff_http_server::Request,
    ) -> Result<Response> {
        let mut up = self.session(name, id).await?;
        let expect = match chunk_length(req.headers(), up.offset) {
            Ok(n) => n,
            Err(why) => return range_not_satisfiable(name, id, up.offset, &why),
        };
        match self.receive(&mut up, req.into_body(), expect).await {
            Ok(()) => upload_progress(StatusCode::ACCEPTED, name, id, up.offset),
            Err(Failure::Internal(e)) => {
                // The disk failed: this upload cannot go on.
                self.uploads_lock()?.remove(id);
                self.discard(&mut up).await;
                Err(Failure::Internal(e))
            }
            Err(client) => Err(client),
        }
    }

    async fn finish_upload(
        self: &Arc<Self>,
        name: &str,
        id: &str,
        query: &HashMap<String, String>,
        req: skiff_http_server::Request,
    ) -> Result<Response> {
        let kind = push_kind(req.headers());
        let mut up = self.session(name, id).await?;
        let digest: Digest = query
            .get("digest")
            .ok_or_else(|| Error::new(Code::DigestInvalid, "closing an upload needs ?digest="))?
            .parse()
            .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?;
        let expect = match chunk_length(req.headers(), up.offset) {
            Ok(n) => n,
            Err(why) => return range_not_satisfiable(name, id, up.offset, &why),
        };
        let result = async {
            self.receive(&mut up, req.into_body(), expect).await?;
            self.commit(&mut up, &digest, kind).await
        }
        .await;
        // Closed, whatever happened: a failed digest check ends the session.
        self.uploads_lock()?.remove(id);
        if result.is_err() {
            self.discard(&mut up).await;
        }
        result?;
        blob_created(name, &digest)
    }

    async fn upload_status(self: &Arc<Self>, name: &str, id: &str) -> Result<Response> {
        let up = self.session(name, id).await?;
        upload_progress(StatusCode::NO_CONTENT, name, id, up.offset)
    }

    async fn cancel_upload(self: &Arc<Self>, name: &str, id: &str) -> Result<Response> {
        let mut up = self.session(name, id).await?;
        self.uploads_lock()?.remove(id);
        self.discard(&mut up).await;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// Appends a request body to an upload, hashing as it goes, in batches
    /// written off the async threads while the next batch arrives (one
    /// write in flight at a time, so the order holds). `expect` is the
    /// length the request announced; a body of another length fails the
    /// request. A request that fails for the client's reasons (a body cut
    /// short, too long or too short) leaves the upload as it was before
    /// it, so the client can send the chunk again.
    async fn receive(
        self: &Arc<Self>,
        up: &mut Upload,
        mut body: RequestBody,
        expect: Option<u64>,
    ) -> Result<()> {
        const BATCH: usize = 1 << 20;
        type Written = (std::io::Result<Option<std::fs::File>>, Option<Hasher>, u64);
        let mut inflight: Option<tokio::task::JoinHandle<Written>> = None;
        // Takes the file and hasher back from the write in flight.
        async fn settle(
            up: &mut Upload,
            inflight: &mut Option<tokio::task::JoinHandle<Written>>,
        ) -> Result<()> {
            if let Some(write) = inflight.take() {
                let (file, hasher, n) = write
                    .await
                    .map_err(|e| Internal::Other(format!("blocking task: {e}")))?;
                up.hasher = hasher;
                up.file = file?;
                up.offset += n;
            }
            Ok(())
        }
        let before = (up.offset, up.hasher.clone());
        let mut received: u64 = 0;
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
        let result: Result<()> = async {
            loop {
                let frame = body.frame().await;
                let done = match frame {
                    None => true,
                    Some(Err(e)) => {
                        return Err(Error::new(
                            Code::BlobUploadInvalid,
                            format!("the upload was cut short: {e}"),
                        )
                        .into());
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            received += data.len() as u64;
                            if expect.is_some_and(|n| received > n) {
                                return Err(Error::new(
                                    Code::SizeInvalid,
                                    "the body is longer than its declared length",
                                )
                                .into());
                            }
                            batch.extend_from_slice(&data);
                        }
                        false
                    }
                };
                if batch.len() >= BATCH || (done && !batch.is_empty()) {
                    settle(up, &mut inflight).await?;
                    let (mut file, mut hasher) = (up.file.take(), up.hasher.take());
                    let bytes = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    let at = up.offset;
                    inflight = Some(tokio::task::spawn_blocking(move || {
                        let written = match file.as_mut() {
                            Some(f) => std::io::Write::write_all(f, &bytes).map(|()| {
                                crate::blobs::start_writeback(f, at, bytes.len() as u64);
                            }),
                            None => Err(std::io::Error::other("upload file closed")),
                        };
                        if let Some(h) = hasher.as_mut() {
                            h.update(&bytes);
                        }
                        (written.map(|()| file), hasher, bytes.len() as u64)
                    }));
                }
                if done {
                    return Ok(());
                }
            }
        }
        .await;
        // Whatever happened, the upload gets its file back.
        settle(up, &mut inflight).await?;
        let result = result.and_then(|()| {
            if expect.is_some_and(|n| received != n) {
                return Err(Error::new(
                    Code::SizeInvalid,
                    "the body is shorter than its declared length",
                )
                .into());
            }
            Ok(())
        });
        if let Err(Failure::Client(_)) = &result {
            let (offset, hasher) = before;
            let file = up.file.take();
            up.file = self
                .blocking(move |_| {
                    if let Some(f) = &file {
                        f.set_len(offset)?;
                    }
                    Ok(file)
                })
                .await?;
            (up.offset, up.hasher) = (offset, hasher);
        }
        result
    }

    /// Checks the digest of everything uploaded and makes it a blob of the
    /// upload's repository.
    async fn commit(
        self: &Arc<Self>,
        up: &mut Upload,
        digest: &Digest,
        kind: &'static str,
    ) -> Result<()> {
        let path = up.path.clone();
        let size = up.offset;
        let actual = match (digest.algorithm(), up.hasher.take()) {
            (Algorithm::Sha256, Some(h)) => h.finish(),
            (alg, _) => {
                let p = path.clone();
                self.blocking(move |_| Ok(Blobs::hash_file(&p, alg)?))
                    .await?
            }
        };
        if &actual != digest {
            return Err(Error::new(
                Code::DigestInvalid,
                format!("the uploaded content's digest is {actual}, not {digest}"),
            )
            .with_detail(serde_json::json!({ "digest": digest.to_string() }))
            .into());
        }
        up.file = None;
        let _shared = self.gc_lock.read().await;
        let (repo, d) = (up.repo.clone(), digest.clone());
        let linked = self
            .blocking(move |i| {
                i.blobs.commit(&path, &d)?;
                i.created_by_push(&repo, kind)?;
                i.db.link_blob(&repo, &d, size, now())
            })
            .await?;
        if !linked {
            return Err(repository_gone(&up.repo).into());
        }
        Ok(())
    }

    async fn discard(self: &Arc<Self>, up: &mut Upload) {
        up.file = None;
        let path = up.path.clone();
        let _ = self
            .blocking(move |_| {
                let _ = std::fs::remove_file(&path);
                Ok(())
            })
            .await;
    }

    // ---- discovery ----------------------------------------------------

    async fn list_tags(
        self: &Arc<Self>,
        name: &str,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        self.require_repository(name).await?;
        let n: Option<u64> = match query.get("n") {
            // A count past u64 asks for everything, as u64::MAX does.
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                Some(v.parse().unwrap_or(u64::MAX))
            }
            Some(v) => {
                return Err(
                    Error::new(Code::Unsupported, format!("n={v} is not a number"))
                        .with_status(StatusCode::BAD_REQUEST)
                        .into(),
                );
            }
            None => None,
        };
        let last = query.get("last").cloned();
        let limit = n.map(|n| n.saturating_add(1)).unwrap_or(u64::MAX);
        let (repo, l) = (name.to_string(), last.clone());
        let mut tags = if n == Some(0) {
            Vec::new()
        } else {
            self.blocking(move |i| i.db.tags(&repo, l.as_deref(), limit))
                .await?
        };
        let more = n.is_some_and(|n| tags.len() as u64 > n);
        if let Some(n) = n {
            tags.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let body = serde_json::json!({ "name": name, "tags": tags }).to_string();
        let mut response = json_response(StatusCode::OK, body);
        if more && let (Some(n), Some(last_tag)) = (n, tags.last()) {
            let link = format!(
                "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
                form_urlencoded::byte_serialize(last_tag.as_bytes()).collect::<String>()
            );
            response
                .headers_mut()
                .insert(header::LINK, header_value(&link)?);
        }
        Ok(response)
    }

    async fn referrers(
        self: &Arc<Self>,
        name: &str,
        digest: &str,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let subject: Digest = digest
            .parse()
            .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")))?;
        let repo = name.to_string();
        let rows = self
            .blocking(move |i| i.db.referrers(&repo, &subject))
            .await?;
        let filter = query.get("artifactType").filter(|a| !a.is_empty());
        let manifests: Vec<serde_json::Value> = rows
            .into_iter()
            .filter_map(|row| {
                let is_index = row.media_type == manifest::OCI_INDEX
                    || row.media_type == manifest::DOCKER_LIST;
                // The manifest's own artifactType, else its config's media
                // type (image manifests only).
                let artifact_type = row.artifact_type.clone().or(if is_index {
                    None
                } else {
                    row.config_media_type.clone()
                });
                if let Some(filter) = filter
                    && artifact_type.as_deref() != Some(filter.as_str())
                {
                    return None;
                }
                let mut d = serde_json::json!({
                    "mediaType": row.media_type,
                    "digest": row.digest,
                    "size": row.size,
                });
                if let Some(t) = artifact_type {
                    d["artifactType"] = serde_json::Value::String(t);
                }
                if let Some(a) = row
                    .annotations
                    .as_deref()
                    .and_then(|a| serde_json::from_str(a).ok())
                {
                    d["annotations"] = a;
                }
                Some(d)
            })
            .collect();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": manifests,
        })
        .to_string();
        let mut response = json_response(StatusCode::OK, body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(manifest::OCI_INDEX),
        );
        if filter.is_some() {
            response.headers_mut().insert(
                "oci-filters-applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(response)
    }
}

/// What a `/v2/<rest>` path names.
enum Route<'a> {
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Uploads { name: &'a str, id: Option<&'a str> },
    Tags { name: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Route<'a> {
    /// Repository names contain slashes, so each route is recognised by its
    /// tail and the name is everything before it.
    fn parse(rest: &'a str) -> Option<Route<'a>> {
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Some(Route::Tags { name });
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Some(Route::Uploads { name, id: None });
        }
        let tail = |marker: &str| {
            rest.rfind(marker)
                .map(|i| (&rest[..i], &rest[i + marker.len()..]))
                .filter(|(_, last)| !last.is_empty() && !last.contains('/'))
        };
        if let Some((name, id)) = tail("/blobs/uploads/") {
            return Some(Route::Uploads { name, id: Some(id) });
        }
        if let Some((name, reference)) = tail("/manifests/") {
            return Some(Route::Manifest { name, reference });
        }
        if let Some((name, digest)) = tail("/blobs/") {
            return Some(Route::Blob { name, digest });
        }
        if let Some((name, digest)) = tail("/referrers/") {
            return Some(Route::Referrers { name, digest });
        }
        None
    }

    /// What a request on this route does to its repository.
    fn actions(&self, method: &Method) -> &'static [Action] {
        const PULL: &[Action] = &[Action::Pull];
        const PUSH: &[Action] = &[Action::Pull, Action::Push];
        const DELETE: &[Action] = &[Action::Delete];
        match (self, method) {
            (Route::Manifest { .. } | Route::Blob { .. }, &Method::DELETE) => DELETE,
            (Route::Manifest { .. }, &Method::PUT) | (Route::Uploads { .. }, _) => PUSH,
            _ => PULL,
        }
    }

    fn name(&self) -> &'a str {
        match self {
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => name,
        }
    }
}

fn check_reference(reference: &str) -> Result<()> {
    if reference.contains(':') {
        reference
            .parse::<Digest>()
            .map(|_| ())
            .map_err(|e| Error::new(Code::DigestInvalid, format!("{e}")).into())
    } else if valid_tag(reference) {
        Ok(())
    } else {
        Err(Error::new(Code::ManifestInvalid, format!("invalid tag {reference:?}")).into())
    }
}

/// A push into a repository deleted while it went on.
fn repository_gone(name: &str) -> Error {
    Error::new(
        Code::NameUnknown,
        format!("repository {name} was deleted during the push"),
    )
}

fn not_found(path: &str) -> Error {
    Error::new(Code::Unsupported, format!("no such endpoint: {path}"))
        .with_status(StatusCode::NOT_FOUND)
}

fn header_value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|e| Internal::Other(format!("header value {s:?}: {e}")).into())
}

fn empty(status: StatusCode) -> Response {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &Error) -> Response {
    let mut response = json_response(e.status, e.body());
    if let Some(challenge) = e
        .challenge
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

fn blob_created(name: &str, digest: &Digest) -> Result<Response> {
    let mut response = empty(StatusCode::CREATED);
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(&format!("/v2/{name}/blobs/{digest}"))?,
    );
    h.insert("docker-content-digest", header_value(&digest.to_string())?);
    Ok(response)
}

fn upload_progress(status: StatusCode, name: &str, id: &str, offset: u64) -> Result<Response> {
    with_upload_headers(empty(status), name, id, offset)
}

fn name_unknown(name: &str) -> Error {
    Error::new(Code::NameUnknown, format!("repository {name} is not known"))
}

fn range_not_satisfiable(name: &str, id: &str, offset: u64, why: &str) -> Result<Response> {
    let e = Error::new(Code::BlobUploadInvalid, why).with_status(StatusCode::RANGE_NOT_SATISFIABLE);
    with_upload_headers(error_response(&e), name, id, offset)
}

/// Where an upload is, and `Range: 0-<last byte>` for how far it got
/// (`0-0` before any).
fn with_upload_headers(
    mut response: Response,
    name: &str,
    id: &str,
    offset: u64,
) -> Result<Response> {
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(&format!("/v2/{name}/blobs/uploads/{id}"))?,
    );
    h.insert(
        header::RANGE,
        header_value(&format!("0-{}", offset.saturating_sub(1)))?,
    );
    h.insert("docker-upload-uuid", header_value(id)?);
    Ok(response)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// An upload chunk's `Content-Range: <start>-<end>` (inclusive; a `bytes `
/// prefix is tolerated).
/// How long a chunk says it is: by its `Content-Range` (`<start>-<end>`,
/// which must start where the upload is), else by `Content-Length`, else
/// unknown (a streamed PATCH). Err says why the range cannot be taken.
fn chunk_length(headers: &HeaderMap, offset: u64) -> std::result::Result<Option<u64>, String> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(content_length(headers));
    };
    let malformed = || format!("Content-Range must be <start>-<end>, not {v:?}");
    let s = v.to_str().map_err(|_| malformed())?.trim();
    // Some clients write the unit, as in a response's Content-Range.
    let s = s
        .strip_prefix("bytes")
        .map_or(s, |r| r.trim_start_matches([' ', '=']));
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(malformed)?;
    let (start, end): (u64, u64) = (
        a.trim().parse().map_err(|_| malformed())?,
        b.trim().parse().map_err(|_| malformed())?,
    );
    if start != offset {
        return Err(format!("the chunk must start at byte {offset}"));
    }
    end.checked_sub(start)
        .and_then(|n| n.checked_add(1))
        .map(Some)
        .ok_or_else(|| format!("Content-Range {start}-{end} is not a range of bytes"))
}

/// What [`Inner::get_blob`] found for a blob request.
enum BlobLookup {
    NoRepository,
    NoBlob,
    /// A `Range` outside the blob's `size` bytes.
    Unsatisfiable {
        spec: String,
        size: u64,
    },
    /// The blob of `size` bytes; `body` holds `len` of them, the `range`
    /// asked for or all (empty for a HEAD).
    Found {
        size: u64,
        range: Option<(u64, u64)>,
        len: u64,
        body: Bytes,
    },
}

/// What a blob request's `Range` asks for (RFC 9110, section 14.2). A
/// header this registry does not serve — another unit, several ranges, a
/// malformed one — is ignored and the whole blob sent, as the RFC says.
#[derive(Debug, PartialEq)]
enum RangeAsk {
    Whole,
    /// First and last byte, clamped to the blob.
    Part(u64, u64),
    /// A valid range with no byte in the blob: 416.
    Unsatisfiable,
}

fn parse_range(spec: &str, size: u64) -> RangeAsk {
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last `n` bytes.
        return match last.parse::<u64>() {
            Err(_) => RangeAsk::Whole,
            Ok(0) => RangeAsk::Unsatisfiable,
            Ok(_) if size == 0 => RangeAsk::Unsatisfiable,
            Ok(n) => RangeAsk::Part(size.saturating_sub(n), size - 1),
        };
    }
    let Ok(first) = first.parse::<u64>() else {
        return RangeAsk::Whole;
    };
    let last = match last {
        "" => u64::MAX,
        l => match l.parse::<u64>() {
            Ok(l) if l >= first => l,
            _ => return RangeAsk::Whole,
        },
    };
    if first >= size {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part(first, last.min(size - 1))
    }
}

/// Reads a whole request body, refusing more than `limit` bytes with 413
/// (read on far enough that the client sees it).
async fn read_limited(body: RequestBody, limit: usize) -> Result<Vec<u8>> {
    match body.collect_within(limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(CollectError::TooLarge { .. }) => Err(Error::new(
            Code::ManifestInvalid,
            format!("the manifest is larger than {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .into()),
        Err(CollectError::Body(e)) => Err(Error::new(
            Code::ManifestInvalid,
            format!("the body was cut short: {e}"),
        )
        .into()),
    }
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Decodes `%XX` escapes in a path (clients may escape the `:` of a digest).
fn percent_decode(path: &str) -> String {
    if !path.contains('%') {
        return path.to_string();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // On bytes: a `%` may be followed by any UTF-8, not only hex digits.
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| char::from(b).to_digit(16)),
                bytes.get(i + 2).and_then(|&b| char::from(b).to_digit(16)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_the_name_from_before_the_tail() {
        assert!(matches!(
            Route::parse("a/b/manifests/latest"),
            Some(Route::Manifest {
                name: "a/b",
                reference: "latest"
            })
        ));
        assert!(matches!(
            Route::parse("a/manifests/b/manifests/v1"),
            Some(Route::Manifest {
                name: "a/manifests/b",
                reference: "v1"
            })
        ));
        assert!(matches!(
            Route::parse("x/blobs/uploads/"),
            Some(Route::Uploads {
                name: "x",
                id: None
            })
        ));
        assert!(matches!(
            Route::parse("x/blobs/uploads/abc"),
            Some(Route::Uploads {
                name: "x",
                id: Some("abc")
            })
        ));
        assert!(matches!(
            Route::parse("x/blobs/sha256:00"),
            Some(Route::Blob {
                name: "x",
                digest: "sha256:00"
            })
        ));
        assert!(matches!(
            Route::parse("x/y/tags/list"),
            Some(Route::Tags { name: "x/y" })
        ));
        assert!(matches!(
            Route::parse("x/referrers/sha256:00"),
            Some(Route::Referrers { name: "x", .. })
        ));
        assert!(Route::parse("x/nothing").is_none());
        assert!(Route::parse("x/manifests/").is_none());
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), Part(50, 99));
        // Valid, but no byte of the blob in it.
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Unsatisfiable);
        // Not a range this serves: ignored, the whole blob.
        assert_eq!(parse_range("bytes=9-0", 100), Whole);
        assert_eq!(parse_range("lines=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=abc", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), Whole);
        assert_eq!(parse_range("bytes=x-4", 100), Whole);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%2fc"), "a/b/c");
        assert_eq!(percent_decode("a/%2e%2E/b"), "a/../b");
        // Not an escape: kept as is, and no panic on a multi-byte char
        // where a hex digit would be, or at the end.
        assert_eq!(percent_decode("a%aé/tags"), "a%aé/tags");
        assert_eq!(percent_decode("é%é%"), "é%é%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            percent_decode("/v2/a/blobs/sha256%3Aab"),
            "/v2/a/blobs/sha256:ab"
        );
        assert_eq!(percent_decode("/v2/a%2"), "/v2/a%2");
    }
}
