//! The Redoubt device library.
//!
//! A device reaches its server only through a TLS 1.3 connection whose certificate matches
//! the pin it learned from its activation code: there is no fallback to the system's
//! certificate authorities and no trust on first use. [`enroll`] activates a device and
//! writes its [`Profile`]; [`Session::open`] authenticates with the device key, which
//! never leaves the device.

mod attachment;
mod connection;
mod error;
mod messaging;
mod profile;
mod tls;

pub use connection::Connection;
pub use error::ClientError;
pub use messaging::{Conversation, MemberDevice, Messenger, Receipts, StoredMessage, SyncReport};
pub use profile::Profile;
/// WebSocket messages, for sending raw (possibly malformed) input in tests.
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

use ed25519_dalek::{Signer, SigningKey};
use rand_core::OsRng;
use redoubt_proto::{
    ActivationCode, AuthenticateRequest, Bytes, DeviceCertificate, DeviceName, DeviceSummary, DisplayName,
    EnrollRequest, IssuedActivationCode, Request, Response, SessionInfo, UserName, UserSummary,
    enroll_transcript, session_transcript,
};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Activates this device with `code` and writes its profile into `profile_dir`.
///
/// The device key is generated here and only its public half is sent. The returned
/// certificate is checked against the organisation key received over the pinned channel
/// before anything is written.
pub async fn enroll(
    profile_dir: &std::path::Path,
    code: &ActivationCode,
    device_name: DeviceName,
) -> Result<Profile, ClientError> {
    profile::ensure_absent(profile_dir)?;
    let key = SigningKey::generate(&mut OsRng);
    let mut connection = Connection::connect(&code.server, &code.pin.0).await?;
    let transcript = enroll_transcript(&connection.hello().challenge, connection.tls_exporter(), &code.id);
    let request = Request::Enroll(EnrollRequest {
        code_id: code.id,
        secret: code.secret.clone(),
        device_public_key: Bytes(key.verifying_key().to_bytes()),
        device_name,
        signature: Bytes(key.sign(&transcript).to_bytes()),
    });
    let Response::Enrolled(enrolled) = connection.call(request).await? else {
        return Err(ClientError::Protocol("unexpected response to Enroll".into()));
    };
    let org_key = ed25519_dalek::VerifyingKey::from_bytes(&enrolled.org_public_key.0)
        .map_err(|_| ClientError::Protocol("organisation key is not an Ed25519 key".into()))?;
    let certificate = DeviceCertificate::decode(&enrolled.certificate)?;
    let org_id = certificate.unverified_body().org_id;
    let verified = certificate.verify(&org_key, &org_id, unix_now())?;
    if verified.body().device_public_key.0 != key.verifying_key().to_bytes() {
        return Err(ClientError::Protocol("certificate is for another key".into()));
    }
    let profile = Profile::new(
        profile_dir,
        code.server.clone(),
        code.pin.0,
        enrolled.org_public_key.0,
        enrolled.org_name,
        verified,
        key,
    );
    profile.save()?;
    Ok(profile)
}

/// An authenticated session with the server.
#[derive(Debug)]
pub struct Session {
    connection: Connection,
    info: SessionInfo,
}

impl Session {
    /// Connects to the profile's server (pinned) and authenticates with the device key.
    pub async fn open(profile: &Profile) -> Result<Self, ClientError> {
        let mut connection = Connection::connect(&profile.server, &profile.pin).await?;
        let transcript = session_transcript(&connection.hello().challenge, connection.tls_exporter());
        let request = Request::Authenticate(AuthenticateRequest {
            certificate: profile.certificate().to_vec(),
            signature: Bytes(profile.sign(&transcript)),
        });
        let Response::Authenticated(info) = connection.call(request).await? else {
            return Err(ClientError::Protocol(
                "unexpected response to Authenticate".into(),
            ));
        };
        Ok(Self { connection, info })
    }

    /// Who the server says this session is, as of authentication.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The underlying connection, for requests this API does not wrap yet.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    pub async fn whoami(&mut self) -> Result<SessionInfo, ClientError> {
        match self.connection.call(Request::WhoAmI).await? {
            Response::WhoAmI(info) => Ok(info),
            _ => Err(ClientError::Protocol("unexpected response to WhoAmI".into())),
        }
    }

    pub async fn admin_user_add(
        &mut self,
        user: UserName,
        display_name: Option<DisplayName>,
    ) -> Result<IssuedActivationCode, ClientError> {
        match self
            .connection
            .call(Request::AdminUserAdd { user, display_name })
            .await?
        {
            Response::ActivationCodeIssued(issued) => Ok(issued),
            _ => Err(ClientError::Protocol(
                "unexpected response to AdminUserAdd".into(),
            )),
        }
    }

    pub async fn admin_device_add(&mut self, user: UserName) -> Result<IssuedActivationCode, ClientError> {
        match self.connection.call(Request::AdminDeviceAdd { user }).await? {
            Response::ActivationCodeIssued(issued) => Ok(issued),
            _ => Err(ClientError::Protocol(
                "unexpected response to AdminDeviceAdd".into(),
            )),
        }
    }

    pub async fn admin_user_list(&mut self) -> Result<Vec<UserSummary>, ClientError> {
        match self.connection.call(Request::AdminUserList).await? {
            Response::Users(users) => Ok(users),
            _ => Err(ClientError::Protocol(
                "unexpected response to AdminUserList".into(),
            )),
        }
    }

    pub async fn admin_device_list(
        &mut self,
        user: Option<UserName>,
    ) -> Result<Vec<DeviceSummary>, ClientError> {
        match self.connection.call(Request::AdminDeviceList { user }).await? {
            Response::Devices(devices) => Ok(devices),
            _ => Err(ClientError::Protocol(
                "unexpected response to AdminDeviceList".into(),
            )),
        }
    }

    /// Closes the session cleanly.
    pub async fn close(self) {
        self.connection.close().await;
    }
}
