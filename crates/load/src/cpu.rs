//! This process's own CPU time, read from `/proc/self/stat`.
//!
//! A load generator that saturates its own cores measures itself, not the server; reporting
//! the generator's CPU next to the request rate makes that visible. Reading procfs avoids a
//! `libc` dependency; on systems without it the numbers are simply absent.

use std::process::Command;

/// Converts the kernel's clock ticks to seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuClock {
    ticks_per_second: f64,
}

impl CpuClock {
    /// Asks `getconf CLK_TCK` once; Linux has used 100 everywhere for years, so that is the
    /// fallback when `getconf` is missing or says something unusable.
    pub(crate) fn detect() -> Self {
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100);
        Self {
            ticks_per_second: f64::from(ticks_per_second),
        }
    }

    /// User plus system CPU seconds used by this process so far, or `None` without procfs.
    pub(crate) fn process_cpu_seconds(&self) -> Option<f64> {
        let contents = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (user_ticks, system_ticks) = parse_proc_stat(&contents)?;
        Some((user_ticks + system_ticks) as f64 / self.ticks_per_second)
    }
}

/// Extracts `utime` and `stime` (fields 14 and 15) from a `/proc/<pid>/stat` line.
///
/// Field 2, the command name, is in parentheses and may itself contain spaces and
/// parentheses, so the split starts after the *last* `)`; field 3 is then the first token.
fn parse_proc_stat(contents: &str) -> Option<(u64, u64)> {
    let after_command = &contents[contents.rfind(')')? + 1..];
    let mut fields = after_command.split_ascii_whitespace();
    // Tokens after the command name start at field 3, so utime (14) is the 12th token.
    let user_ticks = fields.nth(11)?.parse().ok()?;
    let system_ticks = fields.next()?.parse().ok()?;
    Some((user_ticks, system_ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_even_with_parentheses_in_the_command_name() {
        let line = "4242 (load (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    371 58 0 0 20 0 3 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_proc_stat(line), Some((371, 58)));
    }

    #[test]
    fn a_truncated_line_gives_none() {
        assert_eq!(parse_proc_stat("4242 (load) S 1 2 3"), None);
        assert_eq!(parse_proc_stat("no parenthesis"), None);
    }

    #[test]
    fn reading_our_own_cpu_time_works_on_linux() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let seconds = CpuClock::detect().process_cpu_seconds();
            assert!(seconds.is_some_and(|s| s >= 0.0));
        }
    }
}
