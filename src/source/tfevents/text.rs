//! Numbers as Python and numpy print them: the text of a scalar read from an event file.
//!
//! A scalar is shown as numpy's `str` prints a value of its stored type ([`numpy_str`]): the shortest digits that
//! read back as the same value *of that type* (`0.1` for a float32 0.1, not its double's `0.10000000149011612`),
//! positional between 1e-4 and 1e16 (`0.001`, `42.0`), scientific outside (`1e-05`, `3.4028235e+38`); integers
//! in decimal, booleans `True`/`False`, bfloat16 as `ml_dtypes` prints it (C++'s `%g`, 6 digits: `0.100098`).
//! This is what `trialtail run` shows, and what Katib's TensorFlowEvent collector reports for a tensor summary
//! (`str(tf.make_ndarray(tensor))`, `tfevent_loader.py`). [`python_repr`] is Python's `repr` of a double, what
//! Katib reports for a TF1 `simple_value` (`str(scalar.value)`, the float32 widened).
//!
//! Rules restated from numpy 1.26 (`numpy/core/src/multiarray/scalartypes.c.src`, `*type_str_either`: positional
//! when `1e-4 <= |x| < 1e16` or zero, Dragon4 shortest digits, one trailing zero kept) and CPython 3.11
//! (`Python/pystrtod.c`, `format_float_short`, mode `r`: exponent when the decimal point position is `<= -4` or
//! `> 16`). Writing appends to a caller's `String`: no allocation once it has grown.

use std::fmt::Write;

use super::event::Scalar;

/// The shortest digits of a float and its decimal exponent: the value is `0.d1d2… × 10^point`.
struct Digits {
    digits: [u8; 24],
    len: usize,
    point: i32,
}

impl Digits {
    /// From Rust's `{:e}` rendering (`-1.25e-7`), which is the shortest round-trip (and closest) digits.
    fn from_exp(s: &str) -> Self {
        let s = s.trim_start_matches('-');
        let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
        let mut d = Digits { digits: [0; 24], len: 0, point: exp.parse::<i32>().unwrap_or(0) + 1 };
        for b in mantissa.bytes().filter(u8::is_ascii_digit) {
            if d.len < d.digits.len() {
                d.digits[d.len] = b;
                d.len += 1;
            }
        }
        // `{:e}` of zero is `0e0`.
        while d.len > 1 && d.digits[d.len - 1] == b'0' {
            d.len -= 1;
        }
        d
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.digits[..self.len]).unwrap_or("0")
    }

    /// Positional: `0.001`, `12.5`, `42.0`.
    fn positional(&self, out: &mut String) {
        let (d, p) = (self.text(), self.point);
        if p <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-p) as usize));
            out.push_str(d);
        } else if (p as usize) < d.len() {
            out.push_str(&d[..p as usize]);
            out.push('.');
            out.push_str(&d[p as usize..]);
        } else {
            out.push_str(d);
            out.extend(std::iter::repeat_n('0', p as usize - d.len()));
            out.push_str(".0");
        }
    }

    /// Scientific: `1e-05`, `1.5e+16` (at least two exponent digits, no trailing `.0`).
    fn scientific(&self, out: &mut String) {
        let d = self.text();
        out.push_str(&d[..1]);
        if d.len() > 1 {
            out.push('.');
            out.push_str(&d[1..]);
        }
        let e = self.point - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.unsigned_abs());
    }
}

fn special(v: f64, out: &mut String) -> bool {
    if v.is_nan() {
        out.push_str("nan");
    } else if v.is_infinite() {
        out.push_str(if v < 0.0 { "-inf" } else { "inf" });
    } else {
        return false;
    }
    true
}

/// Python's `repr` of a double: `0.1`, `42.0`, `1e-05`, `1.0000000116860974e-07`, `1e+16`, `inf`, `nan`, `-0.0`.
pub fn python_repr(v: f64, out: &mut String) {
    if special(v, out) {
        return;
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    let mut buf = Stack::default();
    let _ = write!(buf, "{:e}", v);
    let d = Digits::from_exp(buf.as_str());
    if d.point <= -4 || d.point > 16 { d.scientific(out) } else { d.positional(out) }
}

/// numpy's `str` of a float of magnitude `abs` (exact) with shortest digits `d`.
fn numpy_float(negative: bool, abs: f64, d: &Digits, out: &mut String) {
    if negative {
        out.push('-');
    }
    if abs == 0.0 || (1e-4..1e16).contains(&abs) { d.positional(out) } else { d.scientific(out) }
}

/// numpy's `str` of a scalar of its own type (see the module documentation).
pub fn numpy_str(s: Scalar, out: &mut String) {
    let mut buf = Stack::default();
    match s {
        Scalar::F32(v) => {
            if special(f64::from(v), out) {
                return;
            }
            let _ = write!(buf, "{:e}", v);
            numpy_float(v.is_sign_negative(), f64::from(v.abs()), &Digits::from_exp(buf.as_str()), out);
        }
        Scalar::F64(v) => {
            if special(v, out) {
                return;
            }
            let _ = write!(buf, "{:e}", v);
            numpy_float(v.is_sign_negative(), v.abs(), &Digits::from_exp(buf.as_str()), out);
        }
        Scalar::F16(bits) => {
            let v = s.to_f64();
            if special(v, out) {
                return;
            }
            numpy_float(bits & 0x8000 != 0, v.abs(), &f16_digits(v.abs()), out);
        }
        Scalar::BF16(_) => percent_g(s.to_f64(), out),
        Scalar::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Scalar::UInt(v) => {
            let _ = write!(out, "{v}");
        }
        Scalar::Bool(b) => out.push_str(if b { "True" } else { "False" }),
    }
}

/// The shortest digits that read back as the same half-precision float (at most 5 digits), the closest of them.
fn f16_digits(abs: f64) -> Digits {
    let mut buf = Stack::default();
    for precision in 0..5 {
        buf.clear();
        let _ = write!(buf, "{:.*e}", precision, abs);
        let back: f64 = buf.as_str().parse().unwrap_or(f64::NAN);
        if f64_to_f16_bits(back) == f64_to_f16_bits(abs) {
            return Digits::from_exp(buf.as_str());
        }
    }
    buf.clear();
    let _ = write!(buf, "{:.4e}", abs);
    Digits::from_exp(buf.as_str())
}

/// Rounds a double to the nearest half-precision float (ties to even), as its bits.
pub fn f64_to_f16_bits(v: f64) -> u16 {
    let sign = if v.is_sign_negative() { 0x8000u16 } else { 0 };
    let a = v.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    // In units of the smallest subnormal (2^-24), rounded to even; the bit pattern of a half is monotonic in it.
    if a < 2f64.powi(-14) {
        let units = (a * 2f64.powi(24)).round_ties_even();
        return sign | units as u16;
    }
    let e = a.log2().floor() as i32;
    let e = if 2f64.powi(e) > a {
        e - 1
    } else if 2f64.powi(e + 1) <= a {
        e + 1
    } else {
        e
    };
    let m = (a / 2f64.powi(e) - 1.0) * 1024.0;
    let mut m = m.round_ties_even() as u32;
    let mut e = e;
    if m == 1024 {
        m = 0;
        e += 1;
    }
    if e > 15 {
        return sign | 0x7c00;
    }
    sign | (((e + 15) as u16) << 10) | m as u16
}

/// C's `%g` (6 significant digits, trailing zeros removed), as `std::ostream` prints a float by default: how
/// `ml_dtypes` 0.3 prints a bfloat16.
fn percent_g(v: f64, out: &mut String) {
    if special(v, out) {
        return;
    }
    let mut buf = Stack::default();
    let _ = write!(buf, "{:.5e}", v);
    let s = buf.as_str();
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let m = mantissa.trim_end_matches('0').trim_end_matches('.');
        let _ = write!(out, "{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs());
        return;
    }
    let mut fixed = Stack::default();
    let _ = write!(fixed, "{:.*}", (5 - exp) as usize, v);
    let f = fixed.as_str();
    let f = if f.contains('.') { f.trim_end_matches('0').trim_end_matches('.') } else { f };
    out.push_str(f);
}

/// A small stack buffer for formatting without allocating.
struct Stack {
    buf: [u8; 64],
    len: usize,
}

impl Default for Stack {
    fn default() -> Self {
        Stack { buf: [0; 64], len: 0 }
    }
}

impl Stack {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(v: f64) -> String {
        let mut s = String::new();
        python_repr(v, &mut s);
        s
    }

    fn np(s: Scalar) -> String {
        let mut out = String::new();
        numpy_str(s, &mut out);
        out
    }

    #[test]
    fn python_repr_as_cpython_prints_it() {
        let f = |v: f32| f64::from(v);
        let table: &[(f64, &str)] = &[
            (f(0.1), "0.10000000149011612"),
            (f(1e-7), "1.0000000116860974e-07"),
            (42.0, "42.0"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f(123456789.0), "123456792.0"),
            (f(16777217.0), "16777216.0"),
            (f(f32::MAX), "3.4028234663852886e+38"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
            (5e-324, "5e-324"),
            (1.5, "1.5"),
        ];
        for (v, want) in table {
            assert_eq!(repr(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn numpy_str_as_numpy_prints_each_type() {
        let table: &[(Scalar, &str)] = &[
            (Scalar::F32(0.1), "0.1"),
            (Scalar::F32(1.0 / 3.0), "0.33333334"),
            (Scalar::F32(1e-4), "1e-04"),
            (Scalar::F32(1e16), "1e+16"),
            (Scalar::F32(f32::MAX), "3.4028235e+38"),
            (Scalar::F32(65504.0), "65504.0"),
            (Scalar::F32(-0.0), "-0.0"),
            (Scalar::F32(1e-5), "1e-05"),
            (Scalar::F64(1.0 / 3.0), "0.3333333333333333"),
            (Scalar::F64(0.0001), "0.0001"),
            (Scalar::F16(0x7bff), "65500.0"),
            (Scalar::F16(f64_to_f16_bits(0.1)), "0.1"),
            (Scalar::F16(f64_to_f16_bits(1e-5)), "1e-05"),
            (Scalar::BF16(0x3dcd), "0.100098"),
            (Scalar::BF16(0x3f80), "1"),
            (Scalar::BF16(0x477f), "65280"),
            (Scalar::BF16(0x8000), "-0"),
            (Scalar::Int(-7), "-7"),
            (Scalar::UInt(u64::MAX), "18446744073709551615"),
            (Scalar::Bool(true), "True"),
        ];
        for (s, want) in table {
            assert_eq!(np(*s), *want, "{s:?}");
        }
    }

    #[test]
    fn half_rounding_is_to_nearest_even() {
        assert_eq!(f64_to_f16_bits(1.0), 0x3c00);
        assert_eq!(f64_to_f16_bits(65504.0), 0x7bff);
        assert_eq!(f64_to_f16_bits(65520.0), 0x7c00);
        assert_eq!(f64_to_f16_bits(2f64.powi(-24)), 1);
        assert_eq!(f64_to_f16_bits(1.0 + 2f64.powi(-11)), 0x3c00, "a tie rounds to even");
        for bits in (0u16..0x7c00).step_by(7) {
            assert_eq!(f64_to_f16_bits(crate::source::tfevents::event::f16_to_f64(bits)), bits);
        }
    }
}
