//! The machine side of a benchmark: file-descriptor limits, a process's
//! resident memory from /proc, the load average, and a one-line machine
//! description for reports.

use std::io;

use rlimit::Resource;

/// Raises this process's RLIMIT_NOFILE: the hard limit to `want` when
/// allowed (root may go up to `fs.nr_open`), the soft limit to the hard one.
/// Child processes (the gateways this tool starts) inherit the result.
/// Returns the new `(soft, hard)`.
pub fn raise_nofile(want: u64) -> io::Result<(u64, u64)> {
    let (_, hard) = Resource::NOFILE.get()?;
    let ceiling = rlimit::SysLimits::read()
        .ok()
        .and_then(|l| l.nr_open)
        .unwrap_or(hard);
    let target = want.min(ceiling).max(hard);
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, keep the
    // hard limit and still lift the soft one to it.
    if Resource::NOFILE.set(target, target).is_err() {
        Resource::NOFILE.set(hard, hard)?;
    }
    Resource::NOFILE.get()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, …).
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// Resident set size of `pid` in KiB.
/// The process running `exe` among `pid` and its descendants (breadth
/// first), if any. A gateway started under a wrapper (`WEIR_LOAD_WRAP`,
/// e.g. heaptrack's script) is a grandchild: its RSS, CPU and signals must
/// go to it, not to the wrapper.
pub fn find_exe(pid: u32, exe: &std::path::Path) -> Option<u32> {
    let want = std::fs::canonicalize(exe).ok()?;
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        if std::fs::read_link(format!("/proc/{p}/exe")).ok().as_ref() == Some(&want) {
            return Some(p);
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    None
}

pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The 1-minute load average (what else ran on the shared cores).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// CPU time (user + system) of `pid` so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after comm.
    // SAFETY: sysconf has no memory-safety preconditions.
    #[allow(unsafe_code, reason = "libc has no safe sysconf")]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// `pid` and its child processes (nginx's workers under its master), by
/// `/proc/<pid>/task/<pid>/children`.
pub fn with_children(pid: u32) -> Vec<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .collect()
}

/// "2 cores, 23.5 GiB, Linux 6.1.0" for report headers.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {mem_gib:.1} GiB, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_rss_and_limits() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 100);
        let (soft, hard) = raise_nofile(1024).unwrap();
        assert!(soft >= 1024.min(hard) && soft <= hard);
        assert!(fd_count(me) >= 3);
        assert!(machine().contains("cores"));
    }

    /// A wrapped program is found below its wrapper; an absent one is not.
    #[test]
    fn finds_the_wrapped_program_among_descendants() {
        let sleep = std::process::Command::new("sh")
            .args(["-c", "command -v sleep"])
            .output()
            .unwrap();
        let sleep = std::path::PathBuf::from(String::from_utf8(sleep.stdout).unwrap().trim());
        // `; true` keeps the shell alive as the wrapper, sleep its child.
        let mut wrapper = std::process::Command::new("sh")
            .args(["-c", "sleep 5; true"])
            .spawn()
            .unwrap();
        let mut found = None;
        for _ in 0..100 {
            found = find_exe(wrapper.id(), &sleep);
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let found = found.expect("sleep found below its shell");
        assert_ne!(found, wrapper.id(), "the child, not the wrapper");
        assert_eq!(
            find_exe(wrapper.id(), std::path::Path::new("/nonexistent")),
            None
        );
        let _ = wrapper.kill();
        let _ = wrapper.wait();
        // SAFETY: kill(2) on the sleep this test started.
        #[allow(unsafe_code, reason = "signals a process the test started")]
        unsafe {
            libc::kill(found as libc::pid_t, libc::SIGKILL);
        }
    }
}
