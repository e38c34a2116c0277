//! The operations of a broker program and how they are read.

/// Nodes (hubs) a program runs.
pub(super) const NODES: u8 = 2;
/// Clients a program addresses.
pub(super) const CLIENTS: u8 = 4;
/// Channels a program addresses (`c0`, `c1`).
pub(super) const CHANNELS: u8 = 2;

/// One step of a broker program: clients on any node, application
/// publishes, and what the broker does (outputs taken in any interleaving,
/// inputs delivered late, links dropped and back, a restart that loses
/// everything, subscriptions confirmed late).
#[derive(Clone, Debug)]
pub enum BrokerOp {
    /// Connect a client (closing its old connection) to a node: (client, node).
    Connect(u8, u8),
    /// Subscribe with positions: (client, channel).
    Subscribe(u8, u8),
    /// Subscribe plainly: (client, channel).
    SubscribePlain(u8, u8),
    /// Unsubscribe: (client, channel).
    Unsubscribe(u8, u8),
    /// A client publish with an id: (client, channel).
    ClientPublish(u8, u8),
    /// An application publish on a node: (node, channel).
    AppPublish(u8, u8),
    /// Close a client's connection.
    Close(u8),
    /// The broker takes the node's outputs.
    Take(u8),
    /// The node gets what the broker has for it.
    Deliver(u8),
    /// The node's link drops.
    LinkDown(u8),
    /// The node's link is back.
    LinkUp(u8),
    /// The broker restarts empty (every link drops and comes back).
    Restart,
    /// Hold subscription confirmations (or stop holding them).
    HoldConfirmations(bool),
    /// Hand the held confirmations on.
    ReleaseConfirmations,
    /// An application broadcast from a node (to every node's connections).
    Broadcast(u8),
}

impl BrokerOp {
    /// Reads one operation from a source of bytes: client, node, channel
    /// and kind.
    pub fn decode(mut next: impl FnMut() -> u8) -> BrokerOp {
        let c = next() % CLIENTS;
        let n = next() % NODES;
        let ch = next() % CHANNELS;
        match next() % 24 {
            0..=1 => BrokerOp::Connect(c, n),
            2..=3 => BrokerOp::Subscribe(c, ch),
            4 => BrokerOp::SubscribePlain(c, ch),
            5 => BrokerOp::Unsubscribe(c, ch),
            6..=8 => BrokerOp::ClientPublish(c, ch),
            9..=10 => BrokerOp::AppPublish(n, ch),
            11 => BrokerOp::Close(c),
            12..=14 => BrokerOp::Take(n),
            15..=17 => BrokerOp::Deliver(n),
            18 => BrokerOp::LinkDown(n),
            19 => BrokerOp::LinkUp(n),
            20 => BrokerOp::Restart,
            21 => BrokerOp::HoldConfirmations(ch == 0),
            22 => BrokerOp::ReleaseConfirmations,
            _ => BrokerOp::Broadcast(n),
        }
    }
}
