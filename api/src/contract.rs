//! The schemas of the OpenAPI documents, generated from this crate's request and response
//! types, so that a field cannot drift between the servers, their clients and the documents.
//!
//! Each server's document (`ca-server/src/api/openapi.json`, `ledger-node/src/openapi.json`)
//! refers to its bodies as `#/components/schemas/<Type>`. A unit test in each server checks
//! that every schema the types generate sits in the document unchanged and that every JSON body
//! in the document's paths is such a reference; `BSN_BLESS_OPENAPI=1 cargo test` rewrites the
//! documents' generated schemas after a type changed.

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

/// Collects the schemas of request types (what a server accepts) and response types (what it
/// sends), each generated for its direction.
pub struct Schemas {
    requests: SchemaGenerator,
    responses: SchemaGenerator,
}

impl Default for Schemas {
    fn default() -> Self {
        let settings = |s: SchemaSettings| {
            s.with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
        };
        Self {
            requests: settings(SchemaSettings::draft2020_12().for_deserialize()).into_generator(),
            responses: settings(SchemaSettings::draft2020_12().for_serialize()).into_generator(),
        }
    }
}

impl Schemas {
    /// Adds a type a server accepts (a body or a query string).
    pub fn request<T: JsonSchema>(mut self) -> Self {
        let _ = self.requests.subschema_for::<T>();
        self
    }

    /// Adds a type a server sends.
    pub fn response<T: JsonSchema>(mut self) -> Self {
        let _ = self.responses.subschema_for::<T>();
        self
    }

    /// Every schema by name. A type used in both directions must have one schema for both.
    ///
    /// # Panics
    /// When a name has two different schemas (a type whose request and response forms differ
    /// must be split into two types).
    pub fn into_components(mut self) -> Map<String, Value> {
        let mut all = self.requests.take_definitions(true);
        for (name, schema) in self.responses.take_definitions(true) {
            match all.get(&name) {
                Some(other) if *other != schema => {
                    panic!("{name} has one schema as a request and another as a response; split it")
                }
                _ => {
                    all.insert(name, schema);
                }
            }
        }
        all
    }
}

/// The schemas of the ledger node's gateway.
pub fn node() -> Map<String, Value> {
    use crate::node::*;
    Schemas::default()
        .request::<SubmitRequest>()
        .request::<RangeQuery>()
        .request::<BlocksQuery>()
        .request::<TipsQuery>()
        .response::<HostedSubchains>()
        .response::<SubchainInfo>()
        .response::<Committed>()
        .response::<TxProof>()
        .response::<StateValue>()
        .response::<StatePage>()
        .response::<BlockView>()
        .response::<BlockPage>()
        .response::<RawBlocks>()
        .response::<Tips>()
        .response::<identity::membership::Envelope>()
        .into_components()
}

/// The schemas of the CA's API.
pub fn ca() -> Map<String, Value> {
    use crate::ca::*;
    use identity::membership::{Envelope, Member};
    Schemas::default()
        .request::<EnrollRequest>()
        .request::<RenewRequest>()
        .request::<RegisterRequest>()
        .request::<SecretRequest>()
        .request::<RevokeRequest>()
        .request::<CreateSubchain>()
        .request::<UpdateSubchain>()
        .request::<AddMembers>()
        .request::<SetRole>()
        .request::<JoinRequestBody>()
        .request::<Approve>()
        .request::<PortalRegister>()
        .request::<Login>()
        .request::<PortalEnroll>()
        .request::<InviteRequest>()
        .request::<OwnEntry>()
        .request::<AdoptIntermediate>()
        .request::<ActivateIntermediate>()
        .request::<AddRoot>()
        .request::<InstallRootCrl>()
        .request::<FeedAck>()
        .request::<PlanOffer>()
        .request::<identity::usage::SignedUsage>()
        .response::<Issued>()
        .response::<Plans>()
        .response::<Drained>()
        .response::<UsageAccepted>()
        .response::<SubchainUsage>()
        .response::<Registered>()
        .response::<Identity>()
        .response::<Page<Identity>>()
        .response::<NewSecret>()
        .response::<Certificate>()
        .response::<Page<Certificate>>()
        .response::<Revoked>()
        .response::<InclusionProof>()
        .response::<ConsistencyProof>()
        .response::<LogEntries>()
        .response::<Subchain>()
        .response::<Page<Subchain>>()
        .response::<Updated>()
        .response::<Revised>()
        .response::<Page<Member>>()
        .response::<Joined>()
        .response::<Items<JoinRequest>>()
        .response::<Items<MyMembership>>()
        .response::<MembershipKey>()
        .response::<Nodes>()
        .response::<Intermediate>()
        .response::<Items<Intermediate>>()
        .response::<Root>()
        .response::<Items<Root>>()
        .response::<SigningKey>()
        .response::<Items<SigningKey>>()
        .response::<Envelope>()
        .response::<FeedPage>()
        .response::<SpiffeBundle>()
        .response::<Account>()
        .response::<Items<Account>>()
        .response::<AccountDecision>()
        .response::<SignedIn>()
        .response::<Me>()
        .response::<Challenge>()
        .response::<MyCertificates>()
        .response::<Invitation>()
        .into_components()
}

/// Checks an OpenAPI document against generated `schemas`: each generated schema is in
/// `components.schemas` unchanged, and every JSON request or response body in `paths` is a
/// `$ref` to a schema of `components.schemas`. Returns what is wrong, one line each.
pub fn check(doc: &Value, schemas: &Map<String, Value>) -> Vec<String> {
    let mut wrong = Vec::new();
    let empty = Map::new();
    let components = doc["components"]["schemas"].as_object().unwrap_or(&empty);
    for (name, schema) in schemas {
        match components.get(name) {
            None => wrong.push(format!("components.schemas.{name} is missing")),
            Some(s) if s != schema => wrong.push(format!("components.schemas.{name} differs from the type's schema")),
            Some(_) => {}
        }
    }
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap_or(&empty) {
            let mut bodies = vec![("request", &op["requestBody"])];
            if let Some(r) = op["responses"].as_object() {
                bodies.extend(r.values().map(|v| ("response", v)));
            }
            for (what, body) in bodies {
                let Some(schema) = body["content"]["application/json"].get("schema") else {
                    continue;
                };
                let target = schema["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"));
                match target {
                    Some(name) if components.contains_key(name) => {}
                    _ => wrong.push(format!(
                        "{} {path}: the JSON {what} body is not a reference to a type's schema",
                        method.to_uppercase()
                    )),
                }
            }
        }
    }
    wrong
}

/// The paths an axum router's source declares (each `.route("...")`, the literal on the same
/// line or, after rustfmt, the next), in OpenAPI form: axum's catch-all `{*name}` is `{name}`.
/// Sorted, for comparing with [`documented_paths`] in a server's test.
pub fn routed_paths(src: &str) -> Vec<String> {
    let mut paths: Vec<String> = src
        .match_indices(".route(")
        .filter_map(|(i, _)| {
            let rest = src[i + 7..].trim_start().strip_prefix('"')?;
            Some(rest.split('"').next()?.replace("{*", "{"))
        })
        .collect();
    paths.sort();
    paths
}

/// The paths an OpenAPI document declares, sorted.
pub fn documented_paths(doc: &Value) -> Vec<String> {
    let mut paths: Vec<String> = doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// The problem slugs the document's `Problem` schema lists (`urn:bsn:problem:<slug>`), sorted.
pub fn documented_problem_types(doc: &Value) -> Vec<String> {
    let mut slugs: Vec<String> = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|v| v.trim_start_matches("urn:bsn:problem:").to_string())
                .collect()
        })
        .unwrap_or_default();
    slugs.sort();
    slugs
}

/// Writes `schemas` into the document at `path` (replacing the schemas of those names, keeping
/// the others), for `BSN_BLESS_OPENAPI=1`.
pub fn bless(path: &std::path::Path, schemas: &Map<String, Value>) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut doc: Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
    let components = doc["components"]["schemas"]
        .as_object_mut()
        .ok_or_else(|| std::io::Error::other("the document has no components.schemas"))?;
    for (name, schema) in schemas {
        components.insert(name.clone(), schema.clone());
    }
    let mut out = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    out.push('\n');
    crate::files::write_file(path, out.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_as_openapi_paths() {
        let src = r#"Router::new().route("/a/{id}", get(a))
            .route(
                "/b/{*key}",
                get(b),
            )"#;
        assert_eq!(routed_paths(src), vec!["/a/{id}", "/b/{key}"]);
    }

    #[test]
    fn drift_and_inline_bodies_are_reported() {
        let schemas = Schemas::default()
            .response::<crate::node::RawBlocks>()
            .into_components();
        let mut doc = serde_json::json!({
            "paths": {"/x": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}}}},
            "components": {"schemas": {}}
        });
        let wrong = check(&doc, &schemas);
        assert!(wrong.iter().any(|w| w.contains("RawBlocks is missing")), "{wrong:?}");
        assert!(wrong.iter().any(|w| w.contains("GET /x")), "{wrong:?}");
        doc["components"]["schemas"]["RawBlocks"] = schemas["RawBlocks"].clone();
        doc["paths"]["/x"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] =
            serde_json::json!({"$ref": "#/components/schemas/RawBlocks"});
        assert!(check(&doc, &schemas).is_empty());
        doc["components"]["schemas"]["RawBlocks"]["required"] = serde_json::json!([]);
        assert_eq!(
            check(&doc, &schemas),
            vec!["components.schemas.RawBlocks differs from the type's schema"]
        );
    }
}
