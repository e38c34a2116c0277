//! Draining the hub and checking every event and every byte it wrote against
//! the model.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde_json::{json, Value};
use wshub_core::event::{ConnId, Event, UsageError};
use wshub_core::frame::Decoded;
use wshub_core::request::PeerInfo;

use super::{HubModel, St, Wire, SLOTS};
use crate::wire::{
    assert_one_response, assert_switching_protocols, check_hub, says_close, KEY, MAX_CLOSE_FRAME,
};

impl HubModel {
    /// Drains events and output (and writes everything when auto-writing)
    /// until the hub is quiet.
    pub(super) fn pump(&mut self) {
        let mut frames = Vec::new();
        loop {
            let mut busy = false;
            while let Some(event) = self.hub.poll_event() {
                busy = true;
                self.on_event(event);
            }
            while let Some(id) = self.hub.poll_transmit(&mut frames) {
                busy = true;
                let t = *self
                    .by_id
                    .get(&id)
                    .unwrap_or_else(|| panic!("output for {id}, never opened"));
                for f in frames.drain(..) {
                    self.absorb(t, f);
                }
            }
            if self.auto_write {
                for slot in 0..SLOTS {
                    if let Some(t) = self.live[slot] {
                        if self.tracks[t].held_bytes > 0 {
                            busy = true;
                            self.write(slot, usize::MAX);
                        }
                    }
                }
            }
            if !busy {
                break;
            }
        }
        // Fan-out counts are net of the connections that send cut.
        for f in std::mem::take(&mut self.fan_outs) {
            let cut = f
                .recipients
                .iter()
                .filter(|t| self.slow.contains(t))
                .count();
            assert_eq!(
                f.returned,
                f.recipients.len() - cut,
                "{} reached {} of {} recipients ({cut} cut)",
                f.what,
                f.returned,
                f.recipients.len()
            );
        }
    }

    pub(super) fn track_of(&self, id: ConnId, what: &str) -> usize {
        let t = *self
            .by_id
            .get(&id)
            .unwrap_or_else(|| panic!("{what} for {id}, never opened"));
        assert_ne!(
            self.tracks[t].st,
            St::Closed,
            "{what} for {id} after its Closed"
        );
        t
    }

    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::AuthPending { conn, .. } => {
                let t = self.track_of(conn, "AuthPending");
                assert_eq!(self.tracks[t].st, St::Handshake, "AuthPending twice");
                self.tracks[t].st = St::Pending;
            }
            Event::Connected { conn, identity, .. } => {
                let t = self.track_of(conn, "Connected");
                let track = &mut self.tracks[t];
                assert!(
                    matches!(track.st, St::Handshake | St::Pending),
                    "Connected in {:?}",
                    track.st
                );
                track.st = St::Open;
                track.connected = true;
                track.user = identity.user_id;
            }
            Event::AuthFailed { conn, status, .. } => {
                let t = self.track_of(conn, "AuthFailed");
                assert!(matches!(status, 401 | 403));
                assert!(matches!(self.tracks[t].st, St::Handshake | St::Pending));
                self.auth_failures += 1;
            }
            Event::SlowConsumer { conn, .. } => {
                let t = self.track_of(conn, "SlowConsumer");
                assert!(self.tracks[t].connected, "SlowConsumer before the upgrade");
                self.slow.insert(t);
                self.slow_consumers += 1;
            }
            Event::Closed {
                conn,
                was_connected,
                code,
                reason,
                flushed,
                user_id,
            } => {
                let t = self.track_of(conn, "Closed");
                assert!(!self.hub.contains(conn), "Closed but still in the hub");
                let track = &mut self.tracks[t];
                assert_eq!(was_connected, track.connected, "Closed.was_connected");
                if flushed {
                    assert_eq!(track.held_bytes, 0, "flushed with output unwritten");
                }
                let user = (!track.user.is_empty()).then(|| track.user.clone());
                assert_eq!(user_id, user, "Closed.user_id");
                // The code of a close frame that went out is the one reported.
                if let Some(sent) = track.close_seen {
                    assert_eq!(code, sent, "Closed.code vs the close frame ({reason:?})");
                }
                if track.status.is_some_and(|s| s != 101) {
                    assert_eq!(code, None, "a close code after an HTTP response");
                    assert!(!was_connected);
                }
                track.st = St::Closed;
                // The socket is closed: what was handed out is dropped.
                track.held.clear();
                track.held_bytes = 0;
                track.front_written = 0;
                track.subs.clear();
                if self.live[track.slot] == Some(t) {
                    self.live[track.slot] = None;
                }
            }
            Event::ShutdownComplete => {
                assert!(self.shutdown, "ShutdownComplete without shutdown");
                self.shutdown_complete += 1;
                assert_eq!(self.shutdown_complete, 1, "ShutdownComplete twice");
                assert!(
                    self.tracks.iter().all(|t| t.st == St::Closed),
                    "ShutdownComplete with connections left"
                );
            }
            Event::Message { conn, kind, data } => {
                assert!(
                    !self.cfg.app_types.is_empty(),
                    "Message event without app types"
                );
                let t = self.track_of(conn, "Message");
                let track = &mut self.tracks[t];
                assert_eq!(track.st, St::Open, "a message from a connection not open");
                if !track.dirty {
                    assert_eq!((kind.as_str(), &data), ("no-such-type", &json!([1])));
                    assert!(track.app_messages > 0, "an unexpected Message event");
                    track.app_messages -= 1;
                }
            }
            Event::HttpRequest { conn, body, .. } => {
                assert!(
                    self.cfg.http_fallback,
                    "HttpRequest without the HTTP fallback"
                );
                let t = self.track_of(conn, "HttpRequest");
                let track = &mut self.tracks[t];
                // One at a time: the next only after the answer.
                assert_eq!((track.st, track.awaiting_http), (St::Handshake, false));
                assert_ne!(
                    track.wire,
                    Wire::Done,
                    "a request read after the last answer"
                );
                if !track.dirty {
                    assert_eq!(body, b"hi");
                }
                track.awaiting_http = true;
            }
            // Only an adapter's bounded event channel drops events; the hub
            // itself never emits this, nor anything the model does not know.
            other => panic!("the hub emitted an event the model does not know: {other:?}"),
        }
    }

    /// One frame handed out for track `t`.
    pub(super) fn absorb(&mut self, t: usize, f: Bytes) {
        let tag = self.tag;
        let track = &mut self.tracks[t];
        assert_ne!(track.st, St::Closed, "output after Closed");
        assert!(!f.is_empty(), "an empty frame handed out");
        track.held_bytes += f.len();
        track.held.push_back(f.clone());
        match track.wire {
            Wire::Frames => {}
            Wire::Done => panic!(
                "bytes to {} after the response that ended it: {:?}",
                track.id,
                String::from_utf8_lossy(&f)
            ),
            Wire::Http => {
                // One whole HTTP response per frame handed out.
                assert!(
                    f.starts_with(b"HTTP/1.1 "),
                    "the next bytes to {} are not an HTTP response (connected: {}); \
                     was the 101 dropped? {:?}",
                    track.id,
                    track.connected,
                    String::from_utf8_lossy(&f)
                );
                if f.starts_with(b"HTTP/1.1 101 ") {
                    assert_switching_protocols(&f, KEY);
                    assert!(track.connected, "101 without Connected");
                    assert!(track.answers.is_empty(), "a 101 before an HTTP answer");
                    track.status = Some(101);
                    track.wire = Wire::Frames;
                    return;
                }
                let status = assert_one_response(&f);
                let close = says_close(&f);
                match track.answers.pop_front() {
                    Some((answered, keep)) => {
                        assert_eq!(status, answered, "HTTP answer");
                        if let Some(keep) = keep {
                            assert_eq!(!close, keep, "whether the answer keeps the connection");
                        }
                    }
                    None => {
                        assert!((400..=599).contains(&status), "refusal status {status}");
                        assert!(close, "a refusal that keeps the connection");
                        assert!(!track.connected, "a refusal after Connected");
                    }
                }
                assert!(
                    !f.windows(10).any(|w| w == b"\r\nInjected"),
                    "a header was injected"
                );
                track.status = Some(status);
                if close {
                    track.wire = Wire::Done;
                    track.leave_open();
                }
                return;
            }
        }
        assert!(track.close_seen.is_none(), "a frame after the close frame");
        let (n, r) = track.decoder.decode(&f);
        let decoded = match r {
            Ok(Some(d)) if n == f.len() => d,
            other => panic!("a handed-out frame is not one whole valid frame: {other:?}"),
        };
        match decoded {
            Decoded::Text(text) => {
                let v: Value = serde_json::from_str(&text).expect("the hub sent invalid JSON");
                let kind = v.get("type").and_then(Value::as_str).expect("no type");
                // A tagged message: a publish, broadcast or send of the model.
                if let Some([a, b]) = v.get("data").and_then(Value::as_array).map(Vec::as_slice) {
                    if a.as_u64() == Some(tag) {
                        let n = b.as_u64().expect("publish id");
                        assert!(
                            track.got < track.expected.len() && track.expected[track.got] == n,
                            "{} received publish {n}, expected {:?} after {} received",
                            track.id,
                            track.expected,
                            track.got
                        );
                        let want = self.published[n as usize].channel.as_deref();
                        assert_eq!(v.get("channel").and_then(Value::as_str), want);
                        track.got += 1;
                    }
                }
                let rid = v.get("id").and_then(Value::as_str);
                if let Some(rid) = rid.filter(|r| r.starts_with(&format!("r{tag}-"))) {
                    if !track.dirty {
                        let got_kind = match kind {
                            "error" => {
                                format!("error:{}", v["data"]["code"].as_str().expect("error code"))
                            }
                            k => k.to_owned(),
                        };
                        let want = track.replies.pop_front();
                        assert_eq!(
                            Some((rid.to_owned(), got_kind)),
                            want,
                            "reply on {}",
                            track.id
                        );
                    }
                }
            }
            Decoded::Binary(_) => panic!("binary frame from a hub"),
            Decoded::Ping(_) => {}
            Decoded::Pong(p) => {
                if !track.dirty {
                    assert_eq!(track.pongs.pop_front(), Some(p), "pong payload");
                }
            }
            Decoded::Close(c) => {
                let code = c.map(|(code, _)| code);
                track.close_seen = Some(code);
                if let Some(want) = track.expect_close.take() {
                    if !track.dirty && !matches!(code, Some(1013)) {
                        assert_eq!(code, want, "close code on {}", track.id);
                    }
                }
                track.leave_open();
            }
        }
    }

    /// The history store against the publishes: per channel the stored
    /// publications are contiguous offsets ending at the channel's position,
    /// each the positioned JSON of a publish to that channel (its `offset`
    /// last), in publish order with none twice. (History is on by default,
    /// so every program exercises it.)
    fn check_history(&mut self) {
        let tag = self.tag;
        // The newest 16 are as telling as all, at a fraction of a step.
        let limit = self.cfg.history.max_replay.min(16);
        for ch in super::CHANNELS {
            let Some(position) = self.hub.position(ch) else {
                continue;
            };
            let page = self
                .hub
                .history(self.now, ch, None, limit)
                .expect("a channel with a position reads");
            assert_eq!(page.position, position, "the read's position on {ch}");
            let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
            if let Some(&last) = offsets.last() {
                assert_eq!(last, position.offset, "the newest stored on {ch}");
                let first = offsets[0];
                assert_eq!(
                    offsets,
                    (first..=last).collect::<Vec<_>>(),
                    "contiguous on {ch}"
                );
            }
            let mut last_n = None;
            for p in &page.publications {
                let v: Value = serde_json::from_slice(&p.json).expect("stored JSON");
                assert_eq!(v["channel"], ch, "stored on {ch}");
                let text = std::str::from_utf8(&p.json).expect("UTF-8");
                assert!(
                    text.ends_with(&format!(",\"offset\":{}}}", p.offset)),
                    "the offset is the last field: {text}"
                );
                if let Some([a, b]) = v["data"].as_array().map(Vec::as_slice) {
                    if a.as_u64() == Some(tag) {
                        let n = b.as_u64().expect("publish id");
                        assert_eq!(self.published[n as usize].channel.as_deref(), Some(ch));
                        assert!(last_n < Some(n), "publish {n} stored out of order on {ch}");
                        last_n = Some(n);
                    }
                }
            }
        }
    }

    /// The per-step invariants.
    pub(super) fn check(&mut self) {
        check_hub(&self.hub);
        self.check_history();
        let max_msgs = self.cfg.max_queued_messages;
        let max_bytes = self.cfg.max_queued_bytes;
        let mut channels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let (mut connected, mut pending) = (0, 0);
        for track in &mut self.tracks {
            if track.st == St::Closed {
                assert!(
                    !self.hub.contains(track.id),
                    "{} outlived its Closed",
                    track.id
                );
                assert!(track.got <= track.expected.len());
                continue;
            }
            assert!(
                self.hub.contains(track.id),
                "{} gone without Closed",
                track.id
            );
            if track.connected {
                connected += 1;
            } else {
                pending += 1;
            }
            let queued = self.hub.queued(track.id).expect("live");
            assert_eq!(self.hub.has_output(track.id), queued.0 > 0, "has_output");
            if track.connected {
                let identity = self.hub.identity(track.id).map(|i| i.user_id.as_str());
                assert_eq!(identity, Some(track.user.as_str()), "identity");
            }
            assert_eq!(
                queued,
                (track.held.len(), track.held_bytes),
                "queued output of {} vs what was handed out and not written",
                track.id
            );
            assert!(
                queued.0 <= max_msgs + 1 && queued.1 <= max_bytes + MAX_CLOSE_FRAME,
                "{} queue over its caps: {queued:?}",
                track.id
            );
            let hub_subs: BTreeSet<String> = self.hub.subscriptions(track.id).into_iter().collect();
            if track.st == St::Open {
                if track.dirty {
                    track.subs = hub_subs;
                } else {
                    assert_eq!(hub_subs, track.subs, "subscriptions of {}", track.id);
                    assert!(
                        track.replies.is_empty(),
                        "replies missing: {:?}",
                        track.replies
                    );
                    assert!(track.pongs.is_empty(), "pongs missing");
                    assert_eq!(track.app_messages, 0, "Message events missing");
                    assert_eq!(track.expect_close, None, "{} should have closed", track.id);
                }
                assert_eq!(
                    track.got,
                    track.expected.len(),
                    "{} is open but missed messages",
                    track.id
                );
                for ch in &track.subs {
                    channels
                        .entry(ch.clone())
                        .or_default()
                        .push(track.user.clone());
                }
            } else {
                assert!(
                    hub_subs.is_empty(),
                    "{} subscribed while not open",
                    track.id
                );
                track.subs.clear();
                track.replies.clear();
                track.pongs.clear();
                track.expect_close = None;
                track.app_messages = 0;
            }
        }
        let stats = self.hub.stats();
        assert_eq!((stats.connections, stats.pending), (connected, pending));
        assert_eq!(
            (stats.bytes_in, stats.bytes_out),
            (self.bytes_in, self.bytes_out),
            "byte counters"
        );
        assert_eq!(
            (stats.auth_failures, stats.slow_consumers),
            (self.auth_failures, self.slow_consumers),
            "failure counters"
        );
        let sizes: Vec<(String, usize)> = channels
            .iter()
            .map(|(c, users)| (c.clone(), users.len()))
            .collect();
        assert_eq!(self.hub.channels(), sizes, "channel map");
        assert_eq!(stats.channels, sizes.len());
        for (ch, users) in &mut channels {
            assert_eq!(self.hub.subscriber_count(ch), users.len());
            users.retain(|u| !u.is_empty());
            users.sort();
            users.dedup();
            assert_eq!(&self.hub.channel_users(ch), users, "users of {ch}");
        }
        if let Some(at) = self.hub.poll_timeout() {
            assert!(
                at >= self.now,
                "poll_timeout {:?} before now with nothing queued (step {})",
                self.now - at,
                self.step
            );
        }
    }

    /// Shuts down and lets time run: every connection ends, exactly once.
    pub(crate) fn finish(mut self) {
        self.do_shutdown();
        self.pump();
        self.check();
        for _ in 0..64 {
            if self.tracks.iter().all(|t| t.st == St::Closed) {
                break;
            }
            self.write_all();
            self.pump();
            self.check();
            match self.hub.poll_timeout() {
                Some(at) if at > self.now => self.now = at,
                Some(_) => {}
                None => break,
            }
            self.hub.handle_timeout(self.now);
            self.pump();
            self.check();
        }
        for track in &self.tracks {
            assert_eq!(
                track.st,
                St::Closed,
                "{} never closed after shutdown",
                track.id
            );
        }
        assert_eq!(self.shutdown_complete, 1, "ShutdownComplete count");
        assert_eq!(
            self.hub.open(self.now, PeerInfo::default()),
            Err(UsageError::ShuttingDown)
        );
        let stats = self.hub.stats();
        assert_eq!(
            (stats.connections, stats.pending, stats.channels),
            (0, 0, 0)
        );
    }
}
