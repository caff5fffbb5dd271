//! adv-http-origin: granted one HTTP origin, it tries to reach another: a different port
//! on the same host, the same port spelled `localhost`, `https` instead of `http`, the
//! granted origin smuggled as userinfo (`http://granted@other/`), the other origin as a
//! decimal IPv4 literal, a `file:` URL, a `CONNECT` to the granted origin, and a redirect
//! from the granted origin to the other (which must not be followed). Every attempt must be
//! refused: nothing ever connects to the other origin, the granted one sees only the one
//! legitimate request, each refusal is traced as `http`/`send` (denials with
//! `allowed = false`), and the guest ends `no-op`.

use attack_report::Report;
use runwarden_sdk::http::{Header, Request};
use runwarden_sdk::prelude::*;

#[derive(serde::Deserialize)]
struct Params {
    /// The granted origin, `http://127.0.0.1:port`.
    granted: String,
    /// Another loopback origin, `http://127.0.0.1:port`, not granted.
    other: String,
}

struct HttpOrigin;

fn send(method: &str, url: String) -> Result<String, HostError> {
    let req = Request {
        method: method.into(),
        url,
        headers: Vec::new(),
        body: None,
        timeout_ms: Some(2000),
    };
    http::send(&req).map(|resp| format!("status {}", resp.status))
}

impl Runbook for HttpOrigin {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-http-origin",
            "0.1.0",
            "Try to send HTTP requests to an origin not granted",
        )
        .capability(Capability::Http("{granted}".into()))
        .params_schema(serde_json::json!({
            "type": "object", "required": ["granted", "other"], "additionalProperties": false,
            "properties": {"granted": {"type": "string"}, "other": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let hostport = |o: &str| {
            o.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        };
        let (g, o) = (hostport(&p.granted), hostport(&p.other));
        let other_port = o.rsplit(':').next().unwrap_or_default().to_string();
        let granted_port = g.rsplit(':').next().unwrap_or_default().to_string();
        let mut r = Report::new();
        // The granted origin answers 302 to the other origin; the host must not follow it.
        r.control(
            "granted-redirect",
            send("GET", format!("http://{g}/redirect")),
        );

        r.attack("other-port", send("GET", format!("http://{o}/stolen")));
        r.attack(
            "other-port-post",
            send("POST", format!("http://{o}/stolen")),
        );
        r.attack(
            "localhost-alias",
            send("GET", format!("http://localhost:{granted_port}/alias")),
        );
        r.attack("https-scheme", send("GET", format!("https://{g}/tls")));
        r.attack("userinfo", send("GET", format!("http://{g}@{o}/userinfo")));
        r.attack(
            "decimal-ip",
            send("GET", format!("http://2130706433:{other_port}/decimal")),
        );
        r.attack("file-scheme", send("GET", "file:///etc/passwd".into()));
        r.attack("connect-method", send("CONNECT", format!("http://{g}/")));
        // The granted origin, but a Host header naming another virtual host behind it.
        r.attack(
            "host-header",
            http::send(&Request {
                method: "GET".into(),
                url: format!("http://{g}/vhost"),
                headers: vec![Header {
                    name: "Host".into(),
                    value: o.to_string(),
                }],
                body: None,
                timeout_ms: Some(2000),
            })
            .map(|resp| format!("status {}", resp.status)),
        );
        Ok(r.outcome("reach an origin not granted"))
    }
}

runwarden_sdk::export_runbook!(HttpOrigin);
