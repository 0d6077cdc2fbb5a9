//! Block scanning: many lines at once, only the lines a finder hits are scanned.

use memchr::memmem;
use regex::bytes::Regex;

use super::LineFormat;
use super::{ALL_RULES, LineIssues, Match, Rules, Semantics, TextRule, compile};

/// Finds, in a block of lines, the next byte position whose line may hold a match.
///
/// The union of a rule set's finders is a superset of the lines that match: a line without a hit cannot
/// produce an observation, so the block scan skips it without looking at it.
pub(super) enum Finder {
    /// `\r`, ESC, backspace: such lines are cleaned first, so they are always scanned.
    Terminal,
    /// A byte every match holds (`=` for `name=value`).
    Byte(u8),
    /// A literal every match holds (` at step `).
    Literal(Box<memmem::Finder<'static>>),
    /// The rule's own regex (or its context) in multi-line mode.
    Regex(Regex),
    /// The wanted names' substring prefilter.
    Names,
}

/// No further hit in this block.
pub(super) const NO_HIT: usize = usize::MAX;

impl Rules {
    /// Scans a block of complete lines (each ending in `\n`; the first is line `first`) and calls `emit` for every
    /// match with its line number; returns the number of lines. Equal to [`Rules::scan`] on each line in turn.
    ///
    /// # Performance
    /// Only lines with a finder hit are scanned; the rest are only counted. With the default rules this
    /// roughly doubles throughput on typical logs over line-by-line scanning (see `benches/throughput.rs`).
    pub fn scan_block(
        &mut self,
        block: &[u8],
        first: u64,
        emit: &mut impl FnMut(Match<'_>, u64),
        issues: &mut impl FnMut(LineIssues, u64),
    ) -> u64 {
        if let Some(auto) = &mut self.auto {
            return auto.scan_block(block, first, emit);
        }
        let body = &block[..block.len().saturating_sub(1)];
        let Some(finder_count) = self.finders.as_ref().map(Vec::len) else {
            let mut number = first;
            for line in body.split(|&b| b == b'\n') {
                let found = self.scan_numbered(line, number, emit);
                issues(found, number);
                number += 1;
            }
            return number - first;
        };
        for i in 0..finder_count {
            self.hits[i] = self.find(i, block, 0);
        }
        // A line is scanned when it holds a terminal or rule hit and, with names, a name hit too (or is dirty).
        let terminal = usize::from(self.semantics == Semantics::Native);
        let names = self.names.is_some();
        let candidates = finder_count - usize::from(names);
        let (mut pos, mut counted, mut number) = (0usize, 0usize, first);
        while pos < block.len() {
            let mut next = NO_HIT;
            for i in 0..candidates {
                // A hit behind `pos` lay in a line already passed: look again from here.
                if self.hits[i] < pos {
                    self.hits[i] = self.find(i, block, pos);
                }
                next = next.min(self.hits[i]);
            }
            if next == NO_HIT {
                break;
            }
            let end = next + memchr::memchr(b'\n', &block[next..]).unwrap_or(block.len() - 1 - next);
            let dirty = terminal == 1 && self.hits[0] < end;
            if names && !dirty {
                let n = finder_count - 1;
                if self.hits[n] < pos {
                    self.hits[n] = self.find(n, block, pos);
                }
                if self.hits[n] >= end {
                    pos = end + 1;
                    continue;
                }
            }
            let start = memchr::memrchr(b'\n', &block[pos..next]).map_or(pos, |i| pos + i + 1);
            number += crate::lines::count_newlines(&block[counted..start]);
            let line_number = number;
            let active = if dirty { ALL_RULES } else { self.active_rules(terminal, end) };
            self.scan_text(&block[start..end], dirty, active, &mut |m| emit(m, line_number));
            number += 1;
            counted = end + 1;
            pos = end + 1;
        }
        number += crate::lines::count_newlines(&block[counted.min(block.len())..]);
        number - first
    }

    /// The rules whose finder hit lies in the line ending at `end` (rule `i`'s finder is `offset + i`).
    fn active_rules(&self, offset: usize, end: usize) -> u64 {
        if self.text.len() > 64 {
            return ALL_RULES;
        }
        let rules = &self.hits[offset..offset + self.text.len()];
        rules.iter().enumerate().filter(|(_, h)| **h < end).fold(0, |mask, (i, _)| mask | 1 << i)
    }

    fn find(&self, finder: usize, block: &[u8], from: usize) -> usize {
        let Some(finders) = &self.finders else { return NO_HIT };
        let hay = &block[from..];
        let hit = match &finders[finder] {
            Finder::Terminal => memchr::memchr3(b'\r', 0x1b, 0x08, hay),
            Finder::Byte(b) => memchr::memchr(*b, hay),
            Finder::Literal(f) => f.find(hay),
            Finder::Regex(re) => re.find(hay).map(|m| m.start()),
            Finder::Names => self.names.as_ref().and_then(|n| n.prefilter.find(hay)).map(|m| m.start()),
        };
        hit.map_or(NO_HIT, |i| from + i)
    }
}

/// The finders whose hits cover every line the rules can match in, or `None` when some rule needs every line.
pub(super) fn block_finders(
    semantics: Semantics,
    format: LineFormat,
    rules: &[TextRule],
    names: bool,
) -> Option<Vec<Finder>> {
    if format == LineFormat::Json {
        return None;
    }
    // Layout: the terminal finder (native only), then one finder per rule, then the names finder (when names).
    let mut finders: Vec<Finder> = (semantics == Semantics::Native).then_some(Finder::Terminal).into_iter().collect();
    for rule in rules {
        finders.push(match rule {
            TextRule::Pairs => Finder::Byte(b'='),
            TextRule::AtStep(_) => Finder::Literal(Box::new(memmem::Finder::new(b" at step "))),
            // Katib looks at every line that holds a metric name (the filters then run on the line as Go
            // decodes it, which a regex over the raw block would not see).
            TextRule::Regex(r) if r.katib => Finder::Names,
            TextRule::Regex(r) => {
                let pattern = r.context.as_ref().unwrap_or(&r.re).as_str();
                // Multi-line mode makes `^`/`$` line anchors in the block; anchors to the haystack's ends, or
                // turning multi-line mode off again, would not mean the same: scan every line then.
                if pattern.contains("\\A") || pattern.contains("\\z") || pattern.contains("-m") {
                    return None;
                }
                Finder::Regex(compile(&format!("(?m){pattern}")).ok()?)
            }
        });
    }
    if names {
        finders.push(Finder::Names);
    }
    Some(finders)
}
