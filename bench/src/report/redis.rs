//! Section 1: the Redis path, one table per operation, then
//! redis-benchmark's figures for the same server.

use std::fmt::Write as _;

use anyhow::Result;
use minijinja::context;

use super::format::{find, p99, rate, ratio, store_name, table, times, tput, us};
use super::results::RedisBenchmark;
use super::templates::Templates;
use super::{OPS, Run};
use crate::harness::Row;
use crate::redis::{CONCURRENCY, INSTRUCTION_LOADS, InstructionCount};

/// One operation's table: every store at every concurrency, with its ratios
/// to raw fred and, for ours, to tower-sessions.
fn op_table(rows: &[Row], op: &str) -> String {
    let mut table_rows = Vec::new();
    for tasks in CONCURRENCY {
        let raw = find(rows, "raw-fred", op, tasks);
        let tower = find(rows, "tower-sessions-redis-store", op, tasks);
        for row in rows.iter().filter(|r| r.op == op && r.concurrency == tasks) {
            let m = &row.m;
            // A store is not compared with itself.
            let vs = |base: Option<&Row>, pick: fn(&Row, &Row) -> f64| match base {
                Some(base) if !std::ptr::eq(base, row) => times(pick(row, base)),
                _ => String::new(),
            };
            let mut target = store_name(&row.target);
            if let Some(share) = row.script_share {
                let _ = write!(target, " (script {:.1}%)", share * 100.0);
            }
            if let Some(share) = row.hit_share {
                let _ = write!(target, " (hits {:.1}%)", share * 100.0);
            }
            table_rows.push(vec![
                tasks.to_string(),
                target,
                rate(m.ops_per_sec),
                us(m.p50_us),
                us(m.p99_us),
                us(m.p999_us),
                format!("{:.1}", m.cpu_us_per_op),
                m.server_cpu_us_per_op
                    .map(|cpu| format!("{cpu:.1}"))
                    .unwrap_or_default(),
                vs(raw, tput),
                vs(raw, p99),
                if row.target == "ours" {
                    vs(tower, tput)
                } else {
                    String::new()
                },
            ]);
        }
    }
    table(
        &[
            "tasks",
            "store",
            "ops/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "client CPU us/op",
            "server CPU us/op",
            "ops/s vs raw fred",
            "p99 vs raw fred",
            "ops/s vs tower-sessions",
        ],
        &table_rows,
    )
}

/// redis-benchmark's GET and SET at each client count, without and with
/// pipelining, beside our load and create.
fn benchmark_table(rows: &[Row], benchmark: &[RedisBenchmark]) -> String {
    let mut table_rows = Vec::new();
    for tasks in CONCURRENCY {
        let find_rb = |test: &str, pipeline: usize| {
            benchmark
                .iter()
                .find(|r| r.clients == tasks && r.pipeline == pipeline && r.test == test)
        };
        let cell = |r: Option<&RedisBenchmark>| r.map(|r| rate(r.rps)).unwrap_or_default();
        let p99 = |r: Option<&RedisBenchmark>| r.map(|r| us(r.p99_ms * 1000.0)).unwrap_or_default();
        let vs = |ours: Option<&Row>, rb: Option<&RedisBenchmark>| match (ours, rb) {
            (Some(ours), Some(rb)) => ratio(ours.m.ops_per_sec, rb.rps),
            _ => String::new(),
        };
        table_rows.push(vec![
            tasks.to_string(),
            cell(find_rb("GET", 1)),
            p99(find_rb("GET", 1)),
            cell(find_rb("SET", 1)),
            cell(find_rb("GET", 16)),
            cell(find_rb("SET", 16)),
            vs(find(rows, "ours", "load", tasks), find_rb("GET", 1)),
            vs(find(rows, "ours", "create", tasks), find_rb("SET", 1)),
        ]);
    }
    table(
        &[
            "clients",
            "GET/s",
            "GET p99 us",
            "SET/s",
            "GET/s -P 16",
            "SET/s -P 16",
            "our load vs GET",
            "our create vs SET",
        ],
        &table_rows,
    )
}

/// Client instructions per uncached load, each store beside raw fred's
/// `GET` and tower-sessions' load.
fn instruction_table(counts: &[InstructionCount]) -> String {
    let of = |target: &str| {
        counts
            .iter()
            .find(|count| count.target == target)
            .map(|count| count.per_load)
    };
    // A store is not compared with itself.
    let versus = |count: &InstructionCount, base: &str| match of(base) {
        Some(per_load) if per_load > 0.0 && count.target != base => {
            times(count.per_load / per_load)
        }
        _ => String::new(),
    };
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|count| {
            vec![
                store_name(&count.target),
                format!("{:.0}", count.per_load),
                versus(count, "raw-fred-get"),
                versus(count, "tower-sessions-redis-store"),
            ]
        })
        .collect();
    table(
        &[
            "store",
            "instructions per load",
            "vs raw fred GET",
            "vs tower-sessions",
        ],
        &rows,
    )
}

/// Section 1.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    let redis = run.redis.as_ref().map(|redis| {
        let ops: Vec<_> = OPS
            .iter()
            .map(|op| context! { name => *op, table => op_table(&redis.rows, op) })
            .collect();
        context! {
            version => &redis.redis_version,
            keyspace => redis.keyspace,
            value_bytes => redis.value_bytes,
            tower_value_bytes => redis.tower_value_bytes,
            ops,
            benchmark => (!run.redis_benchmark.is_empty())
                .then(|| benchmark_table(&redis.rows, &run.redis_benchmark)),
            refresh => redis.refresh.as_ref().map(|refresh| context! {
                sessions => refresh.sessions,
                window_ms => refresh.window_ms,
                windows => format!("{:.0}", refresh.windows),
                script => format!("{:.2}", refresh.script),
                getex => format!("{:.2}", refresh.getex),
                ratio => times(refresh.script / refresh.getex),
            }),
            cache_bytes => redis.cache_bytes_per_entry.map(|bytes| format!("{bytes:.0}")),
            instructions => redis.instructions.as_deref().map(instruction_table),
            instruction_loads => INSTRUCTION_LOADS,
            instruction_difference => INSTRUCTION_LOADS[1] - INSTRUCTION_LOADS[0],
        }
    });
    templates.render("redis.md", context! { redis })
}
