//! `bsn subchain ...`, `bsn memberships` and `bsn feed`: the subchain registry from the command
//! line. Statements are verified with the CA's membership key before they are shown.

use std::path::PathBuf;

use bsn_api::ca::{
    Approve, CreateSubchain, FeedEvent, FeedPage, Items, JoinRequest, JoinRequestBody, Joined, MembershipKey,
    MyMembership, Revised, SetRole, Subchain, UpdateSubchain, Updated,
};
use clap::{Args, Subcommand};
use identity::membership::Member;
use serde_json::json;

use super::{CaArgs, Failure, IdentityArgs, api, fetch_all, local, output};

#[derive(Args, Clone)]
pub(crate) struct Target {
    #[command(flatten)]
    ca: CaArgs,
    #[command(flatten)]
    me: IdentityArgs,
}

#[derive(Subcommand)]
pub(crate) enum SubchainCmd {
    /// The directory of subchains.
    List {
        #[command(flatten)]
        t: Target,
        /// Only this publisher's.
        #[arg(long)]
        publisher: Option<String>,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// One subchain: settings, hosting nodes, revision.
    Show {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// Print the API's JSON document instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Create a subchain (publishers and administrators); you become its first admin.
    Create {
        #[command(flatten)]
        t: Target,
        /// Id: 1-63 characters of a-z, 0-9 and '-'.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// open (readers and writers join at once) or approval.
        #[arg(long, default_value = "approval")]
        policy: String,
        /// A city to host it in (repeatable): the CA picks the node there that fits the plan.
        #[arg(long = "city", required_unless_present = "nodes", conflicts_with = "nodes")]
        cities: Vec<String>,
        /// The resource plan (`bsn plans`; default: the cheapest open one when placed by city).
        #[arg(long)]
        plan: Option<String>,
        /// A hosting city node's id, named by hand instead of --city (repeatable).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// An orderer's id (repeatable; default: the CA picks three of the ordering cluster).
        #[arg(long = "orderer", conflicts_with = "no_orderers")]
        orderers: Vec<String>,
        /// No orderers: the hosting nodes order the subchain themselves.
        #[arg(long)]
        no_orderers: bool,
    },
    /// Change a subchain's name, description, policy or hosting nodes (managers).
    Update {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New policy.
        #[arg(long)]
        policy: Option<String>,
        /// The new set of hosting nodes (repeatable; replaces the old set).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A new resource plan (`bsn plans`): the subchain moves off nodes that cannot take it.
        #[arg(long)]
        plan: Option<String>,
        /// The new set of orderers (repeatable; replaces the old set).
        #[arg(long = "orderer", conflicts_with = "no_orderers")]
        orderers: Vec<String>,
        /// No orderers from now on: the hosting nodes order the subchain themselves.
        #[arg(long)]
        no_orderers: bool,
    },
    /// Members and their roles.
    Members {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Add a member, or change a member's role (managers).
    SetRole {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// The participant.
        #[arg(long)]
        member: String,
        /// reader, writer or admin.
        #[arg(long)]
        role: String,
    },
    /// Remove a member (managers).
    Remove {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// The participant.
        #[arg(long)]
        member: String,
    },
    /// Leave a subchain.
    Leave {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
    },
    /// Ask to join (open subchains admit readers and writers at once).
    Join {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// The role asked for.
        #[arg(long, default_value = "reader")]
        role: String,
        /// A note for the approver.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Pending join requests (managers).
    Requests {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Approve a join request (managers; never your own).
    Approve {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// The requester.
        #[arg(long)]
        member: String,
        /// Grant this role instead of the one asked for.
        #[arg(long)]
        role: Option<String>,
    },
    /// Reject a join request (managers), or withdraw your own.
    Reject {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// The requester.
        #[arg(long)]
        member: String,
    },
    /// Usage per node and hour from the nodes' signed reports (its publisher and admins, CA
    /// administrators and auditors).
    Usage {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// Start (RFC 3339 or Unix seconds; default: 24 hours before --to).
        #[arg(long, value_parser = when_arg)]
        from: Option<i64>,
        /// End, exclusive (RFC 3339 or Unix seconds; default: the end of this hour).
        #[arg(long, value_parser = when_arg)]
        to: Option<i64>,
        /// Print CSV (one row per node and hour) instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Print the API's JSON document instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Fetch a signed membership statement, verify it and print it.
    Statement {
        #[command(flatten)]
        t: Target,
        /// The subchain id.
        id: String,
        /// A past revision (default: the latest).
        #[arg(long)]
        revision: Option<u64>,
        /// File with the CA's membership key (base64), obtained out of band; without it the key
        /// the CA serves is used (which proves integrity in transit, not the CA's honesty).
        #[arg(long, value_name = "FILE")]
        membership_key: Option<PathBuf>,
    },
}

/// The figures of a plan, for people: "shared, 10 tx/s (burst 20), 1.0 GiB, 1.0 MB/s".
pub(crate) fn plan_figures(p: &identity::plan::Plan) -> String {
    format!(
        "{}, {} tx/s (burst {}), {} stored, {}/s served",
        p.tenancy.as_str(),
        p.rate,
        p.burst,
        output::bytes(p.storage),
        output::bytes(p.bandwidth)
    )
}

fn show_revised(v: &Revised) {
    println!(
        "{} is at revision {} (log entry {})",
        v.subchain, v.revision, v.receipt.leaf_index
    );
}

fn role_ok(r: &str) -> Result<(), Failure> {
    if identity::membership::Role::parse(r).is_none() {
        return Err(Failure {
            code: 2,
            message: format!("role '{r}' is not one of: reader, writer, admin"),
            hint: None,
        });
    }
    Ok(())
}

pub(crate) async fn run(cmd: SubchainCmd) -> Result<(), Failure> {
    match cmd {
        SubchainCmd::List { t, publisher, json } => {
            let q: Vec<(&str, String)> = publisher.map(|p| ("publisher", p)).into_iter().collect();
            let items: Vec<Subchain> = fetch_all(&api(&t.ca, Some(&t.me))?, "/api/v1/subchains", q).await?;
            output::print(
                &items,
                json,
                |items| {
                    let mut t =
                        output::Table::new(&["ID", "NAME", "POLICY", "MEMBERS", "REVISION", "CHANGED", "CITY NODES"]);
                    for s in items {
                        t.row(vec![
                            s.id.clone(),
                            s.name.clone(),
                            s.policy.clone(),
                            s.members.to_string(),
                            s.revision.to_string(),
                            output::unix(s.updated_at),
                            output::joined(&s.nodes),
                        ]);
                    }
                    t
                },
                "no subchains yet",
            )?;
        }
        SubchainCmd::Show { t, id, json } => {
            let v: Subchain = api(&t.ca, Some(&t.me))?
                .get_as(&format!("/api/v1/subchains/{id}"), &[])
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).map_err(local)?);
            } else {
                print!("{}", show(&v));
            }
        }
        SubchainCmd::Create {
            t,
            id,
            name,
            description,
            policy,
            cities,
            plan,
            nodes,
            orderers,
            no_orderers,
        } => {
            let body = CreateSubchain {
                id,
                name,
                description,
                policy,
                nodes,
                cities,
                plan,
                orderers: if no_orderers {
                    Some(Vec::new())
                } else {
                    (!orderers.is_empty()).then_some(orderers)
                },
            };
            let v: Revised = api(&t.ca, Some(&t.me))?.post_as("/api/v1/subchains", &body).await?;
            show_revised(&v);
        }
        SubchainCmd::Update {
            t,
            id,
            name,
            description,
            policy,
            nodes,
            plan,
            orderers,
            no_orderers,
        } => {
            let body = UpdateSubchain {
                name,
                description,
                policy,
                plan,
                nodes: (!nodes.is_empty()).then_some(nodes),
                orderers: if no_orderers {
                    Some(Vec::new())
                } else {
                    (!orderers.is_empty()).then_some(orderers)
                },
            };
            if body == UpdateSubchain::default() {
                return Err(Failure {
                    code: 2,
                    message: "nothing to change".into(),
                    hint: Some("give --name, --description, --policy, --plan, --node, --orderer or --no-orderers"),
                });
            }
            let v: Updated = api(&t.ca, Some(&t.me))?
                .patch_as(&format!("/api/v1/subchains/{id}"), &body)
                .await?;
            match &v.revision {
                Some(r) => show_revised(r),
                None => println!("{id} updated"),
            }
        }
        SubchainCmd::Members { t, id, json } => {
            let items: Vec<Member> = fetch_all(
                &api(&t.ca, Some(&t.me))?,
                &format!("/api/v1/subchains/{id}/members"),
                vec![],
            )
            .await?;
            output::print(
                &items,
                json,
                |items| {
                    let mut t = output::Table::new(&["MEMBER", "ROLE"]);
                    for m in items {
                        t.row(vec![m.id.clone(), m.role.name().to_string()]);
                    }
                    t
                },
                "no members",
            )?;
        }
        SubchainCmd::SetRole { t, id, member, role } => {
            role_ok(&role)?;
            let v: Revised = api(&t.ca, Some(&t.me))?
                .put_as(&format!("/api/v1/subchains/{id}/members/{member}"), &SetRole { role })
                .await?;
            show_revised(&v);
        }
        SubchainCmd::Remove { t, id, member } => {
            let v: Revised = api(&t.ca, Some(&t.me))?
                .delete_as(&format!("/api/v1/subchains/{id}/members/{member}"))
                .await?;
            show_revised(&v);
        }
        SubchainCmd::Leave { t, id } => {
            let me = identity_of(&t.me)?;
            let v: Revised = api(&t.ca, Some(&t.me))?
                .delete_as(&format!("/api/v1/subchains/{id}/members/{me}"))
                .await?;
            show_revised(&v);
        }
        SubchainCmd::Join { t, id, role, note } => {
            role_ok(&role)?;
            let body = JoinRequestBody {
                role: role.clone(),
                note,
            };
            let v: Joined = api(&t.ca, Some(&t.me))?
                .post_as(&format!("/api/v1/subchains/{id}/join"), &body)
                .await?;
            match v {
                Joined::Member(r) => {
                    println!("joined {id} as {role}");
                    show_revised(&r);
                }
                Joined::Pending(_) => println!("request to join {id} as {role} is pending approval"),
            }
        }
        SubchainCmd::Requests { t, id, json } => {
            let v: Items<JoinRequest> = api(&t.ca, Some(&t.me))?
                .get_as(&format!("/api/v1/subchains/{id}/requests"), &[])
                .await?;
            output::print(
                &v.items,
                json,
                |items| {
                    let mut t = output::Table::new(&["IDENTITY", "ROLE", "ASKED", "NOTE"]);
                    for r in items {
                        t.row(vec![
                            r.identity.clone(),
                            r.role.name().to_string(),
                            output::unix(r.requested_at),
                            r.note.clone(),
                        ]);
                    }
                    t
                },
                "no pending join requests",
            )?;
        }
        SubchainCmd::Approve { t, id, member, role } => {
            if let Some(r) = &role {
                role_ok(r)?;
            }
            let v: Revised = api(&t.ca, Some(&t.me))?
                .post_as(
                    &format!("/api/v1/subchains/{id}/requests/{member}/approve"),
                    &Approve { role },
                )
                .await?;
            show_revised(&v);
        }
        SubchainCmd::Reject { t, id, member } => {
            api(&t.ca, Some(&t.me))?
                .post(&format!("/api/v1/subchains/{id}/requests/{member}/reject"), &json!({}))
                .await?;
            println!("request of {member} to join {id} rejected");
        }
        SubchainCmd::Statement {
            t,
            id,
            revision,
            membership_key,
        } => statement(&t, &id, revision, membership_key).await?,
        SubchainCmd::Usage {
            t,
            id,
            from,
            to,
            csv,
            json,
        } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            q.extend(from.map(|v| ("from", v.to_string())));
            q.extend(to.map(|v| ("to", v.to_string())));
            let v: bsn_api::ca::SubchainUsage = api(&t.ca, Some(&t.me))?
                .get_as(&format!("/api/v1/subchains/{id}/usage"), &q)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).map_err(local)?);
            } else if csv {
                println!("hour,node,transactions,bytes_written,bytes_stored,bytes_served,refused");
                for r in &v.rows {
                    println!(
                        "{},{},{},{},{},{},{}",
                        r.hour, r.node, r.transactions, r.bytes_written, r.bytes_stored, r.bytes_served, r.refused
                    );
                }
            } else {
                print!("{}", usage_table(&v));
            }
        }
    }
    Ok(())
}

/// The identity id in a certificate file.
fn identity_of(me: &IdentityArgs) -> Result<String, Failure> {
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::pem_file_iter(&me.cert)
        .map_err(|e| local(format!("reading {}: {e}", me.cert.display())))?
        .next()
        .ok_or_else(|| local(format!("{} holds no certificate", me.cert.display())))?
        .map_err(|e| local(format!("reading {}: {e}", me.cert.display())))?;
    let leaf = identity::profile::check_leaf(&cert).map_err(local)?;
    Ok(leaf.spiffe_id.id.to_string())
}

/// `bsn memberships`: your subchains and roles.
pub(crate) async fn memberships(t: Target, json: bool) -> Result<(), Failure> {
    let v: Items<MyMembership> = api(&t.ca, Some(&t.me))?.get_as("/api/v1/memberships", &[]).await?;
    output::print(
        &v.items,
        json,
        |items| {
            let mut t = output::Table::new(&["SUBCHAIN", "ROLE"]);
            for m in items {
                t.row(vec![m.subchain.clone(), m.role.name().to_string()]);
            }
            t
        },
        "no memberships yet: see `bsn subchain list` and `bsn subchain join`",
    )
}

/// `bsn nodes`: the node directory, its signature checked with the CA's membership key.
pub(crate) async fn nodes(ca: &super::CaArgs, json: bool) -> Result<(), Failure> {
    let api = api(ca, None)?;
    let d: bsn_api::ca::Nodes = api.get_as("/api/v1/nodes", &[]).await?;
    let Some(signed) = &d.signed else {
        println!("no node has published its entry yet");
        return Ok(());
    };
    let key: bsn_api::ca::MembershipKey = api.get_as("/api/v1/membership-key", &[]).await?;
    let key = identity::membership::MembershipKey::from_base64(&key.key).map_err(local)?;
    let key = membership_keys(&api, key).await?;
    let verified = key.verify_directory(signed).map_err(|e| Failure {
        code: 6,
        message: format!("the CA's node directory does not verify: {e}"),
        hint: Some("alert the CA operator: the directory was altered or signed with another key"),
    })?;
    if verified.nodes != d.nodes || verified.revision != d.revision {
        return Err(Failure {
            code: 6,
            message: "the CA's node list differs from its signed directory".into(),
            hint: Some("alert the CA operator"),
        });
    }
    output::print(
        &verified.nodes,
        json,
        |items| {
            let mut t = output::Table::new(&["ID", "ROLE", "CITY", "URL", "OFFERS"]);
            for n in items {
                let offers = match &n.capacity {
                    None => "-".to_string(),
                    Some(c) => format!(
                        "{}, {} tx/s, {}{}",
                        c.tenancy.as_str(),
                        c.rate,
                        output::bytes(c.storage),
                        if n.draining { " (draining)" } else { "" }
                    ),
                };
                t.row(vec![
                    n.id.clone(),
                    n.role.as_str().to_string(),
                    n.city.clone(),
                    n.url.clone(),
                    offers,
                ]);
            }
            t
        },
        "no node has published its entry yet",
    )?;
    eprintln!("directory revision {} (signature verified)", verified.revision);
    Ok(())
}

/// `bsn feed`: a node reads the change feed from a cursor (once, or following it).
pub(crate) async fn feed(t: Target, cursor: u64, follow: bool) -> Result<(), Failure> {
    let api = api(&t.ca, Some(&t.me))?;
    let print = |e: &FeedEvent| match e {
        FeedEvent::Membership {
            seq,
            subchain,
            revision,
            ..
        } => println!("{seq}\tmembership\t{subchain}\trevision {revision}"),
        FeedEvent::Revocation {
            seq,
            identity,
            serial,
            reason,
            ..
        } => println!("{seq}\trevocation\t{identity}\t{serial}\t{reason}"),
        FeedEvent::Directory { seq, revision, .. } => println!("{seq}\tdirectory\trevision {revision}"),
        FeedEvent::Intermediate { seq, number, step, .. } => println!("{seq}\tintermediate\t{number}\t{step}"),
        FeedEvent::Root { seq, number, step, .. } => println!("{seq}\troot\t{number}\t{step}"),
        FeedEvent::Key { seq, number, .. } => println!("{seq}\tkey\tmembership {number}\thanded over"),
    };
    if !follow {
        let mut cursor = cursor;
        loop {
            let page: FeedPage = api.get_as("/api/v1/feed", &[("cursor", cursor.to_string())]).await?;
            page.events.iter().for_each(print);
            cursor = u64::try_from(page.cursor).unwrap_or(cursor);
            if !page.more {
                eprintln!("cursor {cursor}");
                return Ok(());
            }
        }
    }
    let mut stream = api
        .events("/api/v1/feed/stream", &[("cursor", cursor.to_string())])
        .await?;
    while let Some(ev) = stream.next().await? {
        if ev.event == "heartbeat" {
            continue;
        }
        let e: FeedEvent = serde_json::from_str(&ev.data).map_err(local)?;
        print(&e);
    }
    Err(Failure {
        code: 5,
        message: "the CA closed the feed stream".into(),
        hint: Some("run again with --cursor set to the last seq printed"),
    })
}

/// `bsn subchain statement`: a signed membership statement, verified with the membership key.
async fn statement(
    t: &Target,
    id: &str,
    revision: Option<u64>,
    membership_key: Option<PathBuf>,
) -> Result<(), Failure> {
    let api = api(&t.ca, Some(&t.me))?;
    let key_text = match membership_key {
        Some(f) => std::fs::read_to_string(&f).map_err(|e| local(format!("reading {}: {e}", f.display())))?,
        None => api.get_as::<MembershipKey>("/api/v1/membership-key", &[]).await?.key,
    };
    let key = identity::membership::MembershipKey::from_base64(&key_text).map_err(local)?;
    let key = membership_keys(&api, key).await?;
    let path = match revision {
        Some(r) => format!("/api/v1/subchains/{id}/statements/{r}"),
        None => format!("/api/v1/subchains/{id}/statement"),
    };
    let env: identity::membership::Envelope = api.get_as(&path, &[]).await?;
    let statement = key.verify_statement(&env).map_err(|e| Failure {
        code: 6,
        message: e.to_string(),
        hint: Some("the statement does not verify: do not act on it, and alert the CA operator"),
    })?;
    println!("{}", serde_json::to_string_pretty(&statement).map_err(local)?);
    eprintln!(
        "signature verified with the CA's membership key{} (now {})",
        if key.keys().len() > 1 {
            ", following its handovers from the one given"
        } else {
            ""
        },
        key.current().to_base64()
    );
    Ok(())
}

/// The membership keys linked to `pinned` by the handovers the CA lists (each signed by both of
/// its keys, so the CA's word is not needed for them): a statement signed before or after a
/// handover verifies.
async fn membership_keys(
    api: &bsn_api::client::Api,
    pinned: identity::membership::MembershipKey,
) -> Result<identity::membership::MembershipKeys, Failure> {
    let list: Items<bsn_api::ca::SigningKey> = api.get_as("/api/v1/keys/membership", &[]).await?;
    let handovers: Vec<_> = list.items.into_iter().filter_map(|k| k.handover).collect();
    identity::membership::MembershipKeys::following(pinned, &handovers).map_err(|e| Failure {
        code: 6,
        message: format!("the CA's membership key handovers do not verify: {e}"),
        hint: Some("alert the CA operator: a handover was altered"),
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn when(unix: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// `bsn subchain show`: what a person needs to know about a subchain, where to connect first.
/// `--from`/`--to`: RFC 3339 or Unix seconds.
fn when_arg(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("'{s}' is not RFC 3339 (2026-12-07T10:00:00Z) or Unix seconds"))
}

fn usage_table(v: &bsn_api::ca::SubchainUsage) -> String {
    let mut t = output::Table::new(&["HOUR", "NODE", "TX", "WRITTEN", "STORED", "SERVED", "REFUSED"]);
    for r in &v.rows {
        t.row(vec![
            output::unix(r.hour),
            r.node.clone(),
            r.transactions.to_string(),
            output::bytes(r.bytes_written),
            output::bytes(r.bytes_stored),
            output::bytes(r.bytes_served),
            r.refused.to_string(),
        ]);
    }
    let mut out = t.render("no usage reported in this period");
    let tot = &v.totals;
    out.push_str(&format!(
        "{} to {}: {} transactions ({} written), {} served, {} refused by quota, {} stored",
        output::unix(v.from),
        output::unix(v.to),
        tot.transactions,
        output::bytes(tot.bytes_written),
        output::bytes(tot.bytes_served),
        tot.refused,
        output::bytes(tot.bytes_stored)
    ));
    if let Some(p) = &v.plan {
        out.push_str(&format!("; plan {}: {}", p.name, plan_figures(p)));
    }
    out.push('\n');
    out
}

fn show(v: &Subchain) -> String {
    let mut out = format!("{} ({})\n", v.name, v.id);
    if !v.description.is_empty() {
        out.push_str(&format!("  {}\n", v.description));
    }
    let row = |out: &mut String, k: &str, val: &str| out.push_str(&format!("{k:<12}{val}\n"));
    row(&mut out, "publisher", &v.publisher);
    row(&mut out, "policy", &v.policy);
    row(&mut out, "members", &v.members.to_string());
    row(
        &mut out,
        "revision",
        &format!("{} (changed {})", v.revision, when(v.updated_at)),
    );
    row(&mut out, "created", &when(v.created_at));
    row(
        &mut out,
        "plan",
        &v.plan.as_ref().map_or("none (no quotas)".to_string(), |p| {
            format!("{}: {}", p.name, plan_figures(p))
        }),
    );
    row(
        &mut out,
        "ordered by",
        &if v.orderers.is_empty() {
            "its city nodes (no ordering cluster)".to_string()
        } else {
            v.orderers.join(", ")
        },
    );
    for (i, n) in v.nodes.iter().enumerate() {
        let at = v
            .endpoints
            .iter()
            .find(|e| &e.id == n)
            .map_or("(has not published its URL yet)".to_string(), |e| {
                format!("{:<10} {}", e.city, e.url)
            });
        row(
            &mut out,
            if i == 0 { "served by" } else { "" },
            &format!("{n:<12} {at}"),
        );
    }
    out
}
