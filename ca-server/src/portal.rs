//! The web portal's domain rules: proof of possession for keys made in the browser, session
//! tokens and cookies, the CSRF check and account field rules. (Rate limits: [`crate::limits`].)
//!
//! Proof of possession: the browser signs `"bsn enrollment proof v1\n" || challenge` (the
//! challenge as the text it received) with the
//! new private key (WebCrypto: ECDSA with SHA-256 on P-256 or SHA-384 on P-384, as IEEE P1363
//! `r || s`; or Ed25519) and sends the SubjectPublicKeyInfo and the signature. The challenge is
//! one-time, bound to the signed-in identity, and consumed in the transaction that stores the
//! certificate.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;

use crate::csr::{CheckedKey, KeyKind};

/// What the browser signs before the challenge.
pub const PROOF_CONTEXT: &[u8] = b"bsn enrollment proof v1\n";
/// The session cookie's name.
pub const COOKIE: &str = "bsn_session";
/// How long a session lasts (absolute).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long an enrollment challenge lasts.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random generator failed");
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 hex of a token (what the database stores).
pub fn token_hash(token: &str) -> String {
    crate::pki::sha256_hex(token.as_bytes())
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// The session token in a `Cookie` header, if any.
pub fn token_from_cookies(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|c| c.strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
        .filter(|t| !t.is_empty() && t.len() <= 64)
}

/// Why a state-changing request was refused as cross-site.
pub fn csrf_problem(
    expected_token: &str,
    presented_token: Option<&str>,
    origin: Option<&str>,
    host: Option<&str>,
    fetch_site: Option<&str>,
) -> Option<String> {
    if fetch_site.is_some_and(|s| s == "cross-site" || s == "same-site") {
        return Some("requests from other sites are refused".into());
    }
    if let Some(origin) = origin {
        let own = host.map(|h| format!("https://{h}"));
        if own.as_deref() != Some(origin) {
            return Some(format!("requests from origin {origin} are refused"));
        }
    }
    let ok = presented_token.is_some_and(|t| {
        use subtle::ConstantTimeEq;
        bool::from(t.as_bytes().ct_eq(expected_token.as_bytes()))
    });
    if !ok {
        return Some("the X-CSRF-Token header is missing or wrong; reload the page".into());
    }
    None
}

/// Checks the browser's signature over the challenge with the key it proves it holds.
pub fn verify_proof(key: &CheckedKey, challenge: &[u8], signature: &[u8]) -> Result<(), String> {
    use ring::signature as sig;
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&key.spki_der)
        .map_err(|_| "the public key does not parse".to_string())?;
    let public = spki.subject_public_key.data.as_ref();
    let alg: &dyn sig::VerificationAlgorithm = match key.kind {
        KeyKind::EcdsaP256 => &sig::ECDSA_P256_SHA256_FIXED,
        KeyKind::EcdsaP384 => &sig::ECDSA_P384_SHA384_FIXED,
        KeyKind::Ed25519 => &sig::ED25519,
        KeyKind::Rsa(_) => return Err("browser enrollment takes ECDSA P-256, P-384 or Ed25519 keys".into()),
    };
    let mut msg = PROOF_CONTEXT.to_vec();
    msg.extend_from_slice(challenge);
    sig::UnparsedPublicKey::new(alg, public)
        .verify(&msg, signature)
        .map_err(|_| "the signature over the challenge does not verify with that key".into())
}

/// Account fields: name 1-100 characters, organisation 0-100, a plausible email address,
/// a password of 12 to 256 characters.
pub fn check_account(name: &str, email: &str, organisation: &str, password: &str) -> Result<(), String> {
    let text_ok = |s: &str, min: usize, max: usize| {
        let n = s.chars().count();
        n >= min && n <= max && !s.chars().any(char::is_control)
    };
    if !text_ok(name.trim(), 1, 100) {
        return Err("name must be 1 to 100 characters".into());
    }
    if !text_ok(organisation, 0, 100) {
        return Err("organisation must be at most 100 characters".into());
    }
    let parts: Vec<&str> = email.split('@').collect();
    if email.len() > 254
        || parts.len() != 2
        || parts[0].is_empty()
        || !parts[1].contains('.')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("email must be an address such as name@example.org".into());
    }
    let n = password.chars().count();
    if !(12..=256).contains(&n) {
        return Err("password must be 12 to 256 characters".into());
    }
    check_password_strength(password, &[name, email, organisation])
}

/// Refuses a password that zxcvbn estimates guessable in fewer than 10^10 tries (score below 3):
/// common passwords, keyboard and repeat patterns, dates, and the account's own name or email.
/// The error says why and what would help.
pub fn check_password_strength(password: &str, account: &[&str]) -> Result<(), String> {
    // zxcvbn's matching is quadratic in the length; its first 100 characters decide the score
    // of any password we would refuse.
    let head: String = password.chars().take(100).collect();
    let mut inputs: Vec<&str> = account.iter().copied().filter(|s| !s.is_empty()).collect();
    inputs.extend(
        account
            .iter()
            .flat_map(|s| s.split(['@', '.', ' ']))
            .filter(|s| s.len() >= 3),
    );
    let estimate = zxcvbn::zxcvbn(&head, &inputs);
    if u8::from(estimate.score()) >= 3 {
        return Ok(());
    }
    let mut why = String::from("this password is too easy to guess");
    if let Some(f) = estimate.feedback() {
        if let Some(w) = f.warning() {
            why.push_str(&format!(" ({w})"));
        }
        let tips: Vec<String> = f.suggestions().iter().map(|s| s.to_string()).collect();
        if !tips.is_empty() {
            why.push_str(&format!(": {}", tips.join(" ")));
        }
    }
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_rules() {
        let ok = |t: Option<&str>, o: Option<&str>, s: Option<&str>| csrf_problem("tok", t, o, Some("ca:8443"), s);
        assert_eq!(ok(Some("tok"), Some("https://ca:8443"), Some("same-origin")), None);
        assert_eq!(ok(Some("tok"), None, None), None);
        assert!(ok(None, Some("https://ca:8443"), None).is_some());
        assert!(ok(Some("tox"), None, None).is_some());
        assert!(ok(Some("tok"), Some("https://evil.example"), None).is_some());
        assert!(ok(Some("tok"), Some("http://ca:8443"), None).is_some());
        assert!(ok(Some("tok"), None, Some("cross-site")).is_some());
    }

    #[test]
    fn cookies() {
        assert_eq!(token_from_cookies("a=1; bsn_session=xyz; b=2"), Some("xyz"));
        assert_eq!(token_from_cookies("bsn_sessionx=1"), None);
        assert_eq!(token_from_cookies("bsn_session="), None);
        let c = session_cookie("t");
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
    }

    #[test]
    fn proof_of_possession() {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let challenge = b"0123456789abcdef0123456789abcdef";
        let mut msg = PROOF_CONTEXT.to_vec();
        msg.extend_from_slice(challenge);
        // P-256 as WebCrypto signs (P1363), SPKI as it exports.
        let pk = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk.as_ref(), &rng).unwrap();
        let spki = rcgen::KeyPair::try_from(pk.as_ref()).unwrap();
        let key = crate::csr::check_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&spki)).unwrap();
        let sig = kp.sign(&rng, &msg).unwrap();
        assert_eq!(kp.public_key().as_ref().len(), 65);
        verify_proof(&key, challenge, sig.as_ref()).unwrap();
        assert!(verify_proof(&key, b"another challenge", sig.as_ref()).is_err());
        let mut bad = sig.as_ref().to_vec();
        bad[10] ^= 1;
        assert!(verify_proof(&key, challenge, &bad).is_err());
        // Ed25519.
        let pk = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pk.as_ref()).unwrap();
        let spki = rcgen::KeyPair::try_from(pk.as_ref()).unwrap();
        let key = crate::csr::check_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&spki)).unwrap();
        verify_proof(&key, challenge, kp.sign(&msg).as_ref()).unwrap();
        assert!(verify_proof(&key, challenge, &[0u8; 64]).is_err());
    }

    /// Regression: the rule was length only, so `aaaaaaaaaaaa` and `password1234` were accepted.
    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        for weak in [
            "aaaaaaaaaaaa",
            "password1234",
            "qwertyuiop123",
            "123456789012",
            "ann@example.org1",
        ] {
            let e = check_account("Ann", "ann@example.org", "", weak).unwrap_err();
            assert!(e.starts_with("this password is too easy to guess"), "{weak}: {e}");
        }
        for strong in [
            "correct horse battery",
            "correct horse battery staple",
            "vX9#qT2!mL7@pR4$",
        ] {
            check_account("Ann", "ann@example.org", "", strong).unwrap_or_else(|e| panic!("{strong}: {e}"));
        }
    }

    #[test]
    fn account_rules() {
        assert!(check_account("Ann", "ann@example.org", "", "correct horse battery").is_ok());
        assert!(check_account("", "ann@example.org", "", "correct horse battery").is_err());
        assert!(check_account("Ann", "ann", "", "correct horse battery").is_err());
        assert!(check_account("Ann", "ann@example.org", "", "short").is_err());
        assert!(check_account("Ann\u{0}", "ann@example.org", "", "correct horse battery").is_err());
    }
}
