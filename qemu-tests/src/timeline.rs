//! Where the time of one boot went, from three clocks on the same host: when QEMU
//! started and when the harness saw the report on the console, netbootd's log timestamps
//! (DHCP, TFTP), and the machine's stage history that netbootd keeps (`/api/v1/machines`).
//!
//! Pure: callers pass the log text, the history and the instants; nothing is read here.

/// Milliseconds since the Unix epoch of a log line's leading RFC 3339 UTC timestamp
/// (`2026-12-04T05:36:39.949014Z ...`, as netbootd's tracing writes it).
pub fn log_time_ms(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let days = days_from_civil(y, m, day);
    let total = ((days * 24 + h) * 60 + min) * 60 + s;
    u64::try_from(total * 1000 + ms).ok()
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One phase of a boot: a name and its start and end (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Named instants, in boot order; a phase runs from one to the next that is present.
#[derive(Clone, Debug, Default)]
pub struct Marks(Vec<(String, Option<u64>)>);

impl Marks {
    pub fn add(&mut self, phase_from_here: &str, at_ms: Option<u64>) {
        self.0.push((phase_from_here.to_string(), at_ms));
    }

    /// Phases between consecutive present marks; the last mark only ends a phase.
    pub fn phases(&self) -> Vec<Phase> {
        let present: Vec<(&str, u64)> = self
            .0
            .iter()
            .filter_map(|(n, t)| t.map(|t| (n.as_str(), t)))
            .collect();
        present
            .windows(2)
            .map(|w| Phase {
                name: w[0].0.to_string(),
                start_ms: w[0].1,
                end_ms: w[1].1.max(w[0].1),
            })
            .collect()
    }
}

/// The phases as an aligned table with seconds, and the total.
pub fn render(phases: &[Phase]) -> String {
    let width = phases
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = String::new();
    for p in phases {
        out.push_str(&format!(
            "  {:<width$} {:>6.1} s\n",
            p.name,
            (p.end_ms - p.start_ms) as f64 / 1000.0
        ));
    }
    if let (Some(first), Some(last)) = (phases.first(), phases.last()) {
        out.push_str(&format!(
            "  {:<width$} {:>6.1} s\n",
            "total",
            (last.end_ms - first.start_ms) as f64 / 1000.0
        ));
    }
    out
}

/// The first log line holding every needle, with its time.
pub fn first_log_time(log: &str, needles: &[&str]) -> Option<u64> {
    log.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(log_time_ms)
}

/// The last log line holding every needle, with its time.
pub fn last_log_time(log: &str, needles: &[&str]) -> Option<u64> {
    log.lines()
        .rev()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .find_map(log_time_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_read_as_utc_milliseconds() {
        assert_eq!(log_time_ms("1970-01-01T00:00:01.5Z  INFO x"), Some(1_500));
        // 2026-12-04T05:36:39.949Z, checked with `date -u -d ... +%s%3N`.
        assert_eq!(
            log_time_ms("2026-12-04T05:36:39.949014Z  INFO dhcp{mac=..}: decision"),
            Some(1_796_362_599_949)
        );
        assert_eq!(log_time_ms("not a time"), None);
        assert_eq!(log_time_ms(""), None);
    }

    #[test]
    fn phases_skip_missing_marks() {
        let mut m = Marks::default();
        m.add("firmware", Some(1_000));
        m.add("tftp", None);
        m.add("dhcp", Some(3_000));
        m.add("end", Some(3_500));
        let p = m.phases();
        assert_eq!(
            p,
            [
                Phase {
                    name: "firmware".into(),
                    start_ms: 1_000,
                    end_ms: 3_000
                },
                Phase {
                    name: "dhcp".into(),
                    start_ms: 3_000,
                    end_ms: 3_500
                }
            ]
        );
        let r = render(&p);
        assert!(r.contains("firmware") && r.contains("2.0 s"), "{r}");
        assert!(r.contains("total") && r.contains("2.5 s"), "{r}");
    }

    #[test]
    fn a_long_phase_name_widens_the_table_so_the_seconds_line_up() {
        let long = "kernel + initrds download, kernel start, modules, NIC and more";
        let p = [
            Phase {
                name: long.into(),
                start_ms: 0,
                end_ms: 9_600,
            },
            Phase {
                name: "plan".into(),
                start_ms: 9_600,
                end_ms: 10_800,
            },
        ];
        let r = render(&p);
        let ends: Vec<usize> = r.lines().map(|l| l.len()).collect();
        assert_eq!(ends.len(), 3, "{r}");
        assert!(ends.iter().all(|&e| e == ends[0]), "{r}");
    }

    #[test]
    fn first_and_last_log_lines_by_needles() {
        let log = "1970-01-01T00:00:01Z a mac=1 Discover\n1970-01-01T00:00:02Z a mac=1 Discover\n";
        assert_eq!(first_log_time(log, &["mac=1", "Discover"]), Some(1_000));
        assert_eq!(last_log_time(log, &["mac=1", "Discover"]), Some(2_000));
        assert_eq!(first_log_time(log, &["mac=2"]), None);
    }
}
