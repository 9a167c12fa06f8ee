//! Node-to-node traffic: Raft RPCs, proposals forwarded to a subchain's leader, and block fetches
//! for catching up. Over HTTPS with mTLS on both sides using the nodes' own certificates (the
//! server side admits only node identities that the CA's statement in force lists as hosts of
//! the subchain: see `api::raft_router`).
//!
//! Addresses come from the operator's address book (`[peers]` in `node.toml`, name -> URL), as a
//! Fabric channel's consenter list carries host:port; who may take part comes only from the CA.

use std::collections::HashMap;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chain::{Applied, Proposal};
use crate::group::TypeConfig;

/// The node's view of its peers: addresses and one HTTPS client (its connection pool is shared
/// by every subchain's group, so many groups share a few connections per peer).
#[derive(Clone)]
pub struct Peers {
    /// Peer name -> base URL, from `[peers]` in `node.toml`: overrides the node directory.
    overrides: HashMap<String, String>,
    /// The node directory (and what else the node knows from the CA).
    directory: std::sync::Arc<crate::directory::Directory>,
    client: std::sync::Arc<std::sync::RwLock<reqwest::Client>>,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Could not reach it (connection, TLS, timeout).
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    /// It answered with an error status.
    #[error("{0} answered {1}: {2}")]
    Refused(String, u16, String),
    /// Given up before it answered: the group elected another leader meanwhile, or the
    /// proposal's time ran out.
    #[error("gave up waiting for {0}: the group is electing another leader, or the time ran out")]
    Superseded(String),
}

impl PeerError {
    /// Whether the peer is gone for the subchain: unreachable, or it says it does not host the
    /// subchain (any more).
    pub fn gone(&self) -> bool {
        match self {
            Self::Unreachable(..) => true,
            Self::Refused(_, status, body) => *status == 404 && body.contains("not-hosted"),
            Self::Superseded(..) => false,
        }
    }
}

/// The client TLS configuration for reaching peers: this node's certificate, the CA bundle, and
/// a check that the peer is an unrevoked node identity.
pub fn peer_tls(
    bundle: &identity::verify::TrustBundle,
    credential: std::sync::Arc<crate::credential::Credential>,
    directory: std::sync::Arc<crate::directory::Directory>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    // A peer is a node identity whose certificate is not revoked: a revoked node can then
    // neither reach its peers (their servers refuse its client certificate) nor be reached by
    // them, so it drops out of every group at once.
    let policy: bsn_transport::verify::LeafPolicy = std::sync::Arc::new(move |leaf: &identity::profile::Leaf| {
        if !leaf.spiffe_id.kind.is_network_node() {
            return Err(rustls::CertificateError::NotValidForName);
        }
        if directory.is_revoked(&leaf.serial_hex) {
            return Err(rustls::CertificateError::Revoked);
        }
        Ok(())
    });
    let verifier = bsn_transport::verify::ServerCerts::new(bundle.roots(), provider.clone(), Some(policy))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(credential);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Peers {
    /// Peers reached with `tls` (see [`peer_tls`]), at the URLs the CA's node directory gives
    /// unless `overrides` (`[peers]` in `node.toml`) names another route.
    pub fn new(
        overrides: HashMap<String, String>,
        directory: std::sync::Arc<crate::directory::Directory>,
        tls: rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let client = Self::build(&tls)?;
        Ok(Self {
            overrides,
            directory,
            client: std::sync::Arc::new(std::sync::RwLock::new(client)),
            tls: std::sync::Arc::new(tls),
        })
    }

    fn build(tls: &rustls::ClientConfig) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .https_only(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            // A peer that vanished without closing its connections (a killed container, a cut
            // network) is noticed within seconds, not at the request's timeout: HTTP/2 pings
            // every second, and a connection whose ping goes unanswered for 2 s is dropped
            // with every request on it.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .http2_keep_alive_timeout(Duration::from_secs(2))
            .http2_keep_alive_while_idle(true)
            .build()?)
    }

    fn client(&self) -> reqwest::Client {
        self.client.read().expect("peers").clone()
    }

    /// Drops every pooled connection (the next calls handshake again, checking each peer's
    /// certificate against the current revocations). Called on every revocation.
    pub fn reconnect(&self) {
        match Self::build(&self.tls) {
            Ok(c) => *self.client.write().expect("peers") = c,
            Err(e) => tracing::error!(error = %e, "cannot rebuild the peer client"),
        }
    }

    /// Where this node reaches the group member `id`: its own override first (each node may
    /// reach a peer by a different route), then the CA's node directory, else the address the
    /// group's membership recorded.
    pub fn address_of(&self, id: u64, recorded: &str) -> String {
        if let Some(url) = self
            .overrides
            .iter()
            .find(|(name, _)| crate::group::node_id(name) == id)
            .map(|(_, url)| url.clone())
        {
            return url;
        }
        self.directory
            .node_directory()
            .and_then(|d| d.nodes.into_iter().find(|n| crate::group::node_id(&n.id) == id))
            .map_or_else(|| recorded.to_string(), |n| n.url)
    }

    /// The URL of a peer by name: the override, else the node directory's.
    pub fn address(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| self.directory.url_of(name))
    }

    /// POSTs JSON to `base + path` and reads JSON back.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let resp = self
            .client()
            .post(&url)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| PeerError::Unreachable(base.to_string(), chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(PeerError::Refused(base.to_string(), status.as_u16(), text));
        }
        resp.json()
            .await
            .map_err(|e| PeerError::Unreachable(base.to_string(), chain(&e)))
    }

    /// GETs JSON from `base + path`, answered within `timeout`.
    pub async fn get<R: DeserializeOwned>(&self, base: &str, path: &str, timeout: Duration) -> Result<R, PeerError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let resp = self
            .client()
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| PeerError::Unreachable(base.to_string(), chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(PeerError::Refused(base.to_string(), status.as_u16(), text));
        }
        resp.json()
            .await
            .map_err(|e| PeerError::Unreachable(base.to_string(), chain(&e)))
    }

    /// Forwards a proposal to the leader at `base` and returns what applying it did.
    pub async fn propose(&self, base: &str, subchain: &str, p: &Proposal) -> Result<Applied, PeerError> {
        self.call(
            base,
            &format!("/raft/v1/{subchain}/propose"),
            p,
            Duration::from_secs(30),
        )
        .await
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The Raft network of one subchain's group.
pub struct GroupNetwork {
    /// The subchain.
    pub subchain: String,
    /// The peers.
    pub peers: Peers,
}

/// A connection to one member of a group.
pub struct PeerClient {
    subchain: String,
    target: u64,
    addr: String,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            subchain: self.subchain.clone(),
            target,
            addr: self.peers.address_of(target, &node.addr),
            peers: self.peers.clone(),
        }
    }
}

impl PeerClient {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        what: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>> {
        let r: Result<Result<Resp, E>, PeerError> = self
            .peers
            .call(
                &self.addr,
                &format!("/raft/v1/{}/{what}", self.subchain),
                req,
                option.hard_ttl(),
            )
            .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            // Unreachable (not a network error) so openraft backs off before retrying: a peer that
            // is down, or has not opened the subchain yet, is asked again in half a second.
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.rpc("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc("vote", &rpc, &option).await
    }
}
