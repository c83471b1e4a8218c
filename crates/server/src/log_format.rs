//! The text log line without colours, written as `tracing-subscriber`'s default (`Full`)
//! format writes it, byte for byte, for less work: every request writes one such line (the
//! access log), so its cost is paid on every refresh.
//!
//! The stock format writes each part of a line through `write!` and a style wrapper that
//! writes nothing when colours are off, formats the timestamp from its date every time, and
//! writes every field through `Debug`. Here the parts are written as strings, the timestamp's
//! date and time of day are formatted once a second (per thread), integers, booleans and
//! strings of printable ASCII are written without `Debug`, and other values with it but
//! without the style wrappers. Errors, strings that need escaping and a message given as
//! format arguments (whose control characters the stock visitor escapes) go to the stock
//! visitor, as does any line of an event forwarded from the `log` crate. The tests compare
//! both formats line by line.
//!
//! With colours (stderr a terminal) and in JSON, the stock formats are used.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The field names the stock visitor treats specially: the message is written without its
/// name, `r#` is dropped from raw identifiers, and `log.` fields (the metadata of an event
/// forwarded from the `log` crate) are not written.
const MESSAGE: &str = "message";
const RAW_PREFIX: &str = "r#";
const LOG_PREFIX: &str = "log.";

/// A line as `Format<Full>` without colours writes it.
#[derive(Debug, Default)]
pub(crate) struct PlainLine {
    stock: Format<Full>,
}

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.fields().field("log.target").is_some() {
            // From the `log` crate: the stock format takes its level and target from its
            // fields.
            return self.stock.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer)?;
        writer.write_str(level_text(*meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The level as the stock format pads it, and the space after it.
fn level_text(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

/// The first second the stock format would not write in four digits (10000-01-01).
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// Now in RFC 3339 with microseconds and the space after it, as the stock `SystemTime` timer
/// writes it (`2026-12-06T17:29:07.123456Z `). A clock before 1970 or past year 9999 is left to
/// that timer.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .filter(|since| since.as_secs() < YEAR_10000);
    let prefix = since_epoch.and_then(|since| second_prefix(since.as_secs()));
    let (Some(since_epoch), Some(prefix)) = (since_epoch, prefix) else {
        tracing_subscriber::fmt::time::SystemTime.format_time(writer)?;
        return writer.write_char(' ');
    };
    let mut micros = [b'0'; 6];
    let mut rest = since_epoch.subsec_micros();
    for digit in micros.iter_mut().rev() {
        // `rest % 10` is below 10.
        *digit = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
    }
    // Both are ASCII digits and punctuation.
    writer.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    writer.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)?;
    writer.write_str("Z ")
}

/// `YYYY-MM-DDTHH:MM:SS.` of `second` (since 1970), from this thread's cache when it is the
/// second last asked for; `None` if the date does not have that shape.
fn second_prefix(second: u64) -> Option<[u8; 20]> {
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != second {
            let mut formatted = String::with_capacity(27);
            write!(
                formatted,
                "{}",
                humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_secs(second))
            )
            .ok()?;
            // `….000000Z`: the second's part is the first 20 bytes.
            *prefix = formatted.as_bytes().get(..20)?.try_into().ok()?;
            *cached = second;
        }
        Some(*prefix)
    })
}

/// The fields of an event or a span as the stock `DefaultFields` writes them.
#[derive(Debug, Default)]
pub(crate) struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes the fields it knows the stock output of, and hands the others to the stock visitor.
struct FieldVisitor<'writer> {
    writer: Writer<'writer>,
    /// Nothing written yet: the next field is not preceded by a space.
    empty: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    /// Writes `field` as the stock visitor does: nothing for a `log.` field, else a space after
    /// the fields before it, the name and `=` (but for the message), then what `value` writes.
    fn write_field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with(LOG_PREFIX) {
            return;
        }
        self.result = self.pad().and_then(|()| {
            if name != MESSAGE {
                self.writer
                    .write_str(name.strip_prefix(RAW_PREFIX).unwrap_or(name))?;
                self.writer.write_char('=')?;
            }
            value(&mut self.writer)
        });
    }

    fn pad(&mut self) -> fmt::Result {
        if self.empty {
            self.empty = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    /// Hands one field to the stock visitor.
    fn stock(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() || field.name().starts_with(LOG_PREFIX) {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.empty = false;
    }
}

/// Whether `value` is written unchanged both as a message and between the quotes of `Debug`:
/// printable ASCII, without a quote or a backslash.
fn plain_text(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
}

impl Visit for FieldVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write_field(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write_field(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write_field(field, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !plain_text(value) {
            self.stock(field, |visitor| visitor.record_str(field, value));
            return;
        }
        // The stock visitor writes a message as it is and any other string as `Debug`.
        let quoted = field.name() != MESSAGE;
        self.write_field(field, |writer| {
            if quoted {
                writer.write_char('"')?;
                writer.write_str(value)?;
                writer.write_char('"')
            } else {
                writer.write_str(value)
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.stock(field, |visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == MESSAGE {
            // The stock visitor escapes control characters in the message.
            self.stock(field, |visitor| visitor.record_debug(field, value));
        } else {
            self.write_field(field, |writer| write!(writer, "{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing::Level;

    use super::*;

    /// A writer into a shared buffer.
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Failure;

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the disk is full \u{1b}[31m")
        }
    }

    impl std::error::Error for Failure {}

    /// Every kind of field and span the server's lines carry, and some they might.
    fn emit() {
        let request = tracing::info_span!(
            "request",
            request_id = %"0b6f1c0e8a3d4c4f9e3a2b1c0d9e8f7a",
            method = %"POST",
            path = %"/v1/token/refresh"
        );
        let _request = request.enter();
        tracing::info!(
            method = %"POST",
            route = "/v1/token/refresh",
            status = 200_u16,
            error = Option::<&str>::None,
            latency_us = 1234_u64,
            "answered"
        );
        tracing::info!(
            method = %"GET",
            route = "/v1/sessions/{id}",
            status = 404_u16,
            error = Some("not_found"),
            latency_us = 0_u64,
            "answered"
        );
        let inner = tracing::debug_span!("rotate");
        inner.in_scope(|| {
            tracing::warn!(
                attempts = 3_u32,
                delta = -5_i64,
                retried = true,
                "gave up after {} tries",
                3
            );
            tracing::error!(
                error = &Failure as &(dyn std::error::Error + 'static),
                "write failed"
            );
            tracing::trace!(
                r#type = "session.refreshed",
                ratio = 0.25_f64,
                big = 1_u128 << 100
            );
        });
        let empty = tracing::info_span!("quiet");
        empty.in_scope(|| {
            tracing::info!(message = "a message given as a field");
            tracing::info!(message = "a \"quoted\" message\twith a tab \u{1b}[0m");
            tracing::info!(
                quoted = "say \"hi\"",
                backslash = "a\\b",
                escape = "\u{1b}[31mred",
                accented = "café",
                newline = "two\nlines",
                blank = "",
                "strings"
            );
        });
        let later = tracing::info_span!("later", first = 1_u64, second = tracing::field::Empty);
        later.record("second", "recorded later");
        later.in_scope(|| tracing::info!("inside a span recorded after it began"));
        drop(_request);
        tracing::info!(at = "outside any span", "done");
    }

    /// The lines `emit` writes, with the stock format or this one, each without its timestamp
    /// (checked to have the stock shape).
    fn lines(plain: bool) -> Vec<String> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)));
        if plain {
            let subscriber = builder
                .fmt_fields(PlainFields)
                .event_format(PlainLine::default())
                .finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let (time, rest) = line.split_at(28);
                assert!(
                    time.len() == 28
                        && time.as_bytes()[4] == b'-'
                        && time.as_bytes()[10] == b'T'
                        && time.as_bytes()[19] == b'.'
                        && time.ends_with("Z "),
                    "not a timestamp: {line:?}"
                );
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn lines_are_the_stock_formats_byte_for_byte() {
        let stock = lines(false);
        let plain = lines(true);
        assert_eq!(stock.len(), 10, "{stock:#?}");
        for (stock, plain) in stock.iter().zip(&plain) {
            assert_eq!(plain, stock);
        }
        assert_eq!(plain.len(), stock.len());
        assert!(
            stock[0].starts_with(
                " INFO request{request_id=0b6f1c0e8a3d4c4f9e3a2b1c0d9e8f7a method=POST \
                 path=/v1/token/refresh}: "
            ),
            "{}",
            stock[0]
        );
    }

    /// The timestamp of a line, written through a subscriber's writer.
    fn timestamp(plain: bool) -> String {
        let mut text = String::new();
        let mut writer = Writer::new(&mut text);
        if plain {
            write_timestamp(&mut writer).unwrap();
        } else {
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut writer)
                .unwrap();
            text.push(' ');
        }
        text
    }

    #[test]
    fn a_second_s_prefix_is_its_date_and_time_of_day_cached_or_not() {
        let text = |second| second_prefix(second).map(|prefix| prefix.to_vec());
        for _ in 0..2 {
            assert_eq!(text(0).unwrap(), b"1970-01-01T00:00:00.");
            assert_eq!(text(0).unwrap(), b"1970-01-01T00:00:00.");
            assert_eq!(text(1_765_065_600).unwrap(), b"2025-12-07T00:00:00.");
            assert_eq!(text(YEAR_10000 - 1).unwrap(), b"9999-12-31T23:59:59.");
        }
    }

    #[test]
    fn timestamps_are_the_stock_timers() {
        // All within one second (retried when the stock timer's two readings straddle one):
        // the first of this format's two readings formats the second, the next comes from
        // the cache.
        let (stock, plain, cached) = (0..100)
            .map(|_| {
                let before = timestamp(false);
                let (plain, cached) = (timestamp(true), timestamp(true));
                (before, plain, cached, timestamp(false))
            })
            .find(|(before, _, _, after)| before[..19] == after[..19])
            .map(|(before, plain, cached, _)| (before, plain, cached))
            .unwrap();
        for plain in [&plain, &cached] {
            assert_eq!(plain.len(), stock.len());
            assert_eq!(plain[..20], stock[..20]);
            assert!(plain[20..26].bytes().all(|byte| byte.is_ascii_digit()));
            assert_eq!(&plain[26..], "Z ");
        }
    }
}
