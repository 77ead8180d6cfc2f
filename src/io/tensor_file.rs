//! Safetensors files of named tensors and string metadata, with a checksum of the
//! tensors and an atomic write: the format of checkpoints (`crate::io::checkpoint`) and
//! of the reference's exports. Parameters go under their names in the reference
//! `hybrid_ref.py` (the PyTorch `state_dict` names, which are the model's `VarStore`
//! names), so that weights move between the two by name.

use tch::{Device, Tensor};

/// The metadata key of a file's checksum (MD5 of its tensors, hex).
const CHECKSUM_KEY: &str = "ibvae_checksum";

/// A tensor read from or written to a safetensors file: `f32` or `u8`, row-major.
#[derive(Debug, Clone)]
pub enum Stored {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    U8 { shape: Vec<usize>, data: Vec<u8> },
}

impl Stored {
    pub fn shape(&self) -> &[usize] {
        match self {
            Stored::F32 { shape, .. } | Stored::U8 { shape, .. } => shape,
        }
    }

    /// The values as `f32` (bytes are converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Stored::F32 { data, .. } => data.clone(),
            Stored::U8 { data, .. } => data.iter().map(|&b| b as f32).collect(),
        }
    }

    /// A float32 tensor on `device` (bytes are converted to their values).
    pub fn to_tensor(&self, device: Device) -> Tensor {
        let shape: Vec<i64> = self.shape().iter().map(|&d| d as i64).collect();
        Tensor::from_slice(&self.to_f32())
            .view(shape.as_slice())
            .to_device(device)
    }

    /// Reads a float tensor back to the host as float32.
    pub fn from_tensor(t: &Tensor) -> Self {
        Stored::F32 {
            shape: crate::model::ops::dims(t),
            data: crate::model::ops::host_f32(t),
        }
    }
}

/// The tensors and string metadata of one safetensors file.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    pub tensors: std::collections::BTreeMap<String, Stored>,
    pub metadata: std::collections::HashMap<String, String>,
}

impl TensorFile {
    /// The string metadata of the safetensors file at `path`, read from its header alone
    /// (the 8-byte header length, then the JSON header): the tensors are not read.
    pub fn read_metadata(
        path: &std::path::Path,
    ) -> crate::Result<std::collections::HashMap<String, String>> {
        use crate::error::{Error, IoContext};
        use std::io::Read;
        let bad = |what: &str| {
            Error::Checkpoint(format!(
                "{} is not a readable safetensors file ({what}); it may be truncated",
                path.display()
            ))
        };
        let mut file = std::fs::File::open(path).at(path)?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|_| bad("no header"))?;
        let len = u64::from_le_bytes(len);
        // safetensors caps its header at 100 MB.
        if len > 100_000_000 {
            return Err(bad("header too long"));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .map_err(|_| bad("header cut short"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| bad("header is not JSON"))?;
        Ok(header
            .get("__metadata__")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The checksum of the tensors (names, types, shapes and bytes, in name order) that
    /// [`TensorFile::write_atomic`] stores in the metadata and [`TensorFile::read`] checks.
    fn checksum(&self) -> String {
        use md5::{Digest, Md5};
        let mut h = Md5::new();
        for (name, t) in &self.tensors {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            for d in t.shape() {
                h.update((*d as u64).to_le_bytes());
            }
            match t {
                Stored::F32 { data, .. } => {
                    h.update([0u8]);
                    for v in data {
                        h.update(v.to_le_bytes());
                    }
                }
                Stored::U8 { data, .. } => {
                    h.update([1u8]);
                    h.update(data);
                }
            }
        }
        format!("{:x}", h.finalize())
    }

    /// Reads `path`; anything that is not a readable safetensors file of `f32` and `u8`
    /// tensors is a clear error.
    pub fn read(path: &std::path::Path) -> crate::Result<Self> {
        use crate::error::{Error, IoContext};
        use safetensors::{Dtype, SafeTensors};
        let bytes = std::fs::read(path).at(path)?;
        let bad = |e: safetensors::SafeTensorError| {
            Error::Checkpoint(format!(
                "{} is not a readable safetensors file ({e}); it may be truncated",
                path.display()
            ))
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
        let mut tensors = std::collections::BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let stored = match view.dtype() {
                Dtype::F32 => Stored::F32 {
                    shape,
                    data: view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                },
                Dtype::U8 => Stored::U8 {
                    shape,
                    data: view.data().to_vec(),
                },
                other => {
                    return Err(Error::Checkpoint(format!(
                        "{}: tensor `{name}` has dtype {other:?}; only F32 and U8 are read",
                        path.display()
                    )));
                }
            };
            tensors.insert(name, stored);
        }
        let file = Self { tensors, metadata };
        if let Some(want) = file.metadata.get(CHECKSUM_KEY)
            && *want != file.checksum()
        {
            return Err(Error::Checkpoint(format!(
                "{} is damaged: its tensors do not match the checksum written with them",
                path.display()
            )));
        }
        Ok(file)
    }

    /// Writes the file to `path` atomically: to a temporary file beside it, synced, then
    /// renamed over `path`, so a crash leaves the old file or the new one, never half.
    /// With `previous`, the file it replaces is kept there (see
    /// [`crate::io::fsutil::write_atomic_keeping`]). A checksum of the tensors goes into the
    /// metadata.
    pub fn write_atomic(
        &self,
        path: &std::path::Path,
        previous: Option<&std::path::Path>,
    ) -> crate::Result<()> {
        use crate::error::Error;
        use safetensors::tensor::{Dtype, TensorView};
        let byte_data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| match t {
                Stored::F32 { shape, data } => (
                    name.clone(),
                    Dtype::F32,
                    shape.clone(),
                    data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                Stored::U8 { shape, data } => {
                    (name.clone(), Dtype::U8, shape.clone(), data.clone())
                }
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = byte_data
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                let view = TensorView::new(*dtype, shape.clone(), bytes)
                    .expect("shape and byte count agree by construction");
                (name.clone(), view)
            })
            .collect();
        let mut metadata = self.metadata.clone();
        metadata.insert(CHECKSUM_KEY.into(), self.checksum());
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Checkpoint(format!("could not encode {}: {e}", path.display())))?;
        crate::io::fsutil::write_atomic_keeping(path, &bytes, previous).map_err(|e| match e {
            Error::Io { path, source } => Error::Checkpoint(format!(
                "could not save {}: {source}; the previous file, if any, is untouched \
                 (free some disk space and resume)",
                path.display()
            )),
            other => other,
        })?;
        Ok(())
    }
}

/// Replaces every parameter in `params` (name, tensor) by the tensor of the same
/// reference name in `tensors`. Every parameter must be there with its shape, and every
/// tensor outside `skip_prefixes` must be a parameter: otherwise the tensors were
/// written for another architecture, and the error says which tensor differs.
pub fn load_weights(
    params: &[(String, Tensor)],
    tensors: &std::collections::BTreeMap<String, Stored>,
    origin: &str,
    skip_prefixes: &[&str],
) -> crate::Result<()> {
    use crate::error::Error;
    let mut problems = Vec::new();
    let mut used = std::collections::HashSet::new();
    for (name, param) in params {
        let Some(stored) = tensors.get(name) else {
            problems.push(format!("`{name}` is missing"));
            continue;
        };
        used.insert(name.as_str());
        let want = crate::model::ops::dims(param);
        if stored.shape() != want.as_slice() {
            problems.push(format!(
                "`{name}` has shape {:?}, the model expects {want:?}",
                stored.shape()
            ));
            continue;
        }
        let value = stored.to_tensor(param.device()).to_kind(param.kind());
        tch::no_grad(|| param.shallow_clone().copy_(&value));
    }
    for name in tensors.keys() {
        if !used.contains(name.as_str()) && !skip_prefixes.iter().any(|p| name.starts_with(p)) {
            problems.push(format!("`{name}` is not a parameter of this model"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
    Err(Error::Checkpoint(format!(
        "{origin} does not fit the model (another preset, bottleneck or image shape?): {}{}",
        shown.join("; "),
        if problems.len() > 5 {
            format!("; and {} more", problems.len() - 5)
        } else {
            String::new()
        }
    )))
}
