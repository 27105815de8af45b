//! A one-line progress display on stderr for long operations (sweep,
//! export). Shown only when stderr is a terminal, so piped or captured runs
//! stay quiet.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

/// A progress line: `LABEL: N UNIT (R/s)`, redrawn in place.
#[derive(Debug)]
pub(crate) struct Progress {
    label: &'static str,
    unit: &'static str,
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// A progress line shown iff stderr is a terminal.
    pub(crate) fn on_terminal(label: &'static str, unit: &'static str) -> Self {
        Self::new(label, unit, std::io::stderr().is_terminal())
    }

    fn new(label: &'static str, unit: &'static str, enabled: bool) -> Self {
        Progress {
            label,
            unit,
            enabled,
            started: Instant::now(),
            last_draw: None,
            drawn: false,
        }
    }

    /// Report that `done` units are done so far.
    pub(crate) fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|last| now.duration_since(last) < REDRAW)
        {
            return;
        }
        self.last_draw = Some(now);
        self.draw(done);
    }

    /// Draw the final figure and end the line.
    pub(crate) fn finish(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        self.draw(done);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err);
        self.drawn = false;
    }

    fn draw(&mut self, done: u64) {
        let line = self.line(done, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        // `\r` and "erase to end of line": redraw in place.
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        self.drawn = true;
    }

    fn line(&self, done: u64, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        format!(
            "{}: {done} {} ({rate:.0}/s, {seconds:.1} s)",
            self.label, self.unit
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error ended the operation mid-line: start the error message on a
        // line of its own.
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_count_and_rate() {
        let progress = Progress::new("sweeping", "sessions removed", false);
        assert_eq!(
            progress.line(500, Duration::from_secs(2)),
            "sweeping: 500 sessions removed (250/s, 2.0 s)"
        );
    }
}
