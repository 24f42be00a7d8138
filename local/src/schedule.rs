//! EventBridge schedule expressions, as
//! <https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-scheduled-rule-pattern.html>
//! and <https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html>
//! define them, evaluated in UTC:
//!
//! - `rate(value unit)`: a positive whole number of `minute(s)`, `hour(s)` or
//!   `day(s)`, the unit singular for 1 only.
//! - `cron(Minutes Hours Day-of-month Month Day-of-week Year)`: six fields
//!   with the pages' ranges and wildcards (`, - * / ?`, `L` and `W` in
//!   Day-of-month, `L` and `#` in Day-of-week, where 1 = SUN, not Unix's
//!   0 = SUN). One of the two day fields must be `?`, and only one.
//!
//! The pages follow Quartz's cron syntax, so where they are silent Quartz's
//! meaning is played: a range may wrap (the page's own Hours `20-2`), `*/n`
//! starts at the field's first value, `LW` is the last weekday of the month,
//! `W` never leaves its month, names and letters are read in any case. What
//! the pages do not list (Quartz's `L-3`, `/` in Day-of-week, which the
//! English table leaves out, `#` or `nL` within a list) is refused, never
//! guessed: every refusal names the expression and the field. Scheduler's
//! one-time `at(...)` and its time zones are not played.
//! The one-minute minimum holds by construction (the finest field is Minutes;
//! a rate's finest unit is the minute).

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Rate(Duration),
    Cron(Cron),
}

/// A parsed `cron(...)`: the values each field lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Set,
    hours: Set,
    days: Days,
    months: Set,
    years: Set,
}

/// Whichever of the two day fields is not `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Days {
    /// Day-of-month values.
    OfMonth(Set),
    /// Day-of-month `L`.
    LastOfMonth,
    /// Day-of-month `LW`.
    LastWeekdayOfMonth,
    /// Day-of-month `nW`.
    NearestWeekday(u32),
    /// Day-of-week values (1 = SUN); `L` alone is 7.
    OfWeek(Set),
    /// Day-of-week `nL`: the last such weekday of the month.
    LastOfWeek(u32),
    /// Day-of-week `n#k`: the k-th such weekday of the month.
    NthOfWeek(u32, u32),
}

impl Schedule {
    /// Parses `rate(...)` or `cron(...)`; errors start `schedule "<expr>"`.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let trimmed = expr.trim();
        if trimmed.starts_with("rate(") {
            return parse_rate(expr).map(Schedule::Rate);
        }
        match trimmed
            .strip_prefix("cron(")
            .and_then(|s| s.strip_suffix(')'))
        {
            Some(fields) => Cron::parse(fields)
                .map(Schedule::Cron)
                .map_err(|e| format!("schedule {expr:?}: {e}")),
            None => Err(format!(
                "schedule {expr:?} must read rate(value unit) or cron(fields)"
            )),
        }
    }

    /// The first fire time strictly after `after`: `after + period` for a
    /// rate (the caller keeps the rate's own start point), the next whole
    /// minute matching every field for a cron. None once a cron has no
    /// further time (its Years are past, or it names e.g. 30 FEB).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Rate(period) => after.checked_add_signed(TimeDelta::from_std(*period).ok()?),
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }
}

/// `rate(value unit)`, with the messages of the parser it replaces in
/// sources.rs.
fn parse_rate(expr: &str) -> Result<Duration, String> {
    let inner = expr
        .trim()
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("schedule {expr:?} must read rate(<number> <unit>)"))?;
    let (n, unit) = inner
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("schedule {expr:?} must read rate(<number> <unit>)"))?;
    // Digits only: Rust's parse would also take "+5".
    let n: u64 = Some(n)
        .filter(|n| is_digits(n))
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("schedule {expr:?}: {n:?} is not a positive whole number"))?;
    let unit_secs = match (unit.trim(), n) {
        ("minute", 1) | ("minutes", 2..) => 60,
        ("hour", 1) | ("hours", 2..) => 3600,
        ("day", 1) | ("days", 2..) => 86_400,
        (u, _) => {
            return Err(format!(
                "schedule {expr:?}: unit {u:?} must be minute(s), hour(s) or day(s), singular for 1 only"
            ));
        }
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("schedule {expr:?}: {n} {} is too long", unit.trim()))
}

/// One cron field: its name in AWS's table, range, names and wildcards.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of min, min + 1, ...
    names: &'static [&'static str],
    /// The table's wildcards column (letters included).
    wildcards: &'static str,
    /// Whether `a-b` with a > b runs round the end (Year has no end to run round).
    wraps: bool,
    /// Quartz's largest increment for the field.
    max_step: u32,
}

const MINUTES: Field = Field {
    name: "Minutes",
    min: 0,
    max: 59,
    names: &[],
    wildcards: ", - * /",
    wraps: true,
    max_step: 59,
};
const HOURS: Field = Field {
    name: "Hours",
    min: 0,
    max: 23,
    names: &[],
    wildcards: ", - * /",
    wraps: true,
    max_step: 23,
};
const DAY_OF_MONTH: Field = Field {
    name: "Day-of-month",
    min: 1,
    max: 31,
    names: &[],
    wildcards: ", - * ? / L W",
    wraps: true,
    max_step: 31,
};
const MONTH: Field = Field {
    name: "Month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    wildcards: ", - * /",
    wraps: true,
    max_step: 12,
};
const DAY_OF_WEEK: Field = Field {
    name: "Day-of-week",
    min: 1,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    wildcards: ", - * ? L #",
    wraps: true,
    max_step: 7,
};
const YEAR: Field = Field {
    name: "Year",
    min: 1970,
    max: 2199,
    names: &[],
    wildcards: ", - * /",
    wraps: false,
    max_step: 229,
};

const SUNDAY: u32 = 1;
const SATURDAY: u32 = 7;

impl Cron {
    /// Parses the text between `cron(` and `)`; errors name the field at fault.
    fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = fields[..] else {
            return Err(format!(
                "cron takes 6 fields (Minutes Hours Day-of-month Month Day-of-week Year), not {}",
                fields.len()
            ));
        };
        let all = [
            (&MINUTES, minutes),
            (&HOURS, hours),
            (&DAY_OF_MONTH, dom),
            (&MONTH, month),
            (&DAY_OF_WEEK, dow),
            (&YEAR, year),
        ];
        for (field, text) in all {
            check_wildcards(field, text)?;
        }
        for (field, text) in [(&DAY_OF_MONTH, dom), (&DAY_OF_WEEK, dow)] {
            if text.contains('?') && text != "?" {
                return Err(format!("{} {text:?}: ? stands alone", field.name));
            }
        }
        let minutes = parse_set(&MINUTES, minutes)?;
        let hours = parse_set(&HOURS, hours)?;
        let days = match (dom, dow) {
            ("?", "?") => {
                return Err(
                    "Day-of-month and Day-of-week are both ?: one of them must name the days"
                        .into(),
                );
            }
            ("?", dow) => parse_day_of_week(dow)?,
            (dom, "?") => parse_day_of_month(dom)?,
            (dom, dow) => {
                return Err(format!(
                    "Day-of-month {dom:?} and Day-of-week {dow:?} cannot both be given: one of them must be ?"
                ));
            }
        };
        Ok(Cron {
            minutes,
            hours,
            days,
            months: parse_set(&MONTH, month)?,
            years: parse_set(&YEAR, year)?,
        })
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fires fall on whole minutes: start at the first one after `after`.
        let start = after
            .with_second(0)?
            .with_nanosecond(0)?
            .checked_add_signed(TimeDelta::minutes(1))?;
        let (sy, sm, sd, sh, smi) = (
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
        );
        // Each level starts from `start`'s value only while every level above
        // still equals `start`'s; otherwise from the field's first value. Each
        // level skips straight to its next allowed value, so a search never
        // walks more than the days of the years it crosses.
        let first_year = u32::try_from(sy).unwrap_or(0);
        for y in self.years.members_from(first_year) {
            let same_y = y == first_year;
            for mo in self.months.members_from(if same_y { sm } else { 1 }) {
                let same_m = same_y && mo == sm;
                let last = days_in_month(y, mo);
                for d in (if same_m { sd } else { 1 })..=last {
                    if !self.days.matches(y, mo, d, last) {
                        continue;
                    }
                    let same_d = same_m && d == sd;
                    for h in self.hours.members_from(if same_d { sh } else { 0 }) {
                        let from = if same_d && h == sh { smi } else { 0 };
                        if let Some(mi) = self.minutes.next_from(from) {
                            return Utc.with_ymd_and_hms(y as i32, mo, d, h, mi, 0).single();
                        }
                    }
                }
            }
        }
        None
    }
}

impl Days {
    fn matches(&self, y: u32, mo: u32, d: u32, last: u32) -> bool {
        let wd_of_d = || weekday(y, mo, d);
        match self {
            Days::OfMonth(set) => set.contains(d),
            Days::LastOfMonth => d == last,
            Days::LastWeekdayOfMonth => d == nearest_weekday(y, mo, last, last),
            // A month without day n has no nW either, as it has no plain n.
            Days::NearestWeekday(n) => *n <= last && d == nearest_weekday(y, mo, *n, last),
            Days::OfWeek(set) => set.contains(wd_of_d()),
            Days::LastOfWeek(wd) => d + 7 > last && wd_of_d() == *wd,
            Days::NthOfWeek(wd, k) => (d - 1) / 7 + 1 == *k && wd_of_d() == *wd,
        }
    }
}

/// AWS's day-of-week number, 1 = SUN.
fn weekday(y: u32, mo: u32, d: u32) -> u32 {
    NaiveDate::from_ymd_opt(y as i32, mo, d).map_or(0, |date| date.weekday().number_from_sunday())
}

/// The weekday nearest day `n` without leaving the month: a Saturday 1st
/// moves on to Monday the 3rd, a Sunday last day back to Friday.
fn nearest_weekday(y: u32, mo: u32, n: u32, last: u32) -> u32 {
    match weekday(y, mo, n) {
        SATURDAY if n == 1 => 3,
        SATURDAY => n - 1,
        SUNDAY if n == last => n - 2,
        SUNDAY => n + 1,
        _ => n,
    }
}

fn days_in_month(y: u32, mo: u32) -> u32 {
    match mo {
        2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Refuses any wildcard AWS's table does not list for the field.
fn check_wildcards(field: &Field, text: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_digit() || field.wildcards.contains(c.to_ascii_uppercase());
    // Letters of a named field are read as names (and refused there if not one).
    let named = |c: char| !field.names.is_empty() && c.is_ascii_alphabetic();
    match text.chars().find(|&c| !allowed(c) && !named(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{} {text:?}: {c} is not a wildcard of this field (it takes {})",
            field.name, field.wildcards
        )),
    }
}

fn parse_day_of_month(text: &str) -> Result<Days, String> {
    let field = &DAY_OF_MONTH;
    let upper = text.to_ascii_uppercase();
    match upper.as_str() {
        "L" => Ok(Days::LastOfMonth),
        "LW" => Ok(Days::LastWeekdayOfMonth),
        _ => match upper.strip_suffix('W') {
            Some(day) if is_digits(day) => Ok(Days::NearestWeekday(value(field, day)?)),
            Some(_) => Err(format!(
                "{} {text:?}: W follows a single day, as in 15W",
                field.name
            )),
            None if upper.contains(['L', 'W']) => Err(format!(
                "{} {text:?}: L, LW and nW stand alone in the field",
                field.name
            )),
            None => Ok(Days::OfMonth(parse_set(field, text)?)),
        },
    }
}

fn parse_day_of_week(text: &str) -> Result<Days, String> {
    let field = &DAY_OF_WEEK;
    // AWS: "If you use a '#' character, you can define only one expression in
    // the day-of-week field"; Quartz holds nL to the same.
    let upper = text.to_ascii_uppercase();
    if upper.contains(',')
        && upper
            .split(',')
            .any(|t| t.contains('#') || t.ends_with('L'))
    {
        return Err(format!(
            "{} {text:?}: an L or # expression must be the only one in the field",
            field.name
        ));
    }
    if upper == "L" {
        let mut saturday = Set::new(field.min);
        saturday.insert(SATURDAY);
        return Ok(Days::OfWeek(saturday));
    }
    if let Some((day, nth)) = text.split_once('#') {
        let day = value(field, day)?;
        return match nth.parse::<u32>() {
            Ok(k @ 1..=5) if is_digits(nth) => Ok(Days::NthOfWeek(day, k)),
            _ => Err(format!(
                "{} {text:?}: the week after # must be 1-5",
                field.name
            )),
        };
    }
    if upper.ends_with('L') {
        // The day as written: the L is ASCII, one byte.
        return Ok(Days::LastOfWeek(value(field, &text[..text.len() - 1])?));
    }
    Ok(Days::OfWeek(parse_set(field, text)?))
}

/// A list of values, ranges and increments: `5`, `1-5`, `*`, `1/10`, `*/10`,
/// `10-40/10`, `20-2`, joined by commas.
fn parse_set(field: &Field, text: &str) -> Result<Set, String> {
    let mut set = Set::new(field.min);
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} {text:?} has an empty list item", field.name));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(field, step)?)),
            None => (item, None),
        };
        let (start, end) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(field, a)?, value(field, b)?)
        } else {
            let a = value(field, range)?;
            // `a/n` runs from a to the field's end.
            (a, if step.is_some() { field.max } else { a })
        };
        let span = field.max - field.min + 1;
        let end = match (start <= end, field.wraps) {
            (true, _) => end,
            (false, true) => end + span,
            (false, false) => {
                return Err(format!("{} range {range} runs backwards", field.name));
            }
        };
        for v in (start..=end).step_by(step.unwrap_or(1) as usize) {
            set.insert(field.min + (v - field.min) % span);
        }
    }
    Ok(set)
}

fn parse_step(field: &Field, step: &str) -> Result<u32, String> {
    match step.parse::<u32>() {
        Ok(n) if is_digits(step) && (1..=field.max_step).contains(&n) => Ok(n),
        _ => Err(format!(
            "{} step {step:?} must be a whole number from 1 to {}",
            field.name, field.max_step
        )),
    }
}

/// One value of the field: a number in its range, or one of its names.
fn value(field: &Field, text: &str) -> Result<u32, String> {
    if is_digits(text) {
        return match text.parse::<u32>() {
            Ok(v) if (field.min..=field.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{} {text} is out of range {}-{}",
                field.name, field.min, field.max
            )),
        };
    }
    if let Some(i) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(field.min + i as u32);
    }
    match (field.names.first(), field.names.last()) {
        (Some(first), Some(last)) => Err(format!(
            "{} {text:?} is neither {}-{} nor {first}-{last}",
            field.name, field.min, field.max
        )),
        _ => Err(format!("{} {text:?} is not a whole number", field.name)),
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A set of a field's values, stored from the field's minimum (Year needs 230).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Set {
    min: u32,
    bits: [u64; 4],
}

impl Set {
    fn new(min: u32) -> Set {
        Set { min, bits: [0; 4] }
    }

    fn insert(&mut self, v: u32) {
        let i = (v - self.min) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, v: u32) -> bool {
        self.next_from(v) == Some(v)
    }

    /// The smallest member at least `v`.
    fn next_from(&self, v: u32) -> Option<u32> {
        let mut i = v.saturating_sub(self.min) as usize;
        while i < 256 {
            let word = self.bits[i / 64] >> (i % 64);
            if word != 0 {
                return Some(self.min + i as u32 + word.trailing_zeros());
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// The members from `v` up, in order.
    fn members_from(&self, v: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(self.next_from(v), |&m| self.next_from(m + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn show(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%d %H:%M").to_string()
    }

    /// The next `n` fire times after `after`, as "YYYY-MM-DD HH:MM".
    fn fires(expr: &str, after: &str, n: usize) -> Vec<String> {
        let schedule = Schedule::parse(expr).unwrap_or_else(|e| panic!("{e}"));
        std::iter::successors(schedule.next_after(at(after)), |t| schedule.next_after(*t))
            .take(n)
            .map(show)
            .collect()
    }

    fn next(expr: &str, after: &str) -> Option<String> {
        fires(expr, after, 1).pop()
    }

    // 2024-03-15 is a Friday.
    const FRI: &str = "2024-03-15T10:30:00Z";

    #[test]
    fn the_aws_pages_examples_fire_when_their_meaning_says() {
        // Run at 10:00 am every day: today's is past.
        assert_eq!(
            fires("cron(0 10 * * ? *)", FRI, 2),
            ["2024-03-16 10:00", "2024-03-17 10:00"]
        );
        // Run at 12:15 pm every day.
        assert_eq!(
            next("cron(15 12 * * ? *)", FRI).unwrap(),
            "2024-03-15 12:15"
        );
        assert_eq!(next("cron(0 12 * * ? *)", FRI).unwrap(), "2024-03-15 12:00");
        assert_eq!(
            fires("cron(5,35 14 * * ? *)", FRI, 3),
            ["2024-03-15 14:05", "2024-03-15 14:35", "2024-03-16 14:05"]
        );
        // Run at 6:00 pm Monday through Friday: Friday's, then Monday's.
        assert_eq!(
            fires("cron(0 18 ? * MON-FRI *)", FRI, 2),
            ["2024-03-15 18:00", "2024-03-18 18:00"]
        );
        // Run at 8:00 am every 1st day of the month.
        assert_eq!(
            fires("cron(0 8 1 * ? *)", FRI, 2),
            ["2024-04-01 08:00", "2024-05-01 08:00"]
        );
        // Run every 15 minutes.
        assert_eq!(
            fires("cron(0/15 * * * ? *)", FRI, 3),
            ["2024-03-15 10:45", "2024-03-15 11:00", "2024-03-15 11:15"]
        );
        // Run every 10 minutes Monday through Friday: Friday night rolls to Monday.
        assert_eq!(
            fires("cron(0/10 * ? * MON-FRI *)", "2024-03-15T23:45:00Z", 3),
            ["2024-03-15 23:50", "2024-03-18 00:00", "2024-03-18 00:10"]
        );
        // Every 5 minutes Monday through Friday between 8:00 am and 5:55 pm.
        assert_eq!(
            fires("cron(0/5 8-17 ? * MON-FRI *)", "2024-03-15T17:49:59Z", 3),
            ["2024-03-15 17:50", "2024-03-15 17:55", "2024-03-18 08:00"]
        );
        // 9:00 am on the first Monday of each month (1 April 2024 is a Monday).
        assert_eq!(
            fires("cron(0 9 ? * 2#1 *)", FRI, 2),
            ["2024-04-01 09:00", "2024-05-06 09:00"]
        );
        // Every 30 minutes, Hours 20-2 wrapping past midnight, weekdays only
        // (the Saturday small hours are Saturday's).
        assert_eq!(
            fires("cron(0/30 20-2 ? * MON-FRI *)", "2024-03-15T22:45:00Z", 4),
            [
                "2024-03-15 23:00",
                "2024-03-15 23:30",
                "2024-03-18 00:00",
                "2024-03-18 00:30"
            ]
        );
        // 10:15 am on the last Friday of each month, 2019 to 2022 only.
        assert_eq!(
            next("cron(15 10 ? * 6L 2019-2022)", "2022-12-01T00:00:00Z").unwrap(),
            "2022-12-30 10:15"
        );
        assert_eq!(
            next("cron(15 10 ? * 6L 2019-2022)", "2022-12-30T10:15:00Z"),
            None
        );
    }

    #[test]
    fn next_is_strictly_after_and_on_a_whole_minute() {
        assert_eq!(
            next("cron(* * * * ? *)", "2024-03-15T10:00:00Z").unwrap(),
            "2024-03-15 10:01"
        );
        let t = Schedule::parse("cron(* * * * ? *)")
            .unwrap()
            .next_after(at("2024-03-15T10:00:30.5Z"))
            .unwrap();
        assert_eq!(t, at("2024-03-15T10:01:00Z"));
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", "2024-03-15T18:00:00Z").unwrap(),
            "2024-03-18 18:00"
        );
    }

    #[test]
    fn day_of_week_counts_from_sunday() {
        assert_eq!(next("cron(0 0 ? * 1 *)", FRI).unwrap(), "2024-03-17 00:00");
        assert_eq!(next("cron(0 0 ? * 7 *)", FRI).unwrap(), "2024-03-16 00:00");
        assert_eq!(next("cron(0 0 ? * 2 *)", FRI).unwrap(), "2024-03-18 00:00");
        // L alone is 7, SAT.
        assert_eq!(next("cron(0 0 ? * L *)", FRI).unwrap(), "2024-03-16 00:00");
        // A wrapping range: FRI-MON is Fri, Sat, Sun, Mon.
        assert_eq!(
            fires("cron(0 12 ? * FRI-MON *)", FRI, 5),
            [
                "2024-03-15 12:00",
                "2024-03-16 12:00",
                "2024-03-17 12:00",
                "2024-03-18 12:00",
                "2024-03-22 12:00"
            ]
        );
    }

    #[test]
    fn last_day_of_month_follows_month_lengths_and_leap_years() {
        assert_eq!(
            fires("cron(0 0 L * ? *)", "2024-01-31T00:00:00Z", 3),
            ["2024-02-29 00:00", "2024-03-31 00:00", "2024-04-30 00:00"]
        );
        assert_eq!(
            next("cron(0 0 L * ? *)", "2023-02-01T00:00:00Z").unwrap(),
            "2023-02-28 00:00"
        );
        // Day 31 only in the months that have one.
        assert_eq!(
            fires("cron(0 0 31 * ? *)", "2024-03-31T00:00:00Z", 2),
            ["2024-05-31 00:00", "2024-07-31 00:00"]
        );
        // The year's last minute rolls into the next year.
        assert_eq!(
            next("cron(30 23 * * ? *)", "2024-12-31T23:30:00Z").unwrap(),
            "2025-01-01 23:30"
        );
    }

    #[test]
    fn leap_day_waits_for_a_leap_year() {
        assert_eq!(
            next("cron(0 12 29 2 ? *)", "2024-03-01T00:00:00Z").unwrap(),
            "2028-02-29 12:00"
        );
        assert_eq!(
            next("cron(0 12 29 FEB ? *)", "2024-02-28T23:59:00Z").unwrap(),
            "2024-02-29 12:00"
        );
        // 2100 is not a leap year, 2104 is.
        assert_eq!(
            next("cron(0 12 29 2 ? *)", "2100-01-01T00:00:00Z").unwrap(),
            "2104-02-29 12:00"
        );
    }

    #[test]
    fn w_is_the_nearest_weekday_within_the_month() {
        // 15 June 2024 is a Saturday: Friday the 14th.
        assert_eq!(
            next("cron(0 9 15W * ? *)", "2024-06-01T00:00:00Z").unwrap(),
            "2024-06-14 09:00"
        );
        // 15 September 2024 is a Sunday: Monday the 16th.
        assert_eq!(
            next("cron(0 9 15W * ? *)", "2024-09-01T00:00:00Z").unwrap(),
            "2024-09-16 09:00"
        );
        // A weekday 15th is itself (15 March 2024, a Friday).
        assert_eq!(
            next("cron(0 9 15W * ? *)", "2024-03-01T00:00:00Z").unwrap(),
            "2024-03-15 09:00"
        );
        // 1 June 2024 is a Saturday: not back into May but on to Monday the 3rd.
        assert_eq!(
            next("cron(0 9 1W * ? *)", "2024-05-31T23:00:00Z").unwrap(),
            "2024-06-03 09:00"
        );
        // 31 March 2024 is a Sunday: back to Friday the 29th; April has no 31st.
        assert_eq!(
            fires("cron(0 9 31W * ? *)", "2024-03-01T00:00:00Z", 2),
            ["2024-03-29 09:00", "2024-05-31 09:00"]
        );
    }

    #[test]
    fn lw_is_the_last_weekday_of_the_month() {
        // March 2024 ends on a Sunday, August on a Saturday, May on a Friday.
        assert_eq!(
            next("cron(0 17 LW * ? *)", "2024-03-01T00:00:00Z").unwrap(),
            "2024-03-29 17:00"
        );
        assert_eq!(
            next("cron(0 17 LW * ? *)", "2024-08-01T00:00:00Z").unwrap(),
            "2024-08-30 17:00"
        );
        assert_eq!(
            next("cron(0 17 LW * ? *)", "2024-05-01T00:00:00Z").unwrap(),
            "2024-05-31 17:00"
        );
    }

    #[test]
    fn nl_is_the_last_such_weekday_of_the_month() {
        assert_eq!(
            next("cron(0 0 ? * 6L *)", "2024-03-01T00:00:00Z").unwrap(),
            "2024-03-29 00:00"
        );
        assert_eq!(
            next("cron(0 0 ? * FRIL *)", "2024-03-01T00:00:00Z").unwrap(),
            "2024-03-29 00:00"
        );
        // The last Sunday of March 2024 is its last day.
        assert_eq!(
            next("cron(0 0 ? * 1L *)", "2024-03-01T00:00:00Z").unwrap(),
            "2024-03-31 00:00"
        );
    }

    #[test]
    fn hash_is_the_nth_such_weekday_of_the_month() {
        // The page's example: 3#2, the second Tuesday (12 March 2024).
        assert_eq!(
            next("cron(0 0 ? * 3#2 *)", "2024-03-01T00:00:00Z").unwrap(),
            "2024-03-12 00:00"
        );
        assert_eq!(
            Schedule::parse("cron(0 0 ? * TUE#2 *)"),
            Schedule::parse("cron(0 0 ? * 3#2 *)")
        );
        // A fifth Monday: April 2024 has one, May and June do not, July does.
        assert_eq!(
            fires("cron(0 0 ? * 2#5 *)", "2024-04-01T00:00:00Z", 2),
            ["2024-04-29 00:00", "2024-07-29 00:00"]
        );
    }

    #[test]
    fn years_bound_the_schedule() {
        assert_eq!(
            next("cron(0 0 1 1 ? 2199)", "2198-06-01T00:00:00Z").unwrap(),
            "2199-01-01 00:00"
        );
        assert_eq!(next("cron(0 0 1 1 ? 2199)", "2199-01-01T00:00:00Z"), None);
        assert_eq!(next("cron(59 23 31 12 ? *)", "2199-12-31T23:59:00Z"), None);
        assert_eq!(next("cron(* * * * ? 2020)", "2021-01-01T00:00:00Z"), None);
        // Before the first year the field allows: its first minute.
        assert_eq!(
            next("cron(0 0 1 1 ? *)", "1969-06-01T00:00:00Z").unwrap(),
            "1970-01-01 00:00"
        );
        assert_eq!(
            next("cron(0 0 1 1 ? 2030/5)", "2024-01-01T00:00:00Z").unwrap(),
            "2030-01-01 00:00"
        );
        // Never: 30 FEB. The search ends at 2199 rather than running on.
        assert_eq!(next("cron(0 0 30 2 ? *)", "2024-01-01T00:00:00Z"), None);
        // A far search still lands: the first fifth Monday of 2199 (29 April).
        assert_eq!(
            next("cron(0 0 ? * 2#5 2199)", "1970-01-01T00:00:00Z").unwrap(),
            "2199-04-29 00:00"
        );
    }

    #[test]
    fn fields_read_lists_ranges_steps_and_names() {
        assert_eq!(
            fires("cron(1/10 0 * * ? *)", "2024-03-15T00:00:00Z", 6),
            [
                "2024-03-15 00:01",
                "2024-03-15 00:11",
                "2024-03-15 00:21",
                "2024-03-15 00:31",
                "2024-03-15 00:41",
                "2024-03-15 00:51"
            ]
        );
        assert_eq!(
            Schedule::parse("cron(*/20 * * * ? *)"),
            Schedule::parse("cron(0,20,40 * * * ? *)")
        );
        assert_eq!(
            Schedule::parse("cron(10-40/15 * * * ? *)"),
            Schedule::parse("cron(10,25,40 * * * ? *)")
        );
        assert_eq!(
            Schedule::parse("cron(0 22-2/2 * * ? *)"),
            Schedule::parse("cron(0 0,2,22 * * ? *)")
        );
        assert_eq!(
            Schedule::parse("cron(0 0 1 NOV-FEB ? *)"),
            Schedule::parse("cron(0 0 1 1,2,11,12 ? *)")
        );
        assert_eq!(
            Schedule::parse("cron(0 18 ? * mon-fri *)"),
            Schedule::parse("cron(0 18 ? * 2-6 *)")
        );
        // Names and letters in any case, as Quartz reads them.
        for (lower, upper) in [
            ("cron(0 17 lw * ? *)", "cron(0 17 LW * ? *)"),
            ("cron(0 17 15w * ? *)", "cron(0 17 15W * ? *)"),
            ("cron(0 17 ? * fril *)", "cron(0 17 ? * 6L *)"),
            ("cron(0 17 ? * mon#1 *)", "cron(0 17 ? * 2#1 *)"),
            ("cron(0 17 1 jan-Mar ? *)", "cron(0 17 1 1-3 ? *)"),
        ] {
            assert_eq!(Schedule::parse(lower), Schedule::parse(upper), "{lower}");
            assert!(Schedule::parse(upper).is_ok(), "{upper}");
        }
        assert_eq!(
            Schedule::parse(" cron(0  10 * *  ? *) "),
            Schedule::parse("cron(0 10 * * ? *)")
        );
    }

    #[test]
    fn rates_parse_as_before_and_add_their_period() {
        let rate = |e: &str| Schedule::parse(e);
        assert_eq!(
            rate("rate(1 minute)"),
            Ok(Schedule::Rate(Duration::from_secs(60)))
        );
        assert_eq!(
            rate("rate(5 minutes)"),
            Ok(Schedule::Rate(Duration::from_secs(300)))
        );
        assert_eq!(
            rate("rate(1 hour)"),
            Ok(Schedule::Rate(Duration::from_secs(3600)))
        );
        assert_eq!(
            rate("rate(2 hours)"),
            Ok(Schedule::Rate(Duration::from_secs(7200)))
        );
        assert_eq!(
            rate("rate(1 day)"),
            Ok(Schedule::Rate(Duration::from_secs(86_400)))
        );
        assert_eq!(
            rate("rate(3 days)"),
            Ok(Schedule::Rate(Duration::from_secs(259_200)))
        );
        let every_5 = rate("rate(5 minutes)").unwrap();
        assert_eq!(
            every_5.next_after(at("2024-03-15T10:00:30Z")),
            Some(at("2024-03-15T10:05:30Z"))
        );
    }

    #[test]
    fn bad_expressions_are_refused_naming_the_field() {
        assert_eq!(
            Schedule::parse("cron(0 25 * * ? *)"),
            Err(r#"schedule "cron(0 25 * * ? *)": Hours 25 is out of range 0-23"#.into())
        );
        let cases: &[(&str, &[&str])] = &[
            (
                "cron(0 10 * * MON *)",
                &["Day-of-month \"*\" and Day-of-week \"MON\"", "must be ?"],
            ),
            (
                "cron(0 10 1 * 2 *)",
                &["Day-of-month \"1\" and Day-of-week \"2\""],
            ),
            (
                "cron(0 10 ? * ? *)",
                &["Day-of-month and Day-of-week are both ?"],
            ),
            ("cron(60 * * * ? *)", &["Minutes 60 is out of range 0-59"]),
            (
                "cron(0 0 32 * ? *)",
                &["Day-of-month 32 is out of range 1-31"],
            ),
            (
                "cron(0 0 0 * ? *)",
                &["Day-of-month 0 is out of range 1-31"],
            ),
            ("cron(0 0 1 13 ? *)", &["Month 13 is out of range 1-12"]),
            ("cron(0 0 ? * 8 *)", &["Day-of-week 8 is out of range 1-7"]),
            ("cron(0 0 ? * 0 *)", &["Day-of-week 0 is out of range 1-7"]),
            (
                "cron(0 0 1 * ? 1969)",
                &["Year 1969 is out of range 1970-2199"],
            ),
            (
                "cron(0 0 1 * ? 2200)",
                &["Year 2200 is out of range 1970-2199"],
            ),
            (
                "cron(0 0 1 * ? 99999999999)",
                &["Year 99999999999 is out of range"],
            ),
            (
                "cron(0/0 * * * ? *)",
                &["Minutes step \"0\" must be a whole number from 1 to 59"],
            ),
            ("cron(0/60 * * * ? *)", &["Minutes step \"60\""]),
            (
                "cron(0 */x * * ? *)",
                &["Hours \"*/x\": x is not a wildcard"],
            ),
            (
                "cron(0 */24 * * ? *)",
                &["Hours step \"24\" must be a whole number from 1 to 23"],
            ),
            ("cron(0 9 ? * fun *)", &["Day-of-week \"fun\" is neither"]),
            (
                "cron(0 9 l-2 * ? *)",
                &["Day-of-month \"l-2\"", "stand alone"],
            ),
            ("cron(0 1/2/3 * * ? *)", &["Hours step \"2/3\""]),
            ("cron(0 10 * * ?)", &["6 fields", "not 5"]),
            ("cron(0 0 10 * * ? *)", &["6 fields", "not 7"]),
            ("cron()", &["6 fields", "not 0"]),
            (
                "cron(0 9 ? * 3#1,6#3 *)",
                &["Day-of-week \"3#1,6#3\"", "only one"],
            ),
            (
                "cron(0 9 ? * MON,6L *)",
                &["Day-of-week \"MON,6L\"", "only one"],
            ),
            ("cron(0 9 ? * 2#6 *)", &["Day-of-week \"2#6\"", "1-5"]),
            ("cron(0 9 ? * 2#0 *)", &["Day-of-week \"2#0\"", "1-5"]),
            (
                "cron(0 9 ? * 9#1 *)",
                &["Day-of-week 9 is out of range 1-7"],
            ),
            (
                "cron(0 9 ? * 1/2 *)",
                &["Day-of-week \"1/2\"", "/ is not a wildcard"],
            ),
            (
                "cron(0 9 ? * FUN *)",
                &["Day-of-week \"FUN\" is neither 1-7 nor SUN-SAT"],
            ),
            (
                "cron(0 9 * FOO ? *)",
                &["Month \"FOO\" is neither 1-12 nor JAN-DEC"],
            ),
            (
                "cron(0 9 L-2 * ? *)",
                &["Day-of-month \"L-2\"", "stand alone"],
            ),
            (
                "cron(0 9 1,L * ? *)",
                &["Day-of-month \"1,L\"", "stand alone"],
            ),
            (
                "cron(0 9 1-5W * ? *)",
                &["Day-of-month \"1-5W\"", "single day"],
            ),
            (
                "cron(0 9 32W * ? *)",
                &["Day-of-month 32 is out of range 1-31"],
            ),
            (
                "cron(0 9 1,,2 * ? *)",
                &["Day-of-month \"1,,2\" has an empty list item"],
            ),
            (
                "cron(0 9 ?,1 * MON *)",
                &["Day-of-month \"?,1\"", "? stands alone"],
            ),
            (
                "cron(? 9 * * ? *)",
                &["Minutes \"?\"", "? is not a wildcard"],
            ),
            ("cron(0 L * * ? *)", &["Hours \"L\"", "L is not a wildcard"]),
            (
                "cron(0 9 * 1#2 ? *)",
                &["Month \"1#2\"", "# is not a wildcard"],
            ),
            (
                "cron(0 9 1W * MON *)",
                &["Day-of-month \"1W\" and Day-of-week \"MON\""],
            ),
            ("cron(0 -5 * * ? *)", &["Hours \"\" is not a whole number"]),
            (
                "cron(0 9 * * ? 2022-2020)",
                &["Year range 2022-2020 runs backwards"],
            ),
            (
                "cron(0 10 * * ? *",
                &["must read rate(value unit) or cron(fields)"],
            ),
            (
                "rate(1 minutes)",
                &["unit \"minutes\"", "singular for 1 only"],
            ),
            ("rate(5 minute)", &["unit \"minute\""]),
            ("rate(5 seconds)", &["unit \"seconds\""]),
            ("rate(0 minutes)", &["\"0\" is not a positive whole number"]),
            (
                "rate(-5 minutes)",
                &["\"-5\" is not a positive whole number"],
            ),
            (
                "rate(+5 minutes)",
                &["\"+5\" is not a positive whole number"],
            ),
            (
                "rate(1.5 hours)",
                &["\"1.5\" is not a positive whole number"],
            ),
            ("rate(5minutes)", &["must read rate(<number> <unit>)"]),
            ("rate(99999999999999999 days)", &["is too long"]),
            (
                "every 5 minutes",
                &["must read rate(value unit) or cron(fields)"],
            ),
            (
                "at(2024-03-15T10:00:00)",
                &["must read rate(value unit) or cron(fields)"],
            ),
            ("", &["must read rate(value unit) or cron(fields)"]),
        ];
        for (expr, wanted) in cases {
            let error = match Schedule::parse(expr) {
                Ok(s) => panic!("{expr:?} was accepted as {s:?}"),
                Err(e) => e,
            };
            assert!(
                error.starts_with(&format!("schedule {expr:?}")),
                "{expr:?}: {error}"
            );
            for part in *wanted {
                assert!(error.contains(part), "{expr:?}: {error:?} lacks {part:?}");
            }
        }
    }

    /// The skipping search agrees with matching every minute of ten weeks
    /// that cross month ends and a leap day.
    #[test]
    fn the_search_agrees_with_a_minute_by_minute_scan() {
        let from = at("2024-01-20T00:00:00Z");
        let until = at("2024-03-31T00:00:00Z");
        for expr in [
            "cron(* * * * ? *)",
            "cron(0/7 */5 * * ? *)",
            "cron(59 23 L * ? *)",
            "cron(0 0 29 2 ? *)",
            "cron(30 6 ? * MON-FRI *)",
            "cron(15 10 ? * 6L *)",
            "cron(0 9 ? * 2#1 *)",
            "cron(5,50 22-1 LW * ? *)",
            "cron(0 12 1W * ? *)",
            "cron(45 13 ? FEB,MAR SAT,SUN 2024)",
            "cron(0 0 ? * 5#5 *)",
        ] {
            let schedule = Schedule::parse(expr).unwrap();
            let Schedule::Cron(cron) = &schedule else {
                unreachable!()
            };
            let mut scanned = Vec::new();
            let mut t = from + TimeDelta::minutes(1);
            while t < until {
                let (y, mo, d) = (t.year() as u32, t.month(), t.day());
                if cron.years.contains(y)
                    && cron.months.contains(mo)
                    && cron.days.matches(y, mo, d, days_in_month(y, mo))
                    && cron.hours.contains(t.hour())
                    && cron.minutes.contains(t.minute())
                {
                    scanned.push(t);
                }
                t += TimeDelta::minutes(1);
            }
            let searched: Vec<_> =
                std::iter::successors(schedule.next_after(from), |t| schedule.next_after(*t))
                    .take_while(|t| *t < until)
                    .collect();
            assert_eq!(searched, scanned, "{expr}");
        }
    }
}
