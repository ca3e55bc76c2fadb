//! Sized photo renditions (`/users/{id}/photos/{size}/$value`). Graph scales the uploaded photo to the
//! HD sizes Microsoft 365 supports; the simulator cannot scale arbitrary uploads, so it renders a valid
//! square PNG of the requested size whose pixels derive from the photo's media etag: a new photo gives
//! new bytes, the same photo always the same bytes, and a decoder sees the requested dimensions.

use sha2::{Digest, Sha256};

use super::Photo;

/// The HD photo sizes Microsoft 365 serves (graph-facts §7, profilephoto-get).
pub const HD_SIZES: [u32; 9] = [48, 64, 96, 120, 240, 360, 432, 504, 648];

/// The content type of every rendition.
pub const RENDITION_CONTENT_TYPE: &str = "image/png";

/// Parses a `{n}x{n}` size segment into a supported HD size.
pub fn parse_size(segment: &str) -> Option<u32> {
    let (w, h) = segment.split_once('x')?;
    let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
    (w == h && HD_SIZES.contains(&w)).then_some(w)
}

/// The rendition of `photo` at `size`, or `None` when that size is not available: a size larger than
/// the upload is never served (the docs' example: a 504x504 upload has every size but 648x648).
pub fn render(photo: &Photo, size: u32) -> Option<Vec<u8>> {
    if size > photo.width.min(photo.height) {
        return None;
    }
    let seed = Sha256::digest(photo.etag.as_bytes());
    Some(png(
        size,
        [seed[0], seed[1], seed[2]],
        [seed[3], seed[4], seed[5]],
    ))
}

/// A two-colour palette PNG, `size` pixels square: diagonal bands of `fg` on `bg`, one bit per pixel,
/// zlib-wrapped with stored (uncompressed) deflate blocks so no compressor is needed.
fn png(size: u32, fg: [u8; 3], bg: [u8; 3]) -> Vec<u8> {
    let row_bytes = size.div_ceil(8) as usize;
    let mut raw = Vec::with_capacity((row_bytes + 1) * size as usize);
    for y in 0..size {
        raw.push(0); // filter: none
        for chunk in 0..row_bytes {
            let mut byte = 0u8;
            for bit in 0..8 {
                let x = chunk as u32 * 8 + bit;
                if x < size && ((x + y) / 8).is_multiple_of(2) {
                    byte |= 0x80 >> bit;
                }
            }
            raw.push(byte);
        }
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[1, 3, 0, 0, 0]); // bit depth 1, palette, deflate, filter 0, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", &[bg, fg].concat());
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored deflate blocks (RFC 1950/1951).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(0xFFFF).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::make_photo;

    #[test]
    fn only_square_hd_sizes_parse() {
        assert_eq!(parse_size("240x240"), Some(240));
        assert_eq!(parse_size("48x48"), Some(48));
        assert_eq!(parse_size("240x120"), None);
        assert_eq!(parse_size("100x100"), None);
        assert_eq!(parse_size("large"), None);
    }

    #[test]
    fn crc32_matches_the_png_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn a_rendition_is_a_png_of_the_size_and_changes_with_the_photo() {
        let a = make_photo(vec![1, 2, 3], "image/jpeg".into(), 504, 504);
        let b = make_photo(vec![4, 5, 6], "image/jpeg".into(), 504, 504);
        let png = render(&a, 240).expect("240 fits a 504 upload");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(&png[16..20], &240u32.to_be_bytes());
        assert_eq!(&png[20..24], &240u32.to_be_bytes());
        assert_eq!(render(&a, 240), Some(png.clone()));
        assert_ne!(render(&b, 240), Some(png));
        assert_eq!(render(&a, 648), None);
    }

    #[test]
    fn stored_blocks_split_at_64k_and_carry_the_adler_checksum() {
        let data = vec![7u8; 70_000];
        let z = zlib_stored(&data);
        assert_eq!(z.len(), 2 + 2 * 5 + data.len() + 4);
        assert_eq!(z[2], 0, "first block is not final");
        assert_eq!(z[2 + 5 + 0xFFFF], 1, "second block is final");
    }
}
