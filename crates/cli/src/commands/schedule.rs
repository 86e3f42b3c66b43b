//! `tessera schedule`: job specs a coordinator submits itself on a cron expression — add,
//! list (next and last run, last outcome), show a schedule's runs, remove, run now.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use tessera_proto::pb;

use super::jobs::{Remote, connect_remote};

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: the coordinator submits JOB on CRON (in --timezone).
    Add {
        job: PathBuf,
        /// Five fields as crontab (`0 3 * * *`: 03:00 every day), or six or seven with
        /// seconds first.
        #[arg(long)]
        cron: String,
        /// An IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// The schedule's name (default: the spec file's name without its extension).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the schedules: next and last run, last outcome.
    Ls {
        #[command(flatten)]
        remote: Remote,
    },
    /// A schedule's runs, oldest first.
    Show {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a schedule (a run it started goes on).
    Rm {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Fire a schedule now (skipped, and said so, while its last run has not ended).
    RunNow {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn run(command: ScheduleCommand, tls_ca: Option<&Path>) -> Result<()> {
    match command {
        ScheduleCommand::Add {
            job,
            cron,
            timezone,
            name,
            remote,
        } => {
            let spec_yaml = std::fs::read_to_string(&job)
                .with_context(|| format!("cannot read {}", job.display()))?;
            let name = match name {
                Some(n) => n,
                None => job
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .context("give the schedule a --name")?
                    .to_string(),
            };
            let s = connect_remote(remote, tls_ca)
                .await?
                .add_schedule(pb::AddScheduleRequest {
                    name,
                    spec_yaml,
                    cron,
                    timezone,
                })
                .await?;
            print_schedules(&[s]);
        }
        ScheduleCommand::Ls { remote } => {
            let all = connect_remote(remote, tls_ca)
                .await?
                .list_schedules()
                .await?;
            print_schedules(&all);
        }
        ScheduleCommand::Show { name, remote } => {
            let all = connect_remote(remote, tls_ca)
                .await?
                .list_schedules()
                .await?;
            let s = all
                .iter()
                .find(|s| s.name == name)
                .with_context(|| format!("no schedule named {name}"))?;
            print_schedules(std::slice::from_ref(s));
            print_runs(s);
        }
        ScheduleCommand::Rm { name, remote } => {
            let s = connect_remote(remote, tls_ca)
                .await?
                .remove_schedule(&name)
                .await?;
            eprintln!("removed schedule {} ({} runs)", s.name, s.runs.len());
        }
        ScheduleCommand::RunNow { name, remote } => {
            let s = connect_remote(remote, tls_ca)
                .await?
                .run_schedule_now(&name)
                .await?;
            print_runs_last(&s);
        }
    }
    Ok(())
}

fn when(ms: i64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || "-".into(),
            |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    }
}

fn print_schedules(all: &[pb::Schedule]) {
    println!(
        "{:<20} {:<18} {:<14} {:<21} {:<21} {:<10} JOB",
        "NAME", "CRON", "TIMEZONE", "NEXT", "LAST", "OUTCOME"
    );
    for s in all {
        let last = s.runs.last();
        println!(
            "{:<20} {:<18} {:<14} {:<21} {:<21} {:<10} {}",
            s.name,
            s.cron,
            s.timezone,
            when(s.next_ms),
            last.map_or("-".into(), |r| when(r.fired_ms)),
            last.map_or("-", |r| r.outcome.as_str()),
            last.map_or("", |r| r.job_id.as_str()),
        );
    }
}

fn print_run(r: &pb::ScheduleRun) {
    println!(
        "{:<21} {:<21} {:<9} {:<10} {:<36} {}",
        when(r.due_ms),
        when(r.fired_ms),
        r.trigger,
        r.outcome,
        if r.job_id.is_empty() { "-" } else { &r.job_id },
        r.note
    );
}

fn runs_header() {
    println!(
        "{:<21} {:<21} {:<9} {:<10} {:<36} NOTE",
        "DUE", "FIRED", "TRIGGER", "OUTCOME", "JOB"
    );
}

fn print_runs(s: &pb::Schedule) {
    println!();
    runs_header();
    for r in &s.runs {
        print_run(r);
    }
}

fn print_runs_last(s: &pb::Schedule) {
    runs_header();
    if let Some(r) = s.runs.last() {
        print_run(r);
    }
}
