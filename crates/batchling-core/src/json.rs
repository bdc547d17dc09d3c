//! A strict JSON validator that also finds the members of the top-level
//! object, for the two hot paths that only need to know "is this JSON, and
//! where are these few keys": reading each input line and checking each
//! answer's body.
//!
//! serde_json would build a visitor per value and recurse through every
//! nested object; at zero latency that was a fifth of batchling's user-space
//! instructions. Here one pass checks the grammar of RFC 8259 (the text is a
//! `&str`, so its UTF-8 is already checked) with an explicit stack, and
//! hands back byte ranges of the wanted members' values, which callers then
//! decode themselves (they are small).
//!
//! # Where it differs from serde_json, on purpose
//! It checks RFC 8259's grammar, not what serde_json can build, so it
//! accepts a few texts serde_json refuses (the tests state each one):
//! - lone surrogate escapes (`"\uD800"`, `"\uDC00"`, a high one followed
//!   by anything but a low one): the grammar allows them. A `custom_id`,
//!   `method`, `url` or `model` holding one still fails, as those are
//!   decoded by serde_json ([`string_value`] gives `None`);
//! - nesting from serde_json's limit (127 containers) up to [`MAX_DEPTH`]
//!   (512); deeper is refused;
//! - numbers beyond f64's range (`1e400`): the grammar has no range.
//!
//! It refuses what serde_json reads: a wanted key twice in the top-level
//! object ([`ScanError::DuplicateKey`]; serde_json keeps the last). Other
//! duplicates are accepted, as serde_json does. Invalid UTF-8 cannot reach
//! it (it takes `&str`); callers refuse it, as serde_json does.

use std::ops::Range;

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON (or not a single object); the byte offset where it failed.
    Syntax(usize),
    /// One of the wanted keys appears twice in the top-level object; its
    /// index in the `keys` given.
    DuplicateKey(usize),
}

/// Deeper nesting is refused (serde_json refuses beyond 127 containers).
pub const MAX_DEPTH: usize = 512;

/// Check that `text` is exactly one JSON object (surrounding whitespace
/// allowed), and return, for each of `keys`, the byte range
/// of its value in the top-level object. A wanted key that appears twice is
/// an error (it would make the line ambiguous); other duplicates are JSON's
/// business, not ours.
pub fn scan_object<const N: usize>(
    text: &str,
    keys: [&str; N],
) -> Result<[Option<Range<usize>>; N], ScanError> {
    let bytes = text.as_bytes();
    let mut out = [const { None }; N];
    scan(bytes, |key, escaped, value| {
        for (k, (want, slot)) in keys.iter().zip(out.iter_mut()).enumerate() {
            if key_is(&bytes[key.clone()], escaped, want) {
                if slot.is_some() {
                    return Err(ScanError::DuplicateKey(k));
                }
                *slot = Some(value.clone());
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Whether a raw key (between its quotes) names `want`. Keys with escapes
/// (`"\u0075sage"`) are decoded first, as any JSON reader would.
fn key_is(raw: &[u8], escaped: bool, want: &str) -> bool {
    if !escaped {
        return raw == want.as_bytes();
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == want)
}

/// The text of a JSON string value (a range from [`scan_object`], quotes
/// included) without decoding when it has no escapes; `None` when the value
/// is not a string.
pub fn string_value(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.into());
    }
    serde_json::from_str::<String>(raw).ok().map(Into::into)
}

/// `body` (a JSON object) with its top-level `model` set to `model`: the
/// old value's bytes replaced, everything else as it was. `None` when the
/// body is not an object with one `model` member.
pub fn with_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let [Some(range)] = scan_object(text, ["model"]).ok()? else {
        return None;
    };
    let value = serde_json::to_string(model).ok()?;
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[range.end..]);
    Some(out)
}

/// Bytes that end the fast scan of a string: the quote, the backslash and
/// the control characters, which JSON forbids unescaped.
const fn string_stops() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
}
static STOP: [bool; 256] = string_stops();

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` (little-endian) that is a quote, a
/// backslash or below 0x20. Only the lowest flagged byte is sure to match
/// (borrows may flag bytes above it), which is all a scan needs; bytes of
/// 0x80 and above never flag.
#[inline(always)]
fn stops_in(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    below_space | zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64))
}

/// Skip a string whose opening quote is just before `i`. Returns the index
/// just past the closing quote and whether the string held an escape.
#[inline(always)]
fn skip_string(b: &[u8], mut i: usize) -> Result<(usize, bool), ScanError> {
    let mut escaped = false;
    loop {
        // Find the next stop byte, eight bytes at a time where possible.
        loop {
            if let Some(chunk) = b.get(i..i + 8) {
                let m = stops_in(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                if m == 0 {
                    i += 8;
                    continue;
                }
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            while i < b.len() && !STOP[b[i] as usize] {
                i += 1;
            }
            break;
        }
        match b.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => match b.get(i + 2..i + 6) {
                        Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i += 6,
                        _ => return Err(ScanError::Syntax(i)),
                    },
                    _ => return Err(ScanError::Syntax(i)),
                }
            }
            // A raw control character, or the end of the text.
            _ => return Err(ScanError::Syntax(i)),
        }
    }
}

/// Skip a number starting at `i`; returns the index just past it.
#[inline(always)]
fn skip_number(b: &[u8], mut i: usize) -> Result<usize, ScanError> {
    let digits = |mut i: usize| -> Result<usize, ScanError> {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            Err(ScanError::Syntax(i))
        } else {
            Ok(i)
        }
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i)?,
        _ => return Err(ScanError::Syntax(i)),
    }
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Ok(i)
}

/// Check that `b` is one JSON object and call `member(key, escaped, value)`
/// for each member of it (ranges into `b`; the key's without its quotes).
/// One loop with an explicit stack: no recursion, however deep the text.
///
/// Longer than the house limit on purpose: the cursor, the stack and the
/// member being read stay locals that the macros below share. The same
/// steps as methods of a state struct cost 5% more instructions here
/// (callgrind, BENCHMARKS.md), and this runs on every line and answer.
#[expect(
    clippy::too_many_lines,
    reason = "hot-path state machine; split into methods it measured slower"
)]
fn scan(
    b: &[u8],
    mut member: impl FnMut(Range<usize>, bool, Range<usize>) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let n = b.len();
    let mut i = 0;
    // Bit d-1 set: the container at depth d is an object (else an array).
    let mut objects = [0u64; MAX_DEPTH / 64];
    let mut depth = 0usize;
    let (mut key, mut key_escaped, mut value_start) = (0..0, false, 0);
    // Compact JSON has no whitespace: one comparison says so.
    macro_rules! ws {
        () => {
            while i < n && b[i] <= b' ' && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
                i += 1;
            }
        };
    }
    macro_rules! fail {
        () => {
            return Err(ScanError::Syntax(i))
        };
    }
    // `"key" :` and the whitespace around it, at the cursor.
    macro_rules! member_key {
        () => {{
            if b.get(i) != Some(&b'"') {
                fail!();
            }
            let start = i;
            let (end, escaped) = skip_string(b, i + 1)?;
            i = end;
            ws!();
            if b.get(i) != Some(&b':') {
                fail!();
            }
            i += 1;
            ws!();
            if depth == 1 {
                key = start + 1..end - 1;
                key_escaped = escaped;
                value_start = i;
            }
        }};
    }
    ws!();
    if b.get(i) != Some(&b'{') {
        fail!();
    }
    loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(&c @ (b'{' | b'[')) => {
                if depth == MAX_DEPTH {
                    fail!();
                }
                let bit = 1u64 << (depth % 64);
                if c == b'{' {
                    objects[depth / 64] |= bit;
                } else {
                    objects[depth / 64] &= !bit;
                }
                depth += 1;
                i += 1;
                ws!();
                if b.get(i) == Some(&(c + 2)) {
                    // `{}` or `[]` (the closing byte is two above the opening one)
                    i += 1;
                    depth -= 1;
                } else {
                    if c == b'{' {
                        member_key!();
                    }
                    continue;
                }
            }
            Some(b'"') => i = skip_string(b, i + 1)?.0,
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            Some(b'-' | b'0'..=b'9') => i = skip_number(b, i)?,
            _ => fail!(),
        }
        // A value at `depth` just ended: report it if it was a member of the
        // top-level object, then close containers until one wants more.
        loop {
            if depth == 0 {
                ws!();
                if i != n {
                    fail!();
                }
                return Ok(());
            }
            if depth == 1 {
                member(key.clone(), key_escaped, value_start..i)?;
            }
            ws!();
            let object = objects[(depth - 1) / 64] >> ((depth - 1) % 64) & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    i += 1;
                    ws!();
                    if object {
                        member_key!();
                    }
                    break;
                }
                Some(b'}') if object => {
                    i += 1;
                    depth -= 1;
                }
                Some(b']') if !object => {
                    i += 1;
                    depth -= 1;
                }
                _ => fail!(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_model_replaces_the_top_level_model_only() {
        let body = br#"{"model" : "a", "messages":[{"model":"inner"}], "x":1}"#;
        let out = with_model(body, "b\"c").expect("an object with a model");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"model" : "b\"c", "messages":[{"model":"inner"}], "x":1}"#
        );
        assert_eq!(with_model(br#"{"messages":[]}"#, "b"), None);
        assert_eq!(with_model(br#"{"model":"a","model":"b"}"#, "c"), None);
        assert_eq!(with_model(b"not json", "c"), None);
    }
    use proptest::prelude::*;

    fn valid(text: &str) -> bool {
        scan_object(text, []).is_ok()
    }

    #[test]
    fn finds_top_level_members_only() {
        let t = r#" {"a": {"usage": 1}, "usage" : {"x":[1,2,{"y":null}]} , "b":"\"q\""} "#;
        let [usage, b, c] = scan_object(t, ["usage", "b", "c"]).unwrap();
        assert_eq!(&t[usage.unwrap()], r#"{"x":[1,2,{"y":null}]}"#);
        assert_eq!(&t[b.clone().unwrap()], r#""\"q\"""#);
        assert_eq!(string_value(&t[b.unwrap()]).unwrap(), "\"q\"");
        assert_eq!(c, None);
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let t = r#"{"\u0075sage":5}"#;
        let [u] = scan_object(t, ["usage"]).unwrap();
        assert_eq!(&t[u.unwrap()], "5");
    }

    #[test]
    fn duplicate_wanted_keys_are_refused() {
        assert_eq!(
            scan_object(r#"{"a":1,"b":2,"a":3}"#, ["b", "a"]),
            Err(ScanError::DuplicateKey(1))
        );
        assert!(scan_object(r#"{"a":1,"a":3}"#, ["b"]).is_ok());
    }

    #[test]
    fn grammar() {
        for ok in [
            "{}",
            " {\"a\":[]} ",
            r#"{"a":[1,-0,0.5,1e9,-2.5E-3,1E+2,true,false,null,"",{}]}"#,
            r#"{"s":"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00 é ünïcödé 😀"}"#,
            "{\"a\":\r\n\t1}",
        ] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "",
            "[]",
            "1",
            "{",
            "{}}",
            "{} x",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12G4\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"unterminated}",
            "{'a':1}",
            "{a:1}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{\"a\":NaN}",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!valid(&deep));
        let ok = format!("{{\"a\":{}{}}}", "[".repeat(500), "]".repeat(500));
        assert!(valid(&ok));
    }

    /// JSON-ish text: valid documents and near misses.
    fn jsonish() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("fals".to_string()),
            "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            "-?0[0-9]",
            "\"([a-z \\\\\"/]|\\\\[nrtu\"]|\\\\u00[0-9a-fA-F]{2}|é|\t){0,8}\"",
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z]{0,3}", inner, "[ \n]{0,1}", "[,:]{0,2}"), 0..4)
                    .prop_map(|v| {
                        let members: Vec<String> = v
                            .into_iter()
                            .map(|(k, val, ws, junk)| format!("\"{k}\":{ws}{val}{junk}"))
                            .collect();
                        format!("{{{}}}", members.join(","))
                    }),
            ]
        })
    }

    fn serde_ok(text: &str) -> bool {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok()
    }

    /// serde_json's deepest accepted nesting, in containers.
    const SERDE_MAX_DEPTH: usize = 127;

    #[test]
    fn lone_surrogates_pass_the_grammar_but_not_serde_json() {
        for (s, paired) in [
            (r"\uD800", false),
            (r"\uDC00", false),
            (r"\uD800\u0041", false),
            (r"\uD800x", false),
            (r"\uDBFF\uD800\uDC00", false),
            (r"\uD83D\uDE00", true),
            (r"\uDBFF\uDFFF", true),
        ] {
            let text = format!(r#"{{"k":"{s}"}}"#);
            assert!(valid(&text), "{text}");
            assert_eq!(serde_ok(&text), paired, "{text}");
            // A lone surrogate in a field batchling decodes is refused there.
            let [k] = scan_object(&text, ["k"]).unwrap();
            assert_eq!(string_value(&text[k.unwrap()]).is_some(), paired, "{text}");
        }
    }

    /// A string of escapes: plain letters, `\u0041`, high and low surrogates.
    fn escapes() -> impl Strategy<Value = Vec<u16>> {
        prop::collection::vec(
            prop_oneof![
                Just(0x41u16),
                Just(b'x' as u16),
                0xD800u16..0xDC00,
                0xDC00u16..0xE000,
            ],
            0..6,
        )
    }

    /// Whether every surrogate is half of a high-then-low pair.
    fn all_paired(units: &[u16]) -> bool {
        let mut i = 0;
        while i < units.len() {
            match units[i] {
                0xD800..=0xDBFF if matches!(units.get(i + 1), Some(0xDC00..=0xDFFF)) => i += 2,
                0xD800..=0xDFFF => return false,
                _ => i += 1,
            }
        }
        true
    }

    proptest! {
        /// Surrogate escapes: the scanner accepts every one (grammar);
        /// serde_json only pairs, the difference the module doc states.
        #[test]
        fn surrogate_escapes_differ_only_when_lone(units in escapes()) {
            let body: String = units
                .iter()
                .map(|&u| if u == b'x' as u16 { "x".to_string() } else { format!("\\u{u:04X}") })
                .collect();
            let text = format!(r#"{{"k":"{body}"}}"#);
            prop_assert!(valid(&text), "{}", text);
            prop_assert_eq!(serde_ok(&text), all_paired(&units), "{}", text);
        }

        /// Nesting (arrays and objects mixed) up to and past both limits:
        /// the scanner takes up to 512 containers, serde_json 127.
        #[test]
        fn nesting_depth_limits(shape in prop::collection::vec(any::<bool>(), 0..700)) {
            let mut text = String::from(r#"{"k":"#);
            for &object in &shape {
                text.push_str(if object { r#"{"o":"# } else { "[" });
            }
            text.push('1');
            for &object in shape.iter().rev() {
                text.push(if object { '}' } else { ']' });
            }
            text.push('}');
            let depth = shape.len() + 1; // the outer object counts
            prop_assert_eq!(valid(&text), depth <= MAX_DEPTH, "depth {}", depth);
            prop_assert_eq!(serde_ok(&text), depth <= SERDE_MAX_DEPTH, "depth {}", depth);
        }

        /// Duplicate keys: accepted by both unless a wanted key repeats at
        /// the top level, which only the scanner refuses; otherwise the
        /// wanted value is the one serde_json sees.
        #[test]
        fn duplicate_keys(members in prop::collection::vec((0usize..3, 0u8..10, any::<bool>()), 0..6)) {
            let keys = ["a", "b", "\\u0061"];
            let inner: Vec<String> = members
                .iter()
                .map(|&(k, v, nested)| {
                    let value = if nested { format!(r#"{{"a":{v},"a":{v}}}"#) } else { v.to_string() };
                    format!(r#""{}":{value}"#, keys[k])
                })
                .collect();
            let text = format!("{{{}}}", inner.join(","));
            let a_count = members.iter().filter(|m| m.0 != 1).count();
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).expect("serde_json takes duplicates");
            match scan_object(&text, ["a"]) {
                Err(e) => {
                    prop_assert_eq!(e, ScanError::DuplicateKey(0));
                    prop_assert!(a_count > 1);
                }
                Ok([span]) => {
                    prop_assert!(a_count <= 1, "{}", text);
                    let got = span.map(|r| serde_json::from_str::<serde_json::Value>(&text[r]).unwrap());
                    prop_assert_eq!(got.as_ref(), map.get("a"));
                }
            }
            prop_assert!(valid(&text));
        }

        /// Invalid UTF-8, inside a string or outside: serde_json refuses it
        /// as the reader does (the scanner never sees it: it takes `&str`).
        #[test]
        fn invalid_utf8_is_refused_by_both(
            doc in jsonish(),
            at in 0usize..64,
            bad in prop_oneof![
                (0x80u8..=0xFF).prop_map(|b| vec![b]),
                Just(vec![0xC0, 0x80]),
                Just(vec![0xED, 0xA0, 0x80]),
                Just(vec![0xF4, 0x90, 0x80, 0x80]),
                Just(vec![0xE2, 0x82]),
            ],
        ) {
            let text = format!("{{\"k\":{doc}}}");
            let mut bytes = text.into_bytes();
            let at = at.min(bytes.len());
            bytes.splice(at..at, bad);
            prop_assume!(std::str::from_utf8(&bytes).is_err());
            prop_assert!(serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).is_err());
            prop_assert!(crate::request::parse_line(1, &bytes).is_err());
        }

        /// Whatever serde_json accepts as an object, the scanner accepts, and
        /// the other way round.
        #[test]
        fn agrees_with_serde_json(doc in jsonish(), cut in 0usize..64, flip in any::<bool>()) {
            let mut text = format!("{{\"k\":{doc}}}");
            if flip && cut < text.len() && text.is_char_boundary(cut) {
                text.remove(cut);
            }
            let serde_ok = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).is_ok();
            prop_assert_eq!(valid(&text), serde_ok, "{}", text);
        }
    }
}
