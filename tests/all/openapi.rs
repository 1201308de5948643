//! `GET /v1/openapi.json`: served without a token, OpenAPI 3.1, and in step
//! with the router: every `/v1` route and method the router serves is
//! documented, and every documented one is served. The route templates come
//! from the real router (built in-process over the app's data directory),
//! the methods from asking the running server: a method the router does not
//! route answers 405.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::*;

/// Methods an API route may have (HEAD comes with GET; OPTIONS is unused).
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The `/v1` route templates of the router `modelvault serve` runs, read
/// from the router itself (its `Debug` form lists every registered path).
fn router_v1_paths(app: &TestApp) -> BTreeSet<String> {
    let config =
        modelvault_server::Config::load(&app.data_dir().join("modelvault.toml")).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = rt.block_on(config.keys.open_provider()).expect("keys");
    let store = modelvault_storage::Store::open(&config.store.url, keys).expect("store");
    let _guard = rt.enter();
    let state = modelvault_server::AppState::from_parts(store, config, None).expect("state");
    let router = modelvault_server::router(state);
    let debug = format!("{router:?}");
    let paths: BTreeSet<String> = debug
        .split('"')
        .filter(|s| s.starts_with("/v1/"))
        .map(str::to_string)
        .collect();
    // The Debug form is not a stable API: fail loudly if it stops listing
    // paths rather than pass on an empty set.
    for known in ["/v1/models", "/v1/whoami", "/v1/openapi.json"] {
        assert!(
            paths.contains(known),
            "route {known} not found in the router's Debug form; found {paths:?}"
        );
    }
    paths
}

/// An axum route template as an OpenAPI path (`{*path}` → `{path}`).
fn openapi_path(route: &str) -> String {
    route.replace("{*", "{")
}

/// A concrete URL path for a template.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{ns}" => "probe-ns",
            "{name}" => "probe-name",
            "{version}" => "1",
            "{environment}" => "dev",
            "{id}" => "0190b4a4-0000-7000-8000-000000000000",
            "{path}" | "{*path}" => "dir/file.bin",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the running server routes `method` on `template` (no token: the
/// router answers an unrouted method with 405 and an unknown path with the
/// fallback's 404 before any handler or authentication runs).
fn routed(app: &TestApp, method: &str, template: &str) -> bool {
    let url = format!("{}{}", app.url, concrete(template));
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = app.http().request(m, url).send().unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap_or(Value::Null);
    if status == 405 {
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        return false;
    }
    // A documented route that is not routed at all.
    !(status == 404 && body["error"]["message"] == "no such route")
}

#[test]
fn openapi_document_is_served_and_covers_every_v1_route() {
    let app = TestApp::start();
    let resp = app.get(None, "/v1/openapi.json");
    assert_eq!(resp.status().as_u16(), 200, "the document needs no token");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let doc: Value = resp.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc,
        serde_json::to_value(modelvault_server::api::openapi()).unwrap(),
        "the served document is the library's"
    );

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| METHODS.contains(&k.to_uppercase().as_str()))
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();

    // Every route and method the router serves under /v1 is documented.
    let mut served = BTreeSet::new();
    for route in router_v1_paths(&app) {
        for method in METHODS {
            if routed(&app, method, &route) {
                served.insert((openapi_path(&route), method.to_string()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes served but missing from /v1/openapi.json: {undocumented:?}"
    );
    // Every documented operation is served.
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "operations documented but not routed: {unserved:?}"
    );
    assert!(served.len() >= 39, "only {} operations found", served.len());

    // The error body, and every operation's answers: a success and errors
    // that carry it.
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]), "{error}");
    let detail = &doc["components"]["schemas"]["ErrorDetail"];
    for field in ["code", "message"] {
        assert!(
            detail["required"]
                .as_array()
                .is_some_and(|r| r.contains(&Value::from(field))),
            "ErrorDetail lacks required {field}: {detail}"
        );
    }
    for (path, method) in &documented {
        let op = &doc["paths"][path][method.to_lowercase()];
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        for (status, r) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        let public = op["security"] == serde_json::json!([{}]);
        assert_eq!(
            public,
            [
                "/v1/openapi.json",
                "/v1/auth/config",
                "/v1/audit/public-key"
            ]
            .contains(&path.as_str()),
            "{method} {path}: only the public routes need no token"
        );
        if !public {
            assert!(responses.contains_key("401"), "{method} {path}");
        }
    }

    // An actual error answer has the documented shape.
    let (status, code, body) = error_code(app.get(None, "/v1/whoami"));
    assert_eq!((status, code.as_str()), (401, "unauthenticated"), "{body}");
    assert!(body["error"]["message"].is_string());
}
