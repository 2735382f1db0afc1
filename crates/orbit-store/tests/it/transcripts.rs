//! The file store's transcripts after a crash: a torn last line (a write cut short) is
//! ignored on read, and the next turn's entries are read after it; a cursor that is not the
//! start of a line is refused.

use orbit_store::{
    AgentName, ErrorKind, FsStore, NewAgent, NewSession, TranscriptCursor, TranscriptEntry,
    TranscriptKind,
};
use serde_json::json;

fn entry(n: u64) -> TranscriptEntry {
    let at = orbit_store::timestamp::now().replace_millisecond(0).unwrap();
    TranscriptEntry { turn: "t".into(), kind: TranscriptKind::Event, at, data: json!({"n": n}) }
}

#[tokio::test]
async fn a_torn_last_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    stores.sessions.append_transcript(&bot, &session.id, &[entry(1), entry(2)]).await.unwrap();
    let file =
        dir.path().join("agents/bot/sessions").join(format!("{}.transcript.jsonl", session.id));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(br#"{"turn":"t","kind":"event","at":"2026-"#);
    std::fs::write(&file, &bytes).unwrap();

    let read = |from| stores.sessions.read_transcript(&bot, &session.id, from, 10);
    let page = read(TranscriptCursor::START).await.unwrap();
    let data: Vec<_> = page.entries.into_iter().map(|e| e.data).collect();
    assert_eq!(data, vec![json!({"n": 1}), json!({"n": 2})], "the torn line is no entry");
    assert_eq!(page.next, None);

    stores.sessions.append_transcript(&bot, &session.id, &[entry(3)]).await.unwrap();
    let data: Vec<_> =
        read(TranscriptCursor::START).await.unwrap().entries.into_iter().map(|e| e.data).collect();
    assert_eq!(data, vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);

    let mid_line = read(TranscriptCursor(3)).await.unwrap_err();
    assert_eq!(mid_line.kind(), ErrorKind::Invalid, "a cursor inside a line");
}
