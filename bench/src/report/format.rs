//! How figures are written: rates, latencies and ratios as short strings,
//! and the Markdown table every section's figures go into.

use crate::harness::{Row, paired_ratio};

/// Finds one measurement.
pub(crate) fn find<'a>(rows: &'a [Row], target: &str, op: &str, at: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|row| row.target == target && row.op == op && row.concurrency == at)
}

/// Operations per second with a unit prefix: `202.7k`, `2.40M`.
pub(crate) fn rate(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1}k", ops / 1e3)
    } else {
        format!("{ops:.0}")
    }
}

/// Microseconds with three significant figures at most.
pub(crate) fn us(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `ours / base` as a ratio, or `n/a` when there is no baseline to divide by.
pub(crate) fn ratio(ours: f64, base: f64) -> String {
    if base > 0.0 {
        times(ours / base)
    } else {
        "n/a".to_owned()
    }
}

/// Paired throughput ratio `a / b` (median over the rounds).
pub(crate) fn tput(a: &Row, b: &Row) -> f64 {
    paired_ratio(a, b, |round| round.0)
}

/// Paired p99 ratio `a / b` (median over the rounds).
pub(crate) fn p99(a: &Row, b: &Row) -> f64 {
    paired_ratio(a, b, |round| round.1)
}

/// A ratio as `0.97x`, with fewer decimals as it grows.
pub(crate) fn times(r: f64) -> String {
    if !r.is_finite() {
        "n/a".to_owned()
    } else if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// A byte count, rounded to whole bytes.
pub(crate) fn bytes(n: f64) -> String {
    format!("{n:.0}")
}

/// The name of a store in a table: ours in bold, so it stands out among the
/// baselines.
pub(crate) fn store_name(name: &str) -> String {
    if name == "ours" {
        "**ours**".to_owned()
    } else {
        name.to_owned()
    }
}

/// A Markdown table, without a newline after its last row: the templates
/// put the blank lines around it.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    // Text columns align left, figures right.
    const TEXT: [&str; 11] = [
        "item",
        "value",
        "store",
        "target",
        "status",
        "measured",
        "codec",
        "shape",
        "loads",
        "storage",
        "operation",
    ];
    let mut lines = Vec::with_capacity(rows.len() + 2);
    lines.push(format!("| {} |", header.join(" | ")));
    let align: Vec<&str> = header
        .iter()
        .map(|name| if TEXT.contains(name) { "---" } else { "---:" })
        .collect();
    lines.push(format!("|{}|", align.join("|")));
    lines.extend(rows.iter().map(|row| format!("| {} |", row.join(" | "))));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(rate(202_700.0), "202.7k");
        assert_eq!(rate(2_400_000.0), "2.40M");
        assert_eq!(rate(950.0), "950");
        assert_eq!(us(573.4), "573");
        assert_eq!(us(84.51), "84.5");
        assert_eq!(us(0.734), "0.73");
        assert_eq!(times(0.674), "0.67x");
        assert_eq!(times(12.34), "12.3x");
        assert_eq!(times(f64::NAN), "n/a");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }

    #[test]
    fn table_aligns_text_left_and_figures_right() {
        let rows = vec![vec!["ours".to_owned(), "1.2k".to_owned()]];
        assert_eq!(
            table(&["store", "ops/s"], &rows),
            "| store | ops/s |\n|---|---:|\n| ours | 1.2k |"
        );
    }
}
