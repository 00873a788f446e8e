//! The process's own figures, read from `/proc` at each scrape, under the names every
//! Prometheus client uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`…).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in /proc in units of USER_HZ, which is 100 on every
/// architecture Linux exports it for (sysconf would need `unsafe`, which this crate forbids).
const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What one scrape read; a figure the system did not give is left out, not made up.
#[derive(Debug, Default)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    start_time_seconds: Option<i64>,
    threads: Option<i64>,
}

fn sample() -> Sample {
    let mut sample = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The command name (field 2) may hold spaces; fields are counted after its ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After ')': state is field 3, so field N is at index N - 3.
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (field(14), field(15)) {
                sample.cpu_seconds = Some((user + system) as f64 / USER_HZ);
            }
            sample.threads = field(20).map(|t| t as i64);
            let boot_time = boot_time_seconds();
            if let (Some(start), Some(boot)) = (field(22), boot_time) {
                sample.start_time_seconds = Some(boot + (start as f64 / USER_HZ) as i64);
            }
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
                .map(|kib| kib * 1024)
        };
        sample.resident_bytes = kib("VmRSS:");
        sample.virtual_bytes = kib("VmSize:");
    }
    sample.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as i64);
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        sample.max_fds = limits
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|soft| soft.parse().ok());
    }
    sample
}

fn boot_time_seconds() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = sample();
        if let Some(seconds) = sample.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                sample.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                sample.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                sample.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                sample.threads,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let sample = sample();
        assert!(sample.cpu_seconds.is_some());
        assert!(sample.resident_bytes.is_some_and(|rss| rss > 1024 * 1024));
        assert!(sample.open_fds.is_some_and(|fds| fds >= 3));
        assert!(sample.max_fds.is_some_and(|max| max > 0));
        let now = crate::unix_now();
        assert!(
            sample
                .start_time_seconds
                .is_some_and(|start| start <= now && start > now - 3600)
        );
    }
}
