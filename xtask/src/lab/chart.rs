//! The benchmark chart: qps and p99 per system and scenario (plotters).

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use crate::lab::RunResult;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn draw(results: &BTreeMap<String, BTreeMap<String, RunResult>>, out: &Path) -> Result<()> {
    let bytes =
        std::fs::read(FONT).with_context(|| format!("reading {FONT} (fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("registering the font"))?;
    let root =
        BitMapBackend::new(out, (1400, 300 * results.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let rows = root.split_evenly((results.len().max(1), 2));
    let palette = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (scenario, systems)) in results.iter().enumerate() {
        let names: Vec<&String> = systems.keys().collect();
        for (col, (metric, value)) in [
            (
                "qps",
                Box::new(|r: &RunResult| r.qps) as Box<dyn Fn(&RunResult) -> f64>,
            ),
            ("p99 ms", Box::new(|r: &RunResult| r.p99_ms)),
        ]
        .into_iter()
        .enumerate()
        {
            let area = &rows[i * 2 + col];
            let max = systems
                .values()
                .map(&value)
                .fold(0.0f64, f64::max)
                .max(1e-6)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{scenario}: {metric}"), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..names.len() as f64, 0f64..max)
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(names.len() + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    names.get(i).map_or(String::new(), |n| {
                        n.split(' ').next().unwrap_or("").to_string()
                            + if n.contains("kernel") {
                                " K"
                            } else if n.contains("user") {
                                " U"
                            } else if n.contains("cache") {
                                " C"
                            } else {
                                ""
                            }
                    })
                })
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series(names.iter().enumerate().map(|(j, n)| {
                    let v = value(&systems[*n]);
                    Rectangle::new(
                        [(j as f64 + 0.15, 0.0), (j as f64 + 0.85, v)],
                        palette[j % palette.len()].filled(),
                    )
                }))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
