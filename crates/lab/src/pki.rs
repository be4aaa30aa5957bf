//! The lab's certificate authority: one CA per control plane that signs the
//! API server's serving certificate and client certificates for test
//! identities, plus the service-account signing key.
//!
//! [`MailCa`] is a second, separate CA for mail: the certificates the
//! simulated providers present on STARTTLS, and the PEM a SendingPool is
//! told to trust, as a partner's private CA would be.
//!
//! Everything here is throw-away test material generated in-process (no
//! openssl CLI needed). It must never be used outside the lab: keys are
//! written unencrypted and certificates are valid for centuries.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::LabError;

/// Files of the lab's PKI, all PEM, under `<dir>/pki/`.
pub struct Pki {
    /// The CA certificate (trust anchor for clients, `--client-ca-file`).
    pub ca_cert: PathBuf,
    /// The CA key (also `--cluster-signing-key-file` of the controller manager).
    pub ca_key: PathBuf,
    /// Serving certificate of the API server.
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Service-account token signing key (ECDSA P-256, PKCS#8).
    pub sa_key: PathBuf,
    /// Its public half (`--service-account-key-file`: the API server's
    /// public-key parser does not read PKCS#8 private keys).
    pub sa_pub: PathBuf,
    /// Client certificate the API server presents to kubelets
    /// (`--kubelet-client-certificate`; group system:masters).
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    ca_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A client certificate and key, PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn tls(what: &'static str) -> impl FnOnce(rcgen::Error) -> LabError {
    move |source| LabError::Pki { what, source }
}

impl Pki {
    /// Create a fresh CA, a serving certificate for `sans` (IPs and DNS
    /// names) and a service-account key, written under `dir`.
    pub fn create(dir: &Path, sans: &[String]) -> Result<Pki, LabError> {
        std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
        let (ca_cert_pem, ca_key_pem, issuer) = new_ca("sendfleet-lab-ca")?;
        let serving = server_cert(&issuer, "kube-apiserver", sans)?;

        let sa_key = KeyPair::generate().map_err(tls("service-account key"))?;

        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            kubelet_client_cert: dir.join("apiserver-kubelet-client.crt"),
            kubelet_client_key: dir.join("apiserver-kubelet-client.key"),
            ca_cert_pem,
            issuer,
        };
        write_private(&pki.ca_cert, pki.ca_cert_pem.as_bytes())?;
        write_private(&pki.ca_key, ca_key_pem.as_bytes())?;
        write_private(&pki.serving_cert, serving.cert_pem.as_bytes())?;
        write_private(&pki.serving_key, serving.key_pem.as_bytes())?;
        write_private(&pki.sa_key, sa_key.serialize_pem().as_bytes())?;
        write_private(&pki.sa_pub, sa_key.public_key_pem().as_bytes())?;
        let kc = pki.client_cert("kube-apiserver-kubelet-client", Some("system:masters"))?;
        write_private(&pki.kubelet_client_cert, kc.cert_pem.as_bytes())?;
        write_private(&pki.kubelet_client_key, kc.key_pem.as_bytes())?;
        Ok(pki)
    }

    /// The CA certificate, PEM (for `certificate-authority-data`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// A client certificate for user `user`, optionally in `group` (the API
    /// server maps CN to the user name and O to a group; rcgen writes one O).
    pub fn client_cert(&self, user: &str, group: Option<&str>) -> Result<ClientCert, LabError> {
        client_cert(&self.issuer, user, group)
    }
}

/// A client certificate for `cn` signed by `issuer`, optionally with
/// organisation `group`.
fn client_cert(issuer: &Issuer<'static, KeyPair>, cn: &str, group: Option<&str>) -> Result<ClientCert, LabError> {
    let key = KeyPair::generate().map_err(tls("client key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls("client"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(g) = group {
        params.distinguished_name.push(DnType::OrganizationName, g);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).map_err(tls("client cert"))?;
    Ok(ClientCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

impl Pki {
    /// A serving certificate for `cn` valid for `sans` (IPs and DNS names),
    /// e.g. a kubelet's.
    pub fn serving_cert(&self, cn: &str, sans: &[String]) -> Result<ClientCert, LabError> {
        server_cert(&self.issuer, cn, sans)
    }
}

/// A self-signed CA named `cn`: certificate PEM, key PEM, issuer.
fn new_ca(cn: &str) -> Result<(String, String, Issuer<'static, KeyPair>), LabError> {
    let ca_key = KeyPair::generate().map_err(tls("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls("CA"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, cn);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls("CA"))?;
    let (cert_pem, key_pem) = (ca_cert.pem(), ca_key.serialize_pem());
    Ok((cert_pem, key_pem, Issuer::new(ca_params, ca_key)))
}

/// A serving certificate for `cn`, valid for `sans` (IPs and DNS names).
fn server_cert(issuer: &Issuer<'static, KeyPair>, cn: &str, sans: &[String]) -> Result<ClientCert, LabError> {
    let key = KeyPair::generate().map_err(tls("serving key"))?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(tls("serving cert"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).map_err(tls("serving cert"))?;
    Ok(ClientCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The lab's mail CA: it signs the simulated providers' STARTTLS
/// certificates; its certificate is what a sender must trust to `verify`
/// them (no public CA would sign `mx.provider-a.test`).
pub struct MailCa {
    /// The CA certificate, PEM, world-readable (a test hands it to a pool).
    pub cert_path: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl MailCa {
    /// The CA's file name under its directory.
    pub const CERT_FILE: &'static str = "mail-ca.crt";

    /// A fresh mail CA; its certificate is written to `dir`/[`MailCa::CERT_FILE`]
    /// (the key stays in memory: only this process issues certificates).
    pub fn create(dir: &Path) -> Result<MailCa, LabError> {
        std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
        let (cert_pem, _key_pem, issuer) = new_ca("sendfleet-lab-mail-ca")?;
        let cert_path = dir.join(Self::CERT_FILE);
        std::fs::write(&cert_path, &cert_pem).map_err(LabError::io(&cert_path))?;
        Ok(MailCa { cert_path, cert_pem, issuer })
    }

    /// This process's mail CA (created on first use in a lab temp
    /// directory, removed when the process exits): every receiver of a test
    /// binary presents a certificate from it, so a test trusts one PEM.
    pub fn shared() -> Result<&'static MailCa, LabError> {
        static CA: std::sync::OnceLock<Result<MailCa, String>> = std::sync::OnceLock::new();
        CA.get_or_init(|| {
            let dir = crate::process::temp_dir().map_err(|e| e.to_string())?;
            MailCa::create(&dir).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LabError::Usage(format!("the lab's mail CA: {e}")))
    }

    /// The CA certificate, PEM (what a SendingPool's trusted CA bundle holds).
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A client certificate for `cn` (a submission client of a pool whose
    /// `submission.clientCertificates` trusts this CA).
    pub fn client_cert(&self, cn: &str) -> Result<ClientCert, LabError> {
        client_cert(&self.issuer, cn, None)
    }

    /// A server certificate for a provider's host names `names` (its MX
    /// host first, the CN; a relay host name too if a route names one) and
    /// its address `ip`.
    pub fn server_cert(&self, names: &[&str], ip: &str) -> Result<ClientCert, LabError> {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).chain([ip.to_string()]).collect();
        server_cert(&self.issuer, names.first().copied().unwrap_or(ip), &sans)
    }
}

/// Write a file readable only by its owner (keys and tokens live here).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(LabError::io(path))?;
    f.write_all(contents).map_err(LabError::io(path))
}

/// A fresh 2048-bit RSA key as PKCS#8 PEM, from openssl: what a DKIM
/// Secret holds (one per call; tests that sign, verify or publish records).
pub fn rsa_key_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}
