//! Submitting a device's message through the organisation's SMTP server.

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use redoubt_proto::{MailSecurity, MailServerSettings};

/// Submits `message` for `user`: with their own login when they linked one, else as the
/// service account acting for them (Dovecot's `user*master` login; SMTP AUTH has no
/// separate authorisation identity in most servers' submission paths).
pub(crate) async fn submit(
    server: &MailServerSettings,
    user: &redoubt_server::MailUser,
    message: lettre::Message,
) -> Result<(), String> {
    let smtp = &server.smtp;
    let builder = match server.security {
        MailSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        MailSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        MailSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &smtp.host,
        )),
    }
    .map_err(|e| format!("SMTP server {smtp}: {e}"))?;
    let credentials = match &user.credential {
        Some(own) => Credentials::new(own.login.clone(), own.password.clone()),
        None => Credentials::new(
            format!("{}*{}", user.address, server.master_user),
            server.master_password.clone(),
        ),
    };
    let transport = builder
        .port(smtp.port)
        .credentials(credentials)
        .authentication(vec![Mechanism::Plain, Mechanism::Login])
        .timeout(Some(std::time::Duration::from_secs(30)))
        .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("the SMTP server {smtp} did not take the message: {e}"))
}
