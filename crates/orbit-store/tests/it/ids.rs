//! Property tests of name and id parsing, traversal attempts included.

use std::path::{Component, Path};
use std::sync::atomic::{AtomicUsize, Ordering};

use orbit_store::{AgentName, ErrorKind, MessageId, SessionId};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

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
    fn ulids_round_trip(raw in any::<u128>()) {
        let id = MessageId::from(ulid::Ulid(raw));
        prop_assert_eq!(MessageId::parse(&id.to_string()).unwrap(), id);
    }
}

/// What is done to a valid name or id before it is parsed.
#[derive(Debug, Clone)]
enum Corruption {
    /// Nothing: it must parse.
    None,
    /// One character replaced by a foreign one (or a traversal string).
    Replace(usize, &'static str),
    /// A foreign string inserted.
    Insert(usize, &'static str),
    /// One character too many, or one too few.
    Lengthen,
    Shorten,
}

/// Characters and strings no name or id may hold: separators, dots, traversals, escapes,
/// control and non-ASCII characters.
const FOREIGN: &[&str] =
    &["/", ".", "..", "../", "\\", "\0", " ", "%2e", ":", "~", "\u{e9}", "\n", "*"];

fn corruption() -> impl Strategy<Value = Corruption> {
    let foreign = prop::sample::select(FOREIGN);
    prop_oneof![
        4 => Just(Corruption::None),
        2 => (any::<usize>(), foreign.clone()).prop_map(|(at, bad)| Corruption::Replace(at, bad)),
        2 => (any::<usize>(), foreign).prop_map(|(at, bad)| Corruption::Insert(at, bad)),
        1 => Just(Corruption::Lengthen),
        1 => Just(Corruption::Shorten),
    ]
}

/// Applies `corruption` to `valid`, text of one of the shapes below.
fn corrupt(valid: &str, corruption: &Corruption, shape: Shape) -> String {
    let chars: Vec<char> = valid.chars().collect();
    match corruption {
        Corruption::None => valid.to_owned(),
        Corruption::Replace(at, bad) => {
            let at = at % chars.len();
            let mut out: String = chars[..at].iter().collect();
            out.push_str(bad);
            out.extend(&chars[at + 1..]);
            out
        }
        Corruption::Insert(at, bad) => {
            let at = at % (chars.len() + 1);
            let mut out: String = chars[..at].iter().collect();
            out.push_str(bad);
            out.extend(&chars[at..]);
            out
        }
        // A name of any length up to its limit is valid: only past the limit is too long,
        // and only empty is too short.
        Corruption::Lengthen => match shape {
            Shape::UpTo(longest, filler) => {
                let mut out = valid.to_owned();
                out.extend(std::iter::repeat_n(filler, (longest + 1).saturating_sub(out.len())));
                out
            }
            Shape::Exactly(filler) => format!("{valid}{filler}"),
        },
        Corruption::Shorten => match shape {
            Shape::UpTo(..) => String::new(),
            Shape::Exactly(_) => chars[..chars.len() - 1].iter().collect(),
        },
    }
}

/// Which lengths are valid, and a character valid anywhere but first to lengthen with.
#[derive(Clone, Copy)]
enum Shape {
    UpTo(usize, char),
    Exactly(char),
}

/// Mostly valid names, half of them with one targeted corruption: a name parses exactly when
/// it was not corrupted, and what parses is one plain path component. Both outcomes are
/// checked to have happened often, so neither branch is left untested.
#[test]
fn names_near_the_edge_parse_exactly_when_valid() {
    let strategy = ("[a-z0-9][a-z0-9_-]{0,63}", corruption());
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(&strategy, |(valid, corruption)| {
            let input = corrupt(&valid, &corruption, Shape::UpTo(AgentName::MAX_LEN, 'a'));
            match AgentName::parse(&input) {
                Ok(name) => {
                    prop_assert!(matches!(corruption, Corruption::None), "{input:?} parsed");
                    prop_assert!(!name.as_str().contains(['/', '.', '\\']));
                    let components: Vec<_> = Path::new(name.as_str()).components().collect();
                    prop_assert!(matches!(components[..], [Component::Normal(_)]));
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    prop_assert!(!matches!(corruption, Corruption::None), "{input:?}: {err}");
                    prop_assert_eq!(err.kind(), ErrorKind::Invalid);
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    assert!(accepted > 100 && refused > 100, "accepted {accepted}, refused {refused}");
}

/// The same for ids: valid ULID text, half of it corrupted; an id parses exactly when it was
/// not, and prints back as the text it was parsed from.
#[test]
fn ids_near_the_edge_parse_exactly_when_valid() {
    let strategy = (any::<u128>(), corruption());
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(&strategy, |(raw, corruption)| {
            let valid = SessionId::from(ulid::Ulid(raw)).to_string();
            let input = corrupt(&valid, &corruption, Shape::Exactly('0'));
            match SessionId::parse(&input) {
                Ok(id) => {
                    prop_assert!(matches!(corruption, Corruption::None), "{input:?} parsed");
                    prop_assert_eq!(id.to_string(), input);
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    prop_assert!(!matches!(corruption, Corruption::None), "{input:?}: {err}");
                    prop_assert_eq!(err.kind(), ErrorKind::Invalid);
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    assert!(accepted > 100 && refused > 100, "accepted {accepted}, refused {refused}");
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
