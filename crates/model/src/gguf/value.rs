//! GGUF metadata values (all 13 value types, arrays included).

use super::cursor::Cursor;
use crate::error::{ModelError, Result};

/// Arrays of arrays are legal GGUF; real files never nest deeper than this.
const MAX_ARRAY_DEPTH: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Integer value of any integer type (and bool), if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            MetaValue::Bool(v) => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn read(cur: &mut Cursor<'_>, key: &str) -> Result<MetaValue> {
        let ty = cur.u32(&format!("value type of `{key}`"))?;
        read_typed(cur, ty, key, 0)
    }
}

/// Smallest encoded size of one value of type `ty`, used to cap array lengths by the file size.
fn min_size(ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,  // u64 length of an empty string
        9 => 12, // element type + count of an empty array
        _ => 8,
    }
}

fn read_typed(cur: &mut Cursor<'_>, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
    let what = format!("value of `{key}`");
    Ok(match ty {
        0 => MetaValue::U8(cur.u8(&what)?),
        1 => MetaValue::I8(cur.u8(&what)? as i8),
        2 => MetaValue::U16(cur.u16(&what)?),
        3 => MetaValue::I16(cur.u16(&what)? as i16),
        4 => MetaValue::U32(cur.u32(&what)?),
        5 => MetaValue::I32(cur.u32(&what)? as i32),
        6 => MetaValue::F32(cur.f32(&what)?),
        7 => match cur.u8(&what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => return Err(ModelError::Gguf(format!("`{key}`: invalid bool byte {b}"))),
        },
        8 => MetaValue::String(cur.string(&what)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(ModelError::Gguf(format!("`{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
            }
            let elem_ty = cur.u32(&format!("array element type of `{key}`"))?;
            if elem_ty > 12 {
                return Err(ModelError::Gguf(format!("`{key}`: unknown array element type {elem_ty}")));
            }
            let n = cur.count(min_size(elem_ty), &format!("array length of `{key}`"))?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_typed(cur, elem_ty, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::U64(cur.u64(&what)?),
        11 => MetaValue::I64(cur.u64(&what)? as i64),
        12 => MetaValue::F64(cur.f64(&what)?),
        other => return Err(ModelError::Gguf(format!("`{key}`: unknown value type {other}"))),
    })
}
