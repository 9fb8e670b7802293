//! A room's broadcast: tokio's broadcast channel for the buffer its subscribers read, and a table of the
//! subscribers waiting for its next message, one slot each, which the room rings after each send.
//!
//! tokio's broadcast can wait too (`Receiver::recv`), but its waiter lives inside the receive future, linked
//! into the channel's list, so the future must stay pinned where it is while it waits: a box per subscriber,
//! which the subscriber and the sender each find cold in memory at every delivery. Here a subscriber with
//! nothing to take leaves its waker in its slot of the room's table, and the sender walks the armed slots of
//! one table. The broadcast itself is still tokio's, for its buffer, its lag and its count of what is yet to
//! be taken; only the wait is the room's.
//!
//! No wake is lost: a subscriber arms its slot and then looks at the buffer once more; the room sends and then
//! rings. Whichever of the two comes second under the table's lock sees what the other did.

use std::sync::{Arc, Mutex};
use std::task::Waker;

use tokio::sync::broadcast::{self, Receiver, Sender};

use super::message::RoomMessage;

/// The sending side. It is dropped with its room, which closes only when its last subscriber has left: no
/// one is waiting then, and so no one is woken to find it closed.
pub(super) struct Broadcast {
    messages: Sender<Arc<RoomMessage>>,
    waiters: Arc<Waiters>,
}

impl Broadcast {
    /// A broadcast that keeps the last `buffer` messages for subscribers that are behind.
    pub fn new(buffer: usize) -> Broadcast {
        Broadcast { messages: broadcast::channel(buffer).0, waiters: Arc::default() }
    }

    /// Sends to every subscriber, and wakes the ones waiting; `false` if there are none (nothing is sent).
    pub fn send(&self, message: RoomMessage) -> bool {
        let sent = self.messages.send(Arc::new(message)).is_ok();
        self.waiters.ring();
        sent
    }

    /// The messages some subscriber has yet to take (they are the latest sends).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn subscribers(&self) -> usize {
        self.messages.receiver_count()
    }

    /// A subscriber's receiver, from the next send on, and its slot to wait in.
    pub fn subscribe(&self) -> (Receiver<Arc<RoomMessage>>, Slot) {
        (self.messages.subscribe(), self.waiters.join())
    }
}

#[derive(Default)]
struct Waiters {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// By subscriber: the waker of one that waits, `None` for one that does not (or a free slot).
    slots: Vec<Option<Waker>>,
    /// The slots that hold a waker, in the order they were armed.
    armed: Vec<u32>,
    /// Slots left by subscribers, to be given to the next ones.
    free: Vec<u32>,
}

/// A subscriber's slot in the table, given back when dropped.
pub(super) struct Slot {
    waiters: Arc<Waiters>,
    index: u32,
}

impl Waiters {
    fn join(self: &Arc<Self>) -> Slot {
        let mut table = self.table.lock().unwrap();
        let index = match table.free.pop() {
            Some(index) => index,
            None => {
                table.slots.push(None);
                u32::try_from(table.slots.len() - 1).expect("fewer than 2^32 subscribers in a room")
            }
        };
        Slot { waiters: self.clone(), index }
    }

    /// Wakes every armed subscriber, once. The wakers are taken out under the lock and woken after it: waking
    /// schedules a task, and a thousand of them would keep the other core's subscribers from arming meanwhile.
    fn ring(&self) {
        let woken: Vec<Waker> = {
            let mut table = self.table.lock().unwrap();
            if table.armed.is_empty() {
                return;
            }
            let Table { slots, armed, .. } = &mut *table;
            armed.drain(..).filter_map(|slot| slots[slot as usize].take()).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// Subscribers waiting now.
    #[cfg(test)]
    fn armed(&self) -> usize {
        let table = self.table.lock().unwrap();
        table.slots.iter().filter(|w| w.is_some()).count()
    }
}

impl Slot {
    /// Wakes `waker` at the next send (the subscriber then looks at the buffer again before it waits).
    pub fn arm(&self, waker: &Waker) {
        let mut table = self.waiters.table.lock().unwrap();
        let table = &mut *table;
        match &mut table.slots[self.index as usize] {
            Some(armed) if armed.will_wake(waker) => {}
            Some(armed) => armed.clone_from(waker),
            empty @ None => {
                *empty = Some(waker.clone());
                table.armed.push(self.index);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.waiters.table.lock().unwrap();
        // An armed slot stays in `armed` until the next ring, which finds it empty (or armed again by the next
        // subscriber to hold it, which it then wakes once for nothing).
        table.slots[self.index as usize] = None;
        table.free.push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_ring_wakes_each_armed_subscriber_once_and_disarms_it() {
        let waiters = Arc::new(Waiters::default());
        let (a, b, c) = (waiters.join(), waiters.join(), waiters.join());
        let ((ca, wa), (cb, wb)) = (counter(), counter());
        a.arm(&wa);
        a.arm(&wa);
        b.arm(&wb);
        assert_eq!(waiters.armed(), 2, "armed twice with the same waker is one wait");
        waiters.ring();
        assert_eq!((ca.0.load(Ordering::SeqCst), cb.0.load(Ordering::SeqCst)), (1, 1));
        waiters.ring();
        assert_eq!((ca.0.load(Ordering::SeqCst), cb.0.load(Ordering::SeqCst)), (1, 1), "woken once per arming");
        assert_eq!(waiters.armed(), 0);
        drop(c);
    }

    #[test]
    fn a_new_waker_replaces_the_old_one_and_a_left_slot_is_not_woken() {
        let waiters = Arc::new(Waiters::default());
        let (a, b) = (waiters.join(), waiters.join());
        let ((old, w_old), (new, w_new), (left, w_left)) = (counter(), counter(), counter());
        a.arm(&w_old);
        a.arm(&w_new);
        b.arm(&w_left);
        drop(b);
        waiters.ring();
        assert_eq!(old.0.load(Ordering::SeqCst), 0, "the session moved to another waker");
        assert_eq!(new.0.load(Ordering::SeqCst), 1);
        assert_eq!(left.0.load(Ordering::SeqCst), 0, "a subscriber that left is not woken");
        let reused = waiters.join();
        assert_eq!(reused.index, 1, "the slot left is given to the next subscriber");
    }
}
