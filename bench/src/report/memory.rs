//! Section 3: resident memory per session, and load latency during a sweep
//! of expired sessions.

use anyhow::Result;
use minijinja::{Value, context};

use super::Run;
use super::format::{bytes, rate, ratio, store_name, table, us};
use super::templates::Templates;
use crate::harness::Measurement;
use crate::memory::{MemoryResult, SweepResult};

/// Bytes per session of every store, against the bare map.
fn memory(results: &[MemoryResult]) -> Option<Value> {
    let first = results.first()?;
    let map = results
        .iter()
        .find(|m| m.variant == "dashmap")
        .map(|m| m.bytes_per_session);
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            vec![
                store_name(&m.variant),
                bytes(m.bytes_per_session),
                map.map(|map| ratio(m.bytes_per_session, map))
                    .unwrap_or_default(),
                format!("{:.0}", m.rss_after as f64 / 1024.0 / 1024.0),
            ]
        })
        .collect();
    Some(context! {
        sessions => first.sessions,
        table => table(
            &["store", "bytes per session", "vs dashmap", "RSS after (MiB)"],
            &rows,
        ),
    })
}

/// The loads during the sweep beside those without it.
fn sweep(sweep: &SweepResult) -> Value {
    let row = |name: &str, m: &Measurement| {
        vec![
            name.to_owned(),
            m.ops.to_string(),
            rate(m.ops_per_sec),
            us(m.p50_us),
            us(m.p99_us),
            us(m.p999_us),
            us(m.max_us),
        ]
    };
    let (during, base) = (&sweep.during, &sweep.baseline);
    context! {
        expired => sweep.expired,
        live => sweep.live,
        table => table(
            &["loads", "count", "loads/s", "p50 us", "p99 us", "p99.9 us", "max us"],
            &[row("during the sweep", during), row("without a sweep", base)],
        ),
        removed => sweep.removed,
        ms => format!("{:.1}", sweep.sweep_ms),
        ns_per_session => format!("{:.0}", sweep.sweep_ms * 1e6 / sweep.removed.max(1) as f64),
        p99_ratio => ratio(during.p99_us, base.p99_us),
        p999_ratio => ratio(during.p999_us, base.p999_us),
        loads_ratio => ratio(during.ops_per_sec, base.ops_per_sec),
    }
}

/// Section 3.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    templates.render(
        "memory.md",
        context! {
            memory => memory(&run.memory),
            sweep => run.sweep.as_ref().map(sweep),
        },
    )
}
