//! The HTTPS connection layer shared by `ca-server` and `ledger-node`: one accept loop that
//! bounds what any client can hold open, whoever it is.
//!
//! Features:
//! - **Connection caps**: at most [`Limits::max_connections`] open connections, at most
//!   [`Limits::max_per_address`] from one address (an IPv6 client by its /64), both checked at
//!   accept, before any TLS work; a connection over a cap is closed at once, never queued.
//! - **Reserved capacity**: after the handshake, [`Admit`] classes a connection as
//!   [`Class::Public`] or [`Class::Reserved`] (operators' traffic: node-to-node Raft and block
//!   transfer). Public connections may hold at most `max_connections - reserved`, so a saturated
//!   public gateway leaves room for established operator connections.
//! - **Deadlines**: the TLS handshake must finish within [`Limits::handshake_timeout`]; the first
//!   request's headers must arrive within [`Limits::header_timeout`]; a connection with no
//!   request in flight is closed after [`Limits::idle_timeout`] (bytes trickled without a
//!   complete request do not count as activity); a request body must arrive whole within
//!   [`Limits::body_timeout`]. HTTP/2 streams per connection and header sizes are bounded. Each
//!   connection's handshake, header and idle deadlines are stretched by a random 0-25%, so
//!   connections opened together (a flood) do not all close, and come back, together.
//! - **Handshakes yield to established connections**: TLS handshakes run on a pool of their own
//!   (one thread per CPU, at nice 10, a lower CPU priority than the threads that serve requests;
//!   [`handshake_pool`]), so a burst of thousands of new connections computes with whatever CPU
//!   the requests of connections already served leave idle, and never delays them. A handshake
//!   waiting for its client holds no thread. The connection's socket stays registered with the
//!   server's runtime, which hands the finished TLS stream back to it.
//! - **Cutting connections**: [`Admit`] may return a future that ends the connection early (the
//!   node cuts a connection whose client certificate is revoked or expires).
//! - [`KeyedSlots`]: per-key caps for long-lived streams (one identity cannot take every slot).
//! - [`server_crypto`]: the one TLS provider of both servers (ring), with TLS 1.3's
//!   AES-128-GCM-SHA256 preferred: its SHA-256 runs on the CPU's SHA extensions, where ring's
//!   SHA-384 (AES-256-GCM-SHA384, rustls' first choice) runs in software and cost about 6% of a
//!   full handshake's server CPU. Servers choose the suite themselves (`ignore_client_order`).
//! - [`metrics`]: the one way both servers keep and render Prometheus metrics.
//! - [`verify`]: the one certificate verifier (webpki plus the leaf profile and a policy) of
//!   both servers and of node-to-node clients.
//! - Every request carries `axum::extract::ConnectInfo<SocketAddr>` and the [`Admit::Ext`] of
//!   its connection as extensions.
//!
//! Non-features: no TLS session resumption policy of its own (the `rustls::ServerConfig` passed
//! in decides; both servers turn resumption off), no HTTP/1 upgrades or WebSockets, no rate
//! limiting of requests (the services limit what is expensive), no PROXY protocol: behind a
//! load balancer every client shares the balancer's address.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod metrics;
pub mod verify;

use metrics::Metric;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// What one server lets clients hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most (all classes, handshaking included).
    pub max_connections: usize,
    /// Open connections from one address at most.
    pub max_per_address: usize,
    /// Connections only [`Class::Reserved`] ones may use.
    pub reserved: usize,
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time from the handshake to the first request's headers.
    pub header_timeout: Duration,
    /// Time a connection may sit with no request in flight.
    pub idle_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_per_address: 512,
            reserved: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Which capacity a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Anyone's: participants, applications, portal users.
    Public,
    /// Operators' traffic that must keep working while the public capacity is full.
    Reserved,
}

/// A future that, when it completes, closes the connection; its output says why (for the log).
pub type Cut = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// A connection the server agreed to serve after its handshake.
pub struct Admitted<E> {
    /// Its class.
    pub class: Class,
    /// Added to every request on the connection.
    pub ext: E,
    /// Closes the connection when it completes.
    pub cut: Option<Cut>,
}

/// The server's decision on a handshake-verified connection.
pub trait Admit: Send + Sync + 'static {
    /// The per-connection request extension.
    type Ext: Clone + Send + Sync + 'static;
    /// Whether to serve a connection from `remote` that presented `certs` (already verified by
    /// the TLS configuration's client verifier); `None` closes it.
    fn admit(&self, remote: SocketAddr, certs: Option<&[CertificateDer<'static>]>) -> Option<Admitted<Self::Ext>>;
}

/// Counters of the connection layer, for `/metrics`.
#[derive(Debug)]
pub struct Stats {
    /// Connections open now.
    pub open: Metric,
    /// Handshakes completed.
    pub handshakes: Metric,
    /// Handshakes that failed (bad or missing certificate, protocol error).
    pub handshakes_failed: Metric,
    /// Connections closed because a deadline passed (handshake, headers, idle).
    pub timed_out: Metric,
    /// Connections refused at accept or after the handshake because a cap was reached.
    pub refused_over_cap: Metric,
    /// Connections cut by their [`Admitted::cut`] future.
    pub cut: Metric,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            open: Metric::gauge("connections_open", "connections open"),
            handshakes: Metric::counter("handshakes_total", "TLS handshakes completed"),
            handshakes_failed: Metric::counter("handshakes_failed_total", "TLS handshakes failed"),
            timed_out: Metric::counter(
                "connections_timed_out_total",
                "connections closed at a handshake, header or idle deadline",
            ),
            refused_over_cap: Metric::counter("connections_refused_total", "connections refused over a connection cap"),
            cut: Metric::counter(
                "connections_cut_total",
                "connections cut (revoked or expired client certificate)",
            ),
        }
    }
}

impl Stats {
    /// The Prometheus text exposition, names prefixed with `prefix`.
    pub fn render(&self, prefix: &str) -> String {
        metrics::render(
            prefix,
            &[
                &self.open,
                &self.handshakes,
                &self.handshakes_failed,
                &self.timed_out,
                &self.refused_over_cap,
                &self.cut,
            ],
        )
    }
}

/// The servers' TLS provider: ring with its own cipher suites, TLS 1.3's AES-128-GCM-SHA256
/// first and AES-256-GCM-SHA384 second (the rest in ring's order). Pair it with
/// `ServerConfig::ignore_client_order` so the server's order decides.
pub fn server_crypto() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(provider)
}

/// The key connections and sources are counted by: an IPv4 address, or an IPv6 /64 (an IPv4
/// address mapped into IPv6 counts as itself).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

/// At most `per_key` slots per key and `total` in all; a slot is held until its guard drops.
#[derive(Debug)]
pub struct KeyedSlots<K: Hash + Eq + Clone> {
    per_key: usize,
    total: usize,
    state: Mutex<(HashMap<K, usize>, usize)>,
}

/// A slot of a [`KeyedSlots`].
#[derive(Debug)]
pub struct Slot<K: Hash + Eq + Clone> {
    slots: Arc<KeyedSlots<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> KeyedSlots<K> {
    /// `per_key` slots per key, `total` in all.
    pub fn new(per_key: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_key,
            total,
            state: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// A slot for `key`, or `None` when the key or the whole has none left.
    pub fn try_take(self: &Arc<Self>, key: &K) -> Option<Slot<K>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.1 >= self.total {
            return None;
        }
        let n = s.0.entry(key.clone()).or_insert(0);
        if *n >= self.per_key {
            return None;
        }
        *n += 1;
        s.1 += 1;
        Some(Slot {
            slots: self.clone(),
            key: key.clone(),
        })
    }

    /// Slots held by `key` now.
    pub fn held(&self, key: &K) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut s = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = s.0.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.0.remove(&self.key);
            }
        }
        s.1 -= 1;
    }
}

/// What a connection's watchdog looks at.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    served_one: AtomicBool,
    /// Milliseconds after `start` when the last request ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served_one: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Whether the connection has been without a request longer than its deadline allows.
    fn overdue(&self, limits: &Limits) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let allowed = if self.served_one.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        };
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(idle_since) > allowed
    }
}

/// Counts a request in flight until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.served_one.store(true, Ordering::Release);
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails if it has not arrived whole by its deadline.
struct Deadline {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The runtime that computes TLS handshakes for every server in this process: one worker per
/// CPU, each at nice 10 so the kernel runs the request-serving threads first when both want a
/// core. Created on first use and kept for the life of the process. If the priority cannot be
/// lowered (a restricted container), handshakes still run here, only at the same priority.
pub fn handshake_pool() -> &'static tokio::runtime::Handle {
    static POOL: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus)
            .thread_name("bsn-handshake")
            .enable_time()
            .on_thread_start(|| {
                // On Linux, nice is per thread: this lowers only the pool's own threads.
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
            })
            .build()
            .expect("the handshake runtime starts")
    })
    .handle()
}

/// `d` stretched by a random 0-25% (never shortened).
fn jittered(d: Duration) -> Duration {
    use std::hash::BuildHasher;
    static N: AtomicU64 = AtomicU64::new(0);
    let r = std::collections::hash_map::RandomState::new().hash_one(N.fetch_add(1, Ordering::Relaxed));
    d + d.mul_f64((r % 1000) as f64 / 4000.0)
}

/// Open connections, per address and in all.
struct Counts {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    public: AtomicUsize,
}

/// One open connection's share of [`Counts`].
struct Held {
    counts: Arc<Counts>,
    stats: Arc<Stats>,
    address: IpAddr,
    public: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.counts.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.address);
            }
        }
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if self.public {
            self.counts.public.fetch_sub(1, Ordering::AcqRel);
        }
        self.stats.open.sub(1);
    }
}

impl Counts {
    fn take(self: &Arc<Self>, address: IpAddr, limits: &Limits, stats: &Arc<Stats>) -> Option<Held> {
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Acquire) >= limits.max_connections {
            return None;
        }
        let n = map.entry(address).or_insert(0);
        if *n >= limits.max_per_address {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        stats.open.inc();
        Some(Held {
            counts: self.clone(),
            stats: stats.clone(),
            address,
            public: false,
        })
    }

    fn make_public(&self, held: &mut Held, limits: &Limits) -> bool {
        let cap = limits.max_connections.saturating_sub(limits.reserved);
        let mut cur = self.public.load(Ordering::Acquire);
        loop {
            if cur >= cap {
                return false;
            }
            match self
                .public
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    held.public = true;
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` turns true (open connections then get
/// up to 5 seconds to finish).
pub async fn serve<A: Admit>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    admit: Arc<A>,
    limits: Limits,
    stats: Arc<Stats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = handshake_pool();
    let counts = Arc::new(Counts {
        per_address: Mutex::new(HashMap::new()),
        total: AtomicUsize::new(0),
        public: AtomicUsize::new(0),
    });
    let limits = Arc::new(limits);
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(held) = counts.take(address_key(remote.ip()), &limits, &stats) else {
            stats.refused_over_cap.inc();
            drop(tcp); // over a cap: close at once rather than queue
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            remote,
            held,
            acceptor.clone(),
            handshakes,
            app.clone(),
            admit.clone(),
            limits.clone(),
            counts.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
    }
}

/// The TLS handshake. When it fails (a revoked, expired or foreign client certificate), the
/// alert rustls sent is followed by a graceful close: this side's half is shut and whatever the
/// client already sent (its first request, in TLS 1.3) is read and dropped for up to half a
/// second, so the client reads the alert and can say why, instead of a reset that may reach it
/// first.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match acceptor.accept(tcp).into_fallible().await {
        Ok(s) => Ok(s),
        Err((e, mut tcp)) => {
            let _ = tcp.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection<A: Admit>(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    mut held: Held,
    acceptor: TlsAcceptor,
    handshakes: &'static tokio::runtime::Handle,
    app: Router,
    admit: Arc<A>,
    limits: Arc<Limits>,
    counts: Arc<Counts>,
    stats: Arc<Stats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // This connection's own deadlines (see the crate docs on jitter).
    let limits = Arc::new(Limits {
        handshake_timeout: jittered(limits.handshake_timeout),
        header_timeout: jittered(limits.header_timeout),
        idle_timeout: jittered(limits.idle_timeout),
        ..(*limits).clone()
    });
    // The socket stays registered with this runtime's reactor; only the handshake's computing
    // runs on the pool. A handshake past its deadline is aborted there.
    let mut handshake = handshakes.spawn(handshake(acceptor, tcp));
    let tls = match tokio::time::timeout(limits.handshake_timeout, &mut handshake).await {
        Ok(Ok(Ok(s))) => s,
        Ok(Ok(Err(e))) => {
            tracing::debug!(%remote, error = %e, "handshake refused");
            stats.handshakes_failed.inc();
            return;
        }
        Ok(Err(_)) => {
            stats.handshakes_failed.inc();
            return;
        }
        Err(_) => {
            handshake.abort();
            stats.timed_out.inc();
            return;
        }
    };
    stats.handshakes.inc();
    let Some(admitted) = admit.admit(remote, tls.get_ref().1.peer_certificates()) else {
        return;
    };
    if admitted.class == Class::Public && !counts.make_public(&mut held, &limits) {
        stats.refused_over_cap.inc();
        return;
    }
    let activity = Activity::new();
    let ext = admitted.ext;
    let body_timeout = limits.body_timeout;
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let guard = InFlight::new(&activity);
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(remote));
            parts.extensions.insert(ext.clone());
            let body = Body::new(Deadline {
                inner: Body::new(body),
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
            });
            let call = app.clone().oneshot(hyper::Request::from_parts(parts, body));
            async move {
                let resp = call.await.unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(resp.map(|inner| Body::new(Tracked { inner, _guard: guard })))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(64 * 1024);
    builder
        .http2()
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut cut = admitted.cut;
    let cut = async move {
        match cut.as_mut() {
            Some(f) => f.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cut);
    let tick = limits.header_timeout.min(limits.idle_timeout) / 4;
    let mut watchdog = tokio::time::interval(tick.clamp(Duration::from_millis(50), Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = &mut conn => return,
            why = &mut cut => {
                tracing::info!(%remote, why, "closing the connection");
                stats.cut.inc();
                return;
            }
            _ = watchdog.tick() => {
                if activity.overdue(&limits) {
                    stats.timed_out.inc();
                    return;
                }
            }
            _ = shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_slots_cap_each_key_and_the_whole() {
        let s = KeyedSlots::new(2, 3);
        let a1 = s.try_take(&"a").unwrap();
        let _a2 = s.try_take(&"a").unwrap();
        assert!(s.try_take(&"a").is_none(), "per key");
        let _b1 = s.try_take(&"b").unwrap();
        assert!(s.try_take(&"c").is_none(), "in all");
        drop(a1);
        assert_eq!(s.held(&"a"), 1);
        assert!(s.try_take(&"c").is_some());
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_or_ipv6_64() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:1"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
    }

    /// A handshake that never gets its client's bytes holds no pool thread: many wait at once
    /// while another computes on the pool, and the pool's threads run at a lower priority.
    #[tokio::test]
    async fn the_handshake_pool_runs_waiting_futures_without_holding_threads() {
        let pool = handshake_pool();
        let mut waiting = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..64 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            senders.push(tx);
            waiting.push(pool.spawn(rx));
        }
        let nice = pool.spawn(async { rustix::process::getpriority_process(Some(rustix::thread::gettid())) });
        assert_eq!(nice.await.unwrap().unwrap(), 10, "the pool's threads run at nice 10");
        assert!(waiting.iter().all(|w| !w.is_finished()));
        for tx in senders {
            tx.send(()).unwrap();
        }
        for w in waiting {
            w.await.unwrap().unwrap();
        }
    }

    #[test]
    fn jitter_only_stretches_by_at_most_a_quarter() {
        let d = Duration::from_secs(10);
        let all: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(all.iter().all(|j| *j >= d && *j < d + d / 4), "{all:?}");
        assert!(all.iter().any(|j| *j > d + d / 10), "it does spread");
    }

    #[test]
    fn idle_deadlines() {
        let limits = Limits {
            header_timeout: Duration::from_millis(0),
            idle_timeout: Duration::from_secs(3600),
            ..Limits::default()
        };
        let a = Activity::new();
        std::thread::sleep(Duration::from_millis(5));
        assert!(a.overdue(&limits), "no request yet: the header deadline");
        let g = InFlight::new(&a);
        assert!(!a.overdue(&limits), "a request in flight is never idle");
        drop(g);
        assert!(!a.overdue(&limits), "after a request: the idle deadline");
    }
}
