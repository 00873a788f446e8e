//! The little of iCalendar (RFC 5545) and vCard (RFC 6350, and 3.0 of RFC 2426) that the
//! connector needs: reading an event's title, times, location and attendees, and a
//! contact's name, addresses and phone numbers; writing a new event or contact.
//!
//! Times: `YYYYMMDDTHHMMSSZ` is UTC; a date-time without `Z` (floating, or with a `TZID`,
//! whose rules are not read) is taken as UTC; `VALUE=DATE` (`YYYYMMDD`) is midnight UTC, and
//! an all-day event without an end lasts one day. Recurring events show their first
//! occurrence (the master VEVENT; overrides with a RECURRENCE-ID are not separate events).

use redoubt_mls::mail::{CalendarEvent, ContactCard, NewContact, NewEvent};

/// Longest title, location or name kept, in bytes (longer ones are cut).
pub(crate) const TEXT_BYTES_MAX: usize = 1024;
/// Longest UID kept.
pub(crate) const UID_BYTES_MAX: usize = 512;
/// Most attendees kept for one event.
pub(crate) const ATTENDEES_MAX: usize = 64;
/// Most addresses or phone numbers kept for one contact.
pub(crate) const VALUES_MAX: usize = 32;
/// Longest address or phone number kept.
pub(crate) const VALUE_BYTES_MAX: usize = 320;
/// Most content lines read from one object.
const LINES_MAX: usize = 20_000;

/// One content line: upper-cased name (group prefix dropped), parameters, raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Property {
    pub name: String,
    pub params: Vec<(String, String)>,
    pub value: String,
}

impl Property {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Logical lines: CRLF or LF ends a line, and a line starting with a space or tab
/// continues the one before (its first character dropped).
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t'])
            && let Some(last) = lines.last_mut()
        {
            last.push_str(rest);
            continue;
        }
        if raw.is_empty() {
            continue;
        }
        if lines.len() >= LINES_MAX {
            break;
        }
        lines.push(raw.to_owned());
    }
    lines
}

/// `NAME;P=v;Q="a:b":value`; `None` for a line that is not a content line.
fn parse_line(line: &str) -> Option<Property> {
    let mut in_quotes = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ':' if !in_quotes => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let mut parts = split_unquoted(head, ';').into_iter();
    let name = parts.next()?;
    // vCard groups: `item1.EMAIL`.
    let name = name.rsplit('.').next().unwrap_or(name).to_ascii_uppercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_uppercase(),
                v.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect();
    Some(Property {
        name,
        params,
        value: value.to_owned(),
    })
}

fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// A TEXT value: `\n`, `\N`, `\,`, `\;` and `\\` unescaped.
pub(crate) fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A TEXT value escaped; carriage returns and other control characters but newlines and
/// tabs are dropped.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One content line folded at 75 octets (never inside a character), with its CRLF.
fn fold(line: &str, out: &mut String) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// The longest prefix of `text` of at most `max` bytes ending on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC calendar date (year, month 1–12, day 1–31) of a day count since 1970-01-01
/// (Howard Hinnant's days-to-civil algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A DATE (`YYYYMMDD`) or DATE-TIME (`YYYYMMDDTHHMMSS[Z]`) as Unix seconds, and whether
/// it was a date.
pub(crate) fn parse_time(value: &str) -> Option<(i64, bool)> {
    let value = value.trim();
    let (date, time) = match value.split_once(['T', 't']) {
        Some((date, time)) => (date, Some(time)),
        None => (value, None),
    };
    if date.len() != 8 || !value.is_ascii() {
        return None;
    }
    let (year, month, day) = (digits(&date[..4])?, digits(&date[4..6])?, digits(&date[6..])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let Some(time) = time else {
        return Some((days * 86_400, true));
    };
    let time = time.strip_suffix(['Z', 'z']).unwrap_or(time);
    if time.len() != 6 {
        return None;
    }
    let (h, m, s) = (digits(&time[..2])?, digits(&time[2..4])?, digits(&time[4..])?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((days * 86_400 + h * 3_600 + m * 60 + s.min(59), false))
}

/// `YYYYMMDDTHHMMSSZ`.
pub(crate) fn format_utc(unix_s: i64) -> String {
    let (year, month, day) = civil_from_days(unix_s.div_euclid(86_400));
    let secs = unix_s.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A DURATION (`P1DT2H`, `-PT15M`, `P2W`) in seconds.
fn parse_duration(value: &str) -> Option<i64> {
    let value = value.trim();
    let (sign, rest) = match value.as_bytes().first()? {
        b'-' => (-1, &value[1..]),
        b'+' => (1, &value[1..]),
        _ => (1, value),
    };
    let rest = rest.strip_prefix('P')?;
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut in_time = false;
    let mut any = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' if number.is_empty() => in_time = true,
            'W' | 'D' | 'H' | 'M' | 'S' => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                let unit = match (c, in_time) {
                    ('W', false) => 604_800,
                    ('D', false) => 86_400,
                    ('H', true) => 3_600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(unit)?)?;
                any = true;
            }
            _ => return None,
        }
    }
    (any && number.is_empty()).then_some(sign * total)
}

/// The properties of each component named `name` (those of components nested inside it,
/// such as a VALARM in a VEVENT, left out).
fn components(text: &str, name: &str) -> Vec<Vec<Property>> {
    let mut found = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut current: Option<Vec<Property>> = None;
    for line in unfold(text) {
        let Some(property) = parse_line(&line) else {
            continue;
        };
        match property.name.as_str() {
            "BEGIN" => {
                let component = property.value.trim().to_ascii_uppercase();
                if component == name && current.is_none() {
                    current = Some(Vec::new());
                }
                stack.push(component);
            }
            "END" => {
                let ended = stack.pop();
                if ended.as_deref() == Some(name)
                    && !stack.iter().any(|c| c == name)
                    && let Some(props) = current.take()
                {
                    found.push(props);
                }
            }
            _ => {
                if stack.last().map(String::as_str) == Some(name)
                    && let Some(props) = current.as_mut()
                {
                    props.push(property);
                }
            }
        }
    }
    found
}

fn first<'a>(props: &'a [Property], name: &str) -> Option<&'a Property> {
    props.iter().find(|p| p.name == name)
}

/// An address from `mailto:x`, `MAILTO:x` or a bare address.
fn mail_address(value: &str) -> String {
    let value = value.trim();
    let address = match (value.get(..7), value.get(7..)) {
        (Some(scheme), Some(rest)) if scheme.eq_ignore_ascii_case("mailto:") => rest,
        _ => value,
    };
    cut(address, VALUE_BYTES_MAX)
}

/// The event a calendar object resource holds: its master VEVENT (the first without a
/// RECURRENCE-ID, else the first). `None` when it holds no event with a start.
pub(crate) fn parse_event(href: &str, text: &str) -> Option<CalendarEvent> {
    let events = components(text, "VEVENT");
    let event = events
        .iter()
        .find(|props| first(props, "RECURRENCE-ID").is_none())
        .or_else(|| events.first())?;
    let start_prop = first(event, "DTSTART")?;
    let (start, all_day) = parse_time(&start_prop.value)?;
    let all_day = all_day
        || start_prop
            .param("VALUE")
            .is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
    let end = first(event, "DTEND")
        .and_then(|p| parse_time(&p.value))
        .map(|(end, _)| end)
        .or_else(|| {
            first(event, "DURATION")
                .and_then(|p| parse_duration(&p.value))
                .and_then(|d| start.checked_add(d))
        })
        .unwrap_or(if all_day { start + 86_400 } else { start })
        .max(start);
    let text_of = |name: &str| {
        first(event, name)
            .map(|p| cut(&unescape(&p.value), TEXT_BYTES_MAX))
            .unwrap_or_default()
    };
    let attendees = event
        .iter()
        .filter(|p| p.name == "ATTENDEE")
        .map(|p| mail_address(&p.value))
        .filter(|a| !a.is_empty())
        .take(ATTENDEES_MAX)
        .collect();
    Some(CalendarEvent {
        href: href.to_owned(),
        uid: cut(
            first(event, "UID").map(|p| p.value.trim()).unwrap_or_default(),
            UID_BYTES_MAX,
        ),
        title: text_of("SUMMARY"),
        start_unix_s: start,
        end_unix_s: end,
        location: text_of("LOCATION"),
        attendees,
    })
}

/// A VCALENDAR with one VEVENT for `event`; `organizer` (the user's address) organises it
/// when it has attendees.
pub(crate) fn event_ics(uid: &str, event: &NewEvent, organizer: &str, now_unix_s: i64) -> String {
    let mut out = String::new();
    let mut line = |l: String| fold(&l, &mut out);
    line("BEGIN:VCALENDAR".into());
    line("VERSION:2.0".into());
    line("PRODID:-//Redoubt//Connector//EN".into());
    line("BEGIN:VEVENT".into());
    line(format!("UID:{uid}"));
    line(format!("DTSTAMP:{}", format_utc(now_unix_s)));
    line(format!("DTSTART:{}", format_utc(event.start_unix_s)));
    line(format!("DTEND:{}", format_utc(event.end_unix_s)));
    line(format!("SUMMARY:{}", escape(&event.title)));
    if !event.location.is_empty() {
        line(format!("LOCATION:{}", escape(&event.location)));
    }
    if !event.attendees.is_empty() {
        line(format!("ORGANIZER:mailto:{organizer}"));
        for attendee in &event.attendees {
            line(format!(
                "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION:mailto:{attendee}"
            ));
        }
    }
    line("END:VEVENT".into());
    line("END:VCALENDAR".into());
    out
}

/// The contact a vCard holds; `None` when the text holds no vCard.
pub(crate) fn parse_contact(href: &str, text: &str) -> Option<ContactCard> {
    let cards = components(text, "VCARD");
    let card = cards.first()?;
    let name = first(card, "FN")
        .map(|p| unescape(&p.value).trim().to_owned())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            // N: family;given;additional;prefix;suffix
            first(card, "N").map(|p| {
                let parts: Vec<String> = split_unescaped(&p.value, ';');
                let order = [3, 1, 2, 0, 4];
                order
                    .iter()
                    .filter_map(|&i| parts.get(i))
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_default();
    let values = |prop: &str, clean: fn(&str) -> String| -> Vec<String> {
        card.iter()
            .filter(|p| p.name == prop)
            .map(|p| clean(&unescape(&p.value)))
            .filter(|v| !v.is_empty())
            .take(VALUES_MAX)
            .collect()
    };
    Some(ContactCard {
        href: href.to_owned(),
        uid: cut(
            first(card, "UID").map(|p| p.value.trim()).unwrap_or_default(),
            UID_BYTES_MAX,
        ),
        name: cut(&name, TEXT_BYTES_MAX),
        emails: values("EMAIL", mail_address),
        phones: values("TEL", |v| {
            let v = v.trim();
            let v = match (v.get(..4), v.get(4..)) {
                (Some(scheme), Some(rest)) if scheme.eq_ignore_ascii_case("tel:") => rest,
                _ => v,
            };
            cut(v, VALUE_BYTES_MAX)
        }),
    })
}

/// A structured value's components, split at unescaped `sep` and unescaped.
fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            current.push(c);
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else if c == sep {
            parts.push(unescape(&std::mem::take(&mut current)));
        } else {
            current.push(c);
        }
    }
    parts.push(unescape(&current));
    parts
}

/// A vCard 3.0 for `contact`. The name's last word is taken as the family name in `N`.
pub(crate) fn contact_vcard(uid: &str, contact: &NewContact) -> String {
    let mut out = String::new();
    let mut line = |l: String| fold(&l, &mut out);
    let name = contact.name.trim();
    let (given, family) = match name.rsplit_once(' ') {
        Some((given, family)) => (given.trim(), family),
        None => ("", name),
    };
    line("BEGIN:VCARD".into());
    line("VERSION:3.0".into());
    line("PRODID:-//Redoubt//Connector//EN".into());
    line(format!("UID:{uid}"));
    line(format!("FN:{}", escape(name)));
    line(format!("N:{};{};;;", escape(family), escape(given)));
    for email in &contact.emails {
        line(format!("EMAIL;TYPE=INTERNET:{}", escape(email)));
    }
    for phone in &contact.phones {
        line(format!("TEL;TYPE=VOICE:{}", escape(phone)));
    }
    line("END:VCARD".into());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn times_dates_and_durations() {
        assert_eq!(parse_time("19700101T000000Z"), Some((0, false)));
        assert_eq!(parse_time("20300102T100000Z"), Some((1_893_578_400, false)));
        assert_eq!(parse_time("20300102T100000"), Some((1_893_578_400, false)));
        assert_eq!(parse_time("20300102"), Some((1_893_542_400, true)));
        assert_eq!(parse_time("19691231T235959Z"), Some((-1, false)));
        assert_eq!(parse_time("20240229T120000Z"), Some((1_709_208_000, false)));
        for bad in [
            "",
            "2030",
            "2030010",
            "2030€01",
            "20300102T1€000",
            "20301301",
            "20300100",
            "20300102T25",
            "20300102T240000Z",
            "2030-01-02",
            "20300102Tabcdef",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        for t in [
            0,
            1_893_578_400,
            -1,
            1_709_208_000,
            4_102_444_799,
            -62_135_596_800,
        ] {
            assert_eq!(parse_time(&format_utc(t)), Some((t, false)), "{t}");
        }
        assert_eq!(format_utc(1_893_578_400), "20300102T100000Z");
        assert_eq!(parse_duration("PT1H30M"), Some(5_400));
        assert_eq!(parse_duration("P1DT2H"), Some(93_600));
        assert_eq!(parse_duration("P2W"), Some(1_209_600));
        assert_eq!(parse_duration("-PT15M"), Some(-900));
        assert_eq!(parse_duration("+P1D"), Some(86_400));
        for bad in ["", "P", "PT", "1H", "PT1D", "P1H", "P1", "PT1H2"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_event_is_read_with_folding_escapes_attendees_and_alarms_ignored() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:ev-1@example.com\r\nDTSTAMP:20300101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20300102T100000\r\nDURATION:PT45M\r\n\
SUMMARY:Budget review\\, Q3\\; final \\\\ draft\\nsecond line and a very long title th\r\n at goes on\r\n\
LOCATION:Room \"7\": east\r\n\
ATTENDEE;CN=\"Bob: the builder\";RSVP=TRUE:mailto:bob@corp.test\r\n\
ATTENDEE:MAILTO:carol@corp.test\r\n\
BEGIN:VALARM\r\nACTION:EMAIL\r\nSUMMARY:Alarm!\r\nATTENDEE:mailto:alarm@corp.test\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\n\
END:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:ev-1@example.com\r\nRECURRENCE-ID:20300109T100000\r\nDTSTART:20300109T120000\r\nSUMMARY:Moved\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
        let event = parse_event("/c/ev-1.ics", ics).unwrap();
        assert_eq!(event.href, "/c/ev-1.ics");
        assert_eq!(event.uid, "ev-1@example.com");
        assert_eq!(
            event.title,
            "Budget review, Q3; final \\ draft\nsecond line and a very long title that goes on"
        );
        assert_eq!(event.start_unix_s, 1_893_578_400);
        assert_eq!(event.end_unix_s, 1_893_578_400 + 45 * 60);
        assert_eq!(event.location, "Room \"7\": east");
        assert_eq!(event.attendees, vec!["bob@corp.test", "carol@corp.test"]);
    }

    #[test]
    fn all_day_and_open_ended_events() {
        let all_day = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nDTSTART;VALUE=DATE:20300102\nSUMMARY:Holiday\nEND:VEVENT\nEND:VCALENDAR\n";
        let event = parse_event("/a", all_day).unwrap();
        assert_eq!(
            (event.start_unix_s, event.end_unix_s),
            (1_893_542_400, 1_893_542_400 + 86_400)
        );
        let two_days = all_day.replace("SUMMARY", "DTEND;VALUE=DATE:20300104\nSUMMARY");
        let event = parse_event("/a", &two_days).unwrap();
        assert_eq!(event.end_unix_s - event.start_unix_s, 2 * 86_400);
        let instant = "BEGIN:VEVENT\nDTSTART:20300102T100000Z\nEND:VEVENT\n";
        let event = parse_event("/b", instant).unwrap();
        assert_eq!(event.start_unix_s, event.end_unix_s);
        assert_eq!((event.uid.as_str(), event.title.as_str()), ("", ""));
        let backwards = "BEGIN:VEVENT\nDTSTART:20300102T100000Z\nDTEND:20300101T100000Z\nEND:VEVENT\n";
        let event = parse_event("/b", backwards).unwrap();
        assert_eq!(
            event.start_unix_s, event.end_unix_s,
            "an end before the start is clamped"
        );
        for none in [
            "",
            "BEGIN:VCALENDAR\nBEGIN:VTODO\nDTSTART:20300102T100000Z\nEND:VTODO\nEND:VCALENDAR\n",
            "BEGIN:VEVENT\nSUMMARY:no start\nEND:VEVENT\n",
            "BEGIN:VEVENT\nDTSTART:garbage\nEND:VEVENT\n",
            "\u{0}\u{1}binary",
        ] {
            assert_eq!(parse_event("/x", none), None, "{none:?}");
        }
    }

    #[test]
    fn a_written_event_reads_back_and_is_folded() {
        let event = NewEvent {
            title: "Lunch, with; Bob \\ Carol\nand a very very very very very very very long tail €€€€€€"
                .into(),
            start_unix_s: 1_893_578_400,
            end_unix_s: 1_893_582_000,
            location: "Café".into(),
            attendees: vec!["bob@corp.test".into(), "carol@corp.test".into()],
        };
        let ics = event_ics("u-1@redoubt", &event, "alice@corp.test", 1_800_000_000);
        for line in ics.split("\r\n") {
            assert!(line.len() <= 75, "{line:?}");
        }
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"));
        assert!(ics.ends_with("END:VEVENT\r\nEND:VCALENDAR\r\n"));
        assert!(ics.contains("ORGANIZER:mailto:alice@corp.test\r\n"));
        assert!(ics.contains("DTSTART:20300102T100000Z\r\n"));
        let back = parse_event("/h", &ics).unwrap();
        assert_eq!(back.title, event.title);
        assert_eq!(back.location, event.location);
        assert_eq!(back.attendees, event.attendees);
        assert_eq!(
            (back.start_unix_s, back.end_unix_s),
            (event.start_unix_s, event.end_unix_s)
        );
        assert_eq!(back.uid, "u-1@redoubt");
        let control = NewEvent {
            title: "a\rb\u{7}c\td".into(),
            attendees: vec![],
            ..event
        };
        let ics = event_ics("u", &control, "alice@corp.test", 0);
        assert!(ics.contains("SUMMARY:abc d\r\n"), "{ics}");
        assert!(!ics.contains("ORGANIZER"));
    }

    #[test]
    fn contacts_read_and_write() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c-1\r\nFN:Bob Builder\\, Jr.\r\nN:Builder;Bob;;;Jr.\r\n\
item1.EMAIL;type=INTERNET;type=pref:bob@corp.test\r\nEMAIL:mailto:bob@home.test\r\n\
TEL;TYPE=CELL:+49 30 1234\r\nTEL;VALUE=uri:tel:+1-555-0100\r\nEND:VCARD\r\n";
        let contact = parse_contact("/b/c-1.vcf", card).unwrap();
        assert_eq!(contact.uid, "c-1");
        assert_eq!(contact.name, "Bob Builder, Jr.");
        assert_eq!(contact.emails, vec!["bob@corp.test", "bob@home.test"]);
        assert_eq!(contact.phones, vec!["+49 30 1234", "+1-555-0100"]);

        let no_fn = "BEGIN:VCARD\nVERSION:4.0\nN:Doe;Jane;Q.;Dr.;\nEND:VCARD\n";
        assert_eq!(parse_contact("/x", no_fn).unwrap().name, "Dr. Jane Q. Doe");
        assert_eq!(parse_contact("/x", "BEGIN:VEVENT\nEND:VEVENT\n"), None);

        let new = NewContact {
            name: "Carol Ann Jones; CFO".into(),
            emails: vec!["carol@corp.test".into()],
            phones: vec!["+1 555 0199".into()],
        };
        let vcard = contact_vcard("u-2@redoubt", &new);
        assert!(vcard.contains("N:CFO;Carol Ann Jones\\;;;;\r\n"), "{vcard}");
        let back = parse_contact("/h", &vcard).unwrap();
        assert_eq!(back.name, new.name);
        assert_eq!(back.emails, new.emails);
        assert_eq!(back.phones, new.phones);
        assert_eq!(back.uid, "u-2@redoubt");
    }

    #[test]
    fn sizes_are_bounded() {
        let many: String = (0..500)
            .map(|i| format!("ATTENDEE:mailto:a{i}@corp.test\n"))
            .collect();
        let long = "x".repeat(10_000);
        let ics = format!(
            "BEGIN:VEVENT\nDTSTART:20300102T100000Z\nSUMMARY:{long}\nLOCATION:{long}\nUID:{long}\n{many}END:VEVENT\n"
        );
        let event = parse_event("/x", &ics).unwrap();
        assert_eq!(event.attendees.len(), ATTENDEES_MAX);
        assert_eq!(event.title.len(), TEXT_BYTES_MAX);
        assert_eq!(event.location.len(), TEXT_BYTES_MAX);
        assert_eq!(event.uid.len(), UID_BYTES_MAX);
        assert_eq!(cut("ééé", 3), "é");
    }
}
