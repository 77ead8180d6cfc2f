//! Every parameter of the model under its name in the reference `hybrid_ref.py` (the
//! PyTorch `state_dict` names), so that weights move between the two by name: imported
//! from a reference export, saved in checkpoints, and visited by the optimizer.

use burn::module::Param;
use burn::prelude::*;

use crate::hybrid::Hybrid;
use crate::nn::{Conv2d, ConvTranspose2d, GatedResnet, ShiftedConv2d, ShiftedDeconv2d, WnConv2d};
use crate::vae::BottleneckBlock;

/// A parameter of rank 4 (weights) or 1 (biases and gains).
pub enum ParamMut<'a> {
    Rank4(&'a mut Param<Tensor<4>>),
    Rank1(&'a mut Param<Tensor<1>>),
}

impl ParamMut<'_> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ParamMut::Rank4(p) => p.dims().to_vec(),
            ParamMut::Rank1(p) => p.dims().to_vec(),
        }
    }
}

/// Calls `f` with each parameter of `model` and its reference name, in the reference's
/// `state_dict` order.
pub fn visit(model: &mut Hybrid, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
    let mut v = Visitor { f };
    // encoder.net: [conv, ELU] x downsamples, blocks, ELU, conv.
    let enc = &mut model.encoder;
    let d = enc.downs.len();
    for (i, conv) in enc.downs.iter_mut().enumerate() {
        v.conv(&format!("encoder.net.{}", 2 * i), conv);
    }
    for (j, block) in enc.blocks.iter_mut().enumerate() {
        v.block(&format!("encoder.net.{}", 2 * d + j), block);
    }
    let n = enc.blocks.len();
    v.conv(&format!("encoder.net.{}", 2 * d + n + 1), &mut enc.out);
    // decoder.net: conv, blocks, ELU, [deconv, ELU] x (downsamples - 1), deconv.
    let dec = &mut model.decoder;
    v.conv("decoder.net.0", &mut dec.input);
    for (j, block) in dec.blocks.iter_mut().enumerate() {
        v.block(&format!("decoder.net.{}", 1 + j), block);
    }
    let n = dec.blocks.len();
    for (i, up) in dec.ups.iter_mut().enumerate() {
        v.deconv(&format!("decoder.net.{}", n + 2 + 2 * i), up);
    }
    // pixelcnn
    let pc = &mut model.pixelcnn;
    v.shifted("pixelcnn.u_init", &mut pc.u_init);
    v.shifted("pixelcnn.ul_init_above", &mut pc.ul_init_above);
    v.shifted("pixelcnn.ul_init_left", &mut pc.ul_init_left);
    v.resnets("pixelcnn.up_u", &mut pc.up_u);
    v.resnets("pixelcnn.up_ul", &mut pc.up_ul);
    for (k, c) in pc.down_u.iter_mut().enumerate() {
        v.shifted(&format!("pixelcnn.down_u.{k}"), c);
    }
    for (k, c) in pc.down_ul.iter_mut().enumerate() {
        v.shifted(&format!("pixelcnn.down_ul.{k}"), c);
    }
    v.resnets("pixelcnn.dn_u", &mut pc.dn_u);
    v.resnets("pixelcnn.dn_ul", &mut pc.dn_ul);
    for (k, c) in pc.up_u_deconv.iter_mut().enumerate() {
        v.shifted_deconv(&format!("pixelcnn.up_u_deconv.{k}"), c);
    }
    for (k, c) in pc.up_ul_deconv.iter_mut().enumerate() {
        v.shifted_deconv(&format!("pixelcnn.up_ul_deconv.{k}"), c);
    }
    v.wn("pixelcnn.nin_out", &mut pc.nin_out);
    // mixing network: Sequential(conv, ELU, conv)
    v.conv("mix.0", &mut model.mix.hidden);
    v.conv("mix.2", &mut model.mix.out);
    if let Some(head) = &mut model.aux_head {
        v.conv("aux_head", head);
    }
}

/// The reference names and shapes of every parameter of `model`, in order.
pub fn names_and_shapes(model: &Hybrid) -> Vec<(String, Vec<usize>)> {
    let mut model = model.clone();
    let mut out = Vec::new();
    visit(&mut model, &mut |name, p| {
        out.push((name.to_string(), p.shape()))
    });
    out
}

struct Visitor<'f> {
    f: &'f mut dyn FnMut(&str, ParamMut<'_>),
}

impl Visitor<'_> {
    fn p4(&mut self, name: String, p: &mut Param<Tensor<4>>) {
        (self.f)(&name, ParamMut::Rank4(p))
    }

    fn p1(&mut self, name: String, p: &mut Param<Tensor<1>>) {
        (self.f)(&name, ParamMut::Rank1(p))
    }

    /// `nn.Conv2d`: `weight`, `bias` (if any).
    fn conv(&mut self, prefix: &str, c: &mut Conv2d) {
        self.p4(format!("{prefix}.weight"), &mut c.weight);
        if let Some(b) = &mut c.bias {
            self.p1(format!("{prefix}.bias"), b);
        }
    }

    /// `nn.ConvTranspose2d`: `weight`, `bias`.
    fn deconv(&mut self, prefix: &str, c: &mut ConvTranspose2d) {
        self.p4(format!("{prefix}.weight"), &mut c.weight);
        self.p1(format!("{prefix}.bias"), &mut c.bias);
    }

    fn block(&mut self, prefix: &str, b: &mut BottleneckBlock) {
        self.conv(&format!("{prefix}.c1"), &mut b.c1);
        self.conv(&format!("{prefix}.c2"), &mut b.c2);
        self.conv(&format!("{prefix}.c3"), &mut b.c3);
    }

    /// Weight norm: `V`, `g`, `b`.
    fn wn(&mut self, prefix: &str, c: &mut WnConv2d) {
        self.p4(format!("{prefix}.V"), &mut c.v);
        self.p1(format!("{prefix}.g"), &mut c.g);
        self.p1(format!("{prefix}.b"), &mut c.b);
    }

    fn shifted(&mut self, prefix: &str, c: &mut ShiftedConv2d) {
        self.wn(&format!("{prefix}.conv"), &mut c.conv);
    }

    fn shifted_deconv(&mut self, prefix: &str, c: &mut ShiftedDeconv2d) {
        let d = &mut c.deconv;
        self.p4(format!("{prefix}.deconv.V"), &mut d.v);
        self.p1(format!("{prefix}.deconv.g"), &mut d.g);
        self.p1(format!("{prefix}.deconv.b"), &mut d.b);
    }

    fn resnet(&mut self, prefix: &str, r: &mut GatedResnet) {
        self.shifted(&format!("{prefix}.conv1"), &mut r.conv1);
        if let Some(nin) = &mut r.nin_a {
            self.wn(&format!("{prefix}.nin_a"), nin);
        }
        self.shifted(&format!("{prefix}.conv2"), &mut r.conv2);
        if let Some(cond) = &mut r.cond {
            self.conv(&format!("{prefix}.cond"), cond);
        }
    }

    fn resnets(&mut self, prefix: &str, levels: &mut [Vec<GatedResnet>]) {
        for (s, level) in levels.iter_mut().enumerate() {
            for (i, r) in level.iter_mut().enumerate() {
                self.resnet(&format!("{prefix}.{s}.{i}"), r);
            }
        }
    }
}

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

    /// A float tensor of rank `D`. The shape must have `D` axes.
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let shape: [usize; D] = self
            .shape()
            .try_into()
            .expect("shape rank checked by the caller");
        Tensor::from_data(TensorData::new(self.to_f32(), shape), device)
    }

    /// Reads a float tensor back to the host.
    pub fn from_tensor<const D: usize>(t: Tensor<D>) -> Self {
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("a float tensor converts to f32");
        Stored::F32 { shape, data }
    }
}

/// The tensors and string metadata of one safetensors file.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    pub tensors: std::collections::BTreeMap<String, Stored>,
    pub metadata: std::collections::HashMap<String, String>,
}

impl TensorFile {
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
        Ok(Self { tensors, metadata })
    }

    /// Writes the file to `path` atomically: to a temporary file beside it, synced, then
    /// renamed over `path`, so a crash leaves the old file or the new one, never half.
    pub fn write_atomic(&self, path: &std::path::Path) -> crate::Result<()> {
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
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        let bytes = safetensors::serialize(views, metadata)
            .map_err(|e| Error::Checkpoint(format!("could not encode {}: {e}", path.display())))?;
        crate::fsutil::write_atomic(path, &bytes).map_err(|e| match e {
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

/// Replaces every parameter of `model` by the tensor of the same reference name in
/// `file`. Every parameter must be there with its shape, and every float tensor of the
/// file outside `skip_prefixes` must be a parameter: otherwise the file was written for
/// another architecture, and the error says which tensor differs.
pub fn load_weights(
    model: &mut Hybrid,
    file: &TensorFile,
    origin: &str,
    skip_prefixes: &[&str],
    device: &Device,
) -> crate::Result<()> {
    use crate::error::Error;
    let mut problems = Vec::new();
    let mut used = std::collections::HashSet::new();
    visit(model, &mut |name, param| {
        let Some(stored) = file.tensors.get(name) else {
            problems.push(format!("`{name}` is missing"));
            return;
        };
        used.insert(name.to_string());
        let want = param.shape();
        if stored.shape() != want.as_slice() {
            problems.push(format!(
                "`{name}` has shape {:?}, the model expects {want:?}",
                stored.shape()
            ));
            return;
        }
        match param {
            ParamMut::Rank4(p) => *p = Param::from_tensor(stored.to_tensor::<4>(device)),
            ParamMut::Rank1(p) => *p = Param::from_tensor(stored.to_tensor::<1>(device)),
        }
    });
    for name in file.tensors.keys() {
        if !used.contains(name) && !skip_prefixes.iter().any(|p| name.starts_with(p)) {
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

/// The parameters of `model` as stored tensors under their reference names.
pub fn weights(model: &Hybrid) -> Vec<(String, Stored)> {
    let mut model = model.clone();
    let mut out = Vec::new();
    visit(&mut model, &mut |name, p| {
        let stored = match p {
            ParamMut::Rank4(p) => Stored::from_tensor(p.val()),
            ParamMut::Rank1(p) => Stored::from_tensor(p.val()),
        };
        out.push((name.to_string(), stored));
    });
    out
}

/// Whether every parameter of `model` is finite.
pub fn all_finite(model: &Hybrid) -> bool {
    let mut model = model.clone();
    let mut ok = true;
    visit(&mut model, &mut |_, p| {
        if !ok {
            return;
        }
        let finite = match p {
            ParamMut::Rank4(p) => p.val().inner().is_finite().all().into_scalar::<bool>(),
            ParamMut::Rank1(p) => p.val().inner().is_finite().all().into_scalar::<bool>(),
        };
        ok &= finite;
    });
    ok
}
