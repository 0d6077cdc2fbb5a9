//! Terminal cleaning: what a progress bar's escape sequences and backspaces leave on the screen.

/// Where the escape sequence starting with the ESC at `line[at]` ends: a CSI's parameters and intermediates, then
/// one final byte in 0x40..=0x7e; an OSC up to BEL or ESC \; otherwise the one byte after ESC.
pub(super) fn after_escape(line: &[u8], at: usize) -> usize {
    let mut i = at + 1;
    match line.get(i) {
        Some(b'[') => {
            i += 1;
            while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                i += 1;
            }
            i + 1
        }
        Some(b']') => {
            i += 1;
            while i < line.len() && line[i] != 0x07 && !(line[i] == 0x1b && line.get(i + 1) == Some(&b'\\')) {
                i += 1;
            }
            i + if line.get(i) == Some(&0x07) { 1 } else { 2 }
        }
        Some(_) => i + 1,
        None => i,
    }
}

/// Removes ANSI escape sequences and applies backspaces, keeping `\r` for the caller to split on.
pub(super) fn clean_terminal(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            0x1b => i = after_escape(line, i),
            0x08 => {
                if out.last().is_some_and(|&b| b != b'\r') {
                    out.pop();
                }
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}
