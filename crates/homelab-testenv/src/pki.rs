//! Throwaway certificates: a CA, serving certificates it signs, and bare key pairs.
//!
//! rustls refuses a self-signed certificate used directly by a server (`CaUsedAsEndEntity`), so
//! servers get a leaf signed by a CA that clients trust.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// A certificate authority that exists only for one test environment.
pub struct TestCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

fn cert_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Certificate {
        what: what.to_owned(),
        source,
    }
}

impl TestCa {
    /// Generates a CA with common name `name`.
    pub fn generate(name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(cert_error("the CA key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_error("the CA"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(cert_error("the CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<CertifiedKey, Error> {
        let key = KeyPair::generate().map_err(cert_error("a server key"))?;
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params =
            CertificateParams::new(sans).map_err(cert_error("a server certificate"))?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        // Python 3.13's strict verification (barman-cloud's) refuses a leaf without it.
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_error("a server certificate"))?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl TestCa {
    /// Issues a client certificate with common name `name` (the user name a TLS client
    /// authenticates as).
    pub fn issue_client(&self, name: &str) -> Result<CertifiedKey, Error> {
        let key = KeyPair::generate().map_err(cert_error("a client key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(cert_error("a client certificate"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        // Python 3.13's strict verification (barman-cloud's) refuses a leaf without it.
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_error("a client certificate"))?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A self-signed certificate for `common_name` with DNS names `names`, for a server or a client,
/// for a peer that trusts exactly this certificate.
pub fn self_signed(common_name: &str, names: &[&str], server: bool) -> Result<CertifiedKey, Error> {
    let key = KeyPair::generate().map_err(cert_error("a key"))?;
    let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(cert_error("a certificate"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params
        .self_signed(&key)
        .map_err(cert_error("a certificate"))?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A fresh ECDSA P-256 key pair as `(PKCS#8 private key, SubjectPublicKeyInfo public key)`, both
/// PEM (for example to sign and verify service-account tokens).
pub fn key_pair_pem() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(cert_error("a key pair"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
