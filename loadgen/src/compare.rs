//! `loadgen compare`: .hgrm files side by side, with ratios to the first,
//! and optionally a plot.

use std::path::Path;

use crate::amqp::Error;
use crate::cli::CompareArgs;
use crate::hgrm::Distribution;
use crate::plot;

/// Percentiles the comparison prints, one row each.
pub const PERCENTILES: &[(&str, f64)] = &[
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("p99.999", 0.99999),
    ("max", 1.0),
];

pub fn compare(args: &CompareArgs) -> Result<String, Error> {
    if !args.label.is_empty() && args.label.len() != args.files.len() {
        return Err(Error::Usage(format!(
            "{} labels for {} files",
            args.label.len(),
            args.files.len()
        )));
    }
    let mut runs = Vec::new();
    for (i, path) in args.files.iter().enumerate() {
        let text =
            std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
        let distribution = Distribution::parse(&text).map_err(|why| {
            Error::Usage(format!("{} is not an .hgrm file: {why}", path.display()))
        })?;
        let label = args
            .label
            .get(i)
            .cloned()
            .unwrap_or_else(|| file_label(path));
        runs.push((label, distribution));
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&runs))
            .map_err(Error::io(format!("write {}", path.display())))?;
    }
    Ok(table(&runs))
}

fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Latency in ms per percentile and run, then each later run's ratio to
/// the first.
pub fn table(runs: &[(String, Distribution)]) -> String {
    let ratio_labels: Vec<String> = runs[1..]
        .iter()
        .map(|(label, _)| format!("{label}/{}", runs[0].0))
        .collect();
    let width = runs
        .iter()
        .map(|(label, _)| label.len())
        .chain(ratio_labels.iter().map(String::len))
        .max()
        .unwrap_or(0)
        .max(10);
    let mut header = format!("{:<10}", "latency ms");
    for label in runs.iter().map(|(label, _)| label).chain(&ratio_labels) {
        header += &format!(" {label:>width$}");
    }
    let mut lines = vec![header];
    for &(name, quantile) in PERCENTILES {
        let values: Vec<f64> = runs.iter().map(|(_, d)| d.value_at(quantile)).collect();
        let mut line = format!("{name:<10}");
        for value in &values {
            line += &format!(" {value:>width$.3}");
        }
        for value in &values[1..] {
            let ratio = if values[0] > 0.0 {
                format!("{:.2}x", value / values[0])
            } else {
                "-".into()
            };
            line += &format!(" {ratio:>width$}");
        }
        lines.push(line);
    }
    lines.join("\n")
}
