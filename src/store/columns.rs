//! Typed ids and statuses as SQL text columns, for both drivers: the store
//! binds and reads [`crate::domain`] values directly, and keeps exactly the
//! text they travel as, so rows written before these types existed read
//! back unchanged. An id column takes any text (see [`crate::domain::ids`]);
//! a status or type column that holds an unknown value fails to decode, as
//! a broken row should.

use std::error::Error;

use crate::domain::{
    AgentId, AgentStatus, ErrorCode, KeyId, MessageType, RunId, RunStatus, SessionId, StopReason,
    ToolId,
};

type BoxError = Box<dyn Error + Sync + Send>;

/// Implements both drivers' text conversions for `$ty`, reading with `$read`
/// (`fn(&str) -> Result<$ty, E>`).
macro_rules! text_column {
    ($($ty:ty => $read:expr),+ $(,)?) => {$(
        impl rusqlite::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                $read(text).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }

        impl tokio_postgres::types::ToSql for $ty {
            fn to_sql(
                &self,
                ty: &tokio_postgres::types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<tokio_postgres::types::IsNull, BoxError> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::ToSql>::accepts(ty)
            }

            tokio_postgres::types::to_sql_checked!();
        }

        impl<'a> tokio_postgres::types::FromSql<'a> for $ty {
            fn from_sql(ty: &tokio_postgres::types::Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
                Ok($read(text)?)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::FromSql>::accepts(ty)
            }
        }
    )+};
}

/// Ids are kept as given.
fn id<T: From<String>>(text: &str) -> Result<T, std::convert::Infallible> {
    Ok(T::from(text.to_owned()))
}

text_column! {
    AgentId => id::<AgentId>,
    RunId => id::<RunId>,
    SessionId => id::<SessionId>,
    ToolId => id::<ToolId>,
    KeyId => id::<KeyId>,
    MessageType => str::parse::<MessageType>,
    RunStatus => str::parse::<RunStatus>,
    AgentStatus => str::parse::<AgentStatus>,
    StopReason => str::parse::<StopReason>,
    ErrorCode => str::parse::<ErrorCode>,
}
