//! A bounded record of the `/v1/*` requests this upstream received, so tests
//! can check what the gateway actually forwarded (headers it injected or
//! stripped, rewritten bodies).
//!
//! Recording is on the hot path of load benchmarks, so an entry keeps the
//! request's own parts (`Bytes` and `HeaderMap` clones are cheap) and the
//! JSON form is only built when a test asks for it.

use std::collections::VecDeque;

use axum::http::{HeaderMap, Method, Uri};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// How many requests are kept; older ones are dropped first.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// `{method, path, headers, body}`: header names are lowercase (as
    /// `http` stores them), repeated values are joined with `", "`, and the
    /// body is decoded as lossy UTF-8.
    pub fn to_json(&self) -> Value {
        let mut headers = Map::new();
        for name in self.headers.keys() {
            let mut joined = String::new();
            for (i, value) in self.headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    joined.push_str(", ");
                }
                joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
            headers.insert(name.as_str().to_owned(), Value::String(joined));
        }
        let path = self
            .uri
            .path_and_query()
            .map_or_else(|| self.uri.path(), |pq| pq.as_str());
        json!({
            "method": self.method.as_str(),
            "path": path,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Recorded>,
    /// Requests seen since start or the last clear, including dropped ones.
    total: u64,
}

#[derive(Debug)]
pub struct Recorder {
    capacity: usize,
    ring: Mutex<Ring>,
}

impl Recorder {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                entries: VecDeque::with_capacity(capacity.max(1)),
                total: 0,
            }),
        }
    }

    pub fn record(&self, entry: Recorded) {
        let evicted = {
            let mut ring = self.ring.lock();
            ring.total += 1;
            let evicted = if ring.entries.len() >= self.capacity {
                ring.entries.pop_front()
            } else {
                None
            };
            ring.entries.push_back(entry);
            evicted
        };
        // Dropped after unlocking, so freeing it never extends the lock.
        drop(evicted);
    }

    /// `(total seen, entries oldest first)`.
    pub fn snapshot(&self) -> (u64, Vec<Recorded>) {
        let ring = self.ring.lock();
        (ring.total, ring.entries.iter().cloned().collect())
    }

    /// The body of `GET /__demo/requests`: `{"count": .., "requests": [..]}`.
    pub fn snapshot_json(&self) -> Value {
        let (count, entries) = self.snapshot();
        let requests: Vec<Value> = entries.iter().map(Recorded::to_json).collect();
        json!({ "count": count, "requests": requests })
    }

    pub fn clear(&self) {
        let old = {
            let mut ring = self.ring.lock();
            ring.total = 0;
            std::mem::take(&mut ring.entries)
        };
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn entry(path: &str) -> Recorded {
        let mut headers = HeaderMap::new();
        headers.append("X-Thing", HeaderValue::from_static("a"));
        headers.append("x-thing", HeaderValue::from_static("b"));
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.insert("x-bin", HeaderValue::from_bytes(b"\xff ok").unwrap());
        Recorded {
            method: Method::POST,
            uri: path.parse().unwrap(),
            headers,
            body: Bytes::from_static(b"{\"a\":1}\xff"),
        }
    }

    #[test]
    fn json_form_joins_headers_and_keeps_query() {
        let v = entry("/v1/chat/completions?x=1&y=2").to_json();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/v1/chat/completions?x=1&y=2");
        assert_eq!(v["headers"]["x-thing"], "a, b");
        assert_eq!(v["headers"]["authorization"], "Bearer k");
        assert_eq!(v["headers"]["x-bin"], "\u{fffd} ok");
        assert_eq!(v["body"], "{\"a\":1}\u{fffd}");
    }

    #[test]
    fn ring_is_bounded_and_counts_everything() {
        let rec = Recorder::new(2);
        for i in 0..5 {
            rec.record(entry(&format!("/v1/{i}")));
        }
        let v = rec.snapshot_json();
        assert_eq!(v["count"], 5);
        let reqs = v["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0]["path"], "/v1/3");
        assert_eq!(reqs[1]["path"], "/v1/4");

        rec.clear();
        let v = rec.snapshot_json();
        assert_eq!(v["count"], 0);
        assert_eq!(v["requests"].as_array().unwrap().len(), 0);
    }
}
