//! Section 7: a request through session-axum's layer against the same
//! handler behind tower-sessions'.

use anyhow::Result;
use minijinja::context;

use super::Run;
use super::format::{rate, ratio, table, us};
use super::templates::Templates;

/// Both layers at every connection count, against tower-sessions.
fn layer_table(run: &Run) -> Option<String> {
    let rows = run.layer_rows();
    if rows.is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    for row in rows {
        let base = rows
            .iter()
            .find(|base| base.target == "tower-sessions" && base.concurrency == row.concurrency);
        lines.push(vec![
            row.concurrency.to_string(),
            row.target.clone(),
            rate(row.m.ops_per_sec),
            us(row.m.p50_us),
            us(row.m.p99_us),
            format!("{:.1}", row.m.cpu_us_per_op),
            base.map(|base| ratio(row.m.ops_per_sec, base.m.ops_per_sec))
                .unwrap_or_default(),
            base.map(|base| ratio(row.m.p99_us, base.m.p99_us))
                .unwrap_or_default(),
        ]);
    }
    Some(table(
        &[
            "connections",
            "layer",
            "requests/s",
            "p50 us",
            "p99 us",
            "CPU us/request",
            "requests/s vs tower-sessions",
            "p99 vs tower-sessions",
        ],
        &lines,
    ))
}

/// Section 7.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    templates.render("layer.md", context! { table => layer_table(run) })
}
