//! Admission control for one ChatGPT account: an adaptive window of open upstream streams
//! and the queue of requests waiting for a slot in it.
//!
//! Owns: the window (how many upstream streams this account may hold open), the count of
//! open ones, the two-class queue, the hold that spaces out attempts after a refusal, and
//! the counters `/health` shows. Does not own: which account a request goes to
//! (`accounts`), what a refusal looks like on the wire (`upstream::failure`), or retrying
//! (`server::pipeline`). It knows no dialect and no HTTP.
//!
//! The rule (README, "Fleets"):
//! - The window starts at `account_max_streams` (default 3). A request beyond it waits here,
//!   never upstream.
//! - A concurrency refusal (an upstream 429 that is not a usage limit) shrinks the window to
//!   the number of *other* streams open when it came (never below 1), holds every grant for
//!   [`REFUSAL_HOLD`] doubled per refusal in a row (at most [`MAX_HOLD`], and at least the
//!   refusal's `Retry-After` up to [`MAX_RETRY_AFTER_HOLD`]), and the refused request goes
//!   back to the head of its class.
//! - When demand has exceeded the window (window full, someone queued) for `grow_after`
//!   (default 30 s) since the last change, the window grows by one, up to the ceiling
//!   (default 8). So a window that is too small costs at most one probe per `grow_after`.
//! - Order: interactive before background; within a class, round-robin between
//!   conversations and FIFO within one, so one busy conversation cannot starve the others.
//!
//! Hot path: when the window has room and nobody waits, `acquire` is one uncontended
//! mutex lock and no allocation; the lock is never held across an `await`. A waiter that
//! is dropped (client gone, deadline) leaves the queue at once; a grant it could not take
//! is handed to the next waiter. The module's one timer (a spawned sleep, at most one
//! pending) looks at the queue again when a hold ends or growth falls due, so waiters never
//! depend on another request's events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// First hold after a refusal; doubles per refusal in a row.
pub const REFUSAL_HOLD: Duration = Duration::from_millis(250);
/// Longest hold after refusals in a row.
pub const MAX_HOLD: Duration = Duration::from_secs(4);
/// Longest hold a refusal's `Retry-After` can ask for.
pub const MAX_RETRY_AFTER_HOLD: Duration = Duration::from_secs(30);

/// The two priority classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Interactive turns: served first.
    Interactive = 0,
    /// Sub-agents (review, compact, memory consolidation, spawns), memory generation and
    /// the small model: served when no interactive request waits.
    Background = 1,
}

/// What a request tells the queue about itself.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    pub class: Class,
    /// A hash of the conversation id (fairness is per conversation).
    pub conversation: u64,
    /// Put it at the head of its class (a request coming back after a refusal).
    pub front: bool,
}

/// The window's settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub start: usize,
    pub ceiling: usize,
    pub grow_after: Duration,
}

/// A snapshot for `/health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub window: usize,
    pub open: usize,
    pub queued: usize,
    pub peak_open: usize,
    pub admitted: u64,
    pub refused: u64,
    pub timed_out: u64,
}

/// Why a wait ended without a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The deadline passed while queued.
    Timeout(Stats),
    /// The account stopped taking work (usage limit) while this request waited.
    Evicted,
}

/// One account's window and queue.
pub struct Admission {
    limits: Limits,
    inner: Mutex<Inner>,
}

struct Waiter {
    id: u64,
    /// `true`: a slot; `false`: evicted.
    tx: oneshot::Sender<bool>,
}

#[derive(Default)]
struct ClassQueue {
    /// Conversations with waiters, in service order.
    order: VecDeque<u64>,
    waiting: HashMap<u64, VecDeque<Waiter>>,
}

impl ClassQueue {
    fn push(&mut self, conversation: u64, waiter: Waiter, front: bool) {
        let list = self.waiting.entry(conversation).or_default();
        let was_empty = list.is_empty();
        if front {
            list.push_front(waiter);
        } else {
            list.push_back(waiter);
        }
        if front {
            self.order.retain(|c| *c != conversation);
            self.order.push_front(conversation);
        } else if was_empty {
            self.order.push_back(conversation);
        }
    }

    /// The next waiter: the first of the conversation whose turn it is; that conversation
    /// then goes to the back of the rotation if it still waits.
    fn pop(&mut self) -> Option<Waiter> {
        let conversation = self.order.pop_front()?;
        let list = self.waiting.get_mut(&conversation)?;
        let waiter = list.pop_front();
        if list.is_empty() {
            self.waiting.remove(&conversation);
        } else {
            self.order.push_back(conversation);
        }
        waiter
    }

    fn remove(&mut self, conversation: u64, id: u64) -> bool {
        let Some(list) = self.waiting.get_mut(&conversation) else {
            return false;
        };
        let Some(at) = list.iter().position(|w| w.id == id) else {
            return false;
        };
        list.remove(at);
        if list.is_empty() {
            self.waiting.remove(&conversation);
            self.order.retain(|c| *c != conversation);
        }
        true
    }
}

struct Inner {
    window: usize,
    open: usize,
    queued: usize,
    queues: [ClassQueue; 2],
    /// No grant before this instant (after a refusal).
    hold_until: Option<Instant>,
    refusals_in_row: u32,
    /// The last shrink or growth.
    last_change: Instant,
    /// Since when demand has exceeded the window, if it does.
    full_since: Option<Instant>,
    /// When the wake-up timer that is already scheduled fires.
    timer_at: Option<Instant>,
    next_id: u64,
    peak_open: usize,
    admitted: u64,
    refused: u64,
    timed_out: u64,
}

impl Inner {
    fn stats(&self) -> Stats {
        Stats {
            window: self.window,
            open: self.open,
            queued: self.queued,
            peak_open: self.peak_open,
            admitted: self.admitted,
            refused: self.refused,
            timed_out: self.timed_out,
        }
    }

    fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| now < t)
    }

    fn take_slot(&mut self) {
        self.open += 1;
        self.admitted += 1;
        self.peak_open = self.peak_open.max(self.open);
    }

    /// Track demand over the window and grow it after `grow_after` of it.
    fn adapt(&mut self, limits: &Limits, now: Instant) {
        if self.open >= self.window && self.queued > 0 {
            let since = *self.full_since.get_or_insert(now);
            let quiet = since.max(self.last_change);
            if self.window < limits.ceiling && now.duration_since(quiet) >= limits.grow_after {
                self.window += 1;
                self.last_change = now;
                self.full_since = None;
                tracing::info!(window = self.window, "account window grew");
            }
        } else if self.queued == 0 {
            self.full_since = None;
        }
    }

    /// When waiters need a look without any event: the end of a hold, or the growth due
    /// while demand exceeds the window.
    fn next_wake(&self, limits: &Limits) -> Option<Instant> {
        if self.queued == 0 {
            return None;
        }
        if let Some(t) = self.hold_until {
            return Some(t);
        }
        let since = self.full_since?;
        (self.window < limits.ceiling).then(|| since.max(self.last_change) + limits.grow_after)
    }

    /// Hand free slots to waiters, interactive first.
    fn pump(&mut self, limits: &Limits, now: Instant) {
        self.adapt(limits, now);
        if self.held(now) {
            return;
        }
        self.hold_until = None;
        while self.open < self.window {
            let Some(waiter) = self.queues[0].pop().or_else(|| self.queues[1].pop()) else {
                break;
            };
            self.queued -= 1;
            // A waiter still queued has a live receiver (it leaves the queue, under this
            // lock, before dropping it); count the slot only if the grant was delivered.
            if waiter.tx.send(true).is_ok() {
                self.take_slot();
            }
        }
        if self.open >= self.window && self.queued > 0 {
            self.full_since.get_or_insert(now);
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        let start = limits.start.max(1);
        Arc::new(Admission {
            limits: Limits {
                start,
                ceiling: limits.ceiling.max(start),
                grow_after: limits.grow_after,
            },
            inner: Mutex::new(Inner {
                window: start,
                open: 0,
                queued: 0,
                queues: [ClassQueue::default(), ClassQueue::default()],
                hold_until: None,
                refusals_in_row: 0,
                last_change: Instant::now(),
                full_since: None,
                timer_at: None,
                next_id: 0,
                peak_open: 0,
                admitted: 0,
                refused: 0,
                timed_out: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    /// Free room in the window minus the queue (negative: that many would wait).
    pub fn headroom(&self) -> i64 {
        let s = self.lock();
        s.window as i64 - s.open as i64 - s.queued as i64
    }

    /// Wait for a slot until `deadline`. Dropping the future leaves the queue at once.
    pub async fn acquire(
        self: &Arc<Self>,
        ticket: Ticket,
        deadline: Instant,
    ) -> Result<Permit, Refused> {
        let (rx, id) = {
            let now = Instant::now();
            let mut s = self.lock();
            s.adapt(&self.limits, now);
            if s.queued == 0 && s.open < s.window && !s.held(now) {
                s.take_slot();
                return Ok(Permit::new(self));
            }
            let (tx, rx) = oneshot::channel();
            let id = s.next_id;
            s.next_id += 1;
            s.queues[ticket.class as usize].push(
                ticket.conversation,
                Waiter { id, tx },
                ticket.front,
            );
            s.queued += 1;
            self.settle(&mut s, now);
            (rx, id)
        };
        let mut waiting = Waiting {
            admission: self,
            ticket,
            id,
            armed: true,
        };
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(true)) => {
                waiting.armed = false;
                Ok(Permit::new(self))
            }
            Ok(Ok(false)) => {
                waiting.armed = false;
                Err(Refused::Evicted)
            }
            // The sender is only dropped with the admission itself; treat it as a timeout.
            Ok(Err(_)) | Err(_) => {
                drop(waiting);
                let mut s = self.lock();
                s.timed_out += 1;
                Err(Refused::Timeout(s.stats()))
            }
        }
    }

    fn release(self: &Arc<Self>) {
        let mut s = self.lock();
        s.open = s.open.saturating_sub(1);
        self.settle(&mut s, Instant::now());
    }

    /// Hand out what can be handed out now, and make sure a timer looks again when a hold
    /// ends or growth falls due (waiters must not depend on another request's events).
    fn settle(self: &Arc<Self>, s: &mut Inner, now: Instant) {
        s.pump(&self.limits, now);
        let Some(at) = s.next_wake(&self.limits) else {
            return;
        };
        if s.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        s.timer_at = Some(at);
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            if let Some(a) = me.upgrade() {
                let mut s = a.lock();
                if s.timer_at == Some(at) {
                    s.timer_at = None;
                }
                a.settle(&mut s, Instant::now());
            }
        });
    }

    fn refusal(self: &Arc<Self>, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.lock();
        let others = s.open.saturating_sub(1);
        s.window = others.clamp(1, s.window.max(1));
        s.refused += 1;
        s.refusals_in_row = s.refusals_in_row.saturating_add(1);
        let hold = REFUSAL_HOLD
            .saturating_mul(1 << (s.refusals_in_row - 1).min(8))
            .min(MAX_HOLD)
            .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER_HOLD));
        s.hold_until = Some(now + hold);
        s.last_change = now;
        s.full_since = None;
        s.open = s.open.saturating_sub(1);
        tracing::info!(
            window = s.window,
            hold_ms = hold.as_millis() as u64,
            "upstream refused a stream for concurrency: window shrunk"
        );
        self.settle(&mut s, now);
    }

    /// Send every waiter away (they go to another account).
    pub fn evict_all(&self) {
        let mut s = self.lock();
        for q in &mut s.queues {
            q.order.clear();
            for (_, list) in q.waiting.drain() {
                for w in list {
                    let _ = w.tx.send(false);
                }
            }
        }
        s.queued = 0;
    }

    fn success(&self) {
        self.lock().refusals_in_row = 0;
    }
}

/// A queued request; dropping it while armed takes it out of the queue, or, if a grant
/// raced in, gives the slot back.
struct Waiting<'a> {
    admission: &'a Arc<Admission>,
    ticket: Ticket,
    id: u64,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let a = self.admission;
        let mut s = a.lock();
        if s.queues[self.ticket.class as usize].remove(self.ticket.conversation, self.id) {
            s.queued -= 1;
        } else {
            // Granted after the deadline fired: hand the slot on.
            s.open = s.open.saturating_sub(1);
        }
        a.settle(&mut s, Instant::now());
    }
}

/// One open upstream stream of an account; the slot is freed on drop.
pub struct Permit {
    admission: Option<Arc<Admission>>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Permit {
    fn new(admission: &Arc<Admission>) -> Permit {
        Permit {
            admission: Some(Arc::clone(admission)),
        }
    }

    /// The backend refused this stream for concurrency: shrink the window, hold grants for
    /// a while (at least the refusal's Retry-After), free the slot.
    pub fn refused(mut self, retry_after: Option<Duration>) {
        if let Some(a) = self.admission.take() {
            a.refusal(retry_after);
        }
    }

    /// The backend accepted this stream: the run of refusals is over.
    pub fn accepted(&self) {
        if let Some(a) = &self.admission {
            a.success();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            a.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(start: usize, ceiling: usize, grow_ms: u64) -> Limits {
        Limits {
            start,
            ceiling,
            grow_after: Duration::from_millis(grow_ms),
        }
    }

    fn ticket(class: Class, conversation: u64) -> Ticket {
        Ticket {
            class,
            conversation,
            front: false,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_request_beyond_the_window_waits_for_a_slot() {
        let a = Admission::new(limits(2, 8, 60_000));
        let p1 = a
            .acquire(ticket(Class::Interactive, 1), far())
            .await
            .unwrap();
        let _p2 = a
            .acquire(ticket(Class::Interactive, 2), far())
            .await
            .unwrap();
        let a2 = Arc::clone(&a);
        let third = tokio::spawn(async move {
            a2.acquire(ticket(Class::Interactive, 3), far())
                .await
                .map(|_| ())
        });
        while a.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(a.stats().open, 2);
        drop(p1);
        third.await.unwrap().unwrap();
        let s = a.stats();
        assert_eq!((s.queued, s.admitted, s.peak_open), (0, 3, 2));
    }

    #[tokio::test]
    async fn interactive_goes_first_and_conversations_take_turns() {
        let a = Admission::new(limits(1, 1, 60_000));
        let holder = a
            .acquire(ticket(Class::Interactive, 0), far())
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Background first, then conversation 7 sends three, then conversation 8 one.
        for (name, class, conv) in [
            ("bg", Class::Background, 9),
            ("a1", Class::Interactive, 7),
            ("a2", Class::Interactive, 7),
            ("a3", Class::Interactive, 7),
            ("b1", Class::Interactive, 8),
        ] {
            let a2 = Arc::clone(&a);
            let order = Arc::clone(&order);
            let before = a.stats().queued;
            tasks.push(tokio::spawn(async move {
                let p = a2.acquire(ticket(class, conv), far()).await.unwrap();
                order.lock().unwrap().push(name);
                drop(p);
            }));
            while a.stats().queued == before {
                tokio::task::yield_now().await;
            }
        }
        drop(holder);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["a1", "b1", "a2", "a3", "bg"]);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue_at_once() {
        let a = Admission::new(limits(1, 1, 60_000));
        let holder = a
            .acquire(ticket(Class::Interactive, 0), far())
            .await
            .unwrap();
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move {
            let _ = a2.acquire(ticket(Class::Interactive, 1), far()).await;
        });
        while a.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(a.stats().queued, 0);
        drop(holder);
        assert_eq!(a.stats().open, 0, "no slot leaked to the aborted waiter");
    }

    #[tokio::test]
    async fn the_deadline_ends_a_wait_with_the_stats() {
        let a = Admission::new(limits(1, 1, 60_000));
        let _holder = a
            .acquire(ticket(Class::Interactive, 0), far())
            .await
            .unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        let Err(Refused::Timeout(s)) = a.acquire(ticket(Class::Interactive, 1), soon).await else {
            panic!("expected a timeout");
        };
        assert_eq!((s.open, s.window, s.timed_out), (1, 1, 1));
        assert_eq!(a.stats().queued, 0);
    }

    #[tokio::test]
    async fn a_refusal_shrinks_the_window_to_the_others_and_holds_grants() {
        let a = Admission::new(limits(4, 8, 60_000));
        let mut held = Vec::new();
        for c in 0..3 {
            held.push(
                a.acquire(ticket(Class::Interactive, c), far())
                    .await
                    .unwrap(),
            );
        }
        let fourth = a
            .acquire(ticket(Class::Interactive, 3), far())
            .await
            .unwrap();
        fourth.refused(None);
        let s = a.stats();
        assert_eq!((s.window, s.open, s.refused), (3, 3, 1));
        // A lone refused stream keeps a window of one, but grants wait out the hold.
        drop(held);
        let b = Admission::new(limits(3, 8, 60_000));
        b.acquire(ticket(Class::Interactive, 0), far())
            .await
            .unwrap()
            .refused(None);
        assert_eq!(b.stats().window, 1);
        let started = Instant::now();
        let p = b
            .acquire(ticket(Class::Interactive, 0), far())
            .await
            .unwrap();
        assert!(
            started.elapsed() >= REFUSAL_HOLD,
            "the hold spaced the retry"
        );
        p.accepted();
    }

    #[tokio::test]
    async fn demand_over_the_window_grows_it_up_to_the_ceiling_without_other_events() {
        let a = Admission::new(limits(1, 2, 50));
        let p1 = a
            .acquire(ticket(Class::Interactive, 0), far())
            .await
            .unwrap();
        // The window is full with a waiter and nothing else happens: the growth timer
        // alone admits the waiter while the first stream is still open.
        let a2 = Arc::clone(&a);
        let p2 =
            tokio::spawn(async move { a2.acquire(ticket(Class::Interactive, 1), far()).await })
                .await
                .unwrap()
                .unwrap();
        let s = a.stats();
        assert_eq!((s.window, s.open), (2, 2));
        // At the ceiling a waiter stays queued and no growth is scheduled.
        let a3 = Arc::clone(&a);
        let third = tokio::spawn(async move {
            a3.acquire(ticket(Class::Interactive, 2), far())
                .await
                .map(|_| ())
        });
        while a.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(a.lock().next_wake(&a.limits), None);
        assert_eq!(a.stats().window, 2, "capped by the ceiling");
        drop(p1);
        third.await.unwrap().unwrap();
        drop(p2);
    }
}
