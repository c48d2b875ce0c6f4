//! Entering an account: the one place a request is routed to a ChatGPT account and waits
//! for that account's window (`admit`), the class it waits in (`class_of`), and the 429 a
//! request gets when the queue deadline passes. Used by the streaming pipeline and the
//! unary backend calls.

use std::time::{Duration, Instant};

use super::state::State;
use crate::accounts::Route;
use crate::admission::{self, Class, Permit, Refused, Ticket};
use crate::error::{Error, ErrorKind};
use crate::upstream::meter::Meter;
use crate::upstream::request::UpstreamRequest;

/// Interactive turns go first; sub-agents, memory generation and the small model wait.
pub(crate) fn class_of(state: &State, up: &UpstreamRequest) -> Class {
    let small =
        state.config.small_model != state.config.model && up.model == state.config.small_model;
    if up.subagent.is_some() || up.memgen || small {
        Class::Background
    } else {
        Class::Interactive
    }
}

/// The one place a request enters an account: route it, then wait for that account's
/// window (until `deadline`). A request sent away from a cooled account routes again.
pub(crate) async fn admit(
    state: &State,
    conversation: u64,
    class: Class,
    front: bool,
    deadline: Instant,
    meter: Option<&Meter>,
) -> Result<(Route, Permit), Error> {
    loop {
        let route = state.accounts.route(conversation)?;
        let waited = Instant::now();
        let ticket = Ticket {
            class,
            conversation,
            front,
        };
        match route.account.admission.acquire(ticket, deadline).await {
            Ok(permit) => {
                if let Some(m) = meter {
                    m.record_attempt(
                        &route.account.label,
                        route.moved_from.as_deref(),
                        waited.elapsed(),
                    );
                }
                return Ok((route, permit));
            }
            Err(Refused::Evicted) => continue,
            Err(Refused::Timeout(stats)) => {
                return Err(saturated(&route.account.label, stats, waited.elapsed()));
            }
        }
    }
}

/// The queue deadline passed: 429 in the client's protocol, saying why.
fn saturated(label: &str, s: admission::Stats, waited: Duration) -> Error {
    Error::new(
        ErrorKind::RateLimited,
        format!(
            "The concurrency of ChatGPT account '{label}' is saturated: {} of its {} upstream streams are open and {} requests are queued; this request waited {} s (--queue-timeout-secs) without a slot. Retry later, or spread the load over more accounts (--accounts).",
            s.open,
            s.window,
            s.queued,
            waited.as_secs()
        ),
    )
    .with_code("rate_limit_exceeded")
    .with_retry_after(5)
}
