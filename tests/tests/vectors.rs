//! The protocol's test vectors (`docs/vectors/`) are what the code does: regenerating them gives
//! the same bytes, and the `identity` crate accepts every valid vector and refuses every refused
//! one, for the reason the vector names.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::ledger::{self, Block, BlockHeader, CreatorKey, LedgerError, SignedTx};
use identity::logleaf::LogLeaf;
use identity::membership::{Envelope, MembershipKey, StatementError};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors")
}

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn vectors_are_current() {
    let files = bsn_tests::vectors::generate();
    for (name, text) in &files {
        let on_disk = std::fs::read_to_string(dir().join(name)).unwrap_or_default();
        assert!(
            on_disk == *text,
            "docs/vectors/{name} differs from what the code generates: run `cargo run --release -p bsn-tests --bin vectors` and review the change"
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    present.sort();
    assert_eq!(present, files.keys().map(|k| k.to_string()).collect::<Vec<_>>());
    // Generating twice gives the same bytes (nothing random, no clock).
    assert_eq!(bsn_tests::vectors::generate(), files);
}

fn class(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::Malformed(_) => "malformed",
        LedgerError::TooLarge(_) => "too-large",
        LedgerError::UnsupportedKey(_) => "unsupported-key",
        LedgerError::BadSignature => "bad-signature",
    }
}

/// Parses a signed transaction and checks its signature with its creator certificate's key.
fn check_tx(signed: Vec<u8>) -> Result<SignedTx, LedgerError> {
    let tx = SignedTx::parse(signed)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&tx.body.creator_cert)
        .map_err(|_| LedgerError::Malformed("creator certificate".into()))?;
    tx.verify(&CreatorKey::from_certificate(&cert)?)?;
    Ok(tx)
}

#[test]
fn transactions_verify_and_refusals_hold() {
    let v = load("transactions.json");
    let valid = v["valid"].as_array().unwrap();
    assert_eq!(valid.len(), 4, "one per key type");
    for t in valid {
        let tx = check_tx(b64(&t["signed"])).unwrap_or_else(|e| panic!("{}: {e}", t["name"]));
        assert_eq!(tx.body_bytes(), unhex(&t["body"]).as_slice(), "{}", t["name"]);
        assert_eq!(hex::encode(tx.id), t["id"], "{}", t["name"]);
        assert_eq!(hex::encode(ledger::sha256(&tx.bytes)), t["entry_hash"]);
        assert_eq!(tx.signature(), unhex(&t["signature"]).as_slice());
        assert_eq!(ledger::signing_message(tx.body_bytes()), unhex(&t["signing_message"]));
    }
    let refused = v["refused"].as_array().unwrap();
    assert!(refused.len() >= 15);
    for t in refused {
        match check_tx(b64(&t["signed"])) {
            Ok(_) => panic!("{} was accepted", t["name"]),
            Err(e) => assert_eq!(class(&e), t["refuse"], "{}: {e}", t["name"]),
        }
    }
}

#[test]
fn membership_key_handovers_are_followed_both_ways_and_forgeries_refused() {
    use identity::membership::{KeyHandover, MembershipKeys};
    let pinned = MembershipKey::from_base64(load("keys.json")["membership_key"].as_str().unwrap()).unwrap();
    let docs = load("signed-documents.json");
    let v = &docs["handovers"];
    let next = MembershipKey::from_base64(v["next_key"].as_str().unwrap()).unwrap();
    let handover = |h: &Value| -> KeyHandover { serde_json::from_value(h.clone()).unwrap() };
    let by_next: Envelope = serde_json::from_value(v["statement_by_next_key"].clone()).unwrap();
    assert!(pinned.verify_statement(&by_next).is_err());
    let mut keys = MembershipKeys::pinned(pinned.clone());
    for r in v["refused"].as_array().unwrap() {
        assert!(keys.learn(&[handover(&r["handover"])]).is_err(), "{}", r["name"]);
        assert_eq!(keys.keys(), std::slice::from_ref(&pinned), "{}", r["name"]);
    }
    assert!(keys.learn(&[handover(&v["valid"])]).unwrap());
    assert_eq!(keys.current(), &next);
    assert_eq!(keys.verify_statement(&by_next).unwrap().revision, 3);
    let back = MembershipKeys::following(next.clone(), &[handover(&v["valid"])]).unwrap();
    assert_eq!(back.keys(), &[pinned, next]);
    for d in docs["valid"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "statement")
    {
        back.verify_statement(&serde_json::from_value(d["envelope"].clone()).unwrap())
            .unwrap();
    }
}

#[test]
fn signed_documents_verify_and_refusals_hold() {
    let keys = load("keys.json");
    let key = MembershipKey::from_base64(keys["membership_key"].as_str().unwrap()).unwrap();
    let v = load("signed-documents.json");
    let open = |kind: &str, env: &Value| -> Result<(), StatementError> {
        let env: Envelope = serde_json::from_value(env.clone()).unwrap();
        match kind {
            "statement" => key.verify_statement(&env).map(|_| ()),
            "directory" => key.verify_directory(&env).map(|_| ()),
            "heartbeat" => key.verify_heartbeat(&env).map(|_| ()),
            _ => unreachable!(),
        }
    };
    for d in v["valid"].as_array().unwrap() {
        open(d["kind"].as_str().unwrap(), &d["envelope"]).unwrap_or_else(|e| panic!("{}: {e}", d["name"]));
    }
    for d in v["refused"].as_array().unwrap() {
        let e = open(d["kind"].as_str().unwrap(), &d["envelope"]).expect_err(d["name"].as_str().unwrap());
        let got = match e {
            StatementError::BadSignature => "bad-signature",
            StatementError::Malformed(_) => "malformed",
            StatementError::Invalid(_) => "invalid",
        };
        assert_eq!(got, d["refuse"], "{}", d["name"]);
    }
}

#[test]
fn blocks_chain_proofs_and_refusals_hold() {
    let v = load("blocks.json");
    let mut previous = [0u8; 32];
    let mut hashes = Vec::new();
    for (i, b) in v["chain"].as_array().unwrap().iter().enumerate() {
        let block = Block::decode(&b64(&b["encoded"])).unwrap();
        assert_eq!(block.header.height, i as u64);
        assert_eq!(block.header.previous, previous, "block {i} extends the one before");
        assert_eq!(hex::encode(block.header.encode()), b["header"]);
        assert_eq!(BlockHeader::decode(&unhex(&b["header"])).unwrap(), block.header);
        assert_eq!(hex::encode(block.header.hash()), b["hash"]);
        previous = block.header.hash();
        hashes.push(previous);
    }
    let block1 = Block::decode(&b64(&v["chain"][1]["encoded"])).unwrap();
    for p in v["proofs"].as_array().unwrap() {
        let proof: Vec<[u8; 32]> = p["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| unhex(h).try_into().unwrap())
            .collect();
        let id: [u8; 32] = unhex(&p["entry_hash"]).try_into().unwrap();
        let index = p["index"].as_u64().unwrap();
        assert_eq!(id, ledger::sha256(&block1.entries[index as usize]));
        let h = &block1.header;
        assert!(ledger::check_entry(
            &proof,
            h.entry_count as u64,
            h.entries_root,
            index,
            &id
        ));
        assert!(!ledger::check_entry(
            &proof,
            h.entry_count as u64,
            h.entries_root,
            (index + 1) % 4,
            &id
        ));
    }
    for m in v["merkle"].as_array().unwrap() {
        let ids: Vec<[u8; 32]> = m["entry_hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| unhex(h).try_into().unwrap())
            .collect();
        assert_eq!(hex::encode(ledger::merkle_root(&ids)), m["root"]);
    }
    for r in v["refused"].as_array().unwrap() {
        assert!(Block::decode(&b64(&r["encoded"])).is_err(), "{}", r["name"]);
    }
    for r in v["chain_breaks"].as_array().unwrap() {
        let b = Block::decode(&b64(&r["block"]["encoded"])).unwrap();
        assert_ne!(
            b.header.previous,
            hashes[r["after"].as_u64().unwrap() as usize],
            "{}",
            r["name"]
        );
    }
}

#[test]
fn log_leaves_proofs_and_checkpoints_hold() {
    let v = load("log.json");
    for l in v["leaves"].as_array().unwrap() {
        let bytes = unhex(&l["encoded"]);
        assert_eq!(LogLeaf::decode(&bytes).unwrap().encode().unwrap(), bytes);
    }
    let leaves: Vec<Vec<u8>> = v["tree_leaves"].as_array().unwrap().iter().map(b64).collect();
    let size = leaves.len() as u64;
    let root = tlog_tiles::Hash(b64(&v["root"]).try_into().unwrap());
    for p in v["inclusion"].as_array().unwrap() {
        let i = p["index"].as_u64().unwrap();
        let proof: Vec<tlog_tiles::Hash> = p["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| tlog_tiles::Hash(b64(h).try_into().unwrap()))
            .collect();
        let leaf = tlog_tiles::record_hash(&leaves[i as usize]);
        assert_eq!(B64.encode(leaf.0), p["leaf_hash"]);
        tlog_tiles::check_record(&proof, size, root, i, leaf).unwrap();
    }
    let c = &v["consistency"];
    let proof: Vec<tlog_tiles::Hash> = c["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| tlog_tiles::Hash(b64(h).try_into().unwrap()))
        .collect();
    let first = tlog_tiles::Hash(b64(&c["first_root"]).try_into().unwrap());
    tlog_tiles::check_tree(&proof, size, root, c["first"].as_u64().unwrap(), first).unwrap();
    let verifier = signed_note::StandardVerifier::new(v["vkey"].as_str().unwrap()).unwrap();
    let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let note = signed_note::Note::from_bytes(v["checkpoint"].as_str().unwrap().as_bytes()).unwrap();
    note.verify(&list).unwrap();
    let cp = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
    assert_eq!((cp.size(), *cp.hash()), (size, root));
    for vkey in [&v["vkey"], &v["cosigned_checkpoint"]["other_vkey"]] {
        let verifier = signed_note::StandardVerifier::new(vkey.as_str().unwrap()).unwrap();
        let one = signed_note::VerifierList::new(vec![Box::new(verifier)]);
        let note =
            signed_note::Note::from_bytes(v["cosigned_checkpoint"]["checkpoint"].as_str().unwrap().as_bytes()).unwrap();
        note.verify(&one)
            .expect("a cosigned checkpoint verifies with either key");
    }
    for r in v["refused_checkpoints"].as_array().unwrap() {
        let bad = signed_note::Note::from_bytes(r["checkpoint"].as_str().unwrap().as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|n| n.verify(&list).map(|_| ()).map_err(|e| e.to_string()));
        assert!(bad.is_err(), "{}", r["name"]);
    }
}
