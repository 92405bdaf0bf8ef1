//! The main job (README command 1) and its analyses.
//!
//! | module | holds |
//! |---|---|
//! | [`base`] | the main job from a pretrained checkpoint (`demo --base`), scored by pass@1 too |
//! | [`base_report`] | its tables, verdicts (loss over seeds, pass@1 over problems) and charts |
//! | [`pipeline`] | the stages: dense pre-training, dense-FT, parameter-matched dense-FT, MultiPL-MoE |
//! | [`agreement`] | how often the segment level's inference routing agrees with training's |
//! | [`report`] | per-seed losses, mean ± sd, the verdict lines, `report.json`, the charts |
//! | [`stats`] | mean, standard deviation and standard error over seeds; paired 2-SE tests |
//! | [`charts`] | the SVG charts: validation loss bars with error bars, training curves |

pub mod agreement;
pub mod base;
pub mod base_report;
pub mod charts;
pub mod pipeline;
pub mod report;
pub mod stats;
