//! The rectangle arithmetic of the cached sampler: a run of new positions in raster order
//! as at most three rectangles, and the zero-padded window of an input map that a
//! rectangle of outputs reads.

use tch::Tensor;

use super::map::Map;
use crate::model::ops::concat_elu;

/// The positions `start..end` (raster order, rows of `cols`) as at most three rectangles
/// `(r0, r1, c0, c1)`: the end of a row, whole rows, the start of a row.
pub(super) fn rectangles(start: i64, end: i64, cols: i64) -> Vec<(i64, i64, i64, i64)> {
    let mut out = Vec::with_capacity(3);
    let mut p = start;
    while p < end {
        let (r, c) = (p / cols, p % cols);
        if c == 0 && end - p >= cols {
            let n = (end - p) / cols;
            out.push((r, r + n, 0, cols));
            p += n * cols;
        } else {
            let stop = end.min((r + 1) * cols);
            out.push((r, r + 1, c, stop - r * cols));
            p = stop;
        }
    }
    out
}

/// Rows `rows.0..rows.1` and columns `cols.0..cols.1` of `map`, through `concat_elu`
/// when `elu_pair`, with zeros where they lie outside it (the zero padding of the full
/// convolution, which pads after `concat_elu` as this does).
pub(super) fn padded_window(
    map: &Map,
    rows: (i64, i64),
    cols: (i64, i64),
    elu_pair: bool,
) -> Tensor {
    let (r_lo, r_hi) = (rows.0.max(0), rows.1.min(map.rows));
    let (c_lo, c_hi) = (cols.0.max(0), cols.1.min(map.cols));
    if r_hi <= r_lo || c_hi <= c_lo {
        // Wholly outside: zeros (concat_elu doubles the channels).
        let s = map.t.size();
        let ch = if elu_pair { 2 * s[1] } else { s[1] };
        return Tensor::zeros(
            [s[0], ch, rows.1 - rows.0, cols.1 - cols.0],
            (map.t.kind(), map.t.device()),
        );
    }
    let inside = map
        .t
        .narrow(2, r_lo, r_hi - r_lo)
        .narrow(3, c_lo, c_hi - c_lo);
    let inside = if elu_pair {
        concat_elu(&inside)
    } else {
        inside
    };
    let pad = [c_lo - cols.0, cols.1 - c_hi, r_lo - rows.0, rows.1 - r_hi];
    if pad == [0; 4] {
        inside
    } else {
        inside.constant_pad_nd(pad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_positions_splits_into_a_row_end_whole_rows_and_a_row_start() {
        assert_eq!(rectangles(3, 4, 8), vec![(0, 1, 3, 4)]);
        assert_eq!(
            rectangles(5, 29, 8),
            vec![(0, 1, 5, 8), (1, 3, 0, 8), (3, 4, 0, 5)]
        );
        assert_eq!(rectangles(0, 16, 8), vec![(0, 2, 0, 8)]);
        assert_eq!(rectangles(8, 8, 8), vec![]);
    }
}
