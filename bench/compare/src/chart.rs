//! `results.png`: server CPU per echo and p99 latency against connection count.

use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::peer::Kind;
use crate::results::Samples;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Coop => RGBColor(0xd6, 0x27, 0x28),
        Kind::Tokio => RGBColor(0x1f, 0x77, 0xb4),
        Kind::Floor => RGBColor(0x7f, 0x7f, 0x7f),
        Kind::Plain => RGBColor(0xff, 0x7f, 0x0e),
        Kind::Hyper => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

pub fn draw(samples: &Samples, counts: &[usize], file: &Path) -> io::Result<()> {
    let font = std::fs::read(FONT).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"),
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| io::Error::other(format!("{FONT} is not a font plotters can read")))?;
    plot(samples, counts, file).map_err(|e| io::Error::other(format!("drawing the chart: {e}")))
}

type Fallible = Result<(), Box<dyn std::error::Error>>;

fn plot(samples: &Samples, counts: &[usize], file: &Path) -> Fallible {
    let root = BitMapBackend::new(file, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    panel(
        &left,
        samples,
        counts,
        "cpu_us",
        "server CPU per echo (µs)",
        false,
    )?;
    panel(
        &right,
        samples,
        counts,
        "p99_us",
        "p99 latency (µs, log scale)",
        true,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    samples: &Samples,
    counts: &[usize],
    metric: &str,
    title: &str,
    log_y: bool,
) -> Fallible {
    let series: Vec<(Kind, Vec<(f64, f64)>)> = Kind::ALL
        .iter()
        .map(|&k| {
            let points = counts
                .iter()
                .filter_map(|&n| Some((n as f64, samples.median(k, &format!("{metric}@{n}"))?)))
                .collect();
            (k, points)
        })
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 1.3;
    let x_max = counts.iter().copied().max().unwrap_or(1) as f64 * 2.0;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if log_y {
        let mut chart =
            builder.build_cartesian_2d((0.5..x_max).log_scale(), (1.0..top).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("connections")
            .label_style(("sans-serif", 14))
            .draw()?;
        draw_lines(&mut chart, &series)?;
    } else {
        let mut chart = builder.build_cartesian_2d((0.5..x_max).log_scale(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("connections")
            .label_style(("sans-serif", 14))
            .draw()?;
        draw_lines(&mut chart, &series)?;
    }
    Ok(())
}

fn draw_lines<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<LogCoord<f64>, Y>>,
    series: &[(Kind, Vec<(f64, f64)>)],
) -> Fallible
where
    Y: Ranged<ValueType = f64>,
{
    for (kind, points) in series {
        let c = color(*kind);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    Ok(())
}
