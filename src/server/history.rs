//! Recent exchanges kept for `previous_response_id` (the backend runs with `store:false`,
//! so chaining is served locally).
//!
//! Owns: the bounded in-memory store (a cap on entries and on bytes, oldest evicted first;
//! an exchange larger than the byte cap is not kept), a finished exchange as one input
//! array, and splicing a kept conversation in front of a new
//! request's `input`. Each entry holds the whole conversation up to and including its answer
//! (already expanded), so a chain never depends on an older, possibly evicted, entry.
//!
//! Does not own: deciding which exchanges are kept (`Plan::keep_as`), the wording of the
//! not-found error (`dialect::responses::previous_response_not_found`) or writing an
//! answer's items in the backend's input shape (`dialect::items`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::dialect::Plan;
use crate::dialect::items::write_input_item;
use crate::dialect::responses::previous_response_not_found;
use crate::error::Error;
use crate::upstream::collect::{Collected, Item};

/// One kept conversation.
pub struct Exchange {
    /// The conversation as an upstream `input` array: every item sent, then every item
    /// answered.
    pub items: Vec<u8>,
    /// The conversation id (prompt cache key) of the chain, so later turns hit the cache.
    pub conversation_id: String,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Arc<Exchange>>,
    order: VecDeque<String>,
    bytes: usize,
}

/// The store. Locked only when an exchange is kept or looked up, never per event.
pub struct History {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

impl History {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        History {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_bytes,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Exchange>> {
        self.inner.lock().ok()?.map.get(id).cloned()
    }

    /// Forget `id`; whether it was kept.
    pub fn remove(&self, id: &str) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let Some(old) = inner.map.remove(id) else {
            return false;
        };
        inner.bytes -= old.items.len() + id.len() + old.conversation_id.len();
        inner.order.retain(|k| k != id);
        true
    }

    /// `previous_response_id`: put the kept conversation in front of the plan's input and
    /// continue its cache key. An unknown or evicted id is a 400 in the plan's protocol.
    pub fn chain<P: Plan>(&self, plan: &mut P) -> Result<(), Error> {
        let Some(id) = plan.previous_response_id().map(str::to_owned) else {
            return Ok(());
        };
        let prior = self
            .get(&id)
            .ok_or_else(|| previous_response_not_found(&id))?;
        if let Some(up) = plan.upstream_mut() {
            up.input = splice(&prior.items, &up.input);
            up.conversation_id.clone_from(&prior.conversation_id);
        }
        Ok(())
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (i.map.len(), i.bytes))
            .unwrap_or((0, 0))
    }

    /// Keep `input` (the upstream `input` array sent) plus the answer's items under `id`.
    pub fn keep(&self, id: String, input: &[u8], collected: &Collected, conversation_id: &str) {
        if self.max_entries == 0 {
            return;
        }
        let items = conversation(input, &collected.items);
        let size = items.len() + id.len() + conversation_id.len();
        if size > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.map.remove(&id) {
            inner.bytes -= old.items.len() + id.len() + old.conversation_id.len();
            inner.order.retain(|k| k != &id);
        }
        while !inner.order.is_empty()
            && (inner.map.len() >= self.max_entries || inner.bytes + size > self.max_bytes)
        {
            if let Some(oldest) = inner.order.pop_front()
                && let Some(old) = inner.map.remove(&oldest)
            {
                inner.bytes -= old.items.len() + oldest.len() + old.conversation_id.len();
            }
        }
        inner.bytes += size;
        inner.order.push_back(id.clone());
        inner.map.insert(
            id,
            Arc::new(Exchange {
                items,
                conversation_id: conversation_id.to_owned(),
            }),
        );
    }
}

/// The inner bytes of a JSON array (`[a,b]` → `a,b`), trimmed.
fn inner_of(array: &[u8]) -> &[u8] {
    let t = array.trim_ascii();
    match (t.first(), t.last()) {
        (Some(b'['), Some(b']')) if t.len() >= 2 => t[1..t.len() - 1].trim_ascii(),
        _ => b"",
    }
}

/// `prior` then `next` as one array (both JSON arrays).
pub fn splice(prior: &[u8], next: &[u8]) -> Vec<u8> {
    let (a, b) = (inner_of(prior), inner_of(next));
    let mut out = Vec::with_capacity(a.len() + b.len() + 3);
    out.push(b'[');
    out.extend_from_slice(a);
    if !a.is_empty() && !b.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(b);
    out.push(b']');
    out
}

/// `input` followed by the answer's items, in input form.
fn conversation(input: &[u8], answer: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 256 * answer.len());
    out.push(b'[');
    let sent = inner_of(input);
    out.extend_from_slice(sent);
    let mut first = sent.is_empty();
    for item in answer {
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        if write_input_item(&mut out, item) {
            first = false;
        } else {
            out.truncate(mark);
        }
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Collected {
        let mut c = Collected::new();
        c.items.push(Item::Message {
            text: text.into(),
            refusal: String::new(),
            phase: None,
            citations: Vec::new(),
        });
        c
    }

    #[test]
    fn conversation_is_input_then_answer_as_valid_json() {
        let h = History::new(10, 1 << 20);
        h.keep(
            "r1".into(),
            br#"[{"type":"message","role":"user","content":"hi"}]"#,
            &answer("yo"),
            "c",
        );
        let e = h.get("r1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&e.items).unwrap();
        assert_eq!(v[1]["role"], "assistant");
        assert_eq!(v[1]["content"][0]["text"], "yo");
        assert_eq!(e.conversation_id, "c");
        let joined = splice(
            &e.items,
            br#"[{"type":"message","role":"user","content":"again"}]"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(splice(b"[]", b"[1]"), b"[1]");
        assert_eq!(splice(b"[1]", b"[]"), b"[1]");
    }

    #[test]
    fn caps_on_entries_and_bytes_evict_the_oldest() {
        let h = History::new(2, 1 << 20);
        for id in ["a", "b", "c"] {
            h.keep(id.into(), b"[]", &answer("x"), "c");
        }
        assert!(h.get("a").is_none());
        assert!(h.get("b").is_some() && h.get("c").is_some());
        assert_eq!(h.usage().0, 2);

        let small = History::new(100, 300);
        small.keep("big".into(), b"[]", &answer(&"y".repeat(400)), "c");
        assert!(
            small.get("big").is_none(),
            "larger than the byte cap: not kept"
        );
        small.keep("one".into(), b"[]", &answer(&"y".repeat(100)), "c");
        small.keep("two".into(), b"[]", &answer(&"y".repeat(100)), "c");
        assert!(
            small.get("one").is_none(),
            "evicted to stay under 300 bytes"
        );
        assert!(small.get("two").is_some());
        assert!(small.usage().1 <= 300);
    }
}
