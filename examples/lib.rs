//! Runnable examples of the LMO optimizer toolkit (`cargo run --release
//! --example quickstart`, `--example lmo_tour`) and the small helpers they
//! share: mapping toy-problem roles to optimizer labels, training loops,
//! loss-curve plots.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::collections::BTreeMap;

use gluon_optim::{Config, Label, LipschitzEstimator, Optimizer, presets};
use lmo_ndarray::Nd64;
use lmo_problems::{Problem, Role};
use ndarray::ArrayD;
use plotters::prelude::*;

/// The optimizer label of a toy-problem role.
pub fn label(r: Role) -> Label {
    match r {
        Role::Hidden => Label::Hidden,
        Role::Embedding => Label::Embedding,
        Role::Head => Label::Head,
        Role::Vector => Label::Vector,
    }
}

/// Labels and initial parameters of a problem.
pub fn setup(p: &dyn Problem) -> (Vec<Label>, Vec<ArrayD<f64>>) {
    p.init().into_iter().map(|(r, t)| (label(r), t)).unzip()
}

/// A finished training run.
pub struct Run {
    /// Loss before each step, then the final loss.
    pub losses: Vec<f64>,
    /// Final parameters.
    pub params: Vec<ArrayD<f64>>,
    /// Wall time of the loop (gradients included), seconds.
    pub seconds: f64,
}

impl Run {
    /// The first step at which the loss is ≤ `target`.
    pub fn steps_to(&self, target: f64) -> Option<usize> {
        self.losses.iter().position(|&l| l <= target)
    }
    /// The final loss.
    pub fn final_loss(&self) -> f64 {
        *self.losses.last().expect("at least one loss")
    }
}

/// Trains `p` for `steps` steps with `cfg`; `on_step(k, loss)` is called
/// after each step (progress output).
pub fn train(
    p: &dyn Problem,
    cfg: Config,
    steps: usize,
    mut on_step: impl FnMut(usize, f64),
) -> Result<Run, gluon_optim::OptError> {
    let (labels, mut params) = setup(p);
    let mut grads = params.clone();
    let mut opt = Optimizer::<Nd64>::new(cfg, labels, &params)?;
    let mut losses = Vec::with_capacity(steps + 1);
    let t = Instant::now();
    for k in 0..steps {
        let loss = p.loss_grad(&params, &mut grads);
        losses.push(loss);
        opt.step(&mut params, &grads)?;
        on_step(k, loss);
    }
    losses.push(p.loss_grad(&params, &mut grads));
    Ok(Run {
        losses,
        params,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// How to run an (L0, L1) probe.
pub struct Probe<'a> {
    /// The optimizer that moves the iterates during the probe.
    pub optimizer: Config,
    /// The configuration whose norms the points are measured in (the one
    /// that will train with the fitted radii).
    pub norms: &'a Config,
    /// Probe length.
    pub steps: usize,
    /// Quantile level of the fit ([`gluon_optim::fit_quantile`]).
    pub tau: f64,
    /// Where the recorded points go (CSV).
    pub csv: &'a Path,
}

/// Fits (L0, L1) per label along a probe run (SPEC §3) with
/// [`gluon_optim::probe`]: `probe.steps` steps of `probe.optimizer` while a
/// [`LipschitzEstimator`] records one point per step in the norms of
/// `probe.norms`; each label gets the largest constants among its blocks'
/// τ-quantile fits. `grad(params, grads)` computes the gradients of the
/// current iterate. Prints one line per block and the fits' warnings.
pub fn probe_fits(
    labels: &[Label],
    mut params: Vec<ArrayD<f64>>,
    grad: impl FnMut(&[ArrayD<f64>], &mut [ArrayD<f64>]),
    probe: Probe<'_>,
) -> Result<BTreeMap<Label, (f64, f64)>, String> {
    let Probe {
        optimizer: probe_cfg,
        norms: norms_cfg,
        steps,
        tau,
        csv,
    } = probe;
    let mut opt =
        Optimizer::<Nd64>::new(probe_cfg, labels.to_vec(), &params).map_err(|e| e.to_string())?;
    let mut est =
        LipschitzEstimator::<Nd64>::new(norms_cfg, labels, &params).map_err(|e| e.to_string())?;
    let report = gluon_optim::probe(&mut opt, &mut est, &mut params, steps, tau, grad)
        .map_err(|e| e.to_string())?;
    for (i, (l, f)) in labels.iter().zip(&report.fits).enumerate() {
        let f = f.ok_or("probe recorded no points")?;
        println!("  block {i} ({l:?}): {f}");
    }
    for (i, w) in &report.warnings {
        println!("  warning, block {i}: {w}");
    }
    if let Some(d) = csv.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write(csv, est.to_csv()).map_err(|e| e.to_string())?;
    Ok(report.by_label)
}

/// The Gluon preset with per-label adaptive radii from [`probe_fits`]
/// ([`presets::gluon_fitted`]); a fitted L1 of 0 is lifted to 1e-6 so that
/// `L0 + L1 > 0` holds for blocks whose probe saw no curvature.
pub fn gluon_with(fits: &BTreeMap<Label, (f64, f64)>, beta: f64) -> Result<Config, String> {
    let lifted: BTreeMap<Label, (f64, f64)> = fits
        .iter()
        .map(|(l, &(l0, l1))| (l.clone(), (l0, l1.max(1e-6))))
        .collect();
    presets::gluon_fitted(&lifted, beta).map_err(|e| e.to_string())
}

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: &[(String, Vec<f64>)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let n = curves.iter().map(|c| c.1.len()).max().unwrap_or(1);
    let pos = curves
        .iter()
        .flat_map(|c| c.1.iter().copied())
        .filter(|v| *v > 0.0);
    let lo = pos.clone().fold(f64::INFINITY, f64::min).max(1e-12);
    let hi = pos.fold(0.0, f64::max).max(lo * 10.0);
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..n, (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(e)?;
    for (i, (name, ys)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                ys.iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(k, v)| (k, *v)),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Registers a TrueType font for plot text (once); `false` if none found.
fn font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        FONTS
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .any(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
    })
}

/// Writes `stem.svg` and `stem.png` (log-scale loss per step, one line
/// per curve) and returns their paths; without a TrueType font (plot text
/// needs one) it writes nothing and says so.
pub fn plot_losses(
    dir: &Path,
    stem: &str,
    title: &str,
    curves: &[(String, Vec<f64>)],
) -> Result<Vec<PathBuf>, String> {
    if !font() {
        eprintln!(
            "note: no TrueType font found (looked for {}); plots skipped",
            FONTS[0]
        );
        return Ok(vec![]);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let svg = dir.join(format!("{stem}.svg"));
    draw(
        SVGBackend::new(&svg, (900, 520)).into_drawing_area(),
        title,
        curves,
    )?;
    let png = dir.join(format!("{stem}.png"));
    draw(
        BitMapBackend::new(&png, (900, 520)).into_drawing_area(),
        title,
        curves,
    )?;
    Ok(vec![svg, png])
}

/// The README's code blocks, compiled and run as doc tests so the README
/// stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// One series of [`plot_panels`]: points joined by a line, or a scatter.
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points (non-finite ones are dropped).
    pub points: Vec<(f64, f64)>,
    /// Line (`true`) or scatter (`false`).
    pub line: bool,
}

/// One panel of [`plot_panels`]: title, axis names and series (linear
/// axes; pass log10 values for a log scale and say so in the axis name).
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// x-axis name.
    pub x: String,
    /// y-axis name.
    pub y: String,
    /// The series; colours by position.
    pub series: Vec<Series>,
}

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    panels: &[Panel],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, p) in areas.into_iter().zip(panels) {
        let pts = || {
            p.series
                .iter()
                .flat_map(|s| s.points.iter().copied())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let (dx, dy) = ((x1 - x0).max(1e-9) * 0.03, (y1 - y0).max(1e-9) * 0.05);
        let mut chart = ChartBuilder::on(&area)
            .caption(&p.title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - dx)..(x1 + dx), (y0 - dy)..(y1 + dy))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(p.x.as_str())
            .y_desc(p.y.as_str())
            .draw()
            .map_err(e)?;
        for (i, s) in p.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let data: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let legend = move |(x, y): (i32, i32)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            };
            if s.line {
                chart
                    .draw_series(LineSeries::new(data, color.stroke_width(2)))
                    .map_err(e)?
                    .label(s.name.clone())
                    .legend(legend);
            } else {
                chart
                    .draw_series(data.into_iter().map(|p| Circle::new(p, 2, color.filled())))
                    .map_err(e)?
                    .label(s.name.clone())
                    .legend(legend);
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `stem.svg` and `stem.png` with the panels side by side (each
/// `width` pixels wide) and returns their paths; without a TrueType font it
/// writes nothing and says so.
pub fn plot_panels(
    dir: &Path,
    stem: &str,
    width: u32,
    panels: &[Panel],
) -> Result<Vec<PathBuf>, String> {
    if !font() {
        eprintln!(
            "note: no TrueType font found (looked for {}); plots skipped",
            FONTS[0]
        );
        return Ok(vec![]);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let size = (width * panels.len().max(1) as u32, 480);
    let svg = dir.join(format!("{stem}.svg"));
    draw_panels(SVGBackend::new(&svg, size).into_drawing_area(), panels)?;
    let png = dir.join(format!("{stem}.png"));
    draw_panels(BitMapBackend::new(&png, size).into_drawing_area(), panels)?;
    Ok(vec![svg, png])
}
