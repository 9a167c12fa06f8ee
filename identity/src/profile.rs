//! The BSN leaf profile (the SPIFFE X509-SVID profile) and reading an identity out of a leaf.

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::names::SpiffeId;

/// Why a certificate does not follow the leaf profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The bytes are not one DER X.509 certificate.
    #[error("not a DER X.509 certificate")]
    Malformed,
    /// The certificate is a CA certificate (basicConstraints cA=TRUE).
    #[error("leaf certificate must not be a CA")]
    IsCa,
    /// keyUsage is missing, lacks digitalSignature, or allows keyCertSign/cRLSign.
    #[error("keyUsage must include digitalSignature and exclude keyCertSign and cRLSign")]
    KeyUsage,
    /// extendedKeyUsage is missing clientAuth or serverAuth.
    #[error("extendedKeyUsage must include clientAuth and serverAuth")]
    ExtendedKeyUsage,
    /// There is not exactly one URI SAN, or it is not a BSN SPIFFE ID.
    #[error("certificate must carry exactly one URI SAN holding a BSN SPIFFE ID")]
    UriSan,
    /// A participant certificate carries DNS or IP SANs (only nodes may).
    #[error("only node certificates may carry DNS or IP SANs")]
    HostSan,
    /// The serial is zero, negative or longer than 20 octets.
    #[error("serial number must be positive and at most 20 octets")]
    Serial,
}

/// What the profile check reads out of a valid leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The identity the certificate names.
    pub spiffe_id: SpiffeId,
    /// The serial number as lowercase hex, without leading zero bytes.
    pub serial_hex: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// Checks a DER certificate against the leaf profile and returns the identity it names.
pub fn check_leaf(der: &[u8]) -> Result<Leaf, ProfileError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| ProfileError::Malformed)?;
    if !rest.is_empty() {
        return Err(ProfileError::Malformed);
    }
    check_parsed_leaf(&cert)
}

/// [`check_leaf`] for a certificate that is already parsed.
pub fn check_parsed_leaf(cert: &X509Certificate<'_>) -> Result<Leaf, ProfileError> {
    let raw_serial = cert.raw_serial();
    let serial = strip_leading_zeros(raw_serial);
    if raw_serial.first().is_some_and(|b| b & 0x80 != 0)
        || serial.is_empty()
        || raw_serial.len() > 21
        || serial.len() > 20
    {
        return Err(ProfileError::Serial);
    }
    let mut key_usage_ok = false;
    let mut eku_ok = false;
    let mut uris = Vec::new();
    let mut host_sans = 0usize;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(ProfileError::IsCa),
            ParsedExtension::KeyUsage(ku) => {
                key_usage_ok = ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => eku_ok = eku.client_auth && eku.server_auth,
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(*u),
                        GeneralName::DNSName(_) | GeneralName::IPAddress(_) => host_sans += 1,
                        _ => return Err(ProfileError::UriSan),
                    }
                }
            }
            _ => {}
        }
    }
    if !key_usage_ok {
        return Err(ProfileError::KeyUsage);
    }
    if !eku_ok {
        return Err(ProfileError::ExtendedKeyUsage);
    }
    let [uri] = uris.as_slice() else {
        return Err(ProfileError::UriSan);
    };
    let spiffe_id = SpiffeId::parse(uri).map_err(|_| ProfileError::UriSan)?;
    if host_sans > 0 && !spiffe_id.kind.is_network_node() {
        return Err(ProfileError::HostSan);
    }
    Ok(Leaf {
        spiffe_id,
        serial_hex: hex_lower(serial),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&x| x == 0).count();
    &b[n..]
}

/// Lowercase hex of bytes (serials are shown and looked up this way everywhere).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
