//! Simulated devices: enrolled and authenticated over the real protocol, each with its own
//! Ed25519 device key and an mls-rs client, but keeping their state in memory instead of a
//! profile folder, so tens of thousands fit in one process.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use mls_rs::client_builder::{BaseConfig, WithCryptoProvider, WithIdentityProvider, WithMlsRules};
use mls_rs::mls_rules::DefaultMlsRules;
use mls_rs::{Client, ExtensionList, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use rand_core::OsRng;
use redoubt_mls::RedoubtIdentityProvider;
use redoubt_proto::{
    ActivationCode, AuthenticateRequest, Bytes, DeviceCertificate, DeviceId, DeviceName, EnrollRequest,
    ImportedUser, OrgId, Request, Response, SessionInfo, UserName, enroll_transcript, session_transcript,
};

use crate::wire::{Conn, Connector};

pub type MlsConfig = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<RedoubtIdentityProvider, WithCryptoProvider<RustCryptoProvider, BaseConfig>>,
>;

/// One enrolled device.
pub struct Device {
    pub user: UserName,
    pub device_id: DeviceId,
    key: SigningKey,
    pub certificate: Vec<u8>,
    pub mls: Client<MlsConfig>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("user", &self.user)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// What every simulated device shares: how to reach the server and whom to trust.
#[derive(Debug, Clone)]
pub struct Org {
    pub connector: Connector,
    /// A second node of the same cluster (`--second-node`): devices that only receive
    /// connect to it.
    pub second: Option<Connector>,
    pub org_key: VerifyingKey,
    pub org_id: OrgId,
}

impl Device {
    fn new(org: &Org, key: SigningKey, certificate: Vec<u8>) -> Result<Self> {
        let decoded = DeviceCertificate::decode(&certificate)?;
        let body = decoded.unverified_body();
        let signing_identity =
            redoubt_mls::device_signing_identity(&certificate, &key.verifying_key().to_bytes());
        let mls = Client::builder()
            .crypto_provider(RustCryptoProvider::default())
            .identity_provider(RedoubtIdentityProvider::new(org.org_key, org.org_id))
            .mls_rules(redoubt_mls::rules())
            .signing_identity(
                signing_identity,
                redoubt_mls::mls_secret_key(&key),
                redoubt_mls::CIPHER_SUITE,
            )
            .build();
        Ok(Self {
            user: body.user.clone(),
            device_id: body.device_id,
            key,
            certificate,
            mls,
        })
    }

    /// A fresh one-time key package, made locally (the server validates it inside the
    /// commit that adds this device).
    pub fn key_package(&self) -> Result<MlsMessage> {
        Ok(self
            .mls
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)?)
    }

    /// Connects, authenticates with the device key, and complies with the organisation's
    /// policy when the server asks (fetch, verify, acknowledge).
    pub async fn authenticate(&self, org: &Org, source: Option<IpAddr>) -> Result<(Conn, SessionInfo)> {
        self.authenticate_at(org, &org.connector, source).await
    }

    /// [`Self::authenticate`] at the node `connector` reaches.
    pub async fn authenticate_at(
        &self,
        org: &Org,
        connector: &Connector,
        source: Option<IpAddr>,
    ) -> Result<(Conn, SessionInfo)> {
        let mut conn = connector.connect(source).await?;
        let transcript = session_transcript(&conn.hello.challenge, &conn.tls_exporter);
        let request = Request::Authenticate(AuthenticateRequest {
            certificate: self.certificate.clone(),
            signature: Bytes(self.key.sign(&transcript).to_bytes()),
        });
        let Response::Authenticated(info) = conn.call(request).await? else {
            bail!("unexpected answer to Authenticate");
        };
        if !info.approved {
            bail!("device {} waits for approval", self.device_id);
        }
        if info.policy_version_acked < info.policy_version {
            let Response::Policy(signed) = conn.call(Request::PolicyFetch).await? else {
                bail!("unexpected answer to PolicyFetch");
            };
            let body = signed
                .verify(&org.org_key)
                .map_err(|e| anyhow!("policy signature: {e}"))?;
            if body.device_id != self.device_id {
                bail!("the policy names another device");
            }
            conn.call(Request::PolicyAck {
                version: body.version,
            })
            .await?;
        }
        Ok((conn, info))
    }
}

/// Source addresses for `index`-th connection: 127.0.0.1 until `per_address` connections,
/// then 127.0.0.2, … (each loopback address has its own ~28k ephemeral ports). `None` when
/// the server is not on 127.0.0.1 or one address suffices.
pub fn source_address(org: &Org, index: usize, per_address: usize, offset: usize) -> Option<IpAddr> {
    let IpAddr::V4(ip) = org.connector.addr.ip() else {
        return None;
    };
    if !ip.is_loopback() || per_address == 0 {
        return None;
    }
    let slot = offset + index / per_address;
    if slot == 0 {
        return None;
    }
    // 127.0.0.1 + slot, skipping .0 and .255 in the last octet.
    let n = u32::try_from(slot).ok()?;
    let host = 1 + n + 2 * (n / 253);
    let [_, b, c, d] = host.to_be_bytes();
    Some(IpAddr::from([127, b, c, d]))
}

/// Creates `count` users named `{prefix}{i}` through the admin session (bulk import, in
/// batches small enough for one frame) and enrols one simulated device for each, with
/// up to `concurrency` enrolments at a time.
pub async fn enroll(
    org: &Org,
    admin: &mut redoubt_client::Session,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Device>> {
    const IMPORT_BATCH: usize = 500;
    let mut codes = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let end = (next + IMPORT_BATCH).min(count);
        let users = (next..end)
            .map(|i| {
                Ok(ImportedUser {
                    user: UserName::parse(&format!("{prefix}{i}"))?,
                    display_name: None,
                    groups: Vec::new(),
                    roles: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let response = admin
            .request(Request::AdminUserImport { users })
            .await
            .context("importing users")?;
        let Response::Imported(issued) = response else {
            bail!("unexpected answer to AdminUserImport");
        };
        codes.extend(issued.into_iter().map(|i| i.code));
        next = end;
    }
    let org = Arc::new(org.clone());
    let results = crate::bounded(codes, concurrency, move |_, code| {
        let org = org.clone();
        async move { enroll_one(&org, &code).await }
    })
    .await;
    results.into_iter().collect()
}

async fn enroll_one(org: &Org, code: &str) -> Result<Device> {
    let code = ActivationCode::parse(code)?;
    let mut conn = org.connector.connect(None).await?;
    let key = SigningKey::generate(&mut OsRng);
    let transcript = enroll_transcript(&conn.hello.challenge, &conn.tls_exporter, &code.id);
    let request = Request::Enroll(EnrollRequest {
        code_id: code.id,
        secret: code.secret.clone(),
        device_public_key: Bytes(key.verifying_key().to_bytes()),
        device_name: DeviceName::parse("bench")?,
        signature: Bytes(key.sign(&transcript).to_bytes()),
    });
    let Response::Enrolled(enrolled) = conn.call(request).await? else {
        bail!("unexpected answer to Enroll");
    };
    conn.close().await;
    Device::new(org, key, enrolled.certificate)
}
