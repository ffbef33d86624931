//! Property tests (proptest, a few seconds in all) of everything that parses
//! client or provider input on the streaming paths: the WebSocket frame
//! decoder, the SSE resume cursor (`Last-Event-ID` / `?after=`), the
//! upstream SSE reader (eventsource-stream + chunk assembly) and the relay's
//! frame cutter. No input may panic; well-formed input must survive any
//! cut into network chunks.

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{json, Value};
use weir::{
    agent::models::assemble::{Assembler, Chunk},
    http::cursor::resume_cursor,
    providers::splice::{self, Piece},
    stream::ws::protocol,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Frames shaped like the client's, with fields of any type or missing.
fn ws_frame() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("user_message"),
        Just("subscribe"),
        Just("unsubscribe"),
        Just("cancel"),
        Just("ping"),
        Just("other"),
    ];
    let fields = prop::collection::btree_map(
        prop_oneof![
            Just("agent_id".to_owned()),
            Just("message".to_owned()),
            Just("messages".to_owned()),
            Just("channel".to_owned()),
            Just("after".to_owned()),
            Just("run_id".to_owned()),
            Just("request_id".to_owned()),
            Just("type".to_owned()),
            "[a-z]{1,6}",
        ],
        json_value(),
        0..6,
    );
    (kind, fields).prop_map(|(kind, fields)| {
        let mut obj: serde_json::Map<String, Value> = fields.into_iter().collect();
        obj.entry("type").or_insert_with(|| kind.into());
        Value::Object(obj).to_string()
    })
}

/// Splits `bytes` at the given (sorted, deduplicated) cut points.
fn cut(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<Bytes> {
    cuts.iter_mut().for_each(|c| *c %= bytes.len().max(1));
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        if c > at {
            out.push(Bytes::copy_from_slice(&bytes[at..c]));
            at = c;
        }
    }
    out
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn ws_decoder_never_panics_on_any_text(text in ".{0,300}") {
        let _ = protocol::parse(&text);
    }

    #[test]
    fn ws_decoder_answers_every_frame_shape(text in ws_frame()) {
        match protocol::parse(&text) {
            Ok(_) => {}
            // Every refusal names its problem (it becomes the error frame).
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                let frame: Value = serde_json::from_str(e.frame().as_str()).unwrap();
                prop_assert_eq!(&frame["type"], "error");
            }
        }
    }

    #[test]
    fn ws_decoder_reads_valid_subscribes(channel in "[a-z]{1,8}:[A-Za-z0-9-]{1,20}", after in proptest::option::of(any::<u64>()), rid in "[a-z0-9]{1,8}") {
        let mut f = json!({"type": "subscribe", "channel": channel, "request_id": rid});
        if let Some(a) = after { f["after"] = a.into(); }
        let req = protocol::parse(&f.to_string()).unwrap();
        prop_assert_eq!(req.frame, protocol::ClientFrame::Subscribe { channel, after });
        prop_assert_eq!(req.request_id, Some(Value::from(rid)));
    }

    #[test]
    fn resume_cursor_accepts_exactly_the_seqs(header in proptest::option::of(".{0,24}"), after in proptest::option::of(".{0,24}")) {
        let mut h = HeaderMap::new();
        let header = header.and_then(|v| HeaderValue::from_str(&v).ok().map(|hv| (v, hv)));
        if let Some((_, hv)) = &header { h.insert("last-event-id", hv.clone()); }
        let result = resume_cursor(&h, after.as_deref());
        let seq = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten();
        let from_header = header.as_ref().map(|(v, _)| v.trim()).filter(|v| !v.is_empty());
        // A malformed `?after=` is a 400 even when the header wins.
        let query = after.as_deref().map(|a| seq(a).ok_or(())).transpose();
        let expected = match (from_header, query) {
            (_, Err(())) => Err(()),
            (Some(v), Ok(_)) => seq(v).map(Some).ok_or(()),
            (None, Ok(q)) => Ok(q),
        };
        prop_assert_eq!(result.map_err(|_| ()), expected);
    }

    #[test]
    fn upstream_chunks_never_panic_the_assembler(data in json_value(), more in prop::collection::vec(json_value(), 0..4)) {
        let mut asm = Assembler::default();
        for v in std::iter::once(data).chain(more) {
            if let Ok(chunk) = serde_json::from_value::<Chunk>(v) {
                let _ = asm.apply(chunk);
            }
        }
        let _ = asm.finished();
        let _ = asm.finish();
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// eventsource-stream (the upstream reader) sees the same events however
    /// the bytes are cut, and never panics on garbage.
    #[test]
    fn upstream_sse_reader_is_chunking_independent(
        datas in prop::collection::vec("[ -~]{0,40}", 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        garbage in prop::collection::vec(any::<u8>(), 0..200),
        crlf in any::<bool>(),
    ) {
        use eventsource_stream::Eventsource;
        let nl = if crlf { "\r\n" } else { "\n" };
        let text: String = datas.iter().map(|d| format!("data: {d}{nl}{nl}")).collect();
        let read = |chunks: Vec<Bytes>| {
            futures::executor::block_on(async move {
                futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>))
                    .eventsource()
                    .filter_map(|e| async move { e.ok().map(|e| e.data) })
                    .collect::<Vec<_>>()
                    .await
            })
        };
        let whole = read(vec![Bytes::from(text.clone())]);
        prop_assert_eq!(&whole, &datas);
        prop_assert_eq!(read(cut(text.as_bytes(), cuts.clone())), whole);
        let _ = read(cut(&garbage, cuts));
    }

    /// The relay forwards the provider's bytes untouched, re-cut only at
    /// event boundaries, whatever the network cuts; garbage ends with a
    /// failure (which the relay sends as an error line and `[DONE]`).
    #[test]
    fn relay_frames_pass_bytes_through_at_event_boundaries(
        datas in prop::collection::vec("[a-z{}\":, ]{0,30}", 0..6).prop_map(|d| d.into_iter().map(|s| json!({"x": s}).to_string()).collect::<Vec<_>>()),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        garbage in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let mut text: String = datas.iter().map(|d| format!("data: {d}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        let relay = |chunks: Vec<Bytes>| {
            rt.block_on(async move {
                let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, weir::providers::provider::BodyError>));
                splice::single(body, std::time::Duration::from_secs(5))
                    .map(|p| match p {
                        Piece::Frames(f) => f.bytes,
                        Piece::Failed(_) => Bytes::from_static(b"data: [DONE]\n\n"),
                        Piece::Switched(_) => Bytes::new(),
                    })
                    .collect::<Vec<Bytes>>()
                    .await
            })
        };
        let out = relay(cut(text.as_bytes(), cuts.clone()));
        for frame in &out {
            prop_assert!(frame.ends_with(b"\n\n"), "cut mid-event: {:?}", frame);
        }
        prop_assert_eq!(out.concat(), text.as_bytes().to_vec());
        let out = relay(cut(&garbage, cuts)).concat();
        prop_assert!(out.ends_with(b"data: [DONE]\n\n"));
    }
}
