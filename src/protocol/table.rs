//! Which type goes where: every file of protocol/schemas/, its title and
//! description, the type at its root and the types of its named `$defs`
//! (the anchors protocol/*.md and the tests cite). A type referred to but
//! placed nowhere is added to the `$defs` of the first file that needs it.

use serde_json::Value;
use utoipa::{
    openapi::{RefOr, Schema},
    ToSchema,
};

use crate::{
    agent::ChatMessage,
    domain::{
        AgentEvent, AgentId, Channel, ChannelEvent, EventBody, EventFields, EventId, FunctionCall,
        KeyId, LogLine, MessageType, RunId, Seq, SessionId, Timestamp, ToolId,
    },
    http::{
        account::AccountView,
        agents::{CreateAgent, UpdateAgent},
        keys::{CreateKeyBody, MintedKey, RotateKey, UpdateKey},
        messages::{RunResult, SendMessage},
        openapi::schemas::ErrorEnvelope,
        providers::{ProviderList, ProviderStatus},
        sessions::CreateSession,
        tools::CreateTool,
        webhook_body::{CreateWebhook, CreatedWebhook, Delivery, UpdateWebhook, Webhook},
    },
    openai::schema as openai,
    store::{
        Agent, AuditRecord, KeyRecord, Page, Pagination, Run, Scope, Scopes, Session, Tool,
        UsageRecord,
    },
    stream::{
        sse::StreamError,
        ws::{
            protocol::{Request, UserMessage},
            schema::{RequestId, ServerFrame},
        },
    },
};

/// One type's schema, with the components it refers to.
pub struct Entry {
    pub name: String,
    pub schema: RefOr<Schema>,
    pub deps: Vec<(String, RefOr<Schema>)>,
}

/// `T`'s entry.
pub fn of<T: ToSchema>() -> Entry {
    let mut deps = Vec::new();
    T::schemas(&mut deps);
    Entry {
        name: T::name().into_owned(),
        schema: T::schema(),
        deps,
    }
}

/// One file of protocol/schemas/.
pub struct FileSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub root: Option<Entry>,
    pub defs: Vec<(&'static str, Entry)>,
}

fn file(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    root: Option<Entry>,
    defs: Vec<(&'static str, Entry)>,
) -> FileSpec {
    FileSpec {
        name,
        title,
        description,
        root,
        defs,
    }
}

/// Every file, in the order that decides where unplaced types land.
pub fn files() -> Vec<FileSpec> {
    vec![
        file("common.json", "weir: shared definitions",
            "Building blocks the other schemas reference: timestamps, ids, scopes.",
            None,
            vec![
                ("timestamp", of::<Timestamp>()), ("agent_id", of::<AgentId>()),
                ("tool_id", of::<ToolId>()), ("session_id", of::<SessionId>()),
                ("run_id", of::<RunId>()), ("event_id", of::<EventId>()),
                ("key_id", of::<KeyId>()), ("seq", of::<Seq>()), ("scope", of::<Scope>()),
                ("scopes", of::<Scopes>()), ("request_id", of::<RequestId>()),
            ]),
        file("event.json", "weir: agent event",
            "One event of an agent's history or log stream: the `data:` of an SSE frame, an item of GET …/messages and …/logs, an entry of a JSON-mode run answer, and (with `type: agent_response` added) a WebSocket frame. The same event has the same bytes and the same `seq` everywhere. `$defs/fields` is the open form other schemas extend; the root refuses unknown fields.",
            Some(of::<AgentEvent>()),
            vec![
                ("fields", of::<EventFields>()), ("message_type", of::<MessageType>()),
                ("body", of::<EventBody>()), ("function_call", of::<FunctionCall>()),
                ("agent_event", of::<ChannelEvent>()), ("log_line", of::<LogLine>()),
            ]),
        file("error.json", "weir: error envelope",
            "The body of every error response of every REST route (all but /v1/chat/completions and /v1/models, which answer OpenAI-shaped errors: openai-error.json). See errors.md for which status carries which code.",
            Some(of::<ErrorEnvelope>()), vec![]),
        file("list.json", "weir: list envelope",
            "Every list route answers `{\"data\":[…],\"pagination\":{…}}`. The root schema leaves the items open; each `$defs` entry below is the envelope of one route with its item schema (validate a response against e.g. `list.json#/$defs/agents`).",
            Some(of::<Page<Value>>()),
            vec![
                ("pagination", of::<Pagination>()), ("item", of::<Value>()),
                ("agents", of::<Page<Agent>>()),
                ("tools", of::<Page<Tool>>()), ("sessions", of::<Page<Session>>()),
                ("keys", of::<Page<KeyRecord>>()), ("messages", of::<Page<ChannelEvent>>()),
                ("logs", of::<Page<LogLine>>()), ("audit", of::<Page<AuditRecord>>()),
                ("usage", of::<Page<UsageRecord>>()), ("runs", of::<Page<Run>>()),
                ("webhooks", of::<Page<Webhook>>()), ("deliveries", of::<Page<Delivery>>()),
            ]),
        file("agent.json", "weir: agent",
            "An agent as GET/POST/PATCH /v1/agents… and /start, /stop answer it. `$defs/create` and `$defs/update` are the request bodies.",
            Some(of::<Agent>()),
            vec![("create", of::<CreateAgent>()), ("update", of::<UpdateAgent>())]),
        file("tool.json", "weir: tool",
            "A tool as GET/POST /v1/tools… answer it. `$defs/create` is the request body.",
            Some(of::<Tool>()), vec![("create", of::<CreateTool>())]),
        file("session.json", "weir: chat session",
            "A chat session of one agent (GET/POST /v1/agents/{id}/sessions). A run without `session_id` uses the agent's session named `default`, made on first use.",
            Some(of::<Session>()), vec![("create", of::<CreateSession>())]),
        file("key.json", "weir: API key",
            "An API key as GET /v1/keys lists it (and PATCH /v1/keys/{id} answers): never the secret, never its hash. POST /v1/keys and POST /v1/keys/{id}/rotate answer `$defs/minted` (the same fields plus `secret`, shown this once). `$defs/create`, `$defs/update` and `$defs/rotate` are the request bodies of POST, PATCH and rotate.",
            Some(of::<KeyRecord>()),
            vec![("minted", of::<MintedKey>()), ("create", of::<CreateKeyBody>()),
                ("update", of::<UpdateKey>()), ("rotate", of::<RotateKey>())]),
        file("account.json", "weir: account",
            "GET /v1/account: the calling key's account, the key itself, its limits and the account's usage.",
            Some(of::<AccountView>()), vec![]),
        file("audit.json", "weir: audit row",
            "One change a key made, as GET /v1/audit lists it (newest first): who (`actor_key_id`, `client_addr`), what (`action`, `target`, `method`, `path`), when, and the request's id. Never a request body or a secret.",
            Some(of::<AuditRecord>()), vec![]),
        file("usage.json", "weir: usage row",
            "One line of GET /v1/usage: the account's requests, runs and tokens over the asked days, summed by one dimension (`group`: key, day, model, agent or provider) whose value is `value` (null for usage that has none, e.g. plain requests have no model). Tokens are what the edge metered: estimates as they stream, corrected by the provider's usage.",
            Some(of::<UsageRecord>()), vec![]),
        file("webhook.json", "weir: webhook subscription",
            "An outbound webhook subscription as GET/PATCH /v1/webhooks… answer it: never its signing secret. POST /v1/webhooks answers `$defs/created` (the same fields plus `secret`, shown this once). `$defs/create` and `$defs/update` are the request bodies; `$defs/delivery` is one item of GET /v1/webhooks/{id}/deliveries and the answer of …/retry. protocol/webhooks.md describes the deliveries themselves (headers, body, signature).",
            Some(of::<Webhook>()),
            vec![("created", of::<CreatedWebhook>()), ("create", of::<CreateWebhook>()),
                ("update", of::<UpdateWebhook>()), ("delivery", of::<Delivery>())]),
        file("run.json", "weir: run",
            "A run as GET /v1/runs/{id} and POST /v1/runs/{id}/cancel answer it. `$defs/send` is the body of POST /v1/agents/{id}/messages, `$defs/result` its JSON-mode (non-streaming) answer.",
            Some(of::<Run>()),
            vec![
                ("chat_message", of::<ChatMessage>()), ("send", of::<SendMessage>()),
                ("result", of::<RunResult>()),
            ]),
        file("stream-error.json", "weir: SSE stream error",
            "The `data:` of the last frame of an SSE stream that cannot go on: `event: error` with NO `id:` line (so Last-Event-ID stays the last real event). Not to be confused with a run's `error` event (message_type `error`, which has an `id:` and is followed by `done`).",
            Some(of::<StreamError<'static>>()), vec![]),
        file("ws-client.json", "weir: WebSocket client frame",
            "One JSON text frame a client sends on /v1/ws. Every frame may carry `request_id` (a string or a number), echoed on the reply. Fields not listed are ignored. A frame that does not match gets an `error` frame back (validation_error or unknown_type) and the socket stays open.",
            Some(of::<Request>()),
            vec![("channel", of::<Channel>()), ("user_message", of::<UserMessage>())]),
        file("ws-server.json", "weir: WebSocket server frame",
            "One JSON text frame the server sends on /v1/ws. `agent_response` carries an agent event (or a log line) with `type` added; the other types answer the client's frames.",
            Some(of::<ServerFrame>()), vec![]),
        file("providers.json", "weir: provider list",
            "GET /v1/providers (operator scope `providers`): every configured provider, the `default` one first, with its circuit and recent health; `$defs/provider` is one item. Never a key, a header value, user info or a query of `base_url`. protocol/providers.md explains the circuit.",
            Some(of::<ProviderList>()), vec![("provider", of::<ProviderStatus>())]),
        file("openai-completion.json", "weir: OpenAI chat.completion",
            "The answer of a non-streaming POST /v1/chat/completions. The root is OpenAI's shape and accepts fields weir does not know (an `upstream/<model>` answer is the provider's); `$defs/agent_completion` is exactly what weir sends when an agent answers.",
            Some(of::<openai::Completion>()),
            vec![("usage", of::<openai::CompletionUsage>()), ("agent_completion", of::<openai::AgentCompletion>())]),
        file("openai-chunk.json", "weir: OpenAI chat.completion.chunk",
            "The JSON of one `data:` line of a streaming POST /v1/chat/completions (the stream ends with the line `data: [DONE]`, which is not JSON). The root is OpenAI's chunk and accepts fields weir does not know, because `upstream/<model>` streams are relayed byte for byte from the provider. `$defs/agent_chunk` is exactly what weir itself sends when an agent answers.",
            Some(of::<openai::Chunk>()),
            vec![
                ("finish_reason", of::<openai::FinishReason>()), ("choice", of::<openai::ChunkChoice>()),
                ("agent_chunk", of::<openai::AgentChunk>()),
            ]),
        file("openai-error.json", "weir: OpenAI-shaped error",
            "Every error of POST /v1/chat/completions and GET /v1/models (auth, scope, size and limit errors included), with weir's `request_id` added to OpenAI's four fields, as the official SDKs parse it; also the JSON of a `data:` line when a stream fails after its first byte (then `data: [DONE]` follows). An `upstream/<model>` 4xx from the provider is passed through as the provider sent it when it already has this shape.",
            Some(of::<openai::ErrorShape>()), vec![("weir_error", of::<openai::WeirError>())]),
        file("openai-models.json", "weir: OpenAI model list",
            "GET /v1/models: the account's agents (each usable as `model`), then the provider's models as `upstream/<id>` when a provider is configured and lists them within 5 s. Not paginated (at most 10,000 agents).",
            Some(of::<openai::ModelList>()), vec![]),
    ]
}
