//! What a terminal shows: the live table ([`live`]), the progress bar ([`progress`]), the sparklines
//! ([`sparkline`]) and what a run says about itself under the table ([`explain`]: the parameters, `--explain`,
//! the "no metrics found" help), and the two decisions about a terminal: whether to colour ([`colour`]) and
//! whether it can redraw in place ([`redraws`]). Callers say whether a stream is a terminal; these only decide
//! and draw.

pub mod explain;
pub mod live;
pub mod progress;
pub mod sparkline;

use std::ffi::OsStr;

/// `--color`: when to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    /// When the stream is a terminal that is not `dumb`, and `NO_COLOR` is unset or empty.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Whether to colour a stream: `choice` when given (a flag beats the environment), else none when `NO_COLOR` is
/// set to anything but the empty string (<https://no-color.org>), else only on a terminal whose `TERM` is not
/// `dumb`.
pub fn colour(choice: Option<ColorChoice>, no_color: Option<&OsStr>, term: Option<&OsStr>, is_terminal: bool) -> bool {
    match choice {
        Some(ColorChoice::Always) => true,
        Some(ColorChoice::Never) => false,
        None if no_color.is_some_and(|v| !v.is_empty()) => false,
        Some(ColorChoice::Auto) | None => redraws(is_terminal, term),
    }
}

/// Whether a stream can be redrawn in place (the progress bar, the live table): a terminal whose `TERM` is not
/// `dumb`.
pub fn redraws(is_terminal: bool, term: Option<&OsStr>) -> bool {
    is_terminal && term.is_none_or(|t| t != "dumb")
}

/// [`redraws`] for the process's `TERM`.
pub fn redraws_here(is_terminal: bool) -> bool {
    redraws(is_terminal, std::env::var_os("TERM").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_colour_follows_the_flag_then_no_color_then_the_terminal() {
        let (tty, pipe) = (true, false);
        let xterm = Some(OsStr::new("xterm-256color"));
        let dumb = Some(OsStr::new("dumb"));
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(colour(None, None, xterm, tty));
        assert!(!colour(None, None, xterm, pipe));
        assert!(!colour(None, None, dumb, tty), "TERM=dumb");
        assert!(colour(None, None, None, tty), "no TERM at all still colours a terminal");
        assert!(!colour(None, set, xterm, tty), "NO_COLOR");
        assert!(colour(None, empty, xterm, tty), "an empty NO_COLOR is unset");
        assert!(colour(Some(ColorChoice::Always), set, dumb, pipe), "--color always beats everything");
        assert!(!colour(Some(ColorChoice::Never), None, xterm, tty));
        assert!(colour(Some(ColorChoice::Auto), set, xterm, tty), "an explicit --color auto beats NO_COLOR");
        assert!(!colour(Some(ColorChoice::Auto), set, xterm, pipe));
    }

    #[test]
    fn term_redrawing_needs_a_terminal_that_is_not_dumb() {
        assert!(redraws(true, Some(OsStr::new("xterm"))) && redraws(true, None));
        assert!(!redraws(true, Some(OsStr::new("dumb"))) && !redraws(false, Some(OsStr::new("xterm"))));
    }
}
