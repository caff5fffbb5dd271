use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server (PyPI `moto[server]` 5.2.5, pinned by scripts/setup): S3 with
/// Object Lock, IAM and the rest of AWS, in memory, on a free loopback port; killed on
/// drop.
///
/// It listens on port 0 and reports the port the kernel chose ("Running on
/// http://127.0.0.1:PORT"), so parallel tests never race for a port.
pub struct Moto {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The port it listens on.
    pub port: u16,
}

/// The `moto_server` binary: `RUNWARDEN_MOTO_SERVER`, else `target/moto-venv/bin/moto_server`
/// of this repository (scripts/setup installs it there).
pub fn moto_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNWARDEN_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = repo.join("target/moto-venv/bin/moto_server");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (it installs PyPI moto[server]==5.2.5, pinned, \
         into target/moto-venv), or point RUNWARDEN_MOTO_SERVER at a moto_server",
        p.display()
    );
    p
}

impl Moto {
    /// Start a fresh server that accepts any credentials (it checks no signature).
    pub fn start() -> Moto {
        Self::launch(None)
    }

    /// Start a fresh server that lets the first `initial_no_auth_actions` actions through
    /// unchecked (enough to create an IAM user, its access key and its policy) and from
    /// then on checks every request's SigV4 signature against the IAM access keys it
    /// holds (`SignatureDoesNotMatch`, `InvalidAccessKeyId`) and the user's policies
    /// (`AccessDenied`). Moto's `INITIAL_NO_AUTH_ACTION_COUNT`.
    pub fn start_with_auth(initial_no_auth_actions: u32) -> Moto {
        Self::launch(Some(initial_no_auth_actions))
    }

    fn launch(no_auth_actions: Option<u32>) -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(moto_server_binary());
        cmd.args(["-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("MOTO_PORT")
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
            .stderr(Stdio::from(log));
        if let Some(n) = no_auth_actions {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = cmd.spawn().expect("starts moto_server");
        let mut moto = Moto {
            child: Some(child),
            dir,
            endpoint: String::new(),
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // werkzeug prints the address once it listens ...
        moto.port = loop {
            if let Some(port) = reported_port(&moto.log()) {
                break port;
            }
            moto.check_alive_until(deadline, "report its port");
            std::thread::sleep(Duration::from_millis(20));
        };
        moto.endpoint = format!("http://127.0.0.1:{}", moto.port);
        // ... and answers once it serves. /moto-api/config is not an AWS action, so it does
        // not use up one of the unauthenticated actions.
        while !moto.answers() {
            moto.check_alive_until(deadline, "answer HTTP");
            std::thread::sleep(Duration::from_millis(20));
        }
        moto
    }

    fn check_alive_until(&mut self, deadline: Instant, what: &str) {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
            panic!(
                "moto_server exited ({status}) before it could {what}: {}",
                self.log()
            );
        }
        if Instant::now() >= deadline {
            panic!("moto_server did not {what} in 20 s: {}", self.log());
        }
    }

    /// Whether the server answers an HTTP request.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /moto-api/config HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        );
        let mut status = [0u8; 12];
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_exact(&mut status).is_ok()
            && status.starts_with(b"HTTP/1.")
    }

    /// Kill the server (SIGKILL): its data is gone, its port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

/// The port in werkzeug's " * Running on http://127.0.0.1:PORT" line.
fn reported_port(log: &str) -> Option<u16> {
    let rest =
        &log[log.find("Running on http://127.0.0.1:")? + "Running on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    // Only a whole line: the log may be read while the line is being written.
    if !rest[digits.len()..].starts_with(['\n', '\r']) {
        return None;
    }
    digits.parse().ok().filter(|&p| p != 0)
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "moto_server log (last {} lines):\n{}",
                lines.len().min(40),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_port_is_read_from_werkzeugs_banner() {
        let log = "WARNING: This is a development server.\n * Running on http://127.0.0.1:42735\nPress CTRL+C to quit\n";
        assert_eq!(super::reported_port(log), Some(42735));
        assert_eq!(
            super::reported_port(" * Running on http://127.0.0.1:"),
            None
        );
        assert_eq!(
            super::reported_port(" * Running on http://127.0.0.1:427"),
            None
        );
        assert_eq!(
            super::reported_port(" * Running on http://127.0.0.1:0\n"),
            None
        );
        assert_eq!(super::reported_port(""), None);
    }
}
