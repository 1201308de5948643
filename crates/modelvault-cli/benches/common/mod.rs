//! What the HTTP benches share: a server in the bench's process and an
//! API token. Each bench uses what it needs.

#![allow(dead_code)]

use modelvault_server::AppState;

/// Serves `state` on a loopback port in this process; its base URL.
pub async fn start(state: AppState) -> String {
    let listener = modelvault_server::bind("127.0.0.1:0", false).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(modelvault_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// An API token of `role` in namespace `bench`, made by `admin`.
pub async fn create_token(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    name: &str,
    role: &str,
) -> String {
    let tok: serde_json::Value = http
        .post(format!("{url}/v1/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": name, "roles": [role], "namespaces": ["bench"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tok["token"].as_str().unwrap().to_string()
}
