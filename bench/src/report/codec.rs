//! Section 4: the codecs' size and speed against MessagePack.

use anyhow::Result;
use minijinja::context;

use super::Run;
use super::format::{ratio, table};
use super::templates::Templates;
use crate::codec::CodecResult;

/// Every codec on both shapes, against MessagePack on the same shape.
fn codec_table(results: &[CodecResult]) -> String {
    let mut rows = Vec::new();
    for shape in ["small", "large"] {
        let base = results
            .iter()
            .find(|r| r.shape == shape && r.codec == "messagepack");
        for r in results.iter().filter(|r| r.shape == shape) {
            rows.push(vec![
                shape.to_owned(),
                r.codec.clone(),
                r.bytes.to_string(),
                format!("{:.0}", r.encode_decode_ns),
                base.map(|b| ratio(r.bytes as f64, b.bytes as f64))
                    .unwrap_or_default(),
                base.map(|b| ratio(r.encode_decode_ns, b.encode_decode_ns))
                    .unwrap_or_default(),
            ]);
        }
    }
    table(
        &[
            "shape",
            "codec",
            "bytes",
            "encode+decode ns",
            "bytes vs messagepack",
            "time vs messagepack",
        ],
        &rows,
    )
}

/// Section 4.
pub(crate) fn section(run: &Run, templates: &Templates) -> Result<String> {
    let table = run.codec.as_deref().map(codec_table);
    templates.render("codec.md", context! { table })
}
