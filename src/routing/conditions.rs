//! Rule conditions beyond model and headers: path, caller, prompt heuristics, locality.
//!
//! Pure: a [`Conditions`] is checked against [`Signals`] (plain values the routing stage
//! read from the request) and either holds or names the first condition that failed
//! ([`Miss`], printable for `tollgate route` and logs). Conditions are ANDed; an unset
//! condition always holds. Checks run cheapest first (flags, then globs, then the regex).
//!
//! Known limits: the prompt-token figure is an estimate (characters / 4 of the message
//! text), not a tokenizer count — good enough for a "long context" threshold, not for
//! billing; keyword matching is case-insensitive substring matching on the last user
//! message only.

use crate::glob::Glob;
use regex::Regex;
use std::fmt;

/// What a rule can look at besides model and headers (all read before any rewrite).
#[derive(Debug, Clone, Default)]
pub struct Signals<'a> {
    /// Request path without the query.
    pub path: &'a str,
    /// Consumer name, when the caller is identified.
    pub consumer: Option<&'a str>,
    /// Team name, when the caller has one.
    pub team: Option<&'a str>,
    /// Estimated prompt tokens ([`estimate_tokens`]).
    pub prompt_tokens: u64,
    /// Text of the last user message.
    pub last_user_text: Option<&'a str>,
    /// The request declares tools (or legacy functions).
    pub tools: bool,
    /// Some message carries an image part.
    pub images: bool,
    /// `stream: true`.
    pub stream: bool,
    /// PII entities detected in the request text (`None`: detection did not run).
    pub pii: Option<&'a [String]>,
    /// The client's `x-tollgate-profile` hint.
    pub profile: Option<&'a str>,
}

/// Header a client may send to hint at the kind of work (a hint: the client chooses it, so
/// never use it to grant anything; tollgate strips it before the request goes upstream).
pub const PROFILE_HEADER: &str = "x-tollgate-profile";

/// The profile hints tollgate knows.
pub const PROFILES: &[&str] = &["general", "reasoning", "longform", "background"];

/// Estimated tokens of `chars` characters of text (about four per token for English).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// A prompt-size condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBound {
    /// More than this many estimated tokens.
    Above(u64),
    /// Fewer than this many estimated tokens.
    Below(u64),
}

/// A match on the last user message: any keyword or the regex.
#[derive(Debug, Clone)]
pub struct TextMatch {
    /// Lower-cased keywords (substring match on the lower-cased text).
    pub keywords: Vec<String>,
    /// A regular expression (`regex` crate syntax: linear time, no backreferences).
    pub regex: Option<Regex>,
}

impl TextMatch {
    /// The first keyword or the regex match found in `text`.
    fn find(&self, text: &str) -> Option<String> {
        if !self.keywords.is_empty() {
            let lower = text.to_lowercase();
            if let Some(k) = self.keywords.iter().find(|k| lower.contains(k.as_str())) {
                return Some(format!("keyword {k:?}"));
            }
        }
        let re = self.regex.as_ref()?;
        re.is_match(text)
            .then(|| format!("regex /{}/", re.as_str()))
    }
}

/// Extra conditions of a rule (model and header conditions live on the rule itself).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Profile hints (any may match), see [`PROFILE_HEADER`].
    pub profiles: Vec<String>,
    /// Path globs (any may match).
    pub paths: Vec<Glob>,
    /// Consumer name globs (any may match); requires an identified caller.
    pub consumers: Vec<Glob>,
    /// Team name globs (any may match); requires a caller with a team.
    pub teams: Vec<Glob>,
    /// Estimated prompt size.
    pub prompt_tokens: Option<TokenBound>,
    /// Keyword or regex on the last user message.
    pub last_user_message: Option<TextMatch>,
    /// Tools declared (`true`) or not (`false`).
    pub tools: Option<bool>,
    /// Image parts present (`true`) or not (`false`).
    pub images: Option<bool>,
    /// `stream` flag.
    pub stream: Option<bool>,
    /// PII detected (`true`) or not (`false`) in the request text.
    pub pii: Option<bool>,
}

/// The first condition a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// The model is not one of the rule's.
    Model(Option<String>),
    /// A header is missing or has another value.
    Header(String),
    /// The path is not one of the rule's.
    Path,
    /// The consumer is not one of the rule's (or unknown).
    Consumer,
    /// The team is not one of the rule's (or none).
    Team,
    /// The prompt is not long/short enough.
    Tokens {
        /// The estimate.
        estimate: u64,
        /// The rule's bound.
        bound: TokenBound,
    },
    /// Neither keyword nor regex found.
    LastUserMessage,
    /// Tools presence differs.
    Tools(bool),
    /// Image presence differs.
    Images(bool),
    /// Stream flag differs.
    Stream(bool),
    /// PII presence differs.
    Pii(bool),
    /// The profile hint is absent or another one.
    Profile(Option<String>),
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: &bool| if *b { "present" } else { "absent" };
        match self {
            Miss::Model(None) => write!(f, "the request names no model"),
            Miss::Model(Some(m)) => write!(f, "model {m:?} matches none of the rule's models"),
            Miss::Header(h) => write!(f, "header {h} is missing or does not match"),
            Miss::Path => write!(f, "path does not match"),
            Miss::Consumer => write!(f, "consumer does not match"),
            Miss::Team => write!(f, "team does not match"),
            Miss::Tokens {
                estimate,
                bound: TokenBound::Above(n),
            } => write!(f, "estimated prompt tokens {estimate} not above {n}"),
            Miss::Tokens {
                estimate,
                bound: TokenBound::Below(n),
            } => write!(f, "estimated prompt tokens {estimate} not below {n}"),
            Miss::LastUserMessage => write!(f, "last user message matches no keyword or regex"),
            Miss::Tools(b) => write!(f, "tools {}", yes(b)),
            Miss::Images(b) => write!(f, "images {}", yes(b)),
            Miss::Stream(b) => write!(f, "stream is {b}"),
            Miss::Pii(b) => write!(f, "PII {}", if *b { "detected" } else { "not detected" }),
            Miss::Profile(None) => write!(f, "no {PROFILE_HEADER} hint"),
            Miss::Profile(Some(p)) => write!(f, "profile hint {p:?} is not one of the rule's"),
        }
    }
}

impl Conditions {
    /// Whether no condition is set (the rule matches every request).
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
            && self.paths.is_empty()
            && self.consumers.is_empty()
            && self.teams.is_empty()
            && self.prompt_tokens.is_none()
            && self.last_user_message.is_none()
            && self.tools.is_none()
            && self.images.is_none()
            && self.stream.is_none()
            && self.pii.is_none()
    }

    /// Whether any condition needs the body's features (tools, images, size, text).
    pub fn needs_features(&self) -> bool {
        self.prompt_tokens.is_some()
            || self.tools.is_some()
            || self.images.is_some()
            || self.pii.is_some()
    }

    /// Whether every condition holds; on success, the notable facts that made it hold
    /// (for the explanation), e.g. `["keyword \"prove\"", "PII detected (email)"]`.
    pub fn check(&self, s: &Signals<'_>) -> Result<Vec<String>, Miss> {
        let mut why = Vec::new();
        for (want, have, miss, name) in [
            (
                self.stream,
                s.stream,
                Miss::Stream as fn(bool) -> Miss,
                "stream",
            ),
            (self.tools, s.tools, Miss::Tools, "tools"),
            (self.images, s.images, Miss::Images, "images"),
        ] {
            flag(want, have, miss)?;
            if let Some(w) = want {
                why.push(format!("{name} {}", if w { "present" } else { "absent" }));
            }
        }
        if !self.profiles.is_empty() {
            match s.profile {
                Some(p) if self.profiles.iter().any(|x| x == p) => {
                    why.push(format!("profile hint {p}"));
                }
                other => return Err(Miss::Profile(other.map(str::to_owned))),
            }
        }
        if !self.paths.is_empty() {
            if !self.paths.iter().any(|g| g.matches(s.path)) {
                return Err(Miss::Path);
            }
            why.push(format!("path {}", s.path));
        }
        if !self.consumers.is_empty() {
            if !s
                .consumer
                .is_some_and(|c| self.consumers.iter().any(|g| g.matches(c)))
            {
                return Err(Miss::Consumer);
            }
            why.push(format!("consumer {}", s.consumer.unwrap_or_default()));
        }
        if !self.teams.is_empty() {
            if !s
                .team
                .is_some_and(|t| self.teams.iter().any(|g| g.matches(t)))
            {
                return Err(Miss::Team);
            }
            why.push(format!("team {}", s.team.unwrap_or_default()));
        }
        if let Some(bound) = self.prompt_tokens {
            let ok = match bound {
                TokenBound::Above(n) => s.prompt_tokens > n,
                TokenBound::Below(n) => s.prompt_tokens < n,
            };
            if !ok {
                return Err(Miss::Tokens {
                    estimate: s.prompt_tokens,
                    bound,
                });
            }
            why.push(format!("estimated prompt tokens {}", s.prompt_tokens));
        }
        if let Some(want) = self.pii {
            let found = s.pii.unwrap_or_default();
            if found.is_empty() == want {
                return Err(Miss::Pii(!found.is_empty()));
            }
            if want {
                why.push(format!("PII detected ({})", found.join(", ")));
            }
        }
        if let Some(m) = &self.last_user_message {
            match s.last_user_text.and_then(|t| m.find(t)) {
                Some(hit) => why.push(format!("last user message: {hit}")),
                None => return Err(Miss::LastUserMessage),
            }
        }
        Ok(why)
    }
}

fn flag(want: Option<bool>, have: bool, miss: fn(bool) -> Miss) -> Result<(), Miss> {
    match want {
        Some(w) if w != have => Err(miss(have)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signals<'static> {
        Signals {
            path: "/v1/chat/completions",
            ..Signals::default()
        }
    }

    #[test]
    fn empty_conditions_hold() {
        assert_eq!(Conditions::default().check(&sig()), Ok(vec![]));
    }

    #[test]
    fn token_thresholds_are_strict() {
        let c = Conditions {
            prompt_tokens: Some(TokenBound::Above(100)),
            ..Default::default()
        };
        let mut s = sig();
        s.prompt_tokens = 100;
        assert!(matches!(
            c.check(&s),
            Err(Miss::Tokens { estimate: 100, .. })
        ));
        s.prompt_tokens = 101;
        assert!(c.check(&s).is_ok());
        let c = Conditions {
            prompt_tokens: Some(TokenBound::Below(10)),
            ..Default::default()
        };
        s.prompt_tokens = 9;
        assert!(c.check(&s).is_ok());
        s.prompt_tokens = 10;
        assert!(c.check(&s).is_err());
        assert_eq!(estimate_tokens(9), 3);
    }

    #[test]
    fn keywords_are_case_insensitive_and_regex_is_an_alternative() {
        let c = Conditions {
            last_user_message: Some(TextMatch {
                keywords: vec!["step by step".into()],
                regex: Some(Regex::new(r"\bprove\b").unwrap()),
            }),
            ..Default::default()
        };
        let mut s = sig();
        s.last_user_text = Some("Think Step By Step please");
        assert_eq!(
            c.check(&s).unwrap(),
            vec!["last user message: keyword \"step by step\""]
        );
        s.last_user_text = Some("prove that 2 is prime");
        assert_eq!(
            c.check(&s).unwrap(),
            vec!["last user message: regex /\\bprove\\b/"]
        );
        s.last_user_text = Some("improve my essay");
        assert_eq!(c.check(&s), Err(Miss::LastUserMessage));
        s.last_user_text = None;
        assert_eq!(c.check(&s), Err(Miss::LastUserMessage));
    }

    #[test]
    fn flags_must_equal() {
        let c = Conditions {
            tools: Some(true),
            images: Some(false),
            stream: Some(true),
            ..Default::default()
        };
        let mut s = sig();
        s.stream = true;
        assert_eq!(c.check(&s), Err(Miss::Tools(false)));
        s.tools = true;
        assert_eq!(
            c.check(&s).unwrap(),
            vec!["stream present", "tools present", "images absent"]
        );
        s.images = true;
        assert_eq!(c.check(&s), Err(Miss::Images(true)));
        s.images = false;
        s.stream = false;
        assert_eq!(c.check(&s), Err(Miss::Stream(false)));
    }

    #[test]
    fn caller_globs_need_an_identity() {
        let c = Conditions {
            consumers: vec![Glob::new("svc-*")],
            teams: vec![Glob::new("research")],
            ..Default::default()
        };
        let mut s = sig();
        assert_eq!(c.check(&s), Err(Miss::Consumer));
        s.consumer = Some("svc-batch");
        assert_eq!(c.check(&s), Err(Miss::Team));
        s.team = Some("research");
        assert_eq!(
            c.check(&s).unwrap(),
            vec!["consumer svc-batch", "team research"]
        );
    }

    #[test]
    fn pii_condition_needs_detection_results() {
        let c = Conditions {
            pii: Some(true),
            ..Default::default()
        };
        let mut s = sig();
        assert_eq!(c.check(&s), Err(Miss::Pii(false)));
        let found = vec!["email".to_owned()];
        s.pii = Some(&found);
        assert_eq!(c.check(&s).unwrap(), vec!["PII detected (email)"]);
        let c = Conditions {
            pii: Some(false),
            ..Default::default()
        };
        assert_eq!(c.check(&s), Err(Miss::Pii(true)));
    }

    #[test]
    fn profile_hint_is_any_of() {
        let c = Conditions {
            profiles: vec!["reasoning".into(), "longform".into()],
            ..Default::default()
        };
        let mut s = sig();
        assert_eq!(c.check(&s), Err(Miss::Profile(None)));
        s.profile = Some("general");
        assert_eq!(c.check(&s), Err(Miss::Profile(Some("general".into()))));
        s.profile = Some("longform");
        assert_eq!(c.check(&s).unwrap(), vec!["profile hint longform"]);
    }

    #[test]
    fn paths_match_globs() {
        let c = Conditions {
            paths: vec![Glob::new("/v1/embeddings")],
            ..Default::default()
        };
        assert_eq!(c.check(&sig()), Err(Miss::Path));
        let s = Signals {
            path: "/v1/embeddings",
            ..Default::default()
        };
        assert!(c.check(&s).is_ok());
    }
}
