//! Where `sessiond serve` writes its log lines: stderr, through a buffer.
//!
//! Every request writes an access-log line (`http::observability`) at `INFO`, the default
//! level. Written one `write(2)` each, those lines cost a system call per request on the
//! runtime's threads, and on a file or a pipe more than formatting them does. So lines at
//! `INFO` and below are gathered in a buffer that a thread of its own (`log-writer`) writes
//! out [`FLUSH_INTERVAL`] after the first of them went in: one `write` for all the lines of
//! that interval. A `WARN` or `ERROR` line is written at once, together with everything
//! gathered before it, so lines keep their order and warnings are never held back.
//!
//! The buffer is bounded: a line that takes it to [`CAPACITY`] is written at once with the
//! rest, by the thread that logged it. A reader of stderr that stalls therefore stalls the
//! threads that log, as it did when every line was written at once, rather than memory
//! growing; no line is dropped. What the buffer holds when the process is killed
//! (`kill -9`) is lost: at most [`FLUSH_INTERVAL`] of `INFO` lines. An exit through `main`,
//! a failure and a panic write it out first ([`flush`]).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long an `INFO` line may wait in the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(25);

/// The most the buffer holds before the thread that logs writes it out itself.
const CAPACITY: usize = 64 * 1024;

/// The buffer of the process's log lines, once [`BufferedLines::stderr`] has made it.
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Writes out what the log buffer holds, if there is one; for a process about to exit.
pub fn flush() {
    if let Some(shared) = INSTALLED.get() {
        shared.flush();
    }
}

/// A `MakeWriter` for the fmt subscriber: `INFO` lines and below go into the buffer, `WARN`
/// and `ERROR` lines go out at once (see the module documentation).
pub(crate) struct BufferedLines {
    shared: Arc<Shared>,
}

impl BufferedLines {
    /// Lines to stderr, written out by the `log-writer` thread, which this starts, and by
    /// [`flush`]. Without that thread (it could not be started) every line is written at once.
    /// One buffer per process: a second call answers the first one's.
    pub(crate) fn stderr() -> Self {
        let shared = INSTALLED.get_or_init(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // A panic while the buffer is locked leaves it as it is rather than deadlock.
                if let Some(shared) = INSTALLED.get() {
                    shared.try_flush();
                }
                previous(info);
            }));
            Self::to(Box::new(io::stderr()), true).shared
        });
        Self {
            shared: Arc::clone(shared),
        }
    }

    /// Lines to `out`; with `writer_thread`, a thread writes them out after each interval.
    fn to(out: Box<dyn Write + Send>, writer_thread: bool) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lines: Vec::new(),
                out,
                held: writer_thread,
            }),
            gathered: Condvar::new(),
        });
        if writer_thread {
            let background = Arc::clone(&shared);
            let started = std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || background.write_out_after_each_interval());
            if started.is_err() {
                shared.lock().held = false;
            }
        }
        Self { shared }
    }
}

impl<'a> MakeWriter<'a> for BufferedLines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
            urgent: is_urgent(meta.level()),
        }
    }
}

/// Whether a line at `level` goes out at once: `WARN` and `ERROR` (tracing orders the more
/// verbose levels above the less).
fn is_urgent(level: &Level) -> bool {
    *level <= Level::WARN
}

/// One log line's way into the buffer.
pub(crate) struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.shared.append(bytes, self.urgent)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a line goes into an empty buffer.
    gathered: Condvar,
}

struct State {
    lines: Vec<u8>,
    out: Box<dyn Write + Send>,
    /// Whether `INFO` lines wait for the `log-writer` thread.
    held: bool,
}

impl State {
    /// Writes the buffer out and empties it, even when the write fails (nothing is retried:
    /// the buffer stays bounded).
    fn write_out(&mut self) -> io::Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let written = self
            .out
            .write_all(&self.lines)
            .and_then(|()| self.out.flush());
        self.lines.clear();
        written
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a buffer and a writer: a thread that panicked holding it left nothing
        // half-done that matters more than the lines.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, bytes: &[u8], urgent: bool) -> io::Result<()> {
        let mut state = self.lock();
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(bytes);
        if urgent || !state.held || state.lines.len() >= CAPACITY {
            return state.write_out();
        }
        if was_empty {
            self.gathered.notify_one();
        }
        Ok(())
    }

    fn flush(&self) {
        let _ = self.lock().write_out();
    }

    fn try_flush(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            let _ = state.write_out();
        }
    }

    /// The `log-writer` thread: once lines are waiting, lets the interval pass (more lines
    /// join them meanwhile), then writes them all out; idle while the buffer is empty.
    fn write_out_after_each_interval(&self) {
        loop {
            let mut state = self.lock();
            while state.lines.is_empty() {
                state = self
                    .gathered
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(state);
            std::thread::sleep(FLUSH_INTERVAL);
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("captured").clone()).expect("utf-8")
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("captured").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(lines: &BufferedLines, urgent: bool, text: &str) {
        let mut writer = LineWriter {
            shared: &lines.shared,
            urgent,
        };
        writer.write_all(text.as_bytes()).expect("written");
    }

    #[test]
    fn warnings_and_errors_are_urgent_and_the_rest_is_not() {
        assert!(is_urgent(&Level::ERROR));
        assert!(is_urgent(&Level::WARN));
        assert!(!is_urgent(&Level::INFO));
        assert!(!is_urgent(&Level::DEBUG));
        assert!(!is_urgent(&Level::TRACE));
    }

    #[test]
    fn an_urgent_line_takes_the_lines_before_it_along_in_order() {
        let captured = Captured::default();
        // No writer thread, lines held: only an urgent line or the capacity writes out.
        let lines = BufferedLines::to(Box::new(captured.clone()), false);
        lines.shared.lock().held = true;
        line(&lines, false, "one\n");
        line(&lines, false, "two\n");
        assert_eq!(captured.text(), "", "info lines wait");
        line(&lines, true, "three\n");
        assert_eq!(captured.text(), "one\ntwo\nthree\n");
        line(&lines, false, "four\n");
        lines.shared.flush();
        assert_eq!(captured.text(), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn the_buffer_never_holds_more_than_its_capacity() {
        let captured = Captured::default();
        let lines = BufferedLines::to(Box::new(captured.clone()), false);
        lines.shared.lock().held = true;
        let text = format!("{}\n", "x".repeat(999));
        let mut sent = 0;
        while sent < 3 * CAPACITY {
            line(&lines, false, &text);
            sent += text.len();
            let held = lines.shared.lock().lines.len();
            assert!(held < CAPACITY, "{held} bytes held");
        }
        lines.shared.flush();
        assert_eq!(captured.text().len(), sent, "no line lost");
    }

    #[test]
    fn without_a_writer_thread_every_line_goes_out_at_once() {
        let captured = Captured::default();
        let lines = BufferedLines::to(Box::new(captured.clone()), false);
        line(&lines, false, "one\n");
        assert_eq!(captured.text(), "one\n");
    }

    #[test]
    fn the_writer_thread_writes_waiting_lines_out() {
        let captured = Captured::default();
        let lines = BufferedLines::to(Box::new(captured.clone()), true);
        line(&lines, false, "one\n");
        line(&lines, false, "two\n");
        // Liveness, not timing: the interval is 25 ms; a loaded machine gets ten seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while captured.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(captured.text(), "one\ntwo\n");
        line(&lines, false, "three\n");
        while captured.text().len() < 14 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(captured.text(), "one\ntwo\nthree\n", "and again once idle");
    }
}
