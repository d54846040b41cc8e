//! [`DbTime`]: one timestamp type that means the same on both backends.
//!
//! Postgres stores `TIMESTAMPTZ` (microseconds). SQLite has no time type; sqlx's default encoding of
//! `DateTime<Utc>` there is RFC 3339 with a variable number of fraction digits, whose text order is not time
//! order in every case. `DbTime` writes fixed-width UTC text (`2026-11-21T23:35:00.123456Z`) on SQLite so
//! `ORDER BY`/`<` on the column are time order, readable in the `sqlite3` shell, and truncated to microseconds
//! on both backends so a value reads back identically from either.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DbTime(pub DateTime<Utc>);

impl DbTime {
    fn sqlite_text(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl From<DateTime<Utc>> for DbTime {
    fn from(t: DateTime<Utc>) -> Self {
        DbTime(t)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.sqlite_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<Sqlite>>::decode(value)?;
        Ok(DbTime(
            DateTime::parse_from_rfc3339(&text)?.with_timezone(&Utc),
        ))
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbTime(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sqlite_text_is_fixed_width_and_sorts_as_time() {
        let a = DbTime(Utc.timestamp_opt(1_700_000_000, 0).unwrap());
        let b = DbTime(Utc.timestamp_opt(1_700_000_000, 500_000_000).unwrap());
        let c = DbTime(Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap());
        assert_eq!(a.sqlite_text(), "2023-11-14T22:13:20.000000Z");
        assert_eq!(c.sqlite_text(), "2023-11-14T22:13:20.123456Z");
        assert!(a.sqlite_text() < c.sqlite_text() && c.sqlite_text() < b.sqlite_text());
    }
}
