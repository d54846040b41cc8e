//! stub
#[derive(Debug)]
pub struct StoredRecording;
pub trait RecordingStore {}
#[derive(Debug)]
pub struct LocalRecordingStore;
