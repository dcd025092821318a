use super::*;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

fn key_json() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gemini/TEST-ONLY-service-account.json"
    ))
    .unwrap()
}

fn b64json(s: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
}

#[test]
fn assertion_is_an_rs256_jwt_the_public_key_verifies() {
    let sa = ServiceAccount::from_json(&key_json()).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let jwt = assertion(&sa, CLOUD_PLATFORM_SCOPE, now).unwrap();
    let parts: Vec<&str> = jwt.expose().split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(
        b64json(parts[0]),
        json!({"alg": "RS256", "typ": "JWT", "kid": "test-key-1"})
    );
    assert_eq!(
        b64json(parts[1]),
        json!({"iss": "tollgate-test@tollgate-test.iam.gserviceaccount.com",
               "scope": CLOUD_PLATFORM_SCOPE, "aud": "http://127.0.0.1:9/token",
               "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
    );
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, sa.key.public().as_ref());
    let signed = format!("{}.{}", parts[0], parts[1]);
    public.verify(signed.as_bytes(), &sig).unwrap();
    let mut tampered = signed.into_bytes();
    tampered[5] ^= 1;
    assert!(public.verify(&tampered, &sig).is_err());
}

#[test]
fn bad_keys_are_named_and_the_key_is_never_printed() {
    assert!(matches!(
        ServiceAccount::from_json(b"{}"),
        Err(TokenError::BadKey(_))
    ));
    assert!(matches!(
        ServiceAccount::from_json(br#"{"type":"service_account","private_key":"nope","client_email":"a"}"#),
        Err(TokenError::BadKey(m)) if m.contains("PEM") || m.contains("PKCS#8")
    ));
    let sa = ServiceAccount::from_json(&key_json()).unwrap();
    let shown = format!("{sa:?}");
    assert!(!shown.contains("BEGIN"), "{shown}");
    let jwt = assertion(&sa, "s", UNIX_EPOCH).unwrap();
    assert_eq!(format!("{jwt:?}"), "Secret(***)");
}

#[test]
fn token_responses_and_refresh_timing() {
    let (t, ttl) = parse_token_response(
        200,
        br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
    )
    .unwrap();
    assert_eq!(t.expose(), "ya29.x");
    assert_eq!(ttl, Duration::from_secs(3599));
    let e = parse_token_response(
        400,
        br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "token endpoint: HTTP 400: Invalid JWT Signature."
    );
    assert!(parse_token_response(200, b"{}").is_err());
    let t0 = UNIX_EPOCH + Duration::from_secs(1000);
    assert_eq!(
        refresh_at(t0, Duration::from_secs(3600)),
        t0 + Duration::from_secs(3300)
    );
    assert_eq!(
        refresh_at(t0, Duration::from_secs(120)),
        t0 + Duration::from_secs(60)
    );
}

#[test]
fn slot_answers_without_waiting_and_expires() {
    let sa = ServiceAccount::from_json(&key_json()).unwrap();
    let slot = TokenSlot::new(sa, CLOUD_PLATFORM_SCOPE);
    let t0 = UNIX_EPOCH + Duration::from_secs(1000);
    let e = slot.current(t0).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("no Google access token yet for tollgate-test@"),
        "{e}"
    );
    slot.store(Secret::new("tok"), t0, Duration::from_secs(3600));
    assert_eq!(
        slot.current(t0 + Duration::from_secs(100))
            .unwrap()
            .expose(),
        "tok"
    );
    assert!(
        slot.current(t0 + Duration::from_secs(3595)).is_err(),
        "expiring within 10 s counts as gone"
    );
}

#[test]
fn registry_shares_a_slot_across_reloads_until_dropped() {
    let sa = ServiceAccount::from_json(&key_json()).unwrap();
    let a = slot_for(sa.clone(), "scope-registry-test");
    a.store(
        Secret::new("kept"),
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    let b = slot_for(
        ServiceAccount::from_json(&key_json()).unwrap(),
        "scope-registry-test",
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(b.current(SystemTime::now()).unwrap().expose(), "kept");
    let other_scope = slot_for(sa.clone(), "another-scope");
    assert!(!Arc::ptr_eq(&a, &other_scope));
    drop((a, b));
    let c = slot_for(sa, "scope-registry-test");
    assert!(
        c.current(SystemTime::now()).is_err(),
        "a dropped slot is not resurrected"
    );
}

#[tokio::test]
async fn refresh_task_fetches_from_the_token_uri_and_reports_failures() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for answer in [
            (
                400,
                r#"{"error":"invalid_grant","error_description":"bad"}"#,
            ),
            (200, r#"{"access_token":"ya29.fresh","expires_in":3600}"#),
        ] {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        bodies.push(body.to_owned());
                        break;
                    }
                }
            }
            let resp = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                answer.0,
                answer.1.len(),
                answer.1
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        }
        bodies
    });
    let mut v: Value = serde_json::from_slice(&key_json()).unwrap();
    v["token_uri"] = json!(format!("http://127.0.0.1:{port}/token"));
    let sa = ServiceAccount::from_json(v.to_string().as_bytes()).unwrap();
    let slot = Arc::new(TokenSlot::new(sa, CLOUD_PLATFORM_SCOPE));
    let task = tokio::spawn(TokenSlot::run(Arc::downgrade(&slot), HttpClient::new()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut saw_error = false;
    loop {
        match slot.current(SystemTime::now()) {
            Ok(t) => {
                assert_eq!(t.expose(), "ya29.fresh");
                break;
            }
            Err(e) => saw_error |= e.to_string().contains("HTTP 400: bad"),
        }
        assert!(std::time::Instant::now() < deadline, "no token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_error, "the first failure was visible while waiting");
    let bodies = server.await.unwrap();
    assert!(bodies[1].starts_with(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"
    ));
    drop(slot);
    task.abort();
}
