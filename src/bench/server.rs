//! The `skiff serve` a bench runs against: one it starts itself (this
//! binary, a fresh data dir, free loopback ports), or one it is given.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `skiff serve` this bench started; ended when dropped.
pub struct OwnServe {
    child: Child,
    pub api: String,
    data: tempfile::TempDir,
}

impl OwnServe {
    /// Starts `skiff serve` on free loopback ports with an empty data dir
    /// (so no image or compiled code is cached), and waits for its banner.
    /// `flags` are more `skiff serve` flags.
    pub fn start(flags: &[String]) -> anyhow::Result<OwnServe> {
        let data = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--api-addr",
                "127.0.0.1:0",
                "--registry-addr",
                "127.0.0.1:0",
            ])
            .args(flags)
            .env("SKIFF_DATA_DIR", data.path())
            .env("SKIFF_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr from skiff serve"))?;
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        // Whatever it says later is drained, so it never blocks on a pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let Some(api) = parse_banner(&line) else {
            let _ = child.kill();
            anyhow::bail!("skiff serve did not start: {}", line.trim());
        };
        Ok(OwnServe { child, api, data })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's compile cache directory.
    pub fn compile_cache(&self) -> std::path::PathBuf {
        skiff_runtime::RuntimeConfig::default()
            .with_data_dir(self.data.path())
            .compiled_cache_dir()
    }
}

impl Drop for OwnServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skiff serve: API on http://ADDR/ (…), registry on ADDR, …`: the API's
/// URL (the registry is found through ECR's API, as for any server).
fn parse_banner(line: &str) -> Option<String> {
    let api = line.split("API on ").nth(1)?.split_whitespace().next()?;
    Some(api.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_names_the_api() {
        let line = "skiff serve: API on http://127.0.0.1:41231/ (any signature accepted), registry on 127.0.0.1:39011, instance in cluster default, data in /tmp/x";
        assert_eq!(
            parse_banner(line).as_deref(),
            Some("http://127.0.0.1:41231")
        );
        assert_eq!(parse_banner("error: address in use"), None);
    }
}
