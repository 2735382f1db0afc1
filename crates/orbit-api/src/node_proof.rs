//! The proof a node sends with a watcher's stream it forwards to another node of the cluster,
//! in place of the client's token: `Orbit-Forwarded-Auth: <unix-secs>.<hex HMAC-SHA256>` of
//! the receiving instance's id, the request's path and that time, keyed with the cluster's
//! shared API token.
//!
//! The client's token itself is never sent on: whatever listens at a registered address
//! (a process that took the port of a node that died or is stopping, a spoofed host on the
//! nodes' network) would get it, and it opens every route. A proof opens only the one
//! stream it names, only on the instance it names (a node's instance id is new at each
//! start), and only for [`MAX_AGE_SECS`], so one that leaks is worth next to nothing.

use hmac::{KeyInit, Mac};
use orbit_store::{AgentName, InstanceId, SessionId};

/// The header that carries the proof.
pub const HEADER: &str = "orbit-forwarded-auth";

/// How far the proof's time may be from the receiving node's clock, either way: the
/// forwarding node signs just before it connects, so this is clock skew between the nodes
/// plus the connect and head time.
const MAX_AGE_SECS: u64 = 30;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The MAC of `target`, `path` and `secs` under `token`; `None` only if the MAC refused the
/// key, which HMAC never does (it takes keys of any length).
fn mac(token: &str, target: InstanceId, path: &str, secs: u64) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(token.as_bytes()).ok()?;
    mac.update(format!("{target}\n{path}\n{secs}").as_bytes());
    Some(mac)
}

/// The seconds since the Unix epoch now (0 on a clock before it, which no proof matches).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The header value proving that the sender holds `token`, for a request of `path` to the
/// instance `target`, made at `secs`.
pub fn sign(token: &str, target: InstanceId, path: &str, secs: u64) -> Option<String> {
    let tag = mac(token, target, path, secs)?.finalize().into_bytes();
    let hex: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(format!("{secs}.{hex}"))
}

/// Whether `proof` was made with `token` for a request of `path` to this instance (`this`)
/// within [`MAX_AGE_SECS`] of `now`. The MAC is compared in constant time.
pub fn verifies(token: &str, this: InstanceId, path: &str, proof: &str, now: u64) -> bool {
    let Some((secs, hex)) = proof.split_once('.') else { return false };
    let Ok(secs) = secs.parse::<u64>() else { return false };
    if secs.abs_diff(now) > MAX_AGE_SECS {
        return false;
    }
    let Some(tag) = decode_hex(hex) else { return false };
    mac(token, this, path, secs).is_some_and(|mac| mac.verify_slice(&tag).is_ok())
}

/// Whether `path` is exactly a session's stream route, `/api/agents/:name/sessions/:id/stream`,
/// the one route a proof may open. Checked on the raw path, whose every character the name
/// and id allow (no percent-escapes), so it is the path actix routes.
pub fn is_stream_path(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "api", "agents", name, "sessions", id, "stream"]
            if AgentName::parse(name).is_ok_and(|parsed| parsed.as_str() == *name)
                && SessionId::parse(id).is_ok_and(|parsed| parsed.to_string() == *id)
    )
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| hex.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A proof opens the one path, on the one instance, under the one token, for 30 s.
    #[test]
    fn a_proof_opens_only_its_path_on_its_instance_under_its_token_for_a_while() {
        let (this, path, now) = (InstanceId::new(), "/api/agents/bot/sessions/x/stream", 1_000);
        let proof = sign("secret", this, path, now).unwrap();
        assert!(verifies("secret", this, path, &proof, now));
        assert!(verifies("secret", this, path, &proof, now + 30));
        assert!(verifies("secret", this, path, &proof, now - 30), "a clock a little behind");
        assert!(!verifies("secret", this, path, &proof, now + 31), "too old");
        assert!(!verifies("other", this, path, &proof, now), "another token");
        assert!(!verifies("secret", InstanceId::new(), path, &proof, now), "another instance");
        assert!(!verifies("secret", this, "/api/agents/bot/sessions/y/stream", &proof, now));
        let (secs, hex) = proof.split_once('.').unwrap();
        let later = format!("{}.{hex}", secs.parse::<u64>().unwrap() + 1);
        assert!(!verifies("secret", this, path, &later, now), "the time is signed too");
        for broken in ["", ".", "1000", "1000.", "x.00", &format!("{secs}.{}", &hex[1..])] {
            assert!(!verifies("secret", this, path, broken, now), "{broken:?}");
        }
    }

    #[test]
    fn only_a_sessions_stream_path_is_one() {
        let id = SessionId::new();
        assert!(is_stream_path(&format!("/api/agents/bot/sessions/{id}/stream")));
        for other in [
            format!("/api/agents/bot/sessions/{id}/transcript"),
            format!("/api/agents/bot/sessions/{id}/stream/"),
            format!("/api/agents/bot/sessions/{id}"),
            format!("/api/agents/%62ot/sessions/{id}/stream"),
            format!("/api/agents/bot/sessions/{}/stream", id.to_string().to_lowercase()),
            "/api/agents/bot/sessions/x/stream".into(),
            "/api/chat".into(),
        ] {
            assert!(!is_stream_path(&other), "{other}");
        }
    }
}
