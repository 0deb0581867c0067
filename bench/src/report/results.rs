//! The raw results of one run, as the sections wrote them: the JSON files of
//! `session-bench`, redis-benchmark's CSV and xtask's text files. They stay
//! in the results directory after the run, so `session-bench report` can
//! render the report again from them without measuring anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use crate::codec::CodecResult;
use crate::gateway::GatewayResults;
use crate::harness::Row;
use crate::memory::{MemoryResult, SweepResult, VARIANTS};
use crate::owned::OwnedResults;
use crate::redis::RedisResults;

/// A `redis-benchmark --csv` line.
#[derive(Clone, Debug)]
pub(crate) struct RedisBenchmark {
    pub(crate) clients: usize,
    pub(crate) pipeline: usize,
    pub(crate) test: String,
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
}

/// Everything a run produced; a missing section is `None`.
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) redis: Option<RedisResults>,
    pub(crate) redis_benchmark: Vec<RedisBenchmark>,
    pub(crate) local: Option<Vec<Row>>,
    pub(crate) memory: Vec<MemoryResult>,
    pub(crate) sweep: Option<SweepResult>,
    pub(crate) codec: Option<Vec<CodecResult>>,
    pub(crate) gateway: Vec<GatewayResults>,
    /// Why the gateway was not measured, when it was not.
    pub(crate) gateway_skipped: Option<String>,
    pub(crate) owned: Option<OwnedResults>,
    /// Section 7, when it was run.
    pub(crate) layer: Option<crate::layer::LayerResults>,
    /// The 1-minute load average when the run started and when it ended.
    pub(crate) loadavg: Option<(String, String)>,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("cannot parse {}", path.display())
            })?))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Parses `redis-benchmark -q --csv` output.
fn parse_redis_benchmark(text: &str, clients: usize, pipeline: usize) -> Vec<RedisBenchmark> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
        // "p95_latency_ms","p99_latency_ms","max_latency_ms"
        if fields.len() < 7 || fields[0] == "test" {
            continue;
        }
        let number = |i: usize| fields[i].parse::<f64>().unwrap_or(f64::NAN);
        out.push(RedisBenchmark {
            clients,
            pipeline,
            test: fields[0].to_owned(),
            rps: number(1),
            p99_ms: number(6),
        });
    }
    out
}

/// The first field of a `/proc/loadavg` copy: the 1-minute average.
fn read_loadavg(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
}

impl Run {
    /// Reads every file of a results directory; a section whose file is
    /// absent was not run.
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let mut redis_benchmark = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        entries.sort();
        for path in &entries {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            // redis-benchmark-c64-p16.csv
            let parsed = name
                .strip_prefix("redis-benchmark-c")
                .and_then(|rest| rest.strip_suffix(".csv"))
                .and_then(|rest| rest.split_once("-p"))
                .and_then(|(clients, pipeline)| {
                    Some((clients.parse().ok()?, pipeline.parse().ok()?))
                });
            if let Some((clients, pipeline)) = parsed {
                let text = std::fs::read_to_string(path)?;
                redis_benchmark.extend(parse_redis_benchmark(&text, clients, pipeline));
            }
        }
        let mut memory = Vec::new();
        for variant in VARIANTS {
            if let Some(result) = read_json(&dir.join(format!("memory-{variant}.json")))? {
                memory.push(result);
            }
        }
        let mut gateway = Vec::new();
        for storage in ["local", "redis"] {
            if let Some(result) = read_json(&dir.join(format!("gateway-{storage}.json")))? {
                gateway.push(result);
            }
        }
        let gateway_skipped = std::fs::read_to_string(dir.join("gateway-skipped.txt"))
            .ok()
            .map(|text| text.trim().to_owned());
        let loadavg = read_loadavg(&dir.join("loadavg-start.txt"))
            .zip(read_loadavg(&dir.join("loadavg-end.txt")));
        Ok(Self {
            redis: read_json(&dir.join("redis.json"))?,
            redis_benchmark,
            local: read_json(&dir.join("local.json"))?,
            memory,
            sweep: read_json(&dir.join("sweep.json"))?,
            codec: read_json(&dir.join("codec.json"))?,
            gateway,
            gateway_skipped,
            owned: read_json(&dir.join("owned.json"))?,
            layer: read_json(&dir.join("layer.json"))?,
            loadavg,
        })
    }

    /// The Redis section's rows, empty when it was not run.
    pub(crate) fn redis_rows(&self) -> &[Row] {
        self.redis
            .as_ref()
            .map(|r| r.rows.as_slice())
            .unwrap_or(&[])
    }

    /// The local section's rows, empty when it was not run.
    pub(crate) fn local_rows(&self) -> &[Row] {
        self.local.as_deref().unwrap_or(&[])
    }

    /// Section 6's Redis rows, empty when it was not run.
    pub(crate) fn owned_redis_rows(&self) -> &[Row] {
        self.owned
            .as_ref()
            .map(|owned| owned.redis.as_slice())
            .unwrap_or(&[])
    }

    /// Section 6's local rows, empty when it was not run.
    pub(crate) fn owned_local_rows(&self) -> &[Row] {
        self.owned
            .as_ref()
            .map(|owned| owned.local.as_slice())
            .unwrap_or(&[])
    }

    /// Section 7's rows, empty when it was not run.
    pub(crate) fn layer_rows(&self) -> &[Row] {
        self.layer
            .as_ref()
            .map(|layer| layer.rows.as_slice())
            .unwrap_or(&[])
    }

    /// The resident bytes per session of one store, when it was measured.
    pub(crate) fn bytes_per_session(&self, variant: &str) -> Option<f64> {
        self.memory
            .iter()
            .find(|m| m.variant == variant)
            .map(|m| m.bytes_per_session)
    }
}
