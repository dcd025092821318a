use super::*;
use crate::observe::{GuardSummary, Usage, sample_record};
use std::sync::mpsc;

#[test]
fn line_has_ids_routing_status_and_latency() {
    let r = sample_record();
    let v = line(&r);
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(v["span_id"], r.trace.span_id.to_string());
    assert_eq!(v["operation"], "chat");
    assert_eq!(v["requested_model"], "gpt-4o-mini");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["upstream_model"], "demo-small-2025");
    assert_eq!(v["backend"], "alpha");
    assert_eq!(v["provider"], "openai");
    assert_eq!(v["rule"], "catalogue");
    assert_eq!(v["status"], 200);
    assert_eq!(v["latency_ms"], 1234.0);
    assert_eq!(v["ts"], "2026-05-28T20:26:40.000Z");
    // Unknown today: absent, not zero or null.
    for k in [
        "tokens", "cost_usd", "consumer", "team", "guard", "error", "ttft_ms", "payload",
    ] {
        assert!(v.get(k).is_none(), "{k} should be absent: {v}");
    }
}

#[test]
fn line_shows_later_stages_fields_when_known() {
    let mut r = sample_record();
    r.usage = Some(Usage {
        input_tokens: 10,
        output_tokens: 5,
    });
    r.cost_usd = Some(0.5);
    r.consumer = Some("svc-a".into());
    r.team = Some("search".into());
    r.guard = Some(GuardSummary {
        detections: vec![("email".into(), 2)],
        masked: 2,
        blocked: false,
    });
    r.time_to_first_token = Some(Duration::from_micros(81_500));
    r.status = None;
    r.error_code = None;
    let v = line(&r);
    assert_eq!(v["tokens"], json!({"input": 10, "output": 5, "total": 15}));
    assert_eq!(v["cost_usd"], 0.5);
    assert_eq!(v["consumer"], "svc-a");
    assert_eq!(v["team"], "search");
    assert_eq!(
        v["guard"],
        json!({"detections": {"email": 2}, "masked": 2, "blocked": false})
    );
    assert_eq!(v["ttft_ms"], 81.5);
    assert_eq!(v["status"], Value::Null);
    assert_eq!(v["error"], "aborted");
}

use std::time::Duration;

#[test]
fn full_queue_drops_instead_of_blocking() {
    let (tx, rx) = mpsc::sync_channel(1);
    let log = AuditLog { tx };
    assert!(log.submit(&sample_record()));
    assert!(
        !log.submit(&sample_record()),
        "second line exceeds the bound"
    );
    drop(rx);
    assert!(!log.submit(&sample_record()), "a stopped writer drops too");
}

#[test]
fn file_output_rotates_by_size_and_keeps_max_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut same_length = sample_record();
    same_length.request_id = "req-00".into();
    let one = line(&same_length).to_string().len() as u64 + 1;
    let settings = AuditSettings {
        output: AuditOutput::File(path.clone()),
        max_size: one * 3,
        max_files: 2,
        queue_size: 64,
        include_payload: false,
    };
    let metrics = Arc::new(Metrics::new());
    let (log, writer) = AuditLog::start(&settings, metrics.clone()).expect("start");
    for i in 0..10 {
        let mut r = sample_record();
        r.request_id = format!("req-{i:02}");
        assert!(log.submit(&r));
    }
    drop(log);
    writer.join();
    let read = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .expect("file")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("every line is JSON");
                v["request_id"].as_str().expect("id").to_owned()
            })
            .collect()
    };
    let current = read(&path);
    let r1 = read(&dir.path().join("audit.jsonl.1"));
    let r2 = read(&dir.path().join("audit.jsonl.2"));
    assert!(
        !dir.path().join("audit.jsonl.3").exists(),
        "only max_files kept"
    );
    assert_eq!(current, ["req-09"]);
    assert_eq!(r1, ["req-06", "req-07", "req-08"]);
    assert_eq!(r2, ["req-03", "req-04", "req-05"]);
    assert!(
        !metrics
            .render()
            .contains("tollgate_audit_lines_dropped_total 1")
    );
}

#[test]
fn unwritable_path_fails_at_start() {
    let settings = AuditSettings {
        output: AuditOutput::File("/nonexistent-dir/audit.jsonl".into()),
        max_size: 1 << 20,
        max_files: 1,
        queue_size: 8,
        include_payload: false,
    };
    let err = AuditLog::start(&settings, Arc::new(Metrics::new()))
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("/nonexistent-dir/audit.jsonl"),
        "{err}"
    );
}
