//! A guest's stderr: the last bytes it wrote, kept for the report of a
//! call that traps (a Rust panic prints its message there just before it
//! aborts).
//!
//! Writing never fails and never waits: older bytes make room for newer
//! ones. A guest chatty on stderr must not be stopped by it, and what
//! matters in a report is the end, where the panic message is. A warm
//! store clears it before each call, so a report shows that call's output
//! only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The tail of a guest's stderr, shared by the WASI context and the host.
#[derive(Debug, Clone)]
pub struct StderrTail {
    capacity: usize,
    bytes: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    /// A tail keeping the last `capacity` bytes.
    pub fn new(capacity: usize) -> StderrTail {
        // Empty until written to: most calls write nothing, and every
        // store makes one.
        StderrTail {
            capacity,
            bytes: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// The bytes kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().iter().copied().collect()
    }

    /// Forgets what was written so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn push(&self, written: &[u8]) {
        let kept = &written[written.len().saturating_sub(self.capacity)..];
        let mut bytes = self.lock();
        let overflow = (bytes.len() + kept.len()).saturating_sub(self.capacity);
        bytes.drain(..overflow);
        bytes.extend(kept);
    }

    // Nothing can be left half-done by a panic while pushing bytes, so a
    // poisoned lock still guards a valid tail.
    fn lock(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Any amount is accepted; this bounds what one write may allocate.
        Ok(self.capacity.max(1))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_written() {
        let tail = StderrTail::new(8);
        tail.push(b"abc");
        tail.push(b"defgh");
        assert_eq!(tail.contents(), b"abcdefgh");
        tail.push(b"ij");
        assert_eq!(tail.contents(), b"cdefghij");
        tail.push(b"0123456789");
        assert_eq!(tail.contents(), b"23456789");
        tail.clear();
        assert!(tail.contents().is_empty());
    }

    #[test]
    fn writing_past_the_capacity_never_fails() {
        let mut tail = StderrTail::new(4);
        for _ in 0..100 {
            let permit = tail.check_write().expect("a permit");
            assert!(permit > 0);
            tail.write(Bytes::from_static(b"panicked"))
                .expect("written");
        }
        assert_eq!(tail.contents(), b"cked");
    }
}
