//! Output-head helpers shared by every architecture.

use burn::tensor::Tensor;

use crate::precision::cast_to;

/// `[batch, seq, d]` → `[batch, d]` at the last position.
pub(crate) fn last_position(h: Tensor<3>) -> Tensor<2> {
    let [b, t, d] = h.dims();
    h.slice([0..b, t - 1..t, 0..d]).reshape([b, d])
}

/// Tied head: `logitsᵀ = E · hᵀ`, keeping the `[vocab, hidden]` table in its stored layout.
pub(crate) fn tied_logits<const D: usize>(embed: Tensor<2>, hidden: Tensor<D>) -> Tensor<D> {
    let dims = hidden.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let h2: Tensor<2> = hidden.reshape([rows, dims[D - 1]]);
    let vocab = embed.dims()[0];
    // In the table's dtype (mixed precision, `crate::precision`), returned in the hidden dtype.
    let h_dtype = h2.dtype();
    let h2 = cast_to(h2, embed.dtype());
    let logits = cast_to(embed.matmul(h2.transpose()).transpose(), h_dtype);
    let mut out = dims;
    out[D - 1] = vocab;
    logits.reshape(out)
}
