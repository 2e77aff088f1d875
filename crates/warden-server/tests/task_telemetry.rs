//! Task traces against a fake OTLP/HTTP collector: a task's steps and a synthetic agent run
//! (turns, tool calls, an error, a denial, a sub-agent) exported as one trace after the GenAI
//! conventions; nothing sent, not even a connection, when export is off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::json;
use warden_agent::model::Usage;
use warden_agent::run::{AgentEvent, RunStatus};
use warden_server::tasks::model::{TaskDefaults, TaskStatus, TaskSubmission, Timestamp};
use warden_server::tasks::telemetry::{Telemetry, TelemetryConfig};
use warden_server::tasks::{Task, TaskSpec};

/// What the fake collector saw: each export's headers and body, and every connection.
#[derive(Clone, Default)]
struct Seen {
    exports: Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>,
    connections: Arc<AtomicUsize>,
}

async fn collector() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = seen.connections.clone();
    let listener = listener.tap_io(move |_| {
        connections.fetch_add(1, Ordering::SeqCst);
    });
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    seen.exports.lock().unwrap().push((headers, request));
    (
        [(CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn spec() -> TaskSpec {
    TaskSubmission {
        repo: "https://git.example.com/org/repo.git".into(),
        task: "fix the typo".into(),
        base_branch: Some("main".into()),
        model: Some("anthropic/claude-sonnet-4-5".into()),
        ..TaskSubmission::default()
    }
    .validate("task-otel1", &TaskDefaults::default())
    .unwrap()
}

/// A task a runner just claimed: submitted 3 s ago, started 2 s ago.
fn running_task() -> Task {
    let now = Timestamp::now();
    let mut task = Task::new("task-otel1".into(), spec(), Timestamp(now.millis() - 3000));
    task.status = TaskStatus::Running;
    task.started_at = Some(Timestamp(now.millis() - 2000));
    task.attempts = 1;
    task.sandbox = Some("sbx-otel1".into());
    task
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: None,
        cache_write_tokens: None,
    }
}

fn tool_call(call_id: &str, tool: &str, subagent: Option<&str>) -> AgentEvent {
    AgentEvent::ToolCall {
        call_id: call_id.into(),
        tool: tool.into(),
        input: json!({}),
        subagent: subagent.map(Into::into),
    }
}

fn tool_result(call_id: &str, tool: &str, is_error: bool) -> AgentEvent {
    AgentEvent::ToolResult {
        call_id: call_id.into(),
        tool: tool.into(),
        is_error,
        output: "output".into(),
        truncated_for_model: false,
    }
}

fn decision(call_id: &str, decision: &str) -> AgentEvent {
    AgentEvent::Decision {
        call_id: call_id.into(),
        decision: decision.into(),
        basis: "rule".into(),
    }
}

fn assistant(turn: u32, tool_calls: usize, stop_reason: &str, usage: Usage) -> AgentEvent {
    AgentEvent::Assistant {
        turn,
        text: "text".into(),
        tool_calls,
        stop_reason: stop_reason.into(),
        usage,
    }
}

/// Three model turns: two Bash calls (the second fails), then a Bash call a person denies
/// and a sub-agent (the Task tool) that reads a file, then the answer.
fn agent_run() -> Vec<AgentEvent> {
    let mut first = usage(1200, 80);
    first.cache_read_tokens = Some(1000);
    vec![
        AgentEvent::RunStarted {
            run_id: "run-otel1".into(),
            agent: "warden".into(),
            model: "anthropic/claude-sonnet-4-5".into(),
            repo: "/workspace".into(),
            prompt: "fix the typo".into(),
        },
        AgentEvent::Loaded {
            instructions: vec!["CLAUDE.md".into()],
            skills: vec![],
            subagents: vec!["explorer".into()],
            trust: "trusted".into(),
        },
        AgentEvent::TextDelta {
            text: "Let me".into(),
        },
        assistant(1, 2, "tool_use", first),
        tool_call("call-1", "Bash", None),
        decision("call-1", "allow"),
        tool_call("call-2", "Bash", None),
        decision("call-2", "allow"),
        tool_result("call-1", "Bash", false),
        tool_result("call-2", "Bash", true),
        assistant(2, 2, "tool_use", usage(1500, 120)),
        tool_call("call-3", "Bash", None),
        decision("call-3", "ask"),
        AgentEvent::ApprovalRequested {
            call_id: "call-3".into(),
            tool: "Bash".into(),
            call: "Bash(git push --force)".into(),
            basis: "ask rule".into(),
            deadline: "2030-01-01T00:00:00Z".into(),
        },
        AgentEvent::ApprovalAnswered {
            call_id: "call-3".into(),
            approved: false,
            reason: Some("no force pushes".into()),
            by: "api".into(),
        },
        tool_result("call-3", "Bash", true),
        tool_call("call-4", "Task", None),
        AgentEvent::SubagentStarted {
            call_id: "call-4".into(),
            name: "explorer".into(),
            prompt: "find the typo".into(),
        },
        tool_call("call-5", "Read", Some("explorer")),
        tool_result("call-5", "Read", false),
        AgentEvent::SubagentFinished {
            call_id: "call-4".into(),
            name: "explorer".into(),
            status: RunStatus::Succeeded,
            result: "README.md line 3".into(),
        },
        tool_result("call-4", "Task", false),
        assistant(3, 0, "end_turn", usage(1800, 200)),
        AgentEvent::RunFinished {
            status: RunStatus::Succeeded,
            result: "Fixed.".into(),
            error: None,
            turns: 3,
            usage: usage(4500, 400),
            cost_usd: Some(0.0123),
        },
    ]
}

/// Runs a task through `telemetry` as the runner would: steps, the agent's events, a push
/// that fails, the task FAILED. Returns the finished task and the traceparent the sandbox
/// would have got.
async fn run_task(telemetry: &Telemetry) -> (Task, Option<String>) {
    let mut task = running_task();
    let mut trace = telemetry.task_trace(&task);
    let traceparent = trace.traceparent();
    for step in ["sandbox", "clone", "branch"] {
        let span = trace.step(step);
        tokio::time::sleep(Duration::from_millis(2)).await;
        span.end(Ok(()));
    }
    let agent = trace.step("agent");
    for ev in agent_run() {
        trace.agent_event(&ev);
        // Distinct arrival times, so the order of spans is visible in their times.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    agent.end(Ok(()));
    trace.step("commit").end(Ok(()));
    trace
        .step("push")
        .end(Err("the remote rejected the push: protected branch"));
    task.status = TaskStatus::Failed;
    task.reason = Some("push failed: protected branch".into());
    task.usage.input_tokens = 4500;
    task.usage.output_tokens = 400;
    task.cost_usd = Some(0.0123);
    task.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
    task.finished_at = Some(Timestamp::now());
    trace.finish(&task);
    (task, traceparent)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    attr_of(&span.attributes, key)
}

fn attr_of<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{}: {key} is {other:?}, not a string", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(n)) => *n,
        other => panic!("{}: {key} is {other:?}, not an integer", span.name),
    }
}

fn strings(span: &Span, key: &str) -> Vec<String> {
    match attr(span, key) {
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Value::StringValue(s)) => s.clone(),
                other => panic!("{}: {key} holds {other:?}", span.name),
            })
            .collect(),
        other => panic!("{}: {key} is {other:?}, not an array", span.name),
    }
}

fn status(span: &Span) -> (StatusCode, &str) {
    let s = span.status.as_ref();
    (
        s.map_or(StatusCode::Unset, |s| s.code()),
        s.map_or("", |s| s.message.as_str()),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_task_is_one_trace_after_the_genai_conventions() {
    let (addr, seen) = collector().await;
    let endpoint = format!("http://{addr}");
    let env: HashMap<&str, String> = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "warden-test".to_string()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-collector-token=s3cret%20value".to_string(),
        ),
    ]);
    let cfg = TelemetryConfig::from_lookup(|name| env.get(name).cloned()).unwrap();
    let telemetry = Telemetry::start(&cfg).unwrap();
    assert!(telemetry.is_enabled());

    let (task, traceparent) = run_task(&telemetry).await;
    telemetry.shutdown().await;

    let exports = seen.exports.lock().unwrap().clone();
    assert!(!exports.is_empty(), "the collector received nothing");
    let mut spans: Vec<Span> = Vec::new();
    for (headers, request) in &exports {
        assert_eq!(headers[CONTENT_TYPE], "application/x-protobuf");
        assert_eq!(headers["x-collector-token"], "s3cret value");
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().expect("a resource");
            assert!(
                matches!(attr_of(&resource.attributes, "service.name"),
                    Some(Value::StringValue(s)) if s == "warden-test"),
                "{:?}",
                resource.attributes
            );
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, "warden-server");
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let by_name = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let one = |name: &str| -> &Span {
        let found = by_name(name);
        assert_eq!(found.len(), 1, "{name} in {names:?}");
        found[0]
    };

    // One trace, the one the sandbox was told about.
    let trace_id = spans[0].trace_id.clone();
    assert!(spans.iter().all(|s| s.trace_id == trace_id), "{names:?}");
    let root = one("invoke_agent warden");
    let traceparent = traceparent.expect("a traceparent when exporting");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", hex(&trace_id), hex(&root.span_id))
    );

    // The root: from the submission to the end, with the task's facts and outcome.
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.kind(), SpanKind::Internal);
    assert_eq!(
        root.start_time_unix_nano,
        task.created_at.millis() as u64 * 1_000_000
    );
    assert!(root.end_time_unix_nano >= task.finished_at.unwrap().millis() as u64 * 1_000_000);
    assert_eq!(text(root, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(text(root, "gen_ai.agent.name"), "warden");
    assert_eq!(text(root, "gen_ai.request.model"), "claude-sonnet-4-5");
    assert_eq!(text(root, "gen_ai.provider.name"), "anthropic");
    assert_eq!(text(root, "gen_ai.conversation.id"), "run-otel1");
    assert_eq!(text(root, "warden.task.id"), "task-otel1");
    assert_eq!(
        text(root, "warden.task.repo"),
        "https://git.example.com/org/repo.git"
    );
    assert_eq!(text(root, "warden.task.branch"), "warden/task-otel1");
    assert_eq!(text(root, "warden.task.base_branch"), "main");
    assert_eq!(text(root, "warden.task.status"), "FAILED");
    assert_eq!(
        text(root, "warden.task.commit"),
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(int(root, "gen_ai.usage.input_tokens"), 4500);
    assert_eq!(int(root, "gen_ai.usage.output_tokens"), 400);
    assert!(
        matches!(attr(root, "warden.task.cost_usd"), Some(Value::DoubleValue(c)) if (*c - 0.0123).abs() < 1e-9)
    );
    assert_eq!(text(root, "warden.agent.status"), "succeeded");
    assert_eq!(text(root, "error.type"), "failed");
    assert_eq!(
        status(root),
        (StatusCode::Error, "push failed: protected branch")
    );

    // Steps under the root; the queue from submission to start; the failed push.
    for step in [
        "queue", "sandbox", "clone", "branch", "agent", "commit", "push",
    ] {
        let s = one(step);
        assert_eq!(s.parent_span_id, root.span_id, "{step}");
        assert_eq!(s.kind(), SpanKind::Internal, "{step}");
        assert_eq!(text(s, "warden.step"), step);
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{step}");
        if step != "push" {
            assert_eq!(status(s).0, StatusCode::Unset, "{step}");
        }
    }
    let queue = one("queue");
    assert_eq!(queue.start_time_unix_nano, root.start_time_unix_nano);
    assert_eq!(
        queue.end_time_unix_nano,
        task.started_at.unwrap().millis() as u64 * 1_000_000
    );
    let push = one("push");
    assert_eq!(
        status(push),
        (
            StatusCode::Error,
            "the remote rejected the push: protected branch"
        )
    );
    assert_eq!(text(push, "error.type"), "_OTHER");

    // One CLIENT chat span per turn, with provider, models, usage and finish reasons.
    let mut chats = by_name("chat claude-sonnet-4-5");
    chats.sort_by_key(|s| int(s, "warden.agent.turn"));
    assert_eq!(chats.len(), 3, "{names:?}");
    let expected = [
        (1200, 80, "tool_use"),
        (1500, 120, "tool_use"),
        (1800, 200, "end_turn"),
    ];
    for (chat, (input, output, reason)) in chats.iter().zip(expected) {
        assert_eq!(chat.parent_span_id, root.span_id);
        assert_eq!(chat.kind(), SpanKind::Client);
        assert_eq!(text(chat, "gen_ai.operation.name"), "chat");
        assert_eq!(text(chat, "gen_ai.provider.name"), "anthropic");
        assert_eq!(text(chat, "gen_ai.request.model"), "claude-sonnet-4-5");
        assert_eq!(text(chat, "gen_ai.response.model"), "claude-sonnet-4-5");
        assert_eq!(text(chat, "gen_ai.conversation.id"), "run-otel1");
        assert_eq!(int(chat, "gen_ai.usage.input_tokens"), input);
        assert_eq!(int(chat, "gen_ai.usage.output_tokens"), output);
        assert_eq!(strings(chat, "gen_ai.response.finish_reasons"), [reason]);
        assert!(chat.start_time_unix_nano < chat.end_time_unix_nano);
        assert_eq!(status(chat).0, StatusCode::Unset);
    }
    assert_eq!(int(chats[0], "gen_ai.usage.cache_read.input_tokens"), 1000);
    assert!(attr(chats[1], "gen_ai.usage.cache_read.input_tokens").is_none());

    // Tool calls from ToolCall to ToolResult, with their ids; the failed and the denied one
    // in error.
    let bash = by_name("execute_tool Bash");
    assert_eq!(bash.len(), 3, "{names:?}");
    let call = |id: &str| -> &Span {
        bash.iter()
            .copied()
            .find(|s| text(s, "gen_ai.tool.call.id") == id)
            .unwrap_or_else(|| panic!("no Bash span for {id}"))
    };
    for id in ["call-1", "call-2", "call-3"] {
        let s = call(id);
        assert_eq!(s.parent_span_id, root.span_id, "{id}");
        assert_eq!(s.kind(), SpanKind::Internal, "{id}");
        assert_eq!(text(s, "gen_ai.operation.name"), "execute_tool");
        assert_eq!(text(s, "gen_ai.tool.name"), "Bash");
        assert!(s.start_time_unix_nano < s.end_time_unix_nano, "{id}");
    }
    assert_eq!(status(call("call-1")).0, StatusCode::Unset);
    assert_eq!(text(call("call-1"), "warden.tool.decision"), "allow");
    assert_eq!(status(call("call-2")).0, StatusCode::Error);
    assert_eq!(text(call("call-2"), "error.type"), "tool_error");
    assert_eq!(status(call("call-3")).0, StatusCode::Error);
    assert_eq!(text(call("call-3"), "error.type"), "denied");
    let approvals: Vec<&str> = call("call-3")
        .events
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        approvals,
        ["warden.approval.requested", "warden.approval.answered"]
    );
    // A turn runs from the end of what came before it: the second starts when the last
    // result of the first turn's tool calls came in, and ends before the next calls start.
    assert_eq!(
        chats[1].start_time_unix_nano,
        call("call-2").end_time_unix_nano
    );
    assert!(chats[0].end_time_unix_nano <= call("call-1").start_time_unix_nano);
    assert!(chats[1].end_time_unix_nano <= call("call-3").start_time_unix_nano);

    // The sub-agent inside its Task call, and the call it made inside the sub-agent.
    let task_call = one("execute_tool Task");
    assert_eq!(task_call.parent_span_id, root.span_id);
    let explorer = one("invoke_agent explorer");
    assert_eq!(explorer.parent_span_id, task_call.span_id);
    assert_eq!(text(explorer, "gen_ai.agent.name"), "explorer");
    assert_eq!(text(explorer, "gen_ai.operation.name"), "invoke_agent");
    let read = one("execute_tool Read");
    assert_eq!(read.parent_span_id, explorer.span_id);
    assert_eq!(text(read, "gen_ai.tool.call.id"), "call-5");

    // Everything sits inside the root.
    for s in &spans {
        assert!(
            s.start_time_unix_nano >= root.start_time_unix_nano
                && s.end_time_unix_nano <= root.end_time_unix_nano,
            "{} lies outside the root",
            s.name
        );
    }
    assert_eq!(spans.len(), 1 + 7 + 3 + 3 + 1 + 1 + 1, "{names:?}");
}

#[tokio::test]
async fn nothing_is_sent_when_export_is_off() {
    let (addr, seen) = collector().await;
    let endpoint = format!("http://{addr}");
    let off = [
        Telemetry::disabled(),
        Telemetry::start(&TelemetryConfig::from_lookup(|_| None).unwrap()).unwrap(),
        Telemetry::start(
            &TelemetryConfig::from_lookup(|name| match name {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
                "OTEL_SDK_DISABLED" => Some("true".into()),
                _ => None,
            })
            .unwrap(),
        )
        .unwrap(),
        Telemetry::start(
            &TelemetryConfig::from_lookup(|name| match name {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
                "OTEL_TRACES_EXPORTER" => Some("none".into()),
                _ => None,
            })
            .unwrap(),
        )
        .unwrap(),
    ];
    for telemetry in &off {
        assert!(!telemetry.is_enabled());
        let task = running_task();
        let trace = telemetry.task_trace(&task);
        assert!(!trace.is_enabled());
        assert_eq!(trace.trace_id(), None);
        drop(trace);
        let (_, traceparent) = run_task(telemetry).await;
        assert_eq!(traceparent, None);
        telemetry.flush().await;
        telemetry.shutdown().await;
    }
    // Give a stray export time to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0);
    assert!(seen.exports.lock().unwrap().is_empty());
}

#[test]
fn a_bad_setting_is_named() {
    let e = TelemetryConfig::from_lookup(|name| {
        (name == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "grpc".to_string())
    })
    .unwrap_err();
    let shown = e.to_string();
    assert!(shown.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL"), "{shown}");
    assert!(shown.contains("http/protobuf"), "{shown}");
    let e = Telemetry::start(&TelemetryConfig::otlp_http("collector:4318")).unwrap_err();
    assert!(e.to_string().contains("http://"), "{e}");
}
