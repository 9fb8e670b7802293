//! What a request meets before the database: the gate. Unknown tokens must not cost a database round trip
//! each, without limit, so the gate keeps, in bounded memory:
//!
//! * a budget of failed authentications per client address (a token bucket: `auth_failures_per_min`, in a
//!   burst or spread out). A client with no budget left is answered 429 before any database work, unless its
//!   token is one the gate recently saw succeed: a client that shares an address with an attacker (a NAT, a
//!   proxy) keeps working with a token it already used;
//! * the hashes of tokens recently found unknown (or revoked, or expired: none of them ever becomes valid
//!   again), refused without a query;
//! * the hashes of tokens recently found valid. This only spares them the budget: a valid token is always
//!   checked with the database, so a revocation takes effect at once.
//!
//! JWTs ([`crate::jwt`]) are checked here too, against keys held by the gate, with no database: a JWT that fails
//! costs its client a unit of the same budget (a client guessing tokens meets the same 429 whichever kind it
//! tries), and is remembered like an unknown token; one that passes gives its unit back.
//!
//! With the request's client address and arrival time, the gate reaches every request through its extensions
//! (see [`Door`]), put there by the accept loop.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use warp::Filter;

use crate::config::HttpSettings;
use crate::http::lookups::Lookups;
use crate::jwt::Keys;

/// How long the gate remembers a token hash (unknown or valid): between this and twice this.
const REMEMBER: Duration = Duration::from_secs(60);
/// Hashes remembered of each kind, at most twice this (32 bytes each, and the table's own).
const REMEMBERED: usize = 10_000;
/// Client addresses with a budget being spent, at most; the full ones are forgotten first.
const CLIENTS: usize = 100_000;

pub struct Gate {
    pub settings: HttpSettings,
    /// The keys JWTs are checked with; `None`: JWTs are not accepted.
    pub jwt: Option<Arc<Keys>>,
    budgets: Mutex<HashMap<ClientKey, Budget>>,
    unknown: Mutex<Recent>,
    valid: Mutex<Recent>,
    /// Woken whenever a lookup ends: requests waiting for its unit ([`Refusal::Pending`]) look again.
    released: Notify,
    /// The database's lookups of tokens, batched.
    pub lookups: Arc<Lookups>,
}

/// The gate and the client address of one request: what the accept loop puts in every request's extensions.
#[derive(Clone)]
pub struct Door {
    pub gate: Arc<Gate>,
    pub client: SocketAddr,
}

/// The request's [`Door`]. A request that did not come through the accept loop (none do, in the server)
/// gets a gate of its own with the default settings, and no memory.
pub fn door() -> impl Filter<Extract = (Door,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<Door>().map(|door: Option<Door>| {
        door.unwrap_or_else(|| Door {
            gate: Arc::new(Gate::new(HttpSettings::default())),
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
        })
    })
}

/// A client address as the budget counts it: an IPv4 address, or an IPv6 /64 (what one host is usually
/// given; a budget per IPv6 address would give one attacker billions).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl ClientKey {
    fn of(addr: IpAddr) -> ClientKey {
        match addr.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(a.octets()),
            IpAddr::V6(a) => ClientKey::V6(a.octets()[..8].try_into().unwrap()),
        }
    }
}

/// A token bucket: `tokens` failures may be made now; it refills at the per-minute rate, up to the burst.
/// `pending` of the units taken are held by lookups still running: each is spent if its token fails, and
/// given back if it succeeds.
struct Budget {
    tokens: f64,
    at: Instant,
    pending: u32,
}

/// Hashes seen recently, in two generations: lookups see both, inserts go to the newer, and the older is
/// dropped when the newer is full or [`REMEMBER`] old. Bounded, and no sweep.
struct Recent {
    newer: HashSet<[u8; 32]>,
    older: HashSet<[u8; 32]>,
    since: Instant,
    remember: Duration,
}

impl Recent {
    fn new(remember: Duration) -> Recent {
        Recent { newer: HashSet::new(), older: HashSet::new(), since: Instant::now(), remember }
    }

    fn contains(&mut self, hash: &[u8; 32]) -> bool {
        self.age();
        self.newer.contains(hash) || self.older.contains(hash)
    }

    fn insert(&mut self, hash: [u8; 32]) {
        self.age();
        if self.newer.len() >= REMEMBERED {
            self.older = std::mem::take(&mut self.newer);
            self.since = Instant::now();
        }
        self.newer.insert(hash);
    }

    fn remove(&mut self, hash: &[u8; 32]) {
        self.newer.remove(hash);
        self.older.remove(hash);
    }

    fn age(&mut self) {
        let elapsed = self.since.elapsed();
        if elapsed >= self.remember * 2 {
            self.older.clear();
            self.newer.clear();
            self.since = Instant::now();
        } else if elapsed >= self.remember {
            self.older = std::mem::take(&mut self.newer);
            self.since = Instant::now();
        }
    }
}

/// Why the gate does not let a request through to the database.
#[derive(Debug)]
pub enum Refusal {
    /// The client has no budget for another failure.
    OverBudget { retry_after: Duration },
    /// The budget is taken by lookups still running, which may give it back (their tokens may be valid):
    /// a burst of connections with good tokens (a reconnect after a restart, many users behind one NAT)
    /// waits for them instead of being refused.
    Pending,
}

/// One unit of a client's budget, taken for one token lookup: given back when dropped, unless the token
/// failed ([`Reservation::spend`]). A lookup that ends early (an error, a client gone) gives it back too.
pub struct Reservation<'g> {
    gate: &'g Gate,
    client: ClientKey,
    spent: bool,
}

impl Reservation<'_> {
    /// The token failed: the unit stays taken.
    pub fn spend(mut self) {
        self.spent = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let burst = self.gate.burst();
        if let Some(budget) = self.gate.budgets.lock().unwrap().get_mut(&self.client) {
            budget.pending = budget.pending.saturating_sub(1);
            if !self.spent {
                budget.tokens = (budget.tokens + 1.0).min(burst);
            }
        }
        self.gate.released.notify_waiters();
    }
}

impl Gate {
    pub fn new(settings: HttpSettings) -> Gate {
        Gate {
            settings,
            jwt: None,
            budgets: Mutex::new(HashMap::new()),
            unknown: Mutex::new(Recent::new(REMEMBER)),
            valid: Mutex::new(Recent::new(REMEMBER)),
            released: Notify::new(),
            lookups: Arc::default(),
        }
    }

    /// The gate, checking JWTs with `keys`.
    pub fn with_jwt(self, keys: Option<Arc<Keys>>) -> Gate {
        Gate { jwt: keys, ..self }
    }

    fn burst(&self) -> f64 {
        f64::from(self.settings.auth_failures_per_min.max(1))
    }

    fn per_sec(&self) -> f64 {
        self.burst() / 60.0
    }

    /// Takes one unit of the client's budget for a token lookup, before the token is checked: concurrent
    /// requests cannot all pass on the same last unit.
    pub fn admit(&self, client: IpAddr) -> Result<Reservation<'_>, Refusal> {
        let key = ClientKey::of(client);
        let mut budgets = self.budgets.lock().unwrap();
        let budget = self.budget(&mut budgets, key);
        if budget.tokens < 1.0 {
            if budget.pending > 0 {
                return Err(Refusal::Pending);
            }
            let retry_after = Duration::from_secs_f64((1.0 - budget.tokens) / self.per_sec());
            crate::metrics::rate_limited("http_auth_failures");
            return Err(Refusal::OverBudget { retry_after });
        }
        budget.tokens -= 1.0;
        budget.pending += 1;
        Ok(Reservation { gate: self, client: key, spent: false })
    }

    /// Takes one failure from the client's budget after the fact (a recently valid token that no longer is),
    /// whatever is left.
    pub fn charge(&self, client: IpAddr) {
        let mut budgets = self.budgets.lock().unwrap();
        let budget = self.budget(&mut budgets, ClientKey::of(client));
        budget.tokens = (budget.tokens - 1.0).max(0.0);
    }

    /// The client's budget, refilled to now. The table is bounded: past [`CLIENTS`] addresses, the ones
    /// with a full budget (and no lookup running) are forgotten first.
    fn budget<'b>(&self, budgets: &'b mut HashMap<ClientKey, Budget>, key: ClientKey) -> &'b mut Budget {
        let now = Instant::now();
        if budgets.len() >= CLIENTS {
            let full = self.burst();
            budgets.retain(|_, b| b.pending > 0 || self.refilled(b, now) < full);
            if budgets.len() >= CLIENTS {
                budgets.retain(|_, b| b.pending > 0); // an attack from more addresses than that: forget
            }
        }
        let budget = budgets.entry(key).or_insert(Budget { tokens: self.burst(), at: now, pending: 0 });
        budget.tokens = self.refilled(budget, now);
        budget.at = now;
        budget
    }

    fn refilled(&self, budget: &Budget, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(budget.at).as_secs_f64();
        (budget.tokens + elapsed * self.per_sec()).min(self.burst())
    }

    /// Completes when a lookup ends after this call (create it before [`Gate::admit`], so that none is
    /// missed in between).
    pub fn lookup_ended(&self) -> Notified<'_> {
        self.released.notified()
    }

    pub fn known_unknown(&self, hash: &[u8; 32]) -> bool {
        self.unknown.lock().unwrap().contains(hash)
    }

    pub fn recently_valid(&self, hash: &[u8; 32]) -> bool {
        self.valid.lock().unwrap().contains(hash)
    }

    pub fn found_valid(&self, hash: [u8; 32]) {
        self.valid.lock().unwrap().insert(hash);
    }

    pub fn found_unknown(&self, hash: [u8; 32]) {
        self.valid.lock().unwrap().remove(&hash);
        self.unknown.lock().unwrap().insert(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_min: u32) -> Gate {
        Gate::new(HttpSettings { auth_failures_per_min: per_min, ..HttpSettings::default() })
    }

    /// Moves a client's budget `d` into the past, as if that much time had gone by.
    fn wait(g: &Gate, client: &str, d: Duration) {
        let key = ClientKey::of(client.parse().unwrap());
        let mut budgets = g.budgets.lock().unwrap();
        let b = budgets.get_mut(&key).unwrap();
        b.at -= d;
    }

    fn over_budget(r: Result<Reservation<'_>, Refusal>) -> Duration {
        match r {
            Err(Refusal::OverBudget { retry_after }) => retry_after,
            Err(Refusal::Pending) => panic!("pending, not over budget"),
            Ok(_) => panic!("admitted"),
        }
    }

    #[test]
    fn a_budget_is_spent_then_refills_at_its_rate() {
        let g = gate(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..60 {
            g.admit(a).unwrap().spend();
        }
        let retry_after = over_budget(g.admit(a));
        assert!(retry_after <= Duration::from_secs(1) && !retry_after.is_zero(), "{retry_after:?}");
        assert!(g.admit("192.0.2.2".parse().unwrap()).is_ok(), "another address has its own budget");
        wait(&g, "192.0.2.1", Duration::from_millis(1500));
        g.admit(a).unwrap().spend();
        over_budget(g.admit(a)); // one and a half seconds refill one failure, not two
        wait(&g, "192.0.2.1", Duration::from_secs(120));
        for _ in 0..60 {
            g.admit(a).unwrap().spend();
        }
        over_budget(g.admit(a)); // a budget refills up to its burst, no further
    }

    #[test]
    fn a_lookup_that_succeeds_gives_its_unit_back_and_others_wait_for_it() {
        let g = gate(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let (first, second) = (g.admit(a).unwrap(), g.admit(a).unwrap());
        assert!(matches!(g.admit(a), Err(Refusal::Pending)), "both units are held by lookups still running");
        drop(first); // a valid token (or a lookup cut short): the unit comes back
        let third = g.admit(a).unwrap();
        second.spend();
        third.spend();
        over_budget(g.admit(a)); // two failures: the budget is spent, and nothing is pending
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let g = gate(1);
        g.admit("2001:db8::1".parse().unwrap()).unwrap().spend();
        assert!(g.admit("2001:db8::ffff:2".parse().unwrap()).is_err());
        assert!(g.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
        g.admit("::ffff:192.0.2.9".parse().unwrap()).unwrap().spend();
        assert!(g.admit("192.0.2.9".parse().unwrap()).is_err(), "a v4-mapped address is its v4 address");
    }

    #[test]
    fn hashes_are_remembered_for_a_while_and_in_bounded_number() {
        let g = gate(60);
        g.found_unknown([1; 32]);
        assert!(g.known_unknown(&[1; 32]));
        g.unknown.lock().unwrap().since -= REMEMBER;
        assert!(g.known_unknown(&[1; 32]), "still remembered, in the older generation");
        g.unknown.lock().unwrap().since -= REMEMBER;
        assert!(!g.known_unknown(&[1; 32]), "forgotten after twice REMEMBER at most");
        for i in 0..(3 * REMEMBERED as u32) {
            let mut h = [0; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            g.found_unknown(h);
        }
        let unknown = g.unknown.lock().unwrap();
        assert!(unknown.newer.len() + unknown.older.len() <= 2 * REMEMBERED);
    }

    #[test]
    fn a_token_found_unknown_is_no_longer_valid() {
        let g = gate(60);
        g.found_valid([2; 32]);
        assert!(g.recently_valid(&[2; 32]));
        g.found_unknown([2; 32]);
        assert!(!g.recently_valid(&[2; 32]) && g.known_unknown(&[2; 32]));
    }
}
