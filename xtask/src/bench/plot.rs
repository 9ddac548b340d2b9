//! Plots of a bench report: per suite, GFLOP/s (equivalent: the plain-GEMM
//! flop count over the time) per case and implementation, with the sgemm
//! roofline; SVG always, PNG where a TrueType font is found (plotters
//! renders PNG text through ab_glyph with a font loaded at run time).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::{Record, Report};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_png_font() -> bool {
    for f in FONTS {
        if let Ok(bytes) = std::fs::read(f) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    suite: &str,
    r: &Report,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let recs: Vec<&Record> = r.results.iter().filter(|x| x.suite == suite).collect();
    // A case "set/precision/shape" is plotted at x = shape, in the series
    // "impl set/precision".
    let split = |case: &str| -> (String, String) {
        match case.rsplit_once('/') {
            Some((prefix, x)) => (prefix.to_string(), x.to_string()),
            None => (String::new(), case.to_string()),
        }
    };
    let xs: Vec<String> = super::unique(recs.iter().map(|x| x.case.as_str()))
        .into_iter()
        .map(|c| split(c).1)
        .fold(vec![], |mut v, x| {
            if !v.contains(&x) {
                v.push(x)
            }
            v
        });
    let series: Vec<String> = recs
        .iter()
        .map(|x| format!("{} {}", x.imp, split(&x.case).0).trim().to_string())
        .fold(vec![], |mut v, x| {
            if !v.contains(&x) {
                v.push(x)
            }
            v
        });
    let ymax = recs
        .iter()
        .map(|x| x.gflops())
        .fold(r.roofline_sgemm_gflops.unwrap_or(0.0), f64::max)
        * 1.15;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let n = xs.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{suite}: GFLOP/s (plain-GEMM flop count / time)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax.max(1.0))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                xs[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("GFLOP/s")
        .draw()
        .map_err(e)?;
    for (k, name) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let pts: Vec<(f64, f64)> = recs
            .iter()
            .filter(|x| format!("{} {}", x.imp, split(&x.case).0).trim() == name)
            .filter_map(|x| {
                xs.iter()
                    .position(|s| *s == split(&x.case).1)
                    .map(|i| (i as f64, x.gflops()))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(e)?;
    }
    if let Some(roof) = r.roofline_sgemm_gflops {
        chart
            .draw_series(LineSeries::new(
                vec![(-0.5, roof), (n as f64 - 0.5, roof)],
                BLACK.stroke_width(1),
            ))
            .map_err(e)?
            .label(format!("sgemm roofline {roof:.0}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `<suite>.svg` (and `<suite>.png` when a font is available) for
/// every suite in the report; returns the paths written.
pub fn write_all(r: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Suites without a flop count (e.g. brox) have no GFLOP/s plot.
    let suites = super::unique(
        r.results
            .iter()
            .filter(|x| x.flops > 0.0)
            .map(|x| x.suite.as_str()),
    );
    let png = register_png_font();
    if !png {
        eprintln!(
            "note: no TrueType font found ({}); PNG plots skipped, SVG written",
            FONTS[0]
        );
    }
    let mut out = vec![];
    for s in suites {
        let svg = dir.join(format!("{s}.svg"));
        draw(SVGBackend::new(&svg, (1000, 560)).into_drawing_area(), s, r)?;
        out.push(svg);
        if png {
            let p = dir.join(format!("{s}.png"));
            draw(
                BitMapBackend::new(&p, (1000, 560)).into_drawing_area(),
                s,
                r,
            )?;
            out.push(p);
        }
    }
    Ok(out)
}
