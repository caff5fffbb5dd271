//! The OpenAPI 3.1 description served at `/v1/openapi.json`, written by hand so it says
//! exactly what the handlers do. The unit tests below keep it in step with the
//! [`Incident`](runwarden_control::Incident) type and the router.

use crate::routes::{LIST_DEFAULT, LIST_MAX, STATUSES};
use serde_json::{Value, json};

fn error_responses(codes: &[u16]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|c| {
            let description = match c {
                400 => "Malformed request (`bad_request`, `invalid_incident`)",
                401 => "Missing, malformed, unknown or revoked token (`unauthorized`)",
                403 => "The token's scope is too low (`forbidden`)",
                404 => "Not found, or not the caller's tenant's: a host of another tenant is answered like no host (`not_found`)",
                413 => "Body larger than the server's limit (`payload_too_large`)",
                422 => "The body names another tenant than the token's (`wrong_tenant`)",
                429 => "The token's rate limit is exhausted (`rate_limited`); see Retry-After",
                500 => "Internal error, logged on the server (`internal`)",
                503 => "The server is shutting down (`shutting_down`)",
                _ => "Error",
            };
            let mut r = json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            });
            if *c == 401 {
                r["headers"] = json!({"WWW-Authenticate": {"schema": {"type": "string"}}});
            }
            if *c == 429 {
                r["headers"] = json!({"Retry-After": {
                    "description": "Seconds until the token may make a request again",
                    "schema": {"type": "integer"}
                }});
            }
            (c.to_string(), r)
        })
        .collect()
}

/// Responses: `ok` (status, description, schema or content), then the error statuses.
fn responses(ok: Value, errors: &[u16]) -> Value {
    let mut m = error_responses(errors);
    if let Value::Object(ok) = ok {
        for (k, v) in ok {
            m.insert(k, v);
        }
    }
    Value::Object(m)
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Errors of every authenticated read.
const READ_ERRORS: &[u16] = &[401, 403, 429, 500];

/// The OpenAPI 3.1 document describing this API.
pub fn document() -> Value {
    let bearer = json!([{"bearer": []}]);
    let mut evidence_errors = READ_ERRORS.to_vec();
    evidence_errors.extend([400, 404]);
    let mut incident_errors = READ_ERRORS.to_vec();
    incident_errors.push(404);
    let mut list_errors = READ_ERRORS.to_vec();
    list_errors.push(400);
    // Reads about the host itself: 404 for a tenant that does not own it.
    let mut host_errors = READ_ERRORS.to_vec();
    host_errors.push(404);
    // Its own value: one json! of the whole document would exceed the macro recursion limit.
    let planner = json!({"type": "object", "description": "L2: what the planner saw and said",
    "required": ["provider", "model", "prompt_sha256", "response_sha256", "confidence", "rationale", "catalog"],
    "properties": {
        "provider": {"type": "string", "enum": ["offline", "openai", "anthropic"]},
        "model": {"type": "string"},
        "prompt_sha256": {"type": "string"},
        "response_sha256": {"type": "string"},
        "confidence": {"type": "number"},
        "rationale": {"type": "string"},
        "prompt_tokens": {"type": "integer", "description": "estimated"},
        "usage": {"type": "array", "items": {"type": "integer"}, "description": "[input, output] tokens as the provider reported them"},
        "latency_ms": {"type": "integer"},
        "attempts": {"type": "integer"},
        "catalog": {"type": "array", "items": {"type": "string"}, "description": "runbooks offered"}
    }});
    let escalation = json!({
        "type": "object",
        "required": ["id", "incident_id", "tenant", "host", "severity", "reason", "state", "proposal", "created_at", "sla_deadline", "breached", "decided_by", "decided_at", "note"],
        "properties": {
            "id": {"type": "string"},
            "incident_id": {"type": "string"},
            "tenant": {"type": "string"},
            "host": {"type": "string"},
            "severity": {"enum": ["info", "low", "medium", "high", "critical"]},
            "reason": {"type": "string", "description": "why a human must decide"},
            "state": {"enum": runwarden_control::EscalationState::NAMES},
            "proposal": {"description": "what a human may approve: {runbook, params}, or null",
                "oneOf": [{"type": "null"}, {"type": "object", "required": ["runbook", "params"],
                    "properties": {"runbook": {"type": "string"}, "params": {}}}]},
            "created_at": {"type": "string", "format": "date-time"},
            "sla_deadline": {"type": "string", "format": "date-time", "description": "by severity: critical 15 min, high 1 h, medium 4 h, low one business day (configurable)"},
            "breached": {"type": "boolean", "description": "still open past its deadline"},
            "decided_by": {"type": "string"},
            "decided_at": {"type": ["string", "null"], "format": "date-time"},
            "note": {"type": "string"}
        }
    });
    let decision = json!({"oneOf": [{"type": "null"}, {
        "type": "object",
        "required": ["tier", "actions", "dry_run"],
        "properties": {
            "tier": {"type": "string", "enum": ["L1", "L2"]},
            "rule_id": {"type": "string", "description": "L1: the rule that matched"},
            "rule_sha256": {"type": "string", "description": "L1: SHA-256 of its rule component"},
            "planner": planner,
            "actions": {"type": "array", "items": {
                "type": "object",
                "required": ["runbook", "params"],
                "properties": {"runbook": {"type": "string"}, "params": {}}
            }},
            "dry_run": {"type": "boolean"}
        }
    }]});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "runwarden API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit incidents to runwarden's control plane, follow what it decided and did, and fetch the signed evidence. Every token is bound to one tenant, and the host belongs to one tenant: a caller sees only its tenant's incidents, escalations, evidence and metrics; another tenant's ids, and the host, catalog, rules, log and MCP tools of a host its tenant does not own, answer 404 exactly like things that do not exist."
        },
        "servers": [{"url": "/"}],
        "security": bearer,
        "paths": {
            "/healthz": {"get": {
                "summary": "Liveness only (nothing about the host or its tenants)",
                "security": [],
                "responses": {"200": json_ok("Up", json!({
                    "type": "object",
                    "required": ["status"],
                    "additionalProperties": false,
                    "properties": {"status": {"const": "ok"}}
                }))}
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (scope read)",
                "responses": responses(json!({"200": {
                    "description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}}
                }}), READ_ERRORS)
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": json_ok("OpenAPI 3.1", json!({"type": "object"}))}
            }},
            "/v1/incidents": {
                "post": {
                    "summary": "Submit an incident (scope operate)",
                    "description": "The incident's tenant is the token's. Without `wait` the incident is processed in the background: 202 with the accepted record (status `processing`) and a Location to poll. With `wait=true` the answer is the final record.",
                    "parameters": [{
                        "name": "wait", "in": "query", "required": false,
                        "description": "Answer with the final record once the incident is processed",
                        "schema": {"type": "boolean", "default": false}
                    }],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": schema_ref("Incident")}}
                    },
                    "responses": responses(json!({
                        "200": json_ok("Processed (`wait=true`)", schema_ref("IncidentRecord")),
                        "202": {
                            "description": "Accepted; processing in the background",
                            "headers": {"Location": {
                                "description": "/v1/incidents/{id}",
                                "schema": {"type": "string"}
                            }},
                            "content": {"application/json": {"schema": schema_ref("IncidentRecord")}}
                        }
                    }), &[400, 401, 403, 404, 413, 422, 429, 500, 503])
                },
                "get": {
                    "summary": "The tenant's incidents, newest first (scope read)",
                    "parameters": [
                        {"name": "status", "in": "query", "required": false,
                         "schema": {"type": "string", "enum": STATUSES}},
                        {"name": "limit", "in": "query", "required": false,
                         "schema": {"type": "integer", "minimum": 1, "maximum": LIST_MAX, "default": LIST_DEFAULT}}
                    ],
                    "responses": responses(json!({"200": json_ok("Incidents", json!({
                        "type": "object",
                        "required": ["incidents"],
                        "properties": {"incidents": {"type": "array", "items": schema_ref("IncidentRecord")}}
                    }))}), &list_errors)
                }
            },
            "/v1/incidents/{id}": {"get": {
                "summary": "One incident (scope read)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": responses(json!({"200": json_ok("The incident", schema_ref("IncidentRecord"))}), &incident_errors)
            }},
            "/v1/escalations": {"get": {
                "summary": "The tenant's escalations, newest first: incidents a human must decide, with SLA deadlines (scope read)",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"enum": runwarden_control::EscalationState::NAMES}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
                ],
                "responses": responses(json!({"200": json_ok("Escalations", json!({
                    "type": "object",
                    "required": ["escalations"],
                    "properties": {"escalations": {"type": "array", "items": schema_ref("Escalation")}}
                }))}), READ_ERRORS)
            }},
            "/v1/escalations/{id}": {"get": {
                "summary": "One escalation (scope read)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": responses(json!({"200": json_ok("The escalation", schema_ref("Escalation"))}), &incident_errors)
            }},
            "/v1/escalations/{id}/{decision}": {"post": {
                "summary": "Decide an escalation (scope operate): approve runs the proposed runbook now, with the approver's identity in its evidence; deny records that it must not run; acknowledge marks it taken; resolve records that it was fixed another way",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "decision", "in": "path", "required": true, "schema": {"enum": ["approve", "deny", "acknowledge", "resolve"]}}
                ],
                "requestBody": {"required": false, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": {"note": {"type": "string", "description": "why, for the record"}}
                }}}},
                "responses": responses(json!({"200": json_ok("The escalation and its incident as they end", json!({
                    "type": "object",
                    "required": ["escalation", "incident"],
                    "properties": {"escalation": schema_ref("Escalation"), "incident": schema_ref("IncidentRecord")}
                }))}), &[400, 401, 403, 404, 409, 429, 500])
            }},
            "/v1/host": {"get": {
                "summary": "The host this agent serves and its inventory (scope read)",
                "responses": responses(json!({"200": json_ok("Host", json!({
                    "type": "object",
                    "required": ["host_id", "inventory"],
                    "properties": {
                        "host_id": {"type": "string"},
                        "inventory": {"type": "object",
                            "required": ["platform", "init", "services"],
                            "properties": {
                                "platform": {"type": "string"},
                                "os": {"type": ["string", "null"]},
                                "os_version": {"type": ["string", "null"]},
                                "init": {"type": "string"},
                                "package_manager": {"type": ["string", "null"]},
                                "services": {"type": "array", "items": {"type": "string"}}
                            }}
                    }
                }))}), &host_errors)
            }},
            "/v1/runbooks": {"get": {
                "summary": "Deployed runbooks (scope read)",
                "responses": responses(json!({"200": json_ok("Runbooks", json!({
                    "type": "object",
                    "required": ["runbooks"],
                    "properties": {"runbooks": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "version", "summary", "risk", "sha256", "params_schema"],
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "summary": {"type": "string"},
                            "risk": {"enum": ["low", "medium", "high"]},
                            "sha256": {"type": "string"},
                            "params_schema": {"type": "object"}
                        }
                    }}}
                }))}), &host_errors)
            }},
            "/v1/rules": {"get": {
                "summary": "Deployed L1 rules, in evaluation order (scope read)",
                "responses": responses(json!({"200": json_ok("Rules", json!({
                    "type": "object",
                    "required": ["rules"],
                    "properties": {"rules": {"type": "array", "items": {
                        "type": "object",
                        "required": ["id", "summary", "runbooks", "rule_sha256"],
                        "properties": {
                            "id": {"type": "string"},
                            "summary": {"type": "string"},
                            "runbooks": {"type": "array", "items": {"type": "string"}},
                            "rule_sha256": {"type": "string"}
                        }
                    }}}
                }))}), &host_errors)
            }},
            "/v1/evidence/checkpoint": {"get": {
                "summary": "A signed checkpoint of the evidence log as it is now (scope read)",
                "responses": responses(json!({"200": {
                    "description": "The signed checkpoint note",
                    "content": {"text/plain": {"schema": {"type": "string"}}}
                }}), &host_errors)
            }},
            "/v1/evidence/{index}": {"get": {
                "summary": "One evidence record of the caller's tenant (scope read)",
                "parameters": [{"name": "index", "in": "path", "required": true,
                                "schema": {"type": "integer", "minimum": 0}}],
                "responses": responses(json!({"200": json_ok("The record, its envelope and decoded statement", json!({
                    "type": "object",
                    "required": ["index", "leaf_hash", "signature", "envelope", "statement"],
                    "properties": {
                        "index": {"type": "integer"},
                        "leaf_hash": {"type": "string"},
                        "signature": {"enum": ["valid", "INVALID"]},
                        "envelope": {"type": "object", "description": "The DSSE envelope as stored"},
                        "statement": {"type": "object", "description": "The in-toto statement it signs"}
                    }
                }))}), &evidence_errors)
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`rw_…`) bound to one tenant, with scope read < operate < admin."
                }
            },
            "schemas": {
                "Escalation": escalation,
                "Incident": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["host", "type", "severity"],
                    "properties": {
                        "tenant": {"type": "string", "description": "The token's tenant; may be omitted"},
                        "host": {"type": "string", "description": "The host it happened on"},
                        "type": {"type": "string", "description": "disk-full, service-down, cert-expiring, …"},
                        "severity": {"type": "string", "enum": ["info", "low", "medium", "high", "critical"]},
                        "service": {"type": "string", "description": "The service concerned, if any"},
                        "message": {"type": "string", "description": "Free text from the monitor", "maxLength": 8192},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 32},
                        "occurred_at": {"type": "string", "format": "date-time", "description": "RFC 3339; the time received when omitted"}
                    }
                },
                "IncidentRecord": {
                    "type": "object",
                    "required": ["id", "tenant", "incident", "fingerprint", "received_at", "tier", "status", "reason", "guardrails", "runs", "evidence"],
                    "properties": {
                        "id": {"type": "string"},
                        "tenant": {"type": "string"},
                        "incident": schema_ref("Incident"),
                        "fingerprint": {"type": "string"},
                        "received_at": {"type": "string", "format": "date-time"},
                        "tier": {"type": "string", "enum": ["L1", "L2", "L3"], "description": "Who owns it now: L1 (a rule handled it), L2 (the planner chose what ran), L3 (a human must)"},
                        "status": {"type": "string", "enum": STATUSES},
                        "reason": {"type": "string"},
                        "decision": decision,
                        "guardrails": {"type": "array", "items": {
                            "type": "object",
                            "required": ["guardrail", "verdict", "detail"],
                            "properties": {
                                "guardrail": {"type": "string"},
                                "verdict": {"type": "string"},
                                "detail": {"type": "string"}
                            }
                        }},
                        "runs": {"type": "array", "items": {
                            "type": "object",
                            "required": ["runbook", "status", "summary", "invocation_id", "dry_run", "evidence_index"],
                            "properties": {
                                "runbook": {"type": "string"},
                                "status": {"type": "string"},
                                "summary": {"type": "string"},
                                "invocation_id": {"type": "string"},
                                "dry_run": {"type": "boolean"},
                                "evidence_index": {"type": "integer"}
                            }
                        }},
                        "evidence": {"type": "array", "items": {"type": "integer"},
                                     "description": "Log indexes of every evidence record about it: GET /v1/evidence/{index}"},
                        "escalation": {"type": "string", "description": "When it ended at L3: its escalation, GET /v1/escalations/{id}"}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": [
                                "unauthorized", "forbidden", "not_found", "method_not_allowed",
                                "bad_request", "invalid_incident", "wrong_tenant",
                                "payload_too_large", "rate_limited", "shutting_down", "internal"
                            ]},
                            "message": {"type": "string", "description": "What was wrong and what to do"}
                        }
                    }}
                }
            }
        }
    });
    let paths = doc["paths"].as_object_mut().expect("paths is an object");
    for (path, item) in more_paths(&bearer) {
        paths.insert(path, item);
    }
    for (path, item) in host_paths(&bearer) {
        paths.insert(path, item);
    }
    for (path, item) in registry_paths(&bearer) {
        paths.insert(path, item);
    }
    let notifications = json!({"type": "array", "description": "webhook deliveries about it (GET of one escalation only)", "items": {
        "type": "object",
        "required": ["webhook", "event", "status", "attempts", "last_error", "at"],
        "properties": {
            "webhook": {"type": "string"},
            "event": {"enum": ["escalation.opened", "escalation.decided", "escalation.breached"]},
            "status": {"enum": ["delivered", "failed", "dropped"]},
            "attempts": {"type": "integer"},
            "last_error": {"type": "string"},
            "at": {"type": "string", "format": "date-time"}
        }
    }});
    doc["components"]["schemas"]["Escalation"]["properties"]["notifications"] = notifications;
    doc
}

/// The component registry: the tenant's trust policy and its published components.
fn registry_paths(bearer: &Value) -> serde_json::Map<String, Value> {
    let risk = json!({"enum": ["low", "medium", "high"]});
    let policy = json!({"type": "object", "required": ["publishers"], "properties": {
        "publishers": {"type": "array", "items": {"type": "object",
            "required": ["key", "components", "max_risk"],
            "properties": {
                "key": {"type": "string", "description": "the publisher's public key, as its .pub file holds it"},
                "components": {"type": "array", "items": {"type": "string"}, "description": "names or globs (`*`) it may publish"},
                "max_risk": risk.clone(),
                "rules": {"type": "boolean", "description": "whether it may publish L1 rule sets"}
            }}},
        "minimum_versions": {"type": "object", "additionalProperties": {"type": "string"}}
    }});
    let release = json!({"type": "object",
    "required": ["sha256", "kind", "name", "version", "risk", "publisher", "published_at", "published_by", "new"],
    "properties": {
        "sha256": {"type": "string"}, "kind": {"enum": ["runbook", "rules"]},
        "name": {"type": "string"}, "version": {"type": "string"}, "risk": risk,
        "publisher": {"type": "string"},
        "published_at": {"type": "string", "format": "date-time"},
        "published_by": {"type": "string"},
        "new": {"type": "boolean", "description": "whether this call published it"}
    }});
    let deployment = json!({"type": "object",
    "required": ["id", "name", "version", "action", "selector", "canary_percent", "state", "detail", "created_at", "created_by", "hosts"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
        "action": {"enum": ["deploy", "rollback"]}, "selector": {"type": "string"},
        "canary_percent": {"type": "integer"},
        "state": {"enum": ["canary", "rolling", "done", "halted"]}, "detail": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}, "created_by": {"type": "string"},
        "hosts": {"type": "array", "items": {"type": "object", "required": ["host", "state", "detail", "version", "sha256", "canary", "updated_at"],
        "properties": {"host": {"type": "string"}, "state": {"enum": ["pending", "held", "deployed", "refused", "halted"]},
            "detail": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"},
            "canary": {"type": "boolean"}, "updated_at": {"type": "string", "format": "date-time"}}}}
    }});
    let v = json!({
        "/v1/trust": {
            "get": {
                "summary": "The caller's tenant's trust policy: which publishers may ship which components (scope read; 404 when none is set)",
                "security": bearer,
                "responses": responses(json!({"200": json_ok("The trust policy", policy.clone())}), &[401, 403, 404, 429, 500])
            },
            "put": {
                "summary": "Set the caller's tenant's trust policy (scope admin); recorded in the log",
                "security": bearer,
                "requestBody": {"required": true, "content": {"application/json": {"schema": policy.clone()}}},
                "responses": responses(json!({"200": json_ok("The policy as set", policy)}), &[400, 401, 403, 409, 413, 429, 500])
            }
        },
        "/v1/components": {
            "get": {
                "summary": "The caller's tenant's published components, newest first (scope read)",
                "security": bearer,
                "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}],
                "responses": responses(json!({"200": json_ok("Components", json!({"type": "object", "required": ["components"],
                    "properties": {"components": {"type": "array", "items": release.clone()}}}))}), &[400, 401, 403, 429, 500])
            },
            "post": {
                "summary": "Publish a component and its signed release (scope admin): the tenant's trust policy must admit it; a refusal is recorded (409)",
                "security": bearer,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "required": ["component", "release"],
                    "properties": {
                        "component": {"type": "string", "contentEncoding": "base64"},
                        "release": {"type": "object", "description": "the DSSE envelope of the release (runwarden runbook sign)"}
                    }}}}},
                "responses": responses(json!({"200": json_ok("The release", release)}), &[400, 401, 403, 409, 413, 429, 500])
            }
        },
        "/v1/deployments": {
            "get": {
                "summary": "The caller's tenant's latest deployments, newest first (scope read)",
                "security": bearer,
                "responses": responses(json!({"200": json_ok("Deployments", json!({"type": "object", "required": ["deployments"],
                    "properties": {"deployments": {"type": "array", "items": deployment.clone()}}}))}), &[401, 403, 429, 500])
            },
            "post": {
                "summary": "Deploy a published release to the tenant's hosts, in stages with canaries, or roll them back (scope admin); recorded in the log",
                "security": bearer,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "required": ["name", "hosts"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string", "description": "a release the tenant published (not for a rollback)"},
                        "hosts": {"type": "string", "description": "`*`, host ids and key=value labels, comma separated"},
                        "rollback": {"type": "boolean"},
                        "canary_percent": {"type": "integer", "minimum": 1, "maximum": 99},
                        "soak_secs": {"type": "integer", "minimum": 0},
                        "max_failure_rate": {"type": "number", "minimum": 0, "maximum": 1}
                    }}}}},
                "responses": responses(json!({"200": json_ok("The deployment as it starts", deployment.clone())}), &[400, 401, 403, 404, 409, 413, 429, 500])
            }
        },
        "/v1/deployments/{id}": {
            "get": {
                "summary": "One deployment, host by host (scope read)",
                "security": bearer,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": responses(json!({"200": json_ok("The deployment", deployment)}), &[401, 403, 404, 429, 500])
            }
        }

    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

/// The fleet's hosts: the list, enrollment tokens, enrollment, drain.
fn host_paths(bearer: &Value) -> serde_json::Map<String, Value> {
    let error = json!({"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let labels = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let host = json!({"type": "object",
    "required": ["id", "tenant", "labels", "key_id", "enrolled_at", "last_seen", "online", "drained", "version", "log_records", "mirrored_records", "inventory"],
    "properties": {
        "id": {"type": "string"}, "tenant": {"type": "string"}, "labels": labels.clone(),
        "key_id": {"type": "string", "description": "the host key's id (hex); empty for runwarden up's own host"},
        "enrolled_at": {"type": ["string", "null"], "format": "date-time"},
        "last_seen": {"type": ["string", "null"], "format": "date-time"},
        "drained": {"type": "boolean"},
        "inventory": {"type": "object"}
    }});
    let v = json!({
        "/v1/hosts": {"get": {
            "summary": "The caller's tenant's hosts (scope read)",
            "security": bearer,
            "responses": {"200": json_ok("Hosts", json!({"type": "object", "required": ["hosts"],
                "properties": {"hosts": {"type": "array", "items": host}}})),
                "401": error, "403": error, "429": error, "500": error}
        }},
        "/v1/hosts/enroll-tokens": {"post": {
            "summary": "A single-use, expiring token that enrolls one host into the caller's tenant with the given labels (scope admin)",
            "security": bearer,
            "requestBody": {"required": false, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false,
                "properties": {"tenant": {"type": "string", "description": "the caller's own (the default); another tenant is refused"},
                    "labels": labels.clone(),
                    "ttl_secs": {"type": "integer", "minimum": 60, "maximum": 604800, "default": 3600}}}}}},
            "responses": {"200": json_ok("The token, shown once", json!({"type": "object",
                "required": ["token", "id", "tenant", "labels", "expires_at"],
                "properties": {"token": {"type": "string"}, "id": {"type": "string"}, "tenant": {"type": "string"},
                    "labels": labels.clone(), "expires_at": {"type": "string", "format": "date-time"}}})),
                "400": error, "401": error, "403": error, "409": error, "422": error, "429": error, "500": error}
        }},
        "/v1/hosts/{id}/{action}": {"post": {
            "summary": "drain: no new jobs go to the host (incidents for it escalate); undrain: resume (scope operate)",
            "security": bearer,
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "action", "in": "path", "required": true, "schema": {"enum": ["drain", "undrain"]}}],
            "responses": {"200": json_ok("Done", json!({"type": "object", "required": ["host", "drained"],
                "properties": {"host": {"type": "string"}, "drained": {"type": "boolean"}}})),
                "401": error, "403": error, "404": error, "409": error, "429": error, "500": error}
        }},
        "/v1/enroll": {"post": {
            "summary": "An agent enrolls its host: the single-use enrollment token is the credential (no bearer token). The host then belongs to the token's tenant, and its records must verify under the key it gave",
            "security": [],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false,
                "required": ["token", "host_id", "policy", "key"],
                "properties": {"token": {"type": "string"}, "host_id": {"type": "string"},
                    "policy": {"type": "string", "description": "the agent's policy, TOML; its host_id must be host_id"},
                    "inventory": {"type": "object"},
                    "key": {"type": "string", "description": "the host's public key, signed-note verifier form NAME+ID+KEY (the control plane names it: see key_name)"}}}}}},
            "responses": {"200": json_ok("Enrolled", json!({"type": "object",
                "required": ["tenant", "host_id", "labels", "control_key", "key_name"],
                "properties": {"tenant": {"type": "string"}, "host_id": {"type": "string"}, "labels": labels,
                    "control_key": {"type": "string", "description": "the key the control plane signs jobs with"},
                    "nats_creds": {"type": "string", "description": "the host's own NATS credentials (a secret), when the control plane mints them"},
                    "key_name": {"type": "string", "description": "the name the host's key is enrolled under (the host id for its first key, HOST~2, HOST~3, … for later ones); its log is runwarden/KEY_NAME"}}})),
                "400": error, "404": error, "409": error, "413": error, "429": error, "500": error}
        }}
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The MCP endpoint and the flywheel (a second value: one `json!` this deep would pass
/// the macro's recursion limit).
fn more_paths(bearer: &Value) -> serde_json::Map<String, Value> {
    let candidate = json!({
        "type": "object",
        "required": ["id", "incident_type", "service", "runbook", "successes", "failures", "state", "why", "history"],
        "properties": {
            "id": {"type": "string", "description": "fw-…: the rule's id once promoted"},
            "incident_type": {"type": "string"},
            "service": {"type": "string"},
            "runbook": {"type": "string"},
            "successes": {"type": "integer"},
            "failures": {"type": "integer"},
            "state": {"enum": ["candidate", "collecting", "disqualified", "promoted"]},
            "why": {"type": "string"},
            "params": {"type": "object", "description": "what the rule would set ({{service}}, {{labels.K}} where runs differed)"},
            "history": {"type": "array", "items": {"type": "object"}}
        }
    });
    let promotion = json!({
        "type": "object",
        "required": ["candidate", "yaml", "rule_sha256", "replay", "deployed"],
        "properties": {
            "candidate": candidate.clone(),
            "yaml": {"type": "string"},
            "rule_sha256": {"type": "string"},
            "replay": {"type": "object", "required": ["incidents", "matched", "agreed", "differed", "matches"]},
            "deployed": {"type": "boolean"},
            "path": {"type": "string"},
            "evidence_index": {"type": "integer"}
        }
    });
    let error = json!({"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let v = json!({
        "/v1/flywheel/candidates": {"get": {
            "summary": "The tenant's L2 signatures and how close each is to becoming an L1 rule, candidates first (scope read)",
            "security": bearer,
            "responses": {"200": json_ok("Candidates", json!({"type": "object", "required": ["candidates"],
                "properties": {"candidates": {"type": "array", "items": candidate}}})),
                "401": error, "403": error, "404": error, "429": error, "500": error}
        }},
        "/v1/flywheel/candidates/{id}/promote": {"post": {
            "summary": "The candidate's rule as YAML, compiled and replayed against the stored incidents; deployed (written, loaded, recorded in evidence) only with {\"confirm\": true} (scope admin)",
            "security": bearer,
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "requestBody": {"required": false, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false,
                "properties": {"confirm": {"type": "boolean", "default": false},
                    "rule_sha256": {"type": "string", "description": "the proposal's rule_sha256, as reviewed: needed to confirm; 409 if the candidate changed"}}}}}},
            "responses": {"200": json_ok("The promotion", promotion),
                "400": error, "401": error, "403": error, "404": error, "409": error, "429": error, "500": error}
        }},
        "/mcp": {
            "post": {
                "summary": "MCP (Model Context Protocol, streamable HTTP): one JSON-RPC message per request. 2025-11-25: initialize returns Mcp-Session-Id; 2026-07-28: stateless, MCP-Protocol-Version / Mcp-Method / Mcp-Name headers matching params._meta, server/discover. tools/list and tools/call (scope read to list, operate to call). Browser Origins must be listed in [api] mcp_origins",
                "security": bearer,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": json_ok("A JSON-RPC response", json!({"type": "object"})),
                    "202": {"description": "A notification or response was accepted"},
                    "400": {"description": "Not one JSON-RPC message, no session, or an unsupported MCP-Protocol-Version"},
                    "401": error, "403": error,
                    "404": {"description": "Unknown, expired or another token's session: initialize again; or the token's tenant does not own this host (`not_found`, as if there were none)"},
                    "413": error, "429": error}
            },
            "get": {"summary": "Not offered: this server sends no messages of its own (405)", "security": bearer,
                "responses": {"404": error, "405": error}},
            "delete": {"summary": "End the session named by Mcp-Session-Id", "security": bearer,
                "responses": {"204": {"description": "Ended"}, "404": error}}
        }
    });
    v.as_object().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runwarden_control::{Incident, Severity};
    use std::collections::BTreeSet;

    #[test]
    fn the_incident_schema_names_exactly_the_incident_fields() {
        let full = Incident {
            tenant: "t".into(),
            host: "h".into(),
            kind: "disk-full".into(),
            severity: Severity::High,
            service: Some("s".into()),
            message: "m".into(),
            labels: [("k".to_string(), "v".to_string())].into(),
            occurred_at: Some("2026-01-01T00:00:00Z".into()),
        };
        let serialized = serde_json::to_value(&full).unwrap();
        let fields: BTreeSet<&String> = serialized.as_object().unwrap().keys().collect();
        let doc = document();
        let schema = &doc["components"]["schemas"]["Incident"];
        let props: BTreeSet<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(fields, props);
        // Required in the schema = required by the parser.
        for r in schema["required"].as_array().unwrap() {
            let mut without = serialized.clone();
            without.as_object_mut().unwrap().remove(r.as_str().unwrap());
            assert!(
                Incident::from_json(without.to_string().as_bytes()).is_err(),
                "{r} is required"
            );
        }
        let severities: Vec<String> = ["info", "low", "medium", "high", "critical"]
            .iter()
            .map(|s| {
                let mut i = serialized.clone();
                i["severity"] = json!(s);
                let parsed = Incident::from_json(i.to_string().as_bytes()).unwrap();
                parsed.severity.as_str().to_string()
            })
            .collect();
        assert_eq!(json!(severities), schema["properties"]["severity"]["enum"]);
    }

    #[test]
    fn every_route_is_described() {
        let doc = document();
        for (path, method) in [
            ("/healthz", "get"),
            ("/metrics", "get"),
            ("/v1/openapi.json", "get"),
            ("/v1/incidents", "post"),
            ("/v1/incidents", "get"),
            ("/v1/incidents/{id}", "get"),
            ("/v1/runbooks", "get"),
            ("/v1/host", "get"),
            ("/v1/hosts", "get"),
            ("/v1/hosts/enroll-tokens", "post"),
            ("/v1/hosts/{id}/{action}", "post"),
            ("/v1/enroll", "post"),
            ("/v1/escalations", "get"),
            ("/v1/escalations/{id}", "get"),
            ("/v1/escalations/{id}/{decision}", "post"),
            ("/v1/rules", "get"),
            ("/v1/trust", "get"),
            ("/v1/trust", "put"),
            ("/v1/components", "get"),
            ("/v1/components", "post"),
            ("/v1/evidence/checkpoint", "get"),
            ("/v1/evidence/{index}", "get"),
            ("/v1/flywheel/candidates", "get"),
            ("/v1/flywheel/candidates/{id}/promote", "post"),
            ("/mcp", "post"),
            ("/mcp", "delete"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is missing"
            );
        }
        // Every $ref resolves.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "{r}");
        }
    }
}
