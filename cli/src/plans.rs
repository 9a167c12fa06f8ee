//! `bsn plans` (the resource plans on offer, and administrators defining them) and `bsn node
//! drain|undrain` (administrators taking a city node out of service for placement).

use bsn_api::ca::{Drained, Nodes, PlanOffer, Plans};
use clap::{Args, Subcommand};
use identity::plan::{Plan, Tenancy};

use super::{CaArgs, Failure, IdentityArgs, api, output};
use crate::subchain::plan_figures;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct PlansArgs {
    #[command(flatten)]
    ca: Option<CaArgs>,
    /// Print the API's document as JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    change: Option<PlanChange>,
}

#[derive(Subcommand)]
enum PlanChange {
    /// Define a plan, or change one (administrators). Subchains that have it keep the figures
    /// their statement carries until their plan is chosen again.
    Set {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// Its name: lowercase letters, digits and '-'.
        name: String,
        /// shared (many subchains on a node) or dedicated (a node of its own).
        #[arg(long, default_value = "shared")]
        tenancy: String,
        /// Sustained transactions per second.
        #[arg(long)]
        rate: u64,
        /// Transactions that may arrive at once above the rate (default: twice the rate).
        #[arg(long)]
        burst: Option<u64>,
        /// Bytes of blocks and state, such as 10GiB.
        #[arg(long, value_parser = identity::plan::parse_size)]
        storage: u64,
        /// Bytes per second served, such as 10MB.
        #[arg(long, value_parser = identity::plan::parse_size)]
        bandwidth: u64,
        /// Only administrators assign it (publishers cannot choose it themselves).
        #[arg(long)]
        admin_only: bool,
    },
    /// Withdraw a plan (administrators): no new subchain chooses it; those that have it keep it.
    Withdraw {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The plan.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum NodeCmd {
    /// Take a city node out of service for placement and move its subchains, one membership
    /// revision each, to other nodes of its city (administrators). Run again to retry the ones
    /// that fit nowhere.
    Drain {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The node's identity id.
        id: String,
        /// Print the API's document as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Put a drained city node back in service for placement (administrators).
    Undrain {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The node's identity id.
        id: String,
    },
}

fn usage(message: String, hint: &'static str) -> Failure {
    Failure {
        code: 2,
        message,
        hint: Some(hint),
    }
}

pub(crate) async fn plans(a: PlansArgs) -> Result<(), Failure> {
    match a.change {
        None => {
            let ca = a.ca.ok_or_else(|| {
                usage(
                    "the CA is not named".into(),
                    "give --ca and --ca-bundle (or BSN_CA, BSN_CA_BUNDLE)",
                )
            })?;
            let v: Plans = api(&ca, None)?.get_as("/api/v1/plans", &[]).await?;
            output::print(
                &v.plans,
                a.json,
                |items| {
                    let mut t = output::Table::new(&[
                        "PLAN",
                        "TENANCY",
                        "TX/S",
                        "BURST",
                        "STORAGE",
                        "BANDWIDTH",
                        "WHO CHOOSES",
                    ]);
                    for o in items {
                        let p = &o.plan;
                        t.row(vec![
                            p.name.clone(),
                            p.tenancy.as_str().to_string(),
                            p.rate.to_string(),
                            p.burst.to_string(),
                            output::bytes(p.storage),
                            format!("{}/s", output::bytes(p.bandwidth)),
                            if o.open { "publishers" } else { "administrators" }.to_string(),
                        ]);
                    }
                    t
                },
                "no plans on offer",
            )
        }
        Some(PlanChange::Set {
            ca,
            me,
            name,
            tenancy,
            rate,
            burst,
            storage,
            bandwidth,
            admin_only,
        }) => {
            let tenancy = match tenancy.as_str() {
                "shared" => Tenancy::Shared,
                "dedicated" => Tenancy::Dedicated,
                t => {
                    return Err(usage(
                        format!("tenancy '{t}' is not shared or dedicated"),
                        "give --tenancy shared or --tenancy dedicated",
                    ));
                }
            };
            let plan = Plan {
                name: name.clone(),
                tenancy,
                rate,
                burst: burst.unwrap_or(rate.saturating_mul(2)),
                storage,
                bandwidth,
            };
            plan.check()
                .map_err(|e| usage(e, "see `bsn plans set --help` for the figures' bounds"))?;
            let v: PlanOffer = api(&ca, Some(&me))?
                .put_as(
                    &format!("/api/v1/plans/{name}"),
                    &PlanOffer {
                        plan,
                        open: !admin_only,
                    },
                )
                .await?;
            println!("plan {}: {}", v.plan.name, plan_figures(&v.plan));
            Ok(())
        }
        Some(PlanChange::Withdraw { ca, me, name }) => {
            api(&ca, Some(&me))?.delete(&format!("/api/v1/plans/{name}")).await?;
            println!("plan {name} withdrawn (subchains that have it keep it)");
            Ok(())
        }
    }
}

pub(crate) async fn node(cmd: NodeCmd) -> Result<(), Failure> {
    match cmd {
        NodeCmd::Drain { ca, me, id, json } => {
            let v: Drained = api(&ca, Some(&me))?
                .post_as(&format!("/api/v1/nodes/{id}/drain"), &serde_json::json!({}))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).map_err(super::local)?);
                return Ok(());
            }
            println!("{} is draining (directory revision {})", v.node, v.directory_revision);
            for m in &v.moved {
                println!(
                    "  moved {} to {} (revision {})",
                    m.subchain,
                    m.nodes.join(", "),
                    m.revision
                );
            }
            for s in &v.stuck {
                println!("  stuck {}: {}", s.subchain, s.why);
            }
            if v.stuck.is_empty() {
                println!("{} hosts no subchain now", v.node);
                Ok(())
            } else {
                Err(Failure {
                    code: 4,
                    message: format!("{} subchains fit on no other node of the city", v.stuck.len()),
                    hint: Some(
                        "add capacity in the city (a node declares it at init), then run `bsn node drain` again",
                    ),
                })
            }
        }
        NodeCmd::Undrain { ca, me, id } => {
            let v: Nodes = api(&ca, Some(&me))?
                .delete_as(&format!("/api/v1/nodes/{id}/drain"))
                .await?;
            println!(
                "{id} is back in service for placement (directory revision {})",
                v.revision
            );
            Ok(())
        }
    }
}
