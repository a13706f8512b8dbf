//! The trigger types and their arguments, as cozy-stack reads them (`docs/jobs.md`), and when
//! a scheduled trigger fires next.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cocon_common::time::{parse_go_duration, parse_rfc3339_us};
use sha2::{Digest, Sha256};

use crate::error::{JobsError, Result};
use crate::event::EventRule;

/// A trigger's type with its arguments read.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `@cron`: a spec of 5 or 6 fields (seconds optional) or a descriptor (`@monthly`).
    Cron(croner::Cron),
    /// `@hourly` … `@monthly`: a cron spec drawn once within the constraints.
    Periodic(croner::Cron),
    Every(Duration),
    At(i64),
    In(Duration),
    Event(Vec<EventRule>),
    Webhook,
    Client,
}

pub const TYPES: [&str; 11] = [
    "@cron", "@every", "@at", "@in", "@hourly", "@daily", "@weekly", "@monthly", "@event", "@webhook", "@client",
];

fn bad(what: impl Into<String>) -> JobsError {
    JobsError::BadRequest(what.into())
}

/// A cron spec as robfig/cron reads it in cozy-stack: seconds optional, descriptors allowed.
pub fn cron(spec: &str) -> Result<croner::Cron> {
    let spec = spec.trim();
    croner::Cron::new(spec)
        .with_seconds_optional()
        .parse()
        .map_err(|e| bad(format!("invalid cron spec {spec:?}: {e}")))
}

/// Reads a trigger's arguments. `cron` is the spec a periodic trigger drew when it was
/// created (empty the first time: drawn then, from `seed`, so it stays the same).
pub fn parse(kind: &str, arguments: &str, cron_drawn: &str, seed: &str) -> Result<(Schedule, String)> {
    let args = arguments.trim();
    let schedule = match kind {
        "@cron" => Schedule::Cron(cron(args)?),
        "@hourly" | "@daily" | "@weekly" | "@monthly" => {
            let spec = if cron_drawn.is_empty() {
                periodic(kind, args, seed)?
            } else {
                cron_drawn.to_string()
            };
            let schedule = Schedule::Periodic(cron(&spec)?);
            return Ok((schedule, spec));
        }
        "@every" => {
            let every = parse_go_duration(args)
                .ok_or_else(|| bad(format!("invalid duration {args:?} for @every: use e.g. 30m or 1h30m")))?;
            if every < Duration::from_secs(1) {
                return Err(bad("@every needs a duration of at least 1s"));
            }
            Schedule::Every(every)
        }
        "@at" => Schedule::At(parse_rfc3339_us(args).ok_or_else(|| {
            bad(format!(
                "invalid date {args:?} for @at: use RFC 3339, e.g. 2026-12-24T18:00:00Z"
            ))
        })?),
        "@in" => Schedule::In(
            parse_go_duration(args)
                .ok_or_else(|| bad(format!("invalid duration {args:?} for @in: use e.g. 10s or 1h")))?,
        ),
        "@event" => Schedule::Event(crate::event::parse_rules(args)?),
        "@webhook" => Schedule::Webhook,
        "@client" => Schedule::Client,
        other => {
            return Err(bad(format!(
                "unknown trigger type {other:?}: use one of {}",
                TYPES.join(", ")
            )));
        }
    };
    Ok((schedule, String::new()))
}

impl Schedule {
    /// When the trigger fires first, created at `created_us`; 0 for the types that are not
    /// scheduled.
    pub fn first_due(&self, created_us: i64) -> i64 {
        match self {
            Schedule::At(at) => *at,
            Schedule::In(d) | Schedule::Every(d) => created_us.saturating_add(d.as_micros() as i64),
            Schedule::Cron(c) | Schedule::Periodic(c) => next_of(c, created_us),
            Schedule::Event(_) | Schedule::Webhook | Schedule::Client => 0,
        }
    }

    /// When it fires after firing at `due`, at `now`: a time missed while the server was down
    /// fires once, then the schedule goes on from now. `None`: it fired for the last time.
    pub fn next_due(&self, due: i64, now: i64) -> Option<i64> {
        match self {
            Schedule::At(_) | Schedule::In(_) => None,
            Schedule::Every(d) => {
                let step = d.as_micros() as i64;
                let next = due.saturating_add(step);
                if next > now {
                    return Some(next);
                }
                let missed = (now - next) / step + 1;
                Some(next.saturating_add(missed.saturating_mul(step)))
            }
            Schedule::Cron(c) | Schedule::Periodic(c) => Some(next_of(c, due.max(now))),
            Schedule::Event(_) | Schedule::Webhook | Schedule::Client => None,
        }
    }

    /// One-shot triggers are deleted once they fired.
    pub fn one_shot(&self) -> bool {
        matches!(self, Schedule::At(_) | Schedule::In(_))
    }
}

/// The first time after `after_us` the spec matches (UTC).
fn next_of(cron: &croner::Cron, after_us: i64) -> i64 {
    let after = DateTime::<Utc>::from_timestamp_micros(after_us).unwrap_or_default();
    cron.find_next_occurrence(&after, false)
        .map(|t| t.timestamp_micros())
        // A spec that never matches again (February 30th) never fires.
        .unwrap_or(i64::MAX)
}

/// The constraints of a periodic trigger (`on monday between 8am and 6pm`, `on the 1-5`).
struct Periodic {
    days_of_month: Vec<u32>,
    days_of_week: Vec<u32>,
    after_hour: u32,
    before_hour: u32,
}

/// Draws a cron spec within the constraints of `@hourly|@daily|@weekly|@monthly <args>`,
/// the same for the same seed (a weekly trigger always runs on the same day and hour).
pub fn periodic(kind: &str, args: &str, seed: &str) -> Result<String> {
    let mut spec = Periodic {
        days_of_month: (1..=28).collect(),
        days_of_week: (0..7).collect(),
        after_hour: 0,
        before_hour: 24,
    };
    let fields: Vec<&str> = args.split_whitespace().collect();
    let mut i = 0;
    while i < fields.len() {
        let next = |i: usize, after: &str| {
            fields
                .get(i + 1)
                .copied()
                .ok_or_else(|| bad(format!("expecting a value after {after:?} in {kind} {args:?}")))
        };
        match fields[i] {
            "on" => {
                let value = next(i, "on")?;
                if value == "the" {
                    if kind != "@monthly" {
                        return Err(bad("\"on the <days>\" is only for @monthly"));
                    }
                    spec.days_of_month = days_of_month(next(i + 1, "on the")?)?;
                    i += 3;
                } else {
                    if kind != "@weekly" {
                        return Err(bad("\"on <weekday>\" is only for @weekly"));
                    }
                    spec.days_of_week = days_of_week(value)?;
                    i += 2;
                }
            }
            word @ ("before" | "and") => {
                let hour = hour(next(i, word)?)?;
                spec.before_hour = if hour == 0 { 24 } else { hour };
                i += 2;
            }
            word @ ("after" | "between") => {
                spec.after_hour = hour(next(i, word)?)?;
                i += 2;
            }
            other => return Err(bad(format!("unexpected {other:?} in {kind} {args:?}"))),
        }
    }
    if spec.after_hour >= spec.before_hour {
        return Err(bad(format!("the hours of {kind} {args:?} leave no time to run")));
    }
    let digest = Sha256::digest(seed.as_bytes());
    let mut draws = digest
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")));
    let mut draw = |n: u32| draws.next().expect("8 draws") % n.max(1);
    let second = draw(60);
    let minute = draw(60);
    let hour = spec.after_hour + draw(spec.before_hour - spec.after_hour);
    Ok(match kind {
        "@hourly" => format!("{second} {minute} * * * *"),
        "@daily" => format!("{second} {minute} {hour} * * *"),
        "@weekly" => {
            let dow = spec.days_of_week[draw(spec.days_of_week.len() as u32) as usize];
            format!("{second} {minute} {hour} * * {dow}")
        }
        _ => {
            let dom = spec.days_of_month[draw(spec.days_of_month.len() as u32) as usize];
            format!("{second} {minute} {hour} {dom} * *")
        }
    })
}

fn days_of_month(field: &str) -> Result<Vec<u32>> {
    let day = |s: &str| match s.parse::<u32>() {
        Ok(d @ 1..=31) => Ok(d),
        _ => Err(bad(format!("{s:?} is not a day of the month (1 to 31)"))),
    };
    let mut days = Vec::new();
    for part in field.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                if from >= to {
                    return Err(bad(format!("invalid range of days {part:?}")));
                }
                days.extend(from..=to);
            }
            None => days.push(day(part)?),
        }
    }
    Ok(days)
}

fn days_of_week(field: &str) -> Result<Vec<u32>> {
    let day = |s: &str| {
        Ok(match s {
            "sun" | "sunday" => 0,
            "mon" | "monday" => 1,
            "tue" | "tuesday" => 2,
            "wed" | "wednesday" => 3,
            "thu" | "thursday" => 4,
            "fri" | "friday" => 5,
            "sat" | "saturday" => 6,
            _ => return Err(bad(format!("{s:?} is not a day of the week (monday, tue, …)"))),
        })
    };
    let mut days = Vec::new();
    for part in field.split(',') {
        match part {
            "weekday" => days.extend(1..=5),
            "weekend" => days.extend([0, 6]),
            _ => match part.split_once('-') {
                Some((from, to)) => {
                    let (from, mut to) = (day(from)?, day(to)?);
                    if from == to {
                        return Err(bad(format!("invalid range of days {part:?}")));
                    }
                    if from > to {
                        to += 7;
                    }
                    days.extend((from..=to).map(|d| d % 7));
                }
                None => days.push(day(part)?),
            },
        }
    }
    Ok(days)
}

fn hour(field: &str) -> Result<u32> {
    let (number, pm) = if let Some(n) = field.strip_suffix("am") {
        (n, false)
    } else if let Some(n) = field.strip_suffix("pm") {
        (n, true)
    } else {
        return Err(bad(format!("{field:?} is not an hour: use e.g. 8am or 6pm")));
    };
    match number.parse::<u32>() {
        Ok(12) => Ok(if pm { 12 } else { 0 }),
        Ok(h @ 1..=11) => Ok(if pm { h + 12 } else { h }),
        _ => Err(bad(format!("{field:?} is not an hour: use 1am to 12pm"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_US: i64 = 86_400_000_000;
    /// 2026-12-03T00:00:00Z, a Thursday.
    const T0: i64 = 1_796_256_000_000_000;

    #[test]
    fn test_cron_takes_five_or_six_fields_and_descriptors() {
        let (s, _) = parse("@cron", "0 0 12 * * *", "", "x").unwrap();
        assert_eq!(s.first_due(T0), T0 + DAY_US / 2);
        let (s, _) = parse("@cron", "30 12 * * *", "", "x").unwrap();
        assert_eq!(s.first_due(T0), T0 + DAY_US / 2 + 30 * 60_000_000);
        let (s, _) = parse("@cron", "@monthly", "", "x").unwrap();
        // From December 3rd, the first of next month.
        assert_eq!(s.first_due(T0), T0 + 29 * DAY_US);
        assert!(parse("@cron", "61 * * * *", "", "x").is_err());
        assert!(parse("@cron", "", "", "x").is_err());
    }

    #[test]
    fn test_every_fires_a_missed_time_once_then_goes_on() {
        let (s, _) = parse("@every", "1h", "", "x").unwrap();
        let hour = 3_600_000_000;
        let due = s.first_due(T0);
        assert_eq!(due, T0 + hour);
        assert_eq!(s.next_due(due, due), Some(due + hour));
        // Down for 5.5 hours: it fires once now, and next on its own grid after now.
        let now = due + 5 * hour + hour / 2;
        assert_eq!(s.next_due(due, now), Some(due + 6 * hour));
        assert!(parse("@every", "10", "", "x").is_err());
        assert!(parse("@every", "10ms", "", "x").is_err());
    }

    #[test]
    fn test_one_shots() {
        let (s, _) = parse("@in", "10s", "", "x").unwrap();
        assert_eq!(s.first_due(T0), T0 + 10_000_000);
        assert!(s.one_shot() && s.next_due(T0, T0).is_none());
        let (s, _) = parse("@at", "2026-12-24T18:00:00Z", "", "x").unwrap();
        assert_eq!(s.first_due(T0), T0 + 21 * DAY_US + 18 * 3_600_000_000);
        assert!(parse("@at", "Christmas", "", "x").is_err());
        assert!(parse("@sometimes", "", "", "x").is_err());
    }

    #[test]
    fn test_periodic_draws_a_stable_slot_within_the_constraints() {
        let (_, spec) = parse("@weekly", "on monday between 8am and 6pm", "", "seed-1").unwrap();
        let again = periodic("@weekly", "on monday between 8am and 6pm", "seed-1").unwrap();
        assert_eq!(spec, again, "the same trigger keeps its slot");
        let fields: Vec<u32> = spec.split(' ').filter_map(|f| f.parse().ok()).collect();
        let (hour, dow) = (fields[2], fields[3]);
        assert!((8..18).contains(&hour), "{spec}");
        assert_eq!(dow, 1, "{spec}");
        for seed in 0..50 {
            let spec = periodic("@monthly", "on the 3-5 after 10pm", &seed.to_string()).unwrap();
            let fields: Vec<u32> = spec.split(' ').filter_map(|f| f.parse().ok()).collect();
            assert!((22..24).contains(&fields[2]) && (3..=5).contains(&fields[3]), "{spec}");
        }
        let daily = periodic("@daily", "before 5am", "s").unwrap();
        let hour: u32 = daily.split(' ').nth(2).unwrap().parse().unwrap();
        assert!(hour < 5, "{daily}");
        // The drawn spec is kept: a trigger read back does not draw again.
        let (s, kept) = parse("@daily", "before 5am", "1 2 3 * * *", "other").unwrap();
        assert_eq!(kept, "1 2 3 * * *");
        assert_eq!(s.first_due(T0), T0 + 3 * 3_600_000_000 + 2 * 60_000_000 + 1_000_000);
        for bad in ["on the 1", "on friday after 6pm before 6pm", "between 8", "on blursday"] {
            assert!(periodic("@weekly", bad, "s").is_err(), "{bad}");
        }
    }
}
