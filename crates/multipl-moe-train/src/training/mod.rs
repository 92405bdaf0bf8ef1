//! Training: [`trainer::train`] is the one entry point; the `train` command
//! ([`run::run_training`]) and the demo ([`crate::demo::pipeline::run_demo`]) both call it.
//!
//! | module | holds |
//! |---|---|
//! | [`trainer`] | burn-train's `SupervisedTraining`: checkpoint segments, resume, `loss.csv` |
//! | [`lm`] | `L = CE + α·L_bal` (SPEC §4) as burn-train `TrainStep` / `InferenceStep` |
//! | [`config`] | optimisation settings (the SPEC §5 recipe as a preset) and their ranges |
//! | [`schedule`] | linear warm-up, then cosine decay |
//! | [`run`] | `multipl-moe train`: a run file, a corpus, optionally an upcycled checkpoint |
//! | [`strict`] | run files where an unknown key is an error naming it |
//! | [`checkpoint`] | checkpoints that survive a kill; which one a resume takes |
//! | [`memory`] | freed memory handed back to the kernel where a model's worth was freed |
//! | [`loss_log`] | `loss.csv`, one row per micro-batch, consistent with the checkpoints |
//! | [`metrics`] | the dashboard's metrics and the plain-line renderer |
//! | [`validation`] | validation loss per language |

pub mod checkpoint;
pub mod config;
pub mod lm;
pub mod loss_log;
pub mod memory;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod strict;
pub mod trainer;
pub mod validation;
