//! The model layer the tool loop calls: which model (`WARDEN_MODEL`), where calls go (each
//! provider's base URL variable, so they can leave through warden's egress credential
//! routes with a placeholder key), and a provider-neutral request and response.
//!
//! Calls go through the `genai` crate (Anthropic Messages, OpenAI Responses and Chat
//! Completions, Gemini, and OpenAI-compatible servers including Ollama's). This layer adds
//! what genai leaves to its callers: retries with exponential backoff and jitter on 429, 5xx,
//! timeouts and connection failures, honouring `retry-after`; a per-attempt timeout; and
//! errors that name the provider, model, URL, status and a body excerpt, never the key.
//!
//! With the `testing` feature, [`testing`] holds a scripted LLM server for tests.

mod client;
mod error;
mod retry;
mod spec;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use client::{ModelClient, ModelStream};
pub use error::{BODY_EXCERPT, ModelError};
pub use retry::RetryPolicy;
pub use spec::{ACCEPTED_FORMS, ApiKey, ModelConfig, ModelSpec, Provider};
pub use types::{
    Message, ModelRequest, ModelResponse, StopReason, StreamEvent, ToolCall, ToolDefinition,
    ToolResult, Usage,
};
