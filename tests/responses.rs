//! POST /v1/responses (the Responses passthrough) end to end: the real server, the emulator
//! over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, error_message, frames};
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
    assert!(error_message(&v).contains("file_search"));
    assert_eq!(h.emu.stats().responses_requests, 0);
}

async fn response_id(h: &Harness, body: Value) -> String {
    let r = h.post("/v1/responses", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn previous_response_id_expands_the_chain_into_full_input() {
    let h = Harness::start().await;
    let first = response_id(&h, json!({"model": "gpt-5.5", "input": "one"})).await;
    let first_key = h.last_upstream().body["prompt_cache_key"].clone();
    let second = response_id(
        &h,
        json!({"model": "gpt-5.5", "input": "two", "previous_response_id": first}),
    )
    .await;
    let up = h.last_upstream().body;
    let input = up["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "{up}");
    assert_eq!(input[0]["content"][0]["text"], "one");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[1]["content"][0]["text"], "You said: one");
    assert_eq!(input[2]["content"][0]["text"], "two");
    assert_eq!(
        up["prompt_cache_key"], first_key,
        "the chain keeps its cache key"
    );
    // A streamed third turn chains onto the second; a fourth onto the streamed third.
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "stream": true, "input": "three", "previous_response_id": second}),
        )
        .await;
    let body = r.text().await.unwrap();
    let done = frames(&body).last().unwrap().json();
    let third = done["response"]["id"].as_str().unwrap().to_owned();
    assert_eq!(h.last_upstream().body["input"].as_array().unwrap().len(), 5);
    response_id(
        &h,
        json!({"model": "gpt-5.5", "input": "four", "previous_response_id": third}),
    )
    .await;
    let input = h.last_upstream().body["input"].clone();
    assert_eq!(input.as_array().unwrap().len(), 7);
    assert_eq!(input[5]["content"][0]["text"], "You said: three");
}

#[tokio::test]
async fn unknown_unkept_or_evicted_previous_response_ids_are_400() {
    let h = Harness::with(|c| c.history_max_entries = 1).await;
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "x", "previous_response_id": "resp_nope"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "previous_response_not_found");
    assert_eq!(e["error"]["param"], "previous_response_id");
    assert!(error_message(&e).contains("resp_nope"));
    // store:false is not kept.
    let unkept = response_id(
        &h,
        json!({"model": "gpt-5.5", "input": "a", "store": false}),
    )
    .await;
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "b", "previous_response_id": unkept}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // The cap of one entry evicts the older exchange.
    let old = response_id(&h, json!({"model": "gpt-5.5", "input": "a"})).await;
    let new = response_id(&h, json!({"model": "gpt-5.5", "input": "b"})).await;
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "c", "previous_response_id": old}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "c", "previous_response_id": new}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn chat_completions_chain_with_previous_response_id() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "store": true, "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"));
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "previous_response_id": id, "stream": true,
                    "messages": [{"role": "user", "content": "again"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let second_id = frames(&body)[0].json()["id"].as_str().unwrap().to_owned();
    let input = h.last_upstream().body["input"].clone();
    assert_eq!(input.as_array().unwrap().len(), 3, "{input}");
    assert_eq!(input[1]["content"][0]["text"], "You said: hello");
    // A chained request is kept too, under the id its stream showed.
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "previous_response_id": second_id,
                    "messages": [{"role": "user", "content": "third"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.last_upstream().body["input"].as_array().unwrap().len(), 5);
    // Without store, a chat exchange is not kept.
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "previous_response_id": v["id"], "messages": [{"role": "user", "content": "y"}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "previous_response_not_found");
}

#[tokio::test]
async fn deleting_a_kept_response_ends_its_chain_and_get_is_a_clear_404() {
    let h = Harness::start().await;
    let id = response_id(&h, json!({"model": "gpt-5.5", "input": "one"})).await;
    let r = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(error_message(&e).contains("previous_response_id"));
    let r = h.delete(&format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["deleted"], true);
    assert_eq!(v["id"], id.as_str());
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "two", "previous_response_id": id}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = h.delete(&format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 404);
}
