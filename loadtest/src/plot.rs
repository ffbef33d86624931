//! PNG plots of latency percentiles against offered load, drawn with
//! plotters' bitmap backend and no font at all: plotters is built without a
//! font feature (nothing to find on the system or download), and the few
//! labels are drawn with the 5x7 pixel font in [`glyph`].

mod glyph;

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;

use crate::client::openloop::Step;

/// One line pair on the plot: p50 and p99 total latency at each rate.
pub struct Series {
    pub name: String,
    /// (offered rate, p50 ms, p99 ms)
    pub points: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn from_steps(name: &str, steps: &[Step]) -> Self {
        Self {
            name: name.to_owned(),
            points: steps
                .iter()
                .filter(|s| s.ok > 0)
                .map(|s| (s.rate, s.total.quantile_ms(0.5), s.total.quantile_ms(0.99)))
                .collect(),
        }
    }
}

/// Plots total latency p50 (dashed) and p99 (solid) vs offered load for each
/// series, log-log, to `path` (PNG).
pub fn latency_vs_load(path: &Path, series: &[(&str, &Vec<Step>)]) -> anyhow::Result<()> {
    let s: Vec<Series> = series
        .iter()
        .map(|(n, st)| Series::from_steps(n, st))
        .collect();
    draw(path, &s)
}

/// Redraws the plot from the JSON a `peer --json` run wrote.
pub fn from_peer_json(json: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(json).with_context(|| json.display().to_string())?;
    let v: Value = serde_json::from_str(&text)?;
    let peer = v
        .as_array()
        .and_then(|a| a.iter().find(|r| r["scenario"] == "peer"))
        .context("no peer report in the file")?;
    let d = &peer["data"];
    let pts = |steps: &Value| -> Vec<(f64, f64, f64)> {
        steps
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["ok"].as_u64().unwrap_or(0) > 0)
                    .map(|s| {
                        (
                            s["rate"].as_f64().unwrap_or(0.0),
                            s["total"]["p50_ms"].as_f64().unwrap_or(0.0),
                            s["total"]["p99_ms"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let s = vec![
        Series {
            name: "weir".into(),
            points: pts(&d["weir"]),
        },
        Series {
            name: d["peer"].as_str().unwrap_or("peer").into(),
            points: pts(&d["peer_steps"]),
        },
    ];
    draw(out, &s)
}

const W: u32 = 960;
const H: u32 = 600;
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn draw(path: &Path, series: &[Series]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let all: Vec<(f64, f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    anyhow::ensure!(!all.is_empty(), "nothing to plot");
    let (x0, x1) = decades(all.iter().map(|p| p.0));
    let (y0, y1) = decades(all.iter().flat_map(|p| [p.1, p.2]));
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin_top(60)
        .margin_left(100)
        .margin_right(40)
        .margin_bottom(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    let grid = RGBColor(220, 220, 220);
    let text = RGBColor(40, 40, 40);
    for x in ticks(x0, x1) {
        chart.draw_series(LineSeries::new([(x, y0), (x, y1)], grid))?;
        let (px, py) = chart.backend_coord(&(x, y0));
        let label = short(x);
        glyph::text(
            &root,
            px - glyph::width(&label, 2) / 2,
            py + 8,
            &label,
            text,
            2,
        )?;
    }
    for y in ticks(y0, y1) {
        chart.draw_series(LineSeries::new([(x0, y), (x1, y)], grid))?;
        let (px, py) = chart.backend_coord(&(x0, y));
        let label = short(y);
        glyph::text(
            &root,
            px - 8 - glyph::width(&label, 2),
            py - 7,
            &label,
            text,
            2,
        )?;
    }
    let frame = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)];
    chart.draw_series(LineSeries::new(frame, BLACK))?;
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let p99: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.2)).collect();
        let p50: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
        chart.draw_series(LineSeries::new(p99.clone(), c.stroke_width(3)))?;
        chart.draw_series(p99.iter().map(|&p| Circle::new(p, 5, c.filled())))?;
        chart.draw_series(DashedLineSeries::new(p50.clone(), 8, 6, c.stroke_width(2)))?;
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 4, c.stroke_width(2))))?;
        // Legend, top left inside the plot.
        let (lx, ly) = (120, 80 + i as i32 * 44);
        root.draw(&PathElement::new(
            vec![(lx, ly), (lx + 40, ly)],
            c.stroke_width(3),
        ))?;
        glyph::text(&root, lx + 50, ly - 7, &format!("{} P99", s.name), text, 2)?;
        root.draw(&PathElement::new(
            vec![(lx, ly + 20), (lx + 12, ly + 20)],
            c.stroke_width(2),
        ))?;
        root.draw(&PathElement::new(
            vec![(lx + 24, ly + 20), (lx + 40, ly + 20)],
            c.stroke_width(2),
        ))?;
        glyph::text(&root, lx + 50, ly + 13, &format!("{} P50", s.name), text, 2)?;
    }
    glyph::text(
        &root,
        100,
        18,
        "TOTAL LATENCY OF A STREAMED COMPLETION VS OFFERED LOAD (OPEN LOOP)",
        text,
        2,
    )?;
    glyph::text(
        &root,
        (W as i32) / 2 - 170,
        H as i32 - 30,
        "OFFERED LOAD, REQUESTS/S (LOG)",
        text,
        2,
    )?;
    glyph::text(&root, 8, 40, "MS (LOG)", text, 2)?;
    root.present().context("writing the PNG")?;
    Ok(())
}

/// The enclosing powers of ten of some positive values.
fn decades(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for x in v.filter(|x| *x > 0.0) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo > hi {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// 1, 2, 5 times each power of ten in range.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut d = lo;
    while d <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = d * m;
            if v >= lo * 0.9999 && v <= hi * 1.0001 {
                out.push(v);
            }
        }
        d *= 10.0;
    }
    out
}

fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}K", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_without_any_font() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let s = vec![
            Series {
                name: "weir".into(),
                points: vec![(250.0, 0.4, 0.9), (1000.0, 0.5, 1.5)],
            },
            Series {
                name: "peer".into(),
                points: vec![(25.0, 20.0, 40.0), (100.0, 30.0, 90.0)],
            },
        ];
        draw(&path, &s).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        assert_eq!(
            ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(decades([0.3, 42.0].into_iter()), (0.1, 100.0));
    }
}
