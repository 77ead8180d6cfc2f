//! Bits per dimension: the one place where nats become the unit every report uses.

/// Converts a negative log-likelihood (or any information quantity) of one image, in
/// nats, to bits per sub-pixel: `nats / (D ln 2)` with `D = C * H * W` (SPEC section 5).
pub fn bits_per_dim(nats: f64, dims: usize) -> f64 {
    nats * bits_per_dim_factor(dims)
}

/// The factor `1 / (D ln 2)` of [`bits_per_dim`], for multiplying a tensor of nats.
pub fn bits_per_dim_factor(dims: usize) -> f64 {
    1.0 / (dims as f64 * std::f64::consts::LN_2)
}

/// Nats to bits.
pub fn nats_to_bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_dim_of_one_uniform_byte_image_is_eight() {
        // A uniform distribution over 256 levels costs ln(256) nats per sub-pixel = 8 bits.
        let dims = 3 * 32 * 32;
        let nats = dims as f64 * 256f64.ln();
        assert!((bits_per_dim(nats, dims) - 8.0).abs() < 1e-12);
        assert!((nats_to_bits(2f64.ln()) - 1.0).abs() < 1e-15);
    }
}
