//! The JSON-RPC 2.0 envelope of A2A: reading a request, naming what is wrong with it, and
//! the methods. Pure: no I/O.

use a2a::{A2AError, JsonRpcError, JsonRpcId, JsonRpcResponse};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The methods of A2A v1.0's JSON-RPC binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SendMessage,
    SendStreamingMessage,
    GetTask,
    ListTasks,
    CancelTask,
    SubscribeToTask,
    /// The four push-notification config methods: not supported.
    PushConfig,
    GetExtendedAgentCard,
}

impl Method {
    pub const NAMES: &'static [&'static str] = &[
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "ListTasks",
        "CancelTask",
        "SubscribeToTask",
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
        "GetExtendedAgentCard",
    ];

    pub fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "SendMessage" => Method::SendMessage,
            "SendStreamingMessage" => Method::SendStreamingMessage,
            "GetTask" => Method::GetTask,
            "ListTasks" => Method::ListTasks,
            "CancelTask" => Method::CancelTask,
            "SubscribeToTask" => Method::SubscribeToTask,
            "CreateTaskPushNotificationConfig"
            | "GetTaskPushNotificationConfig"
            | "ListTaskPushNotificationConfigs"
            | "DeleteTaskPushNotificationConfig" => Method::PushConfig,
            "GetExtendedAgentCard" => Method::GetExtendedAgentCard,
            _ => return None,
        })
    }

    /// Answered with a stream of events (SSE).
    pub fn streams(self) -> bool {
        matches!(self, Method::SendStreamingMessage | Method::SubscribeToTask)
    }
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: JsonRpcId,
    pub method: Method,
    pub params: Value,
}

/// Reads a request body. The error carries the id when the body had a usable one (`Null`
/// otherwise), as JSON-RPC asks.
pub fn parse_request(body: &[u8]) -> Result<Request, (JsonRpcId, A2AError)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            JsonRpcId::Null,
            A2AError::parse_error(format!("the body is not JSON: {e}")),
        )
    })?;
    let obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err((
                JsonRpcId::Null,
                A2AError::invalid_request(
                    "batch requests are not supported; send one request object",
                ),
            ));
        }
        _ => {
            return Err((
                JsonRpcId::Null,
                A2AError::invalid_request("a request is a JSON object"),
            ));
        }
    };
    let id = match obj.get("id") {
        None => {
            return Err((
                JsonRpcId::Null,
                A2AError::invalid_request(
                    "`id` is missing: A2A requests are calls with an id (a string or an integer), not notifications",
                ),
            ));
        }
        Some(Value::String(s)) => JsonRpcId::String(s.clone()),
        Some(Value::Number(n)) if n.is_i64() => JsonRpcId::Number(n.as_i64().unwrap_or(0)),
        Some(Value::Null) => JsonRpcId::Null,
        Some(other) => {
            return Err((
                JsonRpcId::Null,
                A2AError::invalid_request(format!(
                    "`id`: {other} is not a string, an integer or null"
                )),
            ));
        }
    };
    let bad = |m: String| Err((id.clone(), A2AError::invalid_request(m)));
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(other) => return bad(format!("`jsonrpc`: {other} is not \"2.0\"")),
        None => return bad("`jsonrpc` is missing; it must be \"2.0\"".into()),
    }
    let name = match obj.get("method") {
        Some(Value::String(m)) => m.clone(),
        Some(other) => return bad(format!("`method`: {other} is not a string")),
        None => return bad("`method` is missing".into()),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["jsonrpc", "id", "method", "params"].contains(&k.as_str()))
    {
        return bad(format!(
            "unknown member `{k}`; a request has jsonrpc, id, method and params"
        ));
    }
    let Some(method) = Method::parse(&name) else {
        return Err((
            id,
            A2AError::method_not_found(&name).with_hint(Method::NAMES),
        ));
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(other) => {
            return Err((
                id,
                A2AError::invalid_params(format!("params: {other} is not an object")),
            ));
        }
    };
    Ok(Request { id, method, params })
}

trait Hint {
    fn with_hint(self, names: &[&str]) -> Self;
}

impl Hint for A2AError {
    fn with_hint(mut self, names: &[&str]) -> A2AError {
        self.message = format!("{}; the methods are {}", self.message, names.join(", "));
        self
    }
}

/// Decodes a method's params; the error names the field (`params.message.parts[0]`).
pub fn params<T: DeserializeOwned>(params: &Value) -> Result<T, A2AError> {
    serde_path_to_error::deserialize(params.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path.is_empty() || path == "." {
            "params".to_string()
        } else {
            format!("params.{path}")
        };
        A2AError::invalid_params(format!("{at}: {}", e.inner()))
    })
}

/// A success response.
pub fn success(id: JsonRpcId, result: &impl serde::Serialize) -> JsonRpcResponse {
    JsonRpcResponse::success(id, serde_json::to_value(result).unwrap_or(Value::Null))
}

/// An error response: the code, the message and A2A's `ErrorInfo` detail.
pub fn failure(id: JsonRpcId, error: &A2AError) -> JsonRpcResponse {
    let e: JsonRpcError = error.to_jsonrpc_error();
    JsonRpcResponse::error(id, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> (JsonRpcId, i32, String) {
        let (id, e) = parse_request(body.as_bytes()).unwrap_err();
        (id, e.code, e.message)
    }

    #[test]
    fn well_formed_requests() {
        let r = parse_request(
            br#"{"jsonrpc":"2.0","id":"a","method":"GetTask","params":{"id":"task-x"}}"#,
        )
        .unwrap();
        assert_eq!(r.id, JsonRpcId::String("a".into()));
        assert_eq!(r.method, Method::GetTask);
        assert_eq!(r.params["id"], "task-x");
        let r = parse_request(br#"{"jsonrpc":"2.0","id":7,"method":"ListTasks"}"#).unwrap();
        assert_eq!(r.id, JsonRpcId::Number(7));
        assert!(r.params.as_object().unwrap().is_empty());
        for name in Method::NAMES {
            assert!(Method::parse(name).is_some(), "{name}");
        }
        assert!(Method::SubscribeToTask.streams() && !Method::GetTask.streams());
    }

    #[test]
    fn malformed_requests_get_their_code() {
        let cases: &[(&str, i32, &str)] = &[
            ("{not json", -32700, "not JSON"),
            ("[]", -32600, "batch"),
            ("5", -32600, "JSON object"),
            (
                r#"{"jsonrpc":"2.0","method":"GetTask"}"#,
                -32600,
                "`id` is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"GetTask"}"#,
                -32600,
                "`id`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"GetTask"}"#,
                -32600,
                "`id`",
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"GetTask"}"#,
                -32600,
                "`jsonrpc`",
            ),
            (r#"{"id":1,"method":"GetTask"}"#, -32600, "`jsonrpc`"),
            (r#"{"jsonrpc":"2.0","id":1}"#, -32600, "`method`"),
            (r#"{"jsonrpc":"2.0","id":1,"method":3}"#, -32600, "`method`"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"GetTask","extra":1}"#,
                -32600,
                "`extra`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"message/send"}"#,
                -32601,
                "SendMessage",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"GetTask","params":[1]}"#,
                -32602,
                "params",
            ),
        ];
        for (body, code, needle) in cases {
            let (_, c, m) = err(body);
            assert_eq!(c, *code, "{body}: {m}");
            assert!(m.contains(needle), "{body}: {m} should mention {needle}");
        }
        // The id is echoed once it is known.
        let (id, _, _) = err(r#"{"jsonrpc":"2.0","id":"x","method":"Nope"}"#);
        assert_eq!(id, JsonRpcId::String("x".into()));
    }

    #[test]
    fn params_errors_name_the_field() {
        let v = serde_json::json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"nope": 1}]}});
        let e = params::<a2a::SendMessageRequest>(&v).unwrap_err();
        assert_eq!(e.code, -32602);
        assert!(
            e.message.starts_with("params.message.parts"),
            "{}",
            e.message
        );
        let e = params::<a2a::GetTaskRequest>(&serde_json::json!({})).unwrap_err();
        assert!(e.message.contains("`id`"), "{}", e.message);
        let failure = serde_json::to_value(failure(JsonRpcId::Number(1), &e)).unwrap();
        assert_eq!(failure["error"]["code"], -32602);
        assert_eq!(failure["error"]["data"][0]["reason"], "INVALID_PARAMS");
    }
}
