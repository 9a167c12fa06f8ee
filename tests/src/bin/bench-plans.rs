//! What shared nodes' plans cost (issue 14): placing 10,000 subchains over 20 city nodes in two
//! cities (the CA's placement core, and the board a creation rebuilds from what is placed), and
//! a node's quota check per submission with 1,000 subchains' buckets, as a ratio to the one
//! ECDSA P-256 verification every submitted transaction costs anyway (measured in the same run).
//!
//! `cargo run --release -p bsn-tests --bin bench-plans -- [--subchains 10000]`

use std::time::Instant;

use ca_server::placement::{Board, Node, Placed};
use clap::Parser;
use identity::plan::{Capacity, Plan, Tenancy};
use ledger_node::quota::Quotas;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};

#[derive(Parser)]
struct Args {
    /// Subchains to place.
    #[arg(long, default_value_t = 10_000)]
    subchains: usize,
    /// Subchains with a bucket on the node for the quota check.
    #[arg(long, default_value_t = 1_000)]
    buckets: usize,
}

const GIB: u64 = 1 << 30;

/// Two cities, each with eight shared nodes and two dedicated ones.
fn nodes() -> Vec<Node> {
    let node = |id: String, city: &str, tenancy, rate, storage| Node {
        id,
        city: city.into(),
        capacity: Capacity { tenancy, rate, storage },
        draining: false,
    };
    let mut v = Vec::new();
    for city in ["beijing", "shanghai"] {
        for i in 0..8 {
            v.push(node(
                format!("{city}-s{i}"),
                city,
                Tenancy::Shared,
                50_000,
                500 * 1024 * GIB,
            ));
        }
        for i in 0..2 {
            v.push(node(
                format!("{city}-d{i}"),
                city,
                Tenancy::Dedicated,
                5_000,
                4096 * GIB,
            ));
        }
    }
    v
}

fn main() {
    let args = Args::parse();
    let plans = Plan::defaults();
    let plan = |name: &str| plans.iter().find(|p| p.name == name).unwrap().clone();
    let (free, standard, business, dedicated) = (plan("free"), plan("standard"), plan("business"), plan("dedicated"));

    // Placement: mostly quiet apps, some larger, four dedicated; each in one or both cities.
    let t = Instant::now();
    let mut board = Board::new(nodes(), &[]).unwrap();
    let mut placed: Vec<Placed> = Vec::new();
    let mut refused = 0;
    for i in 0..args.subchains {
        let p = if i % 2500 == 99 {
            &dedicated
        } else {
            match i % 100 {
                0..=79 => &free,
                80..=94 => &standard,
                _ => &business,
            }
        };
        let cities: Vec<String> = match i % 3 {
            0 => vec!["beijing".into(), "shanghai".into()],
            1 => vec!["beijing".into()],
            _ => vec!["shanghai".into()],
        };
        let id = format!("app-{i:06}");
        match board.place(&id, p, &cities) {
            Ok(at) => placed.extend(at.into_iter().map(|node| Placed {
                subchain: id.clone(),
                node,
                tenancy: p.tenancy,
                rate: p.rate,
                storage: p.storage,
            })),
            Err(_) => refused += 1,
        }
    }
    let place_ms = t.elapsed().as_secs_f64() * 1e3;
    // What one more creation costs the CA in placement: the board rebuilt from every placement.
    let t = Instant::now();
    let mut rebuilt = Board::new(nodes(), &placed).unwrap();
    rebuilt.place("one-more", &free, &["beijing".to_string()]).unwrap();
    let rebuild_ms = t.elapsed().as_secs_f64() * 1e3;
    let most = nodes().iter().map(|n| rebuilt.hosted(&n.id).len()).max().unwrap_or(0);
    println!(
        "placement: {} subchains ({} placements, {refused} refused) over 20 nodes in 2 cities in {place_ms:.1} ms; one more creation rebuilds the board in {rebuild_ms:.1} ms; the busiest node hosts {most}",
        args.subchains,
        placed.len()
    );

    // Quota check against one ECDSA P-256 verification.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let msg = [7u8; 200];
    let sig = kp.sign(&rng, &msg).unwrap();
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, kp.public_key().as_ref().to_vec());
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        public.verify(&msg, sig.as_ref()).unwrap();
    }
    let verify_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let unlimited = Plan {
        rate: 1_000_000,
        burst: 60_000_000,
        ..free.clone()
    };
    let check = |buckets: usize| {
        let q = Quotas::default();
        let ids: Vec<String> = (0..buckets).map(|i| format!("app-{i:06}")).collect();
        for id in &ids {
            q.take(id, Some(&unlimited), 1).unwrap();
        }
        let n = 1_000_000;
        let t = Instant::now();
        for i in 0..n {
            q.take(&ids[(i * 7919) % buckets], Some(&unlimited), 1).unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let (one, many) = (check(1), check(args.buckets));
    println!(
        "quota check: {one:.0} ns with 1 subchain, {many:.0} ns with {} ({:.2}x); one P-256 verification {:.1} us: the check is {:.2}% of it (target under 1% of a submission's CPU)",
        args.buckets,
        many / one,
        verify_ns / 1e3,
        100.0 * many / verify_ns
    );
}
