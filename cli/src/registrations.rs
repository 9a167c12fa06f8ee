//! `bsn registrations ...` and `bsn invite`: the portal's pending registrations and invitation
//! codes, for administrators (and registrars, for invitations) who work from a terminal.

use bsn_api::ca::{Account, AccountDecision, Invitation, InviteRequest, Items};
use clap::Subcommand;
use serde_json::json;

use super::{CaArgs, Failure, IdentityArgs, api, output};

#[derive(Subcommand)]
pub(crate) enum RegistrationsCmd {
    /// Portal registrations (default: those waiting for a decision).
    List {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// pending, approved or rejected.
        #[arg(long, default_value = "pending", value_parser = ["pending", "approved", "rejected"])]
        state: String,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Approve a registration: the account may sign in and enroll as that identity.
    Approve {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The registration's id (its identity id).
        id: String,
    },
    /// Reject a registration.
    Reject {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The registration's id (its identity id).
        id: String,
    },
}

pub(crate) async fn run(cmd: RegistrationsCmd) -> Result<(), Failure> {
    match cmd {
        RegistrationsCmd::List { ca, me, state, json } => {
            let v: Items<Account> = api(&ca, Some(&me))?
                .get_as("/api/v1/accounts", &[("state", state.clone())])
                .await?;
            output::print(
                &v.items,
                json,
                |items| {
                    let mut t = output::Table::new(&["ID", "NAME", "EMAIL", "ORGANISATION", "REGISTERED"]);
                    for a in items {
                        t.row(vec![
                            a.id.clone(),
                            a.name.clone(),
                            a.email.clone(),
                            a.organisation.clone(),
                            output::time(&a.created_at),
                        ]);
                    }
                    t
                },
                &format!("no {state} registrations"),
            )?;
        }
        RegistrationsCmd::Approve { ca, me, id } => decide(&ca, &me, &id, "approve").await?,
        RegistrationsCmd::Reject { ca, me, id } => decide(&ca, &me, &id, "reject").await?,
    }
    Ok(())
}

async fn decide(ca: &CaArgs, me: &IdentityArgs, id: &str, action: &str) -> Result<(), Failure> {
    let v: AccountDecision = api(ca, Some(me))?
        .post_as(&format!("/api/v1/accounts/{id}/{action}"), &json!({}))
        .await?;
    match v.state.as_str() {
        "approved" => println!("{} approved: it can sign in to the portal and enroll", v.id),
        s => println!("{} is now {s}", v.id),
    }
    Ok(())
}

/// `bsn invite`: an invitation code for the portal's Register page.
pub(crate) async fn invite(ca: &CaArgs, me: &IdentityArgs, uses: i64, valid_for: i64) -> Result<(), Failure> {
    let v: Invitation = api(ca, Some(me))?
        .post_as(
            "/api/v1/invitations",
            &InviteRequest {
                ttl_seconds: valid_for,
                uses,
            },
        )
        .await?;
    println!("invitation code: {}", v.code);
    println!(
        "(admits {} registration(s) until {}; it is shown only now)",
        v.uses,
        output::time(&v.expires_at)
    );
    println!(
        "whoever registers with it on {}/register is approved at once",
        ca.ca.trim_end_matches('/')
    );
    Ok(())
}

/// A lifetime such as `7d`, `12h`, `30m` or `3600` (seconds).
pub(crate) fn duration(s: &str) -> Result<i64, String> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a lifetime: use a number with s, m, h or d, such as 7d"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    match n.checked_mul(unit) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} must be a positive lifetime")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lifetimes_parse_with_units() {
        assert_eq!(super::duration("7d"), Ok(604_800));
        assert_eq!(super::duration("90"), Ok(90));
        assert_eq!(super::duration("2h"), Ok(7_200));
        assert!(super::duration("0d").is_err());
        assert!(super::duration("7w").is_err());
        assert!(super::duration("d").is_err());
    }
}
