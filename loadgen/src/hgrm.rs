//! The `.hgrm` percentile distribution, as HdrHistogram's Java
//! `outputPercentileDistribution` writes it (and its plotter reads it):
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.031 0.000000000000          1           1.00
//!        ...
//!        2.115 1.000000000000     100000
//! #[Mean    =        0.125, StdDeviation   =        0.045]
//! #[Max     =        2.115, Total count    =     100000]
//! #[Buckets =           22, SubBuckets     =       2048]
//! ```
//!
//! Values are recorded in microseconds and written in milliseconds (a
//! scaling ratio of 1000, three decimals), the unit the plotter labels.
//! The parser reads back what the writer writes, and files from wrk2,
//! PerfTest or HdrHistogram itself.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Microseconds per written unit (milliseconds).
const SCALING_RATIO: f64 = 1000.0;
/// Percentile ticks per half distance, as the Java default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

pub fn write(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0;
    for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / SCALING_RATIO;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(out, "{value:12.3} {quantile:2.12} {total:10}");
        }
    }
    let scaled = |v: f64| v / SCALING_RATIO;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        scaled(histogram.mean()),
        scaled(histogram.stdev())
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        scaled(histogram.max() as f64),
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two()
    );
    out
}

/// One line of a distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Milliseconds.
    pub value: f64,
    /// 0.0 to 1.0.
    pub quantile: f64,
    pub total_count: u64,
}

/// A parsed `.hgrm`: its lines, in order, and the footer's totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    pub points: Vec<Point>,
    pub mean: Option<f64>,
    pub max: Option<f64>,
    pub total_count: Option<u64>,
}

impl Distribution {
    pub fn parse(text: &str) -> Result<Distribution, String> {
        let mut distribution = Distribution::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(footer) = line.strip_prefix("#[") {
                distribution.read_footer(footer.trim_end_matches(']'));
                continue;
            }
            if line.is_empty() || line.starts_with("Value") || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || {
                format!(
                    "line {}: expected value, percentile, total count",
                    number + 1
                )
            };
            let [value, quantile, total_count, ..] = fields[..] else {
                return Err(bad());
            };
            distribution.points.push(Point {
                value: value.parse().map_err(|_| bad())?,
                quantile: quantile.parse().map_err(|_| bad())?,
                total_count: total_count.parse().map_err(|_| bad())?,
            });
        }
        if distribution.points.is_empty() {
            return Err("no percentile lines".into());
        }
        Ok(distribution)
    }

    fn read_footer(&mut self, footer: &str) {
        for field in footer.split(',') {
            let Some((name, value)) = field.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match name.trim() {
                "Mean" => self.mean = value.parse().ok(),
                "Max" => self.max = value.parse().ok(),
                "Total count" => self.total_count = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// The value at `quantile` (0.0 to 1.0): the first line at or past it.
    pub fn value_at(&self, quantile: f64) -> f64 {
        self.points
            .iter()
            .find(|p| p.quantile >= quantile)
            .or(self.points.last())
            .map_or(0.0, |p| p.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::new_histogram;

    #[test]
    fn a_written_distribution_parses_back_to_the_same_percentiles() {
        let mut histogram = new_histogram();
        for latency_us in 1..=10_000 {
            histogram.record(latency_us).unwrap();
        }
        let text = write(&histogram);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        let parsed = Distribution::parse(&text).unwrap();
        assert_eq!(parsed.total_count, Some(10_000));
        assert_eq!(parsed.points.last().unwrap().total_count, 10_000);
        assert_eq!(parsed.points.last().unwrap().quantile, 1.0);
        for quantile in [0.5, 0.9, 0.99, 0.999] {
            let expected = histogram.value_at_quantile(quantile) as f64 / 1000.0;
            assert!(
                (parsed.value_at(quantile) - expected).abs() <= 0.011,
                "{quantile}"
            );
        }
        assert!((parsed.max.unwrap() - 10.0).abs() < 0.01);
    }

    #[test]
    fn java_output_parses() {
        let text = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
                   \x20      0.031 0.000000000000          1           1.00\n\
                   \x20      0.100 0.500000000000        500           2.00\n\
                   \x20      2.115 1.000000000000       1000\n\
                   #[Mean    =        0.125, StdDeviation   =        0.045]\n\
                   #[Max     =        2.115, Total count    =         1000]\n\
                   #[Buckets =           22, SubBuckets     =       2048]\n";
        let parsed = Distribution::parse(text).unwrap();
        assert_eq!(parsed.points.len(), 3);
        assert_eq!(parsed.value_at(0.5), 0.1);
        assert_eq!(parsed.value_at(0.99), 2.115);
        assert_eq!(parsed.mean, Some(0.125));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Distribution::parse("").is_err());
        assert!(Distribution::parse("1.0 zero 3\n").is_err());
    }
}
