//! The real work behind host calls: processes, service managers, HTTP and /proc.
//!
//! Nothing here checks grants; `host.rs` does that before calling in.

use crate::policy::{CommandTemplates, ServiceBackend};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Output of a finished program.
pub(crate) struct ProcOutput {
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

/// Why a program did not produce output.
pub(crate) enum ProcError {
    NotFound(String),
    Timeout,
    Failed(String),
}

/// Run `program args` with a cleared environment, no stdin, a timeout and capped output.
/// With `exe`, the file executed is that descriptor (opened and checked by
/// `confine::open_program`), whatever `program` names by now; `program` is its `argv[0]`.
pub(crate) async fn run_process(
    program: &str,
    exe: Option<&std::os::fd::OwnedFd>,
    args: &[String],
    timeout: Duration,
    cap: usize,
) -> Result<ProcOutput, ProcError> {
    // Never start an action that cannot finish before the deadline: killing it half-way
    // would leave the host worse off than not starting.
    if timeout < Duration::from_millis(1) {
        return Err(ProcError::Timeout);
    }
    let mut cmd = match exe {
        Some(fd) => {
            let mut cmd = tokio::process::Command::new(crate::confine::proc_path(fd));
            cmd.arg0(program);
            let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
            // SAFETY: runs in the forked child before exec and only makes one fcntl call,
            // which is async-signal-safe. `raw` stays open: the parent holds `fd` until
            // the spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    // A script's interpreter opens /proc/self/fd/N after the exec, so the
                    // descriptor must survive it.
                    let fd = std::os::fd::BorrowedFd::borrow_raw(raw);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                    Ok(())
                });
            }
            cmd
        }
        None => tokio::process::Command::new(program),
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProcError::NotFound(program.to_string()),
        _ => ProcError::Failed(format!("cannot start {program}: {e}")),
    })?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (out, err, status) = tokio::join!(
            read_capped(stdout, cap),
            read_capped(stderr, cap),
            child.wait()
        );
        (out, err, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(((stdout, t1), (stderr, t2), status)) => {
            let status = status.map_err(|e| ProcError::Failed(e.to_string()))?;
            Ok(ProcOutput {
                exit_code: status.code(),
                stdout,
                stderr,
                truncated: t1 || t2,
            })
        }
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            Err(ProcError::Timeout)
        }
    }
}

/// Read up to `cap` bytes and drain the rest, so the writer never blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(stream: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut stream) = stream else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// A service verb.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Verb {
    Status,
    Start,
    Stop,
    Restart,
    Reload,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Status => "status",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Reload => "reload",
        }
    }
}

/// The argv that performs `verb` on `unit` with this backend. `unit` must already be validated.
pub(crate) fn service_argv(backend: &ServiceBackend, verb: Verb, unit: &str) -> Vec<String> {
    match backend {
        ServiceBackend::Systemd => match verb {
            Verb::Status => vec![
                "/usr/bin/systemctl".into(),
                "show".into(),
                "--property=LoadState,ActiveState,SubState".into(),
                "--".into(),
                unit.into(),
            ],
            _ => vec![
                "/usr/bin/systemctl".into(),
                verb.name().into(),
                "--".into(),
                unit.into(),
            ],
        },
        ServiceBackend::Command(t) => {
            let CommandTemplates {
                status,
                start,
                stop,
                restart,
                reload,
            } = t;
            let tpl = match verb {
                Verb::Status => status,
                Verb::Start => start,
                Verb::Stop => stop,
                Verb::Restart => restart,
                Verb::Reload => reload,
            };
            tpl.iter().map(|a| a.replace("{unit}", unit)).collect()
        }
    }
}

/// Parse a status command's output into (active state, sub state), or None when the unit
/// does not exist.
pub(crate) fn parse_status(backend: &ServiceBackend, out: &ProcOutput) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(&out.stdout);
    match backend {
        ServiceBackend::Systemd => {
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .unwrap_or("")
                    .to_string()
            };
            if get("LoadState") == "not-found" {
                return None;
            }
            let active = get("ActiveState");
            Some((
                if active.is_empty() {
                    "unknown".into()
                } else {
                    active
                },
                get("SubState"),
            ))
        }
        ServiceBackend::Command(_) => {
            let mut words = text.split_whitespace();
            let first = words.next().unwrap_or("");
            const KNOWN: [&str; 6] = [
                "active",
                "inactive",
                "failed",
                "activating",
                "deactivating",
                "unknown",
            ];
            if first == "not-found" {
                return None;
            }
            if KNOWN.contains(&first) {
                return Some((first.to_string(), words.next().unwrap_or("").to_string()));
            }
            let state = if out.exit_code == Some(0) {
                "active"
            } else {
                "inactive"
            };
            Some((state.to_string(), String::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str) -> ProcOutput {
        ProcOutput {
            exit_code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
            truncated: false,
        }
    }

    #[test]
    fn systemd_argv_and_status_parsing() {
        let b = ServiceBackend::Systemd;
        assert_eq!(
            service_argv(&b, Verb::Restart, "nginx.service"),
            ["/usr/bin/systemctl", "restart", "--", "nginx.service"]
        );
        assert_eq!(service_argv(&b, Verb::Status, "nginx.service")[1], "show");
        let s = parse_status(
            &b,
            &out(0, "LoadState=loaded\nActiveState=failed\nSubState=failed\n"),
        );
        assert_eq!(s, Some(("failed".into(), "failed".into())));
        assert_eq!(
            parse_status(
                &b,
                &out(
                    0,
                    "LoadState=not-found\nActiveState=inactive\nSubState=dead\n"
                )
            ),
            None
        );
    }

    #[test]
    fn command_templates_substitute_the_unit_and_read_states() {
        let t = CommandTemplates {
            status: vec!["/bin/st".into(), "{unit}".into()],
            start: vec!["/bin/x".into()],
            stop: vec!["/bin/x".into()],
            restart: vec![
                "/usr/sbin/service".into(),
                "{unit}".into(),
                "restart".into(),
            ],
            reload: vec!["/bin/x".into()],
        };
        let b = ServiceBackend::Command(t);
        assert_eq!(
            service_argv(&b, Verb::Restart, "php8.2-fpm"),
            ["/usr/sbin/service", "php8.2-fpm", "restart"]
        );
        assert_eq!(
            parse_status(&b, &out(3, "failed (Result: exit-code)\n")),
            Some(("failed".into(), "(Result:".into()))
        );
        assert_eq!(
            parse_status(&b, &out(0, "is running\n")),
            Some(("active".into(), String::new()))
        );
        assert_eq!(
            parse_status(&b, &out(3, "is stopped\n")),
            Some(("inactive".into(), String::new()))
        );
        assert_eq!(parse_status(&b, &out(0, "not-found\n")), None);
    }

    #[tokio::test]
    async fn processes_get_no_environment_a_timeout_and_capped_output() {
        // The test process has HOME, CARGO_* and more; the child sees only a fixed PATH.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some() || std::env::var_os("HOME").is_some());
        let o = run_process("/usr/bin/env", None, &[], Duration::from_secs(5), 4096)
            .await
            .ok()
            .unwrap();
        let env = String::from_utf8_lossy(&o.stdout);
        assert_eq!(env.trim(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin");

        let started = std::time::Instant::now();
        let r = run_process(
            "/bin/sleep",
            None,
            &["5".into()],
            Duration::from_millis(100),
            64,
        )
        .await;
        assert!(matches!(r, Err(ProcError::Timeout)));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the child must be killed, not waited for"
        );

        let o = run_process(
            "/bin/sh",
            None,
            &["-c".into(), "head -c 100000 /dev/zero".into()],
            Duration::from_secs(5),
            1000,
        )
        .await
        .ok()
        .unwrap();
        assert_eq!(o.stdout.len(), 1000);
        assert!(o.truncated);
        assert_eq!(o.exit_code, Some(0), "the writer was drained, not blocked");

        assert!(matches!(
            run_process("/nonexistent/prog", None, &[], Duration::from_secs(1), 10).await,
            Err(ProcError::NotFound(_))
        ));
    }
}

/// Facts read from /proc and statvfs.
pub(crate) mod probe {
    use std::path::Path;

    fn meminfo_kb(text: &str, key: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// (total, available, swap total, swap free) in bytes.
    pub fn memory() -> std::io::Result<(u64, u64, u64, u64)> {
        let t = std::fs::read_to_string("/proc/meminfo")?;
        Ok((
            meminfo_kb(&t, "MemTotal") * 1024,
            meminfo_kb(&t, "MemAvailable") * 1024,
            meminfo_kb(&t, "SwapTotal") * 1024,
            meminfo_kb(&t, "SwapFree") * 1024,
        ))
    }

    /// Load averages.
    pub fn load() -> std::io::Result<(f64, f64, f64)> {
        let t = std::fs::read_to_string("/proc/loadavg")?;
        let mut it = t
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(0.0));
        Ok((
            it.next().unwrap_or(0.0),
            it.next().unwrap_or(0.0),
            it.next().unwrap_or(0.0),
        ))
    }

    /// Seconds since boot.
    pub fn uptime() -> std::io::Result<u64> {
        let t = std::fs::read_to_string("/proc/uptime")?;
        Ok(t.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64)
    }

    /// (total, free, available, inodes total, inodes free) of the filesystem holding `path`.
    pub fn disk(path: &Path) -> std::io::Result<(u64, u64, u64, u64, u64)> {
        let s = rustix::fs::statvfs(path)?;
        let f = s.f_frsize;
        Ok((
            s.f_blocks * f,
            s.f_bfree * f,
            s.f_bavail * f,
            s.f_files,
            s.f_ffree,
        ))
    }

    /// (pid, comm, rss bytes) of processes whose comm equals `name`.
    pub fn processes(name: &str) -> std::io::Result<Vec<(u32, String, u64)>> {
        let page = rustix::param::page_size() as u64;
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
                continue;
            };
            let comm = comm.trim_end();
            if comm != name {
                continue;
            }
            let rss = std::fs::read_to_string(entry.path().join("statm"))
                .ok()
                .and_then(|s| {
                    s.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0);
            out.push((pid, comm.to_string(), rss * page));
        }
        Ok(out)
    }

    /// (protocol, address, port) of listening TCP sockets and bound UDP sockets.
    pub fn listeners() -> Vec<(String, String, u16)> {
        let mut out = Vec::new();
        for proto in ["tcp", "tcp6", "udp", "udp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/net/{proto}")) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.len() < 4 {
                    continue;
                }
                // TCP: state 0A is LISTEN. UDP: 07 is an unconnected bound socket.
                let listening = if proto.starts_with("tcp") {
                    cols[3] == "0A"
                } else {
                    cols[3] == "07"
                };
                if !listening {
                    continue;
                }
                if let Some((addr, port)) = parse_hex_addr(cols[1]) {
                    out.push((proto.to_string(), addr, port));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn parse_hex_addr(s: &str) -> Option<(String, u16)> {
        let (addr, port) = s.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let addr = match addr.len() {
            8 => {
                let n = u32::from_str_radix(addr, 16).ok()?;
                std::net::Ipv4Addr::from(n.to_le_bytes()).to_string()
            }
            32 => {
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    let n = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                    chunk.copy_from_slice(&n.to_le_bytes());
                }
                std::net::Ipv6Addr::from(bytes).to_string()
            }
            _ => return None,
        };
        Some((addr, port))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn proc_facts_are_read() {
            let (total, avail, _, _) = super::memory().unwrap();
            assert!(total > 0 && avail <= total);
            assert!(super::uptime().unwrap() > 0);
            let (t, f, a, _, _) = super::disk(std::path::Path::new("/")).unwrap();
            assert!(t > 0 && f <= t && a <= t);
            assert_eq!(
                super::parse_hex_addr("0100007F:1F90"),
                Some(("127.0.0.1".into(), 8080))
            );
        }

        #[test]
        fn listening_socket_is_seen() {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            assert!(
                super::listeners()
                    .iter()
                    .any(|(p, a, pt)| p == "tcp" && a == "127.0.0.1" && *pt == port)
            );
        }
    }
}
