//! One test "node": a driver, the hub's end of its queue, and the inputs it
//! delivered, with bounded waits for an expected input.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wshub_core::broker::{
    BrokerError, BrokerInput, BrokerLink, BrokerOutput, ChannelHistory, PublishId,
};
use wshub_core::event::HistoryReadId;
use wshub_core::history::{HistoryError, HistoryPage, StreamPosition};
use wshub_redis::{Link, RedisBroker, RedisConfig};

/// Longest wait for an input the test expects.
pub const WAIT: Duration = Duration::from_secs(5);

// Only the hub makes ids; a test standing in for it uses the core's
// `testing` constructors.
pub fn publish_id(n: u64) -> PublishId {
    PublishId::for_tests(n)
}

pub fn read_id(n: u64) -> HistoryReadId {
    HistoryReadId::for_tests(n)
}

/// History of `size` publications, kept a minute.
pub fn history(size: usize) -> ChannelHistory {
    ChannelHistory {
        size,
        ttl: Duration::from_secs(60),
        meta_ttl: Duration::from_secs(600),
    }
}

/// Short timeouts, so failure tests finish fast.
pub fn fast(cfg: &mut RedisConfig) {
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.response_timeout = Duration::from_millis(300);
    cfg.probe_interval = Duration::from_millis(200);
    cfg.reconnect_min = Duration::from_millis(50);
    cfg.reconnect_max = Duration::from_millis(200);
}

pub struct Node {
    pub broker: RedisBroker,
    pub link: Link,
    inputs: Receiver<BrokerInput>,
    backlog: RefCell<VecDeque<BrokerInput>>,
    next: u64,
}

impl Node {
    pub fn start(url: &str) -> Node {
        Node::with(url, |_| {})
    }

    pub fn with(url: &str, tweak: impl FnOnce(&mut RedisConfig)) -> Node {
        let mut cfg = RedisConfig::new(url);
        tweak(&mut cfg);
        let (link, outputs) = wshub_redis::link();
        let (tx, inputs) = mpsc::channel();
        // A batch is its inputs in order: the tests look at them one by one.
        let broker = RedisBroker::start(cfg, outputs, move |i| match i {
            BrokerInput::Batch(inputs) => inputs.into_iter().all(|i| tx.send(i).is_ok()),
            i => tx.send(i).is_ok(),
        })
        .expect("config");
        Node {
            broker,
            link,
            inputs,
            backlog: RefCell::new(VecDeque::new()),
            next: 0,
        }
    }

    /// Starts and waits for `Up`.
    pub fn up(url: &str, tweak: impl FnOnce(&mut RedisConfig)) -> Node {
        let node = Node::with(url, tweak);
        node.wait("Up", |i| *i == BrokerInput::Up);
        node
    }

    /// The first input (queued or arriving within [`WAIT`]) that `pred`
    /// takes; others stay queued.
    pub fn wait(&self, what: &str, pred: impl Fn(&BrokerInput) -> bool) -> BrokerInput {
        self.try_wait(WAIT, &pred).unwrap_or_else(|| {
            panic!(
                "no {what} within {WAIT:?}; queued: {:?}",
                self.backlog.borrow()
            )
        })
    }

    pub fn try_wait(
        &self,
        within: Duration,
        pred: &dyn Fn(&BrokerInput) -> bool,
    ) -> Option<BrokerInput> {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(pred) {
            return backlog.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let input = self.inputs.recv_timeout(left).ok()?;
            if pred(&input) {
                return Some(input);
            }
            backlog.push_back(input);
        }
    }

    /// Drops every queued input.
    pub fn clear(&self) {
        self.backlog.borrow_mut().clear();
        while self.inputs.try_recv().is_ok() {}
    }

    pub fn send(&mut self, o: BrokerOutput) {
        self.link.send(o);
    }

    pub fn publish(
        &mut self,
        channel: &str,
        json: &str,
        history: Option<ChannelHistory>,
    ) -> Result<Option<StreamPosition>, BrokerError> {
        self.next += 1;
        let id = publish_id(self.next);
        self.send(BrokerOutput::Publish {
            id,
            channel: channel.into(),
            json: Bytes::copy_from_slice(json.as_bytes()),
            history,
        });
        match self.wait(
            "Published",
            |i| matches!(i, BrokerInput::Published { id: x, .. } if *x == id),
        ) {
            BrokerInput::Published { result, .. } => result,
            _ => unreachable!(),
        }
    }

    pub fn read(
        &mut self,
        channel: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        self.next += 1;
        let read = read_id(self.next);
        self.send(BrokerOutput::Read {
            read,
            channel: channel.into(),
            since,
            limit,
            history: history(100),
        });
        match self.wait(
            "HistoryRead",
            |i| matches!(i, BrokerInput::HistoryRead { read: x, .. } if *x == read),
        ) {
            BrokerInput::HistoryRead { result, .. } => result,
            _ => unreachable!(),
        }
    }

    /// Subscribes and waits for the confirmation.
    pub fn subscribe(&mut self, channel: &str) {
        self.send(BrokerOutput::Subscribe {
            channel: channel.into(),
            history: Some(history(10)),
        });
        self.wait(
            "Subscribed",
            |i| matches!(i, BrokerInput::Subscribed { channel: c } if c == channel),
        );
    }

    /// The next publication of `channel`: its JSON and position.
    pub fn publication(&self, channel: &str) -> (String, Option<StreamPosition>) {
        match self.wait(
            "Publication",
            |i| matches!(i, BrokerInput::Publication { channel: c, .. } if c == channel),
        ) {
            BrokerInput::Publication { json, position, .. } => {
                (String::from_utf8(json.to_vec()).unwrap(), position)
            }
            _ => unreachable!(),
        }
    }
}

/// Polls `f` until it holds, at most [`WAIT`].
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
