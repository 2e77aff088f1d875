//! The model layer against the scripted LLM server: every provider path, streaming and not;
//! retries, timeouts and bad answers; and a call through warden's egress credential route.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use warden_agent::model::testing::{RecordedRequest, ScriptedLlm, Turn, WireApi};
use warden_agent::model::{
    ApiKey, Message, ModelClient, ModelConfig, ModelError, ModelRequest, ModelResponse, ModelSpec,
    Provider, RetryPolicy, StopReason, StreamEvent, ToolDefinition, ToolResult,
};

const KEY: &str = "test-key-0123456789";
/// Guards against a hang only; no test asserts how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(60);

const PATHS: [Provider; 6] = [
    Provider::Anthropic,
    Provider::OpenAi,
    Provider::OpenAiChat,
    Provider::Gemini,
    Provider::Ollama,
    Provider::OpenAiCompatible,
];

fn wire_api(provider: Provider) -> WireApi {
    match provider {
        Provider::Anthropic => WireApi::AnthropicMessages,
        Provider::OpenAi => WireApi::Responses,
        Provider::Gemini => WireApi::Gemini,
        _ => WireApi::ChatCompletions,
    }
}

fn config(provider: Provider, llm: &ScriptedLlm) -> ModelConfig {
    let (model, base_url) = match provider {
        Provider::Anthropic => ("claude-sonnet-4-5", llm.url()),
        Provider::OpenAi | Provider::OpenAiChat => ("gpt-4.1", llm.openai_base_url()),
        Provider::Ollama => ("qwen3", llm.url()),
        Provider::OpenAiCompatible => ("local-model", llm.openai_base_url()),
        Provider::Gemini => ("gemini-2.5-flash", llm.gemini_base_url()),
    };
    let spec = ModelSpec {
        provider,
        model: model.into(),
        base_url: (provider == Provider::OpenAiCompatible).then(|| base_url.clone()),
    };
    let mut config = ModelConfig::new(spec, base_url, Some(ApiKey::new(KEY)));
    config.use_env_proxy = false;
    config.timeout = Duration::from_secs(20);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    };
    config
}

fn client(provider: Provider, llm: &ScriptedLlm) -> ModelClient {
    ModelClient::new(config(provider, llm)).unwrap()
}

fn bash_tool() -> ToolDefinition {
    ToolDefinition {
        name: "Bash".into(),
        description: "Runs a shell command in the sandbox.".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        }),
    }
}

fn first_request() -> ModelRequest {
    ModelRequest::new(vec![Message::user("List the files.")])
        .with_system("You are warden's test agent.")
        .with_tools(vec![bash_tool()])
        .with_max_tokens(1000)
}

/// One call, streamed or not; for streams, also the deltas.
async fn call(
    client: &ModelClient,
    request: &ModelRequest,
    stream: bool,
) -> (Result<ModelResponse, ModelError>, Vec<StreamEvent>) {
    let mut events = Vec::new();
    let result = tokio::time::timeout(HANG_GUARD, async {
        if stream {
            client.stream(request, |e| events.push(e)).await
        } else {
            client.complete(request).await
        }
    })
    .await
    .expect("hang guard");
    (result, events)
}

fn check_request(r: &RecordedRequest, provider: Provider, stream: bool) {
    assert_eq!(r.api, wire_api(provider), "{provider}");
    assert_eq!(r.stream, stream, "{provider}");
    assert_eq!(
        r.system_prompt().as_deref(),
        Some("You are warden's test agent."),
        "{provider}: {}",
        r.body
    );
    assert_eq!(r.tool_names(), vec!["Bash".to_string()], "{provider}");
    assert_eq!(
        r.last_user_text().as_deref(),
        Some("List the files."),
        "{provider}"
    );
    let key_header = match provider {
        Provider::Anthropic => r.headers.get("x-api-key").cloned(),
        // Google's API key header: the key itself, no scheme, and not in the URL.
        Provider::Gemini => {
            assert_eq!(
                r.headers.get("x-goog-api-key").map(String::as_str),
                Some(KEY)
            );
            assert!(!r.headers.contains_key("authorization"), "{:?}", r.headers);
            r.headers.get("x-goog-api-key").cloned()
        }
        _ => r.headers.get("authorization").cloned(),
    };
    assert!(
        key_header.is_some_and(|v| v.ends_with(KEY)),
        "{provider}: {:?}",
        r.headers
    );
    if provider == Provider::Gemini {
        let (method, query) = if stream {
            ("streamGenerateContent", Some("alt=sse"))
        } else {
            ("generateContent", None)
        };
        assert_eq!(r.path, format!("/v1beta/models/gemini-2.5-flash:{method}"));
        assert_eq!(r.query.as_deref(), query);
        assert_eq!(r.model(), Some("gemini-2.5-flash"));
    }
}

/// The id a tool result comes back under: the call's, except on Gemini, whose results carry
/// no id and are matched by the tool's name.
fn result_id<'a>(provider: Provider, call_id: &'a str, name: &'a str) -> &'a str {
    if provider == Provider::Gemini {
        name
    } else {
        call_id
    }
}

/// Whether `id` is one the client made for a Gemini call (which carries none).
fn made_up_gemini_id(id: &str, name: &str) -> bool {
    id.strip_prefix(&format!("call#{name}#"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test]
async fn text_answers_on_every_path() {
    for provider in PATHS {
        for stream in [false, true] {
            let text = "Hello from the scripted model, in several pieces.";
            let llm = ScriptedLlm::start(vec![Turn::text(text).with_usage(120, 30)]).await;
            let (result, events) = call(&client(provider, &llm), &first_request(), stream).await;
            let response = result.unwrap_or_else(|e| panic!("{provider} stream={stream}: {e}"));
            assert_eq!(response.text, text, "{provider} stream={stream}");
            assert!(response.tool_calls.is_empty());
            assert_eq!(
                response.stop_reason,
                StopReason::EndTurn,
                "{provider} {stream}"
            );
            assert_eq!(response.usage.input_tokens, 120, "{provider} {stream}");
            assert_eq!(response.usage.output_tokens, 30, "{provider} {stream}");
            if stream {
                let deltas: Vec<&str> = events
                    .iter()
                    .filter_map(|e| match e {
                        StreamEvent::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                assert!(deltas.len() > 1, "{provider}: {events:?}");
                assert_eq!(deltas.concat(), text, "{provider}");
            } else {
                assert!(events.is_empty());
            }
            let requests = llm.requests();
            assert_eq!(requests.len(), 1);
            check_request(&requests[0], provider, stream);
            assert!(llm.failures().is_empty(), "{:?}", llm.failures());
        }
    }
}

#[tokio::test]
async fn tool_call_and_result_round_trip_on_every_path() {
    for provider in PATHS {
        for stream in [false, true] {
            let args = json!({"command": "ls -la", "timeout": 30});
            let llm = ScriptedLlm::start(vec![
                Turn::tool_call("call_17", "Bash", args.clone())
                    .with_text("Let me look.")
                    .with_usage(50, 12),
                Turn::text("There is a README.")
                    .with_usage(80, 6)
                    .expect(move |r| match r.last_tool_result() {
                        Some((id, content))
                            if id == result_id(provider, "call_17", "Bash")
                                && content == "README.md\nsrc" =>
                        {
                            Ok(())
                        }
                        other => Err(format!("last tool result {other:?}")),
                    }),
            ])
            .await;
            let client = client(provider, &llm);
            let mut request = first_request();
            let (result, events) = call(&client, &request, stream).await;
            let first = result.unwrap_or_else(|e| panic!("{provider} stream={stream}: {e}"));
            assert_eq!(
                first.stop_reason,
                StopReason::ToolUse,
                "{provider} {stream}"
            );
            assert_eq!(first.text, "Let me look.", "{provider} {stream}");
            assert_eq!(first.tool_calls.len(), 1, "{provider} {stream}");
            let tool_call = &first.tool_calls[0];
            if provider == Provider::Gemini {
                assert!(made_up_gemini_id(&tool_call.id, "Bash"), "{}", tool_call.id);
            } else {
                assert_eq!(tool_call.id, "call_17");
            }
            assert_eq!(tool_call.name, "Bash");
            assert_eq!(tool_call.arguments, args, "{provider} {stream}");
            assert_eq!(
                (first.usage.input_tokens, first.usage.output_tokens),
                (50, 12),
                "{provider} {stream}"
            );
            if stream {
                let last_arguments = events
                    .iter()
                    .filter_map(|e| match e {
                        StreamEvent::ToolCall {
                            id,
                            name,
                            arguments_so_far,
                        } => {
                            assert_eq!((id, name.as_str()), (&tool_call.id, "Bash"));
                            Some(arguments_so_far.clone())
                        }
                        _ => None,
                    })
                    .next_back()
                    .unwrap_or_else(|| panic!("{provider}: no tool-call delta in {events:?}"));
                let parsed: serde_json::Value = serde_json::from_str(&last_arguments).unwrap();
                assert_eq!(parsed, args, "{provider}");
            }

            request.messages.push(Message::assistant_from(&first));
            request.messages.push(Message::ToolResults {
                results: vec![ToolResult {
                    call_id: tool_call.id.clone(),
                    name: "Bash".into(),
                    content: "README.md\nsrc".into(),
                }],
            });
            let (result, _) = call(&client, &request, stream).await;
            let second = result.unwrap_or_else(|e| panic!("{provider} stream={stream}: {e}"));
            assert_eq!(second.text, "There is a README.");
            assert_eq!(second.stop_reason, StopReason::EndTurn);
            let mut total = first.usage;
            total.add(&second.usage);
            assert_eq!((total.input_tokens, total.output_tokens), (130, 18));
            assert!(
                llm.failures().is_empty(),
                "{provider}: {:?}",
                llm.failures()
            );
            assert_eq!(llm.turns_left(), 0);
        }
    }
}

fn read_tool() -> ToolDefinition {
    ToolDefinition {
        name: "Read".into(),
        description: "Reads a file.".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        }),
    }
}

/// Several calls in one answer, two of the same tool: each keeps an id of its own, the same
/// in the stream's deltas and in the response, and each result goes back to its call. On
/// Gemini, whose calls carry no id, the client makes ids that no other call of the client
/// has (genai's own repeat in every answer, and within a streamed answer), and the results
/// go back without an id, by the tool's name, in the calls' order.
#[tokio::test]
async fn several_calls_in_one_answer_keep_their_own_ids() {
    let calls = [
        ("call_a", "Bash", json!({"command": "ls"}), "ls output"),
        ("call_b", "Bash", json!({"command": "pwd"}), "pwd output"),
        ("call_c", "Read", json!({"path": "README.md"}), "# warden"),
    ];
    for provider in PATHS {
        for stream in [false, true] {
            let want: Vec<(String, String)> = calls
                .iter()
                .map(|(id, name, _, out)| (result_id(provider, id, name).into(), out.to_string()))
                .collect();
            let (a, b, c) = (&calls[0], &calls[1], &calls[2]);
            let llm = ScriptedLlm::start(vec![
                Turn::tool_call(a.0, a.1, a.2.clone())
                    .and_tool_call(b.0, b.1, b.2.clone())
                    .and_tool_call(c.0, c.1, c.2.clone()),
                Turn::tool_call("call_d", "Bash", json!({"command": "ls"})).expect(move |r| {
                    let got = r.tool_results();
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("tool results {got:?}"))
                    }
                }),
                Turn::text("done"),
            ])
            .await;
            let client = client(provider, &llm);
            let mut request = first_request().with_tools(vec![bash_tool(), read_tool()]);
            let (result, events) = call(&client, &request, stream).await;
            let first = result.unwrap_or_else(|e| panic!("{provider} {stream}: {e}"));
            assert_eq!(
                first.stop_reason,
                StopReason::ToolUse,
                "{provider} {stream}"
            );
            let got: Vec<(&str, &serde_json::Value)> = first
                .tool_calls
                .iter()
                .map(|c| (c.name.as_str(), &c.arguments))
                .collect();
            let scripted: Vec<(&str, &serde_json::Value)> = calls
                .iter()
                .map(|(_, name, args, _)| (*name, args))
                .collect();
            assert_eq!(got, scripted, "{provider} {stream}");
            let ids: Vec<&str> = first.tool_calls.iter().map(|c| c.id.as_str()).collect();
            if provider == Provider::Gemini {
                for (id, (_, name, _, _)) in ids.iter().zip(&calls) {
                    assert!(made_up_gemini_id(id, name), "{stream}: {ids:?}");
                }
                let mut unique = ids.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), ids.len(), "{stream}: {ids:?}");
            } else {
                assert_eq!(ids, ["call_a", "call_b", "call_c"], "{provider} {stream}");
            }
            if stream {
                // The ids the deltas named, in order, each with its last arguments.
                let mut streamed: Vec<(String, String)> = Vec::new();
                for event in &events {
                    if let StreamEvent::ToolCall {
                        id,
                        arguments_so_far,
                        ..
                    } = event
                    {
                        match streamed.iter_mut().find(|(seen, _)| seen == id) {
                            Some(entry) => entry.1 = arguments_so_far.clone(),
                            None => streamed.push((id.clone(), arguments_so_far.clone())),
                        }
                    }
                }
                let streamed_ids: Vec<&str> = streamed.iter().map(|(id, _)| id.as_str()).collect();
                assert_eq!(streamed_ids, ids, "{provider}");
                for ((_, arguments), call) in streamed.iter().zip(&first.tool_calls) {
                    let parsed: serde_json::Value = serde_json::from_str(arguments).unwrap();
                    assert_eq!(parsed, call.arguments, "{provider}");
                }
            }

            request.messages.push(Message::assistant_from(&first));
            request.messages.push(Message::ToolResults {
                results: first
                    .tool_calls
                    .iter()
                    .zip(&calls)
                    .map(|(call, (_, _, _, out))| ToolResult {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        content: out.to_string(),
                    })
                    .collect(),
            });
            let (result, _) = call(&client, &request, stream).await;
            let second = result.unwrap_or_else(|e| panic!("{provider} {stream}: {e}"));
            assert_eq!(second.tool_calls.len(), 1, "{provider} {stream}");
            let next_id = second.tool_calls[0].id.clone();
            assert!(!ids.contains(&next_id.as_str()), "{provider}: {next_id}");
            if provider == Provider::Gemini {
                // The calls and results the client sent back name no id.
                let r = &llm.requests()[1];
                let contents = r.body["contents"].as_array().unwrap();
                let model_parts = contents
                    .iter()
                    .find(|c| c["role"] == "model")
                    .and_then(|c| c["parts"].as_array())
                    .unwrap();
                let sent_calls: Vec<&serde_json::Value> = model_parts
                    .iter()
                    .filter_map(|p| p.get("functionCall"))
                    .collect();
                assert_eq!(sent_calls.len(), 3, "{}", r.body);
                assert!(
                    sent_calls.iter().all(|c| c.get("id").is_none()),
                    "{}",
                    r.body
                );
                let last = contents.last().unwrap();
                assert_eq!(last["role"], "user");
                let names: Vec<&str> = last["parts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        assert!(p["functionResponse"].get("id").is_none(), "{p}");
                        p["functionResponse"]["name"].as_str().unwrap()
                    })
                    .collect();
                assert_eq!(names, ["Bash", "Bash", "Read"]);
            }

            request.messages.push(Message::assistant_from(&second));
            request.messages.push(Message::ToolResults {
                results: vec![ToolResult {
                    call_id: next_id,
                    name: "Bash".into(),
                    content: "ls output".into(),
                }],
            });
            let (result, _) = call(&client, &request, stream).await;
            assert_eq!(result.unwrap().text, "done");
            assert!(
                llm.failures().is_empty(),
                "{provider} {stream}: {:?}",
                llm.failures()
            );
        }
    }
}

#[tokio::test]
async fn cache_reads_are_counted() {
    for provider in [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::OpenAiChat,
        Provider::Gemini,
    ] {
        for stream in [false, true] {
            let llm = ScriptedLlm::start(vec![
                Turn::text("cached").with_usage(100, 5).with_cache_read(40),
            ])
            .await;
            let (result, _) = call(&client(provider, &llm), &first_request(), stream).await;
            let usage = result.unwrap().usage;
            assert_eq!(usage.input_tokens, 100, "{provider} {stream}: {usage:?}");
            assert_eq!(usage.cache_read_tokens, Some(40), "{provider} {stream}");
        }
    }
}

#[tokio::test]
async fn stream_events_end_with_the_whole_response() {
    for provider in PATHS {
        let llm = ScriptedLlm::start(vec![Turn::text("streamed as a Stream")]).await;
        let client = client(provider, &llm);
        let mut stream = client.stream_events(first_request());
        let mut text = String::new();
        let mut done = None;
        while let Some(event) = tokio::time::timeout(HANG_GUARD, stream.next())
            .await
            .expect("hang guard")
        {
            match event.unwrap() {
                StreamEvent::Text { text: t } => text.push_str(&t),
                StreamEvent::ToolCall { .. } => panic!("no tool call was scripted"),
                StreamEvent::Done { response } => done = Some(response),
            }
        }
        let done = done.expect("a Done event");
        assert_eq!(text, "streamed as a Stream", "{provider}");
        assert_eq!(done.text, text, "{provider}");
    }
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    // Gemini's wait is in the body (`RetryInfo.retryDelay`), not in a header.
    for (provider, stream) in [
        (Provider::Anthropic, false),
        (Provider::OpenAiChat, true),
        (Provider::Gemini, false),
        (Provider::Gemini, true),
    ] {
        let llm = ScriptedLlm::start(vec![
            Turn::rate_limited("1"),
            Turn::rate_limited("0"),
            Turn::text("after the rate limit"),
        ])
        .await;
        let (result, _) = call(&client(provider, &llm), &first_request(), stream).await;
        assert_eq!(result.unwrap().text, "after the rate limit", "{provider}");
        let requests = llm.requests();
        assert_eq!(requests.len(), 3, "{provider}");
        // The backoff alone is at most 20 ms; only `retry-after: 1` explains a full second.
        let gap = requests[1].received_at - requests[0].received_at;
        assert!(
            gap >= Duration::from_millis(950),
            "{provider} {stream}: {gap:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_are_retried() {
    for provider in [Provider::Anthropic, Provider::Gemini] {
        for stream in [false, true] {
            let llm = ScriptedLlm::start(vec![
                Turn::status(500, "internal"),
                Turn::status(529, "overloaded"),
                Turn::text("third time"),
            ])
            .await;
            let (result, _) = call(&client(provider, &llm), &first_request(), stream).await;
            let response = result.unwrap_or_else(|e| panic!("{provider} {stream}: {e}"));
            assert_eq!(response.text, "third time");
            assert_eq!(llm.requests().len(), 3);
        }
    }
}

#[tokio::test]
async fn retries_give_up_after_the_cap_with_a_clear_error() {
    for (provider, stream) in [
        (Provider::OpenAi, false),
        (Provider::Anthropic, true),
        (Provider::Gemini, false),
        (Provider::Gemini, true),
    ] {
        let llm = ScriptedLlm::start(vec![
            Turn::status(503, "backend unavailable (a)"),
            Turn::status(503, "backend unavailable (b)"),
            Turn::status(503, "backend unavailable (c)"),
            Turn::text("never reached"),
        ])
        .await;
        let (result, _) = call(&client(provider, &llm), &first_request(), stream).await;
        let error = result.unwrap_err();
        assert_eq!(error.status(), Some(503));
        assert_eq!(error.attempts(), Some(3));
        let message = error.to_string();
        for part in [
            provider.as_str(),
            "HTTP 503",
            "after 3 attempt(s)",
            "backend unavailable (c)",
        ] {
            assert!(message.contains(part), "{part} missing: {message}");
        }
        assert!(!message.contains(KEY));
        assert_eq!(llm.requests().len(), 3);
        assert_eq!(llm.turns_left(), 1);
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keys_are_redacted() {
    for provider in [Provider::OpenAiChat, Provider::Gemini] {
        for stream in [false, true] {
            let llm = ScriptedLlm::start(vec![
                Turn::status(401, &format!("Incorrect API key provided: {KEY}")),
                Turn::text("never reached"),
            ])
            .await;
            let (result, _) = call(&client(provider, &llm), &first_request(), stream).await;
            let error = result.unwrap_err();
            assert_eq!(error.status(), Some(401), "{provider} {stream}");
            assert!(!error.is_retryable());
            let message = error.to_string();
            assert!(!message.contains(KEY), "{message}");
            assert!(
                message.contains("Incorrect API key provided: <redacted>"),
                "{message}"
            );
            assert_eq!(llm.requests().len(), 1);
        }
    }
}

#[tokio::test]
async fn a_hang_times_out_and_is_retried_up_to_the_cap() {
    for provider in [Provider::Anthropic, Provider::Gemini] {
        for stream in [false, true] {
            let llm = ScriptedLlm::start(vec![Turn::hang(), Turn::hang()]).await;
            let mut config = config(provider, &llm);
            config.timeout = Duration::from_millis(300);
            config.retry.max_attempts = 2;
            let client = ModelClient::new(config).unwrap();
            let (result, _) = call(&client, &first_request(), stream).await;
            let error = result.unwrap_err();
            assert!(
                matches!(error, ModelError::Timeout { .. }),
                "{provider} {stream}: {error}"
            );
            assert_eq!(error.attempts(), Some(2));
            let message = error.to_string();
            assert!(message.contains("no answer within 300ms"), "{message}");
            assert!(message.contains(&llm.url()), "{message}");
            assert_eq!(llm.requests().len(), 2);
        }
    }
}

#[tokio::test]
async fn a_garbage_body_is_a_clear_error() {
    for provider in [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::OpenAiChat,
        Provider::Gemini,
    ] {
        for stream in [false, true] {
            let llm = ScriptedLlm::start(vec![Turn::garbage(), Turn::text("never reached")]).await;
            let (result, _) = call(&client(provider, &llm), &first_request(), stream).await;
            let error = result.unwrap_err();
            assert!(
                matches!(error, ModelError::InvalidResponse { .. }),
                "{provider} {stream}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains("is not a valid response"), "{message}");
            if !stream {
                assert!(message.contains("<html>"), "{message}");
            }
            assert_eq!(llm.requests().len(), 1, "{provider} {stream}: not retried");
        }
    }
}

#[tokio::test]
async fn a_failed_expectation_reaches_the_client_and_the_test() {
    for provider in [Provider::Anthropic, Provider::Gemini] {
        let llm = ScriptedLlm::start(vec![Turn::text("no").expect(|r| {
            r.last_tool_result()
                .map(|_| ())
                .ok_or_else(|| "no tool result in the request".to_string())
        })])
        .await;
        let (result, _) = call(&client(provider, &llm), &first_request(), false).await;
        let error = result.unwrap_err();
        assert_eq!(error.status(), Some(400), "{provider}");
        let message = error.to_string();
        assert!(
            message.contains("no tool result in the request"),
            "{message}"
        );
        assert_eq!(llm.failures().len(), 1);
    }
}

#[tokio::test]
async fn warden_model_from_the_environment_reaches_the_server() {
    let llm = ScriptedLlm::start(vec![Turn::text("from ollama")]).await;
    let host = llm.addr().to_string();
    let env = move |name: &str| match name {
        "WARDEN_MODEL" => Some("ollama/qwen3:8b".to_string()),
        "OLLAMA_HOST" => Some(host.clone()),
        _ => None,
    };
    let mut config = ModelConfig::from_env(env).unwrap();
    config.use_env_proxy = false;
    let (result, _) = call(&ModelClient::new(config).unwrap(), &first_request(), false).await;
    assert_eq!(result.unwrap().text, "from ollama");
    assert_eq!(llm.requests()[0].model(), Some("qwen3:8b"));
    assert_eq!(llm.requests()[0].path, "/v1/chat/completions");
}

#[tokio::test]
async fn gemini_from_the_environment_reaches_the_server() {
    for (key_var, stream) in [("GEMINI_API_KEY", false), ("GOOGLE_API_KEY", true)] {
        let llm = ScriptedLlm::start(vec![Turn::text("from gemini")]).await;
        let base = llm.gemini_base_url();
        let env = move |name: &str| match name {
            "WARDEN_MODEL" => Some("gemini/gemini-2.5-pro".to_string()),
            "GEMINI_BASE_URL" => Some(base.clone()),
            n if n == key_var => Some(KEY.to_string()),
            _ => None,
        };
        let mut config = ModelConfig::from_env(env).unwrap();
        config.use_env_proxy = false;
        let client = ModelClient::new(config).unwrap();
        assert_eq!(
            client.url(),
            format!(
                "{}/models/gemini-2.5-pro:generateContent",
                llm.gemini_base_url()
            )
        );
        let (result, _) = call(&client, &first_request(), stream).await;
        assert_eq!(result.unwrap().text, "from gemini");
        let r = &llm.requests()[0];
        assert_eq!(r.api, WireApi::Gemini);
        assert_eq!(r.model(), Some("gemini-2.5-pro"));
        let method = if stream {
            "streamGenerateContent"
        } else {
            "generateContent"
        };
        assert_eq!(r.path, format!("/v1beta/models/gemini-2.5-pro:{method}"));
        assert_eq!(r.query.as_deref(), stream.then_some("alt=sse"));
        assert_eq!(
            r.headers.get("x-goog-api-key").map(String::as_str),
            Some(KEY)
        );
        assert_eq!(
            r.body.pointer("/generationConfig/maxOutputTokens"),
            Some(&json!(1000))
        );
    }
}

/// The sandbox side holds a placeholder key and a base URL on warden's egress proxy; the
/// proxy adds the real key and forwards to the (scripted) provider.
#[tokio::test]
async fn through_the_egress_credential_route_the_real_key_is_added_outside() {
    use warden_egress::{ChannelSink, EgressPolicy, Proxy, ProxyOptions, Routes};
    use warden_policy::{AuthScheme, CredentialSpec, RouteKind, RouteSpec};

    const SECRET: &str = "sk-ant-real-secret-9876543210";
    const PLACEHOLDER: &str = "warden-credential-route-placeholder";
    let llm = ScriptedLlm::start(vec![
        Turn::tool_call("call_1", "Bash", json!({"command": "true"})),
        Turn::text("through the route"),
    ])
    .await;
    let spec = RouteSpec {
        name: "anthropic".into(),
        kind: RouteKind::Anthropic,
        upstream: llm.url(),
        header: "x-api-key".into(),
        scheme: AuthScheme::Raw,
        username: String::new(),
        credential: CredentialSpec::Env("TEST_ANTHROPIC_SECRET".into()),
        ca_file: None,
    };
    let env = |name: &str| (name == "TEST_ANTHROPIC_SECRET").then(|| SECRET.to_string());
    let routes = Routes::load(&[spec], &env, Duration::from_secs(5)).unwrap();
    let (sink, _events) = ChannelSink::new();
    let proxy = Proxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        EgressPolicy::new(),
        Arc::new(sink),
        ProxyOptions::new("sb-model"),
    )
    .await
    .unwrap();
    let own = proxy.local_addr().to_string();
    let proxy = proxy.with_routes(routes.answer_as(own)).spawn();

    // What `warden run --route anthropic` puts in the sandbox's environment.
    let base = format!("http://{}/anthropic", proxy.local_addr());
    let sandbox_env = move |name: &str| match name {
        "WARDEN_MODEL" => Some("anthropic/claude-sonnet-4-5".to_string()),
        "ANTHROPIC_BASE_URL" => Some(base.clone()),
        "ANTHROPIC_API_KEY" => Some(PLACEHOLDER.to_string()),
        _ => None,
    };
    let mut config = ModelConfig::from_env(sandbox_env).unwrap();
    config.use_env_proxy = false;
    let client = ModelClient::new(config).unwrap();
    for stream in [false, true] {
        let (result, _) = call(&client, &first_request(), stream).await;
        let response = result.unwrap();
        if stream {
            assert_eq!(response.text, "through the route");
        } else {
            assert_eq!(response.tool_calls[0].name, "Bash");
        }
    }
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.headers.get("x-api-key").map(String::as_str), Some(SECRET));
        assert!(r.headers.contains_key("anthropic-version"));
        assert!(!r.body.to_string().contains(PLACEHOLDER));
    }
}

/// The scripted server's Gemini answers in Google's own shapes, read without genai: errors
/// as `google.rpc.Status` with the wait in a `RetryInfo` (and no `retry-after` header), a
/// stream without `alt=sse` as one JSON array, and calls without ids.
#[tokio::test]
async fn the_scripted_gemini_server_speaks_googles_shapes() {
    let llm = ScriptedLlm::start(vec![
        Turn::rate_limited("2"),
        Turn::tool_call("ignored", "Bash", json!({"command": "ls"}))
            .with_text("Looking.")
            .with_usage(40, 9)
            .with_cache_read(30),
    ])
    .await;
    // Plain HTTP; reqwest still wants a TLS setup.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .unwrap();
    let url = |method: &str| format!("{}/models/gemini-2.5-flash:{method}", llm.gemini_base_url());
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let post = |url: String| {
        http.post(url)
            .header("x-goog-api-key", KEY)
            .body(body.to_string())
            .send()
    };

    let response = post(url("generateContent")).await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_none());
    let error: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(error["error"]["code"], 429);
    assert_eq!(error["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        error["error"]["details"][0],
        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"})
    );

    let response = post(url("streamGenerateContent")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let chunks: Vec<serde_json::Value> =
        serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(chunks.len() > 1, "{chunks:?}");
    let parts: Vec<&serde_json::Value> = chunks
        .iter()
        .flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().unwrap())
        .collect();
    let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    assert_eq!(text, "Looking.");
    let calls: Vec<&serde_json::Value> =
        parts.iter().filter_map(|p| p.get("functionCall")).collect();
    assert_eq!(calls, [&json!({"name": "Bash", "args": {"command": "ls"}})]);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 40, "candidatesTokenCount": 9,
               "totalTokenCount": 49, "cachedContentTokenCount": 30})
    );
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none())
    );

    let response = post(url("countTokens")).await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "an unknown method is not recorded");
    assert!(requests[1].stream && !requests[1].sse());
    assert_eq!(requests[1].last_user_text().as_deref(), Some("hi"));
}
