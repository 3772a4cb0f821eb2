//! Internet checksum (RFC 1071) over fixed-size stack buffers.
//!
//! Every loop has a constant bound; bytes past the meaningful length are
//! zero and add nothing to the sum.

/// The folded ones'-complement sum of `buf`, as big-endian words.
///
/// Uses the kernel's `bpf_csum_diff` (one call instead of an unrolled loop
/// that would overflow the BPF stack). Its sum is in the CPU's byte order;
/// on little-endian that is the byte-swapped big-endian sum.
#[inline(always)]
pub fn block<const N: usize>(buf: &[u8; N]) -> u16 {
    const { assert!(N % 4 == 0, "bpf_csum_diff takes a multiple of 4 bytes") };
    prefix(buf, N)
}

/// The same over the first `len` bytes of `buf` (`len` a multiple of 4,
/// at most `N`; the helper refuses anything else and the sum is then 0,
/// which the caller's bounds rule out).
#[inline(always)]
pub fn prefix<const N: usize>(buf: &[u8; N], len: usize) -> u16 {
    let len = if len > N { N } else { len };
    let sum = unsafe {
        aya_ebpf::helpers::generated::bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            buf.as_ptr().cast_mut().cast(),
            len as u32,
            0,
        )
    };
    let native = fold(sum as u32);
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    }
}

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
