//! Tenant isolation as a matrix: every route of the OpenAPI document and every MCP
//! method, with another tenant's read, operate and admin tokens, against the host of
//! tenant `clinic-a` (which owns it) and its incidents and escalations. Scope is checked
//! first (403 says nothing about the host); then anything about the host or its records
//! is 404, exactly like something that does not exist, and nothing changes for the
//! owner. And: the token that asked for an action cannot approve it.

use crate::mcp::{call, initialize, mcp, modern};
use crate::{Api, HOST, Resp};
use reqwest::Method;
use runwarden_api::ApiConfig;
use runwarden_control::Scope;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// What another tenant's token gets once its scope suffices.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// 404 `not_found`.
    NotFound,
    /// 200 with exactly this list, empty.
    EmptyList(&'static str),
    /// 200, its own tenant's (empty) counters.
    OwnMetrics,
    /// 422 `wrong_tenant`: it named the owner's tenant, which is not its own.
    WrongTenant,
    /// 400 `bad_request`: the request is refused on its own, before anything is stored
    /// or recorded.
    BadRequest,
}

/// One request of the matrix.
struct Probe {
    /// The OpenAPI path and method it exercises.
    route: (&'static str, &'static str),
    /// What it does, for messages.
    label: String,
    method: Method,
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    needs: Scope,
    expect: Expect,
}

fn probe(
    route: (&'static str, &'static str),
    method: Method,
    path: String,
    needs: Scope,
    expect: Expect,
) -> Probe {
    Probe {
        route,
        label: format!("{method} {path}"),
        method,
        path,
        body: None,
        headers: Vec::new(),
        needs,
        expect,
    }
}

async fn send(api: &Api, token: &str, p: &Probe) -> Resp {
    let mut req = api
        .client()
        .request(p.method.clone(), format!("{}{}", api.base, p.path))
        .bearer_auth(token);
    if let Some(b) = &p.body {
        req = req
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(b.to_string());
    }
    for (k, v) in &p.headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// The (path, method) pairs of the OpenAPI document that need a token.
fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = runwarden_api::openapi_document();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str())
                || item[method]["security"] == json!([])
            {
                continue;
            }
            out.insert((path.clone(), method.clone()));
        }
    }
    out
}

/// What the owner has, to compare before and after.
async fn owner_view(api: &Api, a: &str, esc: &str) -> (Value, Value, u64, String) {
    let incidents = api.get("/v1/incidents", a).await.json();
    let escalation = api.get(&format!("/v1/escalations/{esc}"), a).await.json();
    let size = api.controller.evidence().size().await.unwrap();
    let metrics = String::from_utf8(api.get("/metrics", a).await.body).unwrap();
    (incidents, escalation, size, metrics)
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_act_on_the_host_on_any_route_or_mcp_method() {
    let mut api = Api::start(ApiConfig::default()).await;
    let a = api.secret.clone();
    // The owner's records: an open escalation (nothing fits the incident), its incident
    // and evidence, and an MCP session.
    let rec = api
        .post("/v1/incidents?wait=true", &a, &api.unplannable())
        .await
        .json();
    assert_eq!(rec["status"], "escalated", "{rec}");
    let incident = rec["id"].as_str().unwrap().to_string();
    let esc = rec["escalation"].as_str().unwrap().to_string();
    let evidence = rec["evidence"][0].as_u64().unwrap();
    let r = mcp(&api, Some(&a), None, &[], &initialize("2025-11-25")).await;
    assert_eq!(r.status, 200);
    let session = r.header("mcp-session-id").unwrap().to_string();
    // The owner's registry: a trust policy and one component published under it (by the
    // owner's admin).
    let owner_admin = api.token("clinic-a", Scope::Admin).await;
    let publisher = runwarden_evidence::SigningKey::generate("owner-publisher").unwrap();
    let (_, wasm) = runwarden_guests::standard_runbooks().next().unwrap();
    let rt_dir = tempfile::tempdir().unwrap();
    let rt = runwarden_runtime::Runtime::new(runwarden_runtime::RuntimeConfig {
        data_dir: rt_dir.path().to_path_buf(),
    })
    .unwrap();
    let loaded = rt.load(wasm).unwrap();
    let (name, version) = (
        loaded.manifest().name.clone(),
        loaded.manifest().version.clone(),
    );
    let owner_release = serde_json::from_str::<Value>(
        &runwarden_evidence::Release::of_runbook(loaded.manifest_json(), loaded.sha256())
            .sign(&publisher)
            .to_json(),
    )
    .unwrap();
    let r = api
        .send(
            Method::PUT,
            "/v1/trust",
            Some(&owner_admin),
            Some(
                json!({"publishers": [{"key": publisher.verifying_key().to_text(), "components": ["*"], "max_risk": "high"}]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    use base64::Engine as _;
    let r = api
        .post(
            "/v1/components",
            &owner_admin,
            &json!({
                "component": base64::engine::general_purpose::STANDARD.encode(wasm),
                "release": owner_release,
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        api.get("/v1/components", &a).await.json()["components"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // And deploys it to its hosts: a deployment the other tenant must not see.
    let r = api
        .post(
            "/v1/deployments",
            &owner_admin,
            &json!({"name": name, "version": version, "hosts": "*"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let deployment = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.get("/v1/deployments", &a).await.json()["deployments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let before = owner_view(&api, &a, &esc).await;
    assert_eq!(before.1["state"], "open");

    let modern_headers = |method: &str| {
        vec![
            ("mcp-protocol-version", "2026-07-28".to_string()),
            ("mcp-method", method.to_string()),
        ]
    };
    let dir = api.tmp.display().to_string();
    let mut probes = vec![
        probe(
            ("/metrics", "get"),
            Method::GET,
            "/metrics".into(),
            Scope::Read,
            Expect::OwnMetrics,
        ),
        probe(
            ("/v1/incidents", "get"),
            Method::GET,
            "/v1/incidents".into(),
            Scope::Read,
            Expect::EmptyList("incidents"),
        ),
        probe(
            ("/v1/incidents/{id}", "get"),
            Method::GET,
            format!("/v1/incidents/{incident}"),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/escalations", "get"),
            Method::GET,
            "/v1/escalations".into(),
            Scope::Read,
            Expect::EmptyList("escalations"),
        ),
        probe(
            ("/v1/escalations/{id}", "get"),
            Method::GET,
            format!("/v1/escalations/{esc}"),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/runbooks", "get"),
            Method::GET,
            "/v1/runbooks".into(),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/host", "get"),
            Method::GET,
            "/v1/host".into(),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/hosts", "get"),
            Method::GET,
            "/v1/hosts".into(),
            Scope::Read,
            Expect::EmptyList("hosts"),
        ),
        probe(
            ("/v1/hosts/{id}/{action}", "post"),
            Method::POST,
            format!("/v1/hosts/{HOST}/drain"),
            Scope::Operate,
            Expect::NotFound,
        ),
        probe(
            ("/v1/hosts/{id}/{action}", "post"),
            Method::POST,
            "/v1/hosts/no-such-host/undrain".into(),
            Scope::Operate,
            Expect::NotFound,
        ),
        probe(
            ("/v1/rules", "get"),
            Method::GET,
            "/v1/rules".into(),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/evidence/checkpoint", "get"),
            Method::GET,
            "/v1/evidence/checkpoint".into(),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/evidence/{index}", "get"),
            Method::GET,
            format!("/v1/evidence/{evidence}"),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/flywheel/candidates", "get"),
            Method::GET,
            "/v1/flywheel/candidates".into(),
            Scope::Read,
            Expect::NotFound,
        ),
        probe(
            ("/v1/flywheel/candidates/{id}/promote", "post"),
            Method::POST,
            "/v1/flywheel/candidates/fw-0123456789/promote".into(),
            Scope::Admin,
            Expect::NotFound,
        ),
        probe(
            ("/mcp", "get"),
            Method::GET,
            "/mcp".into(),
            Scope::Read,
            Expect::NotFound,
        ),
    ];
    // Submitting an incident for the owner's host, and with `wait`.
    for path in ["/v1/incidents", "/v1/incidents?wait=true"] {
        let mut p = probe(
            ("/v1/incidents", "post"),
            Method::POST,
            path.into(),
            Scope::Operate,
            Expect::NotFound,
        );
        p.body = Some(json!({
            "host": HOST, "type": "disk-full", "severity": "high",
            "labels": {"dir": dir}
        }));
        probes.push(p);
    }
    // The registry: the owner's policy and component are not seen; what clinic-b sends is
    // refused on its face, so the owner's view (and the log) stays as it was.
    probes.push(probe(
        ("/v1/trust", "get"),
        Method::GET,
        "/v1/trust".into(),
        Scope::Read,
        Expect::NotFound,
    ));
    probes.push(probe(
        ("/v1/components", "get"),
        Method::GET,
        "/v1/components".into(),
        Scope::Read,
        Expect::EmptyList("components"),
    ));
    probes.push(probe(
        ("/v1/deployments", "get"),
        Method::GET,
        "/v1/deployments".into(),
        Scope::Read,
        Expect::EmptyList("deployments"),
    ));
    probes.push(probe(
        ("/v1/deployments/{id}", "get"),
        Method::GET,
        format!("/v1/deployments/{deployment}"),
        Scope::Read,
        Expect::NotFound,
    ));
    // Deploying the owner's release to "every host": the other tenant has none of the
    // owner's hosts to choose (and no such release).
    let mut p = probe(
        ("/v1/deployments", "post"),
        Method::POST,
        "/v1/deployments".into(),
        Scope::Admin,
        Expect::NotFound,
    );
    p.body = Some(json!({"name": name, "version": version, "hosts": "*"}));
    probes.push(p);
    let mut p = probe(
        ("/v1/trust", "put"),
        Method::PUT,
        "/v1/trust".into(),
        Scope::Admin,
        Expect::BadRequest,
    );
    p.body =
        Some(json!({"publishers": [{"key": "not a key", "components": ["*"], "max_risk": "low"}]}));
    probes.push(p);
    let mut p = probe(
        ("/v1/components", "post"),
        Method::POST,
        "/v1/components".into(),
        Scope::Admin,
        Expect::BadRequest,
    );
    p.body = Some(json!({"component": "not base64!", "release": owner_release.clone()}));
    probes.push(p);
    // An enrollment token for the owner's tenant.
    let mut p = probe(
        ("/v1/hosts/enroll-tokens", "post"),
        Method::POST,
        "/v1/hosts/enroll-tokens".into(),
        Scope::Admin,
        Expect::WrongTenant,
    );
    p.body = Some(json!({"tenant": "clinic-a", "labels": {"site": "main"}}));
    probes.push(p);
    for decision in ["approve", "deny", "acknowledge", "resolve"] {
        let mut p = probe(
            ("/v1/escalations/{id}/{decision}", "post"),
            Method::POST,
            format!("/v1/escalations/{esc}/{decision}"),
            Scope::Operate,
            Expect::NotFound,
        );
        p.body = Some(json!({"note": "not yours"}));
        probes.push(p);
    }
    // Every MCP method, in both eras; the owner's session too.
    let mcp_calls = [
        ("initialize", initialize("2025-11-25"), Vec::new()),
        (
            "tools/list (session)",
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            vec![("mcp-session-id", session.clone())],
        ),
        (
            "tools/call (session)",
            call(
                3,
                "clear-tmp",
                json!({"params": {"dir": dir}, "reason": "not my host"}),
            ),
            vec![("mcp-session-id", session.clone())],
        ),
        (
            "ping (session)",
            json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
            vec![("mcp-session-id", session.clone())],
        ),
        (
            "server/discover",
            modern(5, "server/discover", json!({})),
            modern_headers("server/discover"),
        ),
        (
            "tools/list (stateless)",
            modern(6, "tools/list", json!({})),
            modern_headers("tools/list"),
        ),
        (
            "tools/call (stateless)",
            modern(
                7,
                "tools/call",
                json!({"name": "clear-tmp", "arguments": {"params": {"dir": dir}, "reason": "not my host"}}),
            ),
            modern_headers("tools/call"),
        ),
    ];
    for (label, body, headers) in mcp_calls {
        probes.push(Probe {
            route: ("/mcp", "post"),
            label: format!("POST /mcp {label}"),
            method: Method::POST,
            path: "/mcp".into(),
            body: Some(body),
            headers,
            needs: Scope::Read,
            expect: Expect::NotFound,
        });
    }
    let mut end = probe(
        ("/mcp", "delete"),
        Method::DELETE,
        "/mcp".into(),
        Scope::Read,
        Expect::NotFound,
    );
    end.headers = vec![("mcp-session-id", session.clone())];
    probes.push(end);

    // The matrix covers every authenticated route of the document: a new route cannot
    // be forgotten here.
    let covered: BTreeSet<(String, String)> = probes
        .iter()
        .map(|p| (p.route.0.to_string(), p.route.1.to_string()))
        .collect();
    assert_eq!(covered, documented_routes());

    let mut checked = 0;
    for scope in [Scope::Read, Scope::Operate, Scope::Admin] {
        let b = api.token("clinic-b", scope).await;
        for p in &probes {
            let r = send(&api, &b, p).await;
            let what = format!("{} with clinic-b's {} token", p.label, scope.as_str());
            if scope < p.needs {
                assert_eq!(
                    r.status,
                    403,
                    "{what}: {}",
                    String::from_utf8_lossy(&r.body)
                );
                r.error(403, "forbidden");
                checked += 1;
                continue;
            }
            match p.expect {
                Expect::NotFound => {
                    assert_eq!(
                        r.status,
                        404,
                        "{what}: {}",
                        String::from_utf8_lossy(&r.body)
                    );
                    let msg = r.error(404, "not_found");
                    let echoed = p
                        .body
                        .as_ref()
                        .is_some_and(|b| b.to_string().contains(HOST));
                    assert!(
                        echoed || !msg.contains(HOST),
                        "{what} names the host: {msg}"
                    );
                }
                Expect::EmptyList(key) => {
                    assert_eq!(r.status, 200, "{what}");
                    assert_eq!(r.json(), json!({key: []}), "{what}");
                }
                Expect::WrongTenant => {
                    r.error(422, "wrong_tenant");
                }
                Expect::BadRequest => {
                    r.error(400, "bad_request");
                }
                Expect::OwnMetrics => {
                    assert_eq!(r.status, 200, "{what}");
                    let text = String::from_utf8(r.body).unwrap();
                    assert!(
                        !text.contains("runwarden_incidents_total{"),
                        "{what}: the owner's counters leak: {text}"
                    );
                    assert!(text.contains("runwarden_escalations_open 0\n"), "{text}");
                    assert!(
                        !text.contains("runwarden_webhook_deliveries_total"),
                        "{what}: {text}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * probes.len());

    // 404s are the same as for things that do not exist.
    let b = api.token("clinic-b", Scope::Operate).await;
    let theirs = api.get(&format!("/v1/incidents/{incident}"), &b).await;
    let missing = api
        .get("/v1/incidents/00000000-0000-4000-8000-000000000000", &b)
        .await;
    assert_eq!(
        theirs.error(404, "not_found").replace(&incident, "ID"),
        missing
            .error(404, "not_found")
            .replace("00000000-0000-4000-8000-000000000000", "ID")
    );
    let theirs = api.get(&format!("/v1/escalations/{esc}"), &b).await;
    let missing = api.get("/v1/escalations/esc_0000000000000000", &b).await;
    assert_eq!(
        theirs.error(404, "not_found").replace(&esc, "ID"),
        missing
            .error(404, "not_found")
            .replace("esc_0000000000000000", "ID")
    );
    let incident_for = |host: &str| {
        let mut i = api.disk_full();
        i["host"] = json!(host);
        i
    };
    let theirs = api.post("/v1/incidents", &b, &incident_for(HOST)).await;
    let missing = api
        .post("/v1/incidents", &b, &incident_for("no-such-host"))
        .await;
    assert_eq!(
        theirs.error(404, "not_found").replace(HOST, "HOST"),
        missing
            .error(404, "not_found")
            .replace("no-such-host", "HOST")
    );
    // Liveness says nothing else, with or without a token.
    let r = api.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = api.send(Method::GET, "/healthz", Some(&b), None).await;
    assert_eq!(r.json(), json!({"status": "ok"}));

    // Nothing changed for the owner: same incidents, the escalation still open, no
    // evidence written, same counters; its session still works.
    let after = owner_view(&api, &a, &esc).await;
    assert_eq!(after, before);
    let r = mcp(
        &api,
        Some(&a),
        Some(&session),
        &[],
        &json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}),
    )
    .await;
    assert_eq!(r.status, 200, "the owner's session was not ended");
    // And B started no cooldown on the owner's host: A's automation acts.
    let healed = api
        .post("/v1/incidents?wait=true", &a, &api.disk_full())
        .await
        .json();
    assert_eq!(
        healed["runs"][0]["runbook"], "clear-tmp",
        "it ran: {healed}"
    );
    let cooldown = healed["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["guardrail"] == "cooldown")
        .unwrap();
    assert_eq!(cooldown["verdict"], "pass", "{healed}");
    // While the owner's own run does cool down its next one.
    let again = api
        .post(
            "/v1/incidents?wait=true",
            &api.token("clinic-a", Scope::Operate).await,
            &{
                let mut i = api.disk_full();
                i["service"] = json!("another-fingerprint");
                i
            },
        )
        .await
        .json();
    assert_eq!(again["status"], "suppressed", "{again}");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn the_requesting_token_cannot_approve_or_resolve_its_own_escalation() {
    let mut api = Api::start(ApiConfig::default()).await;
    let asker = api.secret.clone();
    let other = api.token("clinic-a", Scope::Operate).await;
    let admin_asker = api.token("clinic-a", Scope::Admin).await;
    // The second disk-full within the window is a repeat: escalated, proposing clear-tmp
    // on this host.
    let first = api
        .post("/v1/incidents?wait=true", &asker, &api.disk_full())
        .await
        .json();
    assert_eq!(first["runs"][0]["runbook"], "clear-tmp", "{first}");
    assert_eq!(first["requested_by"].as_str().unwrap().len(), 16, "{first}");
    let repeat = api
        .post("/v1/incidents?wait=true", &asker, &api.disk_full())
        .await
        .json();
    assert_eq!(repeat["status"], "escalated", "{repeat}");
    let esc = repeat["escalation"].as_str().unwrap().to_string();

    for decision in ["approve", "resolve"] {
        let msg = api
            .post(
                &format!("/v1/escalations/{esc}/{decision}"),
                &asker,
                &json!({}),
            )
            .await
            .error(409, "conflict");
        assert!(
            msg.contains("itself") && msg.contains("different token"),
            "{msg}"
        );
    }
    // Acknowledging one's own request is harmless, and allowed.
    let acked = api
        .post(
            &format!("/v1/escalations/{esc}/acknowledge"),
            &asker,
            &json!({}),
        )
        .await
        .json();
    assert_eq!(acked["escalation"]["state"], "acknowledged", "{acked}");
    // Another token of the tenant approves: it runs, with the approver's identity.
    let ok = api
        .post(
            &format!("/v1/escalations/{esc}/approve"),
            &other,
            &json!({"note": "second pair of eyes"}),
        )
        .await
        .json();
    assert_eq!(ok["escalation"]["state"], "approved", "{ok}");
    assert_eq!(ok["incident"]["runs"][0]["runbook"], "clear-tmp", "{ok}");

    // An admin token is no exception when it asked; denying its own request is allowed.
    let third = api
        .post("/v1/incidents?wait=true", &admin_asker, &{
            let mut i = api.disk_full();
            i["service"] = json!("x");
            i
        })
        .await
        .json();
    let fourth = api
        .post("/v1/incidents?wait=true", &admin_asker, &{
            let mut i = api.disk_full();
            i["service"] = json!("x");
            i
        })
        .await
        .json();
    assert_eq!(
        (third["status"].as_str(), fourth["status"].as_str()),
        (Some("suppressed"), Some("escalated")),
        "{third} {fourth}"
    );
    let esc = fourth["escalation"].as_str().unwrap();
    api.post(
        &format!("/v1/escalations/{esc}/approve"),
        &admin_asker,
        &json!({}),
    )
    .await
    .error(409, "conflict");
    let denied = api
        .post(
            &format!("/v1/escalations/{esc}/deny"),
            &admin_asker,
            &json!({}),
        )
        .await
        .json();
    assert_eq!(denied["escalation"]["state"], "denied", "{denied}");
    api.stop().await.unwrap();
}
