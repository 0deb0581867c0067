//! Section 5: tool calls through one gateway replica, on local storage and
//! on Redis.

use anyhow::Result;
use minijinja::context;

use super::Run;
use super::format::{rate, ratio, table, us};
use super::templates::Templates;
use crate::gateway::{GatewayResults, STREAM_STEPS};

/// A median at or above this many microseconds points at Nagle's
/// algorithm rather than at the store, and the section says so.
const NAGLE_P50_US: f64 = 30_000.0;

/// Every client count on both storages, against local storage.
fn gateway_table(results: &[GatewayResults]) -> String {
    let local = results.iter().find(|g| g.storage == "local");
    let mut rows = Vec::new();
    for result in results {
        for row in &result.rows {
            let base = local.and_then(|l| l.rows.iter().find(|r| r.concurrency == row.concurrency));
            rows.push(vec![
                row.concurrency.to_string(),
                result.storage.clone(),
                rate(row.m.ops_per_sec),
                us(row.m.p50_us),
                us(row.m.p99_us),
                base.map(|b| ratio(row.m.ops_per_sec, b.m.ops_per_sec))
                    .unwrap_or_default(),
                base.map(|b| ratio(row.m.p99_us, b.m.p99_us))
                    .unwrap_or_default(),
            ]);
        }
    }
    // Both storages' rows for one client count stand together.
    rows.sort_by_key(|row| row[0].parse::<usize>().unwrap_or_default());
    table(
        &[
            "clients",
            "storage",
            "calls/s",
            "p50 us",
            "p99 us",
            "calls/s vs local",
            "p99 vs local",
        ],
        &rows,
    )
}

/// The streamed calls on both storages: events per second, the median
/// time per event, and what Redis adds to it over local storage's
/// in-memory events.
fn streams_table(results: &[GatewayResults]) -> Option<String> {
    let local = results.iter().find(|g| g.storage == "local");
    let steps = f64::from(STREAM_STEPS);
    let mut rows = Vec::new();
    for result in results {
        for row in &result.streams {
            let base =
                local.and_then(|l| l.streams.iter().find(|r| r.concurrency == row.concurrency));
            let per_event = row.m.p50_us / steps;
            rows.push(vec![
                row.concurrency.to_string(),
                result.storage.clone(),
                rate(row.m.ops_per_sec * steps),
                us(per_event),
                us(row.m.p99_us),
                base.map(|b| us(per_event - b.m.p50_us / steps))
                    .unwrap_or_default(),
                base.map(|b| ratio(row.m.ops_per_sec, b.m.ops_per_sec))
                    .unwrap_or_default(),
            ]);
        }
    }
    if rows.is_empty() {
        return None;
    }
    rows.sort_by_key(|row| row[0].parse::<usize>().unwrap_or_default());
    Some(table(
        &[
            "clients",
            "storage",
            "events/s",
            "us per event (p50)",
            "call p99 us",
            "added us per event vs local",
            "events/s vs local",
        ],
        &rows,
    ))
}

/// Section 5.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    let measured = !run.gateway.is_empty();
    let slow = run
        .gateway
        .iter()
        .flat_map(|g| g.rows.iter())
        .any(|row| row.m.p50_us >= NAGLE_P50_US);
    templates.render(
        "gateway.md",
        context! {
            table => measured.then(|| gateway_table(&run.gateway)),
            streams => streams_table(&run.gateway),
            steps => STREAM_STEPS,
            event_memory => run.redis.as_ref().and_then(|redis| redis.event_memory.as_ref()).map(|memory| context! {
                events => memory.events,
                sessions => memory.sessions,
                payload_bytes => memory.payload_bytes,
                bytes_per_event => format!("{:.0}", memory.bytes_per_event),
            }),
            skipped => &run.gateway_skipped,
            slow,
        },
    )
}
