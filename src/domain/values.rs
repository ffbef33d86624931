//! Wire values the code keeps as plain strings or numbers (a time, an
//! event's `seq`), named so that every schema that has one says the same
//! thing about it: a field documents itself with `#[schema(value_type =
//! Timestamp)]` and the rule is written here once.

use utoipa::{
    openapi::{schema::Type, KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat},
    PartialSchema, ToSchema,
};

/// A time as [`crate::util::now`] writes it: RFC 3339 in UTC with at most
/// millisecond precision.
pub struct Timestamp;

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(
                r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,3})?Z$",
            ))
            .description(Some(
                "RFC 3339 in UTC with at most millisecond precision, e.g. 2026-11-23T15:45:35.123Z (a whole second has no fraction).",
            ))
            .into()
    }
}

impl ToSchema for Timestamp {}

/// An event's position in its channel, numbered by the bus.
pub struct Seq;

impl PartialSchema for Seq {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .description(Some(
                "Position of an event in its channel (an agent's events, or an agent's log lines): starts at 1, strictly increasing, the resume cursor.",
            ))
            .into()
    }
}

impl ToSchema for Seq {}
