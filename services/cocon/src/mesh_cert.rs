//! `cocon mesh-cert DIR`: the certificates of the mesh's mutual TLS (see
//! `cocon_common::mesh_tls`).

use std::path::Path;

use anyhow::{Context, bail};
use cocon_common::mesh_tls::{CA_FILE, CERT_FILE, DEFAULT_SERVER_NAME, KEY_FILE};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

pub fn write(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    for file in [CA_FILE, CERT_FILE, KEY_FILE] {
        if dir.join(file).exists() {
            bail!(
                "{} exists already: every process must keep the same certificates, so Cocon never overwrites them",
                dir.join(file).display()
            );
        }
    }
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "Cocon mesh CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut sans = vec![DEFAULT_SERVER_NAME.to_string(), "localhost".to_string()];
    sans.extend(names.iter().cloned());
    let mut params = CertificateParams::new(sans).context("invalid --name")?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, DEFAULT_SERVER_NAME);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(CA_FILE), ca.pem())?;
    std::fs::write(dir.join(CERT_FILE), cert.pem())?;
    cocon_common::fs::write_private(&dir.join(KEY_FILE), key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", dir.join(KEY_FILE).display()))?;
    eprintln!(
        "wrote the mesh's CA and certificate to {}; give the same directory to every process (COCON_MESH_TLS__DIR={})",
        dir.display(),
        dir.display()
    );
    Ok(())
}
