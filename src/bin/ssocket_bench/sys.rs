//! What the benchmark reads from the operating system: the open-files
//! limit, and a server process's CPU time and memory from `/proc`.

use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit(RLIMIT_NOFILE) failed: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Fail clearly when `sockets` connections (plus a few descriptors for the
/// process itself) cannot fit under the open-files limit.
pub fn check_fds(sockets: u64) -> Result<()> {
    let limit = raise_nofile_limit()?;
    let needed = sockets + 32;
    if needed > limit {
        bail!(
            "{sockets} connections need about {needed} file descriptors, but the open-files limit \
             (RLIMIT_NOFILE hard limit) is {limit}: raise it (ulimit -Hn / limits.conf) or use fewer connections"
        );
    }
    Ok(())
}

/// Clock ticks per second of /proc CPU times.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}: is the server pid right?"))?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after the last ')' start at field 3 (state); utime and stime are 14, 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        let v: u64 = fields.get(i).context("short /proc stat")?.parse().context("malformed /proc stat")?;
        Ok(v as f64)
    };
    Ok((tick(11)? + tick(12)?) / clk_tck())
}

/// Resident set size in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}: is the server pid right?"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in /proc status")?;
    line.split_whitespace().nth(1).context("malformed VmRSS")?.parse().context("malformed VmRSS")
}

/// A server CPU reading at one moment; two of them give CPU use between.
pub struct CpuMark {
    pid: u32,
    cpu: f64,
    at: Instant,
}

/// CPU use over a window.
pub struct CpuUse {
    /// CPU seconds the server used in the window.
    pub seconds: f64,
    /// CPU seconds per wall second: 1.0 is one core busy all the time.
    pub cores: f64,
}

impl CpuMark {
    pub fn now(pid: u32) -> Result<CpuMark> {
        Ok(CpuMark { pid, cpu: cpu_seconds(pid)?, at: Instant::now() })
    }

    pub fn since(&self) -> Result<CpuUse> {
        let seconds = cpu_seconds(self.pid)? - self.cpu;
        let wall = self.at.elapsed().as_secs_f64();
        Ok(CpuUse { seconds, cores: if wall > 0.0 { seconds / wall } else { 0.0 } })
    }
}

/// Microseconds since the Unix epoch (the broadcast scenario's timestamps:
/// sender and receivers share the machine's clock).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
