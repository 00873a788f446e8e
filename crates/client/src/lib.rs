//! The Redoubt device library.
//!
//! A device reaches its server only through a TLS 1.3 connection whose certificate matches
//! the pin it learned from its activation code: there is no fallback to the system's
//! certificate authorities and no trust on first use. [`enroll`] activates a device and
//! writes its [`Profile`]; [`Session::open`] authenticates with the device key, which
//! never leaves the device.

pub mod attachment;
mod connection;
mod error;
pub mod mail;
mod management;
mod messaging;
mod profile;
pub mod search;
mod tls;
mod vault;

pub use connection::{
    Connection, Connector, FRAME_BYTES_MAX, FrameSink, FrameStream, Socket, next_frame, request_message,
};
pub use error::ClientError;
pub use mail::{MailStore, StoredMail};
pub use management::{applied_policy, current_policy, verify_policy};
pub use messaging::local_search::{search_messages, store_messages};
pub use messaging::{
    Conversation, MemberDevice, Messenger, NoticeKind, QueuedMailCommand, Receipts, SafetyNumber,
    SecurityNotice, StoredMessage, SyncReport,
};
pub use profile::Profile;
pub use redoubt_mls::history::ConversationSettings;
pub use tls::PinVerifier;
/// WebSocket messages, for sending raw (possibly malformed) input in tests.
pub use tokio_tungstenite::tungstenite::Message as WsMessage;
pub use vault::{Vault, VaultError, VaultRows, VaultTransaction};

use ed25519_dalek::{Signer, SigningKey};
use rand_core::OsRng;
use redoubt_proto::{
    ActivationCode, AuthenticateRequest, Bytes, DeviceCertificate, DeviceName, DeviceSummary, DisplayName,
    EnrollRequest, IssuedActivationCode, Request, Response, SessionInfo, UserName, UserSummary,
    enroll_transcript, session_transcript,
};

/// Test hook: aborts the process at a named point when `REDOUBT_TEST_CRASH_AT` names it,
/// the way a kill at that instant would (no destructors, nothing flushed), so tests can
/// prove recovery from exactly there. Costs one environment lookup.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("REDOUBT_TEST_CRASH_AT").is_ok_and(|at| at == name) {
        std::process::abort();
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Activates this device with `code` and writes its profile into `profile_dir`, with a
/// fresh data key and no passcode ([`Profile::set_passcode`] adds one).
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
    let profile = Profile::create(
        profile_dir,
        code.server.clone(),
        code.pin.0,
        enrolled.org_public_key.0,
        enrolled.org_name,
        verified,
        key,
    )?;
    profile.save()?;
    if let Err(error) = profile.record_connection(&code.server, &connection.hello().nodes) {
        tracing::warn!(%error, "could not save the server's node list");
    }
    Ok(profile)
}

/// An authenticated session with the server.
#[derive(Debug)]
pub struct Session {
    connection: Connection,
    info: SessionInfo,
    profile: Profile,
    policy: redoubt_proto::Policy,
}

impl Session {
    /// Connects to the profile's server (pinned) and authenticates with the device key.
    pub async fn open(profile: &Profile) -> Result<Self, ClientError> {
        let (mut connection, used) =
            Connection::connect_any(&profile.server_addresses(), &profile.pin).await?;
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
        if let Err(error) = profile.record_connection(&used, &connection.hello().nodes) {
            // The connection works; only the list for the next one is not saved.
            tracing::warn!(%error, "could not save the server's node list");
        }
        let policy = management::comply(&mut connection, profile, &info).await?;
        Ok(Self {
            connection,
            info,
            profile: profile.clone(),
            policy,
        })
    }

    /// The organisation's policy in force on this device.
    pub fn policy(&self) -> &redoubt_proto::Policy {
        &self.policy
    }

    /// Sends a request. If the policy changed meanwhile, fetches, applies and acknowledges
    /// it first, then repeats the request once.
    pub async fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        match self.connection.call(request.clone()).await {
            Err(error) if error.code() == Some(redoubt_proto::ErrorCode::PolicyRefreshRequired) => {
                self.refresh_policy().await?;
                self.connection.call(request).await
            }
            Err(error) if error.code() == Some(redoubt_proto::ErrorCode::CommandPending) => {
                self.run_commands().await?;
                self.connection.call(request).await
            }
            other => other,
        }
    }

    /// [`Self::request`], repeated after a pause while the server answers `rate_limited`: such
    /// a request was refused before anything was done, so even one that must not be sent
    /// twice (a key package claim, an upload's start) is safe to send again. Bounded: about
    /// 15 seconds of pauses.
    pub async fn request_paced(&mut self, request: Request) -> Result<Response, ClientError> {
        let mut pause = std::time::Duration::from_millis(250);
        for _ in 0..6 {
            match self.request(request.clone()).await {
                Err(error) if error.code() == Some(redoubt_proto::ErrorCode::RateLimited) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(4));
                }
                other => return other,
            }
        }
        self.request(request).await
    }

    /// Fetches, verifies, applies and acknowledges the organisation's policy.
    pub async fn refresh_policy(&mut self) -> Result<(), ClientError> {
        self.policy = management::refresh_policy(&mut self.connection, &self.profile).await?;
        Ok(())
    }

    /// Fetches and carries out the remote commands waiting for this device.
    pub async fn run_commands(&mut self) -> Result<(), ClientError> {
        let commands = match self.connection.call(Request::CommandsFetch).await? {
            Response::Commands(commands) => commands,
            _ => {
                return Err(ClientError::Protocol(
                    "unexpected response to CommandsFetch".into(),
                ));
            }
        };
        for command in &commands {
            management::handle_command(&mut self.connection, &self.profile, command).await?;
        }
        Ok(())
    }

    /// The next event from the server.
    pub async fn next_event(&mut self) -> Result<redoubt_proto::Event, ClientError> {
        self.connection.next_event().await
    }

    /// Acts on the management events (a changed policy, a remote command); others are
    /// the caller's. A wipe or lock ends in an error: the session must stop.
    pub async fn handle_event(&mut self, event: redoubt_proto::Event) -> Result<(), ClientError> {
        match event {
            redoubt_proto::Event::PolicyChanged { .. } => self.refresh_policy().await,
            redoubt_proto::Event::Command(command) => {
                management::handle_command(&mut self.connection, &self.profile, &command).await
            }
            _ => Ok(()),
        }
    }

    /// Who the server says this session is, as of authentication.
    /// The device profile this session authenticated with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The underlying connection, for requests this API does not wrap yet.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    pub async fn whoami(&mut self) -> Result<SessionInfo, ClientError> {
        match self.request(Request::WhoAmI).await? {
            Response::WhoAmI(info) => Ok(info),
            _ => Err(ClientError::Protocol("unexpected response to WhoAmI".into())),
        }
    }

    pub async fn admin_user_add(
        &mut self,
        user: UserName,
        display_name: Option<DisplayName>,
    ) -> Result<IssuedActivationCode, ClientError> {
        match self.request(Request::AdminUserAdd { user, display_name }).await? {
            Response::ActivationCodeIssued(issued) => Ok(issued),
            _ => Err(ClientError::Protocol(
                "unexpected response to AdminUserAdd".into(),
            )),
        }
    }

    pub async fn admin_device_add(&mut self, user: UserName) -> Result<IssuedActivationCode, ClientError> {
        match self.request(Request::AdminDeviceAdd { user }).await? {
            Response::ActivationCodeIssued(issued) => Ok(issued),
            _ => Err(ClientError::Protocol(
                "unexpected response to AdminDeviceAdd".into(),
            )),
        }
    }

    pub async fn admin_user_list(&mut self) -> Result<Vec<UserSummary>, ClientError> {
        match self.request(Request::AdminUserList).await? {
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
        match self.request(Request::AdminDeviceList { user }).await? {
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
