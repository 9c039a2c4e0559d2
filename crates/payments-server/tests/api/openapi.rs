//! `docs/openapi.yaml`, read with a YAML parser: it documents exactly the server's routes, its
//! schemas use only schema keywords (a comma inside a flow mapping's unquoted description
//! splits it into a stray key), and what `/api/v1/retry-config` answers is what it documents.

use std::collections::BTreeSet;

use payments_server::paths::ROUTES;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::Api;

fn spec() -> Yaml {
    let text = include_str!("../../../../docs/openapi.yaml");
    let mut documents = YamlLoader::load_from_str(text).expect("docs/openapi.yaml is YAML");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn keys(yaml: &Yaml) -> Vec<String> {
    yaml.as_hash()
        .map(|hash| {
            hash.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn openapi_documents_exactly_the_routes() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let mut documented = Vec::new();
    for path in keys(&spec["paths"]) {
        for method in keys(&spec["paths"][path.as_str()]) {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<_> = ROUTES
        .iter()
        .map(|(method, template)| (method.as_str().to_owned(), (*template).to_owned()))
        .collect();
    routed.sort();
    documented.sort();
    assert_eq!(routed, documented);
}

/// The keywords an OpenAPI 3.1 schema object may hold (the ones this document could use).
const SCHEMA_KEYWORDS: [&str; 26] = [
    "type",
    "description",
    "enum",
    "items",
    "example",
    "examples",
    "pattern",
    "format",
    "$ref",
    "required",
    "properties",
    "additionalProperties",
    "minimum",
    "maximum",
    "allOf",
    "oneOf",
    "anyOf",
    "default",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "readOnly",
    "const",
];

/// Every schema under `yaml`, checked with its subschemas; `at` says where, for the message.
fn check_schema(yaml: &Yaml, at: &str, stray: &mut Vec<String>) {
    let Some(hash) = yaml.as_hash() else {
        return;
    };
    for (key, value) in hash {
        let key = key.as_str().unwrap_or("(not a string)");
        if !SCHEMA_KEYWORDS.contains(&key) {
            stray.push(format!("{at}: {key:?}"));
        }
        match key {
            "properties" => {
                for name in keys(value) {
                    check_schema(&value[name.as_str()], &format!("{at}.{name}"), stray);
                }
            }
            "items" | "additionalProperties" => check_schema(value, &format!("{at}[]"), stray),
            "allOf" | "oneOf" | "anyOf" => {
                for (i, part) in value.as_vec().into_iter().flatten().enumerate() {
                    check_schema(part, &format!("{at}/{key}/{i}"), stray);
                }
            }
            _ => {}
        }
    }
}

/// Every `schema:` anywhere in the document (request bodies, responses, parameters).
fn find_schemas(yaml: &Yaml, at: &str, stray: &mut Vec<String>) {
    match yaml {
        Yaml::Hash(hash) => {
            for (key, value) in hash {
                let key = key.as_str().unwrap_or_default();
                let here = format!("{at}/{key}");
                if key == "schema" {
                    check_schema(value, &here, stray);
                } else {
                    find_schemas(value, &here, stray);
                }
            }
        }
        Yaml::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_schemas(item, &format!("{at}/{i}"), stray);
            }
        }
        _ => {}
    }
}

#[test]
fn schemas_hold_only_schema_keywords() {
    let spec = spec();
    let mut stray = Vec::new();
    for name in keys(&spec["components"]["schemas"]) {
        check_schema(
            &spec["components"]["schemas"][name.as_str()],
            &name,
            &mut stray,
        );
    }
    find_schemas(&spec["paths"], "paths", &mut stray);
    find_schemas(&spec["components"]["responses"], "responses", &mut stray);
    assert!(stray.is_empty(), "not schema keywords: {stray:#?}");
}

#[tokio::test]
async fn retry_config_answers_what_it_documents() {
    let spec = spec();
    let schema = &spec["paths"]["/api/v1/retry-config"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    let documented: BTreeSet<String> = keys(&schema["properties"]).into_iter().collect();
    let api = Api::memory(crate::CONFIG);
    let answer = api.get("/api/v1/retry-config", None).await;
    answer.expect(200);
    let answered: BTreeSet<String> = answer
        .json()
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(documented, answered);
    let required: BTreeSet<String> = schema["required"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(required, answered, "every field is always there");
}

/// `schema`, with a `$ref` to `#/components/schemas/…` followed.
fn resolve<'a>(spec: &'a Yaml, schema: &'a Yaml) -> &'a Yaml {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default();
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// What of `value` disagrees with `schema`: types, required and undocumented members, enums,
/// array items, `allOf` parts. (The subset of JSON Schema this document uses.)
fn mismatches(spec: &Yaml, schema: &Yaml, value: &serde_json::Value, at: &str) -> Vec<String> {
    let schema = resolve(spec, schema);
    let mut found = Vec::new();
    for part in schema["allOf"].as_vec().into_iter().flatten() {
        found.extend(mismatches(spec, part, value, at));
    }
    let types: Vec<&str> = match &schema["type"] {
        Yaml::String(one) => vec![one.as_str()],
        Yaml::Array(many) => many.iter().filter_map(Yaml::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = json_type(value);
    let documented_type = types.is_empty()
        || types.contains(&actual)
        || (actual == "integer" && types.contains(&"number"));
    if !documented_type {
        found.push(format!("{at}: {actual}, documented {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_vec() {
        let allowed: Vec<&str> = allowed.iter().filter_map(Yaml::as_str).collect();
        if value.as_str().is_some_and(|v| !allowed.contains(&v)) {
            found.push(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let serde_json::Value::Object(members) = value {
        for required in schema["required"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
        {
            if !members.contains_key(required) {
                found.push(format!("{at}: `{required}` missing"));
            }
        }
        let documented = keys(&schema["properties"]);
        let open = schema["additionalProperties"].as_bool() != Some(false)
            && !schema["additionalProperties"].is_badvalue();
        for (name, member) in members {
            let property = &schema["properties"][name.as_str()];
            if !property.is_badvalue() {
                found.extend(mismatches(spec, property, member, &format!("{at}.{name}")));
            } else if !documented.is_empty() && !open && schema["allOf"].is_badvalue() {
                found.push(format!("{at}: `{name}` is not documented"));
            }
        }
    }
    if let serde_json::Value::Array(items) = value {
        for (i, item) in items.iter().enumerate() {
            found.extend(mismatches(
                spec,
                &schema["items"],
                item,
                &format!("{at}[{i}]"),
            ));
        }
    }
    found
}

/// The documented schema of `method path`'s `status` answer.
fn response_schema<'a>(spec: &'a Yaml, method: &str, path: &str, status: &str) -> &'a Yaml {
    let response = &spec["paths"][path][method]["responses"][status];
    let response = match response["$ref"].as_str() {
        Some(reference) => {
            &spec["components"]["responses"][reference.rsplit('/').next().unwrap_or_default()]
        }
        None => response,
    };
    let content = &response["content"];
    let media = keys(content).into_iter().next().expect("a documented body");
    &content[media.as_str()]["schema"]
}

#[tokio::test]
async fn answers_match_their_documented_schemas() {
    let spec = spec();
    let api = Api::memory(crate::CONFIG);
    let key = crate::support::unique("order");
    let paid = api
        .pay(
            crate::support::ALICE,
            &key,
            &crate::support::payment("12.50", "card"),
        )
        .await;
    paid.expect(201);
    let id = paid.json()["transaction_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let invalid = api
        .pay(
            crate::support::ALICE,
            &crate::support::unique("order"),
            r#"{"amount": "-1"}"#,
        )
        .await;
    let alice = Some(crate::support::ALICE);
    let answers = [
        ("post", "/api/v1/payments", "201", paid),
        (
            "get",
            "/api/v1/payments/{transaction_id}",
            "200",
            api.get(&format!("/api/v1/payments/{id}"), alice).await,
        ),
        ("post", "/api/v1/payments", "422", invalid),
        (
            "get",
            "/api/v1/rate-limits",
            "200",
            api.get("/api/v1/rate-limits", alice).await,
        ),
        (
            "get",
            "/api/v1/audit-logs",
            "200",
            api.get("/api/v1/audit-logs", alice).await,
        ),
        (
            "get",
            "/api/v1/retry-config",
            "200",
            api.get("/api/v1/retry-config", None).await,
        ),
        ("get", "/health", "200", api.get("/health", None).await),
        ("get", "/ready", "200", api.get("/ready", None).await),
        (
            "get",
            "/api/v1/payments/{transaction_id}",
            "404",
            api.get("/api/v1/payments/txn_none", alice).await,
        ),
    ];
    let mut found = Vec::new();
    for (method, path, status, answer) in answers {
        assert_eq!(
            answer.status.to_string(),
            status,
            "{method} {path}: {answer:?}"
        );
        let schema = response_schema(&spec, method, path, status);
        found.extend(mismatches(
            &spec,
            schema,
            &answer.json(),
            &format!("{method} {path} {status}"),
        ));
    }
    assert!(
        found.is_empty(),
        "answers differ from docs/openapi.yaml: {found:#?}"
    );
}
