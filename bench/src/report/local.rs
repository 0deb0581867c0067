//! Section 2: the local path, one table per operation.

use anyhow::Result;
use minijinja::context;

use super::format::{find, rate, store_name, table, times, tput, us};
use super::templates::Templates;
use super::{OPS, Run};
use crate::harness::Row;
use crate::local::THREADS;

/// One operation's table: every store at 1 and 2 threads, against the bare
/// map and against ours.
fn op_table(rows: &[Row], op: &str) -> String {
    let mut table_rows = Vec::new();
    for threads in THREADS {
        let map = find(rows, "dashmap", op, threads);
        let ours = find(rows, "ours", op, threads);
        for row in rows
            .iter()
            .filter(|r| r.op == op && r.concurrency == threads)
        {
            let m = &row.m;
            let is_ours = row.target == "ours";
            table_rows.push(vec![
                threads.to_string(),
                store_name(&row.target),
                rate(m.ops_per_sec),
                us(m.p50_us),
                us(m.p99_us),
                format!("{:.0}", m.cpu_us_per_op * 1000.0),
                map.map(|map| times(tput(row, map))).unwrap_or_default(),
                match ours {
                    Some(ours) if !is_ours => times(tput(ours, row)),
                    _ => String::new(),
                },
            ]);
        }
    }
    table(
        &[
            "threads",
            "store",
            "ops/s",
            "p50 us",
            "p99 us",
            "CPU ns/op",
            "ops/s vs dashmap",
            "ours vs this store",
        ],
        &table_rows,
    )
}

/// Section 2.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    let ops = run.local.as_ref().map(|rows| {
        OPS.iter()
            .map(|op| context! { name => *op, table => op_table(rows, op) })
            .collect::<Vec<_>>()
    });
    templates.render("local.md", context! { ops })
}
