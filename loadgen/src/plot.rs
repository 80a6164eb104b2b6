//! An SVG plot of latency by percentile, drawn by hand: HdrHistogram's
//! plotter layout, with the x axis at 1/(1-p) on a log scale (labels 0%,
//! 90%, 99%, 99.9%, ...), latency in milliseconds on a linear y axis, one
//! polyline per run and a legend. No fonts or libraries needed.

use std::fmt::Write as _;

use crate::hgrm::Distribution;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// log10(1/(1-q)): 0 at p0, 1 at p90, 2 at p99, ...
fn x_of(quantile: f64, x_max: f64) -> f64 {
    if quantile >= 1.0 {
        x_max
    } else {
        (1.0 / (1.0 - quantile)).log10().min(x_max)
    }
}

pub fn svg(runs: &[(String, Distribution)]) -> String {
    // The last finite point of the longest run sets the x range: 99.99%
    // for 10^4 samples, and so on; p100 is drawn at the right edge.
    let finite_max = runs
        .iter()
        .flat_map(|(_, d)| &d.points)
        .filter(|p| p.quantile < 1.0)
        .map(|p| (1.0 / (1.0 - p.quantile)).log10())
        .fold(1.0, f64::max);
    let x_max = finite_max.ceil().max(1.0);
    let y_max = nice_ceiling(
        runs.iter()
            .flat_map(|(_, d)| &d.points)
            .map(|p| p.value)
            .fold(0.0, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_max * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Latency by percentile distribution</text>"#,
        WIDTH / 2.0
    );
    for decade in 0..=x_max as u32 {
        let x = px(f64::from(decade));
        let label = percentile_label(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + plot_h + 18.0
        );
    }
    for tick in 0..=5 {
        let value = y_max * f64::from(tick) / 5.0;
        let y = py(value);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            trim(value)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">Latency (milliseconds)</text>"#,
        TOP + plot_h / 2.0
    );
    for (i, (label, distribution)) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = distribution
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(x_of(p.quantile, x_max)), py(p.value)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let y = TOP + 18.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"/>"#,
            LEFT + 12.0,
            LEFT + 36.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 42.0,
            y + 4.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// "0%", "90%", "99%", "99.9%", ... for decade 0, 1, 2, 3, ...
fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace(".%", "%"),
    }
}

fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= value)
        .unwrap_or(value)
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hgrm::Point;

    #[test]
    fn percentile_axis_labels_follow_hdrhistogram() {
        let labels: Vec<_> = (0..5).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn a_plot_has_a_line_and_a_legend_entry_per_run() {
        let distribution = Distribution {
            points: vec![
                Point {
                    value: 0.1,
                    quantile: 0.0,
                    total_count: 1,
                },
                Point {
                    value: 0.5,
                    quantile: 0.99,
                    total_count: 99,
                },
                Point {
                    value: 2.0,
                    quantile: 1.0,
                    total_count: 100,
                },
            ],
            ..Distribution::default()
        };
        let svg = svg(&[
            ("a<b".into(), distribution.clone()),
            ("c".into(), distribution),
        ]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains(">99%<"));
    }
}
