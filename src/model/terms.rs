//! The five terms of the hybrid model's objective (SPEC section 5), in one type for every
//! place they travel: the per-image tensors of a forward pass, a batch's and an epoch's
//! sums on the host (nats), and the figures of an evaluation, a `metrics.jsonl` line and
//! a `results.csv` row (bits per dimension).

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Kind, Tensor};

use crate::model::units::bits_per_dim;

/// The loss terms, each a `T`: a per-image tensor `[B]` (nats) out of a forward pass, or
/// an `f64` (a sum in nats, or a mean in bits per dimension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Terms<T = f64> {
    /// `recon + kl`: the negative ELBO.
    pub nelbo: T,
    /// `KL(q(z|x) || N(0, I))`: how much the latents carry.
    pub kl: T,
    /// `-log p(x|z)`.
    pub recon: T,
    /// The VB layer's KL (`vb` only; not part of the ELBO).
    pub vb_rate: T,
    /// The auxiliary decoder's negative log-likelihood (`aux` only).
    pub aux_nll: T,
}

/// The names of the terms, in their order in every file.
pub const NAMES: [&str; 5] = ["nelbo", "kl", "recon", "vb_rate", "aux_nll"];

impl<T> Terms<T> {
    /// The terms in the order of [`NAMES`].
    pub fn values(&self) -> [&T; 5] {
        [
            &self.nelbo,
            &self.kl,
            &self.recon,
            &self.vb_rate,
            &self.aux_nll,
        ]
    }

    /// The terms from values in the order of [`NAMES`].
    pub fn from_values([nelbo, kl, recon, vb_rate, aux_nll]: [T; 5]) -> Self {
        Self {
            nelbo,
            kl,
            recon,
            vb_rate,
            aux_nll,
        }
    }

    /// Each term through `f`.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Terms<U> {
        Terms::from_values(self.values().map(f))
    }
}

impl Terms<f64> {
    /// Adds `other` term by term.
    pub fn add(&mut self, other: &Self) {
        self.nelbo += other.nelbo;
        self.kl += other.kl;
        self.recon += other.recon;
        self.vb_rate += other.vb_rate;
        self.aux_nll += other.aux_nll;
    }

    /// Sums over `images` images of `dims` dimensions each (nats) as means in bits per
    /// dimension.
    pub fn bits_per_dim(&self, images: usize, dims: usize) -> Self {
        self.map(|&v| bits_per_dim(v / images.max(1) as f64, dims))
    }
}

impl Terms<Tensor> {
    /// The batch sums of the per-image terms, as one `[5]` float32 tensor on the device
    /// (in the order of [`NAMES`]): what a training step accumulates without a transfer.
    pub fn batch_sums(&self) -> Tensor {
        let sums: Vec<Tensor> = self
            .values()
            .iter()
            .map(|t| t.detach().sum(Kind::Float))
            .collect();
        Tensor::stack(&sums, 0)
    }
}

/// Writes the terms as entries `<prefix><name><suffix>` of the enclosing object (a field
/// marked `#[serde(flatten, with = "...")]`), and reads them back, ignoring other keys.
struct Affixed {
    prefix: &'static str,
    suffix: &'static str,
}

impl Affixed {
    fn key(&self, name: &str) -> String {
        format!("{}{name}{}", self.prefix, self.suffix)
    }

    fn serialize<S: Serializer>(&self, terms: &Terms, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(NAMES.len()))?;
        for (name, value) in NAMES.iter().zip(terms.values()) {
            map.serialize_entry(&self.key(name), value)?;
        }
        map.end()
    }

    fn deserialize<'de, D: Deserializer<'de>>(self, d: D) -> Result<Terms, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Affixed {
    type Value = Terms;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the terms {}", self.key("<name>"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Terms, A::Error> {
        let mut found: [Option<f64>; 5] = [None; 5];
        while let Some(key) = map.next_key::<String>()? {
            match NAMES.iter().position(|n| self.key(n) == key) {
                Some(i) => found[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let mut values = [0.0; 5];
        for (i, v) in found.into_iter().enumerate() {
            values[i] = v.ok_or_else(|| de::Error::missing_field(NAMES[i]))?;
        }
        Ok(Terms::from_values(values))
    }
}

/// Serde adapters for the terms in bits per dimension under the names of the files.
macro_rules! affixed {
    ($(#[$doc:meta])* $module:ident, $prefix:literal, $suffix:literal) => {
        $(#[$doc])*
        pub mod $module {
            use super::{Affixed, Terms};

            const AFFIXES: Affixed = Affixed {
                prefix: $prefix,
                suffix: $suffix,
            };

            pub fn serialize<S: serde::Serializer>(t: &Terms, s: S) -> Result<S::Ok, S::Error> {
                AFFIXES.serialize(t, s)
            }

            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Terms, D::Error> {
                AFFIXES.deserialize(d)
            }
        }
    };
}

affixed!(
    /// `nelbo_bpd`, `kl_bpd`, ...: an evaluation (`eval.json`, a metrics line's `test`).
    bpd,
    "",
    "_bpd"
);
affixed!(
    /// `train_nelbo_bpd`, `train_kl_bpd`, ...: the training terms of a metrics line.
    train_bpd,
    "train_",
    "_bpd"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Line {
        step: u64,
        #[serde(flatten, with = "train_bpd")]
        train: Terms,
        other: Vec<u8>,
    }

    /// The adapters write the names of the files and read them back exactly, beside
    /// other keys of any type.
    #[test]
    fn terms_keep_the_names_of_the_files() {
        let line = Line {
            step: 3,
            train: Terms::from_values([1.5, 0.1, 1.4, 0.0, 0.25]),
            other: vec![1, 2],
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            "{\"step\":3,\"train_nelbo_bpd\":1.5,\"train_kl_bpd\":0.1,\"train_recon_bpd\":1.4,\
             \"train_vb_rate_bpd\":0.0,\"train_aux_nll_bpd\":0.25,\"other\":[1,2]}"
        );
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line);
        let err = serde_json::from_str::<Line>("{\"step\":3,\"other\":[]}").unwrap_err();
        assert!(err.to_string().contains("nelbo"), "{err}");
    }

    /// Sums in nats over 4 images of 2 dimensions, as bits per dimension by hand:
    /// `v / 4 / 2 / ln 2`.
    #[test]
    fn sums_become_bits_per_dimension() {
        let sums = Terms::from_values([8.0, 4.0, 4.0, 2.0, 0.0]);
        let bpd = sums.bits_per_dim(4, 2);
        let want = |v: f64| v / 8.0 / std::f64::consts::LN_2;
        assert_eq!(bpd, sums.map(|&v| want(v)));
        let t = Terms::from_values([3.0, 1.0, 2.0, 0.5, 0.0].map(|v| Tensor::from_slice(&[v, v])));
        assert_eq!(
            crate::model::ops::host_f64(&t.batch_sums()),
            [6.0, 2.0, 4.0, 1.0, 0.0]
        );
    }
}
