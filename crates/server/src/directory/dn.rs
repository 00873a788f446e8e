//! Distinguished names and ranged attribute names, as an LDAP directory writes them.
//!
//! A sync compares DNs that reach it by different routes: an entry's own DN, a group's
//! `member` values, a DN typed into the settings. Directories write the same DN in more
//! than one way (`CN=Smith\, John` and `cn=smith\2c john`), so DNs are compared by the
//! key [`normalise_dn`] makes, never as written. The key is for comparison only: it is a
//! valid DN, but not one to send back to the server.
//!
//! Active Directory returns a large multi-valued attribute (a big group's `member`) in
//! chunks named `member;range=0-1499`; [`ranged_attribute`] reads such a name and
//! [`next_range_attribute`] names the next chunk to ask for.
//!
//! Both take text from the directory, so neither may panic on any input and both do work
//! bounded by the input's length.

/// What a malformed DN's key starts with. A well-formed key never holds a raw NUL (a NUL in
/// a value is written `\00`), so a malformed DN's key equals no well-formed one.
const INVALID_PREFIX: &str = "\u{0}invalid:";

/// Characters escaped with a backslash wherever they stand in a value of the key.
const ESCAPED_ANYWHERE: &[char] = &[',', '+', '"', '\\', '<', '>', ';', '='];

/// The comparison key of a DN (RFC 4514, read as directories compare in practice).
///
/// Attribute types are lower-cased (ASCII); values are unescaped, stripped of unescaped
/// leading and trailing spaces, and case-folded (caseIgnoreMatch, which is what
/// directories use for naming attributes); the parts of a multi-valued RDN are sorted; the
/// result is written back in one escaping. `;` is accepted between RDNs (RFC 2253's legacy
/// form) and any escaped character stands for itself (some servers escape more than the
/// specials). A `#` value (BER, in hex) is kept as lower-case hex: it is not decoded, so
/// it does not equal the same value written as a string. Attribute types are not mapped
/// between names and OIDs (`cn` and `2.5.4.3` differ).
///
/// Escaped bytes that are not UTF-8 stay as `\xx` so distinct values keep distinct keys.
/// A malformed DN (a dangling `\`, bad hex, an RDN without `=`, an empty RDN) is not an
/// error: its key is the text lower-cased under a prefix no well-formed key has, so it
/// equals only the same malformed text.
pub(crate) fn normalise_dn(dn: &str) -> String {
    plain_key(dn).unwrap_or_else(|| parsed_key(dn))
}

/// The key of a DN with nothing to unescape or sort (almost every DN a directory sends:
/// `uid=jdoe,ou=People,dc=corp,dc=test`), written directly; `None` for anything else,
/// which [`parsed_key`] handles. It equals what `parsed_key` gives for the same text (a
/// test compares the two).
fn plain_key(dn: &str) -> Option<String> {
    let mut key = String::with_capacity(dn.len());
    for (index, rdn) in dn.split(',').enumerate() {
        let (kind, value) = rdn.split_once('=')?;
        let kind = kind.trim_ascii();
        let value = value.trim_matches(' ');
        let plain = |c: char| !c.is_control() && !ESCAPED_ANYWHERE.contains(&c) && c != '#';
        if !is_attribute_type(kind) || value.is_empty() || !value.chars().all(plain) {
            return None;
        }
        if index > 0 {
            key.push(',');
        }
        for c in kind.chars() {
            key.push(c.to_ascii_lowercase());
        }
        key.push('=');
        for c in value.chars().flat_map(char::to_lowercase) {
            // A fold into a special or a control character takes the careful path.
            if c.is_control() || ESCAPED_ANYWHERE.contains(&c) {
                return None;
            }
            key.push(c);
        }
    }
    Some(key)
}

/// The key of any DN, by parsing it in full.
fn parsed_key(dn: &str) -> String {
    match parse_dn(dn) {
        Some(rdns) => rdns
            .iter()
            .map(|rdn| rdn.iter().map(Ava::key).collect::<Vec<_>>().join("+"))
            .collect::<Vec<_>>()
            .join(","),
        None => format!("{INVALID_PREFIX}{}", dn.trim().to_lowercase()),
    }
}

/// One attribute-value assertion of an RDN, both halves already in key form.
///
/// Field order matters: the derived `Ord` sorts a multi-valued RDN by type, then value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ava {
    /// The attribute type, lower-cased.
    kind: String,
    /// The value, case-folded and escaped.
    value: String,
}

impl Ava {
    /// `type=value`, as it stands in the key.
    fn key(&self) -> String {
        format!("{}={}", self.kind, self.value)
    }
}

/// What ended a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `+`: another part of the same RDN follows.
    Plus,
    /// `,` or `;`: another RDN follows.
    Rdn,
    /// The end of the DN.
    Eof,
}

/// The input as a cursor over its characters.
type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// A DN's RDNs, each with its parts sorted; `None` if the DN is malformed.
fn parse_dn(dn: &str) -> Option<Vec<Vec<Ava>>> {
    let mut rdns = Vec::new();
    if dn.trim_ascii().is_empty() {
        // The empty DN (the root DSE) is well-formed and has no RDN.
        return Some(rdns);
    }
    let mut chars = dn.chars().peekable();
    let mut rdn = Vec::new();
    loop {
        let kind = parse_type(&mut chars)?;
        let (value, end) = parse_value(&mut chars)?;
        rdn.push(Ava { kind, value });
        if end != End::Plus {
            rdn.sort_unstable();
            rdns.push(std::mem::take(&mut rdn));
        }
        if end == End::Eof {
            return Some(rdns);
        }
    }
}

/// An attribute type up to and including its `=`, lower-cased; `None` unless it is a
/// non-empty name or OID (ASCII letters, digits, `-` and `.`).
fn parse_type(chars: &mut Chars<'_>) -> Option<String> {
    let mut kind = String::new();
    loop {
        match chars.next()? {
            '=' => break,
            c => kind.push(c),
        }
    }
    let kind = kind.trim_ascii();
    if is_attribute_type(kind) {
        Some(kind.to_ascii_lowercase())
    } else {
        None
    }
}

/// Whether `text` can be an attribute type: a descriptor or an OID, loosely (RFC 4512's
/// exact grammar is the server's to enforce; this only keeps separators and escapes out).
fn is_attribute_type(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A value up to and including the separator that ends it, in key form.
fn parse_value(chars: &mut Chars<'_>) -> Option<(String, End)> {
    while chars.next_if_eq(&' ').is_some() {}
    if chars.next_if_eq(&'#').is_some() {
        return parse_ber_value(chars);
    }
    let mut bytes = Vec::new();
    // The bytes up to the last one that is not an unescaped space: the rest is trimmed.
    let mut kept = 0;
    let end = loop {
        let Some(c) = chars.next() else { break End::Eof };
        match c {
            ',' | ';' => break End::Rdn,
            '+' => break End::Plus,
            ' ' => bytes.push(b' '),
            '\\' => {
                parse_escape(chars, &mut bytes)?;
                kept = bytes.len();
            }
            c => {
                push_char(&mut bytes, c);
                kept = bytes.len();
            }
        }
    };
    bytes.truncate(kept);
    Some((value_key(&bytes), end))
}

/// The rest of an escape after its `\`: a hex pair as one byte, any other character as
/// itself. `None` for a dangling `\` or a hex digit without its pair.
fn parse_escape(chars: &mut Chars<'_>, bytes: &mut Vec<u8>) -> Option<()> {
    let c = chars.next()?;
    match c.to_digit(16) {
        Some(high) => {
            let low = chars.next()?.to_digit(16)?;
            // Two hex digits are at most 0xff, so the conversion cannot fail.
            bytes.push(u8::try_from(high * 16 + low).ok()?);
        }
        None => push_char(bytes, c),
    }
    Some(())
}

/// Appends `c` as UTF-8.
fn push_char(bytes: &mut Vec<u8>, c: char) {
    let mut buffer = [0; 4];
    bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
}

/// A `#` value after its `#`: hex pairs, then optional spaces, up to the separator. Kept
/// as `#` and the hex lower-cased; `None` if empty, odd or not hex.
fn parse_ber_value(chars: &mut Chars<'_>) -> Option<(String, End)> {
    let mut value = String::from("#");
    let mut trailing_space = false;
    let end = loop {
        let Some(c) = chars.next() else { break End::Eof };
        match c {
            ',' | ';' => break End::Rdn,
            '+' => break End::Plus,
            ' ' => trailing_space = true,
            c if c.is_ascii_hexdigit() && !trailing_space => value.push(c.to_ascii_lowercase()),
            _ => return None,
        }
    };
    let digits = value.len() - 1;
    (digits > 0 && digits % 2 == 0).then_some((value, end))
}

/// One unit of a decoded value: a character, or a byte that is not part of valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A character, already case-folded.
    Char(char),
    /// A byte outside valid UTF-8, kept so distinct values keep distinct keys.
    Byte(u8),
}

/// A decoded value's bytes, case-folded and written in the key's one escaping.
fn value_key(bytes: &[u8]) -> String {
    let mut units = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        units.extend(chunk.valid().chars().flat_map(char::to_lowercase).map(Unit::Char));
        units.extend(chunk.invalid().iter().copied().map(Unit::Byte));
    }
    let last = units.len().saturating_sub(1);
    let mut key = String::with_capacity(units.len());
    for (i, unit) in units.into_iter().enumerate() {
        match unit {
            Unit::Byte(b) => push_hex(&mut key, b),
            Unit::Char(c) if c.is_control() => {
                let mut buffer = [0; 4];
                for b in c.encode_utf8(&mut buffer).bytes() {
                    push_hex(&mut key, b);
                }
            }
            Unit::Char(c) => {
                let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
                if edge || ESCAPED_ANYWHERE.contains(&c) {
                    key.push('\\');
                }
                key.push(c);
            }
        }
    }
    key
}

/// Appends `\xx`, lower-case hex.
fn push_hex(key: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    key.push('\\');
    key.push(char::from(HEX[usize::from(b >> 4)]));
    key.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// An attribute name carrying Active Directory's `range=` option: one chunk of a
/// multi-valued attribute too large to return at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangedAttribute<'a> {
    /// The attribute type, without options (`member`). Other options (`binary`) are not
    /// kept: the caller asked for them and knows them.
    pub base: &'a str,
    /// The index of this chunk's first value.
    pub start: u64,
    /// The index of this chunk's last value; `None` (`*`) when this chunk is the last.
    pub end: Option<u64>,
}

/// Reads a ranged attribute name: `member;range=0-1499`, `member;range=1500-*`, the
/// option in any case and among others (`member;binary;range=0-*`). `None` for a name
/// without a range, or with a malformed one: a missing or non-decimal bound, a bound past
/// `u64`, an end before the start, two ranges, an empty option or type.
pub(crate) fn ranged_attribute(name: &str) -> Option<RangedAttribute<'_>> {
    let mut parts = name.split(';');
    let base = parts.next()?;
    if !is_attribute_type(base) {
        return None;
    }
    let mut range = None;
    for option in parts {
        if option.is_empty() {
            return None;
        }
        let Some(spec) = strip_prefix_ignore_ascii_case(option, "range=") else {
            continue;
        };
        if range.is_some() {
            return None;
        }
        range = Some(parse_range(spec)?);
    }
    let (start, end) = range?;
    Some(RangedAttribute { base, start, end })
}

/// `text` without `prefix`, compared ignoring ASCII case; `None` if it does not start so.
fn strip_prefix_ignore_ascii_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// `start-end` or `start-*`, as bounds; `None` if malformed or the end is before the start.
fn parse_range(spec: &str) -> Option<(u64, Option<u64>)> {
    let (start, end) = spec.split_once('-')?;
    let start = parse_decimal(start)?;
    if end == "*" {
        return Some((start, None));
    }
    let end = parse_decimal(end)?;
    (end >= start).then_some((start, Some(end)))
}

/// A non-empty run of ASCII digits as a `u64` (no sign, unlike `str::parse`); `None` on
/// overflow.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The name to ask for the chunk after one that ended at `end`: `{base};range={end+1}-*`.
/// `None` if `end` is `u64::MAX` (no chunk can follow).
pub(crate) fn next_range_attribute(base: &str, end: u64) -> Option<String> {
    let next = end.checked_add(1)?;
    Some(format!("{base};range={next}-*"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Asserts that every DN in `dns` has the same key, and returns it.
    fn same_key(dns: &[&str]) -> String {
        let key = normalise_dn(dns[0]);
        for dn in dns {
            assert_eq!(normalise_dn(dn), key, "{dn:?} vs {:?}", dns[0]);
        }
        key
    }

    /// Whether `dn` fell to the malformed path.
    fn is_invalid(dn: &str) -> bool {
        normalise_dn(dn).starts_with(INVALID_PREFIX)
    }

    /// The case the brief names: escaping, case and spaces differ, the DN does not.
    #[test]
    fn escaped_comma_case_and_spaces_give_one_key() {
        let key = same_key(&[
            "CN=Smith\\, John,OU=People , DC=corp",
            "cn=smith\\2c john,ou=people,dc=corp",
            "cn=SMITH\\2C JOHN, ou=PEOPLE, dc=CORP",
            "  cn = Smith\\, John ;ou=People;dc=corp  ",
        ]);
        assert_eq!(key, "cn=smith\\, john,ou=people,dc=corp");
    }

    /// Directories return multi-valued RDNs in either order.
    #[test]
    fn multi_valued_rdn_parts_are_sorted() {
        let key = same_key(&["cn=a+uid=b,dc=x", "uid=B+cn=A,dc=x", "UID = b + CN = a , DC = X"]);
        assert_eq!(key, "cn=a+uid=b,dc=x");
        assert_ne!(normalise_dn("cn=a+uid=b"), normalise_dn("cn=a,uid=b"));
        assert_eq!(normalise_dn("cn=b+cn=a"), "cn=a+cn=b");
    }

    /// RDN order is significant and must not be sorted.
    #[test]
    fn rdn_order_matters() {
        assert_ne!(normalise_dn("cn=a,dc=b"), normalise_dn("dc=b,cn=a"));
    }

    /// An escaped space is data; an unescaped one at either end is not.
    #[test]
    fn escaped_edge_spaces_are_kept() {
        assert_ne!(normalise_dn("cn=x\\ "), normalise_dn("cn=x"));
        assert_eq!(normalise_dn("cn=x\\ "), normalise_dn("cn=x\\20"));
        assert_eq!(normalise_dn("cn=x\\ "), "cn=x\\ ");
        assert_eq!(normalise_dn("cn=x\\  "), "cn=x\\ ");
        assert_eq!(normalise_dn("cn=\\ x"), "cn=\\ x");
        assert_ne!(normalise_dn("cn=\\ x"), normalise_dn("cn=x"));
        // Inner spaces are kept, escaped or not; only the edges are escaped in the key.
        assert_eq!(normalise_dn("cn=a  b"), "cn=a  b");
        assert_eq!(normalise_dn("cn=\\20\\20"), "cn=\\ \\ ");
        assert_eq!(normalise_dn("cn=\\ "), "cn=\\ ");
        // Unescaped spaces between an escaped one and the end go with the escaped one.
        assert_eq!(normalise_dn("cn=x \\ "), "cn=x \\ ");
    }

    /// Every special is escaped the same way in the key, however it was written.
    #[test]
    fn specials_are_escaped_one_way() {
        let key = same_key(&[
            "cn=a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\=i",
            "cn=a\\2cb\\2Bc\\22d\\5ce\\3cf\\3eg\\3bh\\3di",
        ]);
        assert_eq!(key, "cn=a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\=i");
        // RFC 4514 allows an unescaped '=' inside a value.
        assert_eq!(normalise_dn("cn=a=b"), "cn=a\\=b");
        // A leading '#' is escaped, an inner one is not.
        assert_eq!(normalise_dn("cn=\\#1"), "cn=\\#1");
        assert_eq!(normalise_dn("cn=1#"), "cn=1#");
        // Escapes the RFC does not list still stand for the character.
        assert_eq!(normalise_dn("cn=a\\/b"), "cn=a/b");
    }

    /// The key re-read gives itself, so keys can be stored and compared later.
    #[test]
    fn key_is_a_fixed_point() {
        for dn in [
            "CN=Smith\\, John,OU=People , DC=corp",
            "uid=B+cn=A",
            "cn=\\ \\#x \\ ",
            "cn=\\00\\01\\7f",
            "cn=\\c3\\28\\ff",
            "cn=\\e2\\82,dc=\\80",
            "cn=#04024869",
            "cn=Ünïcödé ÉCOLE",
            "cn=a\\2cb\\2Bc\\22d\\5ce\\3cf\\3eg\\3bh\\3di",
            "cn=\\c2\\80",
            "",
        ] {
            let key = normalise_dn(dn);
            assert!(!key.starts_with(INVALID_PREFIX), "{dn:?} -> {key:?}");
            assert_eq!(normalise_dn(&key), key, "{dn:?}");
        }
    }

    /// Values fold with Unicode case rules; types fold ASCII only.
    #[test]
    fn values_fold_unicode_case() {
        same_key(&["cn=ÉCOLE", "cn=école", "CN=\\c3\\89cole"]);
        assert_eq!(normalise_dn("cn=ÉCOLE"), "cn=école");
        assert_eq!(normalise_dn("2.5.4.3=X"), "2.5.4.3=x");
        assert_ne!(normalise_dn("2.5.4.3=x"), normalise_dn("cn=x"));
    }

    /// Hex escapes of multi-byte UTF-8 decode to the character.
    #[test]
    fn hex_utf8_decodes() {
        assert_eq!(normalise_dn("cn=\\E2\\82\\AC"), "cn=€");
        assert_eq!(normalise_dn("cn=\\e2\\82\\ac"), normalise_dn("cn=€"));
    }

    /// Bytes that are not UTF-8 keep distinct keys, in lower-case hex.
    #[test]
    fn invalid_utf8_stays_as_hex() {
        assert_eq!(normalise_dn("cn=\\FF"), "cn=\\ff");
        assert_eq!(normalise_dn("cn=\\FFa\\C3"), "cn=\\ffa\\c3");
        assert_ne!(normalise_dn("cn=\\ff"), normalise_dn("cn=\\fe"));
        assert_ne!(normalise_dn("cn=\\ff"), normalise_dn("cn=ÿ"));
        // A truncated sequence followed by ASCII: the ASCII is still folded.
        assert_eq!(normalise_dn("cn=\\e2\\82A"), "cn=\\e2\\82a");
        // A lone continuation byte after a complete character.
        assert_eq!(normalise_dn("cn=\\c3\\a9\\a9"), "cn=é\\a9");
    }

    /// NUL and other control characters are escaped, so the key carries no raw NUL.
    #[test]
    fn controls_are_hex_escaped() {
        assert_eq!(normalise_dn("cn=a\\00b"), "cn=a\\00b");
        assert_eq!(normalise_dn("cn=a\u{0}b"), "cn=a\\00b");
        assert_eq!(normalise_dn("cn=\\0a\\0D\\7F"), "cn=\\0a\\0d\\7f");
        assert_eq!(normalise_dn("cn=\u{85}"), "cn=\\c2\\85");
        assert_ne!(normalise_dn("cn=a\\00"), normalise_dn("cn=a"));
        assert!(!normalise_dn("cn=\\00").contains('\u{0}'));
        // A tab is data, not a space to trim.
        assert_eq!(normalise_dn("cn=x\t"), "cn=x\\09");
    }

    /// BER values are kept as lower-case hex and never equal a string value.
    #[test]
    fn ber_values_are_kept_as_hex() {
        let key = same_key(&["CN=#04024869,dc=x", "cn = #04024869 ,dc=x", "cn=#04024869;dc=x"]);
        assert_eq!(key, "cn=#04024869,dc=x");
        assert_eq!(normalise_dn("cn=#ABcd"), "cn=#abcd");
        assert_ne!(normalise_dn("cn=#04024869"), normalise_dn("cn=\\#04024869"));
        assert_eq!(normalise_dn("cn=#00+uid=a"), "cn=#00+uid=a");
        for bad in [
            "cn=#",
            "cn=#0",
            "cn=#0g",
            "cn=#00 00",
            "cn=#00\\00",
            "cn=#abc,dc=x",
        ] {
            assert!(is_invalid(bad), "{bad:?}");
        }
    }

    /// The empty DN is the root DSE, not a malformed DN.
    #[test]
    fn empty_dn_is_empty_key() {
        assert_eq!(normalise_dn(""), "");
        assert_eq!(normalise_dn("   "), "");
        // An empty value is allowed.
        assert_eq!(normalise_dn("cn=,dc=x"), "cn=,dc=x");
        assert_eq!(normalise_dn("cn=  "), "cn=");
    }

    /// Malformed DNs do not panic and equal no well-formed key.
    #[test]
    fn malformed_dns_take_the_invalid_path() {
        for bad in [
            "cn=a\\",
            "cn=\\4",
            "cn=\\4g",
            "cn=a,",
            "cn=a,,dc=b",
            ",cn=a",
            "cn",
            "cn=a,dc",
            "=a",
            "c n=a",
            "cn\\=x=a",
            "cn=a+",
            "+cn=a",
            "c;n=a",
            "ü=a",
        ] {
            let key = normalise_dn(bad);
            assert!(key.starts_with(INVALID_PREFIX), "{bad:?} -> {key:?}");
        }
        assert_eq!(normalise_dn("  CN=A,  "), format!("{INVALID_PREFIX}cn=a,"));
        // Two spellings of one malformed DN differ: it cannot be normalised.
        assert_ne!(normalise_dn("cn=a,"), normalise_dn("CN=A ,"));
        // An escaped character that is not a hex digit stands for itself, then folds.
        assert_eq!(normalise_dn("cn=\\G"), "cn=g");
    }

    /// A malformed DN cannot be made to collide with a well-formed one.
    #[test]
    fn malformed_key_equals_no_well_formed_key() {
        let bad = normalise_dn("cn=x,");
        let forged = format!("\\00invalid:{}", "cn=x,");
        assert_ne!(bad, normalise_dn(&forged));
        assert!(!normalise_dn("cn=\\00invalid:x").starts_with(INVALID_PREFIX));
    }

    /// Backslash runs: an even run is literal backslashes, an odd run dangles.
    #[test]
    fn long_backslash_runs() {
        let even = format!("cn={}", "\\".repeat(100_000));
        let key = normalise_dn(&even);
        assert_eq!(key, format!("cn={}", "\\".repeat(100_000)));
        let odd = format!("cn={}", "\\".repeat(100_001));
        assert!(is_invalid(&odd));
        let before_comma = format!("cn={},dc=x", "\\".repeat(99_999));
        // The last backslash escapes the comma: one RDN whose value runs to the end.
        assert_eq!(
            normalise_dn(&before_comma),
            format!("cn={}\\,dc\\=x", "\\".repeat(99_998))
        );
    }

    /// Large DNs finish, whatever shape: long values, many RDNs, many RDN parts.
    #[test]
    fn hundred_kilobyte_dns() {
        let long_value = format!("CN={},DC=x", "A".repeat(100_000));
        assert_eq!(
            normalise_dn(&long_value),
            format!("cn={},dc=x", "a".repeat(100_000))
        );

        let many_rdns = vec!["DC=x"; 20_000].join(",");
        assert_eq!(normalise_dn(&many_rdns), vec!["dc=x"; 20_000].join(","));

        let many_parts: Vec<String> = (0..20_000).rev().map(|i| format!("cn={i:05}")).collect();
        let key = normalise_dn(&many_parts.join("+"));
        let mut sorted = many_parts.clone();
        sorted.sort();
        assert_eq!(key, sorted.join("+"));

        let hex = format!("cn={}", "\\ff".repeat(33_000));
        assert_eq!(normalise_dn(&hex), format!("cn={}", "\\ff".repeat(33_000)));

        let nul = format!("cn={}", "\\00".repeat(33_000));
        assert_eq!(normalise_dn(&nul), nul);

        let spaces = format!("cn=x{}", " ".repeat(100_000));
        assert_eq!(normalise_dn(&spaces), "cn=x");

        let commas = ",".repeat(100_000);
        assert!(is_invalid(&commas));
        let equals = "=".repeat(100_000);
        assert!(is_invalid(&equals));
        let ber = format!("cn=#{}", "0".repeat(100_000));
        assert_eq!(normalise_dn(&ber), ber);
    }

    /// Arbitrary junk never panics, whatever it contains.
    #[test]
    fn junk_does_not_panic() {
        let alphabet = [
            '\\', ',', '+', ';', '=', '#', ' ', '"', 'a', 'F', '0', '\u{0}', 'é', '\u{85}',
        ];
        // Every string of up to four characters from the alphabet.
        let mut strings = vec![String::new()];
        for _ in 0..4 {
            strings = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            for s in &strings {
                let key = normalise_dn(s);
                if !key.starts_with(INVALID_PREFIX) {
                    assert_eq!(normalise_dn(&key), key, "{s:?}");
                }
            }
        }
    }

    /// The chunk names Active Directory sends.
    #[test]
    fn ranged_attribute_reads_chunks() {
        assert_eq!(
            ranged_attribute("member;range=0-1499"),
            Some(RangedAttribute {
                base: "member",
                start: 0,
                end: Some(1499)
            })
        );
        assert_eq!(
            ranged_attribute("member;range=1500-*"),
            Some(RangedAttribute {
                base: "member",
                start: 1500,
                end: None
            })
        );
        assert_eq!(
            ranged_attribute("member;Range=5-5"),
            Some(RangedAttribute {
                base: "member",
                start: 5,
                end: Some(5)
            })
        );
        assert_eq!(
            ranged_attribute("Member;RANGE=0-*"),
            Some(RangedAttribute {
                base: "Member",
                start: 0,
                end: None
            })
        );
        assert_eq!(
            ranged_attribute(&format!("member;range=0-{}", u64::MAX)),
            Some(RangedAttribute {
                base: "member",
                start: 0,
                end: Some(u64::MAX)
            })
        );
        assert_eq!(
            ranged_attribute("member;range=007-010").map(|r| (r.start, r.end)),
            Some((7, Some(10)))
        );
    }

    /// Other options may stand on either side of the range.
    #[test]
    fn ranged_attribute_among_other_options() {
        let expected = Some(RangedAttribute {
            base: "member",
            start: 0,
            end: None,
        });
        assert_eq!(ranged_attribute("member;binary;range=0-*"), expected);
        assert_eq!(ranged_attribute("member;range=0-*;binary"), expected);
        assert_eq!(ranged_attribute("member;x-opt;lang-en;range=0-*"), expected);
        // An option that merely contains "range" is not the range.
        assert_eq!(ranged_attribute("member;xrange=0-*"), None);
    }

    /// Names without a range, or with a malformed one, are not chunks.
    #[test]
    fn ranged_attribute_rejects_malformed() {
        for bad in [
            "member",
            "member;binary",
            "member;range=5-2",
            "member;range=",
            "member;range=0",
            "member;range=0-",
            "member;range=-5",
            "member;range=*-5",
            "member;range=*",
            "member;range=0-**",
            "member;range=+1-2",
            "member;range=1-+2",
            "member;range= 0-1",
            "member;range=0-1 ",
            "member;range=0--1",
            "member;range=0-1-2",
            "member;range=a-b",
            "member;range=١-٢",
            "member;range=0-18446744073709551616",
            "member;range=18446744073709551616-*",
            "member;range=0-*;range=0-*",
            "member;;range=0-*",
            "member;range=0-*;",
            ";range=0-*",
            "mem ber;range=0-*",
            "",
            ";",
            "range=0-*",
            "member;rangé=0-*",
            "member;ra",
        ] {
            assert_eq!(ranged_attribute(bad), None, "{bad:?}");
        }
    }

    /// A long hostile name is rejected without panicking.
    #[test]
    fn ranged_attribute_hostile_input() {
        let digits = format!("member;range=0-{}", "9".repeat(100_000));
        assert_eq!(ranged_attribute(&digits), None);
        let options = format!("member{};range=0-*", ";x".repeat(50_000));
        assert_eq!(ranged_attribute(&options).map(|r| r.base), Some("member"));
        assert_eq!(ranged_attribute(&";".repeat(100_000)), None);
        // A multi-byte character where "range=" would end must not split a character.
        assert_eq!(ranged_attribute("member;rangé-0-*"), None);
        assert_eq!(ranged_attribute("member;€"), None);
    }

    /// The next chunk starts after the last one ended, open-ended.
    #[test]
    fn next_range_names_the_next_chunk() {
        assert_eq!(
            next_range_attribute("member", 1499).as_deref(),
            Some("member;range=1500-*")
        );
        assert_eq!(
            next_range_attribute("member", 0).as_deref(),
            Some("member;range=1-*")
        );
        assert_eq!(next_range_attribute("member", u64::MAX), None);
        // What it names reads back as the chunk it asks for.
        let next = next_range_attribute("member", 2999).unwrap();
        assert_eq!(
            ranged_attribute(&next),
            Some(RangedAttribute {
                base: "member",
                start: 3000,
                end: None
            })
        );
    }

    /// The direct path and the parser agree on every DN the direct path takes.
    #[test]
    fn the_plain_path_gives_the_parsed_key() {
        let parts = [
            "uid=jdoe",
            "OU=People ",
            " dc = corp",
            "CN=Ærøskøbing Ünïcode",
            "cn=a b  c",
            "2.5.4.3=x",
            "cn=İstanbul",
            "o=ACME Inc.",
            "l=Saint-Étienne",
            "cn=x ",
            "cn= y",
        ];
        let mut checked = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    let dn = format!("{a},{b},{c}");
                    if let Some(plain) = plain_key(&dn) {
                        assert_eq!(plain, parsed_key(&dn), "{dn}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1_000, "{checked}");
        for not_plain in ["cn=a\\,b", "cn=a+uid=b", "cn=#04", "cn=a=b", "cn=", "cn=\u{85}x"] {
            assert_eq!(plain_key(not_plain), None, "{not_plain}");
        }
    }
}
