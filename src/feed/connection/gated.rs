//! The sources the session's loop watches that are seldom ready (shutdown, token revocations, the ping timer,
//! the rooms' presence and broadcasts), polled only after one of them has woken the session.
//!
//! Shutdown and revocations are shared by every connection of the server: a `Notify` and a broadcast channel,
//! each behind one mutex, which a poll that finds nothing takes to register the session (and takes again when
//! the future is dropped); the rooms' signals are a broadcast channel per room, with the same lock. The
//! session's loop turns once per burst of events, and a fan-out turns thousands of loops per event: polling
//! these in every turn would put several acquisitions of shared locks on every delivery, contended by every
//! core. Behind a gate they stay registered between turns, with a waker of the gate's own that raises a flag
//! before waking the session, and a turn polls them only when the flag is up; otherwise the gate costs a load
//! of the flag and a comparison of wakers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use futures::task::AtomicWaker;

pub(super) struct Gate {
    flag: Arc<Flag>,
    /// `flag`, as the waker the gated sources are polled with.
    waker: Waker,
    /// The session's waker, as last given to `flag`: `flag` holds it until it wakes the session.
    registered: Option<Waker>,
}

struct Flag {
    /// Raised by the sources' waker, lowered when the session polls them.
    woken: AtomicBool,
    session: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.session.wake();
    }
}

impl Gate {
    pub fn new() -> Gate {
        // Raised: the first turn registers the sources.
        let flag = Arc::new(Flag { woken: AtomicBool::new(true), session: AtomicWaker::new() });
        Gate { waker: Waker::from(flag.clone()), flag, registered: None }
    }

    /// Whether the sources are to be polled in this turn (then with [`Self::context`]). Lowers the flag.
    pub fn open(&mut self, cx: &Context<'_>) -> bool {
        // While the flag is down, `flag` still holds the session's waker (only a wake takes it): nothing to do.
        if !self.flag.woken.load(Ordering::Acquire) && self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        // The session's waker first, then the flag: a wake in between is seen either way.
        self.flag.session.register(cx.waker());
        self.registered = Some(cx.waker().clone());
        self.flag.woken.swap(false, Ordering::AcqRel)
    }

    /// The context to poll the sources with: their wakes raise the flag.
    pub fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    /// Poll the sources at the next turn: one was ready (there may be more), or the session polled one of them
    /// itself, or added one.
    pub fn again(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::task::Poll;
    use tokio::sync::broadcast;
    use tokio_stream::wrappers::BroadcastStream;

    /// The next message of `stream` behind `gate`, as the session's loop takes it.
    async fn next(gate: &mut Gate, stream: &mut BroadcastStream<u32>) -> u32 {
        std::future::poll_fn(|cx| {
            if !gate.open(cx) {
                return Poll::Pending;
            }
            match stream.poll_next_unpin(&mut gate.context()) {
                Poll::Ready(Some(Ok(v))) => {
                    gate.again();
                    Poll::Ready(v)
                }
                _ => Poll::Pending,
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_message_wakes_the_session_once_the_gate_is_down() {
        let (tx, rx) = broadcast::channel::<u32>(4);
        let (mut gate, mut stream) = (Gate::new(), BroadcastStream::new(rx));
        let waker = futures::task::noop_waker();
        let cx = Context::from_waker(&waker);
        assert!(gate.open(&cx), "the first turn polls");
        assert!(stream.poll_next_unpin(&mut gate.context()).is_pending());
        assert!(!gate.open(&cx), "not woken: not polled");
        tx.send(7).unwrap();
        tx.send(8).unwrap();
        assert_eq!(next(&mut gate, &mut stream).await, 7);
        assert_eq!(next(&mut gate, &mut stream).await, 8);
        let later = tokio::spawn(async move { next(&mut gate, &mut stream).await });
        tokio::task::yield_now().await;
        tx.send(9).unwrap();
        assert_eq!(later.await.unwrap(), 9);
    }
}
