//! Schedules: cron expressions and a sans-IO scheduler. The caller owns time and work:
//! it feeds `poll(now)` with the clock, runs the jobs it is told to, reports
//! `finished`, and persists `state()` if it wants "what is due now" across runs (a cron
//! or systemd timer invoking a command). Times are seconds since the epoch, UTC.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Days searched for the next match (a bit over four years: every leap day is reached).
const SEARCH_DAYS: i64 = 4 * 366 + 7;

/// A parsed cron expression: minute, hour, day of month, month, day of week (0 or 7 =
/// Sunday); `*`, `a`, `a-b`, `*/n`, `a-b/n` and lists; or `@hourly`, `@daily`,
/// `@weekly`, `@monthly`, `@yearly`. As in Vixie cron, when both day fields are
/// restricted a day matching either runs.
///
/// ```
/// use vinfra_vcb::CronExpr;
/// let c = CronExpr::parse("30 2 * * 1-5").unwrap(); // 02:30 on weekdays
/// // 1970-01-01 was a Thursday: the next run is that day at 02:30.
/// assert_eq!(c.next_after(0), Some(2 * 3600 + 30 * 60));
/// // After it, Friday's.
/// assert_eq!(c.next_after(2 * 3600 + 30 * 60), Some(86_400 + 2 * 3600 + 30 * 60));
/// assert!(CronExpr::parse("61 * * * *").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    days: BTreeSet<u32>,
    months: BTreeSet<u32>,
    weekdays: BTreeSet<u32>,
    days_any: bool,
    weekdays_any: bool,
}

fn field(
    expr: &str,
    name: &'static str,
    text: &str,
    lo: u32,
    hi: u32,
) -> Result<(BTreeSet<u32>, bool)> {
    let err = |detail: String| Error::Cron {
        expr: expr.to_string(),
        field: name,
        detail,
    };
    let mut set = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| err(format!("step {s:?}")))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(err("step 0".into()));
        }
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| err(format!("{s:?} is not a number")))
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if part.contains('/') => (num(r)?, hi),
                None => {
                    let v = num(r)?;
                    (v, v)
                }
            },
        };
        if a < lo || b > hi || a > b {
            return Err(err(format!("{a}-{b} outside {lo}-{hi}")));
        }
        set.extend((a..=b).step_by(step as usize));
    }
    Ok((set, text == "*"))
}

/// Days since the epoch to (year, month 1-12, day 1-31) (H. Hinnant's days-to-civil).
pub(crate) fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl CronExpr {
    /// Parses an expression; the error names the field.
    pub fn parse(text: &str) -> Result<CronExpr> {
        let t = text.trim();
        let expanded = match t {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(Error::Cron {
                expr: text.to_string(),
                field: "expression",
                detail: format!("{} fields, want 5", f.len()),
            });
        }
        let (minutes, _) = field(text, "minute", f[0], 0, 59)?;
        let (hours, _) = field(text, "hour", f[1], 0, 23)?;
        let (days, days_any) = field(text, "day of month", f[2], 1, 31)?;
        let (months, _) = field(text, "month", f[3], 1, 12)?;
        let (mut weekdays, weekdays_any) = field(text, "day of week", f[4], 0, 7)?;
        if weekdays.remove(&7) {
            weekdays.insert(0);
        }
        Ok(CronExpr {
            text: text.to_string(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any,
            weekdays_any,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, days: i64) -> bool {
        let (_, m, d) = civil(days);
        if !self.months.contains(&m) {
            return false;
        }
        // 1970-01-01 was a Thursday (4); Sunday is 0.
        let wd = (days + 4).rem_euclid(7) as u32;
        let dom = self.days.contains(&d);
        let dow = self.weekdays.contains(&wd);
        match (self.days_any, self.weekdays_any) {
            (false, false) => dom || dow,
            (true, false) => dow,
            (false, true) => dom,
            (true, true) => true,
        }
    }

    /// The first time strictly after `t` (seconds, UTC) that matches, on a whole minute;
    /// `None` if none within four years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, t: u64) -> Option<u64> {
        let start = t / 60 + 1; // the next whole minute
        let first_day = (start / 1440) as i64;
        for day in first_day..first_day + SEARCH_DAYS {
            if !self.day_matches(day) {
                continue;
            }
            let day_min = day as u64 * 1440;
            let from = start.saturating_sub(day_min); // minute of the day to start at
            for &h in &self.hours {
                for &m in &self.minutes {
                    let mins = u64::from(h * 60 + m);
                    if mins >= from {
                        return Some((day_min + mins) * 60);
                    }
                }
            }
        }
        None
    }
}

/// A job as written in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The job's name (what the caller runs when it is due).
    pub name: String,
    /// Its cron expression.
    pub cron: String,
}

/// A job's persisted progress: occurrences up to `checked_until` are handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobState {
    /// The job's name.
    pub name: String,
    /// Time up to which its occurrences have been run or skipped.
    pub checked_until: u64,
    /// When it last finished, and whether it succeeded.
    pub last: Option<(u64, bool)>,
}

#[derive(Debug, Clone)]
struct Job {
    name: String,
    cron: CronExpr,
    state: JobState,
    running: bool,
}

/// What the scheduler asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Run this job now, then call [`Scheduler::finished`].
    Run(String),
}

/// The sans-IO scheduler: jobs, their cron expressions and progress.
///
/// ```
/// use vinfra_vcb::{Action, JobConfig, Scheduler};
/// let jobs = [JobConfig { name: "vm1".into(), cron: "0 * * * *".into() }];
/// let mut s = Scheduler::new(&jobs, &[], 0).unwrap();
/// assert_eq!(s.next_wakeup(), Some(3600));
/// assert!(s.poll(3599).is_empty());
/// assert_eq!(s.poll(3600), vec![Action::Run("vm1".into())]);
/// assert!(s.poll(7300).is_empty(), "still running: not started twice");
/// s.finished("vm1", 7300, true);
/// // The 7200 run was missed while the job ran: caught up once, now.
/// assert_eq!(s.poll(7300), vec![Action::Run("vm1".into())]);
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    jobs: Vec<Job>,
}

impl Scheduler {
    /// Jobs from a configuration, with their saved progress (`state`, possibly empty or
    /// from before a job was added or removed); a new job starts counting at `now`.
    pub fn new(config: &[JobConfig], state: &[JobState], now: u64) -> Result<Scheduler> {
        let mut jobs: Vec<Job> = Vec::with_capacity(config.len());
        for c in config {
            if jobs.iter().any(|j| j.name == c.name) {
                return Err(Error::Invalid(format!("job {} defined twice", c.name)));
            }
            let cron = CronExpr::parse(&c.cron)?;
            let state = state
                .iter()
                .find(|s| s.name == c.name)
                .cloned()
                .unwrap_or(JobState {
                    name: c.name.clone(),
                    checked_until: now,
                    last: None,
                });
            jobs.push(Job {
                name: c.name.clone(),
                cron,
                state,
                running: false,
            });
        }
        Ok(Scheduler { jobs })
    }

    /// The jobs due at `now` that are not running: each is marked running and returned
    /// once, however many of its occurrences were missed.
    pub fn poll(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        for j in &mut self.jobs {
            if j.running {
                continue;
            }
            if j.cron
                .next_after(j.state.checked_until)
                .is_some_and(|t| t <= now)
            {
                j.running = true;
                j.state.checked_until = now;
                tracing::info!(job = %j.name, now, "job due");
                out.push(Action::Run(j.name.clone()));
            }
        }
        out
    }

    /// Records that `job` finished at `now`. Occurrences that fell while it ran are
    /// run once more by the next poll.
    pub fn finished(&mut self, job: &str, now: u64, ok: bool) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.name == job) {
            j.running = false;
            j.state.last = Some((now, ok));
        }
    }

    /// When the next job becomes due (for a long-running mode's sleep), if any.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.jobs
            .iter()
            .filter(|j| !j.running)
            .filter_map(|j| j.cron.next_after(j.state.checked_until))
            .min()
    }

    /// Every job's progress, to persist.
    pub fn state(&self) -> Vec<JobState> {
        self.jobs.iter().map(|j| j.state.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u64 = 86_400;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(59), (1970, 3, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn next_times() {
        let at = |e: &str, t: u64| CronExpr::parse(e).unwrap().next_after(t);
        assert_eq!(at("* * * * *", 0), Some(60));
        assert_eq!(at("* * * * *", 59), Some(60));
        assert_eq!(at("@hourly", 3600), Some(7200));
        assert_eq!(at("*/15 * * * *", 16 * 60), Some(30 * 60));
        assert_eq!(at("0 0 1 * *", 0), Some(31 * D)); // 1970-02-01
                                                      // 2024-02-29 at 00:00 is day 19 782; from the start of 2024-02-01.
        assert_eq!(at("0 0 29 2 *", 19_754 * D), Some(19_782 * D));
        assert_eq!(at("0 0 30 2 *", 0), None);
        // Day of month OR day of week when both are restricted: the 13th or a Friday.
        // 1970-01-02 was a Friday.
        assert_eq!(at("0 12 13 * 5", 0), Some(D + 12 * 3600));
        // Sunday as 7: 1970-01-04.
        assert_eq!(at("0 0 * * 7", 0), Some(3 * D));
        assert_eq!(at("@weekly", 0), Some(3 * D));
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
        ] {
            let e = CronExpr::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Cron { .. }), "{bad}: {e}");
        }
        let e = CronExpr::parse("0 25 * * *").unwrap_err();
        assert!(e.to_string().contains("hour"), "{e}");
    }

    /// The calendar walked day by day from 1970-01-01 (a Thursday), independently of
    /// `civil`: (day number, month, day of month, weekday) for `n` days.
    fn calendar(n: i64) -> Vec<(i64, u32, u32, u32)> {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d, mut wd) = (1970i64, 1u32, 1u32, 4u32);
        let mut out = Vec::new();
        for day in 0..n {
            out.push((day, m, d, wd));
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            wd = (wd + 1) % 7;
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        #[test]
        fn next_after_matches_a_brute_force_search(
            mi in proptest::sample::select(vec!["*", "0", "*/7", "5-10", "59", "1,30"]),
            h in proptest::sample::select(vec!["*", "0", "23", "*/5", "8-17"]),
            dom in proptest::sample::select(vec!["*", "1", "31", "15-20", "*/10", "29"]),
            mo in proptest::sample::select(vec!["*", "2", "1-6", "*/4", "12"]),
            dow in proptest::sample::select(vec!["*", "0", "1-5", "6,0", "3", "7"]),
            t in 0u64..(3 * 365 * D),
        ) {
            let text = format!("{mi} {h} {dom} {mo} {dow}");
            let c = CronExpr::parse(&text).unwrap();
            let cal = calendar(4 * 365 + 450);
            let first_day = (t / D) as usize;
            let mut want = None;
            'days: for &(day, m, d, wd) in &cal[first_day..first_day + 400] {
                let dom_ok = c.days.contains(&d);
                let dow_ok = c.weekdays.contains(&wd);
                let day_ok = c.months.contains(&m)
                    && match (dom == "*", dow == "*") {
                        (false, false) => dom_ok || dow_ok,
                        (true, false) => dow_ok,
                        (false, true) => dom_ok,
                        (true, true) => true,
                    };
                if !day_ok {
                    continue;
                }
                for minute in 0..1440u64 {
                    let at = day as u64 * D + minute * 60;
                    if at > t && c.hours.contains(&((minute / 60) as u32)) && c.minutes.contains(&((minute % 60) as u32)) {
                        want = Some(at);
                        break 'days;
                    }
                }
            }
            match want {
                Some(w) => proptest::prop_assert_eq!(c.next_after(t), Some(w), "{}", text),
                None => proptest::prop_assert!(c.next_after(t).is_none_or(|n| n >= (first_day as u64 + 400) * D), "{}", text),
            }
        }
    }

    #[test]
    fn a_week_of_a_daily_and_an_hourly_job_with_a_restart() {
        let jobs = [
            JobConfig {
                name: "daily".into(),
                cron: "0 3 * * *".into(),
            },
            JobConfig {
                name: "hourly".into(),
                cron: "15 * * * *".into(),
            },
        ];
        let mut s = Scheduler::new(&jobs, &[], 0).unwrap();
        let mut runs = (0, 0);
        let now = loop {
            let now = s.next_wakeup().unwrap();
            if now >= 7 * D {
                break now;
            }
            for Action::Run(name) in s.poll(now) {
                match name.as_str() {
                    "daily" => runs.0 += 1,
                    _ => runs.1 += 1,
                }
                s.finished(&name, now + 60, true);
            }
        };
        assert_eq!(runs, (7, 7 * 24));
        // The process stops for two days and restarts from the saved state: each job
        // runs once on restart, then on its schedule.
        let saved = s.state();
        let later = now + 2 * D;
        let mut s = Scheduler::new(&jobs, &saved, later).unwrap();
        let mut due: Vec<_> = s.poll(later).into_iter().map(|Action::Run(n)| n).collect();
        due.sort();
        assert_eq!(due, vec!["daily".to_string(), "hourly".to_string()]);
        assert!(s.poll(later).is_empty());
        s.finished("hourly", later, false);
        assert_eq!(
            s.state().iter().find(|j| j.name == "hourly").unwrap().last,
            Some((later, false))
        );
        assert!(Scheduler::new(&[jobs[0].clone(), jobs[0].clone()], &[], 0).is_err());
    }
}
