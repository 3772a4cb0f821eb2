//! Internet checksum (RFC 1071) pieces for the answer's headers.
//!
//! Every loop has a constant bound.

/// Adds the big-endian 16-bit words of `buf[start..start + len]` (`len`
/// even, the range in bounds; both are constants at every call).
#[inline(always)]
pub fn add_range<const N: usize>(mut sum: u32, buf: &[u8; N], start: usize, len: usize) -> u32 {
    let mut i = 0;
    while i + 1 < len && start + i + 1 < N {
        sum += ((buf[start + i] as u32) << 8) | buf[start + i + 1] as u32;
        i += 2;
    }
    sum
}

/// Folds a 32-bit accumulator into 16 bits with end-around carry.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The sum of a block that sits at an odd offset of the message is its
/// even-aligned sum with the bytes swapped.
#[inline(always)]
pub fn at_offset(folded: u16, odd: bool) -> u32 {
    if odd {
        folded.swap_bytes() as u32
    } else {
        folded as u32
    }
}
