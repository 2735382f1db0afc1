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
    assert!(ahead.contains("500 ms, a sixth of --lease-secs"), "names the bound: {ahead}");
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
