//! The SVG plots (plotters' SVG backend: no font or image libraries).

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::format::{find, rate};
use super::results::RedisBenchmark;
use crate::harness::Row;

/// One line of a chart.
struct Series {
    name: String,
    color: RGBColor,
    bold: bool,
    points: Vec<(f64, f64)>,
}

const OURS: RGBColor = RGBColor(214, 39, 40);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(90, 90, 90),
];

/// Chart settings.
struct Axes<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_range: (f64, f64),
    /// A logarithmic y axis (latency); otherwise linear from zero.
    log_y: bool,
    y_format: &'a dyn Fn(&f64) -> String,
}

/// Draws one chart into `area`, x always logarithmic.
fn chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    axes: &Axes<'_>,
    series: &[Series],
) -> Result<()> {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, y)| *y))
        .filter(|y| *y > 0.0 && y.is_finite());
    let (min, max) = values.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (min, max) = if min <= max { (min, max) } else { (1.0, 10.0) };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(axes.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let x = (axes.x_range.0..axes.x_range.1).log_scale();
    if axes.log_y {
        let chart = builder.build_cartesian_2d(x, (min / 1.5..max * 1.5).log_scale())?;
        lines(chart, axes, series)
    } else {
        let chart = builder.build_cartesian_2d(x, 0.0..max * 1.15)?;
        lines(chart, axes, series)
    }
}

/// The mesh, one line per series and the legend, on either kind of y axis.
fn lines<'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<LogCoord<f64>, Y>>,
    axes: &Axes<'_>,
    series: &[Series],
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(axes.y_format)
        .draw()?;
    for s in series {
        let style = style(s);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style).point_size(3))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    legend(&mut chart)
}

fn style(series: &Series) -> ShapeStyle {
    series.color.stroke_width(if series.bold { 3 } else { 1 })
}

fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

fn points(rows: &[Row], target: &str, op: &str, levels: &[usize], p99: bool) -> Vec<(f64, f64)> {
    levels
        .iter()
        .filter_map(|&at| {
            let row = find(rows, target, op, at)?;
            Some((
                at as f64,
                if p99 { row.m.p99_us } else { row.m.ops_per_sec },
            ))
        })
        .collect()
}

/// Throughput and p99 against concurrency, for load and create: ours
/// against raw fred, tower-sessions and redis-benchmark.
pub(super) fn redis(path: &Path, rows: &[Row], benchmark: &[RedisBenchmark]) -> Result<()> {
    let levels = crate::redis::CONCURRENCY;
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((2, 2));
    for (row_index, (op, test)) in [("load", "GET"), ("create", "SET")].iter().enumerate() {
        for (col, p99) in [false, true].into_iter().enumerate() {
            let mut series = Vec::new();
            let mut baselines = vec![("raw-fred", "raw fred (same commands)")];
            if *op == "load" {
                baselines.push(("raw-fred-get", "raw fred GET"));
                baselines.push(("raw-fred-pool4", "raw fred, pool of 4"));
            }
            baselines.push(("tower-sessions-redis-store", "tower-sessions-redis-store"));
            series.push(Series {
                name: "ours".to_owned(),
                color: OURS,
                bold: true,
                points: points(rows, "ours", op, &levels, p99),
            });
            for (i, (target, name)) in baselines.iter().enumerate() {
                series.push(Series {
                    name: (*name).to_owned(),
                    color: COLORS[i % COLORS.len()],
                    bold: false,
                    points: points(rows, target, op, &levels, p99),
                });
            }
            let mut rb: Vec<(f64, f64)> = benchmark
                .iter()
                .filter(|r| r.pipeline == 1 && r.test == *test)
                .map(|r| {
                    (
                        r.clients as f64,
                        if p99 { r.p99_ms * 1000.0 } else { r.rps },
                    )
                })
                .collect();
            rb.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !rb.is_empty() {
                series.push(Series {
                    name: format!("redis-benchmark {test}"),
                    color: COLORS[5],
                    bold: false,
                    points: rb,
                });
            }
            let caption = format!("{op}: {}", if p99 { "p99 latency" } else { "throughput" });
            let format_us = |v: &f64| format!("{v:.0}");
            let format_rate = |v: &f64| rate(*v);
            let axes = Axes {
                caption: &caption,
                x_desc: "concurrent tasks",
                y_desc: if p99 { "p99 (us)" } else { "ops/s" },
                x_range: (0.8, 320.0),
                log_y: p99,
                y_format: if p99 { &format_us } else { &format_rate },
            };
            chart(&areas[row_index * 2 + col], &axes, &series)?;
        }
    }
    root.present()?;
    Ok(())
}

/// Throughput of every local store, per operation, at 1 and 2 threads.
pub(super) fn local(path: &Path, rows: &[Row]) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, 2));
    for (area, op) in areas.iter().zip(["load", "mix"]) {
        let mut series = vec![Series {
            name: "ours".to_owned(),
            color: OURS,
            bold: true,
            points: points(rows, "ours", op, &crate::local::THREADS, false),
        }];
        for (i, target) in ["dashmap", "moka", "tower-sessions-memory-store"]
            .into_iter()
            .enumerate()
        {
            series.push(Series {
                name: target.to_owned(),
                color: COLORS[i],
                bold: false,
                points: points(rows, target, op, &crate::local::THREADS, false),
            });
        }
        let format_rate = |v: &f64| rate(*v);
        let caption = format!("local {op}: throughput");
        let axes = Axes {
            caption: &caption,
            x_desc: "worker threads",
            y_desc: "ops/s",
            x_range: (0.9, 2.2),
            log_y: false,
            y_format: &format_rate,
        };
        chart(area, &axes, &series)?;
    }
    root.present()?;
    Ok(())
}
