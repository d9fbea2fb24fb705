//! Fetching the plan: `GET <carte.server>/api/v1/machines/<mac>/plan` with the per-boot
//! token as a bearer token, parsed strictly and checked to be for this machine.
//!
//! One attempt per call: `main` retries with backoff and prints why.

use crate::cmdline::BootArgs;
use carte_contract::Plan;
use std::io::Read;

/// The largest plan accepted; a plan is a few kilobytes.
const MAX_PLAN_BYTES: u64 = 1 << 20;

/// Plan step failures, naming the URL.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan: GET {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("plan: GET {url}: server answered {status}")]
    Status { url: String, status: u16 },
    #[error("plan: GET {url}: invalid plan: {why}")]
    Invalid { url: String, why: String },
    #[error("plan: GET {url}: plan is for {got}, this machine is {want}")]
    WrongMachine {
        url: String,
        got: String,
        want: String,
    },
}

/// The URL of this machine's plan.
pub fn url(args: &BootArgs) -> String {
    format!(
        "{}{}",
        args.server,
        carte_contract::plan_path(&args.mac.to_string())
    )
}

/// Fetch and parse the plan; returns it with its raw JSON (handed to the shim as is).
pub fn fetch(agent: &ureq::Agent, args: &BootArgs) -> Result<(Plan, Vec<u8>), PlanError> {
    let url = url(args);
    let resp = agent
        .get(&url)
        .header("Authorization", format!("Bearer {}", args.token))
        .call()
        .map_err(|e| PlanError::Unreachable {
            url: url.clone(),
            why: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(PlanError::Status { url, status });
    }
    let mut raw = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| PlanError::Unreachable {
            url: url.clone(),
            why: format!("reading the body: {e}"),
        })?;
    if raw.len() as u64 > MAX_PLAN_BYTES {
        return Err(PlanError::Invalid {
            url,
            why: format!("larger than {MAX_PLAN_BYTES} bytes"),
        });
    }
    let plan: Plan = serde_json::from_slice(&raw).map_err(|e| PlanError::Invalid {
        url: url.clone(),
        why: e.to_string(),
    })?;
    let want = args.mac.to_string();
    if !plan.machine.mac.eq_ignore_ascii_case(&want) {
        return Err(PlanError::WrongMachine {
            url,
            got: plan.machine.mac,
            want,
        });
    }
    Ok((plan, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::{IpConfig, Mac};
    use crate::http::{agent, Timeouts};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// Serve one response to one request; returns the URL and the request's header lines.
    fn one_shot(status: &str, body: String) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        let status = status.to_string();
        let h = std::thread::spawn(move || {
            let Ok((s, _)) = l.accept() else {
                return vec![];
            };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                lines.push(line.trim_end().to_string());
            }
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            lines
        });
        (base, h)
    }

    fn args(server: &str) -> BootArgs {
        BootArgs {
            bench: None,
            server: server.into(),
            token: "s3cret".into(),
            mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
            ip: IpConfig::Dhcp,
        }
    }

    fn plan_json(mac: &str) -> String {
        format!(
            r#"{{"machine":{{"mac":"{mac}"}},"mode":"compose","disk":{{"select":"none"}},
            "layers":[],"machine_layer":"ephemeral","token":"t","events_url":"http://x/e"}}"#
        )
    }

    #[test]
    fn fetches_with_the_token_and_checks_the_mac() {
        let (base, h) = one_shot("200 OK", plan_json("52:54:00:00:00:01"));
        let (plan, raw) = fetch(&agent(Timeouts::default()), &args(&base)).expect("plan");
        assert_eq!(plan.machine.mac, "52:54:00:00:00:01");
        assert_eq!(raw, plan_json("52:54:00:00:00:01").into_bytes());
        let lines = h.join().expect("server");
        assert_eq!(
            lines[0],
            "GET /api/v1/machines/52:54:00:00:00:01/plan HTTP/1.1"
        );
        assert!(lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer s3cret")));
    }

    #[test]
    fn refusals_are_named() {
        let a = agent(Timeouts::default());
        let (base, _h) = one_shot("200 OK", plan_json("52:54:00:00:00:99"));
        let e = fetch(&a, &args(&base)).expect_err("wrong machine");
        assert!(matches!(e, PlanError::WrongMachine { .. }), "{e}");
        let (base, _h) = one_shot("403 Forbidden", String::new());
        let e = fetch(&a, &args(&base)).expect_err("403");
        assert!(matches!(e, PlanError::Status { status: 403, .. }), "{e}");
        let (base, _h) = one_shot("200 OK", "{\"machine\":1}".into());
        let e = fetch(&a, &args(&base)).expect_err("invalid");
        assert!(e.to_string().contains("invalid plan"), "{e}");
        // Nobody listening on this port (bound then dropped).
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("a")
            .port();
        let e = fetch(&a, &args(&format!("http://127.0.0.1:{port}"))).expect_err("down");
        assert!(matches!(e, PlanError::Unreachable { .. }), "{e}");
    }
}
