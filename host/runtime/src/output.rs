//! The output budget of one invocation, shared by `log` calls, stdout and stderr.
//!
//! Once the budget is spent, the next write fails: a `log` call traps, and stdout/stderr
//! report their stream closed (Rust's `println!` then panics, which traps). Either way
//! the run ends with status `output_limit`.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The shared budget and the captured streams.
#[derive(Clone)]
pub(crate) struct Output {
    inner: Arc<Inner>,
}

struct Inner {
    cap: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
}

impl Output {
    pub fn new(cap: u64) -> Output {
        Output {
            inner: Arc::new(Inner {
                cap,
                used: AtomicU64::new(0),
                exceeded: AtomicBool::new(false),
                stdout: Mutex::new(Vec::new()),
                stderr: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Spend `n` bytes; false (and the budget marked exceeded) when they do not fit.
    pub fn take(&self, n: u64) -> bool {
        let i = &self.inner;
        let fits = i
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(n).filter(|t| *t <= i.cap)
            })
            .is_ok();
        if !fits {
            i.exceeded.store(true, Ordering::SeqCst);
        }
        fits
    }

    fn remaining(&self) -> u64 {
        self.inner
            .cap
            .saturating_sub(self.inner.used.load(Ordering::SeqCst))
    }

    /// Mark the budget exceeded (the trace is full).
    pub fn mark_exceeded(&self) {
        self.inner.exceeded.store(true, Ordering::SeqCst);
    }

    /// Was the budget exceeded?
    pub fn exceeded(&self) -> bool {
        self.inner.exceeded.load(Ordering::SeqCst)
    }

    /// The budget in bytes.
    pub fn cap(&self) -> u64 {
        self.inner.cap
    }

    /// A stdout (`false`) or stderr (`true`) stream writing into this budget.
    pub fn stream(&self, stderr: bool) -> Capture {
        Capture {
            out: self.clone(),
            stderr,
        }
    }

    /// What the guest wrote to stdout and stderr.
    pub fn captured(&self) -> (Vec<u8>, Vec<u8>) {
        let get = |m: &Mutex<Vec<u8>>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (get(&self.inner.stdout), get(&self.inner.stderr))
    }
}

/// stdout or stderr of a guest.
#[derive(Clone)]
pub(crate) struct Capture {
    out: Output,
    stderr: bool,
}

impl Capture {
    fn push(&self, bytes: &[u8]) -> bool {
        if !self.out.take(bytes.len() as u64) {
            return false;
        }
        let buf = if self.stderr {
            &self.out.inner.stderr
        } else {
            &self.out.inner.stdout
        };
        buf.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        true
    }
}

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.push(&bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::msg(
                "output limit exceeded",
            )))
        }
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        match self.out.remaining() {
            0 => {
                self.out.inner.exceeded.store(true, Ordering::SeqCst);
                Err(StreamError::Closed)
            }
            n => Ok(n.min(1 << 20) as usize),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = (buf.len() as u64).min(self.out.remaining()) as usize;
        if n == 0 && !buf.is_empty() {
            self.out.inner.exceeded.store(true, Ordering::SeqCst);
            return Poll::Ready(Err(std::io::Error::other("output limit exceeded")));
        }
        self.push(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stdout_and_stderr_share_one_budget() {
        let o = Output::new(10);
        assert!(o.take(4));
        let mut out = o.stream(false);
        let mut err = o.stream(true);
        assert_eq!(out.check_write().unwrap(), 6);
        out.write(Bytes::from_static(b"abc")).unwrap();
        err.write(Bytes::from_static(b"de")).unwrap();
        assert!(!o.exceeded());
        assert!(err.write(Bytes::from_static(b"xy")).is_err());
        assert!(o.exceeded());
        assert_eq!(o.captured(), (b"abc".to_vec(), b"de".to_vec()));
    }
}
