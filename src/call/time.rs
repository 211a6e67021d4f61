//! Timestamps, clocks, and the `[%Y-%m-%d %H:%M:%S]` note prefix.
//!
//! Stored timestamps are plain integers (unix nanoseconds); chrono is used only
//! here, to turn seconds into calendar fields and to render RFC 3339.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Local, Offset, SecondsFormat, TimeZone, Timelike, Utc};

/// A point in time: nanoseconds since the unix epoch, UTC.
///
/// Serialises as an RFC 3339 string with nanoseconds
/// (`2026-11-25T09:30:00.123456789Z`) and parses any RFC 3339 string back.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::Timestamp;
///
/// let t = Timestamp::from_unix_nanos(1_764_063_000_000_000_000);
/// assert_eq!(t.to_string(), "2025-11-25T09:30:00.000000000Z");
/// assert_eq!("2025-11-25T09:30:00Z".parse::<Timestamp>(), Ok(t));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `nanos` nanoseconds after the unix epoch.
    #[must_use]
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the unix epoch.
    #[must_use]
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// The current time from the system clock.
    #[must_use]
    pub fn now() -> Self {
        // i64 nanoseconds reach the year 2262; saturate rather than wrap.
        Self(Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }

    /// RFC 3339 with nanoseconds, UTC (`Z`).
    #[must_use]
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Why a string is not an RFC 3339 timestamp in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTimestampError {
    input: String,
}

impl fmt::Display for ParseTimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an RFC 3339 timestamp between 1677 and 2262",
            self.input
        )
    }
}

impl std::error::Error for ParseTimestampError {}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(Self)
            .ok_or_else(|| ParseTimestampError {
                input: s.to_owned(),
            })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a [`CallState`](super::CallState) gets the time of each note and
/// event. Injectable so tests can fix it.
///
/// Implemented for [`SystemClock`] and for any `Fn() -> Timestamp`.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, Timestamp};
///
/// let call = CallState::builder("call-1")
///     .clock(|| Timestamp::from_unix_nanos(0))
///     .build();
/// call.append_note("hello").expect("live call");
/// assert_eq!(call.all_notes(), "[1970-01-01 00:00:00] hello");
/// # }
/// ```
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock ([`Timestamp::now`]).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{Clock, SystemClock, Timestamp};
///
/// let before = Timestamp::now();
/// assert!(SystemClock.now() >= before);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

impl<F: Fn() -> Timestamp + Send + Sync> Clock for F {
    fn now(&self) -> Timestamp {
        self()
    }
}

/// Which clock face notes are rendered in.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, TimeZoneChoice};
///
/// let call = CallState::builder("c").time_zone(TimeZoneChoice::Local).build();
/// call.append_note("rendered in the host's local time").expect("live call");
/// assert!(call.all_notes().starts_with('['));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeZoneChoice {
    /// UTC (the default).
    #[default]
    Utc,
    /// The host's local time zone.
    Local,
}

/// Renders `[%Y-%m-%d %H:%M:%S] ` prefixes, caching the last second.
///
/// Notes of one call arrive in bursts within the same second, so most
/// prefixes are a 22-byte copy; a new second costs one calendar conversion and
/// direct digit formatting, never a strftime parse.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    zone: TimeZoneChoice,
    second: Option<i64>,
    prefix: [u8; PREFIX_LEN],
}

/// `[YYYY-mm-dd HH:MM:SS] ` for years 0..=9999.
pub(crate) const PREFIX_LEN: usize = 22;

impl PrefixCache {
    pub(crate) fn new(zone: TimeZoneChoice) -> Self {
        Self {
            zone,
            second: None,
            prefix: [0; PREFIX_LEN],
        }
    }

    /// The prefix for `at`.
    pub(crate) fn prefix(&mut self, at: Timestamp) -> &[u8; PREFIX_LEN] {
        let second = at.unix_nanos().div_euclid(1_000_000_000);
        if self.second != Some(second) {
            self.second = Some(second);
            self.render(second);
        }
        &self.prefix
    }

    /// Appends the prefix for `at` to `out`.
    pub(crate) fn push(&mut self, at: Timestamp, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix(at));
    }

    fn render(&mut self, second: i64) {
        let utc = DateTime::from_timestamp(second, 0).unwrap_or_default();
        let (y, mo, d, h, mi, s) = match self.zone {
            TimeZoneChoice::Utc => fields(&utc),
            TimeZoneChoice::Local => {
                let offset = Local.offset_from_utc_datetime(&utc.naive_utc()).fix();
                fields(&utc.with_timezone(&offset))
            }
        };
        let p = &mut self.prefix;
        p[0] = b'[';
        digits(&mut p[1..5], y.clamp(0, 9999) as u32);
        p[5] = b'-';
        digits(&mut p[6..8], mo);
        p[8] = b'-';
        digits(&mut p[9..11], d);
        p[11] = b' ';
        digits(&mut p[12..14], h);
        p[14] = b':';
        digits(&mut p[15..17], mi);
        p[17] = b':';
        digits(&mut p[18..20], s);
        p[20] = b']';
        p[21] = b' ';
    }
}

fn fields<Tz: TimeZone>(t: &DateTime<Tz>) -> (i32, u32, u32, u32, u32, u32) {
    (
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

/// Writes `n` as zero-padded decimal filling `out`.
fn digits(out: &mut [u8], mut n: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The prefix must be exactly what strftime gives, at any second.
    #[test]
    fn prefix_matches_strftime() {
        let mut cache = PrefixCache::new(TimeZoneChoice::Utc);
        let mut seconds = vec![
            0i64,
            59,
            86_399,
            951_782_400,
            1_764_063_000,
            9_223_372_035, // 2262-04-11, near the end of i64 nanoseconds
        ];
        seconds.extend((0..2000).map(|i| 1_600_000_000 + i * 3_799_993));
        for s in seconds {
            for nanos in [0, 999_999_999] {
                let at = Timestamp::from_unix_nanos(s * 1_000_000_000 + nanos);
                let mut out = Vec::new();
                cache.push(at, &mut out);
                let want = DateTime::from_timestamp(s, 0)
                    .expect("in range")
                    .format("[%Y-%m-%d %H:%M:%S] ")
                    .to_string();
                assert_eq!(String::from_utf8(out).expect("ascii"), want, "second {s}");
            }
        }
    }

    #[test]
    fn local_prefix_matches_strftime() {
        let mut cache = PrefixCache::new(TimeZoneChoice::Local);
        for s in [0i64, 1_764_063_000, 1_700_000_000] {
            let mut out = Vec::new();
            cache.push(Timestamp::from_unix_nanos(s * 1_000_000_000), &mut out);
            let want = Local
                .timestamp_opt(s, 0)
                .single()
                .expect("unambiguous")
                .format("[%Y-%m-%d %H:%M:%S] ")
                .to_string();
            assert_eq!(String::from_utf8(out).expect("ascii"), want);
        }
    }

    #[test]
    fn negative_times_round_down_to_the_second() {
        let mut cache = PrefixCache::new(TimeZoneChoice::Utc);
        let mut out = Vec::new();
        cache.push(Timestamp::from_unix_nanos(-1), &mut out);
        assert_eq!(out, b"[1969-12-31 23:59:59] ");
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        for nanos in [0, 1, -1, 1_764_063_000_123_456_789, i64::MAX, i64::MIN] {
            let t = Timestamp::from_unix_nanos(nanos);
            assert_eq!(t.to_rfc3339().parse::<Timestamp>(), Ok(t));
        }
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(err.to_string().contains("yesterday"));
    }
}
