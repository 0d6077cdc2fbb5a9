//! An `Event` record read in place: the protobuf wire format scanned without allocating, borrowing the record.
//!
//! Only what a metrics reader needs is looked at – `wall_time`, `step`, `file_version`, `session_log.status` and
//! the summary's values (tag, plugin name, and a scalar's number from `simple_value` or a one-element `tensor`);
//! every other field is skipped as the wire format says (unknown fields included). The schema is TensorFlow's
//! (`proto/tensorboard/`, generated as [`super::proto`]); the tests check this scanner against that generated
//! decoder.
//!
//! A message field that occurs more than once on the wire is merged by protobuf; here the last occurrence wins
//! (no writer splits a message). A malformed record is an error ([`DecodeError`]); the caller skips it.
//!
//! # Performance
//! Decoding the benchmark's 1 M scalar records with the generated `prost` types costs about four allocations per
//! record (the summary's vector, the tag, the metadata, the tensor's parts); this scanner costs none, which is
//! what lets the reader run at memory speed (see `docs/performance.md`).

/// The record is not a protobuf message of the expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an Event: {0}")]
pub struct DecodeError(pub &'static str);

type Result<T> = std::result::Result<T, DecodeError>;

/// A wire-format cursor.
#[derive(Debug, Clone, Copy)]
struct Wire<'a> {
    buf: &'a [u8],
    at: usize,
}

/// A field's payload.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Group,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, at: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.at).ok_or(DecodeError("truncated varint"))?;
            self.at += 1;
            if shift == 63 && b > 1 {
                return Err(DecodeError("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(DecodeError("truncated field"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// The next field, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Payload<'a>)>> {
        if self.at == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| DecodeError("field number out of range"))?;
        if number == 0 {
            return Err(DecodeError("field number 0"));
        }
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default())),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError("length out of range"))?;
                Payload::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number, 0)?;
                Payload::Group
            }
            5 => Payload::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default())),
            _ => return Err(DecodeError("invalid wire type")),
        };
        Ok(Some((number, payload)))
    }

    /// Skips to the end-group key of `number` (nested groups included).
    fn skip_group(&mut self, number: u32, depth: u32) -> Result<()> {
        if depth > 64 {
            return Err(DecodeError("groups nested too deep"));
        }
        loop {
            if self.at == self.buf.len() {
                return Err(DecodeError("unterminated group"));
            }
            let key = self.varint()?;
            let n = u32::try_from(key >> 3).map_err(|_| DecodeError("field number out of range"))?;
            match key & 7 {
                0 => drop(self.varint()?),
                1 => drop(self.take(8)?),
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| DecodeError("length out of range"))?;
                    self.take(len)?;
                }
                3 => self.skip_group(n, depth + 1)?,
                4 if n == number => return Ok(()),
                5 => drop(self.take(4)?),
                _ => return Err(DecodeError("invalid wire type")),
            }
        }
    }
}

fn bytes<'a>(p: Payload<'a>) -> Result<&'a [u8]> {
    match p {
        Payload::Bytes(b) => Ok(b),
        _ => Err(DecodeError("wrong wire type")),
    }
}

fn varint(p: Payload<'_>) -> Result<u64> {
    match p {
        Payload::Varint(v) => Ok(v),
        _ => Err(DecodeError("wrong wire type")),
    }
}

fn string(p: Payload<'_>) -> Result<&[u8]> {
    let b = bytes(p)?;
    // proto3 `string` fields must be UTF-8 (as every protobuf runtime checks).
    std::str::from_utf8(b).map_err(|_| DecodeError("string field is not UTF-8"))?;
    Ok(b)
}

/// What an event holds (the `what` oneof), as far as a metrics reader cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum What<'a> {
    /// Nothing, or something skipped (a graph, run metadata, a log message).
    Other,
    /// `file_version`, the first event of a file (`brain.Event:2`).
    FileVersion(&'a [u8]),
    /// A summary: its values, encoded ([`Summary::values`]).
    Summary(Summary<'a>),
    /// A `SessionLog` with this status (1 is `START`).
    SessionLog(i32),
}

/// One event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event<'a> {
    /// Seconds since the epoch.
    pub wall_time: f64,
    /// The global step.
    pub step: i64,
    /// What it holds.
    pub what: What<'a>,
}

/// `SessionLog.START`: a writer (re)started.
pub const SESSION_START: i32 = 1;

impl<'a> Event<'a> {
    /// Scans one record's data.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let mut w = Wire::new(data);
        let mut e = Event { wall_time: 0.0, step: 0, what: What::Other };
        while let Some((n, p)) = w.field()? {
            match (n, p) {
                (1, Payload::Fixed64(bits)) => e.wall_time = f64::from_bits(bits),
                (2, Payload::Varint(v)) => e.step = v as i64,
                (3, p) => e.what = What::FileVersion(string(p)?),
                (5, p) => e.what = What::Summary(Summary(bytes(p)?)),
                (7, p) => {
                    let mut status = 0;
                    let mut s = Wire::new(bytes(p)?);
                    while let Some((n, p)) = s.field()? {
                        if n == 1 {
                            status = varint(p)? as i32;
                        }
                    }
                    e.what = What::SessionLog(status);
                }
                (4 | 6 | 8 | 9, p) => {
                    bytes(p)?;
                    e.what = What::Other;
                }
                // `source_metadata`, beside the oneof.
                (10, p) => drop(bytes(p)?),
                (1 | 2, _) => return Err(DecodeError("wrong wire type")),
                _ => {}
            }
        }
        Ok(e)
    }
}

/// A `Summary` message, encoded; its values are read one by one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary<'a>(pub &'a [u8]);

impl<'a> Summary<'a> {
    /// The values, in order.
    pub fn values(self) -> Values<'a> {
        Values(Wire::new(self.0))
    }
}

/// The values of a summary.
#[derive(Debug, Clone)]
pub struct Values<'a>(Wire<'a>);

impl<'a> Iterator for Values<'a> {
    type Item = Result<Value<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.0.field() {
                Err(e) => {
                    self.0.at = self.0.buf.len();
                    return Some(Err(e));
                }
                Ok(None) => return None,
                Ok(Some((1, p))) => return Some(bytes(p).and_then(Value::parse)),
                Ok(Some(_)) => {}
            }
        }
    }
}

/// What kind of value a summary value is (its `value` oneof).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind<'a> {
    /// None set.
    Empty,
    /// `simple_value` (TF1 scalars, tensorboardX and torch by default).
    Simple(f32),
    /// `tensor` (TF2 summaries, every plugin since).
    Tensor(Tensor<'a>),
    /// `histo`, `image`, `audio` or the obsolete histogram: a TF1 plugin value, never a scalar.
    Plugin(&'static str),
}

/// One summary value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value<'a> {
    /// `tag` (UTF-8).
    pub tag: &'a [u8],
    /// `node_name`: the tag of tensors written by the oldest TF writers, whose `tag` is empty.
    pub node_name: &'a [u8],
    /// `metadata.plugin_data.plugin_name`, empty when absent.
    pub plugin: &'a [u8],
    /// Whether `metadata` is present.
    pub has_metadata: bool,
    /// The value.
    pub kind: Kind<'a>,
}

impl<'a> Value<'a> {
    fn parse(data: &'a [u8]) -> Result<Self> {
        let mut w = Wire::new(data);
        let mut v = Value { tag: b"", node_name: b"", plugin: b"", has_metadata: false, kind: Kind::Empty };
        while let Some((n, p)) = w.field()? {
            match n {
                1 => v.tag = string(p)?,
                7 => v.node_name = string(p)?,
                2 => match p {
                    Payload::Fixed32(bits) => v.kind = Kind::Simple(f32::from_bits(bits)),
                    _ => return Err(DecodeError("wrong wire type")),
                },
                3 => v.kind = Kind::Plugin(bytes(p).map(|_| "histogram")?),
                4 => v.kind = Kind::Plugin(bytes(p).map(|_| "image")?),
                5 => v.kind = Kind::Plugin(bytes(p).map(|_| "histogram")?),
                6 => v.kind = Kind::Plugin(bytes(p).map(|_| "audio")?),
                8 => v.kind = Kind::Tensor(Tensor::parse(bytes(p)?)?),
                9 => {
                    v.has_metadata = true;
                    let mut m = Wire::new(bytes(p)?);
                    while let Some((n, p)) = m.field()? {
                        if n == 1 {
                            let mut pd = Wire::new(bytes(p)?);
                            while let Some((n, p)) = pd.field()? {
                                if n == 1 {
                                    v.plugin = string(p)?;
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(v)
    }

    /// The tag TensorBoard files the value under: `tag`, or `node_name` for a tensor without one
    /// (`event_accumulator.py`, `_ProcessEvent`).
    pub fn name(&self) -> &'a [u8] {
        if self.tag.is_empty() && matches!(self.kind, Kind::Tensor(_)) { self.node_name } else { self.tag }
    }
}

/// TensorFlow's `DataType` values a scalar can have.
pub mod dtype {
    /// `DT_FLOAT`.
    pub const FLOAT: i32 = 1;
    /// `DT_DOUBLE`.
    pub const DOUBLE: i32 = 2;
    /// `DT_INT32`.
    pub const INT32: i32 = 3;
    /// `DT_UINT8`.
    pub const UINT8: i32 = 4;
    /// `DT_INT16`.
    pub const INT16: i32 = 5;
    /// `DT_INT8`.
    pub const INT8: i32 = 6;
    /// `DT_STRING`.
    pub const STRING: i32 = 7;
    /// `DT_INT64`.
    pub const INT64: i32 = 9;
    /// `DT_BOOL`.
    pub const BOOL: i32 = 10;
    /// `DT_BFLOAT16`.
    pub const BFLOAT16: i32 = 14;
    /// `DT_UINT16`.
    pub const UINT16: i32 = 17;
    /// `DT_HALF`.
    pub const HALF: i32 = 19;
    /// `DT_UINT32`.
    pub const UINT32: i32 = 22;
    /// `DT_UINT64`.
    pub const UINT64: i32 = 23;
}

/// A `TensorProto`, in place: its dtype, shape, raw content and the typed value field of its dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tensor<'a> {
    /// `dtype`.
    pub dtype: i32,
    /// The number of elements of `tensor_shape` (the product of its dimensions; 1 for a scalar shape).
    pub elements: i64,
    /// Whether the shape has no dimension (a scalar, not a one-element array).
    pub rank0: bool,
    /// `tensor_content`.
    pub content: &'a [u8],
    /// The first value of the dtype's typed field, and how many it holds (packed and unpacked).
    pub first: Option<Number>,
    /// How many values the dtype's typed field holds.
    pub count: u64,
}

/// A number as a typed value field holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// `float_val`.
    F32(f32),
    /// `double_val`.
    F64(f64),
    /// `int_val`, `half_val` (bits), `bool_val`.
    I32(i32),
    /// `int64_val`.
    I64(i64),
    /// `uint32_val`.
    U32(u32),
    /// `uint64_val`.
    U64(u64),
}

/// The typed field TensorFlow stores `dtype`'s values in (`tensor.proto`; `tensor_util.py` `MakeNdarray`).
fn typed_field(dtype: i32) -> Option<u32> {
    use dtype::*;
    Some(match dtype {
        FLOAT => 5,
        DOUBLE => 6,
        INT32 | UINT8 | INT16 | INT8 | UINT16 => 7,
        INT64 => 10,
        BOOL => 11,
        HALF | BFLOAT16 => 13,
        UINT32 => 16,
        UINT64 => 17,
        _ => return None,
    })
}

impl<'a> Tensor<'a> {
    fn parse(data: &'a [u8]) -> Result<Self> {
        let mut w = Wire::new(data);
        let mut t = Tensor { dtype: 0, elements: 1, rank0: true, content: b"", first: None, count: 0 };
        // The dtype may come after the values on the wire: find it first.
        let mut pre = w;
        while let Some((n, p)) = pre.field()? {
            if n == 1 {
                t.dtype = varint(p)? as i32;
            }
        }
        let field = typed_field(t.dtype);
        while let Some((n, p)) = w.field()? {
            match n {
                2 => {
                    let (elements, rank0) = shape(bytes(p)?)?;
                    t.elements = elements;
                    t.rank0 = rank0;
                }
                4 => t.content = bytes(p)?,
                n if Some(n) == field => t.values(n, p)?,
                _ => {}
            }
        }
        Ok(t)
    }

    fn values(&mut self, field: u32, p: Payload<'a>) -> Result<()> {
        let one = |w: &mut Wire<'a>| -> Result<Number> {
            Ok(match field {
                5 => Number::F32(f32::from_bits(u32::from_le_bytes(w.take(4)?.try_into().unwrap_or_default()))),
                6 => Number::F64(f64::from_bits(u64::from_le_bytes(w.take(8)?.try_into().unwrap_or_default()))),
                10 => Number::I64(w.varint()? as i64),
                16 => Number::U32(w.varint()? as u32),
                17 => Number::U64(w.varint()?),
                _ => Number::I32(w.varint()? as i32),
            })
        };
        match p {
            Payload::Bytes(packed) => {
                let mut w = Wire::new(packed);
                while w.at < packed.len() {
                    let v = one(&mut w)?;
                    self.first.get_or_insert(v);
                    self.count += 1;
                }
            }
            Payload::Fixed32(bits) if field == 5 => {
                self.first.get_or_insert(Number::F32(f32::from_bits(bits)));
                self.count += 1;
            }
            Payload::Fixed64(bits) if field == 6 => {
                self.first.get_or_insert(Number::F64(f64::from_bits(bits)));
                self.count += 1;
            }
            Payload::Varint(v) if field != 5 && field != 6 => {
                let n = match field {
                    10 => Number::I64(v as i64),
                    16 => Number::U32(v as u32),
                    17 => Number::U64(v),
                    _ => Number::I32(v as i32),
                };
                self.first.get_or_insert(n);
                self.count += 1;
            }
            _ => return Err(DecodeError("wrong wire type")),
        }
        Ok(())
    }
}

/// The number of elements of a `TensorShapeProto` and whether it has no dimension.
fn shape(data: &[u8]) -> Result<(i64, bool)> {
    let mut w = Wire::new(data);
    let (mut elements, mut rank0) = (1i64, true);
    while let Some((n, p)) = w.field()? {
        if n == 2 {
            rank0 = false;
            let mut d = Wire::new(bytes(p)?);
            let mut size = 0i64;
            while let Some((n, p)) = d.field()? {
                match n {
                    1 => size = varint(p)? as i64,
                    2 => drop(string(p)?),
                    _ => {}
                }
            }
            elements = elements.saturating_mul(size);
        }
    }
    Ok((elements, rank0))
}

/// A scalar read from a value, with the type it was stored in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    /// A 32-bit float (`simple_value`, `DT_FLOAT`).
    F32(f32),
    /// A 64-bit float (`DT_DOUBLE`).
    F64(f64),
    /// A 16-bit float (`DT_HALF`), as its bits.
    F16(u16),
    /// A bfloat16 (`DT_BFLOAT16`), as its bits.
    BF16(u16),
    /// A signed integer (`DT_INT8` to `DT_INT64`).
    Int(i64),
    /// An unsigned integer (`DT_UINT8` to `DT_UINT64`).
    UInt(u64),
    /// A boolean (`DT_BOOL`).
    Bool(bool),
}

impl Scalar {
    /// The value as a double (exact, except integers beyond 2^53).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::F32(v) => f64::from(v),
            Scalar::F64(v) => v,
            Scalar::F16(bits) => f16_to_f64(bits),
            Scalar::BF16(bits) => f64::from(f32::from_bits(u32::from(bits) << 16)),
            Scalar::Int(v) => v as f64,
            Scalar::UInt(v) => v as f64,
            Scalar::Bool(b) => f64::from(u8::from(b)),
        }
    }
}

/// An IEEE half-precision float's value.
pub fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

impl Tensor<'_> {
    /// The tensor's value when it is a number with exactly one element (shape `[]`, `[1]`, `[1, 1]`, …) of a
    /// numeric dtype, as TensorFlow's `make_ndarray` reads it: `tensor_content` when present (little-endian), else
    /// the first value of the dtype's field, else zero.
    pub fn scalar(&self) -> Option<Scalar> {
        use dtype::*;
        if self.elements != 1 {
            return None;
        }
        if !self.content.is_empty() {
            let c = self.content;
            let le2 = || c.try_into().ok().map(u16::from_le_bytes);
            let le4 = || c.try_into().ok().map(u32::from_le_bytes);
            let le8 = || c.try_into().ok().map(u64::from_le_bytes);
            return match self.dtype {
                FLOAT => le4().map(|b| Scalar::F32(f32::from_bits(b))),
                DOUBLE => le8().map(|b| Scalar::F64(f64::from_bits(b))),
                HALF => le2().map(Scalar::F16),
                BFLOAT16 => le2().map(Scalar::BF16),
                INT8 => (c.len() == 1).then(|| Scalar::Int(i64::from(c[0] as i8))),
                UINT8 => (c.len() == 1).then(|| Scalar::UInt(u64::from(c[0]))),
                BOOL => (c.len() == 1).then(|| Scalar::Bool(c[0] != 0)),
                INT16 => le2().map(|b| Scalar::Int(i64::from(b as i16))),
                UINT16 => le2().map(|b| Scalar::UInt(u64::from(b))),
                INT32 => le4().map(|b| Scalar::Int(i64::from(b as i32))),
                UINT32 => le4().map(|b| Scalar::UInt(u64::from(b))),
                INT64 => le8().map(|b| Scalar::Int(b as i64)),
                UINT64 => le8().map(Scalar::UInt),
                _ => None,
            };
        }
        typed_field(self.dtype)?;
        let n = self.first.unwrap_or(Number::I32(0));
        let int = |n: Number| match n {
            Number::I32(v) => i64::from(v),
            Number::I64(v) => v,
            Number::U32(v) => i64::from(v),
            Number::U64(v) => v as i64,
            Number::F32(v) => v as i64,
            Number::F64(v) => v as i64,
        };
        Some(match (self.dtype, n) {
            (FLOAT, Number::F32(v)) => Scalar::F32(v),
            (FLOAT, _) => Scalar::F32(0.0),
            (DOUBLE, Number::F64(v)) => Scalar::F64(v),
            (DOUBLE, _) => Scalar::F64(0.0),
            (HALF, n) => Scalar::F16(int(n) as u16),
            (BFLOAT16, n) => Scalar::BF16(int(n) as u16),
            (INT8, n) => Scalar::Int(i64::from(int(n) as i8)),
            (INT16, n) => Scalar::Int(i64::from(int(n) as i16)),
            (INT32, n) => Scalar::Int(i64::from(int(n) as i32)),
            (INT64, n) => Scalar::Int(int(n)),
            (UINT8, n) => Scalar::UInt(u64::from(int(n) as u8)),
            (UINT16, n) => Scalar::UInt(u64::from(int(n) as u16)),
            (UINT32, n) => Scalar::UInt(u64::from(int(n) as u32)),
            (UINT64, Number::U64(v)) => Scalar::UInt(v),
            (UINT64, n) => Scalar::UInt(int(n) as u64),
            (BOOL, n) => Scalar::Bool(int(n) != 0),
            _ => return None,
        })
    }
}

impl Value<'_> {
    /// The value's scalar: `simple_value`, or a one-element numeric tensor.
    pub fn scalar(&self) -> Option<Scalar> {
        match self.kind {
            Kind::Simple(v) => Some(Scalar::F32(v)),
            Kind::Tensor(t) => t.scalar(),
            _ => None,
        }
    }
}
