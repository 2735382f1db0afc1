//! The contract of memory: notes appended to the day's file, read back by day and searched
//! across days.

use time::macros::datetime;

use super::agent;
use crate::Stores;

/// Memory appends to the day's file and searches across days.
pub async fn memory_days_and_search(stores: &Stores) {
    let a = agent(stores, "a").await;
    let monday = datetime!(2026-11-23 09:30 UTC);
    let tuesday = datetime!(2026-11-24 10:00 UTC);
    stores.memory.append(&a, monday, "The deploy key is in the Vault").await.unwrap();
    stores.memory.append(&a, monday, "Lunch was fine").await.unwrap();
    stores.memory.append(&a, tuesday, "Rotated the deploy key").await.unwrap();
    let day = stores.memory.read_day(&a, monday.date()).await.unwrap().unwrap();
    assert!(day.contains("## 09:30:00 UTC") && day.contains("Lunch was fine"));
    assert_eq!(
        stores.memory.read_day(&a, datetime!(2026-01-01 0:00 UTC).date()).await.unwrap(),
        None
    );
    assert_eq!(stores.memory.list_days(&a).await.unwrap(), vec![monday.date(), tuesday.date()]);
    let hits = stores.memory.search(&a, "DEPLOY KEY", 10).await.unwrap();
    let texts: Vec<_> = hits.iter().map(|h| (h.date.as_str(), h.text.as_str())).collect();
    assert_eq!(
        texts,
        vec![
            ("2026-11-24", "Rotated the deploy key"),
            ("2026-11-23", "The deploy key is in the Vault")
        ]
    );
    assert_eq!(stores.memory.search(&a, "deploy", 1).await.unwrap().len(), 1);
}
