//! Paging both ways, for every list of every backend: which rows a
//! [`ListParams`] asks for, the SQL tail that reads them, and the
//! [`Page`] (with `next_cursor` and `prev_cursor`) built from what came back.
//!
//! A list has one cursor column (a row's `pk`, an event's `seq`, a usage
//! group's value) and a default order. `after` reads on in the list's
//! order; `before` reads the rows just before the cursor by scanning the
//! other way and reversing them, so a page is always answered in the
//! list's order whichever cursor fetched it. One extra row is read to learn
//! whether more rows follow in the direction of travel.

use super::{ListParams, Order, Page, Pagination, StoreError, StoreResult};

/// Largest page a caller may ask for.
pub(in crate::store) const MAX_LIMIT: u32 = 1000;

/// How one list call reads its rows.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::store) struct Plan {
    /// The order the page is answered in.
    pub order: Order,
    /// The order the rows are scanned in (the other way for `before`).
    pub scan: Order,
    after: Option<String>,
    before: Option<String>,
    pub limit: u32,
    pub offset: i64,
}

impl Plan {
    /// The plan of `params` for a list whose default order is `default`.
    /// `after` and `before` together read the rows between them.
    pub fn new(params: &ListParams, default: Order) -> StoreResult<Self> {
        let order = params.order.unwrap_or(default);
        let backwards = params.before.is_some() && params.after.is_none();
        Ok(Self {
            order,
            scan: if backwards { order.flip() } else { order },
            after: params.after.clone(),
            before: params.before.clone(),
            limit: params.limit.clamp(1, MAX_LIMIT),
            offset: i64::try_from(params.offset).unwrap_or(i64::MAX),
        })
    }

    fn backwards(&self) -> bool {
        self.before.is_some() && self.after.is_none()
    }

    /// `AND {col} > ?lo AND {col} < ?hi ORDER BY {col} ASC LIMIT ?l
    /// OFFSET ?o` (or `DESC`), with `sigil` (`?` or `$`) numbering from
    /// `first`: the four values are [`Self::int_bounds`], [`Self::fetch`]
    /// and `offset`.
    pub fn tail(&self, col: &str, sigil: char, first: usize) -> String {
        let dir = self.dir();
        let (lo, hi, l, o) = (first, first + 1, first + 2, first + 3);
        format!(
            " AND {col} > {sigil}{lo} AND {col} < {sigil}{hi} \
             ORDER BY {col} {dir} LIMIT {sigil}{l} OFFSET {sigil}{o}"
        )
    }

    /// The SQL direction of the scan.
    pub fn dir(&self) -> &'static str {
        match self.scan {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }

    /// The raw (lower, upper) bounds on the cursor column: `after` and
    /// `before`, placed by the list's order.
    pub fn bounds(&self) -> (Option<&str>, Option<&str>) {
        let (after, before) = (self.after.as_deref(), self.before.as_deref());
        match self.order {
            Order::Asc => (after, before),
            Order::Desc => (before, after),
        }
    }

    /// The parameter that sets the lower (or upper) bound.
    pub fn bound_name(&self, lower: bool) -> &'static str {
        match (self.order, lower) {
            (Order::Asc, true) | (Order::Desc, false) => "after",
            _ => "before",
        }
    }

    /// [`Self::bounds`] as numbers, a value past every row where a bound
    /// is absent; a cursor that is not a number is refused, naming it.
    pub fn int_bounds(&self) -> StoreResult<(i64, i64)> {
        let parse = |name, v: Option<&String>| match v {
            Some(s) => parse_int(s).map(Some).map_err(|_| invalid_cursor(name)),
            None => Ok(None),
        };
        let after = parse("after", self.after.as_ref())?;
        let before = parse("before", self.before.as_ref())?;
        let (lo, hi) = match self.order {
            Order::Asc => (after, before),
            Order::Desc => (before, after),
        };
        Ok((lo.unwrap_or(-1), hi.unwrap_or(i64::MAX)))
    }

    /// Rows to ask the database for: one more than the page.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The page from the rows read in scan order, each with its cursor.
    pub fn finish<T>(&self, rows: Vec<(String, T)>, total: u64, params: &ListParams) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        let mut rows: Vec<(String, T)> = rows.into_iter().take(self.limit as usize).collect();
        if self.backwards() {
            rows.reverse();
        }
        let first = rows.first().map(|(c, _)| c.clone());
        let last = rows.last().map(|(c, _)| c.clone());
        // Backwards, the cursor's own row follows this page; forwards, the
        // `after` row (or the skipped ones) came before it, and the
        // `before` row follows it.
        let (next_cursor, prev_cursor) = if self.backwards() {
            (last, first.filter(|_| more))
        } else {
            let started = self.after.is_some() || self.offset > 0;
            let bounded = self.before.is_some();
            (last.filter(|_| more || bounded), first.filter(|_| started))
        };
        Page {
            data: rows.into_iter().map(|(_, t)| t).collect(),
            pagination: Pagination {
                total,
                limit: self.limit,
                offset: params.offset,
                next_cursor,
                prev_cursor,
            },
        }
    }
}

/// A numeric cursor (a `pk` or a `seq`).
pub(in crate::store) fn parse_int(s: &str) -> StoreResult<i64> {
    s.parse::<u64>()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| invalid_cursor("after"))
}

/// The error of a cursor this list did not hand out.
pub(in crate::store) fn invalid_cursor(name: &str) -> StoreError {
    StoreError::Invalid(format!("{name}: not a valid cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(after: Option<&str>, before: Option<&str>, order: Option<Order>) -> ListParams {
        ListParams {
            limit: 2,
            after: after.map(str::to_owned),
            before: before.map(str::to_owned),
            order,
            ..Default::default()
        }
    }

    fn rows(cs: &[i64]) -> Vec<(String, i64)> {
        cs.iter().map(|c| (c.to_string(), *c)).collect()
    }

    #[test]
    fn forward_pages_know_what_follows_and_what_came_before() {
        let p = params(None, None, None);
        let plan = Plan::new(&p, Order::Asc).unwrap();
        assert_eq!(
            plan.tail("pk", '?', 2),
            " AND pk > ?2 AND pk < ?3 ORDER BY pk ASC LIMIT ?4 OFFSET ?5"
        );
        assert_eq!(plan.int_bounds(), Ok((-1, i64::MAX)));
        let page = plan.finish(rows(&[1, 2, 3]), 5, &p);
        assert_eq!(page.data, vec![1, 2]);
        assert_eq!(page.pagination.next_cursor.as_deref(), Some("2"));
        assert_eq!(page.pagination.prev_cursor, None);
        let p = params(Some("2"), None, None);
        let page = Plan::new(&p, Order::Asc).unwrap().finish(rows(&[3]), 5, &p);
        assert_eq!(page.pagination.next_cursor, None);
        assert_eq!(page.pagination.prev_cursor.as_deref(), Some("3"));
    }

    #[test]
    fn backward_pages_scan_the_other_way_and_answer_in_order() {
        let p = params(None, Some("5"), Some(Order::Desc));
        let plan = Plan::new(&p, Order::Asc).unwrap();
        assert_eq!(plan.scan, Order::Asc);
        assert_eq!(plan.int_bounds(), Ok((5, i64::MAX)));
        let page = plan.finish(rows(&[6, 7, 8]), 9, &p);
        assert_eq!(page.data, vec![7, 6]);
        assert_eq!(page.pagination.next_cursor.as_deref(), Some("6"));
        assert_eq!(page.pagination.prev_cursor.as_deref(), Some("7"));
        let page = plan.finish(rows(&[6]), 9, &p);
        assert_eq!(page.pagination.prev_cursor, None);
    }

    #[test]
    fn both_cursors_read_between_them() {
        let p = params(Some("9"), Some("3"), Some(Order::Desc));
        let plan = Plan::new(&p, Order::Asc).unwrap();
        assert_eq!((plan.scan, plan.int_bounds()), (Order::Desc, Ok((3, 9))));
        let page = plan.finish(rows(&[8]), 9, &p);
        assert_eq!(page.pagination.next_cursor.as_deref(), Some("8"));
        assert_eq!(page.pagination.prev_cursor.as_deref(), Some("8"));
    }

    #[test]
    fn bad_cursors_are_invalid_and_named() {
        for bad in ["", "x", "-1", "+1", "1.5", "99999999999999999999", " 1"] {
            assert!(parse_int(bad).is_err(), "{bad:?}");
        }
        let plan = Plan::new(&params(None, Some("x"), None), Order::Asc).unwrap();
        assert_eq!(plan.int_bounds(), Err(invalid_cursor("before")));
    }
}
