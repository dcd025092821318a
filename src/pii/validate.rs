//! Checksum and structure validators run on regex candidates.
//!
//! Pure functions over the matched text. Each one ignores separators (space, hyphen, dot)
//! so the detector's regex decides the layout and the validator only the digits.
//! Invariant: no validator panics, whatever the input.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A validator a detector (built-in or custom) can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validator {
    /// Luhn mod 10 (payment cards).
    Luhn,
    /// ISO 13616 mod 97 (IBAN).
    Mod97,
    /// Korean resident/foreigner registration number: date and gender digit.
    KrRrn,
    /// Korean business registration number checksum.
    KrBrn,
    /// US SSN area/group/serial rules.
    UsSsn,
    /// `std::net::Ipv4Addr` parser.
    Ipv4,
    /// `std::net::Ipv6Addr` parser.
    Ipv6,
    /// Payment card IIN ranges plus Luhn.
    Card,
}

impl Validator {
    /// Names accepted in the config (`validator:` of a custom detector).
    pub const NAMES: &'static [&'static str] = &[
        "luhn", "mod97", "kr_rrn", "kr_brn", "us_ssn", "ipv4", "ipv6", "card",
    ];

    /// Looks a validator up by its config name.
    pub fn by_name(name: &str) -> Option<Validator> {
        Some(match name {
            "luhn" => Validator::Luhn,
            "mod97" => Validator::Mod97,
            "kr_rrn" => Validator::KrRrn,
            "kr_brn" => Validator::KrBrn,
            "us_ssn" => Validator::UsSsn,
            "ipv4" => Validator::Ipv4,
            "ipv6" => Validator::Ipv6,
            "card" => Validator::Card,
            _ => return None,
        })
    }

    /// Whether `text` passes.
    pub fn check(self, text: &str) -> bool {
        match self {
            Validator::Luhn => luhn(&digits(text)),
            Validator::Mod97 => iban(text),
            Validator::KrRrn => kr_rrn(text).is_some(),
            Validator::KrBrn => kr_brn(&digits(text)),
            Validator::UsSsn => us_ssn(&digits(text)),
            Validator::Ipv4 => text.parse::<Ipv4Addr>().is_ok(),
            Validator::Ipv6 => ipv6(text),
            Validator::Card => card_grouping(text) && card(&digits(text)),
        }
    }
}

/// The decimal digits of `text`, as values 0–9.
pub fn digits(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Luhn mod 10 over digit values.
pub fn luhn(d: &[u8]) -> bool {
    if d.len() < 2 {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn prefix_num(d: &[u8], n: usize) -> u32 {
    d.iter()
        .take(n)
        .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
}

/// A payment card number: known IIN range, length valid for it, Luhn.
pub fn card(d: &[u8]) -> bool {
    let len = d.len();
    if !(12..=19).contains(&len) || !luhn(d) {
        return false;
    }
    let p1 = prefix_num(d, 1);
    let p2 = prefix_num(d, 2);
    let p3 = prefix_num(d, 3);
    let p4 = prefix_num(d, 4);
    let p6 = prefix_num(d, 6);
    match p1 {
        // Visa
        4 => matches!(len, 13 | 16 | 19),
        2 => (2221..=2720).contains(&p4) && len == 16,
        5 => {
            // Mastercard 51–55 (16); Maestro 50, 56–58 (16–19: shorter Maestro numbers are
            // rare and collide with everyday 12–15 digit numbers).
            if (51..=55).contains(&p2) {
                len == 16
            } else {
                matches!(p2, 50 | 56..=58) && len >= 16
            }
        }
        3 => {
            if p2 == 34 || p2 == 37 {
                len == 15 // Amex
            } else if (3528..=3589).contains(&p4) {
                (16..=19).contains(&len) // JCB
            } else if p2 == 36 || p2 == 38 || p2 == 39 || (300..=305).contains(&p3) {
                (14..=19).contains(&len) // Diners
            } else {
                false
            }
        }
        6 => {
            // Discover 6011, 644–649, 65, 622126–622925; UnionPay 62; Maestro 6304, 67xx.
            len >= 16
                && (p4 == 6011
                    || (644..=649).contains(&p3)
                    || p2 == 65
                    || p2 == 62
                    || (622_126..=622_925).contains(&p6)
                    || p4 == 6304
                    || p2 == 67)
        }
        _ => false,
    }
}

/// How card numbers are printed: one run of digits, groups of four (the last may be
/// shorter), or the 4-6-5 / 4-6-4 layouts of Amex and Diners. Rejects RRN-like 6-7 layouts.
pub fn card_grouping(text: &str) -> bool {
    let groups: Vec<usize> = text
        .split([' ', '-'])
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    match groups.as_slice() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [init @ .., last] => init.iter().all(|&g| g == 4) && (1..=4).contains(last),
        [] => false,
    }
}

/// ISO 13616 IBAN: country letters, check digits, mod 97 == 1. Separators ignored.
pub fn iban(text: &str) -> bool {
    let compact: Vec<u8> = text
        .bytes()
        .filter(|b| !b" -".contains(b))
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact.iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        if b.is_ascii_digit() {
            rem = (rem * 10 + u32::from(b - b'0')) % 97;
        } else {
            let v = u32::from(b - b'A') + 10;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

/// What a valid Korean registration number says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KrRrn {
    /// Gender digit 5–8: a foreigner registration number.
    pub foreigner: bool,
    /// The pre-2020-10 check digit matches (raises confidence; never required).
    pub checksum_ok: bool,
}

/// Korean resident / foreigner registration number: `YYMMDD-GNNNNNN`, real date, gender
/// digit consistent with the century. The check digit is reported, not required: numbers
/// issued since 2020-10 have none.
pub fn kr_rrn(text: &str) -> Option<KrRrn> {
    let d = digits(text);
    if d.len() != 13 {
        return None;
    }
    let yy = prefix_num(&d, 2);
    let mm = u32::from(d[2]) * 10 + u32::from(d[3]);
    let dd = u32::from(d[4]) * 10 + u32::from(d[5]);
    let century = match d[6] {
        1 | 2 | 5 | 6 => 1900,
        3 | 4 | 7 | 8 => 2000,
        9 | 0 => 1800,
        _ => return None,
    };
    let year = century + yy;
    if !valid_date(year, mm, dd) {
        return None;
    }
    const W: [u32; 12] = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5];
    let sum: u32 = d[..12].iter().zip(W).map(|(&x, w)| u32::from(x) * w).sum();
    let check = (11 - sum % 11) % 10;
    Some(KrRrn {
        foreigner: (5..=8).contains(&d[6]),
        checksum_ok: check == u32::from(d[12]),
    })
}

fn valid_date(year: u32, month: u32, day: u32) -> bool {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let max = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=max).contains(&day)
}

/// Korean business registration number (10 digits): office code ≥ 101, type code not 00,
/// serial not 0000, and the check digit.
pub fn kr_brn(d: &[u8]) -> bool {
    if d.len() != 10 || prefix_num(d, 3) < 101 || d[3..5] == [0, 0] || d[5..9] == [0, 0, 0, 0] {
        return false;
    }
    const W: [u32; 9] = [1, 3, 7, 1, 3, 7, 1, 3, 5];
    let mut sum: u32 = d[..9].iter().zip(W).map(|(&x, w)| u32::from(x) * w).sum();
    sum += u32::from(d[8]) * 5 / 10;
    (10 - sum % 10) % 10 == u32::from(d[9])
}

/// US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000; not a famous
/// advertising number.
pub fn us_ssn(d: &[u8]) -> bool {
    if d.len() != 9 {
        return false;
    }
    let area = prefix_num(d, 3);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let famous = (area, group, serial) == (78, 5, 1120) || (area, group, serial) == (219, 9, 9999);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !famous
}

/// IPv6 by the standard parser; bare `::`-free short forms like `a:b` are not addresses.
fn ipv6(text: &str) -> bool {
    text.parse::<Ipv6Addr>().is_ok() && text.bytes().filter(|&b| b == b':').count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_numbers() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
    }

    #[test]
    fn cards_by_network() {
        for ok in [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "36227206271667",
            "6200000000000005",
            "4000000000000000006",
        ] {
            assert!(card(&digits(ok)), "{ok}");
        }
        for bad in [
            "4111111111111112", // Luhn
            "1234567812345670", // no IIN range (Luhn ok)
            "2720990000000007", // 2-series ok range? 2720 is valid, Luhn decides
            "9111111111111111",
        ] {
            let d = digits(bad);
            if bad.starts_with("2720") {
                assert_eq!(card(&d), luhn(&d));
            } else {
                assert!(!card(&d), "{bad}");
            }
        }
    }

    #[test]
    fn card_layouts() {
        assert!(card_grouping("4111 1111 1111 1111"));
        assert!(card_grouping("4000-0000-0000-0000-006"));
        assert!(card_grouping("3782 822463 10005"));
        assert!(card_grouping("4111111111111111"));
        assert!(!card_grouping("491328-5299467"), "RRN layout");
        assert!(!Validator::Card.check("450101-1234567"));
    }

    #[test]
    fn iban_mod97() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(iban("de89370400440532013000"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban("XX00"));
    }

    #[test]
    fn rrn_date_gender_and_optional_checksum() {
        let r = kr_rrn("900101-1234568").expect("valid date and gender");
        assert!(!r.foreigner);
        // Same with a random tail (post-2020 numbers): still valid, checksum flagged.
        assert!(kr_rrn("900101-1000000").is_some());
        assert!(kr_rrn("000229-3000000").is_some(), "2000 is a leap year");
        assert!(kr_rrn("010229-3000000").is_none(), "2001 is not");
        assert!(kr_rrn("901301-1234567").is_none(), "month 13");
        assert!(kr_rrn("900100-1234567").is_none(), "day 0");
        assert!(kr_rrn("900101-5234567").is_some_and(|r| r.foreigner));
        // Checksum: 900101-123456C, C computed by the formula.
        let d = digits("900101123456");
        let w = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5];
        let s: u32 = d.iter().zip(w).map(|(&x, w)| u32::from(x) * w).sum();
        let c = (11 - s % 11) % 10;
        assert!(kr_rrn(&format!("900101-123456{c}")).is_some_and(|r| r.checksum_ok));
        assert!(kr_rrn(&format!("900101-123456{}", (c + 1) % 10)).is_some_and(|r| !r.checksum_ok));
    }

    #[test]
    fn business_number_checksum() {
        assert!(kr_brn(&digits("220-81-62517")));
        assert!(!kr_brn(&digits("220-81-62518")));
    }

    #[test]
    fn ssn_rules() {
        assert!(us_ssn(&digits("123-45-6789")));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "078-05-1120",
            "219-09-9999",
        ] {
            assert!(!us_ssn(&digits(bad)), "{bad}");
        }
    }

    #[test]
    fn ip_parsers() {
        assert!(Validator::Ipv4.check("192.168.0.1"));
        assert!(!Validator::Ipv4.check("256.1.1.1"));
        assert!(Validator::Ipv6.check("2001:db8::1"));
        assert!(Validator::Ipv6.check("::ffff:1.2.3.4"));
        assert!(!Validator::Ipv6.check("12:30"));
    }
}
