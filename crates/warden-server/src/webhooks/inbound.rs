//! Reading an authenticated delivery of each source into a [`Delivery`]: its delivery id and
//! event. Pure; an error is the reason for a 400.

use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::Source;
use super::rules::Delivery;

/// The longest delivery id accepted.
pub const MAX_DELIVERY_ID: usize = 200;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A delivery id: 1 to 200 printable ASCII characters without spaces.
pub fn check_delivery_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_DELIVERY_ID || !id.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err(format!(
            "{what} must be 1 to {MAX_DELIVERY_ID} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// Parses the body as JSON; the error says where it broke (never echoing the body).
pub fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.starts_with(b"payload=") {
        return Err(
            "the body is form-encoded; set the webhook's content type to application/json".into(),
        );
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

fn object(payload: &Value, what: &str) -> Result<(), String> {
    if payload.is_object() {
        Ok(())
    } else {
        Err(format!("the body is not a JSON object, as {what} sends"))
    }
}

/// The GitHub event of a delivery (`X-GitHub-Event`) and its id (`X-GitHub-Delivery`).
pub fn github(headers: &HeaderMap, payload: Value) -> Result<Delivery, String> {
    let event = header(headers, "x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or("no X-GitHub-Event header")?;
    if !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err("X-GitHub-Event is not an event name".into());
    }
    let id = header(headers, "x-github-delivery").ok_or("no X-GitHub-Delivery header")?;
    check_delivery_id("X-GitHub-Delivery", id)?;
    object(&payload, "GitHub")?;
    Ok(Delivery {
        source: Source::Github,
        delivery_id: id.to_string(),
        event: event.to_string(),
        payload,
    })
}

/// An Alertmanager notification (webhook payload version 4). Its delivery id is computed
/// from the group key, the status, and each alert's fingerprint and start: a notification
/// Alertmanager repeats (every `repeat_interval`, or after a failed send) has the same id,
/// while a new alert in the group, a resolution or a new firing makes a new one.
pub fn alertmanager(payload: Value) -> Result<Delivery, String> {
    object(&payload, "Alertmanager")?;
    match payload.get("version").and_then(Value::as_str) {
        Some("4") => {}
        Some(v) => {
            return Err(format!(
                "`version` is `{v}`; only Alertmanager's webhook payload version 4 is understood"
            ));
        }
        None => return Err("`version` is missing; expected Alertmanager's \"4\"".into()),
    }
    let group_key = payload
        .get("groupKey")
        .and_then(Value::as_str)
        .ok_or("`groupKey` is missing")?;
    let status = payload
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| *s == "firing" || *s == "resolved")
        .ok_or("`status` must be firing or resolved")?;
    let alerts = payload
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or("`alerts` is missing or not a list")?;
    let mut parts: Vec<String> = alerts
        .iter()
        .map(|a| {
            let fingerprint = match a.get("fingerprint").and_then(Value::as_str) {
                Some(f) => f.to_string(),
                // Without one, the labels identify the alert (serde_json sorts their keys).
                None => a.get("labels").map(Value::to_string).unwrap_or_default(),
            };
            let starts = a.get("startsAt").and_then(Value::as_str).unwrap_or("");
            format!("{fingerprint}\u{1f}{starts}")
        })
        .collect();
    parts.sort();
    let mut h = Sha256::new();
    h.update(group_key.as_bytes());
    h.update([0x1e]);
    h.update(status.as_bytes());
    for p in &parts {
        h.update([0x1e]);
        h.update(p.as_bytes());
    }
    let id = format!("am-{}", &hex::encode(h.finalize())[..40]);
    Ok(Delivery {
        source: Source::Alertmanager,
        delivery_id: id,
        event: status.to_string(),
        payload,
    })
}

/// A PagerDuty v3 webhook: `{"event": {"id", "event_type", "resource_type", "data", ...}}`;
/// the delivery id is `event.id`.
pub fn pagerduty(payload: Value) -> Result<Delivery, String> {
    object(&payload, "PagerDuty")?;
    let event = payload
        .get("event")
        .filter(|e| e.is_object())
        .ok_or("`event` is missing; expected a PagerDuty v3 webhook payload")?;
    let id = event
        .get("id")
        .and_then(Value::as_str)
        .ok_or("`event.id` is missing")?;
    check_delivery_id("`event.id`", id)?;
    let event_type = event
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or("`event.event_type` is missing")?;
    Ok(Delivery {
        source: Source::Pagerduty,
        delivery_id: id.to_string(),
        event: event_type.to_string(),
        payload,
    })
}

/// A generic hook's JSON body; its delivery id from `X-Webhook-Delivery` or
/// `Idempotency-Key` (required), its event from `X-Webhook-Event` (optional).
pub fn generic(name: &str, headers: &HeaderMap, payload: Value) -> Result<Delivery, String> {
    let id = header(headers, "x-webhook-delivery")
        .or_else(|| header(headers, "idempotency-key"))
        .ok_or(
            "no delivery id: send X-Webhook-Delivery (or Idempotency-Key) with an id unique to this delivery",
        )?;
    check_delivery_id("X-Webhook-Delivery", id)?;
    let event = header(headers, "x-webhook-event").unwrap_or("");
    if event.len() > 100 || event.chars().any(char::is_control) {
        return Err("X-Webhook-Event must be at most 100 printable characters".into());
    }
    Ok(Delivery {
        source: Source::Generic(name.to_string()),
        delivery_id: id.to_string(),
        event: event.to_string(),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Headers, payload, and what the error says.
    type Case = (&'static [(&'static str, &'static str)], Value, &'static str);

    #[test]
    fn github_headers() {
        let ok = github(
            &headers(&[
                ("x-github-event", "issues"),
                ("x-github-delivery", "72d3162e-cc78"),
            ]),
            json!({"action": "opened"}),
        )
        .unwrap();
        assert_eq!(ok.event, "issues");
        assert_eq!(ok.delivery_id, "72d3162e-cc78");
        assert_eq!(ok.label(), "issues.opened");
        let cases: [Case; 5] = [
            (
                &[("x-github-delivery", "1")],
                json!({}),
                "no X-GitHub-Event",
            ),
            (
                &[("x-github-event", "push")],
                json!({}),
                "no X-GitHub-Delivery",
            ),
            (
                &[("x-github-event", "push"), ("x-github-delivery", "a b")],
                json!({}),
                "X-GitHub-Delivery must be",
            ),
            (
                &[("x-github-event", "Push!"), ("x-github-delivery", "1")],
                json!({}),
                "not an event name",
            ),
            (
                &[("x-github-event", "push"), ("x-github-delivery", "1")],
                json!([1]),
                "not a JSON object",
            ),
        ];
        for (h, p, want) in cases {
            let e = github(&headers(h), p).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        assert!(
            parse_body(b"payload=%7B%7D")
                .unwrap_err()
                .contains("application/json")
        );
        assert!(parse_body(b"{\"a\":").unwrap_err().contains("not JSON"));
    }

    fn am(status: &str, alerts: Value) -> Value {
        json!({"version": "4", "groupKey": "{}:{alertname=\"X\"}", "status": status, "receiver": "warden",
               "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "alerts": alerts})
    }

    #[test]
    fn alertmanager_ids_follow_the_alerts() {
        let a1 =
            json!({"fingerprint": "f1", "startsAt": "2026-01-01T00:00:00Z", "status": "firing"});
        let a2 =
            json!({"fingerprint": "f2", "startsAt": "2026-01-01T00:05:00Z", "status": "firing"});
        let id = |p: Value| alertmanager(p).unwrap().delivery_id;
        let one = id(am("firing", json!([a1.clone()])));
        assert!(one.starts_with("am-") && one.len() == 43, "{one}");
        // A repeated notification: the same id, whatever the alerts' order or endsAt.
        assert_eq!(id(am("firing", json!([a1.clone()]))), one);
        let both = id(am("firing", json!([a1.clone(), a2.clone()])));
        assert_eq!(id(am("firing", json!([a2.clone(), a1.clone()]))), both);
        // A new alert in the group, a resolution, a new firing: new ids.
        assert_ne!(both, one);
        assert_ne!(id(am("resolved", json!([a1.clone()]))), one);
        let mut again = a1.clone();
        again["startsAt"] = json!("2026-01-02T00:00:00Z");
        assert_ne!(id(am("firing", json!([again]))), one);
        let cases = [
            (json!({"version": "3"}), "version 4"),
            (json!({"groupKey": "g"}), "`version` is missing"),
            (
                json!({"version": "4", "status": "firing", "alerts": []}),
                "`groupKey`",
            ),
            (
                json!({"version": "4", "groupKey": "g", "status": "open", "alerts": []}),
                "firing or resolved",
            ),
            (
                json!({"version": "4", "groupKey": "g", "status": "firing"}),
                "`alerts`",
            ),
        ];
        for (p, want) in cases {
            let e = alertmanager(p).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn pagerduty_and_generic() {
        let d = pagerduty(json!({"event": {"id": "01DEN", "event_type": "incident.triggered"}}))
            .unwrap();
        assert_eq!(
            (d.delivery_id.as_str(), d.event.as_str()),
            ("01DEN", "incident.triggered")
        );
        for (p, want) in [
            (json!({}), "`event` is missing"),
            (json!({"event": {"event_type": "x.y"}}), "`event.id`"),
            (json!({"event": {"id": "1"}}), "`event.event_type`"),
        ] {
            assert!(pagerduty(p).unwrap_err().contains(want));
        }
        let d = generic(
            "deploys",
            &headers(&[("idempotency-key", "k-1"), ("x-webhook-event", "deployed")]),
            json!([1]),
        )
        .unwrap();
        assert_eq!(
            (d.delivery_id.as_str(), d.event.as_str()),
            ("k-1", "deployed")
        );
        let d = generic(
            "deploys",
            &headers(&[("x-webhook-delivery", "d-1"), ("idempotency-key", "k-1")]),
            json!({}),
        )
        .unwrap();
        assert_eq!(d.delivery_id, "d-1");
        assert!(
            generic("deploys", &headers(&[]), json!({}))
                .unwrap_err()
                .contains("X-Webhook-Delivery")
        );
        let long = "x".repeat(201);
        assert!(
            generic(
                "deploys",
                &headers(&[("x-webhook-delivery", &long)]),
                json!({})
            )
            .is_err()
        );
    }
}
