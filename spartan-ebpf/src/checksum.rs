//! Internet checksum (RFC 1071) pieces for the answer's headers.
//!
//! Every loop has a constant bound.

/// Adds the big-endian 16-bit words of `buf[start..start + len]` (`len` a
/// multiple of four, the range in bounds; both are constants at every
/// call), read four bytes at a time.
#[inline(always)]
pub fn add_range<const N: usize>(mut sum: u32, buf: &[u8; N], start: usize, len: usize) -> u32 {
    let mut i = 0;
    while i + 3 < len && start + i + 3 < N {
        // SAFETY: four bytes inside `buf` (checked by the loop condition).
        let w = u32::from_be(unsafe {
            core::ptr::read_unaligned(buf.as_ptr().add(start + i) as *const u32)
        });
        sum += (w >> 16) + (w & 0xffff);
        i += 4;
    }
    sum
}

/// The RFC 1624 update of a checksum whose 16-bit word `old` became `new`
/// (eqn. 3: HC' = ~(~HC + ~m + m')), as the sum to fold and complement.
#[inline(always)]
pub fn replace(sum: u32, old: u16, new: u16) -> u32 {
    sum + (!old) as u32 + new as u32
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
