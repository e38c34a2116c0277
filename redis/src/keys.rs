//! Key and pub/sub channel names (the layout is in the crate docs).

/// Names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    /// `<prefix>.pub.`, what every pub/sub channel name starts with.
    pub_prefix: String,
    /// The node-wide channel (looked at for every message received).
    everyone: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            pub_prefix: format!("{prefix}.pub."),
            everyone: format!("{prefix}.all"),
        }
    }

    /// The channel's position: HASH `e` epoch, `s` top offset.
    pub fn meta(&self, channel: &str) -> String {
        format!("{}.{{{channel}}}.meta", self.prefix)
    }

    /// The channel's publications: STREAM, id `<offset>-0`, field `d`.
    pub fn stream(&self, channel: &str) -> String {
        format!("{}.{{{channel}}}.stream", self.prefix)
    }

    /// Who is in the channel: ZSET of `<node>:<user>` scored by expiry (ms).
    pub fn presence(&self, channel: &str) -> String {
        format!("{}.{{{channel}}}.presence", self.prefix)
    }

    /// Live nodes: ZSET of node ids scored by expiry (ms).
    pub fn nodes(&self) -> String {
        format!("{{{}}}.nodes", self.prefix)
    }

    /// Connection counts: HASH node id -> count.
    pub fn node_conns(&self) -> String {
        format!("{{{}}}.node_conns", self.prefix)
    }

    /// The pub/sub channel carrying the channel's publications.
    pub fn pubsub(&self, channel: &str) -> String {
        format!("{}{channel}", self.pub_prefix)
    }

    /// The node-wide pub/sub channel: broadcasts and sends to a user, which
    /// every node hears while its link is up. Outside `<prefix>.pub.`, so no
    /// hub channel can be named into it.
    pub fn everyone(&self) -> &str {
        &self.everyone
    }

    /// The hub channel a pub/sub channel name carries, if it is one of ours.
    pub fn channel_of<'a>(&self, pubsub: &'a [u8]) -> Option<&'a str> {
        let rest = pubsub.strip_prefix(self.pub_prefix.as_bytes())?;
        core::str::from_utf8(rest).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_channel_one_hash_tag() {
        let k = Keys::new("wshub");
        assert_eq!(k.meta("news"), "wshub.{news}.meta");
        assert_eq!(k.stream("news"), "wshub.{news}.stream");
        assert_eq!(k.presence("news"), "wshub.{news}.presence");
        assert_eq!(k.nodes(), "{wshub}.nodes");
        assert_eq!(k.channel_of(b"wshub.pub.a.b"), Some("a.b"));
        assert_eq!(k.channel_of(b"other.pub.a"), None);
        assert_eq!(k.channel_of(k.everyone().as_bytes()), None);
    }
}
