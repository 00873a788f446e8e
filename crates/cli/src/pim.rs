//! `redoubt calendar …` and `redoubt contacts …`: the user's calendar and address book as
//! the mail connector mirrors them from the organisation's CalDAV/CardDAV server into this
//! device's encrypted store. Listing reads the local copy (after catching up with the
//! mailbox group); adding and deleting go to the connector, which writes them to the
//! server and answers once the change is back on the devices.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use redoubt_client::Messenger;
use redoubt_client::mail::{StoredContact, StoredEvent};
use redoubt_mls::mail::{MailCommand, NewContact, NewEvent};
use redoubt_proto::Bytes;
use serde_json::json;

use crate::output::{Output, print_json, time};

/// How long a command waits for the connector's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// An event added without `--end` lasts this long.
const DEFAULT_EVENT_SECS: i64 = 3_600;

#[derive(Debug, Subcommand)]
pub(crate) enum CalendarCommand {
    /// Events, by start time (all of them, or those overlapping --from/--to).
    List {
        /// Only events that end after this (RFC 3339, e.g. 2026-11-23T10:00:00Z, or a date).
        #[arg(long)]
        from: Option<String>,
        /// Only events that start before this.
        #[arg(long)]
        to: Option<String>,
    },
    /// Add an event to your calendar on the organisation's server.
    Add {
        #[arg(long)]
        title: String,
        /// RFC 3339 (2026-11-23T10:00:00Z, 2026-11-23T11:00:00+01:00) or a date (midnight UTC).
        #[arg(long)]
        start: String,
        /// Default: an hour after the start.
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value = "")]
        location: String,
        /// An attendee's address (repeat for more).
        #[arg(long)]
        attendee: Vec<String>,
    },
    /// Delete an event (the id `calendar list` shows).
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContactsCommand {
    /// Contacts, by name.
    List,
    /// Add a contact to your address book on the organisation's server.
    Add {
        #[arg(long)]
        name: String,
        /// An address (repeat for more).
        #[arg(long)]
        email: Vec<String>,
        /// A phone number (repeat for more).
        #[arg(long)]
        phone: Vec<String>,
    },
    /// Delete a contact (the id `contacts list` shows).
    Delete { id: String },
}

/// Unix seconds of an RFC 3339 time (`Z` or a `±HH:MM` offset; seconds may be left out)
/// or of a date (midnight UTC).
fn parse_time(text: &str) -> Result<i64> {
    let bad = || format!("{text:?} is not a time like 2026-11-23T10:00:00Z or a date like 2026-11-23");
    let mut stamp = text.trim().to_owned();
    let mut offset_s = 0i64;
    if stamp.len() == 10 {
        stamp.push_str("T00:00:00");
    } else if stamp.ends_with(['Z', 'z']) {
        stamp.pop();
    } else if let Some(at) = stamp
        .get(16..)
        .and_then(|tail| tail.find(['+', '-']))
        .map(|at| at + 16)
    {
        // After `YYYY-MM-DDTHH:MM`: an offset such as +01:00.
        let offset = stamp.split_off(at);
        let (sign, hours_minutes) = offset.split_at(1);
        let (hours, minutes) = hours_minutes.split_once(':').with_context(bad)?;
        let (hours, minutes): (i64, i64) = (
            hours.parse().ok().with_context(bad)?,
            minutes.parse().ok().with_context(bad)?,
        );
        if hours > 23 || minutes > 59 {
            bail!(bad());
        }
        offset_s = (hours * 3_600 + minutes * 60) * if sign == "-" { -1 } else { 1 };
    }
    if stamp.len() == 16 {
        // 2026-11-23T10:00
        stamp.push_str(":00");
    }
    let at = humantime::parse_rfc3339_weak(&stamp).ok().with_context(bad)?;
    let unix = at
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .with_context(|| format!("{text:?} is before 1970"))?;
    Ok(unix - offset_s)
}

/// Sends a command and waits for the connector's answer.
async fn command(messenger: &mut Messenger, build: impl FnOnce(Bytes<16>) -> MailCommand) -> Result<()> {
    let id = messenger.send_mail_command(build).await?;
    messenger.mail_outcome(id, ANSWER_WAIT).await?;
    Ok(())
}

pub(crate) fn event_json(stored: &StoredEvent) -> serde_json::Value {
    let e = &stored.event;
    json!({
        "id": stored.id,
        "title": e.title,
        "start": time(e.start_unix_s),
        "end": time(e.end_unix_s),
        "start_unix_s": e.start_unix_s,
        "end_unix_s": e.end_unix_s,
        "location": e.location,
        "attendees": e.attendees,
        "uid": e.uid,
        "href": e.href,
    })
}

pub(crate) fn contact_json(stored: &StoredContact) -> serde_json::Value {
    let c = &stored.contact;
    json!({
        "id": stored.id,
        "name": c.name,
        "emails": c.emails,
        "phones": c.phones,
        "uid": c.uid,
        "href": c.href,
    })
}

fn print_event(stored: &StoredEvent) {
    let e = &stored.event;
    let mut line = format!(
        "{}  {} – {}  {}",
        stored.id,
        time(e.start_unix_s),
        time(e.end_unix_s),
        e.title
    );
    if !e.location.is_empty() {
        line.push_str(&format!("  @ {}", e.location));
    }
    if !e.attendees.is_empty() {
        line.push_str(&format!("  (with {})", e.attendees.join(", ")));
    }
    println!("{line}");
}

fn find_event(messenger: &Messenger, id: &str) -> Result<StoredEvent> {
    messenger
        .mail()
        .event(id)?
        .with_context(|| format!("no event {id:?} on this device (see `redoubt calendar list`)"))
}

fn find_contact(messenger: &Messenger, id: &str) -> Result<StoredContact> {
    messenger
        .mail()
        .contact(id)?
        .with_context(|| format!("no contact {id:?} on this device (see `redoubt contacts list`)"))
}

pub(crate) fn check_addresses(addresses: &[String]) -> Result<()> {
    for address in addresses {
        redoubt_proto::check_address(address).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

pub(crate) async fn calendar(
    messenger: &mut Messenger,
    command_line: CalendarCommand,
    out: &Output,
) -> Result<()> {
    messenger.sync().await?;
    match command_line {
        CalendarCommand::List { from, to } => {
            let from = from.as_deref().map(parse_time).transpose()?;
            let to = to.as_deref().map(parse_time).transpose()?;
            let events = messenger.mail().events(from, to)?;
            if out.is_json() {
                print_json(&serde_json::Value::Array(events.iter().map(event_json).collect()));
            } else if events.is_empty() {
                println!("no events");
            } else {
                events.iter().for_each(print_event);
            }
        }
        CalendarCommand::Add {
            title,
            start,
            end,
            location,
            attendee,
        } => {
            let start_unix_s = parse_time(&start)?;
            let end_unix_s = match end {
                Some(end) => parse_time(&end)?,
                None => start_unix_s + DEFAULT_EVENT_SECS,
            };
            if end_unix_s < start_unix_s {
                bail!("the event ends before it starts");
            }
            if title.trim().is_empty() {
                bail!("an event needs a title");
            }
            check_addresses(&attendee)?;
            let before: Vec<String> = messenger
                .mail()
                .events(None, None)?
                .into_iter()
                .map(|e| e.id)
                .collect();
            let event = NewEvent {
                title: title.clone(),
                start_unix_s,
                end_unix_s,
                location,
                attendees: attendee,
            };
            command(messenger, |id| MailCommand::AddEvent { id, event }).await?;
            // The connector pushes the event before it answers: it is here now.
            let added = messenger.mail().events(None, None)?.into_iter().find(|e| {
                !before.contains(&e.id)
                    && e.event.title == title
                    && e.event.start_unix_s == start_unix_s
                    && e.event.end_unix_s == end_unix_s
            });
            match added {
                Some(event) if out.is_json() => print_json(&event_json(&event)),
                Some(event) => println!("added {}", event.id),
                None => out.note("added"),
            }
        }
        CalendarCommand::Delete { id } => {
            let href = find_event(messenger, &id)?.event.href;
            command(messenger, |id| MailCommand::DeleteEvent { id, href }).await?;
            out.note("deleted");
        }
    }
    Ok(())
}

pub(crate) async fn contacts(
    messenger: &mut Messenger,
    command_line: ContactsCommand,
    out: &Output,
) -> Result<()> {
    messenger.sync().await?;
    match command_line {
        ContactsCommand::List => {
            let contacts = messenger.mail().contacts()?;
            if out.is_json() {
                print_json(&serde_json::Value::Array(
                    contacts.iter().map(contact_json).collect(),
                ));
            } else if contacts.is_empty() {
                println!("no contacts");
            } else {
                for stored in &contacts {
                    let c = &stored.contact;
                    let details: Vec<&str> = c.emails.iter().chain(&c.phones).map(String::as_str).collect();
                    println!("{}  {}  {}", stored.id, c.name, details.join(", "));
                }
            }
        }
        ContactsCommand::Add { name, email, phone } => {
            if name.trim().is_empty() {
                bail!("a contact needs a name");
            }
            check_addresses(&email)?;
            let before: Vec<String> = messenger.mail().contacts()?.into_iter().map(|c| c.id).collect();
            let contact = NewContact {
                name: name.clone(),
                emails: email,
                phones: phone,
            };
            command(messenger, |id| MailCommand::AddContact { id, contact }).await?;
            let added = messenger
                .mail()
                .contacts()?
                .into_iter()
                .find(|c| !before.contains(&c.id) && c.contact.name == name);
            match added {
                Some(contact) if out.is_json() => print_json(&contact_json(&contact)),
                Some(contact) => println!("added {}", contact.id),
                None => out.note("added"),
            }
        }
        ContactsCommand::Delete { id } => {
            let href = find_contact(messenger, &id)?.contact.href;
            command(messenger, |id| MailCommand::DeleteContact { id, href }).await?;
            out.note("deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::parse_time;

    #[test]
    fn times_in_rfc_3339_with_offsets_or_as_dates() {
        assert_eq!(parse_time("2030-01-02T10:00:00Z").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02T10:00Z").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02T10:00").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02T10:00:00.5Z").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02T11:00+01:00").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02 10:00:00").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02T11:00:00+01:00").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02T05:30:00-04:30").unwrap(), 1_893_578_400);
        assert_eq!(parse_time("2030-01-02").unwrap(), 1_893_542_400);
        for bad in [
            "",
            "tomorrow",
            "2030-13-02",
            "2030-01-02T10:00:00+25:00",
            "1969-12-31T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
