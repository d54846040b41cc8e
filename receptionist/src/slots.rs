//! Free slots: opening hours, closed dates, service length, notice and existing appointments,
//! and which two or three to offer for what the caller asked.
//!
//! Pure: the caller passes the busy intervals (from the store) and the clinic-local "now".

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

use crate::clinic::Clinic;
use crate::when::{DaySpec, TimeSpec, WhenQuery};

/// Slots start on this grid (minutes past the hour, from opening time): a quarter hour is what
/// clinics book in, and it keeps the number of candidates small (a 9-hour day is 36).
pub const SLOT_STEP_MINUTES: i64 = 15;

/// Most slots offered at once: more than three is a list nobody remembers on the phone.
pub const MAX_OFFER: usize = 3;

/// How many days ahead an open-ended request ("any day", "the earliest") looks.
pub const OPEN_ENDED_DAYS: i64 = 14;

/// A bookable slot, clinic-local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub start: NaiveDateTime,
    pub minutes: u32,
}

impl Slot {
    pub fn end(&self) -> NaiveDateTime {
        self.start + Duration::minutes(i64::from(self.minutes))
    }

    /// The slot in UTC for the store. Local times that do not exist (spring forward) are never
    /// generated; ambiguous ones (autumn back) take the earlier instant.
    pub fn utc(&self, clinic: &Clinic) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let a = clinic.tz.from_local_datetime(&self.start).earliest()?;
        let b = clinic.tz.from_local_datetime(&self.end()).earliest()?;
        Some((a.with_timezone(&Utc), b.with_timezone(&Utc)))
    }
}

/// Local time of a UTC instant in the clinic's zone.
pub fn local(clinic: &Clinic, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&clinic.tz).naive_local()
}

/// The dates a request covers, within the booking horizon, from today.
/// The open dates of the [`OPEN_ENDED_DAYS`] from `from` (within the horizon): where to look
/// when the day asked for is closed or has nothing free.
pub fn fortnight_from(clinic: &Clinic, from: NaiveDate, today: NaiveDate) -> Vec<NaiveDate> {
    dates(
        clinic,
        Some(&DaySpec::Range {
            from,
            to: from + Duration::days(OPEN_ENDED_DAYS),
        }),
        today,
    )
}

pub fn dates(clinic: &Clinic, day: Option<&DaySpec>, today: NaiveDate) -> Vec<NaiveDate> {
    let horizon = today + Duration::days(i64::from(clinic.file.clinic.booking_horizon_days));
    let (from, to) = match day {
        Some(DaySpec::Date(d)) => (*d, *d),
        Some(DaySpec::Range { from, to }) => (*from, *to),
        Some(DaySpec::AnyDay) | None => (today, today + Duration::days(OPEN_ENDED_DAYS)),
    };
    let from = from.max(today);
    let to = to.min(horizon);
    let mut out = Vec::new();
    let mut d = from;
    while d <= to {
        out.push(d);
        d += Duration::days(1);
    }
    out
}

/// The UTC range to fetch busy intervals for, covering `dates`.
pub fn busy_range(clinic: &Clinic, dates: &[NaiveDate]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = dates.first()?.and_time(NaiveTime::MIN);
    let last = (*dates.last()? + Duration::days(1)).and_time(NaiveTime::MIN);
    let a = clinic.tz.from_local_datetime(&first).earliest()?;
    let b = clinic.tz.from_local_datetime(&last).latest()?;
    Some((a.with_timezone(&Utc), b.with_timezone(&Utc)))
}

/// Every free slot of `minutes` on `dates`, in order.
pub fn free_slots(
    clinic: &Clinic,
    dates: &[NaiveDate],
    minutes: u32,
    busy: &[(DateTime<Utc>, DateTime<Utc>)],
    now: NaiveDateTime,
) -> Vec<Slot> {
    let earliest = now + Duration::minutes(i64::from(clinic.file.clinic.min_notice_minutes));
    let busy: Vec<(NaiveDateTime, NaiveDateTime)> = busy
        .iter()
        .map(|(a, b)| (local(clinic, *a), local(clinic, *b)))
        .collect();
    let mut out = Vec::new();
    for &d in dates {
        let Some(hours) = clinic.hours_on(d) else {
            continue;
        };
        let close = d.and_time(hours.close);
        let mut t = d.and_time(hours.open);
        while t + Duration::minutes(i64::from(minutes)) <= close {
            let slot = Slot { start: t, minutes };
            let free = busy
                .iter()
                .all(|(a, b)| slot.end() <= *a || slot.start >= *b);
            let exists = clinic.tz.from_local_datetime(&t).single().is_some();
            if t >= earliest && free && exists {
                out.push(slot);
            }
            t += Duration::minutes(SLOT_STEP_MINUTES);
        }
    }
    out
}

/// Which slots to offer for a request, nearest first to what was asked:
/// - an exact time: that slot if free, else the nearest free times that day, else that time on
///   the next days;
/// - a window: the first free slot in it and one later in it (or on the next day);
/// - a day only: its first morning and first afternoon slot;
/// - nothing, or "earliest": the two soonest slots.
pub fn choose(free: &[Slot], when: &WhenQuery) -> Vec<Slot> {
    let time = when.time.as_ref();
    let mut picked: Vec<Slot> = match time {
        Some(TimeSpec::At(t)) => {
            let t = *t;
            if let Some(s) = free.iter().find(|s| s.start.time() == t) {
                vec![*s]
            } else {
                // The nearest free time before and after the asked one, on the first day
                // that has any (a caller asking for two o'clock hears "half past one or three").
                let mut dates: Vec<NaiveDate> = free.iter().map(|s| s.start.date()).collect();
                dates.dedup();
                let mut near = Vec::new();
                for d in dates {
                    let day: Vec<&Slot> = free.iter().filter(|s| s.start.date() == d).collect();
                    if let Some(before) = day.iter().rev().find(|s| s.start.time() < t) {
                        near.push(**before);
                    }
                    if let Some(after) = day.iter().find(|s| s.start.time() > t) {
                        near.push(**after);
                    }
                    if !near.is_empty() {
                        break;
                    }
                }
                near
            }
        }
        Some(TimeSpec::Window { from, to }) => {
            let inside: Vec<Slot> = free
                .iter()
                .filter(|s| s.start.time() >= *from && s.start.time() < *to)
                .copied()
                .collect();
            spread(&inside)
        }
        Some(TimeSpec::Earliest) => free.iter().take(2).copied().collect(),
        None => {
            if when.day.is_some() {
                let mut v = Vec::new();
                let first_day = free.first().map(|s| s.start.date());
                if let Some(d) = first_day {
                    let noon = NaiveTime::from_hms_opt(12, 0, 0).expect("noon");
                    if let Some(m) = free
                        .iter()
                        .find(|s| s.start.date() == d && s.start.time() < noon)
                    {
                        v.push(*m);
                    }
                    if let Some(a) = free
                        .iter()
                        .find(|s| s.start.date() == d && s.start.time() >= noon)
                    {
                        v.push(*a);
                    }
                    if v.is_empty() {
                        v = free.iter().take(2).copied().collect();
                    }
                }
                v
            } else {
                free.iter().take(2).copied().collect()
            }
        }
    };
    picked.sort();
    picked.dedup();
    picked.truncate(MAX_OFFER);
    picked
}

/// The first slot and one about two hours later the same day (else the first of the next day).
fn spread(slots: &[Slot]) -> Vec<Slot> {
    let Some(first) = slots.first().copied() else {
        return vec![];
    };
    let second = slots
        .iter()
        .find(|s| {
            s.start.date() == first.start.date() && s.start >= first.start + Duration::hours(2)
        })
        .or_else(|| slots.iter().find(|s| s.start.date() > first.start.date()))
        .or_else(|| slots.get(1));
    let mut v = vec![first];
    if let Some(s) = second {
        v.push(*s);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinic::ClinicFile;

    fn clinic() -> Clinic {
        ClinicFile::from_toml(crate::testing::EXAMPLE_CLINIC)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn at(d: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, d)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    #[test]
    fn slots_respect_hours_notice_and_bookings() {
        let c = clinic();
        let now = at(1, 10, 0); // Tuesday 10:00, one hour's notice
        let today = now.date();
        let busy = [Slot {
            start: at(1, 11, 0),
            minutes: 60,
        }
        .utc(&c)
        .unwrap()];
        let free = free_slots(&c, &[today], 30, &busy, now);
        assert_eq!(free.first().unwrap().start, at(1, 12, 0), "11-12 is booked");
        assert!(free.iter().all(|s| s.end() <= at(1, 17, 30)));
        // Sunday closed; Christmas closed.
        let sunday = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        assert!(free_slots(&c, &[sunday], 30, &[], now).is_empty());
        let xmas = NaiveDate::from_ymd_opt(2026, 12, 25).unwrap();
        assert!(free_slots(&c, &[xmas], 30, &[], now).is_empty());
    }

    #[test]
    fn a_taken_time_offers_the_nearest() {
        let c = clinic();
        let now = at(1, 8, 0);
        let day = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let busy = [Slot {
            start: at(2, 14, 0),
            minutes: 60,
        }
        .utc(&c)
        .unwrap()];
        let free = free_slots(&c, &[day], 30, &busy, now);
        let q = WhenQuery {
            day: Some(DaySpec::Date(day)),
            time: Some(TimeSpec::At(NaiveTime::from_hms_opt(14, 0, 0).unwrap())),
        };
        let offer = choose(&free, &q);
        assert_eq!(offer.len(), 2);
        let times: Vec<_> = offer.iter().map(|s| s.start).collect();
        assert!(
            times.contains(&at(2, 13, 30)) && times.contains(&at(2, 15, 0)),
            "{times:?}"
        );
    }
}
