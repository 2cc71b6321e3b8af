//! Helpers to run the real `skiff` binary the way a user does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The skiff binary built for these tests.
pub fn skiff_bin() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

/// A data dir shared by the tests of this run: compiled guests are reused
/// across tests (and the concurrent writes exercise the atomic cache).
pub fn shared_data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("skiff-test-data")
}

/// What a finished `skiff` process left behind.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Asserts the process failed with exactly one line on stderr and no
    /// trace of a Rust panic or backtrace.
    pub fn assert_one_line_error(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line of error, got: {:?}",
            self.stderr
        );
        assert!(
            lines[0].contains(needle),
            "error {:?} does not mention {needle:?}",
            lines[0]
        );
        assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "{}", self.stderr);
    }
}

/// A `skiff` command with its data dir set (the shared one unless changed).
pub struct Skiff {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    limit: Duration,
}

pub fn skiff<I, S>(args: I) -> Skiff
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    skiff_from(Command::new(skiff_bin()), args)
}

/// `skiff` as a process without `CAP_NET_BIND_SERVICE`, as a non-root
/// user's is: the tests run as root (CI too), and this is how they see
/// what everyone else gets. (util-linux's `setpriv`, in every Debian.)
pub fn without_low_ports() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set", "-net_bind_service", skiff_bin()]);
    cmd
}

/// [`skiff`] without `CAP_NET_BIND_SERVICE` (see [`without_low_ports`]).
pub fn skiff_without_low_ports<I, S>(args: I) -> Skiff
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    skiff_from(without_low_ports(), args)
}

fn skiff_from<I, S>(mut cmd: Command, args: I) -> Skiff
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    cmd.args(args)
        .env("SKIFF_DATA_DIR", shared_data_dir())
        .env_remove("SKIFF_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Skiff {
        cmd,
        stdin: None,
        limit: Duration::from_secs(60),
    }
}

impl Skiff {
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.cmd.env("SKIFF_DATA_DIR", dir);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self.cmd.stdin(Stdio::piped());
        self
    }

    pub fn spawn(mut self) -> Child {
        self.cmd.spawn().expect("start skiff")
    }

    /// Runs to completion (killing it after a generous limit, so a hang is
    /// a failure rather than a stuck CI job).
    pub fn run(mut self) -> Finished {
        let start = Instant::now();
        let mut child = self.cmd.spawn().expect("start skiff");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&bytes);
            });
        }
        let stdout = reader(child.stdout.take().expect("stdout"));
        let stderr = reader(child.stderr.take().expect("stderr"));
        let status = wait_with_limit(&mut child, self.limit);
        Finished {
            code: status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            elapsed: start.elapsed(),
        }
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child`; kills it and panics if it outlives `limit`.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return exit_code(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skiff did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

pub use wasm_apps::{app, both};

/// Writes a WAT module to a temp file and returns its path.
pub fn wat_file(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let bytes = wat::parse_str(wat).expect("valid wat");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write wasm");
    path
}

/// A `skiff registry` process on an ephemeral loopback port.
pub struct RegistryProcess {
    pub child: Child,
    pub addr: String,
    pub log: std::sync::mpsc::Receiver<String>,
}

impl RegistryProcess {
    pub fn start(data_dir: &Path) -> RegistryProcess {
        Self::start_with(data_dir, &[])
    }

    /// With more `skiff registry` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> RegistryProcess {
        use std::io::BufRead;
        let mut child = Command::new(skiff_bin())
            .args(["registry", "--addr", "127.0.0.1:0"])
            .args(flags)
            .env("SKIFF_DATA_DIR", data_dir)
            .env("SKIFF_LOG", "skiff_registry=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start skiff registry");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the registry printed where it listens");
        let addr = banner
            .strip_prefix("Registry listening on http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
            .to_string();
        RegistryProcess {
            child,
            addr,
            log: rx,
        }
    }

    /// Everything the registry logged so far.
    pub fn logged(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a peer tool to completion and returns (success, stdout, stderr).
pub fn peer(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is it installed? .ci/run installs it): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes an OCI image layout holding one manifest tagged `tag`: `config`
/// with `config_type`, and `layers` as (media type, bytes). Returns the
/// manifest's digest.
pub fn oci_layout(
    dir: &Path,
    tag: &str,
    config_type: &str,
    config: &[u8],
    layers: &[(&str, &[u8])],
) -> String {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (cd, cs) = put(config);
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(mt, bytes)| {
            let (d, s) = put(bytes);
            serde_json::json!({"mediaType": mt, "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, "digest": cd, "size": cs},
        "layers": layers,
    }))
    .unwrap();
    let (md, ms) = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    md
}

/// The sha256 digest of bytes, as `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Debian's docker-registry (distribution 2.8) on a free loopback port.
pub struct DockerRegistry {
    child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    pub fn start() -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is installed (.ci/run installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DockerRegistry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `skiff serve` process on ephemeral loopback ports, and the AWS CLI
/// and boto3 pointed at it.
pub struct ServeProcess {
    pub child: Child,
    pub api: String,
    pub registry: String,
    /// The cluster its local instance joined.
    pub cluster: String,
    pub data_dir: PathBuf,
    /// Access key and secret the server requires, if any.
    pub keys: Option<(String, String)>,
    /// The network namespace it runs in (a test's host), where its clients
    /// must run too.
    pub netns: Option<String>,
}

impl ServeProcess {
    pub fn start(data_dir: &Path) -> ServeProcess {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, flags: &[&str]) -> ServeProcess {
        Self::launch(Command::new(skiff_bin()), data_dir, flags)
    }

    /// `skiff serve` without `CAP_NET_BIND_SERVICE` (see
    /// [`without_low_ports`]).
    pub fn start_without_low_ports(data_dir: &Path) -> ServeProcess {
        Self::launch(without_low_ports(), data_dir, &[])
    }

    /// `skiff serve` run by `cmd` (the binary, or a wrapper of it).
    pub fn launch(cmd: Command, data_dir: &Path, flags: &[&str]) -> ServeProcess {
        let mut all = vec!["--region", "eu-west-1"];
        all.extend(flags);
        let skiff_harness::Serving { child, banner } =
            skiff_harness::start_serve(cmd, data_dir, "warn", &all);
        let (api, registry, cluster) = (banner.api, banner.registry, banner.cluster);
        let keys = flags
            .iter()
            .position(|f| *f == "--access-key-id")
            .map(|i| (flags[i + 1].to_string(), flags[i + 3].to_string()));
        ServeProcess {
            child,
            api,
            registry,
            cluster,
            data_dir: data_dir.to_path_buf(),
            keys,
            netns: None,
        }
    }

    /// The credentials clients sign with.
    fn signing_keys(&self) -> (String, String) {
        self.keys
            .clone()
            .unwrap_or_else(|| ("AKIDSKIFFTEST".into(), "secret".into()))
    }

    /// Runs `aws SERVICE ARGS... --endpoint-url ...`: (success, stdout, stderr).
    pub fn aws(&self, args: &[&str]) -> (bool, String, String) {
        let (id, secret) = self.signing_keys();
        let mut aws = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "aws"]);
                c
            }
            None => Command::new("aws"),
        };
        let out = aws
            .args(args)
            .args(["--endpoint-url", &format!("http://{}", self.api)])
            .args(["--output", "json"])
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_PAGER", "")
            // Cloud Map's DiscoverInstances would go to data-HOST: with an
            // endpoint of our own, every call goes to the endpoint.
            .env("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run aws (.ci/run installs awscli): {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `aws ...` that must succeed; its JSON output.
    pub fn aws_ok(&self, args: &[&str]) -> serde_json::Value {
        let (ok, out, err) = self.aws(args);
        assert!(ok, "aws {args:?} failed: {err}");
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {out}"))
    }

    /// The manifest image `repo:tag` has, as `aws ecr batch-get-image`
    /// returns it (what AWS's retagging recipe puts back with put-image).
    pub fn manifest_of(&self, repo: &str, tag: &str) -> String {
        self.aws_ok(&[
            "ecr",
            "batch-get-image",
            "--repository-name",
            repo,
            "--image-ids",
            &format!("imageTag={tag}"),
            "--query",
            "images[].imageManifest",
        ])[0]
            .as_str()
            .unwrap_or_else(|| panic!("{repo}:{tag} has no manifest"))
            .to_string()
    }

    /// `aws ...` that must fail with this error code; its message.
    pub fn aws_err(&self, args: &[&str], code: &str) -> String {
        let (ok, out, err) = self.aws(args);
        assert!(!ok, "aws {args:?} succeeded: {out}");
        assert!(
            err.contains(&format!("({code})")),
            "aws {args:?} failed with something other than {code}: {err}"
        );
        err
    }

    /// Runs a Python script with boto3, `ENDPOINT` and `REGION` defined;
    /// returns its stdout.
    pub fn boto3(&self, script: &str, key: &str, secret: &str) -> String {
        let program = format!(
            "import boto3, botocore, json\nENDPOINT = 'http://{}'\nREGION = 'eu-west-1'\n{script}",
            self.api
        );
        let out = Command::new("python3")
            .args(["-c", &program])
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "the boto3 script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pushes a Wasm file to the server's registry as REPO:TAG.
    /// Registers task definition `td` with the AWS CLI (through a file
    /// in `dir`); its ARN.
    pub fn register_task_definition(&self, dir: &Path, td: &serde_json::Value) -> String {
        let p = dir.join(format!("{}.json", td["family"].as_str().unwrap()));
        std::fs::write(&p, serde_json::to_vec(td).unwrap()).unwrap();
        self.aws_ok(&[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &format!("file://{}", p.display()),
        ])["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs net-probe (pushed as `net-probe:v1`) with `args` as an awsvpc
    /// task in `groups` (none: the default security group) and returns its
    /// exit code once it has stopped.
    pub fn probe_task(&self, dir: &Path, groups: &[&str], args: &[&str]) -> i64 {
        self.register_task_definition(
            dir,
            &serde_json::json!({
                "family": "probe", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "containerDefinitions": [{"name": "probe", "image": "net-probe:v1", "command": args}],
            }),
        );
        let net = serde_json::json!({"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": groups}});
        let run = self.aws_ok(&[
            "ecs",
            "run-task",
            "--task-definition",
            "probe",
            "--network-configuration",
            &net.to_string(),
        ]);
        let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
        self.aws_ok(&["ecs", "wait", "tasks-stopped", "--tasks", &arn]);
        let t = &self.aws_ok(&["ecs", "describe-tasks", "--tasks", &arn])["tasks"][0];
        t["containers"][0]["exitCode"]
            .as_i64()
            .unwrap_or_else(|| panic!("no exit code: {t:#}"))
    }

    pub fn push(&self, wasm: &str, repo_tag: &str) {
        if self.keys.is_some() {
            // A serve with credentials wants a registry token, as ECR does.
            self.login();
        }
        let out = Command::new(skiff_bin())
            .args(["push", wasm, &format!("{}/{repo_tag}", self.registry)])
            .env("SKIFF_DATA_DIR", &self.data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("skiff push");
        assert!(
            out.status.success(),
            "push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `aws ecr get-login-password | skiff login REGISTRY`, into the
    /// server's data dir (where `push` keeps its logins).
    pub fn login(&self) {
        let (ok, password, err) = self.aws(&["ecr", "get-login-password"]);
        assert!(ok, "get-login-password failed: {err}");
        let password = password.trim().trim_matches('"').to_string();
        let mut login = Command::new(skiff_bin())
            .args([
                "login",
                "--username",
                "AWS",
                "--password-stdin",
                &self.registry,
            ])
            .env("SKIFF_DATA_DIR", &self.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skiff login");
        std::io::Write::write_all(login.stdin.as_mut().expect("piped"), password.as_bytes())
            .expect("the password");
        drop(login.stdin.take());
        let out = login.wait_with_output().expect("skiff login");
        assert!(
            out.status.success(),
            "skiff login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status.
    pub fn terminate(&mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_with_limit(&mut self.child, Duration::from_secs(60))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs Python `program` as a client (boto3, no AWS config file), handing
/// each line it prints, as JSON, to `answer` with its number until
/// `answer` returns false or the client ends; then ends the client.
pub fn python_client(program: &str, mut answer: impl FnMut(usize, serde_json::Value) -> bool) {
    use std::io::BufRead;
    let mut client = Command::new("python3")
        .args(["-c", program])
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let lines = std::io::BufReader::new(client.stdout.take().expect("piped")).lines();
    for (n, line) in lines.map_while(Result::ok).enumerate() {
        let value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the client printed {line:?}, not JSON: {e}"));
        if !answer(n, value) {
            break;
        }
    }
    let _ = client.kill();
    let _ = client.wait();
}

/// Runs Python `program` with `input` as JSON on its stdin; what it
/// prints, as JSON.
pub fn python_json(program: &str, input: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new("python3")
        .args(["-c", program])
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    serde_json::to_writer(child.stdin.take().expect("piped"), input).expect("the input");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "the Python program failed");
    serde_json::from_slice(&out.stdout).expect("the program prints JSON")
}
