//! Forward + backward of modified SubTB on flex (autodiff), at the batch shapes of training.

use burn::tensor::{Device, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use gfnlm_objectives::{TrajectoryBatch, modified_subtb};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn random(rng: &mut StdRng, b: usize, t: usize, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..b * t).map(|_| rng.random_range(-5.0..0.0)).collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(7);
    for (b, t) in [(64usize, 32usize), (8, 64)] {
        let pf = random(&mut rng, b, t, &device);
        let pterm = random(&mut rng, b, t + 1, &device);
        let r = random(&mut rng, b, t + 1, &device);
        let lengths: Vec<usize> = (0..b).map(|_| rng.random_range(1..=t)).collect();
        c.bench_function(&format!("modified_subtb fwd+bwd B={b} T={t}"), |bench| {
            bench.iter(|| {
                let (pf, pterm, r) = (
                    pf.clone().require_grad(),
                    pterm.clone().require_grad(),
                    r.clone().require_grad(),
                );
                let batch = TrajectoryBatch::new(pf.clone(), pterm, r, lengths.clone()).unwrap();
                let grads = modified_subtb(&batch, 1.0).unwrap().backward();
                // Read one gradient back so the work is done, as a trainer would.
                pf.grad(&grads).unwrap().into_data()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
