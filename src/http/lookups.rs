//! Token lookups, batched once the pool is busy with them: a token is looked up at once while fewer lookups than
//! the pool has connections are under way, and otherwise waits for one of them to end, to be looked up with the
//! others that waited, in one query.
//!
//! Every request and every WebSocket upgrade looks its `bc_` token up. After a server restarts, its thousands of
//! clients come back within a second or two, each with an upgrade to authenticate; one query each, through the
//! pool, is a queue of round trips that every API request waits in too. Batched, a lookup alone costs what it
//! did, and a storm of them costs a round trip per batch.

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use crate::auth::{self, Identity};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct Lookups {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Lookups under way (each a task that, done with its batch, takes whatever queued meanwhile).
    reading: usize,
    /// Tokens waiting for a lookup to end: the next batch.
    queue: Vec<Waiting>,
}

struct Waiting {
    hash: [u8; 32],
    /// `None`: an unknown, revoked or expired token.
    answer: oneshot::Sender<Result<Option<Identity>, String>>,
}

impl Lookups {
    /// The identity a token's hash stands for; `None` for an unknown, revoked or expired token.
    pub async fn authenticate(self: &Arc<Self>, pool: &Pool, hash: [u8; 32]) -> Result<Option<Identity>> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { hash, answer };
        // At most as many lookups as the pool has connections: more would only wait for one.
        let max = pool.status().max_size.max(1);
        let now = {
            let mut state = self.state.lock().unwrap();
            if state.reading < max {
                state.reading += 1;
                Some(waiting)
            } else {
                state.queue.push(waiting);
                None
            }
        };
        if let Some(waiting) = now {
            // A task of its own: the requests that queue behind it must not depend on this one staying.
            tokio::spawn(self.clone().read(pool.clone(), vec![waiting]));
        }
        match answered.await {
            Ok(answer) => answer.map_err(Error::Shared),
            Err(_) => Err(Error::Shared("the token lookup was dropped".into())),
        }
    }

    /// Looks `batch` up, then the tokens queued meanwhile, a batch at a time, until none is left.
    async fn read(self: Arc<Self>, pool: Pool, mut batch: Vec<Waiting>) {
        let mut reading = Reading { lookups: &self, done: false };
        loop {
            let hashes: Vec<&[u8]> = batch.iter().map(|w| &w.hash[..]).collect();
            let found = match pool.get().await {
                Ok(client) => auth::authenticate_many(&**client, &hashes).await,
                Err(e) => Err(e.into()),
            };
            match found {
                Ok(found) => {
                    for waiting in batch {
                        let _ = waiting.answer.send(Ok(found.get(&waiting.hash[..]).cloned()));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for waiting in batch {
                        let _ = waiting.answer.send(Err(message.clone()));
                    }
                }
            }
            let mut state = self.state.lock().unwrap();
            if state.queue.is_empty() {
                state.reading -= 1;
                reading.done = true;
                return;
            }
            batch = std::mem::take(&mut state.queue);
        }
    }
}

/// A lookup under way. Should it end before its work is done (a panic, the runtime shutting down), it no longer
/// counts, so that the next request starts one of its own (the queue may wait meanwhile for the others).
struct Reading<'a> {
    lookups: &'a Lookups,
    /// It found the queue empty and stopped.
    done: bool,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.lookups.state.lock().unwrap_or_else(|e| e.into_inner());
            state.reading -= 1;
        }
    }
}
