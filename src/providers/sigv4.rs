//! AWS Signature Version 4 request signing, as a pure function (time and credentials are
//! inputs; no I/O).
//!
//! What it signs: method, the URI path as it goes on the wire (segments already
//! percent-encoded; AWS services other than S3 sign the path encoded once more, so
//! `v1%3A0` is signed as `v1%253A0`), the query string (pairs sorted), the given headers
//! plus `host`, `x-amz-date`, and — when asked — `x-amz-content-sha256` and the session
//! token, and the SHA-256 of the payload.
//! Verified against AWS's published SigV4 test-suite vectors (AKIDEXAMPLE) in the tests.
//! Known limit: the query string is signed as given (tollgate's callers send none or
//! already-encoded ones); header values are trimmed and inner whitespace runs collapsed.

use crate::secret::Secret;
use ring::hmac;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// AWS credentials. `Debug` never shows the secret parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id (not secret, appears in the `Authorization` header).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token for temporary credentials.
    pub session_token: Option<Secret>,
}

/// What to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Host the upstream sees (`:authority`).
    pub host: &'a str,
    /// Path as sent on the wire (percent-encoded segments), without the query.
    pub path: &'a str,
    /// Query string without `?` (may be empty).
    pub query: &'a str,
    /// Other headers to sign (lower-case names).
    pub headers: &'a [(&'a str, &'a str)],
    /// Request body.
    pub payload: &'a [u8],
}

/// Where and as what to sign.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// e.g. `bedrock`.
    pub service: &'a str,
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// Signing time.
    pub now: SystemTime,
    /// Add and sign `x-amz-content-sha256` (Bedrock accepts it; the test suite has none).
    pub content_sha256_header: bool,
}

/// The headers to add to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `(name, value)` pairs, lower-case names: `x-amz-date`, optionally
    /// `x-amz-content-sha256` and `x-amz-security-token`, and `authorization`.
    pub headers: Vec<(String, String)>,
    /// The canonical request (for tests and debugging; contains no secret).
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
}

/// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
pub fn amz_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Percent-encodes per RFC 3986 unreserved set (`A-Za-z0-9-_.~`), keeping `/` when asked.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b'/' && keep_slash {
            out.push('/');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], msg: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes())
        .as_ref()
        .to_vec()
}

fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs `req` for `scope` with `creds`.
pub fn sign(req: &Request<'_>, scope: &Scope<'_>, creds: &Credentials) -> Signed {
    let date = amz_date(scope.now);
    let payload_hash = hex(&Sha256::digest(req.payload));
    let mut added: Vec<(String, String)> = vec![("x-amz-date".into(), date.clone())];
    if scope.content_sha256_header {
        added.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    }
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".into(), token.expose().to_owned()));
    }
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), canonical_value(v)))
        .filter(|(k, _)| k != "host" && !added.iter().any(|(a, _)| a == k))
        .collect();
    headers.push(("host".into(), canonical_value(req.host)));
    headers.extend(added.iter().cloned());
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut pairs: Vec<(&str, &str)> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let path = if req.path.is_empty() { "/" } else { req.path };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        uri_encode(path, true),
        query,
        canonical_headers,
        signed_headers,
        payload_hash
    );
    let day = &date[..8];
    let credential_scope = format!("{day}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{credential_scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac_sha256(
        format!("AWS4{}", creds.secret_access_key.expose()).as_bytes(),
        day,
    );
    let k_region = hmac_sha256(&k_date, scope.region);
    let k_service = hmac_sha256(&k_region, scope.service);
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    let signature = hex(&hmac_sha256(&k_signing, &string_to_sign));
    let mut out = added;
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    Signed {
        headers: out,
        canonical_request,
        string_to_sign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // AWS SigV4 test suite: 2015-08-30T12:36:00Z, us-east-1, service "service".
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn suite_creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    fn suite_scope() -> Scope<'static> {
        Scope {
            service: "service",
            region: "us-east-1",
            now: suite_time(),
            content_sha256_header: false,
        }
    }

    fn auth(s: &Signed) -> &str {
        &s.headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
    }

    #[test]
    fn amz_date_formats_utc() {
        assert_eq!(amz_date(suite_time()), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29 (leap day) 23:59:59
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "20240229T235959Z"
        );
    }

    #[test]
    fn get_vanilla() {
        let s = sign(
            &Request {
                method: "GET",
                host: "example.amazonaws.com",
                path: "/",
                query: "",
                headers: &[],
                payload: b"",
            },
            &suite_scope(),
            &suite_creds(None),
        );
        assert_eq!(
            s.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            auth(&s),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_vanilla() {
        let s = sign(
            &Request {
                method: "POST",
                host: "example.amazonaws.com",
                path: "/",
                query: "",
                headers: &[],
                payload: b"",
            },
            &suite_scope(),
            &suite_creds(None),
        );
        assert_eq!(
            auth(&s),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn get_vanilla_query_order() {
        let s = sign(
            &Request {
                method: "GET",
                host: "example.amazonaws.com",
                path: "/",
                query: "Param2=value2&Param1=value1",
                headers: &[],
                payload: b"",
            },
            &suite_scope(),
            &suite_creds(None),
        );
        assert_eq!(
            auth(&s),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let s = sign(
            &Request {
                method: "POST",
                host: "example.amazonaws.com",
                path: "/",
                query: "",
                headers: &[("content-type", "application/x-www-form-urlencoded")],
                payload: b"Param1=value1",
            },
            &suite_scope(),
            &suite_creds(None),
        );
        assert_eq!(
            auth(&s),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn session_token_is_signed_and_sent_and_never_printed() {
        let s = sign(
            &Request {
                method: "POST",
                host: "bedrock-runtime.us-east-1.amazonaws.com",
                path: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                query: "",
                headers: &[("content-type", "application/json")],
                payload: b"{}",
            },
            &Scope {
                service: "bedrock",
                region: "us-east-1",
                now: suite_time(),
                content_sha256_header: true,
            },
            &suite_creds(Some("SESSIONTOKEN")),
        );
        assert!(
            s.headers
                .contains(&("x-amz-security-token".into(), "SESSIONTOKEN".into()))
        );
        assert!(auth(&s).contains(
            "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        ));
        // Non-S3 services sign the already-encoded path encoded once more.
        assert!(
            s.canonical_request
                .contains("/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n")
        );
        let creds = suite_creds(Some("SESSIONTOKEN"));
        assert!(!format!("{creds:?}").contains("wJalr"));
        assert!(!format!("{creds:?}").contains("SESSIONTOKEN"));
    }
}
