//! The contract every implementation of the store traits must pass.
//!
//! An implementation's tests call [`store_contract_tests!`](crate::store_contract_tests) with
//! a factory that returns fresh, empty [`Stores`] built with the given settings (the cases
//! count on them: dead letters after 3 deliveries, a few runs kept) and a guard that keeps
//! them alive:
//!
//! ```ignore
//! orbit_store::store_contract_tests!(|options| {
//!     let dir = tempfile::tempdir().unwrap();
//!     (orbit_store::FsStore::open_with(dir.path(), options).unwrap().stores(), dir)
//! });
//! ```
//!
//! Each case is a public async function, so a failing case names itself in the test output.
//!
//! The cases live in one module per store area (agents, sessions, transcripts, inbox, tasks,
//! nodes, approvals, memory, rendered listings), each re-exported here, where the macro names
//! it. This module keeps the suite's frame: the settings, the helpers the areas share, and the
//! cases that span several stores (input refused everywhere, every listing paged).

// This module is test code shipped behind a feature: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod approvals;
mod inbox;
mod memory;
mod nodes;
mod rendered;
mod sessions;
mod tasks;
mod transcripts;

pub use agents::{agents_lifecycle, deleted_agent_leaves_nothing, main_session_is_chosen_once};
pub use approvals::approvals_are_listed_while_they_wait;
pub use inbox::{
    inbox_archive, inbox_claim_is_exclusive, inbox_concurrent_claims, inbox_filed_page,
    inbox_lapsed_lease_is_fenced, inbox_release_and_dead_letter, inbox_send_and_read,
    inbox_state_changes_never_undo_each_other,
};
pub use memory::memory_days_and_search;
pub use nodes::{
    instances_of_one_name_share_a_data_dir, instances_register_and_beat,
    records_are_released_from_a_node_and_pinned_again, store_clock_agrees_with_this_one,
};
pub use rendered::{
    rendered_detail_follows_its_session_and_messages, rendered_history_follows_its_messages,
    rendered_listings_follow_their_records,
};
pub use sessions::{
    session_messages, session_previews_and_day_cost, session_updates_do_not_lose_each_other,
    sessions_lifecycle, turn_aborts_go_with_the_hold,
};
pub use tasks::{
    deleting_an_agent_tells_the_feed_of_its_tasks, run_expiry_follows_the_callers_clock,
    run_leases, runs_are_kept_to_a_bound, runs_lifecycle, slots_fire_once_in_order,
    task_change_feed, tasks_lifecycle,
};
pub use transcripts::{
    transcripts_append_and_page, transcripts_belong_to_their_session, transcripts_page_by_bytes,
};

use time::OffsetDateTime;
use time::macros::datetime;

use crate::{
    AgentName, Claimer, ContextMode, ErrorKind, FsOptions, InboxMessage, InstanceId, LeaseToken,
    MessageType, NewAgent, NewMessage, NewSession, NewTask, ScheduleType, SessionId, Stores,
    timestamp,
};

/// A claimer whose lease runs for a minute.
fn claimer(session: SessionId) -> Claimer {
    Claimer { session, instance: InstanceId::new(), until: in_secs(60) }
}

fn in_secs(secs: i64) -> OffsetDateTime {
    timestamp::now() + time::Duration::seconds(secs)
}

fn token(message: &InboxMessage) -> LeaseToken {
    message.lease.expect("a claimed message carries its lease").token
}

/// How many runs a task keeps in every case: few, so that the bound is reached cheaply.
pub const RUNS_KEPT: usize = 8;

/// The settings the factory must build its stores with.
pub fn options() -> FsOptions {
    FsOptions { max_deliveries: 3, runs_kept: RUNS_KEPT }
}

/// Generates one `#[tokio::test]` per contract case for a store factory.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases $factory;
            agents_lifecycle, sessions_lifecycle, session_messages, session_previews_and_day_cost, session_updates_do_not_lose_each_other,
            transcripts_append_and_page, transcripts_belong_to_their_session, transcripts_page_by_bytes,
            inbox_send_and_read, inbox_claim_is_exclusive, inbox_release_and_dead_letter, inbox_concurrent_claims,
            inbox_archive, inbox_filed_page, inbox_lapsed_lease_is_fenced, inbox_state_changes_never_undo_each_other,
            tasks_lifecycle, runs_lifecycle, runs_are_kept_to_a_bound, run_leases, run_expiry_follows_the_callers_clock, slots_fire_once_in_order, task_change_feed,
            deleting_an_agent_tells_the_feed_of_its_tasks, turn_aborts_go_with_the_hold,
            records_are_released_from_a_node_and_pinned_again,
            instances_register_and_beat, store_clock_agrees_with_this_one, instances_of_one_name_share_a_data_dir, approvals_are_listed_while_they_wait,
            main_session_is_chosen_once, deleted_agent_leaves_nothing,
            memory_days_and_search, invalid_input_is_refused, listings_page_by_cursor,
            rendered_listings_follow_their_records, rendered_history_follows_its_messages,
            rendered_detail_follows_its_session_and_messages);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (stores, _guard) = ($factory)($crate::contract::options());
                $crate::contract::$case(&stores).await;
            }
        )*
    };
}

fn name(text: &str) -> AgentName {
    AgentName::parse(text).unwrap()
}

async fn agent(stores: &Stores, text: &str) -> AgentName {
    let agent = name(text);
    stores.agents.create(&agent, NewAgent::default()).await.unwrap();
    agent
}

fn request(from: &AgentName, to: &AgentName, text: &str) -> NewMessage {
    NewMessage {
        from_agent: from.clone().into(),
        to_agent: to.clone(),
        message: text.into(),
        message_type: MessageType::Request,
        request_id: None,
    }
}

fn interval_task(prompt: &str) -> NewTask {
    NewTask {
        node: None,
        name: Some("check".into()),
        prompt: prompt.into(),
        schedule_type: ScheduleType::Interval,
        schedule_value: "60000".into(),
        context_mode: ContextMode::Isolated,
        timezone: None,
        next_run: Some(datetime!(2026-11-23 12:00 UTC)),
        worktree: false,
        branch: None,
    }
}

/// Empty payloads are refused without touching anything.
pub async fn invalid_input_is_refused(stores: &Stores) {
    let a = agent(stores, "a").await;
    let err = stores.inbox.send(request(&a, &a, "  ")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = stores.tasks.create(&a, interval_task("")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = stores.memory.search(&a, " ", 5).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(stores.inbox.get_pending(&a).await.unwrap().is_empty());
    assert!(stores.tasks.list_by_agent(&a).await.unwrap().is_empty());
}

/// Pages of the session, inbox and task listings: in the listing's order, `limit` at a time,
/// each after the cursor (the last id of the page before), together the whole listing.
pub async fn listings_page_by_cursor(stores: &Stores) {
    let agent = name("pager");
    stores.agents.create(&agent, NewAgent::default()).await.unwrap();
    for index in 0..5 {
        stores.sessions.create(&agent, NewSession::default()).await.unwrap();
        let message = NewMessage {
            from_agent: name("someone").into(),
            to_agent: agent.clone(),
            message: format!("message {index}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        stores.inbox.send(message).await.unwrap();
        stores.tasks.create(&agent, interval_task(&format!("task {index}"))).await.unwrap();
    }
    // A message that is no longer pending is in no page.
    let archived = stores.inbox.get_pending(&agent).await.unwrap()[1].id;
    stores.inbox.archive(&agent, &archived).await.unwrap();

    let sessions: Vec<_> =
        stores.sessions.list_by_agent(&agent).await.unwrap().iter().map(|s| s.id).collect();
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.sessions.list_page(&agent, cursor, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|s| s.id));
    }
    assert_eq!(paged, sessions, "session pages, newest first, make the whole listing");
    assert_eq!(sessions.len(), 5);

    let pending: Vec<_> =
        stores.inbox.get_pending(&agent).await.unwrap().iter().map(|m| m.id).collect();
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.inbox.pending_page(&agent, cursor, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(paged, pending, "inbox pages, oldest first, make the pending listing");
    assert_eq!(pending.len(), 4);
    assert!(!paged.contains(&archived));

    let tasks: Vec<_> =
        stores.tasks.list_by_agent(&agent).await.unwrap().iter().map(|t| t.id).collect();
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.tasks.list_page(&agent, cursor, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|t| t.id));
    }
    assert_eq!(paged, tasks, "task pages, oldest first, make the whole listing");
    assert_eq!(tasks.len(), 5);

    // A page of a store that holds nothing past the cursor is empty, and an unknown agent is
    // not found as in the listings.
    let newest_task = *tasks.last().unwrap();
    assert!(stores.tasks.list_page(&agent, Some(newest_task), 10).await.unwrap().is_empty());
    let unknown = name("nobody-here");
    assert_eq!(
        stores.sessions.list_page(&unknown, None, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        stores.tasks.list_page(&unknown, None, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
