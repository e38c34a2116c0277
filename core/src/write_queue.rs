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
use std::io::IoSlice;

use bytes::Bytes;

/// Most slices handed to one vectored write: Linux allows 1024, and 64
/// frames of a typical size already fill a socket buffer.
pub const MAX_SLICES: usize = 64;

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
