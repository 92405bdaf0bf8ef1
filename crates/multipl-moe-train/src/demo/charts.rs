//! The main job's pictures, drawn with `plotters` into SVG files: validation loss per
//! language and model (bars, with ±1 standard deviation over seeds as error bars), and the
//! training curves (loss and balance loss against micro-batches, per model).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// One bar: a model's mean over seeds and its standard deviation (`None` for one seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub sd: Option<f64>,
}

/// One curve: `(micro-batch, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// Index of its colour, the same as the series of the same name in [`grouped_bars`].
    pub color: usize,
    /// Points in order of the x value.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 5] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn chart_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Chart {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The y range's top for `values`: the tallest bar with its error bar, plus headroom that
/// keeps the legend off the bars (1 when every bar is 0, e.g. a pass@1 of 0 everywhere); an
/// error when no finite, non-negative value is to be drawn.
fn bars_top(path: &Path, values: &[Vec<Bar>]) -> Result<f64> {
    let tops: Vec<f64> = values
        .iter()
        .flatten()
        .map(|b| b.mean + b.sd.unwrap_or(0.0))
        .filter(|t| t.is_finite() && *t >= 0.0)
        .collect();
    let top = tops.iter().copied().fold(0.0_f64, f64::max);
    let y_max = if top == 0.0 && !tops.is_empty() {
        1.0
    } else {
        top * 1.3
    };
    if !(y_max.is_finite() && y_max > 0.0) {
        return Err(chart_error(path, "no finite, non-negative value to draw"));
    }
    Ok(y_max)
}

/// Grouped bars: one group per entry of `groups` (e.g. languages), one bar per entry of
/// `series` (e.g. models); `values[g][s]` is group `g`'s bar for series `s`.
///
/// # Errors
/// [`TrainError::Chart`] when `values` does not match the labels or drawing fails.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<Bar>],
) -> Result<()> {
    if values.len() != groups.len() || values.iter().any(|v| v.len() != series.len()) {
        return Err(chart_error(
            path,
            "values do not match the groups and series",
        ));
    }
    let y_max = bars_top(path, values)?;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..y_max)
        .map_err(|e| chart_error(path, e))?;
    let names = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor();
            // Label each group at its centre only.
            if (x - i - 0.5).abs() < 1e-6 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(|e| chart_error(path, e))?;
    let width = 0.8 / series.len() as f64;
    for (s, name) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let x0 = |g: usize| g as f64 + 0.1 + s as f64 * width;
        chart
            .draw_series(values.iter().enumerate().map(|(g, v)| {
                Rectangle::new(
                    [(x0(g), 0.0), (x0(g) + width * 0.9, v[s].mean)],
                    color.filled(),
                )
            }))
            .map_err(|e| chart_error(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(values.iter().enumerate().filter_map(|(g, v)| {
                let sd = v[s].sd?;
                let mid = x0(g) + width * 0.45;
                Some(ErrorBar::new_vertical(
                    mid,
                    v[s].mean - sd,
                    v[s].mean,
                    v[s].mean + sd,
                    BLACK.stroke_width(1),
                    6,
                ))
            }))
            .map_err(|e| chart_error(path, e))?;
    }
    legend(&mut chart, path)?;
    root.present().map_err(|e| chart_error(path, e))
}

/// The legend of the series drawn so far, in the upper right corner.
fn legend<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_error(path, e))
}

/// Panels of line charts side by side, one per `(title, curves)` entry, sharing the x label.
///
/// # Errors
/// [`TrainError::Chart`] when a panel has no finite point or drawing fails.
pub fn curve_panels(path: &Path, x_label: &str, panels: &[(String, Vec<Curve>)]) -> Result<()> {
    let root = SVGBackend::new(path, (480 * panels.len().max(1) as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(path, e))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for ((title, curves), area) in panels.iter().zip(areas) {
        let finite = || {
            curves
                .iter()
                .flat_map(|c| c.points.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let x_max = finite().map(|p| p.0).fold(f64::NAN, f64::max);
        let (y_min, y_max) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        if !(x_max.is_finite() && y_min.is_finite()) {
            return Err(chart_error(
                path,
                format!("panel {title:?} has no finite point"),
            ));
        }
        let pad = ((y_max - y_min) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(&area)
            .caption(title.as_str(), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max.max(1.0), (y_min - pad)..(y_max + pad))
            .map_err(|e| chart_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .draw()
            .map_err(|e| chart_error(path, e))?;
        for curve in curves {
            let color = PALETTE[curve.color % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(curve.points.iter().copied(), color))
                .map_err(|e| chart_error(path, e))?
                .label(curve.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
        }
        legend(&mut chart, path)?;
    }
    root.present().map_err(|e| chart_error(path, e))
}

/// Moving average over `window` points (the first points average what exists so far), so
/// that per-micro-batch losses read as a curve.
pub fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= window {
                sum -= points[i - window].1;
            }
            (x, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Bar, Curve, curve_panels, grouped_bars, smooth};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("multipl-moe-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    #[test]
    fn bars_with_error_bars_and_curves_are_written_as_svg() {
        let path = temp("bars.svg");
        let groups = vec!["python".to_string(), "rust".to_string()];
        let series = vec!["dense".to_string(), "MultiPL-MoE".to_string()];
        let bar = |mean, sd| Bar { mean, sd };
        let values = vec![
            vec![bar(1.0, Some(0.1)), bar(0.9, Some(0.05))],
            vec![bar(2.0, None), bar(1.5, Some(0.2))],
        ];
        grouped_bars(&path, "validation loss", "CE", &groups, &series, &values).expect("draws");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.starts_with("<svg") || svg.contains("<svg"));
        for text in ["python", "rust", "MultiPL-MoE", "validation loss"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Values that do not match the labels are refused.
        assert!(grouped_bars(&path, "t", "y", &groups, &series, &values[..1]).is_err());
        // Zero everywhere (a pass@1 of 0) is drawn; nothing finite is an error.
        let zeros = vec![vec![bar(0.0, None); 2]; 2];
        grouped_bars(&path, "pass@1", "p", &groups, &series, &zeros).expect("zeros draw");
        let nans = vec![vec![bar(f64::NAN, None); 2]; 2];
        assert!(grouped_bars(&path, "t", "y", &groups, &series, &nans).is_err());

        let path = temp("curves.svg");
        let curve = |label: &str, k: f64| Curve {
            label: label.into(),
            color: 1,
            points: (0..50)
                .map(|i| (i as f64, 3.0 - k * i as f64 / 50.0))
                .collect(),
        };
        let panels = vec![
            (
                "loss".to_string(),
                vec![curve("dense-FT", 1.0), curve("MultiPL-MoE", 1.5)],
            ),
            ("balance loss".to_string(), vec![curve("MultiPL-MoE", 0.1)]),
        ];
        curve_panels(&path, "micro-batch", &panels).expect("draws");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.contains("balance loss") && svg.contains("dense-FT"));
        let empty = vec![("loss".to_string(), vec![])];
        assert!(curve_panels(&path, "x", &empty).is_err());
    }

    #[test]
    fn smoothing_is_a_trailing_mean() {
        let points = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)];
        assert_eq!(
            smooth(&points, 2),
            vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]
        );
        assert_eq!(smooth(&points, 1), points.to_vec());
    }
}
