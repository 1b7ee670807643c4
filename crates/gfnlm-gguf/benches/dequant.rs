//! Dequantisation throughput per format (1M elements).
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gfnlm_gguf::{GgmlType, dequantize};

fn bench(c: &mut Criterion) {
    let n = 1 << 20;
    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Elements(n as u64));
    for ty in [
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let bytes = n / ty.block_size() * ty.type_size();
        // pseudo-random blocks; f16 scales are overwritten below to stay finite
        let mut src: Vec<u8> = (0..bytes)
            .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
            .collect();
        if ty != GgmlType::F16 {
            for blk in src.chunks_exact_mut(ty.type_size()) {
                blk[0] = 0;
                blk[1] = 0x20;
            }
        }
        let mut dst = vec![0.0f32; n];
        g.bench_function(ty.name(), |b| {
            b.iter(|| dequantize(ty, &src, &mut dst).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
