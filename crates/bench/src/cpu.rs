//! Cores used over a phase, from the jiffies in `/proc`: per group of watched processes, this
//! load generator, irq + softirq, steal, idle and every other process.
//!
//! Shares of all CPU time are scaled to cores, so no clock-tick rate is needed.

use std::collections::HashMap;

/// Counts the CPUs once and takes [`CpuTimes`] snapshots of `N` groups of processes.
#[derive(Debug, Clone, Copy)]
pub struct CpuProbe {
    cpus: usize,
}

/// Jiffies at one moment: the machine's, each watched process's and this process's.
#[derive(Debug, Clone)]
pub struct CpuTimes<const N: usize> {
    system: SystemJiffies,
    /// Per group, jiffies by pid.
    groups: [HashMap<u32, u64>; N],
    bench: u64,
}

/// Cores used during a phase (each between 0 and the number of CPUs).
#[derive(Debug, Clone, Copy)]
pub struct CpuCores<const N: usize> {
    /// Per watched group, in the order the groups were given.
    pub groups: [f64; N],
    /// This process: the load generator.
    pub bench: f64,
    /// irq + softirq: mostly loopback TCP, which no process is charged for.
    pub interrupts: f64,
    /// Taken by the hypervisor.
    pub steal: f64,
    /// Every other process on the machine.
    pub other: f64,
    /// idle + iowait.
    pub idle: f64,
}

impl CpuProbe {
    /// Counts the online CPUs (`cpuN` lines of `/proc/stat`, at least one).
    pub fn new() -> Self {
        let cpus = std::fs::read_to_string("/proc/stat")
            .map(|stat| {
                stat.lines()
                    .filter(|line| {
                        line.strip_prefix("cpu")
                            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                    })
                    .count()
            })
            .unwrap_or(0)
            .max(1);
        Self { cpus }
    }

    /// The CPUs the cores are scaled to.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Jiffies now, of the machine, of each process in `groups` and of this process.
    pub fn snapshot<const N: usize>(&self, groups: &[Vec<u32>; N]) -> CpuTimes<N> {
        let system = system_jiffies();
        CpuTimes {
            system,
            groups: groups.each_ref().map(|pids| {
                pids.iter()
                    .map(|pid| (*pid, process_jiffies(&pid.to_string())))
                    .collect()
            }),
            bench: process_jiffies("self"),
        }
    }

    /// Cores used from `before` to `now` (snapshots of the same groups, whose members may
    /// differ); `None` when the machine's counters did not move.
    ///
    /// A process that started meanwhile (a new PostgreSQL backend) counts in full; one that
    /// ended meanwhile is lost, which is small.
    pub fn cores_between<const N: usize>(
        &self,
        before: &CpuTimes<N>,
        now: &CpuTimes<N>,
    ) -> Option<CpuCores<N>> {
        let total = now.system.total.saturating_sub(before.system.total);
        if total == 0 {
            return None;
        }
        let cores = |ticks: u64| ticks as f64 / total as f64 * self.cpus as f64;
        let grown = |now: &HashMap<u32, u64>, before: &HashMap<u32, u64>| -> u64 {
            now.iter()
                .map(|(pid, ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                .sum()
        };
        let groups: [f64; N] =
            std::array::from_fn(|index| cores(grown(&now.groups[index], &before.groups[index])));
        let bench = cores(now.bench.saturating_sub(before.bench));
        let idle = cores(now.system.idle.saturating_sub(before.system.idle));
        let interrupts = cores(
            now.system
                .interrupts
                .saturating_sub(before.system.interrupts),
        );
        let steal = cores(now.system.steal.saturating_sub(before.system.steal));
        let watched = groups
            .iter()
            .fold(self.cpus as f64 - idle, |left, g| left - g);
        Some(CpuCores {
            groups,
            bench,
            interrupts,
            steal,
            other: (watched - bench - interrupts - steal).max(0.0),
            idle,
        })
    }
}

impl Default for CpuProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// Processes whose `comm` is `name` (and whose command line has the argument `arg`, when given).
pub fn processes_named(name: &str, arg: Option<&[u8]>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
                && arg.is_none_or(|arg| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|cmdline| cmdline.split(|byte| *byte == 0).any(|a| a == arg))
                })
        })
        .collect()
}

/// The RabbitMQ server's Erlang VM(s), not the short-lived VMs of `rabbitmqctl`.
pub fn broker_process_ids() -> Vec<u32> {
    processes_named("beam.smp", Some(b"rabbit"))
}

/// Machine-wide jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct SystemJiffies {
    total: u64,
    /// idle + iowait.
    idle: u64,
    /// irq + softirq.
    interrupts: u64,
    steal: u64,
}

fn system_jiffies() -> SystemJiffies {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return SystemJiffies::default();
    };
    // cpu user nice system idle iowait irq softirq steal (guest time is already in user).
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    SystemJiffies {
        total: fields.iter().sum(),
        idle: field(3) + field(4),
        interrupts: field(5) + field(6),
        steal: field(7),
    }
}

/// User + system jiffies of every thread of `/proc/<pid>` (0 if it is gone).
fn process_jiffies(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0, |stat| stat_jiffies(&stat))
}

/// utime + stime of a `/proc/<pid>/stat` line (0 if it is malformed).
fn stat_jiffies(stat: &str) -> u64 {
    // The command name may contain spaces; the fields after its closing parenthesis do not.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let field = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_jiffies_add_user_and_system_time_after_the_command_name() {
        // A command name with spaces and a parenthesis of its own, as `comm` allows.
        let stat = "4242 (web (hook) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_jiffies(stat), 1234 + 567);
    }

    #[test]
    fn a_malformed_stat_line_counts_as_no_time() {
        assert_eq!(stat_jiffies("garbage"), 0);
    }
}
