//! Local time in an IANA time zone, from the system's TZif files (RFC 8536).
//!
//! A report's month starts at local midnight on the 1st in the clinic's time zone, and
//! every time it shows is local. This reads the compiled zone files the OS ships
//! (`/usr/share/zoneinfo`, or `$TZDIR`): the transitions they list, then, past the last
//! one, the POSIX TZ rule in the file's footer (`CET-1CEST,M3.5.0,M10.5.0/3`). All three
//! date forms of that rule (`Mm.w.d`, `Jn`, `n`) are implemented, and so are the RFC 8536
//! extensions (transition times from -167 to 167 hours). Not supported, with an error: a
//! footer naming a daylight-saving zone without a rule (no real file has one; POSIX leaves
//! the dates to the implementation), and files with leap-second records (the `right/`
//! zones).
//!
//! Civil dates use Howard Hinnant's `days_from_civil` / `civil_from_days` (proleptic
//! Gregorian, any year).

use std::path::{Path, PathBuf};

/// Where the system's zone files are when `$TZDIR` is not set.
const DEFAULT_TZDIR: &str = "/usr/share/zoneinfo";

/// A zone name longer than this is refused before touching the file system.
const MAX_NAME_LEN: usize = 255;

/// A zone file larger than this is refused (the largest real one is under 4 KiB).
const MAX_TZIF_LEN: u64 = 1 << 20;

/// Why a time zone or a month could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TzError {
    /// The name is not a well-formed IANA zone name (and is not looked up at all).
    #[error("invalid time zone name {name:?}: {reason}; use an IANA name such as Europe/Berlin")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No zone of that name in the zone directory.
    #[error(
        "unknown time zone {name:?}: use an IANA name such as Europe/Berlin (see {})",
        dir.display()
    )]
    Unknown {
        /// The name asked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
    },

    /// The zone file exists but could not be read.
    #[error("could not read time zone {name:?} from {}: {source}", path.display())]
    Io {
        /// The zone's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The zone's data is not valid TZif, or uses what this reader does not support.
    #[error(
        "time zone data for {name:?} is not usable: {reason}; reinstall the system's time \
         zone data (the tzdata package) or choose another zone"
    )]
    Malformed {
        /// The zone's name.
        name: String,
        /// What is wrong, and where.
        reason: String,
    },

    /// A month is not `YYYY-MM`.
    #[error(
        "invalid month {month:?}: expected YYYY-MM with a month from 01 to 12, such as 2026-11"
    )]
    InvalidMonth {
        /// The rejected text.
        month: String,
    },
}

/// A local time type: offset from UTC, daylight saving or not, abbreviation.
#[derive(Clone, Debug, PartialEq)]
struct LocalType {
    /// Seconds east of UTC.
    utoff: i32,
    is_dst: bool,
    abbr: String,
}

/// A time zone: its transitions, and the rule that continues them.
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    /// UTC seconds at which `types[type_of[i]]` starts, strictly ascending.
    transitions: Vec<i64>,
    type_of: Vec<u8>,
    /// Never empty.
    types: Vec<LocalType>,
    /// The footer's rule, for instants at or after the last transition.
    rule: Option<PosixTz>,
    /// Its text (`CET-1CEST,M3.5.0,M10.5.0/3`).
    rule_text: Option<String>,
}

impl Zone {
    /// UTC itself: offset zero, abbreviation `UTC`, no file needed.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".to_owned(),
            transitions: Vec::new(),
            type_of: Vec::new(),
            types: vec![LocalType {
                utoff: 0,
                is_dst: false,
                abbr: "UTC".to_owned(),
            }],
            rule: None,
            rule_text: None,
        }
    }

    /// The zone called `name` (`Europe/Berlin`), read from `$TZDIR` or
    /// `/usr/share/zoneinfo`; `UTC` needs no file.
    ///
    /// The name is checked before any file is opened: `/`-separated components of
    /// `[A-Za-z0-9_+-]`, not starting with `/`, so it can only name a file inside the zone
    /// directory.
    pub fn load(name: &str) -> Result<Zone, TzError> {
        if name == "UTC" {
            return Ok(Zone::utc());
        }
        check_name(name)?;
        let dir = match std::env::var_os("TZDIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(DEFAULT_TZDIR),
        };
        Zone::load_in(dir, name)
    }

    /// [`Zone::load`] from `dir`, with `name` already checked.
    fn load_in(dir: PathBuf, name: &str) -> Result<Zone, TzError> {
        let path = dir.join(name);
        let bytes = read_limited(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::NotADirectory => TzError::Unknown {
                name: name.to_owned(),
                dir,
            },
            _ => TzError::Io {
                name: name.to_owned(),
                path: path.clone(),
                source,
            },
        })?;
        Zone::from_tzif(name, &bytes)
    }

    /// A zone from the bytes of a TZif file (versions 1 to 4; the 64-bit data of version
    /// 2 and later is used when present). `name` is only used in errors and by
    /// [`Zone::name`].
    pub fn from_tzif(name: &str, bytes: &[u8]) -> Result<Zone, TzError> {
        parse_tzif(name, bytes).map_err(|reason| TzError::Malformed {
            name: name.to_owned(),
            reason,
        })
    }

    /// The zone's name, as given to [`Zone::load`] or [`Zone::from_tzif`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The POSIX TZ rule the zone follows from its last transition on
    /// (`CET-1CEST,M3.5.0,M10.5.0/3`; `UTC0` for UTC), if it has one: with
    /// [`Zone::from_rule`], the same local times of today's rules on any machine, whatever
    /// its time zone files.
    pub fn rule(&self) -> Option<String> {
        if self.transitions.is_empty() && self.rule.is_none() && self.name == "UTC" {
            return Some("UTC0".to_owned());
        }
        self.rule_text.clone()
    }

    /// A zone called `name` that follows the POSIX TZ rule `rule` at every instant (no
    /// historical transitions): what a bundle carries, so that its report reads the same
    /// everywhere.
    pub fn from_rule(name: &str, rule: &str) -> Result<Zone, TzError> {
        let parsed = PosixTz::parse(rule).map_err(|reason| TzError::Malformed {
            name: name.to_owned(),
            reason: format!("rule {rule:?}: {reason}"),
        })?;
        Ok(Zone {
            name: name.to_owned(),
            transitions: Vec::new(),
            type_of: Vec::new(),
            types: vec![parsed.std.clone()],
            rule: Some(parsed),
            rule_text: Some(rule.to_owned()),
        })
    }

    /// The offset from UTC (seconds east) and the abbreviation (`CET`, `EDT`, `+03`) in
    /// force at `utc_ms` (milliseconds since the Unix epoch).
    pub fn offset_at(&self, utc_ms: i64) -> (i32, String) {
        let t = utc_ms.div_euclid(1000);
        let ty = self.type_at(t);
        (ty.utoff, ty.abbr.clone())
    }

    /// `utc_ms` as local time: `2026-11-03 14:05 CET`.
    pub fn local(&self, utc_ms: i64) -> String {
        let t = utc_ms.div_euclid(1000);
        let ty = self.type_at(t);
        let local = t + i64::from(ty.utoff);
        let (y, m, d) = civil_from_days(local.div_euclid(86_400));
        let sod = local.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02} {}",
            sod / 3600,
            sod % 3600 / 60,
            ty.abbr
        )
    }

    /// The local date of `utc_ms`: `2026-11-03`.
    pub fn local_date(&self, utc_ms: i64) -> String {
        let t = utc_ms.div_euclid(1000);
        let local = t + i64::from(self.type_at(t).utoff);
        let (y, m, d) = civil_from_days(local.div_euclid(86_400));
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// The UTC milliseconds of the local midnight that starts `month` (`YYYY-MM`) and of
    /// the one that starts the next month: the month is `start <= t < end`.
    ///
    /// Where a zone skips midnight (a few change their clocks at 00:00), the day starts
    /// at the first instant after the gap; where midnight happens twice, at the first.
    pub fn month_bounds(&self, month: &str) -> Result<(i64, i64), TzError> {
        let (y, m) = parse_month(month)?;
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let start = self.local_midnight(days_from_civil(y, m, 1));
        let end = self.local_midnight(days_from_civil(ny, nm, 1));
        Ok((start * 1000, end * 1000))
    }

    /// The UTC second at which local day `day` (days since 1970-01-01) begins.
    fn local_midnight(&self, day: i64) -> i64 {
        let local = day * 86_400;
        // Every offset in force within a day of it is a candidate; the earliest UTC
        // instant whose local time is exactly midnight wins.
        let mut best: Option<i64> = None;
        for probe in [local - 2 * 86_400, local, local + 2 * 86_400] {
            let t = local - i64::from(self.type_at(probe).utoff);
            if t + i64::from(self.type_at(t).utoff) == local {
                best = Some(best.map_or(t, |b: i64| b.min(t)));
            }
        }
        if let Some(t) = best {
            return t;
        }
        // Midnight falls in a gap: the first instant whose local time is past it.
        let (mut lo, mut hi) = (local - 2 * 86_400, local + 2 * 86_400);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if mid + i64::from(self.type_at(mid).utoff) >= local {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    fn type_at(&self, t: i64) -> &LocalType {
        match self.transitions.last() {
            None => match &self.rule {
                Some(rule) => rule.type_at(t),
                None => &self.types[0],
            },
            Some(&last) if t >= last => match &self.rule {
                Some(rule) => rule.type_at(t),
                None => &self.types[usize::from(self.type_of[self.type_of.len() - 1])],
            },
            Some(_) => {
                // RFC 8536: before the first transition, the first local time type.
                let i = self.transitions.partition_point(|&x| x <= t);
                if i == 0 {
                    &self.types[0]
                } else {
                    &self.types[usize::from(self.type_of[i - 1])]
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as runwarden writes them
/// (`2026-11-21T23:17:41.123Z`, the fraction optional); `None` for anything else.
pub fn parse_utc_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = text.get(19..)?;
    let ms = match rest {
        "Z" => 0,
        _ => {
            let frac = rest.strip_prefix('.')?.strip_suffix('Z')?;
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            frac[..frac.len().min(3)].parse::<i64>().ok()?
                * 10_i64.pow(3 - frac.len().min(3) as u32)
        }
    };
    let mo = u32::try_from(mo).ok()?;
    if !(1..=12).contains(&mo)
        || d < 1
        || d > i64::from(days_in_month(y, mo))
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(y, mo, d as u32);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms)
}

/// The number of days in `month` (1 to 12) of `year` (proleptic Gregorian); 0 for a
/// month out of range.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// `YYYY-MM` as (year, month).
pub(crate) fn parse_month(month: &str) -> Result<(i64, u32), TzError> {
    let bad = || TzError::InvalidMonth {
        month: month.to_owned(),
    };
    let b = month.as_bytes();
    if b.len() != 7 || b[4] != b'-' || !b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let y: i64 = month[..4].parse().map_err(|_| bad())?;
    let m: u32 = month[5..].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) {
        return Err(bad());
    }
    Ok((y, m))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn check_name(name: &str) -> Result<(), TzError> {
    let refuse = |reason| {
        Err(TzError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("it is too long");
    }
    if name.starts_with('/') {
        return refuse("it must not start with '/'");
    }
    if name.split('/').any(|c| c == "..") {
        return refuse("it must not contain '..'");
    }
    if name.split('/').any(str::is_empty) {
        return refuse("it has an empty component");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+-/".contains(&b))
    {
        return refuse("only letters, digits, '_', '+', '-' and '/' are allowed");
    }
    Ok(())
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::ErrorKind::IsADirectory.into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_TZIF_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TZIF_LEN {
        return Err(std::io::Error::other(
            "file is larger than 1 MiB; not a zone file",
        ));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------
// TZif

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(format!(
                "file ends inside the {what} (at byte {})",
                self.pos
            )),
        }
    }
}

struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

impl Header {
    fn read(c: &mut Cursor<'_>) -> Result<Header, String> {
        let h = c.take(44, "header")?;
        if &h[..4] != b"TZif" {
            return Err("it does not start with \"TZif\"".to_owned());
        }
        let n = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
        Ok(Header {
            version: h[4],
            isutcnt: n(20),
            isstdcnt: n(24),
            leapcnt: n(28),
            timecnt: n(32),
            typecnt: n(36),
            charcnt: n(40),
        })
    }

    /// Bytes of the data block that follows, with `time_size`-byte times.
    fn block_len(&self, time_size: usize) -> Option<usize> {
        let parts = [
            self.timecnt.checked_mul(time_size)?,
            self.timecnt,
            self.typecnt.checked_mul(6)?,
            self.charcnt,
            self.leapcnt.checked_mul(time_size + 4)?,
            self.isstdcnt,
            self.isutcnt,
        ];
        parts.iter().try_fold(0usize, |a, &p| a.checked_add(p))
    }
}

fn parse_tzif(name: &str, bytes: &[u8]) -> Result<Zone, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let h1 = Header::read(&mut c)?;
    let v1_len = h1.block_len(4).ok_or("counts overflow")?;
    let v1 = c.take(v1_len, "version 1 data")?;
    if h1.version == 0 {
        let zone = parse_block(name, &h1, v1, 4)?;
        if c.pos != bytes.len() {
            return Err(format!(
                "{} unexpected bytes after the data",
                bytes.len() - c.pos
            ));
        }
        return Ok(zone);
    }
    if h1.version < b'2' {
        return Err(format!("unknown version byte 0x{:02x}", h1.version));
    }
    let h2 = Header::read(&mut c)?;
    if h2.version < b'2' {
        return Err("the second header is not version 2 or later".to_owned());
    }
    let v2_len = h2.block_len(8).ok_or("counts overflow")?;
    let v2 = c.take(v2_len, "64-bit data")?;
    let mut zone = parse_block(name, &h2, v2, 8)?;

    // The footer: "\n" POSIX-TZ-string "\n", possibly empty, and nothing after it.
    let rest = &bytes[c.pos..];
    if rest.first() != Some(&b'\n') {
        return Err("the footer (the rule for later times) is missing".to_owned());
    }
    let close = rest[1..]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("the footer is not terminated by a newline")?;
    let footer = &rest[1..1 + close];
    if 2 + close != rest.len() {
        return Err(format!(
            "{} unexpected bytes after the footer",
            rest.len() - 2 - close
        ));
    }
    if !footer.is_empty() {
        let text = std::str::from_utf8(footer)
            .ok()
            .filter(|s| s.is_ascii())
            .ok_or("the footer is not ASCII")?;
        zone.rule = Some(PosixTz::parse(text).map_err(|e| format!("footer rule {text:?}: {e}"))?);
        zone.rule_text = Some(text.to_owned());
    }
    Ok(zone)
}

fn parse_block(name: &str, h: &Header, data: &[u8], time_size: usize) -> Result<Zone, String> {
    if h.typecnt == 0 {
        return Err("no local time types".to_owned());
    }
    if h.typecnt > 256 {
        return Err(format!("{} local time types (at most 256)", h.typecnt));
    }
    if h.charcnt == 0 {
        return Err("no abbreviations".to_owned());
    }
    if h.isutcnt != 0 && h.isutcnt != h.typecnt || h.isstdcnt != 0 && h.isstdcnt != h.typecnt {
        return Err("UT/standard indicator counts do not match the type count".to_owned());
    }
    if h.leapcnt != 0 {
        return Err(
            "it has leap-second records (a \"right/\" zone): use the zone without \"right/\""
                .to_owned(),
        );
    }
    let mut c = Cursor {
        bytes: data,
        pos: 0,
    };
    let times = c.take(h.timecnt * time_size, "transition times")?;
    let transitions: Vec<i64> = times
        .chunks_exact(time_size)
        .map(|b| match b {
            [a, b, c, d] => i64::from(i32::from_be_bytes([*a, *b, *c, *d])),
            _ => i64::from_be_bytes(b.try_into().expect("8-byte chunk")),
        })
        .collect();
    if transitions.windows(2).any(|w| w[0] >= w[1]) {
        return Err("transition times are not in ascending order".to_owned());
    }
    let type_of = c.take(h.timecnt, "transition types")?.to_vec();
    if let Some(&bad) = type_of.iter().find(|&&i| usize::from(i) >= h.typecnt) {
        return Err(format!(
            "a transition names local time type {bad} of {}",
            h.typecnt
        ));
    }
    let ttinfos = c.take(h.typecnt * 6, "local time types")?;
    let chars = c.take(h.charcnt, "abbreviations")?;
    let mut types = Vec::with_capacity(h.typecnt);
    for t in ttinfos.chunks_exact(6) {
        let utoff = i32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        if !(-89_999..=93_599).contains(&utoff) {
            return Err(format!("UTC offset {utoff} s is out of range"));
        }
        let is_dst = match t[4] {
            0 => false,
            1 => true,
            other => return Err(format!("daylight-saving flag {other} is not 0 or 1")),
        };
        let start = usize::from(t[5]);
        let abbr = chars
            .get(start..)
            .and_then(|s| s.iter().position(|&b| b == 0).map(|end| &s[..end]))
            .ok_or("an abbreviation is out of range or not NUL-terminated")?;
        if !abbr.iter().all(|b| b.is_ascii_graphic()) {
            return Err("an abbreviation is not printable ASCII".to_owned());
        }
        let abbr = String::from_utf8_lossy(abbr).into_owned();
        types.push(LocalType {
            utoff,
            is_dst,
            abbr,
        });
    }
    // Leap-second records are refused above; the UT/standard indicators only matter to
    // POSIX TZ strings without rules, which this reader does not accept.
    c.take(h.isstdcnt + h.isutcnt, "indicators")?;
    Ok(Zone {
        name: name.to_owned(),
        transitions,
        type_of,
        types,
        rule: None,
        rule_text: None,
    })
}

// ---------------------------------------------------------------------------------------
// POSIX TZ strings (the TZif footer)

#[derive(Clone, Debug)]
struct PosixTz {
    std: LocalType,
    dst: Option<(LocalType, Rule, Rule)>,
}

/// When a change happens: a date and a local time (seconds, may be negative or past 24 h).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rule {
    date: RuleDate,
    time: i64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RuleDate {
    /// `Jn`: day 1 to 365, February 29 never counted.
    Julian1(u32),
    /// `n`: day 0 to 365, February 29 counted.
    Julian0(u32),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    MonthWeekDay(u32, u32, u32),
}

impl PosixTz {
    fn parse(s: &str) -> Result<PosixTz, String> {
        let mut p = TzParser {
            s: s.as_bytes(),
            i: 0,
        };
        let std_abbr = p.name()?;
        // POSIX offsets are hours west of UTC; at most 24 h, so they fit an i32.
        let std_off = -p.offset(24)? as i32;
        let std = LocalType {
            utoff: std_off,
            is_dst: false,
            abbr: std_abbr,
        };
        if p.done() {
            return Ok(PosixTz { std, dst: None });
        }
        let dst_abbr = p.name()?;
        let dst_off = if p.peek() == Some(b',') || p.done() {
            std_off + 3600
        } else {
            -p.offset(24)? as i32
        };
        if p.done() {
            return Err("a daylight-saving time without a rule for when it applies".to_owned());
        }
        p.expect(b',')?;
        let start = p.rule()?;
        p.expect(b',')?;
        let end = p.rule()?;
        if !p.done() {
            return Err(format!("unexpected text at position {}", p.i));
        }
        let dst = LocalType {
            utoff: dst_off,
            is_dst: true,
            abbr: dst_abbr,
        };
        Ok(PosixTz {
            std,
            dst: Some((dst, start, end)),
        })
    }

    fn type_at(&self, t: i64) -> &LocalType {
        let Some((dst, start, end)) = &self.dst else {
            return &self.std;
        };
        let (year, _, _) = civil_from_days((t + i64::from(self.std.utoff)).div_euclid(86_400));
        let on = start.utc(year, self.std.utoff);
        let off = end.utc(year, dst.utoff);
        let in_dst = if on < off {
            on <= t && t < off
        } else {
            // Southern hemisphere: daylight saving spans the new year.
            !(off <= t && t < on)
        };
        if in_dst { dst } else { &self.std }
    }
}

impl Rule {
    /// The UTC second of this rule in `year`, with `utoff` the offset in force before it.
    fn utc(&self, year: i64, utoff: i32) -> i64 {
        let day = match self.date {
            RuleDate::Julian1(n) => {
                let n = i64::from(n) - 1;
                days_from_civil(year, 1, 1) + n + i64::from(is_leap(year) && n >= 59)
            }
            RuleDate::Julian0(n) => days_from_civil(year, 1, 1) + i64::from(n),
            RuleDate::MonthWeekDay(m, w, d) => {
                let first = days_from_civil(year, m, 1);
                // 1970-01-01 was a Thursday (4).
                let wd_first = (first + 4).rem_euclid(7);
                let mut mday = 1 + (i64::from(d) - wd_first).rem_euclid(7) + 7 * (i64::from(w) - 1);
                let dim = i64::from(days_in_month(year, m));
                while mday > dim {
                    mday -= 7;
                }
                first + mday - 1
            }
        };
        day * 86_400 + self.time - i64::from(utoff)
    }
}

struct TzParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl TzParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i == self.s.len()
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at position {}", b as char, self.i))
        }
    }

    /// `std`/`dst` names: three or more letters, or `<...>` of letters, digits, `+`, `-`.
    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        let name = if self.peek() == Some(b'<') {
            self.i += 1;
            let from = self.i;
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
            {
                self.i += 1;
            }
            let name = &self.s[from..self.i];
            self.expect(b'>')?;
            name
        } else {
            while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                self.i += 1;
            }
            &self.s[start..self.i]
        };
        if name.len() < 3 {
            return Err(format!(
                "a zone abbreviation at position {start} is shorter than 3"
            ));
        }
        Ok(String::from_utf8_lossy(name).into_owned())
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, hours at most `max_h`.
    fn offset(&mut self, max_h: i64) -> Result<i64, String> {
        let sign = match self.peek() {
            Some(b'-') => {
                self.i += 1;
                -1
            }
            Some(b'+') => {
                self.i += 1;
                1
            }
            _ => 1,
        };
        let h = self.number(3)?;
        if h > max_h {
            return Err(format!("{h} hours is out of range (at most {max_h})"));
        }
        let mut secs = h * 3600;
        for unit in [60, 1] {
            if self.peek() != Some(b':') {
                break;
            }
            self.i += 1;
            let v = self.number(2)?;
            if v > 59 {
                return Err(format!("{v} is not a valid minute or second"));
            }
            secs += v * unit;
        }
        Ok(sign * secs)
    }

    fn number(&mut self, max_digits: usize) -> Result<i64, String> {
        let from = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) && self.i - from < max_digits {
            self.i += 1;
        }
        if self.i == from {
            return Err(format!("expected a number at position {from}"));
        }
        Ok(self.s[from..self.i]
            .iter()
            .fold(0, |a, &d| a * 10 + i64::from(d - b'0')))
    }

    fn rule(&mut self) -> Result<Rule, String> {
        let date = match self.peek() {
            Some(b'J') => {
                self.i += 1;
                let n = self.number(3)?;
                if !(1..=365).contains(&n) {
                    return Err(format!("J{n} is not a day from 1 to 365"));
                }
                RuleDate::Julian1(n as u32)
            }
            Some(b'M') => {
                self.i += 1;
                let m = self.number(2)?;
                self.expect(b'.')?;
                let w = self.number(1)?;
                self.expect(b'.')?;
                let d = self.number(1)?;
                if !(1..=12).contains(&m) || !(1..=5).contains(&w) || d > 6 {
                    return Err(format!("M{m}.{w}.{d} is not a valid month, week and day"));
                }
                RuleDate::MonthWeekDay(m as u32, w as u32, d as u32)
            }
            _ => {
                let n = self.number(3)?;
                if n > 365 {
                    return Err(format!("day {n} is not from 0 to 365"));
                }
                RuleDate::Julian0(n as u32)
            }
        };
        let time = if self.peek() == Some(b'/') {
            self.i += 1;
            // RFC 8536 extends POSIX's 0..24 hours to -167..167.
            self.offset(167)?
        } else {
            7200
        };
        Ok(Rule { date, time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UTC milliseconds of a civil time.
    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000
    }

    fn zone(name: &str) -> Zone {
        Zone::load(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn zoneinfo_is_installed() {
        assert!(
            Path::new(DEFAULT_TZDIR).join("Europe/Berlin").is_file(),
            "these tests read the system's zone files: install the tzdata package"
        );
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in (-1_000_000..1_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2026, 11), 30);
        assert_eq!(days_in_month(2026, 13), 0);
    }

    #[test]
    fn berlin_spring_forward() {
        let z = zone("Europe/Berlin");
        let t = utc(2026, 3, 29, 1, 0, 0);
        assert_eq!(z.offset_at(t), (7200, "CEST".to_owned()));
        assert_eq!(z.local(t), "2026-03-29 03:00 CEST");
        assert_eq!(z.local(t - 1000), "2026-03-29 01:59 CET");
    }

    #[test]
    fn berlin_fall_back() {
        let z = zone("Europe/Berlin");
        assert_eq!(
            z.local(utc(2026, 10, 25, 0, 59, 59)),
            "2026-10-25 02:59 CEST"
        );
        assert_eq!(z.local(utc(2026, 10, 25, 1, 0, 0)), "2026-10-25 02:00 CET");
        assert_eq!(z.offset_at(utc(2026, 10, 25, 1, 0, 0)).0, 3600);
        assert_eq!(z.local_date(utc(2026, 10, 24, 22, 0, 0)), "2026-10-25");
        assert_eq!(z.local_date(utc(2026, 10, 24, 21, 59, 59)), "2026-10-24");
    }

    #[test]
    fn new_york_month_bounds() {
        let z = zone("America/New_York");
        // November starts in EDT (-4) and December in EST (-5).
        let (start, end) = z.month_bounds("2026-11").unwrap();
        assert_eq!(start, utc(2026, 11, 1, 4, 0, 0));
        assert_eq!(end, utc(2026, 12, 1, 5, 0, 0));
        assert_eq!(z.local(start), "2026-11-01 00:00 EDT");
        assert_eq!(z.local(end), "2026-12-01 00:00 EST");
        assert_eq!(z.local(end - 1), "2026-11-30 23:59 EST");
        let (s, e) = z.month_bounds("2026-12").unwrap();
        assert_eq!(
            (s, e),
            (utc(2026, 12, 1, 5, 0, 0), utc(2027, 1, 1, 5, 0, 0))
        );
    }

    #[test]
    fn month_bounds_where_midnight_is_skipped() {
        // America/Havana moved its clocks from 00:00 to 01:00 on 2012-04-01: the day, and
        // the month, started at 01:00 local (05:00 UTC).
        let z = zone("America/Havana");
        let (start, _) = z.month_bounds("2012-04").unwrap();
        assert_eq!(start, utc(2012, 4, 1, 5, 0, 0));
        assert_eq!(z.local(start), "2012-04-01 01:00 CDT");
    }

    #[test]
    fn months_are_checked() {
        let z = Zone::utc();
        assert_eq!(
            z.month_bounds("2026-02").unwrap(),
            (utc(2026, 2, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0))
        );
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "",
            "２０２６-11",
        ] {
            let err = z.month_bounds(bad).unwrap_err();
            assert!(matches!(err, TzError::InvalidMonth { .. }), "{bad}");
            assert!(err.to_string().contains("expected YYYY-MM"), "{err}");
        }
    }

    #[test]
    fn far_future_follows_the_footer_rule() {
        // The file's transitions end in 2037 at the latest; 2090 comes from
        // "CET-1CEST,M3.5.0,M10.5.0/3". Expected values from zdump -v -c 2090,2091.
        let z = zone("Europe/Berlin");
        assert_eq!(z.local(utc(2090, 3, 26, 0, 59, 59)), "2090-03-26 01:59 CET");
        assert_eq!(z.local(utc(2090, 3, 26, 1, 0, 0)), "2090-03-26 03:00 CEST");
        assert_eq!(
            z.local(utc(2090, 10, 29, 0, 59, 59)),
            "2090-10-29 02:59 CEST"
        );
        assert_eq!(z.local(utc(2090, 10, 29, 1, 0, 0)), "2090-10-29 02:00 CET");
        let ny = zone("America/New_York");
        // zdump: Sun Mar 12 2090 07:00 UT = 03:00 EDT; Sun Nov 5 2090 06:00 UT = 01:00 EST.
        assert_eq!(ny.local(utc(2090, 3, 12, 7, 0, 0)), "2090-03-12 03:00 EDT");
        assert_eq!(
            ny.local(utc(2090, 3, 12, 6, 59, 59)),
            "2090-03-12 01:59 EST"
        );
        assert_eq!(ny.local(utc(2090, 11, 5, 6, 0, 0)), "2090-11-05 01:00 EST");
        assert_eq!(
            ny.local(utc(2090, 11, 5, 5, 59, 59)),
            "2090-11-05 01:59 EDT"
        );
        // Southern hemisphere: daylight saving across the new year.
        let syd = zone("Australia/Sydney");
        assert_eq!(
            syd.offset_at(utc(2090, 1, 15, 0, 0, 0)),
            (11 * 3600, "AEDT".to_owned())
        );
        assert_eq!(
            syd.offset_at(utc(2090, 7, 15, 0, 0, 0)),
            (10 * 3600, "AEST".to_owned())
        );
    }

    #[test]
    fn utc_needs_no_file() {
        let z = Zone::load("UTC").unwrap();
        assert_eq!(z.name(), "UTC");
        assert_eq!(
            z.offset_at(utc(2026, 7, 1, 12, 0, 0)),
            (0, "UTC".to_owned())
        );
        assert_eq!(z.local(utc(2026, 11, 3, 14, 5, 59)), "2026-11-03 14:05 UTC");
        assert_eq!(z.local(-1), "1969-12-31 23:59 UTC");
        assert_eq!(
            z.month_bounds("2026-11").unwrap(),
            (utc(2026, 11, 1, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0))
        );
    }

    #[test]
    fn bad_names_are_refused_before_any_file_is_read() {
        for bad in [
            "../etc/passwd",
            "Europe/../../x",
            "",
            "Europe/Berlin\0",
            "/etc/passwd",
            "Europe//Berlin",
            "Europe/Berlin/",
            "a b",
            "Europe/.hidden",
            "Europe\\Berlin",
        ] {
            let err = Zone::load(bad).unwrap_err();
            assert!(matches!(err, TzError::InvalidName { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("use an IANA name"), "{err}");
        }
        let long = "A".repeat(300);
        assert!(matches!(
            Zone::load(&long),
            Err(TzError::InvalidName { .. })
        ));
    }

    #[test]
    fn unknown_zone_says_what_to_use() {
        let err = Zone::load("Europe/Berln").unwrap_err();
        assert!(matches!(err, TzError::Unknown { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "unknown time zone \"Europe/Berln\": use an IANA name such as Europe/Berlin (see "
            ),
            "{msg}"
        );
        // A directory of zones is not a zone.
        assert!(matches!(Zone::load("Europe"), Err(TzError::Unknown { .. })));
    }

    #[test]
    fn load_in_reads_the_given_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Test")).unwrap();
        let berlin = std::fs::read(Path::new(DEFAULT_TZDIR).join("Europe/Berlin")).unwrap();
        std::fs::write(dir.path().join("Test/Zone"), &berlin).unwrap();
        std::fs::write(dir.path().join("Test/Junk"), b"not a zone").unwrap();
        let load = |name: &str| Zone::load_in(dir.path().to_owned(), name);
        let z = load("Test/Zone").unwrap();
        assert_eq!(z.name(), "Test/Zone");
        assert_eq!(z.local(utc(2026, 3, 29, 1, 0, 0)), "2026-03-29 03:00 CEST");
        let err = load("Test/Junk").unwrap_err();
        assert!(matches!(err, TzError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("\"Test/Junk\""), "{err}");
        assert!(err.to_string().contains("tzdata"), "{err}");
        let err = load("Europe/Berlin").unwrap_err();
        assert!(matches!(err, TzError::Unknown { .. }), "{err}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    /// `TZDIR` is read by `load`; setting it in this (threaded) process would race the
    /// other tests, so a child process runs [`tzdir_child`] with it set.
    #[test]
    fn tzdir_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Test")).unwrap();
        let berlin = std::fs::read(Path::new(DEFAULT_TZDIR).join("Europe/Berlin")).unwrap();
        std::fs::write(dir.path().join("Test/Zone"), &berlin).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tz::tests::tzdir_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env("TZDIR", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by tzdir_is_honoured in a child process with TZDIR set"]
    fn tzdir_child() {
        let dir = std::env::var("TZDIR").expect("TZDIR is set by tzdir_is_honoured");
        let z = Zone::load("Test/Zone").unwrap();
        assert_eq!(z.local(utc(2026, 3, 29, 1, 0, 0)), "2026-03-29 03:00 CEST");
        let err = Zone::load("Europe/Berlin").unwrap_err();
        assert!(err.to_string().contains(&format!("(see {dir})")), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for name in ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"] {
            let bytes = std::fs::read(Path::new(DEFAULT_TZDIR).join(name)).unwrap();
            assert!(Zone::from_tzif(name, &bytes).is_ok());
            for len in 0..bytes.len() {
                let err = Zone::from_tzif(name, &bytes[..len]).unwrap_err();
                assert!(
                    matches!(err, TzError::Malformed { .. }),
                    "{name} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn version_1_files_are_read() {
        // The 32-bit block of a file that has one, alone, is a version 1 file: no footer,
        // so the last transition's type holds after it.
        let bytes = std::fs::read(Path::new(DEFAULT_TZDIR).join("America/New_York")).unwrap();
        let h = Header::read(&mut Cursor {
            bytes: &bytes,
            pos: 0,
        })
        .unwrap();
        assert!(
            h.timecnt > 0,
            "this test needs a file with 32-bit data (a 'fat' tzdata)"
        );
        let mut v1 = bytes[..44 + h.block_len(4).unwrap()].to_vec();
        v1[4] = 0;
        let z = Zone::from_tzif("v1", &v1).unwrap();
        assert!(z.rule.is_none());
        assert_eq!(z.local(utc(2026, 11, 1, 6, 0, 0)), "2026-11-01 01:00 EST");
        assert_eq!(z.local(utc(2026, 7, 1, 12, 0, 0)), "2026-07-01 08:00 EDT");
        // Version 1 data ends in 2037: later it is the last type forever.
        assert_eq!(
            z.offset_at(utc(2090, 7, 1, 12, 0, 0)),
            (-5 * 3600, "EST".to_owned())
        );
        // A version 1 file with a byte too many is refused.
        v1.push(0);
        assert!(Zone::from_tzif("v1", &v1).is_err());
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        for name in [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
        ] {
            let z = zone(name);
            for ms in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let _ = (z.offset_at(ms), z.local(ms), z.local_date(ms));
            }
            assert!(z.month_bounds("0000-01").is_ok() && z.month_bounds("9999-12").is_ok());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let real = std::fs::read("/usr/share/zoneinfo/Europe/Berlin").unwrap();
        // A small deterministic generator: no dependency, same bytes every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut bytes = real.clone();
            for _ in 0..1 + next() % 8 {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] = next() as u8;
            }
            let _ = Zone::from_tzif("fuzz", &bytes).map(|z| {
                z.local(utc(2026, 1, 1, 0, 0, 0));
                z.local(utc(2090, 7, 1, 0, 0, 0));
                z.month_bounds("2026-11").unwrap();
            });
        }
        for junk in [
            &b""[..],
            b"TZif",
            b"TZif2\0\0\0",
            &[0xff; 100],
            b"TZif0000000000000000000000000000000000000000000000",
        ] {
            assert!(Zone::from_tzif("junk", junk).is_err());
        }
        // Counts that would overflow a size computation.
        let mut huge = real[..44].to_vec();
        huge[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Zone::from_tzif("huge", &huge).is_err());
    }

    #[test]
    fn a_zone_from_its_rule_reads_todays_times_like_the_file() {
        let berlin = zone("Europe/Berlin");
        let rule = berlin.rule().expect("Berlin's file has a footer");
        assert_eq!(rule, "CET-1CEST,M3.5.0,M10.5.0/3");
        let carried = Zone::from_rule("Europe/Berlin", &rule).unwrap();
        for t in [
            utc(2026, 3, 29, 1, 0, 0),
            utc(2026, 10, 25, 0, 59, 59),
            utc(2026, 10, 25, 1, 0, 0),
            utc(2026, 7, 1, 12, 0, 0),
        ] {
            assert_eq!(carried.local(t), berlin.local(t));
        }
        assert_eq!(Zone::utc().rule().as_deref(), Some("UTC0"));
        assert_eq!(
            Zone::from_rule("UTC", "UTC0").unwrap().local(0),
            "1970-01-01 00:00 UTC"
        );
        assert!(Zone::from_rule("X", "not a rule,,").is_err());
    }

    #[test]
    fn utc_times_parse_as_runwarden_writes_them() {
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_ms("2026-11-21T23:17:41.123Z"),
            Some(utc(2026, 11, 21, 23, 17, 41) + 123)
        );
        assert_eq!(
            parse_utc_ms("2026-11-21T23:17:41.5Z"),
            Some(utc(2026, 11, 21, 23, 17, 41) + 500)
        );
        for bad in [
            "",
            "2026-11-21",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-21T23:17:41+01:00",
            "2026-11-21T23:17:41.Z",
            "2026-11-21 23:17:41Z",
            "２026-11-21T23:17:41Z",
        ] {
            assert_eq!(parse_utc_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn footer_rules() {
        let p = |s: &str| PosixTz::parse(s);
        let berlin = p("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(berlin.std.utoff, 3600);
        assert_eq!(berlin.type_at(utc(2031, 7, 1, 0, 0, 0) / 1000).abbr, "CEST");
        // Fixed offsets with angle-bracket names.
        let fixed = p("<+0330>-3:30").unwrap();
        assert_eq!(fixed.type_at(0).utoff, 3 * 3600 + 1800);
        assert_eq!(fixed.type_at(0).abbr, "+0330");
        // Negative and beyond-24h transition times (RFC 8536).
        let nuuk = p("<-02>2<-01>,M3.5.0/-1,M10.5.0/0").unwrap();
        // 2031-03-30 is the last Sunday of March: -1 h is Saturday 23:00 local (-2), that
        // is Sunday 01:00 UTC (zdump agrees).
        assert_eq!(
            nuuk.type_at(utc(2031, 3, 30, 0, 59, 59) / 1000).utoff,
            -7200
        );
        assert_eq!(nuuk.type_at(utc(2031, 3, 30, 1, 0, 0) / 1000).utoff, -3600);
        let jerusalem = p("IST-2IDT,M3.4.4/26,M10.5.0").unwrap();
        // The Friday before the last Sunday of March 2031: Thursday 27th + 26 h = Fri 28th
        // 02:00 local = 00:00 UTC.
        assert_eq!(
            jerusalem.type_at(utc(2031, 3, 28, 0, 0, 0) / 1000).abbr,
            "IDT"
        );
        assert_eq!(
            jerusalem.type_at(utc(2031, 3, 27, 23, 59, 59) / 1000).abbr,
            "IST"
        );
        // Julian forms: J60 is March 1 in every year; 59 (zero-based) is Feb 29 or Mar 1.
        let j = p("AAA0BBB,J60/0,J300/0").unwrap();
        assert_eq!(j.type_at(utc(2028, 2, 29, 23, 59, 59) / 1000).abbr, "AAA");
        assert_eq!(j.type_at(utc(2028, 3, 1, 0, 0, 0) / 1000).abbr, "BBB");
        let n = p("AAA0BBB,59/0,300/0").unwrap();
        assert_eq!(n.type_at(utc(2028, 2, 29, 0, 0, 0) / 1000).abbr, "BBB");
        assert_eq!(n.type_at(utc(2027, 3, 1, 0, 0, 0) / 1000).abbr, "BBB");
        assert_eq!(n.type_at(utc(2027, 2, 28, 23, 0, 0) / 1000).abbr, "AAA");
        // All-year daylight saving.
        let all = p("EST5EDT,0/0,J365/25").unwrap();
        for (mo, d) in [(1, 1), (6, 1), (12, 31)] {
            assert_eq!(all.type_at(utc(2031, mo, d, 12, 0, 0) / 1000).abbr, "EDT");
        }
        for bad in [
            "",
            "CE",
            "CET",
            "CET-1CEST",
            "CET-1CEST,M13.1.0,M10.5.0",
            "CET-1CEST,M3.5.0",
            "CET-25",
            "CET-1CEST,M3.5.0,M10.5.0/200",
            "<+03",
            "CET-1 ",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    /// Every zone on this machine loads, and agrees with its own transitions and rule at
    /// a few instants: a broad check that no real file is refused.
    #[test]
    fn every_system_zone_loads() {
        let mut count = 0;
        let mut stack = vec![PathBuf::from(DEFAULT_TZDIR)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(DEFAULT_TZDIR)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                if path.is_dir() {
                    if rel != "right" {
                        stack.push(path);
                    }
                    continue;
                }
                if check_name(&rel).is_err() || !std::fs::read(&path).unwrap().starts_with(b"TZif")
                {
                    continue;
                }
                let z = Zone::load(&rel).unwrap_or_else(|e| panic!("{e}"));
                for ms in [
                    utc(1900, 1, 1, 0, 0, 0),
                    utc(2026, 11, 1, 0, 0, 0),
                    utc(2090, 7, 1, 0, 0, 0),
                ] {
                    let (off, abbr) = z.offset_at(ms);
                    assert!(off.abs() < 86_400 && !abbr.is_empty(), "{rel}");
                }
                let (s, e) = z.month_bounds("2026-11").unwrap();
                assert!(
                    z.local(s).starts_with("2026-11-01 0"),
                    "{rel}: {}",
                    z.local(s)
                );
                assert!(z.local(e - 1000).starts_with("2026-11-30 2"), "{rel}");
                count += 1;
            }
        }
        assert!(count > 300, "only {count} zones found");
    }
}
