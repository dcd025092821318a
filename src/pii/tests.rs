use super::*;
use proptest::prelude::*;

const SAMPLE: &str = "Hi, I'm Kim (kim.minsu@example.com, 010-1234-5678). RRN 900101-1234568, card 4111 1111 1111 1111. Server 192.168.0.1, key sk-proj-abcdefghijklmnopqrstuvwx1234, password=hunter2hunter2 ok.";

#[test]
fn masks_every_builtin_kind_in_prose() {
    let m = builtin_masker(Action::Mask);
    let mut st = MaskState::default();
    let out = m.mask(SAMPLE, &mut st);
    assert_eq!(
        out,
        "Hi, I'm Kim ([EMAIL], [PHONE]). RRN [KR_RRN], card [CARD]. Server [IPV4], key [OPENAI_KEY], password=[SECRET_ASSIGNMENT] ok."
    );
    assert_eq!(st.total(), 7);
    assert!(!st.summary().contains("kim"));
}

#[test]
fn actions_render_as_documented() {
    let text = "card 4111-1111-1111-1111 mail a.b@example.com";
    let render = |a| {
        let mut st = MaskState::default();
        builtin_masker(a).mask(text, &mut st)
    };
    assert_eq!(
        render(Action::Partial),
        "card ****-****-****-1111 mail a.*@*******.***"
    );
    assert_eq!(render(Action::Redact), "card  mail ");
    assert_eq!(render(Action::Allow), text);
    let hashed = render(Action::Hash);
    assert!(
        hashed.starts_with("card [CARD:") && !hashed.contains("4111"),
        "{hashed}"
    );
    assert_eq!(hashed, render(Action::Hash), "stable");
    let mut st = MaskState::default();
    builtin_masker(Action::Block).mask(text, &mut st);
    assert_eq!(st.blocked.as_deref(), Some("card"));
}

#[test]
fn pseudonyms_are_numbered_per_value_and_restored() {
    let m = builtin_masker(Action::Pseudonymize);
    let mut st = MaskState::default();
    let out = m.mask("a@x.io b@x.io a@x.io 010-1234-5678", &mut st);
    assert_eq!(out, "<EMAIL_1> <EMAIL_2> <EMAIL_1> <PHONE_1>");
    let restore = masker(Vec::new(), Arc::from(&b"k"[..]), true);
    let back = restore.mask("Reply to <EMAIL_2> and <EMAIL_9>.", &mut st);
    assert_eq!(back, "Reply to b@x.io and <EMAIL_9>.");
}

fn maskers() -> &'static [(Action, Masker)] {
    static M: std::sync::OnceLock<Vec<(Action, Masker)>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        [Action::Mask, Action::Pseudonymize, Action::Partial]
            .into_iter()
            .map(|a| (a, builtin_masker(a)))
            .collect()
    })
}

fn stream_all(m: &Masker, st: &mut MaskState, pieces: &[&str]) -> (String, usize) {
    let mut sm = StreamMasker::default();
    let mut out = String::new();
    for p in pieces {
        out.push_str(&sm.push(m, st, p));
    }
    out.push_str(&sm.finish(m, st));
    (out, sm.max_held)
}

#[test]
fn masks_email_split_across_many_deltas() {
    let m = builtin_masker(Action::Mask);
    let text = "write to kim.minsu@example.com today";
    let pieces: Vec<String> = text
        .chars()
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| c.iter().collect())
        .collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let (out, _) = stream_all(&m, &mut MaskState::default(), &refs);
    assert_eq!(out, "write to [EMAIL] today");
}

#[test]
fn prose_is_released_a_word_behind() {
    let m = builtin_masker(Action::Mask);
    let mut sm = StreamMasker::default();
    let mut st = MaskState::default();
    assert_eq!(sm.push(&m, &mut st, "Hello there, how"), "Hello there, ");
    assert_eq!(sm.push(&m, &mut st, " are you"), "how are ");
    assert_eq!(sm.finish(&m, &mut st), "you");
}

fn pii_text() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "kim.minsu@example.com",
        "010-1234-5678",
        "+82 10 1234 5678",
        "900101-1234568",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
        "192.168.0.1",
        "2001:db8::1",
        "sk-proj-abcdefghijklmnopqrstuvwx1234",
        "AKIAIOSFODNN7EXAMPLE",
        "password=hunter2hunter2",
        "123-45-6789",
        "220-81-62517",
        "<EMAIL_1>",
        "hello",
        "world",
        " ",
        " ",
        ", ",
        ".",
        "\n",
        "안녕하세요",
        "2024-01-15",
        "v1.2.3",
        "12:30",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        "a",
        "1",
        "-",
        "@",
        "x.io",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.join(" "))
}

fn splits(text: &str, cuts: &[usize]) -> Vec<String> {
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    let mut idx: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
    idx.push(0);
    idx.push(text.len());
    idx.sort_unstable();
    idx.dedup();
    idx.windows(2)
        .map(|w| text[w[0]..w[1]].to_owned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn streamed_equals_whole_for_any_split(text in pii_text(), cuts in prop::collection::vec(any::<usize>(), 0..30)) {
        for (action, m) in maskers() {
            let action = *action;
            let mut whole_state = MaskState::default();
            let whole = m.mask(&text, &mut whole_state);
            let pieces = splits(&text, &cuts);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let mut st = MaskState::default();
            let (streamed, held) = stream_all(m, &mut st, &refs);
            prop_assert_eq!(&streamed, &whole);
            prop_assert_eq!(st.counts, whole_state.counts);
            prop_assert!(held <= StreamMasker::hold_bound(m));
            for raw in ["kim.minsu@example.com", "010-1234-5678", "900101-1234568", "4111 1111 1111 1111", "hunter2hunter2"] {
                if action != Action::Partial {
                    prop_assert!(!streamed.contains(raw), "{raw} in {streamed:?} from {pieces:?}");
                }
            }
        }
    }

    #[test]
    fn restore_round_trips_in_streams(text in pii_text(), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        let m = &maskers()[1].1;
        let mut st = MaskState::default();
        let masked = m.mask(&text, &mut st);
        let restore = masker(Vec::new(), Arc::from(&b"k"[..]), true);
        let pieces = splits(&masked, &cuts);
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (back, _) = stream_all(&restore, &mut st, &refs);
        // `<EMAIL_1>` typed by the user is a literal unless this request issued it.
        let whole_back = restore.mask(&masked, &mut st.clone());
        prop_assert_eq!(&back, &whole_back);
        if !text.contains('<') {
            prop_assert_eq!(back, text);
        }
    }

    #[test]
    fn masking_never_panics(text in ".{0,300}") {
        let m = &maskers()[0].1;
        let _ = m.mask(&text, &mut MaskState::default());
    }
}
