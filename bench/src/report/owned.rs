//! Section 6: owned and versioned sessions. One table per comparison, the
//! Redis rows and then the local ones in each.

use anyhow::Result;
use minijinja::context;

use super::Run;
use super::format::{find, p99, rate, table, times, tput, us};
use super::templates::Templates;
use crate::harness::{Row, paired_ratio};
use crate::owned::{OwnedResults, TASKS, THREADS, list_target};

/// Each storage's name, rows and concurrencies, in table order.
fn storages(owned: &OwnedResults) -> [(&'static str, &[Row], &'static [usize]); 2] {
    [
        ("redis", owned.redis.as_slice(), &TASKS),
        ("local", owned.local.as_slice(), &THREADS),
    ]
}

/// An operation as the tables name it: the new ones in bold, so that they
/// stand out among their baselines.
fn operation(target: &str) -> String {
    match target {
        "get-update" => "get + update".to_owned(),
        "modify" => "**modify**".to_owned(),
        "create-owned" => "**create_owned**".to_owned(),
        other => match other.strip_prefix("list-owned-") {
            Some(size) => format!("**list_owned** ({size} sessions)"),
            None => other.to_owned(),
        },
    }
}

/// The figures every table starts with: where, what, how fast, how much
/// CPU.
fn cells(storage: &str, at: usize, row: &Row) -> Vec<String> {
    let m = &row.m;
    vec![
        storage.to_owned(),
        at.to_string(),
        operation(&row.target),
        rate(m.ops_per_sec),
        us(m.p50_us),
        us(m.p99_us),
        us(m.cpu_us_per_op),
        m.server_cpu_us_per_op
            .map(|cpu| format!("{cpu:.1}"))
            .unwrap_or_default(),
    ]
}

/// The columns of [`cells`]; `rate` names the throughput column.
fn header(rate: &str) -> Vec<&str> {
    vec![
        "storage",
        "tasks",
        "operation",
        rate,
        "p50 us",
        "p99 us",
        "client CPU us/op",
        "server CPU us/op",
    ]
}

/// One comparison's table: every row of `op` at every concurrency of both
/// storages, with its throughput and p99 against those of `base`.
fn comparison_table(owned: &OwnedResults, op: &str, base: &str, vs: [&str; 2]) -> String {
    let mut table_rows = Vec::new();
    for (storage, rows, concurrency) in storages(owned) {
        for &at in concurrency {
            let baseline = find(rows, base, op, at);
            for row in rows.iter().filter(|r| r.op == op && r.concurrency == at) {
                // The baseline is not compared with itself.
                let against = |pick: fn(&Row, &Row) -> f64| match baseline {
                    Some(baseline) if !std::ptr::eq(baseline, row) => times(pick(row, baseline)),
                    _ => String::new(),
                };
                let mut cells = cells(storage, at, row);
                cells.push(against(tput));
                cells.push(against(p99));
                table_rows.push(cells);
            }
        }
    }
    let mut columns = header("ops/s");
    columns.extend(vs);
    table(&columns, &table_rows)
}

/// The listings' table: calls per second and the sessions they returned
/// per second, against `get` of one session and against the listing of the
/// smallest owner.
fn list_table(owned: &OwnedResults) -> String {
    let smallest_size = owned.list_sizes.first().copied().unwrap_or_default();
    let smallest = owned.list_sizes.first().map(|&size| list_target(size));
    let mut table_rows = Vec::new();
    for (storage, rows, concurrency) in storages(owned) {
        for &at in concurrency {
            let get = find(rows, "get", "list", at);
            let small = smallest
                .as_deref()
                .and_then(|target| find(rows, target, "list", at));
            for row in rows
                .iter()
                .filter(|r| r.op == "list" && r.concurrency == at)
            {
                let size = owned
                    .list_sizes
                    .iter()
                    .copied()
                    .find(|&size| row.target == list_target(size));
                let sessions = size.unwrap_or(1) as f64;
                let mut cells = cells(storage, at, row);
                cells.push(rate(row.m.ops_per_sec * sessions));
                cells.push(match (size, get) {
                    (Some(_), Some(get)) => times(tput(row, get) * sessions),
                    _ => String::new(),
                });
                // Time per call is the inverse of calls per second.
                cells.push(match (size, small) {
                    (Some(_), Some(small)) if !std::ptr::eq(small, row) => {
                        times(paired_ratio(small, row, |round| round.0))
                    }
                    _ => String::new(),
                });
                table_rows.push(cells);
            }
        }
    }
    let per_call = format!("time per call vs {smallest_size} sessions");
    let mut columns = header("calls/s");
    columns.extend(["sessions/s", "sessions/s vs get", per_call.as_str()]);
    table(&columns, &table_rows)
}

/// Section 6.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    let owned = run.owned.as_ref().map(|owned| {
        context! {
            create_owners => owned.create_owners,
            local_create_cap => owned.local_create_cap,
            modify => comparison_table(
                owned,
                "modify",
                "get-update",
                ["ops/s vs get + update", "p99 vs get + update"],
            ),
            create => comparison_table(owned, "create", "create", ["ops/s vs create", "p99 vs create"]),
            list => list_table(owned),
        }
    });
    templates.render("owned.md", context! { owned })
}
