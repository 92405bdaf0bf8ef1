//! The main job (README command 1) and its analyses.
//!
//! | module | holds |
//! |---|---|
//! | [`pipeline`] | dense pre-training, dense fine-tuning with replay, MultiPL-MoE; the table |
//! | [`agreement`] | how often the segment level's inference routing agrees with training's |

pub mod agreement;
pub mod pipeline;
