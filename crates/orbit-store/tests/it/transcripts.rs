//! The file store's transcripts after a crash: a turn whose write was cut short (a torn last
//! line, or whole lines without the turn's commit line) is never read, the next turn's
//! entries are read right after the last whole turn; a cursor that is not the start of a line
//! is refused.

use orbit_store::{
    AgentName, ErrorKind, FsStore, NewAgent, NewSession, TranscriptCursor, TranscriptEntry,
    TranscriptKind,
};
use serde_json::json;

fn entry(n: u64) -> TranscriptEntry {
    let at = orbit_store::timestamp::now().replace_millisecond(0).unwrap();
    TranscriptEntry { turn: "t".into(), kind: TranscriptKind::Event, at, data: json!({"n": n}) }
}

fn numbers(page: &orbit_store::TranscriptPage) -> Vec<u64> {
    page.entries.iter().map(|e| e.data["n"].as_u64().unwrap()).collect()
}

/// A crash partway through a turn's write: the file keeps the turn's first lines, whole, but
/// not its commit line. None of them is read, and the next turn replaces them. The torn part
/// is larger than one backwards read, so finding the last whole turn takes several.
#[tokio::test]
async fn a_torn_turn_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    let file =
        dir.path().join("agents/bot/sessions").join(format!("{}.transcript.jsonl", session.id));
    let sessions = &stores.sessions;
    sessions.append_transcript(&bot, &session.id, &[entry(1), entry(2)]).await.unwrap();
    let whole = std::fs::read(&file).unwrap();
    let mut torn: Vec<_> = (10..20).map(entry).collect();
    torn[0].data = json!({"n": 10, "text": "x".repeat(200 * 1024)});
    sessions.append_transcript(&bot, &session.id, &torn).await.unwrap();
    let written = std::fs::read(&file).unwrap();
    // Cut the second turn after its fifth line: whole lines, no commit line.
    let fifth_line_end = written[whole.len()..]
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(4)
        .map(|(at, _)| whole.len() + at + 1)
        .unwrap();
    std::fs::write(&file, &written[..fifth_line_end]).unwrap();

    let read = |from| sessions.read_transcript(&bot, &session.id, from, 100);
    let page = read(TranscriptCursor::START).await.unwrap();
    assert_eq!((numbers(&page), page.more), (vec![1, 2], false), "the torn turn is not read");
    assert_eq!(page.next.0, whole.len() as u64, "the end is the last whole turn's end");

    sessions.append_transcript(&bot, &session.id, &[entry(3)]).await.unwrap();
    assert_eq!(numbers(&read(TranscriptCursor::START).await.unwrap()), vec![1, 2, 3]);
    let new = read(page.next).await.unwrap();
    assert_eq!(numbers(&new), vec![3], "the next turn starts where the last whole one ended");

    // The same cut in a transcript's first turn leaves it empty.
    let other = sessions.create(&bot, NewSession::default()).await.unwrap();
    sessions.append_transcript(&bot, &other.id, &[entry(1), entry(2)]).await.unwrap();
    let other_file =
        dir.path().join("agents/bot/sessions").join(format!("{}.transcript.jsonl", other.id));
    let bytes = std::fs::read(&other_file).unwrap();
    let first_line_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    std::fs::write(&other_file, &bytes[..first_line_end]).unwrap();
    let page = sessions.read_transcript(&bot, &other.id, TranscriptCursor::START, 100).await;
    assert!(page.unwrap().entries.is_empty(), "a first turn cut short is not read either");
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
    assert!(!page.more);

    stores.sessions.append_transcript(&bot, &session.id, &[entry(3)]).await.unwrap();
    let data: Vec<_> =
        read(TranscriptCursor::START).await.unwrap().entries.into_iter().map(|e| e.data).collect();
    assert_eq!(data, vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);

    let mid_line = read(TranscriptCursor(3)).await.unwrap_err();
    assert_eq!(mid_line.kind(), ErrorKind::Invalid, "a cursor inside a line");
}

/// A transcript written before turns had commit lines is read whole, and turns appended to it
/// afterwards follow it.
#[tokio::test]
async fn a_transcript_from_before_commit_lines_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    let file =
        dir.path().join("agents/bot/sessions").join(format!("{}.transcript.jsonl", session.id));
    let old: Vec<u8> = [entry(1), entry(2)]
        .iter()
        .flat_map(|e| [serde_json::to_vec(e).unwrap(), b"\n".to_vec()].concat())
        .collect();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &old).unwrap();
    let read = |from| stores.sessions.read_transcript(&bot, &session.id, from, 100);
    assert_eq!(numbers(&read(TranscriptCursor::START).await.unwrap()), vec![1, 2]);
    stores.sessions.append_transcript(&bot, &session.id, &[entry(3)]).await.unwrap();
    assert_eq!(numbers(&read(TranscriptCursor::START).await.unwrap()), vec![1, 2, 3]);
}
