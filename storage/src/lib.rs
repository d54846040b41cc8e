//! Voxanne's call metadata store (design doc below is filled in with the implementation).

mod error;
mod ids;
mod model;
mod queue;
mod recording;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time;

pub use error::StoreError;
pub use ids::{AssistantId, CallSid, OrgId};
pub use model::{
    AppointmentRecord, Assistant, CallQuery, CallSummary, ContactRecord, EventRecord, NewAssistant,
    RecordingRecord, TurnLatency, TurnRecord, WriteOp,
};
pub use queue::{QueueConfig, QueueStats, WriteQueue};
pub use recording::{LocalRecordingStore, RecordingStore, StoredRecording};
pub use store::{
    DEFAULT_ASSISTANT_ID, DEFAULT_ORG_ID, DEFAULT_PAGE, MAX_PAGE, SQLITE_FILE_NAME, Store, StoreOptions,
};
