//! Building the model from the configuration bytes and decoding one
//! operation per step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wshub_core::config::{HubConfig, PublishPatterns};
use wshub_core::request::Identity;
use wshub_core::Hub;

use super::{
    fuzz_authenticator, HubModel, ADVANCES_MS, CHANNELS, CLOSE_CODES, SLOTS, TARGETS, USERS,
};
use crate::input::ByteCursor;
use crate::wire::UNIX_AT_START;

impl HubModel {
    pub(crate) fn new(a: u8, b: u8, tag: u64, t0: Instant) -> Self {
        let (max_queued_messages, max_queued_bytes) =
            [(256, 1 << 20), (4, 4096), (16, 512), (2, 256)][usize::from(a & 3)];
        let policy: Arc<dyn wshub_core::config::ChannelPolicy> = if a & 0x08 != 0 {
            Arc::new(PublishPatterns::new(["c*"]))
        } else {
            Arc::new(wshub_core::config::DefaultPolicy)
        };
        let mut cfg = HubConfig {
            authenticator: Arc::new(fuzz_authenticator),
            policy,
            max_queued_messages,
            max_queued_bytes,
            max_frames_per_transmit: if a & 0x04 != 0 { 1 } else { 64 },
            max_subscriptions: if a & 0x10 != 0 { 2 } else { 1024 },
            max_channel_name: if a & 0x20 != 0 { 8 } else { 256 },
            max_connections: if a & 0x40 != 0 { 3 } else { 100_000 },
            max_invalid_messages: if b & 0x01 != 0 { 2 } else { 100 },
            // The model predicts every reply; the rate limit has its own
            // tests (core/tests/limits.rs).
            max_messages_per_second: 0,
            http_fallback: b & 0x04 != 0,
            max_http_requests_per_connection: if b & 0x20 != 0 { 2 } else { 100 },
            app_types: if b & 0x08 != 0 {
                vec!["*".to_owned()]
            } else {
                Vec::new()
            },
            allowed_origins: if b & 0x10 != 0 {
                vec!["https://ok.example".to_owned()]
            } else {
                Vec::new()
            },
            ..HubConfig::default()
        };
        if b & 0x02 != 0 {
            cfg.handshake_timeout = Duration::from_secs(2);
            cfg.write_timeout = Duration::from_secs(3);
            cfg.ping_interval = Duration::from_secs(5);
            cfg.pong_timeout = Duration::from_secs(11);
            cfg.close_timeout = Duration::from_secs(1);
        }
        let hub = Hub::new(cfg.clone(), t0, UNIX_AT_START).expect("valid config");
        HubModel {
            hub,
            cfg,
            t0,
            now: t0,
            tag,
            auto_write: a & 0x80 != 0,
            tracks: Vec::new(),
            live: [None; SLOTS],
            last: [None; SLOTS],
            by_id: BTreeMap::new(),
            published: Vec::new(),
            requests: 0,
            shutdown: false,
            shutdown_complete: 0,
            slow: BTreeSet::new(),
            fan_outs: Vec::new(),
            step: 0,
            bytes_in: 0,
            bytes_out: 0,
            auth_failures: 0,
            slow_consumers: 0,
        }
    }

    pub(super) fn valid_channel(&self, ch: &str) -> bool {
        !ch.is_empty() && ch.len() <= self.cfg.max_channel_name
    }

    pub(super) fn can_publish(&self, ch: &str) -> bool {
        // Mirrors the two policies the config can pick.
        self.cfg.policy.can_publish(&Identity::default(), ch)
    }

    /// The handle to address for a slot: its live connection, else the last
    /// one (stale), else none.
    pub(super) fn target(&self, slot: usize) -> Option<usize> {
        self.live[slot].or(self.last[slot])
    }

    pub(crate) fn step(&mut self, input: &mut ByteCursor<'_>) {
        self.step += 1;
        self.slow.clear();
        let op = input.byte();
        match op % 21 {
            0 => {
                let slot = usize::from(input.byte()) % SLOTS;
                self.open(slot);
            }
            1 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let target = input.pick(&TARGETS);
                let split = input.byte();
                self.handshake(slot, target, split);
            }
            2 => self.client_frame(input),
            3 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let len = usize::from(input.byte() % 64);
                let bytes = input.bytes(len).to_vec();
                self.garbage(slot, &bytes);
            }
            4 => {
                let ch = input.pick(&CHANNELS);
                let how = input.byte();
                self.publish(ch, how);
            }
            5 => self.broadcast(),
            6 => {
                let slot = usize::from(input.byte()) % SLOTS;
                self.send(slot);
            }
            7 => {
                let user = input.pick(&USERS);
                self.send_to_user(user);
            }
            8 | 9 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let ch = input.pick(&CHANNELS);
                self.server_subscription(slot, ch, op % 21 == 8);
            }
            10 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let code = input.pick(&CLOSE_CODES);
                self.close(slot, code);
            }
            11 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let amount = input.pick(&[1, 2, 5, 10, 60, 130, 1000, usize::MAX]);
                self.write(slot, amount);
            }
            12 => self.write_all(),
            13 | 14 => {
                let slot = usize::from(input.byte()) % SLOTS;
                self.cut(slot, op % 21 == 13);
            }
            15 => {
                let kind = input.byte();
                let ms = if kind & 0x80 != 0 {
                    u64::from(input.u16())
                } else {
                    ADVANCES_MS[usize::from(kind) % ADVANCES_MS.len()]
                };
                self.advance(Duration::from_millis(ms));
            }
            16 => {
                let kind = input.byte();
                let ms = u64::from(input.u16());
                self.timeout(kind, ms);
            }
            17 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let kind = input.byte();
                self.answer(slot, kind);
            }
            18 => {
                if input.byte() & 7 == 0 {
                    self.do_shutdown();
                } else {
                    self.drive(3);
                }
            }
            19 => {
                let slot = usize::from(input.byte()) % SLOTS;
                let status = input.pick(&[200, 204, 404, 503, 42]);
                self.http_respond(slot, status);
            }
            _ => {
                let slot = usize::from(input.byte()) % SLOTS;
                let target = input.pick(&TARGETS);
                if self.live[slot].is_none() {
                    self.open(slot);
                }
                self.handshake(slot, target, 0xff);
            }
        }
        self.pump();
        self.check();
    }
}
