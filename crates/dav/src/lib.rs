//! What the mail connector reads from calendar and contacts servers, and writes to them:
//! PROPFIND `multistatus` answers ([`xml`], quick-xml), events and contacts ([`ical`],
//! iCalendar and vCard through calcard), and request paths from hrefs ([`path`]). Every
//! input is a hostile server's: bounded, and refused rather than half-read. No I/O: the
//! connector's `dav` module does the HTTP; this crate is what the fuzz target reaches
//! without building the server.

pub mod ical;
pub mod path;
pub mod xml;

use redoubt_mls::mail::MailPush;

/// Everything the connector reads from a calendar server's answers, for the fuzz target
/// (`fuzz/fuzz_targets/dav_response_parse.rs`): `bytes` as a PROPFIND answer (each member's
/// href made a request path, as a sync does), then as a calendar object and as a vCard (as
/// a GET's body is read). Returns how much was read, so nothing is optimised away. Redoubt
/// itself never calls it.
#[doc(hidden)]
pub fn read_server_answer_for_fuzzing(bytes: &[u8]) -> usize {
    let mut read = 0;
    if let Ok(members) = std::str::from_utf8(bytes).map(xml::multistatus) {
        for member in members.into_iter().flatten() {
            read += path::normalize_href(&member.href).map_or(0, |href| href.len());
            read += member.types.len() + usize::from(member.etag.is_some());
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let pushes = [
        ical::parse_event("/fuzz", &text).map(MailPush::Event),
        ical::parse_contact("/fuzz", &text).map(MailPush::Contact),
    ];
    for push in pushes {
        read += usize::from(push.is_some());
    }
    read
}
