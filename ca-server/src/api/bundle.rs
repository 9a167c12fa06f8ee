//! Public material: the trust bundle (PEM and SPIFFE bundle), the CA chain and the CRLs: each
//! issuing intermediate's (`/api/v1/crls/{number}`, named by the leaves it issued; the active
//! one's also at `/api/v1/crl`), the first root's (`/api/v1/crl/root`, named by the
//! intermediates it certified), each root's (`/api/v1/crl/root/{number}`) and all of them in one PEM file for servers such as nginx whose `ssl_crl` wants a CRL from every
//! CA in the chain (`/api/v1/crls.pem`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bsn_api::ca::{BundleKey, BundleMembershipKey, SpiffeBundle};
use x509_parser::prelude::FromDer;

use super::pem_response;
use crate::app::AppState;
use crate::pki::pem;
use crate::problem::ApiError;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/trust-bundle", get(trust_bundle))
        .route("/api/v1/ca-chain", get(ca_chain))
        .route("/api/v1/spiffe-bundle", get(spiffe_bundle))
        .route("/api/v1/crl", get(crl_der))
        .route("/api/v1/crl.pem", get(crl_pem))
        .route("/api/v1/crl/root", get(root_crl_der))
        .route("/api/v1/crl/root.pem", get(root_crl_pem))
        .route("/api/v1/crl/root/{number}", get(numbered_root_crl_der))
        .route("/api/v1/crls.pem", get(crls_pem))
        .route("/api/v1/crls/{number}", get(numbered_crl_der))
}

/// The root's CRL; a CA whose root never signed one (made before CRLs were published for the
/// root, with the root key kept elsewhere) answers `not-found` saying what to do.
async fn root_crl(s: &AppState) -> Result<Vec<u8>, ApiError> {
    match tokio::fs::read(&s.root_crl).await {
        Ok(der) => Ok(der),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::NotFound(
            "this CA publishes no root CRL yet: its operator runs `ca-server root crl`".into(),
        )),
        Err(e) => Err(ApiError::Internal(anyhow::anyhow!("reading the root CRL: {e}"))),
    }
}

async fn root_crl_der(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/pkix-crl")],
        root_crl(&s).await?,
    )
        .into_response())
}

async fn root_crl_pem(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(pem_response(
        "application/x-pem-file",
        pem("X509 CRL", &root_crl(&s).await?),
    ))
}

/// Root `number`'s CRL while it is trusted (root 1's is the data directory's file).
async fn numbered_root_crl_der(State(s): State<Arc<AppState>>, Path(n): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no CRL is published for root '{n}'"));
    let number: i64 = n.parse().map_err(|_| not_found())?;
    // Read from the database, not the loaded view: another replica may have re-signed it.
    let roots = crate::db::roots::all(&mut *s.db.acquire().await?).await?;
    let row = roots
        .iter()
        .find(|r| r.number == number && r.trusted())
        .ok_or_else(not_found)?;
    let der = match &row.crl {
        Some(crl) => crl.clone(),
        None if number == 1 => root_crl(&s).await?,
        None => return Err(not_found()),
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "application/pkix-crl")], der).into_response())
}

/// Every current CRL: each trusted root's first, then each intermediate's whose CRL is published
/// (a new one before it issues anything, an old one until its last certificate expires), in one
/// PEM file.
async fn crls_pem(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let issuers = s.issuers.get();
    let mut body = String::new();
    for root in crate::db::roots::all(&mut *s.db.acquire().await?)
        .await?
        .iter()
        .filter(|r| r.trusted())
    {
        match &root.crl {
            Some(crl) => body += &pem("X509 CRL", crl),
            None if root.number == 1 => body += &pem("X509 CRL", &root_crl(&s).await?),
            None => {}
        }
    }
    for number in issuers.signing.keys() {
        if let Some(crl) = s.db.crl(*number).await? {
            body += &pem("X509 CRL", &crl.der);
        }
    }
    Ok(pem_response("application/x-pem-file", body))
}

/// The active intermediate's CRL.
async fn active_crl(s: &AppState) -> Result<Vec<u8>, ApiError> {
    let number = s.ca().number;
    Ok(s.db
        .crl(number)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no CRL stored for intermediate {number}")))?
        .der)
}

/// Intermediate `number`'s CRL, while it is published.
async fn numbered_crl_der(State(s): State<Arc<AppState>>, Path(n): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no CRL is published for intermediate '{n}'"));
    let number: i64 = n.parse().map_err(|_| not_found())?;
    let crl = s.db.crl(number).await?.ok_or_else(not_found)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/pkix-crl")], crl.der).into_response())
}

async fn trust_bundle(State(s): State<Arc<AppState>>) -> Response {
    let body: String = s
        .issuers
        .get()
        .trusted_roots()
        .iter()
        .map(|r| pem("CERTIFICATE", r))
        .collect();
    pem_response("application/pem-certificate-chain", body)
}

async fn ca_chain(State(s): State<Arc<AppState>>) -> Response {
    let body: String = s.ca().chain().iter().map(|c| pem("CERTIFICATE", c)).collect();
    pem_response("application/pem-certificate-chain", body)
}

/// The SPIFFE trust bundle (a JWK set with `use: x509-svid` keys).
async fn spiffe_bundle(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut keys = Vec::new();
    for root in &s.issuers.get().trusted_roots() {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(root)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("root does not parse: {e}")))?;
        let point = cert.public_key().subject_public_key.data.as_ref();
        let (crv, len) = match point.len() {
            65 => ("P-256", 32),
            97 => ("P-384", 48),
            _ => {
                return Err(ApiError::Internal(anyhow::anyhow!("root key is not P-256 or P-384")));
            }
        };
        keys.push(BundleKey {
            usage: "x509-svid".into(),
            kty: "EC".into(),
            crv: crv.into(),
            x: URL_SAFE_NO_PAD.encode(&point[1..1 + len]),
            y: URL_SAFE_NO_PAD.encode(&point[1 + len..]),
            x5c: vec![STANDARD.encode(root)],
        });
    }
    let crl_number = s.db.crl(s.ca().number).await?.map(|c| c.number).unwrap_or(0);
    // JWK Set members an implementation does not know are ignored (RFC 7517 section 5), so the
    // membership key rides along for BSN ledger nodes without upsetting SPIFFE libraries.
    let body = SpiffeBundle {
        keys,
        spiffe_sequence: crl_number,
        spiffe_refresh_hint: 300,
        bsn_membership_key: BundleMembershipKey {
            alg: "Ed25519".into(),
            key: s.membership.public().to_base64(),
        },
    };
    Ok(axum::Json(body).into_response())
}

async fn crl_der(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/pkix-crl")],
        active_crl(&s).await?,
    )
        .into_response())
}

async fn crl_pem(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(pem_response(
        "application/x-pem-file",
        pem("X509 CRL", &active_crl(&s).await?),
    ))
}
