//! An HTTPS client of the CA and ledger node APIs that turns problem documents into typed
//! errors.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::Problem;

/// What went wrong talking to the CA or a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA answered with a problem document.
    #[error("{title} ({status}): {detail}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem's stable slug (the part after `urn:bsn:problem:`).
        slug: String,
        /// Title.
        title: String,
        /// Detail.
        detail: String,
        /// Seconds the server asked to wait before retrying (`Retry-After`), when it said.
        retry_after: Option<u64>,
    },
    /// The server refused this client's certificate during the TLS handshake (revoked, expired,
    /// from another CA, or not admitted there).
    #[error("{url} refused your client certificate: {why}")]
    CertificateRefused {
        /// Base URL.
        url: String,
        /// What the server's TLS alert says, in words.
        why: String,
    },
    /// The server could not be reached, the TLS handshake failed, or the answer was not HTTP.
    #[error("cannot reach {url}: {reason}")]
    Transport {
        /// Base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A local file or argument problem.
    #[error("{0}")]
    Local(String),
    /// What the server sent does not verify (a proof, a hash chain, a signature): do not trust it.
    #[error("the server's answer does not verify: {0}")]
    Verification(String),
}

/// A configured client.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// The TLS configuration, kept to ask the server why it closed a connection.
    tls: Arc<rustls::ClientConfig>,
}

/// A rustls client configuration trusting `bundle_pem` and, if given, authenticating with a
/// certificate chain and key (PEM).
pub fn tls_config(bundle_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem) {
        let c = c.map_err(|e| ClientError::Local(format!("CA bundle: {e}")))?;
        roots
            .add(c)
            .map_err(|e| ClientError::Local(format!("CA bundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Local("the CA bundle holds no certificate".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Local(e.to_string()))?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ClientError::Local(format!("certificate file: {e}")))?;
            if chain.is_empty() {
                return Err(ClientError::Local("the certificate file holds no certificate".into()));
            }
            let key =
                PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ClientError::Local(format!("key file: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Local(format!("certificate and key do not match: {e}")))?
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Api {
    /// A client of the CA at `base` (such as `https://127.0.0.1:8443`).
    pub fn new(base: &str, tls: rustls::ClientConfig) -> Result<Self, ClientError> {
        let kept = Arc::new(tls.clone());
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Local(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            tls: kept,
        })
    }

    /// A client from files: the CA bundle and, optionally, a certificate and key.
    pub fn from_files(base: &str, bundle: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| ClientError::Local(format!("cannot read {}: {e}", p.display())));
        let bundle = read(bundle)?;
        let tls = match identity {
            Some((c, k)) => tls_config(&bundle, Some((&read(c)?, &read(k)?)))?,
            None => tls_config(&bundle, None)?,
        };
        Self::new(base, tls)
    }

    /// POSTs JSON and returns the JSON answer.
    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// PUTs JSON.
    pub async fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, ClientError> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// PATCHes JSON.
    pub async fn patch<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, ClientError> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// DELETEs.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// Opens a server-sent event stream (no overall timeout); read it with [`EventStream`].
    pub async fn events(&self, path: &str, query: &[(&str, String)]) -> Result<EventStream, ClientError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(std::time::Duration::from_secs(365 * 86_400))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e).await),
        };
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        Ok(EventStream {
            resp,
            buf: String::new(),
            url: self.base.clone(),
        })
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    /// GETs a typed answer (see [`crate::node`]).
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let v = self.get(path, query).await?;
        self.decode(path, v)
    }

    /// POSTs JSON and reads a typed answer.
    pub async fn post_as<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let v = self.post(path, body).await?;
        self.decode(path, v)
    }

    /// PUTs JSON and reads a typed answer.
    pub async fn put_as<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let v = self.put(path, body).await?;
        self.decode(path, v)
    }

    /// PATCHes JSON and reads a typed answer.
    pub async fn patch_as<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let v = self.patch(path, body).await?;
        self.decode(path, v)
    }

    /// DELETEs and reads a typed answer.
    pub async fn delete_as<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let v = self.delete(path).await?;
        self.decode(path, v)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, v: Value) -> Result<T, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError::Transport {
            url: format!("{}{path}", self.base),
            reason: format!("the answer is not what the API contract says: {e}"),
        })
    }

    /// GETs raw bytes (PEM, DER).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e).await),
        };
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        match resp.bytes().await {
            Ok(b) => Ok(b.to_vec()),
            Err(e) => Err(self.transport(e).await),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e).await),
        };
        if !resp.status().is_success() {
            return Err(problem(resp).await);
        }
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        match resp.json().await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.transport(e).await),
        }
    }

    async fn transport(&self, e: reqwest::Error) -> ClientError {
        if let Some(why) = refused_certificate(&e) {
            return ClientError::CertificateRefused {
                url: self.base.clone(),
                why: why.into(),
            };
        }
        // Over HTTP/2 a connection the server closed with an alert before the request was sent
        // fails as "connection was not ready", and the alert is lost with the connection. Ask
        // the server once more, on a connection of our own, why it refuses.
        if (e.is_connect() || e.is_request())
            && !e.is_timeout()
            && let Some(why) = self.why_refused().await
        {
            return ClientError::CertificateRefused {
                url: self.base.clone(),
                why: why.into(),
            };
        }
        let mut reason = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(s) = src {
            reason.push_str(&format!(": {s}"));
            src = s.source();
        }
        ClientError::Transport {
            url: self.base.clone(),
            reason,
        }
    }
}

impl Api {
    /// Opens one TLS connection of its own (HTTP/1.1), sends a `GET /livez` and reads the
    /// answer: the server's alert about this client's certificate, if it sends one, in words.
    async fn why_refused(&self) -> Option<&'static str> {
        let url = reqwest::Url::parse(&self.base).ok()?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default()?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).ok()?;
        let mut cfg = (*self.tls).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        let probe = tokio::task::spawn_blocking(move || -> Option<&'static str> {
            use std::io::{Read, Write};
            use std::net::ToSocketAddrs;
            let limit = std::time::Duration::from_secs(3);
            let addr = (host.as_str(), port).to_socket_addrs().ok()?.next()?;
            let mut tcp = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
            tcp.set_read_timeout(Some(limit)).ok()?;
            tcp.set_write_timeout(Some(limit)).ok()?;
            let mut conn = rustls::ClientConnection::new(cfg, name).ok()?;
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            let req = format!(
                "GET /livez HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                url.authority()
            );
            let mut buf = [0u8; 512];
            let err = match tls.write_all(req.as_bytes()).and_then(|()| tls.read(&mut buf)) {
                Ok(_) => return None,
                Err(e) => e,
            };
            let inner = err.get_ref()?;
            match tls_error(inner) {
                Some(rustls::Error::AlertReceived(a)) => alert_words(*a),
                _ => None,
            }
        });
        probe.await.ok().flatten()
    }
}

/// The rustls error somewhere under `e`. Connectors wrap it in `io::Error`s (sometimes one in
/// another), whose `source()` skips the wrapped error, so each `io::Error`'s inner error is
/// searched too.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
        && let Some(t) = tls_error(inner)
    {
        return Some(t);
    }
    e.source().and_then(tls_error)
}

/// The server's TLS alert about this client's certificate, in words, if that is why `e`
/// happened. In TLS 1.3 the client finishes its handshake first, so the alert arrives when the
/// answer is read. Over HTTP/1.1 the rustls error is in the chain; over HTTP/2 the h2 crate keeps
/// only an I/O error's kind and message, so the alert is then read from rustls's message
/// ("received fatal alert: <Description>").
fn refused_certificate(e: &reqwest::Error) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    let alert = match tls_error(e) {
        Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
        Some(_) => None,
        None => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            [
                A::CertificateRevoked,
                A::CertificateExpired,
                A::UnknownCA,
                A::CertificateRequired,
                A::BadCertificate,
                A::UnsupportedCertificate,
                A::CertificateUnknown,
                A::AccessDenied,
            ]
            .into_iter()
            .find(|a| text.contains(&format!("received fatal alert: {a:?}")))
        }
    };
    alert_words(alert?)
}

/// What a TLS alert about a client certificate means, in words; `None` for other alerts.
fn alert_words(alert: rustls::AlertDescription) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateRevoked => Some("it is revoked"),
        A::CertificateExpired => Some("it has expired or is not yet valid"),
        A::UnknownCA => Some("it was not issued by this network's CA"),
        A::CertificateRequired => Some("it sent none; pass --cert and --key"),
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            Some("the certificate is not acceptable there")
        }
        A::AccessDenied => Some("this identity is not admitted there"),
        _ => None,
    }
}

async fn problem(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Problem>(&text) {
        Ok(p) => ClientError::Problem {
            status,
            slug: p.slug().to_string(),
            title: p.title,
            detail: p.detail,
            retry_after,
        },
        Err(_) => ClientError::Problem {
            status,
            slug: String::new(),
            title: format!("HTTP {status}"),
            detail: text,
            retry_after,
        },
    }
}

/// A server-sent event stream being read.
pub struct EventStream {
    resp: reqwest::Response,
    buf: String,
    /// The server's base URL, for errors.
    url: String,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    /// `event:` (empty if none).
    pub event: String,
    /// `id:` (empty if none).
    pub id: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

impl EventStream {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = ServerEvent {
                    event: String::new(),
                    id: String::new(),
                    data: String::new(),
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if data.is_empty() && ev.event.is_empty() {
                    continue; // a comment (keep-alive)
                }
                ev.data = data.join("\n");
                return Ok(Some(ev));
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}
