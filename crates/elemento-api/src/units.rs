//! Unit conversions for the documented conflicts in Elemento's API.
//!
//! * Volume sizes: requests are in GB (the CLI sends `"size": 8`); responses carry `size` either in
//!   bytes (CLI printer, Elemento's mock) or in float GB (thesis schema, Sept 2025). We accept both:
//!   a value of at least [`BYTES_THRESHOLD`] is bytes, anything smaller is GB. No volume is smaller
//!   than 1 MB, and none is a petabyte, so the two ranges cannot be confused.
//! * GB is taken as decimal (10^9 bytes), as the GUI and the CLI do. Rounding up in decimal GB is also
//!   the safe choice if Elemento turns out to mean GiB: a GiB is larger, so the volume is never smaller
//!   than requested.
//! * VM RAM: `ramsize` is MiB in the register body but GB in the status list. A status value above
//!   [`RAM_MIB_THRESHOLD`] is taken as already being MiB (no VM has a terabyte of RAM).

/// Bytes per GB, as Elemento's clients convert.
pub const BYTES_PER_GB: u64 = 1_000_000_000;
/// Volumes come in 0.125 GB steps (AtomOS readme).
pub const VOLUME_STEP_BYTES: u64 = BYTES_PER_GB / 8;
/// A `size` at or above this value is bytes; below it, GB.
pub const BYTES_THRESHOLD: f64 = 1_000_000.0;
/// A status `ramsize` above this value is MiB; at or below it, GB.
pub const RAM_MIB_THRESHOLD: f64 = 1024.0;

/// Rounds `bytes` up to the next 0.125 GB step. Returns `None` on overflow.
pub fn round_up_to_step(bytes: u64) -> Option<u64> {
    let steps = bytes.div_ceil(VOLUME_STEP_BYTES).max(1);
    steps.checked_mul(VOLUME_STEP_BYTES)
}

/// GB value to send in a create/resize request for a byte size that is already a whole step.
pub fn gb_for_request(bytes: u64) -> f64 {
    (bytes / VOLUME_STEP_BYTES) as f64 / 8.0
}

/// Interprets a volume `size` field from a response (bytes or GB, see module docs).
pub fn volume_size_to_bytes(raw: f64) -> u64 {
    if !raw.is_finite() || raw <= 0.0 {
        0
    } else if raw >= BYTES_THRESHOLD {
        raw.round() as u64
    } else {
        (raw * BYTES_PER_GB as f64).round() as u64
    }
}

/// Interprets a VM status `ramsize` (GB, or MiB when large) as MiB.
pub fn status_ram_to_mib(raw: f64) -> u64 {
    if !raw.is_finite() || raw <= 0.0 {
        0
    } else if raw > RAM_MIB_THRESHOLD {
        raw.round() as u64
    } else {
        (raw * 1024.0).round() as u64
    }
}

/// Standard base64 with padding (RFC 4648 §4): the cloud-init upload's path segment [K].
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_eighths_of_a_gb() {
        assert_eq!(round_up_to_step(1), Some(125_000_000));
        assert_eq!(round_up_to_step(125_000_000), Some(125_000_000));
        assert_eq!(round_up_to_step(125_000_001), Some(250_000_000));
        assert_eq!(round_up_to_step(1 << 30), Some(1_125_000_000)); // 1 GiB -> 1.125 GB
        assert_eq!(round_up_to_step(0), Some(125_000_000));
        assert_eq!(round_up_to_step(u64::MAX), None);
        assert_eq!(gb_for_request(1_125_000_000), 1.125);
    }

    #[test]
    fn volume_size_accepts_bytes_and_gb() {
        assert_eq!(volume_size_to_bytes(8.0), 8_000_000_000);
        assert_eq!(volume_size_to_bytes(1.125), 1_125_000_000);
        assert_eq!(volume_size_to_bytes(8_000_000_000.0), 8_000_000_000);
        assert_eq!(volume_size_to_bytes(-1.0), 0);
        assert_eq!(volume_size_to_bytes(f64::NAN), 0);
    }

    #[test]
    fn status_ram_accepts_gb_and_mib() {
        assert_eq!(status_ram_to_mib(2.0), 2048);
        assert_eq!(status_ram_to_mib(0.5), 512);
        assert_eq!(status_ram_to_mib(4096.0), 4096);
        assert_eq!(status_ram_to_mib(0.0), 0);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }
}
