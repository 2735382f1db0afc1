//! The process cap and the pool's bookkeeping.

use std::time::Duration;

use orbit_agent::{Error, PoolOptions};
use orbit_testkit::{Reply, Rule};

use crate::harness::{Harness, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_process_cap_a_turn_fails_busy() {
    let options = PoolOptions {
        max_processes: 1,
        slot_wait: Duration::from_millis(300),
        ..PoolOptions::default()
    };
    let h = Harness::with_options(
        vec![
            Rule::when_user_says(
                "slow",
                Reply::Delayed(Duration::from_secs(4), Box::new(text("slow done"))),
            ),
            Rule::always(text("ok")),
        ],
        options,
    )
    .await;
    let (first, second) = (h.session().await, h.session().await);
    let busy_turn = h.spawn_turn(&first, "slow");
    h.wait_for_requests(1).await;
    let (refused, _) = h.chat(&second, "hi").await;
    assert!(matches!(refused, Err(Error::Busy(1))), "{refused:?}");
    assert_eq!(busy_turn.await.unwrap().unwrap().result, "slow done");
    // The first session is idle now: its warm process makes room for the second.
    assert_eq!(h.chat(&second, "hi").await.0.unwrap().result, "ok");
    assert!(h.pool.has(&h.agent, &first) && h.pool.has(&h.agent, &second));
    assert_eq!(h.pool.size(), 2);
    h.pool.release_agent(&h.agent).await;
    assert_eq!(h.pool.size(), 0);
    assert!(h.live_cli_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_eviction_ends_the_process_and_the_next_turn_resumes() {
    let options = PoolOptions { idle_ttl: Duration::ZERO, ..PoolOptions::default() };
    let h = Harness::with_options(vec![Rule::always(text("ok"))], options).await;
    let session = h.session().await;
    h.chat(&session, "remember the word quince").await.0.unwrap();
    assert_eq!(h.live_cli_processes().len(), 1, "a warm process between turns");
    assert_eq!(h.pool.evict_idle().await, 1);
    assert!(h.live_cli_processes().is_empty(), "eviction ends the process");
    assert!(!h.pool.has(&h.agent, &session));
    h.chat(&session, "which word?").await.0.unwrap();
    let last = h.model.requests().last().cloned().unwrap();
    assert!(
        crate::harness::all_user_text(&last).contains("quince"),
        "the next turn resumed the conversation"
    );
}
