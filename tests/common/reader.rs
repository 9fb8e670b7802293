//! A client that reads on a task of its own, so that it keeps reading while the test does something long:
//! writes 100,000 rows, restarts PostgreSQL, reads another client. The server disconnects a client that
//! accepts no data for its send timeout, as designed; a test that leaves a client unread while the database
//! works would pass or fail with the machine's speed.

use std::panic::resume_unwind;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{WAIT, WsClient};

/// A client reading the events of its one room in the background. It waits for them as long as it takes,
/// because only the test knows when its writes are done: the test then says where to stop
/// ([`Reader::until`]), and from there each event must come within [`WAIT`] of the one before.
pub struct Reader<S> {
    /// The seq of the last event read (the seq it started after, before any).
    read: watch::Receiver<i64>,
    stop_at: watch::Sender<Option<i64>>,
    task: JoinHandle<(WsClient, S)>,
}

impl WsClient {
    /// Reads the events after seq `after` on a task of its own, handing each to `on_event` with `state` to
    /// keep or check it. A panic in `on_event`, a frame that is not an event or a closed connection fails the
    /// test when it next waits on the reader.
    pub fn read_in_background<S, F>(self, after: i64, state: S, on_event: F) -> Reader<S>
    where
        S: Send + 'static,
        F: FnMut(&mut S, Value) + Send + 'static,
    {
        let (progress, read) = watch::channel(after);
        let (stop_at, stop) = watch::channel(None);
        let task = tokio::spawn(read_events(self, progress, stop, state, on_event));
        Reader { read, stop_at, task }
    }

    /// Reads the events after seq `after` on a task of its own, keeping them all.
    pub fn collect_in_background(self, after: i64) -> Reader<Vec<Value>> {
        self.read_in_background(after, Vec::new(), |events, e| events.push(e))
    }
}

async fn read_events<S, F>(
    mut client: WsClient,
    progress: watch::Sender<i64>,
    mut stop: watch::Receiver<Option<i64>>,
    mut state: S,
    mut on_event: F,
) -> (WsClient, S)
where
    F: FnMut(&mut S, Value),
{
    loop {
        let last = *progress.borrow();
        if let Some(end) = *stop.borrow_and_update() {
            assert!(last <= end, "read seq {last}, past the last expected, {end}");
            if last == end {
                return (client, state);
            }
        }
        tokio::select! {
            frame = client.next_frame() => {
                let f = frame.unwrap_or_else(|| panic!("the connection closed after seq {last} (dropped as too slow?)"));
                assert_eq!(f["op"], "event", "expected an event, got {f}");
                progress.send_replace(f["seq"].as_i64().expect("an event has a seq"));
                on_event(&mut state, f);
            }
            // Told where to stop: look again whether that is here.
            Ok(()) = stop.changed() => {}
        }
    }
}

impl<S> Reader<S> {
    /// The seq of the last event read so far.
    pub fn last_seq(&self) -> i64 {
        *self.read.borrow()
    }

    /// Waits until the event with seq `seq` (or a later one) has been read, each event within [`WAIT`] of the
    /// one before.
    pub async fn reached(&mut self, seq: i64) {
        loop {
            let last = *self.read.borrow_and_update();
            if last >= seq {
                return;
            }
            match tokio::time::timeout(WAIT, self.read.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => self.failed(last, seq).await,
                Err(_) => panic!("no event within {WAIT:?}: read up to seq {last}, waiting for {seq}"),
            }
        }
    }

    /// Reads up to and including seq `end` (each event within [`WAIT`] of the one before, from now on; none
    /// past it), then hands back the client, to check what comes next, and the state.
    pub async fn until(mut self, end: i64) -> (WsClient, S) {
        self.stop_at.send_replace(Some(end));
        self.reached(end).await;
        match self.task.await {
            Ok(done) => done,
            Err(e) => resume_unwind(e.into_panic()),
        }
    }

    /// The reading task ended before `seq`: its panic says why.
    async fn failed(&mut self, last: i64, seq: i64) -> ! {
        match (&mut self.task).await {
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            other => panic!("stopped reading at seq {last}, before {seq}: {:?}", other.err()),
        }
    }
}
