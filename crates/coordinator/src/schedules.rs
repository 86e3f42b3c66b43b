//! Schedules: job specs the coordinator submits itself on a cron expression, kept in its store
//! so that they survive restarts.
//!
//! ```text
//! _tessera/schedules/<name>.json   the spec, the cron expression and time zone, the last due
//!                                  time handled, and the most recent runs with their outcomes
//! ```
//!
//! Firings follow Kubernetes CronJob's `concurrencyPolicy: Forbid`: a firing while the
//! schedule's previous run has not ended is skipped, and recorded as such. A coordinator that
//! was down when firings were due runs the schedule once when it is back (the latest missed
//! firing), not once per missed firing.
//!
//! The records and the cron arithmetic come first; then the coordinator's schedule methods
//! (add, remove, list, run now, and the tick that fires what is due).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tessera_core::job::Mode;
use tessera_core::job::{JobId, JobSpec, JobState};
use tonic::Status;

use crate::grpc::status_of;
use crate::service::Coordinator;

/// How many runs a schedule keeps in its record (the newest).
pub const RUNS_KEPT: usize = 50;

/// The most firings looked through to find the latest one missed (a every-second schedule
/// down for a day has 86,400); beyond them the latest is taken as now.
const MISSED_SCAN: usize = 200_000;

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    schedule: cron::Schedule,
    tz: chrono_tz::Tz,
}

impl Cron {
    /// Parses a cron expression — five fields (`min hour dom month dow`, as crontab), or six or
    /// seven with seconds first (and a year last) — and an IANA time zone name (`UTC`,
    /// `Europe/Rome`). Each error names what it refuses.
    pub fn parse(expression: &str, timezone: &str) -> Result<Cron, String> {
        let fields = expression.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expression}"),
            6 | 7 => expression.to_string(),
            _ if expression.trim().starts_with('@') => expression.trim().to_string(),
            n => {
                return Err(format!(
                    "cron expression {expression:?} has {n} fields; want 5 (min hour day month weekday), or 6-7 with seconds first"
                ));
            }
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| format!("invalid cron expression {expression:?}: {e}"))?;
        let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            format!("unknown time zone {timezone:?} (want an IANA name such as UTC or Europe/Rome)")
        })?;
        Ok(Cron { schedule, tz })
    }

    /// The first firing strictly after `ms` (milliseconds since the epoch).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let t = self.tz.from_utc_datetime(&utc(ms).naive_utc());
        self.schedule.after(&t).next().map(|d| d.timestamp_millis())
    }

    /// The latest firing in `(after, now]`, with how many fell in that span; `None` when none.
    pub fn latest_due(&self, after: i64, now: i64) -> Option<(i64, usize)> {
        let t = self.tz.from_utc_datetime(&utc(after).naive_utc());
        let mut latest = None;
        let mut n = 0;
        for d in self.schedule.after(&t).take(MISSED_SCAN) {
            let ms = d.timestamp_millis();
            if ms > now {
                return latest.map(|l| (l, n));
            }
            latest = Some(ms);
            n += 1;
        }
        latest.map(|_| (now, n))
    }
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// An instant as RFC 3339 in UTC, to the second.
pub fn format_ms(ms: i64) -> String {
    utc(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its cron expression was due.
    Cron,
    /// Firings were due while the coordinator was down: one run for them all.
    CatchUp,
    /// `schedule run-now`.
    Manual,
}

/// What became of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its job has not ended yet.
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Not run: the previous run had not ended (concurrency: forbid).
    Skipped,
    /// The coordinator refused its job (the spec no longer holds: a source gone, an output
    /// being written by another job).
    Refused,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
        }
    }
}

/// One firing of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// When it was due (the firing's time; for a manual run, when it was asked for).
    pub due_ms: i64,
    /// When the coordinator handled it.
    pub fired_ms: i64,
    pub trigger: Trigger,
    /// The job it submitted.
    pub job: Option<String>,
    pub outcome: Outcome,
    /// Why it was skipped or refused, how many firings a catch-up stood for, a job's error.
    pub note: Option<String>,
}

/// A schedule as its record in the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub spec_yaml: String,
    pub cron: String,
    pub timezone: String,
    pub created_ms: i64,
    /// The latest due time handled (fired, skipped or caught up): the next firing is after it.
    pub last_due_ms: i64,
    /// The newest last, at most [`RUNS_KEPT`].
    pub runs: Vec<Run>,
}

impl Schedule {
    pub fn cron(&self) -> Result<Cron, String> {
        Cron::parse(&self.cron, &self.timezone)
    }

    /// The next firing after the last one handled.
    pub fn next_ms(&self) -> Option<i64> {
        self.cron().ok()?.next_after(self.last_due_ms)
    }

    pub fn last_run(&self) -> Option<&Run> {
        self.runs.last()
    }

    /// The job of the last run when that run has not ended.
    pub fn running_job(&self) -> Option<&str> {
        self.last_run()
            .filter(|r| r.outcome == Outcome::Running)
            .and_then(|r| r.job.as_deref())
    }

    pub fn push(&mut self, run: Run) {
        self.runs.push(run);
        if self.runs.len() > RUNS_KEPT {
            let extra = self.runs.len() - RUNS_KEPT;
            self.runs.drain(..extra);
        }
    }
}

/// A schedule's name: what its record's key and the CLI use.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schedule name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

/// Milliseconds since the epoch, now.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Coordinator {
    /// Adds a schedule: its name, cron expression, time zone and spec are checked now (the
    /// spec as a submission would check it, without submitting); it first fires at the next
    /// due time after now.
    pub async fn add_schedule(
        &self,
        name: &str,
        yaml: &str,
        cron: &str,
        timezone: &str,
    ) -> Result<Schedule, Status> {
        check_name(name).map_err(Status::invalid_argument)?;
        let timezone = if timezone.is_empty() { "UTC" } else { timezone };
        Cron::parse(cron, timezone).map_err(Status::invalid_argument)?;
        let mut spec =
            JobSpec::from_yaml(yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A scheduled cube job is incremental unless its spec says `mode: full`: each run
        // brings the products up to date with what is new.
        let yaml = if spec.cube.is_some() && spec.mode.is_none() {
            spec.mode = Some(Mode::Incremental);
            let text = spec.to_yaml();
            spec =
                JobSpec::from_yaml(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
            text
        } else {
            yaml.to_string()
        };
        let yaml = yaml.as_str();
        self.resolve_output(&spec.output.url)?;
        spec.ingest_options().map_err(status_of)?;
        let mut schedules = self.schedules.lock().await;
        if schedules.contains_key(name) {
            return Err(Status::already_exists(format!(
                "a schedule named {name} exists; remove it first (tessera schedule rm {name})"
            )));
        }
        let now = wall_ms();
        let schedule = Schedule {
            name: name.to_string(),
            spec_yaml: yaml.to_string(),
            cron: cron.to_string(),
            timezone: timezone.to_string(),
            created_ms: now,
            last_due_ms: now,
            runs: Vec::new(),
        };
        self.journal
            .put_schedule(&schedule)
            .await
            .map_err(status_of)?;
        schedules.insert(name.to_string(), schedule.clone());
        tracing::info!(schedule = name, cron, timezone, "schedule added");
        Ok(schedule)
    }

    /// Removes a schedule (a run it started goes on).
    pub async fn remove_schedule(&self, name: &str) -> Result<Schedule, Status> {
        let mut schedules = self.schedules.lock().await;
        let Some(schedule) = schedules.get(name).cloned() else {
            return Err(no_schedule(name, &schedules));
        };
        self.journal
            .delete_schedule(name)
            .await
            .map_err(status_of)?;
        schedules.remove(name);
        Ok(schedule)
    }

    /// Every schedule, with the outcomes of their runs brought up to date.
    pub async fn list_schedules(&self) -> Vec<Schedule> {
        let mut schedules = self.schedules.lock().await;
        for s in schedules.values_mut() {
            self.refresh_schedule(s).await;
        }
        schedules.values().cloned().collect()
    }

    /// Fires a schedule now, whatever its cron expression says (still skipped while its last
    /// run has not ended); its next cron firing is unchanged.
    pub async fn run_schedule_now(&self, name: &str) -> Result<Schedule, Status> {
        let mut schedules = self.schedules.lock().await;
        if !schedules.contains_key(name) {
            return Err(no_schedule(name, &schedules));
        }
        let Some(s) = schedules.get_mut(name) else {
            return Err(no_schedule(name, &BTreeMap::new()));
        };
        let now = wall_ms();
        self.fire(s, now, Trigger::Manual, None).await;
        Ok(s.clone())
    }

    /// Fires every schedule that is due: called by the coordinator's ticker.
    pub async fn tick_schedules(&self) {
        let now = wall_ms();
        let mut schedules = self.schedules.lock().await;
        for s in schedules.values_mut() {
            let Ok(cron) = s.cron() else { continue };
            let Some((due, n)) = cron.latest_due(s.last_due_ms, now) else {
                continue;
            };
            // More than a tick late: the coordinator was down (or stalled) across firings.
            let late = now - due > 2 * SCHEDULE_TICK.as_millis() as i64 || n > 1;
            let (trigger, note) = if late {
                (
                    Trigger::CatchUp,
                    Some(format!(
                        "{n} firing{} due while the coordinator was down, the latest at {}: run once",
                        if n == 1 { " was" } else { "s were" },
                        format_ms(due)
                    )),
                )
            } else {
                (Trigger::Cron, None)
            };
            s.last_due_ms = due;
            self.fire(s, due, trigger, note).await;
        }
    }

    /// One firing of `s`: skipped while its last run has not ended, else its spec submitted;
    /// recorded either way, and the record written.
    async fn fire(&self, s: &mut Schedule, due: i64, trigger: Trigger, note: Option<String>) {
        self.refresh_schedule(s).await;
        let fired_ms = wall_ms();
        let run = if let Some(job) = s.running_job() {
            Run {
                due_ms: due,
                fired_ms,
                trigger,
                job: None,
                outcome: Outcome::Skipped,
                note: Some(format!(
                    "the previous run (job {job}) has not ended (concurrency: forbid)"
                )),
            }
        } else {
            match self.submit(&s.spec_yaml).await {
                Ok(job) => Run {
                    due_ms: due,
                    fired_ms,
                    trigger,
                    job: Some(job.to_string()),
                    outcome: Outcome::Running,
                    note,
                },
                Err(status) => Run {
                    due_ms: due,
                    fired_ms,
                    trigger,
                    job: None,
                    outcome: Outcome::Refused,
                    note: Some(status.message().to_string()),
                },
            }
        };
        tracing::info!(schedule = %s.name, outcome = run.outcome.name(), job = ?run.job, note = ?run.note, "schedule fired");
        s.push(run);
        if let Err(e) = self.journal.put_schedule(s).await {
            tracing::error!(schedule = %s.name, error = %e, "cannot write the schedule's record");
        }
    }

    /// Brings the last run's outcome up to date from its job; writes the record if it changed.
    async fn refresh_schedule(&self, s: &mut Schedule) {
        let Some(id) = s.running_job().map(str::to_string) else {
            return;
        };
        let Ok(job) = id.parse::<JobId>() else { return };
        // How it ended, why it failed, and what it did (an incremental run's figures).
        let ended = match self.status(job) {
            Some(st) if st.state.is_terminal() => Some((st.state, st.error, st.summary)),
            Some(_) => None,
            None => match self.journal.end(job).await {
                Ok(Some(end)) => Some((end.state, end.error, None)),
                Ok(None) => Some((
                    JobState::Failed,
                    Some(format!("job {job} is unknown to this coordinator")),
                    None,
                )),
                Err(_) => None,
            },
        };
        let Some((state, error, summary)) = ended else {
            return;
        };
        if let Some(run) = s.runs.last_mut() {
            run.outcome = match state {
                JobState::Succeeded => Outcome::Succeeded,
                JobState::Cancelled => Outcome::Cancelled,
                _ => Outcome::Failed,
            };
            if error.is_some() {
                run.note = error;
            } else if let Some(did) = summary {
                run.note = Some(match run.note.take() {
                    Some(note) => format!("{note}; {did}"),
                    None => did,
                });
            }
        }
        if let Err(e) = self.journal.put_schedule(s).await {
            tracing::error!(schedule = %s.name, error = %e, "cannot write the schedule's record");
        }
    }
}

/// The error for a schedule that is not there, naming those that are.
fn no_schedule(name: &str, schedules: &BTreeMap<String, Schedule>) -> Status {
    let names: Vec<&str> = schedules.keys().map(String::as_str).collect();
    Status::not_found(format!(
        "no schedule named {name} (there {})",
        match names.len() {
            0 => "are none".to_string(),
            1 => format!("is {}", names[0]),
            _ => format!("are {}", names.join(", ")),
        }
    ))
}

/// How often the coordinator looks for due schedules.
pub const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn five_fields_are_crontab_and_six_have_seconds() {
        let daily = Cron::parse("0 3 * * *", "UTC").unwrap();
        assert_eq!(
            daily.next_after(ms("2026-11-29T10:00:00Z")),
            Some(ms("2026-11-30T03:00:00Z"))
        );
        let every3s = Cron::parse("*/3 * * * * *", "UTC").unwrap();
        assert_eq!(
            every3s.next_after(ms("2026-11-29T10:00:01Z")),
            Some(ms("2026-11-29T10:00:03Z"))
        );
    }

    #[test]
    fn a_time_zone_moves_the_firings() {
        // 03:00 in Rome is 02:00 UTC in winter.
        let rome = Cron::parse("0 3 * * *", "Europe/Rome").unwrap();
        assert_eq!(
            rome.next_after(ms("2026-11-29T10:00:00Z")),
            Some(ms("2026-11-30T02:00:00Z"))
        );
    }

    #[test]
    fn missed_firings_are_run_once_at_the_latest() {
        let every3s = Cron::parse("*/3 * * * * *", "UTC").unwrap();
        let (latest, n) = every3s
            .latest_due(ms("2026-11-29T10:00:00Z"), ms("2026-11-29T10:00:10Z"))
            .unwrap();
        assert_eq!((latest, n), (ms("2026-11-29T10:00:09Z"), 3));
        assert_eq!(
            every3s.latest_due(ms("2026-11-29T10:00:00Z"), ms("2026-11-29T10:00:02Z")),
            None
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = Cron::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("invalid cron expression \"61 * * * *\""), "{e}");
        let e = Cron::parse("* * *", "UTC").unwrap_err();
        assert!(e.contains("has 3 fields"), "{e}");
        let e = Cron::parse("0 3 * * *", "Europe/Atlantis").unwrap_err();
        assert!(e.contains("unknown time zone \"Europe/Atlantis\""), "{e}");
        assert!(check_name("nightly-era5").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn a_record_keeps_its_newest_runs() {
        let mut s = Schedule {
            name: "s".into(),
            spec_yaml: String::new(),
            cron: "* * * * *".into(),
            timezone: "UTC".into(),
            created_ms: 0,
            last_due_ms: 0,
            runs: Vec::new(),
        };
        for i in 0..(RUNS_KEPT as i64 + 5) {
            s.push(Run {
                due_ms: i,
                fired_ms: i,
                trigger: Trigger::Cron,
                job: None,
                outcome: Outcome::Skipped,
                note: None,
            });
        }
        assert_eq!(s.runs.len(), RUNS_KEPT);
        assert_eq!(s.runs[0].due_ms, 5);
    }
}
