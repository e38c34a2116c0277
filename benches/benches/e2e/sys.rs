//! The few system facts the e2e bench needs, through libc and /proc: a
//! CLOCK_MONOTONIC reading comparable across processes, CPU pinning, the
//! open-files limit, RSS, CPU time, and system calls counted by `perf stat`.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `CLOCK_MONOTONIC` in nanoseconds. The server child stamps each message with
/// it and the load generator subtracts it from its own reading: the clock is
/// system-wide, so the two processes' readings compare directly.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The 1-minute load average (/proc/loadavg): other work on the machine.
pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Time CPU `cpu` spent, from /proc/stat, in clock ticks: (user + nice +
/// system, idle + iowait, steal, total).
pub fn cpu_ticks(cpu: usize) -> Option<[u64; 4]> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&name))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some([f(0) + f(1) + f(2), f(3) + f(4), f(7), total])
}

/// Nanoseconds per clock tick of /proc/stat and /proc/<pid>/stat.
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    1_000_000_000 / tck
}

/// CPUs online.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// Pins the calling thread (and every thread it starts afterwards) to `cpus`.
pub fn pin_to(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it and
    // sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft open-files limit to `want` (capped by the hard limit);
/// returns the soft limit now in force.
// rlim_t is u64 here but not on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = want.min(lim.rlim_max as u64);
        if (lim.rlim_cur as u64) < target {
            lim.rlim_cur = target as libc::rlim_t;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur as u64
}

/// CPU time (user + system) of this whole process, in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage writes only the struct passed; zeroed is a valid rusage.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `VmRSS` of this process in KiB, from /proc/self/status.
pub fn self_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system, every thread) of process `pid`, in nanoseconds,
/// from /proc/<pid>/stat (clock-tick resolution, 10 ms on most kernels).
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; 3 is the first here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * tick_ns())
}

/// System calls of a process counted by `perf stat` on syscall tracepoints,
/// from [`Syscalls::start`] to [`Syscalls::stop`].
pub struct Syscalls {
    perf: Child,
    out: PathBuf,
}

/// The tracepoints counted: every system call, and each way to write to a
/// socket (std's `TcpStream::write` is `send`, i.e. `sendto`; vectored writes
/// are `writev`).
pub const SYSCALL_EVENTS: [&str; 5] = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmsg",
];

impl Syscalls {
    /// Attaches `perf stat` to every thread of `pid`; None when perf is
    /// missing or not allowed.
    pub fn start(pid: u32) -> Option<Syscalls> {
        let out = std::env::temp_dir().join(format!("wshub-e2e-perf-{pid}.csv"));
        let _ = fs::remove_file(&out);
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-o"])
            .arg(&out)
            .args(["-e", &SYSCALL_EVENTS.join(","), "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf opens a counter per thread and event before counting.
        std::thread::sleep(Duration::from_millis(500));
        Some(Syscalls { perf, out })
    }

    /// Stops counting; returns the count of each of [`SYSCALL_EVENTS`].
    pub fn stop(mut self) -> Option<Vec<u64>> {
        // SAFETY: kill only sends a signal, to the perf process we started.
        unsafe { libc::kill(self.perf.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.perf.wait();
        let text = fs::read_to_string(&self.out).ok()?;
        let _ = fs::remove_file(&self.out);
        SYSCALL_EVENTS
            .iter()
            .map(|ev| {
                text.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    (f.get(2) == Some(ev)).then(|| f[0].parse().ok()).flatten()
                })
            })
            .collect()
    }
}

impl Drop for Syscalls {
    fn drop(&mut self) {
        let _ = self.perf.kill();
        let _ = self.perf.wait();
    }
}
