//! Listings rendered by their caller: each record's bytes as a function the caller names
//! makes them (the API's JSON of the record), joined into the whole answer the caller frames
//! ([`Listing`]), so that a store keeping its records in memory can keep each rendering beside
//! its record, and the whole joined body beside its index, and answer a listing of unchanged
//! records with the same buffer again: no record cloned, rendered or copied.
//!
//! A store keeps a rendering only as long as the record it was made from: a record that
//! changes (in any process) or leaves loses it. It keeps the function beside the bytes and
//! renders again when asked with another: two different functions never share a rendering.
//! (Two function pointers compare equal only when they are the same code, which renders the
//! same bytes.) A kept body is keyed by the [`Generation`] of the index it was joined from,
//! which every change to the index takes anew, and is dropped at that change. Every method
//! taking a [`Render`] or a [`Listing`] has a default that renders each record of the plain
//! listing, which is right for any store; only stores with records in memory override it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lru::{Held, Pool};

/// How a caller renders one record; a plain function, so that a store can tell two apart and
/// keep its renderings.
pub type Render<T> = fn(&T) -> Vec<u8>;

/// One record's rendering, shared by the listings that answer it (often a slice of a kept
/// [`Body`], sharing its buffer).
pub type Rendered = bytes::Bytes;

/// A whole listing as its caller framed it: cloning one is a reference count, not a copy.
pub type Body = bytes::Bytes;

/// How a whole listing is written: `open`, then each record by `render` with a comma between
/// two, then `close` (for the API, `{"tasks":[`, a task's view, `]}`).
pub struct Listing<T> {
    /// Written before the first record.
    pub open: &'static str,
    /// Renders one record.
    pub render: Render<T>,
    /// Written after the last record.
    pub close: &'static str,
}

impl<T> Clone for Listing<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Listing<T> {}

impl<T> Listing<T> {
    /// Whether `other` writes what this one does: the same function and the same frame.
    pub fn same_as(&self, other: &Self) -> bool {
        // Comparing function pointers is what this wants: equal means the same code.
        #[allow(unpredictable_function_pointer_comparisons)]
        let same_render = self.render == other.render;
        same_render && self.open == other.open && self.close == other.close
    }

    /// Renders every record and joins them: what a store without renderings in memory answers.
    pub fn write(&self, records: &[T]) -> Body {
        self.join(&each(records, self.render))
    }

    /// The body of these renderings, in order.
    pub fn join(&self, records: &[Rendered]) -> Body {
        self.join_parts(&[records])
    }

    /// The body of the renderings of each part, one part after another (every agent's tasks).
    pub fn join_parts(&self, parts: &[&[Rendered]]) -> Body {
        let size = parts.iter().flat_map(|part| part.iter()).map(|r| r.len() + 1).sum::<usize>()
            + self.open.len()
            + self.close.len();
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(self.open.as_bytes());
        for (n, record) in parts.iter().flat_map(|part| part.iter()).enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.extend_from_slice(self.close.as_bytes());
        Body::from(body)
    }
}

/// How one record with the list of its parts is written (a session with its history):
/// `open`, the record by `head`, then its parts as `parts` writes them (for the API,
/// `{"session":`, the session's view, then `,"messages":[`, each message's view, `]}`).
pub struct Detail<H, T> {
    /// Written before the record.
    pub open: &'static str,
    /// Renders the record.
    pub head: Render<H>,
    /// Writes the parts after the record.
    pub parts: Listing<T>,
}

impl<H, T> Clone for Detail<H, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H, T> Copy for Detail<H, T> {}

impl<H, T> Detail<H, T> {
    /// Whether `other` writes what this one does: the same functions and the same frame.
    pub fn same_as(&self, other: &Self) -> bool {
        // Comparing function pointers is what this wants: equal means the same code.
        #[allow(unpredictable_function_pointer_comparisons)]
        let same_head = self.head == other.head;
        same_head && self.open == other.open && self.parts.same_as(&other.parts)
    }

    /// The body of `record` with its parts, already rendered by `self.parts.render`.
    pub fn join(&self, record: &H, parts: &[Rendered]) -> Body {
        let head = (self.head)(record);
        let size = self.open.len()
            + head.len()
            + self.parts.open.len()
            + parts.iter().map(|part| part.len() + 1).sum::<usize>()
            + self.parts.close.len();
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(self.open.as_bytes());
        body.extend_from_slice(&head);
        body.extend_from_slice(self.parts.open.as_bytes());
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(part);
        }
        body.extend_from_slice(self.parts.close.as_bytes());
        Body::from(body)
    }
}

/// Renders every record, in order: what a store without renderings in memory answers.
pub fn each<T>(records: &[T], render: Render<T>) -> Vec<Rendered> {
    records.iter().map(|record| Rendered::from(render(record))).collect()
}

/// A state of one index in one process. Every change to the index takes a new one, from one
/// counter for the whole process, so two states never share one, even those of an index
/// forgotten and made anew (an agent deleted and made again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Generation(u64);

impl Generation {
    fn next() -> Self {
        static LAST: AtomicU64 = AtomicU64::new(0);
        Self(LAST.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The renderings of an index's records, by the record's key, and the last whole body joined
/// from them. Whoever changes or removes a record says so ([`changed`](Self::changed)) in the
/// same step, which forgets the record's rendering, takes a new [`Generation`] and drops the
/// body.
///
/// Memory: every rendering is its own allocation, so a record's rendering is freed with the
/// record (never pinned by a slice into some body). A body kept costs its bytes again, on top
/// of the renderings, and is held in one process-wide pool ([`BODIES`]): all kept bodies (of
/// every index, and every [`JoinedBody`]) cost at most [`BODIES_MAX_BYTES`] together, the
/// least recently answered dropped first to make room. A body dropped from the pool is joined
/// again from the renderings at its next listing. One body per index, dropped at its next
/// change.
pub(crate) struct Renderings<K, T> {
    kept: HashMap<K, (Render<T>, Rendered)>,
    generation: Generation,
    body: Option<KeptBody<T>>,
}

struct KeptBody<T> {
    generation: Generation,
    listing: Listing<T>,
    body: Held<Body>,
}

/// The bytes all kept bodies of a process may cost together.
pub(crate) const BODIES_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Every kept body of the process (see [`Renderings`]).
static BODIES: Pool<Body> = Pool::new(BODIES_MAX_BYTES);

/// Keeps `body` in [`BODIES`]; `None` when it is larger than the whole pool.
pub(crate) fn keep_body(body: &Body) -> Option<Held<Body>> {
    BODIES.keep(body.clone(), body.len() as u64)
}

impl<K, T> Default for Renderings<K, T> {
    fn default() -> Self {
        Self { kept: HashMap::new(), generation: Generation::next(), body: None }
    }
}

impl<K: Eq + Hash + Clone, T> Renderings<K, T> {
    /// The rendering of `record`, kept under `key`, by `render`: the one kept when `render`
    /// made it, else a new one, then kept.
    pub(crate) fn get(&mut self, key: &K, record: &T, render: Render<T>) -> Rendered {
        match self.kept.get(key) {
            // Comparing function pointers is what this wants: equal means the same code.
            #[allow(unpredictable_function_pointer_comparisons)]
            Some((made_by, bytes)) if *made_by == render => bytes.clone(),
            _ => {
                let bytes = Rendered::from(render(record));
                self.kept.insert(key.clone(), (render, bytes.clone()));
                bytes
            }
        }
    }

    /// The record under `key` changed, came or left: its rendering is forgotten, the index
    /// takes a new generation and the kept body is dropped.
    pub(crate) fn changed(&mut self, key: &K) {
        self.kept.remove(key);
        self.generation = Generation::next();
        self.body = None;
    }

    /// The index's state as of its last change.
    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }

    /// The kept body of `listing`, if it was joined in the current generation.
    pub(crate) fn kept_body(&self, listing: &Listing<T>) -> Option<Body> {
        let kept = self.body.as_ref()?;
        if kept.generation != self.generation || !kept.listing.same_as(listing) {
            return None;
        }
        kept.body.touch(Body::clone)
    }

    /// The whole body of `records` (every record of the index, in the listing's order) as
    /// `listing` writes it: the kept one when nothing changed since it was joined, else one
    /// joined from the renderings (rendering only the records without one), then kept.
    pub(crate) fn body<'a>(
        &mut self,
        records: impl Iterator<Item = (&'a K, &'a T)>,
        listing: &Listing<T>,
    ) -> Body
    where
        K: 'a,
        T: 'a,
    {
        if let Some(body) = self.kept_body(listing) {
            return body;
        }
        let rendered: Vec<Rendered> =
            records.map(|(key, record)| self.get(key, record, listing.render)).collect();
        let body = listing.join_parts(&[&rendered]);
        self.body = keep_body(&body).map(|held| KeptBody {
            generation: self.generation,
            listing: *listing,
            body: held,
        });
        body
    }
}

/// The last whole body of a listing joined from several indexes (every agent's tasks), keyed
/// by the state of each: answered again only while every one of them is in the state it was
/// joined from. Memory: that one body, until the next one replaces it, held in the same pool
/// as every index's (see [`Renderings`]).
pub(crate) struct JoinedBody<S, T> {
    kept: Option<(S, Listing<T>, Held<Body>)>,
}

impl<S, T> Default for JoinedBody<S, T> {
    fn default() -> Self {
        Self { kept: None }
    }
}

impl<S: PartialEq, T> JoinedBody<S, T> {
    /// The kept body of `listing`, if it was joined from indexes in exactly the states `state`.
    pub(crate) fn get(&self, state: &S, listing: &Listing<T>) -> Option<Body> {
        match &self.kept {
            Some((kept, made_by, body)) if kept == state && made_by.same_as(listing) => {
                body.touch(Body::clone)
            }
            _ => None,
        }
    }

    /// Keeps `body`, joined by `listing` from indexes in the states `state`, instead of the
    /// one kept before.
    pub(crate) fn keep(&mut self, state: S, listing: &Listing<T>, body: Body) {
        self.kept = None;
        self.kept = keep_body(&body).map(|held| (state, *listing, held));
    }
}

#[cfg(test)]
mod tests {
    // A `Render<String>` takes `&String`.
    #![allow(clippy::ptr_arg)]

    use super::*;

    fn render(record: &String) -> Vec<u8> {
        format!("<{record}>").into_bytes()
    }

    fn shout(record: &String) -> Vec<u8> {
        record.to_uppercase().into_bytes()
    }

    const LISTING: Listing<String> = Listing { open: "[", render, close: "]" };

    #[test]
    fn a_kept_body_is_what_joining_the_records_writes_until_one_changes() {
        let mut records: std::collections::BTreeMap<u32, String> =
            (0..3).map(|n| (n, format!("r{n}"))).collect();
        let mut renderings = Renderings::<u32, String>::default();
        let plain = |records: &std::collections::BTreeMap<u32, String>| {
            LISTING.write(&records.values().cloned().collect::<Vec<_>>())
        };
        let first = renderings.body(records.iter(), &LISTING);
        assert_eq!(first, plain(&records));
        assert_eq!(&first[..], b"[<r0>,<r1>,<r2>]");
        let again = renderings.body(records.iter(), &LISTING);
        assert_eq!(again.as_ptr(), first.as_ptr(), "an unchanged listing answers the same buffer");

        let before = renderings.generation();
        records.insert(1, "changed".into());
        renderings.changed(&1);
        assert_ne!(renderings.generation(), before);
        assert!(renderings.kept_body(&LISTING).is_none(), "a change drops the body");
        let changed = renderings.body(records.iter(), &LISTING);
        assert_eq!(changed, plain(&records));
        records.remove(&0);
        renderings.changed(&0);
        assert_eq!(renderings.body(records.iter(), &LISTING), plain(&records));
        records.clear();
        renderings.changed(&2);
        renderings.changed(&1);
        assert_eq!(&renderings.body(records.iter(), &LISTING)[..], b"[]");

        // Another function, or another frame, is never answered a body it did not make.
        records.insert(7, "seven".into());
        renderings.changed(&7);
        assert_eq!(&renderings.body(records.iter(), &LISTING)[..], b"[<seven>]");
        let loud = Listing { render: shout, ..LISTING };
        assert_eq!(&renderings.body(records.iter(), &loud)[..], b"[SEVEN]");
        let framed = Listing { open: "{\"x\":[", close: "]}", ..LISTING };
        assert_eq!(&renderings.body(records.iter(), &framed)[..], b"{\"x\":[<seven>]}");
    }

    #[test]
    fn a_kept_rendering_is_its_own_allocation_not_a_slice_of_a_body() {
        // A rendering that pointed into the body would keep the whole body alive after the
        // body is dropped (the index drained to one record keeps the bytes of all it had).
        let records: std::collections::BTreeMap<u32, String> =
            (0..100).map(|n| (n, format!("record {n}"))).collect();
        let mut renderings = Renderings::<u32, String>::default();
        let body = renderings.body(records.iter(), &LISTING);
        let span = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        for (key, record) in &records {
            let rendering = renderings.get(key, record, render);
            assert!(!span.contains(&(rendering.as_ptr() as usize)), "rendering {key} in the body");
        }
    }

    #[test]
    fn generations_never_repeat_across_indexes() {
        let one = Renderings::<u32, String>::default();
        let other = Renderings::<u32, String>::default();
        assert_ne!(one.generation(), other.generation());
    }

    #[test]
    fn a_joined_body_is_answered_only_in_the_states_it_was_joined_from() {
        let mut joined = JoinedBody::<Vec<u32>, String>::default();
        let body = LISTING.join_parts(&[&each(&["a".to_owned()], render), &[]]);
        assert_eq!(&body[..], b"[<a>]");
        joined.keep(vec![1, 2], &LISTING, body.clone());
        assert_eq!(joined.get(&vec![1, 2], &LISTING), Some(body));
        assert_eq!(joined.get(&vec![1, 3], &LISTING), None);
        assert_eq!(joined.get(&vec![1], &LISTING), None);
        assert_eq!(joined.get(&vec![1, 2], &Listing { render: shout, ..LISTING }), None);
    }
}
