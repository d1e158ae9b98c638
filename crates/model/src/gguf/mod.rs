//! A GGUF v2/v3 reader of our own: no well-kept Rust crate reads GGUF with the bounds checking we
//! need (every malformed file must become an error, never a panic), and the format is small.
//!
//! Layout: magic `GGUF`, version, tensor count, metadata count, metadata key/values, tensor infos,
//! padding to `general.alignment` (default 32), tensor data. Tensor offsets are relative to the
//! start of the data section.

mod cursor;
pub mod dequant;
pub mod quant;
pub mod types;
pub mod value;

use crate::error::{ModelError, Result};
use cursor::Cursor;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::Path;
pub use types::GgmlType;
pub use value::MetaValue;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<usize>,
    pub kind: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    /// Byte length, when the type's geometry is known.
    pub byte_len: Option<usize>,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

pub struct GgufFile {
    storage: Storage,
    pub version: u32,
    pub alignment: u64,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is outside
        // what any reader can defend against, and every offset is checked against the mapped length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        Self::parse(Storage::Mapped(map))
    }

    /// Parses GGUF bytes held in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self> {
        let bytes = storage.bytes();
        let mut cur = Cursor::new(bytes);
        let magic = cur.take(4, "magic")?;
        if magic != MAGIC {
            return Err(ModelError::Gguf(format!("bad magic {magic:02x?}, expected \"GGUF\"")));
        }
        let version = cur.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(ModelError::Gguf(format!("unsupported version {version} (supported: 2, 3)")));
        }
        // Minimum tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
        let n_tensors = cur.count(24, "tensor count")?;
        // Minimum key/value: empty key (8) + type (4) + one byte.
        let n_kv = cur.count(13, "metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = cur.string(&format!("metadata key #{i}"))?;
            let value = MetaValue::read(&mut cur, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(ModelError::Gguf(format!("duplicate metadata key `{key}`")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(ModelError::Gguf(format!("general.alignment {v:?} is not a positive power of two"))),
            },
        };

        let mut raw = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = cur.string(&format!("name of tensor #{i}"))?;
            let n_dims = cur.u32(&format!("dimension count of `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(ModelError::Gguf(format!(
                    "tensor `{name}` has {n_dims} dimensions (1..={MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                let v = cur.u64(&format!("dimension {d} of `{name}`"))?;
                dims.push(
                    usize::try_from(v)
                        .map_err(|_| ModelError::Gguf(format!("tensor `{name}`: dimension {v} too large")))?,
                );
            }
            let kind = GgmlType(cur.u32(&format!("type of `{name}`"))?);
            let rel = cur.u64(&format!("offset of `{name}`"))?;
            raw.push((name, dims, kind, rel));
        }

        let data_start = align_up(cur.position() as u64, alignment)
            .ok_or_else(|| ModelError::Gguf("data section offset overflows".into()))?;
        let file_len = bytes.len() as u64;
        if data_start > file_len && !raw.is_empty() {
            return Err(ModelError::Gguf(format!(
                "data section starts at {data_start} beyond the file end ({file_len})"
            )));
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = BTreeMap::new();
        for (name, dims, kind, rel) in raw {
            let info = validate_tensor(name, dims, kind, rel, data_start, alignment, file_len)?;
            if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(ModelError::Gguf(format!("duplicate tensor name `{}`", info.name)));
            }
            tensors.push(info);
        }

        Ok(GgufFile { storage, version, alignment, metadata, tensors, by_name })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// Raw bytes of a tensor (only for types of known geometry).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let len = info
            .byte_len
            .ok_or_else(|| ModelError::UnsupportedQuantization { tensor: info.name.clone(), kind: info.kind.name() })?;
        // Bounds were validated at parse time; `get` keeps this panic-free regardless.
        self.storage
            .bytes()
            .get(info.offset..info.offset + len)
            .ok_or_else(|| ModelError::Gguf(format!("tensor `{}` lies outside the file", info.name)))
    }

    /// A 2-D block-quantized tensor as a `QuantMatrix` `[dims[1], dims[0]]` (a copy of its blocks);
    /// `None` for float types, other ranks, or types without a kernel.
    pub fn tensor_quantized(&self, name: &str) -> Option<quant::QuantMatrix> {
        let info = self.tensor(name)?;
        let quantized =
            matches!(info.kind, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q4_K | GgmlType::Q6_K);
        if !quantized || info.dims.len() != 2 {
            return None;
        }
        let bytes = self.tensor_bytes(info).ok()?;
        quant::QuantMatrix::new(info.kind, info.dims[1], info.dims[0], bytes.to_vec())
    }

    /// The tensor dequantized to f32, in GGML order (row-major with `dims[0]` as row length).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if !info.kind.is_supported() {
            return Err(ModelError::UnsupportedQuantization { tensor: name.to_string(), kind: info.kind.name() });
        }
        let src = self.tensor_bytes(info)?;
        let mut out = vec![0f32; info.elements()];
        if !dequant::dequantize(info.kind, src, &mut out) {
            return Err(ModelError::UnsupportedQuantization { tensor: name.to_string(), kind: info.kind.name() });
        }
        Ok(out)
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

fn validate_tensor(
    name: String,
    dims: Vec<usize>,
    kind: GgmlType,
    rel: u64,
    data_start: u64,
    alignment: u64,
    file_len: u64,
) -> Result<TensorInfo> {
    let bad = |msg: String| Err(ModelError::Gguf(format!("tensor `{name}`: {msg}")));
    if !rel.is_multiple_of(alignment) {
        return bad(format!("offset {rel} is not a multiple of the alignment {alignment}"));
    }
    let elements = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(elements) = elements else { return bad(format!("element count of {dims:?} overflows")) };
    let Some(abs) = data_start.checked_add(rel) else { return bad("offset overflows".into()) };
    let byte_len = match kind.block() {
        Some((block_elems, block_bytes)) => {
            if !dims[0].is_multiple_of(block_elems) {
                return bad(format!(
                    "row length {} is not a multiple of the {} block size {block_elems}",
                    dims[0],
                    kind.name()
                ));
            }
            let Some(len) = (elements / block_elems).checked_mul(block_bytes) else {
                return bad("byte size overflows".into());
            };
            if abs.checked_add(len as u64).is_none_or(|end| end > file_len) {
                return bad(format!("data [{abs}, +{len}) runs past the file end ({file_len})"));
            }
            Some(len)
        }
        None => {
            if abs > file_len {
                return bad(format!("offset {abs} is beyond the file end ({file_len})"));
            }
            None
        }
    };
    let offset = usize::try_from(abs).map_err(|_| ModelError::Gguf(format!("tensor `{name}`: offset too large")))?;
    Ok(TensorInfo { name, dims, kind, offset, byte_len })
}
