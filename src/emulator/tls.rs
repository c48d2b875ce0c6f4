//! TLS mode: a throwaway CA and a server certificate for `127.0.0.1` and `localhost`,
//! generated with rcgen at start, served with tokio-rustls (ALPN `h2`, `http/1.1`).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What TLS mode needs.
pub(super) struct Material {
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
    pub(super) ca_pem: String,
}

/// The generated chain, before it becomes a rustls config.
pub(super) struct Chain {
    pub(super) ca_pem: String,
    pub(super) ca_der: CertificateDer<'static>,
    pub(super) leaf_der: CertificateDer<'static>,
    pub(super) leaf_key: PrivateKeyDer<'static>,
}

pub(super) fn chain() -> Result<Chain, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "codex-as-api emulator test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        // A name that is not loopback, for tests through a proxy that maps it to 127.0.0.1.
        "codex-emulator.test".to_owned(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "codex-as-api emulator");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Chain {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        leaf_der: leaf_cert.der().clone(),
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

pub(super) fn generate() -> Result<Material, String> {
    let chain = chain().map_err(|e| format!("emulator certificate generation: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![chain.leaf_der, chain.ca_der], chain.leaf_key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Material {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem: chain.ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn chain_verifies_against_its_ca_for_loopback_names() {
        let chain = chain().unwrap();
        assert!(chain.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(chain.ca_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        for name in ["127.0.0.1", "localhost"] {
            let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&chain.leaf_der, &[], &server_name, &[], now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls_pki_types::ServerName::try_from("example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&chain.leaf_der, &[], &other, &[], now)
                .is_err()
        );
    }

    #[tokio::test]
    async fn tls_config_builds() {
        let m = generate().unwrap();
        assert!(m.ca_pem.contains("CERTIFICATE"));
    }
}
