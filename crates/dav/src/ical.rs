//! Events and contacts to and from iCalendar (RFC 5545) and vCard (RFC 6350, and 3.0 of
//! RFC 2426), through Stalwart's `calcard`: reading an event's title, times, location and
//! attendees, and a contact's name, addresses and phone numbers; writing a new event or
//! contact. What is kept of each is bounded here (`*_MAX`); an object larger than
//! [`OBJECT_BYTES_MAX`] or of more than [`LINES_MAX`] lines is not read at all.
//!
//! Times: `YYYYMMDDTHHMMSSZ` is UTC; a date-time with a `TZID` is read in that time zone
//! (an IANA name, or a VTIMEZONE calcard recognises), one whose zone is unknown and a
//! floating one are taken as UTC; `VALUE=DATE` (`YYYYMMDD`) is midnight UTC, and an
//! all-day event without an end lasts one day. Recurring events show their first
//! occurrence (the master VEVENT; overrides with a RECURRENCE-ID are not separate events).

use calcard::common::PartialDateTime;
use calcard::common::timezone::Tz;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarEntry, ICalendarParameter,
    ICalendarParticipationRole, ICalendarParticipationStatus, ICalendarProperty, ICalendarValue, Uri,
};
use calcard::vcard::{VCard, VCardEntry, VCardParameter, VCardProperty, VCardValue};
use redoubt_mls::mail::{CalendarEvent, ContactCard, NewContact, NewEvent};

/// Longest title, location or name kept, in bytes (longer ones are cut).
pub const TEXT_BYTES_MAX: usize = 1024;
/// Longest UID kept.
pub const UID_BYTES_MAX: usize = 512;
/// Most attendees kept for one event.
pub const ATTENDEES_MAX: usize = 64;
/// Most addresses or phone numbers kept for one contact.
pub const VALUES_MAX: usize = 32;
/// Longest address or phone number kept.
pub const VALUE_BYTES_MAX: usize = 320;
/// Largest calendar object or vCard read (the parsed form is several times larger).
pub const OBJECT_BYTES_MAX: usize = 1024 * 1024;
/// Most lines (physical, so also most properties and components) in one object read.
pub const LINES_MAX: usize = 20_000;

/// Whether `text` is small enough to be handed to the parser.
fn within_bounds(text: &str) -> bool {
    text.len() <= OBJECT_BYTES_MAX && text.bytes().filter(|b| *b == b'\n').count() < LINES_MAX
}

/// The longest prefix of `text` of at most `max` bytes ending on a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
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

fn entry<'a>(component: &'a ICalendarComponent, name: &ICalendarProperty) -> Option<&'a ICalendarEntry> {
    component.property(name)
}

fn first_text<'a>(component: &'a ICalendarComponent, name: &ICalendarProperty) -> Option<&'a str> {
    entry(component, name)?.values.first()?.as_text()
}

/// A DTSTART or DTEND as Unix seconds, and whether it is a date (no time of day).
fn entry_time(entry: &ICalendarEntry, calendar: &ICalendar) -> Option<(i64, bool)> {
    let value = entry.values.first()?.as_partial_date_time()?;
    let date_only = !value.has_time();
    let zone = if date_only {
        Tz::UTC
    } else {
        calendar
            .build_tz_resolver()
            .with_default(Tz::UTC)
            .resolve_or_default(entry.tz_id())
    };
    let time = value.to_date_time_with_tz(zone)?.timestamp();
    Some((time, date_only))
}

/// The event a calendar object resource holds: its master VEVENT (the first without a
/// RECURRENCE-ID, else the first). `None` when it holds no event with a start, or is too
/// large to read.
pub fn parse_event(href: &str, text: &str) -> Option<CalendarEvent> {
    if !within_bounds(text) {
        return None;
    }
    let calendar = ICalendar::parse(text).ok()?;
    let mut events = calendar
        .components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VEvent);
    let event = events
        .clone()
        .find(|c| !c.has_property(&ICalendarProperty::RecurrenceId))
        .or_else(|| events.next())?;
    let (start, all_day) = entry_time(entry(event, &ICalendarProperty::Dtstart)?, &calendar)?;
    let duration = || match entry(event, &ICalendarProperty::Duration)?.values.first()? {
        ICalendarValue::Duration(d) => {
            let seconds = i64::from(d.weeks) * 604_800
                + i64::from(d.days) * 86_400
                + i64::from(d.hours) * 3_600
                + i64::from(d.minutes) * 60
                + i64::from(d.seconds);
            start.checked_add(if d.neg { -seconds } else { seconds })
        }
        _ => None,
    };
    let end = entry(event, &ICalendarProperty::Dtend)
        .and_then(|e| entry_time(e, &calendar))
        .map(|(end, _)| end)
        .or_else(duration)
        .unwrap_or(if all_day { start + 86_400 } else { start })
        .max(start);
    let text_of = |name: &ICalendarProperty| {
        first_text(event, name)
            .map(|t| cut(t, TEXT_BYTES_MAX))
            .unwrap_or_default()
    };
    let attendees = event
        .properties(&ICalendarProperty::Attendee)
        .filter_map(|e| e.values.first()?.as_text())
        .map(mail_address)
        .filter(|a| !a.is_empty())
        .take(ATTENDEES_MAX)
        .collect();
    Some(CalendarEvent {
        href: href.to_owned(),
        uid: cut(event.uid().unwrap_or_default().trim(), UID_BYTES_MAX),
        title: text_of(&ICalendarProperty::Summary),
        start_unix_s: start,
        end_unix_s: end,
        location: text_of(&ICalendarProperty::Location),
        attendees,
    })
}

/// Text a device sent, as it goes into a TEXT value (calcard escapes it): tabs become
/// spaces, other control characters but newlines are dropped.
fn clean(value: &str) -> String {
    value
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            '\n' => Some('\n'),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

fn ical_entry(name: ICalendarProperty, value: impl Into<ICalendarValue>) -> ICalendarEntry {
    ICalendarEntry::new(name).with_value(value)
}

fn utc(unix_s: i64) -> ICalendarValue {
    ICalendarValue::PartialDateTime(Box::new(PartialDateTime::from_utc_timestamp(unix_s)))
}

/// A VCALENDAR with one VEVENT for `event`; `organizer` (the user's address) organises it
/// when it has attendees.
pub fn event_ics(uid: &str, event: &NewEvent, organizer: &str, now_unix_s: i64) -> String {
    let mut entries = vec![
        ical_entry(ICalendarProperty::Uid, uid.to_owned()),
        ical_entry(ICalendarProperty::Dtstamp, utc(now_unix_s)),
        ical_entry(ICalendarProperty::Dtstart, utc(event.start_unix_s)),
        ical_entry(ICalendarProperty::Dtend, utc(event.end_unix_s)),
        ical_entry(ICalendarProperty::Summary, clean(&event.title)),
    ];
    if !event.location.is_empty() {
        entries.push(ical_entry(ICalendarProperty::Location, clean(&event.location)));
    }
    if !event.attendees.is_empty() {
        let mailto = |address: &str| Uri::Location(format!("mailto:{}", clean(address)));
        entries.push(ical_entry(ICalendarProperty::Organizer, mailto(organizer)));
        for attendee in &event.attendees {
            entries.push(
                ical_entry(ICalendarProperty::Attendee, mailto(attendee))
                    .with_param(ICalendarParameter::role(
                        ICalendarParticipationRole::ReqParticipant,
                    ))
                    .with_param(ICalendarParameter::partstat(
                        ICalendarParticipationStatus::NeedsAction,
                    )),
            );
        }
    }
    let calendar = ICalendar {
        components: vec![
            ICalendarComponent {
                component_type: ICalendarComponentType::VCalendar,
                entries: vec![
                    ical_entry(ICalendarProperty::Version, "2.0".to_owned()),
                    ical_entry(ICalendarProperty::Prodid, "-//Redoubt//Connector//EN".to_owned()),
                ],
                component_ids: vec![1],
            },
            ICalendarComponent {
                component_type: ICalendarComponentType::VEvent,
                entries,
                component_ids: vec![],
            },
        ],
    };
    calendar.to_string()
}

fn card_text<'a>(card: &'a VCard, name: &VCardProperty) -> Option<&'a str> {
    card.property(name)?.values.first()?.as_text()
}

/// The contact a vCard holds; `None` when the text holds no vCard or is too large to read.
pub fn parse_contact(href: &str, text: &str) -> Option<ContactCard> {
    if !within_bounds(text) {
        return None;
    }
    let card = VCard::parse(text).ok()?;
    let name = card_text(&card, &VCardProperty::Fn)
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            // N: family;given;additional;prefix;suffix
            card.property(&VCardProperty::N).map(|n| {
                let parts: Vec<&str> = n.values.iter().map(|v| v.as_text().unwrap_or_default()).collect();
                [3, 1, 2, 0, 4]
                    .iter()
                    .filter_map(|&i| parts.get(i))
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_default();
    let values = |prop: &VCardProperty, clean: fn(&str) -> String| -> Vec<String> {
        card.properties(prop)
            .filter_map(|e| e.values.first()?.as_text())
            .map(clean)
            .filter(|v| !v.is_empty())
            .take(VALUES_MAX)
            .collect()
    };
    Some(ContactCard {
        href: href.to_owned(),
        uid: cut(card.uid().unwrap_or_default().trim(), UID_BYTES_MAX),
        name: cut(&name, TEXT_BYTES_MAX),
        emails: values(&VCardProperty::Email, mail_address),
        phones: values(&VCardProperty::Tel, |v| {
            let v = v.trim();
            let v = match (v.get(..4), v.get(4..)) {
                (Some(scheme), Some(rest)) if scheme.eq_ignore_ascii_case("tel:") => rest,
                _ => v,
            };
            cut(v, VALUE_BYTES_MAX)
        }),
    })
}

fn card_entry(name: VCardProperty, values: Vec<String>) -> VCardEntry {
    VCardEntry::new(name).with_values(values.into_iter().map(VCardValue::Text).collect())
}

/// A vCard 3.0 for `contact`. The name's last word is taken as the family name in `N`.
pub fn contact_vcard(uid: &str, contact: &NewContact) -> String {
    let name = clean(contact.name.trim());
    let (given, family) = match name.rsplit_once(' ') {
        Some((given, family)) => (given.trim().to_owned(), family.to_owned()),
        None => (String::new(), name.clone()),
    };
    let mut entries = vec![
        card_entry(VCardProperty::Version, vec!["3.0".into()]),
        card_entry(VCardProperty::Prodid, vec!["-//Redoubt//Connector//EN".into()]),
        card_entry(VCardProperty::Uid, vec![uid.to_owned()]),
        card_entry(VCardProperty::Fn, vec![name]),
        card_entry(
            VCardProperty::N,
            vec![family, given, String::new(), String::new(), String::new()],
        ),
    ];
    for email in &contact.emails {
        entries.push(
            card_entry(VCardProperty::Email, vec![clean(email)])
                .with_param(VCardParameter::typ("INTERNET".to_owned())),
        );
    }
    for phone in &contact.phones {
        entries.push(
            card_entry(VCardProperty::Tel, vec![clean(phone)])
                .with_param(VCardParameter::typ("VOICE".to_owned())),
        );
    }
    VCard { entries }.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn an_event_is_read_with_folding_escapes_attendees_zones_and_alarms_ignored() {
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
        // 10:00 in Berlin in January is 09:00 UTC.
        assert_eq!(event.start_unix_s, 1_893_578_400 - 3_600);
        assert_eq!(event.end_unix_s, event.start_unix_s + 45 * 60);
        assert_eq!(event.location, "Room \"7\": east");
        assert_eq!(event.attendees, vec!["bob@corp.test", "carol@corp.test"]);

        let floating = ics.replace(";TZID=Europe/Berlin", "");
        assert_eq!(parse_event("/c", &floating).unwrap().start_unix_s, 1_893_578_400);
        let unknown_zone = ics.replace("TZID=Europe/Berlin", "TZID=Nowhere/Special");
        assert_eq!(
            parse_event("/c", &unknown_zone).unwrap().start_unix_s,
            1_893_578_400
        );
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
        let negative = "BEGIN:VEVENT\nDTSTART:20300102T100000Z\nDURATION:-PT15M\nEND:VEVENT\n";
        let event = parse_event("/b", negative).unwrap();
        assert_eq!(event.start_unix_s, event.end_unix_s);
        for none in [
            "",
            "BEGIN:VCALENDAR\nBEGIN:VTODO\nDTSTART:20300102T100000Z\nEND:VTODO\nEND:VCALENDAR\n",
            "BEGIN:VEVENT\nSUMMARY:no start\nEND:VEVENT\n",
            "BEGIN:VEVENT\nDTSTART:garbage\nEND:VEVENT\n",
            "BEGIN:VCARD\nVERSION:3.0\nFN:x\nEND:VCARD\n",
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
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"), "{ics}");
        assert!(ics.ends_with("END:VEVENT\r\nEND:VCALENDAR\r\n"), "{ics}");
        assert!(ics.contains("ORGANIZER:mailto:alice@corp.test\r\n"), "{ics}");
        assert!(ics.contains("DTSTART:20300102T100000Z\r\n"), "{ics}");
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
        let far = NewEvent {
            start_unix_s: -62_135_596_800,
            end_unix_s: 253_402_300_799,
            ..control
        };
        let back = parse_event("/h", &event_ics("u", &far, "alice@corp.test", 0)).unwrap();
        assert_eq!(
            (back.start_unix_s, back.end_unix_s),
            (far.start_unix_s, far.end_unix_s)
        );
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
        assert!(vcard.contains("VERSION:3.0\r\n"), "{vcard}");
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

        let many_emails: String = (0..100).map(|i| format!("EMAIL:a{i}@corp.test\n")).collect();
        let card = format!("BEGIN:VCARD\nVERSION:3.0\nFN:{long}\n{many_emails}END:VCARD\n");
        let contact = parse_contact("/x", &card).unwrap();
        assert_eq!(
            (contact.name.len(), contact.emails.len()),
            (TEXT_BYTES_MAX, VALUES_MAX)
        );
    }

    #[test]
    fn oversized_objects_are_not_read() {
        let event =
            |filler: &str| format!("BEGIN:VEVENT\nDTSTART:20300102T100000Z\n{filler}SUMMARY:x\nEND:VEVENT\n");
        let big = format!("DESCRIPTION:{}\n", "x".repeat(OBJECT_BYTES_MAX));
        assert!(parse_event("/x", &event("")).is_some());
        assert_eq!(parse_event("/x", &event(&big)), None);
        let lines = "X-FILLER:y\n".repeat(LINES_MAX);
        assert_eq!(parse_event("/x", &event(&lines)), None);
        let components = "BEGIN:VALARM\nEND:VALARM\n".repeat(LINES_MAX / 2);
        assert_eq!(parse_event("/x", &event(&components)), None);
        let card = format!("BEGIN:VCARD\nVERSION:3.0\nFN:x\n{big}END:VCARD\n");
        assert_eq!(parse_contact("/x", &card), None);
    }
}
