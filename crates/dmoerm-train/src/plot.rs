//! The accuracy curve of a phase: its points, and the curve as SVG (plotters).

use std::path::Path;

use plotters::prelude::*;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One validation point of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub step: usize,
    /// Mean training loss since the previous point (none at step 0).
    pub train_loss: Option<f64>,
    /// Training accuracy since the previous point.
    pub train_accuracy: Option<f64>,
    pub valid_accuracy: f64,
}

/// Draws train and validation accuracy against the step.
pub fn accuracy_curve(path: &Path, title: &str, history: &[Point]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    let fail = |e: String| Error::run(path, format!("plot: {e}"));
    let last = history.last().map_or(1, |p| p.step.max(1));
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0usize..last, 0f64..1f64)
        .map_err(|e| fail(e.to_string()))?;
    chart.configure_mesh().x_desc("step").y_desc("pairwise accuracy").draw().map_err(|e| fail(e.to_string()))?;
    let train: Vec<(usize, f64)> = history.iter().filter_map(|p| p.train_accuracy.map(|a| (p.step, a))).collect();
    let valid: Vec<(usize, f64)> = history.iter().map(|p| (p.step, p.valid_accuracy)).collect();
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(|e| fail(e.to_string()))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(valid, RED.stroke_width(2)))
        .map_err(|e| fail(e.to_string()))?
        .label("validation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}
