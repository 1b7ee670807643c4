//! f64 values in `state.json` as their IEEE-754 bit patterns, so a resumed run continues from
//! exactly the numbers it saved: serde_json's default float parser may be off by one unit in the
//! last place (its exact parser, the `float_roundtrip` feature, would rebuild every dependent).
//! Reading also accepts plain JSON floats, the format of checkpoints written before.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

fn from_number<E: serde::de::Error>(n: &serde_json::Number) -> Result<f64, E> {
    match (n.as_u64(), n.as_f64()) {
        // A bit pattern (written by `serialize`): a JSON integer.
        (Some(bits), _) => Ok(f64::from_bits(bits)),
        // An older checkpoint's float (written with a fraction or exponent, or negative).
        (None, Some(x)) => Ok(x),
        _ => Err(E::custom(format!("not an f64: {n}"))),
    }
}

/// One `f64` (`#[serde(with = "crate::exact_f64")]`).
pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(x.to_bits())
}

/// Reads what [`serialize`] wrote, or a plain float.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    from_number(&serde_json::Number::deserialize(d)?)
}

/// `Vec<f64>` (`#[serde(with = "crate::exact_f64::vec")]`).
pub mod vec {
    use super::*;

    /// Writes each value's bit pattern.
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_bits()))
    }

    /// Reads bit patterns or plain floats.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<serde_json::Number>::deserialize(d)?
            .iter()
            .map(from_number)
            .collect::<Result<_, D::Error>>()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        #[serde(with = "crate::exact_f64")]
        one: f64,
        #[serde(with = "crate::exact_f64::vec")]
        many: Vec<f64>,
    }

    proptest! {
        /// Every finite or infinite f64 (and NaN's bits) survives a JSON round trip bit for bit.
        #[test]
        fn bits_round_trip(one in any::<f64>(), many in proptest::collection::vec(any::<f64>(), 0..20)) {
            let s = S { one, many };
            let back: S = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(back.one.to_bits(), s.one.to_bits());
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&back.many), bits(&s.many));
        }
    }

    #[test]
    fn older_checkpoints_with_plain_floats_still_load() {
        let s: S = serde_json::from_str(r#"{"one": -20.0, "many": [8.0, -1.5e-3, 0.1]}"#).unwrap();
        assert_eq!(s.one, -20.0);
        assert_eq!(s.many, vec![8.0, -1.5e-3, 0.1]);
        assert!(serde_json::from_str::<S>(r#"{"one": "x", "many": []}"#).is_err());
    }
}
