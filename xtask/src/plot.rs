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

/// The methods that no other method beats on both axes (higher x and higher y), sorted by x.
pub fn pareto_frontier(points: &[(String, f64, f64)]) -> Vec<(String, f64, f64)> {
    let mut front: Vec<(String, f64, f64)> = points
        .iter()
        .filter(|p| {
            !points
                .iter()
                .any(|q| q.1 >= p.1 && q.2 >= p.2 && (q.1 > p.1 || q.2 > p.2))
        })
        .cloned()
        .collect();
    front.sort_by(|a, b| a.1.total_cmp(&b.1));
    front
}

/// Likelihood–diversity plane: one labelled point per method (x = semantic diversity,
/// y = max log-likelihood), the Pareto frontier drawn through the undominated ones.
pub fn likelihood_diversity(path: &Path, title: &str, points: &[(String, f64, f64)]) -> Result<()> {
    register_font()?;
    let finite: Vec<&(String, f64, f64)> = points
        .iter()
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in &finite {
        x0 = x0.min(p.1);
        x1 = x1.max(p.1);
        y0 = y0.min(p.2);
        y1 = y1.max(p.2);
    }
    let (dx, dy) = ((x1 - x0).max(0.02) * 0.15, (y1 - y0).max(1.0) * 0.15);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((x0 - dx)..(x1 + 2.5 * dx), (y0 - dy)..(y1 + dy))?;
    chart
        .configure_mesh()
        .x_desc("semantic diversity (1 − mean pairwise cosine), higher is better")
        .y_desc("max log p(Z. | X) per prompt, higher is better")
        .draw()?;
    let owned: Vec<(String, f64, f64)> = finite.iter().map(|p| (*p).clone()).collect();
    let front = pareto_frontier(&owned);
    chart.draw_series(LineSeries::new(
        front.iter().map(|p| (p.1, p.2)),
        BLACK.mix(0.5).stroke_width(2),
    ))?;
    for p in &finite {
        let gfn = p.0.contains("GFlowNet");
        let color = if gfn { RED } else { BLUE };
        chart.draw_series(std::iter::once(Circle::new(
            (p.1, p.2),
            if gfn { 7 } else { 5 },
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            p.0.clone(),
            (p.1 + dx * 0.08, p.2),
            ("sans-serif", 14).into_font(),
        )))?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_keeps_exactly_the_undominated_points() {
        let p = |n: &str, x: f64, y: f64| (n.to_string(), x, y);
        let pts = vec![
            p("a", 0.1, -5.0),
            p("b", 0.5, -10.0),
            p("c", 0.3, -4.0),
            p("d", 0.2, -9.0),  // dominated by c
            p("e", 0.5, -12.0), // dominated by b
        ];
        let names: Vec<String> = pareto_frontier(&pts).into_iter().map(|q| q.0).collect();
        assert_eq!(names, vec!["c", "b"]);
    }
}
