//! Mutators: generic byte edits, and structured edits that keep a file parseable enough to get
//! past the first check (JSON and TOML value replacement, safetensors header edits, GGUF
//! integer fields set to boundary values).

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;

/// Largest input a mutation may produce (bytes); longer results are truncated.
pub const MAX_INPUT: usize = 16 << 20;

/// Integer values at the edges of every width a reader might use.
pub const BOUNDARY: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    10,
    12,
    14,
    16,
    31,
    255,
    65_535,
    1 << 31,
    (1 << 31) + 1,
    u32::MAX as u64,
    1 << 32,
    (1 << 32) + 1,
    1 << 53,
    1 << 62,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// Raw JSON/TOML literals that no serialiser would write, spliced in as text.
const RAW_NUMBERS: &[&str] = &[
    "NaN",
    "nan",
    "-nan",
    "Infinity",
    "-Infinity",
    "inf",
    "-inf",
    "1e999",
    "-1e999",
    "1e-400",
    "-0",
    "0.0",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "2147483648",
    "4000000000",
    "1e9",
    "1e30",
    "007",
    "0x10",
    "1_000",
];

/// Placeholder string replaced by a [`RAW_NUMBERS`] literal after serialisation.
const RAW: &str = "@@GFNLM_FUZZ_RAW@@";

/// Applies one byte-level mutation: bit flips, a boundary integer, truncation, removal,
/// duplication, insertion, or a splice from `donor` (another seed of the same target).
pub fn bytes(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let len = data.len();
    let pos = |rng: &mut ChaCha8Rng| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        }
    };
    let chunk = |rng: &mut ChaCha8Rng, max: usize| rng.random_range(1..=max.clamp(1, 4096));
    match rng.random_range(0..9) {
        0 if len > 0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = pos(rng);
                data[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 if len > 0 => {
            let i = pos(rng);
            data[i] = *[
                0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'[', b'\\', b'\n', b'0', b'-',
            ]
            .choose(rng)
            .expect("non-empty");
        }
        2 => data.truncate(pos(rng)),
        3 if len > 0 => {
            let (i, n) = (pos(rng), chunk(rng, len / 4));
            data.drain(i..(i + n).min(len));
        }
        4 if len > 0 => {
            let (i, n) = (pos(rng), chunk(rng, len / 4));
            let copy = data[i..(i + n).min(len)].to_vec();
            let at = pos(rng);
            for _ in 0..rng.random_range(1..=4) {
                data.splice(at..at, copy.iter().copied());
            }
        }
        5 if !donor.is_empty() => {
            let (i, n) = (rng.random_range(0..donor.len()), chunk(rng, donor.len()));
            let piece = &donor[i..(i + n).min(donor.len())];
            let at = pos(rng);
            if rng.random_bool(0.5) {
                data.splice(at..at, piece.iter().copied());
            } else {
                let end = (at + piece.len()).min(len);
                data.splice(at..end, piece.iter().copied());
            }
        }
        6 => {
            let at = pos(rng);
            let n = chunk(rng, 64);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(at..at, junk);
        }
        7 if len > 0 => {
            // A boundary integer somewhere in the first 4 KiB, where headers live.
            let at = rng.random_range(0..len.min(4096));
            let width = if rng.random_bool(0.5) { 4 } else { 8 };
            int_at(rng, data, at, width);
        }
        _ => {
            let i = pos(rng);
            data.insert(i.min(len), rng.random());
        }
    }
    data.truncate(MAX_INPUT);
}

/// Overwrites `width` bytes at `at` with a little-endian boundary value.
pub fn int_at(rng: &mut ChaCha8Rng, data: &mut [u8], at: usize, width: usize) {
    let v = *BOUNDARY.choose(rng).expect("non-empty");
    let v = if rng.random_bool(0.1) {
        v.wrapping_neg()
    } else {
        v
    };
    let le = v.to_le_bytes();
    let end = (at + width).min(data.len());
    if at < end {
        data[at..end].copy_from_slice(&le[..end - at]);
    }
}

/// A value that no sane file holds: boundary and non-finite numbers, huge or odd strings,
/// the wrong type, or a deeply nested array.
fn absurd_json(rng: &mut ChaCha8Rng) -> Json {
    match rng.random_range(0..10) {
        0 => Json::from(*BOUNDARY.choose(rng).expect("non-empty")),
        1 => Json::from(-(rng.random_range(1..=1i64 << 40))),
        2 => Json::from(
            *[1e308, -1e308, 0.5, -0.0, 1e-300, 3.4e38]
                .choose(rng)
                .expect("x"),
        ),
        3 => Json::String(RAW.into()),
        4 => Json::String("A".repeat(*[0, 1, 10_000, 1 << 20].choose(rng).expect("x"))),
        5 => Json::String(
            ["\u{0}", "\u{feff}", "ü\u{202e}", "../../etc", "*"]
                .choose(rng)
                .expect("x")
                .to_string(),
        ),
        6 => [
            Json::Null,
            Json::Bool(true),
            Json::Array(vec![]),
            Json::Object(Default::default()),
        ]
        .choose(rng)
        .expect("x")
        .clone(),
        7 => Json::Array(vec![Json::from(1); rng.random_range(2..10_000)]),
        8 => (0..rng.random_range(10..3000)).fold(Json::from(0), |v, _| Json::Array(vec![v])),
        _ => Json::from(rng.random::<i32>()),
    }
}

/// Every node of a JSON tree, as a path of object keys and array indices.
fn json_paths(v: &Json, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(path.clone());
    match v {
        Json::Object(m) => m.iter().for_each(|(k, c)| {
            path.push(Step::Key(k.clone()));
            json_paths(c, path, out);
            path.pop();
        }),
        Json::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
            path.push(Step::Index(i));
            json_paths(c, path, out);
            path.pop();
        }),
        _ => {}
    }
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn json_at<'a>(v: &'a mut Json, path: &[Step]) -> &'a mut Json {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

/// Applies one structured edit to a JSON document (replace a value with an absurd one, delete
/// or duplicate an entry, copy one node over another), or a byte edit when it does not parse.
pub fn json(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let Ok(mut doc) = serde_json::from_slice::<Json>(data) else {
        return bytes(rng, data, donor);
    };
    let mut paths = Vec::new();
    json_paths(&doc, &mut Vec::new(), &mut paths);
    let path = paths.choose(rng).expect("the root is a path").clone();
    match rng.random_range(0..6) {
        0..=2 => *json_at(&mut doc, &path) = absurd_json(rng),
        3 => {
            let (Some(last), parent) = (path.last(), &path[..path.len().saturating_sub(1)]) else {
                return bytes(rng, data, donor);
            };
            match (json_at(&mut doc, parent), last) {
                (Json::Object(m), Step::Key(k)) => {
                    m.remove(k);
                }
                (Json::Array(a), Step::Index(i)) => {
                    a.remove(*i);
                }
                _ => {}
            }
        }
        4 => {
            let other = paths.choose(rng).expect("non-empty");
            let v = json_at(&mut doc, other).clone();
            *json_at(&mut doc, &path) = v;
        }
        _ => {
            let n = rng.random_range(2..2000);
            let node = json_at(&mut doc, &path);
            if let Json::Array(a) = node {
                if let Some(first) = a.first().cloned() {
                    a.extend(std::iter::repeat_n(first, n));
                }
            } else if let Json::Object(m) = node {
                m.insert(format!("unknown_{n}"), absurd_json(rng));
            }
        }
    }
    let text = serde_json::to_string(&doc).expect("a Value serialises");
    *data = splice_raw(rng, text).into_bytes();
    data.truncate(MAX_INPUT);
}

fn splice_raw(rng: &mut ChaCha8Rng, text: String) -> String {
    let raw = RAW_NUMBERS.choose(rng).expect("non-empty");
    text.replace(&format!("\"{RAW}\""), raw)
        .replace(&format!("'{RAW}'"), raw)
}

fn absurd_toml(rng: &mut ChaCha8Rng) -> toml::Value {
    use toml::Value as T;
    match rng.random_range(0..8) {
        0 => T::Integer(
            *[
                0,
                1,
                -1,
                2,
                1 << 31,
                1 << 32,
                i64::MAX,
                i64::MIN,
                1_000_000_000,
            ]
            .choose(rng)
            .expect("x"),
        ),
        1 => T::Float(
            *[
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e308,
                -1e308,
                -0.0,
                1e-308,
                1e30,
                -1.0,
            ]
            .choose(rng)
            .expect("x"),
        ),
        2 => T::String(RAW.into()),
        3 => T::String("A".repeat(*[0, 1, 10_000, 1 << 20].choose(rng).expect("x"))),
        4 => T::String(
            ["\u{0}", "nonsense", "../../", "*", "q_proj|"]
                .choose(rng)
                .expect("x")
                .to_string(),
        ),
        5 => T::Boolean(rng.random()),
        6 => T::Array(vec![T::Integer(1); rng.random_range(0..5000)]),
        _ => T::Table(Default::default()),
    }
}

/// Applies one structured edit to a TOML document (replace a value with an absurd one, delete
/// a key, add an unknown one), or a byte edit when it does not parse or re-serialise.
pub fn toml(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let Some(mut doc) = std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse::<toml::Table>().ok())
    else {
        return bytes(rng, data, donor);
    };
    // The key to edit: top level, or inside a top-level table.
    let section: Vec<String> = doc
        .iter()
        .filter(|(_, v)| v.is_table())
        .map(|(k, _)| k.clone())
        .collect();
    let table = match section.choose(rng) {
        Some(s) if rng.random_bool(0.5) => doc
            .get_mut(s)
            .and_then(toml::Value::as_table_mut)
            .expect("a table"),
        _ => &mut doc,
    };
    let keys: Vec<String> = table.keys().cloned().collect();
    match (rng.random_range(0..5), keys.choose(rng)) {
        (0, Some(k)) => {
            table.remove(k);
        }
        (1, _) => {
            table.insert(format!("unknown_{}", rng.random::<u16>()), absurd_toml(rng));
        }
        (_, k) => {
            let k = k.cloned().unwrap_or_else(|| "name".into());
            table.insert(k, absurd_toml(rng));
        }
    }
    match toml::to_string(&doc) {
        Ok(text) => *data = splice_raw(rng, text).into_bytes(),
        Err(_) => bytes(rng, data, donor),
    }
    data.truncate(MAX_INPUT);
}

/// Edits a safetensors file: its JSON header (shapes, dtypes, offsets), its 8-byte header
/// length, or bytes biased towards the header.
pub fn safetensors(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let header_len = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .filter(|&n| n <= data.len() - 8);
    match (rng.random_range(0..4), header_len) {
        (0 | 1, Some(n)) => {
            let mut header = data[8..8 + n].to_vec();
            json(rng, &mut header, &[]);
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend(&header);
            out.extend(&data[8 + n..]);
            *data = out;
        }
        (2, _) if data.len() >= 8 => int_at(rng, data, 0, 8),
        (_, Some(n)) if n > 0 => {
            // A byte edit inside the header, keeping the rest intact.
            let mut header = data[8..8 + n].to_vec();
            bytes(rng, &mut header, donor);
            let keep_len = rng.random_bool(0.5);
            let mut out = if keep_len {
                data[..8].to_vec()
            } else {
                (header.len() as u64).to_le_bytes().to_vec()
            };
            out.extend(&header);
            out.extend(&data[8 + n..]);
            *data = out;
        }
        _ => bytes(rng, data, donor),
    }
    data.truncate(MAX_INPUT);
}

/// Sets one integer field of a GGUF file (version, counts, string and array lengths, value
/// types, tensor ranks, dimensions, types and offsets, integer metadata) to a boundary value;
/// falls back to a byte edit.
pub fn gguf(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let fields = gguf_int_fields(data);
    match fields.choose(rng) {
        Some(&(at, width)) if rng.random_bool(0.7) => int_at(rng, data, at, width),
        _ => bytes(rng, data, donor),
    }
}

/// Offsets and widths of the integer fields of a GGUF v2/v3 header, as far as it parses.
pub fn gguf_int_fields(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(4, 4), (8, 8), (16, 8)];
    let rd = |at: usize, w: usize| -> Option<u64> {
        let s = b.get(at..at + w)?;
        let mut le = [0u8; 8];
        le[..w].copy_from_slice(s);
        Some(u64::from_le_bytes(le))
    };
    let (Some(n_tensors), Some(n_kv)) = (rd(8, 8), rd(16, 8)) else {
        return out;
    };
    let mut at = 24usize;
    // Returns the offset after a string, recording its length field.
    let string = |at: usize, out: &mut Vec<(usize, usize)>| -> Option<usize> {
        out.push((at, 8));
        at.checked_add(8)?.checked_add(rd(at, 8)? as usize)
    };
    fn scalar_width(ty: u64) -> Option<usize> {
        Some(match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => return None,
        })
    }
    let value = |ty: u64, at: usize, out: &mut Vec<(usize, usize)>| -> Option<usize> {
        match ty {
            8 => string(at, out),
            9 => {
                let (elem, n) = (rd(at, 4)?, rd(at + 4, 8)?);
                out.extend([(at, 4), (at + 4, 8)]);
                let mut p = at + 12;
                if elem != 8 {
                    return p.checked_add(scalar_width(elem)?.checked_mul(n as usize)?);
                }
                for i in 0..n {
                    // Record the first lengths only; walk past the rest.
                    p = if i < 64 {
                        string(p, out)?
                    } else {
                        p.checked_add(8)?.checked_add(rd(p, 8)? as usize)?
                    };
                }
                Some(p)
            }
            t => {
                let w = scalar_width(t)?;
                if t != 6 && t != 12 && t != 7 {
                    out.push((at, w));
                }
                Some(at + w)
            }
        }
    };
    for _ in 0..n_kv.min(1 << 16) {
        let Some(p) = string(at, &mut out) else {
            return out;
        };
        let Some(ty) = rd(p, 4) else { return out };
        out.push((p, 4));
        let Some(p) = value(ty, p + 4, &mut out) else {
            return out;
        };
        at = p;
    }
    for _ in 0..n_tensors.min(1 << 16) {
        let Some(p) = string(at, &mut out) else {
            return out;
        };
        let Some(rank) = rd(p, 4) else { return out };
        out.push((p, 4));
        let dims = p + 4;
        out.extend((0..rank.min(8) as usize).map(|i| (dims + 8 * i, 8)));
        let ty = dims + 8 * rank.min(8) as usize;
        out.extend([(ty, 4), (ty + 4, 8)]);
        at = ty + 12;
    }
    out.retain(|&(at, w)| at + w <= b.len());
    out
}
