//! What the machine is and how busy it is, for the head of a report.

/// One-minute load average above which a run starts with a warning.
const BUSY_LOAD: f64 = 1.5;

/// The 1, 5 and 15 minute load averages (empty where `/proc/loadavg` is unreadable).
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The load average at the start of a run, with a warning when other work already keeps the
/// machine busy (the figures would not be this code's alone).
pub fn load_before_run() -> Vec<f64> {
    let load = load_average();
    if load.first().is_some_and(|one| *one > BUSY_LOAD) {
        println!("warning: load average {load:?} before the run; other work will skew the figures");
    }
    load
}

/// CPUs, CPU model and memory, e.g. `2 CPUs (AMD EPYC 7763 64-Core Processor), 8 GiB`.
pub fn describe_machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} CPUs ({model}), {memory_gib:.0} GiB")
}
