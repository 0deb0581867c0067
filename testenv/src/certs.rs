//! Test certificates for the TLS and mutual-TLS Redis servers.
//!
//! Everything is generated at run time so that no private key is checked in
//! and no certificate can expire between two CI runs. [`generate`] writes PEM
//! files into a directory:
//!
//! | file             | what it is                                                            |
//! |------------------|-----------------------------------------------------------------------|
//! | `ca.crt`         | the test CA; it signs everything below                                |
//! | `server.crt/key` | the Redis server's certificate, valid for `localhost` and `127.0.0.1` |
//! | `client.crt/key` | a client certificate for mutual TLS                                   |
//! | `wrong-ca.crt`   | an unrelated CA, for tests that must see verification fail            |
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, which OpenSSL (Redis), rustls and
//! native-tls all read, and are written with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::error::{IoContext, Result};

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA that signed the server and client certificates.
    pub ca_cert: PathBuf,
    /// A CA that signed nothing the servers use.
    pub wrong_ca_cert: PathBuf,
    /// The server certificate, for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    /// The server certificate's private key.
    pub server_key: PathBuf,
    /// The client certificate for mutual TLS.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
}

/// Generates the CAs and leaf certificates and writes them into `dir`.
pub fn generate(dir: &Path) -> Result<TestCerts> {
    let ca = new_ca("session-rs test CA")?;
    // The wrong CA gets a different name too: a verifier that looks issuers up
    // by name must fail on the signature, not find a look-alike by accident.
    let wrong_ca = new_ca("session-rs unrelated CA")?;

    let server_key = KeyPair::generate()?;
    let server = leaf_params(
        "session-rs test server",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?
    .signed_by(&server_key, &ca)?;

    let client_key = KeyPair::generate()?;
    let client = leaf_params(
        "session-rs test client",
        &["session-test-client"],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?
    .signed_by(&client_key, &ca)?;

    let certs = TestCerts {
        ca_cert: dir.join("ca.crt"),
        wrong_ca_cert: dir.join("wrong-ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    };
    write_file(&certs.ca_cert, &ca.pem(), 0o644)?;
    write_file(&certs.wrong_ca_cert, &wrong_ca.pem(), 0o644)?;
    write_file(&certs.server_cert, &server.pem(), 0o644)?;
    write_file(&certs.server_key, &server_key.serialize_pem(), 0o600)?;
    write_file(&certs.client_cert, &client.pem(), 0o644)?;
    write_file(&certs.client_key, &client_key.serialize_pem(), 0o600)?;
    Ok(certs)
}

/// A self-signed CA allowed to sign certificates.
fn new_ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// Parameters for an end-entity certificate; `names` become DNS or IP SANs.
fn leaf_params(
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams> {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = distinguished_name(common_name);
    // Strict verifiers (webpki) reject leaves that could act as CAs or that
    // lack the usage they are presented for, so both are stated explicitly.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "session-rs tests");
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes a new file with the given permissions from the start, so a private
/// key is never readable by others, not even briefly.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .io(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_every_file_with_private_keys_readable_only_by_the_owner() {
        let dir = crate::ScratchDir::new("testenv-certs").expect("scratch dir");
        let certs = generate(dir.path()).expect("generate");
        for (path, mode) in [
            (&certs.ca_cert, 0o644),
            (&certs.wrong_ca_cert, 0o644),
            (&certs.server_cert, 0o644),
            (&certs.server_key, 0o600),
            (&certs.client_cert, 0o644),
            (&certs.client_key, 0o600),
        ] {
            let text = fs::read_to_string(path).expect("read");
            assert!(
                text.starts_with("-----BEGIN "),
                "{} is not PEM",
                path.display()
            );
            let actual = fs::metadata(path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(actual, mode, "{}", path.display());
        }
        // The two CAs must differ, or the wrong-CA tests prove nothing.
        assert_ne!(
            fs::read_to_string(&certs.ca_cert).ok(),
            fs::read_to_string(&certs.wrong_ca_cert).ok()
        );
    }
}
