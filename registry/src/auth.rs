//! Authentication, as ECR and Docker registries do it.
//!
//! skiff issues registry tokens with an expiry (ECR's
//! `GetAuthorizationToken`); a client presents one as the password of HTTP
//! Basic with user `AWS`, or trades it at `/v2/token` for a short-lived
//! bearer token scoped to repositories and actions (the Docker token flow,
//! announced by a `WWW-Authenticate: Bearer realm=...,service=...,scope=...`
//! challenge). Only a hash of each issued token is stored. Bearer tokens
//! are JWTs signed with HMAC-SHA256 under a key kept in the registry's
//! directory (mode 0600), so they stay valid across restarts.

use crate::db::Db;
use crate::error::{Code, Error, Internal};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::time::Duration;

/// Who must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Nobody: every request is served (a registry on loopback for one user).
    #[default]
    Off,
    /// Pushes and deletes need a token; pulls are anonymous.
    Push,
    /// Everything needs a token (anonymous pull turned off).
    All,
}

impl AuthMode {
    /// Parses `off`, `push` or `all`.
    pub fn parse(s: &str) -> Result<AuthMode, String> {
        match s {
            "off" | "none" => Ok(AuthMode::Off),
            "push" => Ok(AuthMode::Push),
            "all" => Ok(AuthMode::All),
            other => Err(format!(
                "unknown auth mode {other:?} (expected off, push or all)"
            )),
        }
    }
}

/// How a 401 tells the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeKind {
    /// `Bearer realm="http://HOST/v2/token",service=...,scope=...`: the
    /// Docker token flow. Basic credentials are still accepted directly.
    #[default]
    Bearer,
    /// `Basic realm=...`, as ECR answers: clients send `AWS:<token>`.
    Basic,
}

/// The `service` a bearer challenge names and tokens are issued for.
pub const SERVICE: &str = "skiff-registry";

/// How long a bearer token from `/v2/token` lasts (at most; never past the
/// registry token it was traded for).
pub const BEARER_TTL: Duration = Duration::from_secs(15 * 60);

/// A registry token skiff issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The secret: the password for user `AWS`.
    pub token: String,
    /// When it stops working (seconds since the epoch).
    pub expires_at: i64,
}

impl IssuedToken {
    /// ECR's `authorizationToken`: base64 of `AWS:<token>`.
    pub fn authorization_token(&self) -> String {
        STANDARD.encode(format!("AWS:{}", self.token))
    }
}

/// An action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// One grant of a bearer token (the Docker token's `access` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    access: Vec<Access>,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// No credentials.
    Anonymous,
    /// A valid registry token over Basic: every action on every repository.
    Token,
    /// A valid bearer token: what its grants say.
    Bearer(Vec<Access>),
}

pub(crate) struct Auth {
    mode: AuthMode,
    challenge: ChallengeKind,
    key: Vec<u8>,
}

fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(Code::Unauthorized, message)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random(n: usize) -> Result<Vec<u8>, Internal> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| Internal::Other(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// Reads the signing key, creating it (0600) on first use.
fn signing_key(root: &Path) -> Result<Vec<u8>, Internal> {
    use std::io::Write;
    let path = root.join("token.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {
            return Err(Internal::Other(format!(
                "{} is too short to be a signing key; delete it to make a new one",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let key = random(32)?;
    let mut tmp = tempfile::NamedTempFile::new_in(root)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    tmp.write_all(&key)?;
    tmp.as_file().sync_all()?;
    // Two registries opening the same directory at once: the first key
    // wins, and both read it back.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read(&path)?),
        Err(e) => Err(e.error.into()),
    }
}

impl Auth {
    pub(crate) fn open(
        root: &Path,
        mode: AuthMode,
        challenge: ChallengeKind,
    ) -> Result<Auth, Internal> {
        Ok(Auth {
            mode,
            challenge,
            key: signing_key(root)?,
        })
    }

    pub(crate) fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Issues a registry token valid for `ttl`.
    pub(crate) fn issue(&self, db: &Db, ttl: Duration, now: i64) -> Result<IssuedToken, Internal> {
        let token = URL_SAFE_NO_PAD.encode(random(32)?);
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        db.put_token(&hash(&token), expires_at, now)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Checks Basic credentials: user `AWS`, an unexpired issued token.
    fn check_basic(&self, db: &Db, value: &str, now: i64) -> Result<Result<i64, Error>, Internal> {
        let decoded = STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Ok(Err(unauthorized("malformed Basic credentials")));
        };
        if user != "AWS" {
            return Ok(Err(unauthorized(format!(
                "unknown user {user:?}: log in as AWS with a token from `skiff registry token`"
            ))));
        }
        Ok(match db.token_expiry(&hash(password))? {
            Some(expires) if expires > now => Ok(expires),
            Some(_) => Err(unauthorized(
                "the registry token has expired; get a new one with `skiff registry token`",
            )),
            None => Err(unauthorized(
                "the registry token is not one this registry issued",
            )),
        })
    }

    fn sign(&self, claims: &Claims) -> Result<String, Internal> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(claims).map_err(|e| Internal::Other(e.to_string()))?);
        let signed = format!("{header}.{body}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .map_err(|e| Internal::Other(format!("signing key: {e}")))?;
        mac.update(signed.as_bytes());
        Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        ))
    }

    fn verify(&self, token: &str, now: i64) -> Result<Claims, Error> {
        let invalid = || unauthorized("the bearer token is invalid");
        let (signed, signature) = token.trim().rsplit_once('.').ok_or_else(invalid)?;
        let (_, body) = signed.split_once('.').ok_or_else(invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| invalid())?;
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        if claims.exp <= now {
            return Err(unauthorized("the bearer token has expired"));
        }
        Ok(claims)
    }

    /// Who the request's `Authorization` header says is asking. A bad or
    /// expired credential is an error, never a fall-back to anonymous.
    pub(crate) fn caller(
        &self,
        db: &Db,
        authorization: Option<&str>,
        now: i64,
    ) -> Result<Result<Caller, Error>, Internal> {
        let Some(value) = authorization else {
            return Ok(Ok(Caller::Anonymous));
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(self.check_basic(db, rest, now)?.map(|_| Caller::Token));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(self.verify(rest, now).and_then(|c| {
                // Minted for nobody while anonymous pull was on: not
                // good once it is off (the key survives restarts).
                if c.sub.is_empty() && self.mode == AuthMode::All {
                    Err(unauthorized(
                        "an anonymous token is not accepted: this registry requires credentials",
                    ))
                } else {
                    Ok(Caller::Bearer(c.access))
                }
            }));
        }
        Ok(Err(unauthorized(format!(
            "unsupported authorization scheme {scheme:?}"
        ))))
    }

    /// May `caller` do `action` on `repo` (None: just talk to the registry,
    /// `GET /v2/`)?
    pub(crate) fn allows(&self, caller: &Caller, repo: Option<&str>, action: Action) -> bool {
        match (self.mode, caller) {
            (AuthMode::Off, _) | (_, Caller::Token) => true,
            (_, Caller::Bearer(access)) => match repo {
                None => true,
                Some(repo) => access.iter().any(|a| {
                    a.kind == "repository"
                        && a.name == repo
                        && a.actions.iter().any(|x| x == action.as_str() || x == "*")
                }),
            },
            (AuthMode::Push, Caller::Anonymous) => repo.is_some() && action == Action::Pull,
            (AuthMode::All, Caller::Anonymous) => false,
        }
    }

    /// The 401 for a request that may not go ahead.
    pub(crate) fn challenge(
        &self,
        host: &str,
        repo: Option<&str>,
        actions: &[Action],
        why: Error,
    ) -> Error {
        let realm = format!("http://{host}/v2/token");
        let value = match (self.challenge, repo) {
            (ChallengeKind::Basic, _) => format!("Basic realm=\"{realm}\",service=\"{SERVICE}\""),
            (ChallengeKind::Bearer, None) => {
                format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"")
            }
            (ChallengeKind::Bearer, Some(repo)) => {
                let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                format!(
                    "Bearer realm=\"{realm}\",service=\"{SERVICE}\",scope=\"repository:{repo}:{}\"",
                    actions.join(",")
                )
            }
        };
        let detail: Vec<serde_json::Value> = actions
            .iter()
            .filter_map(|a| {
                repo.map(
                    |r| serde_json::json!({"Type": "repository", "Name": r, "Action": a.as_str()}),
                )
            })
            .collect();
        let mut e = why.with_challenge(value);
        if !detail.is_empty() {
            e = e.with_detail(serde_json::Value::Array(detail));
        }
        e
    }

    /// The token endpoint (`GET` or `POST /v2/token`): trades Basic
    /// credentials (or none, for what anonymous callers may do) for a
    /// bearer token with the requested scopes that the caller is allowed.
    /// Returns the JSON body.
    pub(crate) fn token_endpoint(
        &self,
        db: &Db,
        authorization: Option<&str>,
        params: &[(String, String)],
        now: i64,
    ) -> Result<Result<String, Error>, Internal> {
        // The OAuth2 form of the same request (containerd posts this).
        let form_password = params
            .iter()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.clone());
        let form_user = params
            .iter()
            .find(|(k, _)| k == "username")
            .map(|(_, v)| v.clone());
        if let Some((_, grant)) = params.iter().find(|(k, _)| k == "grant_type")
            && grant != "password"
        {
            return Ok(Err(Error::new(
                Code::Unsupported,
                format!("grant_type {grant:?} is not supported (use password)"),
            )
            .with_status(http::StatusCode::BAD_REQUEST)));
        }
        let basic;
        let authorization = match (form_user, form_password) {
            (Some(user), Some(password)) => {
                basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
                Some(basic.as_str())
            }
            _ => authorization,
        };
        let (caller, mut expires) = match authorization {
            None => (Caller::Anonymous, now + BEARER_TTL.as_secs() as i64),
            Some(value) => {
                let Some(rest) = value
                    .strip_prefix("Basic ")
                    .or_else(|| value.strip_prefix("basic "))
                else {
                    return Ok(Err(unauthorized(
                        "the token endpoint takes Basic credentials",
                    )));
                };
                match self.check_basic(db, rest, now)? {
                    Ok(expires) => (Caller::Token, expires),
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        expires = expires.min(now + BEARER_TTL.as_secs() as i64);
        let mut access = Vec::new();
        for (_, scope) in params.iter().filter(|(k, _)| k == "scope") {
            for one in scope.split(' ').filter(|s| !s.is_empty()) {
                let mut parts = one.splitn(3, ':');
                let (Some(kind), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Ok(Err(Error::new(
                        Code::Unsupported,
                        format!("malformed scope {one:?}"),
                    )
                    .with_status(http::StatusCode::BAD_REQUEST)));
                };
                if kind != "repository" {
                    continue;
                }
                let granted: Vec<String> = actions
                    .split(',')
                    .filter(|a| {
                        let action = match *a {
                            "pull" => Action::Pull,
                            "push" => Action::Push,
                            "delete" | "*" => Action::Delete,
                            _ => return false,
                        };
                        self.allows(&caller, Some(name), action)
                    })
                    .map(str::to_string)
                    .collect();
                access.push(Access {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    actions: granted,
                });
            }
        }
        if matches!(caller, Caller::Anonymous) && self.mode == AuthMode::All {
            return Ok(Err(unauthorized(
                "this registry requires credentials (user AWS, a token from `skiff registry token`)",
            )));
        }
        let claims = Claims {
            iss: SERVICE.into(),
            sub: match caller {
                Caller::Anonymous => String::new(),
                _ => "AWS".into(),
            },
            aud: SERVICE.into(),
            exp: expires,
            nbf: now - 1,
            iat: now,
            access,
        };
        let token = self.sign(&claims)?;
        let issued_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        Ok(Ok(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": expires - now,
            "issued_at": issued_at,
        })
        .to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(mode: AuthMode) -> (tempfile::TempDir, Auth, Db) {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(dir.path(), mode, ChallengeKind::Bearer).unwrap();
        let db = Db::open(&dir.path().join("registry.db")).unwrap();
        (dir, auth, db)
    }

    fn basic(token: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("AWS:{token}")))
    }

    #[test]
    fn issued_tokens_work_until_they_expire() {
        let (_dir, auth, db) = auth(AuthMode::All);
        let t = auth.issue(&db, Duration::from_secs(60), 1000).unwrap();
        assert_eq!(t.expires_at, 1060);
        let ok = auth.caller(&db, Some(&basic(&t.token)), 1059).unwrap();
        assert!(matches!(ok, Ok(Caller::Token)));
        let late = auth
            .caller(&db, Some(&basic(&t.token)), 1060)
            .unwrap()
            .unwrap_err();
        assert!(late.message.contains("expired"), "{}", late.message);
        let forged = auth
            .caller(&db, Some(&basic("not-issued")), 1000)
            .unwrap()
            .unwrap_err();
        assert!(forged.message.contains("not one this registry issued"));
        let user = format!("Basic {}", STANDARD.encode(format!("admin:{}", t.token)));
        let wrong_user = auth.caller(&db, Some(&user), 1000).unwrap().unwrap_err();
        assert!(
            wrong_user.message.contains("log in as AWS"),
            "{}",
            wrong_user.message
        );
        // The ECR form decodes to the same credentials.
        let ecr = STANDARD.decode(t.authorization_token()).unwrap();
        assert_eq!(ecr, format!("AWS:{}", t.token).as_bytes());
    }

    #[test]
    fn bearer_tokens_carry_exactly_the_allowed_scope() {
        let (_dir, auth, db) = auth(AuthMode::Push);
        let now = 5000;
        let params = |scope: &str| {
            vec![
                ("scope".to_string(), scope.to_string()),
                ("service".to_string(), SERVICE.to_string()),
            ]
        };
        // Anonymous: pull only, even when push is asked for.
        let body = auth
            .token_endpoint(&db, None, &params("repository:app:pull,push"), now)
            .unwrap()
            .unwrap();
        let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let caller = auth
            .caller(&db, Some(&format!("Bearer {token}")), now)
            .unwrap()
            .unwrap();
        assert!(auth.allows(&caller, Some("app"), Action::Pull));
        assert!(!auth.allows(&caller, Some("app"), Action::Push));
        assert!(!auth.allows(&caller, Some("other"), Action::Pull));
        // With a registry token: what was asked, and no more.
        let t = auth.issue(&db, Duration::from_secs(3600), now).unwrap();
        let body = auth
            .token_endpoint(
                &db,
                Some(&basic(&t.token)),
                &params("repository:app:pull,push"),
                now,
            )
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["expires_in"], BEARER_TTL.as_secs());
        let caller = auth
            .caller(
                &db,
                Some(&format!("Bearer {}", v["token"].as_str().unwrap())),
                now,
            )
            .unwrap()
            .unwrap();
        assert!(auth.allows(&caller, Some("app"), Action::Push));
        assert!(!auth.allows(&caller, Some("app"), Action::Delete));
        // Tampering breaks the signature; time breaks the expiry.
        let mut forged = v["token"].as_str().unwrap().to_string();
        forged.insert(forged.len() - 3, 'A');
        assert!(
            auth.caller(&db, Some(&format!("Bearer {forged}")), now)
                .unwrap()
                .is_err()
        );
        let expired = now + BEARER_TTL.as_secs() as i64;
        assert!(
            auth.caller(
                &db,
                Some(&format!("Bearer {}", v["token"].as_str().unwrap())),
                expired
            )
            .unwrap()
            .is_err()
        );
    }

    #[test]
    fn anonymous_pull_can_be_turned_off() {
        // A token minted anonymously while pulls were open...
        let (dir, open, db) = auth(AuthMode::Push);
        let body = open
            .token_endpoint(
                &db,
                None,
                &[("scope".into(), "repository:app:pull".into())],
                1,
            )
            .unwrap()
            .unwrap();
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
        assert!(open.caller(&db, Some(&bearer), 2).unwrap().is_ok());
        // ...is refused once they are closed, under the same key.
        let closed = Auth::open(dir.path(), AuthMode::All, ChallengeKind::Bearer).unwrap();
        let refused = closed.caller(&db, Some(&bearer), 2).unwrap();
        assert!(refused.is_err());

        let (_dir, auth, db) = auth(AuthMode::All);
        let err = auth
            .token_endpoint(
                &db,
                None,
                &[("scope".into(), "repository:app:pull".into())],
                1,
            )
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, Code::Unauthorized);
        assert!(!auth.allows(&Caller::Anonymous, Some("app"), Action::Pull));
        let (_dir, open, _db) = self::auth(AuthMode::Push);
        assert!(open.allows(&Caller::Anonymous, Some("app"), Action::Pull));
        assert!(!open.allows(&Caller::Anonymous, Some("app"), Action::Push));
        assert!(
            !open.allows(&Caller::Anonymous, None, Action::Pull),
            "/v2/ challenges so clients learn the realm"
        );
    }

    #[test]
    fn the_key_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = Auth::open(dir.path(), AuthMode::All, ChallengeKind::Bearer).unwrap();
        let b = Auth::open(dir.path(), AuthMode::All, ChallengeKind::Bearer).unwrap();
        assert_eq!(a.key, b.key);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("token.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
