//! How many WebSockets this process serves, in all and per user (a token's subject: a boardcast user's id, or a
//! JWT's `sub`): a slot is taken at the handshake, before the upgrade, and given back when the connection's task
//! ends, however it ends (the slot is dropped with it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::FeedSettings;

/// File descriptors kept for what is not a WebSocket when the limit is derived from the open-file limit: the
/// pool and the listener, the REST API's clients, the process's own files.
const RESERVED_FDS: usize = 256;

pub(crate) struct Slots {
    max: usize,
    max_per_user: usize,
    /// Open connections by user; their sum is `total`.
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_user: HashMap<Arc<str>, usize>,
}

/// Why a connection is refused.
#[derive(Debug, PartialEq)]
pub(crate) enum Full {
    Server(usize),
    User(usize),
}

/// One open connection's place, given back when dropped.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    user: Arc<str>,
}

impl Slots {
    /// The limits of `settings`; without a set server limit, the open-file limit less the pool's connections
    /// and a reserve.
    pub fn new(settings: &FeedSettings, pool_size: usize) -> Arc<Slots> {
        let max = settings.max_connections.unwrap_or_else(|| {
            let (soft, _) = crate::process::open_file_limit();
            (soft as usize).saturating_sub(pool_size + RESERVED_FDS).max(1)
        });
        Arc::new(Slots { max, max_per_user: settings.max_connections_per_user, held: Mutex::default() })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a connection of `user`, unless the server or the user is at the limit.
    pub fn take(self: &Arc<Self>, user: &str) -> Result<Slot, Full> {
        let mut held = self.held.lock().unwrap();
        if held.total >= self.max {
            return Err(Full::Server(self.max));
        }
        // A subject's connections share one copy of it.
        let user: Arc<str> = match held.by_user.get_key_value(user) {
            Some((key, _)) => key.clone(),
            None => Arc::from(user),
        };
        let mine = held.by_user.entry(user.clone()).or_default();
        if *mine >= self.max_per_user {
            return Err(Full::User(self.max_per_user));
        }
        *mine += 1;
        held.total += 1;
        Ok(Slot { slots: self.clone(), user })
    }

    /// Whether the server is at its limit (checked before the token, which costs a query).
    pub fn server_full(&self) -> bool {
        self.held.lock().unwrap().total >= self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap();
        held.total -= 1;
        if let Some(n) = held.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                held.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_user_and_in_all_and_given_back_when_dropped() {
        let settings = FeedSettings { max_connections: Some(3), max_connections_per_user: 2, ..Default::default() };
        let slots = Slots::new(&settings, 8);
        let (alice, bob) = ("alice", "bob");
        let a1 = slots.take(alice).unwrap();
        let _a2 = slots.take(alice).unwrap();
        assert_eq!(slots.take(alice).err(), Some(Full::User(2)));
        let _b1 = slots.take(bob).unwrap();
        assert_eq!(slots.take(bob).err(), Some(Full::Server(3)));
        assert!(slots.server_full());
        drop(a1);
        assert!(slots.take(bob).is_ok());
    }

    #[test]
    fn without_a_set_limit_the_open_file_limit_less_a_reserve_applies() {
        let slots = Slots::new(&FeedSettings::default(), 16);
        let (soft, _) = crate::process::open_file_limit();
        assert_eq!(slots.max(), (soft as usize).saturating_sub(16 + RESERVED_FDS).max(1));
    }
}
