//! Where joining clients start: the project's latest seq, whether the join rule lets each in, where each one's
//! membership began, and, for a resume, the first page of its replay. One read per room for the joins that
//! queue together.
//!
//! After a server restarts, its thousands of clients come back within a second or two and each resumes with
//! `since`, most of them into the same few rooms and from the same seq (they had all caught up). Read one by
//! one, through the clients' share of the pool (an eighth of it), they queue for seconds. Here the first join
//! of a room starts a read at once, the joins of that room that arrive meanwhile wait for it to end and are
//! read together by the next one: the join rule for all their subjects in one query, the latest seq once, and
//! one page per distinct `since`, pipelined on one connection. A lone join costs what it did alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;

use super::{History, PAGE, Reader};
use crate::error::{Error, Result};
use crate::feed::event::Event;
use crate::feed::room_key::RoomKey;

/// The first page of a resume's replay: the events after `after`, at most `limit` of them and about `max_bytes`
/// (at least one event).
#[derive(Clone, Copy)]
pub(crate) struct Replay {
    pub after: i64,
    pub limit: i64,
    pub max_bytes: i64,
}

/// Where a joining client may start, as the database says.
pub(crate) struct JoinStart {
    pub latest: i64,
    /// The `at` of the latest event.
    pub latest_at: Option<String>,
    /// The lowest `since` the client may resume from: where its membership began (0 for a subject that is not
    /// a project member, whom the app's join rule lets in).
    pub since_seq: i64,
    /// The replay's first page, up to `latest` (empty without a replay).
    pub replay: Vec<Event>,
}

/// The joins waiting for their room's next read, by room (a room is here while a read of it is under way).
#[derive(Default)]
pub(super) struct Queues(Mutex<HashMap<RoomKey, Vec<Request>>>);

struct Request {
    subject: String,
    replay: Option<Replay>,
    /// `None`: the join rule does not let the subject in.
    answer: oneshot::Sender<Result<Option<JoinStart>, String>>,
}

impl History {
    /// Where a client joining `room` as `subject` starts, and with `replay` (a resume) its first page; `None`
    /// if the join rule does not let it in. To be asked after the client subscribed to the room: a removal
    /// committed in between is then seen here or arrives as an event.
    pub(crate) async fn join_start(
        self: &Arc<Self>,
        room: &RoomKey,
        subject: &str,
        replay: Option<Replay>,
    ) -> Result<Option<JoinStart>> {
        let (answer, answered) = oneshot::channel();
        let request = Request { subject: subject.to_string(), replay, answer };
        let first = {
            let mut queues = self.joins.0.lock().unwrap();
            match queues.get_mut(room) {
                Some(queue) => {
                    queue.push(request);
                    false
                }
                None => {
                    queues.insert(room.clone(), vec![request]);
                    true
                }
            }
        };
        if first {
            // A task of its own: the joins that queue behind this one must not depend on this client staying.
            tokio::spawn(self.clone().read_joins(room.clone()));
        }
        match answered.await {
            Ok(answer) => answer.map_err(Error::Shared),
            Err(_) => Err(Error::Shared("the join's read was dropped".into())),
        }
    }

    /// Reads for the joins queued in `room`, a batch at a time, until none is left.
    async fn read_joins(self: Arc<Self>, room: RoomKey) {
        let mut reading = Reading { queues: &self.joins, room: &room, done: false };
        loop {
            let batch = {
                let mut queues = self.joins.0.lock().unwrap();
                let queue = queues.get_mut(&room).map(std::mem::take).unwrap_or_default();
                if queue.is_empty() {
                    queues.remove(&room);
                    reading.done = true;
                    return;
                }
                queue
            };
            match self.read_batch(&room, &batch).await {
                Ok(starts) => {
                    for (request, start) in batch.into_iter().zip(starts) {
                        let _ = request.answer.send(Ok(start));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for request in batch {
                        let _ = request.answer.send(Err(message.clone()));
                    }
                }
            }
        }
    }

    /// One round trip for a batch of joins into `room`, in the order of `batch`.
    async fn read_batch(&self, room: &RoomKey, batch: &[Request]) -> Result<Vec<Option<JoinStart>>> {
        let (_slot, client) = self.connection(Reader::Client).await?;
        let latest = client
            .prepare_cached(
                "SELECT coalesce(e.seq, 0), to_json(e.at) #>> '{}'
                   FROM (SELECT 1) one
                   LEFT JOIN LATERAL (SELECT seq, at FROM feed_events WHERE room = $1 ORDER BY seq DESC LIMIT 1) e ON true",
            )
            .await?;
        // For each subject, in order: whether the join rule lets it in, and where its membership began.
        let subjects = client
            .prepare_cached(
                "SELECT coalesce(boardcast.may_join(s.subject, $1), false),
                        coalesce((SELECT m.since_seq FROM project_members m
                                   WHERE m.project_id = boardcast.uuid_or_null($1)
                                     AND m.user_id = boardcast.uuid_or_null(s.subject)), 0)
                   FROM unnest($2::text[]) WITH ORDINALITY s(subject, i)
                  ORDER BY s.i",
            )
            .await?;
        let page = client.prepare_cached(PAGE).await?;
        let names: Vec<&str> = batch.iter().map(|r| r.subject.as_str()).collect();
        // One page per distinct starting point, as large as the largest asked from it. The pages are read
        // after the latest seq (the queries run in the order sent), so they hold every event up to it; what
        // lies past it is left out below.
        let mut pages: Vec<Replay> = Vec::new();
        for replay in batch.iter().filter_map(|r| r.replay) {
            match pages.iter_mut().find(|p| p.after == replay.after) {
                Some(page) => page.max_bytes = page.max_bytes.max(replay.max_bytes),
                None => pages.push(replay),
            }
        }
        let latest_params: [&(dyn ToSql + Sync); 1] = [room];
        let subjects_params: [&(dyn ToSql + Sync); 2] = [room, &names];
        let page_params: Vec<[&(dyn ToSql + Sync); 5]> =
            pages.iter().map(|p| [room as &(dyn ToSql + Sync), &p.after, &i64::MAX, &p.limit, &p.max_bytes]).collect();
        let reads = page_params.iter().map(|params| client.query(&page, params));
        let _timed = (!pages.is_empty()).then(|| crate::metrics::history_read(false));
        let (latest, subjects, read) = futures::try_join!(
            client.query_one(&latest, &latest_params),
            client.query(&subjects, &subjects_params),
            futures::future::try_join_all(reads),
        )?;
        drop(client);
        self.client_pages.fetch_add(pages.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let (latest_seq, latest_at): (i64, Option<String>) = (latest.get(0), latest.get(1));
        let read: Vec<Vec<Event>> = read
            .into_iter()
            .map(|rows| {
                rows.into_iter().map(|r| Event::new(r.get(0), r.get(1))).filter(|e| e.seq <= latest_seq).collect()
            })
            .collect();
        let starts = batch.iter().zip(subjects).map(|(request, row)| {
            let (allowed, since_seq): (bool, i64) = (row.get(0), row.get(1));
            // A page read for someone the rule does not let in is never handed to them.
            allowed.then(|| JoinStart {
                latest: latest_seq,
                latest_at: latest_at.clone(),
                since_seq,
                replay: request.replay.map_or_else(Vec::new, |replay| {
                    let i = pages.iter().position(|p| p.after == replay.after).expect("a page per starting point");
                    first_page(&read[i], replay.max_bytes)
                }),
            })
        });
        Ok(starts.collect())
    }
}

/// A room's reads under way. Should they end before the queue is empty (a panic, the runtime shutting down),
/// the room's queue goes with them: its joins are answered with an error, not left waiting, and the next join
/// of the room starts reading again.
struct Reading<'a> {
    queues: &'a Queues,
    room: &'a RoomKey,
    /// The queue was found empty and removed: another join may have made a new one since.
    done: bool,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.queues.0.lock().unwrap_or_else(|e| e.into_inner()).remove(self.room);
        }
    }
}

/// The start of `page` that one client asked for: events while the frames before them come to less than
/// `max_bytes` (so at least one), as a read of its own would have returned.
fn first_page(page: &[Event], max_bytes: i64) -> Vec<Event> {
    let mut before = 0i64;
    page.iter()
        .take_while(|e| {
            let take = before < max_bytes;
            before += e.frame.len() as i64;
            take
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_share_of_a_page_takes_events_while_the_frames_before_them_are_under_its_budget() {
        let page: Vec<Event> = (1..=4).map(|seq| Event::new(seq, format!("{{\"seq\":{seq:08}}}"))).collect();
        let seqs = |max_bytes| first_page(&page, max_bytes).iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(page[0].frame.len(), 16);
        assert_eq!(seqs(1), [1], "always at least one event");
        assert_eq!(seqs(16), [1]);
        assert_eq!(seqs(17), [1, 2]);
        assert_eq!(seqs(1 << 20), [1, 2, 3, 4]);
        assert!(first_page(&[], 100).is_empty());
    }
}
