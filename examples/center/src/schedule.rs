//! When a backup job runs: a small schedule grammar and the next time it names. A leaf
//! (no I/O, no clock: the caller hands `now_ms` in).
//!
//! ```text
//! schedule := "every" N UNIT      N >= 1, UNIT one of s m h d; at most 366 days
//!           | "daily" HH ":" MM    00:00 to 23:59, UTC
//! ```
//!
//! `every 6h` runs at the multiples of 6 hours since the Unix epoch (00:00, 06:00, 12:00
//! and 18:00 UTC), so the slots do not drift with restarts of the center; `daily 02:00`
//! runs each day at 02:00 UTC. Words are case-insensitive, spaces free (`every 6 h`).
//!
//! ```
//! use vinfra_center::schedule::Schedule;
//! let s: Schedule = "every 6h".parse()?;
//! assert_eq!(s.next_after(0), 6 * 3_600_000);
//! assert_eq!(s.to_string(), "every 6h");
//! let d: Schedule = "Daily 2:30".parse()?;
//! assert_eq!(d.to_string(), "daily 02:30");
//! assert_eq!(d.next_after(0), (2 * 60 + 30) * 60_000);
//! # Ok::<(), vinfra_center::schedule::ScheduleError>(())
//! ```

use std::fmt;
use std::str::FromStr;

const SECOND_MS: u64 = 1000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
/// The longest interval: a job that runs less than yearly is a mistake.
const PERIOD_MS_MAX: u64 = 366 * DAY_MS;

/// When a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// At every multiple of `period_ms` since the Unix epoch.
    Every {
        /// The interval, in ms (whole seconds).
        period_ms: u64,
    },
    /// Each day at this minute (UTC).
    Daily {
        /// Minutes after midnight UTC, below 1440.
        minute: u32,
    },
}

/// Why a schedule does not parse; the message says what the grammar wants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: a schedule is \"every N(s|m|h|d)\" or \"daily HH:MM\" (UTC)")]
pub struct ScheduleError(String);

impl Schedule {
    /// The first slot strictly after `now_ms`.
    pub fn next_after(&self, now_ms: u64) -> u64 {
        let (period, offset) = match *self {
            Self::Every { period_ms } => (period_ms, 0),
            Self::Daily { minute } => (DAY_MS, u64::from(minute) * MINUTE_MS),
        };
        let base = now_ms.saturating_sub(offset);
        let slot = (base / period + 1) * period + offset;
        // `now_ms` before the first offset of the epoch's day: that slot comes first.
        if now_ms < offset {
            offset
        } else {
            slot
        }
    }
}

fn bad(why: impl Into<String>) -> ScheduleError {
    ScheduleError(why.into())
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, ScheduleError> {
        let lower = text.trim().to_ascii_lowercase();
        let (word, rest) = lower
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad(format!("{text:?} is not a schedule")))?;
        let rest: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
        match word {
            "every" => {
                let digits = rest.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                let unit = &rest[digits.len()..];
                let n: u64 = digits
                    .parse()
                    .map_err(|_| bad(format!("{digits:?} is not a whole number")))?;
                let unit_ms = match unit {
                    "s" => SECOND_MS,
                    "m" => MINUTE_MS,
                    "h" => HOUR_MS,
                    "d" => DAY_MS,
                    other => return Err(bad(format!("{other:?} is not a unit (s, m, h, d)"))),
                };
                let period_ms = n.saturating_mul(unit_ms);
                if n == 0 || period_ms > PERIOD_MS_MAX {
                    return Err(bad(format!("every {n}{unit}: from 1s to 366d")));
                }
                Ok(Self::Every { period_ms })
            }
            "daily" => {
                let (h, m) = rest
                    .split_once(':')
                    .ok_or_else(|| bad(format!("{rest:?} is not HH:MM")))?;
                let h: u32 = h
                    .parse()
                    .map_err(|_| bad(format!("{h:?} is not an hour")))?;
                let m: u32 = m
                    .parse()
                    .map_err(|_| bad(format!("{m:?} is not a minute")))?;
                if h > 23 || m > 59 {
                    return Err(bad(format!("{rest} is not a time of day")));
                }
                Ok(Self::Daily { minute: h * 60 + m })
            }
            other => Err(bad(format!("{other:?} is neither every nor daily"))),
        }
    }
}

impl fmt::Display for Schedule {
    /// The canonical form (what the API stores and shows).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Every { period_ms } => {
                let s = period_ms / SECOND_MS;
                let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
                    .into_iter()
                    .find(|(u, _)| s % u == 0)
                    .map_or((s, "s"), |(u, name)| (s / u, name));
                write!(f, "every {n}{unit}")
            }
            Self::Daily { minute } => write!(f, "daily {:02}:{:02}", minute / 60, minute % 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Schedule, ScheduleError> {
        s.parse()
    }

    #[test]
    fn the_grammar_reads_intervals_and_times_of_day() {
        assert_eq!(
            parse("every 6h").unwrap(),
            Schedule::Every {
                period_ms: 6 * HOUR_MS
            }
        );
        assert_eq!(
            parse("  EVERY 90 m ").unwrap(),
            Schedule::Every {
                period_ms: 90 * MINUTE_MS
            }
        );
        assert_eq!(
            parse("every 2s").unwrap(),
            Schedule::Every { period_ms: 2000 }
        );
        assert_eq!(
            parse("every 1d").unwrap(),
            Schedule::Every { period_ms: DAY_MS }
        );
        assert_eq!(
            parse("daily 02:00").unwrap(),
            Schedule::Daily { minute: 120 }
        );
        assert_eq!(
            parse("daily 23:59").unwrap(),
            Schedule::Daily { minute: 1439 }
        );
    }

    #[test]
    fn wrong_schedules_say_why() {
        for wrong in [
            "",
            "every",
            "every 0h",
            "every -1h",
            "every 6",
            "every 6w",
            "every h",
            "every 367d",
            "every 99999999999999999999d",
            "daily",
            "daily 24:00",
            "daily 12:60",
            "daily noon",
            "weekly 02:00",
            "6h",
        ] {
            let e = parse(wrong).unwrap_err();
            assert!(e.to_string().contains("a schedule is"), "{wrong}: {e}");
        }
    }

    #[test]
    fn the_canonical_form_reads_back_the_same() {
        for (given, canonical) in [
            ("every 6h", "every 6h"),
            ("every 120m", "every 2h"),
            ("every 90m", "every 90m"),
            ("every 86400s", "every 1d"),
            ("every 45s", "every 45s"),
            ("daily 2:05", "daily 02:05"),
        ] {
            let s = parse(given).unwrap();
            assert_eq!(s.to_string(), canonical);
            assert_eq!(parse(canonical).unwrap(), s);
        }
    }

    #[test]
    fn the_next_slot_is_strictly_later_and_aligned() {
        let every = parse("every 6h").unwrap();
        assert_eq!(every.next_after(0), 6 * HOUR_MS);
        assert_eq!(every.next_after(6 * HOUR_MS - 1), 6 * HOUR_MS);
        assert_eq!(every.next_after(6 * HOUR_MS), 12 * HOUR_MS);
        let daily = parse("daily 02:00").unwrap();
        assert_eq!(daily.next_after(0), 2 * HOUR_MS);
        assert_eq!(daily.next_after(2 * HOUR_MS - 1), 2 * HOUR_MS);
        assert_eq!(daily.next_after(2 * HOUR_MS), DAY_MS + 2 * HOUR_MS);
        assert_eq!(daily.next_after(DAY_MS), DAY_MS + 2 * HOUR_MS);
        // 2026-12-04 13:52 UTC: the next 02:00 is the 5th.
        let now = 1_796_478_720_000;
        let next = daily.next_after(now);
        assert!(next > now && next - now <= DAY_MS);
        assert_eq!(next % DAY_MS, 2 * HOUR_MS);
    }
}
