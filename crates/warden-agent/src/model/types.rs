//! The provider-neutral request and response the tool loop works with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One model call: the system prompt, the conversation so far, the tools on offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDefinition>,
    /// The most output tokens the model may produce in this call.
    pub max_tokens: u32,
}

impl ModelRequest {
    /// A request with no system prompt, no tools and `max_tokens` 4096.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            system: None,
            messages,
            tools: Vec::new(),
            max_tokens: 4096,
        }
    }

    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }
}

/// A turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    User {
        text: String,
    },
    /// What the model said before: its text and the tool calls it made.
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The results of the previous assistant turn's tool calls, in any order.
    ToolResults {
        results: Vec<ToolResult>,
    },
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Self::User { text: text.into() }
    }

    /// The assistant turn of a response, to append before its tool results.
    pub fn assistant_from(response: &ModelResponse) -> Self {
        Self::Assistant {
            text: response.text.clone(),
            tool_calls: response.tool_calls.clone(),
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id, which the result must echo.
    pub id: String,
    pub name: String,
    /// The arguments as JSON. When the model produced text that is not JSON, it is kept as a
    /// JSON string so the tool loop can report the invalid arguments to the model.
    pub arguments: Value,
}

/// The outcome of a tool call, sent back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub call_id: String,
    /// The tool's name; some providers (Gemini) match results by name.
    pub name: String,
    pub content: String,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its answer.
    EndTurn,
    /// It wants its tool calls run.
    ToolUse,
    /// It hit `max_tokens`.
    MaxTokens,
    StopSequence,
    ContentFilter,
    /// Anything else, with the provider's own word (or `unknown` when it gave none).
    Other(String),
}

/// Tokens counted by the provider for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, including those read from or written to the cache.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's cache, when it says.
    pub cache_read_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache, when it says.
    pub cache_write_tokens: Option<u64>,
}

impl Usage {
    /// Adds another call's counts (for a run's budget).
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        for (mine, theirs) in [
            (&mut self.cache_read_tokens, other.cache_read_tokens),
            (&mut self.cache_write_tokens, other.cache_write_tokens),
        ] {
            if let Some(n) = theirs {
                *mine = Some(mine.unwrap_or(0) + n);
            }
        }
    }
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// All text blocks, joined.
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// More text.
    Text { text: String },
    /// A tool call in progress: its arguments as received so far (raw, possibly partial JSON).
    ToolCall {
        id: String,
        name: String,
        arguments_so_far: String,
    },
    /// The last event: the whole response.
    Done { response: ModelResponse },
}
