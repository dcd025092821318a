//! Conformance suite: recorded usage shapes under tests/fixtures/usage with exact counts.

use super::*;
use crate::llm::sse::Decoder as SseDecoder;
use crate::tokens::Encoding;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/usage")
}

struct Run {
    usage: Usage,
    usage_only: usize,
    errored: bool,
    kept: Vec<u8>,
}

fn run(bytes: &[u8], cuts: &[usize], enc: Encoding, prompt: u64) -> Run {
    let mut dec = SseDecoder::default();
    let mut meter = StreamMeter::new();
    let mut usage_only = 0;
    let mut kept = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < bytes.len()).collect();
    bounds.sort_unstable();
    bounds.push(bytes.len());
    for end in bounds {
        let end = end.max(at);
        for ev in dec.push(&bytes[at..end]) {
            match meter.observe(&ev) {
                Verdict::Keep => kept.extend_from_slice(ev.raw()),
                Verdict::UsageOnly => usage_only += 1,
            }
        }
        at = end;
    }
    kept.extend(dec.finish().map(|e| e.raw().to_vec()).unwrap_or_default());
    Run {
        usage: meter.finish(|t| enc.count(t), || prompt),
        usage_only,
        errored: meter.errored(),
        kept,
    }
}

#[test]
fn recorded_streams_give_exact_counts_for_every_split() {
    let mut cases = 0;
    for entry in std::fs::read_dir(fixtures()).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("sse") {
            continue;
        }
        cases += 1;
        let bytes = std::fs::read(&path).expect("fixture");
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(path.with_extension("expected.json")).expect("expected file"),
        )
        .expect("expected json");
        let enc = match expected["encoding"].as_str() {
            Some("cl100k") => Encoding::Cl100k,
            _ => Encoding::O200k,
        };
        let prompt = expected["prompt_fallback"]
            .as_u64()
            .expect("prompt_fallback");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Unsplit, then every single split point, then three-way splits on a stride.
        let mut splits: Vec<Vec<usize>> = vec![vec![]];
        splits.extend((1..bytes.len()).map(|c| vec![c]));
        splits.extend((1..bytes.len()).step_by(7).map(|c| vec![c / 3, c, c + 5]));
        for cuts in splits {
            let r = run(&bytes, &cuts, enc, prompt);
            let u = r.usage;
            let got = serde_json::json!({
                "input": u.input, "cached_input": u.cached_input, "output": u.output,
                "reasoning": u.reasoning, "reported": u.reported,
                "usage_only_events": r.usage_only, "errored": r.errored,
            });
            for k in [
                "input",
                "cached_input",
                "output",
                "reasoning",
                "reported",
                "usage_only_events",
                "errored",
            ] {
                assert_eq!(got[k], expected[k], "{name} {k} (cuts {cuts:?}): {got}");
            }
            if r.usage_only == 0 {
                assert_eq!(r.kept, bytes, "{name}: nothing dropped, bytes unchanged");
            } else {
                let text = String::from_utf8(r.kept).unwrap();
                assert!(!text.contains("\"choices\":[],\"usage\""), "{name}");
                assert!(text.ends_with("data: [DONE]\n\n"), "{name}");
            }
        }
    }
    assert_eq!(cases, 7, "every recorded shape ran");
}

#[test]
fn json_bodies() {
    let read = |n: &str| std::fs::read(fixtures().join(n)).expect("fixture");
    assert_eq!(
        from_json(&read("openai_json.json")),
        Some(Usage {
            input: 13,
            cached_input: 0,
            output: 3,
            reasoning: 0,
            reported: true
        })
    );
    assert_eq!(
        from_json(&read("embeddings_json.json")),
        Some(Usage {
            input: 8,
            cached_input: 0,
            output: 0,
            reasoning: 0,
            reported: true
        })
    );
    let anthropic = br#"{"id":"msg","type":"message","usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":5}}"#;
    assert_eq!(
        from_json(anthropic),
        Some(Usage {
            input: 100,
            cached_input: 90,
            output: 5,
            reasoning: 0,
            reported: true
        })
    );
    assert_eq!(from_json(b"{\"error\":{}}"), None);
    assert_eq!(from_json(b"not json"), None);
}

#[test]
fn usage_null_chunks_are_kept() {
    let mut m = StreamMeter::new();
    let ev =
        crate::llm::sse::Event::data(r#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#);
    assert_eq!(m.observe(&ev), Verdict::Keep);
    assert!(!m.reported());
}

#[test]
fn the_response_model_is_read_from_recorded_streams_and_bodies() {
    let read = |n: &str| std::fs::read(fixtures().join(n)).expect("fixture");
    for (name, model) in [
        ("openai_stream_with_usage.sse", "gpt-4o-mini-2024-07-18"),
        (
            "openai_stream_cached_reasoning_tools.sse",
            "o4-mini-2025-04-16",
        ),
        ("anthropic_stream.sse", "claude-sonnet-4-20250514"),
    ] {
        let bytes = read(name);
        // Any split: the first event that names a model decides.
        for cut in [1, 7, bytes.len() / 2] {
            let mut dec = SseDecoder::default();
            let mut meter = StreamMeter::new();
            for ev in dec
                .push(&bytes[..cut])
                .into_iter()
                .chain(dec.push(&bytes[cut..]))
            {
                meter.observe(&ev);
            }
            assert_eq!(meter.model(), Some(model), "{name} cut at {cut}");
        }
    }
    assert_eq!(
        read_json(&read("openai_json.json")).1.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(read_json(b"not json"), (None, None));
}

#[test]
fn an_implausible_response_model_is_not_kept() {
    let long = "m".repeat(MAX_MODEL_LEN + 1);
    for bad in ["", "gpt\r\nx-injected: 1", "a\u{0}b", long.as_str()] {
        let body = serde_json::json!({"model": bad, "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
        let (usage, model) = read_json(body.to_string().as_bytes());
        assert!(usage.is_some(), "usage still read");
        assert_eq!(model, None, "{bad:?}");
        let sse = format!("data: {body}\n\n");
        let mut dec = SseDecoder::default();
        let mut meter = StreamMeter::new();
        for ev in dec.push(sse.as_bytes()) {
            meter.observe(&ev);
        }
        assert_eq!(meter.model(), None, "{bad:?}");
    }
    assert_eq!(
        plausible_model(&"m".repeat(MAX_MODEL_LEN)).map(|m| m.len()),
        Some(MAX_MODEL_LEN)
    );
}
