//! Weighted splits (canary, A/B) with optional stickiness by consumer.
//!
//! Pure: the caller supplies a random roll; with stickiness the bucket is a stable hash of
//! the rule name and the consumer instead (FNV-1a 64, fixed here so it never changes with a
//! Rust release), so one consumer always lands on the same variant while weights stay the
//! same, and tests and `tollgate route` can say which bucket a consumer falls in.
//! Variants whose targets are cooling down are left out (their weight is redistributed);
//! when every variant is cooling, the cooldown is ignored (something must serve).

/// One weighted choice (the target lives in the routing table, by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighted {
    /// Relative weight (> 0).
    pub weight: u32,
    /// Excluded (cooling down) for this pick.
    pub excluded: bool,
}

/// Which variant was picked, and how (for the explanation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Index of the variant.
    pub index: usize,
    /// Bucket drawn, in `0..total`.
    pub bucket: u64,
    /// Total weight of the eligible variants.
    pub total: u64,
    /// How the bucket was drawn (`consumer hash` or `random`).
    pub by: &'static str,
}

/// FNV-1a, 64 bit.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // Separator so ("ab","c") and ("a","bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Picks a variant. `sticky_key` (rule name, consumer) selects the hash; else `roll`.
pub fn pick(variants: &[Weighted], sticky_key: Option<(&str, &str)>, roll: u64) -> Option<Pick> {
    let all_excluded = variants.iter().all(|v| v.excluded);
    let eligible = |v: &Weighted| v.weight > 0 && (all_excluded || !v.excluded);
    let total: u64 = variants
        .iter()
        .filter(|v| eligible(v))
        .map(|v| u64::from(v.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let (raw, by) = match sticky_key {
        Some((rule, consumer)) => (
            fnv1a(&[rule.as_bytes(), consumer.as_bytes()]),
            "consumer hash",
        ),
        None => (roll, "random"),
    };
    let bucket = raw % total;
    let mut acc = 0u64;
    for (index, v) in variants.iter().enumerate() {
        if !eligible(v) {
            continue;
        }
        acc += u64::from(v.weight);
        if bucket < acc {
            return Some(Pick {
                index,
                bucket,
                total,
                by,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(weights: &[u32]) -> Vec<Weighted> {
        weights
            .iter()
            .map(|&weight| Weighted {
                weight,
                excluded: false,
            })
            .collect()
    }

    #[test]
    fn buckets_map_to_cumulative_weights() {
        let v = w(&[90, 10]);
        assert_eq!(pick(&v, None, 0).unwrap().index, 0);
        assert_eq!(pick(&v, None, 89).unwrap().index, 0);
        assert_eq!(pick(&v, None, 90).unwrap().index, 1);
        assert_eq!(pick(&v, None, 99).unwrap().index, 1);
        assert_eq!(pick(&v, None, 100).unwrap().index, 0);
    }

    #[test]
    fn distribution_follows_weights() {
        let v = w(&[70, 20, 10]);
        let mut n = [0u32; 3];
        for roll in 0..10_000u64 {
            n[pick(&v, None, roll.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .unwrap()
                .index] += 1;
        }
        assert!((6_700..7_300).contains(&n[0]), "{n:?}");
        assert!((1_700..2_300).contains(&n[1]), "{n:?}");
        assert!((700..1_300).contains(&n[2]), "{n:?}");
    }

    #[test]
    fn sticky_picks_ignore_the_roll_and_are_stable() {
        let v = w(&[50, 50]);
        let a = pick(&v, Some(("canary", "team-a-svc")), 0).unwrap();
        for roll in 1..50 {
            assert_eq!(pick(&v, Some(("canary", "team-a-svc")), roll).unwrap(), a);
        }
        assert_eq!(a.by, "consumer hash");
        // Stable across releases: the hash is fixed.
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        // Many consumers spread over both variants.
        let firsts = (0..200)
            .filter(|i| {
                pick(&v, Some(("canary", &format!("c{i}"))), 0)
                    .unwrap()
                    .index
                    == 0
            })
            .count();
        assert!((60..140).contains(&firsts), "{firsts}");
    }

    #[test]
    fn cooling_variants_are_skipped_unless_all_are() {
        let mut v = w(&[90, 10]);
        v[0].excluded = true;
        for roll in 0..100 {
            assert_eq!(pick(&v, None, roll).unwrap().index, 1);
        }
        v[1].excluded = true;
        assert_eq!(pick(&v, None, 5).unwrap().index, 0);
        assert_eq!(pick(&w(&[0, 0]), None, 1), None);
    }
}
