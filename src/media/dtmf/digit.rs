//! The DTMF digit shared by in-band detection, RFC 4733 telephone-events and SIP INFO.

use std::fmt;

/// One of the sixteen DTMF digits, numbered by its RFC 4733 event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digit(u8);

/// Row (low-group) frequencies in Hz, top to bottom of the keypad.
pub const ROW_FREQS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high-group) frequencies in Hz, left to right.
pub const COL_FREQS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Keypad position of each digit, indexed by event code.
const POSITIONS: [(usize, usize); 16] = [
    (3, 1),
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 1),
    (1, 2),
    (2, 0),
    (2, 1),
    (2, 2),
    (3, 0),
    (3, 2),
    (0, 3),
    (1, 3),
    (2, 3),
    (3, 3),
];

const CHARS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

impl Digit {
    /// All sixteen digits in event-code order.
    pub const ALL: [Digit; 16] = {
        let mut all = [Digit(0); 16];
        let mut i = 0;
        while i < 16 {
            all[i] = Digit(i as u8);
            i += 1;
        }
        all
    };

    /// The digit for an RFC 4733 event code 0–15.
    pub const fn from_event_code(code: u8) -> Option<Digit> {
        if code < 16 {
            Some(Digit(code))
        } else {
            None
        }
    }

    /// The RFC 4733 event code (0–9, `*` = 10, `#` = 11, `A`–`D` = 12–15).
    pub const fn event_code(self) -> u8 {
        self.0
    }

    /// The digit for `0`–`9`, `*`, `#` or `A`–`D` (lower case accepted).
    pub fn from_char(c: char) -> Option<Digit> {
        let c = c.to_ascii_uppercase();
        CHARS.iter().position(|&d| d == c).map(|i| Digit(i as u8))
    }

    /// The digit as a keypad character.
    pub fn as_char(self) -> char {
        CHARS[usize::from(self.0)]
    }

    /// The digit at a keypad position (row and column 0–3).
    pub fn from_row_col(row: usize, col: usize) -> Option<Digit> {
        let c = *KEYPAD.get(row)?.get(col)?;
        Digit::from_char(c)
    }

    /// Keypad position as (row, column).
    pub const fn row_col(self) -> (usize, usize) {
        POSITIONS[self.0 as usize]
    }

    /// The (low, high) tone pair in Hz.
    pub fn frequencies(self) -> (f32, f32) {
        let (r, c) = self.row_col();
        (ROW_FREQS[r], COL_FREQS[c])
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

impl TryFrom<char> for Digit {
    type Error = InvalidDigit;

    fn try_from(c: char) -> Result<Self, Self::Error> {
        Digit::from_char(c).ok_or(InvalidDigit(c))
    }
}

impl From<Digit> for char {
    fn from(d: Digit) -> char {
        d.as_char()
    }
}

/// A character that is not a DTMF digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a DTMF digit: {0:?}")]
pub struct InvalidDigit(pub char);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_follow_rfc4733() {
        let s: String = Digit::ALL.iter().map(|d| d.as_char()).collect();
        assert_eq!(s, "0123456789*#ABCD");
        assert_eq!(Digit::from_char('*').unwrap().event_code(), 10);
        assert_eq!(Digit::from_char('#').unwrap().event_code(), 11);
        assert_eq!(Digit::from_char('d').unwrap().event_code(), 15);
        assert_eq!(Digit::from_event_code(16), None);
        assert_eq!(Digit::try_from('x'), Err(InvalidDigit('x')));
    }

    #[test]
    fn keypad_positions_round_trip() {
        for d in Digit::ALL {
            let (r, c) = d.row_col();
            assert_eq!(Digit::from_row_col(r, c), Some(d));
        }
        assert_eq!(
            Digit::from_char('5').unwrap().frequencies(),
            (770.0, 1336.0)
        );
        assert_eq!(
            Digit::from_char('#').unwrap().frequencies(),
            (941.0, 1477.0)
        );
        assert_eq!(Digit::from_row_col(4, 0), None);
    }
}
