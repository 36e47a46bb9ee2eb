//! The json-numpy wire format (PyPI `json-numpy`, which OpenVLA's `deploy.py` and its clients
//! install with `json_numpy.patch()`), and the base64 PNG/JPEG image form this server adds.
//!
//! json-numpy writes an array as the object
//! `{"__numpy__": <base64 of the raw C-order bytes>, "dtype": <numpy descr>, "shape": [..]}`,
//! with standard base64 (padded) and the dtype as numpy's `dtype_to_descr`, e.g. `"|u1"` for
//! uint8 and `"<f8"` for little-endian float64. Checked against json-numpy 2.1 (its `default` and
//! `object_hook`): a uint8 image of shape (2, 2, 3) is sent as
//! `{"__numpy__": "AAAAAAAAAAAAAAAA", "dtype": "|u1", "shape": [2, 2, 3]}`.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};
use serde::Serialize;
use serde_json::Value;

use crate::errors::ApiError;

/// Standard-alphabet base64 that accepts input with or without padding (what a hand-written
/// client may send), and writes it padded, as Python's `b64encode` does.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// numpy's spellings of uint8 (`np.dtype(d) == np.uint8` for each); json-numpy sends `"|u1"`.
const UINT8_DESCRS: [&str; 6] = ["|u1", "u1", "<u1", ">u1", "=u1", "uint8"];

/// The image of a request's `image` field: a json-numpy uint8 array (`HxWx3` RGB, `HxWx4`
/// RGBA, or `HxW` grey: what `PIL.Image.fromarray(image).convert("RGB")` in `deploy.py`
/// accepts), or a string holding a base64 PNG or JPEG file (optionally as a
/// `data:image/...;base64,` URL).
pub fn decode_image(value: &Value) -> Result<DynamicImage, ApiError> {
    match value {
        Value::Object(map) if map.contains_key("__numpy__") => decode_numpy_image(map),
        Value::Object(_) => Err(ApiError::image(
            "an object without `__numpy__`: send a json-numpy array (client: \
             `json_numpy.patch()` before `requests.post(json=...)`) or a base64 PNG/JPEG string",
        )),
        Value::String(text) => decode_encoded_image(text),
        Value::Array(_) => Err(ApiError::image(
            "a nested list is not accepted: send a json-numpy uint8 array or a base64 PNG/JPEG \
             string",
        )),
        other => Err(ApiError::image(format!(
            "expected a json-numpy array or a base64 PNG/JPEG string, found {}",
            type_name(other)
        ))),
    }
}

/// A json-numpy object's fields, before their meaning is checked.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NumpyFields {
    #[serde(rename = "__numpy__")]
    data: String,
    dtype: Value,
    shape: Vec<usize>,
}

fn decode_numpy_image(map: &serde_json::Map<String, Value>) -> Result<DynamicImage, ApiError> {
    let fields: NumpyFields = serde_json::from_value(Value::Object(map.clone()))
        .map_err(|e| ApiError::image(format!("malformed json-numpy array: {e}")))?;
    let dtype = fields.dtype.as_str().unwrap_or_default();
    if !UINT8_DESCRS.contains(&dtype) {
        return Err(ApiError::image(format!(
            "dtype {}: expected uint8 (`|u1`); convert with `image.astype(np.uint8)`",
            fields.dtype
        )));
    }
    let (height, width, channels) = match fields.shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c @ (3 | 4)] => (h, w, c),
        _ => {
            return Err(ApiError::image(format!(
                "shape {:?}: expected [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] (grey)",
                fields.shape
            )))
        }
    };
    if height == 0 || width == 0 {
        return Err(ApiError::image(format!("empty image {:?}", fields.shape)));
    }
    spec_vla::limits::check_image_size(width as u64, height as u64, channels as u64)
        .map_err(ApiError::from)?;
    let data = BASE64
        .decode(fields.data.as_bytes())
        .map_err(|e| ApiError::image(format!("`__numpy__` is not valid base64: {e}")))?;
    let expected = height
        .checked_mul(width)
        .and_then(|n| n.checked_mul(channels));
    if expected != Some(data.len()) {
        return Err(ApiError::image(format!(
            "{} bytes do not fill shape {:?} of uint8",
            data.len(),
            fields.shape
        )));
    }
    let (w, h) = match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(ApiError::image(format!(
                "shape {:?} is too large",
                fields.shape
            )))
        }
    };
    let too_large = || ApiError::image(format!("shape {:?} does not fit its data", fields.shape));
    Ok(match channels {
        1 => DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, data).ok_or_else(too_large)?),
        3 => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, data).ok_or_else(too_large)?),
        _ => DynamicImage::ImageRgba8(RgbaImage::from_raw(w, h, data).ok_or_else(too_large)?),
    })
}

fn decode_encoded_image(text: &str) -> Result<DynamicImage, ApiError> {
    let payload = match text.strip_prefix("data:") {
        Some(url) => match url.split_once(";base64,") {
            Some((_, data)) => data,
            None => return Err(ApiError::image("a data URL that is not `;base64,`")),
        },
        None => text,
    };
    let bytes = BASE64
        .decode(payload.trim().as_bytes())
        .map_err(|e| ApiError::image(format!("a string that is not valid base64: {e}")))?;
    // The library checks the decoded size from the header before decoding any pixel.
    spec_vla::processor::decode_image(&bytes).map_err(ApiError::from)
}

/// json-numpy's encoding of a float64 vector, fields in json-numpy's order.
#[derive(Serialize)]
pub struct NumpyF64Vector {
    #[serde(rename = "__numpy__")]
    data: String,
    dtype: &'static str,
    shape: [usize; 1],
}

impl NumpyF64Vector {
    /// `values` as numpy would hold them: little-endian float64 (`"<f8"`), whatever this
    /// machine's byte order.
    pub fn new(values: &[f64]) -> Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            data: BASE64.encode(bytes),
            dtype: "<f8",
            shape: [values.len()],
        }
    }
}

/// The JSON type of `value`, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json output spaced as Python's `json.dumps` defaults (`", "` and `": "`), so that a
/// doubly-encoded answer is byte for byte the text `json_numpy.dumps` would have produced.
pub fn to_python_json(value: &impl Serialize) -> serde_json::Result<String> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonSpacing);
    value.serialize(&mut serializer)?;
    // serde_json writes only UTF-8.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A serde_json formatter with Python's default separators; everything else is compact.
struct PythonSpacing;

impl serde_json::ser::Formatter for PythonSpacing {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What deploy.py's stack (FastAPI + json-numpy 2.1) answered, captured from it with the
    /// model replaced by this action: the bare body, and the doubly-encoded one.
    const ACTION: [f64; 7] = [0.1, -0.25, 1.0, 0.0, 3.5, -7.0, 1.0];
    const DEPLOY_BODY: &str = r#"{"__numpy__":"mpmZmZmZuT8AAAAAAADQvwAAAAAAAPA/AAAAAAAAAAAAAAAAAAAMQAAAAAAAABzAAAAAAAAA8D8=","dtype":"<f8","shape":[7]}"#;
    const DEPLOY_ENCODED_BODY: &str = r#""{\"__numpy__\": \"mpmZmZmZuT8AAAAAAADQvwAAAAAAAPA/AAAAAAAAAAAAAAAAAAAMQAAAAAAAABzAAAAAAAAA8D8=\", \"dtype\": \"<f8\", \"shape\": [7]}""#;

    #[test]
    fn action_encodings_are_byte_for_byte_deploy_py_s() -> anyhow::Result<()> {
        let array = NumpyF64Vector::new(&ACTION);
        assert_eq!(serde_json::to_string(&array)?, DEPLOY_BODY);
        let inner = to_python_json(&array)?;
        assert_eq!(serde_json::to_string(&inner)?, DEPLOY_ENCODED_BODY);
        Ok(())
    }

    fn numpy(data: &[u8], dtype: &str, shape: &[usize]) -> Value {
        json!({"__numpy__": BASE64.encode(data), "dtype": dtype, "shape": shape})
    }

    #[test]
    fn decodes_json_numpy_images_as_pil_would() -> anyhow::Result<()> {
        // json-numpy's own encoding of np.zeros((2, 2, 3), np.uint8).
        let sent = json!({"__numpy__": "AAAAAAAAAAAAAAAA", "dtype": "|u1", "shape": [2, 2, 3]});
        assert_eq!(decode_image(&sent)?.to_rgb8().dimensions(), (2, 2));
        // Row-major HxWxC: pixel (x=1, y=0) is bytes 3..6.
        let data: Vec<u8> = (0..12).collect();
        let rgb = decode_image(&numpy(&data, "|u1", &[2, 2, 3]))?.to_rgb8();
        assert_eq!(rgb.get_pixel(1, 0).0, [3, 4, 5]);
        let rgba = decode_image(&numpy(&data[..8], "|u1", &[1, 2, 4]))?.to_rgb8();
        assert_eq!(rgba.get_pixel(1, 0).0, [4, 5, 6], "alpha dropped");
        let grey = decode_image(&numpy(&[7, 9], "uint8", &[1, 2]))?.to_rgb8();
        assert_eq!(grey.get_pixel(1, 0).0, [9, 9, 9]);
        Ok(())
    }

    #[test]
    fn refuses_unusable_arrays_with_a_reason() {
        let cases = [
            (numpy(&[0; 12], "<f4", &[1, 1, 3]), "dtype"),
            (numpy(&[0; 12], "|u1", &[2, 2, 2]), "shape"),
            (numpy(&[0; 12], "|u1", &[12]), "shape"),
            (numpy(&[0; 11], "|u1", &[2, 2, 3]), "bytes"),
            (numpy(&[], "|u1", &[0, 2, 3]), "empty"),
            (numpy(&[0; 3], "|u1", &[usize::MAX, 2, 3]), "bytes"),
            (
                json!({"__numpy__": "!!", "dtype": "|u1", "shape": [1, 1, 3]}),
                "base64",
            ),
            (json!({"__numpy__": "AAAA", "dtype": "|u1"}), "malformed"),
            (json!({"data": "AAAA"}), "__numpy__"),
            (json!([[[0, 0, 0]]]), "nested list"),
            (json!(3), "a number"),
            (json!("aGVsbG8="), "not a PNG or JPEG"),
            (json!("data:image/png,abc"), "base64"),
        ];
        for (value, needle) in cases {
            match decode_image(&value) {
                Ok(_) => panic!("{value} was accepted"),
                Err(e) => {
                    assert_eq!(e.kind, crate::errors::ErrorKind::BadImage);
                    assert!(e.message.contains(needle), "{value}: {e}");
                }
            }
        }
    }

    #[test]
    fn decodes_base64_png_and_refuses_a_truncated_one() -> anyhow::Result<()> {
        let image = DynamicImage::ImageRgb8(RgbImage::from_fn(5, 3, |x, y| {
            image::Rgb([x as u8, y as u8, 200])
        }));
        let mut png = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        let sent = json!(BASE64.encode(&png));
        assert_eq!(decode_image(&sent)?.to_rgb8(), image.to_rgb8());
        let url = json!(format!("data:image/png;base64,{}", BASE64.encode(&png)));
        assert_eq!(decode_image(&url)?.to_rgb8(), image.to_rgb8());
        let truncated = json!(BASE64.encode(&png[..png.len() / 2]));
        let err = decode_image(&truncated).err().map(|e| e.message);
        assert!(err.is_some_and(|m| m.contains("cannot decode")));
        Ok(())
    }
}
