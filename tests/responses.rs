//! POST /v1/responses (the Responses passthrough) end to end: the real server, the emulator
//! over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, frames};
use serde_json::{Value, json};

#[tokio::test]
async fn non_stream_response_object_with_backend_rules_applied() {
    let h = Harness::start().await;
    let resp = h
        .post(
            "/v1/responses",
            &json!({
                "model": "gpt-5.5",
                "input": "hello responses",
                "store": true,
                "temperature": 0.2,
                "max_output_tokens": 50,
                "metadata": {"a": "b"}
            }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "You said: hello responses"
    );
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let up = h.last_upstream();
    assert_eq!(up.body["store"], false);
    assert_eq!(up.body["stream"], true);
    assert!(!up.body["instructions"].as_str().unwrap().is_empty());
    for k in ["temperature", "max_output_tokens", "metadata"] {
        assert!(up.body.get(k).is_none(), "{k} must be stripped");
    }
    assert_eq!(up.body["input"][0]["type"], "message");
    assert_eq!(up.body["input"][0]["role"], "user");
}

#[tokio::test]
async fn stream_forwards_backend_events_with_event_names() {
    let h = Harness::start().await;
    let resp = h
        .post(
            "/responses",
            &json!({"model": "gpt-5.5", "stream": true, "instructions": "Be terse.",
                    "input": [{"role": "system", "content": "sys"}, {"role": "user", "content": "stream it"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = resp.text().await.unwrap();
    let fs = frames(&body);
    assert_eq!(fs[0].event.as_deref(), Some("response.created"));
    let last = fs.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("response.completed"));
    let text: String = fs
        .iter()
        .filter(|f| f.event.as_deref() == Some("response.output_text.delta"))
        .map(|f| f.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "You said: stream it");
    assert!(
        !last.json()["response"]["output"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let up = h.last_upstream();
    assert_eq!(up.body["instructions"], "Be terse.");
    assert_eq!(up.body["input"][0]["role"], "developer");
}

#[tokio::test]
async fn unsupported_tool_is_a_400_in_openai_shape() {
    let h = Harness::start().await;
    let resp = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "x", "tools": [{"type": "file_search"}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("file_search")
    );
    assert_eq!(h.emu.stats().responses_requests, 0);
}
