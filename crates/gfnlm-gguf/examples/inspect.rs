//! Prints a GGUF file's metadata and tensor table, then times dequantising every tensor.
//!
//! `cargo run --release -p gfnlm-gguf --example inspect -- model.gguf`

use std::collections::BTreeMap;
use std::time::Instant;

use gfnlm_gguf::{GgufFile, MetadataValue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: inspect <file.gguf>")?;
    let t0 = Instant::now();
    let file = GgufFile::open(&path)?;
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "{path}: GGUF v{}, {} metadata entries, {} tensors, opened in {open_ms:.1} ms",
        file.version(),
        file.metadata().len(),
        file.tensors().len()
    );
    for (k, v) in file.metadata() {
        let shown = match v {
            MetadataValue::Array(a) => format!("[{} x {}]", a.len(), a.elem_type_name()),
            MetadataValue::String(s) if s.len() > 60 => {
                format!("{:?}...", &s[..s.floor_char_boundary(60)])
            }
            other => format!("{other:?}"),
        };
        println!("  {k} = {shown}");
    }
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let e = by_type.entry(t.ty().to_string()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes();
    }
    for (ty, (n, bytes)) in &by_type {
        println!(
            "  {n:4} tensors {ty:6} {:8.1} MiB",
            *bytes as f64 / (1 << 20) as f64
        );
    }
    let t0 = Instant::now();
    let mut elements = 0u64;
    for t in file.tensors() {
        elements += file.dequantize(t.name())?.data.len() as u64;
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "dequantised {elements} values in {s:.3} s ({:.0} M values/s)",
        elements as f64 / s / 1e6
    );
    Ok(())
}
