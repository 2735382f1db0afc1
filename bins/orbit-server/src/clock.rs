//! This node's clock against the store's: the nodes of a cluster judge each other's leases
//! (inbox claims, turns' holds on sessions, task runs) by their own clocks, so those clocks
//! must agree, and a node checks that they do rather than assuming it.
//!
//! Why a sixth of a lease is the bound: a holder renews its lease at a third of the lease,
//! writing `until` as its own clock's now plus a lease, so at worst two thirds of a lease are
//! left by the holder's clock when another node looks. The other node takes the lease back
//! when its own clock passes `until`: too early only when its clock runs ahead of the
//! holder's by more than those two thirds. With every node within a sixth of a lease of the
//! database's clock, two nodes differ by a third of a lease at most, which leaves another
//! third for the renewal's own delays (a slow database, a busy machine).
//!
//! The margin that matters is the holder's lease, not the asker's, and nothing makes every
//! node run with one `--lease-secs`: a node with an hour's lease must not be allowed ten
//! minutes off the database's clock while its neighbours hold 30 s leases. So the bound is
//! also capped at [`MAX_OFFSET_CAP`], a sixth of the shortest lease a node accepts (3 s),
//! which keeps the argument true whatever lease each node runs with, and keeps two nodes
//! within a second of each other (the forwarding proof's 30 s window, the scheduler's
//! slots).

use std::time::{Duration, Instant};

use orbit_store::InstanceStore;
use time::OffsetDateTime;

/// How many readings a check takes at most: a reading whose round trip leaves it unsure is
/// taken again, and the one with the smallest round trip counts.
const READINGS: usize = 5;

/// The test hook: milliseconds added to this process's clock where it is compared with the
/// store's, so that a test can run a node whose clock seems off (the machine's clock cannot
/// be changed by a test); a number, or the path of a file holding one, read at every check
/// so that a test can move a running node's clock. It only ever shifts this comparison,
/// never a time the node writes or judges a lease by, but it can hide a real offset as well
/// as fake one, so it is for tests alone and the server warns at its start when it is set.
const TEST_OFFSET_VAR: &str = "ORBIT_TEST_CLOCK_OFFSET_MS";

/// A sixth of the shortest lease a node accepts (`--lease-secs` 3): the most any node may be
/// off, whatever its own lease.
pub const MAX_OFFSET_CAP: Duration = Duration::from_millis(500);

/// The largest offset from the store's clock a node may run with, for leases of `lease`: a
/// sixth of it, and never more than [`MAX_OFFSET_CAP`].
pub fn max_offset(lease: Duration) -> Duration {
    (lease / 6).min(MAX_OFFSET_CAP)
}

/// Whether the test hook is set: the server warns at its start, since the hook also hides
/// a real offset.
pub fn test_hook_set() -> bool {
    std::env::var_os(TEST_OFFSET_VAR).is_some()
}

/// One comparison of this process's clock with the store's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// This clock minus the store's, taken at the midpoint of the call.
    pub offset: time::Duration,
    /// How long the call took: the store read its clock somewhere within it, so the offset
    /// is known to half of this.
    pub round_trip: Duration,
}

/// What a reading proves about the offset against the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the bound, whenever in the call the store read its clock.
    Agrees,
    /// Beyond the bound, whenever in the call the store read its clock.
    Differs,
    /// The round trip is too long to tell.
    Unsure,
}

impl Reading {
    /// Judges this reading against `bound`: a verdict only when the uncertainty (half the
    /// round trip) cannot turn it.
    pub fn verdict(&self, bound: Duration) -> Verdict {
        let offset = self.offset.unsigned_abs();
        let uncertainty = self.round_trip / 2;
        if offset + uncertainty <= bound {
            Verdict::Agrees
        } else if offset.saturating_sub(uncertainty) > bound {
            Verdict::Differs
        } else {
            Verdict::Unsure
        }
    }

    /// The offset in words: "ahead of the database's by 2.5 s (± 1 ms)".
    pub fn describe(&self) -> String {
        let ahead = if self.offset.is_negative() { "behind" } else { "ahead of" };
        let millis = self.offset.unsigned_abs().as_millis();
        let uncertainty = (self.round_trip / 2).as_millis();
        format!("{ahead} the database's by {millis} ms (± {uncertainty} ms)")
    }
}

/// This process's clock as the check sees it (shifted by the test hook, when set).
fn local_now() -> OffsetDateTime {
    let shift = std::env::var(TEST_OFFSET_VAR).ok().and_then(|hook| {
        let shift = match hook.parse::<i64>() {
            Ok(ms) => Some(ms),
            Err(_) => std::fs::read_to_string(&hook).ok().and_then(|ms| ms.trim().parse().ok()),
        };
        if shift.is_none() {
            tracing::warn!(hook = %hook, "{TEST_OFFSET_VAR} is neither a number of milliseconds nor a file holding one: ignored");
        }
        shift
    });
    OffsetDateTime::now_utc() + time::Duration::milliseconds(shift.unwrap_or(0))
}

/// One reading of the store's clock: `None` for a store sharing this process's clock.
async fn read(store: &dyn InstanceStore) -> orbit_store::Result<Option<Reading>> {
    // The timer starts first: a stall between the two reads then widens the round trip,
    // and so the uncertainty, instead of passing for an offset known to a millisecond.
    let started = Instant::now();
    let before = local_now();
    let Some(theirs) = store.clock().await? else {
        return Ok(None);
    };
    let round_trip = started.elapsed();
    let midpoint = before + round_trip / 2;
    Ok(Some(Reading { offset: midpoint - theirs, round_trip }))
}

/// Compares this clock with the store's, reading again while unsure (up to [`READINGS`]):
/// the best reading (smallest round trip) and its verdict, or `None` for a store sharing
/// this process's clock.
pub async fn check(
    store: &dyn InstanceStore,
    bound: Duration,
) -> orbit_store::Result<Option<(Reading, Verdict)>> {
    let mut best: Option<Reading> = None;
    for _ in 0..READINGS {
        let Some(reading) = read(store).await? else {
            return Ok(None);
        };
        if best.is_none_or(|best| reading.round_trip < best.round_trip) {
            best = Some(reading);
        }
        if reading.verdict(bound) != Verdict::Unsure {
            return Ok(Some((reading, reading.verdict(bound))));
        }
    }
    Ok(best.map(|best| (best, best.verdict(bound))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(offset_ms: i64, round_trip_ms: u64) -> Reading {
        Reading {
            offset: time::Duration::milliseconds(offset_ms),
            round_trip: Duration::from_millis(round_trip_ms),
        }
    }

    #[test]
    fn the_bound_is_a_sixth_of_the_lease_and_never_more_than_the_shortest_leases() {
        assert_eq!(max_offset(Duration::from_secs(3)), Duration::from_millis(500));
        assert_eq!(max_offset(Duration::from_millis(1200)), Duration::from_millis(200));
        // A long lease does not buy a node a wider bound: its neighbours' leases may be short.
        assert_eq!(max_offset(Duration::from_secs(30)), MAX_OFFSET_CAP);
        assert_eq!(max_offset(Duration::from_secs(3600)), MAX_OFFSET_CAP);
    }

    #[test]
    fn an_offset_is_judged_only_when_its_uncertainty_cannot_turn_it() {
        let bound = Duration::from_millis(500);
        assert_eq!(reading(0, 2).verdict(bound), Verdict::Agrees);
        assert_eq!(reading(-499, 2).verdict(bound), Verdict::Agrees);
        assert_eq!(reading(400, 200).verdict(bound), Verdict::Agrees, "400 + 100 is the bound");
        assert_eq!(reading(450, 200).verdict(bound), Verdict::Unsure, "350..550");
        assert_eq!(reading(600, 200).verdict(bound), Verdict::Unsure, "500..700");
        assert_eq!(reading(601, 2).verdict(bound), Verdict::Differs);
        assert_eq!(reading(-5_000, 2).verdict(bound), Verdict::Differs, "behind as well as ahead");
        assert_eq!(reading(700, 300).verdict(bound), Verdict::Differs, "550..850");
        assert_eq!(reading(0, 2_000).verdict(bound), Verdict::Unsure, "a round trip too long");
    }

    #[test]
    fn the_offset_is_described_with_its_direction_and_uncertainty() {
        assert_eq!(reading(2_500, 4).describe(), "ahead of the database's by 2500 ms (± 2 ms)");
        assert_eq!(reading(-700, 0).describe(), "behind the database's by 700 ms (± 0 ms)");
    }
}
