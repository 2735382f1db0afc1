//! Property tests of name and id parsing, traversal attempts included.

use std::path::{Component, Path};

use orbit_store::{AgentName, ErrorKind, MessageId, SessionId};
use proptest::prelude::*;

proptest! {
    #[test]
    fn valid_names_round_trip_and_stay_one_path_component(name in "[a-z0-9][a-z0-9_-]{0,63}") {
        let parsed = AgentName::parse(&name).unwrap();
        prop_assert_eq!(parsed.as_str(), name.as_str());
        let components: Vec<_> = Path::new(parsed.as_str()).components().collect();
        prop_assert_eq!(components.len(), 1);
        prop_assert!(matches!(components[0], Component::Normal(_)));
        let json = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(serde_json::from_str::<AgentName>(&json).unwrap(), parsed);
    }

    #[test]
    fn anything_with_a_foreign_character_is_refused(prefix in "[a-z0-9]{0,10}", bad in "[^a-z0-9_-]", suffix in "[a-z0-9]{0,10}") {
        let input = format!("{prefix}{bad}{suffix}");
        prop_assert_eq!(AgentName::parse(&input).unwrap_err().kind(), ErrorKind::Invalid);
    }

    #[test]
    fn arbitrary_text_never_parses_into_a_path_escape(input in "\\PC{0,80}") {
        if let Ok(name) = AgentName::parse(&input) {
            prop_assert!(!name.as_str().contains(['/', '.', '\\']));
        }
        if let Ok(id) = SessionId::parse(&input) {
            let text = id.to_string();
            prop_assert_eq!(text.len(), 26);
            prop_assert!(text.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn ulids_round_trip(raw in any::<u128>()) {
        let id = MessageId::from(ulid::Ulid(raw));
        prop_assert_eq!(MessageId::parse(&id.to_string()).unwrap(), id);
    }
}

#[test]
fn traversal_and_edge_cases_are_refused() {
    let too_long = "a".repeat(65);
    for input in [
        "",
        "..",
        ".",
        "a/b",
        "../etc",
        "%2e%2e",
        "A",
        "-a",
        "_a",
        "a b",
        "a\0",
        "\u{e9}",
        "a/../b",
        too_long.as_str(),
    ] {
        assert_eq!(AgentName::parse(input).unwrap_err().kind(), ErrorKind::Invalid, "{input:?}");
    }
    assert!(AgentName::parse(&"a".repeat(64)).is_ok());
    for input in [
        "",
        "..",
        "../../etc/passwd",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVV",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FA/",
    ] {
        assert_eq!(SessionId::parse(input).unwrap_err().kind(), ErrorKind::Invalid, "{input:?}");
    }
    assert!(SessionId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
}
