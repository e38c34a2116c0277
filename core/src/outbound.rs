//! One connection's outbound queue: shared frames waiting to be written.
//!
//! Frames stay here until the adapter reports them written, so the byte and
//! message caps cover everything the connection still owes the socket. Frames
//! already handed to the adapter (leased) are marked, not removed, so a second
//! `lease` hands out only newer ones.

use std::collections::VecDeque;

use bytes::Bytes;

/// Frames owed to one socket.
#[derive(Default, Debug)]
pub struct Outbound {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Frames from the front already handed to the adapter.
    leased: usize,
    /// Unwritten bytes in `frames`.
    bytes: usize,
}

impl Outbound {
    /// Queues a frame.
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Unwritten bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames not yet fully written.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Nothing owed.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames not yet handed to the adapter.
    pub fn has_unleased(&self) -> bool {
        self.leased < self.frames.len()
    }

    /// Hands out up to `max` frames not yet leased (refcount clones). The first
    /// frame of a lease is whole: partial writes are the adapter's to track.
    pub fn lease(&mut self, out: &mut Vec<Bytes>, max: usize) -> usize {
        let start = self.leased;
        let end = self.frames.len().min(start.saturating_add(max));
        for f in self.frames.range(start..end) {
            out.push(f.clone());
        }
        self.leased = end;
        end - start
    }

    /// The adapter wrote `n` more bytes, in order. Returns the bytes actually
    /// accounted (never more than were leased).
    pub fn written(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 && self.leased > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.front_written;
            if n >= left {
                n -= left;
                done += left;
                self.frames.pop_front();
                self.front_written = 0;
                self.leased -= 1;
            } else {
                self.front_written += n;
                done += n;
                n = 0;
            }
        }
        self.bytes -= done;
        done
    }

    /// Drops every frame not yet leased (a connection being cut keeps only what
    /// the adapter already holds). Returns the frames dropped.
    pub fn drop_unleased(&mut self) -> usize {
        let dropped = self.frames.len() - self.leased;
        for f in self.frames.drain(self.leased..) {
            self.bytes -= f.len();
        }
        dropped
    }

    /// Releases memory held by a queue that grew large and emptied.
    pub fn shrink_if_idle(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 16 {
            self.frames = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_write_and_caps_accounting() {
        let mut q = Outbound::default();
        q.push(Bytes::from_static(b"abcd"));
        q.push(Bytes::from_static(b"ef"));
        assert_eq!((q.len(), q.bytes()), (2, 6));
        let mut out = Vec::new();
        assert_eq!(q.lease(&mut out, 1), 1);
        assert_eq!(out, vec![Bytes::from_static(b"abcd")]);
        assert!(q.has_unleased());
        // Writing more than was leased only accounts the leased bytes.
        assert_eq!(q.written(10), 4);
        assert_eq!((q.len(), q.bytes()), (1, 2));
        out.clear();
        assert_eq!(q.lease(&mut out, 8), 1);
        assert_eq!(q.written(1), 1);
        assert_eq!(q.bytes(), 1);
        assert_eq!(q.written(1), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn drop_unleased_keeps_what_the_adapter_holds() {
        let mut q = Outbound::default();
        for _ in 0..3 {
            q.push(Bytes::from_static(b"xyz"));
        }
        let mut out = Vec::new();
        q.lease(&mut out, 1);
        assert_eq!(q.drop_unleased(), 2);
        assert_eq!((q.len(), q.bytes()), (1, 3));
        q.push(Bytes::from_static(b"close"));
        out.clear();
        q.lease(&mut out, 8);
        assert_eq!(out, vec![Bytes::from_static(b"close")]);
    }
}
