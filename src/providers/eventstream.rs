//! Incremental decoder for AWS's binary event stream (`application/vnd.amazon.eventstream`),
//! the framing of Bedrock's ConverseStream responses.
//!
//! Frame: total length (u32 BE) · headers length (u32 BE) · prelude CRC32 (of the first
//! 8 bytes) · headers · payload · message CRC32 (of everything before it). A header is
//! name length (u8) · name · type (u8) · value, with types 0/1 bool true/false, 2 byte,
//! 3 i16, 4 i32, 5 i64, 6 bytes (u16 length), 7 string (u16 length), 8 timestamp (i64 ms),
//! 9 uuid (16 bytes).
//!
//! Invariants: input may be split at any byte; [`Decoder::push`] returns only complete,
//! CRC-checked messages and never panics; a frame over `max_message` bytes (AWS's own limit
//! is 16 MiB; the default here is 1 MiB, Bedrock's events are small) or a bad CRC is an
//! error after which the decoder stays failed (the stream cannot be re-synchronised).

use thiserror::Error;

/// Default largest message.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
const PRELUDE: usize = 12;
const MIN_MESSAGE: usize = PRELUDE + 4;

/// The stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventStreamError {
    /// The prelude CRC does not match.
    #[error("event stream prelude checksum mismatch")]
    PreludeCrc,
    /// The message CRC does not match.
    #[error("event stream message checksum mismatch")]
    MessageCrc,
    /// Lengths that cannot describe a message.
    #[error("event stream frame lengths are invalid (total {total}, headers {headers})")]
    BadLengths {
        /// Declared total length.
        total: u32,
        /// Declared headers length.
        headers: u32,
    },
    /// A message over the limit.
    #[error("event stream message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Declared size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Headers that do not parse.
    #[error("event stream headers are malformed")]
    BadHeaders,
    /// The stream ended inside a frame.
    #[error("event stream ended inside a message")]
    Truncated,
}

/// A header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Bool.
    Bool(bool),
    /// Byte.
    Byte(i8),
    /// Short.
    Short(i16),
    /// Int.
    Int(i32),
    /// Long.
    Long(i64),
    /// Bytes.
    Bytes(Vec<u8>),
    /// String.
    String(String),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    /// UUID.
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Headers in wire order.
    pub headers: Vec<(String, HeaderValue)>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// A string header's value.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(k, v)| match v {
            HeaderValue::String(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// Encodes the message (used by tests and fixture generation).
    pub fn encode(&self) -> Vec<u8> {
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let name = &name.as_bytes()[..name.len().min(255)];
            headers.push(name.len() as u8);
            headers.extend_from_slice(name);
            match value {
                HeaderValue::Bool(true) => headers.push(0),
                HeaderValue::Bool(false) => headers.push(1),
                HeaderValue::Byte(b) => {
                    headers.push(2);
                    headers.extend_from_slice(&b.to_be_bytes());
                }
                HeaderValue::Short(v) => {
                    headers.push(3);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Int(v) => {
                    headers.push(4);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Long(v) => {
                    headers.push(5);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Bytes(b) => {
                    headers.push(6);
                    let b = &b[..b.len().min(u16::MAX as usize)];
                    headers.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    headers.extend_from_slice(b);
                }
                HeaderValue::String(s) => {
                    headers.push(7);
                    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
                    headers.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    headers.extend_from_slice(b);
                }
                HeaderValue::Timestamp(v) => {
                    headers.push(8);
                    headers.extend_from_slice(&v.to_be_bytes());
                }
                HeaderValue::Uuid(u) => {
                    headers.push(9);
                    headers.extend_from_slice(u);
                }
            }
        }
        let total = MIN_MESSAGE + headers.len() + self.payload.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let prelude_crc = crc32fast::hash(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&headers);
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Incremental decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_message: usize,
    failed: Option<EventStreamError>,
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message,
            failed: None,
        }
    }

    /// Feeds bytes; returns the complete messages, or the first error (sticky).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, EventStreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        let result = loop {
            let rest = &self.buf[at..];
            if rest.len() < PRELUDE {
                break Ok(());
            }
            match frame_len(rest, self.max_message) {
                Err(e) => break Err(e),
                Ok(total) if rest.len() < total => break Ok(()),
                Ok(total) => match parse_frame(&rest[..total]) {
                    Ok(m) => {
                        out.push(m);
                        at += total;
                    }
                    Err(e) => break Err(e),
                },
            }
        };
        self.buf.drain(..at);
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.buf = Vec::new();
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// At end of stream: an error when bytes of an incomplete frame remain.
    pub fn finish(&mut self) -> Result<(), EventStreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.buf = Vec::new();
            Err(EventStreamError::Truncated)
        }
    }
}

/// Validates a prelude; returns the frame's total length.
fn frame_len(b: &[u8], max: usize) -> Result<usize, EventStreamError> {
    let total = be32(b);
    let headers = be32(&b[4..]);
    if crc32fast::hash(&b[..8]) != be32(&b[8..]) {
        return Err(EventStreamError::PreludeCrc);
    }
    let t = total as usize;
    if t < MIN_MESSAGE || (headers as usize) > t - MIN_MESSAGE {
        return Err(EventStreamError::BadLengths { total, headers });
    }
    if t > max {
        return Err(EventStreamError::TooLarge {
            size: t,
            limit: max,
        });
    }
    Ok(t)
}

fn parse_frame(f: &[u8]) -> Result<Message, EventStreamError> {
    let n = f.len();
    if crc32fast::hash(&f[..n - 4]) != be32(&f[n - 4..]) {
        return Err(EventStreamError::MessageCrc);
    }
    let hlen = be32(&f[4..]) as usize;
    let headers = parse_headers(&f[PRELUDE..PRELUDE + hlen])?;
    Ok(Message {
        headers,
        payload: f[PRELUDE + hlen..n - 4].to_vec(),
    })
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], EventStreamError> {
    if b.len() < n {
        return Err(EventStreamError::BadHeaders);
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn arr<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], EventStreamError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(b, N)?);
    Ok(a)
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, EventStreamError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = take(&mut b, 1)?[0] as usize;
        let name = std::str::from_utf8(take(&mut b, name_len)?)
            .map_err(|_| EventStreamError::BadHeaders)?
            .to_owned();
        let ty = take(&mut b, 1)?[0];
        let value = match ty {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(arr(&mut b)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(arr(&mut b)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(arr(&mut b)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(arr(&mut b)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(arr(&mut b)?) as usize;
                let v = take(&mut b, len)?.to_vec();
                if ty == 6 {
                    HeaderValue::Bytes(v)
                } else {
                    HeaderValue::String(
                        String::from_utf8(v).map_err(|_| EventStreamError::BadHeaders)?,
                    )
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(arr(&mut b)?)),
            9 => HeaderValue::Uuid(arr(&mut b)?),
            _ => return Err(EventStreamError::BadHeaders),
        };
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Message {
        Message {
            headers: vec![
                (
                    ":event-type".into(),
                    HeaderValue::String("contentBlockDelta".into()),
                ),
                (
                    ":content-type".into(),
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type".into(), HeaderValue::String("event".into())),
                ("b".into(), HeaderValue::Bool(false)),
                ("i".into(), HeaderValue::Int(-5)),
                ("l".into(), HeaderValue::Long(1 << 40)),
                ("t".into(), HeaderValue::Timestamp(1_700_000_000_000)),
                ("u".into(), HeaderValue::Uuid([7; 16])),
                ("x".into(), HeaderValue::Bytes(vec![0, 1, 2])),
                ("s".into(), HeaderValue::Short(-2)),
                ("y".into(), HeaderValue::Byte(3)),
            ],
            payload: br#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abc"}"#.to_vec(),
        }
    }

    #[test]
    fn round_trips_and_checks_crcs() {
        let m = sample();
        let bytes = m.encode();
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        assert_eq!(d.push(&bytes).unwrap(), vec![m.clone()]);
        d.finish().unwrap();

        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            Decoder::new(DEFAULT_MAX_MESSAGE).push(&bad),
            Err(EventStreamError::MessageCrc)
        );
        let mut bad = bytes.clone();
        bad[9] ^= 1;
        assert_eq!(
            Decoder::new(DEFAULT_MAX_MESSAGE).push(&bad),
            Err(EventStreamError::PreludeCrc)
        );
        let mut bad = bytes.clone();
        bad[20] ^= 0x40; // inside the payload or headers: message CRC catches it
        assert!(Decoder::new(DEFAULT_MAX_MESSAGE).push(&bad).is_err());
    }

    #[test]
    fn limits_size_and_reports_truncation_and_stays_failed() {
        let bytes = sample().encode();
        let mut d = Decoder::new(32);
        assert!(matches!(
            d.push(&bytes),
            Err(EventStreamError::TooLarge { .. })
        ));
        assert!(d.push(&bytes).is_err(), "sticky");
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        assert_eq!(d.push(&bytes[..bytes.len() - 3]).unwrap(), vec![]);
        assert_eq!(d.finish(), Err(EventStreamError::Truncated));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_messages(cuts in proptest::collection::vec(0usize..400, 0..8), n in 1usize..4) {
            let m = sample();
            let mut bytes = Vec::new();
            for _ in 0..n { bytes.extend(m.encode()); }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
            let mut got = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                got.extend(d.push(&bytes[prev..c]).unwrap());
                prev = c;
            }
            d.finish().unwrap();
            prop_assert_eq!(got, vec![m; n]);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), split in 0usize..600) {
            let mut d = Decoder::new(4096);
            let s = split.min(bytes.len());
            let _ = d.push(&bytes[..s]);
            let _ = d.push(&bytes[s..]);
            let _ = d.finish();
        }

        #[test]
        fn never_panics_on_valid_prelude_with_garbage(hlen in 0u32..64, body in proptest::collection::vec(any::<u8>(), 0..128)) {
            // A correct prelude (so the decoder gets past the CRC) over arbitrary headers.
            let total = (16 + body.len()) as u32;
            let mut f = Vec::new();
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&hlen.to_be_bytes());
            let crc = crc32fast::hash(&f);
            f.extend_from_slice(&crc.to_be_bytes());
            f.extend_from_slice(&body);
            let crc = crc32fast::hash(&f);
            f.extend_from_slice(&crc.to_be_bytes());
            let _ = Decoder::new(4096).push(&f);
        }
    }
}
