//! Per-thread pseudo-random bytes for trace and span ids (xoshiro256**, seeded once per
//! thread from the OS through a v4 UUID).
//!
//! Why: a v4 UUID costs a `getrandom` system call; trace ids need uniqueness and uniform
//! low bytes (ratio sampling reads them), not unpredictability — the same trade OpenTelemetry
//! SDKs make. Two calls per request were ~2% of tollgate's CPU (`make bench`, perf).
//! Not for secrets: keys, nonces and anything an attacker must not guess use the OS RNG.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<[u64; 4]> = Cell::new(seed());
}

fn seed() -> [u64; 4] {
    let a = uuid::Uuid::new_v4().as_u128();
    let b = uuid::Uuid::new_v4().as_u128();
    // xoshiro must not start from all zeros; splitmix spreads the UUIDs' fixed bits.
    let mut s = [a as u64, (a >> 64) as u64, b as u64, (b >> 64) as u64];
    let mut x = s[0] ^ s[3] ^ 0x9e37_79b9_7f4a_7c15;
    for v in &mut s {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *v ^= z ^ (z >> 31);
    }
    if s == [0; 4] {
        s[0] = 1;
    }
    s
}

/// The next 64 random bits of this thread's generator.
pub fn u64() -> u64 {
    STATE.with(|c| {
        let mut s = c.get();
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        c.set(s);
        out
    })
}

/// Fills `out` with random bytes.
pub fn fill(out: &mut [u8]) {
    for chunk in out.chunks_mut(8) {
        let v = u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_spread_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        let mut ones = 0u32;
        for _ in 0..10_000 {
            let mut b = [0u8; 16];
            fill(&mut b);
            assert!(seen.insert(b), "repeated id");
            ones += b.iter().map(|x| x.count_ones()).sum::<u32>();
        }
        let ratio = f64::from(ones) / (10_000.0 * 128.0);
        assert!((0.49..0.51).contains(&ratio), "bit balance {ratio}");
    }

    #[test]
    fn threads_get_different_streams() {
        let a = std::thread::spawn(u64).join().unwrap_or_default();
        let b = std::thread::spawn(u64).join().unwrap_or_default();
        assert_ne!(a, b);
    }
}
