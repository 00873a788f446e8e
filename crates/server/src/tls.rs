//! TLS: the self-signed certificate made at initialisation, and the rustls configuration.
//! TLS 1.3 only, on the aws-lc-rs provider, which offers the hybrid post-quantum key
//! exchange X25519MLKEM768 first.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::ServerError;

/// The certificate chain and key the server presents, and the pin devices check.
#[derive(Debug)]
pub struct TlsIdentity {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate's DER.
    pub pin: [u8; 32],
}

/// Makes a self-signed certificate for `names` and writes it and its key as PEM.
pub(crate) fn generate_self_signed(
    names: Vec<String>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), ServerError> {
    let key = rcgen::KeyPair::generate().map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "Redoubt server");
    params.distinguished_name = name;
    // Devices pin this certificate, so it must outlive them; replacing it means re-enrolling.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .self_signed(&key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    crate::data_dir::write_private(key_path, key.serialize_pem().as_bytes())?;
    crate::data_dir::write_private(cert_path, cert.pem().as_bytes())?;
    Ok(())
}

pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, ServerError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect())
        .map_err(|e| ServerError::Tls(format!("reading {}: {e}", cert_path.display())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| ServerError::Tls(format!("{} holds no certificate", cert_path.display())))?;
    let pin: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| ServerError::Tls(format!("reading {}: {e}", key_path.display())))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session tickets: rustls's default keeps 256 resumable sessions in memory and sends
    // two tickets after every handshake, which a server of thousands of devices (and a
    // device library that does not resume) would pay for at every reconnection for nothing.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(TlsIdentity {
        config: Arc::new(config),
        pin,
    })
}
