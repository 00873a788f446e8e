//! Reading messages from the mail server into what devices are told, and composing the
//! messages devices send.

use lettre::message::header::ContentType;
use lettre::message::{Attachment as MimeAttachment, Mailbox, MultiPart, SinglePart};
use mail_parser::{MessageParser, MimeHeaders};
use redoubt_mls::mail::{MailAttachmentInfo, MailFlags, MailRef, MailSummary, OutgoingMail};

/// A message as parsed from the server's bytes.
pub(crate) struct Parsed<'a>(mail_parser::Message<'a>);

pub(crate) fn parse(raw: &[u8]) -> Option<Parsed<'_>> {
    MessageParser::default().parse(raw).map(Parsed)
}

fn addresses(address: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    address
        .map(|list| {
            list.iter()
                .map(|a| match (&a.name, &a.address) {
                    (Some(name), Some(address)) => format!("{name} <{address}>"),
                    (None, Some(address)) => address.to_string(),
                    (Some(name), None) => name.to_string(),
                    (None, None) => String::new(),
                })
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Cuts `text` to at most `bytes`, on a character boundary.
fn truncate(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Parsed<'_> {
    pub(crate) fn text(&self) -> String {
        self.0.body_text(0).map(|t| t.into_owned()).unwrap_or_default()
    }

    pub(crate) fn message_id(&self) -> Option<String> {
        self.0.message_id().map(str::to_owned)
    }

    pub(crate) fn references(&self) -> Vec<String> {
        let references = self.0.references();
        references
            .as_text_list()
            .map(|list| list.iter().map(|r| r.to_string()).collect())
            .or_else(|| references.as_text().map(|r| vec![r.to_owned()]))
            .unwrap_or_default()
    }

    pub(crate) fn summary(&self, mail: MailRef, flags: MailFlags, preview_bytes: usize) -> MailSummary {
        let text = self.text();
        let in_reply_to = self.0.in_reply_to();
        MailSummary {
            mail,
            message_id: self.message_id(),
            in_reply_to: in_reply_to.as_text().map(str::to_owned).or_else(|| {
                in_reply_to
                    .as_text_list()
                    .and_then(|l| l.first())
                    .map(|r| r.to_string())
            }),
            references: self.references(),
            from: addresses(self.0.from()).into_iter().next().unwrap_or_default(),
            to: addresses(self.0.to()),
            cc: addresses(self.0.cc()),
            subject: self.0.subject().unwrap_or_default().to_owned(),
            date_unix_s: self.0.date().map_or(0, |d| d.to_timestamp()),
            flags,
            preview: truncate(&text, preview_bytes).to_owned(),
            text_bytes: text.len() as u64,
            attachments: self
                .0
                .attachments()
                .map(|part| MailAttachmentInfo {
                    name: part.attachment_name().unwrap_or("attachment").to_owned(),
                    content_type: part
                        .content_type()
                        .map(|c| match c.subtype() {
                            Some(sub) => format!("{}/{sub}", c.ctype()),
                            None => c.ctype().to_owned(),
                        })
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                    bytes: part.contents().len() as u64,
                })
                .collect(),
        }
    }

    /// The `index`th attachment's name, content type and bytes.
    pub(crate) fn attachment(&self, index: u32) -> Option<(String, String, Vec<u8>)> {
        let part = self.0.attachments().nth(index as usize)?;
        let content_type = part
            .content_type()
            .map(|c| match c.subtype() {
                Some(sub) => format!("{}/{sub}", c.ctype()),
                None => c.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        Some((
            part.attachment_name().unwrap_or("attachment").to_owned(),
            content_type,
            part.contents().to_vec(),
        ))
    }

    pub(crate) fn attachments(&self) -> Vec<(String, String, Vec<u8>)> {
        (0..self.0.attachment_count() as u32)
            .filter_map(|i| self.attachment(i))
            .collect()
    }
}

/// Threading for a reply: the original's Message-ID, and its References followed by it.
#[derive(Debug, Default)]
pub(crate) struct Threading {
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

fn angle(id: &str) -> String {
    if id.starts_with('<') {
        id.to_owned()
    } else {
        format!("<{id}>")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ComposeError(pub String);

fn mailbox(text: &str) -> Result<Mailbox, ComposeError> {
    text.parse()
        .map_err(|e| ComposeError(format!("{text:?} is not an address: {e}")))
}

/// Builds the message to submit: `from` is the user's address; `files` are the
/// attachments (name, content type, bytes), already fetched and checked.
pub(crate) fn compose(
    from: &str,
    mail: &OutgoingMail,
    threading: &Threading,
    message_id: &str,
    files: Vec<(String, String, Vec<u8>)>,
) -> Result<lettre::Message, ComposeError> {
    let mut builder = lettre::Message::builder()
        .from(mailbox(from)?)
        .subject(mail.subject.clone())
        .message_id(Some(message_id.to_owned()));
    if mail.to.is_empty() && mail.cc.is_empty() {
        return Err(ComposeError("a message needs at least one recipient".into()));
    }
    for to in &mail.to {
        builder = builder.to(mailbox(to)?);
    }
    for cc in &mail.cc {
        builder = builder.cc(mailbox(cc)?);
    }
    if let Some(id) = &threading.in_reply_to {
        builder = builder.in_reply_to(angle(id));
    }
    if !threading.references.is_empty() {
        let references: Vec<String> = threading.references.iter().map(|r| angle(r)).collect();
        builder = builder.references(references.join(" "));
    }
    let text = SinglePart::plain(mail.text.clone());
    let built = if files.is_empty() {
        builder.singlepart(text)
    } else {
        let mut multipart = MultiPart::mixed().singlepart(text);
        for (name, content_type, bytes) in files {
            // A type the device got wrong must not stop the send: fall back to bytes.
            let content_type = ContentType::parse(&content_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|e| ComposeError(e.to_string()))?;
            multipart = multipart.singlepart(MimeAttachment::new(name).body(bytes, content_type));
        }
        builder.multipart(multipart)
    };
    built.map_err(|e| ComposeError(e.to_string()))
}
