//! The frames a driver took from [`crate::Hub::poll_transmit`] (or the
//! client's) and its socket has not taken yet, as vectored-write slices.
//!
//! Every driver needs the same bookkeeping between `poll_transmit` and
//! `write_vectored`: keep the shared frames in order, hand out up to a
//! system call's worth of slices starting mid-frame after a partial write,
//! and drop what was written. This is it, once, with no I/O: the driver does
//! the write and reports how many bytes went.
//!
//! ```
//! use bytes::Bytes;
//! use wshub_core::write_queue::{WriteQueue, MAX_SLICES};
//!
//! let mut queue = WriteQueue::default();
//! queue.extend(&mut vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")]);
//! let written = {
//!     let mut slices = [std::io::IoSlice::new(&[]); MAX_SLICES];
//!     let n = queue.slices(&mut slices);
//!     assert_eq!(n, 2);
//!     8 // what `socket.write_vectored(&slices[..n])` returned: "hello wo"
//! };
//! queue.advance(written);
//! let mut slices = [std::io::IoSlice::new(&[]); MAX_SLICES];
//! let n = queue.slices(&mut slices);
//! assert_eq!(&*slices[..n][0], b"rld");
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;

/// Most slices handed to one vectored write: Linux allows 1024, and 64
/// frames of a typical size already fill a socket buffer.
pub const MAX_SLICES: usize = 64;

/// What [`WriteQueue::write_with`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything went: this many bytes (0 when nothing was waiting).
    All(usize),
    /// This many bytes went, then the socket said `WouldBlock`: wait for it
    /// to become writable before trying again.
    Blocked(usize),
    /// This many bytes went, then the socket failed (an error, or a write
    /// of 0): report it to the hub as an I/O error.
    Failed(usize),
}

impl Flushed {
    /// Bytes written, whatever came after.
    pub fn written(self) -> usize {
        match self {
            Flushed::All(n) | Flushed::Blocked(n) | Flushed::Failed(n) => n,
        }
    }
}

/// Frames waiting for a socket, oldest first.
#[derive(Debug, Default)]
pub struct WriteQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    offset: usize,
}

impl WriteQueue {
    /// Appends `frames` (as `poll_transmit` filled them), leaving it empty.
    pub fn extend(&mut self, frames: &mut Vec<Bytes>) {
        self.frames.extend(frames.drain(..));
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes waiting.
    pub fn len_bytes(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum::<usize>() - self.offset
    }

    /// Fills `slices` with what is waiting, from the first unwritten byte, up
    /// to [`MAX_SLICES`] frames; returns how many slices it filled.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(&self.frames) {
            let skip = if count == 0 { self.offset } else { 0 };
            *slot = IoSlice::new(frame.get(skip..).unwrap_or_default());
            count += 1;
        }
        count
    }

    /// The socket took `n` bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let avail = front.len() - self.offset;
            if n >= avail {
                n -= avail;
                self.offset = 0;
                self.frames.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
        if self.frames.is_empty() && self.frames.capacity() > 4 * MAX_SLICES {
            // A burst is over: an idle connection keeps little.
            self.frames = VecDeque::new();
        }
    }

    /// Writes what is waiting through `write` (a nonblocking vectored write
    /// the driver provides: the core does no I/O), a system call's worth of
    /// slices at a time, until everything went, the socket would block, or it
    /// failed. `Interrupted` is retried.
    pub fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> Flushed {
        let mut total = 0;
        while !self.is_empty() {
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.slices(&mut slices);
                write(&slices[..count])
            };
            match result {
                Ok(0) => return Flushed::Failed(total),
                Ok(n) => {
                    total += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Blocked(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flushed::Failed(total),
            }
        }
        Flushed::All(total)
    }

    /// Moves everything waiting out, leaving this queue empty (for a writer
    /// thread that writes while the owner keeps queueing).
    pub fn take(&mut self) -> WriteQueue {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(frames: &[&'static [u8]]) -> WriteQueue {
        let mut q = WriteQueue::default();
        q.extend(&mut frames.iter().map(|f| Bytes::from_static(f)).collect());
        q
    }

    fn flat(q: &WriteQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = q.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut q = queue(&[b"abc", b"defg", b"h"]);
        assert_eq!(q.len_bytes(), 8);
        q.advance(2);
        assert_eq!(flat(&q), b"cdefgh");
        q.advance(3);
        assert_eq!(flat(&q), b"fgh");
        assert_eq!(q.len_bytes(), 3);
        q.advance(3);
        assert!(q.is_empty());
        assert_eq!(flat(&q), b"");
    }

    #[test]
    fn one_call_takes_at_most_max_slices_frames() {
        let mut q = WriteQueue::default();
        q.extend(&mut vec![Bytes::from_static(b"x"); MAX_SLICES + 5]);
        let count = |q: &WriteQueue| q.slices(&mut [IoSlice::new(&[]); MAX_SLICES]);
        assert_eq!(count(&q), MAX_SLICES);
        q.advance(MAX_SLICES);
        assert_eq!(count(&q), 5);
    }

    #[test]
    fn write_with_stops_at_would_block_and_resumes_where_it_stopped() {
        let mut q = queue(&[b"abc", b"defg", b"h"]);
        let mut out = Vec::new();
        let mut budget = [Ok(2), Err(io::ErrorKind::Interrupted), Ok(3)].into_iter();
        let mut socket = |slices: &[IoSlice<'_>]| -> io::Result<usize> {
            let take = budget.next().unwrap_or(Err(io::ErrorKind::WouldBlock))?;
            let flat: Vec<u8> = slices.iter().flat_map(|s| s.to_vec()).collect();
            out.extend_from_slice(&flat[..take]);
            Ok(take)
        };
        assert_eq!(q.write_with(&mut socket), Flushed::Blocked(5));
        assert_eq!(flat(&q), b"fgh");
        let rest = q.write_with(|s| Ok(s.iter().map(|s| s.len()).sum()));
        assert_eq!(rest, Flushed::All(3));
        assert!(q.is_empty());
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn write_with_reports_failure_and_a_zero_write() {
        let mut q = queue(&[b"abc"]);
        assert_eq!(q.write_with(|_| Ok(0)), Flushed::Failed(0));
        let e = || io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(q.write_with(|_| Err(e())), Flushed::Failed(0));
        assert_eq!(q.len_bytes(), 3, "nothing is dropped on failure");
        assert_eq!(
            WriteQueue::default().write_with(|_| Err(e())),
            Flushed::All(0)
        );
    }

    #[test]
    fn take_moves_the_offset_too() {
        let mut q = queue(&[b"abc", b"de"]);
        q.advance(1);
        let moved = q.take();
        assert!(q.is_empty());
        assert_eq!(flat(&moved), b"bcde");
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let mut q = WriteQueue::default();
        q.extend(&mut vec![Bytes::from_static(b"x"); 10 * MAX_SLICES]);
        q.advance(10 * MAX_SLICES);
        assert!(q.is_empty());
        assert_eq!(q.frames.capacity(), 0);
    }
}
