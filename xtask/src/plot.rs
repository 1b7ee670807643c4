//! PNG figures for `reproduce`: histogram (base vs tuned vs uniform) and KL over wall time.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| {
            anyhow!("no DejaVuSans.ttf found (install Debian's fonts-dejavu-core) for plot labels")
        })?;
    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, leaked)
        .map_err(|_| anyhow!("could not load DejaVuSans.ttf"))?;
    Ok(())
}

/// The normalised exact distribution q̂(k) = q(k⊤) / Σ q of one report.
fn normalised(report: &Value) -> Vec<f64> {
    let p: Vec<f64> = report["probs"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default();
    let n: f64 = p.iter().sum::<f64>();
    p.iter().map(|c| c / n).collect()
}

/// Exact distributions over 0..=100: the base LM (unconstrained, as one would sample it) and the
/// tuned sampler, with the uniform line.
pub fn histogram(path: &Path, base: &Value, tuned: &Value) -> Result<()> {
    register_font()?;
    let (b, t) = (
        normalised(&base["unconstrained"]),
        normalised(&tuned["constrained"]),
    );
    let ymax = b.iter().chain(&t).cloned().fold(0.02, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "P(answer = k), exact: base LM vs GFlowNet-tuned sampler (uniform = 1/101)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..100.5, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("integer")
        .y_desc("probability (normalised over 0..100)")
        .draw()?;
    for (data, color, name, shift) in [
        (&b, RED.mix(0.6), "base SmolLM2 (unconstrained)", -0.2),
        (&t, BLUE.mix(0.8), "GFlowNet-tuned sampler", 0.2),
    ] {
        chart
            .draw_series(data.iter().enumerate().map(|(k, &p)| {
                let x = k as f64 + shift;
                Rectangle::new([(x - 0.2, 0.0), (x + 0.2, p)], color.filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 1.0 / 101.0), (100.5, 1.0 / 101.0)],
            BLACK.stroke_width(2),
        ))?
        .label("uniform")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 10, y)], BLACK));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Exact KL(q‖U) of each checkpoint against training wall time.
pub fn kl_curve(path: &Path, curve: &[(u64, f64, f64, f64)]) -> Result<()> {
    register_font()?;
    let pts: Vec<(f64, f64)> = curve
        .iter()
        .filter(|c| c.1.is_finite() && c.2.is_finite())
        .map(|c| (c.1 / 60.0, c.2))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Exact KL(q‖U) of the constrained sampler over training",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("wall time (min)")
        .y_desc("KL(q‖U), nats")
        .draw()?;
    chart.draw_series(LineSeries::new(pts.iter().cloned(), BLUE.stroke_width(2)))?;
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
