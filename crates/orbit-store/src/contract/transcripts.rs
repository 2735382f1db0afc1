//! The contract of session transcripts.

use serde_json::json;

use super::{agent, in_secs};
use crate::{
    ErrorKind, NewSession, SessionId, Stores, TranscriptCursor, TranscriptEntry, TranscriptKind,
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
    assert!(empty.entries.is_empty() && empty.next.is_none(), "a new session has none");

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
    assert_eq!(whole.next, None);

    let (mut paged, mut cursor, mut pages) = (Vec::new(), TranscriptCursor::START, 0);
    loop {
        let page = sessions.read_transcript(&bot, &session.id, cursor, 3).await.unwrap();
        assert!(page.entries.len() <= 3);
        pages += 1;
        paged.extend(page.entries);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!((paged, pages), (all.clone(), 3), "7 entries in pages of 3");
    let exact = sessions.read_transcript(&bot, &session.id, TranscriptCursor::START, 7).await;
    assert_eq!(exact.unwrap().next, None, "a page that reaches the end says so");
    let zero = sessions.read_transcript(&bot, &session.id, TranscriptCursor::START, 0).await;
    assert_eq!(zero.unwrap().entries.len(), 1, "a limit is at least 1");

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
