//! `--plot FILE.svg`: every phase's samples on one log-scaled time axis,
//! a row each, with its median marked — for people who would rather look
//! than read.

use super::report::{self, Phase};
use plotters::prelude::*;
use std::path::Path;

/// The most samples drawn in one row.
const MAX_DOTS: usize = 300;

/// Draws `phases` (those with samples) to the SVG file at `path`.
pub fn draw(path: &Path, title: &str, phases: &[Phase]) -> anyhow::Result<()> {
    let rows: Vec<&Phase> = phases.iter().filter(|p| !p.micros.is_empty()).collect();
    if rows.is_empty() {
        anyhow::bail!("--plot: nothing was measured to draw");
    }
    let all = rows.iter().flat_map(|p| p.micros.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // A log axis needs positive bounds: the nearest 1, 2 or 5 × 10ⁿ
    // outside the samples, and at least a decade wide.
    let lo = nice_below(lo.max(0.1));
    let hi = nice_above(hi.max(1.0)).max(lo * 10.0);
    let height = 90 + 28 * rows.len() as u32;
    let error = |e: &dyn std::fmt::Display| anyhow::anyhow!("--plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let (labels, plot_area) = root.split_horizontally(260);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        // Room for the last tick's label.
        .margin_right(40)
        .x_label_area_size(36)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..rows.len() as f64)
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        // Only 1, 2 and 5 × 10ⁿ named: the ticks between crowd a log axis.
        .x_label_formatter(&|v| {
            let mantissa = v / 10f64.powf(v.log10().floor());
            if [1.0, 2.0, 5.0, 10.0]
                .iter()
                .any(|m| (mantissa - m).abs() < 0.01)
            {
                report::duration(*v)
            } else {
                String::new()
            }
        })
        .x_desc("time (log scale); each dot a sample, the red line its median")
        .draw()
        .map_err(|e| error(&e))?;
    for (i, phase) in rows.iter().enumerate() {
        // Rows top to bottom, in the order given.
        let y = (rows.len() - i) as f64 - 0.5;
        // At most MAX_DOTS a row, evenly by rank: the shape stays, the
        // file stays small.
        let mut dots = phase.micros.clone();
        dots.sort_by(f64::total_cmp);
        if dots.len() > MAX_DOTS {
            let step = dots.len() as f64 / MAX_DOTS as f64;
            dots = (0..MAX_DOTS)
                .map(|i| dots[(i as f64 * step) as usize])
                .collect();
        }
        let n = dots.len().max(1) as f64;
        chart
            .draw_series(dots.iter().enumerate().map(|(k, v)| {
                // Spread within the row so that equal values stay visible.
                let jitter = ((k as f64 * 0.618_034) % 1.0 - 0.5) * 0.6 * (n.min(50.0) / 50.0);
                Circle::new((v.max(lo), y + jitter), 2, BLUE.mix(0.35).filled())
            }))
            .map_err(|e| error(&e))?;
        if let Some(s) = phase.summary() {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(s.p50.max(lo), y - 0.4), (s.p50.max(lo), y + 0.4)],
                    RED.stroke_width(2),
                )))
                .map_err(|e| error(&e))?;
        }
        // The row's name, level with it, in the left margin.
        let top = 10 + 16 + 10; // margin, caption, caption gap
        let inner = height as i32 - top - 36 - 10;
        let pixel_y = top + ((i as f64 + 0.5) / rows.len() as f64 * inner as f64) as i32;
        labels
            .draw(&Text::new(
                phase.name.trim().to_string(),
                (10, pixel_y - 6),
                ("sans-serif", 13),
            ))
            .map_err(|e| error(&e))?;
    }
    root.present().map_err(|e| error(&e))?;
    Ok(())
}

/// The largest 1, 2 or 5 × 10ⁿ at or below `v` (> 0).
fn nice_below(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&n| n <= v)
        .unwrap_or(decade)
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v` (> 0).
fn nice_above(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&n| n >= v)
        .unwrap_or(10.0 * decade)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_round_numbers_around_the_samples() {
        assert_eq!(nice_below(700.0), 500.0);
        assert_eq!(nice_below(1000.0), 1000.0);
        assert_eq!(nice_below(0.3), 0.2);
        assert_eq!(nice_above(12_000.0), 20_000.0);
        assert_eq!(nice_above(600.0), 1000.0);
        assert_eq!(nice_above(5000.0), 5000.0);
    }
}
