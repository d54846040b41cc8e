use crate::ids::CallSid;

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached. See [`StoreError::is_transient`].
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A write named a call that exists under another organisation. Never retried.
    #[error("call {sid} belongs to another organisation")]
    OrgMismatch { sid: CallSid },
    /// A referenced row (assistant, organisation) does not exist in this organisation.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// [`Store::set_org_numbers`](crate::Store::set_org_numbers): this number (E.164) answers for another
    /// organisation. Nothing was changed. Never retried.
    #[error("phone number {0} belongs to another organisation")]
    NumberTaken(String),
    /// An argument that cannot be stored safely (e.g. a call sid that is not a file name).
    #[error("invalid {0}")]
    InvalidInput(&'static str),
    #[error("unsupported DATABASE_URL scheme (expected postgres://, postgresql:// or sqlite:)")]
    UnsupportedUrl,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("spill file: {0}")]
    Spill(#[from] serde_json::Error),
    /// [`WriteQueue::flush`](crate::WriteQueue::flush) gave up with writes still pending.
    #[error("flush timed out with {pending} writes pending")]
    FlushTimeout { pending: u64 },
}

impl StoreError {
    /// True when trying again later may succeed: the database is unreachable, restarting, locked or out of
    /// resources. False for errors in the write itself (constraint violations, org mismatch), which would fail
    /// forever and must not block the queue.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_is_transient(e),
            StoreError::Io(_) => true,
            StoreError::Migrate(_)
            | StoreError::OrgMismatch { .. }
            | StoreError::NotFound(_)
            | StoreError::NumberTaken(_)
            | StoreError::InvalidInput(_)
            | StoreError::UnsupportedUrl
            | StoreError::Spill(_)
            | StoreError::FlushTimeout { .. } => false,
        }
    }
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // SQLSTATE: 08 connection exception, 53 insufficient resources, 57P01..03 admin/crash shutdown
                // and "cannot connect now" (starting up), 40001/40P01 serialization failure/deadlock.
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "40001"
                    || code == "40P01"
            } else {
                // SQLite result codes; extended codes keep the primary code in the low byte.
                // 5 BUSY, 6 LOCKED, 8 READONLY, 10 IOERR, 13 FULL, 14 CANTOPEN.
                code.parse::<i64>()
                    .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_transient_and_bad_writes_are_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(StoreError::from(io).is_transient());
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_transient());
        assert!(
            !StoreError::OrgMismatch {
                sid: CallSid::from("CA1")
            }
            .is_transient()
        );
        assert!(!StoreError::NotFound("organisation").is_transient());
    }
}
