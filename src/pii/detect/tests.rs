use super::*;

fn found(entity: &str, text: &str) -> Vec<String> {
    let d = builtin(entity).expect("built-in");
    let mut out = Vec::new();
    d.find(text, 0, 0, &mut out);
    crate::pii::masker::resolve(&out)
        .into_iter()
        .map(|m| text[m.value].to_owned())
        .collect()
}

fn hits(entity: &str, text: &str, want: &str) {
    assert_eq!(
        found(entity, text),
        vec![want.to_owned()],
        "{entity} in {text:?}"
    );
}

fn misses(entity: &str, text: &str) {
    assert!(
        found(entity, text).is_empty(),
        "{entity} must not match {text:?}: {:?}",
        found(entity, text)
    );
}

#[test]
fn every_builtin_compiles_bounded() {
    for e in BUILTIN {
        let d = builtin(e).unwrap_or_else(|| panic!("{e} does not build"));
        assert!(d.max_len > 0 && d.max_len <= 16_384, "{e}: {}", d.max_len);
    }
}

#[test]
fn email() {
    hits(
        "email",
        "mail me at jane.doe+x@example.co.kr, thanks",
        "jane.doe+x@example.co.kr",
    );
    hits("email", "연락: kim@naver.com입니다", "kim@naver.com");
    misses("email", "user@localhost");
    misses("email", "version 1.2.3@beta");
    misses("email", "@handle on social");
}

#[test]
fn phone() {
    hits("phone", "call 010-1234-5678 now", "010-1234-5678");
    hits("phone", "전화 01012345678로", "01012345678");
    hits("phone", "Seoul office 02-123-4567.", "02-123-4567");
    hits("phone", "intl +82 10 1234 5678 ok", "+82 10 1234 5678");
    hits("phone", "busan 051.234.5678", "051.234.5678");
    hits("phone", "고객센터 1588-1234", "1588-1234");
    hits("phone", "US +1 415 555 2671", "+1 415 555 2671");
    hits("phone", "(415) 555-2671", "(415) 555-2671");
    misses("phone", "released 2024-01-15 10:30:00");
    misses("phone", "version 10.12.3");
    misses("phone", "order 123456");
}

#[test]
fn korean_registration_numbers() {
    hits("kr_rrn", "주민번호 900101-1234568 입니다", "900101-1234568");
    hits("kr_rrn", "no hyphen 9001011234568.", "9001011234568");
    hits(
        "kr_rrn",
        "post-2020 random tail 211231-3847261",
        "211231-3847261",
    );
    misses("kr_rrn", "invalid month 901301-1234567");
    misses("kr_rrn", "invalid day 900230-1234567");
    misses("kr_rrn", "foreigner 900101-5234567");
    hits("kr_frn", "foreigner 900101-5234567", "900101-5234567");
    misses("kr_rrn", "longer 900101-12345678");
}

#[test]
fn business_number() {
    hits("kr_brn", "사업자 220-81-62517", "220-81-62517");
    misses("kr_brn", "bad checksum 220-81-62518");
}

#[test]
fn ssn() {
    hits("us_ssn", "SSN 123-45-6789.", "123-45-6789");
    misses("us_ssn", "000-12-3456");
    misses("us_ssn", "example 078-05-1120");
    misses("us_ssn", "date 2024-01-15");
}

#[test]
fn cards() {
    hits(
        "card",
        "card 4111 1111 1111 1111 exp",
        "4111 1111 1111 1111",
    );
    hits("card", "mc 2223-0031-2200-3222", "2223-0031-2200-3222");
    hits("card", "amex 378282246310005", "378282246310005");
    hits("card", "visa19 4000000000000000006", "4000000000000000006");
    misses("card", "bad luhn 4111 1111 1111 1112");
    misses("card", "order number 1234567812345670");
    misses("card", "timestamp 1700000000000");
}

#[test]
fn iban() {
    hits(
        "iban",
        "pay to GB82 WEST 1234 5698 7654 32 today",
        "GB82 WEST 1234 5698 7654 32",
    );
    hits("iban", "DE89370400440532013000", "DE89370400440532013000");
    misses("iban", "GB82 WEST 1234 5698 7654 33");
}

#[test]
fn ips() {
    hits("ipv4", "host 192.168.10.1:8080", "192.168.10.1");
    misses("ipv4", "version 1.2.3");
    misses("ipv4", "999.1.1.1");
    hits(
        "ipv6",
        "addr 2001:db8::8a2e:370:7334 up",
        "2001:db8::8a2e:370:7334",
    );
    hits("ipv6", "mapped ::ffff:192.0.2.1", "::ffff:192.0.2.1");
    misses("ipv6", "at 12:30:45 today");
    misses("ipv6", "ratio 3:2");
}

#[test]
fn secrets() {
    hits(
        "openai_key",
        "key sk-proj-abcdefghijklmnopqrstuvwx1234 end",
        "sk-proj-abcdefghijklmnopqrstuvwx1234",
    );
    hits(
        "anthropic_key",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
    );
    hits(
        "aws_access_key",
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLE",
    );
    misses("aws_access_key", "AKIAIOSFODNN7EXAMPL");
    hits(
        "github_token",
        "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
        "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
    );
    hits(
        "slack_token",
        "xoxb-1234567890-abcdefghij",
        "xoxb-1234567890-abcdefghij",
    );
    hits(
        "google_api_key",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    );
    let jwt =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    hits("jwt", &format!("token {jwt} here"), jwt);
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n0abc+/=\n-----END RSA PRIVATE KEY-----";
    hits("private_key", &format!("x\n{pem}\ny"), pem);
    misses(
        "private_key",
        "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----",
    );
    hits(
        "secret_assignment",
        "DB_PASSWORD=hunter2hunter2",
        "hunter2hunter2",
    );
    hits(
        "secret_assignment",
        "config: api_key: \"abcd1234efgh\"",
        "abcd1234efgh",
    );
    misses("secret_assignment", "the password is short");
    misses("secret_assignment", "password=abc");
}

#[test]
fn keys_ending_in_a_dash_are_found_whole() {
    // '-' is in the key alphabets but is not a word character, so a trailing `\b` used to
    // miss a Google key ending in it and cut the '-' off OpenAI/Anthropic keys.
    let google = "AIzaSyA1234567890abcdefghijklmnopqrstu-";
    hits("google_api_key", &format!("key {google} end"), google);
    hits("google_api_key", &format!("({google})"), google);
    let openai = "sk-proj-abcdefghijklmnopqrstuvwx12-";
    hits("openai_key", &format!("key {openai} end"), openai);
    let anthropic = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0-";
    hits("anthropic_key", &format!("{anthropic}."), anthropic);
    // Still bounded on the left and by length, and not a prefix of a longer word.
    misses("google_api_key", "AIzaSyA1234567890abcdefghijklmnopqrstuvw");
    misses("google_api_key", "xAIzaSyA1234567890abcdefghijklmnopqrstu-");
    misses("openai_key", "sk-abcdefghijklmnopqr-");
    misses("openai_key", "risk-abcdefghijklmnopqrstuvwxyz");
}

#[test]
fn custom_detectors_must_be_bounded() {
    assert_eq!(
        Detector::custom("x", "ORD-[0-9]+", None).unwrap_err(),
        DetectorError::Unbounded
    );
    assert_eq!(
        Detector::custom("x", "a?", None).unwrap_err(),
        DetectorError::Empty
    );
    assert!(matches!(
        Detector::custom("x", "(", None),
        Err(DetectorError::Regex(_))
    ));
    let d = Detector::custom("order", "ORD-[0-9]{8}", None).expect("bounded");
    assert_eq!(d.max_len, 12);
    assert!(d.allows(b'O') && d.allows(b'7') && !d.allows(b' '));
}

#[test]
fn set_prefilter_finds_the_same_as_each_detector() {
    let dets: Vec<Arc<Detector>> = BUILTIN
        .iter()
        .filter_map(|e| builtin(e))
        .map(Arc::new)
        .collect();
    let set = DetectorSet::new(dets.clone());
    let text = "mail a@b.io, call 010-1234-5678, card 4111111111111111, ip 10.0.0.1";
    let mut each = Vec::new();
    for (i, d) in dets.iter().enumerate() {
        d.find(text, 0, i, &mut each);
    }
    each.sort_by_key(|m| (m.full.start, m.full.end));
    assert_eq!(set.find(text, 0), each);
}
