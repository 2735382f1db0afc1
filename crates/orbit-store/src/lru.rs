//! A process-wide pool of things kept only for speed (held log descriptors, kept listing
//! bodies), bounded by a total cost and given back least recently used first. An owner keeps
//! a [`Held`] token, not the thing: the pool may evict it at any time to make room for newer
//! ones, and the owner then finds it gone and does without (reads the ordinary way). Dropping
//! the token gives the thing back at once.
//!
//! Why one pool per kind instead of a cap per owner: what is worth keeping is whatever was
//! used last, whichever agent it belongs to. A first-come cap never given back would leave
//! the speed to the first agents listed and none to newer ones once it is reached.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Things kept, each with its cost and its last use, under a bound on the total cost.
pub(crate) struct Pool<V> {
    max_cost: u64,
    state: Mutex<State<V>>,
}

struct State<V> {
    /// By token: the thing, its cost and its last use (a tick).
    entries: BTreeMap<u64, (V, u64, u64)>,
    /// Tokens by last use, oldest first.
    order: BTreeMap<u64, u64>,
    cost: u64,
    tick: u64,
    next_token: u64,
}

/// A thing kept in a [`Pool`], given back when dropped.
pub(crate) struct Held<V: 'static> {
    pool: &'static Pool<V>,
    token: u64,
}

impl<V> Pool<V> {
    pub(crate) const fn new(max_cost: u64) -> Self {
        Self {
            max_cost,
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                order: BTreeMap::new(),
                cost: 0,
                tick: 0,
                next_token: 0,
            }),
        }
    }

    /// Keeps `value`, costing `cost`, evicting the least recently used until it fits. Nothing
    /// costing more than the whole pool is kept.
    pub(crate) fn keep(&'static self, value: V, cost: u64) -> Option<Held<V>> {
        if cost > self.max_cost {
            return None;
        }
        let mut evicted = Vec::new();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.cost + cost > self.max_cost {
            let Some((_, oldest)) = state.order.pop_first() else { break };
            if let Some((value, cost, _)) = state.entries.remove(&oldest) {
                state.cost -= cost;
                evicted.push(value);
            }
        }
        state.tick += 1;
        state.next_token += 1;
        let (tick, token) = (state.tick, state.next_token);
        state.entries.insert(token, (value, cost, tick));
        state.order.insert(tick, token);
        state.cost += cost;
        drop(state);
        // Evicted things (descriptors, buffers) are freed outside the pool's lock.
        drop(evicted);
        Some(Held { pool: self, token })
    }

    /// The total cost of what the pool keeps now.
    #[cfg(test)]
    pub(crate) fn cost(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).cost
    }
}

impl<V> Held<V> {
    /// Whether the thing is still kept (not evicted), marking it used; `read` sees it. A token
    /// is never reused, so a thing found kept now was kept all along since it was kept.
    pub(crate) fn touch<R>(&self, read: impl FnOnce(&V) -> R) -> Option<R> {
        let mut state = self.pool.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.tick += 1;
        let tick = state.tick;
        let State { entries, order, .. } = &mut *state;
        let (value, _, last) = entries.get_mut(&self.token)?;
        order.remove(last);
        *last = tick;
        order.insert(tick, self.token);
        Some(read(value))
    }
}

impl<V: 'static> Drop for Held<V> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((value, cost, last)) = state.entries.remove(&self.token) {
            state.order.remove(&last);
            state.cost -= cost;
            drop(state);
            drop(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_is_evicted_and_a_dropped_token_gives_its_cost_back() {
        static POOL: Pool<&str> = Pool::new(3);
        let first = POOL.keep("first", 1).unwrap();
        let second = POOL.keep("second", 1).unwrap();
        let third = POOL.keep("third", 1).unwrap();
        assert_eq!(first.touch(|v| *v), Some("first"), "used again: now the most recent");
        let fourth = POOL.keep("fourth", 1).unwrap();
        assert_eq!(second.touch(|v| *v), None, "the least recently used went");
        assert_eq!(first.touch(|v| *v), Some("first"));
        assert_eq!(third.touch(|v| *v), Some("third"));
        assert_eq!(POOL.cost(), 3);
        drop(fourth);
        assert_eq!(POOL.cost(), 2, "given back when dropped");
        drop(second);
        assert_eq!(POOL.cost(), 2, "an evicted token gives back nothing twice");
        assert!(POOL.keep("too big", 4).is_none());
        drop((first, third));
        assert_eq!(POOL.cost(), 0);
    }
}
