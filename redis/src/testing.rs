//! Test fixtures (feature `testing`): a real `redis-server` per test, on a
//! free loopback port, killed by PID.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One `redis-server` process with its own temp dir (log, no persistence).
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// A Cluster node: `--cluster-enabled yes`, its config file in `dir`.
    cluster: bool,
    child: Option<Child>,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A free port whose Cluster bus port (+10000) is free too.
fn free_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
}

/// Whether something on `port` answers PING (with `auth` first if given).
fn answers(port: u16, auth: Option<&str>) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut cmd = String::new();
    if let Some(pw) = auth {
        cmd.push_str(&format!("AUTH {pw}\r\n"));
    }
    cmd.push_str("PING\r\n");
    if s.write_all(cmd.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0; 64];
    let mut got = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(5).any(|w| w == b"+PONG") {
            return true;
        }
    }
    false
}

impl RedisServer {
    /// Starts a server (retrying on a port taken meanwhile) and waits until
    /// it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// As [`RedisServer::start`], with extra `redis-server` arguments (e.g.
    /// `["--requirepass", "pw"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::launch(extra, false)
    }

    fn launch(extra: &[&str], cluster: bool) -> RedisServer {
        let n = NEXT_DIR.fetch_add(1, Relaxed);
        let dir = std::env::temp_dir().join(format!("wshub-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..10 {
            let port = free_port().expect("a free port");
            let mut server = RedisServer {
                port,
                dir: dir.clone(),
                args: args.clone(),
                cluster,
                child: None,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start (is it installed? see redis/install.sh)");
    }

    fn password(&self) -> Option<&str> {
        let i = self.args.iter().position(|a| a == "--requirepass")?;
        self.args.get(i + 1).map(String::as_str)
    }

    fn spawn(&mut self) -> bool {
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let mut cmd = Command::new("redis-server");
        if self.cluster {
            let conf = self.dir.join(format!("nodes-{}.conf", self.port));
            let _ = std::fs::remove_file(&conf);
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(conf);
        }
        let child = cmd
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if answers(self.port, self.password()) {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (with the password, if one was set).
    pub fn url(&self) -> String {
        match self.password() {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// SIGKILL, as a crash: nothing is saved.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}",
                self.port
            );
        }
    }

    /// Runs `redis-cli` against it; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = self.password() {
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-primary Redis Cluster (no replicas) of [`RedisServer`]s.
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) nodes, joins them with `redis-cli --cluster
    /// create` and waits for `cluster_state:ok` on each.
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::launch(&[], true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &nodes {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster not ok on {}", node.port);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// Runs `redis-cli -c` (following redirects) against the first node.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-c",
                "-h",
                "127.0.0.1",
                "-p",
                &self.nodes[0].port.to_string(),
            ])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
