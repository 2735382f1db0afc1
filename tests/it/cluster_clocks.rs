//! Nodes judge each other's leases by their own clocks, so a node checks its clock against
//! the database's at its start and refuses to start when it is off by more than a sixth of a
//! lease (500 ms for the tests' 3 s lease). The machine's clock cannot be moved by a test:
//! the node under test sees its clock shifted through `ORBIT_TEST_CLOCK_OFFSET_MS`.

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule};

use crate::nodes::{Node, call, start_refused};

const SHIFT: &str = "ORBIT_TEST_CLOCK_OFFSET_MS";

/// Whether `node` answers.
fn listening(node: &Node) -> bool {
    actix_web::rt::System::new()
        .block_on(async { call(node, "GET", "/api/agents", None).await.0 == 200 })
}

#[test]
fn a_node_whose_clock_is_off_the_databases_is_refused_at_its_start() {
    let database = TestDatabase::new();
    let model = ModelServer::start(vec![Rule::always(Reply::Text("ok".into()))]);
    let dir = tempfile::tempdir().unwrap();

    let ahead = start_refused(&database.url, dir.path(), &model, &[], &[(SHIFT, "2000")]);
    assert!(ahead.contains("this machine's clock is ahead of the database's by"), "{ahead}");
    let offset: u64 = ahead
        .split("ahead of the database's by ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|millis| millis.parse().ok())
        .unwrap_or_else(|| panic!("names the offset in ms: {ahead}"));
    assert!((1_900..=2_100).contains(&offset), "the offset measured is the shift: {ahead}");
    assert!(ahead.contains("500 ms: a sixth of --lease-secs"), "names the bound: {ahead}");
    assert!(ahead.contains("Synchronize this machine's clock (NTP"), "says what to do: {ahead}");

    let behind = start_refused(&database.url, dir.path(), &model, &[], &[(SHIFT, "-3000")]);
    assert!(behind.contains("this machine's clock is behind the database's by"), "{behind}");
    let registered = database.query("SELECT count(*) FROM instances");
    assert_eq!(registered.trim(), "0", "a refused node never registered");

    // Within the bound, a node starts and says how far off it is.
    let mut near = Node::start_in(Some(&database.url), dir.path(), &model, &[], &[(SHIFT, "150")]);
    assert!(listening(&near), "a node within the bound starts");
    assert!(near.logged("this clock agrees with the database's"), "it says it checked");
    near.stop();
}

/// A node on files has no clock but its machine's to agree with: no shift refuses it.
#[test]
fn a_node_on_files_has_no_clock_to_agree_with() {
    let model = ModelServer::start(vec![Rule::always(Reply::Text("ok".into()))]);
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(None, dir.path(), &model, &[], &[(SHIFT, "3600000")]);
    assert!(listening(&node), "a node on files starts whatever its clock");
    assert!(!node.logged("the database's"), "and says nothing of a database's clock");
    node.stop();
}

/// A running node whose clock drifts off the database's stops at its next heartbeat (a
/// third of a lease), with a failure and the figures, as a node that lost its name does.
#[test]
fn a_running_node_whose_clock_drifts_off_stops() {
    let database = TestDatabase::new();
    let model = ModelServer::start(vec![Rule::always(Reply::Text("ok".into()))]);
    let dir = tempfile::tempdir().unwrap();
    let shift_file = dir.path().join("clock-shift");
    std::fs::write(&shift_file, "0").unwrap();
    let hook = shift_file.to_str().unwrap();
    let mut node = Node::start_in(Some(&database.url), dir.path(), &model, &[], &[(SHIFT, hook)]);
    assert!(listening(&node), "a node whose clock agrees starts");
    // Two heartbeats (1 s each) with the clock still right: it runs on.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert!(matches!(node.child.try_wait(), Ok(None)), "a node whose clock agrees runs on");

    std::fs::write(&shift_file, "-4000").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the node runs on with its clock off");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!status.success(), "it exits with a failure: {status}");
    assert!(
        node.logged("stopping at once: this machine's clock is behind the database's by"),
        "it says why, with the offset"
    );
    assert!(node.logged("bound_ms=500"), "and the bound");
    let registered = database.query("SELECT count(*) FROM instances");
    assert_eq!(registered.trim(), "0", "it deregistered on its way out");
}
