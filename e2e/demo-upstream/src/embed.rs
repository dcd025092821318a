//! Deterministic fake embeddings.
//!
//! Each input gets an 8-dimensional unit vector derived from a stable hash
//! of its text (FNV-1a + splitmix64, not std's hasher, whose output may
//! change between Rust releases), so tests can compare vectors across runs.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::reply::{approx_tokens, json_bytes, required_model};

pub const DIMS: usize = 8;

/// How the client asked for vectors. The official Python SDK asks for
/// `base64` unless the caller chose a format, so both must work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingRequest<'a> {
    pub model: &'a str,
    pub inputs: Vec<&'a str>,
    pub encoding: Encoding,
}

/// Reads an embeddings body: `model` string, `input` string or array of
/// strings, optional `encoding_format` (`float` or `base64`).
pub fn parse_embeddings(body: &Value) -> Result<EmbeddingRequest<'_>, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid_request("invalid_body", "The request body must be a JSON object.")
    })?;
    let model = required_model(obj)?;
    let bad_input = || {
        ApiError::invalid_request(
            "invalid_input",
            "'input' must be a string or an array of strings.",
        )
    };
    let inputs = match obj.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(bad_input))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad_input()),
    };
    let encoding = match obj.get("encoding_format") {
        None | Some(Value::Null) => Encoding::Float,
        Some(Value::String(s)) if s == "float" => Encoding::Float,
        Some(Value::String(s)) if s == "base64" => Encoding::Base64,
        Some(_) => {
            return Err(ApiError::invalid_request(
                "invalid_encoding_format",
                "'encoding_format' must be 'float' or 'base64'.",
            ));
        }
    };
    Ok(EmbeddingRequest {
        model,
        inputs,
        encoding,
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The demo vector for `text`: unit length, like OpenAI's embeddings.
pub fn embedding(text: &str) -> [f32; DIMS] {
    let mut state = fnv1a(text.as_bytes());
    let mut v = [0f32; DIMS];
    for x in &mut v {
        state = splitmix64(state);
        // Top 24 bits -> [-1, 1): exactly representable in an f32.
        *x = ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 (what OpenAI uses for `encoding_format=base64`).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Little-endian f32 bytes, base64-encoded, as OpenAI sends them.
pub fn base64_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float([f32; DIMS]),
    Base64(String),
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// The embeddings list body for a parsed request.
pub fn render_embeddings(req: &EmbeddingRequest<'_>) -> Bytes {
    let data = req
        .inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = embedding(text);
            let embedding = match req.encoding {
                Encoding::Float => Vector::Float(v),
                Encoding::Base64 => Vector::Base64(base64_vector(&v)),
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let prompt_tokens = req
        .inputs
        .iter()
        .map(|t| approx_tokens(t.chars().count()))
        .sum();
    json_bytes(&EmbeddingList {
        object: "list",
        data,
        model: req.model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_are_deterministic_unit_and_distinct() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("hello!"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(embedding("").iter().all(|x| x.is_finite()));
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(base64_vector(&[1.0]), "AACAPw==");
    }

    #[test]
    fn parse_string_and_array_inputs() {
        let body = json!({"model": "e", "input": "x"});
        let r = parse_embeddings(&body).unwrap();
        assert_eq!(r.inputs, ["x"]);
        assert_eq!(r.encoding, Encoding::Float);
        let body = json!({
            "model": "e", "input": ["a", "b"], "encoding_format": "base64"
        });
        let r = parse_embeddings(&body).unwrap();
        assert_eq!(r.inputs, ["a", "b"]);
        assert_eq!(r.encoding, Encoding::Base64);
        for bad in [
            json!({"model": "e"}),
            json!({"model": "e", "input": [1, 2]}),
            json!({"input": "x"}),
            json!({"model": "e", "input": "x", "encoding_format": "hex"}),
        ] {
            assert_eq!(
                parse_embeddings(&bad).unwrap_err().status.as_u16(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn rendered_list_shape() {
        let body = json!({"model": "emb", "input": ["hello", "안녕"]});
        let r = parse_embeddings(&body).unwrap();
        let v: Value = serde_json::from_slice(&render_embeddings(&r)).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "emb");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][0]["object"], "embedding");
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), DIMS);
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

        let body = json!({
            "model": "emb", "input": "hello", "encoding_format": "base64"
        });
        let r = parse_embeddings(&body).unwrap();
        let v: Value = serde_json::from_slice(&render_embeddings(&r)).unwrap();
        let b64 = v["data"][0]["embedding"].as_str().unwrap();
        assert_eq!(b64, base64_vector(&embedding("hello")));
        assert_eq!(b64.len(), (DIMS * 4).div_ceil(3) * 4);
    }
}
