//! Image grids as PNG files.

use std::path::Path;

use crate::error::{Error, Result};

/// A grid of `n` images (`u8`, NCHW, `channels` 1 or 3) with `cols` per row and a
/// `pad`-pixel white border between them. Returns `(width, height, rgb bytes)`.
pub fn grid(
    images: &[u8],
    n: usize,
    channels: usize,
    size: usize,
    cols: usize,
    pad: usize,
) -> (usize, usize, Vec<u8>) {
    let cols = cols.max(1).min(n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let width = cols * size + (cols + 1) * pad;
    let height = rows * size + (rows + 1) * pad;
    let mut rgb = vec![255u8; width * height * 3];
    let plane = size * size;
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        let (x0, y0) = (pad + c * (size + pad), pad + r * (size + pad));
        let img = &images[i * channels * plane..(i + 1) * channels * plane];
        for y in 0..size {
            for x in 0..size {
                let at = ((y0 + y) * width + x0 + x) * 3;
                for k in 0..3 {
                    let ch = if channels == 3 { k } else { 0 };
                    rgb[at + k] = img[ch * plane + y * size + x];
                }
            }
        }
    }
    (width, height, rgb)
}

/// Writes RGB bytes as a PNG, scaled up by an integer factor so small images are legible.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8], scale: usize) -> Result<()> {
    let bytes = encode_png(width, height, rgb, scale)?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::io::fsutil::write_atomic(path, &bytes)
}

/// RGB bytes as the bytes of a PNG file, scaled up by an integer factor.
pub fn encode_png(width: usize, height: usize, rgb: &[u8], scale: usize) -> Result<Vec<u8>> {
    let scale = scale.max(1);
    let (w, h) = (width * scale, height * scale);
    let mut scaled = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let src = ((y / scale) * width + x / scale) * 3;
            scaled[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&rgb[src..src + 3]);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| Error::Config(format!("PNG encoding failed: {e}")))?;
        writer
            .write_image_data(&scaled)
            .map_err(|e| Error::Config(format!("PNG encoding failed: {e}")))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_with_borders() {
        // Two 2x2 grey images, values 10 and 20.
        let images = [vec![10u8; 4], vec![20u8; 4]].concat();
        let (w, h, rgb) = grid(&images, 2, 1, 2, 2, 1);
        assert_eq!((w, h), (7, 4));
        let px = |x: usize, y: usize| rgb[(y * w + x) * 3];
        assert_eq!(px(0, 0), 255);
        assert_eq!(px(1, 1), 10);
        assert_eq!(px(4, 2), 20);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("g.png");
        write_png(&path, w, h, &rgb, 3).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (21, 12));
    }
}
