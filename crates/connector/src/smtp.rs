//! Submitting a device's message through the organisation's SMTP server.

use lettre::AsyncTransport;
use redoubt_proto::MailServerSettings;

/// Submits `message` for `user`: with their own login when they linked one, else as the
/// service account acting for them (Dovecot's `user*master` login; SMTP AUTH has no
/// separate authorisation identity in most servers' submission paths).
pub(crate) async fn submit(
    server: &MailServerSettings,
    user: &redoubt_server::MailUser,
    message: lettre::Message,
) -> Result<(), String> {
    let (login, password) = match &user.credential {
        Some(own) => (own.login.clone(), own.password.clone()),
        None => (
            format!("{}*{}", user.address, server.master_user),
            server.master_password.clone(),
        ),
    };
    redoubt_server::smtp_transport(server, login, password)?
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("the SMTP server {} did not take the message: {e}", server.smtp))
}
