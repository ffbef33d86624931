//! `GET /v1/usage`: the caller's account's usage over a range of UTC days,
//! summed by one dimension (protocol/rest.md, "Usage").
//!
//! The query: `from` and `to` (`YYYY-MM-DD`, inclusive; `to` defaults to
//! today, `from` to 30 days before `to`), `group_by` (`key`, `day`,
//! `model`, `agent` or `provider`; default `key`) and the usual `limit`,
//! `offset` and `after`. Any other parameter, a date that is not a real
//! one or an unknown group is a 400 naming the parameter. A `from` after
//! `to` is an empty range, answered with an empty page: the OpenAPI
//! document cannot state a rule between two parameters, and it promises
//! that what its schemas allow is accepted (schemathesis checks that).

use std::collections::HashMap;

use axum::{extract::State, http::Uri};
use time::{macros::format_description, Date, Duration};
use utoipa::IntoParams;

use super::{auth::Auth, errors::ApiError};
use crate::{
    http::params::Paged,
    state::AppState,
    store::{Page, UsageGroup, UsageQuery, UsageRecord},
};

/// Days `from` defaults to before `to`.
pub const DEFAULT_DAYS: i64 = 30;

/// The parameters the route knows; any other is refused.
const FILTERS: &[&str] = &["from", "to", "group_by"];

/// The query of `GET /v1/usage` (documentation of the query).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct UsageParams {
    /// First UTC day counted (inclusive); default 30 days before `to`.
    #[param(schema_with = day_schema, required = false)]
    from: String,
    /// Last UTC day counted (inclusive); default today. Before `from`: no
    /// day is counted (an empty page).
    #[param(schema_with = day_schema, required = false)]
    to: String,
    /// What the rows are summed by; default `key`.
    #[param(schema_with = group_schema, required = false)]
    group_by: String,
    /// Page size. `count` is accepted as its alias (protocol/rest.md,
    /// "Pagination"); it is left out of this document because OpenAPI
    /// cannot say "not both", and both at once is a 400.
    #[param(schema_with = limit_schema, required = false)]
    limit: u32,
    /// Rows to skip (from the cursor, if one is given).
    #[param(schema_with = offset_schema, required = false)]
    offset: u64,
    /// The `next_cursor` of the previous page (opaque; not with `before`).
    #[param(schema_with = cursor_schema, required = false)]
    after: String,
    /// The `prev_cursor` of the next page (opaque; not with `after`).
    #[param(schema_with = cursor_schema, required = false)]
    before: String,
    /// `asc` (default: by the group's value) or `desc`.
    #[param(schema_with = crate::http::openapi::schemas::order, required = false)]
    order: String,
}

fn json_schema(v: serde_json::Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::domain::schema::schema_json(v)
}

fn day_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    json_schema(serde_json::json!({"type": "string", "format": "date",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}))
}

fn group_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let names: Vec<&str> = UsageGroup::ALL.iter().map(|g| g.as_str()).collect();
    json_schema(serde_json::json!({"type": "string", "enum": names, "default": "key"}))
}

fn limit_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    json_schema(serde_json::json!({"type": "integer", "minimum": 1,
        "maximum": super::params::MAX_LIMIT, "default": 50}))
}

fn offset_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    json_schema(
        serde_json::json!({"type": "integer", "minimum": 0, "maximum": u64::MAX,
        "default": 0}),
    )
}

fn cursor_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    json_schema(serde_json::json!({"type": "string", "pattern": "^u([0-9a-f]{2})*$"}))
}

/// The account's usage summed by `group_by`, in the order of its values.
#[utoipa::path(get, path = "/v1/usage", tag = "usage",
    params(UsageParams),
    responses((status = 200, body = Page<UsageRecord>)))]
pub async fn list_usage(
    State(state): State<AppState>,
    auth: Auth,
    uri: Uri,
) -> Result<Paged<UsageRecord>, ApiError> {
    let q = super::params::query_of(&uri)?;
    let params = super::params::parse_list(&q, FILTERS)?;
    let query = parse_query(&q, time::OffsetDateTime::now_utc().date())?;
    let page = state
        .store
        .list_usage(auth.account(), query, params)
        .await?;
    Ok(Paged(page))
}

/// `from`, `to` and `group_by` (module doc), with `today` for the default.
fn parse_query(q: &HashMap<String, String>, today: Date) -> Result<UsageQuery, ApiError> {
    let to = match q.get("to") {
        Some(v) => day("to", v)?,
        None => today,
    };
    let from = match q.get("from") {
        Some(v) => day("from", v)?,
        None => to
            .checked_sub(Duration::days(DEFAULT_DAYS))
            .unwrap_or(Date::MIN),
    };
    let group_by = match q.get("group_by") {
        None => UsageGroup::Key,
        Some(g) => UsageGroup::parse(g).ok_or_else(|| {
            let names: Vec<&str> = UsageGroup::ALL.iter().map(|g| g.as_str()).collect();
            ApiError::validation(format!(
                "group_by: unknown group `{g}` (known: {})",
                names.join(", ")
            ))
        })?,
    };
    Ok(UsageQuery {
        from: ymd(from),
        to: ymd(to),
        group_by,
    })
}

/// `YYYY-MM-DD`, as the store keeps days.
fn ymd(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A `YYYY-MM-DD` date that exists, or a 400 naming `name`. Exactly the
/// schema's pattern: four digits of year, no sign.
fn day(name: &str, v: &str) -> Result<Date, ApiError> {
    let shaped = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped
        .then(|| Date::parse(v, format_description!("[year]-[month]-[day]")).ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::validation(format!(
                "{name}: must be a date as YYYY-MM-DD (UTC), got `{v}`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn today() -> Date {
        Date::from_calendar_date(2026, time::Month::December, 4).expect("a date")
    }

    #[test]
    fn defaults_are_the_last_thirty_days_by_key() {
        let got = parse_query(&q(&[]), today()).expect("defaults");
        assert_eq!(got.to, "2026-12-04");
        assert_eq!(got.from, "2026-11-04");
        assert_eq!(got.group_by, UsageGroup::Key);
        let got = parse_query(&q(&[("to", "2026-01-10"), ("group_by", "day")]), today())
            .expect("to given");
        assert_eq!(
            (got.from.as_str(), got.to.as_str()),
            ("2025-12-11", "2026-01-10")
        );
        assert_eq!(got.group_by, UsageGroup::Day);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (pairs, name) in [
            (vec![("from", "2026-13-01")], "from:"),
            (vec![("from", "2026-02-30")], "from:"),
            (vec![("to", "yesterday")], "to:"),
            (vec![("to", "2026-1-1")], "to:"),
            (vec![("from", "+2026-12-04")], "from:"),
            (vec![("group_by", "account")], "group_by:"),
        ] {
            let e = parse_query(&q(&pairs), today()).expect_err("refused");
            assert!(e.message.starts_with(name), "{pairs:?}: {}", e.message);
        }
        let same = parse_query(&q(&[("from", "2026-12-04"), ("to", "2026-12-04")]), today());
        assert!(same.is_ok(), "one day");
        let reversed = parse_query(&q(&[("from", "2026-12-05"), ("to", "2026-12-04")]), today());
        assert!(reversed.is_ok(), "an empty range, not an error");
        let first = parse_query(&q(&[("from", "0001-01-01")]), today()).expect("year 1");
        assert_eq!(first.from, "0001-01-01");
    }
}
