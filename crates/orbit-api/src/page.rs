//! Pages of listings: `?limit=N[&cursor=C]` answers at most `N` records after the cursor and,
//! when more follow, a `nextCursor` to ask for the next page with. Without `limit` a listing
//! answers every record, as it always did.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};

/// The most records one page may ask for.
pub const MAX_LIMIT: usize = 1000;

/// The query of every paged listing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct PageQuery {
    /// At most this many records (1 to 1000); the answer then carries `nextCursor` when more
    /// follow. Without it, every record.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// The `nextCursor` of the page before; opaque. Only with `limit`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page's size, checked; `None` for the whole listing.
    pub fn limit(&self) -> ApiResult<Option<usize>> {
        match self.limit {
            None if self.cursor.is_some() => {
                Err(ApiError::invalid("a cursor needs a limit: ask ?limit=N&cursor=..."))
            }
            None => Ok(None),
            Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(Some(limit)),
            Some(_) => Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}"))),
        }
    }

    /// The cursor parsed by `parse`; a cursor that does not parse is a 400.
    pub fn cursor<T>(&self, parse: impl FnOnce(&str) -> Option<T>) -> ApiResult<Option<T>> {
        match &self.cursor {
            None => Ok(None),
            Some(cursor) => parse(cursor)
                .map(Some)
                .ok_or_else(|| ApiError::invalid("cursor is not one this listing gave")),
        }
    }
}

/// Cuts `records` (fetched with one more than `limit`) to the page, and names the cursor of
/// the next one when more follow.
pub fn cut<T>(
    mut records: Vec<T>,
    limit: usize,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if records.len() <= limit {
        return (records, None);
    }
    records.truncate(limit);
    let next = records.last().map(cursor_of);
    (records, next)
}
