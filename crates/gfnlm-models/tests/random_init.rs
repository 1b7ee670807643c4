//! Seeded random init draws exactly the weights the former hand-written `init_random` of each
//! architecture drew: the one constructor asks for its tensors in the same order.
//!
//! One test in its own binary: burn's generator is shared, and another test drawing at the
//! same time would change the numbers.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use common::{gpt2, gptj, llama};

fn device() -> Device {
    gfnlm_models::parse_device("flex").unwrap()
}

/// FNV-1a over the bits of every float parameter, in module order, and their count.
fn fingerprint<M: Module>(m: &M) -> (u64, usize) {
    struct Fnv(u64, usize);
    impl ModuleVisitor for Fnv {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v: Vec<f32> = p.val().into_data().convert::<f32>().try_into_vec().unwrap();
            for x in v {
                for b in x.to_bits().to_le_bytes() {
                    self.0 = (self.0 ^ b as u64).wrapping_mul(0x100000001b3);
                }
                self.1 += 1;
            }
        }
    }
    let mut f = Fnv(0xcbf29ce484222325, 0);
    m.visit(&mut f);
    (f.0, f.1)
}

#[test]
fn seeded_random_init_is_unchanged() {
    // Values printed by the hand-written `init_random` of each architecture before the
    // refactor (same seed, same configs, same order of calls).
    let device = device();
    device.seed(5);
    assert_eq!(
        fingerprint(&llama(true, 2).init_random(&device)),
        (6665614011776954560, 1184)
    );
    assert_eq!(
        fingerprint(&llama(false, 2).init_random(&device)),
        (17553465184969295678, 1368)
    );
    assert_eq!(
        fingerprint(&gpt2(2).init_random(&device)),
        (12455083430912596924, 1976)
    );
    assert_eq!(
        fingerprint(&gptj(2).init_random(&device)),
        (16382470062916316316, 1851)
    );
}
