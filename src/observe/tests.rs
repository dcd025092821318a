//! The GenAI series as the production sink records them (moved from `metrics`, which no
//! longer knows the record type).

use super::*;

#[test]
fn genai_series_appear_only_with_their_data() {
    let m = Arc::new(Metrics::new());
    Observer::new(m.clone(), None, None).finished(sample_record());
    let text = m.render();
    assert!(text.contains(
        r#"gen_ai_server_request_duration_seconds_count{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini"} 1"#
    ), "{text}");
    for absent in [
        "gen_ai_client_token_usage_count",
        "gen_ai_server_time_to_first_token_seconds_count",
        "gen_ai_server_time_per_output_token_seconds_count",
        "tollgate_cost_usd_total{",
        "tollgate_guard_detections_total{",
        "tollgate_request_errors_total{",
    ] {
        assert!(!text.contains(absent), "{absent} without data:\n{text}");
    }
    assert!(text.contains(r#"tollgate_telemetry_spans_dropped_total{reason="queue_full"} 0"#));
}

#[test]
fn tokens_cost_and_errors_are_recorded_when_known() {
    let m = Arc::new(Metrics::new());
    let mut r = sample_record();
    r.usage = Some(Usage {
        input_tokens: 100,
        output_tokens: 11,
    });
    r.time_to_first_token = Some(Duration::from_millis(234));
    r.cost_usd = Some(0.25);
    r.guard = Some(GuardSummary {
        detections: vec![("email".into(), 2)],
        masked: 2,
        blocked: false,
    });
    r.status = Some(502);
    Observer::new(m.clone(), None, None).finished(r);
    let text = m.render();
    for want in [
        r#"gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_token_type="input"} 100"#,
        r#"gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_token_type="output"} 11"#,
        r#"gen_ai_server_time_to_first_token_seconds_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini"} 0.234"#,
        // (1234 ms - 234 ms) / (11 - 1) tokens
        r#"gen_ai_server_time_per_output_token_seconds_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini"} 0.1"#,
        r#"tollgate_request_errors_total{backend="alpha",error_type="502"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
}
