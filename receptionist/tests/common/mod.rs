//! A text conversation with the receptionist over the in-memory tools, at a fixed clinic-local
//! time.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use receptionist::clinic::Clinic;
use receptionist::dialogue::{CallContext, Direction, Reply};
use receptionist::session::ReceptionistSession;
use receptionist::testing::{MemoryTools, example_clinic};

pub const CALLER: &str = "+447700900123";

pub struct Convo {
    pub clinic: Arc<Clinic>,
    pub tools: Arc<MemoryTools>,
    pub session: ReceptionistSession,
    history: usize,
    last: Option<String>,
    pub transcript: Vec<String>,
}

/// Clinic-local time `2026-12-01T10:00` as UTC.
pub fn utc(clinic: &Clinic, local: &str) -> DateTime<Utc> {
    let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M").expect("time");
    clinic
        .tz
        .from_local_datetime(&t)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

impl Convo {
    pub fn at(local: &str, caller: Option<&str>) -> Self {
        Self::with(
            local,
            caller,
            Arc::new(MemoryTools::new(&example_clinic())),
            Direction::Inbound,
        )
    }

    pub fn with(
        local: &str,
        caller: Option<&str>,
        tools: Arc<MemoryTools>,
        direction: Direction,
    ) -> Self {
        let clinic = Arc::new(example_clinic());
        let now = utc(&clinic, local);
        let session = ReceptionistSession::new(
            clinic.clone(),
            CallContext {
                call_id: "CAtest".into(),
                caller: caller.map(str::to_string),
                direction,
            },
            tools.clone(),
            Arc::new(move || now),
        );
        Self {
            clinic,
            tools,
            session,
            history: 1,
            last: None,
            transcript: vec![],
        }
    }

    /// The caller says `text` and hears the whole reply.
    pub async fn say(&mut self, text: &str) -> Reply {
        let r = self
            .session
            .reply(self.history, self.last.as_deref(), text)
            .await;
        self.history += 2;
        self.last = Some(r.say.join(" "));
        self.transcript.push(format!("caller: {text}"));
        self.transcript.push(format!("agent: {}", r.say.join(" ")));
        r
    }

    /// The caller says `text` but the core abandons the reply unheard and asks again with the
    /// same history (see the session docs).
    pub async fn say_abandoned(&mut self, text: &str) -> Reply {
        self.session
            .reply(self.history, self.last.as_deref(), text)
            .await
    }

    /// The caller heard only `heard` of the last reply (barge-in).
    pub fn heard_only(&mut self, heard: &str) {
        self.last = Some(heard.to_string());
    }

    pub fn dump(&self) -> String {
        self.transcript.join("\n")
    }
}

pub fn said(r: &Reply) -> String {
    r.say.join(" ")
}
