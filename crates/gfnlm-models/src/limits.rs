//! Limits on sizes read from files and command lines, checked before anything is allocated.
//!
//! Hyper-parameters of a checkpoint (`config.json` or GGUF metadata) are bounded well above
//! any published model, so that a corrupt or hostile value gives an error naming the key
//! instead of an allocation of terabytes or an arithmetic overflow; layer counts are further
//! checked against the number of tensors the file holds ([`check_layer_count`]). Sequence
//! lengths are checked against the model's context ([`check_context`]). docs/reliability.md
//! lists every limit.

/// Largest vocabulary accepted (2²⁴ ≈ 16.8 M ids).
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest hidden, MLP or per-head width accepted (2²⁰ ≈ 1 M).
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest number of attention heads accepted.
pub const MAX_HEADS: usize = 1 << 16;
/// Largest number of layers accepted (before the check against the file's tensors).
pub const MAX_LAYERS: usize = 1 << 16;
/// Largest context length accepted (2²⁶ ≈ 67 M positions).
pub const MAX_POSITIONS: usize = 1 << 26;

/// Appends a message for every `(key, value, limit)` whose value is 0 or above its limit.
pub fn check_sizes(sizes: &[(&str, usize, usize)], problems: &mut Vec<String>) {
    for &(key, v, limit) in sizes {
        if v == 0 {
            problems.push(format!("{key} must be > 0"));
        } else if v > limit {
            problems.push(format!(
                "{key} = {v} is above gfnlm's limit of {limit} (a corrupt config?)"
            ));
        }
    }
}

/// Refuses `layers` layers (of `per_layer` tensors each, plus `fixed` others) that a
/// checkpoint holding `tensors_in_file` tensors cannot come close to holding — more layers
/// than tensors — before any per-layer list is built. Whatever passes keeps every per-layer
/// list within `per_layer` × the file's own tensor count; a smaller shortfall is left to the
/// tensor check, which names each missing tensor.
pub fn check_layer_count(
    key: &str,
    layers: usize,
    per_layer: usize,
    fixed: usize,
    tensors_in_file: usize,
) -> Result<(), String> {
    if layers <= tensors_in_file {
        return Ok(());
    }
    let needed = layers
        .checked_mul(per_layer)
        .and_then(|n| n.checked_add(fixed));
    Err(format!(
        "{key} = {layers} needs at least {} tensors ({per_layer} per layer), but the checkpoint \
         holds only {tensors_in_file}; is the config from this checkpoint?",
        needed.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
    ))
}

/// A sequence that does not fit the model's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError {
    /// Prompt tokens.
    pub prompt: usize,
    /// Tokens to decode (or score) after the prompt.
    pub new_tokens: usize,
    /// The model's context length.
    pub max_positions: usize,
    /// What to lower, e.g. `--max-tokens` or `[task] max_len`.
    pub what: String,
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the prompt ({} tokens) plus up to {} new tokens needs {} positions, but the model \
             reads at most {} (its context length); shorten the prompt or lower {}",
            self.prompt,
            self.new_tokens,
            self.prompt.saturating_add(self.new_tokens),
            self.max_positions,
            self.what
        )
    }
}

impl std::error::Error for ContextError {}

/// Checks `prompt + new_tokens ≤ max_positions` (every decode path feeds at most that many
/// positions). `what` names the flag or key that sets `new_tokens`.
pub fn check_context(
    prompt: usize,
    new_tokens: usize,
    max_positions: usize,
    what: &str,
) -> Result<(), ContextError> {
    match prompt.checked_add(new_tokens) {
        Some(n) if n <= max_positions => Ok(()),
        _ => Err(ContextError {
            prompt,
            new_tokens,
            max_positions,
            what: what.to_string(),
        }),
    }
}

/// The first `max` items joined by ", ", then "… and N more".
pub fn bounded_list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" … and {} more", items.len() - max));
    }
    s
}

/// The first non-finite value of `data` as `(index, value)`.
pub fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    data.iter()
        .position(|v| !v.is_finite())
        .map(|i| (i, data[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_zero_and_absurd_are_named() {
        let mut p = Vec::new();
        check_sizes(&[("a", 0, 10), ("b", 11, 10), ("c", 10, 10)], &mut p);
        assert_eq!(p.len(), 2);
        assert!(
            p[0].contains("a must be > 0") && p[1].contains("b = 11"),
            "{p:?}"
        );
    }

    #[test]
    fn layer_count_is_checked_against_the_file_without_overflow() {
        assert!(check_layer_count("n_layer", 2, 9, 3, 21).is_ok());
        // A small shortfall is left to the tensor check (it names the missing tensors).
        assert!(check_layer_count("n_layer", 3, 9, 3, 21).is_ok());
        let e = check_layer_count("n_layer", 1_000_000_000, 9, 3, 21).unwrap_err();
        assert!(
            e.contains("n_layer = 1000000000") && e.contains("holds only 21"),
            "{e}"
        );
        let e = check_layer_count("num_hidden_layers", usize::MAX, 9, 3, 21).unwrap_err();
        assert!(e.contains("more than 2^64"), "{e}");
    }

    #[test]
    fn context_check_names_the_flag_and_does_not_overflow() {
        assert!(check_context(3, 5, 8, "--max-tokens").is_ok());
        let e = check_context(3, 6, 8, "--max-tokens")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("9 positions") && e.contains("--max-tokens"),
            "{e}"
        );
        assert!(check_context(usize::MAX, 1, 8, "x").is_err());
    }

    #[test]
    fn lists_are_bounded() {
        let items: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let s = bounded_list(&items, 10);
        assert!(s.ends_with("t9 … and 90 more"), "{s}");
        assert_eq!(bounded_list(&items[..2], 10), "t0, t1");
        assert_eq!(first_non_finite(&[1.0, f32::NAN]).map(|x| x.0), Some(1));
    }
}
