//! A source the session's loop watches that is almost never ready (shutdown, token revocations), polled only
//! after it has woken the session.
//!
//! Both are shared by every connection of the server: a `Notify` and a broadcast channel, each behind one
//! mutex, which a poll that finds nothing takes to register the session (and takes again when the future is
//! dropped). The session's loop turns once per burst of events, and a fan-out turns thousands of loops per
//! event: polling these two in every turn would put four acquisitions of two server-wide locks on every
//! delivery, contended by every core. Here the source stays registered between turns, with a waker of its own
//! that raises a flag before waking the session, and a turn polls it only when the flag is up; otherwise
//! it costs a check of the flag and of the session's waker.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::Stream;
use futures::task::AtomicWaker;

pub(super) struct Gated<S> {
    /// Boxed: it stays registered across turns of the loop, and every idle connection's future would carry it.
    source: Pin<Box<S>>,
    flag: Arc<Flag>,
    /// `flag`, as the waker the source is polled with.
    waker: Waker,
}

struct Flag {
    /// Raised by the source's waker, lowered when the session polls the source.
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

impl<S: Stream> Gated<S> {
    pub fn new(source: S) -> Gated<S> {
        // Raised: the first poll registers the source.
        let flag = Arc::new(Flag { woken: AtomicBool::new(true), session: AtomicWaker::new() });
        Gated { source: Box::pin(source), waker: Waker::from(flag.clone()), flag }
    }
}

impl<S: Stream> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        // The session's waker first, then the flag: a wake in between is seen either way.
        self.flag.session.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        let polled = this.source.as_mut().poll_next(&mut Context::from_waker(&this.waker));
        if polled.is_ready() {
            // There may be more: look again at the next turn.
            this.flag.woken.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::task::noop_waker_ref;
    use tokio::sync::broadcast;
    use tokio_stream::wrappers::BroadcastStream;

    #[tokio::test]
    async fn a_message_sent_while_the_session_was_elsewhere_is_received() {
        let (tx, rx) = broadcast::channel::<u32>(4);
        let mut gated = Gated::new(BroadcastStream::new(rx));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(gated.poll_next_unpin(&mut cx).is_pending());
        // Not woken: the source is not polled again.
        assert!(!gated.flag.woken.load(Ordering::Acquire));
        assert!(gated.poll_next_unpin(&mut cx).is_pending());
        tx.send(7).unwrap();
        tx.send(8).unwrap();
        assert!(gated.flag.woken.load(Ordering::Acquire));
        assert_eq!(gated.next().await.unwrap().unwrap(), 7);
        assert_eq!(gated.next().await.unwrap().unwrap(), 8);
        let later = tokio::spawn(async move { gated.next().await.unwrap().unwrap() });
        tokio::task::yield_now().await;
        tx.send(9).unwrap();
        assert_eq!(later.await.unwrap(), 9);
    }

    #[tokio::test]
    async fn a_cancellation_wakes_the_session() {
        let token = tokio_util::sync::CancellationToken::new();
        let mut gated = Gated::new(futures::stream::once(token.clone().cancelled_owned()));
        let waiting = tokio::spawn(async move { gated.next().await.is_some() });
        tokio::task::yield_now().await;
        token.cancel();
        assert!(waiting.await.unwrap());
    }
}
