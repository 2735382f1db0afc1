//! The contract of session transcripts.

use serde_json::json;

use super::{agent, in_secs};
use crate::{
    ErrorKind, NewSession, SessionId, Stores, TRANSCRIPT_PAGE_BYTES, TranscriptCursor,
    TranscriptEntry, TranscriptKind,
};

fn entry(turn: &str, kind: TranscriptKind, n: u64) -> TranscriptEntry {
    // Whole milliseconds, as the stamps are written.
    let at = in_secs(0).replace_millisecond(0).unwrap() + time::Duration::milliseconds(n as i64);
    TranscriptEntry { turn: turn.to_owned(), kind, at, data: json!({"n": n}) }
}

/// Turns append whole and in order; pages walk the transcript oldest first, each starting
/// where the last one said, and the last page says there is no next.
pub async fn transcripts_append_and_page(stores: &Stores) {
    let bot = agent(stores, "bot").await;
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    let sessions = &stores.sessions;
    let empty = sessions.read_transcript(&bot, &session.id, TranscriptCursor::START, 10).await;
    let empty = empty.unwrap();
    assert!(empty.entries.is_empty() && !empty.more, "a new session has none");

    let first: Vec<_> = (0..3)
        .map(|n| entry("t1", if n == 0 { TranscriptKind::User } else { TranscriptKind::Event }, n))
        .collect();
    let second: Vec<_> = (3..7).map(|n| entry("t2", TranscriptKind::Event, n)).collect();
    sessions.append_transcript(&bot, &session.id, &first).await.unwrap();
    sessions.append_transcript(&bot, &session.id, &[]).await.unwrap();
    sessions.append_transcript(&bot, &session.id, &second).await.unwrap();
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();

    let whole = sessions.read_transcript(&bot, &session.id, TranscriptCursor::START, 100).await;
    let whole = whole.unwrap();
    assert_eq!(whole.entries, all);
    assert!(!whole.more);

    let (mut paged, mut cursor, mut pages) = (Vec::new(), TranscriptCursor::START, 0);
    loop {
        let page = sessions.read_transcript(&bot, &session.id, cursor, 3).await.unwrap();
        assert!(page.entries.len() <= 3);
        pages += 1;
        paged.extend(page.entries);
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    assert_eq!((paged, pages), (all.clone(), 3), "7 entries in pages of 3");
    let exact = sessions.read_transcript(&bot, &session.id, TranscriptCursor::START, 7).await;
    assert!(!exact.unwrap().more, "a page that reaches the end says so");
    let zero = sessions.read_transcript(&bot, &session.id, TranscriptCursor::START, 0).await;
    assert_eq!(zero.unwrap().entries.len(), 1, "a limit is at least 1");

    // The last page's `next` is the end: reading from it later gives exactly the new turn.
    let end = sessions.read_transcript(&bot, &session.id, cursor, 3).await.unwrap();
    assert!(end.entries.is_empty() && !end.more && end.next == cursor, "nothing new yet");
    let third: Vec<_> = (7..9).map(|n| entry("t3", TranscriptKind::Event, n)).collect();
    sessions.append_transcript(&bot, &session.id, &third).await.unwrap();
    let new = sessions.read_transcript(&bot, &session.id, cursor, 100).await.unwrap();
    assert_eq!((new.entries, new.more), (third, false), "the turn that came since, only");

    let bogus = sessions.read_transcript(&bot, &session.id, TranscriptCursor(u64::MAX), 3).await;
    assert_eq!(bogus.unwrap_err().kind(), ErrorKind::Invalid, "a cursor never given");
}

/// An unknown session has no transcript to read or append to, and a deleted session's
/// transcript goes with it: a session made again under its id starts empty.
pub async fn transcripts_belong_to_their_session(stores: &Stores) {
    let bot = agent(stores, "bot").await;
    let sessions = &stores.sessions;
    let unknown = SessionId::new();
    let read = sessions.read_transcript(&bot, &unknown, TranscriptCursor::START, 10).await;
    assert_eq!(read.unwrap_err().kind(), ErrorKind::NotFound);
    let one = [entry("t", TranscriptKind::User, 1)];
    let write = sessions.append_transcript(&bot, &unknown, &one).await;
    assert_eq!(write.unwrap_err().kind(), ErrorKind::NotFound);

    let id = SessionId::new();
    sessions.create_with_id(&bot, id, NewSession::default()).await.unwrap();
    let other = sessions.create(&bot, NewSession::default()).await.unwrap();
    let kept = vec![entry("t", TranscriptKind::Inbox, 2)];
    sessions.append_transcript(&bot, &id, &[entry("t", TranscriptKind::User, 1)]).await.unwrap();
    sessions.append_transcript(&bot, &other.id, &kept).await.unwrap();
    sessions.delete(&bot, &id).await.unwrap();
    let gone = sessions.read_transcript(&bot, &id, TranscriptCursor::START, 10).await;
    assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
    sessions.create_with_id(&bot, id, NewSession::default()).await.unwrap();
    let again = sessions.read_transcript(&bot, &id, TranscriptCursor::START, 10).await.unwrap();
    assert!(again.entries.is_empty(), "nothing of the deleted session's transcript is left");
    let other = sessions.read_transcript(&bot, &other.id, TranscriptCursor::START, 10).await;
    assert_eq!(other.unwrap().entries, kept, "another session's transcript is its own");
}

/// A page stops before its entries pass `TRANSCRIPT_PAGE_BYTES`, whatever the limit, but always
/// holds one entry, however large.
pub async fn transcripts_page_by_bytes(stores: &Stores) {
    let bot = agent(stores, "bot").await;
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    let sessions = &stores.sessions;
    let big = |n: u64, bytes: usize| {
        let mut entry = entry("t", TranscriptKind::Event, n);
        entry.data = json!({"n": n, "text": "x".repeat(bytes)});
        entry
    };
    let mib = 1 << 20;
    // Six entries of a little over 1 MiB, then one larger than a whole page.
    let mut turn: Vec<_> = (0..6).map(|n| big(n, mib)).collect();
    turn.push(big(6, TRANSCRIPT_PAGE_BYTES as usize + mib));
    sessions.append_transcript(&bot, &session.id, &turn).await.unwrap();

    let (mut sizes, mut cursor) = (Vec::new(), TranscriptCursor::START);
    loop {
        let page = sessions.read_transcript(&bot, &session.id, cursor, 1000).await.unwrap();
        assert!(!page.entries.is_empty(), "a page holds at least one entry");
        sizes.push(page.entries.iter().map(|e| e.data["n"].as_u64().unwrap()).collect::<Vec<_>>());
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    assert_eq!(sizes, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]], "3 MiB a page; 5 MiB alone");
}
