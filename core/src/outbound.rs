//! One connection's outbound queue: shared frames waiting to be written.
//!
//! Frames handed to the adapter (leased) move out of the queue (no refcount
//! traffic per delivery beyond the fan-out's one clone); only their lengths stay,
//! so the byte and message caps still cover everything the connection owes
//! the socket until the adapter reports it written.

use std::collections::VecDeque;

use bytes::Bytes;

/// Frames owed to one socket.
#[derive(Default, Debug)]
pub struct Outbound {
    /// Frames not yet handed to the adapter.
    frames: VecDeque<Bytes>,
    /// Lengths of frames handed out and not yet fully written, oldest first.
    leased: VecDeque<usize>,
    /// Bytes of the oldest leased frame already written.
    front_written: usize,
    /// Unwritten bytes, leased or not.
    bytes: usize,
    /// Unleased frames at the front that `drop_unleased` must keep (the
    /// handshake response: a close or a cut right after the 101 must not
    /// leave the peer with frames and no HTTP response).
    protected: usize,
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
        self.frames.len() + self.leased.len()
    }

    /// Nothing owed.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.leased.is_empty()
    }

    /// Frames not yet handed to the adapter.
    pub fn has_unleased(&self) -> bool {
        !self.frames.is_empty()
    }

    /// Moves up to `max` frames not yet leased into `out`, in order. Partial
    /// writes are the adapter's to track; it reports progress in bytes.
    pub fn lease(&mut self, out: &mut Vec<Bytes>, max: usize) -> usize {
        let n = self.frames.len().min(max);
        for f in self.frames.drain(..n) {
            self.leased.push_back(f.len());
            out.push(f);
        }
        self.protected = self.protected.saturating_sub(n);
        n
    }

    /// The adapter wrote `n` more bytes, in order. Returns the bytes actually
    /// accounted (never more than were leased).
    pub fn written(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 {
            let Some(&len) = self.leased.front() else {
                break;
            };
            let left = len - self.front_written;
            if n >= left {
                n -= left;
                done += left;
                self.leased.pop_front();
                self.front_written = 0;
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
        let keep = self.protected.min(self.frames.len());
        let dropped = self.frames.len() - keep;
        for f in self.frames.drain(keep..) {
            self.bytes -= f.len();
        }
        dropped
    }

    /// Keeps every frame queued now through later `drop_unleased` calls.
    pub fn protect_queued(&mut self) {
        self.protected = self.frames.len();
    }

    /// Releases memory held by a queue that grew large and emptied.
    pub fn shrink_if_idle(&mut self) {
        if self.is_empty() {
            if self.frames.capacity() > 16 {
                self.frames = VecDeque::new();
            }
            if self.leased.capacity() > 16 {
                self.leased = VecDeque::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_frames_survive_a_cut_until_leased() {
        let mut q = Outbound::default();
        q.push(Bytes::from_static(b"HTTP/1.1 101"));
        q.protect_queued();
        q.push(Bytes::from_static(b"data"));
        assert_eq!(q.drop_unleased(), 1);
        let mut out = Vec::new();
        q.lease(&mut out, 8);
        assert_eq!(out, vec![Bytes::from_static(b"HTTP/1.1 101")]);
        q.push(Bytes::from_static(b"more"));
        assert_eq!(q.drop_unleased(), 1, "protection ends once handed out");
    }

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
        assert_eq!((q.len(), q.bytes()), (2, 6), "leased frames still count");
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
