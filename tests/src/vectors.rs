//! Test vectors for the wire protocol (`docs/protocol.md`), generated from the `identity` crate:
//! keys and certificates, valid and refused transactions, blocks with entry proofs, signed
//! documents with tampered copies, and issuance-log leaves, proofs and checkpoints.
//!
//! Everything is deterministic (fixed keys and nonces; Ed25519, RSA PKCS#1 v1.5 and RFC 6979
//! ECDSA signatures), so regenerating gives identical files: `vectors_are_current` checks it.
//! `cargo run --release -p bsn-tests --bin vectors` rewrites `docs/vectors/`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::ledger::{self, Block, BlockKind, Op, TxBody, assemble, signing_message};
use identity::logleaf::LogLeaf;
use identity::membership::{self, Envelope, SubchainId};
use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};

/// A fixed RSA 2048 key (PKCS#8): RSA key generation is not deterministic, so it is stored.
const RSA_PKCS8_PEM: &str = include_str!("vectors-rsa.pem");

/// The trust domain of every vector.
pub const TRUST_DOMAIN: &str = "vectors.example";
/// The subchain of every vector transaction.
pub const SUBCHAIN: &str = "vectors";
/// Block timestamps: 2026-01-01T00:00:00Z in milliseconds, one second per block.
const T0_MS: i64 = 1_767_225_600_000;

fn seed(label: &str) -> [u8; 32] {
    ledger::sha256(format!("bsn test vector key: {label}").as_bytes())
}

fn hexs(b: &[u8]) -> String {
    hex::encode(b)
}

/// An Ed25519 key from a seed, as ring wants it (PKCS#8 v2, with the public key).
fn ed25519(seed: [u8; 32]) -> (Ed25519KeyPair, Vec<u8>) {
    let public = Ed25519KeyPair::from_seed_unchecked(&seed)
        .expect("seed")
        .public_key()
        .as_ref()
        .to_vec();
    let mut pkcs8 = hex::decode("3053020101300506032b657004220420").expect("hex");
    pkcs8.extend_from_slice(&seed);
    pkcs8.extend_from_slice(&hex::decode("a123032100").expect("hex"));
    pkcs8.extend_from_slice(&public);
    (Ed25519KeyPair::from_pkcs8(&pkcs8).expect("pkcs8"), pkcs8)
}

/// A creator's key: signs deterministically.
enum Key {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(Ed25519KeyPair, [u8; 32]),
    Rsa(RsaKeyPair, Vec<u8>),
}

struct RawPublic {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RawPublic {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl Key {
    fn new(kind: &str) -> Key {
        match kind {
            "p256" => Key::P256(p256::ecdsa::SigningKey::from_slice(&seed("p256")).expect("scalar")),
            "p384" => {
                let s = [seed("p384-a"), seed("p384-b")].concat();
                Key::P384(p384::ecdsa::SigningKey::from_slice(&s[..48]).expect("scalar"))
            }
            "ed25519" => Key::Ed25519(ed25519(seed("ed25519")).0, seed("ed25519")),
            "rsa2048" => {
                use rustls_pki_types::pem::PemObject;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(RSA_PKCS8_PEM.as_bytes())
                    .expect("pem")
                    .secret_pkcs8_der()
                    .to_vec();
                Key::Rsa(RsaKeyPair::from_pkcs8(&der).expect("rsa"), der)
            }
            _ => unreachable!("key kind"),
        }
    }

    fn public(&self) -> RawPublic {
        match self {
            Key::P256(k) => RawPublic {
                raw: k.verifying_key().to_encoded_point(false).as_bytes().to_vec(),
                alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            },
            Key::P384(k) => RawPublic {
                raw: k.verifying_key().to_encoded_point(false).as_bytes().to_vec(),
                alg: &rcgen::PKCS_ECDSA_P384_SHA384,
            },
            Key::Ed25519(k, _) => RawPublic {
                raw: k.public_key().as_ref().to_vec(),
                alg: &rcgen::PKCS_ED25519,
            },
            Key::Rsa(k, _) => RawPublic {
                raw: k.public().as_ref().to_vec(),
                alg: &rcgen::PKCS_RSA_SHA256,
            },
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        match self {
            Key::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Key::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Key::Ed25519(k, _) => k.sign(msg).as_ref().to_vec(),
            Key::Rsa(k, _) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .expect("rsa sign");
                sig
            }
        }
    }

    /// The private key as an SDK loads it.
    fn private(&self) -> Value {
        match self {
            Key::P256(k) => json!({ "scalar": hexs(&k.to_bytes()) }),
            Key::P384(k) => json!({ "scalar": hexs(&k.to_bytes()) }),
            Key::Ed25519(_, seed) => json!({ "seed": hexs(seed) }),
            Key::Rsa(_, der) => json!({ "pkcs8": B64.encode(der) }),
        }
    }
}

/// The vectors' CA (an Ed25519 root, so its signatures are deterministic) and its leaves.
struct Ca {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    der: Vec<u8>,
}

fn validity(p: &mut rcgen::CertificateParams) {
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
}

impl Ca {
    fn new() -> Ca {
        let (_, pkcs8) = ed25519(seed("root"));
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("root key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "BSN test vectors root");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[1]));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        validity(&mut params);
        let der = params.self_signed(&key).expect("root").der().to_vec();
        Ca { key, params, der }
    }

    fn leaf(&self, name: &str, serial: u8, public: &RawPublic) -> Vec<u8> {
        let spiffe = format!("spiffe://{TRUST_DOMAIN}/participant/{name}");
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(spiffe.as_str().try_into().expect("uri"))];
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42, serial]));
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        validity(&mut p);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        p.signed_by(public, &issuer).expect("leaf").der().to_vec()
    }
}

struct Creator {
    name: &'static str,
    kind: &'static str,
    key: Key,
    cert: Vec<u8>,
}

fn creators(ca: &Ca) -> Vec<Creator> {
    [
        ("alice", "p256"),
        ("bob", "p384"),
        ("carol", "ed25519"),
        ("dave", "rsa2048"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, kind))| {
        let key = Key::new(kind);
        let cert = ca.leaf(name, i as u8 + 1, &key.public());
        Creator { name, kind, key, cert }
    })
    .collect()
}

fn ops_json(ops: &[Op]) -> Value {
    ops.iter()
        .map(|op| match op {
            Op::Put { key, value } => json!({ "put": key, "value": B64.encode(value) }),
            Op::Delete { key } => json!({ "delete": key }),
        })
        .collect()
}

fn nonce(i: u8) -> Vec<u8> {
    (0..16).map(|j| i.wrapping_mul(16).wrapping_add(j)).collect()
}

/// A body encoded by hand, without the limits `TxBody::encode` enforces (for refused vectors).
struct RawBody<'a> {
    version: u8,
    subchain: &'a [u8],
    nonce: Vec<u8>,
    cert: &'a [u8],
    ops: Vec<Vec<u8>>,
}

impl RawBody<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![self.version, self.subchain.len() as u8];
        b.extend_from_slice(self.subchain);
        b.push(self.nonce.len() as u8);
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&(self.cert.len() as u16).to_be_bytes());
        b.extend_from_slice(self.cert);
        b.extend_from_slice(&(self.ops.len() as u16).to_be_bytes());
        for op in &self.ops {
            b.extend_from_slice(op);
        }
        b
    }
}

fn raw_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![1];
    b.extend_from_slice(&(key.len() as u16).to_be_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&(value.len() as u32).to_be_bytes());
    b.extend_from_slice(value);
    b
}

fn signed_with(key: &Key, body: &[u8]) -> Vec<u8> {
    assemble(body, &key.sign(&signing_message(body)))
}

struct Transactions {
    json: Value,
    /// The valid signed transactions, in vector order.
    signed: Vec<Vec<u8>>,
}

fn transactions(creators: &[Creator]) -> Transactions {
    let subchain = SubchainId::parse(SUBCHAIN).expect("id");
    let mut valid = Vec::new();
    let mut signed_all = Vec::new();
    for (i, c) in creators.iter().enumerate() {
        let ops = vec![
            Op::Put {
                key: format!("greeting/{}", c.name),
                value: format!("hello from {}", c.name).into_bytes(),
            },
            Op::Put {
                key: "bytes".into(),
                value: vec![0, 1, 2, 0xfe, 0xff],
            },
            Op::Delete { key: "old".into() },
        ];
        let body = TxBody {
            subchain: subchain.clone(),
            nonce: nonce(i as u8),
            creator_cert: c.cert.clone(),
            ops: ops.clone(),
        }
        .encode()
        .expect("valid body");
        let signature = c.key.sign(&signing_message(&body));
        let signed = assemble(&body, &signature);
        let deterministic = c.kind != "p256" && c.kind != "p384";
        valid.push(json!({
            "name": format!("{} ({})", c.name, c.kind),
            "creator": c.name,
            "subchain": SUBCHAIN,
            "nonce": hexs(&nonce(i as u8)),
            "ops": ops_json(&ops),
            "body": hexs(&body),
            "signing_message": hexs(&signing_message(&body)),
            "signature": hexs(&signature),
            "signature_reproducible": deterministic,
            "signed": B64.encode(&signed),
            "id": hexs(&ledger::sha256(&body)),
            "entry_hash": hexs(&ledger::sha256(&signed)),
        }));
        signed_all.push(signed);
    }

    // Refused ones: each from alice's (P-256) transaction with one thing wrong.
    let alice = &creators[0];
    let good_body = |ops: Vec<Vec<u8>>| RawBody {
        version: 1,
        subchain: SUBCHAIN.as_bytes(),
        nonce: nonce(9),
        cert: &alice.cert,
        ops,
    };
    let put = raw_put(b"k", b"v");
    let sign = |b: RawBody<'_>| signed_with(&alice.key, &b.encode());
    let base = sign(good_body(vec![put.clone()]));
    let mut invalid = Vec::new();
    let mut refuse = |name: &str, signed: Vec<u8>, class: &str| {
        invalid.push(json!({ "name": name, "signed": B64.encode(&signed), "refuse": class }));
    };
    refuse("truncated by one byte", base[..base.len() - 1].to_vec(), "malformed");
    refuse(
        "a byte after the signature",
        [base.clone(), vec![0]].concat(),
        "malformed",
    );
    let mut v2 = good_body(vec![put.clone()]);
    v2.version = 2;
    refuse("unknown version 2", sign(v2), "malformed");
    let mut upper = good_body(vec![put.clone()]);
    upper.subchain = b"Vectors";
    refuse("subchain id with a capital letter", sign(upper), "malformed");
    let mut short = good_body(vec![put.clone()]);
    short.nonce = vec![1; 7];
    refuse("a 7-byte nonce", sign(short), "malformed");
    refuse("no operations", sign(good_body(vec![])), "too-large");
    refuse(
        "unknown operation 3",
        sign(good_body(vec![vec![3, 0, 1, b'k']])),
        "malformed",
    );
    refuse("an empty key", sign(good_body(vec![raw_put(b"", b"v")])), "too-large");
    refuse(
        "a key of 513 bytes",
        sign(good_body(vec![raw_put(&[b'k'; 513], b"v")])),
        "too-large",
    );
    refuse(
        "a key with a newline",
        sign(good_body(vec![raw_put(b"a\nb", b"v")])),
        "malformed",
    );
    refuse(
        "a key that is not UTF-8",
        sign(good_body(vec![raw_put(&[0xff], b"v")])),
        "malformed",
    );
    refuse(
        "a value of 65,537 bytes",
        sign(good_body(vec![raw_put(b"k", &vec![7; 65_537])])),
        "too-large",
    );
    refuse(
        "257 operations",
        sign(good_body((0..257).map(|_| put.clone()).collect())),
        "too-large",
    );
    let body = good_body(vec![put.clone()]).encode();
    refuse("an empty signature", assemble(&body, &[]), "malformed");
    refuse(
        "signed by another key (bob's) than the certificate's",
        signed_with(&creators[1].key, &body),
        "bad-signature",
    );
    refuse(
        "signed without the context string",
        assemble(&body, &alice.key.sign(&body)),
        "bad-signature",
    );
    let mut flipped = base.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    refuse("the signature's last byte flipped", flipped, "bad-signature");

    Transactions {
        json: json!({
            "description": "Signed transactions (docs/protocol.md section 3). Valid: decode, re-encode to the same body, id = SHA-256(body), entry_hash = SHA-256(signed), and the signature verifies with the creator certificate's key over signing_message (ECDSA signatures are RFC 6979 here, which a signer need not reproduce; the others are deterministic). Refused: each must be refused; 'refuse' is the class of the reason (malformed, too-large, bad-signature).",
            "valid": valid,
            "refused": invalid,
        }),
        signed: signed_all,
    }
}

fn envelope(key: &Ed25519KeyPair, context: &[u8], payload: &[u8]) -> Envelope {
    Envelope {
        payload: B64.encode(payload),
        signature: B64.encode(key.sign(&membership::signed_message(context, payload))),
    }
}

fn statement_payload(revision: u64, members: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": 1,
        "trust_domain": TRUST_DOMAIN,
        "subchain": SUBCHAIN,
        "revision": revision,
        "issued_at": T0_MS / 1000,
        "nodes": ["n1", "n2"],
        "orderers": ["o1", "o2", "o3"],
        "members": members,
    }))
    .expect("json")
}

struct Documents {
    json: Value,
    statement: Envelope,
}

fn documents(key: &Ed25519KeyPair) -> Documents {
    let members = json!([
        { "id": "alice", "role": "writer" },
        { "id": "bob", "role": "writer" },
        { "id": "carol", "role": "admin" },
        { "id": "dave", "role": "writer" },
        { "id": "erin", "role": "reader" },
    ]);
    let st = envelope(
        key,
        membership::STATEMENT_CONTEXT,
        &statement_payload(1, members.clone()),
    );
    let directory = serde_json::to_vec(&json!({
        "version": 1,
        "trust_domain": TRUST_DOMAIN,
        "revision": 4,
        "issued_at": T0_MS / 1000,
        "nodes": [
            { "id": "n1", "role": "node", "city": "beijing", "url": "https://n1.vectors.example:9443",
              "capacity": { "tenancy": "shared", "rate": 1000, "storage": 1_099_511_627_776u64 } },
            { "id": "n2", "role": "node", "city": "shanghai", "url": "https://n2.vectors.example:9443",
              "capacity": { "tenancy": "dedicated", "rate": 5000, "storage": 2_199_023_255_552u64 }, "draining": true },
            { "id": "o1", "role": "orderer", "city": "beijing", "url": "https://o1.vectors.example:9443" },
        ],
    }))
    .expect("json");
    let with_plan = |rate: u64| {
        let mut v: Value = serde_json::from_slice(&statement_payload(3, members.clone())).expect("json");
        v["plan"] = json!({ "name": "standard", "tenancy": "shared", "rate": rate, "burst": 200,
                            "storage": 10_737_418_240u64, "bandwidth": 10_000_000 });
        serde_json::to_vec(&v).expect("json")
    };
    let orderer_capacity = serde_json::to_vec(&json!({
        "version": 1, "trust_domain": TRUST_DOMAIN, "revision": 5, "issued_at": T0_MS / 1000,
        "nodes": [{ "id": "o1", "role": "orderer", "city": "beijing", "url": "https://o1.vectors.example:9443",
                    "capacity": { "tenancy": "shared", "rate": 10, "storage": 1000 } }],
    }))
    .expect("json");
    let heartbeat = serde_json::to_vec(&json!({
        "trust_domain": TRUST_DOMAIN, "node": "n1", "cursor": 42, "at_ms": T0_MS,
    }))
    .expect("json");
    let valid = json!([
        { "name": "membership statement", "kind": "statement", "envelope": st },
        { "name": "membership statement with a resource plan", "kind": "statement",
          "envelope": envelope(key, membership::STATEMENT_CONTEXT, &with_plan(100)) },
        { "name": "node directory", "kind": "directory",
          "envelope": envelope(key, membership::DIRECTORY_CONTEXT, &directory) },
        { "name": "feed heartbeat", "kind": "heartbeat",
          "envelope": envelope(key, membership::HEARTBEAT_CONTEXT, &heartbeat) },
    ]);
    let mut altered = statement_payload(1, members.clone());
    let at = altered.len() - 20;
    altered[at] = b'X';
    let tampered = Envelope {
        payload: B64.encode(&altered),
        signature: st.signature.clone(),
    };
    let unsorted = json!([{ "id": "bob", "role": "writer" }, { "id": "alice", "role": "writer" }]);
    let extra = {
        let mut v: Value = serde_json::from_slice(&statement_payload(2, members.clone())).expect("json");
        v["admins"] = json!(["carol"]);
        serde_json::to_vec(&v).expect("json")
    };
    let refused = json!([
        { "name": "payload changed after signing", "kind": "statement", "refuse": "bad-signature",
          "envelope": tampered },
        { "name": "a heartbeat's context on a statement", "kind": "statement", "refuse": "bad-signature",
          "envelope": envelope(key, membership::HEARTBEAT_CONTEXT, &statement_payload(1, members.clone())) },
        { "name": "a statement verified as a heartbeat", "kind": "heartbeat", "refuse": "bad-signature",
          "envelope": st },
        { "name": "members not sorted (signed)", "kind": "statement", "refuse": "invalid",
          "envelope": envelope(key, membership::STATEMENT_CONTEXT, &statement_payload(2, unsorted)) },
        { "name": "revision 0 (signed)", "kind": "statement", "refuse": "invalid",
          "envelope": envelope(key, membership::STATEMENT_CONTEXT, &statement_payload(0, members.clone())) },
        { "name": "an unknown field (signed)", "kind": "statement", "refuse": "malformed",
          "envelope": envelope(key, membership::STATEMENT_CONTEXT, &extra) },
        { "name": "a plan with a rate of 0 (signed)", "kind": "statement", "refuse": "invalid",
          "envelope": envelope(key, membership::STATEMENT_CONTEXT, &with_plan(0)) },
        { "name": "an orderer declaring a capacity (signed)", "kind": "directory", "refuse": "invalid",
          "envelope": envelope(key, membership::DIRECTORY_CONTEXT, &orderer_capacity) },
    ]);
    let handovers = handovers(key);
    Documents {
        json: json!({
            "handovers": handovers,
            "description": "Documents the CA signs with its membership key (docs/protocol.md section 6). Verify the Ed25519 signature over context || payload bytes with the membership key in keys.json, then parse and check the rules. Refused: 'refuse' is bad-signature, malformed (not the expected JSON shape, unknown fields included) or invalid (signed, but breaking a rule).",
            "contexts": {
                "statement": String::from_utf8_lossy(membership::STATEMENT_CONTEXT),
                "directory": String::from_utf8_lossy(membership::DIRECTORY_CONTEXT),
                "heartbeat": String::from_utf8_lossy(membership::HEARTBEAT_CONTEXT),
            },
            "valid": valid,
            "refused": refused,
        }),
        statement: st,
    }
}

/// A handover of `old`'s key to the next one, signed by `from_signer` and `to_signer`.
fn handover(
    terms_from: &Ed25519KeyPair,
    terms_to: &Ed25519KeyPair,
    from_signer: &Ed25519KeyPair,
    to_signer: &Ed25519KeyPair,
) -> Value {
    let payload = serde_json::to_vec(&json!({
        "version": 1,
        "trust_domain": TRUST_DOMAIN,
        "from": B64.encode(terms_from.public_key().as_ref()),
        "to": B64.encode(terms_to.public_key().as_ref()),
        "number": 2,
        "issued_at": T0_MS / 1000,
    }))
    .expect("json");
    let message = membership::signed_message(membership::HANDOVER_CONTEXT, &payload);
    json!({
        "payload": B64.encode(&payload),
        "from_signature": B64.encode(from_signer.sign(&message)),
        "to_signature": B64.encode(to_signer.sign(&message)),
    })
}

/// Membership key handovers (docs/protocol.md section 6): the pinned key to the next one.
fn handovers(key: &Ed25519KeyPair) -> Value {
    let (next, _) = ed25519(seed("membership 2"));
    let (stranger, _) = ed25519(seed("stranger"));
    let statement = envelope(
        &next,
        membership::STATEMENT_CONTEXT,
        &statement_payload(3, json!([{ "id": "alice", "role": "writer" }])),
    );
    json!({
        "description": "The membership key handed over to its successor: the terms (JSON, base64) signed under the 'handover' context by the old key ('from_signature') and by the new one ('to_signature'). A verifier pinning the membership key of keys.json follows 'valid' to 'next_key' (one pinning 'next_key' follows it back), after which 'statement_by_next_key' verifies and the documents signed before still do. Each 'refused' handover must be refused and leave the keys as they were.",
        "context": String::from_utf8_lossy(membership::HANDOVER_CONTEXT),
        "next_key": B64.encode(next.public_key().as_ref()),
        "valid": handover(key, &next, key, &next),
        "statement_by_next_key": statement,
        "refused": [
            { "name": "the old key's signature is the stranger's", "handover": handover(key, &next, &stranger, &next) },
            { "name": "the new key's signature is the stranger's", "handover": handover(key, &next, key, &stranger) },
            { "name": "both signatures by the old key", "handover": handover(key, &next, key, key) },
            { "name": "a key handed over to itself", "handover": handover(key, key, key, key) },
        ],
    })
}

fn block_json(b: &Block) -> Value {
    let h = &b.header;
    json!({
        "height": h.height,
        "kind": match h.kind { BlockKind::Config => "config", BlockKind::Transactions => "transactions" },
        "previous": hexs(&h.previous),
        "entries_root": hexs(&h.entries_root),
        "membership_revision": h.membership_revision,
        "timestamp_ms": h.timestamp_ms,
        "entry_count": h.entry_count,
        "header": hexs(&h.encode()),
        "hash": hexs(&h.hash()),
        "encoded": B64.encode(b.encode()),
    })
}

fn blocks(statement: &Envelope, txs: &[Vec<u8>]) -> Value {
    let config_entry = serde_json::to_vec(statement).expect("json");
    let genesis = Block::new(BlockKind::Config, 0, [0; 32], 1, T0_MS, vec![config_entry]);
    let block1 = Block::new(
        BlockKind::Transactions,
        1,
        genesis.header.hash(),
        1,
        T0_MS + 1000,
        txs.to_vec(),
    );
    let ids = ledger::entry_hashes(&block1.entries);
    let proofs: Vec<Value> = (0..ids.len())
        .map(|i| {
            json!({
                "index": i,
                "entry_hash": hexs(&ids[i]),
                "proof": ledger::prove_entry(&ids, i).expect("proof").iter().map(|h| hexs(h)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut bad_sig = block1.encode();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let mut bad_count = block1.encode();
    bad_count[90..94].copy_from_slice(&3u32.to_be_bytes());
    let forged_link = Block::new(BlockKind::Transactions, 1, [7; 32], 1, T0_MS + 1000, txs.to_vec());
    let roots: Vec<Value> = (1..=9u8)
        .map(|n| {
            let ids: Vec<[u8; 32]> = (0..n).map(|i| ledger::sha256(&[i])).collect();
            json!({
                "entry_hashes": ids.iter().map(|h| hexs(h)).collect::<Vec<_>>(),
                "root": hexs(&ledger::merkle_root(&ids)),
            })
        })
        .collect();
    json!({
        "description": "A chain of two blocks (docs/protocol.md sections 4-5): the genesis config block carrying the statement of signed-documents.json, then the valid transactions of transactions.json. Decode 'encoded', check the header's root and count against the entries, hash = SHA-256('bsn block v1\\n' || header), and each block's previous is the hash before it. 'proofs' are RFC 6962 inclusion proofs of block 1's entries; 'merkle' gives roots over 1 to 9 entry hashes (leaf = SHA-256(0x00 || entry_hash)). Refused blocks must not decode; 'chain_breaks' decode but do not extend the chain.",
        "chain": [block_json(&genesis), block_json(&block1)],
        "proofs": proofs,
        "merkle": roots,
        "refused": [
            { "name": "a signature byte flipped (the root no longer matches)", "encoded": B64.encode(&bad_sig) },
            { "name": "the header's entry count says 3", "encoded": B64.encode(&bad_count) },
            { "name": "truncated header", "encoded": B64.encode(&block1.encode()[..93]) },
        ],
        "chain_breaks": [
            { "name": "block 1 with another previous hash", "after": 0, "block": block_json(&forged_link) },
        ],
    })
}

fn log(creators: &[Creator], statement: &Envelope) -> (Value, String) {
    let origin = format!("{TRUST_DOMAIN}/log");
    let (_, pkcs8) = ed25519(seed("log"));
    let signer = ca_server::log::LogSigner::new(&origin, &pkcs8).expect("log signer");
    let alice = &creators[0];
    let spki = x509_parser::parse_x509_certificate(&alice.cert)
        .expect("cert")
        .1
        .public_key()
        .raw
        .to_vec();
    let statement_payload = B64.decode(&statement.payload).expect("b64");
    let leaves = [
        LogLeaf::Issuance {
            time: 1_767_225_600,
            identity: format!("spiffe://{TRUST_DOMAIN}/participant/alice"),
            serial: "4201".into(),
            authorized_by: "secret:admin".into(),
            not_before: 1_767_225_600,
            not_after: 2_082_758_400,
            key_sha256: ledger::sha256(&spki),
            certificate: alice.cert.clone(),
        },
        LogLeaf::Membership {
            time: 1_767_225_601,
            subchain: SUBCHAIN.into(),
            revision: 1,
            authorized_by: "carol".into(),
            statement_sha256: ledger::sha256(&statement_payload),
        },
        LogLeaf::Revocation {
            time: 1_767_225_602,
            identity: format!("spiffe://{TRUST_DOMAIN}/participant/alice"),
            serial: "4201".into(),
            authorized_by: "admin".into(),
            reason: 1,
        },
        // The certificate bytes are carried, not interpreted, by the encoding.
        LogLeaf::Intermediate {
            time: 1_767_225_603,
            step: identity::logleaf::IntermediateStep::Activated,
            number: 2,
            authorized_by: "admin".into(),
            certificate: alice.cert.clone(),
        },
        LogLeaf::Key {
            time: 1_767_225_604,
            purpose: identity::logleaf::KeyPurpose::Log,
            step: identity::logleaf::HandoverStep::Begun,
            number: 2,
            authorized_by: "admin".into(),
            old_key: [0x11; 32],
            new_key: [0x22; 32],
        },
        LogLeaf::Root {
            time: 1_767_225_605,
            step: identity::logleaf::RootStep::Published,
            number: 2,
            authorized_by: "admin".into(),
            certificate: alice.cert.clone(),
            cross: alice.cert.clone(),
        },
    ];
    let encoded: Vec<Vec<u8>> = leaves.iter().map(|l| l.encode().expect("leaf")).collect();
    // A tree of 8 leaves: the six events, then two more revocations of the same shape.
    let mut all = encoded.clone();
    for i in 0..2u64 {
        all.push(
            LogLeaf::Revocation {
                time: 1_767_225_610 + i,
                identity: format!("spiffe://{TRUST_DOMAIN}/participant/user{i}"),
                serial: format!("50{i:02x}"),
                authorized_by: "admin".into(),
                reason: 4,
            }
            .encode()
            .expect("leaf"),
        );
    }
    let mut stored = identity::tree::MemoryTree::default();
    for leaf in &all {
        stored.push(tlog_tiles::record_hash(leaf)).expect("stored");
    }
    let size = all.len() as u64;
    let root = tlog_tiles::tree_hash(size, &stored).expect("root");
    let checkpoint = signer.sign_checkpoint(size, root).expect("checkpoint");
    let inclusion: Vec<Value> = (0..size)
        .map(|i| {
            json!({
                "index": i,
                "leaf_hash": B64.encode(tlog_tiles::record_hash(&all[i as usize]).0),
                "proof": tlog_tiles::prove_record(size, i, &stored).expect("proof").iter().map(|h| B64.encode(h.0)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let root3 = tlog_tiles::tree_hash(3, &stored).expect("root");
    let consistency: Vec<String> = tlog_tiles::prove_tree(size, 3, &stored)
        .expect("consistency")
        .iter()
        .map(|h| B64.encode(h.0))
        .collect();
    let tampered = checkpoint.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
    let (_, other_pkcs8) = ed25519(seed("another log"));
    let other_signer = ca_server::log::LogSigner::new(&origin, &other_pkcs8).expect("signer");
    let other = other_signer.sign_checkpoint(size, root).expect("checkpoint");
    // During a handover of the log's key, a checkpoint carries both keys' signatures; a verifier
    // uses the one whose key it pins and ignores the other.
    let cosigned = format!("{checkpoint}{}\n", other.lines().last().expect("signature line"));
    let vkey = signer.vkey();
    let names = ["issuance", "membership", "revocation", "intermediate", "key", "root"];
    let json = json!({
        "description": "The issuance log (docs/protocol.md section 8). 'leaves' are v1 leaf encodings (decode and re-encode to the same bytes); the tree holds 'tree_leaves' in order (leaf hash SHA-256(0x00 || leaf)), with the given root, RFC 6962 inclusion proofs, and a consistency proof from size 3. The checkpoint verifies with 'vkey' (C2SP signed note); the cosigned checkpoint (the same tree signed by 'vkey' and by 'other_vkey', as during a handover of the log's key) verifies with either; each refused checkpoint must not.",
        "origin": origin,
        "vkey": vkey,
        "leaves": leaves.iter().zip(&encoded).zip(names).map(|((_, e), name)| json!({ "kind": name, "encoded": hexs(e) })).collect::<Vec<_>>(),
        "tree_leaves": all.iter().map(|l| B64.encode(l)).collect::<Vec<_>>(),
        "tree_size": size,
        "root": B64.encode(root.0),
        "inclusion": inclusion,
        "consistency": { "first": 3, "first_root": B64.encode(root3.0), "second": size, "proof": consistency },
        "checkpoint": checkpoint,
        "cosigned_checkpoint": { "checkpoint": cosigned, "other_vkey": other_signer.vkey() },
        "refused_checkpoints": [
            { "name": "the size changed after signing", "checkpoint": tampered },
            { "name": "signed by another key with the same name", "checkpoint": other },
        ],
    });
    (json, vkey)
}

/// Every vector file, by name, as the bytes written to `docs/vectors/`.
pub fn generate() -> BTreeMap<&'static str, String> {
    let ca = Ca::new();
    let creators = creators(&ca);
    let (membership_key, _) = ed25519(seed("membership"));
    let txs = transactions(&creators);
    let docs = documents(&membership_key);
    let blocks = blocks(&docs.statement, &txs.signed);
    let (log, vkey) = log(&creators, &docs.statement);
    let keys = json!({
        "description": "The keys and certificates the other files use. Creators' certificates chain to 'root' (an Ed25519 CA, DER base64). The membership key verifies signed-documents.json; 'log_vkey' verifies log.json's checkpoints. Private keys are test material only: ECDSA as the scalar (hex), Ed25519 as the 32-byte seed (hex), RSA as PKCS#8 DER (base64).",
        "trust_domain": TRUST_DOMAIN,
        "root": B64.encode(&ca.der),
        "creators": creators.iter().map(|c| json!({
            "name": c.name,
            "type": c.kind,
            "spiffe_id": format!("spiffe://{TRUST_DOMAIN}/participant/{}", c.name),
            "certificate": B64.encode(&c.cert),
            "private_key": c.key.private(),
        })).collect::<Vec<_>>(),
        "membership_key": B64.encode(membership_key.public_key().as_ref()),
        "log_vkey": vkey,
    });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json") + "\n";
    BTreeMap::from([
        ("keys.json", pretty(&keys)),
        ("transactions.json", pretty(&txs.json)),
        ("signed-documents.json", pretty(&docs.json)),
        ("blocks.json", pretty(&blocks)),
        ("log.json", pretty(&log)),
    ])
}
