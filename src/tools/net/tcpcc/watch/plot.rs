//! `--plot FILE.svg`: cwnd and smoothed RTT of each flow against time, one line per flow in two
//! panels that share the time axis, dots where a flow entered Recovery or Loss. Drawn with
//! plotters' SVG backend at the end of the run.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::flows::{Flow, Flows, Point};
use crate::error::Error;

/// More lines than this make a chart nobody can read: the busiest flows are drawn.
const MAX_LINES: usize = 16;
const SIZE: (u32, u32) = (1100, 760);

/// The --plot file, opened before anything is loaded: a path that cannot be written is a
/// usage error at the start, not a chart lost at the end of a long run.
#[derive(Debug)]
pub struct PlotFile {
    path: PathBuf,
    /// Created by this run (removed again if there is nothing to draw).
    created: bool,
}

impl PlotFile {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let hint = || Some("give a file in a writable directory, e.g. --plot /tmp/cwnd.svg".to_owned());
        if path.is_dir() {
            return Err(Error::usage(format!("--plot `{}` is a directory", path.display()), hint()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(Error::usage(
                format!("--plot `{}`: there is no directory `{}`", path.display(), dir.display()),
                hint(),
            ));
        }
        let existed = path.exists();
        // Not truncated: an existing file is replaced only once there is a chart to put there.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::usage(format!("--plot `{}` cannot be written: {e}", path.display()), hint()))?;
        Ok(PlotFile { path: path.to_owned(), created: !existed })
    }

    /// Removes the file again if this run created it (a run that failed before any sample).
    pub fn discard(&self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Draws the chart, or says why there is none (and removes the file this run created).
    pub fn write(&self, flows: &mut Flows) -> Result<(), Error> {
        let mut drawn: Vec<&mut Flow> = flows.list.iter_mut().filter(|f| f.series.is_some()).collect();
        let seen = drawn.len() + flows.unplotted;
        drawn.sort_by_key(|f| std::cmp::Reverse(f.samples));
        drawn.truncate(MAX_LINES);
        if drawn.is_empty() {
            self.discard();
            eprintln!(
                "tracekit: no samples: {} not written (no traffic on the watched connections?)",
                self.path.display()
            );
            return Ok(());
        }
        let lines: Vec<(String, &[Point])> = drawn
            .into_iter()
            .map(|f| (f.label(), f.series.as_mut().expect("filtered on a series").finished()))
            .collect();
        draw(&self.path, &lines)
            .map_err(|e| Error::runtime(format!("writing the plot {}: {e}", self.path.display()), None))?;
        let left_out = seen - lines.len();
        eprintln!(
            "tracekit: plot of {} flow{} written to {}{}",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            self.path.display(),
            if left_out > 0 {
                format!(" ({left_out} quieter flows left out: narrow with --port/--host)")
            } else {
                String::new()
            }
        );
        Ok(())
    }
}

fn draw(path: &Path, lines: &[(String, &[Point])]) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let t_max = lines.iter().flat_map(|(_, p)| p.iter()).map(|p| p.t).fold(0.0, f64::max).max(0.001);
    panel(&top, "cwnd (segments; dots: entering Recovery or Loss)", lines, t_max, 0, |p| f64::from(p.cwnd))?;
    panel(&bottom, "smoothed RTT (ms)", lines, t_max, 2, |p| p.srtt_ms)?;
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    lines: &[(String, &[Point])],
    t_max: f64,
    y_decimals: usize,
    y: impl Fn(&Point) -> f64 + Copy,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let y_max = lines.iter().flat_map(|(_, p)| p.iter()).map(y).fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_label_formatter(&|v| format!("{v:.y_decimals$}"))
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.t, y(p))), style))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        let losses = points.iter().filter(|p| p.loss).map(|p| Circle::new((p.t, y(p)), 3, color.filled()));
        chart.draw_series(losses).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)
}
