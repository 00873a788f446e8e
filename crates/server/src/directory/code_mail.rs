//! Mailing a new directory user their activation code, as BES and UEM did: a plain-text
//! part with the code and how to enrol, an HTML part, and the code as a QR image (SVG)
//! for a phone's camera.
//!
//! The mail goes through the organisation's SMTP server with the mail settings of
//! `admin mail set`: logged in as the service account acting for the recipient (the same
//! `user*master` login the connector submits with), from and to the recipient's address,
//! so no new sending identity or relay permission is needed. The code itself is never
//! stored or logged; a code whose mail failed is reported to the admin, who can issue a
//! new one.

use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart, SinglePart};
use lettre::{AsyncTransport, Message};
use redoubt_proto::{IssuedActivationCode, MailServerSettings};

/// The QR code of `text`, as an SVG document.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(240, 240)
            .build(),
    )
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The message for `address` carrying `code`.
pub(crate) fn compose(
    from_domain: &str,
    address: &str,
    display_name: Option<&str>,
    code: &IssuedActivationCode,
    org_name: &str,
) -> Result<Message, String> {
    let mailbox: lettre::message::Mailbox = address
        .parse()
        .map_err(|e| format!("the address {address:?} is not usable: {e}"))?;
    let greeting = display_name.unwrap_or(code.user.as_str());
    let text = format!(
        "Hello {greeting},\n\n\
         {org_name} has set up secure messaging and mail for you on Redoubt.\n\n\
         Your activation code (valid once, until {expires}):\n\n    {code}\n\n\
         On a computer: redoubt enroll --code '{code}' --name \"my laptop\"\n\
         On a phone: open Redoubt and scan the QR code attached to this message.\n\n\
         If you did not expect this message, tell your IT department; nobody else can use the code \
         once you have.\n",
        expires = crate::directory::rfc3339(code.expires_at_unix_s),
        code = code.code,
    );
    let html = format!(
        "<p>Hello {greeting},</p><p>{org} has set up secure messaging and mail for you on Redoubt.</p>\
         <p>Your activation code (valid once, until {expires}):</p><pre>{code}</pre>\
         <p>On a computer: <code>redoubt enroll --code '{code}' --name \"my laptop\"</code><br>\
         On a phone: open Redoubt and scan the attached QR code.</p>",
        greeting = escape_html(greeting),
        org = escape_html(org_name),
        expires = crate::directory::rfc3339(code.expires_at_unix_s),
        code = escape_html(&code.code),
    );
    let mut body = MultiPart::mixed().multipart(
        MultiPart::alternative()
            .singlepart(SinglePart::plain(text))
            .singlepart(SinglePart::html(html)),
    );
    if let Some(svg) = qr_svg(&code.code) {
        let svg_type = ContentType::parse("image/svg+xml").map_err(|e| e.to_string())?;
        body = body.singlepart(Attachment::new("redoubt-activation.svg".into()).body(svg, svg_type));
    }
    let message_id = format!("<activation-{}@{from_domain}>", code.user);
    Message::builder()
        .from(mailbox.clone())
        .to(mailbox)
        .subject(format!("Your {org_name} Redoubt activation code"))
        .message_id(Some(message_id))
        .multipart(body)
        .map_err(|e| format!("composing the mail failed: {e}"))
}

/// The organisation's mail server, or why codes cannot be mailed.
pub(crate) async fn mail_server(state: &crate::State) -> Result<MailServerSettings, String> {
    match crate::mail::connector_config(state).await {
        Ok(Some(config)) => Ok(config.server),
        Ok(None) => Err("no mail server is set (`redoubt admin mail set`)".into()),
        Err(error) => Err(error.0.message),
    }
}

/// Mails `code` to `address`, or to `user@domain` without one.
pub(crate) async fn mail_code(
    state: &crate::State,
    server: &MailServerSettings,
    code: &IssuedActivationCode,
    address: Option<&str>,
    display_name: Option<&str>,
) -> Result<(), String> {
    let address = address.map_or_else(|| format!("{}@{}", code.user, server.domain), str::to_owned);
    let message = compose(&server.domain, &address, display_name, code, &state.org.name)?;
    send(server, &address, message).await
}

/// Sends `message` to `address` through the organisation's SMTP server, as the service
/// account acting for the recipient.
async fn send(server: &MailServerSettings, address: &str, message: Message) -> Result<(), String> {
    let login = format!("{address}*{}", server.master_user);
    crate::mail::smtp_transport(server, login, server.master_password.clone())?
        .send(message)
        .await
        .map(drop)
        .map_err(|e| format!("the SMTP server {} did not take the message: {e}", server.smtp))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use redoubt_proto::UserName;

    use super::*;

    #[test]
    fn the_mail_carries_the_code_its_qr_and_no_markup_from_names() {
        let code = IssuedActivationCode {
            user: UserName::parse("alice").unwrap(),
            code: "RDT1-ABCD-EFGH".into(),
            expires_at_unix_s: 1_700_000_000,
        };
        let message = compose(
            "corp.test",
            "alice@corp.test",
            Some("<b>Alice</b>"),
            &code,
            "Corp",
        )
        .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("RDT1-ABCD-EFGH"));
        assert!(raw.contains("image/svg+xml"));
        assert!(raw.contains("&lt;b&gt;Alice"), "names are escaped in HTML");
        assert!(compose("corp.test", "not an address", None, &code, "Corp").is_err());
    }
}
