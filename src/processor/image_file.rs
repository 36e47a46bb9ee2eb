//! Decoding a compressed frame (PNG or JPEG) with its size bounded before any pixel is decoded.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::error::{Error, Result};
use crate::limits::{check_image_size, MAX_IMAGE_BYTES};

/// Decodes a PNG or JPEG file held in memory. The header's width, height and bytes per pixel
/// are checked against [`MAX_IMAGE_BYTES`] ([`check_image_size`]) before decoding, so a small
/// file that would expand to gigabytes (a 130 KB PNG of 4096 x 4096 16-bit RGBA pixels) is
/// refused with [`Error::LimitExceeded`] having allocated nothing for its pixels; the decoder's
/// own allocation limit is set to the same bound. Another format, or a file that does not
/// decode, is [`Error::InvalidImage`].
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::InvalidImage(format!("cannot read the encoded image: {e}")))?;
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err(Error::InvalidImage("not a PNG or JPEG file".into()));
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| Error::InvalidImage(format!("cannot read the image header: {e}")))?;
    let (width, height) = decoder.dimensions();
    let bytes_per_pixel = u64::from(decoder.color_type().bytes_per_pixel());
    check_image_size(u64::from(width), u64::from(height), bytes_per_pixel)?;
    DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::InvalidImage(format!("cannot decode the PNG/JPEG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limit;

    fn png(image: &DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        let written = image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png);
        assert!(written.is_ok(), "{written:?}");
        bytes
    }

    #[test]
    fn decodes_within_the_bound_and_refuses_beyond_it_from_the_header() {
        let small = DynamicImage::new_rgb8(3, 2);
        let decoded = decode_image(&png(&small)).map(|i| i.to_rgb8());
        assert_eq!(decoded.ok(), Some(small.to_rgb8()));
        // 2048 x 2048 16-bit RGBA: 32 MiB of pixels in a file of a few KB.
        let large = DynamicImage::new_rgba16(2048, 2048);
        let file = png(&large);
        assert!(file.len() < 200_000, "{}", file.len());
        match decode_image(&file) {
            Err(Error::LimitExceeded { limit, got, .. }) => {
                assert_eq!(limit, Limit::ImageBytes);
                assert_eq!(got, 2048 * 2048 * 8);
            }
            other => panic!("{:?}", other.map(|i| (i.width(), i.height()))),
        }
        assert!(matches!(
            decode_image(b"GIF89a...."),
            Err(Error::InvalidImage(_))
        ));
        let file = png(&small);
        assert!(matches!(
            decode_image(&file[..file.len() / 2]),
            Err(Error::InvalidImage(_))
        ));
    }
}
