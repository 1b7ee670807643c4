//! Micro-timings of the ops in one decode step (diagnostics for performance work).
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};

fn time<F: FnMut() -> Tensor<2>>(name: &str, mut f: F) {
    for _ in 0..3 {
        let _ = f().into_data();
    }
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let _ = f().into_data();
    }
    println!(
        "{name:40} {:8.1} µs",
        t.elapsed().as_secs_f64() / n as f64 * 1e6
    );
}

fn main() {
    let d = gfnlm_models::parse_device("flex").unwrap();
    let x = Tensor::<2>::random([8, 576], Distribution::Normal(0.0, 1.0), &d);
    let w = Tensor::<2>::random([576, 1536], Distribution::Normal(0.0, 1.0), &d);
    let w2 = Tensor::<2>::random([576, 576], Distribution::Normal(0.0, 1.0), &d);
    time("matmul [8,576]x[576,1536]", || x.clone().matmul(w.clone()));
    let wt = w.clone().transpose().into_data();
    let wt = Tensor::<2>::from_data(wt, &d); // [1536, 576] contiguous
    time("W[out,in] x xT [576,8] -> T", || {
        wt.clone().matmul(x.clone().transpose()).transpose()
    });
    time("x x W[out,in]^T (view)", || {
        x.clone().matmul(wt.clone().transpose())
    });
    let x64 = Tensor::<2>::random([64, 576], Distribution::Normal(0.0, 1.0), &d);
    time("matmul [64,576]x[576,1536]", || {
        x64.clone().matmul(w.clone())
    });
    let x1 = Tensor::<2>::random([1, 576], Distribution::Normal(0.0, 1.0), &d);
    time("matmul [1,576]x[576,1536]", || x1.clone().matmul(w.clone()));
    time("matmul [8,576]x[576,576]", || x.clone().matmul(w2.clone()));
    time("add [8,576]", || x.clone() + x.clone());
    time("silu*mul [8,1536]", || {
        let y = x.clone().matmul(w.clone());
        burn::tensor::activation::silu(y.clone()) * y
    });
    time("reshape+swap [8,576]->[8,9,1,64]->back", || {
        x.clone()
            .reshape([8, 1, 9, 64])
            .swap_dims(1, 2)
            .swap_dims(1, 2)
            .reshape([8, 576])
    });
    time("square mean_dim sqrt recip", || {
        x.clone()
            .square()
            .mean_dim(1)
            .add_scalar(1e-5)
            .sqrt()
            .recip()
    });
    let q = Tensor::<4>::random([8, 9, 1, 64], Distribution::Normal(0.0, 1.0), &d);
    let k = Tensor::<4>::random([8, 9, 30, 64], Distribution::Normal(0.0, 1.0), &d);
    time("attention q1 kv30", || {
        let o = burn::tensor::module::attention(
            q.clone(),
            k.clone(),
            k.clone(),
            None,
            None,
            burn::tensor::ops::AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            },
        );
        o.reshape([8, 576])
    });
    let k3 = Tensor::<4>::random([8, 3, 30, 64], Distribution::Normal(0.0, 1.0), &d);
    time("repeat_kv 3->9 (expand+reshape)", || {
        k3.clone()
            .unsqueeze_dim::<5>(2)
            .expand([8, 3, 3, 30, 64])
            .reshape([8, 9, 30 * 64])
            .reshape([72, 1920])
    });
    time("cat cache +1", || {
        Tensor::cat(
            vec![k3.clone(), k3.clone().slice([0..8, 0..3, 0..1, 0..64])],
            2,
        )
        .reshape([8, 3 * 31 * 64])
    });
}
