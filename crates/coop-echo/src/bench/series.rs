//! `--series FILE` and `--plot FILE.png`: the run second by second, as JSON lines and as
//! a picture of throughput and latency over time with the faults' errors marked.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::report::{Faults, Tally};

/// The font the picture's text is drawn in.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Verified replies.
    pub messages: u64,
    /// The faults seen in it.
    pub faults: Faults,
    /// Other failures (wrong replies, other errors).
    pub errors: u64,
    /// Its replies' latency, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Second {
    /// Adds another thread's same second.
    pub(super) fn merge(&mut self, other: &Second) {
        self.messages += other.messages;
        self.faults.merge(other.faults);
        self.errors += other.errors;
        let _ = self.latency.add(&other.latency);
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Connections lost in it: reset, closed early, stalled, failed otherwise.
    fn lost(&self) -> u64 {
        let Faults {
            reset,
            closed,
            stalled,
            ..
        } = self.faults;
        reset + closed + stalled + self.errors
    }
}

/// Closes the second that ends now in `tally` (whose `second` histogram has its replies'
/// latency): what came since `last` (the counts when the second began).
pub(super) fn tick(tally: &mut Tally, last: &mut (u64, Faults, u64)) {
    let Some(latency) = tally.second.as_mut().map(|h| {
        let fresh = Histogram::new_from(h);
        std::mem::replace(h, fresh)
    }) else {
        return;
    };
    let (messages, faults, errors) = *last;
    let now = (tally.messages, tally.faults, tally.other_errors);
    tally.series.push(Second {
        messages: now.0 - messages,
        faults: now.1.since(faults),
        errors: now.2.saturating_sub(errors),
        latency,
    });
    *last = now;
}

/// Writes the series to `file`, a JSON line per second.
pub(super) fn write_lines(series: &[Second], file: &Path) -> io::Result<()> {
    let mut text = String::new();
    for (at, second) in series.iter().enumerate() {
        let Faults {
            reset,
            closed,
            stalled,
            late,
        } = second.faults;
        let (p50, p99) = if second.messages > 0 {
            (second.quantile_us(0.5), second.quantile_us(0.99))
        } else {
            (0.0, 0.0)
        };
        let _ = writeln!(
            text,
            "{{\"second\":{},\"messages\":{},\"errors\":{{\"reset\":{reset},\"closed\":{closed},\"stalled\":{stalled},\"late\":{late},\"other\":{}}},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1}}}",
            at + 1,
            second.messages,
            second.errors,
        );
    }
    std::fs::write(file, text)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
}

/// Draws the series into `file` (PNG): replies per second above, with each second's
/// connections lost (red) and late replies (orange) as bars, and p50 and p99 latency
/// below.
pub(super) fn plot(series: &[Second], title: &str, file: &Path) -> io::Result<()> {
    let font = std::fs::read(FONT).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("--plot needs {FONT}: {e} (apt-get install fonts-dejavu-core)"),
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| io::Error::other(format!("{FONT} is not a font plotters can read")))?;
    draw(series, title, file)
        .map_err(|e| io::Error::other(format!("drawing {}: {e}", file.display())))
}

type Fallible = Result<(), Box<dyn std::error::Error>>;

fn draw(series: &[Second], title: &str, file: &Path) -> Fallible {
    let root = BitMapBackend::new(file, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (upper, lower) = root.split_vertically(340);
    let seconds = series.len().max(1) as f64 + 0.5;
    let rate: Vec<(f64, f64)> = series
        .iter()
        .enumerate()
        .map(|(at, s)| (at as f64 + 1.0, s.messages as f64))
        .collect();
    let per_second = |f: fn(&Second) -> u64| -> Vec<(f64, f64)> {
        series
            .iter()
            .enumerate()
            .map(|(at, s)| (at as f64 + 1.0, f(s) as f64))
            .collect()
    };
    let lost = per_second(Second::lost);
    let late = per_second(|s| s.faults.late);
    // Room above the line for the legend.
    let top = rate
        .iter()
        .chain(&lost)
        .chain(&late)
        .map(|&(_, y)| y)
        .fold(1.0, f64::max)
        * 1.6;
    let mut chart = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..seconds, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("per second")
        .label_style(("sans-serif", 13))
        .draw()?;
    let blue = RGBColor(0x1f, 0x77, 0xb4);
    let red = RGBColor(0xd6, 0x27, 0x28);
    chart
        .draw_series(LineSeries::new(rate, blue.stroke_width(2)))?
        .label("replies")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    let orange = RGBColor(0xff, 0x7f, 0x0e);
    chart
        .draw_series(
            lost.iter()
                .filter(|&&(_, n)| n > 0.0)
                .map(|&(x, n)| Rectangle::new([(x - 0.35, 0.0), (x, n)], red.filled())),
        )?
        .label("connections lost (reset, closed early, stalled, failed)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], red.filled()));
    chart
        .draw_series(
            late.iter()
                .filter(|&&(_, n)| n > 0.0)
                .map(|&(x, n)| Rectangle::new([(x, 0.0), (x + 0.35, n)], orange.filled())),
        )?
        .label("replies late (--slo)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], orange.filled()));
    legend(&mut chart)?;

    let p50: Vec<(f64, f64)> = points(series, 0.5);
    let p99: Vec<(f64, f64)> = points(series, 0.99);
    let top = p99.iter().map(|&(_, y)| y).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..seconds, (1.0..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("latency, µs (log)")
        .label_style(("sans-serif", 13))
        .draw()?;
    chart
        .draw_series(LineSeries::new(p50, blue.stroke_width(2)))?
        .label("p50")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(p99, orange.stroke_width(2)))?
        .label("p99")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2)));
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// The chart's legend, in its corner.
fn legend<'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>) -> Fallible {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// The `q` quantile of each second that has replies.
fn points(series: &[Second], q: f64) -> Vec<(f64, f64)> {
    series
        .iter()
        .enumerate()
        .filter(|(_, s)| s.messages > 0)
        .map(|(at, s)| (at as f64 + 1.0, s.quantile_us(q).max(1.0)))
        .collect()
}
