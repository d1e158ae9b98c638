//! Where weights come from: a GGUF file or an HF safetensors directory, behind one interface that
//! hands out f32 tensors in row-major order (outermost dimension first).

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub trait TensorSource {
    /// Row-major shape of a tensor, if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor as f32, row-major.
    fn load_f32(&self, name: &str) -> Result<Vec<f32>>;

    /// The tensor's GGML blocks as stored, when it is block-quantized (Q4_0/Q4_1/Q8_0/K-quants);
    /// `None` for float tensors and for sources without blocks.
    fn load_quantized(&self, _name: &str) -> Option<crate::gguf::quant::QuantMatrix> {
        None
    }

    /// Loads a tensor and checks its shape.
    fn load_shaped(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let shape = self.shape(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if shape != expected {
            return Err(ModelError::TensorShape { name: name.to_string(), expected: expected.to_vec(), actual: shape });
        }
        self.load_f32(name)
    }
}

impl TensorSource for GgufFile {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        // GGML lists the fastest dimension first; row-major order is the reverse.
        self.tensor(name).map(|t| t.dims.iter().rev().copied().collect())
    }
    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensor_f32(name)
    }
    fn load_quantized(&self, name: &str) -> Option<crate::gguf::quant::QuantMatrix> {
        self.tensor_quantized(name)
    }
}

enum Shard {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Shard {
    fn bytes(&self) -> &[u8] {
        match self {
            Shard::Mapped(m) => m,
            Shard::Owned(v) => v,
        }
    }
}

/// A directory with `config.json` and one or more `*.safetensors` shards, memory-mapped.
pub struct SafetensorsDir {
    pub dir: PathBuf,
    maps: Vec<Shard>,
    /// Tensor name → (shard index, row-major shape, dtype).
    index: BTreeMap<String, (usize, Vec<usize>, Dtype)>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
        let mut shards: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(ModelError::Safetensors(format!("no *.safetensors files in {}", dir.display())));
        }
        let mut maps = Vec::with_capacity(shards.len());
        for path in &shards {
            let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
            // SAFETY: read-only map; the safetensors parser bounds-checks every tensor against its length.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            maps.push((path.display().to_string(), Shard::Mapped(map)));
        }
        Self::index(dir.to_path_buf(), maps)
    }

    /// Shards held in memory (tests, fuzzing).
    pub fn from_shard_bytes(shards: Vec<Vec<u8>>) -> Result<Self> {
        let named = shards.into_iter().enumerate().map(|(i, b)| (format!("shard {i}"), Shard::Owned(b))).collect();
        Self::index(PathBuf::new(), named)
    }

    fn index(dir: PathBuf, shards: Vec<(String, Shard)>) -> Result<Self> {
        let mut index = BTreeMap::new();
        let mut maps = Vec::with_capacity(shards.len());
        for (i, (label, shard)) in shards.into_iter().enumerate() {
            let st = SafeTensors::deserialize(shard.bytes())
                .map_err(|e| ModelError::Safetensors(format!("{label}: {e}")))?;
            for (name, view) in st.tensors() {
                if index.insert(name.clone(), (i, view.shape().to_vec(), view.dtype())).is_some() {
                    return Err(ModelError::Safetensors(format!("tensor `{name}` appears in more than one shard")));
                }
            }
            drop(st);
            maps.push(shard);
        }
        Ok(SafetensorsDir { dir, maps, index })
    }

    /// Names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

impl TensorSource for SafetensorsDir {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|(_, s, _)| s.clone())
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (shard, _, _) = self.index.get(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let st =
            SafeTensors::deserialize(self.maps[*shard].bytes()).map_err(|e| ModelError::Safetensors(e.to_string()))?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors(format!("`{name}`: {e}")))?;
        let data = view.data();
        let out = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(ModelError::UnsupportedQuantization {
                    tensor: name.to_string(),
                    kind: format!("{other:?}"),
                })
            }
        };
        Ok(out)
    }
}
