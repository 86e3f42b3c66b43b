//! The life of a job as a pure function: an event in, the effects to apply out.
//!
//! ```text
//! Submitted ─► Headers ─StageDone(0)─► Reducing ─Reduced─► Preparing ─Prepared─► Running(k)
//!                                                              ▲                  │ StageDone(k)
//! Resumed(plan) ───────────────────────────────────────────────┘                  ▼
//! Resumed(no plan) ─► Headers                     Running(next k) or Committing ─Committed─► Ended
//! ```
//!
//! Every kind of job lives this life (`tessera_core::engine`); nothing here knows what a job
//! computes. No I/O and no clock: the service applies the [`Effect`]s — journal writes, the
//! reduce, creating and committing outputs, the scheduler's stages — and feeds what they lead
//! to back in as [`Event`]s (Ballista's execution graph and Quickwit's control plane work this
//! way). A failed effect is an event too, so every failure ends the job with its error.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tessera_core::engine::{self, JobPlan, JobRecord, PlannedTask, StageContext};
use tessera_core::job::{JobId, JobState, TaskOutput};

/// Journalled outputs of finished tasks, by stage and task index.
pub type DoneTasks = tessera_core::engine::StageOutputs;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Stage 0: the header tasks run.
    Headers,
    /// The reduce runs.
    Reducing,
    /// The outputs are being created (or attached, when resumed).
    Preparing,
    /// Stage k (1 or later) runs.
    Running(u32),
    /// The outputs are being committed.
    Committing,
    Ended(JobState),
}

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A job was accepted and journalled.
    Submitted { job: JobId, record: Box<JobRecord> },
    /// A job found unfinished in the journal: its plan if it was planned, and its finished tasks.
    Resumed {
        job: JobId,
        record: Box<JobRecord>,
        plan: Option<Box<JobPlan>>,
        done: DoneTasks,
    },
    /// A job that arrives planned and is not journalled (no-op jobs that measure the scheduler).
    Planned {
        job: JobId,
        name: String,
        plan: Box<JobPlan>,
    },
    /// Every task of a stage is done: their outputs, in task order.
    StageDone {
        job: JobId,
        stage: u32,
        outputs: Vec<TaskOutput>,
    },
    /// The reduce finished.
    Reduced {
        job: JobId,
        result: Result<Box<JobPlan>, String>,
    },
    /// The outputs were created (or attached).
    Prepared {
        job: JobId,
        result: Result<(), String>,
    },
    /// The outputs were committed.
    Committed {
        job: JobId,
        result: Result<(), String>,
    },
    /// The job failed outside the life (a task's error, lost leases): already failed in the
    /// scheduler.
    Failed { job: JobId, error: String },
    /// A user cancelled the job.
    Cancel { job: JobId },
}

impl Event {
    /// The event a scheduler outcome is, if any: a stage done, or a job failed by a task.
    pub fn of_outcome(outcome: crate::scheduler::ReportOutcome) -> Option<Event> {
        use crate::scheduler::ReportOutcome;
        match outcome {
            ReportOutcome::StageDone {
                job,
                stage,
                outputs,
            } => Some(Event::StageDone {
                job,
                stage,
                outputs,
            }),
            ReportOutcome::JobFailed { job, error } => Some(Event::Failed { job, error }),
            ReportOutcome::Accepted | ReportOutcome::Ignored(_) => None,
        }
    }
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Add the job to the scheduler (no tasks yet).
    Register {
        job: JobId,
        name: String,
        output: String,
        max_attempts: u32,
    },
    /// Start a stage in the scheduler; `done` are tasks finished before a restart.
    StartStage {
        job: JobId,
        stage: u32,
        tasks: Vec<PlannedTask>,
        done: BTreeMap<u32, TaskOutput>,
    },
    /// Show the job as planning between stages.
    SetPlanning { job: JobId },
    /// Run the reduce (off the async runtime) → [`Event::Reduced`].
    Reduce {
        job: JobId,
        record: Arc<JobRecord>,
        outputs: Vec<TaskOutput>,
    },
    /// Write the plan to the journal before anything acts on it.
    JournalPlan { job: JobId, plan: Arc<JobPlan> },
    /// Create the outputs, or attach to them when `resumed` → [`Event::Prepared`].
    Prepare {
        job: JobId,
        record: Arc<JobRecord>,
        plan: Arc<JobPlan>,
        resumed: bool,
    },
    /// Commit the outputs → [`Event::Committed`].
    Commit {
        job: JobId,
        record: Arc<JobRecord>,
        plan: Arc<JobPlan>,
    },
    /// Remove what a job that failed or was cancelled wrote (its staging prefixes, or the
    /// outputs it was creating); old outputs it was to replace stay as they were.
    Discard {
        job: JobId,
        record: Arc<JobRecord>,
        plan: Arc<JobPlan>,
    },
    /// End the job in the scheduler, and in the journal when `journal`.
    End {
        job: JobId,
        state: JobState,
        error: Option<String>,
        journal: bool,
    },
}

#[derive(Debug)]
struct Life {
    phase: Phase,
    /// `None` for jobs that are not journalled.
    record: Option<Arc<JobRecord>>,
    plan: Option<Arc<JobPlan>>,
    /// Tasks finished before a restart, taken as their stage starts.
    done: DoneTasks,
    resumed: bool,
}

impl Life {
    fn journalled(&self) -> bool {
        self.record.is_some()
    }
}

/// Every job's life.
#[derive(Debug, Default)]
pub struct Lifecycle {
    jobs: HashMap<JobId, Life>,
}

fn end(job: JobId, life: &mut Life, state: JobState, error: Option<String>) -> Vec<Effect> {
    let mut effects = Vec::new();
    // What a failed or cancelled job wrote is removed, once it has outputs of its own: after
    // its prepare, or during one that writes to a staging prefix or resumes (an output this
    // job created before a restart). A prepare that found someone else's output in the way
    // must leave it alone.
    let wrote = match life.phase {
        Phase::Running(_) | Phase::Committing => true,
        Phase::Preparing => {
            life.resumed || life.record.as_ref().is_some_and(|r| r.staging.is_some())
        }
        _ => false,
    };
    if state != JobState::Succeeded
        && wrote
        && let (Some(record), Some(plan)) = (&life.record, &life.plan)
    {
        effects.push(Effect::Discard {
            job,
            record: record.clone(),
            plan: plan.clone(),
        });
    }
    life.phase = Phase::Ended(state);
    effects.push(Effect::End {
        job,
        state,
        error,
        journal: life.journalled(),
    });
    effects
}

fn register(job: JobId, record: &JobRecord) -> Effect {
    Effect::Register {
        job,
        name: record.spec.display_name(),
        output: record.output_url.clone(),
        max_attempts: record.spec.tasks.max_attempts,
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn phase(&self, job: JobId) -> Option<Phase> {
        self.jobs.get(&job).map(|l| l.phase)
    }

    /// What a worker needs for the tasks of a job: the job, and its plan once there is one.
    pub fn context(&self, job: JobId) -> Option<StageContext> {
        let life = self.jobs.get(&job)?;
        Some(StageContext {
            job: (**life.record.as_ref()?).clone(),
            plan: life.plan.as_deref().cloned(),
        })
    }

    /// Whether the job is journalled (a submitted job, not a no-op one).
    pub fn journalled(&self, job: JobId) -> bool {
        self.jobs.get(&job).is_some_and(|l| l.journalled())
    }

    /// The job's plan, once reduced.
    pub fn plan(&self, job: JobId) -> Option<Arc<JobPlan>> {
        self.jobs.get(&job)?.plan.clone()
    }

    /// The effects of `event`. Events for unknown or ended jobs, and events that do not fit
    /// the job's phase (a late result after a cancel), lead to nothing.
    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Submitted { job, record } => self.begin(job, record, None, DoneTasks::new()),
            Event::Resumed {
                job,
                record,
                plan,
                done,
            } => self.begin(job, record, plan, done),
            Event::Planned { job, name, plan } => {
                let plan = Arc::from(plan);
                let life = Life {
                    phase: Phase::Preparing,
                    record: None,
                    plan: Some(plan),
                    done: DoneTasks::new(),
                    resumed: false,
                };
                self.jobs.insert(job, life);
                let mut effects = vec![Effect::Register {
                    job,
                    name,
                    output: String::new(),
                    max_attempts: 1,
                }];
                effects.extend(self.prepared(job, Ok(())));
                effects
            }
            Event::StageDone {
                job,
                stage,
                outputs,
            } => self.stage_done(job, stage, outputs),
            Event::Reduced { job, result } => self.reduced(job, result),
            Event::Prepared { job, result } => self.prepared(job, result),
            Event::Committed { job, result } => {
                let Some(life) = self.live(job, |p| p == Phase::Committing) else {
                    return Vec::new();
                };
                match result {
                    Ok(()) => end(job, life, JobState::Succeeded, None),
                    Err(e) => end(
                        job,
                        life,
                        JobState::Failed,
                        Some(format!("cannot commit the outputs: {e}")),
                    ),
                }
            }
            Event::Failed { job, error } => match self.live(job, |_| true) {
                Some(life) => end(job, life, JobState::Failed, Some(error)),
                None => Vec::new(),
            },
            Event::Cancel { job } => match self.live(job, |_| true) {
                Some(life) => end(job, life, JobState::Cancelled, None),
                None => Vec::new(),
            },
        }
    }

    /// The job's life if it has not ended and its phase passes `fits`.
    fn live(&mut self, job: JobId, fits: impl Fn(Phase) -> bool) -> Option<&mut Life> {
        self.jobs
            .get_mut(&job)
            .filter(|l| !matches!(l.phase, Phase::Ended(_)) && fits(l.phase))
    }

    fn begin(
        &mut self,
        job: JobId,
        record: Box<JobRecord>,
        plan: Option<Box<JobPlan>>,
        mut done: DoneTasks,
    ) -> Vec<Effect> {
        let record: Arc<JobRecord> = Arc::from(record);
        let mut effects = vec![register(job, &record)];
        let life = match plan {
            // Planned before the restart: the headers are not read again.
            Some(plan) => {
                let plan: Arc<JobPlan> = Arc::from(plan);
                effects.push(Effect::Prepare {
                    job,
                    record: record.clone(),
                    plan: plan.clone(),
                    resumed: true,
                });
                Life {
                    phase: Phase::Preparing,
                    record: Some(record),
                    plan: Some(plan),
                    done,
                    resumed: true,
                }
            }
            None => {
                effects.push(Effect::StartStage {
                    job,
                    stage: 0,
                    tasks: engine::header_tasks(&record),
                    done: done.remove(&0).unwrap_or_default(),
                });
                Life {
                    phase: Phase::Headers,
                    record: Some(record),
                    plan: None,
                    done,
                    resumed: false,
                }
            }
        };
        self.jobs.insert(job, life);
        effects
    }

    fn stage_done(&mut self, job: JobId, stage: u32, outputs: Vec<TaskOutput>) -> Vec<Effect> {
        let Some(life) = self.live(job, |p| match p {
            Phase::Headers => stage == 0,
            Phase::Running(k) => stage == k,
            _ => false,
        }) else {
            return Vec::new();
        };
        if stage == 0 {
            let Some(record) = life.record.clone() else {
                return Vec::new();
            };
            life.phase = Phase::Reducing;
            return vec![
                Effect::SetPlanning { job },
                Effect::Reduce {
                    job,
                    record,
                    outputs,
                },
            ];
        }
        self.next_stage(job, stage)
    }

    fn reduced(&mut self, job: JobId, result: Result<Box<JobPlan>, String>) -> Vec<Effect> {
        let Some(life) = self.live(job, |p| p == Phase::Reducing) else {
            return Vec::new();
        };
        let plan: Arc<JobPlan> = match result {
            Ok(plan) => Arc::from(plan),
            Err(e) => return end(job, life, JobState::Failed, Some(e)),
        };
        let Some(record) = life.record.clone() else {
            return Vec::new();
        };
        life.phase = Phase::Preparing;
        life.plan = Some(plan.clone());
        vec![
            Effect::JournalPlan {
                job,
                plan: plan.clone(),
            },
            Effect::Prepare {
                job,
                record,
                plan,
                resumed: false,
            },
        ]
    }

    fn prepared(&mut self, job: JobId, result: Result<(), String>) -> Vec<Effect> {
        let Some(life) = self.live(job, |p| p == Phase::Preparing) else {
            return Vec::new();
        };
        if let Err(e) = result {
            let what = if life.resumed { "resume" } else { "create" };
            return end(
                job,
                life,
                JobState::Failed,
                Some(format!("cannot {what} the outputs: {e}")),
            );
        }
        self.next_stage(job, 0)
    }

    /// Starts the first stage after `after` that has tasks, or commits.
    fn next_stage(&mut self, job: JobId, after: u32) -> Vec<Effect> {
        let Some(life) = self.jobs.get_mut(&job) else {
            return Vec::new();
        };
        let Some(plan) = life.plan.clone() else {
            return Vec::new();
        };
        match plan.next_stage(after) {
            Some((stage, tasks)) => {
                life.phase = Phase::Running(stage);
                vec![Effect::StartStage {
                    job,
                    stage,
                    tasks,
                    done: life.done.remove(&stage).unwrap_or_default(),
                }]
            }
            None => match life.record.clone() {
                Some(record) => {
                    life.phase = Phase::Committing;
                    vec![
                        Effect::SetPlanning { job },
                        Effect::Commit { job, record, plan },
                    ]
                }
                // Nothing to commit for a job that writes nothing.
                None => end(job, life, JobState::Succeeded, None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Scheduler, SchedulerConfig};
    use tessera_core::job::{JobSpec, TaskId, WorkerId};

    fn record() -> JobRecord {
        let yaml = "version: 1\nsources: [a.tif, b.tif]\noutput: {url: file:///store/out}\n";
        JobRecord {
            spec: JobSpec::from_yaml(yaml).unwrap(),
            sources: vec!["a.tif".into(), "b.tif".into()],
            output_url: "file:///store/out".into(),
            staging: None,
        }
    }

    /// Stage 1: 2 tasks, stage 2: none (skipped), stage 3: 3 tasks.
    fn plan() -> JobPlan {
        JobPlan::Noop {
            stages: vec![2, 0, 3],
        }
    }

    fn outputs(n: usize) -> Vec<TaskOutput> {
        vec![TaskOutput::default(); n]
    }

    /// The effects as short names, with the stage and task count of a StartStage.
    fn names(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Register { .. } => "register".to_string(),
                Effect::StartStage {
                    stage, tasks, done, ..
                } => format!("start {stage}: {} tasks, {} done", tasks.len(), done.len()),
                Effect::SetPlanning { .. } => "planning".into(),
                Effect::Reduce { outputs, .. } => format!("reduce {}", outputs.len()),
                Effect::JournalPlan { .. } => "journal plan".into(),
                Effect::Prepare { resumed, .. } => format!("prepare resumed={resumed}"),
                Effect::Commit { .. } => "commit".into(),
                Effect::Discard { .. } => "discard".into(),
                Effect::End {
                    state,
                    error,
                    journal,
                    ..
                } => format!(
                    "end {state:?} {} journal={journal}",
                    error.clone().unwrap_or_default()
                ),
            })
            .collect()
    }

    /// A job submitted whose headers are read: it is reducing.
    fn reducing(life: &mut Lifecycle, job: JobId) {
        reducing_with(life, job, record());
    }

    /// A job of `record` whose headers are read: it is reducing.
    fn reducing_with(life: &mut Lifecycle, job: JobId, record: JobRecord) {
        life.handle(Event::Submitted {
            job,
            record: Box::new(record),
        });
        life.handle(Event::StageDone {
            job,
            stage: 0,
            outputs: outputs(2),
        });
    }

    /// A job reduced: it is preparing its outputs.
    fn planned(life: &mut Lifecycle, job: JobId) {
        planned_with(life, job, record());
    }

    /// A job of `record` reduced: it is preparing its outputs.
    fn planned_with(life: &mut Lifecycle, job: JobId, record: JobRecord) {
        reducing_with(life, job, record);
        life.handle(Event::Reduced {
            job,
            result: Ok(Box::new(plan())),
        });
    }

    #[test]
    fn a_job_goes_from_headers_through_its_stages_to_the_commit() {
        let mut life = Lifecycle::new();
        let job = JobId::new();
        let mut step = |e: Event| names(&life.handle(e));
        assert_eq!(
            step(Event::Submitted {
                job,
                record: Box::new(record())
            }),
            ["register", "start 0: 2 tasks, 0 done"]
        );
        assert_eq!(
            step(Event::StageDone {
                job,
                stage: 0,
                outputs: outputs(2)
            }),
            ["planning", "reduce 2"]
        );
        assert_eq!(
            step(Event::Reduced {
                job,
                result: Ok(Box::new(plan()))
            }),
            ["journal plan", "prepare resumed=false"]
        );
        assert_eq!(
            step(Event::Prepared {
                job,
                result: Ok(())
            }),
            ["start 1: 2 tasks, 0 done"]
        );
        // A stale report of another stage changes nothing.
        assert!(
            step(Event::StageDone {
                job,
                stage: 3,
                outputs: outputs(3)
            })
            .is_empty()
        );
        assert_eq!(
            step(Event::StageDone {
                job,
                stage: 1,
                outputs: outputs(2)
            }),
            ["start 3: 3 tasks, 0 done"],
            "stage 2 has no tasks"
        );
        assert_eq!(
            step(Event::StageDone {
                job,
                stage: 3,
                outputs: outputs(3)
            }),
            ["planning", "commit"]
        );
        assert_eq!(
            step(Event::Committed {
                job,
                result: Ok(())
            }),
            ["end Succeeded  journal=true"]
        );
        // Over: nothing more happens to it.
        assert!(step(Event::Cancel { job }).is_empty());
        assert!(
            step(Event::Failed {
                job,
                error: "late".into()
            })
            .is_empty()
        );
        assert_eq!(life.phase(job), Some(Phase::Ended(JobState::Succeeded)));
    }

    #[test]
    fn a_failed_reduce_fails_the_job_with_its_error() {
        let mut life = Lifecycle::new();
        let job = JobId::new();
        reducing(&mut life, job);
        let effects = life.handle(Event::Reduced {
            job,
            result: Err("crs: a.tif and b.tif differ".into()),
        });
        assert_eq!(
            names(&effects),
            ["end Failed crs: a.tif and b.tif differ journal=true"]
        );
        assert!(life.plan(job).is_none(), "no plan kept");
        assert!(
            life.handle(Event::Prepared {
                job,
                result: Ok(())
            })
            .is_empty()
        );
    }

    #[test]
    fn failed_outputs_fail_the_job() {
        // A commit that fails.
        let mut life = Lifecycle::new();
        let job = JobId::new();
        planned(&mut life, job);
        life.handle(Event::Prepared {
            job,
            result: Ok(()),
        });
        life.handle(Event::StageDone {
            job,
            stage: 1,
            outputs: outputs(2),
        });
        life.handle(Event::StageDone {
            job,
            stage: 3,
            outputs: outputs(3),
        });
        let effects = life.handle(Event::Committed {
            job,
            result: Err("storage s3://b/out/.zmetadata: 503".into()),
        });
        // What it wrote is removed before the end is journalled.
        assert_eq!(
            names(&effects),
            [
                "discard",
                "end Failed cannot commit the outputs: storage s3://b/out/.zmetadata: 503 journal=true"
            ]
        );
        // Outputs that cannot be created: someone else's output is in the way, and stays.
        let job = JobId::new();
        planned(&mut life, job);
        let effects = life.handle(Event::Prepared {
            job,
            result: Err("layer file:///store/out: already exists".into()),
        });
        assert_eq!(
            names(&effects),
            [
                "end Failed cannot create the outputs: layer file:///store/out: already exists journal=true"
            ]
        );
        // A job that writes to a staging prefix removes it whenever it fails after its plan.
        let job = JobId::new();
        let staged = JobRecord {
            staging: Some(job.to_string()),
            ..record()
        };
        planned_with(&mut life, job, staged);
        let effects = life.handle(Event::Prepared {
            job,
            result: Err("storage s3://b/.out.staging-x/.zgroup: 503".into()),
        });
        assert_eq!(names(&effects)[0], "discard");
        // A job cancelled while its tasks run: removed too.
        let job = JobId::new();
        planned(&mut life, job);
        life.handle(Event::Prepared {
            job,
            result: Ok(()),
        });
        assert_eq!(
            names(&life.handle(Event::Cancel { job })),
            ["discard", "end Cancelled  journal=true"]
        );
    }

    #[test]
    fn a_cancel_while_planning_ends_the_job_and_the_late_plan_is_dropped() {
        let mut life = Lifecycle::new();
        let job = JobId::new();
        reducing(&mut life, job);
        assert_eq!(life.phase(job), Some(Phase::Reducing));
        assert_eq!(
            names(&life.handle(Event::Cancel { job })),
            ["end Cancelled  journal=true"]
        );
        assert!(
            life.handle(Event::Reduced {
                job,
                result: Ok(Box::new(plan()))
            })
            .is_empty(),
            "no plan journalled, no outputs created after a cancel"
        );
        assert_eq!(life.phase(job), Some(Phase::Ended(JobState::Cancelled)));
        // A cancel while preparing: the late `Prepared` starts nothing.
        let job = JobId::new();
        planned(&mut life, job);
        life.handle(Event::Cancel { job });
        assert!(
            life.handle(Event::Prepared {
                job,
                result: Ok(())
            })
            .is_empty()
        );
    }

    #[test]
    fn a_resumed_job_starts_where_its_journal_ends() {
        let done = |pairs: &[(u32, &[u32])]| -> DoneTasks {
            pairs
                .iter()
                .map(|(stage, tasks)| {
                    let tasks = tasks.iter().map(|&i| (i, TaskOutput::default()));
                    (*stage, tasks.collect())
                })
                .collect()
        };
        // Not planned yet: the headers again, without those that are journalled.
        let mut life = Lifecycle::new();
        let job = JobId::new();
        let effects = life.handle(Event::Resumed {
            job,
            record: Box::new(record()),
            plan: None,
            done: done(&[(0, &[1])]),
        });
        assert_eq!(names(&effects), ["register", "start 0: 2 tasks, 1 done"]);

        // Planned: the outputs are attached, not created, and each stage starts with its
        // journalled tasks done (a whole stage done ends at once in the scheduler).
        for (journal, first) in [
            (done(&[(0, &[0, 1])]), "start 1: 2 tasks, 0 done"),
            (done(&[(0, &[0, 1]), (1, &[0])]), "start 1: 2 tasks, 1 done"),
            (
                done(&[(0, &[0, 1]), (1, &[0, 1]), (3, &[2])]),
                "start 1: 2 tasks, 2 done",
            ),
        ] {
            let job = JobId::new();
            let effects = life.handle(Event::Resumed {
                job,
                record: Box::new(record()),
                plan: Some(Box::new(plan())),
                done: journal,
            });
            assert_eq!(names(&effects), ["register", "prepare resumed=true"]);
            let effects = life.handle(Event::Prepared {
                job,
                result: Ok(()),
            });
            assert_eq!(names(&effects), [first]);
        }
        let job = JobId::new();
        life.handle(Event::Resumed {
            job,
            record: Box::new(record()),
            plan: Some(Box::new(plan())),
            done: done(&[(1, &[0, 1]), (3, &[2])]),
        });
        life.handle(Event::Prepared {
            job,
            result: Ok(()),
        });
        let effects = life.handle(Event::StageDone {
            job,
            stage: 1,
            outputs: outputs(2),
        });
        assert_eq!(names(&effects), ["start 3: 3 tasks, 1 done"]);
        // Outputs that cannot be attached.
        let job = JobId::new();
        life.handle(Event::Resumed {
            job,
            record: Box::new(record()),
            plan: Some(Box::new(plan())),
            done: DoneTasks::new(),
        });
        let effects = life.handle(Event::Prepared {
            job,
            result: Err("layer gone".into()),
        });
        // What is left of the output this job created before the restart is removed.
        assert_eq!(
            names(&effects),
            [
                "discard",
                "end Failed cannot resume the outputs: layer gone journal=true"
            ]
        );
    }

    /// The lifecycle and the scheduler together, with virtual workers, an explicit clock and
    /// an in-memory journal, as the service drives them.
    struct Harness {
        life: Lifecycle,
        sched: Scheduler,
        now: u64,
        plan: Option<JobPlan>,
        journal: DoneTasks,
        ended: Option<JobState>,
        executed: Vec<TaskId>,
    }

    impl Harness {
        fn new(plan: Option<JobPlan>, journal: DoneTasks) -> Self {
            Harness {
                life: Lifecycle::new(),
                sched: Scheduler::new(SchedulerConfig::default()),
                now: 0,
                plan,
                journal,
                ended: None,
                executed: Vec::new(),
            }
        }

        fn drive(&mut self, event: Event) {
            let mut events = std::collections::VecDeque::from([event]);
            while let Some(event) = events.pop_front() {
                for effect in self.life.handle(event) {
                    let next = match effect {
                        Effect::Register {
                            job,
                            name,
                            output,
                            max_attempts,
                        } => {
                            self.sched
                                .add_job(job, name, output, max_attempts, self.now);
                            None
                        }
                        Effect::StartStage {
                            job,
                            stage,
                            tasks,
                            done,
                        } => self
                            .sched
                            .start_stage(job, stage, tasks, &done)
                            .and_then(Event::of_outcome),
                        Effect::SetPlanning { job } => {
                            self.sched.set_planning(job);
                            None
                        }
                        Effect::Reduce { job, .. } => Some(Event::Reduced {
                            job,
                            result: Ok(Box::new(plan())),
                        }),
                        Effect::JournalPlan { plan, .. } => {
                            self.plan = Some((*plan).clone());
                            None
                        }
                        Effect::Prepare { job, .. } => Some(Event::Prepared {
                            job,
                            result: Ok(()),
                        }),
                        Effect::Commit { job, .. } => Some(Event::Committed {
                            job,
                            result: Ok(()),
                        }),
                        Effect::Discard { .. } => None,
                        Effect::End { job, state, .. } => {
                            self.ended = Some(state);
                            self.sched.succeed(job, self.now);
                            None
                        }
                    };
                    events.extend(next);
                }
            }
        }

        /// Each worker leases one task; then `finish` of them report (the rest stay in flight,
        /// leased and never reported).
        fn round(&mut self, workers: &[WorkerId], finish: usize) -> Vec<TaskId> {
            self.now += 10;
            let leased: Vec<_> = workers
                .iter()
                .flat_map(|w| {
                    self.sched
                        .lease(*w, 1, self.now)
                        .into_iter()
                        .map(|l| (*w, l))
                })
                .collect();
            let mut in_flight = Vec::new();
            for (i, (w, lease)) in leased.into_iter().enumerate() {
                self.executed.push(lease.task);
                if i >= finish {
                    in_flight.push(lease.task);
                    continue;
                }
                let t = lease.task;
                self.journal
                    .entry(t.stage)
                    .or_default()
                    .insert(t.index, TaskOutput::default());
                let outcome = self.sched.report_ok(w, t, TaskOutput::default(), self.now);
                if let Some(event) = Event::of_outcome(outcome) {
                    self.drive(event);
                }
            }
            in_flight
        }
    }

    #[test]
    fn a_coordinator_killed_at_any_point_resumes_without_redoing_journalled_tasks() {
        // 2 headers + 2 + 3 tasks = 7; kill after every number of rounds.
        let workers = [WorkerId::new(), WorkerId::new()];
        for kill_after in 0..6 {
            let job = JobId::new();
            let mut h = Harness::new(None, DoneTasks::new());
            h.drive(Event::Submitted {
                job,
                record: Box::new(record()),
            });
            let mut in_flight = Vec::new();
            for _ in 0..kill_after {
                // One of the two workers' tasks stays in flight (its worker hangs).
                in_flight.extend(h.round(&workers, 1));
            }
            // The coordinator dies; a new one reads the journal.
            let before = h.executed.clone();
            let mut h2 = Harness::new(h.plan.clone(), h.journal.clone());
            h2.drive(Event::Resumed {
                job,
                record: Box::new(record()),
                plan: h.plan.clone().map(Box::new),
                done: h.journal.clone(),
            });
            for _ in 0..20 {
                if h2.ended.is_some() {
                    break;
                }
                h2.round(&workers, 2);
            }
            assert_eq!(
                h2.ended,
                Some(JobState::Succeeded),
                "kill after {kill_after}"
            );
            let all: Vec<_> = before.iter().chain(&h2.executed).collect();
            let unique: std::collections::HashSet<_> = all.iter().collect();
            assert_eq!(unique.len(), 7, "every task ran (kill after {kill_after})");
            let twice = all.len() - unique.len();
            // Only tasks in flight at the kill, and not journalled, ran twice.
            let lost = in_flight
                .iter()
                .filter(|t| {
                    !h.journal
                        .get(&t.stage)
                        .is_some_and(|s| s.contains_key(&t.index))
                })
                .count();
            assert!(
                twice <= lost,
                "kill after {kill_after}: {twice} ran twice, {lost} were in flight"
            );
        }
    }
}
