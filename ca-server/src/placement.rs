//! Placing subchains on city nodes (DESIGN.md section 12): a pure function of the nodes'
//! declared capacities and the placements there already are. No I/O, no clock, no randomness:
//! the same directory and placements give the same answer on every replica.
//!
//! Features:
//! - [`Board::place`]: in each city asked for, a dedicated plan gets a free dedicated node (the
//!   smallest that fits, so larger ones stay free for larger plans), a shared plan the shared node
//!   with the most spare declared rate (then storage, then the smallest id) that still fits the
//!   plan's rate and storage. Nothing is over-committed: a dedicated node hosts one subchain, a
//!   shared node never more than it declared. All cities or none: a refusal names the city and
//!   what is missing, and changes nothing.
//! - [`Board::drain`]: a node taken out of service; its subchains, in id order, each moved to
//!   the node `place` would choose in the same city (one move at a time through the normal
//!   host-change path, which the caller runs); those that fit nowhere are listed, not moved.
//! - The board is built once from the placements (linear), so placing many subchains costs per
//!   subchain only the nodes of its cities.
//!
//! Non-features: the plans on offer and who may choose them (the registry), enforcement and
//! metering (the node), re-balancing of subchains that fit where they are.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use identity::plan::{Capacity, Plan, Tenancy};

/// A city node as the directory declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its identity id.
    pub id: String,
    /// Its city.
    pub city: String,
    /// What it declared it can give.
    pub capacity: Capacity,
    /// Taken out of service: nothing new is placed on it.
    pub draining: bool,
}

/// A subchain placed on a node, with what its plan takes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The subchain.
    pub subchain: String,
    /// The node hosting it.
    pub node: String,
    /// Its plan's tenancy.
    pub tenancy: Tenancy,
    /// Its plan's rate (tx/s).
    pub rate: u64,
    /// Its plan's storage allowance (bytes).
    pub storage: u64,
}

/// A subchain to move off a draining node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The subchain.
    pub subchain: String,
    /// The draining node.
    pub from: String,
    /// Where it goes.
    pub to: String,
}

/// What draining a node comes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drain {
    /// The moves, in the order to make them.
    pub moves: Vec<Move>,
    /// Subchains that fit on no other node of the city, with why.
    pub stuck: Vec<(String, PlacementError)>,
}

/// Why a subchain could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No city was named, or more than the limit.
    #[error("name from 1 to {MAX_CITIES} cities")]
    Cities,
    /// A city was named twice.
    #[error("the city '{0}' is named twice")]
    RepeatedCity(String),
    /// No city node runs in the city.
    #[error("no city node runs in '{0}'")]
    NoNodes(String),
    /// Nothing in the city fits the plan.
    #[error("nothing in {city} fits the plan '{plan}': {why}")]
    Full {
        /// The city.
        city: String,
        /// The plan.
        plan: String,
        /// What is missing.
        why: String,
    },
    /// A node named in a placement or a drain is not in the directory.
    #[error("no city node '{0}' is in the directory")]
    UnknownNode(String),
    /// A node named by hand cannot take the subchain.
    #[error("the city node '{node}' cannot take the plan '{plan}': {why}")]
    NodeFull {
        /// The node.
        node: String,
        /// The plan.
        plan: String,
        /// Why.
        why: String,
    },
}

/// The most cities one subchain is placed in.
pub const MAX_CITIES: usize = 16;

#[derive(Debug, Clone, Default)]
struct Load {
    rate: u64,
    storage: u64,
    /// Subchains here with what they take: (tenancy, rate, storage).
    hosted: BTreeMap<String, (Tenancy, u64, u64)>,
}

/// The nodes and what is placed on them.
#[derive(Debug, Clone)]
pub struct Board {
    /// By id.
    nodes: Vec<Node>,
    load: Vec<Load>,
    by_id: HashMap<String, usize>,
    /// City to node indices (in id order).
    by_city: BTreeMap<String, Vec<usize>>,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Board {
    /// The board of `nodes` (in any order) with `placed` on them.
    pub fn new(mut nodes: Vec<Node>, placed: &[Placed]) -> Result<Self, PlacementError> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let by_id: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
        let mut by_city: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            by_city.entry(n.city.clone()).or_default().push(i);
        }
        let mut load = vec![Load::default(); nodes.len()];
        for p in placed {
            let i = *by_id
                .get(&p.node)
                .ok_or_else(|| PlacementError::UnknownNode(p.node.clone()))?;
            let l = &mut load[i];
            l.rate = l.rate.saturating_add(p.rate);
            l.storage = l.storage.saturating_add(p.storage);
            l.hosted.insert(p.subchain.clone(), (p.tenancy, p.rate, p.storage));
        }
        Ok(Self {
            nodes,
            load,
            by_id,
            by_city,
        })
    }

    /// Places `subchain` with `plan` in each of `cities`; returns the chosen node ids, in the
    /// order of the cities, and records them on the board. A refusal changes nothing.
    pub fn place(&mut self, subchain: &str, plan: &Plan, cities: &[String]) -> Result<Vec<String>, PlacementError> {
        if cities.is_empty() || cities.len() > MAX_CITIES {
            return Err(PlacementError::Cities);
        }
        let mut seen = BTreeSet::new();
        let mut chosen = Vec::with_capacity(cities.len());
        for city in cities {
            if !seen.insert(city.as_str()) {
                return Err(PlacementError::RepeatedCity(city.clone()));
            }
            chosen.push(self.choose(subchain, plan.tenancy, plan.rate, plan.storage, city, &plan.name)?);
        }
        for &i in &chosen {
            self.add(i, subchain, plan.tenancy, plan.rate, plan.storage);
        }
        Ok(chosen.into_iter().map(|i| self.nodes[i].id.clone()).collect())
    }

    /// Takes `node` out of service and moves its subchains, in id order, each to the node
    /// [`Board::place`] would choose for it in the same city; the board records the moves.
    pub fn drain(&mut self, node: &str) -> Result<Drain, PlacementError> {
        let from = *self
            .by_id
            .get(node)
            .ok_or_else(|| PlacementError::UnknownNode(node.to_string()))?;
        self.nodes[from].draining = true;
        let city = self.nodes[from].city.clone();
        let hosted: Vec<(String, (Tenancy, u64, u64))> =
            self.load[from].hosted.iter().map(|(s, d)| (s.clone(), *d)).collect();
        let mut drain = Drain::default();
        for (subchain, (tenancy, rate, storage)) in hosted {
            let plan_name = format!("{} ({} tx/s)", tenancy.as_str(), rate);
            match self.choose(&subchain, tenancy, rate, storage, &city, &plan_name) {
                Ok(to) => {
                    self.remove(from, &subchain);
                    self.add(to, &subchain, tenancy, rate, storage);
                    drain.moves.push(Move {
                        subchain,
                        from: node.to_string(),
                        to: self.nodes[to].id.clone(),
                    });
                }
                Err(e) => drain.stuck.push((subchain, e)),
            }
        }
        Ok(drain)
    }

    /// Checks nodes named by hand for `subchain` with `plan`: each that declared a capacity must
    /// be in service, of the plan's tenancy, free (dedicated) and with room for the plan; nodes
    /// that declared none are not checked (they were never offered for placement). Records the
    /// placement on success.
    pub fn pin(&mut self, subchain: &str, plan: &Plan, nodes: &[String]) -> Result<(), PlacementError> {
        let mut on_board = Vec::new();
        for node in nodes {
            let Some(&i) = self.by_id.get(node) else { continue };
            let n = &self.nodes[i];
            let refuse = |why: String| PlacementError::NodeFull {
                node: node.clone(),
                plan: plan.name.clone(),
                why,
            };
            if n.draining {
                return Err(refuse("it is being drained".into()));
            }
            if n.capacity.tenancy != plan.tenancy {
                return Err(refuse(format!(
                    "it is a {} node and the plan is {}",
                    n.capacity.tenancy.as_str(),
                    plan.tenancy.as_str()
                )));
            }
            let others = self.load[i].hosted.keys().filter(|s| *s != subchain).count();
            if plan.tenancy == Tenancy::Dedicated && others > 0 {
                return Err(refuse("it is dedicated to another subchain".into()));
            }
            let (r, st) = self.spare_without(i, subchain);
            if r < plan.rate || st < plan.storage {
                return Err(refuse(format!(
                    "{r} tx/s and {} are free; the plan needs {} tx/s and {}",
                    gib(st),
                    plan.rate,
                    gib(plan.storage)
                )));
            }
            on_board.push(i);
        }
        for i in on_board {
            self.remove(i, subchain);
            self.add(i, subchain, plan.tenancy, plan.rate, plan.storage);
        }
        Ok(())
    }

    /// Where `subchain` goes with `plan` (`None`: none, which takes no declared capacity) when
    /// it is on `current`: each node that can still take it keeps it, each other one (draining,
    /// of the other tenancy, or without room) is replaced by the node [`Board::place`] would
    /// choose in its city. Nodes that declared no capacity keep it. Returns the new nodes,
    /// sorted, and records them; a refusal changes nothing.
    pub fn replan(
        &mut self,
        subchain: &str,
        plan: Option<&Plan>,
        current: &[String],
    ) -> Result<Vec<String>, PlacementError> {
        let (tenancy, rate, storage, name) = match plan {
            Some(p) => (p.tenancy, p.rate, p.storage, p.name.clone()),
            None => (Tenancy::Shared, 0, 0, "none".to_string()),
        };
        let mut before = self.clone();
        let held: Vec<usize> = current.iter().filter_map(|n| self.by_id.get(n).copied()).collect();
        for &i in &held {
            before.remove(i, subchain);
        }
        // Those that keep it first, so a replacement never lands on one of them.
        let mut chosen: Vec<String> = Vec::with_capacity(current.len());
        let mut replace = Vec::new();
        for node in current {
            let Some(&i) = before.by_id.get(node) else {
                chosen.push(node.clone());
                continue;
            };
            let n = &before.nodes[i];
            let free = tenancy == Tenancy::Shared || before.load[i].hosted.is_empty();
            let (r, s) = before.spare_of(i);
            if !n.draining && n.capacity.tenancy == tenancy && free && r >= rate && s >= storage {
                before.add(i, subchain, tenancy, rate, storage);
                chosen.push(node.clone());
            } else {
                replace.push(n.city.clone());
            }
        }
        for city in replace {
            let to = before.choose(subchain, tenancy, rate, storage, &city, &name)?;
            before.add(to, subchain, tenancy, rate, storage);
            chosen.push(before.nodes[to].id.clone());
        }
        *self = before;
        chosen.sort();
        chosen.dedup();
        Ok(chosen)
    }

    /// The subchains on `node` (none for an unknown node), in id order.
    pub fn hosted(&self, node: &str) -> Vec<String> {
        self.by_id
            .get(node)
            .map(|&i| self.load[i].hosted.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Declared rate and storage still free on `node`.
    pub fn spare(&self, node: &str) -> Option<(u64, u64)> {
        self.by_id.get(node).map(|&i| self.spare_of(i))
    }

    /// Spare on node `i` as if `subchain` were not there.
    fn spare_without(&self, i: usize, subchain: &str) -> (u64, u64) {
        let (r, s) = self.spare_of(i);
        match self.load[i].hosted.get(subchain) {
            Some((_, rate, storage)) => (r.saturating_add(*rate), s.saturating_add(*storage)),
            None => (r, s),
        }
    }

    fn spare_of(&self, i: usize) -> (u64, u64) {
        let (c, l) = (&self.nodes[i].capacity, &self.load[i]);
        (c.rate.saturating_sub(l.rate), c.storage.saturating_sub(l.storage))
    }

    fn add(&mut self, i: usize, subchain: &str, tenancy: Tenancy, rate: u64, storage: u64) {
        let l = &mut self.load[i];
        l.rate = l.rate.saturating_add(rate);
        l.storage = l.storage.saturating_add(storage);
        l.hosted.insert(subchain.to_string(), (tenancy, rate, storage));
    }

    fn remove(&mut self, i: usize, subchain: &str) {
        let l = &mut self.load[i];
        if let Some((_, rate, storage)) = l.hosted.remove(subchain) {
            l.rate = l.rate.saturating_sub(rate);
            l.storage = l.storage.saturating_sub(storage);
        }
    }

    /// The node of `city` for a subchain taking `rate` and `storage` with `tenancy`.
    fn choose(
        &self,
        subchain: &str,
        tenancy: Tenancy,
        rate: u64,
        storage: u64,
        city: &str,
        plan: &str,
    ) -> Result<usize, PlacementError> {
        let in_city = self
            .by_city
            .get(city)
            .ok_or_else(|| PlacementError::NoNodes(city.to_string()))?;
        let full = |why: String| PlacementError::Full {
            city: city.to_string(),
            plan: plan.to_string(),
            why,
        };
        let open: Vec<usize> = in_city
            .iter()
            .copied()
            .filter(|&i| {
                let n = &self.nodes[i];
                n.capacity.tenancy == tenancy && !n.draining && !self.load[i].hosted.contains_key(subchain)
            })
            .collect();
        let fits = |i: &usize| {
            let (r, s) = self.spare_of(*i);
            r >= rate && s >= storage
        };
        match tenancy {
            Tenancy::Dedicated => {
                let free: Vec<usize> = open.iter().copied().filter(|&i| self.load[i].hosted.is_empty()).collect();
                free.iter()
                    .copied()
                    .filter(fits)
                    .min_by_key(|&i| (self.nodes[i].capacity.rate, self.nodes[i].capacity.storage, i))
                    .ok_or_else(|| {
                        full(if open.is_empty() {
                            format!("no dedicated node in service there ({} nodes in all)", in_city.len())
                        } else if free.is_empty() {
                            format!("all {} dedicated nodes are taken", open.len())
                        } else {
                            format!(
                                "{} free dedicated nodes, none with {rate} tx/s and {}",
                                free.len(),
                                gib(storage)
                            )
                        })
                    })
            }
            Tenancy::Shared => open
                .iter()
                .copied()
                .filter(fits)
                .max_by_key(|&i| {
                    let (r, s) = self.spare_of(i);
                    (r, s, std::cmp::Reverse(i))
                })
                .ok_or_else(|| {
                    full(match open.iter().map(|&i| self.spare_of(i)).max() {
                        None => format!("no shared node in service there ({} nodes in all)", in_city.len()),
                        Some((r, s)) => format!(
                            "{} shared nodes, the most spare with {r} tx/s and {} free; the plan needs {rate} tx/s and {}",
                            open.len(),
                            gib(s),
                            gib(storage)
                        ),
                    })
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(id: &str, city: &str, tenancy: Tenancy, rate: u64, storage: u64) -> Node {
        Node {
            id: id.into(),
            city: city.into(),
            capacity: Capacity { tenancy, rate, storage },
            draining: false,
        }
    }

    fn plan(name: &str) -> Plan {
        Plan::defaults().into_iter().find(|p| p.name == name).unwrap()
    }

    fn cities(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    /// Two cities, each with two shared nodes (1,000 tx/s, 100 GiB) and two dedicated ones
    /// (5,000 tx/s, 2 TiB).
    fn directory() -> Vec<Node> {
        let mut v = Vec::new();
        for city in ["beijing", "shanghai"] {
            for i in 1..=2 {
                v.push(node(&format!("{city}-s{i}"), city, Tenancy::Shared, 1_000, 100 * GIB));
                v.push(node(
                    &format!("{city}-d{i}"),
                    city,
                    Tenancy::Dedicated,
                    5_000,
                    2048 * GIB,
                ));
            }
        }
        v
    }

    #[test]
    fn a_dedicated_node_hosts_one_subchain_and_never_a_shared_one() {
        let mut b = Board::new(directory(), &[]).unwrap();
        let bj = cities(&["beijing"]);
        assert_eq!(b.place("a", &plan("dedicated"), &bj).unwrap(), ["beijing-d1"]);
        assert_eq!(b.place("b", &plan("dedicated"), &bj).unwrap(), ["beijing-d2"]);
        let e = b.place("c", &plan("dedicated"), &bj).unwrap_err();
        assert!(e.to_string().contains("all 2 dedicated nodes are taken"), "{e}");
        assert!(e.to_string().contains("beijing"), "the refusal names the city: {e}");
        // Shared plans go to shared nodes only, even with dedicated nodes idle elsewhere.
        for i in 0..50 {
            let at = b.place(&format!("s{i}"), &plan("free"), &bj).unwrap();
            assert!(at[0].starts_with("beijing-s"), "{at:?}");
        }
        assert_eq!(b.hosted("beijing-d1"), ["a"]);
    }

    #[test]
    fn a_subchain_is_placed_once_in_every_city_named() {
        let mut b = Board::new(directory(), &[]).unwrap();
        let at = b
            .place("x", &plan("standard"), &cities(&["shanghai", "beijing"]))
            .unwrap();
        assert_eq!(at, ["shanghai-s1", "beijing-s1"]);
        // The next goes where there is most to spare.
        let at = b
            .place("y", &plan("standard"), &cities(&["beijing", "shanghai"]))
            .unwrap();
        assert_eq!(at, ["beijing-s2", "shanghai-s2"]);
        assert_eq!(
            b.place("z", &plan("free"), &cities(&["beijing", "beijing"])),
            Err(PlacementError::RepeatedCity("beijing".into()))
        );
        assert_eq!(
            b.place("z", &plan("free"), &cities(&["beijing", "lhasa"])),
            Err(PlacementError::NoNodes("lhasa".into()))
        );
        assert_eq!(b.place("z", &plan("free"), &[]), Err(PlacementError::Cities));
        assert!(
            b.hosted("beijing-s1").len() + b.hosted("beijing-s2").len() == 2,
            "refusals placed nothing"
        );
    }

    #[test]
    fn a_full_city_refuses_with_what_is_missing_and_changes_nothing() {
        let nodes = vec![
            node("a1", "beijing", Tenancy::Shared, 100, 10 * GIB),
            node("b1", "shanghai", Tenancy::Shared, 1_000, 100 * GIB),
        ];
        let mut b = Board::new(nodes, &[]).unwrap();
        for i in 0..10 {
            b.place(&format!("f{i}"), &plan("free"), &cities(&["beijing", "shanghai"]))
                .unwrap();
        }
        let before = (b.spare("a1"), b.spare("b1"));
        let e = b
            .place("f10", &plan("free"), &cities(&["shanghai", "beijing"]))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("beijing") && text.contains("0 tx/s") && text.contains("needs 10 tx/s"),
            "{text}"
        );
        assert_eq!((b.spare("a1"), b.spare("b1")), before, "shanghai was not taken either");
        // Storage counts as much as the rate.
        let mut b = Board::new(vec![node("a1", "beijing", Tenancy::Shared, 1_000, GIB)], &[]).unwrap();
        let e = b.place("s", &plan("standard"), &cities(&["beijing"])).unwrap_err();
        assert!(e.to_string().contains("10.0 GiB"), "{e}");
    }

    #[test]
    fn placement_is_the_same_whatever_order_the_inputs_come_in() {
        let placed: Vec<Placed> = (0..40)
            .map(|i| Placed {
                subchain: format!("p{i:02}"),
                node: ["beijing-s1", "beijing-s2", "shanghai-s1"][i % 3].to_string(),
                tenancy: Tenancy::Shared,
                rate: 10 + i as u64,
                storage: GIB,
            })
            .collect();
        let run = |mut nodes: Vec<Node>, mut placed: Vec<Placed>, rev: bool| {
            if rev {
                nodes.reverse();
                placed.reverse();
            }
            let mut b = Board::new(nodes, &placed).unwrap();
            (0..30)
                .map(|i| {
                    let c = if i % 2 == 0 {
                        &["beijing", "shanghai"][..]
                    } else {
                        &["shanghai"][..]
                    };
                    b.place(&format!("n{i}"), &plan(["free", "standard"][i % 2]), &cities(c))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(directory(), placed.clone(), false), run(directory(), placed, true));
    }

    #[test]
    fn draining_moves_each_subchain_within_its_city_and_lists_what_fits_nowhere() {
        let mut b = Board::new(directory(), &[]).unwrap();
        for i in 0..6 {
            b.place(&format!("s{i}"), &plan("standard"), &cities(&["beijing"]))
                .unwrap();
        }
        b.place("d", &plan("dedicated"), &cities(&["beijing"])).unwrap();
        let on_s1 = b.hosted("beijing-s1");
        assert_eq!(on_s1.len(), 3);
        let drain = b.drain("beijing-s1").unwrap();
        assert!(drain.stuck.is_empty());
        assert_eq!(
            drain.moves.iter().map(|m| m.subchain.clone()).collect::<Vec<_>>(),
            on_s1
        );
        assert!(
            drain
                .moves
                .iter()
                .all(|m| m.to == "beijing-s2" && m.from == "beijing-s1")
        );
        assert!(b.hosted("beijing-s1").is_empty());
        assert_eq!(b.hosted("beijing-s2").len(), 6);
        // Nothing new lands on a draining node.
        let at = b.place("new", &plan("free"), &cities(&["beijing"])).unwrap();
        assert_eq!(at, ["beijing-s2"]);
        // The dedicated subchain moves to the other dedicated node; with none free it is stuck.
        let drain = b.drain("beijing-d1").unwrap();
        assert_eq!(drain.moves[0].to, "beijing-d2");
        let drain = b.drain("beijing-d2").unwrap();
        assert!(drain.moves.is_empty());
        assert_eq!(drain.stuck[0].0, "d");
        assert!(
            drain.stuck[0].1.to_string().contains("no dedicated node in service"),
            "{:?}",
            drain.stuck
        );
        assert_eq!(b.drain("nowhere"), Err(PlacementError::UnknownNode("nowhere".into())));
    }

    #[test]
    fn ten_thousand_subchains_are_placed_over_twenty_nodes_in_under_a_second() {
        let mut nodes = Vec::new();
        for city in ["beijing", "shanghai"] {
            for i in 0..10 {
                nodes.push(node(&format!("{city}-{i}"), city, Tenancy::Shared, 20_000, 1 << 44));
            }
        }
        let t0 = std::time::Instant::now();
        let mut b = Board::new(nodes, &[]).unwrap();
        let free = plan("free");
        let both = cities(&["beijing", "shanghai"]);
        for i in 0..10_000 {
            b.place(&format!("app-{i}"), &free, &both).unwrap();
        }
        let took = t0.elapsed();
        println!("10,000 subchains placed over 20 nodes in {took:?}");
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        // Spread evenly: every node holds 1,000.
        for city in ["beijing", "shanghai"] {
            for i in 0..10 {
                assert_eq!(b.hosted(&format!("{city}-{i}")).len(), 1_000);
            }
        }
    }

    #[test]
    fn nodes_named_by_hand_must_take_the_plan() {
        let mut b = Board::new(directory(), &[]).unwrap();
        let pin = |b: &mut Board, s: &str, p: &str, n: &[&str]| b.pin(s, &plan(p), &cities(n));
        pin(&mut b, "a", "dedicated", &["beijing-d1"]).unwrap();
        let e = pin(&mut b, "b", "dedicated", &["beijing-d1"]).unwrap_err();
        assert!(e.to_string().contains("dedicated to another subchain"), "{e}");
        let e = pin(&mut b, "b", "free", &["beijing-d2"]).unwrap_err();
        assert!(e.to_string().contains("a dedicated node and the plan is shared"), "{e}");
        // A node that declared no capacity is not checked; one that did is.
        pin(&mut b, "c", "business", &["legacy-1", "beijing-s1"]).unwrap();
        let e = pin(&mut b, "d", "standard", &["beijing-s1"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("500 tx/s and 0.0 GiB are free; the plan needs 100 tx/s and 10.0 GiB"),
            "{e}"
        );
        // Pinning again where it already is does not count it twice.
        pin(&mut b, "c", "business", &["beijing-s1"]).unwrap();
        assert_eq!(b.spare("beijing-s1").unwrap(), (500, 0));
        assert_eq!(b.hosted("beijing-s1"), ["c"]);
    }

    #[test]
    fn a_new_plan_keeps_the_nodes_that_can_take_it_and_moves_off_the_others() {
        let mut b = Board::new(directory(), &[]).unwrap();
        // 500 tx/s and 10 GiB: the rate, not the storage, is what runs out here.
        let mid = Plan {
            name: "mid".into(),
            storage: 10 * GIB,
            ..plan("business")
        };
        let both = cities(&["beijing", "shanghai"]);
        let at = b.place("x", &mid, &both).unwrap();
        assert_eq!(at, ["beijing-s1", "shanghai-s1"]);
        b.place("y", &mid, &cities(&["beijing"])).unwrap(); // beijing-s2
        // A smaller plan stays where it is.
        let mut current = at.clone();
        current.sort();
        assert_eq!(b.replan("x", Some(&plan("free")), &current).unwrap(), current);
        assert_eq!(b.spare("beijing-s1").unwrap().0, 990);
        // A bigger one than beijing-s1 has room for: 1,000 tx/s, with 500 taken by nothing else
        // there, still fits; make it not fit by filling the node first.
        b.place("z", &mid, &cities(&["beijing"])).unwrap(); // beijing-s1 (most spare)
        let big = Plan {
            name: "big".into(),
            rate: 600,
            burst: 600,
            ..mid.clone()
        };
        let e = b.replan("x", Some(&big), &current).unwrap_err();
        assert!(
            e.to_string().contains("beijing"),
            "beijing-s2 has 500 free, not 600: {e}"
        );
        assert_eq!(b.spare("beijing-s1").unwrap().0, 490, "a refusal changes nothing");
        // Dedicated moves it to dedicated nodes in the same cities.
        let moved = b.replan("x", Some(&plan("dedicated")), &current).unwrap();
        assert_eq!(moved, ["beijing-d1", "shanghai-d1"]);
        assert_eq!(b.hosted("beijing-s1"), ["z"]);
        assert_eq!(b.spare("beijing-s1").unwrap().0, 500);
    }
}
